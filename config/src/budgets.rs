//! Money budgets (`budgets:`): what the catalog's prices may add up to per
//! organisation, tenant, team, principal or session over a calendar day or
//! month in the bundle's time zone. The guard that enforces them is
//! `warden_filters::guards::budget`; see `docs/guards.md`.

use sha2::{Digest, Sha256};

use crate::error::Problems;
use crate::guards::StoreFailure;
use crate::raw;

/// What one budget is kept per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    /// One budget for every call the budget covers.
    Organisation,
    Tenant,
    /// The caller's team (`budgets.team_attribute`), within their tenant.
    Team,
    Principal,
    /// One MCP session of one principal.
    Session,
}

impl BudgetScope {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Organisation => "organisation",
            BudgetScope::Tenant => "tenant",
            BudgetScope::Team => "team",
            BudgetScope::Principal => "principal",
            BudgetScope::Session => "session",
        }
    }
}

/// The calendar period a budget starts over with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

/// One budget, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub name: String,
    pub per: BudgetScope,
    pub period: Period,
    /// Millionths of the bundle's currency.
    pub limit: u64,
    /// Canonical tenant names (empty: any).
    pub tenants: Vec<String>,
    /// Strict team keys (empty: any).
    pub teams: Vec<String>,
    pub servers: Vec<String>,
    /// Alert thresholds in millionths of the limit, ascending.
    pub alerts: Vec<u64>,
    /// `Some`: held across replicas through the store; what to do while it is down.
    pub global: Option<StoreFailure>,
    /// What the spend is counted under: the name, scope and period (not the
    /// amount or the selectors, so raising a budget keeps what was spent).
    pub definition: [u8; 16],
}

/// `budgets:`, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Budgets {
    /// IANA name of the time zone periods run in.
    pub timezone: String,
    pub team_attribute: String,
    /// The catalog's currency (every budget is in it).
    pub currency: String,
    pub limits: Vec<Budget>,
}

impl Budgets {
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }
}

/// Reads `budgets:`; `currency` is the catalog's (budgets need prices),
/// `timezone` the policy's (the default), `known` the servers.
pub(crate) fn budgets(
    raw: Option<&raw::BudgetsConfig>,
    currency: Option<&str>,
    timezone: &str,
    has_store: bool,
    known: &std::collections::HashSet<&str>,
    p: &mut Problems,
) -> Budgets {
    let Some(raw) = raw else {
        return Budgets::default();
    };
    let timezone = raw.timezone.clone().unwrap_or_else(|| timezone.to_owned());
    if let Err(e) = jiff::tz::TimeZone::get(&timezone) {
        p.push("budgets.timezone", format!("`{timezone}`: {e}"));
    }
    let team_attribute = raw.team_attribute.clone().unwrap_or_else(|| "team".into());
    if team_attribute.is_empty() {
        p.push("budgets.team_attribute", "is empty");
    }
    if currency.is_none() && !raw.limits.is_empty() {
        p.push(
            "budgets",
            "no tool has a price (catalog `price:`), so nothing can spend a budget",
        );
    }
    let mut limits: Vec<Budget> = Vec::new();
    for (i, b) in raw.limits.iter().enumerate() {
        let base = format!("budgets.limits[{i}]");
        if b.name.is_empty() || b.name.len() > 64 || b.name.chars().any(char::is_control) {
            p.push(
                format!("{base}.name"),
                "a name of 1 to 64 printable characters",
            );
        }
        if limits.iter().any(|l| l.name == b.name) {
            p.push(
                format!("{base}.name"),
                format!("`{}` is named twice", b.name),
            );
        }
        let per = match b.per.as_str() {
            "organisation" | "organization" => BudgetScope::Organisation,
            "tenant" => BudgetScope::Tenant,
            "team" => BudgetScope::Team,
            "principal" => BudgetScope::Principal,
            "session" => BudgetScope::Session,
            o => {
                p.push(
                    format!("{base}.per"),
                    format!("`{o}` is not organisation, tenant, team, principal or session"),
                );
                BudgetScope::Organisation
            }
        };
        let period = match b.period.as_str() {
            "day" => Period::Day,
            "month" => Period::Month,
            o => {
                p.push(
                    format!("{base}.period"),
                    format!("`{o}` is not day or month"),
                );
                Period::Month
            }
        };
        let limit = match crate::access::micros(&b.amount) {
            Ok(0) => {
                p.push(format!("{base}.amount"), "must be more than zero");
                0
            }
            Ok(v) => v,
            Err(e) => {
                p.push(format!("{base}.amount"), e);
                0
            }
        };
        let mut alerts: Vec<u64> = Vec::new();
        for (j, a) in b
            .alerts
            .clone()
            .unwrap_or_else(|| vec![0.8])
            .iter()
            .enumerate()
        {
            if !(a.is_finite() && *a > 0.0 && *a <= 1.0) {
                p.push(
                    format!("{base}.alerts[{j}]"),
                    "a fraction of the amount above 0 and at most 1",
                );
                continue;
            }
            alerts.push((a * 1_000_000.0).round() as u64);
        }
        alerts.sort_unstable();
        alerts.dedup();
        for (j, s) in b.servers.iter().enumerate() {
            if !known.contains(s.as_str()) {
                p.push(format!("{base}.servers[{j}]"), format!("no server `{s}`"));
            }
        }
        let global = if b.global {
            if !has_store {
                p.push(format!("{base}.global"), "needs the `redis` section");
            }
            Some(match b.on_store_failure.as_deref() {
                None | Some("closed") => StoreFailure::Closed,
                Some("local") => StoreFailure::Local,
                Some(o) => {
                    p.push(
                        format!("{base}.on_store_failure"),
                        format!("`{o}` is not closed or local"),
                    );
                    StoreFailure::Closed
                }
            })
        } else {
            if b.on_store_failure.is_some() {
                p.push(
                    format!("{base}.on_store_failure"),
                    "applies to `global: true` budgets only",
                );
            }
            None
        };
        let mut h = Sha256::new();
        h.update(format!("{}|{}|{:?}", b.name, per.as_str(), period));
        let digest = h.finalize();
        let mut definition = [0u8; 16];
        definition.copy_from_slice(&digest[..16]);
        limits.push(Budget {
            name: b.name.clone(),
            per,
            period,
            limit,
            tenants: b
                .tenants
                .iter()
                .map(|t| crate::person::canonical_or_marked(t))
                .collect(),
            teams: b
                .teams
                .iter()
                .map(|t| crate::person::strict_key(t))
                .collect(),
            servers: b.servers.clone(),
            alerts,
            global,
            definition,
        });
    }
    Budgets {
        timezone,
        team_attribute,
        currency: currency.unwrap_or_default().to_owned(),
        limits,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn read(yaml: &str, currency: Option<&str>, store: bool) -> (Budgets, Problems) {
        let raw: raw::BudgetsConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut p = Problems::new("warden.yaml");
        let known = ["crm"].into_iter().collect();
        let b = budgets(Some(&raw), currency, "UTC", store, &known, &mut p);
        (b, p)
    }

    #[test]
    fn a_budget_is_read_in_millionths_with_its_alerts() {
        let (b, p) = read(
            "timezone: Europe/Paris\nlimits:\n- {name: acme, per: tenant, period: month, amount: \"12.50\", tenants: [ACME], alerts: [0.9, 0.5, 0.9], global: true}\n",
            Some("EUR"),
            true,
        );
        assert!(p.is_empty(), "{p:?}");
        let l = &b.limits[0];
        assert_eq!(l.limit, 12_500_000);
        assert_eq!(l.alerts, vec![500_000, 900_000]);
        assert_eq!(l.per, BudgetScope::Tenant);
        assert_eq!(l.period, Period::Month);
        assert_eq!(l.global, Some(StoreFailure::Closed));
        assert_eq!(b.currency, "EUR");
        assert_eq!(b.timezone, "Europe/Paris");
        assert_eq!(b.team_attribute, "team");
    }

    #[test]
    fn every_mistake_is_named() {
        let (_, p) = read(
            "timezone: Mars/Olympus\nlimits:\n- {name: a, per: galaxy, period: year, amount: \"-1\", servers: [nope], alerts: [1.5], global: true, on_store_failure: maybe}\n- {name: a, per: tenant, period: day, amount: 0, on_store_failure: local}\n",
            None,
            false,
        );
        let text = format!("{p:?}");
        for want in [
            "budgets.timezone",
            "no tool has a price",
            "limits[0].per",
            "limits[0].period",
            "limits[0].amount",
            "limits[0].servers[0]",
            "limits[0].alerts[0]",
            "limits[0].global",
            "limits[0].on_store_failure",
            "limits[1].name",
            "limits[1].amount",
            "limits[1].on_store_failure",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
    }

    /// Raising a budget's amount keeps what was spent this period: the
    /// counters are named by the budget's name, scope and period only.
    #[test]
    fn the_amount_is_not_part_of_what_spend_is_counted_under() {
        let (a, _) = read(
            "limits:\n- {name: x, per: tenant, period: day, amount: 1}\n",
            Some("USD"),
            false,
        );
        let (b, _) = read(
            "limits:\n- {name: x, per: tenant, period: day, amount: 2, tenants: [t]}\n",
            Some("USD"),
            false,
        );
        let (c, _) = read(
            "limits:\n- {name: x, per: tenant, period: month, amount: 1}\n",
            Some("USD"),
            false,
        );
        assert_eq!(a.limits[0].definition, b.limits[0].definition);
        assert_ne!(a.limits[0].definition, c.limits[0].definition);
    }
}
