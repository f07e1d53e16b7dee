//! A gateway's report in the shared fleet: one conditional upsert whose
//! figures are computed from the row as this agent last wrote or read it,
//! tried again from the row when another agent wrote it in between.

use std::time::{Duration, Instant};

use crate::pg::io_error;
use crate::rollout::Stats;

use super::super::super::types::Report;
use super::super::super::MAX_FLEET;
use super::super::{figures, Figures};
use super::{age, ago, count, secs, signed, unsigned, Known, PgFleet, Reported};

/// Times a report is tried again when other agents keep changing the
/// gateway's row in between.
const TRIES: usize = 8;

impl PgFleet {
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
}
