//! The guards: one [`McpFilter`](crate::chain::filter::McpFilter) each, a
//! file or a folder named as the guard's audit name (`filter` in a
//! denial's record). `snapshot` chains them in this order: `task_binding`,
//! `kill_switch`, `input_state`, `cursor`, `scopes`, `quota`, `runaway`,
//! `names`, `anomaly`, `policy`, `tools` (`tool_pinning`), `mirrored_headers`, `tools`
//! (`schema`), `egress`, DLP, (flows' reply half), `cancel`, `budget`,
//! `approval`. A
//! reply DLP rewrote is judged again by the content guards before it (see
//! `McpFilter::rewrites_content`).

pub mod anomaly;
pub mod approval;
pub mod budget;
pub mod cancel;
pub mod cursor;
pub mod dlp;
pub mod egress;
pub mod flow;
pub mod input_state;
pub mod kill_switch;
pub mod lists;
pub mod mirrored_headers;
pub mod names;
#[cfg(test)]
mod names_tests;
pub mod policy;
pub mod quota;
pub mod registry;
pub mod runaway;
pub mod scopes;
pub mod task_binding;
#[cfg(test)]
pub(crate) mod tenant_fixture;
pub mod tenants;
pub mod tools;
