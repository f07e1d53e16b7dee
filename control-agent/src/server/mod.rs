//! The agent's HTTP layer: the route table ([`routes`]), what handlers
//! take from a request ([`extract`]), the one error type ([`error`]), the
//! connection limits and accept loop ([`conn`]) and its own metrics
//! ([`metrics`]). The handlers are in
//! [`crate::api`] and [`crate::console`]; who calls is a
//! [`Caller`](crate::caller::Caller).
//!
//! A wrong bearer token counts against its address as a failed console
//! login does (one allowance for both, [`crate::console::session::Failures`]);
//! past it every token of the address gets 429 with `Retry-After`.

use std::sync::Arc;

use crate::admins::{Actor, Admin};
use crate::approvals::Approvals;
use crate::store::Store;

mod conn;
pub mod error;
pub mod extract;
mod metrics;
pub mod routes;
pub mod tls;
#[cfg(test)]
mod tls_tests;

pub use crate::caller::MIN_TOKEN_LEN;
pub use crate::caller::{read_gateway_tokens, Tokens};
pub use conn::{serve, serve_with, ConnLimits};
pub use extract::PeerAddr;
pub use metrics::Metrics;

/// Everything the agent's handlers share.
pub struct Api {
    pub store: Arc<Store>,
    pub tokens: Tokens,
    pub approvals: Arc<Approvals>,
    pub metrics: Metrics,
    /// Audit records shipped by the gateways (search, live, verification).
    pub audit: Arc<crate::audit::AuditStore>,
    /// The web console's sessions and viewers (`/console`).
    pub console: crate::console::state::Console,
    /// Org admins, org reviewers and tenant admins (`--admins`).
    pub admins: std::collections::BTreeMap<String, Admin>,
    /// Per-user credentials and the vault (`--vault-keys`, `--connections`).
    pub connect: Option<Arc<crate::connect::Connect>>,
}

impl Api {
    /// Who a bearer token makes its bearer ([`crate::caller::identify`]).
    pub fn caller(&self, token: &str) -> Option<crate::caller::Caller> {
        crate::caller::identify(
            token,
            &crate::caller::Known {
                tokens: &self.tokens,
                admins: &self.admins,
                approvers: &self.approvals.approvers,
                viewers: &self.console.viewers,
            },
        )
    }

    /// Refuses `actor`'s request (403) and writes it to the change record.
    pub(crate) fn refuse(&self, actor: &Actor, what: &str, why: &str) -> error::ApiError {
        self.store.record(
            &actor.label(),
            "refused",
            None,
            false,
            &format!("{what}: {why}"),
        );
        error::ApiError::forbidden(why)
    }
}

#[cfg(test)]
#[path = "../fleet_http_tests.rs"]
pub(crate) mod fleet_http_tests;
