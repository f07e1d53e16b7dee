//! Tenant layers: per tenant a history of layer revisions
//! (`<state>/tenants/<tenant>/history.jsonl`, each revision's files in
//! `<seq>.src.tar.gz`, the current one and the last error in
//! `state.json`). Each layer is versioned, diffed, canaried and rolled
//! back on its own; every served revision carries each tenant's current
//! layer (a layer canary, its own), validated composed with the org.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use warden_config::archive::{self, Files};
use warden_config::error::Problem;

use super::error::RevisionError;
use super::types::{rfc3339, CanaryPlan, CanaryState, LayerCanary, Published, Rollout};
use super::{io, Inner, Store};
use crate::admins::tenant_name;
use crate::build::BuildFailure;
use crate::rollout::Selector;

/// Bytes of one layer's files at most.
pub const MAX_LAYER_BYTES: usize = 4 << 20;
/// Revisions of one tenant's layer kept (each with its files, up to
/// [`MAX_LAYER_BYTES`]): past it the oldest are dropped, except those
/// current, canaried or carried by a served revision.
pub const MAX_LAYER_REVISIONS: usize = 50;

/// One revision of a tenant's layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerEntry {
    pub tenant: String,
    pub seq: u64,
    /// `<tenant>-r<seq>-<digest8>`.
    pub revision: String,
    #[serde(with = "rfc3339")]
    pub published_at: SystemTime,
    pub actor: String,
    pub reason: String,
    /// SHA-256 (hex) of the layer's files (`archive::layer_digest`).
    pub digest: String,
    /// `all` or `canary`.
    pub target: String,
}

/// A tenant's current layer and why it is not served, if it is not.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LayerState {
    pub current: Option<u64>,
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Tenant {
    pub history: Vec<LayerEntry>,
    pub state: LayerState,
}

/// The longest a tenant's layer canary may be watched (the org's may be
/// watched a day): the fleet has one canary slot, and it is the org's to
/// lend (an org canary takes it from a tenant's at once).
pub const MAX_TENANT_WATCH_SECS: u64 = 3600;
/// A tenant's canary that held the slot less than this asks no wait.
pub const MIN_HELD: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `tenant` may start a canary of `plan` now: watched an hour at
/// most, and not before it has waited as long as its last canary held the
/// fleet's slot (a minute or more), unless another owner's canary came in
/// between (then the slot went round).
fn tenant_may_canary(
    last: Option<&Rollout>,
    tenant: &str,
    plan: &CanaryPlan,
) -> Result<(), BuildFailure> {
    if plan.watch_secs > MAX_TENANT_WATCH_SECS {
        return Err(io(format!(
            "a tenant's canary is watched {MAX_TENANT_WATCH_SECS} s at most (the fleet has one canary slot)"
        )));
    }
    let Some(r) = last.filter(|r| r.layer.as_ref().is_some_and(|l| l.tenant == tenant)) else {
        return Ok(());
    };
    let Some(ended) = r.ended else {
        return Ok(());
    };
    let held = ended.duration_since(r.started).unwrap_or_default();
    // A canary ended within a minute held nothing anyone waited for.
    if held < MIN_HELD {
        return Ok(());
    }
    let since = std::time::SystemTime::now()
        .duration_since(ended)
        .unwrap_or_default();
    if since < held {
        return Err(io(format!(
            "tenant `{tenant}`'s last canary held the fleet's canary slot {} s: it may start another {} s after that one ended ({} s from now), or publish to all",
            held.as_secs(),
            held.as_secs(),
            (held - since).as_secs().max(1)
        )));
    }
    Ok(())
}

/// What a build is released as: its revision, and the labels of the
/// gateways it is for (none: every gateway), signed into its manifest.
#[derive(Clone, Copy)]
pub(super) struct Release<'a> {
    pub revision: &'a str,
    pub audience: &'a BTreeMap<String, String>,
}

/// One tenant's layer picked for a composition.
pub(super) struct LayerPick {
    pub entry: LayerEntry,
    pub files: Arc<Files>,
}

/// A composition that built.
pub(super) struct Composed {
    pub files: Files,
    /// Tenant → layer revision carried.
    pub layers: BTreeMap<String, String>,
    /// Tenant → why its layer was left out.
    pub left_out: BTreeMap<String, BuildFailure>,
}

/// Refuses a layer whose files are not a layer: `tenant.yaml` (naming the
/// tenant) and `.rego` files, nothing else, within the size bound.
pub fn check_layer_files(tenant: &str, files: &Files) -> Result<(), BuildFailure> {
    let mut problems = Vec::new();
    let mut p = |file: &str, m: String| {
        problems.push(warden_config::error::Problem {
            file: file.into(),
            path: String::new(),
            message: m,
        })
    };
    let total: usize = files.values().map(Vec::len).sum();
    if total > MAX_LAYER_BYTES {
        p("", format!("a layer has {MAX_LAYER_BYTES} bytes at most"));
    }
    for n in files.keys() {
        let ok = n == "tenant.yaml"
            || (n.ends_with(".rego")
                && !n.split('/').any(|s| s.is_empty() || s.starts_with('.'))
                && n.bytes().all(|b| b.is_ascii_graphic()));
        if !ok {
            p(
                n,
                "a layer holds tenant.yaml and .rego files only".to_owned(),
            );
        }
    }
    match files.get("tenant.yaml") {
        None => p("tenant.yaml", "missing: every layer has one".into()),
        Some(b) => match serde_yaml_ng::from_slice::<serde_yaml_ng::Value>(b) {
            Err(e) => p("tenant.yaml", format!("not YAML: {e}")),
            Ok(doc) => {
                // Named as the gateway's `check_layer` takes it: the
                // canonical form of the tenant's name (a name, not a scope).
                let named = doc
                    .get("tenant")
                    .and_then(|t| t.as_str())
                    .and_then(|t| warden_config::person::canonical(t).ok());
                let own = warden_config::person::canonical(tenant).ok();
                if named.is_none() || named != own {
                    p(
                        "tenant.yaml",
                        format!("`tenant:` must name `{tenant}`, the tenant published to"),
                    );
                }
            }
        },
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BuildFailure(problems))
    }
}

impl Store {
    /// The files of `tenant`'s current layer (none yet: `None`).
    pub fn current_layer_files(&self, tenant: &str) -> Option<Files> {
        let tenant = tenant_name(tenant).ok()?;
        let seq = self.lock().layers.get(&tenant)?.state.current?;
        self.layer_files(&tenant, seq).ok()
    }

    /// The files of one layer revision.
    fn layer_files(&self, tenant: &str, seq: u64) -> Result<Files, BuildFailure> {
        let b = self.backend.read_layer(tenant, seq).map_err(io)?;
        archive::unpack(&b).map_err(io)
    }

    fn save_layer_state(&self, tenant: &str, s: &LayerState) {
        if let Err(e) = self.backend.save_layer_state(tenant, s) {
            tracing::error!(error = %e, tenant, "cannot write the layer's state");
        }
    }

    /// Each tenant's layer for a composition: the one `overrides` names,
    /// else the current one; `replace` stands in for its tenant's.
    pub(super) fn layer_set(
        &self,
        inner: &Inner,
        overrides: &BTreeMap<String, u64>,
        replace: Option<(&LayerEntry, &Arc<Files>)>,
    ) -> Result<Vec<LayerPick>, BuildFailure> {
        let mut out = Vec::new();
        let mut names: BTreeSet<&String> = inner.layers.keys().collect();
        if let Some((e, _)) = replace {
            names.insert(&e.tenant);
        }
        for t in names {
            if let Some((e, f)) = replace.filter(|(e, _)| &e.tenant == t) {
                out.push(LayerPick {
                    entry: e.clone(),
                    files: f.clone(),
                });
                continue;
            }
            let Some(tn) = inner.layers.get(t) else {
                continue;
            };
            let Some(seq) = overrides.get(t).copied().or(tn.state.current) else {
                continue;
            };
            let Some(entry) = tn.history.iter().find(|e| e.seq == seq) else {
                return Err(io(format!(
                    "tenant `{t}`: layer {seq} is not in its history"
                )));
            };
            out.push(LayerPick {
                entry: entry.clone(),
                files: Arc::new(self.layer_files(t, seq)?),
            });
        }
        Ok(out)
    }

    /// Records layers left out of (or back in) what is served: each
    /// tenant's `last_error` follows the compositions that carry its
    /// current layer.
    pub(super) fn note_left_out(
        &self,
        inner: &mut Inner,
        composed: &Composed,
        overrides: &BTreeMap<String, u64>,
        actor: &str,
        revision: &str,
    ) {
        let mut changes = Vec::new();
        for (t, tn) in inner.layers.iter_mut() {
            if overrides.contains_key(t) || tn.state.current.is_none() {
                continue;
            }
            let now = composed.left_out.get(t).map(|e| e.to_string());
            if now != tn.state.last_error {
                changes.push((t.clone(), now.clone()));
                tn.state.last_error = now;
                self.save_layer_state(t, &tn.state);
            }
        }
        for (t, err) in changes {
            match err {
                Some(e) => {
                    tracing::warn!(tenant = %t, revision, "tenant layer left out:\n{e}");
                    self.record(
                        actor,
                        "layer.left_out",
                        Some(revision),
                        false,
                        &format!("tenant {t}: its layer does not compose with the org and is not served (its principals' calls are refused until it composes again): {e}"),
                    );
                }
                None => self.record(
                    actor,
                    "layer.restored",
                    Some(revision),
                    true,
                    &format!("tenant {t}: its layer composes again and is served"),
                ),
            }
        }
    }

    /// The org revision layers are checked against: the newest one for
    /// everyone (else the newest served).
    pub(super) fn org_source(&self, inner: &Inner) -> Result<Arc<Published>, BuildFailure> {
        inner
            .served
            .iter()
            .filter(|p| p.target.is_all())
            .max_by_key(|p| p.seq)
            .or_else(|| inner.served.iter().max_by_key(|p| p.seq))
            .cloned()
            .ok_or_else(|| io("nothing is served yet: publish the org layer first"))
    }

    /// Ends a canary of `tenant`'s layer (its layer is changed by other means).
    fn supersede_layer_canary(&self, inner: &mut Inner, tenant: &str, why: &str) {
        if let Some(r) = inner
            .watching_mut()
            .filter(|r| r.layer.as_ref().is_some_and(|l| l.tenant == tenant))
        {
            r.end(CanaryState::Superseded, why);
            let seq = r.seq;
            inner.served.retain(|p| p.seq != seq);
        }
    }

    /// Adds a layer revision (checked: composes with the org and the other
    /// layers served) to the tenant's history; nothing is served yet.
    fn add_layer(
        &self,
        inner: &mut Inner,
        actor: &str,
        tenant: &str,
        files: Files,
        reason: &str,
        target: &str,
    ) -> Result<(LayerEntry, Arc<Published>), BuildFailure> {
        check_layer_files(tenant, &files)?;
        let org = self.org_source(inner)?;
        let seq = inner
            .layers
            .get(tenant)
            .and_then(|t| t.history.last())
            .map_or(1, |e| e.seq + 1);
        let digest = archive::layer_digest(&files);
        let entry = LayerEntry {
            tenant: tenant.to_owned(),
            seq,
            revision: format!("{tenant}-r{seq}-{}", &digest[..8]),
            published_at: SystemTime::now(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            digest,
            target: target.to_owned(),
        };
        let files = Arc::new(files);
        let layers = self.layer_set(inner, &BTreeMap::new(), Some((&entry, &files)))?;
        let registry = inner.registry.bundle_json();
        let mut trial = self.compose_build(
            &org.files,
            &layers,
            &registry,
            Release {
                revision: &entry.revision,
                audience: &BTreeMap::new(),
            },
            &inner.kill,
            None,
        )?;
        if let Some(e) = trial.left_out.remove(tenant) {
            return Err(e);
        }
        // Layers are composed in tenant order: one that takes what another
        // tenant's served layer has (a server name) would be kept and the
        // other left out. A publish never leaves another tenant out.
        let knocked: Vec<Problem> = trial
            .left_out
            .iter()
            .filter(|(t, _)| {
                inner
                    .layers
                    .get(*t)
                    .is_some_and(|x| x.state.current.is_some() && x.state.last_error.is_none())
            })
            .map(|(t, e)| Problem {
                file: "tenant.yaml".into(),
                path: String::new(),
                message: format!(
                    "this layer would leave tenant `{t}`'s served layer out (it takes what that layer has): {e}"
                ),
            })
            .collect();
        if !knocked.is_empty() {
            return Err(BuildFailure(knocked));
        }
        self.backend
            .save_layer(tenant, seq, &archive::pack(&files))
            .map_err(io)?;
        self.backend
            .append_layer_history(tenant, &entry)
            .map_err(io)?;
        inner
            .layers
            .entry(tenant.to_owned())
            .or_default()
            .history
            .push(entry.clone());
        self.prune_layers(inner, tenant);
        Ok((entry, org))
    }

    /// Drops the oldest revisions of `tenant`'s layer past
    /// `layer_revisions` ([`MAX_LAYER_REVISIONS`]): their files and history
    /// lines. The current one, a canary's and those served revisions carry
    /// are kept.
    fn prune_layers(&self, inner: &mut Inner, tenant: &str) {
        let mut keep: BTreeSet<u64> = inner
            .served
            .iter()
            .filter_map(|p| p.overrides.get(tenant).copied())
            .collect();
        if let Some(l) = inner.rollout.as_ref().and_then(|r| r.layer.as_ref()) {
            if l.tenant == tenant {
                keep.insert(l.seq);
            }
        }
        let Some(t) = inner.layers.get_mut(tenant) else {
            return;
        };
        keep.extend(t.state.current);
        let Some(newest) = t.history.last().map(|e| e.seq) else {
            return;
        };
        keep.insert(newest);
        let mut over = t.history.len().saturating_sub(self.layer_revisions);
        if over == 0 {
            return;
        }
        let mut dropped = Vec::new();
        t.history.retain(|e| {
            if over > 0 && !keep.contains(&e.seq) {
                over -= 1;
                dropped.push(e.seq);
                false
            } else {
                true
            }
        });
        if let Err(e) = self.backend.rewrite_layer_history(tenant, &t.history) {
            tracing::error!(error = %e, tenant, "cannot write the layer's history");
            return;
        }
        for seq in dropped {
            self.backend.remove_layer(tenant, seq);
        }
    }

    /// Makes `seq` the tenant's current layer and rebuilds what is served
    /// (the previous one stays current when that fails).
    fn make_current(
        &self,
        inner: &mut Inner,
        actor: &str,
        tenant: &str,
        seq: u64,
        reason: &str,
    ) -> Result<(), BuildFailure> {
        let t = inner.layers.entry(tenant.to_owned()).or_default();
        let before = t.state.clone();
        t.state.current = Some(seq);
        t.state.last_error = None;
        let kill = inner.kill.clone();
        match self.rebuild_served(inner, &kill, actor, reason) {
            Ok(_) => {
                let t = &inner.layers[tenant];
                self.save_layer_state(tenant, &t.state);
                Ok(())
            }
            Err(e) => {
                inner.layers.entry(tenant.to_owned()).or_default().state = before;
                Err(e)
            }
        }
    }

    fn layer_done(
        &self,
        actor: &str,
        action: &str,
        tenant: &str,
        res: Result<LayerEntry, BuildFailure>,
    ) -> Result<LayerEntry, BuildFailure> {
        match &res {
            Ok(e) => self.record(
                actor,
                action,
                Some(&e.revision),
                true,
                &format!("tenant {tenant}: {}", e.reason),
            ),
            Err(e) => self.record(actor, action, None, false, &format!("tenant {tenant}: {e}")),
        }
        res
    }

    /// Publishes a tenant's layer: to everyone (it becomes the tenant's
    /// current layer, every served revision rebuilt with it), or with
    /// `canary` to a share of the gateways `labels` selects. Refused, with
    /// nothing changed, when it does not compose with the org.
    pub fn publish_layer(
        &self,
        actor: &str,
        tenant: &str,
        files: Files,
        canary: Option<(Selector, CanaryPlan)>,
    ) -> Result<LayerEntry, BuildFailure> {
        let res = (|| {
            let tenant = tenant_name(tenant).map_err(io)?;
            let mut inner = self.write()?;
            let r = (|| {
                let target = if canary.is_some() { "canary" } else { "all" };
                let reason = match &canary {
                    Some((l, p)) => format!("canary on {:.0}% of {l}", p.share * 100.0),
                    None => "published".to_owned(),
                };
                if canary.is_some() && inner.watching().is_some() {
                    return Err(io(
                        "a canary is already being watched: promote or roll it back first",
                    ));
                }
                if let Some((_, plan)) = &canary {
                    tenant_may_canary(inner.rollout.as_ref(), &tenant, plan)?;
                }
                let (entry, org) =
                    self.add_layer(&mut inner, actor, &tenant, files, &reason, target)?;
                match canary {
                    Some((labels, plan)) => {
                        let layer = LayerCanary {
                            tenant: tenant.clone(),
                            seq: entry.seq,
                            revision: entry.revision.clone(),
                        };
                        self.start_canary(
                            &mut inner,
                            actor,
                            labels,
                            plan,
                            org.files.clone(),
                            BTreeMap::from([(tenant.clone(), entry.seq)]),
                            Some(layer),
                            None,
                        )?;
                    }
                    None => {
                        self.supersede_layer_canary(
                            &mut inner,
                            &tenant,
                            &format!("{} was published during the watch", entry.revision),
                        );
                        self.make_current(
                            &mut inner,
                            actor,
                            &tenant,
                            entry.seq,
                            &format!("layer {}", entry.revision),
                        )?;
                    }
                }
                Ok(entry)
            })();
            inner.finish(r)
        })();
        self.layer_done(actor, "layer.publish", tenant, res)
    }

    /// Publishes an earlier revision of a tenant's layer again, as its
    /// newest revision, to everyone; the org and other tenants unchanged.
    pub fn rollback_layer(
        &self,
        actor: &str,
        tenant: &str,
        to: &str,
    ) -> Result<LayerEntry, BuildFailure> {
        let res = (|| {
            let tenant = tenant_name(tenant).map_err(io)?;
            let mut inner = self.write()?;
            let r = (|| {
                let seq = inner
                    .layers
                    .get(&tenant)
                    .and_then(|t| t.history.iter().find(|e| e.revision == to))
                    .map(|e| e.seq)
                    .ok_or_else(|| io(format!("tenant `{tenant}` has no layer revision `{to}`")))?;
                let files = self.layer_files(&tenant, seq)?;
                let (entry, _) = self.add_layer(
                    &mut inner,
                    actor,
                    &tenant,
                    files,
                    &format!("rollback to {to}"),
                    "all",
                )?;
                self.supersede_layer_canary(&mut inner, &tenant, &format!("rolled back to {to}"));
                self.make_current(
                    &mut inner,
                    actor,
                    &tenant,
                    entry.seq,
                    &format!("layer {} (rollback to {to})", entry.revision),
                )?;
                Ok(entry)
            })();
            inner.finish(r)
        })();
        self.layer_done(actor, "layer.rollback", tenant, res)
    }

    /// Promotes a layer canary: its layer becomes the tenant's current one
    /// for everyone.
    pub(super) fn promote_layer(&self, inner: &mut Inner, actor: &str, l: &LayerCanary) {
        let res = self.make_current(
            inner,
            actor,
            &l.tenant,
            l.seq,
            &format!("layer {} promoted", l.revision),
        );
        self.record(
            actor,
            "layer.promote",
            Some(&l.revision),
            res.is_ok(),
            &match res {
                Ok(()) => format!("tenant {}", l.tenant),
                Err(e) => format!("tenant {}: {e}", l.tenant),
            },
        );
    }

    /// The files of one revision of a tenant's layer.
    pub fn layer_revision_files(
        &self,
        tenant: &str,
        revision: &str,
    ) -> Result<Files, RevisionError> {
        let tenant = tenant_name(tenant).map_err(RevisionError::Tenant)?;
        let seq = self
            .lock()
            .layers
            .get(&tenant)
            .and_then(|t| t.history.iter().find(|e| e.revision == revision))
            .map(|e| e.seq)
            .ok_or_else(|| RevisionError::NoLayerRevision {
                tenant: tenant.clone(),
                revision: revision.to_owned(),
            })?;
        self.layer_files(&tenant, seq)
            .map_err(|e| RevisionError::LayerUnreadable(e.to_string()))
    }
}
