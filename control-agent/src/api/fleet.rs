//! The fleet: gateways' reports (`POST /v1/fleet/report`), the fleet view
//! (`GET /v1/fleet`) and the published revisions (`GET /v1/history`). A
//! tenant admin sees the upstream health of their tenant's servers and
//! their layer's history only.

use super::Agent;
use crate::caller::Caller;
use crate::server::error::{ok, ApiError, ApiResult};
use crate::server::extract::JsonBody;
use crate::store::Report;

pub async fn report(agent: Agent, caller: Caller, JsonBody(r): JsonBody<Report>) -> ApiResult {
    agent
        .tokens
        .speaks_for(&caller, &r.id)
        .map_err(ApiError::forbidden)?;
    agent.store.accept_report(r)?;
    ok(&serde_json::json!({"ok": true}))
}

pub async fn show(agent: Agent, caller: Caller) -> ApiResult {
    match caller.actor().and_then(|a| a.tenant()) {
        Some(t) => {
            let mine = agent.store.servers_of(t);
            ok(
                &serde_json::json!({"tenant": t, "upstreams": agent.store.upstream_health_view(&mine)}),
            )
        }
        None => ok(&agent.store.fleet_view()),
    }
}

pub async fn history(agent: Agent, caller: Caller) -> ApiResult {
    match caller.actor().and_then(|a| a.tenant()) {
        Some(t) => ok(&agent.store.layer_history_view(t)),
        None => ok(&agent.store.history()),
    }
}
