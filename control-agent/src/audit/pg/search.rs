//! The searches on PostgreSQL: a page of records, one record, the live
//! figures; the conditions' values as parameters and a record's row.

use std::sync::Mutex;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;

use super::super::search::{conditions_in, Dialect, LiveRow, LiveWindow, Param};
use super::super::{lock, Live, Page, Query, Row, MAX_COUNTED, SEARCH_TOO_BROAD};
use super::PgStore;

/// The columns a [`Row`] is read from, in its order.
const COLUMNS: &str = "r.id, r.gateway, r.seq, r.ts, r.ts_us, r.principal, r.tenant, r.server, \
     r.tool, r.method, r.direction, r.outcome, r.decided_by, r.reason, r.risk, r.trace_id, \
     r.approval_id, r.latency_us, r.dlp, r.notice";

impl PgStore {
    /// [`crate::audit::AuditStore::search_within`] on PostgreSQL: cut off by its
    /// statement timeout.
    pub(in crate::audit) fn search_within(
        &self,
        q: &Query,
        budget: Duration,
    ) -> anyhow::Result<Page> {
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

    /// [`crate::audit::AuditStore::get`] on PostgreSQL.
    pub(in crate::audit) fn get(&self, id: i64, tenants: &[String]) -> anyhow::Result<Option<Row>> {
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

    /// [`crate::audit::AuditStore::live`] on PostgreSQL.
    pub(in crate::audit) fn live(
        &self,
        window: Duration,
        gateway: Option<&str>,
        tenants: &[String],
    ) -> anyhow::Result<Live> {
        let (q, acc) = LiveWindow::new(window, gateway, tenants);
        let (w, v) = conditions_in(&q, false, Dialect::Postgres);
        let sql = format!(
            "SELECT r.ts_us, r.gateway, r.method, r.direction, r.outcome, r.tool, r.principal, \
             r.reason, r.latency_us, r.dlp, \
             CASE WHEN strpos(r.raw, '\"anomaly\"') > 0 \
             THEN (r.raw::jsonb #> '{{anomaly,signals}}')::text END \
             FROM warden_audit r WHERE {w}"
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
                    anomaly: r.get(10),
                });
            }
            Ok(Some(acc.finish()))
        })?;
        live.ok_or_else(|| anyhow::anyhow!("the live figures could not be read"))
    }
}

pub(super) fn canceled(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::QUERY_CANCELED)
}

/// The conditions' values as PostgreSQL parameters.
pub(super) fn values(v: &[Param]) -> Vec<Box<dyn ToSql + Sync + Send>> {
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

pub(super) fn refs(v: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
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
