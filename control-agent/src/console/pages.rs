//! The console's pages and actions. Each page is an `askama` template
//! (`control-agent/templates/console/`); values reach HTML only through
//! its escaping.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use http::StatusCode;

use super::gate::{ApprovalId, Flash, Form, LoggedIn, Query, RecordId};
use super::session::{Role, Session, User};
use super::{plain, redirect, Resp};
use crate::approvals::{self, Verdict};
use crate::server::Api;
use crate::store;

use super::views::*;

/// The agent's state, as the console's handlers take it.
type Agent = State<Arc<Api>>;

/// `GET /console`: the fleet page.
pub(crate) async fn home() -> Resp {
    redirect("/console/fleet")
}

/// `GET /console/fleet`.
pub(crate) async fn fleet(State(api): Agent, who: LoggedIn, Flash(flash): Flash) -> Resp {
    api.fleet_page(&who.session, flash)
}

/// `POST /console/kill`: pulls (or releases) the kill switch.
pub(crate) async fn kill(State(api): Agent, who: LoggedIn, form: Form) -> Resp {
    let user = &who.session.user;
    let on = form.field("verb") != "revive";
    let (scope, value) = (form.field("scope"), form.field("value"));
    let store = api.store.clone();
    let actor = format!("console:{}", user.name);
    let (sc, va) = (scope.clone(), value.clone());
    let res = tokio::task::spawn_blocking(move || store.kill(&actor, &sc, &va, on)).await;
    let verb = if on { "kill" } else { "revive" };
    let msg = match res {
        Ok(Ok(p)) => format!("{verb} {scope} {value}: published {}", p.revision),
        Ok(Err(e)) => format!("{verb} refused: {e}"),
        Err(e) => format!("{verb} failed: {e}"),
    };
    api.console.sessions.flash(&who.sid, msg);
    redirect("/console/fleet")
}

/// `GET /console/bundles`.
pub(crate) async fn bundles(State(api): Agent, who: LoggedIn, Flash(flash): Flash) -> Resp {
    api.bundles_page(&who.session, flash)
}

/// `GET /console/bundles/diff?a=…&b=…`.
pub(crate) async fn bundle_diff(
    State(api): Agent,
    who: LoggedIn,
    Flash(flash): Flash,
    Query(q): Query,
) -> Resp {
    let (a, b) = (
        q.get("a").cloned().unwrap_or_default(),
        q.get("b").cloned().unwrap_or_default(),
    );
    api.diff_page(&who.session, flash, &a, &b).await
}

/// `POST /console/bundles/rollback`: the fleet's bundle to a revision.
pub(crate) async fn rollback(State(api): Agent, who: LoggedIn, form: Form) -> Resp {
    let user = &who.session.user;
    let revision = form.field("revision");
    let store = api.store.clone();
    let actor = format!("console:{}", user.name);
    let rev = revision.clone();
    let res = tokio::task::spawn_blocking(move || store.rollback(&actor, &rev)).await;
    let msg = match res {
        Ok(Ok(p)) => format!("rolled back to {revision}: published {}", p.revision),
        Ok(Err(e)) => format!("rollback refused: {e}"),
        Err(e) => format!("rollback failed: {e}"),
    };
    api.console.sessions.flash(&who.sid, msg);
    redirect("/console/bundles")
}

/// `GET /console/approvals[?all=1]`: the held calls the user sees.
pub(crate) async fn approvals(
    State(api): Agent,
    who: LoggedIn,
    Flash(flash): Flash,
    Query(q): Query,
) -> Resp {
    let user = &who.session.user;
    let all = q.get("all").is_some_and(|v| v == "1");
    let now = SystemTime::now();
    let approvals = api
        .approvals
        .list_view(all, None, now)
        .iter()
        .filter(|v| shown(user, v))
        .map(|v| api.approval_view(v))
        .collect();
    render(&ApprovalsPage {
        frame: Frame::new("Approvals", "approvals", &who.session, flash),
        approvals,
        all,
    })
}

/// `GET /console/approvals/{approval}`: one held call.
pub(crate) async fn approval(
    State(api): Agent,
    who: LoggedIn,
    Flash(flash): Flash,
    ApprovalId(id): ApprovalId,
) -> Resp {
    let user = &who.session.user;
    let found = api
        .approvals
        .get_view(&id, None, SystemTime::now())
        .filter(|v| shown(user, v));
    let Some(v) = found else {
        return plain(StatusCode::NOT_FOUND, "no such approval");
    };
    let can_decide = user.role == Role::Approver
        && matches!(
            v.state,
            approvals::State::Pending | approvals::State::Approved
        );
    let a = api.approval_view(&v);
    render(&ApprovalPage {
        frame: Frame::new(
            format!("Approval {}", a.id),
            "approvals",
            &who.session,
            flash,
        ),
        a,
        can_decide,
    })
}

/// `POST /console/approvals/{approval}/decide`: an approver's verdict.
pub(crate) async fn decide(
    State(api): Agent,
    who: LoggedIn,
    ApprovalId(id): ApprovalId,
    form: Form,
) -> Resp {
    let user = &who.session.user;
    let verdict = match form.field("verdict").as_str() {
        "approve" => Verdict::Approve,
        "deny" => Verdict::Deny,
        _ => return plain(StatusCode::BAD_REQUEST, "verdict: approve or deny"),
    };
    let comment = Some(form.field("comment")).filter(|c| !c.is_empty());
    // A CRITICAL call may ask for a recent sign-in (`critical` of the
    // provider file): a stolen session cannot approve what matters most.
    let critical = api
        .approvals
        .get_view(&id, None, SystemTime::now())
        .is_some_and(|v| v.approval.risk.eq_ignore_ascii_case("critical")); // not a name comparison: a risk tier
    if critical && verdict == Verdict::Approve && !api.fresh_enough(&who.session) {
        api.console_record(
            &user.name,
            "approval.approved",
            false,
            &format!("{id}: a CRITICAL approval needs a recent sign-in"),
        );
        let back = format!("/console/approvals/{id}");
        if user.oidc.is_some() {
            return super::onward::again("fresh", &back);
        }
        api.console.sessions.flash(
            &who.sid,
            format!(
                "{id} not approved: a CRITICAL approval needs a recent login: log out and in again"
            ),
        );
        return redirect(&back);
    }
    // An approver signed in through the provider: who the provider made
    // them (the approvers file does not hold them).
    let signed_in = user.oidc.as_ref().map(|o| crate::approvals::Approver {
        token: [0; 32],
        principals: o.principals.clone(),
        tenants: user.tenants.clone(),
    });
    // Off the runtime's workers: on a database, a decision waits for the
    // approvals' fleet-wide turn.
    let res = {
        let (api, name, id, verdict) =
            (api.clone(), user.name.clone(), id.clone(), verdict.clone());
        tokio::task::spawn_blocking(move || {
            api.decide(&name, signed_in.as_ref(), &id, verdict, comment)
        })
        .await
        .unwrap_or_else(|e| {
            Err(crate::approvals::Refused::Unavailable(
                crate::approvals::Unavailable(e.to_string()),
            ))
        })
    };
    let what = match verdict {
        Verdict::Approve => "approved",
        Verdict::Deny => "denied",
    };
    api.console_record(&user.name, &format!("approval.{what}"), res.is_ok(), &id);
    let msg = match res {
        Ok(v) => format!("{id} {what}: now {}", v.state.as_str()),
        Err(e) => format!("{id} not {what}: {e}"),
    };
    api.console.sessions.flash(&who.sid, msg);
    redirect(&format!("/console/approvals/{id}"))
}

/// `GET /console/audit?…`: the search, and the verification of what it shows.
pub(crate) async fn audit(
    State(api): Agent,
    who: LoggedIn,
    Flash(flash): Flash,
    Query(q): Query,
) -> Resp {
    api.audit_page(&who.session, flash, &q).await
}

/// `GET /console/audit/{record}`: one record.
pub(crate) async fn record(
    State(api): Agent,
    who: LoggedIn,
    Flash(flash): Flash,
    RecordId(id): RecordId,
) -> Resp {
    api.record_page(&who.session, flash, id).await
}

/// `GET /console/spend?…`: spend over a period (`format=csv`: as CSV).
pub(crate) async fn spend(
    State(api): Agent,
    who: LoggedIn,
    Flash(flash): Flash,
    Query(q): Query,
) -> Resp {
    api.spend_page(&who.session, flash, &q).await
}

/// `GET /console/live?…`: the live figures.
pub(crate) async fn live(
    State(api): Agent,
    who: LoggedIn,
    Flash(flash): Flash,
    Query(q): Query,
) -> Resp {
    api.live_page(&who.session, flash, &q).await
}

impl Api {
    pub(super) fn login_page(&self, error: Option<&str>, status: StatusCode) -> Resp {
        let oidc = self.console.oidc.as_ref().map(|o| o.config());
        let page = LoginPage {
            frame: Frame {
                title: "Log in".into(),
                active: "",
                user: None,
                csrf: String::new(),
                flash: None,
            },
            error: error.map(str::to_owned),
            provider: oidc.map(|c| {
                url::Url::parse(&c.issuer)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_else(|| c.issuer.clone())
            }),
            tokens: oidc.is_none_or(|c| c.token_login),
        };
        let mut r = render(&page);
        *r.status_mut() = status;
        r
    }

    pub(super) fn forbidden(&self, user: &User, path: &str, why: &str) -> Resp {
        self.console_record(&user.name, "refused", false, &format!("{path}: {why}"));
        plain(StatusCode::FORBIDDEN, &format!("refused: {why}"))
    }

    fn fleet_page(&self, session: &Session, flash: Option<String>) -> Resp {
        let f = self.store.fleet_view();
        let user = &session.user;
        // A user of some tenants sees gateways, not what their labels,
        // errors and the kill switch say about other tenants.
        let scoped = !user.tenants.is_empty();
        let mine = self.servers_of_user(user);
        let admin = user.role == Role::Admin;
        render(&FleetPage {
            frame: Frame::new("Fleet", "fleet", session, flash),
            members: f
                .members
                .iter()
                .map(|m| self.member_row(m, scoped, &mine))
                .collect(),
            current: f.current.unwrap_or_default(),
            served: f
                .served
                .into_iter()
                .map(|p| (p.revision, if scoped { String::new() } else { p.why }))
                .collect(),
            rollout: f.rollout.map_or_else(String::new, |r| {
                format!("{} ({})", r.revision, r.state.as_str())
            }),
            last_build_error: if scoped {
                String::new()
            } else {
                self.console
                    .redact(f.last_build_error.as_deref().unwrap_or(""))
            },
            kill_switch: self
                .console
                .redact(&kill_switch_shown(user, &mine, &f.kill_switch)),
            kill_history: self.kill_history(user, &mine),
            // The change record names principals of every tenant: admins only.
            changes: if admin {
                self.recent_changes_shown(25)
            } else {
                Vec::new()
            },
            admin,
        })
    }

    /// The servers whose upstream health `user` watches when they are a
    /// user of some tenants (registered to one of their tenants or defined
    /// by its layer): the org's and other tenants' servers are not theirs
    /// to watch. Empty for a user of every tenant (who sees all).
    fn servers_of_user(&self, user: &User) -> BTreeSet<String> {
        user.tenants
            .iter()
            .flat_map(|t| self.store.servers_of(t))
            .collect()
    }

    /// One gateway's row of the fleet table; `scoped`: shown to a user of
    /// some tenants, who sees the upstreams of `mine` only and none of the
    /// labels, errors and reasons that name other tenants.
    fn member_row(
        &self,
        m: &store::MemberView,
        scoped: bool,
        mine: &BTreeSet<String>,
    ) -> MemberView {
        // What a gateway reports (its id, revision, upstreams) is whatever
        // a holder of the fleet token sent: redacted.
        let red = |t: &str| self.console.redact(t);
        MemberView {
            id: red(&m.id),
            labels: if scoped {
                String::new()
            } else {
                red(&m
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "))
            },
            revision: red(&m.revision),
            due: m.due.clone().unwrap_or_default(),
            // Why a revision is due names layers of every tenant.
            why: if scoped {
                String::new()
            } else {
                m.why.clone().unwrap_or_default()
            },
            current: m.current,
            healthy: m.healthy,
            last_error: if scoped {
                String::new()
            } else {
                red(m.last_error.as_deref().unwrap_or(""))
            },
            calls: m.calls,
            rate: format!("{:.1}", as_json_f64(m.calls_per_sec)),
            last_seen: format!("{:.0} s ago", as_json_f64(m.last_seen_secs)),
            stale: m.stale,
            conflict: if m.conflict {
                m.instances.len().max(2)
            } else {
                0
            },
            upstreams: m
                .upstreams
                .iter()
                .filter(|u| !scoped || mine.contains(&u.server))
                .map(|u| (red(&u.server), u64::from(u.healthy), u64::from(u.replicas)))
                .collect(),
        }
    }

    /// The last ten pulls and releases of the kill switch `user` may see.
    fn kill_history(&self, user: &User, mine: &BTreeSet<String>) -> Vec<ChangeView> {
        self.store
            .kill_log()
            .into_iter()
            .filter(|k| kill_visible(user, mine, &k.scope, &k.value))
            .take(10)
            .map(|k| ChangeView {
                ts: k.at,
                actor: k.actor,
                action: k.action,
                ok: true,
                detail: self.console.redact(&format!("{} {}", k.scope, k.value)),
                revision: k.revision,
            })
            .collect()
    }

    /// The newest `n` entries of the change record.
    fn recent_changes_shown(&self, n: usize) -> Vec<ChangeView> {
        // The change record's lines as `changes.jsonl` holds them (written
        // by this agent or an earlier one, read back as they are): free-form
        // JSON, read by key.
        self.store
            .recent_changes(500)
            .iter()
            .take(n)
            .map(|c| ChangeView {
                ts: s(&c["ts"]),
                action: s(&c["action"]),
                ok: c["ok"] != false,
                // Written by the agent, but of what others sent: users'
                // search queries, gateways' principals and tools.
                actor: self.console.redact(&s(&c["actor"])),
                detail: self.console.redact(&s(&c["detail"])),
                revision: self.console.redact(&s(&c["revision"])),
            })
            .collect()
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
        // A revision's reason and source name every tenant's layer and the
        // org's rules: users of some tenants see none of it here.
        let scoped = !session.user.tenants.is_empty();
        if scoped {
            revisions.clear();
        }
        render(&BundlesPage {
            frame: Frame::new("Bundles", "bundles", session, flash),
            revisions,
            admin: session.user.role == Role::Admin,
            scoped,
            governs: session.user.actor.is_some(),
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
        // Checked before it is recorded: only revisions of the history
        // reach the record whole (a refusal's value is cut there).
        if let Some(unknown) = [a, b].into_iter().find(|r| !self.store.has_revision(r)) {
            self.console_record(
                &session.user.name,
                "bundles.diff",
                false,
                &format!("no revision `{unknown}` in the history"),
            );
            return plain(StatusCode::NOT_FOUND, "no such revision in the history");
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
            match (api.store.revision_files(&ra), api.store.revision_files(&rb)) {
                (Ok(fa), Ok(fb)) => Ok(super::diff::diff(&fa, &fb, |t| api.console.redact(t))),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        })
        .await;
        let files = match files {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return plain(StatusCode::NOT_FOUND, &e.to_string()),
            Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        render(&DiffPage {
            frame: Frame::new(format!("{a} → {b}"), "bundles", session, flash),
            a: a.to_owned(),
            b: b.to_owned(),
            files,
            back: "/console/bundles".into(),
            rollback: if session.user.role == Role::Admin {
                "/console/bundles/rollback".into()
            } else {
                String::new()
            },
        })
    }

    fn approval_view(&self, v: &approvals::ApprovalView) -> ApprovalView {
        let a = &v.approval;
        let pretty = super::views::laid_out(a.arguments.clone());
        // Every text of a claim is what a holder of the fleet token sent:
        // each is redacted, not only the arguments.
        let red = |t: &str| self.console.redact(t);
        let trace_id = red(a.trace_id.as_deref().unwrap_or(""));
        ApprovalView {
            id: a.id.clone(),
            state: v.state.as_str().to_owned(),
            tenant: red(&a.tenant),
            principal: red(&a.principal),
            server: red(&a.server),
            tool: red(&a.tool),
            risk: red(&a.risk),
            reason: red(&a.reason),
            justification: red(a.justification.as_deref().unwrap_or("")),
            arguments: red(&pretty),
            args_digest: red(&a.args_digest),
            approvals: v.approvals as u64,
            required: u64::from(a.required),
            waiting: format!("{} s", v.waiting_secs),
            requested_at: rfc3339(a.requested_at),
            requested_by: red(&a.requested_by),
            trace_link: trace_link(&trace_id),
            trace_id,
            decisions: a
                .decisions
                .iter()
                .map(|d| {
                    (
                        red(&d.approver),
                        verdict_name(&d.verdict).to_owned(),
                        rfc3339(d.at),
                        red(d.comment.as_deref().unwrap_or("")),
                    )
                })
                .collect(),
        }
    }
}

/// Whether `user` is shown an approval (its view): it sees the caller's
/// tenant, or a tenant whose own rules held the call (`for_tenants`).
fn shown(user: &User, v: &approvals::ApprovalView) -> bool {
    user.sees(&v.approval.tenant) || v.approval.for_tenants.iter().any(|t| user.sees(t))
}

/// A verdict as the approval's record names it.
fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approve",
        Verdict::Deny => "deny",
    }
}
