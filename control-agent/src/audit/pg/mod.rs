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
//!
//! Its parts: `ingest` (a batch's transaction: the look-up of the lines
//! already kept, the insert, the partitions' counts), `search` (pages,
//! one record, the live figures), `verify` (the chain walk on a
//! transaction), `parts` (the partitions and the retention); this module
//! holds the store's connections, its statistics and the statements
//! prepared on each connection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use postgres::error::SqlState;

use crate::pg::Db;

use super::{lock, now_us, Limits};

mod ingest;
pub(super) mod parts;
mod search;
mod spend;
#[cfg(test)]
mod spend_tests;
#[cfg(test)]
mod tests;
mod verify;

use parts::DAY_US;

/// The advisory-lock class of the audit store's locks ("WAUD"), apart
/// from the agents' own ("WARD").
const LOCK_CLASS: i32 = 0x5741_5544;

/// How often every agent reads the store's rows and bytes (for its
/// metrics), whether or not it runs the retention.
const STATS_EVERY: Duration = Duration::from_secs(2);

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
    /// Budget alerts that may wait at once (0: none are queued).
    alert_bound: AtomicUsize,
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
            alert_bound: AtomicUsize::new(0),
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

    /// [`super::AuditStore::optimize`] on PostgreSQL: the partitioned
    /// table's statistics (autovacuum analyzes its partitions only).
    pub(super) fn optimize(&self) {
        let _ = self
            .shared
            .trimmer
            .run(|c| c.batch_execute("ANALYZE warden_audit"));
    }

    /// [`super::AuditStore::queue_alerts`] on PostgreSQL.
    pub(super) fn queue_alerts(&self, bound: usize) {
        self.shared.alert_bound.store(bound, Ordering::Relaxed);
    }

    /// [`super::AuditStore::pending_alerts`] on PostgreSQL.
    pub(super) fn pending_alerts(
        &self,
        most: usize,
    ) -> anyhow::Result<Vec<super::alerts::PendingAlert>> {
        let reader = self.reader();
        let rows = reader.reader.db.run(move |c| {
            Ok(c.query(
                "SELECT id, queued_us, alert, array_to_string(sent, ',') FROM warden_budget_alerts \
                 WHERE done_us IS NULL ORDER BY id LIMIT $1",
                &[&(most as i64)],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect::<Vec<(i64, i64, String, String)>>())
        })?;
        Ok(super::pending_of(rows))
    }

    /// [`super::AuditStore::alert_sent`] on PostgreSQL.
    pub(super) fn alert_sent(&self, id: i64, webhook: &str) -> anyhow::Result<()> {
        let webhook = webhook.to_owned();
        self.shared.trimmer.run(move |c| {
            c.execute(
                "UPDATE warden_budget_alerts SET sent = array_append(sent, $2) \
                 WHERE id = $1 AND NOT ($2 = ANY (sent))",
                &[&id, &webhook],
            )
        })?;
        Ok(())
    }

    /// [`super::AuditStore::alert_done`] on PostgreSQL.
    pub(super) fn alert_done(&self, id: i64, now: i64) -> anyhow::Result<()> {
        self.shared.trimmer.run(move |c| {
            c.execute(
                "UPDATE warden_budget_alerts SET done_us = $2 WHERE id = $1 AND done_us IS NULL",
                &[&id, &now],
            )?;
            c.execute(
                "DELETE FROM warden_budget_alerts WHERE done_us < $1",
                &[&(now - super::alerts::KEEP_DONE_US)],
            )
        })?;
        Ok(())
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
