//! Every route of the agent, the caller each needs and the handler that
//! answers it: the one place to look. Handlers live in [`crate::api`] (one
//! module per domain) and [`crate::console`]; who a caller is comes from
//! [`crate::caller`]; errors map to answers in [`super::error`].
//!
//! Before any `/v1` route, [`authenticate`] finds the caller (401, 429).
//! A route's [`Access`] then admits it or refuses it (403; an
//! administrator's refusal is written to the change record). A route that
//! does not exist answers as [`no_route`] says, which depends on who asks
//! (an approver or a gateway learns nothing of the admins' routes).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, on, MethodFilter};
use axum::Router;
use http::{HeaderValue, Method, StatusCode};

use super::error::{json, ApiError};
use super::extract::{authenticate, what};
use crate::admins::Kind;
use crate::api::{
    approvals, audit, bundles, fleet, grants, registry, rollout, spend, tenants, vault,
};
use crate::caller::Caller;
use crate::console::gate::ConsoleAccess;
use crate::server::Api;

const GET: MethodFilter = MethodFilter::GET;
const POST: MethodFilter = MethodFilter::POST;

/// The agent's routes.
#[rustfmt::skip]
pub fn router(api: Arc<Api>) -> Router {
    use Access::*;
    let v1 = Table::new(&api)
        // Gateways: their bundle, their reports, their audit records.
        .at(GET, "/v1/bundles/current", Gateway, bundles::current)
        .at(POST, "/v1/fleet/report", Gateway, fleet::report)
        .at(POST, "/v1/audit/ingest", Gateway, audit::ingest)
        // Reading the fleet: org roles; a tenant admin, their tenant's.
        .at(GET, "/v1/fleet", Reader, fleet::show)
        .at(GET, "/v1/history", Reader, fleet::history)
        .at(GET, "/v1/audit", Reader, audit::search)
        .at(GET, "/v1/audit/verify", Reader, audit::verify)
        .at(GET, "/v1/audit/live", Reader, audit::live)
        .at(GET, "/v1/spend", Reader, spend::report)
        // What the fleet is served: org admins change it, reviewers read.
        .at(GET, "/v1/rollout", OrgReader, rollout::show)
        .at(POST, "/v1/publish", OrgAdmin, rollout::publish)
        .at(POST, "/v1/rollout/promote", OrgAdmin, rollout::promote)
        .at(POST, "/v1/rollout/rollback", OrgAdmin, rollout::roll_back_canary)
        .at(POST, "/v1/rollback", OrgAdmin, rollout::rollback)
        .at(POST, "/v1/kill", OrgAdmin, rollout::kill)
        .at(POST, "/v1/revive", OrgAdmin, rollout::revive)
        // Held calls: gateways claim, approvers decide, admins read.
        .at(POST, "/v1/approvals/claim", Claim, approvals::claim)
        .at(GET, "/v1/approvals", ApprovalReader, approvals::list)
        .at(GET, "/v1/approvals/", ApprovalReader, approvals::list)
        .at(GET, "/v1/approvals/{id}", ApprovalReader, approvals::show)
        .at(POST, "/v1/approvals/{id}/approve", Decide, approvals::approve)
        .at(POST, "/v1/approvals/{id}/deny", Decide, approvals::deny)
        // Just-in-time grants: administrators and approvers ask (the
        // handler says for whom), approvers decide them above, gateways
        // read those that hold.
        .at(POST, "/v1/grants", ApprovalReader, grants::request)
        .at(GET, "/v1/grants", Gateway, grants::active)
        // Tenant layers: org roles read, org admins and the tenant's own
        // admins change.
        .at(GET, "/v1/tenants", Administrator, tenants::list)
        .at(GET, "/v1/tenants/", Administrator, tenants::list)
        .at(GET, "/v1/tenants/{t}/history", TenantRead, tenants::history)
        .at(GET, "/v1/tenants/{t}/diff", TenantRead, tenants::diff)
        .at(POST, "/v1/tenants/{t}/layer", TenantWrite, tenants::publish)
        .at(POST, "/v1/tenants/{t}/rollback", TenantWrite, tenants::rollback)
        .at(POST, "/v1/tenants/{t}/canary/promote", TenantWrite, tenants::promote)
        .at(POST, "/v1/tenants/{t}/canary/rollback", TenantWrite, tenants::roll_back_canary)
        // The registry: the store applies its rules to each administrator.
        .at(GET, "/v1/registry", Administrator, registry::list)
        .at(GET, "/v1/registry/", Administrator, registry::list)
        .at(POST, "/v1/registry", Administrator, registry::register)
        .at(GET, "/v1/registry/{s}", Administrator, registry::show)
        .at(POST, "/v1/registry/{s}/move", Administrator, registry::transition)
        .at(POST, "/v1/registry/{s}/share", Administrator, registry::share)
        .at(POST, "/v1/registry/{s}/approve-share", Administrator, registry::approve_share)
        // The vault: gateways alone fetch credentials; org admins keep
        // static secrets; administrators list and revoke connections.
        .at(POST, "/v1/vault/token", VaultFetch, vault::token)
        .at(GET, "/v1/vault/secrets/{name}", VaultFetch, vault::secret)
        .at(POST, "/v1/vault/secrets/{name}", OrgAdmin, vault::put_secret)
        .at(GET, "/v1/vault/connections", Administrator, vault::connections)
        .at(POST, "/v1/vault/connections/revoke", Administrator, vault::revoke)
        .at(POST, "/v1/vault/rewrap", OrgAdmin, vault::rewrap)
        .into_router()
        .fallback(no_route)
        .method_not_allowed_fallback(no_route)
        .layer(from_fn_with_state(api.clone(), authenticate));
    Router::new()
        // Open: liveness; the metrics token (when set) or the admin's.
        .route("/healthz", any(healthz))
        .route("/metrics", any(metrics))
        // The console: its own sessions (a token logs in once).
        .merge(console(&api))
        .merge(v1)
        .with_state(api)
}

/// Who a route admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Gateways (the fleet token, a gateway's own) and org admins.
    Gateway,
    /// Org admins and reviewers; tenant admins, scoped to their tenant.
    Reader,
    /// Org admins and reviewers.
    OrgReader,
    /// Org admins (and the admin token).
    OrgAdmin,
    /// Every administrator (the handler scopes a tenant admin).
    Administrator,
    /// Administrators who may read the path's tenant (`{t}`).
    TenantRead,
    /// Administrators who may change the path's tenant (`{t}`).
    TenantWrite,
    /// Gateways claiming a held call.
    Claim,
    /// Administrators (a tenant admin: their tenant's) and approvers.
    ApprovalReader,
    /// Approvers.
    Decide,
    /// Gateways alone (a credential for a call; no person reads one).
    VaultFetch,
}

impl Access {
    fn approvals(self) -> bool {
        matches!(
            self,
            Access::Claim | Access::ApprovalReader | Access::Decide
        )
    }

    /// Whether `caller` may take a route of this access at `path`.
    fn admits(self, caller: &Caller, path: &str) -> bool {
        let kind = caller.actor().map(|a| &a.kind);
        match self {
            Access::Gateway => {
                matches!(caller, Caller::Gateway(_)) || kind == Some(&Kind::OrgAdmin)
            }
            Access::Reader | Access::Administrator => kind.is_some(),
            Access::OrgReader => matches!(kind, Some(Kind::OrgAdmin | Kind::OrgReviewer)),
            Access::OrgAdmin => kind == Some(&Kind::OrgAdmin),
            Access::TenantRead | Access::TenantWrite => match (caller.actor(), tenant_of(path)) {
                (Some(a), Some(t)) if self == Access::TenantRead => a.reads(&t),
                (Some(a), Some(t)) => a.writes(&t),
                _ => false,
            },
            Access::Claim => matches!(caller, Caller::Gateway(_)),
            Access::ApprovalReader => kind.is_some() || matches!(caller, Caller::Approver { .. }),
            Access::Decide => matches!(caller, Caller::Approver { .. }),
            Access::VaultFetch => matches!(caller, Caller::Gateway(_)),
        }
    }
}

/// The tenant a `/v1/tenants/{t}/…` path names, percent-decoded.
fn tenant_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/tenants/")?;
    let t = rest.split('/').next().filter(|t| !t.is_empty())?;
    Some(
        percent_encoding::percent_decode_str(t)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The refusal of a caller a route's access does not admit.
fn refusal(
    api: &Api,
    caller: &Caller,
    access: Access,
    method: &Method,
    uri: &http::Uri,
) -> ApiError {
    let path = uri.path();
    if access == Access::VaultFetch {
        return ApiError::forbidden(
            "only gateways fetch credentials from the vault: no person or administrator reads one",
        );
    }
    match caller {
        Caller::Approver { .. } if access == Access::Claim => ApiError::no_route(),
        Caller::Approver { .. } => ApiError::forbidden(
            "an approver's token reaches only /v1/approvals (and asks grants at POST /v1/grants)",
        ),
        Caller::Gateway(_) if access.approvals() => {
            ApiError::forbidden("gateways may only claim approvals, never list or decide them")
        }
        Caller::Gateway(_) | Caller::Viewer { .. } => ApiError::forbidden("admin token required"),
        Caller::Admin(a) => {
            let asked = what(method, uri);
            match (&a.kind, access) {
                (Kind::TenantAdmin(_), a_) if a_.approvals() => api.refuse(
                    a,
                    &asked,
                    "a tenant admin does not decide held calls: an approver's token does",
                ),
                (_, Access::Claim | Access::Decide) => {
                    ApiError::forbidden("only an approver's token may approve or deny")
                }
                (_, Access::TenantRead | Access::TenantWrite) => {
                    let write = access == Access::TenantWrite;
                    api.refuse(
                        a,
                        &asked,
                        &format!(
                            "{} may not {} tenant `{}`'s layer",
                            a.label(),
                            if write { "change" } else { "read" },
                            tenant_of(path).unwrap_or_default().escape_debug()
                        ),
                    )
                }
                (Kind::OrgReviewer, _) => api.refuse(a, &asked, REVIEWER_ONLY),
                (Kind::TenantAdmin(_), _) => api.refuse(a, &asked, TENANT_ADMIN_ONLY),
                // An org admin is admitted everywhere else.
                (Kind::OrgAdmin, _) => ApiError::no_route(),
            }
        }
    }
}

const REVIEWER_ONLY: &str =
    "an org reviewer reads and reviews registry entries; publishing is an org admin's";
const TENANT_ADMIN_ONLY: &str = "a tenant admin reaches their tenant's layer, servers, audit, approvals, upstream health and history only; the org's publish, rollback, kill switch and rollout are an org admin's";

/// Admits a request to its route, or refuses it.
async fn admit(
    State((api, access)): State<(Arc<Api>, Access)>,
    req: Request,
    next: Next,
) -> Response {
    match req.extensions().get::<Caller>() {
        // axum answers HEAD with a GET route; the agent's routes take the
        // methods they name (a HEAD of the bundle would count as a fetch).
        Some(c) if req.method() == Method::HEAD => {
            let c = c.clone();
            no_route(State(api), c, req).await.into_response()
        }
        Some(c) if access.admits(c, req.uri().path()) => next.run(req).await,
        Some(c) => refusal(&api, c, access, req.method(), req.uri()).into_response(),
        None => ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required")
            .into_response(),
    }
}

/// A method and path no route takes, answered by who asks: under
/// `/v1/approvals` as the approvals routes refuse, under a tenant as its
/// routes do (a tenant admin of another tenant is refused before being
/// told the route does not exist), else 404 for the org's admins and the
/// caller's own refusal for everyone else.
async fn no_route(State(api): State<Arc<Api>>, caller: Caller, req: Request) -> ApiError {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let path = uri.path();
    let get = method == Method::GET;
    if path == "/v1/approvals" || path.starts_with("/v1/approvals/") {
        return match &caller {
            Caller::Admin(a) if a.tenant().is_some() && !get => {
                refusal(&api, &caller, Access::Decide, &method, &uri)
            }
            Caller::Admin(_) | Caller::Approver { .. } if get => {
                ApiError::not_found("no such approval")
            }
            Caller::Admin(_) if method == Method::POST => {
                refusal(&api, &caller, Access::Decide, &method, &uri)
            }
            Caller::Gateway(_) => refusal(&api, &caller, Access::ApprovalReader, &method, &uri),
            _ => ApiError::no_route(),
        };
    }
    if let Caller::Admin(a) = &caller {
        if tenant_of(path).is_some() {
            let access = if get {
                Access::TenantRead
            } else {
                Access::TenantWrite
            };
            if !access.admits(&caller, path) {
                return refusal(&api, &caller, access, &method, &uri);
            }
            return ApiError::no_route();
        }
        let governance = ["/v1/tenants", "/v1/registry"]
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")));
        if governance || a.is_org_admin() {
            return ApiError::no_route();
        }
    }
    refusal(&api, &caller, Access::OrgAdmin, &method, &uri)
}

/// Builds the router of the `/v1` routes, each behind its [`Access`].
struct Table {
    api: Arc<Api>,
    router: Router<Arc<Api>>,
}

impl Table {
    fn new(api: &Arc<Api>) -> Table {
        Table {
            api: api.clone(),
            router: Router::new(),
        }
    }

    fn at<H, T>(mut self, method: MethodFilter, path: &str, access: Access, handler: H) -> Table
    where
        H: Handler<T, Arc<Api>>,
        T: 'static,
    {
        let guard = from_fn_with_state((self.api.clone(), access), admit);
        self.router = self
            .router
            .route(path, on(method, handler).route_layer(guard));
        self
    }

    fn into_router(self) -> Router<Arc<Api>> {
        self.router
    }
}

async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({"ok": true}))
}

/// `/metrics`: open, or only with the metrics token (or the admin's).
async fn metrics(State(api): State<Arc<Api>>, req: Request) -> Response {
    if !api
        .tokens
        .reads_metrics(req.headers().get(http::header::AUTHORIZATION))
    {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "/metrics takes the metrics token (--metrics-token)",
        )
        .header(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        )
        .into_response();
    }
    (
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        api.metrics_text(),
    )
        .into_response()
}

// ---------------------------------------------------------------------
// The console
// ---------------------------------------------------------------------

/// The console's pages and actions, each with the method, the path, the
/// [`ConsoleAccess`] it needs and its handler. Every one is behind the
/// console's gates ([`crate::console::gate`]): the host name first (421),
/// only GET and POST, then — past the style sheet and the login form —
/// the session cookie (a GET without one goes to the login page, anything
/// else 401), for a POST another site refused then its CSRF token checked
/// (403, recorded), then the access (403, recorded). Paths with ids take
/// them as the path carries them (not percent-decoded). Any other path
/// under `/console`, or another method, is answered past the same gates
/// by [`gate::nowhere`] ("no such page" for GET, "no such action" for
/// POST, 405 "GET or POST only" otherwise).
// One line a route: a table, as rustfmt would not lay it out.
#[rustfmt::skip]
fn console(api: &Arc<Api>) -> Router<Arc<Api>> {
    use crate::console::{connect_pages as connect, gate, governance_handlers as gov, pages};
    use ConsoleAccess::*;
    gate::ConsoleTable::new(api)
        // Before any session: the style sheet and logging in.
        .open(GET, "/console/static/console.css", gate::style_sheet)
        .open(GET, "/console/login", gate::login_page)
        .open(POST, "/console/login", gate::login)
        .open(GET, "/console/oidc/start", gate::oidc_start)
        .open(GET, "/console/oidc/callback", gate::oidc_callback)
        // Connecting a person's own account (their own sign-in, no role).
        .open(GET, "/console/connect", connect::consent)
        .open(POST, "/console/connect/allow", connect::allow)
        .open(GET, "/console/connect/callback", connect::callback)
        .open(GET, "/console/connections", connect::connections)
        .open(POST, "/console/connections/revoke", connect::revoke)
        .at(POST, "/console/logout", Anyone, gate::logout)
        .at(POST, "/console/cli-token", Anyone, gate::cli_token)
        // The fleet and its bundle: everyone reads (scoped to their
        // tenants); admins pull the kill switch and roll back.
        .at(GET, "/console", Anyone, pages::home)
        .at(GET, "/console/fleet", Anyone, pages::fleet)
        .at(POST, "/console/kill", Admin("pulls the kill switch"), pages::kill)
        .at(GET, "/console/bundles", Anyone, pages::bundles)
        .at(GET, "/console/bundles/diff", Anyone, pages::bundle_diff)
        .at(POST, "/console/bundles/rollback", Admin("rolls back"), pages::rollback)
        // Held calls: everyone reads those of their tenants; approvers
        // decide. A malformed id is "no such approval" before any role.
        .at(GET, "/console/approvals", Anyone, pages::approvals)
        .at(GET, "/console/approvals/{approval}", Anyone, pages::approval)
        .at(POST, "/console/approvals/{approval}/decide", Approver, pages::decide)
        // Audit records and live figures of the user's tenants.
        .at(GET, "/console/audit", Anyone, pages::audit)
        .at(GET, "/console/audit/{record}", Anyone, pages::record)
        .at(GET, "/console/live", Anyone, pages::live)
        // Spend of the user's tenants, and its CSV (`format=csv`).
        .at(GET, "/console/spend", Anyone, pages::spend)
        // Governance: administrators (the handlers scope a tenant admin
        // to their tenant, 404 for a name that is none).
        .at(GET, "/console/tenants", Governor, gov::tenants)
        .at(GET, "/console/tenants/{t}/diff", Governor, gov::layer_diff)
        .at(POST, "/console/tenants/{t}/publish", Governor, gov::tenant_publish)
        .at(POST, "/console/tenants/{t}/rollback", Governor, gov::tenant_rollback)
        .at(POST, "/console/tenants/{t}/canary", Governor, gov::tenant_canary)
        .at(GET, "/console/registry", Governor, gov::registry)
        .at(GET, "/console/registry/{s}", Governor, gov::server)
        .at(POST, "/console/registry/{s}/move", Governor, gov::server_move)
        .at(POST, "/console/registry/{s}/share", Governor, gov::server_share)
        .at(POST, "/console/registry/{s}/approve-share", Governor, gov::server_approve_share)
        .into_router()
}
