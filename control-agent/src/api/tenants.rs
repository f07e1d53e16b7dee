//! Tenant layers (docs/governance.md):
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/tenants` | each tenant's current layer and last error (a tenant admin: theirs) |
//! | `POST /v1/tenants/{t}/layer` | body: the layer as tar.gz (`tenant.yaml`, `*.rego`); `?canary=10%&watch=300&select=k=v` for a canary; 422 with the problems when it does not compose |
//! | `GET /v1/tenants/{t}/history` | the layer's revisions, current one, last error, canary |
//! | `GET /v1/tenants/{t}/diff?from=A&to=B` | per-file unified diff of two layer revisions |
//! | `POST /v1/tenants/{t}/rollback` | `{revision}`: that layer revision again, for everyone |
//! | `POST /v1/tenants/{t}/canary/promote`, `/rollback` | end t's layer canary; `{revision}`: the layer revision judged (required to promote): 409 `revision_changed` when t's canary is another |
//!
//! Who reads and who changes a tenant is the route table's
//! (`TenantRead`, `TenantWrite`).

use axum::body::Body;
use axum::extract::Path;

use super::Agent;
use crate::admins::same_tenant;
use crate::caller::Caller;
use crate::server::error::{ok, ApiError, ApiResult};
use crate::server::extract::{body_bytes, JsonBody, JsonOrEmpty, QueryPairs, MAX_JSON};
use crate::store::CanaryPlan;

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

pub async fn list(agent: Agent, caller: Caller) -> ApiResult {
    let mut all = agent.store.layers_summary_view();
    if let Some(t) = caller.actor().and_then(|a| a.tenant()) {
        all.retain(|e| same_tenant(&e.tenant, t));
    }
    ok(&serde_json::json!({"tenants": all}))
}

pub async fn history(agent: Agent, Path(t): Path<String>) -> ApiResult {
    ok(&agent.store.layer_history_view(&t))
}

pub async fn diff(agent: Agent, Path(t): Path<String>, q: QueryPairs) -> ApiResult {
    let (Some(a), Some(b)) = (q.get("from"), q.get("to")) else {
        return Err(ApiError::bad_request("diff needs from= and to= revisions"));
    };
    ok(&agent.store.layer_diff_view(&t, a, b)?)
}

/// `?canary=10%&watch=300&select=k=v`: the layer as a canary.
fn canary_of(q: &QueryPairs) -> Result<Option<(crate::rollout::Selector, CanaryPlan)>, ApiError> {
    let Some(share) = q.get("canary") else {
        return Ok(None);
    };
    let share = crate::rollout::share_of(share)?;
    let watch_secs = match q.get("watch").map(|w| w.parse::<u64>()) {
        None => 300,
        Some(Ok(w)) => w,
        Some(Err(_)) => return Err(ApiError::bad_request("watch= is seconds")),
    };
    let labels = crate::rollout::Selector(crate::rollout::labels_of(
        q.get("select").unwrap_or_default(),
    )?);
    labels.validate()?;
    Ok(Some((
        labels,
        CanaryPlan {
            share,
            watch_secs,
            guard: Default::default(),
        },
    )))
}

pub async fn publish(
    agent: Agent,
    caller: Caller,
    Path(tenant): Path<String>,
    q: QueryPairs,
    body: Body,
) -> ApiResult {
    let canary = canary_of(&q)?;
    let bytes = body_bytes(body, MAX_LAYER_BODY).await?;
    let files = unpack_layer(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body must be the layer as tar.gz: {e}")))?;
    let (store, label) = (agent.store.clone(), caller.label());
    let e =
        tokio::task::spawn_blocking(move || store.publish_layer(&label, &tenant, files, canary))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::problems(&e))?;
    ok(&serde_json::json!({"published": e}))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    revision: String,
}

pub async fn rollback(
    agent: Agent,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(b): JsonBody<RollbackBody>,
) -> ApiResult {
    let (store, label) = (agent.store.clone(), caller.label());
    let e = tokio::task::spawn_blocking(move || store.rollback_layer(&label, &tenant, &b.revision))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::problems(&e))?;
    ok(&serde_json::json!({"published": e}))
}

/// Whose canary it is is checked under the lock that ends it: a check
/// here, then `promote()`, let an org (or another tenant's) canary started
/// in between be ended by this tenant's admin. Promoting names the layer
/// revision judged (the history's `canary.revision`), checked under that
/// lock too: a canary rolled back and another of the tenant's started
/// since is not promoted in its place.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Judged {
    #[serde(default)]
    revision: Option<String>,
}

pub async fn promote(
    agent: Agent,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonOrEmpty(b): JsonOrEmpty<Judged, MAX_JSON>,
) -> ApiResult {
    end_canary(agent, caller, tenant, true, b).await
}

pub async fn roll_back_canary(
    agent: Agent,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonOrEmpty(b): JsonOrEmpty<Judged, MAX_JSON>,
) -> ApiResult {
    end_canary(agent, caller, tenant, false, b).await
}

async fn end_canary(
    agent: Agent,
    caller: Caller,
    tenant: String,
    promote: bool,
    b: Judged,
) -> ApiResult {
    let (store, label) = (agent.store.clone(), caller.label());
    tokio::task::spawn_blocking(move || {
        store.end_layer_canary(&label, &tenant, promote, b.revision.as_deref())
    })
    .await
    .map_err(ApiError::internal)??;
    ok(&agent.store.rollout_view())
}
