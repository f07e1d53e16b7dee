//! `warden-load run|saturate|compare`: drive an MCP endpoint (Warden, the
//! mock, or any Streamable-HTTP MCP server) and report what it sustains.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use warden_loadtest::load::{compare, Load, Report, Scenario};

#[derive(Parser)]
#[command(name = "warden-load", about = "MCP load generator for Warden")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Common {
    /// Scenario file, or `builtin:day100k` / `builtin:echo1k`.
    #[arg(long, default_value = "builtin:echo1k")]
    scenario: String,
    /// MCP endpoint URL (overrides the scenario's `target`).
    #[arg(long)]
    target: Option<String>,
    /// Extra header on every request, `name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Open this many sessions instead of the scenario's number.
    #[arg(long)]
    sessions: Option<usize>,
    /// Runtime worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open-loop run at the scenario's arrival rate.
    Run {
        #[command(flatten)]
        common: Common,
        /// Constant arrival rate (per second), replacing the scenario's shape.
        #[arg(long)]
        rate: Option<f64>,
        /// Measured run length (the compressed day for `diurnal`).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Unmeasured lead-in.
        #[arg(long, value_parser = humantime::parse_duration)]
        warmup: Option<Duration>,
        /// Exit 1 when more than this share of requests failed (0.01 = 1 %).
        #[arg(long)]
        max_error_rate: Option<f64>,
        /// Most requests on the wire at once, so most connections open
        /// (replacing the scenario's `connections`, default 64).
        #[arg(long)]
        connections: Option<usize>,
    },
    /// Closed-loop search for the highest rate within a p99 bound.
    Saturate {
        #[command(flatten)]
        common: Common,
        /// Latency bound on p99.
        #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
        p99: Duration,
        /// Length of each step.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        step: Duration,
        /// Most concurrent clients to try.
        #[arg(long, default_value_t = 512)]
        max_clients: usize,
    },
    /// Compare two JSON reports (B relative to A).
    Compare { a: PathBuf, b: PathBuf },
}

fn prepare(common: &Common) -> anyhow::Result<(Scenario, String)> {
    let mut s = Scenario::load(&common.scenario)?;
    for h in &common.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?}: expected `name: value`"))?;
        s.headers.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    if let Some(n) = common.sessions {
        s.sessions = n.max(1);
    }
    let url = common
        .target
        .clone()
        .or_else(|| s.target.clone())
        .context("no target: give --target or `target:` in the scenario")?;
    Ok((s, url))
}

fn write_json<T: serde::Serialize>(path: &Option<PathBuf>, v: &T) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_vec_pretty(v)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    match Cli::parse().cmd {
        Cmd::Run {
            common,
            rate,
            duration,
            warmup,
            max_error_rate,
            connections,
        } => {
            let (mut s, url) = prepare(&common)?;
            if let Some(c) = connections {
                s.connections = c.max(1);
            }
            if let Some(r) = rate {
                s.rate = Some(r);
                s.stages.clear();
                s.diurnal = None;
            }
            if duration.is_some() {
                s.duration = duration;
            }
            if warmup.is_some() {
                s.warmup = warmup;
            }
            let report = runtime(common.threads)?.block_on(async {
                // SIGINT or SIGTERM ends the run early, with its report.
                use tokio::signal::unix::{signal, SignalKind};
                let mut int = signal(SignalKind::interrupt())?;
                let mut term = signal(SignalKind::terminate())?;
                tokio::spawn(async move {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    warden_loadtest::load::engine::stop();
                });
                let load = Load::connect(s, url).await?;
                anyhow::Ok(load.open_loop(!common.quiet).await)
            })?;
            print!("{}", report.summary());
            write_json(&common.report, &report)?;
            if let Some(max) = max_error_rate {
                if report.error_rate() > max {
                    eprintln!(
                        "warden-load: error rate {:.3}% above {:.3}%",
                        report.error_rate() * 100.0,
                        max * 100.0
                    );
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Cmd::Saturate {
            common,
            p99,
            step,
            max_clients,
        } => {
            let (s, url) = prepare(&common)?;
            let report = runtime(common.threads)?.block_on(async {
                let load = Load::connect(s, url).await?;
                anyhow::Ok(load.saturate(p99, step, max_clients, !common.quiet).await)
            })?;
            println!(
                "max sustainable rate within p99 ≤ {:?}: {:.0} requests/s ({} clients)",
                p99, report.max_sustainable_rps, report.best_workers
            );
            write_json(&common.report, &report)?;
        }
        Cmd::Compare { a, b } => {
            let read = |p: &PathBuf| -> anyhow::Result<Report> {
                let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                serde_json::from_slice(&text)
                    .with_context(|| format!("{} is not a report", p.display()))
            };
            print!("{}", compare(&read(&a)?, &read(&b)?));
        }
    }
    Ok(ExitCode::SUCCESS)
}
