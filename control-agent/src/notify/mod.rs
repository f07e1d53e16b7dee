//! Held calls announced where approvers work (`serve --notify FILE`,
//! [`config`]): a generic JSON body signed with HMAC-SHA256 over its
//! timestamp and body, or a Slack or Teams incoming webhook's message,
//! each linking to the console where the approver signs in. Nothing in a
//! notification approves anything: it says what waits and where.
//!
//! Delivery is a job ([`start`]) of the agent holding the jobs lease: every
//! [`TICK`] it looks at the pending approvals and sends each webhook the
//! ones it has not taken yet, one POST each, retried with a doubling
//! backoff ([`FIRST_RETRY`] to [`LAST_RETRY`]) until it answers 2xx, the
//! call stops waiting, or [`MAX_ATTEMPTS`] were made. Which webhooks took
//! a held call is kept with the approval (in the approvals store, shared
//! by a fleet's agents), so no webhook is sent a held call twice after it
//! said 2xx, whichever agent runs the job; a crash between the 2xx and
//! keeping it sends it again once (the `X-Warden-Delivery` id is the same).
//! Every attempt is written to the change record and counted.
//!
//! Budget alerts (`alerts.rs`) go the same way to the webhooks that hear
//! of them (`events: [budget_alerts]`): ingest queues them in the audit
//! store, the job reads the queue every [`TICK`], and which webhooks took
//! an alert is kept with it in the queue (shared by a fleet's agents on
//! PostgreSQL). An alert is done once every webhook that wants it took it
//! or was given up on; one waiting longer than [`ALERT_TTL`] is given up.
//!
//! What a notification shows is what the console shows: the arguments and
//! the justification after the built-in DLP redaction, characters nobody
//! sees written out. Text a caller chose (a tool name, a justification)
//! is escaped for each body's markup, so it cannot become a link.

pub mod alerts;
pub mod config;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::approvals::{ApprovalView, State};
use crate::audit::alerts::PendingAlert;
use crate::pg::Lease;
use crate::server::Api;
use config::{Event, Kind, NotifyConfig, Webhook};

/// How often pending approvals are looked at.
pub const TICK: Duration = Duration::from_millis(500);
/// The wait after a first failed attempt; it doubles after each.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const LAST_RETRY: Duration = Duration::from_secs(60);
/// Attempts per held call and webhook (about 8 minutes with the waits).
pub const MAX_ATTEMPTS: u32 = 14;
/// The longest a webhook may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries under way at once.
pub const IN_FLIGHT: usize = 8;
/// Budget alerts read from the queue in one round.
pub const ALERTS_READ: usize = 500;
/// How long a budget alert may wait for its webhooks.
pub const ALERT_TTL: Duration = Duration::from_secs(86_400);

/// Whether `hook` wants to hear of `a`.
pub fn wants(hook: &Webhook, a: &ApprovalView) -> bool {
    let ap = &a.approval;
    // not a name comparison: risk tiers (the tenants go through in_scope)
    hook.hears(Event::HeldCalls)
        && (hook.tenants.is_empty()
            || warden_config::person::in_scope(&hook.tenants, &ap.tenant)
            || ap
                .for_tenants
                .iter()
                .any(|t| warden_config::person::in_scope(&hook.tenants, t)))
        && (hook.risks.is_empty() || hook.risks.iter().any(|r| r.eq_ignore_ascii_case(&ap.risk)))
}

/// Slack's three escapes: nothing a caller wrote becomes a link or a
/// mention.
pub(crate) fn slack_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// [`slack_text`] for the inside of a code span (`` `...` ``), which
/// has no escape for a backtick: one in a caller's text (it would end the
/// span and have the rest read as mrkdwn) is written as `ˋ` (U+02CB).
pub(crate) fn slack_code(s: &str) -> String {
    slack_text(s).replace('`', "\u{2cb}")
}

/// Markdown's active characters escaped (Teams' text blocks render a
/// subset of it): nothing a caller wrote becomes a link or a heading.
pub(crate) fn teams_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\`*_[]()#<>~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    jiff::Timestamp::from_second(secs as i64)
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

/// What a notification of `a` says: the fields the console shows, shown
/// as it shows them (`shown` redacts and writes out invisible characters).
pub fn body(hook: &Webhook, a: &ApprovalView, link: &str, shown: impl Fn(&str) -> String) -> Value {
    let ap = &a.approval;
    let args = shown(&ap.arguments);
    let why = ap.justification.as_deref().map(&shown);
    let (tool, principal, reason) = (shown(&ap.tool), shown(&ap.principal), shown(&ap.reason));
    let (server, tenant) = (shown(&ap.server), shown(&ap.tenant));
    match hook.kind {
        Kind::Generic => json!({
            "type": "approval.pending",
            "id": ap.id,
            "tenant": tenant,
            "principal": principal,
            "server": server,
            "tool": tool,
            "risk": ap.risk,
            "reason": reason,
            "justification": why,
            "arguments": args,
            "approvals": a.approvals,
            "required": ap.required,
            "requested_at": rfc3339(ap.requested_at),
            "expires_at": rfc3339(ap.pending_until),
            "url": link,
        }),
        Kind::Slack => {
            let e = slack_text;
            let c = slack_code;
            let headline = format!(
                "{} call waits for approval: `{}` on `{}` by `{}` ({})",
                ap.risk,
                c(&tool),
                c(&server),
                c(&principal),
                e(&tenant)
            );
            slack_message(
                &headline,
                vec![
                    json!({"type": "section", "fields": [
                        {"type": "plain_text", "text": format!("Reason: {}", e(&reason))},
                        {"type": "plain_text", "text": format!("Justification: {}", e(why.as_deref().unwrap_or("none")))},
                        {"type": "plain_text", "text": format!("Approvals: {}/{}", a.approvals, ap.required)},
                        {"type": "plain_text", "text": format!("Expires: {}", rfc3339(ap.pending_until))},
                    ]}),
                    json!({"type": "section", "text": {"type": "plain_text", "text": format!("Arguments: {}", e(&args))}}),
                ],
                link,
            )
        }
        Kind::Teams => {
            let e = teams_text;
            teams_card(
                json!([
                            {"type": "TextBlock", "weight": "Bolder", "wrap": true,
                             "text": format!("{} call waits for approval", e(&ap.risk))},
                            {"type": "FactSet", "facts": [
                                {"title": "Tool", "value": e(&tool)},
                                {"title": "Server", "value": e(&server)},
                                {"title": "Principal", "value": e(&principal)},
                                {"title": "Tenant", "value": e(&tenant)},
                                {"title": "Reason", "value": e(&reason)},
                                {"title": "Justification", "value": e(why.as_deref().unwrap_or("none"))},
                                {"title": "Approvals", "value": format!("{}/{}", a.approvals, ap.required)},
                                {"title": "Expires", "value": rfc3339(ap.pending_until)},
                            ]},
                            {"type": "TextBlock", "wrap": true, "fontType": "Monospace",
                             "text": e(&args)},
                ]),
                link,
            )
        }
    }
}

/// A Slack message: `headline` (mrkdwn), the `sections` after it and a
/// button to the console; its fallback text is the headline and the link.
pub(super) fn slack_message(headline: &str, sections: Vec<Value>, link: &str) -> Value {
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": headline, "verbatim": true}}),
    ];
    blocks.extend(sections);
    blocks.push(json!({"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": "Open in the console"}, "url": link}
    ]}));
    json!({
        "text": format!("{headline} <{link}|Open in the Warden console>"),
        "blocks": blocks,
    })
}

/// A Teams message: an adaptive card of `body` with a link to the console.
pub(super) fn teams_card(body: Value, link: &str) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": [{"type": "Action.OpenUrl", "title": "Open in the console", "url": link}],
            },
        }],
    })
}

/// The signature of a generic body: `v1=` and the hex HMAC-SHA256, under
/// the webhook's secret, of `{timestamp}.{body}`. A receiver recomputes
/// it, compares in constant time, and refuses a timestamp more than a few
/// minutes from its clock and a delivery id it has seen (replays).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1={}", hex::encode(ctx.sign().as_ref()))
}

/// The retries under way, by (held call or alert, webhook).
type TriesMap = std::sync::Mutex<HashMap<(String, String), Tries>>;

/// Where a held call's retries stand for one webhook.
#[derive(Debug, Clone, Copy)]
struct Tries {
    n: u32,
    next: Instant,
    busy: bool,
    /// Answered 2xx: never sent again from here (a round that read the
    /// queue or the approvals before the delivery was kept would).
    taken: bool,
}

/// One POST of `body` to `hook` (`event`: its `X-Warden-Event`,
/// `delivery`: the id that is the same on every attempt): `Ok(status)`
/// for a 2xx, else why not.
async fn send(
    http: &reqwest::Client,
    hook: &Webhook,
    event: &str,
    delivery: &str,
    body: &Value,
) -> Result<u16, String> {
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut req = http
        .post(hook.url.clone())
        .header("content-type", "application/json")
        .header("user-agent", "warden-agent")
        .header("x-warden-event", event)
        .header("x-warden-delivery", delivery);
    if let Some(secret) = &hook.secret {
        req = req
            .header("x-warden-timestamp", ts.to_string())
            .header("x-warden-signature", signature(secret, ts, &bytes));
    }
    let resp = req.body(bytes).send().await.map_err(|e| {
        // Not the URL: a Slack or Teams URL is itself a secret.
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection refused or unreachable"
        } else {
            "request failed"
        };
        kind.to_owned()
    })?;
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        Ok(status)
    } else {
        Err(format!("answered {status}"))
    }
}

/// Starts the notifier (see the module's text). It runs while the agent
/// holds `lease`.
pub fn start(
    api: Arc<Api>,
    cfg: NotifyConfig,
    lease: Arc<Lease>,
) -> anyhow::Result<JoinHandle<()>> {
    // Kept connections are dropped before common servers' keep-alive ends
    // (Node's 5 s), so a delivery seldom meets one the receiver closed.
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(4))
        .build()?;
    let cfg = Arc::new(cfg);
    Ok(tokio::spawn(async move {
        let tries: Arc<TriesMap> = Arc::default();
        let wants_alerts = cfg.webhooks.iter().any(|h| h.hears(Event::BudgetAlerts));
        let flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        loop {
            tokio::time::sleep(TICK).await;
            if !lease.held() {
                continue;
            }
            let now = SystemTime::now();
            let pending: Vec<ApprovalView> = api
                .approvals
                .list_view(false, None, now)
                .into_iter()
                .filter(|v| v.state == State::Pending)
                .collect();
            let alerts = if wants_alerts {
                let audit = api.audit.clone();
                match tokio::task::spawn_blocking(move || audit.pending_alerts(ALERTS_READ)).await {
                    Ok(Ok(a)) => a,
                    Ok(Err(e)) => {
                        tracing::warn!("budget alerts could not be read: {e:#}");
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                }
            } else {
                Vec::new()
            };
            {
                // Bounded by the pending approvals (`MAX_PENDING`) and the
                // alerts read ([`ALERTS_READ`]) times the webhooks: what
                // stopped waiting is forgotten.
                let mut t = tries.lock().unwrap_or_else(|e| e.into_inner());
                t.retain(|(id, _), _| {
                    pending.iter().any(|v| v.approval.id == *id)
                        || alerts.iter().any(|a| alert_key(a.id) == *id)
                });
                api.metrics.notify_retries.set(t.len() as i64);
            }
            alert_round(&api, &cfg, &http, &tries, &flight, alerts).await;
            for a in pending {
                for hook in cfg.webhooks.iter().filter(|h| wants(h, &a)) {
                    if a.approval.notified.contains(&hook.name) {
                        continue;
                    }
                    let key = (a.approval.id.clone(), hook.name.clone());
                    if !due(&tries, &key) {
                        continue;
                    }
                    let Ok(permit) = flight.clone().acquire_owned().await else {
                        return;
                    };
                    let (api, http, hook, tries, cfg) = (
                        api.clone(),
                        http.clone(),
                        hook.clone(),
                        tries.clone(),
                        cfg.clone(),
                    );
                    let a = a.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let link =
                            format!("{}/console/approvals/{}", cfg.console_url, a.approval.id);
                        let body = body(&hook, &a, &link, |t| api.console.redact(t));
                        let delivery = format!("{}/{}", a.approval.id, hook.name);
                        let res = send(&http, &hook, "approval.pending", &delivery, &body).await;
                        deliver_done(&api, &hook, &a, res, &tries, key).await;
                    });
                }
            }
        }
    }))
}

/// The key of alert `id` among the retries.
fn alert_key(id: i64) -> String {
    format!("alert:{id}")
}

/// Counts one attempt of `key` on `tries`, a failure waiting before the
/// next; the attempts made.
fn attempted(tries: &TriesMap, key: (String, String), failed: bool) -> u32 {
    let mut t = tries.lock().unwrap_or_else(|e| e.into_inner());
    let e = t.entry(key).or_insert(Tries {
        n: 0,
        next: Instant::now(),
        busy: false,
        taken: false,
    });
    e.busy = false;
    e.n += 1;
    e.taken |= !failed;
    if failed {
        let wait = FIRST_RETRY
            .saturating_mul(1 << (e.n - 1).min(16))
            .min(LAST_RETRY);
        e.next = Instant::now() + wait;
    }
    e.n
}

/// Takes `key`'s turn when it is due (not under way, not given up, its
/// wait over): whether it was.
fn due(tries: &TriesMap, key: &(String, String)) -> bool {
    let mut t = tries.lock().unwrap_or_else(|e| e.into_inner());
    let e = t.entry(key.clone()).or_insert(Tries {
        n: 0,
        next: Instant::now(),
        busy: false,
        taken: false,
    });
    if e.busy || e.taken || e.n >= MAX_ATTEMPTS || e.next > Instant::now() {
        return false;
    }
    e.busy = true;
    true
}

/// One round of budget alerts: each alert sent to the webhooks that want
/// it and have not taken it, when due; an alert none still waits for is
/// marked done.
async fn alert_round(
    api: &Arc<Api>,
    cfg: &Arc<NotifyConfig>,
    http: &reqwest::Client,
    tries: &Arc<TriesMap>,
    flight: &Arc<tokio::sync::Semaphore>,
    pending: Vec<PendingAlert>,
) {
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    for p in pending {
        let key_of = |hook: &Webhook| (alert_key(p.id), hook.name.clone());
        let open: Vec<&Webhook> = cfg
            .webhooks
            .iter()
            .filter(|h| alerts::wants(h, &p.alert) && !p.sent.contains(&h.name))
            .collect();
        let expired = now_us.saturating_sub(p.queued_us) > ALERT_TTL.as_micros() as i64;
        let waiting: Vec<&Webhook> = open
            .iter()
            .copied()
            .filter(|h| {
                let t = tries.lock().unwrap_or_else(|e| e.into_inner());
                t.get(&key_of(h))
                    .is_none_or(|e| e.busy || e.n < MAX_ATTEMPTS)
            })
            .collect();
        if waiting.is_empty() || expired {
            if expired {
                for h in &waiting {
                    api.metrics
                        .budget_alert_notifications
                        .with_label_values(&[h.name.as_str(), "expired"])
                        .inc();
                    api.store.record(
                        "notifier",
                        "budget_alert.notify",
                        None,
                        false,
                        &format!(
                            "{} {}: not taken in {}; given up",
                            p.alert.key,
                            h.name,
                            humantime::format_duration(ALERT_TTL)
                        ),
                    );
                }
            }
            let audit = api.audit.clone();
            let id = p.id;
            if !matches!(
                tokio::task::spawn_blocking(move || audit.alert_done(id)).await,
                Ok(Ok(()))
            ) {
                tracing::warn!(alert = %p.alert.key, "a budget alert could not be marked done");
            }
            continue;
        }
        for hook in waiting {
            let key = key_of(hook);
            if !due(tries, &key) {
                continue;
            }
            let Ok(permit) = flight.clone().acquire_owned().await else {
                return;
            };
            let (api, http, hook, tries, cfg) = (
                api.clone(),
                http.clone(),
                hook.clone(),
                tries.clone(),
                cfg.clone(),
            );
            let p = p.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let link = alerts::link(&cfg.console_url, &p.alert);
                let body = alerts::body(&hook, &p.alert, &link, |t| api.console.redact(t));
                let delivery = format!("{}/{}", p.alert.key, hook.name);
                let res = send(&http, &hook, alerts::EVENT, &delivery, &body).await;
                alert_done(&api, &hook, &p, res, &tries, key).await;
            });
        }
    }
}

/// Keeps and records the outcome of one attempt of a budget alert.
async fn alert_done(
    api: &Arc<Api>,
    hook: &Webhook,
    p: &PendingAlert,
    res: Result<u16, String>,
    tries: &TriesMap,
    key: (String, String),
) {
    let n = attempted(tries, key, res.is_err());
    let outcome = match &res {
        Ok(status) => {
            let (audit, id, name) = (api.audit.clone(), p.id, hook.name.clone());
            let kept = tokio::task::spawn_blocking(move || audit.alert_sent(id, &name)).await;
            if !matches!(kept, Ok(Ok(()))) {
                // Sent but not kept: another agent (or this one after a
                // restart) sends it once more, same delivery id.
                tracing::warn!(alert = %p.alert.key, webhook = %hook.name, "a sent budget alert was not kept");
            }
            format!("{}: sent ({status}) on attempt {n}", hook.name)
        }
        Err(e) if n >= MAX_ATTEMPTS => format!("{}: {e} on attempt {n}; given up", hook.name),
        Err(e) => format!("{}: {e} on attempt {n}; tried again", hook.name),
    };
    let label = match &res {
        Ok(_) => "sent",
        Err(_) if n >= MAX_ATTEMPTS => "given_up",
        Err(_) => "failed",
    };
    api.metrics
        .budget_alert_notifications
        .with_label_values(&[hook.name.as_str(), label])
        .inc();
    api.store.record(
        "notifier",
        "budget_alert.notify",
        None,
        res.is_ok(),
        &format!("{} {outcome}", p.alert.key),
    );
}

/// Keeps and records the outcome of one attempt.
async fn deliver_done(
    api: &Arc<Api>,
    hook: &Webhook,
    a: &ApprovalView,
    res: Result<u16, String>,
    tries: &TriesMap,
    key: (String, String),
) {
    let id = a.approval.id.clone();
    let n = attempted(tries, key, res.is_err());
    let outcome = match &res {
        Ok(status) => {
            let (ap, id2, name) = (api.clone(), id.clone(), hook.name.clone());
            let kept = tokio::task::spawn_blocking(move || {
                ap.approvals.mark_notified(&id2, &name, SystemTime::now())
            })
            .await;
            if !matches!(kept, Ok(Ok(()))) {
                // Sent but not kept: another agent (or this one after a
                // restart) sends it once more, under the same delivery id.
                tracing::warn!(approval = %id, webhook = %hook.name, "a sent notification was not kept");
            }
            format!("{}: sent ({status}) on attempt {n}", hook.name)
        }
        Err(e) if n >= MAX_ATTEMPTS => {
            format!("{}: {e} on attempt {n}; given up", hook.name)
        }
        Err(e) => format!("{}: {e} on attempt {n}; tried again", hook.name),
    };
    let label = match &res {
        Ok(_) => "sent",
        Err(_) if n >= MAX_ATTEMPTS => "given_up",
        Err(_) => "failed",
    };
    api.metrics
        .notifications
        .with_label_values(&[hook.name.as_str(), label])
        .inc();
    api.store.record(
        "notifier",
        "approval.notify",
        None,
        res.is_ok(),
        &format!("{id} {outcome}"),
    );
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "alert_tests.rs"]
mod alert_tests;
