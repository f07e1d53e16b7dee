//! Reading the audit store: searches (filters over a time range, newest
//! first, paged), one record, and the live figures of the last minutes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rusqlite::types::Value as Sql;
use rusqlite::OptionalExtension;

use super::schema::{tenant_key, COLUMNS};
use super::{
    now_us, AuditStore, Live, Page, Query, Row, MAX_COUNTED, SEARCH_BUDGET, SEARCH_TOO_BROAD,
};

/// A query's conditions as SQL over `records r`, with their values.
pub(super) fn conditions(q: &Query, paged: bool) -> (String, Vec<Sql>) {
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

    /// [`AuditStore::search`] cut off after `budget`, looked at every
    /// `every` SQLite instructions.
    pub(super) fn search_within(
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
}
