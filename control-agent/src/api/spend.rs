//! `GET /v1/spend`: spend and priced calls over a period, grouped.
//!
//! `from`, `to` (a date `2026-05-01`, RFC 3339 or unix seconds; default:
//! this month in UTC, `[from, to)`), `by` (comma-separated: `tenant`,
//! `team`, `principal`, `server`, `tool`; default `tenant`), the filters
//! `tenant`, `team`, `principal`, `server`, `tool` and `absent`,
//! `limit` (groups, 1–1000, default 1000), `format` (`json`, `csv`).
//! A parameter unknown, given twice or malformed is a 400 naming it.
//!
//! Each JSON row holds its keys (`null`: its records have none),
//! `calls`, `amount` (six places), `currency` and `records`: the
//! `/v1/audit` search listing exactly the records adding up to the row;
//! `totals` hold every match by currency (groups left out included), and
//! `truncated` says when more groups matched than `limit`. Who reads it
//! and what they see are the audit search's: a tenant admin their
//! tenant's spend alone (a `tenant=` naming another is refused and
//! recorded).

use axum::response::IntoResponse;
use http::{HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::audit::{read, scope};
use super::Agent;
use crate::audit::cost::amount;
use crate::audit::spend::{parse_spend, Format, Spend, SpendQuery};
use crate::audit::spend_csv::csv;
use crate::caller::Caller;
use crate::server::error::{ok, ApiError, ApiResult};
use crate::server::extract::{QueryPairs, What};

pub async fn report(
    agent: Agent,
    caller: Caller,
    q: QueryPairs,
    What(what): What,
    uri: http::Uri,
) -> ApiResult {
    let tenants = scope(&agent, &caller, &q, &what)?;
    let now = jiff::Timestamp::now().as_microsecond();
    let (mut query, format) =
        parse_spend(uri.query().unwrap_or(""), now).map_err(ApiError::bad_request)?;
    query.filter.tenants = tenants;
    let asked = query.clone();
    let spend = read(&agent, move |s| s.spend(&asked)).await?;
    match format {
        Format::Json => ok(&as_json(&query, &spend)),
        Format::Csv => Ok((
            StatusCode::OK,
            [
                (
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                ),
                (
                    http::header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"spend.csv\""),
                ),
            ],
            csv(&query, &spend),
        )
            .into_response()),
    }
}

/// The report as the API's JSON.
pub fn as_json(q: &SpendQuery, s: &Spend) -> Value {
    let time = |us: i64| {
        jiff::Timestamp::from_microsecond(us).map_or_else(|_| us.to_string(), |t| t.to_string())
    };
    let rows: Vec<Value> = s
        .rows
        .iter()
        .map(|r| {
            let mut o = Map::new();
            for (k, v) in q.by.iter().zip(&r.keys) {
                o.insert(k.name().into(), json!(v));
            }
            o.insert("calls".into(), json!(r.calls));
            o.insert("amount".into(), json!(amount(r.micros)));
            o.insert("currency".into(), json!(r.currency));
            o.insert(
                "records".into(),
                json!(format!("/v1/audit?{}", q.records(&r.keys, &r.currency))),
            );
            Value::Object(o)
        })
        .collect();
    let totals: Vec<Value> = s
        .totals
        .iter()
        .map(|t| {
            json!({
                "calls": t.calls,
                "amount": amount(t.micros),
                "currency": t.currency,
                "records": format!("/v1/audit?{}", q.records(&[], &t.currency)),
            })
        })
        .collect();
    json!({
        "from": time(q.from_us),
        "to": time(q.to_us),
        "by": q.by,
        "rows": rows,
        "totals": totals,
        "truncated": s.truncated,
        "limit": q.limit,
    })
}
