#!/usr/bin/env python3
"""Read an hbgw --hlog file with HdrHistogram's Python reader (PyPI package
`hdrhistogram`, module `hdrh`) and print intervals, samples and percentiles (ns).
It doubles as the check that the log is readable by a standard HdrHistogram tool.

usage: hlog-summary.py FILE [--json]
"""
import json
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    total = HdrHistogram(1, 10_000_000_000, 3)
    reader = HistogramLogReader(sys.argv[1], HdrHistogram(1, 10_000_000_000, 3))
    intervals = 0
    while True:
        h = reader.get_next_interval_histogram()
        if h is None:
            break
        intervals += 1
        total.add(h)
    summary = {
        "intervals": intervals,
        "samples": total.get_total_count(),
        **{f"p{p}": total.get_value_at_percentile(p) for p in (50, 90, 99, 99.9, 99.99)},
        "max": total.get_max_value(),
    }
    if "--json" in sys.argv:
        print(json.dumps(summary))
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
