//! The fleet-wide half of the approval guard
//! (`warden_filters::guards::approval`, which holds a call in this
//! replica): the held call claimed at the control agent's approval queue
//! (`hub::approval_client`), then released or answered.

use crate::hub::runtime::Runtime;
use crate::hub::state::Gateway;
use crate::pipeline::ctx::RequestCtx;

/// A call held for approval: claimed at the control agent, then either
/// released (forwarded as the guards passed it) or answered with where to
/// approve. Never forwarded without an approval.
pub(crate) async fn settle_held(
    gw: &Gateway,
    rt: &Runtime,
    server: &warden_config::model::Server,
    ctx: &mut RequestCtx,
    plan: &mut warden_filters::RequestPlan,
) {
    use crate::hub::approval_client::{Caller, Claimed};
    let Some(held) = plan.held.as_ref() else {
        return;
    };
    let need = held.need.clone();
    let cfg = &rt.snap.config.approvals;
    // What the audit record keeps of a justification is what approvers see.
    let justification = ctx
        .justification
        .as_deref()
        .map(|j| rt.snap.redact_text(j, 1024));
    let claimed = match gw.approvals.get() {
        Some(client) => {
            client
                .claim(
                    &need,
                    &Caller {
                        tenant: &ctx.principal.tenant,
                        principal: &need.holder,
                        server: &server.name,
                        justification: justification.as_deref(),
                        trace_id: ctx.trace_id.as_deref(),
                    },
                    cfg,
                )
                .await
        }
        None => Claimed::Unavailable(
            "this gateway has no control agent (start it with --agent or --approvals-agent)".into(),
        ),
    };
    crate::observability::metrics::metrics()
        .approvals
        .with_label_values(&[&server.name, claimed.reason()])
        .inc();
    let mut claimed = claimed;
    if let Claimed::Unavailable(why) = &claimed {
        tracing::warn!(server = %server.name, tool = %need.tool, "held call refused: {why}");
    }
    // An approver's comment reaches the model as DLP leaves it.
    if let Claimed::Denied { by, .. } = &mut claimed {
        if let Some(c) = &by.comment {
            by.comment = Some(rt.snap.redact_text(c, 500));
        }
    }
    if matches!(claimed, Claimed::Approved { .. }) {
        plan.release_held();
    } else {
        let id = plan.records.last().and_then(|r| r.id.clone());
        let url_elicitation = ctx
            .session_id
            .as_deref()
            .is_some_and(|s| gw.sessions.url_elicitation(&server.name, s));
        let url = match (gw.approvals.get(), claimed.id()) {
            (Some(c), Some(aid)) => Some(c.approval_url(cfg.url.as_deref(), aid)),
            _ => None,
        };
        plan.answers = vec![claimed.answer(&need, id.as_ref(), url.as_deref(), url_elicitation)];
        if let Some(r) = plan.records.last_mut() {
            r.outcome = warden_filters::Outcome::Denied {
                filter: "approval",
                reason: claimed.reason().to_owned(),
            };
        }
    }
    ctx.approval = Some(claimed);
}
