//! The API's handlers, one module per domain. Each takes what it needs
//! through extractors ([`crate::server::extract`]) and answers a value or
//! an [`ApiError`](crate::server::error::ApiError); the route table
//! ([`crate::server::routes`]) says who reaches which. Below a handler
//! there is no HTTP: the store, the approvals, the registry and the audit
//! store know nothing of requests.

pub mod approvals;
pub mod audit;
pub mod bundles;
pub mod fleet;
pub mod grants;
pub mod registry;
pub mod rollout;
pub mod spend;
pub mod tenants;
pub mod vault;

use std::sync::Arc;

use axum::extract::State;

/// The agent's state, as handlers take it.
pub(crate) type Agent = State<Arc<crate::server::Api>>;

/// Runs `f` off the runtime's workers: on a database, the store's and the
/// approvals' calls wait for the database (and for a fleet-wide turn),
/// which must not hold the workers every other request runs on.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, crate::server::error::ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(crate::server::error::ApiError::internal)
}

#[cfg(test)]
#[path = "../governance_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "../governance_attack_tests.rs"]
mod attack_tests;
