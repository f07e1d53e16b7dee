//! `warden-agent tenant …` and `warden-agent registry …`: the governance
//! API's client subcommands (docs/governance.md, "API and CLI").

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use warden_config::archive;

use super::client::{call, call_with, print, runtime, Client};

#[derive(Subcommand)]
pub enum TenantCmd {
    /// Publish a layer directory (`tenant.yaml`, `*.rego`) to every
    /// gateway, or with `--canary` to a share of them first.
    Publish {
        #[arg(long)]
        tenant: String,
        dir: PathBuf,
        /// Share of the selected gateways (`10%` or `0.1`).
        #[arg(long)]
        canary: Option<String>,
        /// How long the canary is watched before it is promoted.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        watch: Duration,
        /// Only gateways carrying these labels (`env=prod,region=eu`).
        #[arg(long, default_value = "")]
        select: String,
    },
    /// The layer's revisions, the current one and its last error.
    History {
        #[arg(long)]
        tenant: String,
    },
    /// Per-file unified diff between two revisions of the layer.
    Diff {
        #[arg(long)]
        tenant: String,
        from: String,
        to: String,
    },
    /// Publish an earlier revision of the layer again (the org and other
    /// tenants unchanged).
    Rollback {
        #[arg(long)]
        tenant: String,
        revision: String,
    },
    /// Promote the tenant's layer canary now.
    Promote {
        #[arg(long)]
        tenant: String,
        /// The canary's layer revision you judged (`tenant history`
        /// prints it as `canary.revision`): refused when the canary
        /// watched is another by then.
        #[arg(long)]
        revision: String,
    },
    /// Roll the tenant's layer canary back.
    Abort {
        #[arg(long)]
        tenant: String,
        /// Only if this is the canary's layer revision.
        #[arg(long)]
        revision: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum RegistryCmd {
    /// Register a server's definition (new: draft; changed: back to testing).
    Register {
        #[arg(long)]
        server: String,
        #[arg(long)]
        tenant: Option<String>,
        /// JSON: `{"tools": [...]}` (a `tools/list` result) or the array.
        #[arg(long)]
        tools: PathBuf,
    },
    /// Move a server: testing, approved, deployed, deprecated, retired.
    Move {
        server: String,
        state: String,
        /// The definition you reviewed (its `definition_digest`, as
        /// `registry show SERVER` prints it): required to approve, checked
        /// when given to move to testing or deployed; refused when the
        /// definition changed since.
        #[arg(long)]
        reviewed: Option<String>,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Ask to offer a tenant's server to every tenant.
    Share { server: String },
    /// Approve a share request (org reviewer or org admin).
    ApproveShare {
        server: String,
        /// The definition you reviewed (its `definition_digest`, as
        /// `registry show SERVER` prints it): every tenant is offered that
        /// definition; refused when it changed since.
        #[arg(long)]
        reviewed: String,
    },
    /// Every server you may see, or one with its events and definition.
    Show { server: Option<String> },
}

/// A tenant as a path segment.
fn tenant_part(t: &str) -> anyhow::Result<String> {
    crate::admins::tenant_name(t).map_err(anyhow::Error::msg)
}

/// A server as a path segment.
fn server_part(s: &str) -> anyhow::Result<&str> {
    if !crate::registry::valid_server(s) {
        bail!("`{s}` is not a server name (1-64 of A-Z a-z 0-9 _ - .)");
    }
    Ok(s)
}

pub fn tenant_cmd(c: &Client, cmd: TenantCmd) -> anyhow::Result<bool> {
    use reqwest::Method;
    runtime()?.block_on(async {
        let v = match cmd {
            TenantCmd::Publish {
                tenant,
                dir,
                canary,
                watch,
                select,
            } => {
                let files = archive::read_dir(&dir)
                    .with_context(|| format!("reading {}", dir.display()))?;
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                if let Some(share) = canary {
                    let share = crate::rollout::share_of(&share)
                        .map_err(|e| anyhow::Error::msg(e.to_string()))?;
                    q.append_pair("canary", &share.to_string());
                    q.append_pair("watch", &watch.as_secs().max(1).to_string());
                    q.append_pair("select", &select);
                }
                let q = q.finish();
                let path = format!(
                    "/v1/tenants/{}/layer{}{q}",
                    tenant_part(&tenant)?,
                    if q.is_empty() { "" } else { "?" }
                );
                let body = archive::pack(&files);
                call_with(c, Method::POST, &path, |r| {
                    r.header("content-type", "application/gzip").body(body)
                })
                .await?
            }
            TenantCmd::History { tenant } => {
                let path = format!("/v1/tenants/{}/history", tenant_part(&tenant)?);
                call(c, Method::GET, &path, None).await?
            }
            TenantCmd::Diff { tenant, from, to } => {
                let q = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("from", &from)
                    .append_pair("to", &to)
                    .finish();
                let path = format!("/v1/tenants/{}/diff?{q}", tenant_part(&tenant)?);
                let v = call(c, Method::GET, &path, None).await?;
                for f in v["files"].as_array().into_iter().flatten() {
                    println!(
                        "{} ({})",
                        f["file"].as_str().unwrap_or(""),
                        f["change"].as_str().unwrap_or("")
                    );
                    print!("{}", f["diff"].as_str().unwrap_or(""));
                }
                return Ok(true);
            }
            TenantCmd::Rollback { tenant, revision } => {
                let path = format!("/v1/tenants/{}/rollback", tenant_part(&tenant)?);
                let body = serde_json::json!({"revision": revision});
                call(c, Method::POST, &path, Some(body)).await?
            }
            TenantCmd::Promote { tenant, revision } => {
                let path = format!("/v1/tenants/{}/canary/promote", tenant_part(&tenant)?);
                let body = serde_json::json!({"revision": revision});
                call(c, Method::POST, &path, Some(body)).await?
            }
            TenantCmd::Abort { tenant, revision } => {
                let path = format!("/v1/tenants/{}/canary/rollback", tenant_part(&tenant)?);
                let body = serde_json::json!({"revision": revision});
                call(c, Method::POST, &path, Some(body)).await?
            }
        };
        print(&v);
        Ok(true)
    })
}

pub fn registry_cmd(c: &Client, cmd: RegistryCmd) -> anyhow::Result<bool> {
    use reqwest::Method;
    runtime()?.block_on(async {
        let v = match cmd {
            RegistryCmd::Register {
                server,
                tenant,
                tools,
            } => {
                let text = std::fs::read(&tools)
                    .with_context(|| format!("reading {}", tools.display()))?;
                let v: serde_json::Value = serde_json::from_slice(&text)
                    .with_context(|| format!("{} is not JSON", tools.display()))?;
                // A `tools/list` result, a JSON-RPC reply carrying one, or the array.
                let definition = if v.is_array() {
                    serde_json::json!({ "tools": v })
                } else if v["result"]["tools"].is_array() {
                    serde_json::json!({ "tools": v["result"]["tools"] })
                } else {
                    v
                };
                let body = serde_json::json!({"server": server_part(&server)?, "tenant": tenant, "definition": definition});
                call(c, Method::POST, "/v1/registry", Some(body)).await?
            }
            RegistryCmd::Move {
                server,
                state,
                reviewed,
                note,
            } => {
                let path = format!("/v1/registry/{}/move", server_part(&server)?);
                if state == "approved" && reviewed.is_none() {
                    bail!(
                        "approving needs --reviewed DIGEST: the definition_digest `registry show {server}` prints for the definition you reviewed"
                    );
                }
                let body = serde_json::json!({"state": state, "reviewed": reviewed, "note": note});
                call(c, Method::POST, &path, Some(body)).await?
            }
            RegistryCmd::Share { server } => {
                let path = format!("/v1/registry/{}/share", server_part(&server)?);
                call(c, Method::POST, &path, None).await?
            }
            RegistryCmd::ApproveShare { server, reviewed } => {
                let path = format!("/v1/registry/{}/approve-share", server_part(&server)?);
                let body = serde_json::json!({"reviewed": reviewed});
                call(c, Method::POST, &path, Some(body)).await?
            }
            RegistryCmd::Show { server: None } => call(c, Method::GET, "/v1/registry", None).await?,
            RegistryCmd::Show {
                server: Some(server),
            } => {
                let path = format!("/v1/registry/{}", server_part(&server)?);
                call(c, Method::GET, &path, None).await?
            }
        };
        print(&v);
        Ok(true)
    })
}
