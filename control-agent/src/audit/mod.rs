//! The agent's audit store: the records the gateways ship
//! (`POST /v1/audit/ingest`, see the gateway's `siem::agent`), kept in
//! SQLite (`<state>/audit.sqlite3`, WAL) for search, live figures and
//! chain verification.
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
//!   see [`lines`]);
//!   rows older than `retention`, the oldest beyond `max_rows`, and the
//!   oldest while the pages in use exceed `max_bytes` are deleted every
//!   couple of seconds by a background thread.
//! - **Indexed** for the searches the console and the API make: one
//!   filter (principal, tenant, server, tool, outcome, gateway, trace,
//!   approval) over a time range, newest first, with the number of matches.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use rusqlite::types::Value as Sql;
use rusqlite::{params, Connection, OptionalExtension};

pub mod query;
mod lines;
mod schema;
#[cfg(test)]
mod tests;
mod verify;

use lines::parse_line;
pub use lines::valid_gateway;
#[cfg(test)]
use schema::KEYS_STRICT;
use schema::{connect, migrate, rekey, tenant_key, COLUMNS, SCHEMA};

/// The largest batch a gateway may POST.
pub const MAX_BODY: usize = 8 << 20;
/// The longest line a batch may hold.
pub const MAX_LINE: usize = 1 << 20;
/// The most records one verification reads.
pub const MAX_VERIFY: usize = 2_000_000;

/// How a search cut off after [`SEARCH_BUDGET`] begins its error.
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

/// The store. Writes go through one connection, reads through a small pool
/// (WAL: readers never wait for the writer).
pub struct AuditStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    limits: Limits,
    rows: AtomicU64,
    /// The bytes the store's pages hold, as of the last trim.
    bytes: AtomicU64,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ingested {
    pub accepted: u64,
    pub duplicates: u64,
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
    pub tool: Option<String>,
    pub outcome: Option<String>,
    /// A substring of the reason.
    pub reason: Option<String>,
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A query's conditions as SQL over `records r`, with their values.
fn conditions(q: &Query, paged: bool) -> (String, Vec<Sql>) {
    let mut w: Vec<String> = Vec::new();
    let mut v: Vec<Sql> = Vec::new();
    if let Some(t) = q.from_us {
        w.push("r.ts_us >= ?".into());
        v.push(Sql::Integer(t));
    }
    if let Some(t) = q.to_us {
        w.push("r.ts_us < ?".into());
        v.push(Sql::Integer(t));
    }
    for (col, val) in [
        ("gateway", &q.gateway),
        ("principal", &q.principal),
        ("server", &q.server),
        ("tool", &q.tool),
        ("outcome", &q.outcome),
        ("approval_id", &q.approval_id),
        ("trace_id", &q.trace_id),
    ] {
        if let Some(x) = val {
            w.push(format!("r.{col} = ?"));
            v.push(Sql::Text(x.clone()));
        }
    }
    if let Some(x) = q.reason.as_ref().filter(|r| !r.is_empty()) {
        w.push("instr(r.reason, ?) > 0".into());
        v.push(Sql::Text(x.clone()));
    }
    // Tenants are compared by the tenant scope key, as approvals and
    // console sessions compare them.
    if let Some(x) = &q.tenant {
        w.push("r.tenant_key = ?".into());
        v.push(Sql::Text(tenant_key(x)));
    }
    if !q.tenants.is_empty() {
        w.push(format!(
            "r.tenant_key IN ({})",
            vec!["?"; q.tenants.len()].join(",")
        ));
        v.extend(q.tenants.iter().map(|t| Sql::Text(tenant_key(t))));
    }
    if paged {
        if let Some(b) = q.before_id {
            w.push("r.id < ?".into());
            v.push(Sql::Integer(b));
        }
    }
    let sql = if w.is_empty() {
        "1".to_owned()
    } else {
        w.join(" AND ")
    };
    (sql, v)
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let dlp: Option<String> = r.get(18)?;
    Ok(Row {
        id: r.get(0)?,
        gateway: r.get(1)?,
        seq: r.get::<_, i64>(2)? as u64,
        ts: r.get(3)?,
        ts_us: r.get(4)?,
        principal: r.get(5)?,
        tenant: r.get(6)?,
        server: r.get(7)?,
        tool: r.get(8)?,
        method: r.get(9)?,
        direction: r.get(10)?,
        outcome: r.get(11)?,
        decided_by: r.get(12)?,
        reason: r.get(13)?,
        risk: r.get(14)?,
        trace_id: r.get(15)?,
        approval_id: r.get(16)?,
        latency_us: r.get::<_, Option<i64>>(17)?.map(|n| n.max(0) as u64),
        dlp: dlp
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_default(),
        notice: r.get(19)?,
        raw: None,
    })
}

/// Counts, most first (ties by name), at most `n`.
fn top(counts: HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

impl AuditStore {
    /// Opens (creating) the store at `path` and applies its limits once;
    /// [`crate::jobs::audit_retention`] keeps applying them.
    pub fn open(path: &Path, limits: Limits) -> anyhow::Result<AuditStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut writer = connect(path)?;
        migrate(&mut writer)
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
        let inner = Arc::new(Inner {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            limits,
            rows: AtomicU64::new(rows.max(0) as u64),
            bytes: AtomicU64::new(0),
        });
        inner.trim()?;
        Ok(AuditStore { inner })
    }

    /// Stores a batch of lines (NDJSON) a gateway shipped: all or none.
    /// `Err`: why the batch is refused, naming the line.
    pub fn ingest(&self, gateway: &str, ndjson: &[u8]) -> Result<Ingested, String> {
        if !valid_gateway(gateway) {
            return Err("the gateway's id must be 1-128 visible ASCII characters".into());
        }
        if ndjson.len() > MAX_BODY {
            return Err(format!(
                "the batch is {} bytes, more than the {MAX_BODY} it may have",
                ndjson.len()
            ));
        }
        let mut lines = Vec::new();
        for (i, line) in ndjson.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            lines.push(parse_line(line).map_err(|e| format!("line {}: {e}", i + 1))?);
        }
        if lines.is_empty() {
            return Ok(Ingested::default());
        }
        let mut done = Ingested::default();
        let mut conn = lock(&self.inner.writer);
        let stored = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut rec = tx.prepare_cached(
                    "INSERT OR IGNORE INTO records (gateway, seq, ts, ts_us, principal, tenant, \
                     server, tool, method, direction, outcome, decided_by, reason, risk, trace_id, \
                     approval_id, latency_us, dlp, prev, hash, tenant_key) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                     ?17, ?18, ?19, ?20, ?21)",
                )?;
                let mut raw = tx.prepare_cached("INSERT INTO lines (id, raw) VALUES (?1, ?2)")?;
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
                    ])?;
                    if n == 1 {
                        raw.execute(params![tx.last_insert_rowid(), p.raw])?;
                        done.accepted += 1;
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
                self.inner.rows.fetch_add(done.accepted, Ordering::Relaxed);
                Ok(done)
            }
            Err(e) => {
                tracing::error!("audit store: {e}");
                Err(format!("{STORE_FAILED}: {e}"))
            }
        }
    }

    /// A page of the records `q` matches, newest first, and how many match.
    pub fn search(&self, q: &Query) -> anyhow::Result<Page> {
        self.search_within(q, SEARCH_BUDGET, 10_000)
    }

    /// [`AuditStore::search`] cut off after `budget`, looked at every
    /// `every` SQLite instructions.
    fn search_within(
        &self,
        q: &Query,
        budget: std::time::Duration,
        every: std::ffi::c_int,
    ) -> anyhow::Result<Page> {
        let limit = match q.limit {
            0 => 50,
            n => n.min(500),
        };
        let conn = self.inner.reader();
        // A search that would walk the whole store (a `reason` no index
        // covers, no time window) is cut off after SEARCH_BUDGET, so a few
        // of them cannot hold both readers from everyone else.
        let deadline = std::time::Instant::now() + budget;
        conn.progress_handler(every, Some(move || std::time::Instant::now() >= deadline));
        let res = self.search_on(&conn, q, limit);
        conn.progress_handler(0, None::<fn() -> bool>);
        res.map_err(|e| match e.downcast_ref::<rusqlite::Error>() {
            Some(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::OperationInterrupted =>
            {
                anyhow::anyhow!(
                    "{SEARCH_TOO_BROAD}: narrow it with a time window (from=, to=) or fewer words"
                )
            }
            _ => e,
        })
    }

    fn search_on(
        &self,
        conn: &rusqlite::Connection,
        q: &Query,
        limit: usize,
    ) -> anyhow::Result<Page> {
        let (w, mut v) = conditions(q, true);
        v.push(Sql::Integer(limit as i64 + 1));
        let sql = format!(
            "SELECT {COLUMNS} FROM records r WHERE r.id IN \
             (SELECT r.id FROM records r WHERE {w} ORDER BY r.id DESC LIMIT ?) \
             ORDER BY r.id DESC"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt
            .query_map(rusqlite::params_from_iter(v), row_of)?
            .collect::<rusqlite::Result<Vec<Row>>>()?;
        let next_before = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| r.id)
        } else {
            None
        };
        // Counted up to MAX_COUNTED: a total past it reads as that many.
        let (w, mut v) = conditions(q, false);
        v.push(Sql::Integer(MAX_COUNTED));
        let total: i64 = conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM (SELECT 1 FROM records r WHERE {w} LIMIT ?)"
            ))?
            .query_row(rusqlite::params_from_iter(v), |r| r.get(0))?;
        Ok(Page {
            rows,
            next_before,
            total: total.max(0) as u64,
        })
    }

    /// One record with its line, if it is in the viewer's scope.
    pub fn get(&self, id: i64, tenants: &[String]) -> anyhow::Result<Option<Row>> {
        let conn = self.inner.reader();
        let found = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, l.raw FROM records r JOIN lines l ON l.id = r.id WHERE r.id = ?"
            ))?
            .query_row([id], |r| {
                let mut row = row_of(r)?;
                row.raw = Some(r.get(20)?);
                Ok(row)
            })
            .optional()?;
        Ok(found.filter(|r| warden_config::person::in_scope(tenants, &r.tenant)))
    }

    /// Figures of the last `window` (1 s to 1 h): calls (`tools/call`
    /// requests) per second, by outcome, tool, principal and gateway; the
    /// reasons given; DLP findings; latency of the calls (each call's record
    /// is written after its reply, with the time it took).
    pub fn live(
        &self,
        window: Duration,
        gateway: Option<&str>,
        tenants: &[String],
    ) -> anyhow::Result<Live> {
        let secs = window.as_secs().clamp(1, 3600);
        let now = now_us();
        let end_s = now.div_euclid(1_000_000);
        let start_s = end_s - secs as i64 + 1;
        let q = Query {
            from_us: Some(start_s * 1_000_000),
            // A record stamped in the future is no part of any window.
            to_us: Some((end_s + 1) * 1_000_000),
            gateway: gateway.map(str::to_owned),
            tenants: tenants.to_vec(),
            ..Query::default()
        };
        let (w, v) = conditions(&q, false);
        let conn = self.inner.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT r.ts_us, r.gateway, r.method, r.direction, r.outcome, r.tool, r.principal, \
             r.reason, r.latency_us, r.dlp FROM records r WHERE {w}"
        ))?;
        let mut rows = stmt.query(rusqlite::params_from_iter(v))?;
        let mut per_second: BTreeMap<i64, u64> = (start_s..=end_s).map(|s| (s, 0)).collect();
        let (mut outcomes, mut tools, mut principals, mut reasons, mut dlp, mut gateways) = (
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
        );
        let mut latencies: Vec<u64> = Vec::new();
        let mut calls = 0u64;
        while let Some(r) = rows.next()? {
            let ts_us: i64 = r.get(0)?;
            let method: Option<String> = r.get(2)?;
            let direction: String = r.get(3)?;
            if let Some(reason) = r.get::<_, Option<String>>(7)? {
                *reasons.entry(reason).or_insert(0) += 1;
            }
            if let Some(d) = r.get::<_, Option<String>>(9)? {
                for det in serde_json::from_str::<Vec<String>>(&d).unwrap_or_default() {
                    *dlp.entry(det).or_insert(0) += 1;
                }
            }
            if method.as_deref() != Some("tools/call") {
                continue;
            }
            if direction == "request" {
                calls += 1;
                if let Some(n) = per_second.get_mut(&ts_us.div_euclid(1_000_000)) {
                    *n += 1;
                }
                *outcomes.entry(r.get::<_, String>(4)?).or_insert(0) += 1;
                let tool = r.get::<_, Option<String>>(5)?.unwrap_or_else(|| "-".into());
                *tools.entry(tool).or_insert(0) += 1;
                *principals.entry(r.get::<_, String>(6)?).or_insert(0) += 1;
                *gateways.entry(r.get::<_, String>(1)?).or_insert(0) += 1;
                // The gateway writes one record per call, after its
                // reply: its latency is the call's.
                if let Some(l) = r.get::<_, Option<i64>>(8)? {
                    latencies.push(l.max(0) as u64);
                }
            }
        }
        latencies.sort_unstable();
        let pct = |p: f64| -> Option<f64> {
            if latencies.is_empty() {
                return None;
            }
            let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
            Some(latencies[i] as f64 / 1000.0)
        };
        Ok(Live {
            window_secs: secs,
            calls,
            calls_per_sec: calls as f64 / secs as f64,
            per_second: per_second.into_iter().collect(),
            outcomes: top(outcomes, 20),
            top_tools: top(tools, 10),
            top_principals: top(principals, 10),
            top_reasons: top(reasons, 10),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            dlp: top(dlp, 20),
            gateways: top(gateways, 20),
        })
    }

    /// Records kept.
    pub fn rows(&self) -> u64 {
        self.inner.rows.load(Ordering::Relaxed)
    }

    /// The bytes the store's pages hold (as of the last trim, every couple
    /// of seconds).
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Applies the retention now (it runs by itself every couple of
    /// seconds); returns the rows deleted.
    pub fn trim(&self) -> anyhow::Result<u64> {
        self.inner.trim()
    }
}

/// Rows deleted per statement, so that the writer is never held long.
const TRIM_CHUNK: i64 = 5_000;

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

    /// Deletes the `n` oldest records (their lines with them); returns how
    /// many went.
    fn delete_oldest(&self, n: u64) -> anyhow::Result<u64> {
        let gone = lock(&self.writer)
            .prepare_cached(
                "DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT ?1)",
            )?
            .execute([n as i64])? as u64;
        self.rows.fetch_sub(
            gone.min(self.rows.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        Ok(gone)
    }

    /// Deletes what is older than the retention and the oldest beyond
    /// `max_rows`, a chunk at a time.
    fn trim(&self) -> anyhow::Result<u64> {
        let cutoff =
            now_us().saturating_sub(self.limits.retention.as_micros().min(i64::MAX as u128) as i64);
        let mut deleted = 0u64;
        loop {
            let n = {
                let c = lock(&self.writer);
                let n = c
                    .prepare_cached(
                        "DELETE FROM records WHERE id IN \
                         (SELECT id FROM records WHERE ts_us < ?1 LIMIT ?2)",
                    )?
                    .execute(params![cutoff, TRIM_CHUNK])?;
                n as u64
            };
            self.rows
                .fetch_sub(n.min(self.rows.load(Ordering::Relaxed)), Ordering::Relaxed);
            deleted += n;
            if n < TRIM_CHUNK as u64 {
                break;
            }
        }
        loop {
            let excess = self
                .rows
                .load(Ordering::Relaxed)
                .saturating_sub(self.limits.max_rows);
            if excess == 0 {
                break;
            }
            let n = self.delete_oldest(excess.min(TRIM_CHUNK as u64))?;
            deleted += n;
            if n == 0 {
                break;
            }
        }
        // The bytes: the oldest records go, in proportion to the
        // overshoot (pages freed in the indexes lag the rows deleted), a
        // few rounds at most per trim; the next trim goes on.
        for _ in 0..16 {
            let used = used_bytes(&lock(&self.writer))?;
            self.bytes.store(used, Ordering::Relaxed);
            if used <= self.limits.max_bytes {
                break;
            }
            let rows = self.rows.load(Ordering::Relaxed);
            let over = (used - self.limits.max_bytes) as u128;
            // In proportion, never more: with large lines a few rows are
            // the whole overshoot, and the newest must stay.
            let want =
                ((rows as u128 * over).div_ceil(used as u128) as u64).clamp(1, TRIM_CHUNK as u64);
            let n = self.delete_oldest(want)?;
            deleted += n;
            if n == 0 {
                break;
            }
        }
        Ok(deleted)
    }
}

/// The bytes of the database's pages in use (its file less the free pages).
fn used_bytes(c: &Connection) -> rusqlite::Result<u64> {
    let pragma = |p: &str| c.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0));
    let pages = pragma("page_count")? - pragma("freelist_count")?;
    Ok(pages.max(0) as u64 * pragma("page_size")?.max(0) as u64)
}

/// A hold on an [`AuditStore`] that does not keep it open: the retention
/// job ([`crate::jobs::audit_retention`]) keeps one and ends once the store
/// is dropped.
#[derive(Clone)]
pub struct WeakAuditStore(Weak<Inner>);

impl WeakAuditStore {
    /// The store, while it is open.
    pub fn upgrade(&self) -> Option<AuditStore> {
        self.0.upgrade().map(|inner| AuditStore { inner })
    }
}

impl AuditStore {
    /// A hold on the store that does not keep it open.
    pub fn downgrade(&self) -> WeakAuditStore {
        WeakAuditStore(Arc::downgrade(&self.inner))
    }

    /// Runs `PRAGMA optimize` on the writer (the retention job does, every
    /// ten minutes); a failure is ignored.
    pub fn optimize(&self) {
        let _ = lock(&self.inner.writer).execute_batch("PRAGMA optimize;");
    }
}
