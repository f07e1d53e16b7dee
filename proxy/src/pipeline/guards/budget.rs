//! The fleet-wide half of the budgets guard (`warden_filters::guards::
//! budget`, which refuses a call from the verdicts made here): each priced
//! `tools/call`'s price per call reserved under every budget on its path
//! before the chain runs (global budgets in the shared store, by one
//! script for all of a call's budgets; the rest, and a global budget's
//! fallback, in this replica's table), given back when the call is not
//! forwarded or the upstream does not take it, and the price per unit
//! charged once the reply says how many units.

use warden_filters::guards::budget::{
    demands, BudgetAlert, BudgetDemand, BudgetVerdict, BudgetVerdicts, Charged,
};
use warden_filters::{Id, Kind, Parsed};

use crate::hub::quota_store::{BudgetKey, QuotaStore, Reserved};
use crate::hub::runtime::Runtime;
use crate::hub::state::Gateway;
use crate::observability::metrics::metrics;
use crate::pipeline::ctx::{RequestCtx, Reservation};

/// How long a holder's counter is kept in the store: the period's rest and a day.
fn keep_ms(d: &BudgetDemand, now: std::time::SystemTime) -> u64 {
    let now = now
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (d.period.ends.saturating_sub(now) + 86_400) * 1000
}

/// The store's keys of `ds`; `floor` is what this replica counted for
/// each (read by a reservation only: the store's spend is raised to it).
fn keys<'a>(
    ds: &'a [&'a BudgetDemand],
    now: std::time::SystemTime,
    floor: impl Fn(&BudgetDemand) -> u64,
) -> Vec<BudgetKey<'a>> {
    ds.iter()
        .map(|d| BudgetKey {
            key: &d.key,
            period: d.period.index,
            limit: d.limit,
            keep_ms: keep_ms(d, now),
            floor: floor(d),
        })
        .collect()
}

fn alerted(a: &[BudgetAlert], currency: &str) -> Option<serde_json::Value> {
    (!a.is_empty()).then(|| {
        let m = metrics();
        for x in a {
            let t = format!("{}", x.threshold as f64 / 1_000_000.0);
            m.budget_alerts.with_label_values(&[&x.budget, &t]).inc();
            tracing::warn!(
                budget = %x.budget, holder = %x.holder, threshold = %t,
                spent = %warden_filters::guards::budget::amount(x.spent),
                "budget alert"
            );
        }
        serde_json::json!({"alerts": a.iter().map(|x| x.to_json(currency)).collect::<Vec<_>>()})
    })
}

/// Reserves each priced call's price per call under its budgets; the
/// chain's budget guard reads the verdicts.
pub(crate) async fn reserve(
    gw: &Gateway,
    rt: &Runtime,
    server: &warden_config::model::Server,
    ctx: &mut RequestCtx,
    parsed: &Parsed,
) -> BudgetVerdicts {
    let mut verdicts = BudgetVerdicts::default();
    let cfg = &rt.snap.config;
    // A virtual server's own leg is judged by no guard: its member's leg is.
    if cfg.budgets.is_empty() || server.composed.is_some() {
        return verdicts;
    }
    let calls: Vec<(&Id, &str)> = match parsed {
        Parsed::Single(env) => vec![env],
        Parsed::Batch(items) => items.iter().filter_map(|i| i.as_ref().ok()).collect(),
    }
    .into_iter()
    .filter(|e| e.kind == Kind::Request && e.method.as_deref() == Some("tools/call"))
    .filter_map(|e| Some((e.id.as_ref()?, e.name.as_deref()?)))
    .collect();
    for (id, tool) in calls {
        // A batch's second request under one id is refused by the chain
        // (`duplicate_id`): it reserves nothing.
        if verdicts.0.contains_key(id) {
            continue;
        }
        let Some(cost) =
            warden_filters::guards::budget::price_per_call(&cfg.catalog, &server.name, tool)
        else {
            continue;
        };
        let ds = {
            let fctx = ctx.exchange(server, false, None);
            demands(&cfg.budgets, &rt.snap.budget_clock, &fctx)
        };
        if ds.is_empty() {
            continue;
        }
        let (verdict, reservation) =
            reserve_one(gw, rt.quota_store.as_deref(), id, ds, cost, ctx.now).await;
        if let Some(r) = reservation {
            ctx.budget.reservations.push(r);
        }
        verdicts.0.insert(id.clone(), verdict);
    }
    verdicts
}

async fn reserve_one(
    gw: &Gateway,
    store: Option<&QuotaStore>,
    id: &Id,
    ds: Vec<BudgetDemand>,
    cost: u64,
    now: std::time::SystemTime,
) -> (BudgetVerdict, Option<Reservation>) {
    let tables = &gw.shared.budgets;
    let need = cost.max(1);
    let mut alerts = Vec::new();
    // The global budgets first, in the store, all at once.
    let global: Vec<&BudgetDemand> = ds.iter().filter(|d| d.global.is_some()).collect();
    let mut local: Vec<&BudgetDemand> = ds.iter().filter(|d| d.global.is_none()).collect();
    let mut in_store = false;
    if !global.is_empty() {
        let res = match store.filter(|s| s.is_up()) {
            Some(s) => {
                s.budget_reserve(&keys(&global, now, |d| tables.spent(d)), cost, need)
                    .await
            }
            None => Err("the shared store is unreachable".into()),
        };
        match res {
            Ok(Reserved::Taken(spent)) => {
                in_store = true;
                for (d, new) in global.iter().zip(spent) {
                    alerts.extend(BudgetAlert::crossed(d, new.saturating_sub(cost), new));
                    // Counted here too, so that a later outage (`local`)
                    // starts from what this replica spent.
                    let _ = tables.add(d, cost, now);
                }
            }
            Ok(Reserved::Over(i, _)) => {
                metrics().budget_store.with_label_values(&["over"]).inc();
                return (
                    BudgetVerdict::Over(global[i.min(global.len() - 1)].clone()),
                    None,
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "budget store unreachable; on_store_failure applies");
                metrics()
                    .budget_store
                    .with_label_values(&["unavailable"])
                    .inc();
                for d in &global {
                    if d.global == Some(warden_config::guards::StoreFailure::Closed) {
                        return (BudgetVerdict::Unavailable((*d).clone()), None);
                    }
                }
                local.extend(global.iter().copied());
            }
        }
    }
    let mut taken: Vec<&BudgetDemand> = Vec::new();
    let mut refused = None;
    for d in &local {
        match tables.charge(d, cost, need, now) {
            Charged::Taken(old, new) => {
                alerts.extend(BudgetAlert::crossed(d, old, new));
                taken.push(d);
            }
            Charged::Over(_) => {
                refused = Some(BudgetVerdict::Over((*d).clone()));
                break;
            }
            Charged::Full => {
                refused = Some(BudgetVerdict::Unavailable((*d).clone()));
                break;
            }
        }
    }
    if let Some(v) = refused {
        // What this call's charge crossed is kept only where its holder's
        // spend stays past it once the charge is undone (another call's
        // charge went on from this one's and raised nothing): then this
        // call's record raises it (a reservation already given back).
        let still = |d: &BudgetDemand, after: Option<u64>| {
            alerts
                .iter()
                .filter(|a| a.budget == d.name && after.is_none_or(|s| a.holds_at(s)))
                .cloned()
                .collect::<Vec<_>>()
        };
        let mut kept = Vec::new();
        for d in taken {
            kept.extend(still(d, tables.refund(d, cost)));
        }
        if in_store {
            match give_back_store(store, &global, cost, now).await {
                Some(spent) => {
                    for (d, s) in global.iter().zip(spent) {
                        kept.extend(still(d, Some(s)));
                    }
                }
                None => {
                    for d in &global {
                        kept.extend(still(d, None));
                    }
                }
            }
        }
        let given_back = (!kept.is_empty()).then(|| Reservation {
            id: id.clone(),
            cost,
            demands: Vec::new(),
            in_store: false,
            alerts: kept,
            answered: false,
            given_back: true,
        });
        return (v, given_back);
    }
    let r = Reservation {
        id: id.clone(),
        cost,
        demands: ds,
        in_store,
        alerts,
        answered: false,
        given_back: false,
    };
    (BudgetVerdict::Admitted, Some(r))
}

/// Gives `cost` back to every key of `ds` in the store; the spends after
/// (`None`: not given back).
async fn give_back_store(
    store: Option<&QuotaStore>,
    ds: &[&BudgetDemand],
    cost: u64,
    now: std::time::SystemTime,
) -> Option<Vec<u64>> {
    let s = store?;
    match s
        .budget_add(
            &keys(ds, now, |_| 0),
            -i64::try_from(cost).unwrap_or(i64::MAX),
        )
        .await
    {
        Ok(spent) => Some(spent),
        Err(e) => {
            // Kept as spent: the fleet refuses early rather than late.
            tracing::warn!(error = %e, "a budget reservation could not be given back");
            None
        }
    }
}

/// Gives back what `r` reserved, and keeps of `r.alerts` only those its
/// holder's spend still reaches once it is given back: a threshold the
/// spend falls below again was not crossed (the charge that crosses it
/// again raises it), and one it stays past was crossed meanwhile by a
/// charge that raised nothing (it came after this one), so it is raised
/// here, or never.
async fn give_back(gw: &Gateway, rt: &Runtime, r: &mut Reservation, now: std::time::SystemTime) {
    if r.given_back {
        return;
    }
    r.given_back = true;
    // The spend after, by budget name (names are unique in a bundle).
    let mut after: Vec<(&str, Option<u64>)> = Vec::with_capacity(r.demands.len());
    for d in &r.demands {
        let left = gw.shared.budgets.refund(d, r.cost);
        if d.global.is_none() || !r.in_store {
            after.push((d.name.as_str(), left));
        }
    }
    if r.in_store {
        let global: Vec<&BudgetDemand> = r.demands.iter().filter(|d| d.global.is_some()).collect();
        // `None`: not given back, still counted as spent.
        let spent = give_back_store(rt.quota_store.as_deref(), &global, r.cost, now).await;
        for (i, d) in r.demands.iter().filter(|d| d.global.is_some()).enumerate() {
            let s = spent.as_ref().and_then(|v| v.get(i).copied());
            after.push((d.name.as_str(), s));
        }
    }
    r.alerts.retain(|a| {
        match after.iter().find(|(n, _)| *n == a.budget) {
            Some((_, Some(spent))) => a.holds_at(*spent),
            // Not given back (or not held here any more): as charged.
            _ => true,
        }
    });
}

/// After the chain (and an approval): what a call that is not forwarded
/// reserved is given back; a forwarded call's alerts go on its record.
pub(crate) async fn settle(gw: &Gateway, ctx: &mut RequestCtx) {
    if ctx.budget.reservations.is_empty() {
        return;
    }
    let rt = ctx.rt.clone();
    let currency = rt.snap.config.budgets.currency.clone();
    let mut leg = std::mem::take(&mut ctx.budget);
    for r in &mut leg.reservations {
        let rec = ctx.plan.as_mut().and_then(|p| {
            p.records.iter_mut().find(|x| {
                x.kind == Some(Kind::Request)
                    && x.method.as_deref() == Some("tools/call")
                    && x.id.as_ref() == Some(&r.id)
            })
        });
        match rec {
            Some(rec)
                if matches!(
                    rec.outcome,
                    warden_filters::Outcome::Forwarded | warden_filters::Outcome::Mutated { .. }
                ) =>
            {
                // Kept on the reservation too: `close` takes back those
                // a reservation given back later no longer reaches.
                rec.budget = alerted(&r.alerts, &currency);
            }
            rec => {
                give_back(gw, &rt, r, ctx.now).await;
                // A threshold its holder's spend stays past (a later
                // charge of this request, or of another, went on from
                // this one's) is raised by this call's record.
                if let Some(rec) = rec {
                    rec.budget = alerted(&std::mem::take(&mut r.alerts), &currency);
                }
            }
        }
    }
    ctx.budget = leg;
}

/// Once the exchange is over: a call whose reply did not come back on it
/// and that never went upstream, or that the upstream refused (an answer
/// that is not a 2xx), costs nothing, and what it reserved is given back.
/// A call that may have run stays charged: one whose reply comes on
/// another stream, and one whose upstream did not answer (a reset, a
/// timeout, a client gone before the answer) — else a caller who hangs
/// up before each answer would call for free.
pub(crate) async fn close(gw: &Gateway, ctx: &mut RequestCtx) {
    if ctx.budget.reservations.is_empty() {
        return;
    }
    let up = &ctx.upstream;
    let sent = up.chosen.is_some() || !up.tried.is_empty();
    let refused = up.status.is_some_and(|s| !(200..300).contains(&s));
    if sent && !refused {
        return;
    }
    let rt = ctx.rt.clone();
    let now = ctx.now;
    let mut leg = std::mem::take(&mut ctx.budget);
    for r in leg.reservations.iter_mut().filter(|r| !r.answered) {
        if r.given_back {
            continue;
        }
        let raised = r.alerts.len();
        give_back(gw, &rt, r, now).await;
        if r.alerts.len() == raised {
            continue;
        }
        // The call's record carried alerts its spend, given back, no
        // longer reaches: they were not crossed (the next charge that
        // crosses them raises them, once).
        let kept = &r.alerts;
        let rec = ctx.plan.as_mut().and_then(|p| {
            p.records.iter_mut().find(|x| {
                x.kind == Some(Kind::Request)
                    && x.method.as_deref() == Some("tools/call")
                    && x.id.as_ref() == Some(&r.id)
            })
        });
        if let Some(rec) = rec {
            rec.budget = (!kept.is_empty()).then(|| {
                serde_json::json!({"alerts": kept.iter().map(|x| x.to_json(&rt.snap.config.budgets.currency)).collect::<Vec<_>>()})
            });
        }
    }
    ctx.budget = leg;
}

/// The prices per unit the replies judged so far owe, charged to the
/// caller's budgets whatever their limits (the call was made); an alert
/// they raise goes on the record that carries the call's cost.
pub(crate) async fn charge_units(gw: &Gateway, ctx: &mut RequestCtx) {
    if ctx.budget.units.is_empty() {
        return;
    }
    let units = std::mem::take(&mut ctx.budget.units);
    let rt = ctx.rt.clone();
    let Some(routed) = ctx.routed.as_ref() else {
        return;
    };
    let server = rt.server(routed.server_id).clone();
    let currency = rt.snap.config.budgets.currency.clone();
    for u in units {
        let ds = {
            let fctx = ctx.exchange(&server, false, None);
            demands(&rt.snap.config.budgets, &rt.snap.budget_clock, &fctx)
        };
        let mut alerts = Vec::new();
        let global: Vec<&BudgetDemand> = ds.iter().filter(|d| d.global.is_some()).collect();
        let mut store_ok = false;
        if !global.is_empty() {
            if let Some(s) = rt.quota_store.as_deref().filter(|s| s.is_up()) {
                // Saturated, never wrapped: a charge past `i64::MAX`
                // millionths would lower the spend.
                let micros = i64::try_from(u.micros).unwrap_or(i64::MAX);
                match s.budget_add(&keys(&global, ctx.now, |_| 0), micros).await {
                    Ok(spent) => {
                        store_ok = true;
                        for (d, new) in global.iter().zip(spent) {
                            alerts.extend(BudgetAlert::crossed(
                                d,
                                new.saturating_sub(u.micros),
                                new,
                            ));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, tool = %u.tool, "a price per unit not charged in the shared store; counted here")
                    }
                }
            }
        }
        for d in &ds {
            let new = gw.shared.budgets.add(d, u.micros, ctx.now);
            if d.global.is_none() || !store_ok {
                if let Some((old, new)) = new {
                    alerts.extend(BudgetAlert::crossed(d, old, new));
                }
            }
        }
        let Some(json) = alerted(&alerts, &currency) else {
            continue;
        };
        let holder = ctx
            .plan
            .iter_mut()
            .flat_map(|p| p.records.iter_mut())
            .chain(ctx.reply.records.iter_mut())
            .find(|r| r.cost.is_some() && r.id == u.id);
        if let Some(rec) = holder {
            match rec.budget.as_mut().and_then(|b| b["alerts"].as_array_mut()) {
                Some(list) => list.extend(json["alerts"].as_array().cloned().unwrap_or_default()),
                None => rec.budget = Some(json),
            }
        }
    }
}
