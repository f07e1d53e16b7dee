//! The registry of servers (docs/governance.md):
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/registry`, `/v1/registry/{s}` | state, events, tools and fingerprints (a tenant admin: their servers) |
//! | `POST /v1/registry` | `{server, tenant?, definition: {tools: […]}}` |
//! | `POST /v1/registry/{s}/move` | `{state, reviewed?, note?}`; `reviewed` (the `definition_digest` read) is required for `approved`, checked when given for `testing` and `deployed`: 409 `definition_changed` when the definition changed since |
//! | `POST /v1/registry/{s}/share` | a tenant admin offers a tenant's server to every tenant |
//! | `POST /v1/registry/{s}/approve-share` | an org reviewer or admin approves: `{reviewed}` (required): 409 `definition_changed` when the definition changed since; registering another definition withdraws the share |
//!
//! The registry's rules decide who may do what to an entry; refusals
//! answer `{error, code}`: 403 `forbidden`, 409 `conflict`, 409
//! `definition_changed`, 400 `invalid`, 404 `not_found`.

use std::time::SystemTime;

use axum::extract::Path;

use super::Agent;
use crate::admins::{same_tenant, Actor};
use crate::caller::Caller;
use crate::registry::{Defined, Done, Refusal, Registry, State};
use crate::server::error::{ok, ApiError, ApiResult};
use crate::server::extract::{JsonBody, JsonOrEmpty, QueryPairs, What, MAX_JSON};

/// A registry change to run in the store.
type RegistryOp = Box<dyn FnOnce(&mut Registry, Defined<'_>) -> Result<Done, Refusal> + Send>;

/// The administrator asking (the route table admits administrators only).
fn actor(caller: &Caller) -> Result<Actor, ApiError> {
    caller
        .actor()
        .cloned()
        .ok_or_else(|| ApiError::forbidden("admin token required"))
}

/// Runs `op` in the store, recorded as `action` of `what`.
async fn change(
    agent: &Agent,
    a: Actor,
    action: &'static str,
    what: String,
    op: RegistryOp,
) -> ApiResult {
    let store = agent.store.clone();
    let v = tokio::task::spawn_blocking(move || store.registry_apply(&a, action, &what, op))
        .await
        .map_err(ApiError::internal)??;
    ok(&v)
}

pub async fn list(agent: Agent, caller: Caller, q: QueryPairs, What(what): What) -> ApiResult {
    let a = actor(&caller)?;
    let asked = q.0.iter().find(|(k, v)| k == "tenant" && !v.is_empty());
    if let Some((_, t)) = asked.filter(|(_, v)| !a.reads(v)) {
        return Err(agent.refuse(
            &a,
            &what,
            &format!("tenant `{}` is not {}'s", t.escape_debug(), a.label()),
        ));
    }
    let mut list = agent.store.registry_list_view(&a);
    if let Some((_, t)) = asked {
        list.retain(|s| s.tenant.as_deref().is_some_and(|x| same_tenant(x, t)));
    }
    ok(&serde_json::json!({"servers": list}))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    server: String,
    #[serde(default)]
    tenant: Option<String>,
    definition: serde_json::Value,
}

pub async fn register(
    agent: Agent,
    caller: Caller,
    What(what): What,
    JsonBody(b): JsonBody<Registration>,
) -> ApiResult {
    let a = actor(&caller)?;
    let (who, now) = (a.clone(), SystemTime::now());
    let op: RegistryOp = Box::new(move |r, taken| {
        r.register(
            &who,
            &b.server,
            b.tenant.as_deref(),
            &b.definition,
            taken,
            now,
        )
    });
    change(&agent, a, "registry.register", what, op).await
}

pub async fn show(
    agent: Agent,
    caller: Caller,
    What(what): What,
    Path(s): Path<String>,
) -> ApiResult {
    let a = actor(&caller)?;
    match agent.store.registry_show_view(&a, &s) {
        Ok(v) => ok(&v),
        Err(Refusal::Forbidden(m)) => Err(agent.refuse(&a, &what, &m)),
        Err(e) => Err(ApiError::not_found(e.to_string())),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Move {
    state: String,
    /// The definition_digest the reviewer read: required to move to
    /// `approved`.
    #[serde(default)]
    reviewed: Option<String>,
    #[serde(default)]
    note: String,
}

pub async fn transition(
    agent: Agent,
    caller: Caller,
    What(what): What,
    Path(server): Path<String>,
    JsonBody(b): JsonBody<Move>,
) -> ApiResult {
    let a = actor(&caller)?;
    let Some(to) = State::parse(&b.state) else {
        return Err(ApiError::bad_request(
            "state: draft, testing, approved, deployed, deprecated or retired",
        ));
    };
    let (who, now) = (a.clone(), SystemTime::now());
    let op: RegistryOp =
        Box::new(move |r, _| r.transition(&who, &server, to, b.reviewed.as_deref(), &b.note, now));
    change(&agent, a, "registry.move", what, op).await
}

pub async fn share(
    agent: Agent,
    caller: Caller,
    What(what): What,
    Path(server): Path<String>,
) -> ApiResult {
    let a = actor(&caller)?;
    let (who, now) = (a.clone(), SystemTime::now());
    let op: RegistryOp = Box::new(move |r, _| r.request_share(&who, &server, now));
    change(&agent, a, "registry.share", what, op).await
}

/// `reviewed`: the definition_digest the org reviewer read; required (400
/// without), 409 when it changed.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareReview {
    #[serde(default)]
    reviewed: Option<String>,
}

pub async fn approve_share(
    agent: Agent,
    caller: Caller,
    What(what): What,
    Path(server): Path<String>,
    JsonOrEmpty(b): JsonOrEmpty<ShareReview, MAX_JSON>,
) -> ApiResult {
    let a = actor(&caller)?;
    let (who, now) = (a.clone(), SystemTime::now());
    let op: RegistryOp =
        Box::new(move |r, _| r.approve_share(&who, &server, b.reviewed.as_deref(), now));
    change(&agent, a, "registry.approve_share", what, op).await
}
