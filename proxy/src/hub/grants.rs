//! The fleet's just-in-time grants, read from the control agent every
//! [`EVERY`] into the table the policy reads (`input.principal.grants`):
//! a grant approved at the agent reaches every gateway within seconds, and
//! a revoked one leaves as fast. A grant ends at its own `expires_at` on
//! each gateway's clock, read or not; while no agent answers, the grants
//! last read stay (their expiries still end them), and the failure is
//! logged once per change of reason.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

/// How often the grants are read.
pub const EVERY: Duration = Duration::from_secs(2);

pub struct GrantsWatcher {
    pub gateway: Arc<crate::hub::state::Gateway>,
}

#[async_trait]
impl BackgroundService for GrantsWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last_error: Option<String> = None;
        loop {
            if let Some(client) = self.gateway.approvals.get() {
                match client.grants().await {
                    Ok(all) => {
                        if last_error.take().is_some() {
                            tracing::info!("just-in-time grants read from the control agent again");
                        }
                        self.gateway.shared.grants.replace(all, SystemTime::now());
                    }
                    Err(e) => {
                        if last_error.as_deref() != Some(e.as_str()) {
                            tracing::warn!(error = %e, "just-in-time grants not read: those last read stay until they expire");
                            last_error = Some(e);
                        }
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    }
}
