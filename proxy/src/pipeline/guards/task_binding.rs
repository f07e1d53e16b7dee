//! The fleet-wide half of the task binding guard
//! (`warden_filters::guards::task_binding`, which judges in this replica):
//! the tasks a request names checked with the shared store before the
//! chain runs.

use warden_filters::{Parsed, Refusal};

use crate::hub::runtime::Runtime;
use crate::hub::state::Gateway;
use crate::pipeline::ctx::RequestCtx;

/// The fleet's word on the tasks a request names, before anything of it
/// reaches the server: with a shared store, each task request
/// (`tasks/get`, `tasks/update`, `tasks/cancel`, `tasks/result`, and any
/// other carrying `params.taskId`) whose handle opens for this caller
/// renews its holder's claim there. A claim
/// another holder took, or a burnt id (see `ClaimKind::Burn`), burns the
/// task in this replica's memory, and the task filter then answers the
/// request as one about an unknown task — a `tasks/cancel` through a
/// replica that never saw the task included. A store that does not
/// answer refuses the request (503, `task_unrecorded`): the gateway cannot
/// tell whose task it is.
pub(crate) async fn fleet_tasks(
    gw: &Gateway,
    rt: &Runtime,
    server: &warden_config::model::Server,
    ctx: &RequestCtx,
    parsed: &Parsed,
) -> Result<(), Refusal> {
    use warden_filters::chain::notes::ClaimKind;
    use warden_filters::guards::task_binding::{holder, TaskSealer};
    if rt.snap.config.redis.is_none() {
        return Ok(());
    }
    // `params.taskId` on any request: the task filter opens it on every
    // method (a server may read it on `tasks/list` or a vendor's method).
    let named = |env: &&warden_filters::Envelope| {
        env.kind == warden_filters::Kind::Request && env.task_id.is_some()
    };
    let envs: Vec<&warden_filters::Envelope> = match parsed {
        Parsed::Single(env) => vec![env],
        Parsed::Batch(items) => items.iter().filter_map(|i| i.as_ref().ok()).collect(),
    }
    .into_iter()
    .filter(named)
    .collect();
    if envs.is_empty() {
        return Ok(());
    }
    let unrecorded = |why: &str| {
        tracing::warn!(error = %why, "task request not checked with the fleet; refused");
        Refusal::new(
            503,
            "task_unrecorded",
            warden_filters::JsonRpcError::new(
                warden_filters::codes::INTERNAL_ERROR,
                "The gateway could not check this task with its fleet; try again",
            ),
        )
    };
    let Some(store) = rt.quota_store.clone() else {
        return Err(unrecorded("no shared store"));
    };
    let me = holder(&ctx.exchange(server, false, None)).into_owned();
    for env in envs {
        let Some(opened) = env
            .task_id
            .as_deref()
            .and_then(|t| rt.snap.task_sealer.open(t, &me, &server.name))
        else {
            // Not this caller's handle: the task filter answers it.
            continue;
        };
        let claim = TaskSealer::claim(&opened.task, &me, &server.name, ClaimKind::Renew);
        match store
            .task_claim(&claim.task, &claim.holder, claim.kind)
            .await
        {
            Ok(true) => {}
            Ok(false) => gw.shared.task_owners.burn(&claim),
            Err(e) => return Err(unrecorded(&e)),
        }
    }
    Ok(())
}
