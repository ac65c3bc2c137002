//! `hbgw`: the gateway binary. See `hbgw --help` and README.md.

use hbgw::cli::{self, Command};
use std::process::ExitCode;

mod explain_cmd;
mod stats_cmd;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HBGW_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();

    let command = match cli::parse(std::env::args().collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hbgw: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help(text) => {
            println!("{text}");
            Ok(())
        }
        Command::Stats(args) => stats_cmd::run(&args),
        Command::Explain(args) => explain_cmd::run(&args),
        Command::Endpoints(args) => stats_cmd::endpoints(&args),
        Command::Gateway { eal, app } => hbgw::gateway::run(eal, app),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hbgw: {e}");
            ExitCode::FAILURE
        }
    }
}
