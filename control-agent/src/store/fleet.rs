//! The fleet view: gateways' reports (revision, labels, traffic figures)
//! and what the agent shows of them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::error::ReportError;
use super::types::{Report, MAX_REPORTED_ERROR, MAX_REPORTED_REVISION, MAX_REPORTED_UPSTREAMS};
use super::{Inner, Member, Store, MAX_FLEET};
use crate::rollout::{self, Labels, Selector};

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

#[derive(Debug, PartialEq)]
struct Fetch {
    revision: String,
    labels: Labels,
    instance: Option<String>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

impl Store {
    /// Notes that `instance` spoke for gateway `id` (a report, a bundle
    /// fetch). Two instances are in conflict when they interleave: one is
    /// heard of again after another was heard of since its own first
    /// sighting, within the stale period. A restart (a new instance, the
    /// old one never heard of again) is none. The conflict lasts until one
    /// of them has been silent for the stale period (and that long again).
    fn sighted(&self, inner: &mut Inner, id: &str, instance: &str) {
        let now = Instant::now();
        let live = self.stale_after;
        if !inner.sightings.contains_key(id) && inner.sightings.len() >= MAX_FLEET {
            let forget = live * 10;
            inner
                .sightings
                .retain(|_, s| s.seen.iter().any(|x| x.2.elapsed() <= forget));
            if inner.sightings.len() >= MAX_FLEET {
                return;
            }
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
                let instances = s.live(live);
                tracing::warn!(
                    gateway = id,
                    instances = ?instances,
                    "{} live gateway processes report under the gateway id `{id}`: a canary on it would reach every one of them and their audit chains would be mixed; canaries on it and its audit records are refused until each runs with its own --gateway-id",
                    instances.len()
                );
            }
        }
    }

    /// A bundle fetch named `id` and `instance` (`X-Warden-Gateway`,
    /// `X-Warden-Instance`): noted as a report's are. Anything else than a
    /// valid pair is ignored (a fetch without them is served all the same).
    pub fn fetched_by(&self, id: &str, instance: &str) {
        if valid_id(id) && valid_instance(instance) {
            let mut inner = self.lock();
            self.sighted(&mut inner, id, instance);
        }
    }

    /// The agent answered a fetch by gateway `id` (`instance`, `labels`)
    /// with `revision`, or confirmed it is what the gateway should run.
    pub fn served_to(&self, id: &str, instance: &str, labels: &Labels, revision: &str) {
        if !valid_id(id) || !(instance.is_empty() || valid_instance(instance)) {
            return;
        }
        let fetch = Fetch {
            revision: revision.to_owned(),
            labels: labels.clone(),
            instance: (!instance.is_empty()).then(|| instance.to_owned()),
        };
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
        let f = inner.fetched.entry(id.to_owned()).or_default();
        f.0.retain(|x| *x != fetch);
        f.0.push(fetch);
        if f.0.len() > MAX_FETCHES {
            f.0.remove(0);
        }
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
        // Another process than the last report's: a new instance, or
        // counters that went back (a gateway that sends no instance).
        let restarts = inner.fleet.get(&r.id).map_or(0, |m| {
            let other = match (&m.report.instance, &r.instance) {
                (Some(a), Some(b)) => a != b,
                _ => false,
            };
            m.restarts + u64::from(other || r.stats.went_back(&m.report.stats))
        });
        // Counters that rose faster since the last report than one
        // gateway can count are no gateway's: held against it by a canary.
        let jumps = match inner.fleet.get(&r.id) {
            Some(m) if m.report.instance == r.instance && !r.stats.went_back(&m.report.stats) => {
                let secs = now.duration_since(m.seen).as_secs_f64();
                let allowed = (rollout::MAX_CALLS_PER_SEC as f64 * secs) as u64 + 1000;
                let d = r.stats.since(&m.report.stats);
                m.jumps + u64::from(d.calls > allowed || d.replies > allowed.saturating_mul(10))
            }
            Some(m) => m.jumps,
            None => 0,
        };
        let rate = match inner.fleet.get(&r.id) {
            Some(m) if !r.stats.went_back(&m.report.stats) && m.report.instance == r.instance => {
                let secs = now.duration_since(m.seen).as_secs_f64();
                if secs > 0.0 {
                    (r.stats.calls - m.report.stats.calls) as f64 / secs
                } else {
                    m.rate
                }
            }
            _ => 0.0,
        };
        inner.fleet.insert(
            r.id.clone(),
            Member {
                report: r,
                seen: now,
                rate,
                restarts,
                jumps,
            },
        );
        Ok(())
    }
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
