//! The web console, served by the agent under `/console`: the fleet, bundle
//! history with diffs and rollback, the approvals queue, audit search with
//! chain verification, live figures, and spend over a period.
//!
//! Its pages and actions are in the agent's route table
//! ([`crate::server::routes`]), each with the role it needs
//! ([`ConsoleAccess`](crate::server::routes::ConsoleAccess)); the checks
//! before them (host name, session, cross-site, CSRF) are layers in
//! [`gate`], which also hands handlers the session, the page's message,
//! the query and the form.
//!
//! Pages are rendered on the server with `askama` (HTML escaping on by
//! default; no template marks anything safe) and work without JavaScript:
//! every action is a plain form POST. Security of the console itself:
//!
//! - **Login** with a token the agent already knows: the admin token
//!   (role `admin`), an approver's token (`approver`, scoped to the tenants
//!   the approvers file gives), a viewer's token (`--viewers FILE`,
//!   same format: `viewer`), or an administrator's of `--admins` (an org
//!   admin does what the admin token does; an org reviewer reads every
//!   tenant and reviews registry entries; a tenant admin reads their
//!   tenant alone, as a viewer of it, and changes its layer and servers on
//!   the tenants and registry pages — see [`governance`]). Failed logins
//!   are limited per address, with the API's wrong bearer tokens (an IPv6
//!   /64 counts as one; [`session::MAX_FAILURES`] per
//!   [`session::FAIL_WINDOW`]; each attempt is counted before its form is
//!   read and given back when its token is right; a success does not reset
//!   the failures before it). Tokens shorter than
//!   [`crate::caller::MIN_TOKEN_LEN`] are never looked up.
//! - **Sessions** in an `HttpOnly; Secure; SameSite=Strict` cookie named
//!   `__Host-warden_console` (see [`session`]); the table keeps digests
//!   only and is bounded, per user too.
//! - **Host names**: the console answers only to IP literals, `localhost`
//!   and the names given with `--console-host` (DNS rebinding).
//! - **CSRF**: every POST carries the session's token in a form field
//!   (compared in constant time), and a POST whose `Origin` or
//!   `Sec-Fetch-Site` says another site sent it is refused — the login form
//!   included (recorded, never counted as a failed login: a page could
//!   lock the operator out).
//! - **Headers**: a strict Content-Security-Policy (`default-src 'none'`,
//!   styles and images from the agent only, no scripts at all, forms only
//!   to the agent, no framing), `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: same-origin` (a browser then names the origin of its own POSTs; `no-referrer` would make it `null`), `Cache-Control: no-store`.
//! - **Nothing secret rendered**: arguments, results and justifications
//!   are shown after DLP redaction with the built-in detectors (the
//!   gateways redacted them already; this is the second pass).
//! - **Every console action is audited** in the agent's change record
//!   (`changes.jsonl`, actor `console:<name>`): logins (failed ones too),
//!   logouts, refused requests, approvals, denials, rollbacks, kill
//!   switches, audit searches and verifications, record views.
//! - The rules of the CLI hold: only an approver decides a held call, never
//!   their own, distinct approvers for CRITICAL, tenant scoping
//!   (`Approvals::decide` enforces them for the API and the console alike).

use std::collections::BTreeMap;
use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::server::Api;

pub(crate) mod connect_pages;
mod diff;
pub(crate) mod gate;
mod governance;
pub(crate) mod governance_handlers;
#[cfg(test)]
mod governance_tests;
#[cfg(test)]
mod guard_tests;
mod insight;
mod onward;
pub(crate) mod pages;
pub mod session;
pub mod shared;
#[cfg(test)]
mod shared_tests;
mod sign_in;
mod spend;
#[cfg(test)]
mod spend_tests;
pub mod state;
pub mod user;
mod views;

pub use session::{Role, Sessions, User};

type Resp = Response<Full<Bytes>>;

/// The most a console form may send (a tenant's layer, typed in, included).
const MAX_FORM: usize = 256 * 1024;

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// Adds the console's security headers.
fn harden(mut r: Resp) -> Resp {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn html(status: StatusCode, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    harden(r)
}

fn redirect(to: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert("location", v);
    }
    harden(r)
}

fn plain(status: StatusCode, text: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    harden(r)
}

/// The session cookie's value; none when the request carries it twice
/// (no guessing which one the browser meant).
fn cookie_of(req: &Request<axum::body::Body>) -> Option<String> {
    let mut found = req
        .headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == session::COOKIE)
        .map(|(_, v)| v.trim().to_owned());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Whether a state-changing request came from another site: its `Origin`
/// names a host other than the one it was sent to, or the browser says
/// (`Sec-Fetch-Site`) it is cross-site.
fn cross_site(req: &Request<axum::body::Body>) -> bool {
    let h = req.headers();
    if h.get_all("sec-fetch-site").iter().count() > 1 || h.get_all("origin").iter().count() > 1 {
        return true;
    }
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return true;
        }
    }
    if let Some(origin) = h.get("origin") {
        let host = h.get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
        let origin = origin.to_str().unwrap_or("null");
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .unwrap_or("\u{0}");
        // not a name comparison: an `Origin`'s host against the `Host`.
        return !origin_host.eq_ignore_ascii_case(host);
    }
    false
}

/// A form body, decoded (`application/x-www-form-urlencoded`).
async fn read_form(body: axum::body::Body) -> Result<BTreeMap<String, String>, String> {
    let body = http_body_util::Limited::new(body, MAX_FORM)
        .collect()
        .await
        .map_err(|e| format!("form: {e}"))?
        .to_bytes();
    let mut out = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        // A field given twice is refused: no reading one and acting on another.
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err("a form field was given twice".into());
        }
    }
    Ok(out)
}

/// The query string, decoded (a field given twice keeps the first).
fn query_of(uri: &http::Uri) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(q) = uri.query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    out
}

impl Api {
    /// Who a token makes its bearer in the console: the caller the token
    /// is ([`Api::caller`]), as the console's pages see them. Org admins
    /// do what the admin token does; org reviewers read every tenant; a
    /// tenant admin reads as a viewer of their tenant alone (the fleet,
    /// approvals, audit and live pages scope them by `tenants`) and
    /// changes only what the governance pages let them. Gateways' tokens
    /// do not log in.
    fn console_user(&self, token: &str) -> Option<User> {
        use crate::admins::Kind;
        use crate::caller::Caller;
        Some(match self.caller(token)? {
            Caller::Gateway(_) => return None,
            Caller::Admin(actor) => {
                let (role, tenants) = match &actor.kind {
                    Kind::OrgAdmin => (Role::Admin, vec![]),
                    Kind::OrgReviewer => (Role::Viewer, vec![]),
                    Kind::TenantAdmin(t) => (Role::Viewer, vec![t.clone()]),
                };
                User {
                    name: actor.name.clone(),
                    role,
                    tenants,
                    actor: Some(actor),
                    oidc: None,
                    cli: false,
                }
            }
            Caller::Approver { name, tenants, .. } => User {
                name,
                role: Role::Approver,
                tenants,
                actor: None,
                oidc: None,
                cli: false,
            },
            Caller::Viewer { name, tenants } => User {
                name,
                role: Role::Viewer,
                tenants,
                actor: None,
                oidc: None,
                cli: false,
            },
        })
    }

    /// Writes a console action to the change record.
    fn console_record(&self, who: &str, action: &str, ok: bool, detail: &str) {
        self.store.record(
            &format!("console:{who}"),
            &format!("console.{action}"),
            None,
            ok,
            detail,
        );
    }

    /// A refused login, recorded while the address is within its
    /// allowance (`n`: its attempts in the window, this one included) and
    /// once when it runs out, so refusals cannot flood the change record.
    fn login_refused(&self, n: u32, peer: IpAddr, action: &str, why: &str) {
        if n <= session::MAX_FAILURES {
            self.console_record("-", action, false, &format!("{peer}: {why}"));
        } else if n == session::MAX_FAILURES + 1 {
            self.console_record(
                "-",
                action,
                false,
                &format!("{peer}: {why}; more are refused unrecorded for a while"),
            );
        }
    }

    async fn login(&self, req: Request<axum::body::Body>, peer: IpAddr) -> Resp {
        if cross_site(&req) {
            // Refused and recorded (within a bound of its own), but not
            // counted as a failed login: any page the operator's browser
            // opens can post this form, and counting it would let that
            // page lock the operator out.
            let n = match self.console.sessions.cross_site.reserve(peer) {
                Ok(n) => n,
                Err(l) => l.n,
            };
            self.login_refused(n, peer, "refused", "cross-site login");
            return plain(
                StatusCode::FORBIDDEN,
                "refused: the request came from another site",
            );
        }
        if self
            .console
            .oidc
            .as_ref()
            .is_some_and(|o| !o.config().token_login)
        {
            self.sign_in_refused("-", peer, "token login is closed");
            return self.login_page(
                Some("Token login is closed on this console: sign in with the identity provider."),
                StatusCode::FORBIDDEN,
            );
        }
        // The attempt is counted before the form is read and given back
        // when its token is right: concurrent logins cannot all pass the
        // check before any of their failures is counted.
        let n = match self.console.sessions.failures.reserve(peer) {
            Ok(n) => n,
            Err(l) => {
                self.login_refused(l.n, peer, "login", "too many failed logins");
                let mut r = self.login_page(
                    Some("Too many failed logins from this address: wait a few minutes."),
                    StatusCode::TOO_MANY_REQUESTS,
                );
                if let Ok(v) = HeaderValue::from_str(&l.retry_after.as_secs().to_string()) {
                    r.headers_mut().insert("retry-after", v);
                }
                return r;
            }
        };
        let form = match read_form(req.into_body()).await {
            Ok(f) => f,
            Err(e) => {
                // No token was presented.
                self.console.sessions.failures.give_back(peer);
                return plain(StatusCode::BAD_REQUEST, &e);
            }
        };
        let Some(user) = form.get("token").and_then(|t| self.console_user(t)) else {
            self.login_refused(n, peer, "login", "unknown token");
            return self.login_page(
                Some(
                    "That token is not one this agent knows (tokens have 16 characters at least).",
                ),
                StatusCode::UNAUTHORIZED,
            );
        };
        self.console.sessions.failures.give_back(peer);
        let (id, _) = match self.console.sessions.open(user.clone()) {
            Ok(x) => x,
            Err(e) => {
                self.console_record(&user.name, "login", false, &format!("{peer}: {e}"));
                return self.login_page(Some(&e), StatusCode::SERVICE_UNAVAILABLE);
            }
        };
        self.console_record(
            &user.name,
            "login",
            true,
            &format!("{peer} as {}", user.role_label()),
        );
        let mut r = redirect("/console/fleet");
        if let Ok(v) = HeaderValue::from_str(&sign_in::session_cookie(Some(&id))) {
            r.headers_mut().insert("set-cookie", v);
        }
        r
    }
}
