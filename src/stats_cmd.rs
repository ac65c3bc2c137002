//! `hbgw stats`: asks a running gateway for its report over the stats socket.

use anyhow::{anyhow, Result};
use hbgw::cli::{EndpointsArgs, StatsArgs};
use hbgw_controlplane::admin::request;
use hbgw_shared::stats::StatsReport;
use std::io::IsTerminal;
use std::time::Duration;

fn fetch(args: &StatsArgs, what: &str) -> Result<(String, StatsReport)> {
    let line = request(&args.socket, what, Duration::from_secs(5)).map_err(|e| {
        anyhow!(
            "cannot reach the gateway at {} ({e}): is hbgw running? if it was started with --stats-socket, pass the same path with --socket",
            args.socket.display()
        )
    })?;
    let report: StatsReport = serde_json::from_str(&line).map_err(|_| {
        anyhow!("the gateway answered {:?}: is this an hbgw of the same version?", line.trim())
    })?;
    Ok((line, report))
}

/// Runs the command.
pub fn run(args: &StatsArgs) -> Result<()> {
    let mut first = if args.clear { "clear" } else { "stats" };
    let mut shown = 0u64;
    let clear_screen = args.watch.is_some() && std::io::stdout().is_terminal() && !args.json;
    loop {
        let (line, report) = fetch(args, first)?;
        first = "stats";
        if clear_screen {
            print!("\x1b[2J\x1b[H");
        }
        if args.json {
            print!("{line}");
        } else {
            println!("{}", report.render_table());
        }
        shown += 1;
        let Some(every) = args.watch else { return Ok(()) };
        if args.count.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(every.max(0.05)));
    }
}

/// `hbgw endpoints`: the heartbeat view (health, last heartbeat, missed
/// count, MACs/IPs, user; and the widget's counts).
pub fn endpoints(args: &EndpointsArgs) -> Result<()> {
    let line = request(&args.socket, "endpoints", Duration::from_secs(5)).map_err(|e| {
        anyhow!(
            "cannot reach the gateway at {} ({e}): is hbgw running? pass --socket PATH if it was started with --stats-socket",
            args.socket.display()
        )
    })?;
    let value: serde_json::Value = serde_json::from_str(&line)?;
    if let Some(err) = value.get("error").and_then(|e| e.as_str()) {
        return Err(anyhow!("{err}"));
    }
    if args.json {
        println!("{}", value["report"]);
    } else {
        print!("{}", value["table"].as_str().unwrap_or_default());
    }
    Ok(())
}
