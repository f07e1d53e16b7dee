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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::pg::{io_error, Db};
use crate::rollout::{Labels, Stats};

use super::super::types::Report;
use super::super::{Inner, Member, Store, MAX_FLEET};
use super::{figures, Fetch, Figures, Previous, MAX_FETCHES, MAX_INSTANCES};

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
        if !inner.sightings.contains_key(id) && inner.sightings.len() >= MAX_FLEET {
            let forget = self.stale_after * 10;
            inner
                .sightings
                .retain(|_, s| s.seen.iter().any(|x| x.2.elapsed() <= forget));
            if inner.sightings.len() >= MAX_FLEET {
                return;
            }
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

/// Times a report is tried again when other agents keep changing the
/// gateway's row in between.
const TRIES: usize = 8;

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

/// The statement of a sighting: the interleaving rule of
/// `Store::sighted` on every agent's rows (`$1` id, `$2` instance, `$3`
/// the stale period in seconds, `$4` the rows a new id may find, `$5` the
/// other instances an id keeps), the row kept, the id's rows returned.
const SIGHTING: &str = "
WITH t AS (SELECT clock_timestamp() AS now),
old AS (SELECT first_seen FROM warden_fleet_sightings WHERE id = $1 AND instance = $2),
hit AS (
    SELECT
        EXISTS (SELECT 1 FROM warden_fleet_sightings o, old, t
                WHERE o.id = $1 AND o.instance <> $2
                  AND o.last_seen >= old.first_seen
                  AND o.last_seen >= t.now - make_interval(secs => $3)) AS interleaved,
        EXISTS (SELECT 1 FROM warden_fleet_sightings o, t
                WHERE o.id = $1 AND o.conflict_at >= t.now - make_interval(secs => $3)) AS was,
        CASE WHEN EXISTS (SELECT 1 FROM warden_fleet_sightings WHERE id = $1) THEN true
             ELSE (SELECT count(*) FROM warden_fleet_sightings) < $4 END AS room
),
up AS (
    INSERT INTO warden_fleet_sightings AS s (id, instance, first_seen, last_seen, conflict_at, xid)
    SELECT $1, $2, t.now, t.now, CASE WHEN hit.interleaved THEN t.now END, pg_current_xact_id()
    FROM t, hit WHERE hit.room
    ON CONFLICT (id, instance) DO UPDATE
        SET last_seen = excluded.last_seen,
            conflict_at = coalesce(excluded.conflict_at, s.conflict_at),
            xid = excluded.xid
    RETURNING s.instance, s.first_seen, s.last_seen, s.conflict_at
),
gone AS (
    DELETE FROM warden_fleet_sightings d
    WHERE d.id = $1 AND (SELECT room FROM hit) AND NOT EXISTS (SELECT 1 FROM old)
      AND d.instance IN (SELECT instance FROM warden_fleet_sightings
                         WHERE id = $1 AND instance <> $2
                         ORDER BY last_seen DESC OFFSET $5)
    RETURNING d.instance
),
kept AS (
    SELECT instance, first_seen, last_seen, conflict_at FROM up
    UNION ALL
    SELECT instance, first_seen, last_seen, conflict_at FROM warden_fleet_sightings
    WHERE id = $1 AND instance <> $2 AND instance NOT IN (SELECT instance FROM gone)
)
SELECT hit.interleaved, hit.was, EXISTS (SELECT 1 FROM up), k.instance,
       extract(epoch FROM t.now - k.first_seen)::float8,
       extract(epoch FROM t.now - k.last_seen)::float8,
       extract(epoch FROM t.now - k.conflict_at)::float8
FROM hit CROSS JOIN t LEFT JOIN kept k ON true";

/// The statement of a fetch answered (`$1` id, `$2` revision, `$3`
/// labels, `$4` instance or '', `$5` the rows a new id may find, `$6` the
/// other fetches an id keeps): whether it was kept.
const FETCH: &str = "
WITH t AS (SELECT clock_timestamp() AS now),
room AS (
    SELECT CASE WHEN EXISTS (SELECT 1 FROM warden_fleet_fetches WHERE id = $1) THEN true
                ELSE (SELECT count(*) FROM warden_fleet_fetches) < $5 END AS yes
),
up AS (
    INSERT INTO warden_fleet_fetches AS f (id, revision, labels, instance, at, xid)
    SELECT $1, $2, $3, $4, t.now, pg_current_xact_id() FROM t, room WHERE room.yes
    ON CONFLICT (id, revision, labels, instance) DO UPDATE
        SET at = excluded.at, xid = excluded.xid
    RETURNING 1
),
gone AS (
    DELETE FROM warden_fleet_fetches d
    WHERE d.id = $1 AND (SELECT yes FROM room)
      AND NOT (d.revision = $2 AND d.labels = $3 AND d.instance = $4)
      AND (d.revision, d.labels, d.instance) NOT IN (
          SELECT revision, labels, instance FROM warden_fleet_fetches
          WHERE id = $1 AND NOT (revision = $2 AND labels = $3 AND instance = $4)
          ORDER BY at DESC LIMIT $6)
)
SELECT EXISTS (SELECT 1 FROM up)";

/// The first column of a merge: the transaction id below which every
/// transaction had ended when it read (the next merge's floor).
const SNAPSHOT: &str = "(SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin) s";

fn floor_of(xmin: &str) -> u64 {
    xmin.parse().unwrap_or(0)
}

type Raw<T> = (String, Vec<T>);

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

    /// Keeps report `r`, its figures computed from the gateway's previous
    /// report (whichever agent took it); members silent for `forget` make
    /// room for a new gateway when the table is full.
    pub fn report(&self, r: &Report, forget: Duration) -> std::io::Result<Reported> {
        let body = serde_json::to_string(r).map_err(io_error)?;
        let mut forgot = false;
        for _ in 0..TRIES {
            let basis = self.known().get(&r.id).cloned();
            let f = figures(basis.as_ref().map(Known::previous), r);
            let (id, body) = (r.id.clone(), body.clone());
            let (rate, restarts, jumps) = (f.rate, signed(f.restarts), signed(f.jumps));
            let written: Option<i64> = match basis.as_ref().map(|k| signed(k.version)) {
                Some(v) => self.db.write(move |c| {
                    Ok(c.query_opt(
                        "UPDATE warden_fleet SET report = $2, seen = clock_timestamp(),
                             rate = $3, restarts = $4, jumps = $5,
                             version = nextval('warden_fleet_version'),
                             xid = pg_current_xact_id()
                         WHERE id = $1 AND version = $6 RETURNING version",
                        &[&id, &body, &rate, &restarts, &jumps, &v],
                    )?
                    .map(|row| row.get(0)))
                })?,
                None => self.db.write(move |c| {
                    Ok(c.query_opt(
                        "INSERT INTO warden_fleet (id, report, seen, rate, restarts, jumps, version, xid)
                         SELECT $1, $2, clock_timestamp(), $3, $4, $5,
                                nextval('warden_fleet_version'), pg_current_xact_id()
                         WHERE (SELECT count(*) FROM warden_fleet) < $6
                         ON CONFLICT (id) DO NOTHING RETURNING version",
                        &[&id, &body, &rate, &restarts, &jumps, &count(MAX_FLEET)],
                    )?
                    .map(|row| row.get(0)))
                })?,
            };
            if let Some(v) = written {
                let version = unsigned(v);
                self.learn(
                    &r.id,
                    Known {
                        version,
                        instance: r.instance.clone(),
                        stats: r.stats.clone(),
                        seen: Instant::now(),
                        figures: f,
                    },
                    false,
                );
                return Ok(Reported::Kept {
                    version,
                    figures: f,
                });
            }
            // Another agent wrote the row since (or forgot it), or the
            // table is full: what is there now.
            match self.row(&r.id)? {
                Some(k) => self.learn(&r.id, k, true),
                None if basis.is_some() => {
                    self.known().remove(&r.id);
                }
                None if !forgot => {
                    forgot = true;
                    let forget = secs(forget);
                    self.db.write(move |c| {
                        c.execute(
                            "DELETE FROM warden_fleet
                             WHERE seen < clock_timestamp() - make_interval(secs => $1)",
                            &[&forget],
                        )
                        .map(drop)
                    })?;
                }
                None => return Ok(Reported::Full),
            }
        }
        Err(io_error(format!(
            "gateway `{}`'s row changed under {TRIES} tries in a row",
            r.id
        )))
    }

    /// `id`'s row as a report is computed from.
    fn row(&self, id: &str) -> std::io::Result<Option<Known>> {
        let id = id.to_owned();
        type Row = (String, f64, f64, i64, i64, i64);
        let row: Option<Row> = self.db.run(move |c| {
            Ok(c.query_opt(
                "SELECT report, extract(epoch FROM clock_timestamp() - seen)::float8,
                        rate, restarts, jumps, version
                 FROM warden_fleet WHERE id = $1",
                &[&id],
            )?
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))))
        })?;
        Ok(row.map(|(report, a, rate, restarts, jumps, version)| {
            // One that cannot be read is no previous report.
            let (instance, stats) = serde_json::from_str::<Report>(&report)
                .map_or((None, Stats::default()), |p| (p.instance, p.stats));
            Known {
                version: unsigned(version),
                instance,
                stats,
                seen: ago(Instant::now(), age(a)),
                figures: Figures {
                    rate,
                    restarts: unsigned(restarts),
                    jumps: unsigned(jumps),
                },
            }
        }))
    }

    /// Notes that `instance` spoke for `id`: whether it interleaves with
    /// another instance heard within `live` (by any agent), and the id's
    /// instances. When the table is full, instances silent for `forget`
    /// make room for a new id; with none, nothing is noted.
    pub fn sighting(
        &self,
        id: &str,
        instance: &str,
        live: Duration,
        forget: Duration,
    ) -> std::io::Result<Sighted> {
        let mut forgot = false;
        loop {
            let (i, n, l) = (id.to_owned(), instance.to_owned(), secs(live));
            type Row = (
                bool,
                bool,
                bool,
                Option<String>,
                Option<f64>,
                Option<f64>,
                Option<f64>,
            );
            let rows: Vec<Row> = self.db.write(move |c| {
                Ok(c.query(
                    SIGHTING,
                    &[
                        &i,
                        &n,
                        &l,
                        &count(MAX_FLEET),
                        &count(MAX_INSTANCES.saturating_sub(1)),
                    ],
                )?
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        r.get(4),
                        r.get(5),
                        r.get(6),
                    )
                })
                .collect())
            })?;
            let kept = rows.first().is_some_and(|r| r.2);
            if !kept && !forgot {
                forgot = true;
                let forget = secs(forget);
                self.db.write(move |c| {
                    c.execute(
                        "DELETE FROM warden_fleet_sightings
                         WHERE last_seen < clock_timestamp() - make_interval(secs => $1)",
                        &[&forget],
                    )
                    .map(drop)
                })?;
                continue;
            }
            let (interleaved, was) = rows.first().map_or((false, false), |r| (r.0, r.1));
            let rows = rows
                .into_iter()
                .filter_map(|(_, _, _, instance, first, last, conflict)| {
                    Some(SightingRow {
                        id: id.to_owned(),
                        instance: instance?,
                        first: age(first?),
                        last: age(last?),
                        conflict: conflict.map(age),
                    })
                })
                .collect();
            return Ok(Sighted {
                rows,
                interleaved,
                was,
            });
        }
    }

    /// The instances heard under `id`.
    pub fn sightings_of(&self, id: &str) -> std::io::Result<Vec<SightingRow>> {
        let i = id.to_owned();
        type Row = (String, f64, f64, Option<f64>);
        let rows: Vec<Row> = self.db.run(move |c| {
            Ok(c.query(
                "SELECT instance,
                        extract(epoch FROM clock_timestamp() - first_seen)::float8,
                        extract(epoch FROM clock_timestamp() - last_seen)::float8,
                        extract(epoch FROM clock_timestamp() - conflict_at)::float8
                 FROM warden_fleet_sightings WHERE id = $1",
                &[&i],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
        })?;
        Ok(rows
            .into_iter()
            .map(|(instance, first, last, conflict)| SightingRow {
                id: id.to_owned(),
                instance,
                first: age(first),
                last: age(last),
                conflict: conflict.map(age),
            })
            .collect())
    }

    /// Notes that `id`'s fetch (`labels`, `instance`) was answered with
    /// `revision`: whether it was kept. When the table is full, the fetches
    /// of ids that do not report make room for a new id; with none,
    /// nothing is noted.
    pub fn fetch(
        &self,
        id: &str,
        revision: &str,
        labels: &Labels,
        instance: Option<&str>,
    ) -> std::io::Result<bool> {
        let labels = serde_json::to_string(labels).map_err(io_error)?;
        let mut forgot = false;
        loop {
            let (i, r, l, n) = (
                id.to_owned(),
                revision.to_owned(),
                labels.clone(),
                instance.unwrap_or("").to_owned(),
            );
            let kept: bool = self.db.write(move |c| {
                Ok(c.query_one(
                    FETCH,
                    &[
                        &i,
                        &r,
                        &l,
                        &n,
                        &count(MAX_FLEET),
                        &count(MAX_FETCHES.saturating_sub(1)),
                    ],
                )?
                .get(0))
            })?;
            if kept || forgot {
                return Ok(kept);
            }
            forgot = true;
            self.db.write(|c| {
                c.execute(
                    "DELETE FROM warden_fleet_fetches f
                     WHERE NOT EXISTS (SELECT 1 FROM warden_fleet m WHERE m.id = f.id)",
                    &[],
                )
                .map(drop)
            })?;
        }
    }

    /// What was written since the last merge (everything, the first
    /// time). A row is read again until every transaction older than the
    /// one that wrote it has ended: one that committed late is not missed.
    pub fn changes(&self) -> std::io::Result<FleetChanges> {
        let floors = *self.floors.lock().unwrap_or_else(|p| p.into_inner());
        type MemberRaw = (
            Option<String>,
            Option<String>,
            Option<f64>,
            Option<f64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        type SightingRaw = (
            Option<String>,
            Option<String>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
        );
        type FetchRaw = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<f64>,
        );
        type All = (Raw<MemberRaw>, Raw<SightingRaw>, Raw<FetchRaw>);
        let (members, sightings, fetches): All = self.db.run(move |c| {
            let m = c.query(
                &format!(
                    "SELECT s.xmin, f.id, f.report,
                            extract(epoch FROM clock_timestamp() - f.seen)::float8,
                            f.rate, f.restarts, f.jumps, f.version
                     FROM {SNAPSHOT} LEFT JOIN warden_fleet f ON f.xid >= $1::text::xid8"
                ),
                &[&floors.members.to_string()],
            )?;
            let s = c.query(
                &format!(
                    "SELECT s.xmin, g.id, g.instance,
                            extract(epoch FROM clock_timestamp() - g.first_seen)::float8,
                            extract(epoch FROM clock_timestamp() - g.last_seen)::float8,
                            extract(epoch FROM clock_timestamp() - g.conflict_at)::float8
                     FROM {SNAPSHOT} LEFT JOIN warden_fleet_sightings g ON g.xid >= $1::text::xid8"
                ),
                &[&floors.sightings.to_string()],
            )?;
            let f = c.query(
                &format!(
                    "SELECT s.xmin, f.id, f.revision, f.labels, f.instance,
                            extract(epoch FROM clock_timestamp() - f.at)::float8
                     FROM {SNAPSHOT} LEFT JOIN warden_fleet_fetches f ON f.xid >= $1::text::xid8"
                ),
                &[&floors.fetches.to_string()],
            )?;
            let xmin = |rows: &[postgres::Row]| -> String {
                rows.first().map(|r| r.get(0)).unwrap_or_default()
            };
            Ok((
                (
                    xmin(&m),
                    m.iter()
                        .map(|r| {
                            (
                                r.get(1),
                                r.get(2),
                                r.get(3),
                                r.get(4),
                                r.get(5),
                                r.get(6),
                                r.get(7),
                            )
                        })
                        .collect(),
                ),
                (
                    xmin(&s),
                    s.iter()
                        .map(|r| (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
                        .collect(),
                ),
                (
                    xmin(&f),
                    f.iter()
                        .map(|r| (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
                        .collect(),
                ),
            ))
        })?;
        let mut out = FleetChanges::default();
        let now = Instant::now();
        for (id, report, a, rate, restarts, jumps, version) in members.1 {
            let (Some(id), Some(report), Some(a), Some(rate), Some(restarts), Some(jumps), Some(v)) =
                (id, report, a, rate, restarts, jumps, version)
            else {
                continue; // the snapshot's row alone: nothing changed
            };
            let report: Report = match serde_json::from_str(&report) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(gateway = %id, error = %e, "a report in the shared fleet cannot be read; skipped");
                    continue;
                }
            };
            let figures = Figures {
                rate,
                restarts: unsigned(restarts),
                jumps: unsigned(jumps),
            };
            let (version, a) = (unsigned(v), age(a));
            self.learn(
                &id,
                Known {
                    version,
                    instance: report.instance.clone(),
                    stats: report.stats.clone(),
                    seen: ago(now, a),
                    figures,
                },
                false,
            );
            out.members.push(MemberRow {
                report,
                age: a,
                figures,
                version,
            });
        }
        for (id, instance, first, last, conflict) in sightings.1 {
            let (Some(id), Some(instance), Some(first), Some(last)) = (id, instance, first, last)
            else {
                continue;
            };
            out.sightings.push(SightingRow {
                id,
                instance,
                first: age(first),
                last: age(last),
                conflict: conflict.map(age),
            });
        }
        for (id, revision, labels, instance, a) in fetches.1 {
            let (Some(id), Some(revision), Some(labels), Some(instance), Some(a)) =
                (id, revision, labels, instance, a)
            else {
                continue;
            };
            let Ok(labels) = serde_json::from_str(&labels) else {
                continue;
            };
            out.fetches.push(FetchRow {
                id,
                revision,
                labels,
                instance: (!instance.is_empty()).then_some(instance),
                age: age(a),
            });
        }
        let mut f = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        f.members = f.members.max(floor_of(&members.0));
        f.sightings = f.sightings.max(floor_of(&sightings.0));
        f.fetches = f.fetches.max(floor_of(&fetches.0));
        Ok(out)
    }
}
