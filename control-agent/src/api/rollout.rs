//! What the fleet is served: publishing the source (to all, to labels, as
//! a canary), the canary's state and its end, rolling back to a revision,
//! and the kill switch. Org admins only (reviewers read the rollout).

use std::sync::Arc;

use super::Agent;
use crate::caller::Caller;
use crate::server::error::{ok, ApiError, ApiResult};
use crate::server::extract::{JsonBody, JsonOrEmpty};
use crate::store::Published;

/// `{}` publishes the source to all; `select` narrows it to the gateways
/// carrying those labels; `canary` publishes it to a share of them,
/// watched against the rest.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    #[serde(default)]
    select: crate::rollout::Selector,
    #[serde(default)]
    canary: Option<crate::store::CanaryPlan>,
}

pub async fn publish(
    agent: Agent,
    caller: Caller,
    JsonOrEmpty(b): JsonOrEmpty<PublishBody>,
) -> ApiResult {
    b.select.validate()?;
    let store = agent.store.clone();
    let actor = caller.label();
    let p = tokio::task::spawn_blocking(move || match b.canary {
        Some(plan) => store.publish_canary(&actor, b.select, plan).map(Some),
        None => store.publish_source_to(&actor, true, b.select),
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::problem_lines("bundle refused", &e))?;
    ok(&serde_json::json!({
        "published": p.as_ref().map(|p| p.revision.clone()),
        "target": p.as_ref().map(|p| p.target.clone()),
        // Tenant layers this revision leaves out.
        "warnings": p.as_ref().map(|p| agent.store.warnings_of(p.seq)).unwrap_or_default(),
    }))
}

pub async fn show(agent: Agent) -> ApiResult {
    ok(&agent.store.rollout_view())
}

/// `revision`: the canary revision the operator judged (`GET
/// /v1/rollout`); required to promote.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Judged {
    #[serde(default)]
    revision: Option<String>,
}

pub async fn promote(
    agent: Agent,
    caller: Caller,
    JsonOrEmpty(b): JsonOrEmpty<Judged>,
) -> ApiResult {
    agent
        .store
        .promote(&caller.label(), b.revision.as_deref())?;
    ok(&agent.store.rollout_view())
}

pub async fn roll_back_canary(
    agent: Agent,
    caller: Caller,
    JsonOrEmpty(b): JsonOrEmpty<Judged>,
) -> ApiResult {
    agent
        .store
        .roll_back_canary(&caller.label(), b.revision.as_deref())?;
    ok(&agent.store.rollout_view())
}

#[derive(serde::Deserialize)]
pub struct RollbackBody {
    revision: String,
}

pub async fn rollback(
    agent: Agent,
    caller: Caller,
    JsonBody(b): JsonBody<RollbackBody>,
) -> ApiResult {
    let store = agent.store.clone();
    let actor = caller.label();
    published(&agent, move || store.rollback(&actor, &b.revision)).await
}

#[derive(serde::Deserialize)]
pub struct KillBody {
    scope: String,
    #[serde(default)]
    value: String,
}

pub async fn kill(agent: Agent, caller: Caller, JsonBody(b): JsonBody<KillBody>) -> ApiResult {
    switch(agent, caller, b, true).await
}

pub async fn revive(agent: Agent, caller: Caller, JsonBody(b): JsonBody<KillBody>) -> ApiResult {
    switch(agent, caller, b, false).await
}

async fn switch(agent: Agent, caller: Caller, b: KillBody, on: bool) -> ApiResult {
    let store = agent.store.clone();
    let actor = caller.label();
    published(&agent, move || store.kill(&actor, &b.scope, &b.value, on)).await
}

/// Runs a change of what is served off the async workers: the revision
/// it published and the tenant layers it leaves out, or 422 with why.
async fn published(
    agent: &Agent,
    f: impl FnOnce() -> Result<Arc<Published>, crate::build::BuildFailure> + Send + 'static,
) -> ApiResult {
    let p = tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::problem_lines("refused", &e))?;
    ok(&serde_json::json!({"published": p.revision, "warnings": agent.store.warnings_of(p.seq)}))
}
