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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::admins::{same_tenant, Actor, Kind};
use warden_config::names::{same_name, Name};

mod review;
#[cfg(test)]
mod tests;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Draft,
    Testing,
    Approved,
    Deployed,
    Deprecated,
    Retired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Draft => "draft",
            State::Testing => "testing",
            State::Approved => "approved",
            State::Deployed => "deployed",
            State::Deprecated => "deprecated",
            State::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        // not a name comparison: a lifecycle state, in any case.
        serde_json::from_value(Json::String(s.trim().to_ascii_lowercase())).ok()
    }
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not the actor's to do (403 `forbidden`; recorded as `refused`).
    #[error("{0}")]
    Forbidden(String),
    /// Not from this state (409 `conflict`).
    #[error("{0}")]
    Conflict(String),
    /// An approval names a definition that is no longer the registered
    /// one (409 `definition_changed`): nothing is approved.
    #[error("{0}")]
    Changed(String),
    /// A malformed request (400 `invalid`).
    #[error("{0}")]
    Invalid(String),
    /// (404 `not_found`)
    #[error("{0}")]
    NotFound(String),
}

impl Refusal {
    /// The machine-readable code the API answers with (`code`).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Forbidden(_) => "forbidden",
            Refusal::Conflict(_) => "conflict",
            Refusal::Changed(_) => "definition_changed",
            Refusal::Invalid(_) => "invalid",
            Refusal::NotFound(_) => "not_found",
        }
    }
}

/// One step of a server's life.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub at: String,
    pub actor: String,
    pub from: Option<State>,
    pub to: State,
    #[serde(default)]
    pub note: String,
}

/// A tool's pins: the fingerprint approved for everyone, and the one under
/// review (testers may use it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Pin {
    pub approved: Option<String>,
    pub candidate: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Server {
    /// `None`: an org server.
    pub tenant: Option<String>,
    pub state: State,
    pub since: String,
    #[serde(default)]
    pub shared: bool,
    /// The `definition_digest` the org reviewer approved for sharing: the
    /// server is offered to every tenant in this definition only (a new
    /// one withdraws the share, see [`Registry::register`]).
    #[serde(default)]
    pub share_reviewed: Option<String>,
    /// Who asked to offer it to every tenant (waiting for an org reviewer).
    #[serde(default)]
    pub share_requested_by: Option<String>,
    #[serde(default)]
    pub retired_at: Option<String>,
    /// Who registered the definition under review (as recorded), and the
    /// canonical person (compared with the reviewer's).
    pub registered_by: String,
    pub registrant: String,
    pub registered_at: String,
    #[serde(default)]
    pub approved_by: Option<String>,
    #[serde(default)]
    pub approved_at: Option<String>,
    /// The tools as last registered.
    pub definition: Vec<Json>,
    pub tools: BTreeMap<String, Pin>,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    pub servers: BTreeMap<String, Server>,
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

    /// Registers a server's definition: a new server is a `draft`; a known
    /// one whose tools changed goes back to `testing` with the changed and
    /// new tools as candidates (the approved pins stay until a second
    /// person approves). A shared server's share is withdrawn, and a
    /// pending share request with it: the org approved sharing another
    /// definition, and the tenant's own review of this one does not offer
    /// it to every tenant (it is asked for, and approved by an org
    /// reviewer naming this definition's digest, again).
    ///
    /// Names are compared in one form (`warden_config::names`), and a
    /// spelling two readers would read apart is refused here, where it is
    /// first written: `OldAPI` for a defined or registered `oldapi` is 409.
    /// A tenant admin registers only a server their tenant's layer defines
    /// (`defined`): a name nobody defines yet is not a tenant's to take,
    /// and another owner's is refused as forbidden, without naming whose it
    /// is. An org admin may register any name, and takes back one a tenant
    /// registered that its layer does not define (the entry is the org's,
    /// or the tenant's the org names, from then on; its events are kept).
    pub fn register(
        &mut self,
        actor: &Actor,
        server: &str,
        tenant: Option<&str>,
        definition: &Json,
        defined: Defined<'_>,
        now: std::time::SystemTime,
    ) -> Result<Done, Refusal> {
        if !valid_server(server) {
            return Err(Refusal::Invalid(format!(
                "server `{}`: 1-64 of A-Z a-z 0-9 _ - .",
                server.escape_debug()
            )));
        }
        // A tenant admin registers for their own tenant (the default).
        let tenant = match (tenant, actor.tenant()) {
            (Some(t), _) => Some(crate::admins::tenant_name(t).map_err(Refusal::Invalid)?),
            (None, Some(mine)) => Some(mine.to_owned()),
            (None, None) => None,
        };
        let allowed = match &tenant {
            Some(t) => actor.writes(t),
            None => actor.is_org_admin(),
        };
        if !allowed {
            return Err(Refusal::Forbidden(format!(
                "{} may not register servers of {}",
                actor.label(),
                tenant
                    .as_deref()
                    .map_or("the org".into(), |t| format!("tenant `{t}`"))
            )));
        }
        let (tools, prints) = tools_of(definition)?;
        let by_org = actor.is_org_admin();
        let now_defined = defined(server);
        // Whose the name is: a tenant admin's only when their layer
        // defines it; the refusal names nobody else.
        if !by_org {
            let theirs = now_defined
                .as_ref()
                .is_some_and(|(_, owner)| same_owner(owner.as_deref(), tenant.as_deref()));
            if !theirs {
                return Err(Refusal::Forbidden(format!(
                    "{} may register only servers its layer defines: `{server}` is not one of them",
                    tenant
                        .as_deref()
                        .map_or("the org".into(), |t| format!("tenant `{t}`"))
                )));
            }
        } else if let Some((_, owner)) = &now_defined {
            if !same_owner(owner.as_deref(), tenant.as_deref()) {
                return Err(Refusal::Forbidden(format!(
                    "server `{server}` is defined by {}",
                    owner
                        .as_deref()
                        .map_or("the org".into(), |t| format!("tenant `{t}`"))
                )));
            }
        }
        // One name, one spelling: the one defined, and the one registered.
        if let Some((spelled, _)) = now_defined.as_ref().filter(|(d, _)| d != server) {
            return Err(Refusal::Conflict(format!(
                "`{server}` is defined as `{spelled}`: register it under that name (one name, one spelling)"
            )));
        }
        if let Some(other) = self.find(server).filter(|n| *n != server) {
            return Err(Refusal::Conflict(format!(
                "`{server}` is registered as `{other}`: one name, one spelling"
            )));
        }
        // A name held by an owner that does not define it: the org takes it
        // back (an org admin only; a tenant admin was refused above unless
        // their own layer defines it, and then the entry must be theirs).
        if let Some(s) = self.servers.get(server) {
            if !same_owner(s.tenant.as_deref(), tenant.as_deref()) {
                let holder_defines = now_defined
                    .as_ref()
                    .is_some_and(|(_, o)| same_owner(o.as_deref(), s.tenant.as_deref()));
                if !by_org || holder_defines {
                    return Err(Refusal::Forbidden(if by_org {
                        format!(
                            "server `{server}` belongs to {}",
                            s.tenant
                                .as_deref()
                                .map_or("the org".into(), |t| format!("tenant `{t}`"))
                        )
                    } else {
                        format!("server `{server}` is not {}'s to register", actor.label())
                    }));
                }
                let note = format!(
                    "taken back by the org from {} (whose layer does not define it)",
                    s.tenant
                        .as_deref()
                        .map_or("the org".into(), |t| format!("tenant `{t}`"))
                );
                let Some(held) = self.servers.remove(server) else {
                    return Err(Refusal::NotFound(format!("no server `{server}`")));
                };
                match self.register_new(actor, server, tenant, tools, prints, now) {
                    Ok((name, mut e)) => {
                        e.note = format!("{}; {note}", e.note);
                        if let Some(s) = self.servers.get_mut(&name) {
                            let mut events = held.events;
                            events.push(e.clone());
                            s.events = events;
                            if s.events.len() > MAX_EVENTS {
                                let drop = s.events.len() - MAX_EVENTS;
                                s.events.drain(..drop);
                            }
                        }
                        return Ok((name, e));
                    }
                    Err(r) => {
                        self.servers.insert(server.to_owned(), held);
                        return Err(r);
                    }
                }
            }
        }
        if !self.servers.contains_key(server) {
            return self.register_new(actor, server, tenant, tools, prints, now);
        }
        self.register_known(actor, server, tenant, tools, prints, now)
    }

    /// A new entry: a `draft` of `tenant` (within the per-owner bounds).
    fn register_new(
        &mut self,
        actor: &Actor,
        server: &str,
        tenant: Option<String>,
        tools: Vec<Json>,
        prints: BTreeMap<String, String>,
        now: std::time::SystemTime,
    ) -> Result<Done, Refusal> {
        let at = now_text(now);
        let who = actor.label();
        if !self.servers.contains_key(server) {
            let mine = self
                .servers
                .values()
                .filter(|s| match (&s.tenant, &tenant) {
                    (None, None) => true,
                    (Some(a), Some(b)) => same_tenant(a, b),
                    _ => false,
                })
                .count();
            if mine >= MAX_SERVERS_PER_TENANT || self.servers.len() >= MAX_SERVERS {
                return Err(Refusal::Conflict(format!(
                    "{} has {mine} servers registered (retired ones included), the registry {}: {MAX_SERVERS_PER_TENANT} per owner and {MAX_SERVERS} in all at most",
                    tenant
                        .as_deref()
                        .map_or("the org".into(), |t| format!("tenant `{t}`")),
                    self.servers.len()
                )));
            }
        }
        {
            let e = Event {
                at: at.clone(),
                actor: who.clone(),
                from: None,
                to: State::Draft,
                note: format!("registered with {} tools", tools.len()),
            };
            self.servers.insert(
                server.to_owned(),
                Server {
                    tenant,
                    state: State::Draft,
                    since: at.clone(),
                    shared: false,
                    share_reviewed: None,
                    share_requested_by: None,
                    retired_at: None,
                    registered_by: who,
                    registrant: actor.person(),
                    registered_at: at,
                    approved_by: None,
                    approved_at: None,
                    definition: tools,
                    tools: prints
                        .into_iter()
                        .map(|(n, f)| {
                            (
                                n,
                                Pin {
                                    approved: None,
                                    candidate: Some(f),
                                },
                            )
                        })
                        .collect(),
                    events: vec![e.clone()],
                },
            );
            Ok((server.to_owned(), e))
        }
    }

    /// A known entry of the same owner: its new definition.
    fn register_known(
        &mut self,
        actor: &Actor,
        server: &str,
        tenant: Option<String>,
        tools: Vec<Json>,
        prints: BTreeMap<String, String>,
        now: std::time::SystemTime,
    ) -> Result<Done, Refusal> {
        let at = now_text(now);
        let who = actor.label();
        let Some(s) = self.servers.get_mut(server) else {
            return Err(Refusal::NotFound(format!(
                "no server `{server}` in the registry"
            )));
        };
        if !same_owner(s.tenant.as_deref(), tenant.as_deref()) || !Self::writable(actor, s) {
            return Err(Refusal::Forbidden(format!(
                "server `{server}` belongs to {}",
                s.tenant
                    .as_deref()
                    .map_or("the org".into(), |t| format!("tenant `{t}`"))
            )));
        }
        if s.state == State::Retired {
            return Err(Refusal::Conflict(format!(
                "server `{server}` was retired at {}: it cannot be registered again",
                s.retired_at.as_deref().unwrap_or("?")
            )));
        }
        let mut pins: BTreeMap<String, Pin> = BTreeMap::new();
        let mut changed = Vec::new();
        for (name, f) in &prints {
            let approved = s.tools.get(name).and_then(|p| p.approved.clone());
            let candidate = (approved.as_deref() != Some(f.as_str())).then(|| f.clone());
            if candidate.is_some() {
                changed.push(name.clone());
            }
            pins.insert(
                name.clone(),
                Pin {
                    approved,
                    candidate,
                },
            );
        }
        let removed: Vec<String> = s
            .tools
            .keys()
            .filter(|n| !prints.contains_key(*n))
            .cloned()
            .collect();
        // A tool no longer listed keeps its approved pin while the new
        // definition is reviewed (a removal is a change to review too).
        for n in &removed {
            if let Some(p) = s.tools.get(n).filter(|p| p.approved.is_some()) {
                pins.insert(
                    n.clone(),
                    Pin {
                        approved: p.approved.clone(),
                        candidate: None,
                    },
                );
            }
        }
        if changed.is_empty() && removed.is_empty() {
            return Err(Refusal::Conflict(format!(
                "server `{server}`: the definition is the one registered"
            )));
        }
        let from = s.state;
        let to = match from {
            State::Draft => State::Draft,
            _ => State::Testing,
        };
        let withdrawn = if s.shared {
            "; the share is withdrawn: an org reviewer approves sharing this definition again"
        } else if s.share_requested_by.is_some() {
            "; the share request is withdrawn: ask again for this definition"
        } else {
            ""
        };
        let e = Event {
            at: at.clone(),
            actor: who.clone(),
            from: Some(from),
            to,
            note: format!(
                "definition changed: candidates {changed:?}{}{withdrawn}",
                if removed.is_empty() {
                    String::new()
                } else {
                    format!(", removed {removed:?}")
                }
            ),
        };
        s.shared = false;
        s.share_reviewed = None;
        s.share_requested_by = None;
        s.tools = pins;
        s.definition = tools;
        s.registered_by = who;
        s.registrant = actor.person();
        s.registered_at = at.clone();
        if to != from {
            s.state = to;
            s.since = at;
        }
        Self::push(s, e.clone());
        Ok((server.to_owned(), e))
    }

    /// Moves a server to `to`: draft→testing, testing→approved (a reviewer
    /// other than the registrant, naming the definition they reviewed by
    /// its digest: `reviewed`), approved→deployed, deployed→deprecated,
    /// any→retired. The moves that put a definition in front of more
    /// principals (to `testing`, `approved`, `deployed`) are refused when
    /// they name a `reviewed` digest that is no longer the definition's (a
    /// console form read before another registration); `approved` must
    /// name one. Deprecating and retiring never wait on a stale page.
    pub fn transition(
        &mut self,
        actor: &Actor,
        server: &str,
        to: State,
        reviewed: Option<&str>,
        note: &str,
        now: std::time::SystemTime,
    ) -> Result<Done, Refusal> {
        check_note(note)?;
        let (name, s) = self.get_mut(server)?;
        if !Self::readable(actor, s) {
            // Another tenant's server is as good as absent, but refused.
            return Err(Refusal::Forbidden(format!(
                "server `{server}` is not of {}'s tenant",
                actor.label()
            )));
        }
        let from = s.state;
        let legal = matches!(
            (from, to),
            (State::Draft, State::Testing)
                | (State::Testing, State::Approved)
                | (State::Approved, State::Deployed)
                | (State::Deployed, State::Deprecated)
        ) || (to == State::Retired && from != State::Retired);
        if !legal {
            return Err(Refusal::Conflict(format!(
                "server `{server}` is {}: it cannot move to {} (draft → testing → approved → deployed → deprecated; retired from any state but retired)",
                from.as_str(),
                to.as_str()
            )));
        }
        let at = now_text(now);
        if to == State::Approved {
            if !Self::may_review(actor, s) {
                return Err(Refusal::Forbidden(format!(
                    "{} may not review server `{server}`",
                    actor.label()
                )));
            }
            if actor.person() == s.registrant {
                return Err(Refusal::Forbidden(format!(
                    "{} registered the definition under review of `{server}`: a second person approves it",
                    actor.label()
                )));
            }
            s.check_reviewed(&format!("approving `{server}`"), server, reviewed)?;
            for p in s.tools.values_mut() {
                if p.candidate.is_some() {
                    p.approved = p.candidate.take();
                }
            }
            // Tools the approved definition no longer lists lose their pin.
            let listed: std::collections::BTreeSet<String> = s
                .definition
                .iter()
                .filter_map(|t| t.get("name").and_then(Json::as_str).map(str::to_owned))
                .collect();
            s.tools.retain(|n, _| listed.contains(n));
            s.approved_by = Some(actor.label());
            s.approved_at = Some(at.clone());
        } else if !Self::writable(actor, s) {
            return Err(Refusal::Forbidden(format!(
                "{} may not move server `{server}`",
                actor.label()
            )));
        } else if matches!(to, State::Testing | State::Deployed) {
            s.check_reviewed_if_named(server, reviewed)?;
        }
        // A server moved back to testing by a re-registration may have been
        // deployed: it returns to deployed through approval.
        let e = Event {
            at: at.clone(),
            actor: actor.label(),
            from: Some(from),
            to,
            note: note.to_owned(),
        };
        if to == State::Retired {
            s.retired_at = Some(at.clone());
        }
        s.state = to;
        s.since = at;
        Self::push(s, e.clone());
        Ok((name, e))
    }

    /// A tenant admin (or an org admin) asks to offer a tenant's server to
    /// every tenant.
    pub fn request_share(
        &mut self,
        actor: &Actor,
        server: &str,
        now: std::time::SystemTime,
    ) -> Result<Done, Refusal> {
        let (name, s) = self.get_mut(server)?;
        if !Self::writable(actor, s) {
            return Err(Refusal::Forbidden(format!(
                "{} may not offer server `{server}`",
                actor.label()
            )));
        }
        if s.tenant.is_none() {
            return Err(Refusal::Conflict(format!(
                "`{server}` is an org server: it is every tenant's already"
            )));
        }
        if s.shared || s.share_requested_by.is_some() || s.state == State::Retired {
            return Err(Refusal::Conflict(format!(
                "`{server}` is {}",
                if s.shared {
                    "shared already"
                } else if s.state == State::Retired {
                    "retired"
                } else {
                    "waiting for an org reviewer to approve sharing"
                }
            )));
        }
        s.share_requested_by = Some(actor.label());
        let e = Event {
            at: now_text(now),
            actor: actor.label(),
            from: Some(s.state),
            to: s.state,
            note: "asked to share with every tenant".into(),
        };
        Self::push(s, e.clone());
        Ok((name, e))
    }

    /// An org reviewer or org admin approves a share request, naming the
    /// definition they reviewed by its digest (`reviewed`, as a move to
    /// `approved` does): refused ([`Refusal::Changed`]) when the server's
    /// definition is another one by then, and while a changed definition
    /// is under review (its tools would be served to testers of every
    /// tenant in versions the digest does not name). The approver is
    /// neither who asked nor who registered the definition. The share is
    /// of that definition: registering another withdraws it.
    pub fn approve_share(
        &mut self,
        actor: &Actor,
        server: &str,
        reviewed: Option<&str>,
        now: std::time::SystemTime,
    ) -> Result<Done, Refusal> {
        if !actor.is_org() {
            return Err(Refusal::Forbidden(format!(
                "{}: only an org reviewer or org admin approves sharing `{server}`",
                actor.label()
            )));
        }
        let (name, s) = self.get_mut(server)?;
        let Some(asked) = s.share_requested_by.as_deref() else {
            return Err(Refusal::Conflict(format!(
                "nobody asked to share `{server}`"
            )));
        };
        // A second person: an org admin who asked does not approve it too
        // (under any spelling of their name).
        let asker = asked.strip_prefix("admin:").unwrap_or(asked);
        if warden_config::names::name_key(Name::Person, asker) == actor.person() {
            return Err(Refusal::Forbidden(format!(
                "{} asked to share `{server}`: a second person approves it",
                actor.label()
            )));
        }
        // Nor does whoever registered the definition shared (an org admin
        // may register a tenant's server).
        if actor.person() == s.registrant {
            return Err(Refusal::Forbidden(format!(
                "{} registered the definition of `{server}`: a second person approves sharing it",
                actor.label()
            )));
        }
        s.check_reviewed(
            &format!("approving sharing of `{server}`"),
            server,
            reviewed,
        )?;
        let pending = s.pending_beside_approved();
        if !pending.is_empty() {
            return Err(Refusal::Conflict(format!(
                "a changed definition of `{server}` is under review (tools {pending:?} keep an approved version beside it): approve or withdraw the change first, so that every tenant is offered the definition you reviewed and no other"
            )));
        }
        let digest = s.definition_digest();
        s.shared = true;
        s.share_reviewed = Some(digest.clone());
        s.share_requested_by = None;
        let e = Event {
            at: now_text(now),
            actor: actor.label(),
            from: Some(s.state),
            to: s.state,
            note: format!("shared with every tenant: definition {digest}"),
        };
        Self::push(s, e.clone());
        Ok((name, e))
    }

    /// Settles shares recorded before shares named their definition
    /// (`share_reviewed`): one whose approval is among the server's events
    /// with no definition registered after it keeps its share, now bound
    /// to the current definition; any other (the definition changed after
    /// the org approved sharing, or the approval is no longer in the
    /// events) is withdrawn, to be asked for and approved again. Returns
    /// the events appended (the servers whose share was withdrawn).
    pub fn settle_shares(&mut self, now: std::time::SystemTime) -> Vec<Done> {
        let mut out = Vec::new();
        for (name, s) in &mut self.servers {
            if !s.shared || s.share_reviewed.is_some() {
                continue;
            }
            // The org's approval as an older agent wrote it. A move's
            // note is free text a tenant admin types, but a move always
            // changes the state and an approval of sharing never does.
            let approval = s
                .events
                .iter()
                .rposition(|e| e.from == Some(e.to) && e.note == "shared with every tenant");
            let changed_since = approval.is_none_or(|i| {
                s.events[i + 1..]
                    .iter()
                    .any(|e| e.note.starts_with("definition changed"))
            });
            if !changed_since {
                s.share_reviewed = Some(s.definition_digest());
                continue;
            }
            s.shared = false;
            let e = Event {
                at: now_text(now),
                actor: "agent".into(),
                from: Some(s.state),
                to: s.state,
                note: "the share is withdrawn: the definition may have changed since the org approved sharing (recorded before approvals named the definition); ask, and an org reviewer approves, again".into(),
            };
            Self::push(s, e.clone());
            out.push((name.clone(), e));
        }
        out
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

    /// The servers `actor` may read, without their definitions and events.
    pub fn summary(&self, actor: &Actor) -> Json {
        Json::Array(
            self.servers
                .iter()
                .filter(|(_, s)| Self::readable(actor, s))
                .map(|(n, s)| {
                    serde_json::json!({
                        "server": n, "tenant": s.tenant, "state": s.state,
                        "since": s.since, "shared": s.shared,
                        "share_reviewed": s.share_reviewed,
                        "share_requested_by": s.share_requested_by,
                        "retired_at": s.retired_at, "tools": s.tools,
                    })
                })
                .collect(),
        )
    }
}

/// The upstream addresses (`upstreams`) of every server a `warden.yaml`
/// or a `tenant.yaml` defines whose name is `server` in the one form.
pub fn server_upstreams(yaml: &[u8], server: &str) -> Vec<String> {
    let Ok(doc) = serde_yaml_ng::from_slice::<serde_yaml_ng::Value>(yaml) else {
        return Vec::new();
    };
    let lists = std::iter::once(doc.get("servers")).chain(
        doc.get("service_groups")
            .and_then(|g| g.as_sequence())
            .into_iter()
            .flatten()
            .map(|g| g.get("servers")),
    );
    let mut out = Vec::new();
    for l in lists.flatten().filter_map(|l| l.as_sequence()) {
        for s in l {
            let named = s
                .get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| same_name(Name::Server, n, server));
            if !named {
                continue;
            }
            for u in s
                .get("upstreams")
                .and_then(|u| u.as_sequence())
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str())
            {
                if !out.iter().any(|o| o == u) {
                    out.push(u.to_owned());
                }
            }
        }
    }
    out
}

/// Server names a `warden.yaml` (`servers`, `service_groups[].servers`)
/// or a `tenant.yaml` (`servers`) defines.
pub fn server_names(yaml: &[u8]) -> Vec<String> {
    let Ok(doc) = serde_yaml_ng::from_slice::<serde_yaml_ng::Value>(yaml) else {
        return Vec::new();
    };
    let names = |v: Option<&serde_yaml_ng::Value>| -> Vec<String> {
        v.and_then(|s| s.as_sequence())
            .map(|l| {
                l.iter()
                    .filter_map(|s| s.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = names(doc.get("servers"));
    for g in doc
        .get("service_groups")
        .and_then(|g| g.as_sequence())
        .into_iter()
        .flatten()
    {
        out.extend(names(g.get("servers")));
    }
    out
}
