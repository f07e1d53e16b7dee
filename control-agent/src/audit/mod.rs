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
//! - **Bounded.** Bodies up to [`MAX_BODY`], lines up to [`MAX_LINE`];
//!   rows older than `retention` and the oldest beyond `max_rows` are
//!   deleted every couple of seconds by a background thread.
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
use sha2::{Digest, Sha256};

pub mod http;
#[cfg(test)]
mod tests;

/// The largest batch a gateway may POST.
pub const MAX_BODY: usize = 8 << 20;
/// The longest line a batch may hold.
pub const MAX_LINE: usize = 1 << 20;
/// The most records one verification reads.
pub const MAX_VERIFY: usize = 2_000_000;
/// How a refusal that is the store's fault (not the batch's) starts: the
/// gateway is told to send the batch again.
pub const STORE_FAILED: &str = "the audit store could not store the batch";
/// Problems reported per chain at most (the rest are counted).
const MAX_PROBLEMS: usize = 100;

/// How long records are kept, and how many at most.
#[derive(Debug, Clone)]
pub struct Limits {
    pub retention: Duration,
    pub max_rows: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            retention: Duration::from_secs(7 * 86_400),
            max_rows: 5_000_000,
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
    /// The line as the gateway wrote it (only filled by `get`).
    pub raw: Option<String>,
}

/// A page of a search, newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page {
    pub rows: Vec<Row>,
    /// The `before_id` of the next page, when there is one.
    pub next_before: Option<i64>,
    /// Matches of the query, ignoring paging.
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
    pub problems: Vec<String>,
}

/// The chains of every record a query matches.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub ok: bool,
    pub records: u64,
    pub chains: Vec<ChainCheck>,
    /// More than [`MAX_VERIFY`] records (or the query's `limit`) matched:
    /// only the first were read.
    pub truncated: bool,
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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    principal TEXT NOT NULL,
    tenant TEXT NOT NULL,
    tenant_key TEXT NOT NULL,
    server TEXT NOT NULL,
    tool TEXT,
    method TEXT,
    direction TEXT NOT NULL,
    outcome TEXT NOT NULL,
    decided_by TEXT,
    reason TEXT,
    risk TEXT,
    trace_id TEXT NOT NULL,
    approval_id TEXT,
    latency_us INTEGER,
    dlp TEXT,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS lines (id INTEGER PRIMARY KEY, raw TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS records_gone AFTER DELETE ON records
    BEGIN DELETE FROM lines WHERE id = old.id; END;
CREATE UNIQUE INDEX IF NOT EXISTS records_line ON records(gateway, hash);
CREATE INDEX IF NOT EXISTS records_chain ON records(gateway, seq);
CREATE INDEX IF NOT EXISTS records_ts ON records(ts_us, tenant_key);
CREATE INDEX IF NOT EXISTS records_gateway ON records(gateway, ts_us, tenant_key);
CREATE INDEX IF NOT EXISTS records_principal ON records(principal, ts_us, tenant_key);
CREATE INDEX IF NOT EXISTS records_tenant ON records(tenant_key, ts_us);
CREATE INDEX IF NOT EXISTS records_server ON records(server, ts_us, tenant_key);
CREATE INDEX IF NOT EXISTS records_tool ON records(tool, ts_us, tenant_key);
CREATE INDEX IF NOT EXISTS records_outcome ON records(outcome, ts_us, tenant_key);
CREATE INDEX IF NOT EXISTS records_trace ON records(trace_id);
CREATE INDEX IF NOT EXISTS records_approval ON records(approval_id) WHERE approval_id IS NOT NULL;
";

/// The columns a [`Row`] is read from, in its order.
const COLUMNS: &str = "r.id, r.gateway, r.seq, r.ts, r.ts_us, r.principal, r.tenant, r.server, \
     r.tool, r.method, r.direction, r.outcome, r.decided_by, r.reason, r.risk, r.trace_id, \
     r.approval_id, r.latency_us, r.dlp";

/// The indexes that held the tenant as written, before `tenant_key`.
const TENANT_INDEXES: &[&str] = &[
    "records_ts",
    "records_gateway",
    "records_principal",
    "records_tenant",
    "records_server",
    "records_tool",
    "records_outcome",
];

/// The form a tenant is compared in (a search's, a viewer's scope, a
/// record's): the tenant scope key approvals and console sessions use
/// ([`warden_config::person::in_scope`]), so `ACME` and `acme` are one
/// tenant everywhere, and `financé`, `ﬁnance` or `ｆｉｎａｎｃｅ` never
/// `finance`.
fn tenant_key(tenant: &str) -> String {
    warden_config::person::tenant_key(tenant)
}

/// The store's `user_version` once every row's `tenant_key` is the tenant
/// scope key ([`tenant_key`]); before it (0), the key of a tenant that is
/// not plain ASCII was its canonical form, which folds accents and
/// compatibility forms (`financé` was `finance`).
const KEYS_STRICT: i64 = 1;

/// Brings a store written before `tenant_key` existed up to date: the
/// column, filled from each row's tenant, and the indexes that scope by it
/// (made again by [`SCHEMA`]).
fn migrate(c: &mut Connection) -> rusqlite::Result<()> {
    let old = c
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'")?
        .exists([])?
        && !c
            .prepare("SELECT 1 FROM pragma_table_info('records') WHERE name = 'tenant_key'")?
            .exists([])?;
    if !old {
        return Ok(());
    }
    let tx = c.transaction()?;
    tx.execute_batch("ALTER TABLE records ADD COLUMN tenant_key TEXT NOT NULL DEFAULT '';")?;
    for index in TENANT_INDEXES {
        tx.execute_batch(&format!("DROP INDEX IF EXISTS {index};"))?;
    }
    let tenants: Vec<String> = tx
        .prepare("SELECT DISTINCT tenant FROM records")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for t in tenants {
        tx.execute(
            "UPDATE records SET tenant_key = ?1 WHERE tenant = ?2",
            params![tenant_key(&t), t],
        )?;
    }
    tx.commit()
}

/// Brings the `tenant_key` of a store written before [`KEYS_STRICT`] up to
/// date, once (its `user_version` says so): the rows whose tenant is not
/// plain ASCII are keyed again (an ASCII tenant's key did not change).
/// Those are found by their tenant's length in bytes, which is its length
/// in characters only for ASCII (or a NUL, which SQLite's `length` stops
/// at: keyed again too, to the same key).
fn rekey(c: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= KEYS_STRICT {
        return Ok(());
    }
    let tx = c.transaction()?;
    let rows: Vec<(i64, String)> = tx
        .prepare(
            "SELECT id, tenant FROM records WHERE length(CAST(tenant AS BLOB)) <> length(tenant)",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut keys: HashMap<String, String> = HashMap::new();
    {
        let mut set = tx.prepare("UPDATE records SET tenant_key = ?1 WHERE id = ?2")?;
        for (id, tenant) in rows {
            let key = keys
                .entry(tenant)
                .or_insert_with_key(|t| tenant_key(t))
                .as_str();
            set.execute(params![key, id])?;
        }
    }
    tx.execute_batch(&format!("PRAGMA user_version = {KEYS_STRICT};"))?;
    tx.commit()
}

fn connect(path: &Path) -> anyhow::Result<Connection> {
    let c = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    c.busy_timeout(Duration::from_secs(10))?;
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY; \
         PRAGMA cache_size=-16384; PRAGMA mmap_size=268435456;",
    )?;
    Ok(c)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// What a line is checked for and indexed by.
#[derive(serde::Deserialize)]
struct Fields {
    seq: u64,
    prev: String,
    ts: String,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    tool: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    decided_by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    risk: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    approval: Option<serde_json::Value>,
    #[serde(default)]
    dlp: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    latency_us: Option<u64>,
}

/// One line, checked, ready to store.
struct Parsed<'a> {
    raw: &'a str,
    hash: [u8; 32],
    prev: [u8; 32],
    ts_us: i64,
    dlp: Option<String>,
    approval_id: Option<String>,
    f: Fields,
}

fn parse_line(line: &[u8]) -> Result<Parsed<'_>, String> {
    if line.len() > MAX_LINE {
        return Err(format!(
            "{} bytes, more than the {MAX_LINE} a line may have",
            line.len()
        ));
    }
    let raw = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_owned())?;
    if !raw.starts_with('{') {
        return Err("not a JSON object".into());
    }
    let f: Fields = serde_json::from_str(raw).map_err(|e| format!("not an audit record: {e}"))?;
    let mut prev = [0u8; 32];
    if f.prev.len() != 64 || hex::decode_to_slice(&f.prev, &mut prev).is_err() {
        return Err("`prev` is not 64 hex digits".into());
    }
    let ts_us =
        f.ts.parse::<jiff::Timestamp>()
            .map_err(|e| format!("`ts` is not an RFC 3339 time: {e}"))?
            .as_microsecond();
    if f.seq > i64::MAX as u64 {
        return Err("`seq` is too large".into());
    }
    let detectors: Vec<&str> = f
        .dlp
        .iter()
        .flatten()
        .filter_map(|d| d.get("detector").and_then(|v| v.as_str()))
        .collect();
    let dlp =
        (!detectors.is_empty()).then(|| serde_json::to_string(&detectors).unwrap_or_default());
    let approval_id = f
        .approval
        .as_ref()
        .and_then(|a| a.get("id"))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    Ok(Parsed {
        raw,
        hash: Sha256::digest(line).into(),
        prev,
        ts_us,
        dlp,
        approval_id,
        f,
    })
}

/// A gateway's name as the agent takes it: 1–128 visible ASCII.
pub fn valid_gateway(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
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
    /// Opens (creating) the store at `path` and starts its retention.
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
        });
        inner.trim()?;
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("audit-retention".into())
            .spawn(move || retention(weak))
            .context("starting the audit retention")?;
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
                for p in &lines {
                    let f = &p.f;
                    let s = |o: &Option<String>| o.clone().unwrap_or_default();
                    let n = rec.execute(params![
                        gateway,
                        f.seq as i64,
                        f.ts,
                        p.ts_us,
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
        let limit = match q.limit {
            0 => 50,
            n => n.min(500),
        };
        let conn = self.inner.reader();
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
        let (w, v) = conditions(q, false);
        let total: i64 = conn
            .prepare_cached(&format!("SELECT count(*) FROM records r WHERE {w}"))?
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
                row.raw = Some(r.get(19)?);
                Ok(row)
            })
            .optional()?;
        Ok(found.filter(|r| warden_config::person::in_scope(tenants, &r.tenant)))
    }

    /// Verifies the hash chain of every record `q` matches (ignoring
    /// paging), per gateway, in seq order: each record's `prev` must be the
    /// SHA-256 of the stored line of the seq before (looked up when the
    /// query did not match it); a seq missing between stored ones is a
    /// gap; a line that no longer hashes to what was ingested was altered.
    pub fn verify(&self, q: &Query) -> anyhow::Result<Verification> {
        let conn = self.inner.reader();
        let (w, mut v) = conditions(q, false);
        // `limit` (when set) caps the records read, as MAX_VERIFY does.
        let cap = if q.limit > 0 {
            q.limit.min(MAX_VERIFY)
        } else {
            MAX_VERIFY
        };
        v.push(Sql::Integer(cap as i64 + 1));
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT r.gateway, r.seq, r.prev, r.hash, l.raw FROM records r JOIN lines l ON l.id = r.id \
             WHERE {w} ORDER BY r.gateway, r.seq, r.id LIMIT ?"
        ))?;
        let mut rows = stmt.query(rusqlite::params_from_iter(v))?;
        let mut out = Verification {
            ok: true,
            records: 0,
            chains: Vec::new(),
            truncated: false,
        };
        let mut chain: Option<Chain> = None;
        while let Some(r) = rows.next()? {
            if out.records as usize == cap {
                out.truncated = true;
                break;
            }
            out.records += 1;
            let gateway: String = r.get(0)?;
            let seq = r.get::<_, i64>(1)?.max(0) as u64;
            let prev: Vec<u8> = r.get(2)?;
            let stored: Vec<u8> = r.get(3)?;
            let raw: String = r.get(4)?;
            let hash: [u8; 32] = Sha256::digest(raw.as_bytes()).into();
            if chain.as_ref().is_none_or(|c| c.check.gateway != gateway) {
                if let Some(c) = chain.take() {
                    out.chains.push(c.finish());
                }
                chain = Some(Chain::new(gateway, seq));
            }
            let Some(c) = chain.as_mut() else { continue };
            c.check.records += 1;
            c.check.last_seq = seq;
            if stored[..] != hash[..] {
                c.problem(format!(
                    "seq {seq}: the stored line no longer hashes to the line that was ingested (altered in the store)"
                ));
            }
            if c.seq == Some(seq) {
                // The same seq twice: two different lines (a trail that
                // started again, or one of them forged).
                if !c.doubled {
                    c.doubled = true;
                    c.problem(format!(
                        "seq {seq}: more than one record holds it (the gateway's trail started again?)"
                    ));
                }
                c.hashes.push(hash);
                // Linked to the seq before as its sibling is.
                if let Some(before) = &c.before {
                    if !before.iter().any(|h| h[..] == prev[..]) {
                        c.problem(format!(
                            "seq {seq}: break: `prev` is not the SHA-256 of the line of seq {}",
                            seq.wrapping_sub(1)
                        ));
                    }
                }
                continue;
            }
            // The lines of the seq before: the previous row when it is
            // that seq, else looked up in the store.
            let before: Option<Vec<[u8; 32]>> = if c.seq.is_some() && c.seq == seq.checked_sub(1) {
                Some(std::mem::take(&mut c.hashes))
            } else if seq == 0 {
                None
            } else {
                let found = self.inner.lines_of(&conn, &c.check.gateway, seq - 1)?;
                (!found.is_empty()).then_some(found)
            };
            c.doubled = false;
            match &before {
                Some(hs) => {
                    if !hs.iter().any(|h| h[..] == prev[..]) {
                        c.problem(format!(
                            "seq {seq}: break: `prev` is not the SHA-256 of the line of seq {} (a line was altered, removed or inserted)",
                            seq - 1
                        ));
                    }
                }
                None if seq == 0 => {
                    if prev.iter().any(|b| *b != 0) {
                        c.problem("seq 0: `prev` is not 64 zeros (the start of a chain)".into());
                    }
                }
                None => {
                    // Missing, or older than what the store keeps.
                    let below: Option<i64> = conn
                        .prepare_cached(
                            "SELECT max(seq) FROM records WHERE gateway = ?1 AND seq < ?2",
                        )?
                        .query_row(params![c.check.gateway, (seq - 1) as i64], |r| r.get(0))?;
                    if let Some(b) = below {
                        let from = b as u64 + 1;
                        c.problem(if from == seq - 1 {
                            format!("gap: seq {from} is missing")
                        } else {
                            format!("gap: seqs {from} to {} are missing", seq - 1)
                        });
                    }
                }
            }
            c.before = before;
            c.seq = Some(seq);
            c.hashes = vec![hash];
        }
        if let Some(c) = chain.take() {
            out.chains.push(c.finish());
        }
        out.ok = out.chains.iter().all(|c| c.ok);
        Ok(out)
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

    /// Applies the retention now (it runs by itself every couple of
    /// seconds); returns the rows deleted.
    pub fn trim(&self) -> anyhow::Result<u64> {
        self.inner.trim()
    }
}

/// One gateway's chain while it is verified.
struct Chain {
    check: ChainCheck,
    /// The seq of the previous row, and the hashes of its lines.
    seq: Option<u64>,
    hashes: Vec<[u8; 32]>,
    /// The hashes of the lines of the seq before the previous row's.
    before: Option<Vec<[u8; 32]>>,
    doubled: bool,
    more: usize,
}

impl Chain {
    fn new(gateway: String, first: u64) -> Chain {
        Chain {
            check: ChainCheck {
                gateway,
                records: 0,
                first_seq: first,
                last_seq: first,
                ok: true,
                problems: Vec::new(),
            },
            seq: None,
            hashes: Vec::new(),
            before: None,
            doubled: false,
            more: 0,
        }
    }

    fn problem(&mut self, p: String) {
        self.check.ok = false;
        if self.check.problems.len() < MAX_PROBLEMS {
            self.check.problems.push(p);
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> ChainCheck {
        if self.more > 0 {
            self.check
                .problems
                .push(format!("… and {} more problems", self.more));
        }
        self.check
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

    /// The hashes of the stored lines of `gateway`'s `seq`.
    fn lines_of(
        &self,
        conn: &Connection,
        gateway: &str,
        seq: u64,
    ) -> anyhow::Result<Vec<[u8; 32]>> {
        let mut stmt = conn.prepare_cached(
            "SELECT l.raw FROM records r JOIN lines l ON l.id = r.id WHERE r.gateway = ?1 AND r.seq = ?2",
        )?;
        let found = stmt
            .query_map(params![gateway, seq as i64], |r| r.get::<_, String>(0))?
            .map(|raw| raw.map(|raw| Sha256::digest(raw.as_bytes()).into()))
            .collect::<rusqlite::Result<Vec<[u8; 32]>>>()?;
        Ok(found)
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
            let n = {
                let c = lock(&self.writer);
                let n = c
                    .prepare_cached(
                        "DELETE FROM records WHERE id IN \
                         (SELECT id FROM records ORDER BY id LIMIT ?1)",
                    )?
                    .execute([excess.min(TRIM_CHUNK as u64) as i64])?;
                n as u64
            };
            self.rows
                .fetch_sub(n.min(self.rows.load(Ordering::Relaxed)), Ordering::Relaxed);
            deleted += n;
            if n == 0 {
                break;
            }
        }
        Ok(deleted)
    }
}

/// Applies the retention every two seconds while the store is open, and
/// refreshes the planner's statistics now and then.
fn retention(store: Weak<Inner>) {
    let mut optimized = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let Some(inner) = store.upgrade() else {
            return;
        };
        if let Err(e) = inner.trim() {
            tracing::warn!("audit store retention: {e}");
        }
        if optimized.elapsed() >= Duration::from_secs(600) {
            optimized = Instant::now();
            let _ = lock(&inner.writer).execute_batch("PRAGMA optimize;");
        }
    }
}
