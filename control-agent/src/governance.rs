//! The governance routes of the agent's API (the routing is in `server`),
//! and what each administrator's role reaches (docs/governance.md):
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /v1/tenants` | admins | each tenant's current layer and last error (a tenant admin: theirs) |
//! | `POST /v1/tenants/{t}/layer` | org admin, t's admins | body: the layer as tar.gz (`tenant.yaml`, `*.rego`); `?canary=10%&watch=300&select=k=v` for a canary; 422 with the problems when it does not compose |
//! | `GET /v1/tenants/{t}/history` | org roles, t's admins | the layer's revisions, current one, last error, canary |
//! | `GET /v1/tenants/{t}/diff?from=A&to=B` | org roles, t's admins | per-file unified diff of two layer revisions |
//! | `POST /v1/tenants/{t}/rollback` | org admin, t's admins | `{revision}`: that layer revision again, for everyone |
//! | `POST /v1/tenants/{t}/canary/promote`, `/rollback` | org admin, t's admins | end t's layer canary; `{revision}`: the layer revision judged (required to promote): 409 `revision_changed` when t's canary is another |
//! | `GET /v1/registry`, `/v1/registry/{s}` | admins (a tenant admin: their servers) | state, events, tools and fingerprints |
//! | `POST /v1/registry` | org admin, the tenant's admins | `{server, tenant?, definition: {tools: […]}}` |
//! | `POST /v1/registry/{s}/move` | see the registry's rules | `{state, reviewed?, note?}`; `reviewed` (the `definition_digest` read) is required for `approved`, checked when given for `testing` and `deployed`: 409 `definition_changed` when the definition changed since |
//! | `POST /v1/registry/{s}/share` | tenant admin asks | offer a tenant's server to every tenant |
//! | `POST /v1/registry/{s}/approve-share` | org reviewer/admin approves | `{reviewed}` (required): 409 `definition_changed` when the definition changed since; registering another definition withdraws the share |
//!
//! Registry refusals answer `{error, code}`: 403 `forbidden`, 409
//! `conflict`, 409 `definition_changed`, 400 `invalid`, 404 `not_found`.
//!
//! A tenant admin's `/v1/audit…` is confined to their tenant (a `tenant=`
//! naming another is refused), `/v1/approvals` lists their tenant's held
//! calls (deciding stays an approver's), `/v1/fleet` shows the upstream
//! health of their servers only and `/v1/history` their layer's. Org
//! reviewers read everything and review. Every refusal is answered 403 and
//! written to the change record as `refused`.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::admins::{same_tenant, Actor, Kind};
use crate::registry::{Refusal, State};
use crate::server::Api;
use crate::store::RegistryError;

type Resp = Response<Full<Bytes>>;

/// A registry change to run in the store.
type RegistryOp = Box<
    dyn FnOnce(
            &mut crate::registry::Registry,
            crate::registry::Defined<'_>,
        ) -> Result<crate::registry::Done, Refusal>
        + Send,
>;

/// Bytes of a layer's tar.gz at most.
const MAX_LAYER_BODY: usize = 8 << 20;
/// Bytes a layer's gzip stream may unpack to: the layer's files, and the
/// tar's headers and padding around them.
const MAX_LAYER_TAR: u64 = crate::store::layers::MAX_LAYER_BYTES as u64 + (8 << 20);

/// A layer's tar.gz unpacked, its gzip stream bounded first: the archive
/// reader reads the stream to its end after the tar's end, into memory,
/// so 8 MiB of gzip (zeros after a small tar) took gigabytes of the
/// agent's memory before any bound on the files applied.
pub(crate) fn unpack_layer(bytes: &[u8]) -> Result<warden_config::archive::Files, String> {
    use std::io::Read;
    let mut gz = flate2::read::GzDecoder::new(bytes).take(MAX_LAYER_TAR + 1);
    let n = std::io::copy(&mut gz, &mut std::io::sink()).map_err(|e| e.to_string())?;
    if n > MAX_LAYER_TAR {
        return Err(format!("it unpacks to more than {MAX_LAYER_TAR} bytes"));
    }
    warden_config::archive::unpack(bytes).map_err(|e| e.to_string())
}

fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: &str) -> Resp {
    json(status, &serde_json::json!({"error": msg}))
}

fn problems(e: &crate::build::BuildFailure) -> Resp {
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &serde_json::json!({
            "error": "refused",
            "problems": e.0.iter().map(|p| serde_json::json!({"file": p.file, "path": p.path, "message": p.message})).collect::<Vec<_>>(),
        }),
    )
}

async fn body(req: Request<Incoming>, max: usize) -> Result<Bytes, String> {
    http_body_util::Limited::new(req.into_body(), max)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("body: {e}"))
}

async fn body_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, String> {
    let b = body(req, 1 << 20).await?;
    serde_json::from_slice(&b).map_err(|e| format!("JSON body: {e}"))
}

/// As [`body_json`], an empty body being `T::default()`.
async fn body_json_or_empty<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, String> {
    let b = body(req, 1 << 20).await?;
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&b).map_err(|e| format!("JSON body: {e}"))
}

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn registry_error(e: RegistryError) -> Resp {
    match e {
        RegistryError::Refused(r) => {
            let status = match &r {
                Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
                Refusal::Conflict(_) | Refusal::Changed(_) => StatusCode::CONFLICT,
                Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
                Refusal::NotFound(_) => StatusCode::NOT_FOUND,
            };
            json(
                status,
                &serde_json::json!({"error": r.to_string(), "code": r.code()}),
            )
        }
        RegistryError::Build(b) => problems(&b),
    }
}

impl Api {
    /// Refuses `actor`'s request (403) and writes it to the change record.
    pub(crate) fn refuse(&self, actor: &Actor, what: &str, why: &str) -> Resp {
        self.store.record(
            &actor.label(),
            "refused",
            None,
            false,
            &format!("{what}: {why}"),
        );
        error(StatusCode::FORBIDDEN, why)
    }

    fn what(req: &Request<Incoming>) -> String {
        format!(
            "{} {}",
            req.method(),
            req.uri()
                .path_and_query()
                .map_or(req.uri().path(), |p| p.as_str())
        )
    }

    /// An administrator's request: answered here (the governance routes,
    /// and everything a tenant admin or org reviewer asks), or handed back
    /// for the org routes an org admin (or reviewer, reading) may take.
    pub(crate) async fn governance(
        &self,
        actor: &Actor,
        req: Request<Incoming>,
        path: &str,
    ) -> Result<Resp, Request<Incoming>> {
        if path == "/v1/tenants" || path.starts_with("/v1/tenants/") {
            return Ok(self.tenant_routes(actor, req, path).await);
        }
        if path == "/v1/registry" || path.starts_with("/v1/registry/") {
            return Ok(self.registry_routes(actor, req, path).await);
        }
        let reads = matches!(
            path,
            "/v1/audit" | "/v1/audit/verify" | "/v1/audit/live" | "/v1/fleet" | "/v1/history"
        );
        match &actor.kind {
            Kind::OrgAdmin => Err(req),
            Kind::OrgReviewer if req.method() == Method::GET && (reads || path == "/v1/rollout") => {
                Err(req)
            }
            Kind::OrgReviewer => Ok(self.refuse(
                actor,
                &Self::what(&req),
                "an org reviewer reads and reviews registry entries; publishing is an org admin's",
            )),
            Kind::TenantAdmin(t) if req.method() == Method::GET && reads => {
                Ok(self.tenant_read(actor, t, req, path).await)
            }
            Kind::TenantAdmin(_) => Ok(self.refuse(
                actor,
                &Self::what(&req),
                "a tenant admin reaches their tenant's layer, servers, audit, approvals, upstream health and history only; the org's publish, rollback, kill switch and rollout are an org admin's",
            )),
        }
    }

    /// A tenant admin's audit, fleet and history: their tenant's only.
    async fn tenant_read(
        &self,
        actor: &Actor,
        t: &str,
        req: Request<Incoming>,
        path: &str,
    ) -> Resp {
        match path {
            "/v1/fleet" => {
                let mine = self.store.servers_of(t);
                json(
                    StatusCode::OK,
                    &serde_json::json!({"tenant": t, "upstreams": self.store.upstream_health(&mine)}),
                )
            }
            "/v1/history" => json(StatusCode::OK, &self.store.layer_history(t)),
            _ => {
                // Every `tenant=` must be theirs (the scope below holds
                // anyway; asking for another tenant is refused and recorded).
                if let Some((_, other)) = query(&req)
                    .into_iter()
                    .find(|(k, v)| k == "tenant" && !v.is_empty() && !same_tenant(v, t))
                {
                    return self.refuse(
                        actor,
                        &Self::what(&req),
                        &format!(
                            "tenant `{}` is not {}'s",
                            other.escape_debug(),
                            actor.label()
                        ),
                    );
                }
                self.audit_read(path, &req, &[t.to_owned()]).await
            }
        }
    }

    /// A tenant admin's `/v1/approvals…`: their tenant's held calls, read
    /// only (deciding takes an approver's token).
    pub(crate) fn tenant_approvals(
        &self,
        actor: &Actor,
        t: &str,
        req: Request<Incoming>,
        path: &str,
    ) -> Resp {
        let now = std::time::SystemTime::now();
        let rest = path
            .trim_start_matches("/v1/approvals")
            .trim_start_matches('/');
        if req.method() != Method::GET {
            return self.refuse(
                actor,
                &Self::what(&req),
                "a tenant admin does not decide held calls: an approver's token does",
            );
        }
        if rest.is_empty() {
            let all = query(&req)
                .iter()
                .any(|(k, v)| k == "all" && (v == "1" || v == "true"));
            return json(
                StatusCode::OK,
                &serde_json::json!({"approvals": self.approvals.list_in(all, &[t.to_owned()], now)}),
            );
        }
        match self.approvals.tenant_of(rest) {
            None => error(StatusCode::NOT_FOUND, "no such approval"),
            Some(other) if !same_tenant(&other, t) => self.refuse(
                actor,
                &Self::what(&req),
                &format!("approval `{rest}` is not of {}'s tenant", actor.label()),
            ),
            Some(_) => match self.approvals.get(rest, None, now) {
                Some(v) => json(StatusCode::OK, &v),
                None => error(StatusCode::NOT_FOUND, "no such approval"),
            },
        }
    }

    async fn tenant_routes(&self, actor: &Actor, req: Request<Incoming>, path: &str) -> Resp {
        let rest = path
            .trim_start_matches("/v1/tenants")
            .trim_start_matches('/');
        let method = req.method().clone();
        if rest.is_empty() {
            if method != Method::GET {
                return error(StatusCode::NOT_FOUND, "no such route");
            }
            let mut all = self.store.layers_summary();
            if let (Some(t), Some(list)) = (actor.tenant(), all.as_array_mut()) {
                list.retain(|e| e["tenant"].as_str().is_some_and(|x| same_tenant(x, t)));
            }
            return json(StatusCode::OK, &serde_json::json!({"tenants": all}));
        }
        let (tenant, op) = rest.split_once('/').unwrap_or((rest, ""));
        let tenant = tenant.to_owned();
        let write = method != Method::GET;
        let allowed = if write {
            actor.writes(&tenant)
        } else {
            actor.reads(&tenant)
        };
        if !allowed {
            return self.refuse(
                actor,
                &Self::what(&req),
                &format!(
                    "{} may not {} tenant `{}`'s layer",
                    actor.label(),
                    if write { "change" } else { "read" },
                    tenant.escape_debug()
                ),
            );
        }
        let label = actor.label();
        let store = self.store.clone();
        match (method, op) {
            (Method::GET, "history") => json(StatusCode::OK, &store.layer_history(&tenant)),
            (Method::GET, "diff") => {
                let q = query(&req);
                let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                let (Some(a), Some(b)) = (get("from"), get("to")) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "diff needs from= and to= revisions",
                    );
                };
                match store.layer_diff(&tenant, &a, &b) {
                    Ok(v) => json(StatusCode::OK, &v),
                    Err(e) => error(StatusCode::NOT_FOUND, &e),
                }
            }
            (Method::POST, "layer") => {
                let q = query(&req);
                let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                let canary = match get("canary") {
                    None => None,
                    Some(share) => {
                        let share = match crate::rollout::parse_share(&share) {
                            Ok(s) => s,
                            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                        };
                        let watch_secs = match get("watch").map(|w| w.parse::<u64>()) {
                            None => 300,
                            Some(Ok(w)) => w,
                            Some(Err(_)) => {
                                return error(StatusCode::BAD_REQUEST, "watch= is seconds")
                            }
                        };
                        let labels = match crate::rollout::parse_labels(
                            &get("select").unwrap_or_default(),
                        ) {
                            Ok(l) => crate::rollout::Selector(l),
                            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                        };
                        if let Err(e) = labels.check() {
                            return error(StatusCode::BAD_REQUEST, &e);
                        }
                        Some((
                            labels,
                            crate::store::CanaryPlan {
                                share,
                                watch_secs,
                                guard: Default::default(),
                            },
                        ))
                    }
                };
                let bytes = match body(req, MAX_LAYER_BODY).await {
                    Ok(b) => b,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                };
                let files = match unpack_layer(&bytes) {
                    Ok(f) => f,
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            &format!("the body must be the layer as tar.gz: {e}"),
                        )
                    }
                };
                let res = tokio::task::spawn_blocking(move || {
                    store.publish_layer(&label, &tenant, files, canary)
                })
                .await;
                match res {
                    Ok(Ok(e)) => json(StatusCode::OK, &serde_json::json!({"published": e})),
                    Ok(Err(e)) => problems(&e),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                }
            }
            (Method::POST, "rollback") => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    revision: String,
                }
                let b: Body = match body_json(req).await {
                    Ok(b) => b,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                };
                let res = tokio::task::spawn_blocking(move || {
                    store.rollback_layer(&label, &tenant, &b.revision)
                })
                .await;
                match res {
                    Ok(Ok(e)) => json(StatusCode::OK, &serde_json::json!({"published": e})),
                    Ok(Err(e)) => problems(&e),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                }
            }
            (Method::POST, op @ ("canary/promote" | "canary/rollback")) => {
                // Whose canary it is is checked under the lock that ends
                // it: a check here, then `promote()`, let an org (or
                // another tenant's) canary started in between be ended by
                // this tenant's admin.
                // Promoting names the layer revision judged (the
                // history's `canary.revision`), checked under that lock
                // too: a canary rolled back and another of the tenant's
                // started since is not promoted in its place.
                #[derive(Default, serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    #[serde(default)]
                    revision: Option<String>,
                }
                let b: Body = match body_json_or_empty(req).await {
                    Ok(b) => b,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                };
                let promote = op == "canary/promote";
                let res = tokio::task::spawn_blocking(move || {
                    store.end_layer_canary(&label, &tenant, promote, b.revision.as_deref())
                })
                .await;
                match res {
                    Ok(Ok(_)) => json(StatusCode::OK, &self.store.rollout()),
                    Ok(Err(e)) => crate::server::canary_refused(&e),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "no such route"),
        }
    }

    async fn registry_routes(&self, actor: &Actor, req: Request<Incoming>, path: &str) -> Resp {
        let rest = path
            .trim_start_matches("/v1/registry")
            .trim_start_matches('/');
        let method = req.method().clone();
        let store = self.store.clone();
        let now = std::time::SystemTime::now();
        let (server, op) = rest.split_once('/').unwrap_or((rest, ""));
        let (server, op) = (server.to_owned(), op.to_owned());
        let what = Self::what(&req);
        let a = actor.clone();
        let asked = what.clone();
        let change = |action: &'static str, f: RegistryOp| {
            let store = store.clone();
            let a = a.clone();
            async move {
                let what = asked.clone();
                match tokio::task::spawn_blocking(move || {
                    store.registry_change_at(&a, action, &what, f)
                })
                .await
                {
                    Ok(Ok(v)) => json(StatusCode::OK, &v),
                    Ok(Err(e)) => registry_error(e),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                }
            }
        };
        match (method, server.as_str(), op.as_str()) {
            (Method::GET, "", "") => {
                if let Some((_, t)) = query(&req)
                    .into_iter()
                    .find(|(k, v)| k == "tenant" && !v.is_empty() && !actor.reads(v))
                {
                    return self.refuse(
                        actor,
                        &what,
                        &format!("tenant `{}` is not {}'s", t.escape_debug(), actor.label()),
                    );
                }
                let mut list = store.registry_list(actor);
                if let (Some((_, t)), Some(l)) = (
                    query(&req)
                        .into_iter()
                        .find(|(k, v)| k == "tenant" && !v.is_empty()),
                    list.as_array_mut(),
                ) {
                    l.retain(|s| s["tenant"].as_str().is_some_and(|x| same_tenant(x, &t)));
                }
                json(StatusCode::OK, &serde_json::json!({"servers": list}))
            }
            (Method::POST, "", "") => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    server: String,
                    #[serde(default)]
                    tenant: Option<String>,
                    definition: serde_json::Value,
                }
                let b: Body = match body_json(req).await {
                    Ok(b) => b,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                };
                let who = actor.clone();
                change(
                    "registry.register",
                    Box::new(move |r, taken| {
                        r.register(
                            &who,
                            &b.server,
                            b.tenant.as_deref(),
                            &b.definition,
                            taken,
                            now,
                        )
                    }),
                )
                .await
            }
            (Method::GET, s, "") => match store.registry_show(actor, s) {
                Ok(v) => json(StatusCode::OK, &v),
                Err(Refusal::Forbidden(m)) => self.refuse(actor, &what, &m),
                Err(e) => error(StatusCode::NOT_FOUND, &e.to_string()),
            },
            (Method::POST, _, "move") => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    state: String,
                    /// The definition_digest the reviewer read: required
                    /// to move to `approved`.
                    #[serde(default)]
                    reviewed: Option<String>,
                    #[serde(default)]
                    note: String,
                }
                let b: Body = match body_json(req).await {
                    Ok(b) => b,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                };
                let Some(to) = State::parse(&b.state) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "state: draft, testing, approved, deployed, deprecated or retired",
                    );
                };
                let who = actor.clone();
                change(
                    "registry.move",
                    Box::new(move |r, _| {
                        r.transition(&who, &server, to, b.reviewed.as_deref(), &b.note, now)
                    }),
                )
                .await
            }
            (Method::POST, _, "share") => {
                let who = actor.clone();
                change(
                    "registry.share",
                    Box::new(move |r, _| r.request_share(&who, &server, now)),
                )
                .await
            }
            (Method::POST, _, "approve-share") => {
                /// `reviewed`: the definition_digest the org reviewer
                /// read; required (400 without), 409 when it changed.
                #[derive(Default, serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    #[serde(default)]
                    reviewed: Option<String>,
                }
                let b: Body = match body_json_or_empty(req).await {
                    Ok(b) => b,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                };
                let who = actor.clone();
                change(
                    "registry.approve_share",
                    Box::new(move |r, _| {
                        r.approve_share(&who, &server, b.reviewed.as_deref(), now)
                    }),
                )
                .await
            }
            _ => error(StatusCode::NOT_FOUND, "no such route"),
        }
    }
}

#[cfg(test)]
#[path = "governance_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "governance_attack_tests.rs"]
mod attack_tests;
