//! The fleet's audit store on PostgreSQL (`serve --database URL`): the
//! table of `migrations/0003_audit.sql`, partitioned by time, shared by
//! every agent on the database (docs/audit-store.md). The same contract as
//! the SQLite store:
//!
//! - **Exactly once kept, across agents.** A line is held once per gateway
//!   (by its SHA-256). A batch re-sent to another agent after a failover,
//!   or sent to two agents at once, is counted duplicates there: one
//!   gateway's batches are stored one at a time across the fleet (a
//!   transaction holding an advisory lock named after the gateway), each
//!   looking for its lines where they are kept before storing the rest.
//!   So two agents never fork or double a chain.
//! - **Batched.** A batch is one transaction: the lock, the look-up of its
//!   lines (an index probe each, in the partition of the line's time: one
//!   statement per partition, usually one), one `INSERT … SELECT FROM
//!   unnest(…)` of the new ones, their partitions' counts.
//! - **Partitioned by time** on the time a record is kept by (its `ts`, or
//!   its arrival when that is earlier, as on SQLite), each partition whole
//!   UTC days ([`parts::span_days`]: one up to 32 days of retention, about
//!   32 partitions whatever the retention). Partitions are made ahead (for
//!   today and the next [`parts::AHEAD_DAYS`] days, by the retention and at
//!   start) and for an older day when a record of it arrives (at most
//!   [`parts::MAX_NEW_PER_BATCH`] per batch); a record older than the
//!   retention is acknowledged and not kept.
//! - **Retention** ([`PgStore::trim`], the retention job on one agent at a
//!   time): a partition past the retention is dropped whole; past the
//!   rows or bytes bound, whole oldest partitions while all of their
//!   records are over it, then the oldest records of the oldest one.
//! - **The same searches, results and verification**: the conditions are
//!   SQLite's ([`super::search::conditions_in`]), the chain walk and the
//!   live figures are the same code ([`super::verify::Walk`],
//!   [`super::search::LiveWindow`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::Client;

use crate::pg::Db;

use super::lines::Parsed;
use super::search::{conditions_in, Dialect, LiveRow, LiveWindow, Param};
use super::verify::{out_of_time, Lookup, Walk};
use super::{
    lock, now_us, parse_batch, IngestError, Ingested, Limits, Live, OutOfTime, Page, Query, Row,
    Verification, MAX_COUNTED, MAX_SIBLINGS, SEARCH_TOO_BROAD,
};

pub(super) mod parts;
#[cfg(test)]
mod tests;

use parts::DAY_US;

/// The advisory-lock class of the audit store's locks ("WAUD"), apart
/// from the agents' own ("WARD").
const LOCK_CLASS: i32 = 0x5741_5544;

/// How often every agent reads the store's rows and bytes (for its
/// metrics), whether or not it runs the retention.
const STATS_EVERY: Duration = Duration::from_secs(2);

/// The columns a [`Row`] is read from, in its order.
const COLUMNS: &str = "r.id, r.gateway, r.seq, r.ts, r.ts_us, r.principal, r.tenant, r.server, \
     r.tool, r.method, r.direction, r.outcome, r.decided_by, r.reason, r.risk, r.trace_id, \
     r.approval_id, r.latency_us, r.dlp, r.notice";

/// A text as PostgreSQL can hold it: its `text` holds no NUL, which a
/// JSON string may (`\u0000`). Each NUL is kept as U+FFFD, in the columns
/// a record is searched by (its line keeps the escape as written), and in
/// the values a search compares with them.
pub(crate) fn no_nul(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s.to_owned()
    }
}

fn opt_no_nul(s: &Option<String>) -> Option<String> {
    s.as_deref().map(no_nul)
}

/// The `notice` a record carries as text (a deprecated server's), read as
/// SQLite's store reads it from the line.
fn notice_of(raw: &str) -> Option<String> {
    // Most lines hold no notice; a member name may be escaped.
    if !raw.contains("notice") && !raw.contains("\\u") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Notice {
        #[serde(default)]
        notice: Option<serde_json::Value>,
    }
    match serde_json::from_str::<Notice>(raw) {
        Ok(Notice {
            notice: Some(serde_json::Value::String(s)),
        }) => Some(no_nul(&s)),
        _ => None,
    }
}

/// One reader connection; `busy` while a read runs on it.
struct Reader {
    db: Db,
    busy: AtomicBool,
}

/// What the store's handles and its statistics thread share.
struct Shared {
    /// Ingest (and the partitions a batch needs).
    writer: Db,
    /// Searches, records, live figures, verifications.
    readers: Vec<Reader>,
    next_reader: AtomicUsize,
    /// The retention, and the statistics.
    trimmer: Db,
    limits: Limits,
    rows: AtomicU64,
    bytes: AtomicU64,
    /// The partitions known to exist, `lo` → `hi`.
    known: Mutex<BTreeMap<i64, i64>>,
    /// The partitions whose span is over that this agent's retention has
    /// vacuumed.
    sealed: Mutex<BTreeSet<i64>>,
}

/// The store on one database.
pub struct PgStore {
    shared: Arc<Shared>,
}

/// A reader taken for one read.
struct Taken<'a> {
    reader: &'a Reader,
    mine: bool,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.mine {
            self.reader.busy.store(false, Ordering::Relaxed);
        }
    }
}

/// Why a batch's transaction did not store it.
enum Unstored {
    /// A partition it needed is gone (another agent's retention dropped
    /// it): made again, and the batch tried once more.
    NoPartition,
}

/// The new lines of a batch, column by column (one array per column of
/// the `INSERT … SELECT FROM unnest`).
#[derive(Default, Clone)]
struct Columns {
    /// The time each line bears (where an earlier copy of it is kept).
    line_us: Vec<i64>,
    /// Kept at its arrival, its own time being later.
    moved: Vec<bool>,
    seq: Vec<i64>,
    ts: Vec<String>,
    ts_us: Vec<i64>,
    principal: Vec<String>,
    tenant: Vec<String>,
    tenant_key: Vec<String>,
    server: Vec<String>,
    tool: Vec<Option<String>>,
    method: Vec<Option<String>>,
    direction: Vec<String>,
    outcome: Vec<String>,
    decided_by: Vec<Option<String>>,
    reason: Vec<Option<String>>,
    risk: Vec<Option<String>>,
    trace_id: Vec<String>,
    approval_id: Vec<Option<String>>,
    latency_us: Vec<Option<i64>>,
    dlp: Vec<Option<String>>,
    notice: Vec<Option<String>>,
    prev: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
    raw: Vec<String>,
}

impl Columns {
    fn push(&mut self, p: &Parsed<'_>, kept_us: i64) {
        let f = &p.f;
        let s = |o: &Option<String>| o.as_deref().map(no_nul).unwrap_or_default();
        self.line_us.push(p.ts_us);
        self.moved.push(kept_us != p.ts_us);
        self.seq.push(f.seq as i64);
        self.ts.push(no_nul(&f.ts));
        self.ts_us.push(kept_us);
        self.principal.push(s(&f.principal));
        self.tenant.push(s(&f.tenant));
        self.tenant_key.push(no_nul(&super::schema::tenant_key(
            f.tenant.as_deref().unwrap_or(""),
        )));
        self.server.push(s(&f.server));
        self.tool.push(opt_no_nul(&f.tool));
        self.method.push(opt_no_nul(&f.method));
        self.direction.push(s(&f.direction));
        self.outcome.push(s(&f.outcome));
        self.decided_by.push(opt_no_nul(&f.decided_by));
        self.reason.push(opt_no_nul(&f.reason));
        self.risk.push(opt_no_nul(&f.risk));
        self.trace_id.push(s(&f.trace_id));
        self.approval_id.push(opt_no_nul(&p.approval_id));
        self.latency_us
            .push(f.latency_us.map(|n| n.min(i64::MAX as u64) as i64));
        self.dlp.push(opt_no_nul(&p.dlp));
        self.notice.push(notice_of(p.raw));
        self.prev.push(p.prev.to_vec());
        self.hash.push(p.hash.to_vec());
        self.raw.push(p.raw.to_owned());
    }

    fn len(&self) -> usize {
        self.seq.len()
    }

    /// Only the lines at `keep` (ascending indexes).
    fn only(self, keep: &[usize]) -> Columns {
        fn pick<T: Clone>(v: Vec<T>, keep: &[usize]) -> Vec<T> {
            keep.iter().map(|i| v[*i].clone()).collect()
        }
        Columns {
            line_us: pick(self.line_us, keep),
            moved: pick(self.moved, keep),
            seq: pick(self.seq, keep),
            ts: pick(self.ts, keep),
            ts_us: pick(self.ts_us, keep),
            principal: pick(self.principal, keep),
            tenant: pick(self.tenant, keep),
            tenant_key: pick(self.tenant_key, keep),
            server: pick(self.server, keep),
            tool: pick(self.tool, keep),
            method: pick(self.method, keep),
            direction: pick(self.direction, keep),
            outcome: pick(self.outcome, keep),
            decided_by: pick(self.decided_by, keep),
            reason: pick(self.reason, keep),
            risk: pick(self.risk, keep),
            trace_id: pick(self.trace_id, keep),
            approval_id: pick(self.approval_id, keep),
            latency_us: pick(self.latency_us, keep),
            dlp: pick(self.dlp, keep),
            notice: pick(self.notice, keep),
            prev: pick(self.prev, keep),
            hash: pick(self.hash, keep),
            raw: pick(self.raw, keep),
        }
    }
}

/// Where a batch's lines may already be kept at their own time: one
/// index probe per line in the partition of that time, queried by its name
/// (planned for one table, with the three equalities the unique index
/// answers: through the partitioned table, a partition that has no
/// statistics yet was probed by its time index, a scan of every record of
/// that time for each line). `{}`: the partition. The numbers (from 1) of
/// the lines found.
const HELD_IN: &str = "SELECT i.n FROM unnest($2::bytea[], $3::int8[], $4::int8[]) AS i(h, t, n) \
     CROSS JOIN LATERAL (SELECT 1 FROM {} a \
       WHERE a.gateway = $1 AND a.hash = i.h AND a.ts_us = i.t LIMIT 1) AS kept";

/// The lines kept at their arrival (stamped ahead when they arrived).
const HELD_MOVED: &str = "SELECT i.n FROM unnest($2::bytea[]) WITH ORDINALITY AS i(h, n) \
     JOIN warden_audit_moved m ON m.gateway = $1 AND m.hash = i.h";

/// The new lines, in one statement.
const INSERT: &str = "INSERT INTO warden_audit (id, gateway, seq, ts, ts_us, principal, tenant, \
     tenant_key, server, tool, method, direction, outcome, decided_by, reason, risk, trace_id, \
     approval_id, latency_us, dlp, notice, prev, hash, raw) \
     SELECT u.id, $1, u.seq, u.ts, u.ts_us, u.principal, u.tenant, u.tenant_key, u.server, u.tool, \
     u.method, u.direction, u.outcome, u.decided_by, u.reason, u.risk, u.trace_id, u.approval_id, \
     u.latency_us, u.dlp, u.notice, u.prev, u.hash, u.raw \
     FROM unnest($2::int8[], $3::int8[], $4::text[], $5::int8[], $6::text[], $7::text[], \
     $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], \
     $15::text[], $16::text[], $17::text[], $18::text[], $19::int8[], $20::text[], $21::text[], \
     $22::bytea[], $23::bytea[], $24::text[]) \
     AS u(id, seq, ts, ts_us, principal, tenant, tenant_key, server, tool, method, direction, \
     outcome, decided_by, reason, risk, trace_id, approval_id, latency_us, dlp, notice, prev, \
     hash, raw) \
     ON CONFLICT DO NOTHING RETURNING ts_us";

impl PgStore {
    /// The store on the database at `url`: its schema brought up to date
    /// (once across agents), today's and the next days' partitions made.
    pub fn connect(url: &str, limits: Limits) -> anyhow::Result<PgStore> {
        crate::pg::migrate(url)?;
        let shared = Arc::new(Shared {
            writer: Db::connect(url, "audit-ingest")?,
            readers: vec![
                Reader {
                    db: Db::connect(url, "audit-read")?,
                    busy: AtomicBool::new(false),
                },
                Reader {
                    db: Db::connect(url, "audit-read")?,
                    busy: AtomicBool::new(false),
                },
            ],
            next_reader: AtomicUsize::new(0),
            trimmer: Db::connect(url, "audit-retention")?,
            limits,
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            known: Mutex::new(BTreeMap::new()),
            sealed: Mutex::new(BTreeSet::new()),
        });
        let store = PgStore { shared };
        let today = parts::day(now_us());
        let ahead: BTreeSet<i64> = (0..=parts::AHEAD_DAYS)
            .map(|d| today + d * DAY_US)
            .collect();
        store.ensure(&ahead, usize::MAX)?;
        store.shared.refresh_stats()?;
        let weak = Arc::downgrade(&store.shared);
        std::thread::Builder::new()
            .name("audit-pg-stats".into())
            .spawn(move || stats(weak))?;
        Ok(store)
    }

    /// Records kept, every agent's counted.
    pub(super) fn rows(&self) -> u64 {
        self.shared.rows.load(Ordering::Relaxed)
    }

    /// The partitions' bytes in use.
    pub(super) fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    fn reader(&self) -> Taken<'_> {
        let rs = &self.shared.readers;
        for r in rs {
            if !r.busy.swap(true, Ordering::Relaxed) {
                return Taken {
                    reader: r,
                    mine: true,
                };
            }
        }
        let i = self.shared.next_reader.fetch_add(1, Ordering::Relaxed) % rs.len();
        Taken {
            reader: &rs[i],
            mine: false,
        }
    }

    /// Makes partitions for the days `days` that none holds (at most
    /// `most`; more is a refusal of the batch, which its gateway then sends
    /// line by line).
    fn ensure(&self, days: &BTreeSet<i64>, most: usize) -> Result<(), IngestError> {
        let missing: Vec<i64> = {
            let known = lock(&self.shared.known);
            days.iter()
                .filter(|d| !parts::covered(&known, **d))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let span = parts::span_days(&self.shared.limits);
        let now = self
            .shared
            .writer
            .run(move |c| {
                parts::ensure(c, &missing, span, most).map_err(|e| logged("partitions", e))
            })
            .map_err(|e| IngestError::StoreFailed(e.to_string()))?;
        match now {
            Ok(ranges) => {
                *lock(&self.shared.known) = ranges;
                Ok(())
            }
            Err(n) => Err(IngestError::Refused(format!(
                "the batch's records need {n} partitions the store has not made yet (at most {most} are made for one batch): send fewer days at once"
            ))),
        }
    }

    /// [`super::AuditStore::ingest`] on PostgreSQL.
    pub(super) fn ingest(&self, gateway: &str, ndjson: &[u8]) -> Result<Ingested, IngestError> {
        let lines = parse_batch(gateway, ndjson)?;
        let mut done = Ingested::default();
        let now = now_us();
        let cutoff = parts::cutoff(now, &self.shared.limits);
        let mut cols = Columns::default();
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        for p in &lines {
            // A line twice in one batch is stored once, as on SQLite.
            if !seen.insert(p.hash) {
                done.duplicates += 1;
                continue;
            }
            // Kept by its own time, or its arrival when that is earlier (a
            // gateway's clock ahead, or a forged stamp, never keeps a row
            // past retention nor in a future window).
            let kept_us = p.ts_us.min(now);
            if parts::day(kept_us) + DAY_US <= cutoff {
                // Older than the retention keeps: acknowledged, as the
                // retention would delete it at once, and no partition is
                // made for it.
                done.accepted += 1;
                continue;
            }
            cols.push(p, kept_us);
        }
        if cols.len() == 0 {
            return Ok(done);
        }
        let days: BTreeSet<i64> = cols.ts_us.iter().map(|t| parts::day(*t)).collect();
        self.ensure(&days, parts::MAX_NEW_PER_BATCH)?;
        let stored = match self.store(gateway, cols.clone())? {
            Ok(n) => n,
            Err(Unstored::NoPartition) => {
                // Dropped by another agent since: known again, made again.
                lock(&self.shared.known).clear();
                self.ensure(&days, parts::MAX_NEW_PER_BATCH)?;
                match self.store(gateway, cols)? {
                    Ok(n) => n,
                    Err(Unstored::NoPartition) => {
                        return Err(IngestError::StoreFailed(
                            "a partition the batch needs was dropped as it was stored".into(),
                        ))
                    }
                }
            }
        };
        done.accepted += stored.0;
        done.duplicates += stored.1;
        self.shared.rows.fetch_add(stored.0, Ordering::Relaxed);
        Ok(done)
    }

    /// One transaction: `gateway`'s lock, the look-up of the lines already
    /// kept, the new ones stored, their partitions counted. `(accepted,
    /// duplicates)`.
    fn store(
        &self,
        gateway: &str,
        cols: Columns,
    ) -> Result<Result<(u64, u64), Unstored>, IngestError> {
        let gateway = gateway.to_owned();
        let ranges = lock(&self.shared.known).clone();
        let res = self.shared.writer.write(move |c| {
            store_batch(c, &gateway, cols, &ranges).map_err(|e| unprepared(logged("ingest", e)))
        });
        res.map_err(|e| IngestError::StoreFailed(e.to_string()))
    }

    /// [`super::AuditStore::search_within`] on PostgreSQL: cut off by its
    /// statement timeout.
    pub(super) fn search_within(&self, q: &Query, budget: Duration) -> anyhow::Result<Page> {
        let limit = match q.limit {
            0 => 50,
            n => n.min(500),
        };
        let (w, v) = conditions_in(q, true, Dialect::Postgres);
        let n = v.len();
        // The page's ids and times read from an index alone (one per
        // filter, the time and tenant included), then its rows fetched in
        // the partitions of those times alone.
        let page_sql = format!(
            "SELECT r.id, r.ts_us FROM warden_audit r WHERE {w} ORDER BY r.id DESC LIMIT ${}",
            n + 1
        );
        let rows_sql = format!(
            "SELECT {COLUMNS} FROM warden_audit r WHERE r.ts_us = ANY($1) AND r.id = ANY($2)"
        );
        let (cw, cv) = conditions_in(q, false, Dialect::Postgres);
        let count_sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM warden_audit r WHERE {cw} LIMIT ${}) s",
            cv.len() + 1
        );
        let ms = budget.as_millis().clamp(1, i32::MAX as u128) as i64;
        let reader = self.reader();
        let res = reader.reader.db.run(move |c| {
            let mut t = c.build_transaction().read_only(true).start()?;
            t.batch_execute(&format!("SET LOCAL statement_timeout = {ms}"))?;
            let mut pv = values(&v);
            pv.push(Box::new(limit as i64 + 1));
            let keys = match t.query(&page_sql, &refs(&pv)) {
                Ok(r) => r,
                Err(e) if canceled(&e) => return Ok(Err(())),
                Err(e) => return Err(e),
            };
            let (ids, times): (Vec<i64>, Vec<i64>) = keys
                .iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
                .unzip();
            let rows = if ids.is_empty() {
                Vec::new()
            } else {
                t.query(&rows_sql, &[&times, &ids])?
            };
            let mut cvv = values(&cv);
            cvv.push(Box::new(MAX_COUNTED));
            let total: i64 = match t.query_one(&count_sql, &refs(&cvv)) {
                Ok(r) => r.get(0),
                Err(e) if canceled(&e) => return Ok(Err(())),
                Err(e) => return Err(e),
            };
            t.commit()?;
            let mut rows: Vec<Row> = rows.iter().map(row_of).collect();
            rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
            Ok(Ok((rows, total)))
        })?;
        let Ok((mut rows, total)) = res else {
            anyhow::bail!(
                "{SEARCH_TOO_BROAD}: narrow it with a time window (from=, to=) or fewer words"
            );
        };
        let next_before = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| r.id)
        } else {
            None
        };
        Ok(Page {
            rows,
            next_before,
            total: total.max(0) as u64,
        })
    }

    /// [`super::AuditStore::get`] on PostgreSQL.
    pub(super) fn get(&self, id: i64, tenants: &[String]) -> anyhow::Result<Option<Row>> {
        let reader = self.reader();
        let found = reader.reader.db.run(move |c| {
            Ok(c.query_opt(
                &format!("SELECT {COLUMNS}, r.raw FROM warden_audit r WHERE r.id = $1"),
                &[&id],
            )?
            .map(|r| {
                let mut row = row_of(&r);
                row.raw = Some(r.get(20));
                row
            }))
        })?;
        Ok(found.filter(|r| warden_config::person::in_scope(tenants, &r.tenant)))
    }

    /// [`super::AuditStore::live`] on PostgreSQL.
    pub(super) fn live(
        &self,
        window: Duration,
        gateway: Option<&str>,
        tenants: &[String],
    ) -> anyhow::Result<Live> {
        let (q, acc) = LiveWindow::new(window, gateway, tenants);
        let (w, v) = conditions_in(&q, false, Dialect::Postgres);
        let sql = format!(
            "SELECT r.ts_us, r.gateway, r.method, r.direction, r.outcome, r.tool, r.principal, \
             r.reason, r.latency_us, r.dlp FROM warden_audit r WHERE {w}"
        );
        let acc = Mutex::new(Some(acc));
        let reader = self.reader();
        let live = reader.reader.db.run(move |c| {
            let Some(mut acc) = lock(&acc).take() else {
                return Ok(None);
            };
            for r in c.query(&sql, &refs(&values(&v)))? {
                acc.add(LiveRow {
                    ts_us: r.get(0),
                    gateway: r.get(1),
                    method: r.get(2),
                    direction: r.get(3),
                    outcome: r.get(4),
                    tool: r.get(5),
                    principal: r.get(6),
                    reason: r.get(7),
                    latency_us: r.get(8),
                    dlp: r.get(9),
                });
            }
            Ok(Some(acc.finish()))
        })?;
        live.ok_or_else(|| anyhow::anyhow!("the live figures could not be read"))
    }

    /// [`super::AuditStore::verify_within`] on PostgreSQL: the records
    /// read in chain order through a portal, a few hundred at a time, the
    /// links looked up between; the statement timeout at the deadline.
    pub(super) fn verify_within(
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

    /// [`super::AuditStore::optimize`] on PostgreSQL: the partitioned
    /// table's statistics (autovacuum analyzes its partitions only).
    pub(super) fn optimize(&self) {
        let _ = self
            .shared
            .trimmer
            .run(|c| c.batch_execute("ANALYZE warden_audit"));
    }

    /// [`super::AuditStore::trim`] on PostgreSQL: see [`parts::trim`].
    pub(super) fn trim(&self) -> anyhow::Result<u64> {
        let limits = self.shared.limits.clone();
        let sealed = lock(&self.shared.sealed).clone();
        let (deleted, sealed, ranges) = self.shared.trimmer.run(move |c| {
            let mut sealed = sealed.clone();
            let (deleted, ranges) = parts::trim(c, &limits, now_us(), &mut sealed)
                .map_err(|e| logged("retention", e))?;
            Ok((deleted, sealed, ranges))
        })?;
        *lock(&self.shared.sealed) = sealed;
        if let Some(ranges) = ranges {
            *lock(&self.shared.known) = ranges;
        }
        self.shared.refresh_stats()?;
        Ok(deleted)
    }
}

/// The lines of a batch one partition may hold: their hashes, times and
/// numbers in the batch (from 1).
#[derive(Default)]
struct Probes {
    hashes: Vec<Vec<u8>>,
    times: Vec<i64>,
    numbers: Vec<i64>,
}

/// One batch's transaction (see [`PgStore::store`]).
fn store_batch(
    c: &mut Client,
    gateway: &str,
    cols: Columns,
    ranges: &BTreeMap<i64, i64>,
) -> Result<Result<(u64, u64), Unstored>, postgres::Error> {
    let mut t = c.transaction()?;
    // One gateway's batches one at a time, across agents: what the
    // look-up below saw is what is kept when this one stores.
    t.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_CLASS, &gateway],
    )?;
    // The lines of each partition their own time falls in (a time no
    // partition holds holds no line; a partition another agent made since
    // this one looked is caught by the unique index behind the insert).
    let mut by_part: BTreeMap<i64, Probes> = BTreeMap::new();
    for (i, t_us) in cols.line_us.iter().enumerate() {
        if let Some((lo, hi)) = ranges.range(..=*t_us).next_back() {
            if t_us < hi {
                let e = by_part.entry(*lo).or_default();
                e.hashes.push(cols.hash[i].clone());
                e.times.push(*t_us);
                e.numbers.push(i as i64 + 1);
            }
        }
    }
    let mut held: Vec<i64> = t
        .query(HELD_MOVED, &[&gateway, &cols.hash])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (lo, p) in &by_part {
        let sql = HELD_IN.replace("{}", &parts::name(*lo));
        match t.query(&sql, &[&gateway, &p.hashes, &p.times, &p.numbers]) {
            Ok(rows) => held.extend(rows.iter().map(|r| r.get::<_, i64>(0))),
            // Dropped by another agent since this one looked.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                return Ok(Err(Unstored::NoPartition))
            }
            Err(e) => return Err(e),
        }
    }
    let total = cols.len();
    let held: HashSet<usize> = held.iter().map(|n| (*n - 1) as usize).collect();
    let keep: Vec<usize> = (0..total).filter(|i| !held.contains(i)).collect();
    if keep.is_empty() {
        t.commit()?;
        return Ok(Ok((0, total as u64)));
    }
    let c = cols.only(&keep);
    let ids: Vec<i64> = t
        .query(
            "SELECT nextval('warden_audit_id') FROM generate_series(1, $1::int8)",
            &[&(c.len() as i64)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let insert_sql = prepared(&mut t, INSERT)?;
    let inserted = t.query(
        &insert_sql,
        &[
            &gateway,
            &ids,
            &c.seq,
            &c.ts,
            &c.ts_us,
            &c.principal,
            &c.tenant,
            &c.tenant_key,
            &c.server,
            &c.tool,
            &c.method,
            &c.direction,
            &c.outcome,
            &c.decided_by,
            &c.reason,
            &c.risk,
            &c.trace_id,
            &c.approval_id,
            &c.latency_us,
            &c.dlp,
            &c.notice,
            &c.prev,
            &c.hash,
            &c.raw,
        ],
    );
    let inserted = match inserted {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&SqlState::CHECK_VIOLATION) => {
            // "no partition of relation … found for row"
            return Ok(Err(Unstored::NoPartition));
        }
        Err(e) => return Err(e),
    };
    let (moved_h, moved_t): (Vec<Vec<u8>>, Vec<i64>) = (0..c.len())
        .filter(|i| c.moved[*i])
        .map(|i| (c.hash[i].clone(), c.ts_us[i]))
        .unzip();
    if !moved_h.is_empty() {
        t.execute(
            "INSERT INTO warden_audit_moved (gateway, hash, ts_us) \
             SELECT $1, m.h, m.t FROM unnest($2::bytea[], $3::int8[]) AS m(h, t) \
             ON CONFLICT DO NOTHING",
            &[&gateway, &moved_h, &moved_t],
        )?;
    }
    let kept: Vec<i64> = inserted.iter().map(|r| r.get(0)).collect();
    let per_part: Vec<(i64, i64)> = t
        .query(
            "SELECT p.lo, count(*)::int8 FROM unnest($1::int8[]) AS k(ts) \
             JOIN warden_audit_partitions p ON k.ts >= p.lo AND k.ts < p.hi \
             GROUP BY p.lo ORDER BY p.lo",
            &[&kept],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // In order of their partitions: two batches never wait on each
    // other's counts crosswise.
    for (lo, n) in &per_part {
        t.execute(
            "UPDATE warden_audit_partitions SET rows = rows + $2, \
             peak = greatest(peak, rows + $2) WHERE lo = $1",
            &[lo, n],
        )?;
    }
    t.commit()?;
    let accepted = inserted.len() as u64;
    Ok(Ok((accepted, total as u64 - accepted)))
}

impl Shared {
    /// The store's rows and bytes in use, as the partitions' counts say.
    fn refresh_stats(&self) -> std::io::Result<()> {
        let (rows, bytes) = self.trimmer.run(parts::totals)?;
        self.rows.store(rows, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }
}

/// Every agent's view of the store's size (its metrics), read every
/// [`STATS_EVERY`] until the store is dropped.
fn stats(shared: Weak<Shared>) {
    loop {
        std::thread::sleep(STATS_EVERY);
        let Some(s) = shared.upgrade() else {
            return;
        };
        if let Err(e) = s.refresh_stats() {
            tracing::debug!("audit store statistics: {e}");
        }
    }
}

std::thread_local! {
    /// The statements of a fixed shape prepared on this thread's
    /// connection (each `Db` owns a thread and its connection), by their
    /// SQL. Planned for the first executions, then (PostgreSQL's choice,
    /// by cost) once for all: with every partition's indexes to consider,
    /// planning a record's link look-up costs more than running it. Only
    /// statements whose plan cannot go wrong as the data grows are kept: a
    /// batch's insert (it reads nothing), a verification's look-ups (their
    /// transaction allows no sequential scan); a search's plan depends on
    /// its time window, a batch's look-up on its partitions' sizes.
    static PREPARED: std::cell::RefCell<std::collections::HashMap<&'static str, postgres::Statement>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// `sql` prepared on this connection (once).
fn prepared(
    c: &mut impl postgres::GenericClient,
    sql: &'static str,
) -> Result<postgres::Statement, postgres::Error> {
    if let Some(s) = PREPARED.with(|p| p.borrow().get(sql).cloned()) {
        return Ok(s);
    }
    let s = c.prepare(sql)?;
    PREPARED.with(|p| p.borrow_mut().insert(sql, s.clone()));
    Ok(s)
}

/// `e`, after forgetting the statements prepared on this thread when the
/// connection they were prepared on is gone (or they are): the next
/// connection prepares them again.
fn unprepared(e: postgres::Error) -> postgres::Error {
    // Not the server's answer (the connection broke), a statement it does
    // not know, or the server ending the session (57P…: shut down,
    // restarted) or a connection error (08…).
    let gone = match e.code() {
        None => e.as_db_error().is_none(),
        Some(c) => {
            c == &SqlState::INVALID_SQL_STATEMENT_NAME
                || c.code().starts_with("57P")
                || c.code().starts_with("08")
        }
    };
    if gone {
        PREPARED.with(|p| p.borrow_mut().clear());
    }
    e
}

/// `e`, logged with what the database said (a `postgres::Error` shows as
/// "db error" alone once it is an `io::Error`).
fn logged(what: &str, e: postgres::Error) -> postgres::Error {
    match e.as_db_error() {
        Some(db) => tracing::warn!(
            code = db.code().code(),
            "audit store ({what}): {}{}",
            db.message(),
            db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
        ),
        None => tracing::warn!("audit store ({what}): {e}"),
    }
    e
}

/// A statement cut off at its timeout.
#[derive(Debug, thiserror::Error)]
#[error("canceled at the time budget")]
struct Canceled;

fn canceled(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::QUERY_CANCELED)
}

/// The conditions' values as PostgreSQL parameters.
fn values(v: &[Param]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    v.iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                Param::Int(n) => Box::new(*n),
                Param::Text(t) => Box::new(t.clone()),
                Param::Texts(t) => Box::new(t.clone()),
            }
        })
        .collect()
}

fn refs(v: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    v.iter().map(|b| &**b as &(dyn ToSql + Sync)).collect()
}

fn row_of(r: &postgres::Row) -> Row {
    let dlp: Option<String> = r.get(18);
    Row {
        id: r.get(0),
        gateway: r.get(1),
        seq: r.get::<_, i64>(2).max(0) as u64,
        ts: r.get(3),
        ts_us: r.get(4),
        principal: r.get(5),
        tenant: r.get(6),
        server: r.get(7),
        tool: r.get(8),
        method: r.get(9),
        direction: r.get(10),
        outcome: r.get(11),
        decided_by: r.get(12),
        reason: r.get(13),
        risk: r.get(14),
        trace_id: r.get(15),
        approval_id: r.get(16),
        latency_us: r.get::<_, Option<i64>>(17).map(|n| n.max(0) as u64),
        dlp: dlp
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_default(),
        notice: r.get(19),
        raw: None,
    }
}

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
            found.push(super::lines::line_hash(r.get(0)));
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
