//! `warden-agent`: the control agent. Today it validates bundle sources with
//! the same `Snapshot::build` the gateway runs, so a bundle that passes here
//! loads in every gateway. Building, signing and serving bundles come next.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "warden-agent", version, about = "Warden control agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate one or more bundle directories; prints every problem, exits non-zero on any.
    Validate {
        #[arg(required = true)]
        bundles: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let Cmd::Validate { bundles } = Cli::parse().cmd;
    let mut failed = false;
    for dir in bundles {
        let result = warden_config::Bundle::load(&dir)
            .map_err(anyhow::Error::from)
            .and_then(|b| {
                warden_filters::Snapshot::build(&b)
                    .map(|s| (b, s))
                    .map_err(anyhow::Error::from)
            });
        match result {
            Ok((b, snap)) => println!(
                "{}",
                serde_json::json!({"bundle": dir.display().to_string(), "ok": true, "revision": b.revision, "routes": snap.routes.len(), "policies": b.policies.len()})
            ),
            Err(e) => {
                failed = true;
                eprintln!("{}: {e}", dir.display());
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
