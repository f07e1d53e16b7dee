//! The guards: one [`McpFilter`](crate::chain::filter::McpFilter) each, a
//! file or a folder. `snapshot` chains them in this order: `tasks`,
//! `cancel`, `kill_switch`, `mrtr`, `handles`, `scopes`, `quota`, `runaway`,
//! `targets`, `policy_filter`, `tools` (pins), `mirror`, `tools` (schemas), `egress`,
//! DLP, `approval`. On server→client messages DLP runs first (see
//! `McpFilter::reply_first`).

pub mod approval;
pub mod cancel;
pub mod dlp;
pub mod egress;
pub mod flow;
pub mod handles;
pub mod kill_switch;
pub mod mirror;
pub mod mrtr;
pub mod policy_filter;
pub mod quota;
pub mod registry;
pub mod runaway;
pub mod scopes;
pub mod targets;
#[cfg(test)]
mod targets_tests;
pub mod tasks;
#[cfg(test)]
pub(crate) mod tenant_fixture;
pub mod tenants;
pub mod tools;
