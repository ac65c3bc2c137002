//! `hbgw-gen`: a DPDK traffic generator and RFC 2544 tester for hbgw.
//!
//! It sends a configurable mix (64..1518-byte frames or IMIX; ranges of
//! endpoint MACs/IPs; DNS, TLS ClientHello and HTTP requests, some naming a
//! listed domain; or a pcap file's frames) at a set rate out of one port,
//! stamps every frame with a sequence number and the TSC, and measures what
//! comes back on the other port: rate, loss, reordering and end-to-end
//! latency (HdrHistogram). With `--search` it finds the highest loss-free
//! rate by binary search and then measures latency at 10/50/90% of it.
//!
//! ```text
//! hbgw-gen [EAL args] -- [--tx-port P --rx-port P] [--size 64|..|1518|imix] [--traffic udp|app | --pcap F]
//!          [--rate 5M|500k|50%] [--duration S] [--search ...] [--json F] [--hlog F]
//! hbgw-gen report [--baseline LABEL] RESULT.json...     # the comparison table
//! hbgw-gen plot --out FILE.svg [--title T] FILE.hlog... # percentile plot
//! ```
//!
//! It owns nothing of the gateway: it is a peer on the other side of the
//! ports. It must never start EAL without `--no-pci` or an allow-list (the
//! defaults hbgw adds are added here too), and never leave a port mid-traffic.

mod hlog;
mod measure;
mod mix;
mod pacer;
mod plot;
mod report;
mod search;
mod stamp;
mod trial;

use clap::Parser;
use hbgw::dpdk::eal::Eal;
use hbgw::dpdk::port::{self, Port};
use mix::{FrameSize, MixSpec, Traffic};
use report::{LoadResult, Percentiles, RunResult, SearchTrial, Throughput};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use trial::{Generator, TrialReport, TrialSettings};

/// Calibration sends every template this many times, at most this fast:
/// slowly enough that a loaded machine loses none, so a template that never
/// comes back is one the DUT drops on purpose.
const CALIBRATION_ROUNDS: usize = 3;
const CALIBRATION_PPS: f64 = 20_000.0;

/// A rate: frames per second, or a percentage of the link's line rate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
    Pps(f64),
    Percent(f64),
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("rate `{s}` is not understood: give frames per second (2500000, 2.5M, 800k, 2.5Mpps) or a percentage of the line rate (50%)");
    let t = s.trim();
    if let Some(p) = t.strip_suffix('%') {
        let v: f64 = p.trim().parse().map_err(|_| bad())?;
        if !(v > 0.0 && v <= 100.0) {
            return Err(format!("rate {v}% is out of range: give more than 0% and at most 100% of the line rate"));
        }
        return Ok(Rate::Percent(v));
    }
    let lower = t.to_ascii_lowercase();
    let num = lower.strip_suffix("pps").unwrap_or(&lower);
    let (num, mult) = match num.chars().last() {
        Some('k') => (&num[..num.len() - 1], 1e3),
        Some('m') => (&num[..num.len() - 1], 1e6),
        Some('g') => (&num[..num.len() - 1], 1e9),
        _ => (num, 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !(v * mult >= 1.0) || !v.is_finite() {
        return Err(format!("rate `{s}` is below 1 frame per second: give a positive rate"));
    }
    Ok(Rate::Pps(v * mult))
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<_> = s.split(':').collect();
    let bytes: Option<Vec<u8>> = parts.iter().map(|p| u8::from_str_radix(p, 16).ok()).collect();
    match bytes {
        Some(b) if b.len() == 6 => Ok([b[0], b[1], b[2], b[3], b[4], b[5]]),
        _ => Err(format!("`{s}` is not a MAC address: write it as 02:5e:00:00:00:01")),
    }
}

fn parse_ipv4(s: &str) -> Result<[u8; 4], String> {
    s.parse::<std::net::Ipv4Addr>().map(|a| a.octets()).map_err(|_| format!("`{s}` is not an IPv4 address: write it as 10.77.0.1"))
}

/// What to send and measure (after `--`).
#[derive(Debug, Parser)]
#[command(name = "hbgw-gen [EAL args] --", no_binary_name = true, disable_version_flag = true)]
struct GenArgs {
    /// Port frames are sent from (DPDK name or id; default: the first port).
    #[arg(long, value_name = "PORT")]
    tx_port: Option<String>,
    /// Port frames come back on (default: the second port).
    #[arg(long, value_name = "PORT")]
    rx_port: Option<String>,
    /// Frame size in bytes with FCS (64..1518), or imix (7:4:1 of 64/570/1518).
    #[arg(long, default_value = "64", value_parser = |s: &str| s.parse::<FrameSize>())]
    size: FrameSize,
    /// udp, or app: 20% DNS, 10% TLS ClientHello, 5% HTTP, the rest UDP.
    #[arg(long, default_value = "udp", value_parser = ["udp", "app"])]
    traffic: String,
    /// Send the frames of this pcap file instead (each gets a stamp trailer).
    #[arg(long, value_name = "FILE", conflicts_with = "traffic")]
    pcap: Option<PathBuf>,
    /// Number of source endpoints (MACs/IPs counting up from the first).
    #[arg(long, default_value_t = 8)]
    endpoints: u32,
    /// The first endpoint's MAC.
    #[arg(long, default_value = "02:5e:00:00:00:00", value_parser = parse_mac)]
    first_mac: [u8; 6],
    /// The first endpoint's IPv4 address.
    #[arg(long, default_value = "10.77.0.1", value_parser = parse_ipv4)]
    first_ip: [u8; 4],
    /// Number of destination servers, counting up from --first-server.
    #[arg(long, default_value_t = 16)]
    servers: u32,
    /// The first server's IPv4 address.
    #[arg(long, default_value = "198.51.100.10", value_parser = parse_ipv4)]
    first_server: [u8; 4],
    /// With --traffic app: the listed domain that hits name.
    #[arg(long, default_value = "malware.example")]
    hit_domain: String,
    /// With --traffic app: percent of DNS/TLS/HTTP frames naming --hit-domain.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..=100))]
    hit_percent: u8,
    /// Sending rate: frames/s (2.5M, 800k) or percent of the line rate (50%);
    /// default: as fast as the port takes them.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<Rate>,
    /// Seconds to send (single run).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Frames per tx burst.
    #[arg(long, default_value_t = 32)]
    burst: usize,
    /// Seconds to wait for the links to come up.
    #[arg(long, default_value_t = 5.0)]
    link_timeout: f64,
    /// Run the RFC 2544 throughput search, then latency trials at --loads.
    #[arg(long)]
    search: bool,
    /// Upper bound of the search (default: the links' line rate).
    #[arg(long, value_parser = parse_rate)]
    max_rate: Option<Rate>,
    /// Seconds per search trial.
    #[arg(long, default_value_t = 2.0)]
    trial_secs: f64,
    /// Search resolution, as a fraction of the upper bound.
    #[arg(long, default_value_t = 0.01)]
    resolution: f64,
    /// Loss fraction that still passes (0: no-drop rate, RFC 2544).
    #[arg(long, default_value_t = 0.0)]
    loss_tolerance: f64,
    /// Search: trials to repeat at a rate that lost frames before it counts
    /// as failed (0: one trial decides, as RFC 2544 has it).
    #[arg(long, default_value_t = 1)]
    retries: u32,
    /// Latency trials, in percent of the found rate.
    #[arg(long, value_delimiter = ',', default_value = "10,50,90")]
    loads: Vec<f64>,
    /// Seconds per latency trial.
    #[arg(long, default_value_t = 5.0)]
    latency_secs: f64,
    /// Skip calibration (by default the generator first learns, at a low
    /// rate, which frames the DUT drops on purpose, and does not count those
    /// as lost).
    #[arg(long)]
    no_calibrate: bool,
    /// Allow a rate above the links' stated speed (virtual devices whose
    /// speed is nominal).
    #[arg(long)]
    ignore_link_speed: bool,
    /// Names the DUT in the results.
    #[arg(long, default_value = "dut")]
    label: String,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the latency histograms as an HdrHistogram log.
    #[arg(long, value_name = "FILE")]
    hlog: Option<PathBuf>,
}

#[derive(Debug, Parser)]
#[command(name = "hbgw-gen report", disable_version_flag = true)]
struct ReportArgs {
    /// The label of the runs the others are compared with.
    #[arg(long, default_value = "testpmd")]
    baseline: String,
    /// Result files (--json).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Parser)]
#[command(name = "hbgw-gen plot", disable_version_flag = true)]
struct PlotArgs {
    /// The SVG file to write.
    #[arg(long)]
    out: PathBuf,
    /// The plot's title.
    #[arg(long, default_value = "end-to-end latency by percentile")]
    title: String,
    /// HdrHistogram logs; each tagged interval becomes a line named FILE-STEM TAG.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn first_line(e: clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments").trim_start_matches("error: ").to_owned();
    format!("{line}: see `hbgw-gen -- --help`")
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let result = match argv.get(1).map(String::as_str) {
        Some("report") => ReportArgs::try_parse_from(argv[1..].iter()).map_err(first_line).and_then(run_report),
        Some("plot") => PlotArgs::try_parse_from(argv[1..].iter()).map_err(first_line).and_then(run_plot),
        _ => run_generator(argv),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hbgw-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_report(args: ReportArgs) -> Result<(), String> {
    let results = args.files.iter().map(|f| RunResult::load(f)).collect::<Result<Vec<_>, _>>()?;
    print!("{}", report::table(&results, &args.baseline));
    Ok(())
}

fn run_plot(args: PlotArgs) -> Result<(), String> {
    let mut series = Vec::new();
    for f in &args.files {
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        for (tag, h) in hlog::read(f)? {
            series.push((format!("{stem} {tag}"), h));
        }
    }
    plot::percentile_svg(&args.out, &args.title, &series)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn run_generator(argv: Vec<String>) -> Result<(), String> {
    let program = argv.first().cloned().unwrap_or_else(|| "hbgw-gen".into());
    let rest = &argv[argv.len().min(1)..];
    let split = rest.iter().position(|a| a == "--");
    let (eal_part, app_part) = match split {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        use clap::CommandFactory;
        println!("usage: hbgw-gen [EAL args] -- [options]\n       hbgw-gen report [--baseline LABEL] RESULT.json...\n       hbgw-gen plot --out FILE.svg HLOG...\n");
        println!("{}", GenArgs::command().render_help());
        return Ok(());
    }
    let args = GenArgs::try_parse_from(app_part.iter()).map_err(first_line)?;
    // Everything that can be refused is refused before EAL starts.
    let spec = MixSpec {
        size: args.size,
        traffic: if args.traffic == "app" {
            Traffic::App { hit_domain: args.hit_domain.clone(), hit_percent: args.hit_percent }
        } else {
            Traffic::Udp
        },
        endpoints: args.endpoints,
        first_mac: args.first_mac,
        first_ip: args.first_ip,
        servers: args.servers,
        first_server: args.first_server,
    };
    let templates = match &args.pcap {
        Some(p) => mix::templates_from_pcap(p)?,
        None => mix::templates(&spec)?,
    };
    if !(args.duration > 0.0 && args.trial_secs > 0.0 && args.latency_secs > 0.0 && args.link_timeout > 0.0) {
        return Err("--duration, --trial-secs, --latency-secs and --link-timeout must be positive".into());
    }
    if !(0.0..1.0).contains(&args.loss_tolerance) || !(args.resolution > 0.0 && args.resolution < 0.5) {
        return Err("--loss-tolerance must be in [0, 1) and --resolution in (0, 0.5)".into());
    }
    if args.loads.iter().any(|l| !(*l > 0.0 && *l <= 100.0)) {
        return Err("--loads are percentages of the found rate: each in (0, 100]".into());
    }
    if !(1..=64).contains(&args.burst) {
        return Err(format!("--burst {} is out of range: give 1..64", args.burst));
    }

    let mut eal_args = vec![program];
    eal_args.extend(eal_part.iter().cloned());
    let eal_args = hbgw::gateway::eal_args(&eal_args, &[]);
    let eal = Eal::init(&eal_args).map_err(|e| e.to_string())?;
    let outcome = generate(&args, templates);
    eal.cleanup();
    outcome
}

fn pick_port(name: Option<&str>, index: usize, role: &str) -> Result<Port, String> {
    match name {
        Some(n) => Port::find(n),
        None => port::available().into_iter().nth(index).ok_or_else(|| {
            format!("no {role} port: create two ports with --vdev before `--` (e.g. net_memif) or name them with --tx-port/--rx-port")
        }),
    }
}

fn load_result(percent: Option<f64>, r: &TrialReport) -> LoadResult {
    LoadResult {
        percent,
        asked_pps: r.asked_pps,
        offered_pps: r.offered_pps(),
        received_pps: r.received_pps(),
        offered: r.offered,
        sent: r.sent,
        received: r.rx.received,
        lost: r.lost(),
        loss: r.loss(),
        refused: r.refused,
        reordered: r.rx.reordered,
        stale: r.rx.stale,
        foreign: r.rx.foreign,
        unexpected: r.rx.unexpected,
        returned: r.returned,
        tester_limited: r.tester_limited(),
        latency_ns: Percentiles::of(&r.rx.latency_ns),
    }
}

fn print_load(l: &LoadResult) {
    let p = &l.latency_ns;
    println!(
        "  {:>5}  offered {:>8.3} Mpps  received {:>8.3} Mpps  sent {}  received {}  lost {} ({:.4}%)  refused {}  reordered {}  latency us p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}{}",
        l.percent.map(|x| format!("{x:.0}%")).unwrap_or_else(|| "run".into()),
        l.offered_pps / 1e6,
        l.received_pps / 1e6,
        l.sent,
        l.received,
        l.lost,
        l.loss * 100.0,
        l.refused,
        l.reordered,
        p.p50 as f64 / 1e3,
        p.p90 as f64 / 1e3,
        p.p99 as f64 / 1e3,
        p.p999 as f64 / 1e3,
        p.max as f64 / 1e3,
        if l.tester_limited { "  (tester-limited)" } else { "" }
    );
}

fn generate(args: &GenArgs, templates: Vec<Vec<u8>>) -> Result<(), String> {
    let tx = pick_port(args.tx_port.as_deref(), 0, "tx")?;
    let rx = pick_port(args.rx_port.as_deref(), 1, "rx")?;
    let mean = mix::mean_size(&templates);
    let mut gen = Generator::new(tx.clone(), rx.clone(), templates, args.burst, Duration::from_secs_f64(args.link_timeout))?;
    let result = measure(args, &mut gen, mean, &tx, &rx);
    gen.close();
    result
}

fn measure(args: &GenArgs, gen: &mut Generator, mean: f64, tx: &Port, rx: &Port) -> Result<(), String> {
    let speed = gen.link_speed_mbps();
    let line_rate = speed.map(|s| mix::line_rate_pps(s, mean));
    let resolve = |r: Rate, what: &str| -> Result<f64, String> {
        match (r, line_rate) {
            (Rate::Pps(p), Some(max)) if p > max * 1.0001 && !args.ignore_link_speed => Err(format!(
                "{what} {:.3} Mpps is above what the {} Mbit/s link carries at {:.0}-byte frames ({:.3} Mpps): lower it, give a percentage, or pass --ignore-link-speed for a virtual device",
                p / 1e6,
                speed.unwrap_or(0),
                mean,
                max / 1e6
            )),
            (Rate::Pps(p), _) => Ok(p),
            (Rate::Percent(x), Some(max)) => Ok(max * x / 100.0),
            (Rate::Percent(_), None) => Err(format!(
                "{what} is a percentage but {} / {} state no link speed: give it in frames per second (e.g. 5M)",
                tx.name, rx.name
            )),
        }
    };
    let size_name = if args.pcap.is_some() { "pcap".to_owned() } else { args.size.to_string() };
    println!(
        "hbgw-gen: {} -> {}, {} templates, mean frame {:.1} B, link {}, TSC {:.3} GHz",
        tx.name,
        rx.name,
        gen.templates().len(),
        mean,
        speed.map(|s| format!("{s} Mbit/s")).unwrap_or_else(|| "speed not stated".into()),
        gen.tsc_hz() as f64 / 1e9
    );
    let mut result = RunResult {
        label: args.label.clone(),
        size: size_name,
        mean_frame_bytes: mean,
        templates: gen.templates().len(),
        policy_dropped_templates: 0,
        tsc_hz: gen.tsc_hz(),
        link_speed_mbps: speed,
        throughput: None,
        loads: Vec::new(),
    };
    let mut hists = Vec::new();
    let mut clock = Duration::ZERO;
    let mut trial = |gen: &mut Generator, rate: Option<f64>, secs: f64| {
        let r = gen.run(TrialSettings { rate_pps: rate, duration: Duration::from_secs_f64(secs), drain: Duration::from_millis(300) });
        let start = clock;
        clock += Duration::from_secs_f64(secs);
        (r, start)
    };

    if !args.search {
        let rate = args.rate.map(|r| resolve(r, "--rate")).transpose()?;
        if !args.no_calibrate {
            let cal = rate.unwrap_or(1e6).min(CALIBRATION_PPS);
            result.policy_dropped_templates = gen.calibrate(cal, CALIBRATION_ROUNDS)?;
        }
        let (r, start) = trial(gen, rate, args.duration);
        let l = load_result(None, &r);
        print_load(&l);
        hists.push(hlog::Tagged { tag: "run".into(), start, length: Duration::from_secs_f64(args.duration), histogram: r.rx.latency_ns });
        result.loads.push(l);
    } else {
        let max = match (args.max_rate, line_rate) {
            (Some(r), _) => resolve(r, "--max-rate")?,
            (None, Some(l)) => l,
            (None, None) => {
                return Err(format!(
                    "{} / {} state no link speed, so the search has no upper bound: give --max-rate (e.g. 30M)",
                    tx.name, rx.name
                ))
            }
        };
        if !args.no_calibrate {
            result.policy_dropped_templates = gen.calibrate((max / 100.0).min(CALIBRATION_PPS), CALIBRATION_ROUNDS)?;
            println!("  calibration: the DUT drops {} of {} templates on purpose", result.policy_dropped_templates, gen.templates().len());
        }
        let spec = search::SearchSpec { max_pps: max, resolution: args.resolution, loss_tolerance: args.loss_tolerance };
        let found = search::throughput(&spec, |rate| {
            // A rate fails only if it fails --retries + 1 trials in a row: on a
            // shared machine one descheduling of the DUT loses frames at any
            // rate, which says nothing about the rate (MLRsearch repeats
            // trials for the same reason).
            let mut attempt = 0;
            loop {
                let (r, _) = trial(gen, Some(rate), args.trial_secs);
                println!(
                    "  search {:>8.3} Mpps: offered {:.3}, lost {} of {} ({:.4}%){}",
                    rate / 1e6,
                    r.offered_pps() / 1e6,
                    r.lost(),
                    r.expected,
                    r.loss() * 100.0,
                    if r.tester_limited() { " (tester-limited)" } else { "" }
                );
                let o = search::TrialOutcome { offered_pps: r.offered_pps(), loss: r.loss(), tester_limited: r.tester_limited() };
                if o.tester_limited || o.loss <= args.loss_tolerance || attempt >= args.retries {
                    return o;
                }
                attempt += 1;
            }
        });
        println!(
            "  throughput: {:.3} Mpps at loss <= {}%{}",
            found.rate_pps / 1e6,
            args.loss_tolerance * 100.0,
            if found.tester_limited { " (bounded by the tester)" } else { "" }
        );
        result.throughput = Some(Throughput {
            rate_pps: found.rate_pps,
            loss_tolerance: args.loss_tolerance,
            max_pps: max,
            tester_limited: found.tester_limited,
            trials: found.trials.iter().map(|(a, o)| SearchTrial { asked_pps: *a, offered_pps: o.offered_pps, loss: o.loss }).collect(),
        });
        if found.rate_pps > 0.0 {
            for &pct in &args.loads {
                let (r, start) = trial(gen, Some(found.rate_pps * pct / 100.0), args.latency_secs);
                let l = load_result(Some(pct), &r);
                print_load(&l);
                hists.push(hlog::Tagged {
                    tag: format!("load{pct:.0}"),
                    start,
                    length: Duration::from_secs_f64(args.latency_secs),
                    histogram: r.rx.latency_ns,
                });
                result.loads.push(l);
            }
        }
    }
    if let Some(path) = &args.hlog {
        hlog::write(path, &format!("hbgw-gen end-to-end latency, ns; DUT {}; frame {}", args.label, result.size), &hists)?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}: check the --json path", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_every_spelling() {
        assert_eq!(parse_rate("2500000"), Ok(Rate::Pps(2.5e6)));
        assert_eq!(parse_rate("2.5M"), Ok(Rate::Pps(2.5e6)));
        assert_eq!(parse_rate("800k"), Ok(Rate::Pps(8e5)));
        assert_eq!(parse_rate("2.5Mpps"), Ok(Rate::Pps(2.5e6)));
        assert_eq!(parse_rate("50%"), Ok(Rate::Percent(50.0)));
        for bad in ["fast", "150%", "0", "-1M", "0%"] {
            let e = parse_rate(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(parse_mac("02:5e:00:00:00:01"), Ok([2, 0x5e, 0, 0, 0, 1]));
        assert!(parse_mac("02:5e:00").is_err());
        assert_eq!(parse_ipv4("10.77.0.1"), Ok([10, 77, 0, 1]));
        assert!(parse_ipv4("10.77.0").is_err());
    }
}
