//! Spend: the priced records of a period `[from, to)` added up by tenant,
//! team, principal, server and tool (any of them), in each currency, over
//! the columns ingest fills from a record's `cost` (`cost.rs`). The same
//! filters and tenant scope as a search ([`super::search::conditions_in`]),
//! so each row comes with the search that lists exactly its records
//! ([`SpendQuery::records`]). Both stores run the same SQL (this module
//! builds it); the sums are exact (integer millionths, added up as `i128`).

use std::time::Duration;

use rusqlite::types::Value as Sql;

use super::query::{parse_time, set_absent};
use super::search::{conditions_in, Dialect, Param};
use super::{AuditStore, Backend, Inner, Query, SEARCH_BUDGET, SEARCH_TOO_BROAD};

/// Groups an answer holds at most (and the default).
pub const MAX_GROUPS: usize = 1000;

/// What spend is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Key {
    Tenant,
    Team,
    Principal,
    Server,
    Tool,
}

impl Key {
    pub const ALL: [Key; 5] = [
        Key::Tenant,
        Key::Team,
        Key::Principal,
        Key::Server,
        Key::Tool,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Key::Tenant => "tenant",
            Key::Team => "team",
            Key::Principal => "principal",
            Key::Server => "server",
            Key::Tool => "tool",
        }
    }

    fn parse(s: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == s)
    }

    /// What rows are grouped on: a tenant by its scope key (as searches
    /// compare it); a record without a team or tool is one group.
    fn group(self) -> &'static str {
        match self {
            Key::Tenant => "r.tenant_key",
            Key::Team => "coalesce(r.team, '')",
            Key::Principal => "r.principal",
            Key::Server => "r.server",
            Key::Tool => "coalesce(r.tool, '')",
        }
    }

    /// What a row shows: a tenant as one of its records writes it (every
    /// spelling of the group has its key).
    fn shown(self) -> &'static str {
        match self {
            Key::Tenant => "min(r.tenant)",
            k => k.group(),
        }
    }

    /// The filter of a search on this key.
    fn field(self, q: &mut Query) -> &mut Option<String> {
        match self {
            Key::Tenant => &mut q.tenant,
            Key::Team => &mut q.team,
            Key::Principal => &mut q.principal,
            Key::Server => &mut q.server,
            Key::Tool => &mut q.tool,
        }
    }
}

/// How an answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// A spend report asked.
#[derive(Debug, Clone)]
pub struct SpendQuery {
    /// Unix microseconds, inclusive.
    pub from_us: i64,
    /// Unix microseconds, exclusive.
    pub to_us: i64,
    /// At least one key, each once.
    pub by: Vec<Key>,
    /// The filters (tenant, team, principal, server, tool; an empty one:
    /// records without it) and the viewer's scope (`tenants`).
    pub filter: Query,
    /// Groups at most (1..=[`MAX_GROUPS`]).
    pub limit: usize,
}

/// One group's spend in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendRow {
    /// The group's value of each key of `by`, in its order (`None`: its
    /// records have none).
    pub keys: Vec<Option<String>>,
    pub calls: u64,
    pub micros: i128,
    pub currency: String,
}

/// Every matching record's spend in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendTotal {
    pub calls: u64,
    pub micros: i128,
    pub currency: String,
}

/// A report: its groups, most spent first, and the totals of every match
/// (the groups left out included).
#[derive(Debug, Clone, Default)]
pub struct Spend {
    pub rows: Vec<SpendRow>,
    pub totals: Vec<SpendTotal>,
    /// More groups matched than `limit`: the most spent are shown.
    pub truncated: bool,
}

/// The first instant of the UTC month holding `us`, and of the next.
pub fn month_of(us: i64) -> (i64, i64) {
    let at = |d: jiff::civil::Date| {
        d.to_zoned(jiff::tz::TimeZone::UTC)
            .map_or(0, |z| z.timestamp().as_microsecond())
    };
    let day = jiff::Timestamp::from_microsecond(us)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .first_of_month();
    let next = day.checked_add(jiff::Span::new().months(1)).unwrap_or(day);
    (at(day), at(next))
}

/// A period's bound: a date (`2026-05-01`: its first instant, UTC), an
/// RFC 3339 time or unix seconds.
pub fn parse_bound(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if t.len() == 10 {
        if let Ok(d) = t.parse::<jiff::civil::Date>() {
            return d
                .to_zoned(jiff::tz::TimeZone::UTC)
                .map(|z| z.timestamp().as_microsecond())
                .map_err(|e| format!("`{t}`: {e}"));
        }
    }
    parse_time(t).map_err(|_| format!("`{t}` is neither a date, an RFC 3339 time nor unix seconds"))
}

/// A time as a search's query string gives it back exactly.
fn time_text(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us).map_or_else(|_| us.to_string(), |t| t.to_string())
}

/// `/v1/spend`'s query string: `from`, `to` (default: this month, UTC),
/// `by` (comma-separated keys; default `tenant`), the filters `tenant`,
/// `team`, `principal`, `server`, `tool`, `absent`, `limit`, `format`
/// (`json`, `csv`). Every parameter once; anything else refused.
pub fn parse_spend(qs: &str, now_us: i64) -> Result<(SpendQuery, Format), String> {
    let (month_from, month_to) = month_of(now_us);
    let mut q = SpendQuery {
        from_us: month_from,
        to_us: month_to,
        by: vec![Key::Tenant],
        filter: Query::default(),
        limit: MAX_GROUPS,
    };
    let mut format = Format::Json;
    let mut seen: Vec<String> = Vec::new();
    let (mut from, mut to) = (None, None);
    let mut absent = String::new();
    for (k, v) in url::form_urlencoded::parse(qs.as_bytes()) {
        if seen.contains(&k.to_string()) {
            return Err(format!("`{k}` is given twice"));
        }
        seen.push(k.to_string());
        let v = v.trim().to_owned();
        if v.is_empty() && k != "absent" {
            continue;
        }
        match k.as_ref() {
            "from" => from = Some(parse_bound(&v).map_err(|e| format!("from: {e}"))?),
            "to" => to = Some(parse_bound(&v).map_err(|e| format!("to: {e}"))?),
            "by" => q.by = parse_by(&v)?,
            "absent" => absent = v,
            "limit" => {
                q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_GROUPS).contains(n))
                    .ok_or_else(|| format!("limit `{v}` is not a number from 1 to {MAX_GROUPS}"))?
            }
            "format" => {
                format = match v.as_str() {
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    _ => return Err(format!("format `{v}` is neither json nor csv")),
                }
            }
            name => match Key::parse(name) {
                Some(key) => *key.field(&mut q.filter) = Some(v),
                None => {
                    return Err(format!(
                        "unknown parameter `{name}` (from, to, by, tenant, team, principal, server, tool, absent, limit, format)"
                    ))
                }
            },
        }
    }
    set_absent(&mut q.filter, &absent)?;
    match (from, to) {
        (Some(f), Some(t)) => (q.from_us, q.to_us) = (f, t),
        (Some(f), None) => (q.from_us, q.to_us) = (f, month_of(f).1),
        (None, Some(t)) => (q.from_us, q.to_us) = (month_of(t - 1).0, t),
        (None, None) => {}
    }
    if q.from_us >= q.to_us {
        return Err(format!(
            "the period is empty: from {} is not before to {}",
            time_text(q.from_us),
            time_text(q.to_us)
        ));
    }
    Ok((q, format))
}

/// `by`: keys, comma-separated, each once.
pub fn parse_by(v: &str) -> Result<Vec<Key>, String> {
    let mut by = Vec::new();
    for name in v.split(',').map(str::trim) {
        let key = Key::parse(name).ok_or_else(|| {
            format!("by `{name}` is none of tenant, team, principal, server, tool")
        })?;
        if by.contains(&key) {
            return Err(format!("by names `{name}` twice"));
        }
        by.push(key);
    }
    Ok(by)
}

impl SpendQuery {
    /// The search of every record the report adds up.
    fn search(&self) -> Query {
        Query {
            from_us: Some(self.from_us),
            to_us: Some(self.to_us),
            priced: true,
            limit: 0,
            before_id: None,
            ..self.filter.clone()
        }
    }

    /// The audit search's query string (for `/v1/audit` and the console's
    /// audit page) listing exactly the records of one row (`keys` and
    /// `currency`) or, with no keys, of a currency's total.
    pub fn records(&self, keys: &[Option<String>], currency: &str) -> String {
        let mut q = self.search();
        for (key, value) in self.by.iter().zip(keys) {
            *key.field(&mut q) = Some(value.clone().unwrap_or_default());
        }
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        out.append_pair("from", &time_text(self.from_us));
        out.append_pair("to", &time_text(self.to_us));
        out.append_pair("priced", "1");
        out.append_pair("currency", currency);
        let mut absent: Vec<&str> = Vec::new();
        for key in Key::ALL {
            match key.field(&mut q).as_deref() {
                Some("") => absent.push(key.name()),
                Some(v) => {
                    out.append_pair(key.name(), v);
                }
                None => {}
            }
        }
        if !absent.is_empty() {
            out.append_pair("absent", &absent.join(","));
        }
        out.finish()
    }

    /// This report's query string (`format` aside), as
    /// [`parse_spend`] reads it back.
    pub fn query_string(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        out.append_pair("from", &time_text(self.from_us));
        out.append_pair("to", &time_text(self.to_us));
        let by: Vec<&str> = self.by.iter().map(|k| k.name()).collect();
        out.append_pair("by", &by.join(","));
        let mut q = self.filter.clone();
        let mut absent: Vec<&str> = Vec::new();
        for key in Key::ALL {
            match key.field(&mut q).as_deref() {
                Some("") => absent.push(key.name()),
                Some(v) => {
                    out.append_pair(key.name(), v);
                }
                None => {}
            }
        }
        if !absent.is_empty() {
            out.append_pair("absent", &absent.join(","));
        }
        if self.limit != MAX_GROUPS {
            out.append_pair("limit", &self.limit.to_string());
        }
        out.finish()
    }

    /// The statements of a report on one dialect, and their values: the
    /// groups (`LIMIT` the last value) and the totals by currency (every
    /// value but the last).
    pub(super) fn sql(&self, d: Dialect) -> (String, String, Vec<Param>) {
        let (w, mut v) = conditions_in(&self.search(), false, d);
        let (table, sums, most) = match d {
            // Quotients and remainders added apart: no sum overflows.
            Dialect::Sqlite => (
                "records",
                "sum(r.cost_micros / 1000000), sum(r.cost_micros % 1000000)",
                "total(r.cost_micros)",
            ),
            Dialect::Postgres => (
                "warden_audit",
                "sum(r.cost_micros)::text",
                "sum(r.cost_micros)",
            ),
        };
        let shown: Vec<&str> = self.by.iter().map(|k| k.shown()).collect();
        let groups: Vec<&str> = self.by.iter().map(|k| k.group()).collect();
        let limit = match d {
            Dialect::Sqlite => "?".to_owned(),
            Dialect::Postgres => format!("${}", v.len() + 1),
        };
        let rows = format!(
            "SELECT {shown}, r.currency, count(*), {sums} FROM {table} r WHERE {w} \
             GROUP BY {groups}, r.currency ORDER BY {most} DESC, {groups}, r.currency LIMIT {limit}",
            shown = shown.join(", "),
            groups = groups.join(", "),
        );
        let totals = format!(
            "SELECT r.currency, count(*), {sums} FROM {table} r WHERE {w} \
             GROUP BY r.currency ORDER BY r.currency"
        );
        v.push(Param::Int(self.limit as i64 + 1));
        (rows, totals, v)
    }
}

/// A group's sum as its store reads it: SQLite's whole units and
/// remainders, PostgreSQL's exact text.
pub(super) fn micros(whole: Option<i64>, rest: Option<i64>) -> i128 {
    i128::from(whole.unwrap_or(0)) * 1_000_000 + i128::from(rest.unwrap_or(0))
}

/// The rows read (one more than `limit` when there are more), cut to the
/// report.
pub(super) fn finish(q: &SpendQuery, mut rows: Vec<SpendRow>, totals: Vec<SpendTotal>) -> Spend {
    let truncated = rows.len() > q.limit;
    rows.truncate(q.limit);
    Spend {
        rows,
        totals,
        truncated,
    }
}

/// A key's value as a row holds it (empty: none).
pub(super) fn key_value(v: String) -> Option<String> {
    Some(v).filter(|v| !v.is_empty())
}

impl AuditStore {
    /// The spend `q` asks, cut off after the search budget (5 s).
    pub fn spend(&self, q: &SpendQuery) -> anyhow::Result<Spend> {
        self.spend_within(q, SEARCH_BUDGET)
    }

    /// [`AuditStore::spend`] cut off after `budget`.
    pub(super) fn spend_within(&self, q: &SpendQuery, budget: Duration) -> anyhow::Result<Spend> {
        anyhow::ensure!(!q.by.is_empty(), "spend is grouped by one key at least");
        match &*self.inner {
            Backend::Sqlite(s) => s.spend(q, budget),
            Backend::Postgres(p) => p.spend(q, budget),
        }
    }
}

impl Inner {
    fn spend(&self, q: &SpendQuery, budget: Duration) -> anyhow::Result<Spend> {
        let (rows_sql, totals_sql, v) = q.sql(Dialect::Sqlite);
        let mut v: Vec<Sql> = v.into_iter().map(Param::sqlite).collect();
        let conn = self.reader();
        let deadline = std::time::Instant::now() + budget;
        conn.progress_handler(10_000, Some(move || std::time::Instant::now() >= deadline));
        let n = q.by.len();
        let res = (|| -> rusqlite::Result<Spend> {
            let rows = conn
                .prepare_cached(&rows_sql)?
                .query_map(rusqlite::params_from_iter(v.iter()), |r| {
                    Ok(SpendRow {
                        keys: (0..n)
                            .map(|i| r.get::<_, String>(i).map(key_value))
                            .collect::<rusqlite::Result<_>>()?,
                        currency: r.get(n)?,
                        calls: r.get::<_, i64>(n + 1)?.max(0) as u64,
                        micros: micros(r.get(n + 2)?, r.get(n + 3)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            v.pop();
            let totals = conn
                .prepare_cached(&totals_sql)?
                .query_map(rusqlite::params_from_iter(v.iter()), |r| {
                    Ok(SpendTotal {
                        currency: r.get(0)?,
                        calls: r.get::<_, i64>(1)?.max(0) as u64,
                        micros: micros(r.get(2)?, r.get(3)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(finish(q, rows, totals))
        })();
        conn.progress_handler(0, None::<fn() -> bool>);
        res.map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::OperationInterrupted =>
            {
                anyhow::anyhow!("{SEARCH_TOO_BROAD}: narrow it with a shorter period or filters")
            }
            e => e.into(),
        })
    }
}
