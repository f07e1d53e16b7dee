//! Recording: once an exchange ends, its metrics, one hash-chained audit
//! record per MCP message (or one for the exchange when it carried none),
//! and its spans when export is configured.

use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora_core::protocols::http::ServerSession as Session;
use warden_filters::chain::filter::Direction;

use crate::hub::state::Gateway;
use crate::observability::audit::AuditRecord;
use crate::observability::metrics::metrics;
use crate::pipeline::ctx::RequestCtx;
use crate::pipeline::headers::trace_id;

/// Records the exchange (see the module documentation).
pub async fn record(gw: &Gateway, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
    if let Some(g) = crate::pipeline::conn::guard_of(session) {
        g.exchange_done();
    }
    if ctx.counted_inflight {
        metrics().inflight.dec();
    }
    crate::pipeline::guards::budget::close(gw, ctx).await;
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .or(ctx.local_status)
        .unwrap_or(0);
    // The bundle's shared name (no copy per exchange).
    let server: std::sync::Arc<str> = ctx
        .server_id()
        .map_or_else(|| "-".into(), |s| ctx.rt.meta(s).name.clone());
    let http_method = http_method(session.req_header());
    exchange_metrics(ctx, &server, http_method, status);

    let base = audit_base(session, ctx, status, server.clone());
    let failed = e
        .map(|e| e.to_string())
        .or_else(|| ctx.upstream.error.clone());
    let mut out = match message_records(gw, ctx, base, &server, &failed) {
        Ok(mut out) => {
            if let Some(r) = &ctx.refusal {
                let reason = refusal_reason(r, failed.as_deref());
                for rec in &mut out {
                    rec.outcome = r.reason;
                    rec.reason = Some(reason.clone());
                }
            }
            out
        }
        // No message: one record of the exchange.
        Err(base) => vec![exchange_record(ctx, base, failed)],
    };
    // What DLP found in the header values and URL: with the first record.
    if let Some(first) = out.first_mut() {
        for f in std::mem::take(&mut ctx.metadata_findings) {
            metrics()
                .dlp_findings
                .with_label_values(&[&f.detector, "request", f.action])
                .inc();
            first.dlp.push(crate::observability::audit::DlpFinding {
                detector: f.detector,
                rule: f.rule,
                path: f.path,
                action: f.action,
            });
        }
    }
    // Client-chosen text in the record (a refusal's message can quote an
    // `Origin` or a method; JSON-RPC methods and string ids are the
    // client's own) is written DLP-redacted.
    let clean = |s: String| match ctx.rt.snap.redacted(&s, &s) {
        std::borrow::Cow::Borrowed(_) => s,
        masked => masked.into_owned(),
    };
    for rec in &mut out {
        rec.reason = rec.reason.take().map(clean);
        rec.method = rec.method.take().map(clean);
        if let Some(serde_json::Value::String(id)) = &mut rec.jsonrpc_id {
            *id = clean(std::mem::take(id));
        }
    }
    spans(gw, ctx, &out, http_method, status);
    for rec in out {
        gw.audit.record(rec).await;
    }
}

/// The exchange's metrics, and how the chosen replica answered it.
fn exchange_metrics(ctx: &RequestCtx, server: &str, http_method: &'static str, status: u16) {
    let m = metrics();
    // Passive ejection: how the chosen replica answered this call (a
    // connect failure was counted when it happened; the gateway's own
    // timeouts and size limits, which a caller can provoke, never count).
    if let (Some(s), Some(addr), Some(st)) =
        (ctx.server_id(), ctx.upstream.chosen, ctx.upstream.status)
    {
        ctx.rt
            .outliers(s)
            .record(server, addr, st < 500 && ctx.reply.unjudgeable == 0);
    }
    // The server's handles were resolved when its bundle was built.
    let meta = ctx.server_id().map(|s| ctx.rt.meta(s));
    match meta.filter(|_| http_method == "POST" && status == 200) {
        Some(s) => s.posts_ok.inc(),
        None => m
            .requests
            .with_label_values(&[server, http_method, &status_label(status)])
            .inc(),
    }
    let elapsed = ctx.start.elapsed().as_secs_f64();
    match meta.and_then(|s| s.latency(http_method)) {
        Some(h) => h.observe(elapsed),
        None => m
            .latency
            .with_label_values(&[server, http_method])
            .observe(elapsed),
    }
    match meta {
        Some(s) => {
            s.body_in.observe(ctx.body_len_in as f64);
            s.body_out.observe(ctx.reply.bytes as f64);
        }
        None => {
            m.body_bytes
                .with_label_values(&[server, "request"])
                .observe(ctx.body_len_in as f64);
            m.body_bytes
                .with_label_values(&[server, "response"])
                .observe(ctx.reply.bytes as f64);
        }
    }
}

/// One audit record per MCP message the exchange carried, requests first
/// (with the records of the approvals that decided them), then the server's;
/// `base` back when the exchange carried none. The last record is made
/// from `base` itself, the others from copies.
fn message_records(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    base: AuditRecord,
    server: &str,
    failed: &Option<String>,
) -> Result<Vec<AuditRecord>, AuditRecord> {
    let plan_records = ctx
        .plan
        .as_mut()
        .map(|p| std::mem::take(&mut p.records))
        .unwrap_or_default();
    let reply_records = std::mem::take(&mut ctx.reply.records);
    let mut left = plan_records.len() + reply_records.len();
    if left == 0 {
        return Err(base);
    }
    let mut out = Vec::with_capacity(left);
    let mut base = Some(base);
    for (dir, list) in [
        (Direction::Request, plan_records),
        (Direction::Response, reply_records),
    ] {
        for mut r in list {
            left -= 1;
            let from = match left {
                0 => base
                    .take()
                    .expect("the base is taken by the last record only"),
                _ => base
                    .clone()
                    .expect("the base is kept until the last record"),
            };
            let mut rec = message_record(gw, ctx, from, server, dir, &mut r, failed);
            if let Some(need) = r.approval.take() {
                approval_records(ctx, &mut rec, &need, &mut out);
            }
            out.push(rec);
        }
    }
    Ok(out)
}

/// The audit record of one message (made from `rec`, a copy of the
/// exchange's base record), and its metrics.
fn message_record(
    gw: &Gateway,
    ctx: &RequestCtx,
    mut rec: AuditRecord,
    server: &str,
    dir: Direction,
    r: &mut warden_filters::MessageRecord,
    failed: &Option<String>,
) -> AuditRecord {
    let m = metrics();
    let rt = &ctx.rt;
    if dir == Direction::Request {
        gw.live.count(&rec.tenant, &rec.principal);
    }
    // Labels and audit fields name only what the catalog knows;
    // anything else a client or server chose is bounded or redacted.
    // Known: in the catalog, or a well-formed tool name that holds
    // nothing DLP finds (and the label guard bounds how many).
    let known = r.target.as_deref().filter(|t| {
        rt.snap
            .config
            .catalog
            .get(server)
            .is_some_and(|c| c.tool(t).is_some())
            || ((r.method.as_deref() == Some("tools/call") || r.task.is_some())
                && warden_filters::guards::tools::valid_name(t)
                && rt.snap.redact_text(t, 256) == *t)
    });
    let tool = r.target.as_ref().map(|_| match known {
        Some(t) => gw.tool_labels.admit(t),
        None => "other",
    });
    m.messages
        .with_label_values(&[
            server,
            dir.as_str(),
            crate::observability::metrics::method_label(r.method.as_deref()),
            tool.unwrap_or("-"),
            r.outcome.label(),
        ])
        .inc();
    rec.direction = dir.as_str();
    if dir == Direction::Request {
        rec.principal_detail = Some(crate::observability::audit::AuditPrincipal(
            ctx.principal.clone(),
        ));
    }
    rec.jsonrpc_id = r.id.as_ref().map(|i| i.to_json());
    if r.method.as_deref() == Some("tools/call") || r.task.is_some() {
        // A virtual server's own leg has no catalog: its member's
        // leg records the tool's risk.
        let composed = ctx.server().is_some_and(|s| s.composed.is_some());
        if let (Some(tool), false) = (r.target.as_deref(), composed) {
            rec.risk = Some(
                rt.snap
                    .config
                    .catalog
                    .get(server)
                    .map_or(warden_config::access::Risk::Medium, |c| c.risk(tool))
                    .as_str(),
            );
        }
    }
    rec.method = r.method.clone();
    rec.tool = match (known, r.target.as_deref()) {
        (Some(t), _) => Some(t.to_owned()),
        (None, Some(t)) => Some(rt.snap.redact_text(t, 256)),
        _ => None,
    };
    rec.outcome = r.outcome.label();
    rec.decided_by = match &r.outcome {
        warden_filters::Outcome::Denied { filter, .. }
        | warden_filters::Outcome::Mutated { filter } => Some(filter),
        _ => None,
    };
    rec.args_digest = r.args_digest.take();
    if dir == Direction::Request && r.method.is_some() {
        rec.justification = ctx
            .justification
            .as_ref()
            .map(|j| rt.snap.redact_text(j, 1024));
    }
    rec.task = r.task.take();
    rec.flow = r.flow.take();
    if let Some(mut a) = r.anomaly.take().filter(|a| !a.signals.is_empty()) {
        for sig in &mut a.signals {
            m.anomalies.with_label_values(&[sig.kind.as_str()]).inc();
            // Names a client chose: redacted as every client-chosen field.
            sig.detail = rt.snap.redact_text(&sig.detail, 256);
        }
        gw.live
            .anomaly(&rec.tenant, &rec.principal, a.signals.len() as u64);
        rec.anomaly = Some(a.to_json());
    }
    if let Some(notice) = r.notice.take() {
        // Set on calls to deprecated servers only (`registry`); the
        // label is a server of the bundle.
        if dir == Direction::Request {
            m.deprecated_calls.with_label_values(&[server]).inc();
        }
        rec.notice = Some(notice);
    }
    if let Some(sh) = r.shadow.take() {
        m.policy_shadow_disagreements
            .with_label_values(&[
                rec.server.as_ref(),
                if sh.enforced_allow {
                    "allowed"
                } else {
                    "denied"
                },
            ])
            .inc();
        rec.shadow = Some(crate::observability::audit::ShadowDecision {
            allow: sh.shadow_allow,
            reason: sh.shadow_reason,
            enforced_allow: sh.enforced_allow,
            enforced_reason: sh.enforced_reason,
        });
    }
    for f in std::mem::take(&mut r.findings) {
        m.dlp_findings
            .with_label_values(&[&f.detector, dir.as_str(), f.action])
            .inc();
        rec.dlp.push(crate::observability::audit::DlpFinding {
            detector: f.detector,
            rule: f.rule,
            path: f.path,
            action: f.action,
        });
    }
    // Raw with `include_arguments`; otherwise only for calls of a
    // tier logged in full, DLP-redacted.
    let full = dir == Direction::Request
        && matches!(r.method.as_deref(), Some("tools/call"))
        && ctx
            .server_id()
            .is_some_and(|s| r.target.as_deref().is_some_and(|t| rt.logs_io(s, t)));
    rec.arguments = match r.arguments.take() {
        Some(a) if !rt.snap.config.audit.include_arguments => full
            .then(|| serde_json::from_str::<serde_json::Value>(&a).ok())
            .flatten()
            .map(|v| rt.snap.redact_json(&v).to_string()),
        a => a,
    }
    .and_then(|a| serde_json::value::RawValue::from_string(a).ok());
    rec.result = r
        .result
        .take()
        .and_then(|a| serde_json::value::RawValue::from_string(a).ok());
    rec.cost = r.cost.take().map(|c| match c.currency {
        Some(currency) => {
            let mut v = serde_json::json!({
                "amount": format!("{}.{:06}", c.micros / 1_000_000, c.micros % 1_000_000),
                "currency": currency,
            });
            if let Some(u) = c.units {
                v["units"] = serde_json::json!(u);
            }
            // The caller's team, so that spend adds up per team too.
            if let Some(team) = warden_filters::guards::budget::team_attribute(
                &rt.snap.config.budgets,
                &ctx.principal,
            ) {
                v["team"] = serde_json::json!(team);
            }
            v
        }
        None => serde_json::json!({"priced": false}),
    });
    rec.budget = r.budget.take();
    if let warden_filters::Outcome::Denied { reason, .. } = &r.outcome {
        if let Some(limit) = reason.strip_prefix("quota_exceeded:") {
            m.quota_denied.with_label_values(&[limit]).inc();
        }
    }
    // A verdict keeps its reason; the exchange's fate (an answer not
    // delivered, say) goes beside it.
    rec.reason = match (&r.outcome, failed) {
        (
            warden_filters::Outcome::Denied { reason, .. }
            | warden_filters::Outcome::Invalid { reason },
            Some(f),
        ) => Some(format!("{reason} ({f})")),
        (
            warden_filters::Outcome::Denied { reason, .. }
            | warden_filters::Outcome::Invalid { reason },
            None,
        ) => Some(reason.clone()),
        _ => failed.clone(),
    };
    if dir == Direction::Request && r.method.as_deref() == Some("tools/call") {
        if let Some(risk @ ("HIGH" | "CRITICAL")) = rec.risk {
            m.risky_calls
                .with_label_values(&[server, risk, r.outcome.label()])
                .inc();
        }
    }
    rec
}

/// The records of the approvers' decisions, each its own record in the
/// chain, and what the call's record says of them.
fn approval_records(
    ctx: &RequestCtx,
    rec: &mut AuditRecord,
    need: &warden_filters::guards::approval::ApprovalNeed,
    out: &mut Vec<AuditRecord>,
) {
    let rt = &ctx.rt;
    let claimed = ctx.approval.as_ref();
    for d in claimed.map(|c| c.decisions()).unwrap_or_default() {
        let mut a = rec.clone();
        a.direction = "approval";
        a.outcome = if d.verdict == "approve" {
            "approved"
        } else {
            "denied"
        };
        a.decided_by = Some("approver");
        a.reason = None;
        a.arguments = None;
        a.result = None;
        a.dlp = Vec::new();
        a.approval = Some(serde_json::json!({
            "id": claimed.and_then(|c| c.id()),
            "approver": d.approver,
            "verdict": d.verdict,
            "at": d.at,
            "comment": d.comment.as_deref().map(|c| rt.snap.redact_text(c, 500)),
        }));
        out.push(a);
    }
    rec.approval = Some(serde_json::json!({
        "id": claimed.and_then(|c| c.id()),
        "answer": claimed.map_or("approval_required", |c| c.reason()),
        "required": need.approvers,
        "reason": rt.snap.redact_text(&need.reason, 256),
        "approvers": claimed
            .map(|c| c.decisions().into_iter().filter(|d| d.verdict == "approve").map(|d| d.approver).collect::<Vec<_>>())
            .unwrap_or_default(),
    }));
}

/// The one record of an exchange that carried no MCP message (GET, DELETE,
/// or refused before parsing).
fn exchange_record(ctx: &RequestCtx, base: AuditRecord, failed: Option<String>) -> AuditRecord {
    let rt = &ctx.rt;
    let mut rec = base;
    rec.jsonrpc_id = ctx
        .refusal
        .as_ref()
        .and_then(|r| r.id.as_ref())
        .map(|i| i.to_json());
    // A refused request is recorded as what it was, as far as read.
    if let Some((method, target)) = &ctx.refused_message {
        rec.method = Some(method.clone());
        rec.tool = target.as_deref().map(|t| rt.snap.redact_text(t, 256));
    }
    rec.outcome = match (&ctx.refusal, &failed) {
        (Some(r), _) => r.reason,
        (None, Some(_)) => "failed",
        (None, None) => "forwarded",
    };
    rec.reason = match &ctx.refusal {
        Some(r) => Some(refusal_reason(r, failed.as_deref())),
        None => failed,
    };
    rec
}

/// The reason a refused exchange's records give: the refusal's message,
/// and, when it did not reach the client, why.
fn refusal_reason(r: &warden_filters::Refusal, failed: Option<&str>) -> String {
    match failed {
        Some(f) => format!("{} (not delivered: {f})", r.error.message),
        None => r.error.message.clone(),
    }
}

/// One span per record, when export is configured.
fn spans(gw: &Gateway, ctx: &RequestCtx, out: &[AuditRecord], http_method: &str, status: u16) {
    if let (Some(tel), Some(ids)) = (gw.telemetry.get(), ctx.trace) {
        let start = std::time::SystemTime::now() - ctx.start.elapsed();
        let end = std::time::SystemTime::now();
        for (i, rec) in out.iter().enumerate() {
            let mut attrs = vec![
                ("mcp.server", rec.server.to_string()),
                ("enduser.id", rec.principal.to_string()),
                ("warden.tenant", rec.tenant.to_string()),
                ("warden.outcome", rec.outcome.to_owned()),
                ("warden.request_id", rec.request_id.to_string()),
                ("warden.direction", rec.direction.to_owned()),
            ];
            let opt = [
                ("mcp.method", rec.method.clone()),
                ("mcp.tool", rec.tool.clone()),
                (
                    "mcp.session_id",
                    rec.session_id.as_deref().map(str::to_owned),
                ),
                ("warden.decided_by", rec.decided_by.map(str::to_owned)),
                ("warden.reason", rec.reason.clone()),
                ("warden.risk", rec.risk.map(str::to_owned)),
            ];
            attrs.extend(opt.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
            tel.record(crate::observability::otel::MessageSpan {
                name: format!("mcp {}", rec.method.as_deref().unwrap_or(http_method)),
                ids,
                own_span: i == 0,
                start,
                end,
                attributes: attrs,
                status,
                error: (status >= 500 || rec.outcome == "failed").then_some(rec.outcome),
            });
        }
    }
}

fn audit_base(
    session: &Session,
    ctx: &RequestCtx,
    status: u16,
    server: std::sync::Arc<str>,
) -> AuditRecord {
    let req = session.req_header();
    let meta = ctx.server_id().map(|s| ctx.rt.meta(s));
    let layers = match meta {
        Some(m) if !ctx.rt.snap.tenants.is_empty() => ctx
            .rt
            .snap
            .tenants
            .applicable_to(ctx.principal.canonical_tenant(), &m.name),
        _ => Vec::new(),
    };
    AuditRecord {
        ts: std::time::SystemTime::now(),
        revision: ctx.rt.revision.clone(),
        layers,
        request_id: ctx.request_id,
        trace_id: ctx
            .trace_hex()
            .unwrap_or_else(|| trace_id(req, ctx.request_id)),
        principal: ctx.principal.shared_names().0.clone(),
        tenant: ctx.principal.shared_names().1.clone(),
        person: crate::observability::audit::AuditPerson(ctx.principal.clone()),
        principal_detail: None,
        auth: ctx.principal.auth.as_str(),
        source_ip: ctx.source_ip.or_else(|| {
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip())
        }),
        server,
        group: meta.map_or_else(|| "-".into(), |m| m.group.clone()),
        via: ctx.via.clone(),
        http_method: http_method(req),
        // The client wrote both: DLP-redacted, as every client-chosen field.
        path: redacted_path(&ctx.rt, bounded(req.uri.path(), 512)).into(),
        session_id: ctx
            .session_id
            .as_deref()
            .map(|s| ctx.rt.snap.redacted(s, s).into()),
        direction: "request",
        jsonrpc_id: None,
        method: None,
        tool: None,
        risk: None,
        task: None,
        shadow: None,
        flow: None,
        anomaly: None,
        notice: None,
        outcome: "",
        decided_by: None,
        reason: None,
        justification: None,
        args_digest: None,
        arguments: None,
        result: None,
        approval: None,
        credential: ctx.upstream.credential.clone(),
        cost: None,
        budget: None,
        dlp: Vec::new(),
        upstream: ctx.upstream.chosen,
        upstream_status: ctx.upstream.status,
        status,
        latency_us: ctx.start.elapsed().as_micros() as u64,
    }
}

/// The request method as a label (admission lets only these through).
fn http_method(req: &RequestHeader) -> &'static str {
    match req.method.as_str() {
        "POST" => "POST",
        "GET" => "GET",
        "DELETE" => "DELETE",
        _ => "other",
    }
}

/// The status as a label, without formatting the common ones.
fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    match status {
        200 => "200",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        415 => "415",
        429 => "429",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        0 => "0",
        _ => return status.to_string().into(),
    }
    .into()
}

/// A request path for the audit record: as it came when DLP finds nothing
/// in it, as written or percent-decoded; otherwise the findings masked.
fn redacted_path<'a>(
    rt: &crate::hub::runtime::Runtime,
    path: &'a str,
) -> std::borrow::Cow<'a, str> {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    match rt.snap.redacted(path, path) {
        // Decoding changed nothing: the text just scanned is the one read.
        std::borrow::Cow::Borrowed(_) if matches!(decoded, std::borrow::Cow::Borrowed(_)) => {
            std::borrow::Cow::Borrowed(path)
        }
        std::borrow::Cow::Borrowed(_) => rt.snap.redacted(path, &decoded),
        masked => masked,
    }
}

/// The first `n` characters of `s`.
fn bounded(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
