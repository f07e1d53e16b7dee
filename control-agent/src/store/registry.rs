//! The registry in the store: kept by the backend (`<state>/registry.json`,
//! each step appended to `registry-events.jsonl`), and written into every
//! served bundle, so a change rebuilds what is served (as the kill switch
//! does).

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use super::backend::Backend;
use super::{Inner, Store};
use crate::admins::{same_tenant, Actor};
use crate::build::BuildFailure;
use crate::registry::{Defined, Done, Refusal, Registry, RegistryEntry, ServerSummary};
use warden_config::names::{same_name, Name};

#[cfg(test)]
pub(super) use super::backend::MAX_EVENTS_FILE;

/// The registry as kept, with the shares recorded before a share named
/// its definition settled ([`Registry::settle_shares`]; kept and logged at
/// once); the second value lists the shares withdrawn.
pub(super) fn load(backend: &dyn Backend) -> anyhow::Result<(Registry, Vec<Done>)> {
    let Some(mut r) = backend.load_registry()? else {
        return Ok(Default::default());
    };
    let before = serde_json::to_vec_pretty(&r)?;
    let withdrawn = r.settle_shares(SystemTime::now());
    let after = serde_json::to_vec_pretty(&r)?;
    if after != before {
        backend.save_registry(&r)?;
        for (server, event) in &withdrawn {
            tracing::warn!(server = %server, "{}", event.note);
            backend.append_registry_event(server, event)?;
        }
    }
    Ok((r, withdrawn))
}

/// Why a registry change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Refused(Refusal),
    /// The registry as changed does not build with the org (422).
    #[error("{0}")]
    Build(BuildFailure),
    /// The store could not take its turn (503).
    #[error(transparent)]
    Unavailable(#[from] super::Unavailable),
}

impl RegistryError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::Refused(r) => r.status(),
            RegistryError::Build(_) => 422,
            RegistryError::Unavailable(_) => 503,
        }
    }
}

impl Store {
    /// Shares withdrawn when the registry was loaded: what is served is
    /// rebuilt without them (the revisions kept on disk were built with
    /// them), and each is in the change record.
    pub(super) fn shares_withdrawn_at_start(&self, withdrawn: &[Done]) {
        if withdrawn.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let kill = inner.kill.clone();
        let res = self.rebuild_served(
            &mut inner,
            &kill,
            "agent",
            "registry: shares settled at start",
        );
        drop(inner);
        if let Err(e) = &res {
            tracing::error!(error = %e, "rebuilding what is served without the withdrawn shares failed; it is rebuilt at the next change");
        }
        for (server, event) in withdrawn {
            self.record(
                "agent",
                "registry.share_withdrawn",
                None,
                res.is_ok(),
                &format!("{server}: {}", event.note),
            );
        }
    }

    /// Applies `op` to the registry for the request `what` (method, path
    /// and query, which a refusal's record names; may be empty): kept,
    /// logged and every served revision rebuilt with it; when that fails
    /// nothing changes. Answers the server's entry as changed.
    pub fn registry_apply(
        &self,
        actor: &Actor,
        action: &str,
        what: &str,
        op: impl FnOnce(&mut Registry, Defined<'_>) -> Result<Done, Refusal>,
    ) -> Result<Option<RegistryEntry>, RegistryError> {
        let label = actor.label();
        let mut inner = self.write()?;
        let before = inner.registry.clone();
        let taken = self.defined_servers(&inner);
        // Names compared in the one form (`warden_config::names`): `MOCK`
        // is the org's `mock`.
        let owner = |s: &str| {
            taken
                .iter()
                .find(|(n, _)| same_name(Name::Server, n, s))
                .map(|(n, o)| (n.clone(), o.clone()))
        };
        let done = match op(&mut inner.registry, &owner) {
            Ok(d) => d,
            Err(r) => {
                drop(inner);
                let refused = matches!(r, Refusal::Forbidden(_));
                let detail = if what.is_empty() {
                    format!("{action}: {r}")
                } else {
                    format!("{what}: {action}: {r}")
                };
                self.record(
                    &label,
                    if refused { "refused" } else { action },
                    None,
                    false,
                    &detail,
                );
                return Err(RegistryError::Refused(r));
            }
        };
        let (server, event) = done;
        let kill = inner.kill.clone();
        let reason = format!("registry: {server} {}", event.to.as_str());
        if let Err(e) = self.rebuild_served(&mut inner, &kill, &label, &reason) {
            inner.registry = before;
            drop(inner);
            self.record(&label, action, None, false, &format!("{server}: {e}"));
            return Err(RegistryError::Build(e));
        }
        let res = self
            .backend
            .save_registry(&inner.registry)
            .and_then(|()| self.backend.append_registry_event(&server, &event));
        if let Err(e) = &res {
            tracing::error!(error = %e, "cannot write the registry");
        }
        let view = Self::registry_entry(&inner, &server);
        inner.finish(res.map_err(|e| RegistryError::Unavailable(super::Unavailable::of(e))))?;
        self.record(
            &label,
            action,
            None,
            true,
            &format!(
                "{server}: {} → {}{}",
                event.from.map_or("new", |f| f.as_str()),
                event.to.as_str(),
                if event.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", event.note)
                }
            ),
        );
        Ok(view)
    }

    /// Servers the org source and each tenant's current layer define:
    /// name → owner (`None`: the org).
    fn defined_servers(&self, inner: &Inner) -> BTreeMap<String, Option<String>> {
        let mut out = BTreeMap::new();
        if let Ok(org) = self.org_source(inner) {
            if let Some(y) = org.files.get("warden.yaml") {
                for n in crate::registry::server_names(y) {
                    out.insert(n, None);
                }
            }
        }
        if let Ok(layers) = self.layer_set(inner, &BTreeMap::new(), None) {
            for l in layers {
                if let Some(y) = l.files.get("tenant.yaml") {
                    for n in crate::registry::server_names(y) {
                        out.entry(n).or_insert_with(|| Some(l.entry.tenant.clone()));
                    }
                }
            }
        }
        out
    }

    /// Where `server` (in the one form names are compared in) is reached
    /// in the org source and each tenant's current layer: what a pause of
    /// it pauses wherever a layer points at it again.
    pub(super) fn upstreams_of(&self, inner: &Inner, server: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |y: &[u8]| {
            for u in crate::registry::server_upstreams(y, server) {
                if !out.contains(&u) {
                    out.push(u);
                }
            }
        };
        if let Ok(org) = self.org_source(inner) {
            if let Some(y) = org.files.get("warden.yaml") {
                add(y);
            }
        }
        if let Ok(layers) = self.layer_set(inner, &BTreeMap::new(), None) {
            for l in layers {
                if let Some(y) = l.files.get("tenant.yaml") {
                    add(y);
                }
            }
        }
        out
    }

    fn registry_entry(inner: &Inner, server: &str) -> Option<RegistryEntry> {
        inner
            .registry
            .servers
            .get(server)
            .map(|s| RegistryEntry::of(server, s))
    }

    /// The servers `actor` may read.
    pub fn registry_list_view(&self, actor: &Actor) -> Vec<ServerSummary> {
        self.lock().registry.summary_view(actor)
    }

    /// One server with its events, tools and definition; `Forbidden` for
    /// another tenant's.
    pub fn registry_show_view(
        &self,
        actor: &Actor,
        server: &str,
    ) -> Result<RegistryEntry, Refusal> {
        let inner = self.lock();
        let server = inner
            .registry
            .find(server)
            .ok_or_else(|| Refusal::NotFound(format!("no server `{server}` in the registry")))?
            .to_owned();
        let server = server.as_str();
        let s = &inner.registry.servers[server];
        if !Registry::readable(actor, s) {
            return Err(Refusal::Forbidden(format!(
                "server `{server}` is not of {}'s tenant",
                actor.label()
            )));
        }
        Ok(RegistryEntry::of(server, s))
    }

    /// The tenant a server belongs to (registry, else the layer that
    /// defines it); `Some(None)` for an org server, `None` when unknown.
    pub fn server_owner(&self, server: &str) -> Option<Option<String>> {
        let inner = self.lock();
        if let Some(s) = inner.registry.find(server) {
            return Some(inner.registry.servers[s].tenant.clone());
        }
        self.defined_servers(&inner)
            .into_iter()
            .find(|(n, _)| same_name(Name::Server, n, server))
            .map(|(_, o)| o)
    }

    /// The servers of `tenant`: registered to it, or defined by its layer.
    pub fn servers_of(&self, tenant: &str) -> BTreeSet<String> {
        let inner = self.lock();
        let mut out: BTreeSet<String> = inner
            .registry
            .servers
            .iter()
            .filter(|(_, s)| s.tenant.as_deref().is_some_and(|t| same_tenant(t, tenant)))
            .map(|(n, _)| n.clone())
            .collect();
        for (n, owner) in self.defined_servers(&inner) {
            if owner.is_some_and(|t| same_tenant(&t, tenant)) {
                out.insert(n);
            }
        }
        out
    }
}
