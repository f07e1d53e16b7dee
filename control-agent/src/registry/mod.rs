//! The registry: each server's lifecycle (draft → testing → approved →
//! deployed → deprecated, retired from any state), its registered tool
//! definitions and their fingerprints (the pins the gateway's rug-pull
//! guard enforces), who registered and who reviewed, and whether a
//! tenant's server is offered to every tenant. Kept in the agent's state
//! (`registry.json`, every step appended to `registry-events.jsonl`) and
//! written into every served bundle as `registry.json` (see
//! docs/governance.md, "The registry").
//!
//! Every operation takes the [`Actor`] asking and refuses what their role
//! does not reach ([`Refusal::Forbidden`]): a tenant admin touches only
//! their tenant's servers, an approval needs a reviewer who is not (under
//! any spelling) the person who registered the definition under review.
//!
//! Every approval is of one version: a move to `approved`, and an org
//! reviewer's approval of sharing, name the `definition_digest` their
//! reviewer read (`reviewed`) and are refused ([`Refusal::Changed`]) when
//! the definition is another one by then. A server offered to every
//! tenant is offered in the definition the org approved for sharing
//! (`share_reviewed`): registering another definition withdraws the share
//! (and a pending request), so the tenant's own review never puts bytes
//! in front of other tenants' principals that no org reviewer read.
//!
//! The registry's parts: `types` (the entry and its states), `register`
//! (a definition registered), `lifecycle` (moves and shares), `review`
//! (what a reviewer approves), `yaml` (servers a configuration defines),
//! `views` (what the API reads).

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::admins::{same_tenant, Actor, Kind};
use warden_config::names::{same_name, Name};

mod lifecycle;
mod register;
mod review;
#[cfg(test)]
mod tests;
mod types;
mod views;
mod yaml;

pub use types::{Event, Pin, Refusal, Registry, Server, State};
pub use views::{RegistryEntry, ServerSummary};
pub use yaml::{server_names, server_upstreams};

/// Tools one registered definition may list.
pub const MAX_TOOLS: usize = 1024;
/// Events kept per server (the oldest are dropped; the events file keeps
/// them, itself bounded: see `store::registry`).
pub const MAX_EVENTS: usize = 500;
/// Bytes of one registered definition (its tools as JSON) at most.
pub const MAX_DEFINITION_BYTES: usize = 256 << 10;
/// Levels of nesting of one tool's definition at most. The state file holds
/// a definition a few levels deeper than the request did: without this
/// bound one the API accepts at the JSON parser's limit (128) made
/// `registry.json` unreadable, and the agent would not start again.
pub const MAX_DEPTH: usize = 32;
/// Characters of a move's note at most.
pub const MAX_NOTE: usize = 1000;
/// Servers (retired ones included: they stay in the history) one tenant,
/// or the org, may have registered.
pub const MAX_SERVERS_PER_TENANT: usize = 256;
/// Servers the registry holds at most, every owner together.
pub const MAX_SERVERS: usize = 4096;

/// Levels of nesting of `v` (a scalar: 0).
fn depth(v: &Json) -> usize {
    match v {
        Json::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Json::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_note(note: &str) -> Result<(), Refusal> {
    if note.chars().count() > MAX_NOTE {
        return Err(Refusal::Invalid(format!(
            "a note has {MAX_NOTE} characters at most"
        )));
    }
    Ok(())
}

/// What an operation did: the server, the event appended.
pub type Done = (String, Event);

/// Who defines a server name now, in the one form names are compared in
/// (`warden_config::names`): the name as the org source or a tenant's
/// current layer spells it, and its owner (`None`: the org); `None` when
/// nobody defines it.
pub type Defined<'a> = &'a dyn Fn(&str) -> Option<(String, Option<String>)>;

/// Whether two owners (`None`: the org) are one.
fn same_owner(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => same_tenant(a, b),
        _ => false,
    }
}

fn now_text(now: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(now).to_string()
}

/// A server name: 1-64 of `a-z A-Z 0-9 _ - .`.
pub fn valid_server(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// The tools of a definition `{tools: [...]}`, checked, with their
/// fingerprints, by name.
fn tools_of(def: &Json) -> Result<(Vec<Json>, BTreeMap<String, String>), Refusal> {
    let bad = |m: String| Refusal::Invalid(format!("definition: {m}"));
    let tools = def
        .get("tools")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("must be an object with a `tools` array".into()))?;
    if tools.is_empty() || tools.len() > MAX_TOOLS {
        return Err(bad(format!("lists 1 to {MAX_TOOLS} tools")));
    }
    if serde_json::to_vec(tools).map_or(usize::MAX, |b| b.len()) > MAX_DEFINITION_BYTES {
        return Err(bad(format!(
            "the tools take {MAX_DEFINITION_BYTES} bytes of JSON at most"
        )));
    }
    if let Some(t) = tools.iter().find(|t| depth(t) > MAX_DEPTH) {
        return Err(bad(format!(
            "tool `{}` is nested deeper than {MAX_DEPTH} levels",
            t.get("name")
                .and_then(Json::as_str)
                .unwrap_or("?")
                .escape_debug()
        )));
    }
    let mut prints = BTreeMap::new();
    for t in tools {
        let name = t
            .get("name")
            .and_then(Json::as_str)
            .filter(|n| warden_filters::guards::tools::valid_name(n))
            .ok_or_else(|| {
                bad("every tool has a valid `name` (1-128 of A-Z a-z 0-9 _ - .)".into())
            })?;
        if !t.get("inputSchema").is_some_and(Json::is_object) {
            return Err(bad(format!("tool `{name}` has no inputSchema object")));
        }
        if let Some(k) = t.as_object().and_then(|o| {
            o.keys().find(|k| {
                !matches!(
                    k.as_str(),
                    "name"
                        | "title"
                        | "description"
                        | "inputSchema"
                        | "outputSchema"
                        | "annotations"
                )
            })
        }) {
            return Err(bad(format!("tool `{name}`: unknown field `{k}`")));
        }
        if prints
            .insert(
                name.to_owned(),
                warden_filters::guards::tools::fingerprint(t),
            )
            .is_some()
        {
            return Err(bad(format!("tool `{name}` is listed twice")));
        }
    }
    Ok((tools.clone(), prints))
}

impl Registry {
    /// The name an entry is kept under that is `server` in the one form
    /// server names are compared in (`OLDAPI` finds `oldapi`).
    pub fn find(&self, server: &str) -> Option<&str> {
        if self.servers.contains_key(server) {
            return self.servers.get_key_value(server).map(|(k, _)| k.as_str());
        }
        self.servers
            .keys()
            .find(|n| same_name(Name::Server, n, server))
            .map(String::as_str)
    }

    fn get_mut(&mut self, server: &str) -> Result<(String, &mut Server), Refusal> {
        let name = self
            .find(server)
            .map(str::to_owned)
            .ok_or_else(|| Refusal::NotFound(format!("no server `{server}` in the registry")))?;
        let s = self
            .servers
            .get_mut(&name)
            .ok_or_else(|| Refusal::NotFound(format!("no server `{server}` in the registry")))?;
        Ok((name, s))
    }

    /// Whether `actor` may read `server`'s entry.
    pub fn readable(actor: &Actor, s: &Server) -> bool {
        match &s.tenant {
            Some(t) => actor.reads(t),
            None => actor.is_org(),
        }
    }

    /// Whether `actor` may register and move `s` (not approve).
    fn writable(actor: &Actor, s: &Server) -> bool {
        match &s.tenant {
            Some(t) => actor.writes(t),
            None => actor.is_org_admin(),
        }
    }

    /// Whether `actor` may review `s`: its tenant's admins, org reviewers,
    /// org admins. A tenant's admins may approve a definition of a shared
    /// server because it is not shared any more by then: registering it
    /// withdrew the share, which an org reviewer approves again for the
    /// new definition ([`Registry::approve_share`]).
    fn may_review(actor: &Actor, s: &Server) -> bool {
        match (&actor.kind, &s.tenant) {
            (Kind::OrgAdmin | Kind::OrgReviewer, _) => true,
            (Kind::TenantAdmin(mine), Some(t)) => same_tenant(mine, t),
            (Kind::TenantAdmin(_), None) => false,
        }
    }

    fn push(s: &mut Server, e: Event) {
        s.events.push(e);
        if s.events.len() > MAX_EVENTS {
            let drop = s.events.len() - MAX_EVENTS;
            s.events.drain(..drop);
        }
    }

    /// `registry.json` as the bundle carries it.
    pub fn bundle_json(&self) -> Vec<u8> {
        let servers: serde_json::Map<String, Json> = self
            .servers
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    serde_json::json!({
                        "tenant": s.tenant,
                        "state": s.state,
                        "since": s.since,
                        // Offered to every tenant only in the definition
                        // the org approved for sharing.
                        "shared": s.share_current(),
                        "retired_at": s.retired_at,
                        "tools": s.tools,
                    }),
                )
            })
            .collect();
        serde_json::to_vec_pretty(&serde_json::json!({"version": 1, "servers": servers}))
            .unwrap_or_default()
    }
}
