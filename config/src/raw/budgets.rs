//! `budgets:`: money spent per tenant, team, principal and session over a
//! calendar period, against the catalog's prices.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// IANA time zone the periods start and end in (default:
    /// `policy.timezone`, itself UTC by default).
    #[serde(default)]
    pub timezone: Option<String>,
    /// The principal attribute that names a caller's team (default `team`).
    #[serde(default)]
    pub team_attribute: Option<String>,
    #[serde(default)]
    pub limits: Vec<BudgetConfig>,
}

/// One budget: `{name, per: tenant, period: month, amount: "500.00"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Stable name (errors, metrics, the shared store's keys).
    pub name: String,
    /// `organisation`, `tenant`, `team`, `principal` or `session`: one
    /// budget of `amount` for each.
    pub per: String,
    /// `day` or `month`, in the bundle's time zone.
    pub period: String,
    /// In the currency of the catalog's prices.
    pub amount: serde_yaml_ng::Value,
    /// Only calls of these tenants, teams, servers spend it (empty: any).
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub servers: Vec<String>,
    /// Fractions of `amount` at which an alert is raised once per period
    /// (default `[0.8]`).
    #[serde(default)]
    pub alerts: Option<Vec<f64>>,
    /// Held across every replica through the `redis` store.
    #[serde(default)]
    pub global: bool,
    /// A global budget while the store is unreachable: `closed` (default:
    /// refuse the calls it covers) or `local` (each replica alone).
    #[serde(default)]
    pub on_store_failure: Option<String>,
}
