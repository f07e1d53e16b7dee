//! Canaries: a revision published to a share of the gateways a selector
//! picks, watched against the rest, promoted or rolled back by its guard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use warden_config::archive::{self, Files};

use super::fleet::Sightings;
use super::types::LayerCanary;
use super::types::{CanaryPlan, CanaryState, Published, Rollout};
use super::views::RolloutView;
use super::{io, Inner, Member, Store};
use crate::build::{self, BuildFailure};
use crate::rollout::{self, Selector, Stats, Target, Verdict};

/// The longest a canary may be watched before it is promoted or rolled
/// back (24 hours).
pub(crate) const MAX_WATCH_SECS: u64 = 86_400;

impl Store {
    /// Publishes the source as a canary: to `plan.share` of the live
    /// gateways `labels` selects, watched against the rest.
    pub fn publish_canary(
        &self,
        actor: &str,
        labels: Selector,
        plan: CanaryPlan,
    ) -> Result<Arc<Published>, BuildFailure> {
        let res = (|| {
            let files = archive::read_dir(&self.source).map_err(io)?;
            let d = build::digest(&files);
            let mut inner = self.write()?;
            let started = self.start_canary(
                &mut inner,
                actor,
                labels,
                plan,
                Arc::new(files),
                BTreeMap::new(),
                None,
                Some(d),
            );
            inner.finish(started)
        })();
        self.after(actor, "canary", res)
    }

    /// Builds `files` (the org source, with the layers `overrides` names)
    /// as a canary and serves it; `source_digest` is the source's, noted
    /// once the canary's members are picked.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_canary(
        &self,
        inner: &mut Inner,
        actor: &str,
        labels: Selector,
        plan: CanaryPlan,
        files: Arc<Files>,
        overrides: BTreeMap<String, u64>,
        layer: Option<LayerCanary>,
        source_digest: Option<String>,
    ) -> Result<Arc<Published>, BuildFailure> {
        {
            plan.guard.check().map_err(io)?;
            // The fleet has one canary slot: a watch without end would hold
            // it from every other owner's rollout.
            if !(plan.share > 0.0 && plan.share <= 1.0)
                || plan.watch_secs == 0
                || plan.watch_secs > MAX_WATCH_SECS
            {
                return Err(io(
                    "a canary needs a share in (0, 100%] and a watch between a second and a day",
                ));
            }
            // The slot is the org's to lend: the org's canary rolls a
            // tenant's layer canary back and takes it.
            let tenants = inner
                .watching()
                .and_then(|r| r.layer.as_ref())
                .map(|l| l.tenant.clone());
            if let (None, Some(tenant)) = (&layer, tenants) {
                self.roll_back_locked(
                    inner,
                    actor,
                    &format!(
                        "rolled back: the org's canary (by {actor}) takes the fleet's canary slot from tenant `{tenant}`"
                    ),
                );
            }
            if inner.watching().is_some() {
                return Err(io(
                    "a canary is already being watched: promote or roll it back first",
                ));
            }
            // Picked from the whole fleet: gateways that report to other
            // agents too.
            self.merge_fleet_into(inner)
                .map_err(|e| BuildFailure::from(super::Unavailable::of(e)))?;
            let candidates: Vec<String> = inner
                .fleet
                .values()
                .filter(|m| {
                    m.seen.elapsed() <= self.stale_after && labels.matches(&m.report.labels)
                })
                .map(|m| m.report.id.clone())
                .collect();
            if candidates.is_empty() {
                return Err(io(format!(
                    "no live gateway matches {labels}: nothing to canary on"
                )));
            }
            let d = build::digest(&files);
            if let Some(sd) = source_digest {
                inner.source_digest = Some(sd);
            }
            // The members are picked by the revision about to be built.
            let seq = inner.history.last().map_or(1, |h| h.seq + 1);
            let members = rollout::pick(&candidates, plan.share, &format!("r{seq}-{}", &d[..8]));
            // A canary is aimed at processes by their ids: one id that
            // several live processes share would take it to all of them.
            if let Err(e) = self.conflicting_members(inner, &members) {
                tracing::warn!("{e}");
                return Err(io(e));
            }
            let kill = inner.kill.clone();
            let reason = format!(
                "canary on {} of {} gateways of {labels}, watched {} s",
                members.len(),
                candidates.len(),
                plan.watch_secs
            );
            let p = self.build_revision(
                inner,
                files,
                &kill,
                actor,
                &reason,
                Target::Canary {
                    labels: labels.clone(),
                    members: members.clone(),
                },
                overrides,
            )?;
            // Every member's window starts now (a canary member's once it
            // reports the canary revision).
            let restarts = members
                .iter()
                .filter_map(|id| inner.fleet.get(id).map(|m| (id.clone(), m.restarts)))
                .collect();
            let marks = inner
                .fleet
                .values()
                .filter(|m| !members.contains(&m.report.id))
                .map(|m| (m.report.id.clone(), m.report.stats.clone()))
                .collect();
            inner.rollout = Some(Rollout {
                revision: p.revision.clone(),
                seq: p.seq,
                labels,
                share: plan.share,
                members,
                started: SystemTime::now(),
                watch_secs: plan.watch_secs,
                guard: plan.guard,
                state: CanaryState::Watching,
                reason: None,
                marks,
                restarts,
                jumps: BTreeMap::new(),
                untrusted: Vec::new(),
                baseline: None,
                canary_stats: Stats::default(),
                rest_stats: Stats::default(),
                layer,
                ended: None,
            });
            self.serve(inner, p.clone());
            Ok(p)
        }
    }

    /// Judges the canary being watched, if any: promotes or rolls it back
    /// when its numbers say so. Returns what it did.
    pub fn tick(&self) -> Option<Verdict> {
        self.lock().watching()?;
        // Judged on the whole fleet: what gateways reported to other
        // agents first. Not judged on part of it (members that report
        // elsewhere would look silent).
        if let Err(e) = self.merge_fleet() {
            tracing::warn!(error = %e, "the canary is not judged while the shared fleet is unreachable");
            return None;
        }
        // Judged inside a turn: on the state every agent sees, so that a
        // verdict is given once whichever agent judges.
        let mut inner = match self.write() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "the canary is not judged while the store is unavailable");
                return None;
            }
        };
        let inner = &mut *inner;
        let r = inner.rollout.as_mut().filter(|r| r.watching())?;
        let (mut canary, mut rest) = (Stats::default(), Stats::default());
        // A member that crashes, hangs or restarts on the canary reports
        // nothing of it, or counters begun again: either is held against
        // the canary, as a failed health check is (rolled back at once).
        let mut lost = self.lost_member(r, &inner.fleet, &inner.sightings);
        // Each gateway is one vote, and only a gateway the agent served
        // what it reports (revision, labels, instance), whose counters
        // never rose faster than a gateway counts, that did not restart and
        // is one process: any other reporter steers nothing. A member that
        // is not such a gateway rolls the canary back.
        let mut members: Vec<(String, Stats)> = Vec::new();
        let mut voters: Vec<Stats> = Vec::new();
        let mut untrusted: Vec<String> = Vec::new();
        for m in inner.fleet.values() {
            let id = &m.report.id;
            let member = r.members.contains(id);
            if member && m.report.revision != r.revision {
                continue; // not running it yet
            }
            if !member && !r.labels.matches(&m.report.labels) {
                continue;
            }
            let mark = r
                .marks
                .entry(id.clone())
                .or_insert_with(|| m.report.stats.clone());
            if m.report.stats.calls < mark.calls {
                // The gateway restarted: its counters began again at zero.
                *mark = Stats::default();
            }
            let window = m.report.stats.since(mark);
            let restarted = *r.restarts.entry(id.clone()).or_insert(m.restarts) != m.restarts;
            let jumped = *r.jumps.entry(id.clone()).or_insert(m.jumps) != m.jumps;
            let distrust = if !Self::served_what_it_reports(&inner.fetched, &m.report) {
                Some(format!(
                    "reports revision {} with labels {} that the agent never served it (to that instance)",
                    m.report.revision,
                    Selector(m.report.labels.clone())
                ))
            } else if jumped {
                Some(format!(
                    "reported counters that rose faster than one gateway counts ({} calls a second)",
                    rollout::MAX_CALLS_PER_SEC
                ))
            } else if restarted {
                Some("restarted during the watch".to_owned())
            } else if Self::conflict_in(&inner.sightings, id, self.stale_after).is_some() {
                Some("is shared by several live gateway processes".to_owned())
            } else {
                None
            };
            match (member, distrust) {
                (true, Some(why)) => {
                    if lost.is_none() {
                        lost = Some(format!(
                            "canary member `{id}` {why}: its figures cannot be trusted"
                        ));
                    }
                }
                (true, None) => {
                    canary.add(&window);
                    members.push((id.clone(), window));
                }
                (false, Some(_)) => untrusted.push(id.clone()),
                (false, None) => {
                    rest.add(&window);
                    if window.calls >= r.guard.min_calls {
                        voters.push(window);
                    }
                }
            }
        }
        let over = r.started.elapsed().unwrap_or_default() >= Duration::from_secs(r.watch_secs);
        let base = rollout::Baseline::of(&voters, &r.guard);
        let verdict = match lost {
            Some(why) => Verdict::RollBack(why),
            None => rollout::judge_members(&members, &canary, &base, &r.guard, over),
        };
        untrusted.truncate(32);
        r.untrusted = untrusted;
        r.baseline = Some(base);
        r.canary_stats = canary;
        r.rest_stats = rest;
        match &verdict {
            Verdict::Wait => return Some(verdict),
            Verdict::Promote(why) => {
                let why = why.clone();
                self.promote_locked(inner, "watcher", &why);
            }
            Verdict::RollBack(why) => {
                let why = why.clone();
                self.roll_back_locked(inner, "watcher", &why);
            }
        }
        Some(verdict)
    }

    /// Why the canary is lost whatever its figures say: a member silent
    /// past the stale period, restarted during the watch, or shared by
    /// several live gateway processes (the first such member). Notes each
    /// member's restarts the first time the watch sees it.
    fn lost_member(
        &self,
        r: &mut Rollout,
        fleet: &BTreeMap<String, Member>,
        sightings: &BTreeMap<String, Sightings>,
    ) -> Option<String> {
        let watched = r.started.elapsed().unwrap_or_default();
        for id in &r.members {
            let m = fleet.get(id);
            // Silent since the watch began (or since the agent started:
            // `started` is set again when it loads the rollout).
            let silent = m.map_or(watched, |m| m.seen.elapsed().min(watched));
            if silent > self.stale_after {
                return Some(format!(
                    "canary member `{id}` has not reported for {} s (stale after {} s): it may have crashed or hung on the canary",
                    silent.as_secs(),
                    self.stale_after.as_secs()
                ));
            }
            let Some(m) = m else { continue };
            let base = *r.restarts.entry(id.clone()).or_insert(m.restarts);
            if m.restarts > base {
                return Some(format!(
                    "canary member `{id}` restarted during the watch (its reports came from another process{}): it may have crashed on the canary",
                    if m.report.instance.is_some() {
                        ""
                    } else {
                        ", its counters began again"
                    }
                ));
            }
            if let Some(i) = Self::conflict_in(sightings, id, self.stale_after) {
                return Some(format!(
                    "canary member `{id}` is shared by {} live gateway processes: the canary reaches every one of them",
                    i.len().max(2)
                ));
            }
        }
        None
    }

    pub(super) fn promote_locked(
        &self,
        inner: &mut Inner,
        actor: &str,
        why: &str,
    ) -> Option<String> {
        let r = inner.watching_mut()?;
        r.end(CanaryState::Promoted, why);
        let (seq, labels, revision) = (r.seq, r.labels.clone(), r.revision.clone());
        if let Some(l) = r.layer.clone() {
            // A layer's canary: its layer becomes the tenant's for all.
            inner.served.retain(|p| p.seq != seq);
            self.promote_layer(inner, actor, &l);
            self.record(actor, "promote", Some(&revision), true, why);
            return Some(revision);
        }
        let old = inner.served.iter().find(|p| p.seq == seq)?.clone();
        inner.served.retain(|p| p.seq != seq);
        // The same revision (same ETag: its members do not reload) now
        // reaches every gateway its selector matches.
        let promoted = Arc::new(Published {
            seq: old.seq,
            revision: old.revision.clone(),
            archive: old.archive.clone(),
            target: Target::Select { labels },
            files: old.files.clone(),
            overrides: old.overrides.clone(),
            expires: old.expires,
        });
        self.serve(inner, promoted);
        self.record(actor, "promote", Some(&revision), true, why);
        tracing::info!(revision = %revision, reason = why, "canary promoted");
        Some(revision)
    }

    pub(super) fn roll_back_locked(
        &self,
        inner: &mut Inner,
        actor: &str,
        why: &str,
    ) -> Option<String> {
        let r = inner.watching_mut()?;
        r.end(CanaryState::RolledBack, why);
        let (seq, revision) = (r.seq, r.revision.clone());
        inner.served.retain(|p| p.seq != seq);
        // What the canary's gateways go back to is built again: a gateway
        // never takes a bundle older than one it applied (see
        // `build::next_sequence`), and nothing else changes.
        let kill = inner.kill.clone();
        match self.rebuild_served(
            inner,
            &kill,
            actor,
            &format!("canary {revision} rolled back"),
        ) {
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "rebuilding after a canary rollback failed; its gateways keep the canary until the next publish");
                self.served_changed(inner);
            }
        }
        self.record(actor, "canary_rollback", Some(&revision), true, why);
        tracing::warn!(revision = %revision, reason = why, "canary rolled back");
        Some(revision)
    }

    /// An operator promotes the canary before its watch ends, naming the
    /// revision they judged (`GET /v1/rollout`'s `revision`): checked under
    /// the lock that promotes it, so a canary rolled back and another
    /// started (or the canary rebuilt) after the operator read it is not
    /// promoted in its place.
    pub fn promote(&self, actor: &str, revision: Option<&str>) -> Result<String, CanaryRefusal> {
        let mut inner = self.write()?;
        let current = Self::watched(&inner)?.revision.clone();
        CanaryRefusal::check(true, &current, revision)?;
        let r = self
            .promote_locked(&mut inner, actor, &format!("promoted by {actor}"))
            .ok_or_else(CanaryRefusal::none);
        inner.finish(r)
    }

    /// An operator rolls the canary back (when a revision is named, that
    /// one only).
    pub fn roll_back_canary(
        &self,
        actor: &str,
        revision: Option<&str>,
    ) -> Result<String, CanaryRefusal> {
        let mut inner = self.write()?;
        let current = Self::watched(&inner)?.revision.clone();
        CanaryRefusal::check(false, &current, revision)?;
        let r = self
            .roll_back_locked(&mut inner, actor, &format!("rolled back by {actor}"))
            .ok_or_else(CanaryRefusal::none);
        inner.finish(r)
    }

    fn watched(inner: &Inner) -> Result<&Rollout, CanaryRefusal> {
        inner.watching().ok_or_else(CanaryRefusal::none)
    }

    /// Promotes (or rolls back) the canary of `tenant`'s layer: checked
    /// under the lock that ends it, so a request about one tenant's canary
    /// never ends another's (or the org's) that started in between.
    /// Promoting names the layer revision judged (the tenant's history's
    /// `canary.revision`): another layer canary of the tenant started
    /// since is not promoted in its place.
    pub fn end_layer_canary(
        &self,
        actor: &str,
        tenant: &str,
        promote: bool,
        revision: Option<&str>,
    ) -> Result<String, CanaryRefusal> {
        let mut inner = self.write()?;
        let theirs = inner
            .watching()
            .and_then(|r| r.layer.as_ref())
            .filter(|l| crate::admins::same_tenant(&l.tenant, tenant))
            .map(|l| l.revision.clone());
        let Some(current) = theirs else {
            return Err(CanaryRefusal::NotWatched(format!(
                "no canary of tenant `{tenant}`'s layer is being watched"
            )));
        };
        CanaryRefusal::check(promote, &current, revision)?;
        let why = format!(
            "{} by {actor}",
            if promote { "promoted" } else { "rolled back" }
        );
        let done = if promote {
            self.promote_locked(&mut inner, actor, &why)
        } else {
            self.roll_back_locked(&mut inner, actor, &why)
        };
        inner.finish(done.ok_or_else(CanaryRefusal::none))
    }

    /// The canary being watched or the last one, with its figures
    /// (`{"state": "none"}` when there never was one).
    pub fn rollout_view(&self) -> RolloutView {
        let v = RolloutView::of(self.lock().rollout.as_ref());
        #[cfg(test)]
        if let Some(f) = self
            .after_rollout_read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            f(self);
        }
        v
    }
}

/// Why a canary was not promoted or rolled back by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryRefusal {
    /// No canary (of this owner) is being watched (409 `no_canary`).
    NotWatched(String),
    /// A promotion that does not name the revision judged (400
    /// `revision_required`).
    Unnamed(String),
    /// The canary watched is not the revision named (409
    /// `revision_changed`): nothing changes.
    Changed(String),
    /// The store could not take its turn (503 `store_unavailable`).
    Unavailable(String),
}

impl From<super::Unavailable> for CanaryRefusal {
    fn from(e: super::Unavailable) -> CanaryRefusal {
        CanaryRefusal::Unavailable(e.to_string())
    }
}

impl CanaryRefusal {
    fn none() -> CanaryRefusal {
        CanaryRefusal::NotWatched("no canary is being watched".into())
    }

    /// A promotion names the revision judged; a rollback may. Either is
    /// refused when the one named is not `current`.
    fn check(promote: bool, current: &str, named: Option<&str>) -> Result<(), CanaryRefusal> {
        match named.map(str::trim).filter(|n| !n.is_empty()) {
            None if promote => Err(CanaryRefusal::Unnamed(format!(
                "promoting needs `revision`: the canary's revision you judged (now {current})"
            ))),
            Some(n) if n != current => Err(CanaryRefusal::Changed(format!(
                "the canary changed since you read it: you judged {}, the canary watched is now {current}; read it again",
                n.chars().take(120).collect::<String>().escape_debug()
            ))),
            _ => Ok(()),
        }
    }

    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            CanaryRefusal::Unnamed(_) => 400,
            CanaryRefusal::NotWatched(_) | CanaryRefusal::Changed(_) => 409,
            CanaryRefusal::Unavailable(_) => 503,
        }
    }

    /// The machine-readable code the API answers with (`code`).
    pub fn code(&self) -> &'static str {
        match self {
            CanaryRefusal::NotWatched(_) => "no_canary",
            CanaryRefusal::Unnamed(_) => "revision_required",
            CanaryRefusal::Changed(_) => "revision_changed",
            CanaryRefusal::Unavailable(_) => "store_unavailable",
        }
    }
}

impl std::fmt::Display for CanaryRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CanaryRefusal::NotWatched(m)
            | CanaryRefusal::Unnamed(m)
            | CanaryRefusal::Changed(m)
            | CanaryRefusal::Unavailable(m) => f.write_str(m),
        }
    }
}
