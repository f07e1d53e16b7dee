//! `warden-agent`: the control agent binary. See the crate docs and the
//! README; the subcommands live in [`warden_agent::cli`].

use std::process::ExitCode;

use clap::Parser;
use warden_agent::cli::{self, Cli};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,warden_agent=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(Cli::parse().cmd) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("warden-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
