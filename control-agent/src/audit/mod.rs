//! The agent's audit store: the records the gateways ship
//! (`POST /v1/audit/ingest`, see the gateway's `siem::agent`), kept for
//! search, live figures and chain verification in one of two places:
//!
//! - **SQLite** ([`AuditStore::open`], the default): `<state>/audit.sqlite3`
//!   (WAL), one agent's own.
//! - **PostgreSQL** ([`AuditStore::on_database`], `serve --database`): one
//!   table partitioned by time that every agent on the database shares
//!   (see `audit/pg/` and docs/audit-store.md). Same ingest contract, same
//!   searches and results, same verification, retention by age, rows and
//!   bytes.
//!
//! - **Verbatim.** Each line is stored byte for byte beside the columns it
//!   is searched by, so the hash chain (`prev` = SHA-256 of the previous
//!   line) can be checked here as `warden audit verify` checks the files.
//! - **At least once in, exactly once kept.** A line is unique by its
//!   gateway and its SHA-256: what a gateway sends again (after a timeout,
//!   a restart of either side) is counted a duplicate, not stored twice.
//! - **All or nothing.** Every line of a batch is checked (a JSON object,
//!   an integer `seq`, a 64-hex `prev`, an RFC 3339 `ts`) before any is
//!   stored, and the batch goes in one transaction: a malformed line
//!   refuses the whole batch, naming the line.
//! - **Bounded.** Bodies up to [`MAX_BODY`], lines up to [`MAX_LINE`] (a
//!   larger record arrives as a stub that keeps its place in the chain,
//!   see `lines.rs`);
//!   rows older than `retention`, the oldest beyond `max_rows`, and the
//!   oldest while the pages in use exceed `max_bytes` are deleted every
//!   couple of seconds by the retention job ([`crate::jobs`]).
//! - **Indexed** for the searches the console and the API make: one
//!   filter (principal, tenant, server, tool, outcome, gateway, trace,
//!   approval, team, priced) over a time range, newest first, with the
//!   number of matches.
//! - **Priced.** A record's `cost` is read at ingest into the amount in
//!   millionths, its currency and the caller's team (`cost.rs`); spend is
//!   added up over those columns (`spend.rs`). A cost that cannot be read
//!   never refuses its line: the record is kept unpriced, counted and
//!   logged.
//! - **Alerting.** The budget alerts a record carries are queued, in the
//!   record's transaction and only the first time it is kept, for the
//!   notifier to deliver (`alerts.rs`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use rusqlite::types::Value as Sql;
use rusqlite::{params, Connection};

pub mod alerts;
pub(crate) mod cost;
mod lines;
mod pg;
pub mod query;
mod schema;
mod search;
pub mod spend;
pub mod spend_csv;
#[cfg(test)]
pub(crate) mod spend_tests;
mod trim;
pub use trim::WeakAuditStore;
#[cfg(test)]
pub(crate) mod tests;
mod verify;

pub use lines::valid_gateway;
use lines::{parse_line, Parsed};
#[cfg(test)]
use schema::KEYS_STRICT;
use schema::{connect, migrate, migrate_cost, rekey, tenant_key, SCHEMA};

/// The largest batch a gateway may POST.
pub const MAX_BODY: usize = 8 << 20;
/// The longest line a batch may hold.
pub const MAX_LINE: usize = 1 << 20;
/// The most records one verification reads.
pub const MAX_VERIFY: usize = 2_000_000;

/// How a search cut off after its budget (5 s) begins its error.
pub const SEARCH_TOO_BROAD: &str = "the search took too long";

/// How long one search may run on a reader connection.
const SEARCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
/// How long one verification may run: it holds a reader connection (one
/// of a few) and hashes every record it reads. Past it, what was read is
/// reported, `truncated`; one that read nothing by then is an error.
pub const VERIFY_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

/// Matching records a search counts at most (its `total`).
const MAX_COUNTED: i64 = 100_000;
/// How a refusal that is the store's fault (not the batch's) starts: the
/// gateway is told to send the batch again.
pub const STORE_FAILED: &str = "the audit store could not store the batch";

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The batch is malformed (the gateway must not send it again as is).
    #[error("{0}")]
    Refused(String),
    /// The store could not write it (the gateway sends it again).
    #[error("{STORE_FAILED}: {0}")]
    StoreFailed(String),
}
/// Problems reported per chain at most (the rest are counted).
const MAX_PROBLEMS: usize = 100;
/// Records of one seq a verification compares at most (a chain holds one;
/// a trail that started again, or forged lines, hold more).
const MAX_SIBLINGS: usize = 64;

/// A verification's time budget ran out outside SQLite.
#[derive(Debug, thiserror::Error)]
#[error("the verification's time budget ran out")]
struct OutOfTime;

/// How long records are kept, and how many at most.
#[derive(Debug, Clone)]
pub struct Limits {
    pub retention: Duration,
    pub max_rows: u64,
    /// The bytes the store's pages may hold (records, their lines and
    /// every index), the oldest records deleted first past it. Rows alone
    /// bound nothing: a line may be up to [`MAX_LINE`].
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            retention: Duration::from_secs(7 * 86_400),
            max_rows: 5_000_000,
            max_bytes: 8 << 30,
        }
    }
}

/// The store, on SQLite or on PostgreSQL; every method answers the same
/// on both.
pub struct AuditStore {
    inner: Arc<Backend>,
}

/// Where the records are kept (one per store, behind its `Arc`: the
/// variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Backend {
    Sqlite(Inner),
    Postgres(pg::PgStore),
}

/// The SQLite store. Writes go through one connection, reads through a
/// small pool (WAL: readers never wait for the writer).
struct Inner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    limits: Limits,
    rows: AtomicU64,
    /// The bytes the store's pages hold, as of the last trim.
    bytes: AtomicU64,
    /// Budget alerts that may wait at once (0: none are queued).
    alert_bound: AtomicUsize,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ingested {
    pub accepted: u64,
    pub duplicates: u64,
    /// Records stored whose `cost` member could not be read: kept as
    /// unpriced (see `cost.rs`), counted and logged.
    #[serde(skip_serializing_if = "is_zero")]
    pub unreadable_costs: u64,
    /// Budget alerts of the records stored, queued for the webhooks.
    #[serde(skip)]
    pub alerts_queued: u64,
    /// Budget alerts of the records stored that the queue had no room
    /// for (counted and logged; the records are stored).
    #[serde(skip)]
    pub alerts_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A search (and the range of a verification). Every filter given must
/// match; `tenants` is the viewer's scope.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct Query {
    /// Unix microseconds, inclusive.
    pub from_us: Option<i64>,
    /// Unix microseconds, exclusive.
    pub to_us: Option<i64>,
    pub gateway: Option<String>,
    pub principal: Option<String>,
    /// Compared by the tenant scope key (`ACME` finds `acme`'s records,
    /// `financé` only `financé`'s, never `finance`'s).
    pub tenant: Option<String>,
    pub server: Option<String>,
    /// An empty tool (as an empty team, principal, server or tenant) finds
    /// the records that have none (`absent=` of the API).
    pub tool: Option<String>,
    pub outcome: Option<String>,
    /// A substring of the reason.
    pub reason: Option<String>,
    /// The caller's team a priced record names (`cost.team`).
    #[serde(default)]
    pub team: Option<String>,
    /// Only priced records (a readable `cost` with an amount).
    #[serde(default)]
    pub priced: bool,
    /// Only records priced in this currency.
    #[serde(default)]
    pub currency: Option<String>,
    pub approval_id: Option<String>,
    pub trace_id: Option<String>,
    /// The viewer's scope: empty = every tenant; else only these tenants'
    /// records (compared by the tenant scope key, as approvals and console
    /// sessions compare tenants: [`warden_config::person::in_scope`]).
    pub tenants: Vec<String>,
    /// Paging: rows with `id < before_id` (newest first).
    pub before_id: Option<i64>,
    /// Clamped to 1..=500; 0 means 50.
    pub limit: usize,
}

/// One stored record: its indexed fields (and, from [`AuditStore::get`],
/// the line itself).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub id: i64,
    pub gateway: String,
    pub seq: u64,
    /// RFC 3339, as in the record.
    pub ts: String,
    pub ts_us: i64,
    pub principal: String,
    pub tenant: String,
    pub server: String,
    pub tool: Option<String>,
    pub method: Option<String>,
    pub direction: String,
    pub outcome: String,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub risk: Option<String>,
    pub trace_id: String,
    pub approval_id: Option<String>,
    pub latency_us: Option<u64>,
    /// The DLP detectors that found something.
    pub dlp: Vec<String>,
    /// What the gateway told of the server called (a deprecated server's
    /// notice), as its record says.
    pub notice: Option<String>,
    /// The line as the gateway wrote it (only filled by `get`).
    pub raw: Option<String>,
}

/// A page of a search, newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page {
    pub rows: Vec<Row>,
    /// The `before_id` of the next page, when there is one.
    pub next_before: Option<i64>,
    /// Matches of the query, ignoring paging, counted up to
    /// `MAX_COUNTED` (100,000).
    pub total: u64,
}

/// One gateway's chain over the range verified.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChainCheck {
    pub gateway: String,
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub ok: bool,
    /// Records held as stubs: too large for [`MAX_LINE`] (or refused alone),
    /// shipped as their seq, `prev`, SHA-256 and small fields; their full
    /// lines are in the gateway's trail.
    pub elided: u64,
    pub problems: Vec<String>,
}

/// The chains of every record a query matches.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub ok: bool,
    pub records: u64,
    pub chains: Vec<ChainCheck>,
    /// Not every record the query matched was read: more than
    /// [`MAX_VERIFY`] (or the query's `limit`) matched, or the time budget
    /// ran out ([`VERIFY_BUDGET`]); `stopped` says which.
    pub truncated: bool,
    /// Why the verification stopped early (`None`: it read every match).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// The last `window` of calls.
#[derive(Debug, Clone, serde::Serialize, Default)]
pub struct Live {
    pub window_secs: u64,
    /// `tools/call` requests.
    pub calls: u64,
    pub calls_per_sec: f64,
    /// Calls by unix second, every second of the window (zeros included).
    pub per_second: Vec<(i64, u64)>,
    /// Calls by outcome.
    pub outcomes: Vec<(String, u64)>,
    pub top_tools: Vec<(String, u64)>,
    pub top_principals: Vec<(String, u64)>,
    /// Reasons of every record in the window that carries one.
    pub top_reasons: Vec<(String, u64)>,
    /// Latency of the calls' replies.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// DLP findings by detector, every record of the window.
    pub dlp: Vec<(String, u64)>,
    /// Calls by gateway.
    pub gateways: Vec<(String, u64)>,
    /// Behaviour signals (`anomaly`) the window's calls raised, by kind.
    pub anomalies: Vec<(String, u64)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A batch's lines, each checked (all or none): `Err` names the first
/// line refused. Blank lines are skipped.
fn parse_batch<'a>(gateway: &str, ndjson: &'a [u8]) -> Result<Vec<Parsed<'a>>, IngestError> {
    if !valid_gateway(gateway) {
        return Err(IngestError::Refused(
            "the gateway's id must be 1-128 visible ASCII characters".into(),
        ));
    }
    if ndjson.len() > MAX_BODY {
        return Err(IngestError::Refused(format!(
            "the batch is {} bytes, more than the {MAX_BODY} it may have",
            ndjson.len()
        )));
    }
    let mut lines = Vec::new();
    for (i, line) in ndjson.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines.push(
            parse_line(line).map_err(|e| IngestError::Refused(format!("line {}: {e}", i + 1)))?,
        );
    }
    Ok(lines)
}

/// The queue's rows (id, queued, alert as JSON, sent) as alerts; a row
/// that cannot be read (never written so) is skipped.
fn pending_of(rows: Vec<(i64, i64, String, String)>) -> Vec<alerts::PendingAlert> {
    rows.into_iter()
        .filter_map(|(id, queued_us, alert, sent)| {
            Some(alerts::PendingAlert {
                id,
                queued_us,
                alert: serde_json::from_str(&alert).ok()?,
                sent: alerts::sent_of(&sent),
            })
        })
        .collect()
}

/// Logs the budget alerts a full queue dropped.
fn dropped_logged(gateway: &str, n: u64) {
    if n > 0 {
        tracing::warn!(
            gateway,
            alerts = n,
            "budget alerts not queued for the webhooks: the queue is full"
        );
    }
}

/// Logs the records of a batch stored unpriced because their `cost`
/// could not be read.
fn unreadable_logged(gateway: &str, n: u64) {
    if n > 0 {
        tracing::warn!(
            gateway,
            records = n,
            "audit records stored unpriced: their `cost` member could not be read"
        );
    }
}

impl AuditStore {
    /// Opens (creating) the SQLite store at `path` and applies its limits
    /// once; [`crate::jobs::audit_retention`] keeps applying them.
    pub fn open(path: &Path, limits: Limits) -> anyhow::Result<AuditStore> {
        Ok(AuditStore {
            inner: Arc::new(Backend::Sqlite(Inner::open(path, limits)?)),
        })
    }

    /// The fleet's store on the PostgreSQL database at `url`, shared by
    /// every agent on it (`serve --database URL`): the schema brought up
    /// to date ([`crate::pg::migrate`], once across agents), today's and
    /// the next days' partitions made. Its limits are applied by
    /// [`AuditStore::trim`], which the retention job runs on one agent at
    /// a time (the one holding the jobs lease); any agent may ingest and
    /// search.
    pub fn on_database(url: &str, limits: Limits) -> anyhow::Result<AuditStore> {
        Ok(AuditStore {
            inner: Arc::new(Backend::Postgres(pg::PgStore::connect(url, limits)?)),
        })
    }

    /// Stores a batch of lines (NDJSON) a gateway shipped: all or none.
    /// A line already held for that gateway (by its SHA-256) is counted a
    /// duplicate, not stored again. `Err`: why the batch is refused
    /// (naming the line), or that the store could not write it.
    pub fn ingest(&self, gateway: &str, ndjson: &[u8]) -> Result<Ingested, IngestError> {
        match &*self.inner {
            Backend::Sqlite(s) => s.ingest(gateway, ndjson),
            Backend::Postgres(p) => p.ingest(gateway, ndjson),
        }
    }

    /// Records kept (on PostgreSQL: in the whole store, every agent's
    /// ingest counted, as of a couple of seconds ago).
    pub fn rows(&self) -> u64 {
        match &*self.inner {
            Backend::Sqlite(s) => s.rows.load(Ordering::Relaxed),
            Backend::Postgres(p) => p.rows(),
        }
    }

    /// The bytes the store's pages hold (as of the last trim, every couple
    /// of seconds; on PostgreSQL, the partitions' bytes in use).
    pub fn bytes(&self) -> u64 {
        match &*self.inner {
            Backend::Sqlite(s) => s.bytes.load(Ordering::Relaxed),
            Backend::Postgres(p) => p.bytes(),
        }
    }

    /// Applies the retention now (the retention job,
    /// [`crate::jobs::audit_retention`], runs it every couple of seconds,
    /// on one agent at a time); returns the rows deleted.
    pub fn trim(&self) -> anyhow::Result<u64> {
        match &*self.inner {
            Backend::Sqlite(s) => s.trim(),
            Backend::Postgres(p) => p.trim(),
        }
    }

    /// Queues the budget alerts of the records stored from now on, up to
    /// `bound` waiting at once (0: none; see `alerts.rs`).
    pub fn queue_alerts(&self, bound: usize) {
        match &*self.inner {
            Backend::Sqlite(s) => s.alert_bound.store(bound, Ordering::Relaxed),
            Backend::Postgres(p) => p.queue_alerts(bound),
        }
    }

    /// The alerts waiting (not done), oldest first, `most` at most.
    pub fn pending_alerts(&self, most: usize) -> anyhow::Result<Vec<alerts::PendingAlert>> {
        match &*self.inner {
            Backend::Sqlite(s) => {
                let c = lock(&s.writer);
                let mut stmt = c.prepare_cached(
                    "SELECT id, queued_us, alert, sent FROM budget_alerts \
                     WHERE done_us IS NULL ORDER BY id LIMIT ?1",
                )?;
                let rows = stmt
                    .query_map(params![most as i64], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(pending_of(rows))
            }
            Backend::Postgres(p) => p.pending_alerts(most),
        }
    }

    /// Keeps that `webhook` took alert `id` (answered 2xx).
    pub fn alert_sent(&self, id: i64, webhook: &str) -> anyhow::Result<()> {
        match &*self.inner {
            Backend::Sqlite(s) => {
                lock(&s.writer).execute(
                    "UPDATE budget_alerts SET sent = sent || ?2 || ',' \
                     WHERE id = ?1 AND instr(',' || sent, ',' || ?2 || ',') = 0",
                    params![id, webhook],
                )?;
                Ok(())
            }
            Backend::Postgres(p) => p.alert_sent(id, webhook),
        }
    }

    /// Marks alert `id` done (every webhook that wants it took it, or was
    /// given up on), and forgets the alerts done more than a day ago.
    pub fn alert_done(&self, id: i64) -> anyhow::Result<()> {
        let now = now_us();
        match &*self.inner {
            Backend::Sqlite(s) => {
                let c = lock(&s.writer);
                c.execute(
                    "UPDATE budget_alerts SET done_us = ?2 WHERE id = ?1 AND done_us IS NULL",
                    params![id, now],
                )?;
                c.execute(
                    "DELETE FROM budget_alerts WHERE done_us < ?1",
                    params![now - alerts::KEEP_DONE_US],
                )?;
                Ok(())
            }
            Backend::Postgres(p) => p.alert_done(id, now),
        }
    }

    /// The SQLite store (tests reach into its connections).
    #[cfg(test)]
    fn sqlite(&self) -> &Inner {
        match &*self.inner {
            Backend::Sqlite(s) => s,
            Backend::Postgres(_) => panic!("not a SQLite store"),
        }
    }
}

impl Inner {
    fn open(path: &Path, limits: Limits) -> anyhow::Result<Inner> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut writer = connect(path)?;
        migrate(&mut writer)
            .and_then(|()| migrate_cost(&mut writer))
            .with_context(|| format!("bringing the audit store {} up to date", path.display()))?;
        writer
            .execute_batch(SCHEMA)
            .with_context(|| format!("creating the audit store in {}", path.display()))?;
        rekey(&mut writer)
            .with_context(|| format!("keying the audit store {} again", path.display()))?;
        let rows: i64 = writer.query_row("SELECT count(*) FROM records", [], |r| r.get(0))?;
        let readers = (0..2)
            .map(|_| {
                let c = connect(path)?;
                c.execute_batch("PRAGMA query_only=1;")?;
                Ok(Mutex::new(c))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let inner = Inner {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            limits,
            rows: AtomicU64::new(rows.max(0) as u64),
            bytes: AtomicU64::new(0),
            alert_bound: AtomicUsize::new(0),
        };
        inner.trim()?;
        Ok(inner)
    }

    fn ingest(&self, gateway: &str, ndjson: &[u8]) -> Result<Ingested, IngestError> {
        let lines = parse_batch(gateway, ndjson)?;
        if lines.is_empty() {
            return Ok(Ingested::default());
        }
        let mut done = Ingested::default();
        let mut conn = lock(&self.writer);
        let stored = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut rec = tx.prepare_cached(
                    "INSERT OR IGNORE INTO records (gateway, seq, ts, ts_us, principal, tenant, \
                     server, tool, method, direction, outcome, decided_by, reason, risk, trace_id, \
                     approval_id, latency_us, dlp, prev, hash, tenant_key, cost_micros, currency, \
                     team) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                     ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
                )?;
                let mut raw = tx.prepare_cached("INSERT INTO lines (id, raw) VALUES (?1, ?2)")?;
                let bound = self.alert_bound.load(Ordering::Relaxed) as i64;
                // Alerts waiting, read when a stored record first has one.
                let mut waiting: Option<i64> = None;
                // A record's time as the store orders, ages and windows it:
                // the time it bears, or now when that is later (a gateway's
                // clock ahead, or a forged stamp, would otherwise keep a row
                // past every retention). Its line keeps the time it bears.
                let now = now_us();
                for p in &lines {
                    let f = &p.f;
                    let s = |o: &Option<String>| o.clone().unwrap_or_default();
                    let n = rec.execute(params![
                        gateway,
                        f.seq as i64,
                        f.ts,
                        p.ts_us.min(now),
                        s(&f.principal),
                        s(&f.tenant),
                        s(&f.server),
                        f.tool,
                        f.method,
                        s(&f.direction),
                        s(&f.outcome),
                        f.decided_by,
                        f.reason,
                        f.risk,
                        s(&f.trace_id),
                        p.approval_id,
                        f.latency_us.map(|n| n.min(i64::MAX as u64) as i64),
                        p.dlp,
                        &p.prev[..],
                        &p.hash[..],
                        tenant_key(f.tenant.as_deref().unwrap_or("")),
                        p.cost.priced.as_ref().map(|c| c.0),
                        p.cost.priced.as_ref().map(|c| &c.1),
                        p.cost.team,
                    ])?;
                    if n == 1 {
                        raw.execute(params![tx.last_insert_rowid(), p.raw])?;
                        done.accepted += 1;
                        done.unreadable_costs += u64::from(p.cost.unreadable);
                        if bound > 0 {
                            for a in alerts::alerts_in(p.raw, gateway, &p.hash) {
                                let w = match waiting {
                                    Some(w) => w,
                                    None => tx.query_row(
                                        "SELECT count(*) FROM budget_alerts WHERE done_us IS NULL",
                                        [],
                                        |r| r.get(0),
                                    )?,
                                };
                                if w >= bound {
                                    waiting = Some(w);
                                    done.alerts_dropped += 1;
                                    continue;
                                }
                                let json = serde_json::to_string(&a).unwrap_or_default();
                                let n = tx
                                    .prepare_cached(
                                        "INSERT OR IGNORE INTO budget_alerts (key, queued_us, alert) \
                                         VALUES (?1, ?2, ?3)",
                                    )?
                                    .execute(params![a.key, now, json])?;
                                waiting = Some(w + n as i64);
                                done.alerts_queued += n as u64;
                            }
                        }
                    } else {
                        done.duplicates += 1;
                    }
                }
            }
            tx.commit()
        })();
        drop(conn);
        match stored {
            Ok(()) => {
                self.rows.fetch_add(done.accepted, Ordering::Relaxed);
                unreadable_logged(gateway, done.unreadable_costs);
                dropped_logged(gateway, done.alerts_dropped);
                Ok(done)
            }
            Err(e) => {
                tracing::error!("audit store: {e}");
                Err(IngestError::StoreFailed(e.to_string()))
            }
        }
    }
}

impl Inner {
    fn reader(&self) -> MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Ok(c) = r.try_lock() {
                return c;
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        lock(&self.readers[i])
    }

    /// The hashes of the stored lines of `gateway`'s `seq` (at most
    /// [`MAX_SIBLINGS`]; `true`: more hold it), read by `deadline`.
    fn lines_of(
        &self,
        conn: &Connection,
        gateway: &str,
        seq: u64,
        deadline: Instant,
    ) -> anyhow::Result<(Vec<[u8; 32]>, bool)> {
        let mut stmt = conn.prepare_cached(
            "SELECT l.raw FROM records r JOIN lines l ON l.id = r.id WHERE r.gateway = ?1 AND r.seq = ?2 LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![gateway, seq as i64, MAX_SIBLINGS as i64 + 1])?;
        let mut found = Vec::new();
        while let Some(r) = rows.next()? {
            if found.len() == MAX_SIBLINGS {
                return Ok((found, true));
            }
            if Instant::now() >= deadline {
                return Err(OutOfTime.into());
            }
            found.push(lines::line_hash(&r.get::<_, String>(0)?));
        }
        Ok((found, false))
    }
}
