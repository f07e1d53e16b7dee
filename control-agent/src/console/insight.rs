//! The console's audit pages (search, one record, the verification of
//! what is shown) and its live figures, over the records gateways ship.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::StatusCode;

use super::session::{Session, User};
use super::views::*;
use super::{plain, Resp};
use crate::audit::query::{parse_flag, set_absent};
use crate::audit::Query;
use crate::server::Api;

impl Api {
    /// One record's row. Every text in it is what a holder of the fleet
    /// token sent, so each is redacted, not only the reason (the time
    /// was checked when the record was stored).
    fn row_view(&self, r: &crate::audit::Row) -> RowView {
        let red = |x: &str| self.console.redact(x);
        RowView {
            id: r.id,
            // Checked as an RFC 3339 time when it was stored.
            ts: r.ts.clone(),
            gateway: red(&r.gateway),
            seq: r.seq,
            tenant: red(&r.tenant),
            principal: red(&r.principal),
            server: red(&r.server),
            tool: red(r.tool.as_deref().unwrap_or("")),
            method: red(r.method.as_deref().unwrap_or("")),
            direction: red(&r.direction),
            outcome: red(&r.outcome),
            reason: red(r.reason.as_deref().unwrap_or("")),
            latency: r
                .latency_us
                .map(|us| format!("{:.1} ms", us as f64 / 1000.0))
                .unwrap_or_default(),
            trace_link: trace_link(&red(&r.trace_id)),
            denied: !matches!(r.outcome.as_str(), "forwarded" | "mutated"),
        }
    }

    fn audit_query(
        &self,
        user: &User,
        q: &std::collections::BTreeMap<String, String>,
    ) -> Result<(AuditForm, Query), String> {
        let g = |k: &str| q.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
        let form = AuditForm {
            from: g("from"),
            to: g("to"),
            gateway: g("gateway"),
            principal: g("principal"),
            tenant: g("tenant"),
            server: g("server"),
            tool: g("tool"),
            outcome: g("outcome"),
            reason: g("reason"),
            approval_id: g("approval_id"),
            trace_id: g("trace_id"),
            team: g("team"),
            currency: g("currency"),
            priced: g("priced"),
            absent: g("absent"),
        };
        let opt = |v: &str| Some(v.to_owned()).filter(|v| !v.is_empty());
        let mut query = Query {
            from_us: parse_time(&form.from)?,
            to_us: parse_time(&form.to)?,
            gateway: opt(&form.gateway),
            principal: opt(&form.principal),
            tenant: opt(&form.tenant),
            server: opt(&form.server),
            tool: opt(&form.tool),
            outcome: opt(&form.outcome),
            reason: opt(&form.reason),
            approval_id: opt(&form.approval_id),
            trace_id: opt(&form.trace_id),
            team: opt(&form.team),
            currency: opt(&form.currency),
            priced: !form.priced.is_empty() && parse_flag("priced", &form.priced)?,
            tenants: user.tenants.clone(),
            before_id: q.get("before").and_then(|b| b.parse().ok()),
            limit: 50,
        };
        set_absent(&mut query, &form.absent)?;
        Ok((form, query))
    }

    pub(super) async fn audit_page(
        self: &Arc<Self>,
        session: &Session,
        flash: Option<String>,
        q: &std::collections::BTreeMap<String, String>,
    ) -> Resp {
        let user = &session.user;
        let (form, query) = match self.audit_query(user, q) {
            Ok(x) => x,
            Err(e) => {
                return render(&AuditPage {
                    frame: Frame::new("Audit", "audit", session, flash),
                    form: AuditForm::default(),
                    rows: vec![],
                    total: 0,
                    next: None,
                    verify_link: String::new(),
                    verification: None,
                    error: Some(e),
                })
            }
        };
        let verify = q.get("verify").is_some_and(|v| v == "1");
        let store = self.audit.clone();
        let qq = query.clone();
        let page = tokio::task::spawn_blocking(move || store.search(&qq)).await;
        let page = match page {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("audit search: {e}"),
                )
            }
            Err(e) => {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("audit search: {e}"),
                )
            }
        };
        self.console_record(
            &user.name,
            if verify {
                "audit.verify"
            } else {
                "audit.search"
            },
            true,
            &serde_json::to_string(&query)
                .unwrap_or_default()
                .chars()
                .take(512)
                .collect::<String>(),
        );
        // Verifying "the range shown": every record of each chain between
        // the oldest and newest shown, whoever it belongs to (only the
        // counts and the verdict are shown of records outside the filter).
        let verification = if verify && !page.rows.is_empty() {
            Some(self.verify_shown(&session.user, &query, &page.rows).await)
        } else {
            None
        };
        let keep: Vec<(String, String)> = q
            .iter()
            .filter(|(k, v)| !v.is_empty() && !matches!(k.as_str(), "before" | "verify"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let link = |extra: &[(String, String)]| {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in keep.iter().chain(extra) {
                ser.append_pair(k, v);
            }
            format!("/console/audit?{}", ser.finish())
        };
        let next = page
            .next_before
            .map(|b| link(&[("before".into(), b.to_string())]));
        // The same page, verified.
        let mut this_page: Vec<(String, String)> = Vec::new();
        if let Some(b) = q.get("before") {
            this_page.push(("before".into(), b.clone()));
        }
        this_page.push(("verify".into(), "1".into()));
        let verify_link = link(&this_page);
        render(&AuditPage {
            frame: Frame::new("Audit", "audit", session, flash),
            form,
            rows: page.rows.iter().map(|r| self.row_view(r)).collect(),
            total: page.total,
            next,
            verify_link,
            verification,
            error: None,
        })
    }

    /// Verifies the chains around the records shown: every record of each
    /// gateway's chain between the oldest and the newest on the page (at
    /// most [`VERIFY_CAP`], one verification at a time). A user of some
    /// tenants gets the verdict only: the other records are not theirs to
    /// count.
    async fn verify_shown(
        self: &Arc<Self>,
        user: &User,
        query: &Query,
        rows: &[crate::audit::Row],
    ) -> (bool, String, Vec<ChainView>) {
        let Ok(_turn) = self.console.verifying.try_acquire() else {
            return (
                false,
                "not checked: another verification is running; try again in a moment".into(),
                vec![],
            );
        };
        let lo = rows.iter().map(|r| r.ts_us).min().unwrap_or(0);
        let hi = rows.iter().map(|r| r.ts_us).max().unwrap_or(0);
        let range = Query {
            from_us: Some(lo),
            to_us: Some(hi + 1),
            gateway: query.gateway.clone(),
            limit: VERIFY_CAP,
            ..Default::default()
        };
        let store = self.audit.clone();
        let v = match tokio::task::spawn_blocking(move || store.verify(&range)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return (false, format!("not checked: {e}"), vec![]),
            Err(e) => return (false, format!("not checked: {e}"), vec![]),
        };
        let scoped = !user.tenants.is_empty();
        let what = if v.truncated {
            format!(
                "only the first {} records were checked ({}); narrow the time range",
                v.records,
                v.stopped
                    .as_deref()
                    .unwrap_or(&format!("the range holds more than {VERIFY_CAP}"))
            )
        } else if scoped {
            format!("the {} records shown and the chain around them", rows.len())
        } else {
            format!("{} records checked", v.records)
        };
        let chains = if scoped {
            Vec::new()
        } else {
            v.chains
                .into_iter()
                .map(|c| ChainView {
                    gateway: self.console.redact(&c.gateway),
                    records: c.records,
                    first_seq: c.first_seq,
                    last_seq: c.last_seq,
                    ok: c.ok,
                    elided: c.elided,
                    problems: c
                        .problems
                        .into_iter()
                        .map(|p| self.console.redact(&p))
                        .collect(),
                })
                .collect()
        };
        (v.ok && !v.truncated, what, chains)
    }

    pub(super) async fn record_page(
        self: &Arc<Self>,
        session: &Session,
        flash: Option<String>,
        id: i64,
    ) -> Resp {
        let store = self.audit.clone();
        let tenants = session.user.tenants.clone();
        let row = match tokio::task::spawn_blocking(move || store.get(id, &tenants)).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => return plain(StatusCode::NOT_FOUND, "no such record"),
            Ok(Err(e)) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        self.console_record(
            &session.user.name,
            "audit.view",
            true,
            &format!("{} #{}", row.gateway, row.seq),
        );
        let mut v: serde_json::Value = row
            .raw
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        // What a caller sent or got: shown after redaction, whatever the
        // gateway's audit settings wrote.
        if let Some(o) = v.as_object_mut() {
            for k in ["arguments", "result", "justification", "reason"] {
                if let Some(x) = o.get_mut(k) {
                    *x = redact_value(&self.console, x);
                }
            }
        }
        // Each field is redacted with its name beside it (detectors such as
        // `password: …` need the key), and the whole record again below.
        let fields = v
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "arguments" | "result"))
                    .map(|(k, x)| (self.console.redact(k), redact_field(&self.console, k, x)))
                    .collect()
            })
            .unwrap_or_default();
        let shown = self.row_view(&row);
        render(&RecordPage {
            frame: Frame::new(
                format!("Record {} #{}", shown.gateway, row.seq),
                "audit",
                session,
                flash,
            ),
            row: shown,
            fields,
            json: self
                .console
                .redact(&serde_json::to_string_pretty(&v).unwrap_or_default()),
        })
    }

    pub(super) async fn live_page(
        self: &Arc<Self>,
        session: &Session,
        flash: Option<String>,
        q: &std::collections::BTreeMap<String, String>,
    ) -> Resp {
        let window = q
            .get("window")
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(300)
            .clamp(10, 3600);
        let gateway = q.get("gateway").cloned().unwrap_or_default();
        let store = self.audit.clone();
        let tenants = session.user.tenants.clone();
        let g = Some(gateway.clone()).filter(|g| !g.is_empty());
        let live = match tokio::task::spawn_blocking(move || {
            store.live(Duration::from_secs(window), g.as_deref(), &tenants)
        })
        .await
        {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        // The timeline in twelve steps, oldest first.
        let now_s = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let step = (window / 12).max(1) as i64;
        let mut buckets: Vec<(String, u64)> = Vec::new();
        let start = now_s - window as i64 + 1;
        let mut t = start;
        while t <= now_s {
            let n = live
                .per_second
                .iter()
                .filter(|(s, _)| *s >= t && *s < t + step)
                .map(|(_, n)| n)
                .sum();
            buckets.push((fmt_us(t * 1_000_000)[11..19].to_owned(), n));
            t += step;
        }
        let scoped = !session.user.tenants.is_empty();
        let mut gateways: Vec<String> = if scoped {
            Vec::new()
        } else {
            self.store
                .fleet_view()
                .members
                .into_iter()
                .map(|m| m.id)
                .collect()
        };
        for (g, _) in &live.gateways {
            if !gateways.contains(g) {
                gateways.push(g.clone());
            }
        }
        // Gateways name themselves (reports, records): redacted like the rest.
        let gateways: Vec<String> = gateways.iter().map(|g| self.console.redact(g)).collect();
        // Labels come from records gateways wrote: redacted like the rest.
        let red = |items: &[(String, u64)]| -> Vec<(String, u64)> {
            items
                .iter()
                .map(|(l, n)| (self.console.redact(l), *n))
                .collect()
        };
        let ms = |v: Option<f64>| {
            v.map(|x| format!("{x:.1} ms"))
                .unwrap_or_else(|| "–".into())
        };
        render(&LivePage {
            frame: Frame::new("Live", "live", session, flash),
            window,
            gateway,
            gateways,
            calls: live.calls,
            calls_per_sec: format!("{:.2}", live.calls_per_sec),
            p50: ms(live.p50_ms),
            p99: ms(live.p99_ms),
            timeline: bars(&buckets),
            panels: vec![
                (
                    "Decisions by outcome",
                    "outcomes",
                    bars(&red(&live.outcomes)),
                ),
                ("Top tools", "tools", bars(&red(&live.top_tools))),
                (
                    "Top principals",
                    "principals",
                    bars(&red(&live.top_principals)),
                ),
                ("Denial reasons", "reasons", bars(&red(&live.top_reasons))),
                ("DLP findings by detector", "dlp", bars(&red(&live.dlp))),
                ("By gateway", "gateways", bars(&red(&live.gateways))),
                (
                    "Behaviour anomalies by kind",
                    "anomalies",
                    bars(&red(&live.anomalies)),
                ),
            ],
        })
    }
}
