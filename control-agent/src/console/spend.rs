//! The console's spend page: priced calls of a period (this month, UTC,
//! unless asked), grouped as chosen, each row linking to the audit page's
//! search of exactly its records, and the same report as CSV
//! (`format=csv`). Read as the audit page reads: the user's tenants only.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::session::Session;
use super::views::*;
use super::{harden, plain, Resp};
use crate::audit::cost::amount;
use crate::audit::spend::{month_of, parse_spend, Format, Key, SpendQuery};
use crate::audit::spend_csv::csv;
use crate::server::Api;

/// The groupings the page offers.
const CHOICES: &[&str] = &[
    "tenant",
    "team",
    "principal",
    "server",
    "tool",
    "tenant,team",
    "tenant,principal",
    "tenant,server",
    "team,principal",
    "server,tool",
    "tenant,server,tool",
];

/// A day as the period's fields show it (a time when it is not midnight).
fn day_of(us: i64) -> String {
    match jiff::Timestamp::from_microsecond(us) {
        Ok(t) => {
            let z = t.to_zoned(jiff::tz::TimeZone::UTC);
            if z.time() == jiff::civil::Time::midnight() {
                z.date().to_string()
            } else {
                t.to_string()
            }
        }
        Err(_) => us.to_string(),
    }
}

fn csv_download(body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        "content-disposition",
        HeaderValue::from_static("attachment; filename=\"spend.csv\""),
    );
    harden(r)
}

impl Api {
    pub(super) async fn spend_page(
        self: &Arc<Self>,
        session: &Session,
        flash: Option<String>,
        q: &BTreeMap<String, String>,
    ) -> Resp {
        let now = jiff::Timestamp::now().as_microsecond();
        let qs = {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in q {
                ser.append_pair(k, v);
            }
            ser.finish()
        };
        let g = |k: &str| q.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
        let mut form = SpendForm {
            from: g("from"),
            to: g("to"),
            by: g("by"),
            tenant: g("tenant"),
            team: g("team"),
            principal: g("principal"),
            server: g("server"),
            tool: g("tool"),
        };
        let (month_from, month_to) = month_of(now);
        let last_from = month_of(month_from - 1).0;
        let month_link = |from: i64, to: i64, by: &str| {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            ser.append_pair("from", &day_of(from));
            ser.append_pair("to", &day_of(to));
            ser.append_pair("by", by);
            format!("/console/spend?{}", ser.finish())
        };
        let parsed = parse_spend(&qs, now);
        let by_now = match &parsed {
            Ok((s, _)) => s.by.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
            Err(_) if !form.by.is_empty() => form.by.clone(),
            Err(_) => "tenant".into(),
        };
        let mut by_choices: Vec<(String, String, bool)> = CHOICES
            .iter()
            .map(|c| (c.to_string(), c.replace(',', " · "), *c == by_now))
            .collect();
        if !by_choices.iter().any(|c| c.2) {
            by_choices.push((by_now.clone(), by_now.replace(',', " · "), true));
        }
        let mut page = SpendPage {
            frame: Frame::new("Spend", "spend", session, flash),
            form: SpendForm::default(),
            by_choices,
            period: String::new(),
            keys: Vec::new(),
            rows: Vec::new(),
            totals: Vec::new(),
            truncated: false,
            limit: 0,
            csv_link: String::new(),
            this_month: month_link(month_from, month_to, &by_now),
            last_month: month_link(last_from, month_from, &by_now),
            error: None,
        };
        let (mut query, format) = match parsed {
            Ok(x) => x,
            Err(e) => {
                page.form = form;
                page.error = Some(e);
                let mut r = render(&page);
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return r;
            }
        };
        query.filter.tenants = session.user.tenants.clone();
        let store = self.audit.clone();
        let asked = query.clone();
        let spend = match tokio::task::spawn_blocking(move || store.spend(&asked)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("spend: {e:#}"))
            }
            Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("spend: {e}")),
        };
        self.console_record(
            &session.user.name,
            if format == Format::Csv {
                "spend.csv"
            } else {
                "spend.report"
            },
            true,
            &query.query_string().chars().take(512).collect::<String>(),
        );
        if format == Format::Csv {
            return csv_download(csv(&query, &spend));
        }
        form.from = day_of(query.from_us);
        form.to = day_of(query.to_us);
        page.form = form;
        page.period = format!("{} to {}", day_of(query.from_us), day_of(query.to_us));
        page.keys = query.by.iter().map(|k| heading(*k)).collect();
        page.rows = spend
            .rows
            .iter()
            .map(|r| SpendRowView {
                keys: r
                    .keys
                    .iter()
                    .map(|k| match k {
                        Some(v) => self.console.redact(v),
                        None => "(none)".into(),
                    })
                    .collect(),
                calls: r.calls,
                amount: amount(r.micros),
                currency: self.console.redact(&r.currency),
                link: records_link(&query, &r.keys, &r.currency),
            })
            .collect();
        page.totals = spend
            .totals
            .iter()
            .map(|t| SpendRowView {
                keys: Vec::new(),
                calls: t.calls,
                amount: amount(t.micros),
                currency: self.console.redact(&t.currency),
                link: records_link(&query, &[], &t.currency),
            })
            .collect();
        page.truncated = spend.truncated;
        page.limit = query.limit;
        page.csv_link = format!("/console/spend?{}&format=csv", query.query_string());
        render(&page)
    }
}

fn heading(k: Key) -> &'static str {
    match k {
        Key::Tenant => "Tenant",
        Key::Team => "Team",
        Key::Principal => "Principal",
        Key::Server => "Server",
        Key::Tool => "Tool",
    }
}

/// The audit page's search of a row's records.
fn records_link(q: &SpendQuery, keys: &[Option<String>], currency: &str) -> String {
    format!("/console/audit?{}", q.records(keys, currency))
}
