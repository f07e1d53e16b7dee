//! The fleet: gateways' reports (`POST /v1/fleet/report`), the fleet view
//! (`GET /v1/fleet`) and the published revisions (`GET /v1/history`). A
//! tenant admin sees the upstream health of their tenant's servers and
//! their layer's history only.

use super::{blocking, Agent};
use crate::caller::Caller;
use crate::server::error::{ok, ApiError, ApiResult};
use crate::server::extract::JsonBody;
use crate::store::Report;

pub async fn report(agent: Agent, caller: Caller, JsonBody(r): JsonBody<Report>) -> ApiResult {
    agent
        .tokens
        .speaks_for(&caller, &r.id)
        .map_err(ApiError::forbidden)?;
    let store = agent.store.clone();
    blocking(move || store.accept_report(r)).await??;
    ok(&serde_json::json!({"ok": true}))
}

pub async fn show(agent: Agent, caller: Caller) -> ApiResult {
    match caller.actor().and_then(|a| a.tenant()) {
        Some(t) => {
            let mine = agent.store.servers_of(t);
            let store = agent.store.clone();
            let upstreams = blocking(move || store.upstream_health_view(&mine)).await?;
            ok(&serde_json::json!({"tenant": t, "upstreams": upstreams}))
        }
        None => {
            let store = agent.store.clone();
            ok(&blocking(move || store.fleet_view()).await?)
        }
    }
}

pub async fn history(agent: Agent, caller: Caller) -> ApiResult {
    match caller.actor().and_then(|a| a.tenant()) {
        Some(t) => ok(&agent.store.layer_history_view(t)),
        None => ok(&agent.store.history()),
    }
}
