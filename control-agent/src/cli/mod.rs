//! The `warden-agent` command line: its subcommands and what runs each.
//! `main` parses [`Cli`] and hands its [`Cmd`] to [`run`].
//!
//! - [`serve`]: `serve`, the agent itself (the API, its state, its jobs);
//! - [`keys`]: signing keys (`keygen`, `--signing-key`, `--valid-for`);
//! - [`client`]: the HTTP client the other subcommands speak to a running
//!   agent with, and how they print its answers;
//! - [`admin`]: the admin token's subcommands (publish, canary, rollback,
//!   kill switch, fleet);
//! - [`approvals`]: an approver's subcommands;
//! - [`governance`]: `tenant …` and `registry …`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use warden_config::archive;

use crate::build::{self, KillState};

pub mod admin;
pub mod approvals;
pub mod client;
pub mod governance;
pub mod keys;
pub mod serve;
pub mod state;
#[cfg(test)]
mod state_tests;

use admin::{RolloutCmd, Target};
use approvals::ApprovalCmd;
use client::{ApproverClient, Client};
use governance::{RegistryCmd, TenantCmd};
use keys::Signing;

#[derive(Parser)]
#[command(name = "warden-agent", version, about = "Warden control agent")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

// Parsed once at start and matched once: the size of `serve`'s variant
// costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Cmd {
    /// Serve bundles built from a source directory; watch it and publish changes.
    Serve(serve::ServeArgs),
    /// Held calls: list them, approve or deny one (an approver's token).
    Approvals {
        #[command(flatten)]
        client: ApproverClient,
        #[command(subcommand)]
        cmd: ApprovalCmd,
    },
    /// Build (validate, sign) a bundle archive offline.
    Build {
        source: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "manual")]
        revision: String,
        #[command(flatten)]
        signing: Signing,
    },
    /// Make an Ed25519 key pair for signing (private and public PEM).
    Keygen {
        #[arg(long)]
        private: PathBuf,
        #[arg(long)]
        public: PathBuf,
    },
    /// Build and publish the agent's source now: to every gateway, to those
    /// carrying `--select` labels, or as a `--canary` watched against the rest.
    Publish {
        #[command(flatten)]
        client: Client,
        /// Only gateways carrying these labels (`env=prod,region=eu`).
        #[arg(long, default_value = "")]
        select: String,
        /// Publish to this share of the selected gateways first (`10%`).
        #[arg(long)]
        canary: Option<String>,
        /// How long the canary is watched before it is promoted.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        watch: Duration,
        /// Roll back when the canary's denied share of calls exceeds the
        /// rest's by more than this (0.05: five points).
        #[arg(long, default_value_t = 0.05)]
        max_denial_increase: f64,
        /// Likewise for its share of 5xx answers.
        #[arg(long, default_value_t = 0.05)]
        max_error_increase: f64,
        /// Roll back when its p99 exceeds the rest's times this (plus 50 ms).
        #[arg(long, default_value_t = 2.0)]
        max_p99_ratio: f64,
        /// Calls the canary must see to be judged (fewer by the end of the
        /// watch rolls it back).
        #[arg(long, default_value_t = 20)]
        min_calls: u64,
    },
    /// Promote the canary being watched to every gateway it was selected from.
    Promote {
        #[command(flatten)]
        client: Client,
        /// The canary revision you judged (`rollout status` prints it):
        /// refused when the canary watched is another by then.
        #[arg(long)]
        revision: String,
    },
    /// Without a revision: roll back the canary being watched. With one:
    /// publish that earlier revision's content again to every gateway (the kill switch stays as it is).
    Rollback {
        #[command(flatten)]
        client: Client,
        revision: Option<String>,
    },
    /// The canary being watched (or the last one): its members, figures
    /// against the rest, and how it ended.
    Rollout {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        cmd: RolloutCmd,
    },
    /// Pause calls: `--all`, or a tenant, principal, server or tool (`tool` or `server/tool`).
    Kill {
        #[command(flatten)]
        client: Client,
        #[command(flatten)]
        target: Target,
    },
    /// Undo a kill.
    Revive {
        #[command(flatten)]
        client: Client,
        #[command(flatten)]
        target: Target,
    },
    /// Show the fleet: who runs which revision, who is stale, the last build error.
    Status(Client),
    /// Published revisions.
    History(Client),
    /// A tenant's layer: publish (or canary), history, diff, rollback.
    Tenant {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        cmd: TenantCmd,
    },
    /// The registry of servers: register, move through the lifecycle, share, show.
    Registry {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        cmd: RegistryCmd,
    },
    /// The agent's state: back it up, restore it, move it into PostgreSQL.
    State {
        #[command(subcommand)]
        cmd: state::StateCmd,
    },
    /// Validate bundle directories; prints every problem, exits non-zero on any.
    Validate {
        #[arg(required = true)]
        bundles: Vec<PathBuf>,
    },
}

/// Runs a subcommand: `Ok(true)` exits 0, `Ok(false)` exits 1 (what failed
/// is printed already), `Err` is printed by `main` and exits 1.
pub fn run(cmd: Cmd) -> anyhow::Result<bool> {
    match cmd {
        Cmd::Serve(args) => serve::serve(args),
        Cmd::Build {
            source,
            out,
            revision,
            signing,
        } => build_offline(&source, &out, &revision, &signing),
        Cmd::Approvals { client, cmd } => approvals::approvals(client, cmd),
        Cmd::Keygen { private, public } => keys::keygen(&private, &public).map(|_| true),
        Cmd::Publish {
            client,
            select,
            canary,
            watch,
            max_denial_increase,
            max_error_increase,
            max_p99_ratio,
            min_calls,
        } => admin::publish(
            &client,
            &select,
            canary.as_deref(),
            watch,
            admin::Guard {
                max_denial_increase,
                max_error_increase,
                max_p99_ratio,
                min_calls,
            },
        ),
        Cmd::Promote { client, revision } => admin::promote(&client, revision),
        Cmd::Rollback { client, revision } => admin::rollback(&client, revision),
        Cmd::Rollout {
            client,
            cmd: RolloutCmd::Status,
        } => admin::rollout_status(&client),
        Cmd::Kill { client, target } => admin::kill(&client, &target, "/v1/kill"),
        Cmd::Revive { client, target } => admin::kill(&client, &target, "/v1/revive"),
        Cmd::Status(c) => admin::get(&c, "/v1/fleet"),
        Cmd::History(c) => admin::get(&c, "/v1/history"),
        Cmd::Tenant { client, cmd } => governance::tenant_cmd(&client, cmd),
        Cmd::Registry { client, cmd } => governance::registry_cmd(&client, cmd),
        Cmd::Validate { bundles } => Ok(validate(bundles)),
        Cmd::State { cmd } => state::run(cmd),
    }
}

/// `build`: the source built, validated and signed into an archive.
fn build_offline(
    source: &std::path::Path,
    out: &std::path::Path,
    revision: &str,
    signing: &Signing,
) -> anyhow::Result<bool> {
    let files = archive::read_dir(source)?;
    match build::build(
        &files,
        revision,
        &KillState::default(),
        keys::signer(signing, Duration::from_secs(30 * 86_400))?.as_ref(),
        &Default::default(),
    ) {
        Ok(built) => {
            std::fs::write(out, archive::pack(&built))?;
            println!(
                "{}: revision {revision}, {} files",
                out.display(),
                built.len()
            );
            Ok(true)
        }
        Err(e) => {
            eprintln!("{}: refused:\n{e}", source.display());
            Ok(false)
        }
    }
}

/// `validate`: each directory validated, every problem printed.
fn validate(bundles: Vec<PathBuf>) -> bool {
    let mut ok = true;
    for dir in bundles {
        match build::validate_dir(&dir) {
            Ok(()) => println!("{}: ok", dir.display()),
            Err(e) => {
                ok = false;
                eprintln!("{}: refused:\n{e}", dir.display());
            }
        }
    }
    ok
}
