//! A verification on PostgreSQL: the records read in chain order through
//! a portal in a read-only transaction, the links looked up on the same
//! transaction.

use std::time::{Duration, Instant};

use postgres::Client;

use super::super::search::{conditions_in, Dialect, Param};
use super::super::verify::{out_of_time, Lookup, Walk};
use super::super::{OutOfTime, Query, Verification, MAX_SIBLINGS};
use super::search::{canceled, refs, values};
use super::{prepared, unprepared, PgStore};

impl PgStore {
    /// [`crate::audit::AuditStore::verify_within`] on PostgreSQL: the records
    /// read in chain order through a portal, a few hundred at a time, the
    /// links looked up between; the statement timeout at the deadline.
    pub(in crate::audit) fn verify_within(
        &self,
        q: &Query,
        budget: Duration,
    ) -> anyhow::Result<Verification> {
        let (w, v) = conditions_in(q, false, Dialect::Postgres);
        let sql = format!(
            "SELECT r.gateway, r.seq, r.prev, r.hash, r.raw FROM warden_audit r \
             WHERE {w} ORDER BY r.gateway, r.seq, r.id LIMIT ${}",
            v.len() + 1
        );
        let q = q.clone();
        let reader = self.reader();
        reader.reader.db.run(move |c| {
            let mut walk = Walk::new(&q, budget);
            let res = verify_rows(c, &sql, &v, &mut walk);
            // A broken connection is the connection's to report (it is
            // made again); anything else ends the walk.
            let res = match res {
                Err(e) => match e.downcast::<postgres::Error>().map(unprepared) {
                    Ok(pe) if canceled(&pe) => Err(anyhow::Error::new(Canceled)),
                    Ok(pe) if pe.as_db_error().is_none() => return Err(pe),
                    Ok(pe) => Err(pe.into()),
                    Err(e) => Err(e),
                },
                Ok(()) => Ok(()),
            };
            Ok(walk.finish(res, |e| out_of_time(e) || e.is::<Canceled>()))
        })?
    }
}

/// A statement cut off at its timeout.
#[derive(Debug, thiserror::Error)]
#[error("canceled at the time budget")]
struct Canceled;

/// The verification's records, in chain order, a few hundred at a time
/// (a portal in a read-only transaction, whose statements stop at the
/// deadline); the links looked up on the same transaction between.
fn verify_rows(c: &mut Client, sql: &str, v: &[Param], walk: &mut Walk) -> anyhow::Result<()> {
    let left = walk
        .deadline()
        .saturating_duration_since(Instant::now())
        .as_millis()
        .clamp(1, i32::MAX as u128);
    let mut t = c.build_transaction().read_only(true).start()?;
    // The look-ups' plans are kept (prepared): one made while a table was
    // small must not scan it once it has grown.
    t.batch_execute(&format!(
        "SET LOCAL statement_timeout = {left}; SET LOCAL enable_seqscan = off"
    ))?;
    let mut pv = values(v);
    pv.push(Box::new(walk.read_at_most()));
    let portal = t.bind(sql, &refs(&pv))?;
    'read: loop {
        let rows = t.query_portal(&portal, 256)?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let gateway: &str = r.get(0);
            let seq = r.get::<_, i64>(1).max(0) as u64;
            let prev: &[u8] = r.get(2);
            let stored: &[u8] = r.get(3);
            let raw: &str = r.get(4);
            let mut look = PgLookup { t: &mut t };
            if !walk.row(gateway, seq, prev, stored, raw, &mut look)? {
                break 'read;
            }
        }
    }
    drop(portal);
    t.commit()?;
    Ok(())
}

/// PostgreSQL's lookups, on the verification's transaction.
struct PgLookup<'a, 'b> {
    t: &'a mut postgres::Transaction<'b>,
}

impl Lookup for PgLookup<'_, '_> {
    fn lines_of(
        &mut self,
        gateway: &str,
        seq: u64,
        deadline: Instant,
    ) -> anyhow::Result<(Vec<[u8; 32]>, bool)> {
        let sql = prepared(
            self.t,
            "SELECT raw FROM warden_audit WHERE gateway = $1 AND seq = $2 LIMIT $3",
        )?;
        let rows = self
            .t
            .query(&sql, &[&gateway, &(seq as i64), &(MAX_SIBLINGS as i64 + 1)])?;
        let mut found = Vec::new();
        for r in &rows {
            if found.len() == MAX_SIBLINGS {
                return Ok((found, true));
            }
            if Instant::now() >= deadline {
                return Err(OutOfTime.into());
            }
            found.push(super::super::lines::line_hash(r.get(0)));
        }
        Ok((found, false))
    }

    fn max_below(&mut self, gateway: &str, seq: u64) -> anyhow::Result<Option<u64>> {
        let sql = prepared(
            self.t,
            "SELECT max(seq) FROM warden_audit WHERE gateway = $1 AND seq < $2",
        )?;
        let below: Option<i64> = self.t.query_one(&sql, &[&gateway, &(seq as i64)])?.get(0);
        Ok(below.map(|b| b.max(0) as u64))
    }
}
