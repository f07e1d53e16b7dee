//! Spend on PostgreSQL: the statements [`SpendQuery`] builds, run in one
//! read-only transaction under the search budget.

use std::time::Duration;

use super::super::search::Dialect;
use super::super::spend::{finish, key_value, Spend, SpendQuery, SpendRow, SpendTotal};
use super::super::SEARCH_TOO_BROAD;
use super::search::{canceled, refs, values};
use super::PgStore;

/// A sum as PostgreSQL writes it (`numeric` as text; none for no rows).
fn exact(text: Option<String>) -> i128 {
    text.and_then(|t| t.parse::<i128>().ok()).unwrap_or(0)
}

impl PgStore {
    /// [`crate::audit::AuditStore::spend`] on PostgreSQL.
    pub(in crate::audit) fn spend(
        &self,
        q: &SpendQuery,
        budget: Duration,
    ) -> anyhow::Result<Spend> {
        let (rows_sql, totals_sql, v) = q.sql(Dialect::Postgres);
        let n = q.by.len();
        let ms = budget.as_millis().clamp(1, i32::MAX as u128) as i64;
        let reader = self.reader();
        let res = reader.reader.db.run(move |c| {
            let mut t = c.build_transaction().read_only(true).start()?;
            t.batch_execute(&format!("SET LOCAL statement_timeout = {ms}"))?;
            let mut pv = values(&v);
            let found = match t.query(&rows_sql, &refs(&pv)) {
                Ok(r) => r,
                Err(e) if canceled(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut rows = Vec::with_capacity(found.len());
            for r in &found {
                rows.push(SpendRow {
                    keys: (0..n).map(|i| key_value(r.get(i))).collect(),
                    currency: r.get(n),
                    calls: r.get::<_, i64>(n + 1).max(0) as u64,
                    micros: exact(r.get(n + 2)),
                });
            }
            pv.pop();
            let found = match t.query(&totals_sql, &refs(&pv)) {
                Ok(r) => r,
                Err(e) if canceled(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut totals = Vec::with_capacity(found.len());
            for r in &found {
                totals.push(SpendTotal {
                    currency: r.get(0),
                    calls: r.get::<_, i64>(1).max(0) as u64,
                    micros: exact(r.get(2)),
                });
            }
            t.commit()?;
            Ok(Some((rows, totals)))
        })?;
        let Some((rows, totals)) = res else {
            anyhow::bail!("{SEARCH_TOO_BROAD}: narrow it with a shorter period or filters");
        };
        Ok(finish(q, rows, totals))
    }
}
