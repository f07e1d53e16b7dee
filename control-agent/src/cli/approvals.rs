//! `warden-agent approvals …`: held calls, listed, shown, approved or
//! denied with an approver's token.

use anyhow::bail;
use clap::Subcommand;

use super::client::{call, print, runtime, ApproverClient, Client};

#[derive(Subcommand)]
pub enum ApprovalCmd {
    /// Calls waiting for approvers, and approved ones not yet used.
    List {
        /// Every approval kept (used, denied and expired too).
        #[arg(long)]
        all: bool,
    },
    /// One approval, with the arguments it binds.
    Show { id: String },
    /// Approve a held call (as the approver the token names).
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a held call.
    Deny {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

/// Runs an `approvals` subcommand against the agent.
pub fn approvals(client: ApproverClient, cmd: ApprovalCmd) -> anyhow::Result<bool> {
    runtime()?.block_on(async {
        let c = Client {
            agent: client.agent,
            token: client.token,
        };
        let (method, path, body) = match &cmd {
            ApprovalCmd::List { all } => (
                reqwest::Method::GET,
                format!("/v1/approvals{}", if *all { "?all=1" } else { "" }),
                None,
            ),
            ApprovalCmd::Show { id } => (
                reqwest::Method::GET,
                format!("/v1/approvals/{}", url_part(id)?),
                None,
            ),
            ApprovalCmd::Approve { id, comment } | ApprovalCmd::Deny { id, comment } => {
                let verb = if matches!(cmd, ApprovalCmd::Approve { .. }) {
                    "approve"
                } else {
                    "deny"
                };
                (
                    reqwest::Method::POST,
                    format!("/v1/approvals/{}/{verb}", url_part(id)?),
                    Some(serde_json::json!({"comment": comment})),
                )
            }
        };
        let v = call(&c, method, &path, body).await?;
        match cmd {
            ApprovalCmd::List { .. } => print_approvals(&v),
            _ => print(&v),
        }
        Ok(true)
    })
}

/// An approval id as a path segment (ids are `ap_` and base32).
fn url_part(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!("`{id}` is not an approval id");
    }
    Ok(id)
}

/// One line per approval: id, state, approvals so far, who asked for what.
fn print_approvals(v: &serde_json::Value) {
    let list = v["approvals"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no approvals waiting");
        return;
    }
    // Names and arguments come from callers: no control or bidi characters
    // reach the approver's terminal.
    let clean = |v: &serde_json::Value| -> String {
        v.as_str()
            .unwrap_or("")
            .chars()
            .map(|c| {
                if c.is_control()
                    || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
                {
                    '\u{fffd}'
                } else {
                    c
                }
            })
            .collect()
    };
    for a in list {
        println!(
            "{}  {:<8}  {}/{}  {:<8}  {}/{} → {}.{}  waiting {}s  {}",
            clean(&a["id"]),
            clean(&a["state"]),
            a["approvals"],
            a["required"],
            clean(&a["risk"]),
            clean(&a["tenant"]),
            clean(&a["principal"]),
            clean(&a["server"]),
            clean(&a["tool"]),
            a["waiting_secs"],
            clean(&a["arguments"]),
        );
    }
}
