//! The fleet view: gateways' reports (revision, labels, traffic figures)
//! and what the agent shows of them. Kept in the agent's memory; on a
//! backend several agents share, in the database as well, so that every
//! agent sees the whole fleet ([`shared`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::error::ReportError;
use super::types::{Report, MAX_REPORTED_ERROR, MAX_REPORTED_REVISION, MAX_REPORTED_UPSTREAMS};
use super::{Inner, Member, Store, MAX_FLEET};
use crate::rollout::{self, Labels, Selector, Stats};

#[path = "fleet_shared/mod.rs"]
pub(super) mod shared;
#[cfg(test)]
#[path = "fleet_shared_tests.rs"]
mod shared_tests;

use shared::Reported;

/// Instances one gateway id keeps at most (the oldest heard of goes).
const MAX_INSTANCES: usize = 8;

/// The instances (processes) seen under one gateway id.
#[derive(Debug, Default)]
pub(super) struct Sightings {
    /// Instance id, first and last heard of; at most [`MAX_INSTANCES`].
    seen: Vec<(String, Instant, Instant)>,
    /// When two instances were last heard of interleaving.
    conflict: Option<Instant>,
}

impl Sightings {
    /// Instances heard of within `live`, most recent first.
    fn live(&self, live: Duration) -> Vec<String> {
        let mut v: Vec<&(String, Instant, Instant)> =
            self.seen.iter().filter(|s| s.2.elapsed() <= live).collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.2));
        v.into_iter().map(|s| s.0.clone()).collect()
    }

    fn conflicting(&self, live: Duration) -> bool {
        self.conflict.is_some_and(|t| t.elapsed() <= live)
    }
}

/// What an instance id may be: what a gateway draws (32 hex digits) or
/// another 1-64 letters, digits, `-` and `_`.
pub fn valid_instance(i: &str) -> bool {
    !i.is_empty()
        && i.len() <= 64
        && i.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Fetches remembered per gateway id (the oldest goes).
const MAX_FETCHES: usize = 8;

/// What the agent answered one gateway id's bundle fetches with: each
/// revision served (or confirmed current, a `304` to the revision the
/// fetch held), with the labels and the instance the fetch named. A
/// report counts toward a canary only when it names one of them: a
/// reporter that never fetched what it says it runs steers nothing.
#[derive(Debug, Default)]
pub(super) struct Fetches(Vec<Fetch>);

/// One fetch answered: oldest first in [`Fetches`].
#[derive(Debug)]
struct Fetch {
    revision: String,
    labels: Labels,
    instance: Option<String>,
    /// When it was last answered so.
    at: Instant,
    /// Whether the shared backend holds it (written there, or read from
    /// there): one that does is not written again for every fetch that
    /// confirms it.
    kept: bool,
}

impl Fetch {
    fn same(&self, other: &Fetch) -> bool {
        self.revision == other.revision
            && self.labels == other.labels
            && self.instance == other.instance
    }
}

impl Fetches {
    /// Notes `fetch` (the newest answered so), the oldest going past
    /// [`MAX_FETCHES`].
    fn note(&mut self, fetch: Fetch) {
        if let Some(i) = self.0.iter().position(|x| x.same(&fetch)) {
            let old = self.0.remove(i);
            if old.at > fetch.at {
                // What another agent answered later than this.
                self.0.insert(
                    i,
                    Fetch {
                        kept: old.kept || fetch.kept,
                        ..old
                    },
                );
                return;
            }
        }
        let at = self.0.partition_point(|x| x.at <= fetch.at);
        self.0.insert(at, fetch);
        if self.0.len() > MAX_FETCHES {
            self.0.remove(0);
        }
    }
}

/// What a gateway's reports tell beyond the last one, computed from the
/// report before it (whichever agent took it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Client calls per second between its last two reports.
    pub rate: f64,
    /// Reports that came from another process than the one before.
    pub restarts: u64,
    /// Reports whose counters rose faster than a gateway counts.
    pub jumps: u64,
}

/// The report before the one taken, as [`figures`] reads it.
pub(super) struct Previous<'a> {
    pub instance: Option<&'a str>,
    pub stats: &'a Stats,
    /// How long before the one taken it came.
    pub before: Duration,
    pub figures: Figures,
}

impl<'a> Previous<'a> {
    fn of(m: &'a Member, now: Instant) -> Previous<'a> {
        Previous {
            instance: m.report.instance.as_deref(),
            stats: &m.report.stats,
            before: now.saturating_duration_since(m.seen),
            figures: Figures {
                rate: m.rate,
                restarts: m.restarts,
                jumps: m.jumps,
            },
        }
    }
}

/// The figures of report `r`, which came `prev.before` after `prev`.
pub(super) fn figures(prev: Option<Previous<'_>>, r: &Report) -> Figures {
    let Some(p) = prev else {
        return Figures::default();
    };
    let went_back = r.stats.went_back(p.stats);
    let same = p.instance == r.instance.as_deref();
    // Another process than the last report's: a new instance, or
    // counters that went back (a gateway that sends no instance).
    let other = p.instance.is_some() && r.instance.is_some() && !same;
    let restarts = p.figures.restarts + u64::from(other || went_back);
    let secs = p.before.as_secs_f64();
    // Counters that rose faster since the last report than one gateway
    // can count are no gateway's: held against it by a canary.
    let jumps = if same && !went_back {
        let allowed = (rollout::MAX_CALLS_PER_SEC as f64 * secs) as u64 + 1000;
        let d = r.stats.since(p.stats);
        p.figures.jumps + u64::from(d.calls > allowed || d.replies > allowed.saturating_mul(10))
    } else {
        p.figures.jumps
    };
    let rate = match (same && !went_back, secs > 0.0) {
        (true, true) => (r.stats.calls - p.stats.calls) as f64 / secs,
        (true, false) => p.figures.rate,
        (false, _) => 0.0,
    };
    Figures {
        rate,
        restarts,
        jumps,
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

impl Store {
    /// Whether the sightings table has room for gateway `id`: it holds
    /// it already, or fewer than [`MAX_FLEET`] ids once those silent for
    /// ten stale periods are forgotten.
    pub(super) fn room_for_sightings(&self, inner: &mut Inner, id: &str) -> bool {
        if inner.sightings.contains_key(id) || inner.sightings.len() < MAX_FLEET {
            return true;
        }
        let forget = self.stale_after * 10;
        inner
            .sightings
            .retain(|_, s| s.seen.iter().any(|x| x.2.elapsed() <= forget));
        inner.sightings.len() < MAX_FLEET
    }

    /// Notes that `instance` spoke for gateway `id` (a report, a bundle
    /// fetch). Two instances are in conflict when they interleave: one is
    /// heard of again after another was heard of since its own first
    /// sighting, within the stale period. A restart (a new instance, the
    /// old one never heard of again) is none. The conflict lasts until one
    /// of them has been silent for the stale period (and that long again).
    fn sighted(&self, inner: &mut Inner, id: &str, instance: &str) {
        let now = Instant::now();
        let live = self.stale_after;
        if !self.room_for_sightings(inner, id) {
            return;
        }
        let s = inner.sightings.entry(id.to_owned()).or_default();
        let was = s.conflicting(live);
        let interleaved = match s.seen.iter().position(|x| x.0 == instance) {
            Some(i) => {
                let first = s.seen[i].1;
                let other = s
                    .seen
                    .iter()
                    .any(|x| x.0 != instance && x.2 >= first && now.duration_since(x.2) <= live);
                s.seen[i].2 = now;
                other
            }
            None => {
                if s.seen.len() >= MAX_INSTANCES {
                    if let Some(oldest) = s
                        .seen
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, x)| x.2)
                        .map(|(i, _)| i)
                    {
                        s.seen.remove(oldest);
                    }
                }
                s.seen.push((instance.to_owned(), now, now));
                false
            }
        };
        if interleaved {
            s.conflict = Some(now);
            if !was {
                conflict_began(id, &s.live(live));
            }
        }
    }

    /// Notes that `instance` spoke for gateway `id`: in the shared
    /// backend when there is one (which tells whether it interleaves with
    /// a process another agent heard), else in this agent's memory.
    fn sight(&self, id: &str, instance: &str) {
        let live = self.stale_after;
        match self.backend.fleet_sighting(id, instance, live, live * 10) {
            Ok(Some(s)) => {
                let mut inner = self.lock();
                self.keep_sightings(&mut inner, id, s.rows);
                if s.interleaved && !s.was {
                    let live = inner.sightings.get(id).map(|s| s.live(live));
                    conflict_began(id, &live.unwrap_or_default());
                }
                return;
            }
            Ok(None) => {}
            Err(e) => shared::unshared("a gateway's instance", &e),
        }
        let mut inner = self.lock();
        self.sighted(&mut inner, id, instance);
    }

    /// A bundle fetch named `id` and `instance` (`X-Warden-Gateway`,
    /// `X-Warden-Instance`): noted as a report's are. Anything else than a
    /// valid pair is ignored (a fetch without them is served all the same).
    pub fn fetched_by(&self, id: &str, instance: &str) {
        if valid_id(id) && valid_instance(instance) {
            self.sight(id, instance);
        }
    }

    /// The agent answered a fetch by gateway `id` (`instance`, `labels`)
    /// with `revision`, or confirmed it is what the gateway should run.
    pub fn served_to(&self, id: &str, instance: &str, labels: &Labels, revision: &str) {
        if !valid_id(id) || !(instance.is_empty() || valid_instance(instance)) {
            return;
        }
        let mut fetch = Fetch {
            revision: revision.to_owned(),
            labels: labels.clone(),
            instance: (!instance.is_empty()).then(|| instance.to_owned()),
            at: Instant::now(),
            kept: false,
        };
        // A fetch the shared backend holds already as the id's newest is
        // not written again (every long poll confirms what it holds).
        let known = self
            .lock()
            .fetched
            .get(id)
            .and_then(|f| f.0.last())
            .is_some_and(|x| x.kept && x.same(&fetch));
        if !known {
            match self
                .backend
                .fleet_fetch(id, revision, labels, fetch.instance.as_deref())
            {
                Ok(Some(true)) => fetch.kept = true,
                // The shared table is full: not noted, as in memory.
                Ok(Some(false)) => return,
                Ok(None) => {}
                Err(e) => shared::unshared("a bundle fetch", &e),
            }
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        if !inner.fetched.contains_key(id) && inner.fetched.len() >= MAX_FLEET {
            // Ids that never reported, or were forgotten, go first.
            let fleet = &inner.fleet;
            inner.fetched.retain(|k, _| fleet.contains_key(k));
            if inner.fetched.len() >= MAX_FLEET {
                return;
            }
        }
        inner.fetched.entry(id.to_owned()).or_default().note(fetch);
    }

    /// Whether the agent served `r.id` the revision `r` reports, to the
    /// labels and the instance it reports.
    pub(super) fn served_what_it_reports(fetched: &BTreeMap<String, Fetches>, r: &Report) -> bool {
        fetched.get(&r.id).is_some_and(|f| {
            f.0.iter().any(|x| {
                x.revision == r.revision && x.labels == r.labels && x.instance == r.instance
            })
        })
    }

    /// The live instances of gateway `id` when two or more processes
    /// report under it (see [`Store::sighted`]); `None` when it is not in
    /// conflict.
    pub fn conflict(&self, id: &str) -> Option<Vec<String>> {
        // Another agent may have heard the other process: what the
        // shared backend holds of the id first.
        self.refresh_sightings(id);
        Self::conflict_in(&self.lock().sightings, id, self.stale_after)
    }

    pub(super) fn conflict_in(
        sightings: &BTreeMap<String, Sightings>,
        id: &str,
        live: Duration,
    ) -> Option<Vec<String>> {
        sightings
            .get(id)
            .filter(|s| s.conflicting(live))
            .map(|s| s.live(live * 2))
    }

    /// Why a canary may not reach `members`: any of them is a gateway id
    /// several live processes report under.
    pub(super) fn conflicting_members(
        &self,
        inner: &Inner,
        members: &BTreeSet<String>,
    ) -> Result<(), SharedIds> {
        let ids: Vec<String> = members
            .iter()
            .filter_map(|id| {
                Self::conflict_in(&inner.sightings, id, self.stale_after)
                    .map(|i| format!("`{id}` ({} processes)", i.len().max(2)))
            })
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        Err(SharedIds(ids))
    }

    /// Takes a gateway's report: refused when it is not one a gateway
    /// writes, or when it names a new gateway while the fleet table is
    /// full (members not heard from for ten stale periods are forgotten).
    pub fn accept_report(&self, mut r: Report) -> Result<(), ReportError> {
        if r.revision.len() > MAX_REPORTED_REVISION || r.revision.chars().any(|c| c.is_control()) {
            return Err(ReportError::Revision);
        }
        // A gateway's own error can be long (every problem of a refused
        // bundle); kept whole it would let one report grow the table
        // without bound, refused it would hide the gateway: its head is kept.
        if let Some(e) = r.last_error.as_mut() {
            crate::cut_bytes(e, MAX_REPORTED_ERROR);
        }
        if !valid_id(&r.id) {
            return Err(ReportError::Id);
        }
        if r.instance.as_deref().is_some_and(|i| !valid_instance(i)) {
            return Err(ReportError::Instance);
        }
        Selector(r.labels.clone()).validate()?;
        r.stats.check()?;
        if r.upstreams.len() > MAX_REPORTED_UPSTREAMS
            || r.upstreams
                .iter()
                .any(|u| u.server.is_empty() || u.server.len() > 256 || u.healthy > u.replicas)
        {
            return Err(ReportError::Upstreams);
        }
        // On a shared backend the report is kept there first, its figures
        // computed from the gateway's previous report whichever agent took
        // it; this agent's memory follows.
        match self.backend.fleet_report(&r, self.stale_after * 10) {
            Ok(Some(Reported::Full)) => return Err(ReportError::FleetFull),
            Ok(Some(Reported::Kept { version, figures })) => {
                if let Some(i) = &r.instance {
                    self.sight(&r.id, i);
                }
                let mut inner = self.lock();
                self.keep_member(&mut inner, r, Instant::now(), figures, version);
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => {
                // Refused, not kept here alone: the gateway takes it to
                // its next agent.
                tracing::warn!(error = %e, gateway = %r.id, "a report not kept: the shared fleet is unreachable (503)");
                return Err(super::Unavailable::of(e).into());
            }
        }
        let mut inner = self.lock();
        if !inner.fleet.contains_key(&r.id) && inner.fleet.len() >= MAX_FLEET {
            let forget = self.stale_after * 10;
            inner.fleet.retain(|_, m| m.seen.elapsed() <= forget);
            if inner.fleet.len() >= MAX_FLEET {
                return Err(ReportError::FleetFull);
            }
        }
        if let Some(i) = &r.instance {
            self.sighted(&mut inner, &r.id, i);
        }
        let now = Instant::now();
        let f = figures(inner.fleet.get(&r.id).map(|m| Previous::of(m, now)), &r);
        inner.fleet.insert(
            r.id.clone(),
            Member {
                report: r,
                seen: now,
                rate: f.rate,
                restarts: f.restarts,
                jumps: f.jumps,
            },
        );
        Ok(())
    }
}

/// Says that several live processes report under gateway id `id`.
fn conflict_began(id: &str, instances: &[String]) {
    tracing::warn!(
        gateway = id,
        instances = ?instances,
        "{} live gateway processes report under the gateway id `{id}`: a canary on it would reach every one of them and their audit chains would be mixed; canaries on it and its audit records are refused until each runs with its own --gateway-id",
        instances.len().max(2)
    );
}

/// Gateway ids picked for a canary that several live processes share
/// (each with how many): the canary would reach every one of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing the canary: gateway id{} {} picked for it {} shared by several live gateway processes, so the canary would reach every one of them; give each replica its own --gateway-id (or leave it out: the host name and process id)",
    if .0.len() == 1 { "" } else { "s" },
    .0.join(", "),
    if .0.len() == 1 { "is" } else { "are" },
)]
pub struct SharedIds(pub Vec<String>);
