//! The fleet view shared by agents on one database (issue 84).
//!
//! Each agent keeps the fleet in memory as it always has (`Inner.fleet`,
//! `sightings`, `fetched`), and on a shared backend the database holds
//! the truth those are copies of (`migrations/0002_fleet.sql`):
//!
//! - `warden_fleet`: each gateway's last report with its figures (rate,
//!   restarts, jumps) and a version. A report is one conditional upsert:
//!   its figures are computed from the previous report as this agent last
//!   wrote or read it, and written only if the row is still that version;
//!   when another agent took a report in between, the row is read and the
//!   figures computed again from it. So they follow the gateway's reports
//!   whichever agent takes them. A report costs two statements (this
//!   upsert and its instance's sighting, below), and a read more when
//!   another agent took the one before.
//! - `warden_fleet_sightings`: each (gateway id, instance) heard of, when
//!   first and last, and when it was last found interleaving with another.
//!   A sighting is one statement that decides the interleaving on every
//!   agent's sightings (the rule of [`Store::sighted`], in SQL) and
//!   returns the id's rows: two processes under one id that report to two
//!   agents are a conflict on both.
//! - `warden_fleet_fetches`: what each id's bundle fetches were answered
//!   with (at most [`MAX_FETCHES`] an id). A fetch the database holds is
//!   not written again when a long poll only confirms it.
//!
//! Every time is the database's clock (`clock_timestamp()`), read back as
//! an age: agents whose clocks disagree still agree on who is stale.
//!
//! What other agents wrote reaches this one's memory by merging: before
//! the canary is judged ([`Store::tick`]), before members are picked for
//! one, and before the fleet view and the upstream health are answered,
//! the rows written since the last merge are read (by transaction id: a
//! row is read again until every transaction older than it has ended, so
//! none committed late is missed) and kept. The judge and the views keep
//! reading memory, so they are the same code on every backend, and a
//! merge reads what changed, not the whole fleet. `Store::conflict` (each
//! audit batch asks it) reads the id's sightings alone.
//!
//! Nothing of this bumps the store's generation: reports never make other
//! agents load the store again. Bounds: the tables follow the memory's
//! ([`MAX_FLEET`] gateways, [`MAX_INSTANCES`] instances and
//! [`MAX_FETCHES`] fetches an id); a new id finds room by forgetting what
//! memory forgets (members and instances silent for ten stale periods,
//! fetches of ids that do not report).
//!
//! When the database cannot be reached, an agent keeps what it hears in
//! its own memory (and says so in its log): its view is its own until
//! the database is back, and the canary is not judged meanwhile (its
//! turn could not be taken anyway).
//!
//! Its parts: `memory` (what the shared rows make of this agent's memory),
//! `reports` (a gateway's report, kept by a conditional upsert),
//! `sightings` (instances heard and bundle fetches answered), `changes`
//! (the merge's read of what the others wrote); this module holds the
//! rows as the backend hands them out and the tables' connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::pg::Db;
use crate::rollout::{Labels, Stats};

use super::super::types::Report;
use super::super::MAX_FLEET;
use super::{Figures, Previous};

mod changes;
mod memory;
mod reports;
mod sightings;

/// What became of a report the shared backend was given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reported {
    /// Kept as the row's `version`, with these figures.
    Kept { version: u64, figures: Figures },
    /// A new gateway while the table is full (even once the forgotten
    /// members were removed).
    Full,
}

/// One instance heard under a gateway id, its times as ages.
#[derive(Debug, Clone, PartialEq)]
pub struct SightingRow {
    pub id: String,
    pub instance: String,
    pub first: Duration,
    pub last: Duration,
    /// Since it was last found interleaving with another instance.
    pub conflict: Option<Duration>,
}

/// A sighting kept in the shared backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighted {
    /// The id's instances now.
    pub rows: Vec<SightingRow>,
    /// This sighting interleaves with another instance's (a conflict).
    pub interleaved: bool,
    /// The id was in conflict before it.
    pub was: bool,
}

/// A gateway's last report as the shared backend holds it.
#[derive(Debug, Clone)]
pub struct MemberRow {
    pub report: Report,
    pub age: Duration,
    pub figures: Figures,
    pub version: u64,
}

/// A bundle fetch answered, as the shared backend holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchRow {
    pub id: String,
    pub revision: String,
    pub labels: Labels,
    pub instance: Option<String>,
    pub age: Duration,
}

/// What changed in the shared fleet since the last merge.
#[derive(Debug, Default)]
pub struct FleetChanges {
    pub members: Vec<MemberRow>,
    pub sightings: Vec<SightingRow>,
    pub fetches: Vec<FetchRow>,
}

/// Says (at most every ten seconds) that the shared fleet could not be
/// reached for `what`: this agent goes on with its own memory.
pub(super) fn unshared(what: &str, e: &dyn std::fmt::Display) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(error = %e, "the shared fleet is unreachable ({what}): this agent keeps and shows what it hears itself until it is back");
    }
}

/// The moment `age` before `now`. Before the machine's boot an `Instant`
/// cannot be: such a moment is the earliest one that can.
fn ago(now: Instant, age: Duration) -> Instant {
    if let Some(t) = now.checked_sub(age) {
        return t;
    }
    let mut d = age;
    while !d.is_zero() {
        d /= 2;
        if let Some(t) = now.checked_sub(d) {
            return t;
        }
    }
    now
}

/// What this agent last wrote or read of a gateway's row: what its next
/// report's figures are computed from while the row stays at `version`.
#[derive(Debug, Clone)]
struct Known {
    version: u64,
    instance: Option<String>,
    stats: Stats,
    seen: Instant,
    figures: Figures,
}

impl Known {
    fn previous(&self) -> Previous<'_> {
        Previous {
            instance: self.instance.as_deref(),
            stats: &self.stats,
            before: self.seen.elapsed(),
            figures: self.figures,
        }
    }
}

/// The first transaction id whose rows a merge of each table reads:
/// every transaction below it had ended when the last merge read.
#[derive(Debug, Default, Clone, Copy)]
struct Floors {
    members: u64,
    sightings: u64,
    fetches: u64,
}

/// The shared fleet's tables, on a connection of their own (reports never
/// wait for the store's turns, nor run inside one).
pub struct PgFleet {
    db: Db,
    known: Mutex<HashMap<String, Known>>,
    floors: Mutex<Floors>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// An age read from the database (seconds; a clock that went back: none).
fn age(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgFleet {
    /// Connects (the schema must be there: [`crate::pg::migrate`]).
    pub fn connect(url: &str) -> anyhow::Result<PgFleet> {
        Ok(PgFleet {
            db: Db::connect(url, "fleet")?,
            known: Mutex::default(),
            floors: Mutex::default(),
        })
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `k` as what this agent knows of `id`'s row, unless it knows
    /// a newer version already (`fresh`: `k` is what the row holds now,
    /// kept whatever this agent knew).
    fn learn(&self, id: &str, k: Known, fresh: bool) {
        let mut known = self.known();
        if !fresh && known.get(id).is_some_and(|o| o.version > k.version) {
            return;
        }
        if !known.contains_key(id) && known.len() >= 2 * MAX_FLEET {
            // Only what reports are computed from: read again when needed.
            known.clear();
        }
        known.insert(id.to_owned(), k);
    }

    /// The version of `id`'s row this agent knows.
    pub fn version(&self, id: &str) -> Option<u64> {
        self.known().get(id).map(|k| k.version)
    }
}
