//! The fleet-wide half of the information-flow guard
//! (`warden_filters::guards::flow`, which judges in this replica): the
//! flow state a message or a stream is judged against, the fleet's view
//! (the shared store) read before the chain, and the judgement of a GET
//! stream or DELETE to a server that is a sink as a whole. Called by
//! admission (streams) and judging (messages).

use warden_filters::engines::flow::Loaded;
use warden_filters::Refusal;

use warden_filters::RequestMessages;

use crate::hub::runtime::Runtime;
use crate::pipeline::ctx::RequestCtx;

/// Whether the flow guard judges some message of the body against a flow
/// state the shared store holds (`guards::flow::judges`: a read, a
/// client's answer to a server, anything that reaches out, anything with
/// params to a sink server). Asked whenever the bundle names a store,
/// built or not: one this process could not build is no store to read.
pub(crate) fn flow_judged(rt: &Runtime, server: &str, messages: &RequestMessages<'_>) -> bool {
    let cfg = &rt.snap.config;
    let (Some(flows), Some(_)) = (&cfg.flows, &cfg.redis) else {
        return false;
    };
    let catalog = rt.snap.flow_catalog.get(server);
    let judged =
        |m: &warden_filters::Message<'_>| warden_filters::guards::flow::judges(flows, catalog, m);
    match messages {
        RequestMessages::Single(m) => judged(m),
        RequestMessages::Batch(items) => items.iter().any(|i| i.as_ref().is_ok_and(judged)),
    }
}

/// Information flow across replicas: the fleet's view of this call's flow
/// read from the shared store before the chain, when the flow guard
/// judges a message of it against that state (`wanted`, see
/// `flow_judged`). A store that does not answer makes the state
/// unreadable: sinks are refused. So does a store the bundle names but
/// this process could not build (a URL it cannot serve, say): this
/// replica's own view is not the fleet's, and another replica may have
/// served the rest of the flow. Without a shared store in the bundle the
/// flow guard's own table holds it.
pub(crate) async fn load_flow(
    rt: &Runtime,
    server: &warden_config::model::Server,
    ctx: &mut RequestCtx,
    wanted: bool,
) {
    let (Some(flows), Some(_), true) = (&rt.snap.config.flows, &rt.snap.config.redis, wanted)
    else {
        return;
    };
    let Some(store) = &rt.quota_store else {
        ctx.flow = Some(Loaded::Unreadable(
            "the shared store named by `redis:` could not be set up".into(),
        ));
        return;
    };
    let key = {
        let fctx = ctx.exchange(server, false, None);
        warden_filters::guards::flow::flow_key(flows, &fctx)
    };
    let read = match store.flow_get(&key).await {
        Ok(s) => s,
        Err(e) => {
            ctx.flow = Some(Loaded::Unreadable(e));
            return;
        }
    };
    // What this replica read it keeps (merged with what it holds), so a
    // store that forgets — restarted without persistence — can only make
    // the fleet stricter; the merge, when it holds more than the store
    // said, is written back for the replicas that never saw the flow.
    let Some(flow) = &rt.snap.flow else {
        ctx.flow = Some(Loaded::State(read));
        return;
    };
    let (key, kept) = flow.keep_read(&ctx.exchange(server, false, None), &read);
    ctx.flow = Some(match kept {
        Some(merged) => {
            if merged.exceeds(&read) {
                if let Err(e) = store.flow_merge(&key, &merged, &read).await {
                    // This replica still holds it and judges by it.
                    tracing::warn!(error = %e, "flow state not written back to the store");
                }
            }
            Loaded::State(merged)
        }
        // The flows table at its bound: this replica cannot keep what it
        // read, so it cannot vouch for the flow once the store forgets.
        None => Loaded::Unreadable(
            "the flows table is full (limits.memory): this replica cannot keep the flow's state"
                .into(),
        ),
    });
}

/// A GET stream or a DELETE to a server that is a sink as a whole carries
/// no message, but its headers, query and path reach the server: judged
/// as a sink of the server's level against the flow's state before it is
/// proxied (`FlowFilter::judge_stream`; the fleet's state read first).
pub(crate) async fn judge_stream_flow(
    rt: &Runtime,
    server: &warden_config::model::Server,
    ctx: &mut RequestCtx,
) -> Result<(), Refusal> {
    let (Some(flow), Some(flows)) = (&rt.snap.flow, &rt.snap.config.flows) else {
        return Ok(());
    };
    let catalog = rt.snap.flow_catalog.get(&server.name);
    if !warden_filters::guards::flow::sink_server(flows, catalog) {
        return Ok(());
    }
    load_flow(rt, server, ctx, true).await;
    let method = match ctx.kind {
        crate::pipeline::ctx::ExchangeKind::Delete => "DELETE",
        _ => "GET stream",
    };
    match flow.judge_stream(&ctx.exchange(server, false, None), method) {
        warden_filters::Decision::Reject(d) => {
            let (status, reason) = if d.reason.starts_with("flow_blocked") {
                (403, "flow_blocked")
            } else {
                (503, "flow_state_unavailable")
            };
            Err(Refusal::new(status, reason, d.error))
        }
        _ => Ok(()),
    }
}
