//! Money budgets (`budgets:`): a priced `tools/call` is refused when its
//! price per call would take any budget on its path (organisation,
//! tenant, team, principal, session) past its amount for the current day
//! or month in the bundle's time zone.
//!
//! The spend is reserved before the chain runs (`proxy::pipeline::guards::
//! budget`: this replica's counters here, [`BudgetTables`], and the shared
//! store for `global` budgets), and this guard reads the verdicts: a priced
//! call under a budget that reached the chain without a verdict is refused
//! (`budget_unchecked`), never passed. A reservation whose call is not
//! forwarded (another guard refused it, it waits for approval) is given
//! back; a price per unit is charged when the reply says how many units.

use std::collections::HashMap;
use std::time::SystemTime;

use warden_config::access::ServerCatalog;
use warden_config::budgets::{Budget, BudgetScope, Budgets};

use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::engines::budget::unix;
use crate::engines::identity::Principal;
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;

pub use crate::engines::budget::{
    amount, BudgetAlert, BudgetClock, BudgetDemand, BudgetTables, BudgetVerdict, BudgetVerdicts,
    Charged, PeriodSpan,
};

fn listed(list: &[String], v: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == v)
}

/// The caller's team: the principal attribute `budgets.team_attribute`
/// (`team` when the bundle has no budgets).
pub fn team_attribute<'a>(budgets: &Budgets, principal: &'a Principal) -> Option<&'a str> {
    let name = match budgets.team_attribute.as_str() {
        "" => "team",
        n => n,
    };
    principal
        .attributes
        .get(name)
        .map(String::as_str)
        .filter(|t| !t.is_empty())
}

fn team_of<'a>(budgets: &Budgets, ctx: &'a Exchange<'_>) -> Option<&'a str> {
    team_attribute(budgets, ctx.principal)
}

fn applies(b: &Budget, team: &str, ctx: &Exchange<'_>) -> bool {
    listed(&b.tenants, ctx.principal.canonical_tenant())
        && (b.teams.is_empty() || b.teams.contains(&warden_config::person::strict_key(team)))
        && (listed(&b.servers, ctx.server)
            || ctx.via.is_some_and(|v| b.servers.iter().any(|s| s == v)))
        && (b.per != BudgetScope::Session || ctx.session_id.is_some())
}

/// The budgets a call of `tool` on this exchange's server spends, each
/// with the holder's counter key and the current period.
pub fn demands(budgets: &Budgets, clock: &BudgetClock, ctx: &Exchange<'_>) -> Vec<BudgetDemand> {
    let mut out = Vec::new();
    let team = team_of(budgets, ctx).unwrap_or("");
    for (i, b) in budgets.limits.iter().enumerate() {
        if !applies(b, team, ctx) {
            continue;
        }
        let mut key = Vec::with_capacity(64);
        key.extend_from_slice(&b.definition);
        let tenant = &ctx.principal.tenant;
        let holder = match b.per {
            BudgetScope::Organisation => String::new(),
            BudgetScope::Tenant => {
                key.extend_from_slice(warden_config::person::tenant_key(tenant).as_bytes());
                tenant.clone()
            }
            BudgetScope::Team => {
                key.extend_from_slice(warden_config::person::tenant_key(tenant).as_bytes());
                key.push(0);
                key.extend_from_slice(warden_config::person::strict_key(team).as_bytes());
                format!("{tenant}/{team}")
            }
            BudgetScope::Principal => {
                key.extend_from_slice(ctx.principal.person().as_bytes());
                format!("{tenant}/{}", ctx.principal.id)
            }
            BudgetScope::Session => {
                key.extend_from_slice(ctx.principal.person().as_bytes());
                key.push(0);
                key.extend_from_slice(ctx.session_id.unwrap_or_default().as_bytes());
                format!("{tenant}/{} (a session)", ctx.principal.id)
            }
        };
        out.push(BudgetDemand {
            budget: i,
            name: b.name.clone(),
            per: b.per,
            key,
            holder,
            limit: b.limit,
            alerts: b.alerts.clone(),
            period: clock.span(b.period, ctx.now),
            global: b.global,
        });
    }
    out
}

/// The budgets guard: reads the reservation made for each priced call.
pub struct BudgetFilter {
    budgets: Budgets,
    clock: BudgetClock,
    catalog: HashMap<String, ServerCatalog>,
}

impl std::fmt::Debug for BudgetFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetFilter")
            .field("budgets", &self.budgets.limits.len())
            .finish()
    }
}

impl BudgetFilter {
    pub fn new(budgets: &Budgets, catalog: &HashMap<String, ServerCatalog>) -> Option<Self> {
        (!budgets.is_empty()).then(|| BudgetFilter {
            budgets: budgets.clone(),
            clock: BudgetClock::new(&budgets.timezone),
            catalog: catalog.clone(),
        })
    }

    fn denial(d: &BudgetDemand, now: SystemTime, currency: &str) -> Denial {
        let retry_after = d.period.ends.saturating_sub(unix(now)).max(1);
        let whose = if d.holder.is_empty() {
            String::new()
        } else {
            format!(" of {} `{}`", d.per.as_str(), d.holder)
        };
        Denial::error(
            JsonRpcError::new(
                codes::BUDGET_EXCEEDED,
                format!(
                    "Budget `{}`{whose} ({} {currency} a {}) would be exceeded by this call; it resets at {}",
                    d.name,
                    amount(d.limit),
                    if d.period.label.len() > 7 { "day" } else { "month" },
                    d.period.resets_at
                ),
            )
            .with_data(serde_json::json!({
                "reason": "budget_exceeded",
                "budget": d.name,
                "per": d.per.as_str(),
                "period": d.period.label,
                "resets_at": d.period.resets_at,
                "retry_after": retry_after,
            })),
            format!("budget_exceeded:{}", d.name),
        )
    }

    fn units_unreadable(d: &BudgetDemand) -> Denial {
        Denial::error(
            JsonRpcError::new(
                codes::BUDGET_EXCEEDED,
                format!(
                    "This tool is priced by what its result holds, and budget `{}` covers it: its result cannot come as a task (where the gateway would not price it); call it without `task`",
                    d.name
                ),
            )
            .with_data(serde_json::json!({
                "reason": "budget_units_unreadable",
                "budget": d.name,
            })),
            format!("budget_units_unreadable:{}", d.name),
        )
    }

    fn unavailable(d: &BudgetDemand) -> Denial {
        Denial::error(
            JsonRpcError::new(
                codes::BUDGET_EXCEEDED,
                format!(
                    "Budget `{}` cannot be checked now (its store is unreachable or full); the call is refused",
                    d.name
                ),
            )
            .with_data(serde_json::json!({
                "reason": "budget_unavailable",
                "budget": d.name,
                "retry_after": 1,
            })),
            format!("budget_unavailable:{}", d.name),
        )
    }
}

/// Whether a `tools/call` result is a task handle rather than the tool's
/// result: `task` (2025-11-25), `taskId` or `resultType: "task"`
/// (2026-07-28).
fn is_task_handle(result: &serde_json::Value) -> bool {
    result.get("task").is_some_and(|t| !t.is_null())
        || result.get("taskId").is_some_and(|t| !t.is_null())
        || result.get("resultType").and_then(serde_json::Value::as_str) == Some("task")
}

/// Whether a `tools/call` asks to run as a task (`params.task`, any value
/// but null: a peer may take any of them for the request).
fn asks_a_task(msg: &Message<'_>) -> bool {
    match msg.value() {
        Some(v) => v
            .get("params")
            .and_then(|p| p.get("task"))
            .is_some_and(|t| !t.is_null()),
        // Unreadable: it may ask one.
        None => true,
    }
}

/// The price per call of a priced tool (`None`: the tool costs nothing).
pub fn price_per_call(
    catalog: &HashMap<String, ServerCatalog>,
    server: &str,
    tool: &str,
) -> Option<u64> {
    catalog.get(server)?.price(tool).map(|p| p.per_call)
}

impl McpFilter for BudgetFilter {
    fn name(&self) -> &'static str {
        "budget"
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::Only(&["tools/call"]),
            responses: Methods::Only(&["tools/call"]),
        }
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Request || env.method.as_deref() != Some("tools/call") {
            return Decision::Pass;
        }
        // A call whose tool the gateway cannot read cannot be priced: on a
        // server with prices, under a budget, it is refused, never passed.
        let Some(tool) = env.name.as_deref() else {
            let priced = self
                .catalog
                .get(ctx.server)
                .is_some_and(|c| c.price.is_some() || c.tools.values().any(|t| t.price.is_some()));
            return match demands(&self.budgets, &self.clock, ctx).first() {
                Some(d) if priced => {
                    let mut denial = Self::unavailable(d);
                    denial.reason = format!("budget_unchecked:{}", d.name);
                    Decision::Reject(denial)
                }
                _ => Decision::Pass,
            };
        };
        let Some(price) = self.catalog.get(ctx.server).and_then(|c| c.price(tool)) else {
            return Decision::Pass;
        };
        // A call priced per unit asked to run as a task: its reply is a
        // handle, and the result whose units price it comes later under
        // another method, which no charge reads. The gateway cannot price
        // it: refused when a budget covers it.
        if price.per_unit.is_some() && asks_a_task(msg) {
            if let Some(d) = demands(&self.budgets, &self.clock, ctx).first() {
                return Decision::Reject(Self::units_unreadable(d));
            }
        }
        let verdict = env
            .id
            .as_ref()
            .and_then(|id| ctx.budget.and_then(|v| v.0.get(id)));
        match verdict {
            Some(BudgetVerdict::Admitted) => Decision::Pass,
            Some(BudgetVerdict::Over(d)) => {
                Decision::Reject(Self::denial(d, ctx.now, &self.budgets.currency))
            }
            Some(BudgetVerdict::Unavailable(d)) => Decision::Reject(Self::unavailable(d)),
            None => {
                // No reservation: fine only when no budget covers the call.
                let open = demands(&self.budgets, &self.clock, ctx);
                match open.first() {
                    None => Decision::Pass,
                    Some(d) => {
                        let mut denial = Self::unavailable(d);
                        denial.reason = format!("budget_unchecked:{}", d.name);
                        Decision::Reject(denial)
                    }
                }
            }
        }
    }

    /// A server may answer a call with a task handle where the tool's
    /// result was asked (2026-07-28 lets it): for a tool priced per unit,
    /// the result whose units price the call would come where no charge
    /// reads it. Under a budget, such a reply is refused (the client gets
    /// no handle to fetch the unpriced result with); so is one whose tool
    /// is not known (a reply matched on another stream) when any tool of
    /// the server is priced per unit.
    fn on_response(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Response || env.is_error || msg.request_method != Some("tools/call") {
            return Decision::Pass;
        }
        let Some(catalog) = self.catalog.get(ctx.server) else {
            return Decision::Pass;
        };
        let per_unit = match msg.request_target {
            Some(tool) => catalog.price(tool).is_some_and(|p| p.per_unit.is_some()),
            None => catalog
                .price
                .iter()
                .chain(catalog.tools.values().filter_map(|t| t.price.as_ref()))
                .any(|p| p.per_unit.is_some()),
        };
        if !per_unit {
            return Decision::Pass;
        }
        let handle = match msg.value().and_then(|v| v.get("result")) {
            Some(r) => is_task_handle(r),
            None => return crate::chain::filter::unreadable_reply(),
        };
        if !handle {
            return Decision::Pass;
        }
        match demands(&self.budgets, &self.clock, ctx).first() {
            Some(d) => Decision::Reject(Self::units_unreadable(d)),
            None => Decision::Pass,
        }
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
