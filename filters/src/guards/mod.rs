//! The guards: one [`McpFilter`](crate::chain::filter::McpFilter) each, a
//! file or a folder. `snapshot` chains them in this order: `tasks`,
//! `kill_switch`, `mrtr`, `handles`, `scopes`, `quota`, `runaway`,
//! `targets`, `policy_filter`, `tools` (pins), `mirror`, `tools` (schemas), `egress`,
//! DLP, (flows' reply half), `cancel`, `approval`. A reply DLP rewrote is
//! judged again by the content guards before it (see
//! `McpFilter::rewrites_content`).

pub mod approval;
pub mod cancel;
pub mod dlp;
pub mod egress;
pub mod flow;
pub mod handles;
pub mod kill_switch;
pub mod lists;
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
