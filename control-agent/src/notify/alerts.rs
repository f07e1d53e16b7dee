//! Budget alerts announced to the webhooks that hear of `budget_alerts`
//! (`events` in the notifications file): what each body says, and who
//! hears of which alert. The queue they wait in is the audit store's
//! (`crate::audit::alerts`); the delivery is the held calls' (`super`).
//!
//! Every text of an alert comes from a record a gateway wrote (a budget's
//! name, a tenant, a principal, a tool): each is shown as the console
//! shows it (`shown`) and escaped for each body's markup, so none becomes
//! a link or a mention.

use serde_json::{json, Value};

use super::config::{Event, Kind, Webhook};
use super::{slack_code, slack_message, slack_text, teams_card, teams_text};
use crate::audit::alerts::BudgetAlert;

/// The `type` of a generic body, and its `X-Warden-Event`.
pub const EVENT: &str = "budget.alert";

/// Whether `hook` wants to hear of `a`: it hears of budget alerts, and of
/// the record's tenant (compared as the console compares tenants). An
/// organisation's budget holds every tenant's spend: its alert reaches
/// only webhooks scoped to no tenant, whichever tenant's call crossed it.
pub fn wants(hook: &Webhook, a: &BudgetAlert) -> bool {
    hook.hears(Event::BudgetAlerts)
        && (hook.tenants.is_empty()
            || (!matches!(a.per.as_str(), "organisation" | "organization")
                && warden_config::person::in_scope(&hook.tenants, &a.tenant)))
}

/// The link to the call's records in the console (by its trace).
pub fn link(console_url: &str, a: &BudgetAlert) -> String {
    let trace =
        percent_encoding::utf8_percent_encode(&a.trace_id, percent_encoding::NON_ALPHANUMERIC);
    format!("{console_url}/console/audit?trace_id={trace}")
}

/// The threshold as a percentage when it reads as a fraction (`0.8`:
/// `80 %`), else as written.
fn percent(threshold: &str) -> String {
    match threshold.parse::<f64>() {
        Ok(f) if f.is_finite() && (0.0..=10.0).contains(&f) => {
            let p = (f * 1000.0).round() / 10.0;
            format!("{p} %")
        }
        _ => threshold.to_owned(),
    }
}

/// What a notification of `a` says (`shown`: as the console shows text).
pub fn body(hook: &Webhook, a: &BudgetAlert, link: &str, shown: impl Fn(&str) -> String) -> Value {
    let s = |t: &str| shown(t);
    let (budget, per, holder) = (s(&a.budget), s(&a.per), s(&a.holder));
    let (tenant, principal, server) = (s(&a.tenant), s(&a.principal), s(&a.server));
    let tool = a.tool.as_deref().map(&s);
    let (spent, limit, currency) = (s(&a.spent), s(&a.limit), s(&a.currency));
    let (period, resets_at, threshold) = (s(&a.period), s(&a.resets_at), s(&a.threshold));
    match hook.kind {
        Kind::Generic => json!({
            "type": EVENT,
            "id": a.key,
            "budget": budget,
            "per": per,
            "holder": holder,
            "threshold": threshold,
            "spent": spent,
            "limit": limit,
            "currency": currency,
            "period": period,
            "resets_at": resets_at,
            "tenant": tenant,
            "principal": principal,
            "server": server,
            "tool": tool,
            "ts": s(&a.ts),
            "trace_id": s(&a.trace_id),
            "gateway": s(&a.gateway),
            "url": link,
        }),
        Kind::Slack => {
            let e = slack_text;
            let c = slack_code;
            let headline = format!(
                "Budget `{}` crossed {}: {} of {} {} spent by {} `{}` in {}",
                c(&budget),
                e(&percent(&threshold)),
                e(&spent),
                e(&limit),
                e(&currency),
                e(&per),
                c(&holder),
                e(&period)
            );
            let call = format!(
                "Call: {} on {} by {} ({})",
                e(tool.as_deref().unwrap_or("-")),
                e(&server),
                e(&principal),
                e(&tenant)
            );
            slack_message(
                &headline,
                vec![json!({"type": "section", "fields": [
                    {"type": "plain_text", "text": call},
                    {"type": "plain_text", "text": format!("Resets: {}", e(&resets_at))},
                ]})],
                link,
            )
        }
        Kind::Teams => {
            let e = teams_text;
            teams_card(
                json!([
                            {"type": "TextBlock", "weight": "Bolder", "wrap": true,
                             "text": format!("Budget {} crossed {}", e(&budget), e(&percent(&threshold)))},
                            {"type": "FactSet", "facts": [
                                {"title": "Spent", "value": format!("{} of {} {}", e(&spent), e(&limit), e(&currency))},
                                {"title": "Holder", "value": format!("{} {}", e(&per), e(&holder))},
                                {"title": "Period", "value": e(&period)},
                                {"title": "Resets", "value": e(&resets_at)},
                                {"title": "Tool", "value": e(tool.as_deref().unwrap_or("-"))},
                                {"title": "Server", "value": e(&server)},
                                {"title": "Principal", "value": e(&principal)},
                                {"title": "Tenant", "value": e(&tenant)},
                            ]},
                ]),
                link,
            )
        }
    }
}
