//! The fleet-wide half of the quota guard (`warden_filters::guards::quota`,
//! which decides in this replica): global quotas' units reserved in the
//! shared store (`hub::quota_store`) before the chain runs; the guard
//! reads the verdicts.

use warden_filters::Parsed;

use crate::hub::runtime::Runtime;
use crate::pipeline::ctx::RequestCtx;

/// Global quotas: their units reserved in the shared store first (this
/// waits on Redis only when this replica's lease for a key is empty).
pub(crate) async fn reserve_global(
    rt: &Runtime,
    server: &warden_config::model::Server,
    ctx: &RequestCtx,
    parsed: &Parsed,
    keep_arguments: bool,
) -> warden_filters::guards::quota::GlobalVerdicts {
    let cfg = &rt.snap.config;
    let mut global = warden_filters::guards::quota::GlobalVerdicts::new();
    let demands = {
        let fctx = ctx.exchange(server, keep_arguments, None);
        warden_filters::guards::quota::global_demands(&cfg.quotas, &cfg.catalog, parsed, &fctx)
    };
    // A virtual server's own leg spends nothing: its member's leg does.
    if !demands.is_empty() && server.composed.is_none() {
        let store = rt.quota_store.clone();
        for d in demands {
            let v = match &store {
                Some(s) => s.reserve(&d, ctx.now).await,
                // Named by the bundle but not built: as a store that is
                // down, `on_store_failure` decides (counted, never silent).
                None => crate::hub::quota_store::unavailable(&d),
            };
            global.insert(d.key, v);
        }
    }
    global
}
