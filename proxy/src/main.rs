//! `warden`: the MCP gateway binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// glibc malloc showed up as ~17 % of the proxy's CPU under load (much of it
/// `malloc_consolidate` around Pingora's 64 KiB buffers); mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "MCP gateway: governs every agent tool call at wire speed"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway on a bundle.
    Run {
        /// Bundle directory (warden.yaml, *.rego, data.json, .manifest).
        #[arg(long, env = "WARDEN_BUNDLE")]
        bundle: PathBuf,
        /// Listen on this address instead of the bundle's listeners (repeatable).
        #[arg(long)]
        listen: Vec<String>,
        /// Admin listener address (overrides the bundle's).
        #[arg(long)]
        admin: Option<String>,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Audit log path (`-` for stdout), overriding the bundle's.
        #[arg(long)]
        audit: Option<PathBuf>,
    },
    /// Check a bundle and print every problem; exits non-zero if there are any.
    Validate { bundle: PathBuf },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,warden=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Validate { bundle } => match warden_config::Bundle::load(&bundle)
            .map_err(anyhow::Error::from)
            .and_then(|b| {
                warden_filters::Snapshot::build(&b)?;
                Ok(b)
            }) {
            Ok(b) => {
                println!(
                    "{}: ok (revision {}, {} route(s), {} server(s))",
                    bundle.display(),
                    b.revision,
                    b.config.routes.len(),
                    b.config.servers.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", bundle.display());
                ExitCode::FAILURE
            }
        },
        Cmd::Run {
            bundle,
            listen,
            admin,
            threads,
            audit,
        } => {
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let audit = audit.filter(|p| p.as_os_str() != "-");
            match warden_proxy::server::run(warden_proxy::server::RunOptions {
                bundle,
                listen,
                admin,
                threads,
                audit,
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("warden: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
