//! Building, signing and serving org revisions: a publish of the source
//! (to all, to a selector), a rollback, the kill switch, re-signing before
//! a signature expires, and rebuilding what is served when something it
//! carries (the kill switch, a layer, the registry) changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use warden_config::archive::{self, Files};

use super::backend::Archive;
use super::changes;
use super::layers::Release;
use super::types::{CanaryState, HistoryEntry, KillEvent, Published};
use super::{io, Inner, Store};
use crate::build::{self, BuildFailure, KillState};
use crate::rollout::{Selector, Target};

/// How a re-sign's history line begins (see [`Store::refresh`]).
pub(super) const RESIGN_REASON: &str = "re-signed before it expires";

impl Store {
    /// Builds, signs and stores one revision (not yet served): the org
    /// source `files` composed with each tenant's current layer (or the
    /// one `overrides` names) and the registry; a layer that does not
    /// compose is left out (and recorded as its tenant's last error).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn build_revision(
        &self,
        inner: &mut Inner,
        files: Arc<Files>,
        kill: &KillState,
        actor: &str,
        reason: &str,
        target: Target,
        overrides: BTreeMap<String, u64>,
    ) -> Result<Arc<Published>, BuildFailure> {
        let seq = inner.history.last().map_or(1, |h| h.seq + 1);
        let d = build::digest(&files);
        let revision = format!("r{seq}-{}", &d[..8]);
        let layers = self.layer_set(inner, &overrides, None)?;
        let registry = inner.registry.bundle_json();
        // Signed for the gateways its selector names (a canary's members
        // are among them): promoted, the same archive reaches them all.
        let audience = match &target {
            Target::Select { labels } | Target::Canary { labels, .. } => labels.0.clone(),
        };
        let composed = self.compose_build(
            &files,
            &layers,
            &registry,
            Release {
                revision: &revision,
                audience: &audience,
            },
            kill,
            self.signer.as_ref(),
        )?;
        self.note_left_out(inner, &composed, &overrides, actor, &revision);
        let built = composed.files;
        let expires = build::expires_of(&built);
        let tgz = archive::pack(&built);
        self.backend
            .save_revision(seq, &tgz, &archive::pack(&files))
            .map_err(io)?;
        self.backend
            .save_sequence(build::last_sequence())
            .map_err(io)?;
        let entry = HistoryEntry {
            seq,
            revision: revision.clone(),
            published_at: SystemTime::now(),
            actor: actor.into(),
            reason: reason.into(),
            source: Some(d.clone()),
            target: target.clone(),
            layers: composed.layers,
            left_out: composed
                .left_out
                .iter()
                .map(|(t, e)| (t.clone(), e.to_string()))
                .collect(),
        };
        self.backend.append_history(&entry).map_err(io)?;
        inner.history.push(entry);
        self.prune_revisions(inner);
        Ok(Arc::new(Published {
            seq,
            revision,
            archive: Bytes::from(tgz),
            target,
            files,
            overrides,
            expires,
        }))
    }

    /// Serves `p`: a revision for everyone replaces every other; one for a
    /// selector replaces older ones for the same selector. A canary that a
    /// newer revision for everyone replaces is over (superseded).
    pub(super) fn serve(&self, inner: &mut Inner, p: Arc<Published>) {
        let mut superseded = false;
        match &p.target {
            t if t.is_all() => inner.served.clear(),
            Target::Select { labels } => inner
                .served
                .retain(|q| !matches!(&q.target, Target::Select { labels: l } if l == labels)),
            Target::Canary { .. } => {}
        }
        // Any other publish during a watch ends the canary: its members
        // would run the newer revision (or the canary, once promoted, would
        // undo it), so its figures would judge nothing.
        if let Some(r) = inner.watching_mut() {
            if !matches!(p.target, Target::Canary { .. }) && p.seq > r.seq {
                r.end(
                    CanaryState::Superseded,
                    format!(
                        "{} was published ({}) during the watch",
                        p.revision,
                        p.target.why()
                    ),
                );
                let seq = r.seq;
                inner.served.retain(|q| q.seq != seq);
                superseded = !p.target.is_all();
            }
        }
        inner.served.push(p.clone());
        if superseded {
            // The canary's members go back to what they were served before
            // it, built again so that it is newer than the canary they ran
            // (gateways refuse an older bundle than one they applied).
            let kill = inner.kill.clone();
            if let Err(e) = self.rebuild_served(inner, &kill, "agent", "canary superseded") {
                tracing::error!(error = %e, "rebuilding after a superseded canary failed; its gateways keep the canary until the next publish");
                self.served_changed(inner);
            }
            return;
        }
        self.served_changed(inner);
    }

    pub(super) fn publish_files(
        &self,
        inner: &mut Inner,
        files: Arc<Files>,
        kill: &KillState,
        actor: &str,
        reason: &str,
        target: Target,
    ) -> Result<Arc<Published>, BuildFailure> {
        let p = self.build_revision(inner, files, kill, actor, reason, target, BTreeMap::new())?;
        self.serve(inner, p.clone());
        Ok(p)
    }

    /// Builds the source directory and publishes it to everyone when it
    /// changed (or `force`).
    pub fn publish_source(
        &self,
        actor: &str,
        force: bool,
    ) -> Result<Option<Arc<Published>>, BuildFailure> {
        self.publish_source_to(actor, force, Selector::default())
    }

    /// As [`Store::publish_source`], to the gateways `labels` selects.
    pub fn publish_source_to(
        &self,
        actor: &str,
        force: bool,
        labels: Selector,
    ) -> Result<Option<Arc<Published>>, BuildFailure> {
        let files = archive::read_dir(&self.source).map_err(io)?;
        let d = build::digest(&files);
        let mut inner = self.write()?;
        if !force && inner.source_digest.as_deref() == Some(d.as_str()) {
            return Ok(None);
        }
        inner.source_digest = Some(d);
        let kill = inner.kill.clone();
        let reason = if labels.is_all() {
            "source changed".to_owned()
        } else {
            format!("published to {labels}")
        };
        let res = self.publish_files(
            &mut inner,
            Arc::new(files),
            &kill,
            actor,
            &reason,
            Target::Select { labels },
        );
        let res = inner.finish(res);
        self.after(actor, "publish", res).map(Some)
    }
}

impl Store {
    pub(super) fn after(
        &self,
        actor: &str,
        action: &str,
        res: Result<Arc<Published>, BuildFailure>,
    ) -> Result<Arc<Published>, BuildFailure> {
        self.after_with(actor, action, "", res)
    }

    /// As [`Store::after`], saying what was done (`detail`) in the record.
    pub(super) fn after_with(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        res: Result<Arc<Published>, BuildFailure>,
    ) -> Result<Arc<Published>, BuildFailure> {
        match &res {
            Ok(p) => {
                self.lock().last_error = None;
                self.record(actor, action, Some(&p.revision), true, detail);
                tracing::info!(revision = %p.revision, action, "published");
            }
            Err(e) => {
                let msg = e.to_string();
                self.lock().last_error = Some(msg.clone());
                self.record(
                    actor,
                    action,
                    None,
                    false,
                    &if detail.is_empty() {
                        msg.clone()
                    } else {
                        format!("{detail}: {msg}")
                    },
                );
                tracing::error!(action, "refused to publish:\n{msg}");
            }
        }
        res
    }
    /// Republishes an earlier revision's content as the newest revision for
    /// everyone (ending any canary), with the current kill switch.
    pub fn rollback(&self, actor: &str, to: &str) -> Result<Arc<Published>, BuildFailure> {
        let mut inner = match self.write() {
            Ok(t) => t,
            Err(e) => return self.after(actor, "rollback", Err(e.into())),
        };
        let Some(h) = inner.history.iter().find(|h| h.revision == to).cloned() else {
            let why = Self::no_revision(&inner, to);
            drop(inner);
            return self.after(actor, "rollback", Err(io(why)));
        };
        // The revision's own source (its built archive for one published
        // before sources were kept), built with today's kill switch: a
        // rollback of content never lifts an emergency pause.
        let kill = inner.kill.clone();
        let res = self
            .backend
            .read_revision(h.seq, Archive::Source)
            .or_else(|_| self.backend.read_revision(h.seq, Archive::Built))
            .map_err(io)
            .and_then(|b| archive::unpack(&b).map_err(io))
            .and_then(|files| {
                self.publish_files(
                    &mut inner,
                    Arc::new(files),
                    &kill,
                    actor,
                    &format!("rollback to {to}"),
                    Target::all(),
                )
            });
        let res = inner.finish(res);
        self.after_with(actor, "rollback", &format!("to {to}"), res)
    }

    /// Changes the kill switch: every served revision (for everyone, for a
    /// selector, a canary) is rebuilt from its own source with it, so the
    /// switch reaches every gateway at once whatever it runs, and nothing
    /// else changes (an unpublished source edit stays unpublished).
    pub fn kill(
        &self,
        actor: &str,
        scope: &str,
        value: &str,
        on: bool,
    ) -> Result<Arc<Published>, BuildFailure> {
        let action = if on { "kill" } else { "revive" };
        let mut inner = match self.write() {
            Ok(t) => t,
            Err(e) => {
                return self.after_with(actor, action, &format!("{scope} {value}"), Err(e.into()))
            }
        };
        let mut kill = inner.kill.clone();
        if let Err(e) = kill.set(scope, value, on) {
            drop(inner);
            return self.after_with(actor, action, &format!("{scope} {value}"), Err(io(e)));
        }
        // What is paused is the server: where it is reached now, so that
        // every gateway pauses whatever name a layer gives it later.
        if on && scope == "server" {
            let at = self.upstreams_of(&inner, value);
            if !at.is_empty() {
                kill.upstreams.insert(value.to_owned(), at);
            }
        }
        let reason = format!("{action} {scope} {value}");
        let res = (|| {
            if inner.served.is_empty() {
                let files = archive::read_dir(&self.source).map_err(io)?;
                inner.source_digest = Some(build::digest(&files));
                return self.publish_files(
                    &mut inner,
                    Arc::new(files),
                    &kill,
                    actor,
                    &reason,
                    Target::all(),
                );
            }
            self.rebuild_served(&mut inner, &kill, actor, &reason)
                .map(|p| p.expect("one served revision at least"))
        })();
        if let Ok(p) = &res {
            inner.kill = kill.clone();
            let _ = self.backend.save_kill(&kill);
            let event = KillEvent {
                at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                actor: actor.to_owned(),
                action: action.to_owned(),
                scope: scope.to_owned(),
                value: value.to_owned(),
                revision: p.revision.clone(),
            };
            changes::log_kill(&*self.backend, &mut inner.kill_log, event);
        }
        let res = inner.finish(res);
        self.after_with(actor, action, &format!("{scope} {value}"), res)
    }

    /// The revision for everyone (the newest served one without a target).
    pub fn current(&self) -> Option<Arc<Published>> {
        self.lock()
            .served
            .iter()
            .filter(|p| p.target.is_all())
            .max_by_key(|p| p.seq)
            .cloned()
    }

    pub fn history(&self) -> Vec<HistoryEntry> {
        self.lock().history.clone()
    }

    /// What a publish of revision `seq` warns of: each tenant layer left
    /// out of it (it does not compose), whose principals every gateway
    /// refuses until it composes again.
    pub fn warnings_of(&self, seq: u64) -> Vec<String> {
        let inner = self.lock();
        let Some(h) = inner.history.iter().find(|h| h.seq == seq) else {
            return Vec::new();
        };
        h.left_out
            .iter()
            .map(|(t, why)| {
                format!(
                    "tenant `{t}`'s layer does not compose with this configuration and is left out: its principals' calls are refused on every gateway until it composes again (publish a layer that does, or restore its grant): {why}"
                )
            })
            .collect()
    }

    /// Re-signs what is served before it expires: when a served revision
    /// has less than half of the signer's validity left at `now` (or names
    /// no expiry: built before expiry existed), every served revision is
    /// rebuilt from its own source (as a kill switch rebuilds them: newer
    /// sequence, a new expiry, a new revision name so that gateways fetch
    /// it). `None` when nothing was due (or bundles are not signed to
    /// expire). A failure is recorded; what is served keeps being served
    /// until it expires, and the gateways running it keep running it.
    pub fn refresh(&self, now: SystemTime) -> Result<Option<Arc<Published>>, BuildFailure> {
        let Some(valid) = self.signer.as_ref().and_then(|s| s.valid_for) else {
            return Ok(None);
        };
        let mut inner = self.write()?;
        // During a canary's watch, not before a quarter is left: its
        // members report the revision they run, and a new name mid-watch
        // would judge them on nothing.
        let watching = inner.watching().is_some();
        let left = if watching { valid / 4 } else { valid / 2 };
        let due = inner.served.iter().any(|p| {
            p.expires
                .is_none_or(|at| at.duration_since(now).unwrap_or_default() < left)
        });
        if !due {
            return Ok(None);
        }
        let kill = inner.kill.clone();
        let res = self
            .rebuild_served(&mut inner, &kill, "agent", RESIGN_REASON)
            .transpose();
        if matches!(res, Some(Ok(_))) {
            self.forget_resigns(&mut inner);
        }
        drop(inner);
        if matches!(res, Some(Err(_))) {
            self.resign_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        match res {
            None => Ok(None),
            Some(res) => self.after("agent", "re-sign", res).map(Some),
        }
    }

    /// When the first of the served revisions' signatures expires
    /// (`warden_agent_bundle_expires_timestamp_seconds`).
    pub fn earliest_expiry(&self) -> Option<SystemTime> {
        self.lock().served.iter().filter_map(|p| p.expires).min()
    }

    /// How long after a failed re-sign it is tried again: well inside the
    /// half of the validity left when re-signing starts.
    pub fn resign_retry(&self) -> Duration {
        self.signer
            .as_ref()
            .and_then(|s| s.valid_for)
            .map_or(Duration::from_secs(600), |v| {
                (v / 20).clamp(Duration::from_secs(10), Duration::from_secs(600))
            })
    }

    /// Rebuilds every served revision (for everyone, for a selector, a
    /// canary) from its own source with `kill` and today's layers and
    /// registry, oldest first so that the newest stays the newest for every
    /// gateway it reaches. `None` when nothing is served.
    pub(super) fn rebuild_served(
        &self,
        inner: &mut Inner,
        kill: &KillState,
        actor: &str,
        reason: &str,
    ) -> Result<Option<Arc<Published>>, BuildFailure> {
        let mut old = inner.served.clone();
        old.sort_by_key(|p| p.seq);
        let mut rebuilt = Vec::with_capacity(old.len());
        for p in &old {
            rebuilt.push(self.build_revision(
                inner,
                p.files.clone(),
                kill,
                actor,
                &format!("{reason} (rebuilt {})", p.revision),
                p.target.clone(),
                p.overrides.clone(),
            )?);
        }
        if let Some(r) = inner.watching_mut() {
            if let Some(i) = old.iter().position(|p| p.seq == r.seq) {
                r.seq = rebuilt[i].seq;
                r.revision = rebuilt[i].revision.clone();
            }
        }
        if rebuilt.is_empty() {
            return Ok(None);
        }
        inner.served = rebuilt.clone();
        self.served_changed(inner);
        Ok(rebuilt.pop())
    }
}
