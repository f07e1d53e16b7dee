//! Instances heard under a gateway id and bundle fetches answered, in the
//! shared fleet: each one statement that keeps the row within the tables'
//! bounds and answers what the store decides on (the interleaving rule on
//! every agent's sightings; whether a fetch was kept).

use std::time::Duration;

use crate::pg::io_error;
use crate::rollout::Labels;

use super::super::super::MAX_FLEET;
use super::super::{MAX_FETCHES, MAX_INSTANCES};
use super::{age, count, secs, PgFleet, Sighted, SightingRow};

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

impl PgFleet {
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
}
