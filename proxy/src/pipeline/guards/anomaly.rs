//! The fleet-wide half of the anomaly guard
//! (`warden_filters::guards::anomaly`, which notes each call's signals in
//! this replica): before the chain, the facts of a `tools/call` this
//! gateway's baseline does not hold are asked of the fleet's sets in the
//! shared store (`hub::anomaly_store`) and, when another gateway learnt
//! them, taken into the local baseline; after the chain, the call's
//! baseline learns what became of it (`settle`): a forwarded call is
//! learnt (and its new facts shared), a denied one counted towards the
//! denial rate, a held one not at all.

use warden_filters::engines::anomaly::Facts;
use warden_filters::{Outcome, RequestMessages, RequestPlan};

use crate::hub::runtime::Runtime;
use crate::pipeline::ctx::RequestCtx;

/// The facts of a single `tools/call` this gateway's baseline does not
/// hold, to ask the fleet about (`anomaly:` with `redis:`): read before
/// any wait, so the body's messages are never held across one.
pub(crate) fn fleet_question(
    rt: &Runtime,
    shared: &warden_filters::snapshot::Shared,
    server: &str,
    ctx: &RequestCtx,
    messages: &RequestMessages<'_>,
) -> Option<Facts> {
    rt.snap.config.anomaly.as_ref()?;
    rt.quota_store.as_ref()?;
    let msg = messages.single()?;
    let env = msg.envelope;
    if env.method.as_deref() != Some("tools/call") {
        return None;
    }
    let tool = env.name.as_deref()?;
    let hosts = warden_filters::guards::anomaly::call_hosts(msg);
    let facts = Facts::of(server, tool, &hosts);
    let unknown = shared.baselines.unknown(&ctx.principal, &facts);
    (unknown != Facts::default()).then_some(unknown)
}

/// Takes the fleet's first-use facts among `unknown` (see
/// [`fleet_question`]) into the local baseline. A store that does not
/// answer leaves the local baseline to decide.
pub(crate) async fn load_fleet(
    rt: &Runtime,
    shared: &warden_filters::snapshot::Shared,
    ctx: &RequestCtx,
    unknown: Option<Facts>,
) {
    let (Some(unknown), Some(store)) = (unknown, &rt.quota_store) else {
        return;
    };
    let owner = ctx.principal.owner();
    if let Ok(known) = crate::hub::anomaly_store::known(store, owner, &unknown).await {
        if known != Facts::default() {
            let _ = shared.baselines.accept(owner, ctx.now, &known, false);
        }
    }
}

/// What each judged call teaches its baseline (see the module).
pub(crate) async fn settle(
    rt: &Runtime,
    shared: &warden_filters::snapshot::Shared,
    ctx: &RequestCtx,
    plan: &RequestPlan,
) {
    let Some(cfg) = &rt.snap.config.anomaly else {
        return;
    };
    let settings = cfg.into();
    for r in &plan.records {
        let Some(note) = &r.anomaly else {
            continue;
        };
        let forwarded = match &r.outcome {
            Outcome::Forwarded | Outcome::Mutated { .. } => true,
            // Held for approval: neither learnt nor a denial.
            Outcome::Denied { filter, .. } if *filter == "approval" => continue,
            Outcome::Denied { .. } => false,
            Outcome::Invalid { .. } => continue,
        };
        let new = forwarded.then(|| shared.baselines.unknown(&ctx.principal, &note.facts));
        shared
            .baselines
            .settle(&ctx.principal, &settings, ctx.now, note, forwarded);
        if let (Some(new), Some(store)) = (new, &rt.quota_store) {
            if new != Facts::default() {
                if let Err(e) = crate::hub::anomaly_store::add(
                    store,
                    ctx.principal.owner(),
                    &new,
                    cfg.fleet_ttl,
                )
                .await
                {
                    tracing::debug!("anomaly facts not shared: {e}");
                }
            }
        }
    }
}
