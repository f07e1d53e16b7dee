//! Registering a server's definition: a new entry, a known one's new
//! definition, and whose a name is (the one who defines it, in one
//! spelling).

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::{
    now_text, same_owner, tools_of, valid_server, Defined, Done, Event, Pin, Refusal, Registry,
    Server, State, MAX_EVENTS, MAX_SERVERS, MAX_SERVERS_PER_TENANT,
};
use crate::admins::{same_tenant, Actor};

impl Registry {
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
}
