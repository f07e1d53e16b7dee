//! The console's side of signing in through the identity provider
//! ([`crate::oidc`]): the button's start, the provider's callback, the
//! recheck of a signed-in session's roles, and the fresh sign-in a
//! CRITICAL approval may ask for.
//!
//! The callback answers with a small page that moves on to the console
//! instead of a redirect: the provider's redirect is a cross-site
//! navigation, and a browser does not send the `SameSite=Strict` session
//! cookie along a chain that began on another site.

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::{HeaderValue, StatusCode};

use super::onward::{onward_to, with_cookie};
use super::session::{self, Session};
use super::{plain, redirect, Resp};
use crate::oidc::pending::{self, Mode};
use crate::oidc::{now_secs, Failed};
use crate::server::Api;

/// The cookie of a sign-in under way, when the request carries it once.
pub(super) fn pending_cookie(h: &http::HeaderMap) -> Option<String> {
    let mut found = h
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == pending::COOKIE)
        .map(|(_, v)| v.trim().to_owned());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// A page that moves on to `to` (a console path) by itself.
fn onward(to: &str) -> Resp {
    onward_to(&pending::safe_next(to), "Signed in")
}

/// The session cookie that keeps `id`, or (`None`) clears it.
pub(super) fn session_cookie(id: Option<&str>) -> String {
    match id {
        Some(id) => format!(
            "{}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
            session::COOKIE,
            session::MAX_AGE.as_secs()
        ),
        None => format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
            session::COOKIE
        ),
    }
}

impl Api {
    /// `GET /console/oidc/start?mode=&next=`: the browser goes to the
    /// provider, a sealed cookie remembering the sign-in.
    pub(super) async fn oidc_start(&self, q: &BTreeMap<String, String>, peer: IpAddr) -> Resp {
        let Some(oidc) = &self.console.oidc else {
            return plain(
                StatusCode::NOT_FOUND,
                "no identity provider is configured (serve --oidc)",
            );
        };
        let mode = match q.get("mode").map(String::as_str) {
            Some("refresh") => Mode::Refresh,
            Some("fresh") => Mode::Fresh,
            Some("consent") => Mode::Consent,
            _ => Mode::Login,
        };
        let next = q.get("next").map_or("/console/fleet", String::as_str);
        match oidc.start(mode, next).await {
            Ok(s) => with_cookie(redirect(&s.location), &s.set_cookie),
            Err(e) => {
                self.sign_in_refused("-", peer, &format!("oidc: {e}"));
                self.login_page(Some(&e.to_string()), StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// `GET /console/oidc/callback?code=&state=`: the provider's answer.
    /// A session the browser already holds (a refresh, a fresh sign-in)
    /// ends, and a new one opens with the roles the provider gives now.
    pub(super) async fn oidc_callback(
        &self,
        q: &BTreeMap<String, String>,
        headers: &http::HeaderMap,
        old: Option<String>,
        peer: IpAddr,
    ) -> Resp {
        let Some(oidc) = &self.console.oidc else {
            return plain(
                StatusCode::NOT_FOUND,
                "no identity provider is configured (serve --oidc)",
            );
        };
        let clear = pending::set_cookie(None);
        // A code is exchanged at the provider with the client's secret:
        // one that fails counts against the address as a wrong token does
        // (one allowance), so nobody makes the agent hammer the provider.
        let exchanging = q.contains_key("code");
        if exchanging {
            if let Err(l) = self.console.sessions.failures.reserve(peer) {
                let mut r = self.login_page(
                    Some("Too many failed sign-ins from this address: wait a few minutes."),
                    StatusCode::TOO_MANY_REQUESTS,
                );
                if let Ok(v) = HeaderValue::from_str(&l.retry_after.as_secs().to_string()) {
                    r.headers_mut().insert("retry-after", v);
                }
                return with_cookie(r, &clear);
            }
        }
        let res = oidc.finish(q, pending_cookie(headers).as_deref()).await;
        if exchanging && res.is_ok() {
            self.console.sessions.failures.give_back(peer);
        }
        let old_name = old
            .as_deref()
            .and_then(|c| self.console.sessions.get(c))
            .map(|s| s.user.name);
        let end_old = || {
            if let Some(c) = &old {
                self.console.sessions.close(c);
            }
        };
        let done = match res {
            Ok(done) => done,
            Err(Failed::Ended) => {
                end_old();
                let who = old_name.as_deref().unwrap_or("-");
                // Anyone holding a pending cookie (any start gives one) can
                // send this answer: recorded within the address's bound.
                self.bounded_record(
                    who,
                    peer,
                    "logout",
                    true,
                    "the identity provider's session has ended",
                );
                let r = self.login_page(Some(&Failed::Ended.to_string()), StatusCode::UNAUTHORIZED);
                return with_cookie(with_cookie(r, &clear), &session_cookie(None));
            }
            Err(e) => {
                // A refresh that fails for another reason ends the session
                // too: its roles could not be read again.
                if q.get("state").is_some() && old_name.is_some() {
                    end_old();
                }
                let status = match &e {
                    Failed::Unreachable(_) => StatusCode::BAD_GATEWAY,
                    Failed::NoRole(_) => StatusCode::FORBIDDEN,
                    _ => StatusCode::BAD_REQUEST,
                };
                let who = match &e {
                    Failed::NoRole(n) => n.as_str(),
                    _ => "-",
                };
                self.sign_in_refused(who, peer, &format!("oidc: {e}"));
                return with_cookie(self.login_page(Some(&e.to_string()), status), &clear);
            }
        };
        // A consent link's sign-in asks who the person is: it opens no
        // console session and leaves the browser's own alone.
        let user = match done.user {
            Some(u) if done.mode != Mode::Consent => u,
            _ => {
                return with_cookie(
                    super::connect_pages::signed_in(self, done.person, &done.next, peer),
                    &clear,
                )
            }
        };
        end_old();
        let (id, _) = match self.console.sessions.open(user.clone()) {
            Ok(x) => x,
            Err(e) => {
                self.console_record(&user.name, "login", false, &format!("{peer}: {e}"));
                return with_cookie(
                    self.login_page(Some(&e), StatusCode::SERVICE_UNAVAILABLE),
                    &clear,
                );
            }
        };
        let how = match done.mode {
            Mode::Login => "signed in",
            Mode::Refresh => "roles read again",
            Mode::Fresh => "signed in again for a CRITICAL approval",
            Mode::Consent => "signed in to connect an account",
        };
        self.console_record(
            &user.name,
            "login",
            true,
            &format!(
                "{peer} as {} through the identity provider ({how})",
                user.role_label()
            ),
        );
        if done.mode == Mode::Fresh {
            self.console.sessions.flash(
                &id,
                "Signed in again at the identity provider: decide the CRITICAL call now.".into(),
            );
        }
        with_cookie(
            with_cookie(onward(&done.next), &clear),
            &session_cookie(Some(&id)),
        )
    }

    /// Records a sign-in refused (`why`) to `peer`, within the address's
    /// bound ([`super::session::Sessions::sign_ins`]).
    pub(super) fn sign_in_refused(&self, who: &str, peer: IpAddr, why: &str) {
        self.bounded_record(who, peer, "login", false, why);
    }

    /// Records what anyone may make the console record (a callback, a
    /// start, the closed token form): the first
    /// [`session::MAX_FAILURES`] of an address in a window, and once that
    /// more go unrecorded, so that a loop of requests cannot write the
    /// change record until it is moved aside with what operators did.
    fn bounded_record(&self, who: &str, peer: IpAddr, action: &str, ok: bool, why: &str) {
        let n = match self.console.sessions.sign_ins.reserve(peer) {
            Ok(n) => n,
            Err(l) => l.n,
        };
        if n <= session::MAX_FAILURES {
            self.console_record(who, action, ok, &format!("{peer}: {why}"));
        } else if n == session::MAX_FAILURES + 1 {
            self.console_record(
                who,
                action,
                ok,
                &format!("{peer}: {why}; more from this address go unrecorded for a while"),
            );
        }
    }

    /// Whether `s` was made by an identity provider this agent does not
    /// hold (sessions shared through the database with an agent that has
    /// one, or `--oidc` dropped at a restart): its roles cannot be read
    /// again here, nor a fresh sign-in asked, so it is no session here.
    pub(super) fn provider_gone(&self, s: &Session) -> bool {
        self.console.oidc.is_none() && s.user.oidc.is_some()
    }

    /// Whether a signed-in session's roles are due to be read again:
    /// at its `recheck_at`, and always on an agent that holds no provider
    /// to read them from ([`Api::provider_gone`]): a session it cannot
    /// recheck is never taken as one rechecked.
    pub(super) fn recheck_due(&self, s: &Session) -> bool {
        s.user
            .oidc
            .as_ref()
            .is_some_and(|o| self.console.oidc.is_none() || now_secs() >= o.recheck_at)
    }

    /// The provider file's `critical` rule and its clock skew (seconds),
    /// when it has one.
    fn critical(&self) -> Option<(&crate::oidc::config::Critical, u64)> {
        let cfg = self.console.oidc.as_ref()?.config();
        Some((cfg.critical.as_ref()?, cfg.clock_skew.as_secs()))
    }

    /// Whether `s` may decide a CRITICAL call now: always without a
    /// `critical` rule; else a sign-in through the provider within its
    /// `max_age` (and of one of its `acr`), or a token login that recent.
    pub(super) fn fresh_enough(&self, s: &Session) -> bool {
        let Some((c, _)) = self.critical() else {
            return true;
        };
        match &s.user.oidc {
            Some(o) => self.signed_in_fresh(o),
            None => s.created.elapsed() <= c.max_age,
        }
    }

    /// Whether a sign-in through the provider is recent enough (and of a
    /// class) for a CRITICAL approval: always without a `critical` rule.
    pub fn signed_in_fresh(&self, o: &super::user::SignedIn) -> bool {
        // Within the skew the ID token's `auth_time` was checked with: a
        // provider's clock a little behind never sends the approver round
        // and round the sign-in.
        let Some((c, skew)) = self.critical() else {
            return true;
        };
        now_secs().saturating_sub(o.auth_time) <= c.max_age.as_secs() + skew
            && (c.acr.is_empty() || o.acr.as_ref().is_some_and(|a| c.acr.contains(a)))
    }

    /// Where the console's logout sends `s`'s browser: the provider's
    /// end of session for a person signed in there, else the login page.
    pub(super) async fn logout_target(&self, s: &Session) -> String {
        match (&self.console.oidc, &s.user.oidc) {
            (Some(o), Some(_)) => o
                .logout_url()
                .await
                .unwrap_or_else(|| "/console/login".into()),
            _ => "/console/login".into(),
        }
    }

    /// The caller a token the console minted for the CLI makes its
    /// bearer (`None`: no such live token). A token of a person signed in
    /// through the provider ends when their roles are due to be read again
    /// (the CLI cannot read them): they mint another.
    pub fn cli_caller(&self, token: &str) -> Option<crate::caller::Caller> {
        let token = token.trim();
        if token.len() < crate::caller::MIN_TOKEN_LEN {
            return None;
        }
        let s = self.console.sessions.get(token).filter(|s| s.user.cli)?;
        if self.recheck_due(&s) {
            self.console.sessions.close(token);
            return None;
        }
        Some(crate::caller::Caller::of_user(s.user))
    }

    /// `POST /console/cli-token`: a token of the API acting as the
    /// session's user, shown once.
    pub(super) fn cli_token(&self, s: &Session) -> Resp {
        let user = super::user::User {
            cli: true,
            ..s.user.clone()
        };
        let ends = match &user.oidc {
            Some(o) => format!(
                "in {} s, when your roles are due to be read again from the identity provider",
                o.recheck_at.saturating_sub(now_secs())
            ),
            None => format!(
                "after {} min without use or {} h after now",
                session::IDLE.as_secs() / 60,
                session::MAX_AGE.as_secs() / 3600
            ),
        };
        let (token, _) = match self.console.sessions.open(user.clone()) {
            Ok(x) => x,
            Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, &e),
        };
        self.console_record(&user.name, "cli_token", true, "a token for the CLI minted");
        super::views::render(&super::views::CliTokenPage {
            frame: super::views::Frame::new("CLI token", "", s, None),
            token,
            role: user.role_label(),
            ends,
        })
    }
}
