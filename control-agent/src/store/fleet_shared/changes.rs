//! The merge's read of the shared fleet: the rows of the three tables
//! written since the last merge (by transaction id, each table from its
//! floor), as [`FleetChanges`]; each member's row learnt as what this agent
//! knows of it.

use std::time::Instant;

use super::super::super::types::Report;
use super::super::Figures;
use super::{
    age, ago, unsigned, FetchRow, FleetChanges, Floors, Known, MemberRow, PgFleet, SightingRow,
};

/// The first column of a merge: the transaction id below which every
/// transaction had ended when it read (the next merge's floor).
const SNAPSHOT: &str = "(SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin) s";

fn floor_of(xmin: &str) -> u64 {
    xmin.parse().unwrap_or(0)
}

/// A table's rows read by a merge, after the snapshot's `xmin`.
type Raw<T> = (String, Vec<T>);

/// A row of `warden_fleet` as a merge reads it (all `None`: the
/// snapshot's row alone).
type MemberRaw = (
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<f64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// A row of `warden_fleet_sightings` as a merge reads it.
type SightingRaw = (
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

/// A row of `warden_fleet_fetches` as a merge reads it.
type FetchRaw = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<f64>,
);

/// The three tables' rows read by one merge.
type All = (Raw<MemberRaw>, Raw<SightingRaw>, Raw<FetchRaw>);

impl PgFleet {
    /// What was written since the last merge (everything, the first
    /// time). A row is read again until every transaction older than the
    /// one that wrote it has ended: one that committed late is not missed.
    pub fn changes(&self) -> std::io::Result<FleetChanges> {
        let floors = *self.floors.lock().unwrap_or_else(|p| p.into_inner());
        let (members, sightings, fetches) = self.rows_since(floors)?;
        let out = FleetChanges {
            members: self.members_of(members.1),
            sightings: sighting_rows(sightings.1),
            fetches: fetch_rows(fetches.1),
        };
        let mut f = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        f.members = f.members.max(floor_of(&members.0));
        f.sightings = f.sightings.max(floor_of(&sightings.0));
        f.fetches = f.fetches.max(floor_of(&fetches.0));
        Ok(out)
    }

    /// The rows of each table at or above its floor, each table's with the
    /// `xmin` of the snapshot it was read in.
    fn rows_since(&self, floors: Floors) -> std::io::Result<All> {
        self.db.run(move |c| {
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
        })
    }

    /// The members' rows a merge read, each learnt as what this agent
    /// knows of the gateway's row (a report that cannot be read: skipped).
    fn members_of(&self, rows: Vec<MemberRaw>) -> Vec<MemberRow> {
        let mut out = Vec::new();
        let now = Instant::now();
        for (id, report, a, rate, restarts, jumps, version) in rows {
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
            out.push(MemberRow {
                report,
                age: a,
                figures,
                version,
            });
        }
        out
    }
}

/// The sightings' rows a merge read.
fn sighting_rows(rows: Vec<SightingRaw>) -> Vec<SightingRow> {
    let mut out = Vec::new();
    for (id, instance, first, last, conflict) in rows {
        let (Some(id), Some(instance), Some(first), Some(last)) = (id, instance, first, last)
        else {
            continue;
        };
        out.push(SightingRow {
            id,
            instance,
            first: age(first),
            last: age(last),
            conflict: conflict.map(age),
        });
    }
    out
}

/// The fetches' rows a merge read (labels that cannot be read: skipped).
fn fetch_rows(rows: Vec<FetchRaw>) -> Vec<FetchRow> {
    let mut out = Vec::new();
    for (id, revision, labels, instance, a) in rows {
        let (Some(id), Some(revision), Some(labels), Some(instance), Some(a)) =
            (id, revision, labels, instance, a)
        else {
            continue;
        };
        let Ok(labels) = serde_json::from_str(&labels) else {
            continue;
        };
        out.push(FetchRow {
            id,
            revision,
            labels,
            instance: (!instance.is_empty()).then_some(instance),
            age: age(a),
        });
    }
    out
}
