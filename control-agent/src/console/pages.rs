//! The console's pages and actions. Each page is an `askama` template
//! (`control-agent/templates/console/`); values reach HTML only through
//! its escaping.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use askama::Template;
use http::StatusCode;

use super::session::{Role, Session, User};
use super::{html, plain, redirect, Resp};
use crate::approvals::Verdict;
use crate::audit::Query;
use crate::server::Api;

/// What every page shows around its content.
pub struct Frame {
    pub title: String,
    pub active: &'static str,
    pub user: Option<UserView>,
    pub csrf: String,
    pub flash: Option<String>,
}

pub struct UserView {
    pub name: String,
    pub role: &'static str,
    pub scope: String,
}

impl Frame {
    fn new(
        title: impl Into<String>,
        active: &'static str,
        s: &Session,
        flash: Option<String>,
    ) -> Frame {
        Frame {
            title: title.into(),
            active,
            user: Some(UserView {
                name: s.user.name.clone(),
                role: s.user.role.as_str(),
                scope: if s.user.tenants.is_empty() {
                    "all tenants".into()
                } else {
                    s.user.tenants.join(", ")
                },
            }),
            csrf: s.csrf.clone(),
            flash,
        }
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    frame: Frame,
    error: Option<String>,
}

// ---------------------------------------------------------------- fleet

pub struct MemberView {
    id: String,
    labels: String,
    revision: String,
    due: String,
    why: String,
    current: bool,
    healthy: bool,
    last_error: String,
    calls: u64,
    rate: String,
    last_seen: String,
    stale: bool,
    upstreams: Vec<(String, u64, u64)>,
}

pub struct ChangeView {
    ts: String,
    actor: String,
    action: String,
    ok: bool,
    detail: String,
    revision: String,
}

#[derive(Template)]
#[template(path = "console/fleet.html")]
struct FleetPage {
    frame: Frame,
    members: Vec<MemberView>,
    current: String,
    served: Vec<(String, String)>,
    rollout: String,
    last_build_error: String,
    kill_switch: String,
    kill_history: Vec<ChangeView>,
    changes: Vec<ChangeView>,
    admin: bool,
}

// -------------------------------------------------------------- bundles

pub struct RevisionView {
    seq: u64,
    revision: String,
    published_at: String,
    actor: String,
    reason: String,
    target: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "console/bundles.html")]
struct BundlesPage {
    frame: Frame,
    revisions: Vec<RevisionView>,
    admin: bool,
}

#[derive(Template)]
#[template(path = "console/diff.html")]
struct DiffPage {
    frame: Frame,
    a: String,
    b: String,
    files: Vec<super::diff::FileDiff>,
    admin: bool,
}

// ------------------------------------------------------------ approvals

pub struct ApprovalView {
    id: String,
    state: String,
    tenant: String,
    principal: String,
    server: String,
    tool: String,
    risk: String,
    reason: String,
    justification: String,
    arguments: String,
    args_digest: String,
    approvals: u64,
    required: u64,
    waiting: String,
    requested_at: String,
    requested_by: String,
    trace_id: String,
    trace_link: String,
    decisions: Vec<(String, String, String, String)>,
}

#[derive(Template)]
#[template(path = "console/approvals.html")]
struct ApprovalsPage {
    frame: Frame,
    approvals: Vec<ApprovalView>,
    all: bool,
}

#[derive(Template)]
#[template(path = "console/approval.html")]
struct ApprovalPage {
    frame: Frame,
    a: ApprovalView,
    can_decide: bool,
}

// ---------------------------------------------------------------- audit

#[derive(Default)]
pub struct AuditForm {
    from: String,
    to: String,
    gateway: String,
    principal: String,
    tenant: String,
    server: String,
    tool: String,
    outcome: String,
    reason: String,
    approval_id: String,
    trace_id: String,
}

pub struct RowView {
    id: i64,
    ts: String,
    gateway: String,
    seq: u64,
    tenant: String,
    principal: String,
    server: String,
    tool: String,
    method: String,
    direction: String,
    outcome: String,
    reason: String,
    latency: String,
    /// `/console/audit?trace_id=…`, encoded.
    trace_link: String,
    denied: bool,
}

pub struct ChainView {
    gateway: String,
    records: u64,
    first_seq: u64,
    last_seq: u64,
    ok: bool,
    problems: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    frame: Frame,
    form: AuditForm,
    rows: Vec<RowView>,
    total: u64,
    next: Option<String>,
    verify_link: String,
    /// (intact, what was checked, each chain: shown to users of every tenant).
    verification: Option<(bool, String, Vec<ChainView>)>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/record.html")]
struct RecordPage {
    frame: Frame,
    row: RowView,
    fields: Vec<(String, String)>,
    json: String,
}

// ----------------------------------------------------------------- live

pub struct Bar {
    label: String,
    value: u64,
    max: u64,
}

#[derive(Template)]
#[template(path = "console/live.html")]
struct LivePage {
    frame: Frame,
    window: u64,
    gateway: String,
    gateways: Vec<String>,
    calls: u64,
    calls_per_sec: String,
    p50: String,
    p99: String,
    timeline: Vec<Bar>,
    /// (title, element id, bars).
    panels: Vec<(&'static str, &'static str, Vec<Bar>)>,
}

fn render(t: &impl Template) -> Resp {
    match t.render() {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("template: {e}")),
    }
}

fn s(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn bars(items: &[(String, u64)]) -> Vec<Bar> {
    let max = items.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    items
        .iter()
        .map(|(label, value)| Bar {
            label: label.clone(),
            value: *value,
            max,
        })
        .collect()
}

/// Parses a time of a form: RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` (UTC).
fn parse_time(t: &str) -> Result<Option<i64>, String> {
    let t = t.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let mut owned = t.replace(' ', "T");
    if owned.len() == 16 {
        owned.push_str(":00");
    }
    if !owned.ends_with('Z') && !owned.contains('+') {
        owned.push('Z');
    }
    let at = humantime::parse_rfc3339_weak(&owned)
        .or_else(|_| humantime::parse_rfc3339(&owned))
        .map_err(|e| format!("`{t}` is not a time (YYYY-MM-DDTHH:MM, UTC): {e}"))?;
    Ok(Some(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64),
    ))
}

fn fmt_us(us: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

impl Api {
    pub(super) fn login_page(&self, error: Option<&str>, status: StatusCode) -> Resp {
        let page = LoginPage {
            frame: Frame {
                title: "Log in".into(),
                active: "",
                user: None,
                csrf: String::new(),
                flash: None,
            },
            error: error.map(str::to_owned),
        };
        let mut r = render(&page);
        *r.status_mut() = status;
        r
    }

    pub(super) async fn console_get(
        self: &Arc<Self>,
        session: &Session,
        sid: &str,
        path: &str,
        q: std::collections::BTreeMap<String, String>,
    ) -> Resp {
        let flash = self.console.sessions.take_flash(sid);
        let user = &session.user;
        match path {
            "/console" | "/console/" => redirect("/console/fleet"),
            "/console/fleet" => self.fleet_page(session, flash),
            "/console/bundles" => self.bundles_page(session, flash),
            "/console/bundles/diff" => {
                let (a, b) = (
                    q.get("a").cloned().unwrap_or_default(),
                    q.get("b").cloned().unwrap_or_default(),
                );
                self.diff_page(session, flash, &a, &b).await
            }
            "/console/approvals" => {
                let all = q.get("all").is_some_and(|v| v == "1");
                let now = SystemTime::now();
                let approvals = self
                    .approvals
                    .list(all, None, now)
                    .iter()
                    .filter(|v| user.sees(v["tenant"].as_str().unwrap_or("")))
                    .map(|v| self.approval_view(v))
                    .collect();
                render(&ApprovalsPage {
                    frame: Frame::new("Approvals", "approvals", session, flash),
                    approvals,
                    all,
                })
            }
            p if p.starts_with("/console/approvals/") => {
                let id = &p["/console/approvals/".len()..];
                if !is_id(id) {
                    return plain(StatusCode::NOT_FOUND, "no such approval");
                }
                let found = self
                    .approvals
                    .get(id, None, SystemTime::now())
                    .filter(|v| user.sees(v["tenant"].as_str().unwrap_or("")));
                match found {
                    Some(v) => {
                        let a = self.approval_view(&v);
                        let can_decide = user.role == Role::Approver
                            && matches!(a.state.as_str(), "pending" | "approved");
                        render(&ApprovalPage {
                            frame: Frame::new(
                                format!("Approval {}", a.id),
                                "approvals",
                                session,
                                flash,
                            ),
                            a,
                            can_decide,
                        })
                    }
                    None => plain(StatusCode::NOT_FOUND, "no such approval"),
                }
            }
            "/console/audit" => self.audit_page(session, flash, &q).await,
            p if p.starts_with("/console/audit/") => {
                let id = p["/console/audit/".len()..].parse::<i64>().unwrap_or(-1);
                self.record_page(session, flash, id).await
            }
            "/console/live" => self.live_page(session, flash, &q).await,
            _ => plain(StatusCode::NOT_FOUND, "no such page"),
        }
    }

    pub(super) async fn console_post(
        self: &Arc<Self>,
        session: &Session,
        sid: &str,
        path: &str,
        form: std::collections::BTreeMap<String, String>,
    ) -> Resp {
        let user = &session.user;
        let field = |k: &str| form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
        let need = |role: Role| user.role == role;
        match path {
            "/console/kill" => {
                if !need(Role::Admin) {
                    return self.forbidden(user, path, "only an admin pulls the kill switch");
                }
                let on = field("verb") != "revive";
                let (scope, value) = (field("scope"), field("value"));
                let store = self.store.clone();
                let actor = format!("console:{}", user.name);
                let (sc, va) = (scope.clone(), value.clone());
                let res =
                    tokio::task::spawn_blocking(move || store.kill(&actor, &sc, &va, on)).await;
                let verb = if on { "kill" } else { "revive" };
                let msg = match res {
                    Ok(Ok(p)) => format!("{verb} {scope} {value}: published {}", p.revision),
                    Ok(Err(e)) => format!("{verb} refused: {e}"),
                    Err(e) => format!("{verb} failed: {e}"),
                };
                self.console.sessions.flash(sid, msg);
                redirect("/console/fleet")
            }
            "/console/bundles/rollback" => {
                if !need(Role::Admin) {
                    return self.forbidden(user, path, "only an admin rolls back");
                }
                let revision = field("revision");
                let store = self.store.clone();
                let actor = format!("console:{}", user.name);
                let rev = revision.clone();
                let res = tokio::task::spawn_blocking(move || store.rollback(&actor, &rev)).await;
                let msg = match res {
                    Ok(Ok(p)) => format!("rolled back to {revision}: published {}", p.revision),
                    Ok(Err(e)) => format!("rollback refused: {e}"),
                    Err(e) => format!("rollback failed: {e}"),
                };
                self.console.sessions.flash(sid, msg);
                redirect("/console/bundles")
            }
            p if p.starts_with("/console/approvals/") && p.ends_with("/decide") => {
                let id = &p["/console/approvals/".len()..p.len() - "/decide".len()];
                if !is_id(id) {
                    return plain(StatusCode::NOT_FOUND, "no such approval");
                }
                if !need(Role::Approver) {
                    return self.forbidden(user, path, "only an approver approves or denies");
                }
                let verdict = match field("verdict").as_str() {
                    "approve" => Verdict::Approve,
                    "deny" => Verdict::Deny,
                    _ => return plain(StatusCode::BAD_REQUEST, "verdict: approve or deny"),
                };
                let comment = Some(field("comment")).filter(|c| !c.is_empty());
                let res = self.decide(&user.name, id, verdict.clone(), comment);
                let what = match verdict {
                    Verdict::Approve => "approved",
                    Verdict::Deny => "denied",
                };
                self.console_record(&user.name, &format!("approval.{what}"), res.is_ok(), id);
                let msg = match res {
                    Ok(v) => format!("{id} {what}: now {}", s(&v["state"])),
                    Err(e) => format!("{id} not {what}: {e}"),
                };
                self.console.sessions.flash(sid, msg);
                redirect(&format!("/console/approvals/{id}"))
            }
            _ => plain(StatusCode::NOT_FOUND, "no such action"),
        }
    }

    fn forbidden(&self, user: &User, path: &str, why: &str) -> Resp {
        self.console_record(&user.name, "refused", false, &format!("{path}: {why}"));
        plain(StatusCode::FORBIDDEN, &format!("refused: {why}"))
    }

    fn fleet_page(&self, session: &Session, flash: Option<String>) -> Resp {
        let f = self.store.fleet();
        let user = &session.user;
        // A user of some tenants sees gateways, not what their labels,
        // errors and the kill switch say about other tenants.
        let scoped = !user.tenants.is_empty();
        let members = f["members"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|m| MemberView {
                id: s(&m["id"]),
                labels: if scoped {
                    String::new()
                } else {
                    self.console.redact(
                        &m["labels"]
                            .as_object()
                            .map(|o| {
                                o.iter()
                                    .map(|(k, v)| format!("{k}={}", s(v)))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .unwrap_or_default(),
                    )
                },
                revision: s(&m["revision"]),
                due: s(&m["due"]),
                why: s(&m["why"]),
                current: m["current"] == true,
                healthy: m["healthy"] == true,
                last_error: if scoped {
                    String::new()
                } else {
                    self.console.redact(&s(&m["last_error"]))
                },
                calls: m["calls"].as_u64().unwrap_or(0),
                rate: format!("{:.1}", m["calls_per_sec"].as_f64().unwrap_or(0.0)),
                last_seen: format!("{:.0} s ago", m["last_seen_secs"].as_f64().unwrap_or(0.0)),
                stale: m["stale"] == true,
                upstreams: m["upstreams"]
                    .as_array()
                    .map(|a| a.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .map(|u| {
                        (
                            s(&u["server"]),
                            u["healthy"].as_u64().unwrap_or(0),
                            u["replicas"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect(),
            })
            .collect();
        let changes: Vec<ChangeView> = self
            .store
            .recent_changes(500)
            .iter()
            .map(|c| ChangeView {
                ts: s(&c["ts"]),
                actor: s(&c["actor"]),
                action: s(&c["action"]),
                ok: c["ok"] != false,
                // Written by the agent itself: ids, names, revisions.
                detail: s(&c["detail"]),
                revision: s(&c["revision"]),
            })
            .collect();
        let kill_history = self
            .store
            .kill_log()
            .into_iter()
            .filter(|k| kill_visible(user, &k.scope, &k.value))
            .take(10)
            .map(|k| ChangeView {
                ts: k.at,
                actor: k.actor,
                action: k.action,
                ok: true,
                detail: format!("{} {}", k.scope, k.value),
                revision: k.revision,
            })
            .collect();
        let mut kill_switch = f["kill_switch"].clone();
        if scoped {
            for (list, scope) in [("tenants", "tenant"), ("principals", "principal")] {
                if let Some(a) = kill_switch.get_mut(list).and_then(|v| v.as_array_mut()) {
                    a.retain(|v| kill_visible(user, scope, v.as_str().unwrap_or("")));
                }
            }
        }
        let admin = session.user.role == Role::Admin;
        render(&FleetPage {
            frame: Frame::new("Fleet", "fleet", session, flash),
            members,
            current: s(&f["current"]),
            served: f["served"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|p| (s(&p["revision"]), s(&p["why"])))
                .collect(),
            rollout: if f["rollout"].is_null() {
                String::new()
            } else {
                format!(
                    "{} ({})",
                    s(&f["rollout"]["revision"]),
                    s(&f["rollout"]["state"])
                )
            },
            last_build_error: if scoped {
                String::new()
            } else {
                self.console.redact(&s(&f["last_build_error"]))
            },
            kill_switch: serde_json::to_string_pretty(&kill_switch).unwrap_or_default(),
            kill_history,
            // The change record names principals of every tenant: admins only.
            changes: if admin {
                changes.into_iter().take(25).collect()
            } else {
                Vec::new()
            },
            admin,
        })
    }

    fn bundles_page(&self, session: &Session, flash: Option<String>) -> Resp {
        let current = self.store.current().map(|p| p.revision.clone());
        let mut revisions: Vec<RevisionView> = self
            .store
            .history()
            .iter()
            .map(|h| RevisionView {
                seq: h.seq,
                revision: h.revision.clone(),
                published_at: humantime::format_rfc3339_seconds(h.published_at).to_string(),
                actor: h.actor.clone(),
                reason: self.console.redact(&h.reason),
                target: h.target.why(),
                current: current.as_deref() == Some(h.revision.as_str()),
            })
            .collect();
        revisions.reverse();
        render(&BundlesPage {
            frame: Frame::new("Bundles", "bundles", session, flash),
            revisions,
            admin: session.user.role == Role::Admin,
        })
    }

    async fn diff_page(
        self: &Arc<Self>,
        session: &Session,
        flash: Option<String>,
        a: &str,
        b: &str,
    ) -> Resp {
        if !session.user.tenants.is_empty() {
            return self.forbidden(
                &session.user,
                "/console/bundles/diff",
                "bundle sources are the whole fleet's: users of some tenants do not see them",
            );
        }
        self.console_record(
            &session.user.name,
            "bundles.diff",
            true,
            &format!("{a} {b}"),
        );
        let api = self.clone();
        let (ra, rb) = (a.to_owned(), b.to_owned());
        let files = tokio::task::spawn_blocking(move || {
            match (api.store.files_of(&ra), api.store.files_of(&rb)) {
                (Ok(fa), Ok(fb)) => Ok(super::diff::diff(&fa, &fb, |t| api.console.redact(t))),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        })
        .await;
        let files = match files {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return plain(StatusCode::NOT_FOUND, &e),
            Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        render(&DiffPage {
            frame: Frame::new(format!("{a} → {b}"), "bundles", session, flash),
            a: a.to_owned(),
            b: b.to_owned(),
            files,
            admin: session.user.role == Role::Admin,
        })
    }

    fn approval_view(&self, v: &serde_json::Value) -> ApprovalView {
        let args = s(&v["arguments"]);
        let pretty = serde_json::from_str::<serde_json::Value>(&args)
            .ok()
            .and_then(|j| serde_json::to_string_pretty(&j).ok())
            .unwrap_or(args);
        ApprovalView {
            id: s(&v["id"]),
            state: s(&v["state"]),
            tenant: s(&v["tenant"]),
            principal: s(&v["principal"]),
            server: s(&v["server"]),
            tool: s(&v["tool"]),
            risk: s(&v["risk"]),
            reason: self.console.redact(&s(&v["reason"])),
            justification: self.console.redact(&s(&v["justification"])),
            arguments: self.console.redact(&pretty),
            args_digest: s(&v["args_digest"]),
            approvals: v["approvals"].as_u64().unwrap_or(0),
            required: v["required"].as_u64().unwrap_or(1),
            waiting: format!("{} s", v["waiting_secs"].as_u64().unwrap_or(0)),
            requested_at: s(&v["requested_at"]),
            requested_by: s(&v["requested_by"]),
            trace_id: s(&v["trace_id"]),
            trace_link: trace_link(&s(&v["trace_id"])),
            decisions: v["decisions"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|d| {
                    (
                        s(&d["approver"]),
                        s(&d["verdict"]),
                        s(&d["at"]),
                        self.console.redact(&s(&d["comment"])),
                    )
                })
                .collect(),
        }
    }

    fn row_view(&self, r: &crate::audit::Row) -> RowView {
        RowView {
            id: r.id,
            ts: r.ts.clone(),
            gateway: r.gateway.clone(),
            seq: r.seq,
            tenant: r.tenant.clone(),
            principal: r.principal.clone(),
            server: r.server.clone(),
            tool: r.tool.clone().unwrap_or_default(),
            method: r.method.clone().unwrap_or_default(),
            direction: r.direction.clone(),
            outcome: r.outcome.clone(),
            reason: self.console.redact(r.reason.as_deref().unwrap_or("")),
            latency: r
                .latency_us
                .map(|us| format!("{:.1} ms", us as f64 / 1000.0))
                .unwrap_or_default(),
            trace_link: trace_link(&r.trace_id),
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
        };
        let opt = |v: &str| Some(v.to_owned()).filter(|v| !v.is_empty());
        let query = Query {
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
            tenants: user.tenants.clone(),
            before_id: q.get("before").and_then(|b| b.parse().ok()),
            limit: 50,
        };
        Ok((form, query))
    }

    async fn audit_page(
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
                "the range holds more than {VERIFY_CAP} records: only the first were checked; narrow the time range"
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
                    gateway: c.gateway,
                    records: c.records,
                    first_seq: c.first_seq,
                    last_seq: c.last_seq,
                    ok: c.ok,
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

    async fn record_page(
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
                    .map(|(k, x)| (k.clone(), redact_field(&self.console, k, x)))
                    .collect()
            })
            .unwrap_or_default();
        render(&RecordPage {
            frame: Frame::new(
                format!("Record {} #{}", row.gateway, row.seq),
                "audit",
                session,
                flash,
            ),
            row: self.row_view(&row),
            fields,
            json: self
                .console
                .redact(&serde_json::to_string_pretty(&v).unwrap_or_default()),
        })
    }

    async fn live_page(
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
            self.store.fleet()["members"]
                .as_array()
                .map(|a| a.iter().map(|m| s(&m["id"])).collect())
                .unwrap_or_default()
        };
        for (g, _) in &live.gateways {
            if !gateways.contains(g) {
                gateways.push(g.clone());
            }
        }
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
            ],
        })
    }
}

/// Records one console verification reads at most.
pub const VERIFY_CAP: usize = 20_000;

/// `/console/audit?trace_id=<id>`, the id encoded.
fn trace_link(trace_id: &str) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("trace_id", trace_id)
        .finish();
    format!("/console/audit?{q}")
}

/// Whether a kill-switch entry (`scope`, `value`) is one `user` may see:
/// tenant and principal entries of other tenants are not.
fn kill_visible(user: &User, scope: &str, value: &str) -> bool {
    match scope {
        _ if user.tenants.is_empty() => true,
        "tenant" => user.sees(value),
        "principal" => value.split_once('/').is_some_and(|(t, _)| user.sees(t)),
        _ => true,
    }
}

/// One field of a record for display: redacted with its name beside it.
fn redact_field(c: &super::Console, k: &str, x: &serde_json::Value) -> String {
    let key = serde_json::to_string(k).unwrap_or_default();
    let line = format!("{key}: {}", serde_json::to_string(x).unwrap_or_default());
    let red = c.redact(&line);
    let shown = red.strip_prefix(&format!("{key}: ")).unwrap_or(&red);
    if x.is_string() {
        serde_json::from_str::<String>(shown).unwrap_or_else(|_| shown.to_owned())
    } else {
        shown.to_owned()
    }
}

/// Whether `id` can be an approval's id (`ap_` and base32): anything else
/// never reaches a lookup or a redirect.
fn is_id(id: &str) -> bool {
    id.len() <= 64 && !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A JSON value with every string (and member name) redacted.
fn redact_value(c: &super::Console, v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(x) => Value::String(c.redact(x)),
        Value::Array(a) => Value::Array(a.iter().map(|x| redact_value(c, x)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (c.redact(k), redact_value(c, x)))
                .collect(),
        ),
        other => other.clone(),
    }
}
