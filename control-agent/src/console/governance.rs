//! The console's governance pages (docs/governance.md): each tenant's
//! layer with its history, diffs, rollback and canary, and the registry
//! with each server's lifecycle.
//!
//! Who reaches what is the API's rule ([`crate::governance`]), decided by
//! the session's [`Actor`]: an org admin everything, an org reviewer reads
//! every tenant and reviews, a tenant admin their tenant alone. A request
//! about another tenant (a page, a diff, a rollback, a server) is refused
//! with 403 and written to the change record as `console.refused` before
//! anything is read or changed; what the store refuses (a registrant
//! approving their own definition, a move the lifecycle does not allow) is
//! shown as the page's flash and recorded. Approvers and viewers (no
//! actor) reach none of these pages.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use askama::Template;
use http::StatusCode;

use super::session::Session;
use super::views::{render, rfc3339, Frame};
use super::{plain, redirect, Resp};
use crate::admins::{tenant_name, Actor};
use crate::registry::{Refusal, RegistryEntry, ServerSummary, State};
use crate::server::Api;
use crate::store::{CanaryState, RegistryError};

/// Revisions of a tenant's layer the tenants page lists (newest first).
const HISTORY_SHOWN: usize = 20;
/// Events of a server its page lists (newest first).
const EVENTS_SHOWN: usize = 50;
/// Characters of a move's note kept.
const MAX_NOTE: usize = 500;

struct LayerRow {
    seq: u64,
    revision: String,
    published_at: String,
    actor: String,
    reason: String,
    target: String,
    current: bool,
    /// `/console/tenants/<t>/diff?a=<previous>&b=<this>`; empty for the first.
    diff: String,
}

struct TenantView {
    name: String,
    current: String,
    last_error: String,
    /// `revision (state)` of the tenant's layer canary, if any.
    canary: String,
    canary_reason: String,
    /// The layer revision of the canary shown: promoting or rolling back
    /// sends it (refused when another canary is watched by then).
    canary_revision: String,
    canary_watching: bool,
    history: Vec<LayerRow>,
    more: usize,
    writes: bool,
}

#[derive(Template)]
#[template(path = "console/tenants.html")]
struct TenantsPage {
    frame: Frame,
    tenants: Vec<TenantView>,
}

struct ServerRow {
    server: String,
    tenant: String,
    state: String,
    since: String,
    shared: String,
    tools: usize,
}

#[derive(Template)]
#[template(path = "console/registry.html")]
struct RegistryPage {
    frame: Frame,
    servers: Vec<ServerRow>,
}

struct ToolView {
    name: String,
    approved: String,
    candidate: String,
}

struct EventView {
    at: String,
    actor: String,
    from: String,
    to: String,
    note: String,
}

#[derive(Template)]
#[template(path = "console/server.html")]
struct ServerPage {
    frame: Frame,
    server: ServerRow,
    share_requested_by: String,
    registered_by: String,
    registered_at: String,
    approved_by: String,
    approved_at: String,
    retired_at: String,
    tools: Vec<ToolView>,
    /// The digest of the definition rendered: every move and the share
    /// approval send it back (refused when the definition changed since
    /// the page was read).
    definition_digest: String,
    events: Vec<EventView>,
    /// (state, button label) of each move this user may ask for.
    moves: Vec<(&'static str, &'static str)>,
    share: bool,
    approve_share: bool,
}

/// `/console/tenants/<t>/diff?a=…&b=…`, the revisions encoded.
fn diff_link(tenant: &str, a: &str, b: &str) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("a", a)
        .append_pair("b", b)
        .finish();
    format!("/console/tenants/{tenant}/diff?{q}")
}

/// The moves `actor` may ask for on a server in `state` of `tenant`
/// (`None`: the org's). The store decides; this only offers the forms: an
/// approval is offered to every reviewer, the registrant included (the
/// store refuses them, and the refusal is shown).
fn moves_for(
    actor: &Actor,
    tenant: Option<&str>,
    state: State,
) -> Vec<(&'static str, &'static str)> {
    let writes = tenant.map_or(actor.is_org_admin(), |t| actor.writes(t));
    let reviews = actor.is_org() || tenant.is_some_and(|t| actor.writes(t));
    let mut out = Vec::new();
    match state {
        State::Draft if writes => out.push((State::Testing.as_str(), "Move to testing")),
        State::Testing if reviews => out.push((State::Approved.as_str(), "Approve")),
        State::Approved if writes => out.push((State::Deployed.as_str(), "Deploy")),
        State::Deployed if writes => out.push((State::Deprecated.as_str(), "Deprecate")),
        _ => {}
    }
    if writes && state != State::Retired {
        out.push((State::Retired.as_str(), "Retire"));
    }
    out
}

impl Api {
    pub(super) fn tenants_page(
        &self,
        session: &Session,
        actor: &Actor,
        flash: Option<String>,
    ) -> Resp {
        let mut names: BTreeSet<String> = self
            .store
            .layers_summary_view()
            .into_iter()
            .map(|e| e.tenant)
            .collect();
        if let Some(t) = actor.tenant() {
            names.insert(t.to_owned());
        }
        names.retain(|t| actor.reads(t));
        let tenants = names
            .into_iter()
            .map(|t| self.tenant_view(actor, t))
            .collect();
        render(&TenantsPage {
            frame: Frame::new("Tenants", "tenants", session, flash),
            tenants,
        })
    }

    /// One tenant's layer as the tenants page shows it.
    fn tenant_view(&self, actor: &Actor, t: String) -> TenantView {
        let red = |x: Option<&str>| self.console.redact(x.unwrap_or(""));
        let h = self.store.layer_history_view(&t);
        let current = h.current.unwrap_or_default();
        let list = &h.history;
        let mut rows: Vec<LayerRow> = list
            .iter()
            .enumerate()
            .map(|(i, e)| LayerRow {
                seq: e.seq,
                diff: i
                    .checked_sub(1)
                    .map(|p| diff_link(&t, &list[p].revision, &e.revision))
                    .unwrap_or_default(),
                current: !current.is_empty() && e.revision == current,
                revision: e.revision.clone(),
                published_at: rfc3339(e.published_at),
                actor: red(Some(&e.actor)),
                reason: red(Some(&e.reason)),
                target: e.target.clone(),
            })
            .collect();
        rows.reverse();
        let more = rows.len().saturating_sub(HISTORY_SHOWN);
        rows.truncate(HISTORY_SHOWN);
        let c = h.canary.as_ref();
        let canary_revision = c.and_then(|c| c.revision.clone()).unwrap_or_default();
        TenantView {
            writes: actor.writes(&t),
            current,
            last_error: red(h.last_error.as_deref()),
            canary: c.map_or_else(String::new, |c| {
                format!("{canary_revision} ({})", c.state.as_str())
            }),
            canary_reason: red(c.and_then(|c| c.reason.as_deref())),
            canary_revision,
            canary_watching: c.is_some_and(|c| c.state == CanaryState::Watching),
            history: rows,
            more,
            name: t,
        }
    }

    pub(super) async fn layer_diff_page(
        self: &Arc<Self>,
        session: &Session,
        actor: &Actor,
        flash: Option<String>,
        raw: &str,
        a: &str,
        b: &str,
    ) -> Resp {
        let user = &session.user;
        let path = format!("/console/tenants/{raw}/diff");
        let Ok(t) = tenant_name(raw) else {
            return plain(StatusCode::NOT_FOUND, "no such tenant");
        };
        if !actor.reads(&t) {
            return self.forbidden(
                user,
                &path,
                &format!("tenant `{t}`'s layers are not {}'s to read", user.name),
            );
        }
        let known: BTreeSet<String> = self
            .store
            .layer_history_view(&t)
            .history
            .into_iter()
            .map(|e| e.revision)
            .collect();
        if let Some(unknown) = [a, b].into_iter().find(|r| !known.contains(*r)) {
            self.console_record(
                &user.name,
                "tenants.diff",
                false,
                &format!("tenant {t}: no layer revision `{unknown}`"),
            );
            return plain(
                StatusCode::NOT_FOUND,
                "no such revision of this tenant's layer",
            );
        }
        self.console_record(&user.name, "tenants.diff", true, &format!("{t} {a} {b}"));
        let api = self.clone();
        let (tt, ra, rb) = (t.clone(), a.to_owned(), b.to_owned());
        let files = tokio::task::spawn_blocking(move || {
            match (
                api.store.layer_revision_files(&tt, &ra),
                api.store.layer_revision_files(&tt, &rb),
            ) {
                (Ok(fa), Ok(fb)) => Ok(super::diff::diff_shown(
                    &fa,
                    &fb,
                    |x| api.console.redact(x),
                    super::diff::shown_layer,
                )),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        })
        .await;
        let files = match files {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return plain(StatusCode::NOT_FOUND, &e.to_string()),
            Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        render(&super::views::DiffPage {
            frame: Frame::new(format!("{t}: {a} → {b}"), "tenants", session, flash),
            a: a.to_owned(),
            b: b.to_owned(),
            files,
            back: "/console/tenants".into(),
            rollback: if actor.writes(&t) {
                format!("/console/tenants/{t}/rollback")
            } else {
                String::new()
            },
        })
    }

    fn server_row(&self, v: &ServerSummary) -> ServerRow {
        ServerRow {
            server: v.server.clone(),
            tenant: v.tenant.as_deref().unwrap_or("(org)").to_owned(),
            state: v.state.as_str().to_owned(),
            since: v.since.clone(),
            shared: if v.shared {
                match &v.share_reviewed {
                    Some(d) => format!("shared with every tenant (definition {d})"),
                    None => "shared with every tenant".into(),
                }
            } else if let Some(by) = &v.share_requested_by {
                format!("sharing asked by {}", self.console.redact(by))
            } else {
                String::new()
            },
            tools: v.tools.len(),
        }
    }

    pub(super) fn registry_page(
        &self,
        session: &Session,
        actor: &Actor,
        flash: Option<String>,
    ) -> Resp {
        let servers = self
            .store
            .registry_list_view(actor)
            .iter()
            .map(|v| self.server_row(v))
            .collect();
        render(&RegistryPage {
            frame: Frame::new("Registry", "registry", session, flash),
            servers,
        })
    }

    /// `server`'s entry when `actor` may read it; a refusal (403, recorded)
    /// for another tenant's, 404 for none.
    pub(super) fn readable_server(
        &self,
        session: &Session,
        actor: &Actor,
        path: &str,
        server: &str,
    ) -> Result<RegistryEntry, Resp> {
        match self.store.registry_show_view(actor, server) {
            Ok(v) => Ok(v),
            Err(Refusal::Forbidden(m)) => Err(self.forbidden(&session.user, path, &m)),
            Err(_) => Err(plain(
                StatusCode::NOT_FOUND,
                "no such server in the registry",
            )),
        }
    }

    pub(super) fn server_page(
        &self,
        session: &Session,
        actor: &Actor,
        flash: Option<String>,
        server: &str,
    ) -> Resp {
        let path = format!("/console/registry/{server}");
        let v = match self.readable_server(session, actor, &path, server) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let red = |x: Option<&str>| self.console.redact(x.unwrap_or(""));
        let e = &v.entry;
        // A definition's tools are what the registrant sent (each a tool's
        // name, description and schemas): free-form JSON, read by key.
        let mut names: BTreeSet<String> = e
            .definition
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect();
        names.extend(e.tools.keys().cloned());
        let tools = names
            .into_iter()
            .map(|n| {
                let pin = e.tools.get(&n);
                ToolView {
                    approved: pin.and_then(|p| p.approved.clone()).unwrap_or_default(),
                    candidate: pin.and_then(|p| p.candidate.clone()).unwrap_or_default(),
                    name: self.console.redact(&n),
                }
            })
            .collect();
        let events = e
            .events
            .iter()
            .rev()
            .take(EVENTS_SHOWN)
            .map(|ev| EventView {
                at: ev.at.clone(),
                actor: red(Some(&ev.actor)),
                from: ev.from.map_or("", State::as_str).to_owned(),
                to: ev.to.as_str().to_owned(),
                note: red(Some(&ev.note)),
            })
            .collect();
        let tenant = e.tenant.as_deref();
        let writes = tenant.is_some_and(|t| actor.writes(t));
        let asked = e.share_requested_by.is_some();
        render(&ServerPage {
            frame: Frame::new(format!("Server {server}"), "registry", session, flash),
            moves: moves_for(actor, tenant, e.state),
            share: writes && !asked && !e.shared && e.state != State::Retired,
            approve_share: actor.is_org() && asked,
            share_requested_by: red(e.share_requested_by.as_deref()),
            registered_by: red(Some(&e.registered_by)),
            registered_at: e.registered_at.clone(),
            approved_by: red(e.approved_by.as_deref()),
            approved_at: e.approved_at.clone().unwrap_or_default(),
            retired_at: e.retired_at.clone().unwrap_or_default(),
            tools,
            definition_digest: v.definition_digest.clone(),
            events,
            server: self.server_row(&ServerSummary::of(&v.server, e)),
        })
    }

    /// A layer published from the console: `tenant.yaml` and `policy.rego`
    /// as typed (an empty policy removes `policy.rego`); the current
    /// layer's other `.rego` files are kept. Checked exactly as the API's
    /// publish is (the files, then composed with the org and the others).
    pub(super) async fn layer_publish(
        &self,
        session: &Session,
        sid: &str,
        tenant: &str,
        form: &BTreeMap<String, String>,
    ) -> Resp {
        let user = &session.user;
        let label = format!("console:{}", user.name);
        let store = self.store.clone();
        let t = tenant.to_owned();
        // Browsers send CRLF line ends from a textarea.
        let text = |k: &str| {
            form.get(k)
                .map(|v| v.replace("\r\n", "\n"))
                .unwrap_or_default()
        };
        let (yaml, rego) = (text("tenant_yaml"), text("policy_rego"));
        let res = tokio::task::spawn_blocking(move || {
            let mut files = store.current_layer_files(&t).unwrap_or_default();
            files.retain(|n, _| n.ends_with(".rego") && n != "policy.rego");
            files.insert("tenant.yaml".into(), yaml.into_bytes());
            if !rego.trim().is_empty() {
                files.insert("policy.rego".into(), rego.into_bytes());
            }
            crate::store::layers::check_layer_files(&t, &files)?;
            store.publish_layer(&label, &t, files, None)
        })
        .await;
        let ok = matches!(res, Ok(Ok(_)));
        let msg = match res {
            Ok(Ok(e)) => format!("{tenant}: published {}", e.revision),
            Ok(Err(e)) => format!("{tenant}: layer refused:\n{e}"),
            Err(e) => format!("{tenant}: publish failed: {e}"),
        };
        self.console_record(&user.name, "tenants.publish", ok, &msg);
        self.console.sessions.flash(sid, self.console.redact(&msg));
        redirect("/console/tenants")
    }

    pub(super) async fn layer_action(
        &self,
        session: &Session,
        sid: &str,
        tenant: &str,
        op: &str,
        field: impl Fn(&str) -> String,
    ) -> Resp {
        let user = &session.user;
        let label = format!("console:{}", user.name);
        let store = self.store.clone();
        let t = tenant.to_owned();
        let msg = if op == "rollback" {
            let revision = field("revision");
            let rev = revision.clone();
            let res =
                tokio::task::spawn_blocking(move || store.rollback_layer(&label, &t, &rev)).await;
            let ok = matches!(res, Ok(Ok(_)));
            let msg = match res {
                Ok(Ok(e)) => format!("{tenant}: rolled back to {revision}: now {}", e.revision),
                Ok(Err(e)) => format!("{tenant}: rollback refused: {e}"),
                Err(e) => format!("{tenant}: rollback failed: {e}"),
            };
            self.console_record(&user.name, "tenants.rollback", ok, &msg);
            msg
        } else {
            let promote = match field("verb").as_str() {
                "promote" => true,
                "rollback" => false,
                _ => return plain(StatusCode::BAD_REQUEST, "verb: promote or rollback"),
            };
            // The canary revision the page showed: another started since
            // is not ended in its place.
            let revision = field("revision");
            let res = tokio::task::spawn_blocking(move || {
                store.end_layer_canary(&label, &t, promote, Some(&revision))
            })
            .await;
            let verb = if promote { "promoted" } else { "rolled back" };
            let ok = matches!(res, Ok(Ok(_)));
            let msg = match res {
                Ok(Ok(r)) => format!("{tenant}: canary {r} {verb}"),
                Ok(Err(e)) => format!("{tenant}: canary not {verb}: {e}"),
                Err(e) => format!("{tenant}: canary not {verb}: {e}"),
            };
            self.console_record(&user.name, "tenants.canary", ok, &msg);
            msg
        };
        self.console.sessions.flash(sid, self.console.redact(&msg));
        redirect("/console/tenants")
    }

    pub(super) async fn registry_action(
        &self,
        session: &Session,
        sid: &str,
        actor: &Actor,
        server: &str,
        op: &str,
        field: impl Fn(&str) -> String,
    ) -> Resp {
        let user = &session.user;
        let now = std::time::SystemTime::now();
        let (who, name) = (actor.clone(), server.to_owned());
        let (action, what, res) = match op {
            "move" => {
                let Some(to) = State::parse(&field("state")) else {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "state: testing, approved, deployed, deprecated or retired",
                    );
                };
                let note: String = field("note").chars().take(MAX_NOTE).collect();
                let reviewed = field("reviewed");
                let store = self.store.clone();
                let res = tokio::task::spawn_blocking(move || {
                    store.registry_apply(&who.clone(), "registry.move", "", |r, _| {
                        r.transition(&who, &name, to, Some(&reviewed), &note, now)
                    })
                })
                .await;
                ("registry.move", format!("move to {}", to.as_str()), res)
            }
            "share" => {
                let store = self.store.clone();
                let res = tokio::task::spawn_blocking(move || {
                    store.registry_apply(&who.clone(), "registry.share", "", |r, _| {
                        r.request_share(&who, &name, now)
                    })
                })
                .await;
                ("registry.share", "sharing".to_owned(), res)
            }
            _ => {
                // The digest of the definition the page showed the reviewer.
                let reviewed = field("reviewed");
                let store = self.store.clone();
                let res = tokio::task::spawn_blocking(move || {
                    store.registry_apply(&who.clone(), "registry.approve_share", "", |r, _| {
                        r.approve_share(&who, &name, Some(&reviewed), now)
                    })
                })
                .await;
                ("registry.approve_share", "sharing approval".to_owned(), res)
            }
        };
        let (ok, msg) = match res {
            Ok(Ok(v)) => (
                true,
                format!(
                    "{server}: {what} done: now {}",
                    v.map_or("", |e| e.entry.state.as_str())
                ),
            ),
            Ok(Err(RegistryError::Refused(r))) => {
                let forbidden = matches!(r, Refusal::Forbidden(_));
                let msg = format!("{server}: {what} refused: {r}");
                if forbidden {
                    // Not theirs to do: the console's refusal record too.
                    self.console_record(&user.name, "refused", false, &msg);
                    self.console.sessions.flash(sid, self.console.redact(&msg));
                    return redirect(&format!("/console/registry/{server}"));
                }
                (false, msg)
            }
            Ok(Err(RegistryError::Unavailable(u))) => {
                (false, format!("{server}: {what} not done: {u}"))
            }
            Ok(Err(RegistryError::Build(b))) => {
                (false, format!("{server}: {what} does not build: {b}"))
            }
            Err(e) => (false, format!("{server}: {what} failed: {e}")),
        };
        self.console_record(&user.name, action, ok, &msg);
        self.console.sessions.flash(sid, self.console.redact(&msg));
        redirect(&format!("/console/registry/{server}"))
    }
}
