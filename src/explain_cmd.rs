//! `hbgw explain`: asks the running gateway (or, with `--config`, the
//! configuration's files) what decides a flow, and prints why.

use anyhow::{anyhow, bail, Result};
use hbgw::cli::{AppArgs, ExplainArgs};
use hbgw_controlplane::admin::request;
use hbgw_controlplane::explain::{ExplainAnswer, ExplainRequest, Explainer};
use std::time::Duration;

fn question(args: &ExplainArgs) -> Result<ExplainRequest> {
    let mac = |s: &str, flag: &str| s.parse().map_err(|e| anyhow!("{flag} {s:?}: {e}"));
    Ok(ExplainRequest {
        ingress: args.ingress.clone(),
        src_mac: mac(&args.src_mac, "--src-mac")?,
        dst_mac: mac(&args.dst_mac, "--dst-mac")?,
        src_ip: args.src_ip,
        dst_ip: args.dst_ip,
        protocol: args.protocol.clone(),
        src_port: args.src_port,
        dst_port: args.dst_port,
        vlan: args.vlan,
        dns: args.dns.clone(),
        sni: args.sni.clone(),
        http_host: args.http_host.clone(),
        http_path: args.http_path.clone(),
    })
}

fn offline(args: &ExplainArgs, q: &ExplainRequest) -> Result<ExplainAnswer> {
    let app = AppArgs { config: args.config.clone(), ..Default::default() };
    let cfg = hbgw::gateway::effective_config(&app)?;
    let Some(section) = &cfg.enforcement else {
        bail!("the configuration has no [enforcement] section: every frame is bridged unchecked");
    };
    let loaded = hbgw::gateway::load_enforcement(section)?;
    let slots = (cfg.bridges.len() * 2).max(2);
    let ports = (0..slots).map(|s| (hbgw::gateway::port_role_name(s), hbgw::gateway::port_context(s))).collect();
    let explainer = Explainer::new(loaded.state, loaded.config, ports);
    // The writer owns the endpoints' health slots; keep it alive while asking.
    let answer = explainer.explain(q)?;
    drop(loaded.writer);
    Ok(answer)
}

fn online(args: &ExplainArgs, q: &ExplainRequest) -> Result<ExplainAnswer> {
    let body = serde_json::to_string(q)?;
    let line = request(&args.socket, &format!("explain {body}"), Duration::from_secs(5)).map_err(|e| {
        anyhow!(
            "cannot reach the gateway at {} ({e}): is hbgw running? pass --socket PATH, or --config FILE to answer from files",
            args.socket.display()
        )
    })?;
    let value: serde_json::Value = serde_json::from_str(&line)?;
    if let Some(err) = value.get("error").and_then(|e| e.as_str()) {
        bail!("{err}");
    }
    Ok(serde_json::from_value(value)?)
}

/// Runs the command.
pub fn run(args: &ExplainArgs) -> Result<()> {
    let q = question(args)?;
    let answer = if args.config.is_some() { offline(args, &q)? } else { online(args, &q)? };
    if args.json {
        println!("{}", serde_json::to_string(&answer)?);
        return Ok(());
    }
    println!("{}", answer.summary);
    println!("  verdict      {}{}", answer.verdict, answer.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default());
    println!("  decided by   {}", answer.stage);
    if let Some((i, name)) = &answer.rule {
        println!("  rule         {i} `{name}`");
    }
    if let Some(r) = &answer.policy_reason {
        println!("  policy       {r}");
    }
    println!("  health       source {}, destination {}", answer.src_health, answer.dst_health);
    for h in &answer.indicator_hits {
        println!("  indicator    {} {} (feed {}, {}, {} module)", h.audit_id, h.matched, h.feed, h.action, h.module);
    }
    if let Some((m, i)) = &answer.excluded {
        println!("  exclusion    indicator #{i} ({m} module) matched but is excluded");
    }
    if answer.tap_mode {
        println!("  tap mode     the gateway only observes: a drop here is logged, not enforced");
    }
    Ok(())
}
