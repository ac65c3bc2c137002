//! hbgw's command line, in DPDK's convention: `hbgw [EAL args] -- [app args]`
//! runs the gateway (as testpmd and pktgen do), and `hbgw stats [...]` reads a
//! running gateway's stats.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// Live output while the gateway runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Live {
    /// Print nothing until the final table.
    Off,
    /// One line per interval: rates, drops, latency percentiles.
    #[default]
    Line,
    /// The whole stats table every interval.
    Table,
}

/// Application arguments (after `--`).
#[derive(Debug, Clone, Parser, Default)]
#[command(name = "hbgw [EAL args] --", no_binary_name = true, disable_version_flag = true)]
pub struct AppArgs {
    /// Configuration file (TOML; see README.md, Configuration).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A LAN,WAN port pair (DPDK device names or port ids); repeatable;
    /// replaces the config file's [[bridge]] tables.
    #[arg(long = "port-pair", value_name = "LAN,WAN")]
    pub port_pairs: Vec<String>,
    /// Worker lcores, e.g. `1` or `1,2` (overrides dataplane.workers).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub workers: Option<Vec<u32>>,
    /// Rx queues per port (overrides dataplane.rx_queues).
    #[arg(long, value_name = "N")]
    pub rx_queues: Option<u16>,
    /// Frames per rx burst (overrides dataplane.burst_size).
    #[arg(long, value_name = "N")]
    pub burst: Option<u16>,
    /// Mbufs in the packet pool (overrides dataplane.mempool_size).
    #[arg(long, value_name = "N")]
    pub mempool_size: Option<u32>,
    /// Stats socket for `hbgw stats` (overrides stats.socket).
    #[arg(long, value_name = "PATH")]
    pub stats_socket: Option<PathBuf>,
    /// Stats interval in milliseconds (overrides stats.interval_ms).
    #[arg(long, value_name = "MS")]
    pub stats_interval: Option<u64>,
    /// Write an HdrHistogram interval log of worker latency to FILE.
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<PathBuf>,
    /// Serve Prometheus metrics on ADDR, e.g. 127.0.0.1:9469 (overrides stats.prometheus).
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<std::net::SocketAddr>,
    /// Stop by itself once no frame has arrived for MS milliseconds (e.g. a
    /// finite pcap was fully read).
    #[arg(long, value_name = "MS")]
    pub exit_on_idle: Option<u64>,
    /// Stop by itself after SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// What to print every interval.
    #[arg(long, value_enum, default_value_t = Live::Line)]
    pub live: Live,
}

/// `hbgw stats` arguments.
#[derive(Debug, Clone, Parser)]
#[command(name = "hbgw stats", disable_version_flag = true)]
pub struct StatsArgs {
    /// The gateway's stats socket.
    #[arg(long, value_name = "PATH", default_value = hbgw_shared::config::DEFAULT_STATS_SOCKET)]
    pub socket: PathBuf,
    /// Print the report as JSON (one line).
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECS seconds (default 1) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1")]
    pub watch: Option<f64>,
    /// With --watch: stop after N reports.
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u64>,
    /// Start a fresh measurement interval first (totals and histograms restart).
    #[arg(long)]
    pub clear: bool,
}

/// `hbgw endpoints` arguments.
#[derive(Debug, Clone, Parser)]
#[command(name = "hbgw endpoints", disable_version_flag = true)]
pub struct EndpointsArgs {
    /// The gateway's stats socket.
    #[arg(long, value_name = "PATH", default_value = hbgw_shared::config::DEFAULT_STATS_SOCKET)]
    pub socket: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `hbgw explain` arguments: the flow to explain.
#[derive(Debug, Clone, Parser)]
#[command(name = "hbgw explain", disable_version_flag = true)]
pub struct ExplainArgs {
    /// Ask the running gateway on this stats socket (live endpoint health).
    #[arg(long, value_name = "PATH", default_value = hbgw_shared::config::DEFAULT_STATS_SOCKET, conflicts_with = "config")]
    pub socket: PathBuf,
    /// Answer from this configuration's files instead (no running gateway).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The port the flow comes in on: lan0, wan0, ...
    #[arg(long, default_value = "lan0")]
    pub ingress: String,
    /// Source MAC.
    #[arg(long)]
    pub src_mac: String,
    /// Destination MAC.
    #[arg(long, default_value = "02:00:00:00:00:fe")]
    pub dst_mac: String,
    /// Source IP.
    #[arg(long)]
    pub src_ip: std::net::IpAddr,
    /// Destination IP.
    #[arg(long)]
    pub dst_ip: std::net::IpAddr,
    /// tcp or udp.
    #[arg(long = "proto", default_value = "tcp")]
    pub protocol: String,
    /// Source port.
    #[arg(long = "sport", default_value_t = 40000)]
    pub src_port: u16,
    /// Destination port.
    #[arg(long = "dport", default_value_t = 443)]
    pub dst_port: u16,
    /// 802.1Q VLAN id.
    #[arg(long)]
    pub vlan: Option<u16>,
    /// The DNS name the flow queries.
    #[arg(long)]
    pub dns: Option<String>,
    /// The TLS server name (SNI) the flow sends.
    #[arg(long)]
    pub sni: Option<String>,
    /// The HTTP host the flow requests.
    #[arg(long)]
    pub http_host: Option<String>,
    /// The HTTP path the flow requests.
    #[arg(long)]
    pub http_path: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the gateway.
    Gateway {
        /// `argv[0]` followed by the EAL arguments.
        eal: Vec<String>,
        /// Application arguments.
        app: AppArgs,
    },
    /// Read a running gateway's stats.
    Stats(StatsArgs),
    /// Explain what decides a flow.
    Explain(ExplainArgs),
    /// List endpoints and their heartbeat health.
    Endpoints(EndpointsArgs),
    /// Print help (the text) and exit 0.
    Help(String),
}

const APP_FLAGS: &[&str] = &[
    "--config",
    "--port-pair",
    "--workers",
    "--rx-queues",
    "--burst",
    "--mempool-size",
    "--stats-socket",
    "--stats-interval",
    "--hlog",
    "--prometheus",
    "--exit-on-idle",
    "--duration",
    "--live",
];

/// Full help: the convention, the app arguments, and `hbgw stats`.
pub fn help() -> String {
    use clap::CommandFactory;
    format!(
        "hbgw — a userspace fast-path gateway enforcing Synchronized Security\n\n\
         Usage:\n  hbgw [EAL args] -- [app args]   run the gateway\n  hbgw stats [--json] [--watch [SECS]] [--socket PATH]\n  hbgw endpoints [--json] [--socket PATH]\n  hbgw explain --src-mac MAC --src-ip IP --dst-ip IP [--proto tcp|udp] [--dport N] [--sni NAME] ...\n\n\
         EAL args are DPDK's (-l 0,1 --vdev ... -a PCI ...; see `dpdk-testpmd --help`).\n\
         hbgw adds --no-pci unless you name devices with -a, and a unique --file-prefix unless you give one.\n\
         With no port named at all (no --vdev, -a, --config or --port-pair) it runs its built-in\n\
         default: two net_pcap ports fed by a built-in traffic source.\n\n{}\n{}\n{}",
        AppArgs::command().render_help(),
        StatsArgs::command().render_help(),
        ExplainArgs::command().render_help()
    )
}

/// Parses `argv` (including the program name).
pub fn parse(argv: Vec<String>) -> Result<Command, String> {
    let program = argv.first().cloned().unwrap_or_else(|| "hbgw".into());
    let rest = &argv[argv.len().min(1)..];
    if rest.first().map(String::as_str) == Some("endpoints") {
        let args = EndpointsArgs::try_parse_from(std::iter::once("hbgw endpoints".to_owned()).chain(rest[1..].iter().cloned()))
            .map_err(clap_error)?;
        return Ok(Command::Endpoints(args));
    }
    if rest.first().map(String::as_str) == Some("explain") {
        let args = ExplainArgs::try_parse_from(std::iter::once("hbgw explain".to_owned()).chain(rest[1..].iter().cloned()))
            .map_err(clap_error)?;
        return Ok(Command::Explain(args));
    }
    if rest.first().map(String::as_str) == Some("stats") {
        let stats = StatsArgs::try_parse_from(std::iter::once("hbgw stats".to_owned()).chain(rest[1..].iter().cloned()))
            .map_err(|e| clap_error(e))?;
        return Ok(Command::Stats(stats));
    }
    let split = rest.iter().position(|a| a == "--");
    let (eal_part, app_part) = match split {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    if eal_part.iter().any(|a| a == "--help" || a == "-h") && split.is_none() {
        return Ok(Command::Help(help()));
    }
    if let Some(flag) = eal_part.iter().find(|a| APP_FLAGS.iter().any(|f| *a == f || a.starts_with(&format!("{f}=")))) {
        return Err(format!(
            "`{flag}` is an hbgw argument but came before `--`: write `hbgw [EAL args] -- {flag} ...`"
        ));
    }
    if app_part.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help(help()));
    }
    let app = AppArgs::try_parse_from(app_part.iter().cloned()).map_err(clap_error)?;
    let mut eal = vec![program];
    eal.extend(eal_part.iter().cloned());
    Ok(Command::Gateway { eal, app })
}

fn clap_error(e: clap::Error) -> String {
    // clap's message is several lines; keep the first, which names the problem.
    let text = e.to_string();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
    format!("{}: see `hbgw --help`", first.trim_start_matches("error: "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn splits_eal_and_app_args() {
        let Command::Gateway { eal, app } =
            parse(args("hbgw -l 0,1 --no-pci -- --config x.toml --burst 64 --port-pair a,b")).unwrap()
        else {
            panic!()
        };
        assert_eq!(eal, args("hbgw -l 0,1 --no-pci"));
        assert_eq!(app.config, Some(PathBuf::from("x.toml")));
        assert_eq!(app.burst, Some(64));
        assert_eq!(app.port_pairs, vec!["a,b"]);
    }

    #[test]
    fn app_flag_before_separator_is_explained() {
        let err = parse(args("hbgw -l 0,1 --config x.toml")).unwrap_err();
        assert!(err.contains("came before `--`"), "{err}");
    }

    #[test]
    fn unknown_app_flag_is_one_line() {
        let err = parse(args("hbgw -- --bogus")).unwrap_err();
        assert!(err.contains("--bogus") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn stats_subcommand() {
        let Command::Stats(s) = parse(args("hbgw stats --json --socket /tmp/s")).unwrap() else { panic!() };
        assert!(s.json);
        assert_eq!(s.socket, PathBuf::from("/tmp/s"));
        let Command::Stats(s) = parse(args("hbgw stats --watch")).unwrap() else { panic!() };
        assert_eq!(s.watch, Some(1.0));
    }

    #[test]
    fn help_without_separator() {
        assert!(matches!(parse(args("hbgw --help")).unwrap(), Command::Help(_)));
        assert!(matches!(parse(args("hbgw -- --help")).unwrap(), Command::Help(_)));
    }
}
