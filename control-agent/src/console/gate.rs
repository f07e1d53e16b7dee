//! What stands between a request and a console page, in the order it is
//! met: the host name ([`host`], 421), then only GET and POST ([`get_or_post`],
//! 401 without a session, else 405), then — past the style sheet and the
//! login form, which need no session — the session ([`session`]: a GET
//! without one is sent to the login page, anything else 401), then for a
//! POST the form ([`post_guard`]: another site's refused and recorded, the
//! body read, its CSRF token checked and a wrong one recorded), and last
//! the route's [`ConsoleAccess`] ([`admit`]: 403, recorded). The route
//! table ([`crate::server::routes`]) lists the pages and actions; a
//! [`ConsoleTable`] puts these gates around each.
//!
//! What a handler takes from a request passed the gates is an extractor
//! here: the session ([`LoggedIn`]), the page's message ([`Flash`]), the
//! query ([`Query`]), the form ([`Form`]), path parameters as the path
//! carried them ([`ApprovalId`], [`RecordId`], [`PathTenant`],
//! [`PathServer`]: not percent-decoded, as the console always read them),
//! and the administrator a governance page needs ([`Governing`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::handler::Handler;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, on, MethodFilter, MethodRouter};
use axum::Router;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;

use super::session::{self, Session};
use super::views::is_id;
use super::{cookie_of, cross_site, harden, plain, query_of, read_form, redirect, Resp};
use crate::admins::Actor;
use crate::server::Api;

/// The console's state, as its gates and handlers take it.
type Agent = State<Arc<Api>>;

/// Refuses a request whose `Host` the console does not answer to (DNS
/// rebinding): before anything else, on every console path.
pub(crate) async fn host(State(api): Agent, req: Request, next: Next) -> Response {
    let h = req.headers();
    let name = h.get("host").and_then(|v| v.to_str().ok());
    if h.get_all("host").iter().count() > 1 || !api.console.host_allowed(name) {
        return plain(
            StatusCode::MISDIRECTED_REQUEST,
            "this console does not answer to that host name (see --console-host)",
        )
        .into_response();
    }
    next.run(req).await
}

/// Only GET and POST reach the console's pages: any other method is 401
/// without a session (as a POST would be) and 405 with one.
pub(crate) async fn get_or_post(State(api): Agent, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::POST) {
        return next.run(req).await;
    }
    let live = cookie_of(&req).is_some_and(|c| api.console.sessions.get(&c).is_some());
    if live {
        plain(StatusCode::METHOD_NOT_ALLOWED, "GET or POST only").into_response()
    } else {
        plain(StatusCode::UNAUTHORIZED, "log in first").into_response()
    }
}

/// The request's session ([`LoggedIn`]): a GET without one is sent to the
/// login page, a POST answered 401. A GET takes the session's message
/// ([`Flash`]), whatever page it asks for: it is shown once.
pub(crate) async fn session(State(api): Agent, mut req: Request, next: Next) -> Response {
    let sid = cookie_of(&req);
    // A token minted for the CLI is never a browser's session.
    let live = |c: &str| api.console.sessions.get(c).filter(|s| !s.user.cli);
    let Some((session, sid)) = sid.and_then(|c| Some((live(&c)?, c))) else {
        return if req.method() == Method::GET {
            redirect("/console/login")
        } else {
            plain(StatusCode::UNAUTHORIZED, "log in first")
        }
        .into_response();
    };
    if api.provider_gone(&session) {
        // Ended here, as a session past its time is.
        api.console.sessions.close(&sid);
        return if req.method() == Method::GET {
            redirect("/console/login")
        } else {
            plain(StatusCode::UNAUTHORIZED, "log in first")
        }
        .into_response();
    }
    if api.recheck_due(&session) {
        // Roles are read again from the provider before anything else;
        // a POST is not carried out (its page is shown again after).
        if req.method() != Method::GET {
            return super::onward::again("refresh", &referer_path(req.headers())).into_response();
        }
        let next = req
            .uri()
            .path_and_query()
            .map_or("/console".into(), |p| p.as_str().to_owned());
        let mut to = url::form_urlencoded::Serializer::new(String::new());
        to.append_pair("mode", "refresh").append_pair("next", &next);
        return redirect(&format!("/console/oidc/start?{}", to.finish())).into_response();
    }
    if req.method() == Method::GET {
        let flash = api.console.sessions.take_flash(&sid);
        req.extensions_mut().insert(Flash(flash));
    }
    req.extensions_mut().insert(LoggedIn { session, sid });
    next.run(req).await
}

/// The console path of a request's `Referer` (the page a form was on),
/// else `/console`.
fn referer_path(h: &http::HeaderMap) -> String {
    h.get("referer")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| url::Url::parse(r).ok())
        .map(|u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        })
        .map_or_else(
            || "/console".into(),
            |p| crate::oidc::pending::safe_next(&p),
        )
}

/// A POST's form ([`Form`]), once it is known to come from the console:
/// another site's is refused (recorded), then the body is read (400 when
/// it is too large or gives a field twice), then its CSRF token checked
/// (refused and recorded when missing or wrong). Before any action.
pub(crate) async fn post_guard(State(api): Agent, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(who) = req.extensions().get::<LoggedIn>().cloned() else {
        return plain(StatusCode::UNAUTHORIZED, "log in first").into_response();
    };
    let (name, path) = (who.session.user.name.clone(), req.uri().path().to_owned());
    if cross_site(&req) {
        api.console_record(&name, "refused", false, &format!("cross-site POST {path}"));
        return plain(
            StatusCode::FORBIDDEN,
            "refused: the request came from another site",
        )
        .into_response();
    }
    let (mut parts, body) = req.into_parts();
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &e).into_response(),
    };
    let token_ok = form
        .get("csrf")
        .is_some_and(|t| session::same_secret(t, &who.session.csrf));
    if !token_ok {
        api.console_record(
            &name,
            "refused",
            false,
            &format!("no valid CSRF token on POST {path}"),
        );
        return plain(
            StatusCode::FORBIDDEN,
            "refused: the form's CSRF token is missing or wrong (reload the page)",
        )
        .into_response();
    }
    parts.extensions.insert(Form(form));
    next.run(Request::from_parts(parts, axum::body::Body::empty()))
        .await
}

/// Admits the session's user to a route of `access`, or refuses them (403,
/// recorded). An approval's id is checked first: a malformed one is "no
/// such approval" to everyone, whatever the route needs.
pub(crate) async fn admit(
    State((api, access)): State<(Arc<Api>, ConsoleAccess)>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    if raw_param(&parts, "approval").is_some_and(|id| !is_id(&id)) {
        return plain(StatusCode::NOT_FOUND, "no such approval").into_response();
    }
    let who = match LoggedIn::from_request_parts(&mut parts, &()).await {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = check(&api, &who, access, parts.uri.path()) {
        return r.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Whether `who` may take a route of `access`; the refusal (recorded) when not.
pub(crate) fn check(
    api: &Api,
    who: &LoggedIn,
    access: ConsoleAccess,
    path: &str,
) -> Result<(), Resp> {
    let user = &who.session.user;
    if access.admits(user) {
        return Ok(());
    }
    Err(api.forbidden(user, path, &access.refusal()))
}

/// The path of the route a request took, as the table names it
/// (`/console/approvals/{approval}`).
#[derive(Clone, Copy)]
struct RoutePath(&'static str);

/// Names the route a request took ([`RoutePath`]), for its parameters.
async fn route_path(State(path): State<&'static str>, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(RoutePath(path));
    next.run(req).await
}

/// A path parameter as the path carried it (no percent-decoding): the
/// segment of the request's path where its route has `{name}`.
fn raw_param(parts: &Parts, name: &str) -> Option<String> {
    let route = parts.extensions.get::<RoutePath>()?;
    let want = format!("{{{name}}}");
    route
        .0
        .split('/')
        .zip(parts.uri.path().split('/'))
        .find(|(r, _)| *r == want)
        .map(|(_, seg)| seg.to_owned())
}

/// The session of a request past [`session`], with its cookie's value.
#[derive(Clone)]
pub(crate) struct LoggedIn {
    pub(crate) session: Session,
    pub(crate) sid: String,
}

impl<S: Send + Sync> FromRequestParts<S> for LoggedIn {
    type Rejection = Resp;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<LoggedIn, Resp> {
        parts
            .extensions
            .get::<LoggedIn>()
            .cloned()
            .ok_or_else(|| plain(StatusCode::UNAUTHORIZED, "log in first"))
    }
}

/// The message a GET took from its session (what the last action did).
#[derive(Clone)]
pub(crate) struct Flash(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Flash {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Flash, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Flash>()
            .cloned()
            .unwrap_or(Flash(None)))
    }
}

/// The query, decoded (a field given twice keeps the first).
pub(crate) struct Query(pub(crate) BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Query, Self::Rejection> {
        Ok(Query(query_of(&parts.uri)))
    }
}

/// A POST's form, read and checked by [`post_guard`].
#[derive(Clone)]
pub(crate) struct Form(pub(crate) BTreeMap<String, String>);

impl Form {
    /// A field, trimmed (empty when absent).
    pub(crate) fn field(&self, k: &str) -> String {
        self.0
            .get(k)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Form {
    type Rejection = Resp;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Form, Resp> {
        parts
            .extensions
            .get::<Form>()
            .cloned()
            .ok_or_else(|| plain(StatusCode::BAD_REQUEST, "a form is required"))
    }
}

/// `{approval}`: an approval's id ([`admit`] refused a malformed one).
pub(crate) struct ApprovalId(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for ApprovalId {
    type Rejection = Resp;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ApprovalId, Resp> {
        raw_param(parts, "approval")
            .filter(|id| is_id(id))
            .map(ApprovalId)
            .ok_or_else(|| plain(StatusCode::NOT_FOUND, "no such approval"))
    }
}

/// `{record}`: an audit record's id (-1, found nowhere, when it is none).
pub(crate) struct RecordId(pub(crate) i64);

impl<S: Send + Sync> FromRequestParts<S> for RecordId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<RecordId, Self::Rejection> {
        Ok(RecordId(
            raw_param(parts, "record")
                .and_then(|r| r.parse().ok())
                .unwrap_or(-1),
        ))
    }
}

/// `{t}`: a tenant as the path spells it (the handler checks the name).
pub(crate) struct PathTenant(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for PathTenant {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<PathTenant, Self::Rejection> {
        Ok(PathTenant(raw_param(parts, "t").unwrap_or_default()))
    }
}

/// `{s}`: a server as the path spells it (the handler checks the name).
pub(crate) struct PathServer(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for PathServer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<PathServer, Self::Rejection> {
        Ok(PathServer(raw_param(parts, "s").unwrap_or_default()))
    }
}

/// The administrator the session's user is, for the governance pages
/// (their routes admit [`ConsoleAccess::Governor`] only).
pub(crate) struct Governing(pub(crate) Actor);

impl FromRequestParts<Arc<Api>> for Governing {
    type Rejection = Resp;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Governing, Resp> {
        let who = LoggedIn::from_request_parts(parts, api).await?;
        match &who.session.user.actor {
            Some(a) => Ok(Governing(a.clone())),
            None => {
                let why = ConsoleAccess::Governor.refusal();
                Err(api.forbidden(&who.session.user, parts.uri.path(), &why))
            }
        }
    }
}

/// `GET /console/static/console.css`, before any session.
pub(crate) async fn style_sheet() -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(include_bytes!(
        "../../static/console.css"
    ))));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    let mut r = harden(r);
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("max-age=300"));
    r
}

/// `GET /console/login`, before any session.
pub(crate) async fn login_page(State(api): Agent) -> Resp {
    api.login_page(None, StatusCode::OK)
}

/// `POST /console/login`, before any session (its own cross-site check
/// and failure count: [`Api::login`]).
pub(crate) async fn login(State(api): Agent, req: Request) -> Resp {
    let peer = crate::server::extract::peer_of(req.extensions());
    api.login(req, peer).await
}

/// `POST /console/cli-token`: a token of the API for the session's user.
pub(crate) async fn cli_token(State(api): Agent, who: LoggedIn) -> Resp {
    api.cli_token(&who.session)
}

/// `GET /console/oidc/start`, before any session: to the provider.
pub(crate) async fn oidc_start(State(api): Agent, req: Request) -> Resp {
    let peer = crate::server::extract::peer_of(req.extensions());
    api.oidc_start(&super::query_of(req.uri()), peer).await
}

/// `GET /console/oidc/callback`, before any session: the provider's answer.
pub(crate) async fn oidc_callback(State(api): Agent, req: Request) -> Resp {
    let peer = crate::server::extract::peer_of(req.extensions());
    let q = super::query_of(req.uri());
    let old = cookie_of(&req);
    api.oidc_callback(&q, req.headers(), old, peer).await
}

/// `POST /console/logout`: the session ends, its cookie is cleared; a
/// person signed in through the provider goes on to its end of session.
pub(crate) async fn logout(State(api): Agent, who: LoggedIn) -> Resp {
    api.console.sessions.close(&who.sid);
    api.console_record(&who.session.user.name, "logout", true, "");
    let to = api.logout_target(&who.session).await;
    let mut r = if to.starts_with('/') {
        redirect(&to)
    } else {
        super::onward::onward_to(&to, "Signing out at the identity provider")
    };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
        session::COOKIE
    )) {
        r.headers_mut().insert("set-cookie", v);
    }
    r
}

/// A console path no route takes (or a method its route does not), past
/// the session and a POST's checks: under the tenants and registry pages
/// an administrator's (refused to others first), else 404 as its section
/// answers a bad id: "no such approval", "no such record", "no such
/// tenant" (a diff of a tenant no name can be), "no such page" (GET),
/// "no such action" (POST).
pub(crate) async fn nowhere(
    State(api): Agent,
    who: LoggedIn,
    Flash(flash): Flash,
    method: Method,
    uri: http::Uri,
) -> Resp {
    let path = uri.path();
    let get = method == Method::GET;
    let under = |p: &str| {
        path.strip_prefix(p)
            .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    };
    if under("/console/tenants") || under("/console/registry") {
        if let Err(r) = check(&api, &who, ConsoleAccess::Governor, path) {
            return r;
        }
        let diff = path
            .strip_prefix("/console/tenants/")
            .is_some_and(|r| r.ends_with("/diff"));
        return match (get, diff) {
            (true, true) => plain(StatusCode::NOT_FOUND, "no such tenant"),
            (true, false) => plain(StatusCode::NOT_FOUND, "no such page"),
            (false, _) => plain(StatusCode::NOT_FOUND, "no such action"),
        };
    }
    if get {
        if path.starts_with("/console/approvals/") {
            return plain(StatusCode::NOT_FOUND, "no such approval");
        }
        if path.starts_with("/console/audit/") {
            return api.record_page(&who.session, flash, -1).await;
        }
        return plain(StatusCode::NOT_FOUND, "no such page");
    }
    if path.starts_with("/console/approvals/") && path.ends_with("/decide") {
        return plain(StatusCode::NOT_FOUND, "no such approval");
    }
    plain(StatusCode::NOT_FOUND, "no such action")
}

/// Builds the console's routes, each behind the gates above: one method
/// router per path (its other methods and every path under `/console`
/// that no route takes answered by [`nowhere`], behind the same gates).
pub(crate) struct ConsoleTable {
    api: Arc<Api>,
    paths: Vec<(&'static str, MethodRouter<Arc<Api>>)>,
}

impl ConsoleTable {
    pub(crate) fn new(api: &Arc<Api>) -> ConsoleTable {
        ConsoleTable {
            api: api.clone(),
            paths: Vec::new(),
        }
    }

    /// A route taken before any session (the host name checked still).
    pub(crate) fn open<H, T>(self, method: MethodFilter, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, Arc<Api>>,
        T: 'static,
    {
        self.add(path, on(method, handler))
    }

    /// A page or action of the logged-in users `access` admits.
    pub(crate) fn at<H, T>(
        self,
        method: MethodFilter,
        path: &'static str,
        access: ConsoleAccess,
        handler: H,
    ) -> Self
    where
        H: Handler<T, Arc<Api>>,
        T: 'static,
    {
        let api = &self.api;
        let route = on(method, handler)
            .route_layer(from_fn_with_state((api.clone(), access), admit))
            .route_layer(from_fn_with_state(api.clone(), post_guard))
            .route_layer(from_fn_with_state(api.clone(), session))
            .route_layer(from_fn_with_state(path, route_path));
        self.add(path, route)
    }

    fn add(mut self, path: &'static str, route: MethodRouter<Arc<Api>>) -> Self {
        match self.paths.iter_mut().find(|(p, _)| *p == path) {
            Some((_, r)) => *r = std::mem::replace(r, MethodRouter::new()).merge(route),
            None => self.paths.push((path, route)),
        }
        self
    }

    /// The routes, and `/console/{*page}` for the paths none takes.
    pub(crate) fn into_router(self) -> Router<Arc<Api>> {
        let api = self.api;
        // `any` answers the methods no route takes (without an `Allow`).
        let elsewhere = || {
            any(nowhere
                .layer(from_fn_with_state(api.clone(), post_guard))
                .layer(from_fn_with_state(api.clone(), session)))
        };
        let outer = |r: MethodRouter<Arc<Api>>| {
            r.layer(from_fn_with_state(api.clone(), get_or_post))
                .layer(from_fn_with_state(api.clone(), host))
        };
        let mut router = Router::new();
        for (path, route) in self.paths {
            router = router.route(path, outer(elsewhere().merge(route)));
        }
        router.route("/console/{*page}", outer(elsewhere()))
    }
}

/// Who a console page or action admits: the role of the session's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleAccess {
    /// Anyone logged in (viewers, approvers, administrators).
    Anyone,
    /// An approver's token.
    Approver,
    /// The console's admins (the admin token, org admins); what they do
    /// (the refusal says "only an admin …").
    Admin(&'static str),
    /// Administrators: the admin token and `--admins` (org admins,
    /// org reviewers, tenant admins).
    Governor,
}

impl ConsoleAccess {
    /// Whether `user` may take a route of this access.
    pub(crate) fn admits(self, user: &crate::console::User) -> bool {
        use crate::console::Role;
        match self {
            ConsoleAccess::Anyone => true,
            ConsoleAccess::Approver => user.role == Role::Approver,
            ConsoleAccess::Admin(_) => user.role == Role::Admin,
            ConsoleAccess::Governor => user.actor.is_some(),
        }
    }

    /// Why a user it does not admit is refused.
    pub(crate) fn refusal(self) -> String {
        match self {
            ConsoleAccess::Anyone => String::new(),
            ConsoleAccess::Approver => "only an approver approves or denies".into(),
            ConsoleAccess::Admin(what) => format!("only an admin {what}"),
            ConsoleAccess::Governor => {
                "the tenants and registry pages are administrators' (the admin token or --admins)"
                    .into()
            }
        }
    }
}
