//! Reading the audit store: searches (filters over a time range, newest
//! first, paged), one record, and the live figures of the last minutes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rusqlite::types::Value as Sql;
use rusqlite::OptionalExtension;

use super::schema::{tenant_key, COLUMNS};
use super::{
    now_us, AuditStore, Backend, Inner, Live, Page, Query, Row, MAX_COUNTED, SEARCH_BUDGET,
    SEARCH_TOO_BROAD,
};

/// A value a query's conditions compare with.
#[derive(Debug, Clone)]
pub(super) enum Param {
    Int(i64),
    Text(String),
    /// A list of texts (PostgreSQL's `= ANY`).
    Texts(Vec<String>),
}

impl Param {
    pub(super) fn sqlite(self) -> Sql {
        match self {
            Param::Int(n) => Sql::Integer(n),
            Param::Text(t) => Sql::Text(t),
            Param::Texts(_) => unreachable!("SQLite's conditions never hold a list"),
        }
    }
}

/// The SQL a store speaks: placeholders and the substring test differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    /// Placeholders numbered from `$1`.
    Postgres,
}

/// A query's conditions as SQL over `records r` (SQLite) or `warden_audit
/// r` (PostgreSQL), with their values: on both the same filters, compared
/// the same way (exact values; the reason as a substring; tenants by the
/// tenant scope key). Values are bound, never written into the SQL.
pub(super) fn conditions_in(q: &Query, paged: bool, d: Dialect) -> (String, Vec<Param>) {
    let mut w: Vec<String> = Vec::new();
    let mut v: Vec<Param> = Vec::new();
    // The next placeholder.
    let p = |v: &Vec<Param>| match d {
        Dialect::Sqlite => "?".to_owned(),
        Dialect::Postgres => format!("${}", v.len() + 1),
    };
    // PostgreSQL's text holds no NUL: stored records have it as U+FFFD
    // (see `pg`), and so are the values compared with them.
    let text = |x: &str| match d {
        Dialect::Sqlite => x.to_owned(),
        Dialect::Postgres => super::pg::no_nul(x),
    };
    if let Some(t) = q.from_us {
        w.push(format!("r.ts_us >= {}", p(&v)));
        v.push(Param::Int(t));
    }
    if let Some(t) = q.to_us {
        w.push(format!("r.ts_us < {}", p(&v)));
        v.push(Param::Int(t));
    }
    for (col, val) in [
        ("gateway", &q.gateway),
        ("principal", &q.principal),
        ("server", &q.server),
        ("tool", &q.tool),
        ("team", &q.team),
        ("outcome", &q.outcome),
        ("approval_id", &q.approval_id),
        ("trace_id", &q.trace_id),
        ("currency", &q.currency),
    ] {
        match val {
            // A record without a tool, or a team, has it NULL (or, a
            // tool, empty): an empty value finds those.
            Some(x) if x.is_empty() && matches!(col, "tool" | "team") => {
                w.push(format!("(r.{col} IS NULL OR r.{col} = '')"));
            }
            Some(x) => {
                w.push(format!("r.{col} = {}", p(&v)));
                v.push(Param::Text(text(x)));
            }
            None => {}
        }
    }
    if q.priced {
        w.push("r.cost_micros IS NOT NULL".to_owned());
    }
    if let Some(x) = q.reason.as_ref().filter(|r| !r.is_empty()) {
        w.push(match d {
            Dialect::Sqlite => "instr(r.reason, ?) > 0".to_owned(),
            Dialect::Postgres => format!("strpos(r.reason, {}) > 0", p(&v)),
        });
        v.push(Param::Text(text(x)));
    }
    // Tenants are compared by the tenant scope key, as approvals and
    // console sessions compare them.
    if let Some(x) = &q.tenant {
        w.push(format!("r.tenant_key = {}", p(&v)));
        v.push(Param::Text(text(&tenant_key(x))));
    }
    if !q.tenants.is_empty() {
        match d {
            Dialect::Sqlite => {
                w.push(format!(
                    "r.tenant_key IN ({})",
                    vec!["?"; q.tenants.len()].join(",")
                ));
                v.extend(q.tenants.iter().map(|t| Param::Text(tenant_key(t))));
            }
            Dialect::Postgres => {
                w.push(format!("r.tenant_key = ANY({})", p(&v)));
                v.push(Param::Texts(
                    q.tenants.iter().map(|t| text(&tenant_key(t))).collect(),
                ));
            }
        }
    }
    if paged {
        if let Some(b) = q.before_id {
            w.push(format!("r.id < {}", p(&v)));
            v.push(Param::Int(b));
        }
    }
    let sql = if w.is_empty() {
        match d {
            Dialect::Sqlite => "1".to_owned(),
            Dialect::Postgres => "true".to_owned(),
        }
    } else {
        w.join(" AND ")
    };
    (sql, v)
}

/// A query's conditions as SQLite's SQL over `records r`, with their
/// values.
pub(super) fn conditions(q: &Query, paged: bool) -> (String, Vec<Sql>) {
    let (w, v) = conditions_in(q, paged, Dialect::Sqlite);
    (w, v.into_iter().map(Param::sqlite).collect())
}

pub(super) fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
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
    /// A page of the records `q` matches, newest first, and how many match.
    pub fn search(&self, q: &Query) -> anyhow::Result<Page> {
        self.search_within(q, SEARCH_BUDGET, 10_000)
    }

    /// [`AuditStore::search`] cut off after `budget` (on SQLite looked at
    /// every `every` instructions; on PostgreSQL, its statement timeout).
    pub(super) fn search_within(
        &self,
        q: &Query,
        budget: std::time::Duration,
        every: std::ffi::c_int,
    ) -> anyhow::Result<Page> {
        match &*self.inner {
            Backend::Sqlite(s) => s.search_within(q, budget, every),
            Backend::Postgres(p) => p.search_within(q, budget),
        }
    }

    /// One record with its line, if it is in the viewer's scope.
    pub fn get(&self, id: i64, tenants: &[String]) -> anyhow::Result<Option<Row>> {
        match &*self.inner {
            Backend::Sqlite(s) => s.get(id, tenants),
            Backend::Postgres(p) => p.get(id, tenants),
        }
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
        match &*self.inner {
            Backend::Sqlite(s) => s.live(window, gateway, tenants),
            Backend::Postgres(p) => p.live(window, gateway, tenants),
        }
    }
}

impl Inner {
    /// [`AuditStore::search_within`] on SQLite.
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
        let conn = self.reader();
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

    /// [`AuditStore::get`] on SQLite.
    fn get(&self, id: i64, tenants: &[String]) -> anyhow::Result<Option<Row>> {
        let conn = self.reader();
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

    /// [`AuditStore::live`] on SQLite.
    fn live(
        &self,
        window: Duration,
        gateway: Option<&str>,
        tenants: &[String],
    ) -> anyhow::Result<Live> {
        let (q, mut acc) = LiveWindow::new(window, gateway, tenants);
        let (w, v) = conditions(&q, false);
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT r.ts_us, r.gateway, r.method, r.direction, r.outcome, r.tool, r.principal, \
             r.reason, r.latency_us, r.dlp, \
             (SELECT CASE WHEN instr(raw, '\"anomaly\"') > 0 \
              THEN json_extract(raw, '$.anomaly.signals') END FROM lines WHERE lines.id = r.id) \
             FROM records r WHERE {w}"
        ))?;
        let mut rows = stmt.query(rusqlite::params_from_iter(v))?;
        while let Some(r) = rows.next()? {
            acc.add(LiveRow {
                ts_us: r.get(0)?,
                gateway: r.get(1)?,
                method: r.get(2)?,
                direction: r.get(3)?,
                outcome: r.get(4)?,
                tool: r.get(5)?,
                principal: r.get(6)?,
                reason: r.get(7)?,
                latency_us: r.get(8)?,
                dlp: r.get(9)?,
                anomaly: r.get(10)?,
            });
        }
        Ok(acc.finish())
    }
}

/// What the live figures read of one record.
pub(super) struct LiveRow {
    pub(super) ts_us: i64,
    pub(super) gateway: String,
    pub(super) method: Option<String>,
    pub(super) direction: String,
    pub(super) outcome: String,
    pub(super) tool: Option<String>,
    pub(super) principal: String,
    pub(super) reason: Option<String>,
    pub(super) latency_us: Option<i64>,
    pub(super) dlp: Option<String>,
    /// The record's `anomaly.signals` (JSON), when it has any.
    pub(super) anomaly: Option<String>,
}

/// The live figures of a window, added up record by record (both stores
/// read the window's records and count them here).
pub(super) struct LiveWindow {
    secs: u64,
    per_second: BTreeMap<i64, u64>,
    outcomes: HashMap<String, u64>,
    tools: HashMap<String, u64>,
    principals: HashMap<String, u64>,
    reasons: HashMap<String, u64>,
    dlp: HashMap<String, u64>,
    gateways: HashMap<String, u64>,
    anomalies: HashMap<String, u64>,
    latencies: Vec<u64>,
    calls: u64,
}

impl LiveWindow {
    /// The query of the window ending now, and its empty figures.
    pub(super) fn new(
        window: Duration,
        gateway: Option<&str>,
        tenants: &[String],
    ) -> (Query, LiveWindow) {
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
        let acc = LiveWindow {
            secs,
            per_second: (start_s..=end_s).map(|s| (s, 0)).collect(),
            outcomes: HashMap::new(),
            tools: HashMap::new(),
            principals: HashMap::new(),
            reasons: HashMap::new(),
            dlp: HashMap::new(),
            gateways: HashMap::new(),
            anomalies: HashMap::new(),
            latencies: Vec::new(),
            calls: 0,
        };
        (q, acc)
    }

    pub(super) fn add(&mut self, r: LiveRow) {
        if let Some(reason) = r.reason {
            *self.reasons.entry(reason).or_insert(0) += 1;
        }
        if let Some(d) = r.dlp {
            for det in serde_json::from_str::<Vec<String>>(&d).unwrap_or_default() {
                *self.dlp.entry(det).or_insert(0) += 1;
            }
        }
        if r.method.as_deref() != Some("tools/call") || r.direction != "request" {
            return;
        }
        if let Some(a) = r.anomaly {
            for sig in serde_json::from_str::<Vec<serde_json::Value>>(&a).unwrap_or_default() {
                if let Some(kind) = sig.get("kind").and_then(|k| k.as_str()) {
                    *self.anomalies.entry(kind.to_owned()).or_insert(0) += 1;
                }
            }
        }
        self.calls += 1;
        if let Some(n) = self.per_second.get_mut(&r.ts_us.div_euclid(1_000_000)) {
            *n += 1;
        }
        *self.outcomes.entry(r.outcome).or_insert(0) += 1;
        *self
            .tools
            .entry(r.tool.unwrap_or_else(|| "-".into()))
            .or_insert(0) += 1;
        *self.principals.entry(r.principal).or_insert(0) += 1;
        *self.gateways.entry(r.gateway).or_insert(0) += 1;
        // The gateway writes one record per call, after its reply: its
        // latency is the call's.
        if let Some(l) = r.latency_us {
            self.latencies.push(l.max(0) as u64);
        }
    }

    pub(super) fn finish(mut self) -> Live {
        self.latencies.sort_unstable();
        let latencies = &self.latencies;
        let pct = |p: f64| -> Option<f64> {
            if latencies.is_empty() {
                return None;
            }
            let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
            Some(latencies[i] as f64 / 1000.0)
        };
        Live {
            window_secs: self.secs,
            calls: self.calls,
            calls_per_sec: self.calls as f64 / self.secs as f64,
            per_second: self.per_second.into_iter().collect(),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            outcomes: top(self.outcomes, 20),
            top_tools: top(self.tools, 10),
            top_principals: top(self.principals, 10),
            top_reasons: top(self.reasons, 10),
            dlp: top(self.dlp, 20),
            gateways: top(self.gateways, 20),
            anomalies: top(self.anomalies, 10),
        }
    }
}
