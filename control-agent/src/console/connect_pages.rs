//! The consent pages of [`crate::connect`], under `/console` but before
//! any console session (a person connecting their own account needs no
//! console role):
//!
//! - `GET /console/connect?link=…`: the link checked (MAC, end); the
//!   person sent to sign in through the organisation's provider when the
//!   browser holds no sign-in for it; a person who is not the link's
//!   principal refused (recorded); otherwise what asks, and a form.
//! - `POST /console/connect/allow`: another site's POST refused; the form's
//!   CSRF token (bound to the link and the person) checked; the browser
//!   sent on to the provider with a fresh `state` and PKCE verifier, kept
//!   in a sealed cookie bound to the link and the person.
//! - `GET /console/connect/callback`: the cookie, its `state` (constant
//!   time) and the same person checked; the code exchanged; the tokens
//!   kept in the vault; recorded.
//! - `GET /console/connections`, `POST /console/connections/revoke`: a
//!   person's connections (those of the principals they are), and their
//!   revocation (at the provider too, where it can).
//!
//! The two cookies are `__Host-`, `HttpOnly`, `Secure`, `SameSite=Lax`
//! (the link is opened from the agent's client, the provider's callback
//! is a cross-site navigation) and end with the link's lifetime.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use http::StatusCode;
use warden_config::person::{strict_key, tenant_key, Person as Named};

use super::onward::{again, escape, onward_to, with_cookie};
use super::{cross_site, html, query_of, read_form, Resp};
use crate::connect::seal::{self, Authorizing, Kind, Link, Person};
use crate::connect::{oauth, Connect};
use crate::oidc::now_secs;
use crate::oidc::roles::Identity;
use crate::server::Api;
use crate::vault::Filter;

/// The person's sign-in for consent.
const PERSON: &str = "__Host-warden_person";
/// An authorization under way at a provider.
const AUTHORIZING: &str = "__Host-warden_authorizing";

fn cookie(name: &str, value: Option<&str>, life: u64) -> String {
    match value {
        Some(v) => format!("{name}={v}; Path=/; Max-Age={life}; HttpOnly; Secure; SameSite=Lax"),
        None => format!("{name}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"),
    }
}

/// The value of cookie `name`; none when it is sent twice.
fn named_cookie(h: &http::HeaderMap, name: &str) -> Option<String> {
    let mut found = h
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

fn page(status: StatusCode, title: &str, body: &str) -> Resp {
    html(
        status,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
             <link rel=\"stylesheet\" href=\"/console/static/console.css\"></head>\
             <body><main><h1>{t}</h1>{body}</main></body></html>",
            t = escape(title)
        ),
    )
}

fn refused(api: &Api, status: StatusCode, why: &str, peer: IpAddr) -> Resp {
    api.console_record("-", "vault.consent", false, &format!("{peer}: {why}"));
    page(
        status,
        "Not connected",
        &format!("<p id=\"refused\">{}</p>", escape(why)),
    )
}

/// A principal claim read as a connection's key reads a principal: the
/// tenant's key, when the claim names one (`tenant/id`), and the id's
/// [`strict_key`]. The claim is split where every reader splits it (a
/// `/`, or its full-width form, which [`Named::parse`] reads as one);
/// one with a slash only a reader sees (`a℅b`, read `ac/ob`) names
/// nobody here.
fn claimed(claim: &str) -> Option<(Option<String>, String)> {
    let read = Named::parse(claim).ok()?;
    match (read.tenant.is_some(), claim.find(['/', '／'])) {
        (false, None) => Some((None, strict_key(claim))),
        (true, Some(at)) => {
            let (tenant, rest) = claim.split_at(at);
            let id = rest.strip_prefix('/').or_else(|| rest.strip_prefix('／'))?;
            // Nothing before the slash that a reader takes for one.
            if Named::parse(tenant).ok()?.tenant.is_some() {
                return None;
            }
            Some((Some(tenant_key(tenant)), strict_key(id)))
        }
        _ => None,
    }
}

/// Whether `person` is the principal a connection is kept under (its
/// key's `tenant` and `principal`): one of the principals their claims
/// name has that key (a bare id, in any tenant).
///
/// Compared by the connection's own key, never by the looser form that
/// folds accents and compatibility forms (which only ever adds strictness
/// to the rules that use it): consenting to a link of `alicé` or
/// `ａｌｉｃｅ`, another principal, would bind the person's account to that
/// principal's calls; a claim that only looks like the link's principal
/// would bind another's account to the person's.
///
/// With `qualified` (the provider names the tenant of a person's
/// principals: `principal_tenant_claim`), a bare id owns nothing: a person
/// whose sign-in named no tenant is no principal of any, rather than the
/// namesake of every tenant's (a tenant admin could mint one).
fn owns(person: &Person, tenant: &str, principal: &str, qualified: bool) -> bool {
    person
        .principals
        .iter()
        .filter_map(|p| claimed(p))
        .any(|(t, id)| {
            id == principal
                && match t {
                    Some(t) => t == tenant,
                    None => !qualified,
                }
        })
}

/// Whether the provider names the tenant of a person's principals.
fn qualified(api: &Api) -> bool {
    api.console
        .oidc
        .as_ref()
        .is_some_and(|o| o.config().principal_tenant_claim.is_some())
}

/// Whether `person` is the link's principal `tenant`/`principal`: they
/// own the connection it would make ([`owns`]).
fn is_principal(person: &Person, tenant: &str, principal: &str, qualified: bool) -> bool {
    // The key `crate::connect::conn_key` keeps the connection under.
    owns(
        person,
        &tenant_key(tenant),
        &strict_key(principal),
        qualified,
    )
}

fn connect_of(api: &Api) -> Result<&Arc<Connect>, Resp> {
    api.connect.as_ref().ok_or_else(|| {
        page(
            StatusCode::NOT_FOUND,
            "No connections",
            "<p>This agent keeps no per-user credentials (serve --connections).</p>",
        )
    })
}

/// The vault's flow for a form POST, which another site may not send.
fn posted(api: &Api, req: &Request, peer: IpAddr) -> Result<Arc<Connect>, Resp> {
    let c = connect_of(api)?.clone();
    if cross_site(req) {
        return Err(refused(
            api,
            StatusCode::FORBIDDEN,
            "the request came from another site",
            peer,
        ));
    }
    Ok(c)
}

/// The person's sign-in the browser holds, if any.
fn person_of(c: &Connect, h: &http::HeaderMap) -> Option<Person> {
    let v = named_cookie(h, PERSON)?;
    seal::open(&c.keys(), Kind::Person, &v, now_secs()).ok()
}

/// Where a sign-in for consent came back to ([`super::sign_in`]): the
/// person's identity kept in its cookie, then on to `next`.
pub(crate) fn signed_in(api: &Api, who: Identity, next: &str, peer: IpAddr) -> Resp {
    let Some(c) = api.connect.as_ref() else {
        return refused(api, StatusCode::NOT_FOUND, "no connections here", peer);
    };
    let life = c.config.link_lifetime.as_secs();
    let person = Person {
        sub: who.sub,
        shown: who.shown,
        principals: who.principals,
        until: now_secs() + life,
    };
    let Ok(sealed) = seal::seal(&c.keys(), Kind::Person, &person) else {
        return refused(
            api,
            StatusCode::SERVICE_UNAVAILABLE,
            "the vault has no key",
            peer,
        );
    };
    api.console_record(
        &format!("{}{}", crate::oidc::roles::PREFIX, person.sub),
        "vault.sign-in",
        true,
        &format!("{peer}: signed in to connect an account"),
    );
    with_cookie(
        onward_to(&crate::oidc::pending::safe_next(next), "Signed in"),
        &cookie(PERSON, Some(&sealed), life),
    )
}

/// The link, checked, and the person, who must be its principal.
fn link_and_person(
    api: &Api,
    c: &Connect,
    sealed: &str,
    h: &http::HeaderMap,
    here: &str,
    peer: IpAddr,
) -> Result<(Link, Person), Resp> {
    let link: Link = seal::open(&c.keys(), Kind::Link, sealed, now_secs()).map_err(|e| {
        refused(
            api,
            StatusCode::BAD_REQUEST,
            &format!("this consent link is not valid: {e}"),
            peer,
        )
    })?;
    let Some(person) = person_of(c, h) else {
        if api.console.oidc.is_none() {
            return Err(refused(
                api,
                StatusCode::SERVICE_UNAVAILABLE,
                "no identity provider signs people in here (serve --oidc)",
                peer,
            ));
        }
        return Err(again("consent", here));
    };
    if !is_principal(&person, &link.tenant, &link.principal, qualified(api)) {
        return Err(refused(
            api,
            StatusCode::FORBIDDEN,
            &format!(
                "this link was made for principal `{}` of tenant `{}`; you are signed in as {} ({}), who is not",
                link.principal.escape_debug(),
                link.tenant.escape_debug(),
                person.shown,
                person.sub.escape_debug()
            ),
            peer,
        ));
    }
    Ok((link, person))
}

/// `GET /console/connect?link=…`.
pub(crate) async fn consent(State(api): State<Arc<Api>>, req: Request) -> Resp {
    let peer = crate::server::extract::peer_of(req.extensions());
    let c = match connect_of(&api) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = query_of(req.uri());
    let sealed = q.get("link").map_or("", String::as_str);
    let here = req
        .uri()
        .path_and_query()
        .map_or("/console/connect", |p| p.as_str())
        .to_owned();
    let (link, person) = match link_and_person(&api, c, sealed, req.headers(), &here, peer) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let scopes = if link.scopes.is_empty() {
        "(none named)".to_owned()
    } else {
        link.scopes.join(" ")
    };
    let csrf = seal::csrf(&c.keys(), &link.id, &person.sub);
    page(
        StatusCode::OK,
        "Connect your account",
        &format!(
            "<p id=\"asks\">Your agent <b>{principal}</b> (tenant {tenant}, through gateway {gateway}) \
             asks to call server <b>{server}</b> with your own account at <b>{provider}</b>, \
             with the scopes <code id=\"scopes\">{scopes}</code>.</p>\
             <p>You are signed in as {shown}. The token stays with Warden: your agent and its model never see it. \
             You can revoke it at any time at <a href=\"/console/connections\">your connections</a>.</p>\
             <form method=\"post\" action=\"/console/connect/allow\">\
             <input type=\"hidden\" name=\"link\" value=\"{link}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button id=\"allow\" type=\"submit\">Connect my account at {provider}</button></form>",
            principal = escape(&link.principal),
            tenant = escape(&link.tenant),
            gateway = escape(&link.gateway),
            server = escape(&link.server),
            provider = escape(&link.provider),
            scopes = escape(&scopes),
            shown = escape(&person.shown),
            link = escape(sealed),
            csrf = escape(&csrf),
        ),
    )
}

/// `POST /console/connect/allow`.
pub(crate) async fn allow(State(api): State<Arc<Api>>, req: Request) -> Resp {
    let peer = crate::server::extract::peer_of(req.extensions());
    let c = match posted(&api, &req, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let headers = req.headers().clone();
    let form = match read_form(req.into_body()).await {
        Ok(f) => f,
        Err(e) => return refused(&api, StatusCode::BAD_REQUEST, &e, peer),
    };
    let sealed = form.get("link").map_or("", String::as_str);
    let (link, person) =
        match link_and_person(&api, &c, sealed, &headers, "/console/connections", peer) {
            Ok(x) => x,
            Err(r) => return r,
        };
    let token = form.get("csrf").map_or("", String::as_str);
    if !seal::csrf_ok(&c.keys(), &link.id, &person.sub, token) {
        return refused(
            &api,
            StatusCode::FORBIDDEN,
            "the form's CSRF token is wrong",
            peer,
        );
    }
    let Some(provider) = c.config.providers.get(&link.provider) else {
        return refused(
            &api,
            StatusCode::NOT_FOUND,
            "the link's provider is not configured here",
            peer,
        );
    };
    let state = crate::console::session::random_token();
    let verifier = crate::console::session::random_token();
    let life = c.config.link_lifetime.as_secs();
    let until = link.until.min(now_secs() + life);
    let to = oauth::authorize_url(
        provider,
        &link.scopes,
        &state,
        &crate::oidc::pending::challenge(&verifier),
    );
    let auth = Authorizing {
        link,
        state,
        verifier,
        sub: person.sub,
        until,
    };
    let Ok(sealed) = seal::seal(&c.keys(), Kind::Authorizing, &auth) else {
        return refused(
            &api,
            StatusCode::SERVICE_UNAVAILABLE,
            "the vault has no key",
            peer,
        );
    };
    with_cookie(
        onward_to(
            &to,
            &format!("Going to {} to connect your account", provider.name),
        ),
        &cookie(AUTHORIZING, Some(&sealed), life),
    )
}

/// `GET /console/connect/callback?code=&state=`.
pub(crate) async fn callback(State(api): State<Arc<Api>>, req: Request) -> Resp {
    let peer = crate::server::extract::peer_of(req.extensions());
    let c = match connect_of(&api) {
        Ok(c) => c.clone(),
        Err(r) => return r,
    };
    let clear = cookie(AUTHORIZING, None, 0);
    let fail = |status, why: &str| with_cookie(refused(&api, status, why, peer), &clear);
    let q = query_of(req.uri());
    let Some(auth) = named_cookie(req.headers(), AUTHORIZING)
        .and_then(|v| seal::open::<Authorizing>(&c.keys(), Kind::Authorizing, &v, now_secs()).ok())
    else {
        return fail(
            StatusCode::BAD_REQUEST,
            "no consent of this browser is under way (or it ended)",
        );
    };
    let state = q.get("state").map_or("", String::as_str);
    if !crate::console::session::same_secret(state, &auth.state) {
        return fail(
            StatusCode::BAD_REQUEST,
            "the callback's state is not this browser's consent",
        );
    }
    match person_of(&c, req.headers()) {
        Some(p) if p.sub == auth.sub => {}
        _ => {
            return fail(
                StatusCode::FORBIDDEN,
                "the consent was begun by another person's sign-in",
            )
        }
    }
    if let Some(e) = q.get("error") {
        let e: String = e
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        return fail(StatusCode::BAD_REQUEST, &format!("the provider said: {e}"));
    }
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return fail(StatusCode::BAD_REQUEST, "the callback carries no code");
    };
    let Some(provider) = c.config.providers.get(&auth.link.provider) else {
        return fail(
            StatusCode::NOT_FOUND,
            "the link's provider is not configured here",
        );
    };
    let issued = match oauth::exchange(&c.http_client(), provider, code, &auth.verifier).await {
        Ok(i) => i,
        Err(e) => return fail(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    let who = format!("{}{}", crate::oidc::roles::PREFIX, auth.sub);
    let l = &auth.link;
    match c.connected(l, &who, issued).await {
        Ok(conn) => {
            c.record(
                "vault.consent",
                true,
                &format!(
                    "{who} connected {}/{} to server {} at {} (scopes: {}; connection {})",
                    l.tenant,
                    l.principal,
                    l.server,
                    l.provider,
                    conn.scopes.join(" "),
                    conn.id
                ),
            );
            with_cookie(
                page(
                    StatusCode::OK,
                    "Connected",
                    &format!(
                        "<p id=\"connected\">Your account at {} is connected for server {}. \
                         Go back to your agent and retry the call.</p>\
                         <p><a href=\"/console/connections\">Your connections</a></p>",
                        escape(&l.provider),
                        escape(&l.server)
                    ),
                ),
                &clear,
            )
        }
        Err(e) => fail(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}

/// `GET /console/connections`: the person's connections.
pub(crate) async fn connections(State(api): State<Arc<Api>>, req: Request) -> Resp {
    let peer = crate::server::extract::peer_of(req.extensions());
    let c = match connect_of(&api) {
        Ok(c) => c.clone(),
        Err(r) => return r,
    };
    let Some(person) = person_of(&c, req.headers()) else {
        if api.console.oidc.is_none() {
            return refused(
                &api,
                StatusCode::SERVICE_UNAVAILABLE,
                "no identity provider here",
                peer,
            );
        }
        return again("consent", "/console/connections");
    };
    let vault = c.vault.clone();
    let all = match tokio::task::spawn_blocking(move || vault.list(&Filter::default())).await {
        Ok(Ok(all)) => all,
        Ok(Err(e)) => return refused(&api, StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), peer),
        Err(e) => return refused(&api, StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), peer),
    };
    let csrf = seal::csrf(&c.keys(), "connections", &person.sub);
    let mut rows = String::new();
    for conn in all
        .iter()
        .filter(|x| owns(&person, &x.key.tenant, &x.key.principal, qualified(&api)))
    {
        rows.push_str(&format!(
            "<tr class=\"connection\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><form method=\"post\" action=\"/console/connections/revoke\">\
             <input type=\"hidden\" name=\"id\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" class=\"revoke\">Revoke</button></form></td></tr>",
            escape(&conn.key.principal),
            escape(&conn.key.server),
            escape(&conn.provider),
            escape(&conn.scopes.join(" ")),
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(conn.created)
            ),
            escape(&conn.id),
            escape(&csrf),
        ));
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"6\" id=\"none\">No connections.</td></tr>");
    }
    page(
        StatusCode::OK,
        "Your connections",
        &format!(
            "<p>Signed in as {}.</p><table><thead><tr><th>Principal</th><th>Server</th><th>Provider</th>\
             <th>Scopes</th><th>Since</th><th></th></tr></thead><tbody>{rows}</tbody></table>",
            escape(&person.shown)
        ),
    )
}

/// `POST /console/connections/revoke`: one of the person's connections.
pub(crate) async fn revoke(State(api): State<Arc<Api>>, req: Request) -> Resp {
    let peer = crate::server::extract::peer_of(req.extensions());
    let c = match posted(&api, &req, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(person) = person_of(&c, req.headers()) else {
        return refused(&api, StatusCode::UNAUTHORIZED, "sign in first", peer);
    };
    let form = match read_form(req.into_body()).await {
        Ok(f) => f,
        Err(e) => return refused(&api, StatusCode::BAD_REQUEST, &e, peer),
    };
    if !seal::csrf_ok(
        &c.keys(),
        "connections",
        &person.sub,
        form.get("csrf").map_or("", String::as_str),
    ) {
        return refused(
            &api,
            StatusCode::FORBIDDEN,
            "the form's CSRF token is wrong",
            peer,
        );
    }
    let id = form.get("id").map_or("", String::as_str).to_owned();
    let vault = c.vault.clone();
    let all = match tokio::task::spawn_blocking(move || vault.list(&Filter::default())).await {
        Ok(Ok(all)) => all,
        _ => {
            return refused(
                &api,
                StatusCode::SERVICE_UNAVAILABLE,
                "the vault cannot be read",
                peer,
            )
        }
    };
    let Some(conn) = all
        .into_iter()
        .find(|x| x.id == id && owns(&person, &x.key.tenant, &x.key.principal, qualified(&api)))
    else {
        return refused(
            &api,
            StatusCode::NOT_FOUND,
            "no such connection of yours",
            peer,
        );
    };
    let filter = Filter {
        tenant: Some(conn.key.tenant.clone()),
        principal: Some(conn.key.principal.clone()),
        server: Some(conn.key.server.clone()),
    };
    match c.revoke(filter).await {
        Ok(gone) => {
            for g in &gone {
                c.record(
                    "vault.revoke",
                    true,
                    &format!(
                        "{}{} revoked connection {} ({}/{} at {})",
                        crate::oidc::roles::PREFIX,
                        person.sub,
                        g.id,
                        g.key.tenant,
                        g.key.principal,
                        g.key.server
                    ),
                );
            }
            super::redirect("/console/connections")
        }
        Err(e) => refused(&api, StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), peer),
    }
}

#[cfg(test)]
#[path = "connect_pages_tests.rs"]
mod tests;
