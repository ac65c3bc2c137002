//! `hbgw-endpoint-sim`: simulated Security Heartbeat endpoints, for tests,
//! the demo and load tests.
//!
//! ```text
//! hbgw-endpoint-sim certs --dir pki --endpoints 8          # test CA, gateway cert, 8 endpoint certs
//! hbgw-endpoint-sim run --dir pki --endpoints 8 --gateway 127.0.0.1:8347 \
//!     --script "5s:ep3=red,20s:ep3=green,10s:ep2=silent,12s:ep1=signin:CORP\alice"
//! ```
//!
//! Endpoint `epN` uses `pki/endpoints/epN.pem/.key`, MAC `02:5e:00:00:HH:LL`
//! (N in the last two bytes) and IP `10.77.H.L` (N + 1). It sends Hello, then
//! heartbeats at the interval the gateway's Welcome gives, answers IoC
//! queries, and prints every endpoint list it receives.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use hbgw_controlplane::heartbeat::client::{client_config, EndpointConnection};
use hbgw_controlplane::heartbeat::pki::TestPki;
use hbgw_controlplane::heartbeat::protocol::{EndpointMessage, GatewayMessage, Hello, IocAnswer, ReportedHealth, UserAccount};
use hbgw_shared::endpoint::{EndpointInterface, MacAddr};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};

#[derive(Parser, Debug)]
#[command(name = "hbgw-endpoint-sim", about = "Simulated Security Heartbeat endpoints for hbgw")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a test CA, the gateway's certificate and one certificate per endpoint.
    Certs {
        /// Output directory (ca.pem, gateway.pem/.key, endpoints/epN.pem/.key, pinned.pem, pinned.txt).
        #[arg(long)]
        dir: PathBuf,
        /// Number of endpoints.
        #[arg(long, default_value_t = 4)]
        endpoints: usize,
        /// The gateway's DNS name (127.0.0.1 and ::1 are always in its certificate).
        #[arg(long, default_value = "localhost")]
        gateway_name: String,
    },
    /// Run the endpoints against a gateway.
    Run {
        /// The directory `certs` wrote.
        #[arg(long)]
        dir: PathBuf,
        /// Number of endpoints (ep0 .. epN-1).
        #[arg(long, default_value_t = 4)]
        endpoints: usize,
        /// The gateway's heartbeat address.
        #[arg(long, default_value = "127.0.0.1:8347")]
        gateway: SocketAddr,
        /// The name to verify in the gateway's certificate.
        #[arg(long, default_value = "localhost")]
        server_name: String,
        /// Scripted events: `TIME:epN=ACTION,...`; TIME like 5s or 500ms;
        /// ACTION one of green, yellow, red, silent, resume, disconnect,
        /// connect, signin:DOMAIN\user, signout:DOMAIN\user.
        #[arg(long, default_value = "")]
        script: String,
        /// Stop after this many seconds (default: run until killed).
        #[arg(long)]
        duration: Option<f64>,
        /// The process named in IoC answers.
        #[arg(long, default_value = "C:\\Program Files\\App\\app.exe")]
        ioc_process: String,
        /// Which endpoints print the lists they receive.
        #[arg(long, value_enum, default_value_t = Lists::All)]
        lists: Lists,
        /// Offer TLS 1.2 too.
        #[arg(long)]
        tls12: bool,
        /// Start at most this many endpoints per second (a fleet powering on
        /// over time); default: all at once.
        #[arg(long, value_name = "PER_SECOND")]
        ramp: Option<f64>,
        /// Connection attempts in flight at once across all endpoints (real
        /// endpoints handshake on their own CPUs; the simulator shares one).
        #[arg(long, value_name = "N", default_value_t = 128)]
        max_connecting: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Lists {
    All,
    First,
    None,
}

#[derive(Debug, Clone, PartialEq)]
enum Action {
    Health(ReportedHealth),
    Silent,
    Resume,
    Disconnect,
    Connect,
    SignIn(UserAccount),
    SignOut(UserAccount),
}

#[derive(Debug, Clone, PartialEq)]
struct ScriptEvent {
    at: Duration,
    endpoint: usize,
    action: Action,
}

fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().with_context(|| format!("bad time `{s}`: write e.g. 5s, 500ms or 2m"))?;
    if !(v.is_finite() && v >= 0.0) {
        bail!("bad time `{s}`: write a non-negative number of seconds");
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn parse_account(s: &str) -> Result<UserAccount> {
    match s.split_once('\\') {
        Some((d, u)) if !u.is_empty() => Ok(UserAccount { domain: d.to_owned(), user: u.to_owned() }),
        _ => bail!("bad account `{s}`: write DOMAIN\\user"),
    }
}

fn parse_script(script: &str, endpoints: usize) -> Result<Vec<ScriptEvent>> {
    let mut events = Vec::new();
    for item in script.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let err = || format!("bad script item `{item}`: write TIME:epN=ACTION, e.g. 5s:ep3=red");
        let (time, rest) = item.split_once(':').with_context(err)?;
        let (ep, action) = rest.split_once('=').with_context(err)?;
        let endpoint: usize = ep.trim().strip_prefix("ep").and_then(|n| n.parse().ok()).with_context(err)?;
        if endpoint >= endpoints {
            bail!("script item `{item}`: ep{endpoint} does not exist (there are {endpoints}; raise --endpoints)");
        }
        let action = match action.trim() {
            "green" => Action::Health(ReportedHealth::Green),
            "yellow" => Action::Health(ReportedHealth::Yellow),
            "red" => Action::Health(ReportedHealth::Red),
            "silent" => Action::Silent,
            "resume" => Action::Resume,
            "disconnect" => Action::Disconnect,
            "connect" => Action::Connect,
            a if a.starts_with("signin:") => Action::SignIn(parse_account(&a["signin:".len()..])?),
            a if a.starts_with("signout:") => Action::SignOut(parse_account(&a["signout:".len()..])?),
            other => bail!("script item `{item}`: unknown action `{other}`: use green, yellow, red, silent, resume, disconnect, connect, signin:D\\u, signout:D\\u"),
        };
        events.push(ScriptEvent { at: parse_duration(time)?, endpoint, action });
    }
    events.sort_by_key(|e| e.at);
    Ok(events)
}

fn sim_mac(i: usize) -> MacAddr {
    MacAddr([0x02, 0x5e, 0, 0, (i >> 8) as u8, i as u8])
}

fn sim_ip(i: usize) -> IpAddr {
    let n = i + 1;
    IpAddr::V4(Ipv4Addr::new(10, 77, (n >> 8) as u8, n as u8))
}

/// A deterministic jitter in [0, 1) per endpoint and attempt.
fn jitter(index: usize, attempt: u32) -> f64 {
    let mut x = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(attempt).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

struct Sim {
    /// Connection attempts (TCP + TLS handshake) in flight at once, across
    /// all simulated endpoints: real endpoints handshake on their own CPUs,
    /// the simulator shares one machine's.
    connecting: Arc<tokio::sync::Semaphore>,
    ramp: Option<f64>,
    quiet: bool,
    index: usize,
    name: String,
    gateway: SocketAddr,
    server_name: String,
    tls: Arc<rustls::ClientConfig>,
    ioc_process: String,
    print_lists: bool,
    start: Instant,
}

fn stamp(start: Instant) -> String {
    format!("{:>8.3}s", start.elapsed().as_secs_f64())
}

impl Sim {
    async fn run(self, mut commands: mpsc::Receiver<Action>) {
        let mut health = ReportedHealth::Green;
        let mut silent = false;
        let mut wanted = true;
        let mut users: Vec<UserAccount> = Vec::new();
        let mut failures = 0u32;
        // Spread the first connections at the configured ramp rate.
        if let Some(rate) = self.ramp {
            sleep(Duration::from_secs_f64(self.index as f64 / rate.max(1.0))).await;
        }
        loop {
            if !wanted {
                match commands.recv().await {
                    None => return,
                    Some(Action::Connect) => wanted = true,
                    Some(Action::Health(h)) => health = h,
                    Some(Action::SignIn(u)) => users.push(u),
                    Some(Action::SignOut(u)) => users.retain(|x| *x != u),
                    Some(Action::Silent) => silent = true,
                    Some(Action::Resume) => silent = false,
                    Some(Action::Disconnect) => {}
                }
                continue;
            }
            let permit = self.connecting.clone().acquire_owned().await.ok();
            let attempt = EndpointConnection::connect(self.gateway, &self.server_name, self.tls.clone()).await;
            drop(permit);
            let mut conn = match attempt {
                Ok(c) => {
                    failures = 0;
                    c
                }
                Err(e) => {
                    // Exponential backoff with jitter, as real agents do: a fleet
                    // retrying in lockstep is a self-inflicted flood.
                    failures = (failures + 1).min(5);
                    let base = 2f64.powi(failures as i32).min(30.0);
                    let wait = base * (0.5 + jitter(self.index, failures));
                    if !self.quiet {
                        println!("{} {}: connect failed: {e}; retrying in {wait:.1} s", stamp(self.start), self.name);
                    }
                    sleep(Duration::from_secs_f64(wait)).await;
                    continue;
                }
            };
            let hello = Hello {
                endpoint_id: format!("sim-{}", self.name),
                name: self.name.to_uppercase(),
                health,
                interfaces: vec![EndpointInterface { mac: sim_mac(self.index), ips: vec![sim_ip(self.index)] }],
                users: users.clone(),
            };
            if let Err(e) = conn.send(EndpointMessage::Hello(hello)).await {
                println!("{} {}: hello failed: {e}", stamp(self.start), self.name);
                sleep(Duration::from_secs(2)).await;
                continue;
            }
            let mut interval = Duration::from_secs(15);
            let mut next_beat = Instant::now() + interval;
            loop {
                tokio::select! {
                    _ = sleep_until(next_beat), if !silent => {
                        if conn.send(EndpointMessage::Heartbeat { health }).await.is_err() { break; }
                        next_beat = Instant::now() + interval;
                    }
                    cmd = commands.recv() => {
                        let Some(cmd) = cmd else { return };
                        println!("{} {}: script: {cmd:?}", stamp(self.start), self.name);
                        let sent = match cmd {
                            Action::Health(h) => {
                                health = h;
                                conn.send(EndpointMessage::HealthChange { health, reason: Some("scripted".into()) }).await
                            }
                            Action::Silent => { silent = true; Ok(()) }
                            Action::Resume => {
                                silent = false;
                                next_beat = Instant::now();
                                Ok(())
                            }
                            Action::Disconnect => { wanted = false; break; }
                            Action::Connect => Ok(()),
                            Action::SignIn(u) => {
                                users.push(u.clone());
                                conn.send(EndpointMessage::SignIn(u)).await
                            }
                            Action::SignOut(u) => {
                                users.retain(|x| *x != u);
                                conn.send(EndpointMessage::SignOut(u)).await
                            }
                        };
                        if sent.is_err() { break; }
                    }
                    msg = conn.recv() => match msg {
                        None => { println!("{} {}: gateway closed the session", stamp(self.start), self.name); break; }
                        Some(Err(e)) => { println!("{} {}: session error: {e}", stamp(self.start), self.name); break; }
                        Some(Ok(m)) => match m {
                            GatewayMessage::Welcome { heartbeat_interval_ms, gateway, endpoint_id } => {
                                interval = Duration::from_millis(heartbeat_interval_ms.max(10));
                                next_beat = Instant::now() + interval;
                                println!("{} {}: welcome from {gateway}: id {endpoint_id}, heartbeat every {interval:?}", stamp(self.start), self.name);
                            }
                            GatewayMessage::EndpointList { seq, endpoints } => {
                                if self.print_lists {
                                    let items: Vec<String> = endpoints.iter().map(|e| {
                                        let addrs: Vec<String> = e.interfaces.iter().map(|i| {
                                            let ips: Vec<String> = i.ips.iter().map(|ip| ip.to_string()).collect();
                                            format!("{} {}", i.mac, ips.join("/"))
                                        }).collect();
                                        format!("{} [{}]", e.health, addrs.join("; "))
                                    }).collect();
                                    println!("{} {}: endpoint list #{seq}: {} red/yellow {}", stamp(self.start), self.name, endpoints.len(), items.join(", "));
                                }
                            }
                            GatewayMessage::IocQuery { query_id, flow } => {
                                println!("{} {}: IoC query {query_id} for {flow:?}", stamp(self.start), self.name);
                                let answer = IocAnswer {
                                    query_id,
                                    host: Some(self.name.to_uppercase()),
                                    user: users.last().map(|u| u.to_string()),
                                    process: Some(self.ioc_process.clone()),
                                };
                                if conn.send(EndpointMessage::IocAnswer(answer)).await.is_err() { break; }
                            }
                            GatewayMessage::Error { code, message } => {
                                println!("{} {}: gateway error {code}: {message}", stamp(self.start), self.name);
                            }
                        },
                    },
                }
            }
            if wanted {
                sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Certs { dir, endpoints, gateway_name } => {
            let names: Vec<String> = (0..endpoints).map(|i| format!("ep{i}")).collect();
            let pki = TestPki::generate(&gateway_name, &names)?;
            pki.write_to(&dir)?;
            println!("wrote a test CA, the gateway certificate and {endpoints} endpoint certificates to {}", dir.display());
            for ep in &pki.endpoints {
                println!("{} {}", ep.fingerprint, ep.name);
            }
            Ok(())
        }
        Command::Run { dir, endpoints, gateway, server_name, script, duration, ioc_process, lists, tls12, ramp, max_connecting } => {
            let events = parse_script(&script, endpoints)?;
            let ca = std::fs::read(dir.join("ca.pem"))
                .with_context(|| format!("cannot read {}/ca.pem: run `hbgw-endpoint-sim certs --dir {}` first", dir.display(), dir.display()))?;
            let start = Instant::now();
            let connecting = Arc::new(tokio::sync::Semaphore::new(max_connecting.max(1)));
            let mut senders = Vec::with_capacity(endpoints);
            let mut tasks = Vec::with_capacity(endpoints);
            for i in 0..endpoints {
                let name = format!("ep{i}");
                let read = |ext: &str| {
                    let path = dir.join("endpoints").join(format!("{name}.{ext}"));
                    std::fs::read(&path).with_context(|| format!("cannot read {}: generate certificates for {endpoints} endpoints with `certs`", path.display()))
                };
                let tls = client_config(&ca, &read("pem")?, &read("key")?, tls12)?;
                let (tx, rx) = mpsc::channel(16);
                senders.push(tx);
                let sim = Sim {
                    connecting: connecting.clone(),
                    ramp,
                    quiet: endpoints > 1000,
                    index: i,
                    name,
                    gateway,
                    server_name: server_name.clone(),
                    tls,
                    ioc_process: ioc_process.clone(),
                    print_lists: lists == Lists::All || (lists == Lists::First && i == 0),
                    start,
                };
                tasks.push(tokio::spawn(sim.run(rx)));
            }
            let script = async {
                for e in events {
                    sleep_until(start + e.at).await;
                    let _ = senders[e.endpoint].send(e.action).await;
                }
                std::future::pending::<()>().await
            };
            match duration {
                Some(secs) => {
                    let _ = tokio::time::timeout(Duration::from_secs_f64(secs.max(0.0)), script).await;
                }
                None => script.await,
            }
            for t in tasks {
                t.abort();
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_parses_and_sorts() {
        let ev = parse_script("20s:ep3=green, 5s:ep3=red,500ms:ep2=silent,1m:ep1=signin:CORP\\alice", 4).unwrap();
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[0], ScriptEvent { at: Duration::from_millis(500), endpoint: 2, action: Action::Silent });
        assert_eq!(ev[1].action, Action::Health(ReportedHealth::Red));
        assert_eq!(ev[3].action, Action::SignIn(UserAccount { domain: "CORP".into(), user: "alice".into() }));
        for bad in ["5s:ep9=red", "ep1=red", "5s:ep1=purple", "x:ep1=red", "5s:ep1=signin:alice"] {
            let err = parse_script(bad, 4).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn addresses_are_distinct() {
        assert_ne!(sim_mac(1), sim_mac(257));
        assert_eq!(sim_ip(0).to_string(), "10.77.0.1");
        assert_eq!(sim_ip(255).to_string(), "10.77.1.0");
    }
}
