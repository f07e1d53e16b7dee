//! The admin token's subcommands: publish (or canary), promote, rollback,
//! rollout status, kill and revive, fleet status and history.

use std::time::Duration;

use clap::Subcommand;

use super::client::{call, print, runtime, Client};

#[derive(Subcommand)]
pub enum RolloutCmd {
    /// Show the canary and its figures.
    Status,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    #[arg(long)]
    all: bool,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    principal: Option<String>,
    #[arg(long)]
    server: Option<String>,
    #[arg(long)]
    tool: Option<String>,
}

impl Target {
    fn scope(&self) -> (&'static str, String) {
        match self {
            Target { all: true, .. } => ("all", String::new()),
            Target {
                tenant: Some(v), ..
            } => ("tenant", v.clone()),
            Target {
                principal: Some(v), ..
            } => ("principal", v.clone()),
            Target {
                server: Some(v), ..
            } => ("server", v.clone()),
            Target { tool: Some(v), .. } => ("tool", v.clone()),
            _ => ("all", String::new()),
        }
    }
}

/// What rolls a canary back (`publish --canary`'s `--max-…` and
/// `--min-calls`).
pub struct Guard {
    pub max_denial_increase: f64,
    pub max_error_increase: f64,
    pub max_p99_ratio: f64,
    pub min_calls: u64,
}

/// `publish`: the source built and published now, to the gateways
/// `select` names, or as a canary of `canary` of them watched for `watch`.
pub fn publish(
    client: &Client,
    select: &str,
    canary: Option<&str>,
    watch: Duration,
    guard: Guard,
) -> anyhow::Result<bool> {
    let select =
        crate::rollout::labels_of(select).map_err(|e| anyhow::Error::msg(e.to_string()))?;
    let mut body = serde_json::json!({"select": select});
    if let Some(share) = canary {
        let share =
            crate::rollout::share_of(share).map_err(|e| anyhow::Error::msg(e.to_string()))?;
        body["canary"] = serde_json::json!({
            "share": share,
            "watch_secs": watch.as_secs().max(1),
            "guard": {
                "max_denial_increase": guard.max_denial_increase,
                "max_error_increase": guard.max_error_increase,
                "max_p99_ratio": guard.max_p99_ratio,
                "p99_slack_ms": 50.0,
                "min_calls": guard.min_calls,
            },
        });
    }
    runtime()?.block_on(async {
        print(&call(client, reqwest::Method::POST, "/v1/publish", Some(body)).await?);
        Ok(true)
    })
}

/// `promote`: the canary `revision` promoted.
pub fn promote(client: &Client, revision: String) -> anyhow::Result<bool> {
    runtime()?.block_on(async {
        let body = serde_json::json!({"revision": revision});
        print(
            &call(
                client,
                reqwest::Method::POST,
                "/v1/rollout/promote",
                Some(body),
            )
            .await?,
        );
        Ok(true)
    })
}

/// `rollback`: the canary rolled back, or `revision` published again.
pub fn rollback(client: &Client, revision: Option<String>) -> anyhow::Result<bool> {
    runtime()?.block_on(async {
        let v = match revision {
            Some(revision) => {
                let body = serde_json::json!({"revision": revision});
                call(client, reqwest::Method::POST, "/v1/rollback", Some(body)).await?
            }
            None => call(client, reqwest::Method::POST, "/v1/rollout/rollback", None).await?,
        };
        print(&v);
        Ok(true)
    })
}

/// `rollout status`.
pub fn rollout_status(client: &Client) -> anyhow::Result<bool> {
    get(client, "/v1/rollout")
}

/// A `GET` of `path`, its answer printed (`status`, `history`).
pub fn get(client: &Client, path: &str) -> anyhow::Result<bool> {
    runtime()?.block_on(async {
        print(&call(client, reqwest::Method::GET, path, None).await?);
        Ok(true)
    })
}

/// `kill` and `revive` (`path`) of what `t` names.
pub fn kill(c: &Client, t: &Target, path: &str) -> anyhow::Result<bool> {
    let (scope, value) = t.scope();
    runtime()?.block_on(async {
        let body = serde_json::json!({"scope": scope, "value": value});
        print(&call(c, reqwest::Method::POST, path, Some(body)).await?);
        Ok(true)
    })
}
