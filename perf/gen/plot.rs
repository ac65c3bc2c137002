//! The percentile-distribution plot of latency histograms, as HdrHistogram's
//! plotter draws it: x is the percentile on a log scale of 1/(1-p) (so 90%,
//! 99%, 99.9% are evenly spaced), y is latency in microseconds. One line per
//! histogram. Written as SVG with the plotters crate.

use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::path::Path;

/// Draws `series` (label, histogram in ns) into an SVG file at `out`.
pub fn percentile_svg(out: &Path, title: &str, series: &[(String, Histogram<u64>)]) -> Result<(), String> {
    let err = |e: String| format!("cannot draw {}: {e}", out.display());
    let series: Vec<_> = series.iter().filter(|(_, h)| !h.is_empty()).collect();
    if series.is_empty() {
        return Err(err("every histogram is empty".into()));
    }
    // Points at percentiles 0 .. 99.9999: x = 1/(1-p).
    let points = |h: &Histogram<u64>| -> Vec<(f64, f64)> {
        let mut v = Vec::new();
        let mut x = 1.0f64;
        while x <= 1e6 {
            let q = 1.0 - 1.0 / x;
            v.push((x, h.highest_equivalent(h.value_at_quantile(q)) as f64 / 1000.0));
            x *= 1.12;
        }
        v.push((1e6, h.max() as f64 / 1000.0));
        v
    };
    let ymax = series.iter().map(|(_, h)| h.max() as f64 / 1000.0).fold(0.0, f64::max).max(0.001) * 1.1;
    let root = SVGBackend::new(out, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..1e6).log_scale(), 0f64..ymax)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (us)")
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 1.0 / x);
            if p < 1.0 { "0%".into() } else { format!("{}%", (p * 10000.0).round() / 10000.0) }
        })
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, (label, h)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points(h), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_one_line_per_histogram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let mut a = Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap();
        let mut b = a.clone();
        for v in 1..10_000u64 {
            a.record(1000 + v).unwrap();
            b.record(2000 + 3 * v).unwrap();
        }
        percentile_svg(&path, "test", &[("hbgw load50".into(), a), ("testpmd load50".into(), b)]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        // Each series is a 2-px line, drawn once in the chart and once in the legend.
        assert_eq!(svg.matches(r#"stroke-width="2""#).count(), 4, "two series");
        assert!(svg.contains("hbgw load50") && svg.contains("99.9%"));
    }
}
