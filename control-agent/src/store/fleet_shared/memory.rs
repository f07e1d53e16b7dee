//! What the shared fleet's rows make of this agent's memory: a report, a
//! gateway's instances and the fetches the others took, kept in the
//! store's `Inner` within its bounds, and the merge that reads them.

use std::collections::HashMap;
use std::time::Instant;

use super::super::super::types::Report;
use super::super::super::{Inner, Member, Store, MAX_FLEET};
use super::super::{Fetch, Figures, MAX_INSTANCES};
use super::{ago, unshared, FleetChanges, SightingRow};

impl Store {
    /// Keeps a report (`seen` then, with `figures`) in memory unless a
    /// newer version of the gateway's row is known: what this agent took
    /// itself, or a row of the shared backend.
    pub(in crate::store) fn keep_member(
        &self,
        inner: &mut Inner,
        r: Report,
        seen: Instant,
        figures: Figures,
        version: u64,
    ) {
        if self
            .backend
            .fleet_version(&r.id)
            .is_some_and(|v| v > version)
        {
            return; // a newer row is on its way to memory
        }
        if !inner.fleet.contains_key(&r.id) && inner.fleet.len() >= MAX_FLEET {
            let forget = self.stale_after * 10;
            inner.fleet.retain(|_, m| m.seen.elapsed() <= forget);
            if inner.fleet.len() >= MAX_FLEET {
                return;
            }
        }
        inner.fleet.insert(
            r.id.clone(),
            Member {
                report: r,
                seen,
                rate: figures.rate,
                restarts: figures.restarts,
                jumps: figures.jumps,
            },
        );
    }

    /// Keeps what the shared backend holds of `id`'s instances: each one
    /// heard of as late as either says, a conflict as late as either says.
    pub(in crate::store) fn keep_sightings(
        &self,
        inner: &mut Inner,
        id: &str,
        rows: Vec<SightingRow>,
    ) {
        let now = Instant::now();
        if !self.room_for_sightings(inner, id) {
            return;
        }
        let s = inner.sightings.entry(id.to_owned()).or_default();
        for row in rows {
            let (first, last) = (ago(now, row.first), ago(now, row.last));
            match s.seen.iter_mut().find(|x| x.0 == row.instance) {
                Some(x) => {
                    x.1 = first;
                    x.2 = x.2.max(last);
                }
                None => s.seen.push((row.instance, first, last)),
            }
            if let Some(c) = row.conflict.map(|c| ago(now, c)) {
                s.conflict = Some(s.conflict.map_or(c, |x| x.max(c)));
            }
        }
        while s.seen.len() > MAX_INSTANCES {
            let oldest = s
                .seen
                .iter()
                .enumerate()
                .min_by_key(|(_, x)| x.2)
                .map_or(0, |(i, _)| i);
            s.seen.remove(oldest);
        }
    }

    /// Reads what the shared backend holds of `id`'s instances into
    /// memory (nothing to do on a backend that shares none).
    pub(in crate::store) fn refresh_sightings(&self, id: &str) {
        match self.backend.fleet_sightings_of(id) {
            Ok(Some(rows)) => {
                let mut inner = self.lock();
                self.keep_sightings(&mut inner, id, rows);
            }
            Ok(None) => {}
            Err(e) => unshared("a gateway's instances", &e),
        }
    }

    /// Merges what other agents wrote of the fleet since the last merge
    /// into memory (nothing to do on a backend that shares none).
    pub(in crate::store) fn merge_fleet(&self) -> std::io::Result<()> {
        let Some(c) = self.backend.fleet_changes()? else {
            return Ok(());
        };
        let mut inner = self.lock();
        self.keep_changes(&mut inner, c);
        Ok(())
    }

    /// [`Store::merge_fleet`] with the store's lock held.
    pub(in crate::store) fn merge_fleet_into(&self, inner: &mut Inner) -> std::io::Result<()> {
        if let Some(c) = self.backend.fleet_changes()? {
            self.keep_changes(inner, c);
        }
        Ok(())
    }

    /// [`Store::merge_fleet`], saying when it could not.
    pub(in crate::store) fn merged_fleet(&self, what: &str) {
        if let Err(e) = self.merge_fleet() {
            unshared(what, &e);
        }
    }

    fn keep_changes(&self, inner: &mut Inner, c: FleetChanges) {
        let now = Instant::now();
        for m in c.members {
            self.keep_member(inner, m.report, ago(now, m.age), m.figures, m.version);
        }
        let mut by_id: HashMap<String, Vec<SightingRow>> = HashMap::new();
        for s in c.sightings {
            by_id.entry(s.id.clone()).or_default().push(s);
        }
        for (id, rows) in by_id {
            self.keep_sightings(inner, &id, rows);
        }
        for f in c.fetches {
            if !inner.fetched.contains_key(&f.id) && inner.fetched.len() >= MAX_FLEET {
                let fleet = &inner.fleet;
                inner.fetched.retain(|k, _| fleet.contains_key(k));
                if inner.fetched.len() >= MAX_FLEET {
                    continue;
                }
            }
            inner.fetched.entry(f.id).or_default().note(Fetch {
                revision: f.revision,
                labels: f.labels,
                instance: f.instance,
                at: ago(now, f.age),
                kept: true,
            });
        }
    }
}
