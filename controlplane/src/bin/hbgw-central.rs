//! `hbgw-central`: the reference Central. `init` makes a data directory (CA,
//! server certificate, admin token, database), `serve` runs the HTTPS API,
//! and the other subcommands are the admin CLI, which talks to the running
//! Central's admin API (docs/central-protocol.md says why not to the
//! database directly).

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use hbgw_controlplane::central::http::{self, HttpsClient};
use hbgw_controlplane::central::server::{self, Central, MAX_ADMIN_BODY};
use hyper::Method;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "hbgw-central", about = "The reference Central for hbgw: registration, endpoint certificates, policy, threat feeds, logs")]
struct Cli {
    /// Central's data directory (CA, server certificate, admin token, database, url).
    #[arg(long, global = true, default_value = "/var/lib/hbgw-central")]
    data: PathBuf,
    /// Central's URL (default: the `url` file `serve` writes in the data directory).
    #[arg(long, global = true)]
    url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: CA, server certificate, admin token, database.
    Init {
        /// The host name gateways use for Central (the server certificate's name).
        #[arg(long, default_value = "localhost")]
        name: String,
    },
    /// Serve the API.
    Serve {
        /// Address to listen on (port 0: any free port; the URL is written to DATA/url).
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Journal entries kept for incremental sync.
        #[arg(long, default_value_t = 100_000)]
        journal_keep: u64,
    },
    /// Create a one-time enrollment token for a gateway.
    Token,
    /// Enrolled gateways.
    Gateways,
    /// Endpoints: register (Central issues the certificate), remove, list.
    Endpoint {
        #[command(subcommand)]
        action: EndpointCmd,
    },
    /// Issue a heartbeat server certificate for a gateway (DIR/gateway.pem/.key, DIR/ca.pem).
    GatewayCert {
        /// The gateway's name.
        name: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Set the policy from a TOML file (shared/src/policy.rs format).
    Policy {
        /// The file.
        file: PathBuf,
    },
    /// MDR threat feeds: on/off and action.
    Feeds {
        /// Turn the feeds on or off.
        #[arg(long, action = clap::ArgAction::Set, default_value_t = true)]
        enabled: bool,
        /// `log_only` or `log_and_drop`.
        #[arg(long, default_value = "log_and_drop")]
        action: String,
    },
    /// Indicators: add (single, plain list, STIX bundle) and remove.
    Indicator {
        #[command(subcommand)]
        action: IndicatorCmd,
    },
    /// Heartbeat settings the gateways apply live: the interval endpoints
    /// are told, the missed-heartbeat limit, the missing-heartbeat zones.
    Heartbeat {
        /// Heartbeat interval, milliseconds (15000 in the product).
        #[arg(long, default_value_t = 15_000)]
        interval_ms: u64,
        /// Heartbeats missed before an endpoint is lost or missing.
        #[arg(long, default_value_t = 3)]
        missed_limit: u32,
        /// Zones where missing and no-heartbeat are detected (none: each gateway's own).
        #[arg(long = "zone")]
        zones: Vec<String>,
    },
    /// Set the threat exclusions (the whole list).
    Exclusions {
        /// Hosts, networks, domains or URLs.
        values: Vec<String>,
    },
    /// Log events the gateways uploaded.
    Logs {
        /// Only events after this row id.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The gateways' latest health summaries.
    Health,
    /// Central's revision and indicator count.
    Status,
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// Register an endpoint: Central issues its certificate; writes
    /// OUT/endpoints/NAME.pem/.key and OUT/ca.pem (the simulator's layout).
    Add {
        /// The endpoint's name.
        name: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Delete an endpoint: gateways unpin its certificate and close its session.
    Remove {
        /// The endpoint's name.
        name: String,
    },
    /// Registered endpoints.
    List,
}

#[derive(Subcommand)]
enum IndicatorCmd {
    /// Add one indicator, or a plain list (--list) or STIX bundle (--stix).
    Add {
        /// An IP address or network, domain or URL.
        value: Option<String>,
        /// Its audit ID (Central assigns one when absent).
        #[arg(long)]
        audit_id: Option<String>,
        /// Its feed.
        #[arg(long)]
        feed: Option<String>,
        /// A plain list file: `VALUE [AUDIT_ID]` per line.
        #[arg(long, conflicts_with_all = ["value", "stix"])]
        list: Option<PathBuf>,
        /// A STIX 2.1 bundle file.
        #[arg(long, conflicts_with_all = ["value", "list"])]
        stix: Option<PathBuf>,
    },
    /// Remove indicators by value, or by audit ID.
    Remove {
        /// Values to remove (every audit ID with that value).
        values: Vec<String>,
        /// Audit IDs to remove.
        #[arg(long = "audit-id")]
        audit_ids: Vec<String>,
    },
}

struct Admin {
    client: HttpsClient,
    token: String,
}

impl Admin {
    fn open(cli: &Cli) -> Result<Self> {
        let url = match &cli.url {
            Some(u) => u.clone(),
            None => std::fs::read_to_string(cli.data.join("url"))
                .with_context(|| format!("cannot read {}/url: is `hbgw-central serve --data {}` running? or pass --url", cli.data.display(), cli.data.display()))?
                .trim()
                .to_owned(),
        };
        let ca = std::fs::read(cli.data.join("ca.pem"))
            .with_context(|| format!("cannot read {}/ca.pem: pass the Central data directory with --data", cli.data.display()))?;
        let token = std::fs::read_to_string(cli.data.join("admin.token"))
            .with_context(|| format!("cannot read {}/admin.token: pass the Central data directory with --data", cli.data.display()))?
            .trim()
            .to_owned();
        Ok(Self { client: HttpsClient::new(&url, &ca).map_err(|e| anyhow!("{e}"))?, token })
    }

    fn call(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<serde_json::Value> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (_, bytes) = rt
            .block_on(self.client.call(method, path, Some(&self.token), body, Duration::from_secs(600), MAX_ADMIN_BODY))
            .map_err(|e| anyhow!("{e}"))?;
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| anyhow!("Central answered something that is not JSON ({e}): is --url a Central?"))
    }
}

fn json_body(v: serde_json::Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", v.to_string().into_bytes()))
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Init { name } => {
            server::init(&cli.data, name).map_err(|e| anyhow!("{e}"))?;
            println!("Central initialised in {}: serve it with `hbgw-central serve --data {}`", cli.data.display(), cli.data.display());
            Ok(())
        }
        Command::Serve { listen, journal_keep } => {
            let central = Central::open(&cli.data, *journal_keep).map_err(|e| anyhow!("{e}"))?;
            let cert = std::fs::read(cli.data.join("server.pem")).with_context(|| format!("cannot read {}/server.pem", cli.data.display()))?;
            let key = std::fs::read(cli.data.join("server.key")).with_context(|| format!("cannot read {}/server.key", cli.data.display()))?;
            let acceptor = http::server_tls(&cert, &key).map_err(|e| anyhow!("{e}: run `hbgw-central init` again in a new directory"))?;
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}: choose a free address with --listen"))?;
                let mut addr = listener.local_addr()?;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let url = format!("https://{addr}");
                write_file(&cli.data.join("url.tmp"), &format!("{url}\n"))?;
                std::fs::rename(cli.data.join("url.tmp"), cli.data.join("url"))?;
                tracing::info!("Central serving on {url} (data {})", cli.data.display());
                println!("Central serving on {url}");
                // SIGINT/SIGTERM end the process: every write is a committed
                // SQLite transaction, so there is nothing to flush.
                http::serve(listener, acceptor, central.handler()).await;
                Ok::<_, anyhow::Error>(())
            })
        }
        cmd => {
            let admin = Admin::open(&cli)?;
            let print = |v: &serde_json::Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            match cmd {
                Command::Token => println!("{}", admin.call(Method::POST, "/v1/admin/tokens", None)?["token"].as_str().unwrap_or_default()),
                Command::Gateways => print(&admin.call(Method::GET, "/v1/admin/gateways", None)?),
                Command::Health => print(&admin.call(Method::GET, "/v1/admin/health", None)?),
                Command::Status => print(&admin.call(Method::GET, "/v1/admin/status", None)?),
                Command::Endpoint { action: EndpointCmd::List } => print(&admin.call(Method::GET, "/v1/admin/endpoints", None)?),
                Command::Endpoint { action: EndpointCmd::Add { name, out } } => {
                    let v = admin.call(Method::POST, "/v1/admin/endpoints", json_body(serde_json::json!({"name": name})))?;
                    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                    write_file(&out.join("endpoints").join(format!("{name}.pem")), &s("cert_pem"))?;
                    write_file(&out.join("endpoints").join(format!("{name}.key")), &s("key_pem"))?;
                    write_file(&out.join("ca.pem"), &s("ca_pem"))?;
                    println!("endpoint {name} registered at revision {} (fingerprint {}); certificate in {}/endpoints/", v["revision"], s("fingerprint"), out.display());
                }
                Command::Endpoint { action: EndpointCmd::Remove { name } } => {
                    let v = admin.call(Method::DELETE, &format!("/v1/admin/endpoints/{name}"), None)?;
                    println!("endpoint {name} removed at revision {}", v["revision"]);
                }
                Command::GatewayCert { name, out } => {
                    let v = admin.call(Method::POST, "/v1/admin/gateway-cert", json_body(serde_json::json!({"name": name})))?;
                    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                    write_file(&out.join("gateway.pem"), &s("cert_pem"))?;
                    write_file(&out.join("gateway.key"), &s("key_pem"))?;
                    write_file(&out.join("ca.pem"), &s("ca_pem"))?;
                    println!("heartbeat server certificate for {name} in {}/gateway.pem", out.display());
                }
                Command::Policy { file } => {
                    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
                    let v = admin.call(Method::PUT, "/v1/admin/policy", Some(("text/plain", text)))?;
                    println!("policy set at revision {}", v["revision"]);
                }
                Command::Feeds { enabled, action } => {
                    if action != "log_only" && action != "log_and_drop" {
                        bail!("--action {action:?}: use log_only or log_and_drop");
                    }
                    let v = admin.call(Method::PUT, "/v1/admin/feed-settings", json_body(serde_json::json!({"enabled": enabled, "action": action})))?;
                    println!("MDR threat feeds {} ({action}) at revision {}", if *enabled { "on" } else { "off" }, v["revision"]);
                }
                Command::Heartbeat { interval_ms, missed_limit, zones } => {
                    let v = admin.call(
                        Method::PUT,
                        "/v1/admin/heartbeat",
                        json_body(serde_json::json!({"interval_ms": interval_ms, "missed_limit": missed_limit, "missing_zones": zones})),
                    )?;
                    println!("heartbeat every {interval_ms} ms, missing after {missed_limit} missed, zones {zones:?} at revision {}", v["revision"]);
                }
                Command::Exclusions { values } => {
                    let v = admin.call(Method::PUT, "/v1/admin/exclusions", json_body(serde_json::json!({"exclusions": values})))?;
                    println!("{} exclusion(s) set at revision {}", values.len(), v["revision"]);
                }
                Command::Indicator { action: IndicatorCmd::Add { value, audit_id, feed, list, stix } } => {
                    let feed_q = feed.as_deref().map(|f| format!("&feed={f}")).unwrap_or_default();
                    if let Some(f) = feed {
                        server::valid_feed(f).map_err(|e| anyhow!("{e}"))?;
                    }
                    let v = match (value, list, stix) {
                        (Some(value), None, None) => admin.call(
                            Method::POST,
                            "/v1/admin/indicators",
                            json_body(serde_json::json!({"indicators": [{"value": value, "audit_id": audit_id, "feed": feed}]})),
                        )?,
                        (None, Some(path), None) | (None, None, Some(path)) => {
                            let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
                            let format = if list.is_some() { "list" } else { "stix" };
                            admin.call(Method::POST, &format!("/v1/admin/indicators?format={format}{feed_q}"), Some(("text/plain", text)))?
                        }
                        _ => bail!("give one indicator VALUE, or --list FILE, or --stix FILE"),
                    };
                    println!("{}", v);
                }
                Command::Indicator { action: IndicatorCmd::Remove { values, audit_ids } } => {
                    if values.is_empty() && audit_ids.is_empty() {
                        bail!("name what to remove: VALUE... or --audit-id ID");
                    }
                    let v = admin.call(Method::DELETE, "/v1/admin/indicators", json_body(serde_json::json!({"values": values, "audit_ids": audit_ids})))?;
                    println!("{}", v);
                }
                Command::Logs { after, limit, json } => {
                    let v = admin.call(Method::GET, &format!("/v1/admin/logs?after={after}&limit={limit}"), None)?;
                    for e in v.as_array().into_iter().flatten() {
                        if *json {
                            println!("{e}");
                        } else {
                            let r = &e["record"];
                            println!(
                                "{:>6} {} seq {:>6} {} {} {} {}",
                                e["id"], e["gateway"].as_str().unwrap_or(""), e["seq"],
                                r["log"].as_str().or(r["event"]["log"].as_str()).unwrap_or("?"),
                                r["reason"].as_str().unwrap_or(""),
                                r["indicator"].as_str().unwrap_or(""),
                                r["audit_id"].as_str().unwrap_or("")
                            );
                        }
                    }
                }
                Command::Init { .. } | Command::Serve { .. } => unreachable!("handled above"),
            }
            Ok(())
        }
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("hbgw-central: {e:#}");
        std::process::exit(1);
    }
}
