//! The gateway hub: what the request path shares across requests (the
//! current runtime, sessions, the ledger, the audit sink, labels, span
//! export). Only the request path and the wiring (`server`, `admin`) use it;
//! background services get the narrow handles they need instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::hub::runtime::{Current, Runtime};
use crate::observability::audit::AuditSink;
use crate::observability::metrics::LabelGuard;
use crate::sessions::sticky::Sessions;

pub struct Gateway {
    /// The runtime every request loads once (bundle, pools, fleet settings).
    pub current: Arc<Current>,
    /// Which replica serves each session, and who opened it.
    pub sessions: Sessions,
    pub audit: AuditSink,
    pub tool_labels: LabelGuard,
    /// Which request each reply answers, across exchanges (see `ledger`).
    pub ledger: crate::sessions::ledger::Ledger,
    pub bundles: Arc<crate::hub::bundles::BundleState>,
    /// Quota counters and tool pins, carried across bundle swaps.
    pub shared: Arc<warden_filters::snapshot::Shared>,
    /// Span export (OTLP), when configured.
    pub telemetry: std::sync::OnceLock<crate::observability::otel::Telemetry>,
    /// Requests per principal, for `/top` (bounded).
    pub live: crate::observability::live::Live,
    /// Set once a hand-over (SIGQUIT) or a drain (SIGTERM) starts: every
    /// response from then on closes its HTTP/1.1 connection gracefully
    /// (`Connection: close`), so a client's next request opens a connection
    /// the new process accepts instead of racing this one's close.
    pub leaving: std::sync::atomic::AtomicBool,
    /// Where held calls are claimed (the control agent), when there is one.
    pub approvals: std::sync::OnceLock<crate::hub::approval_client::ApprovalClient>,
    /// Where credentials kept in the vault are fetched (the control agent).
    pub vault: std::sync::OnceLock<crate::hub::vault_client::VaultClient>,
    /// Upstream tokens from authorization servers (see `outbound`).
    pub tokens: crate::identity::outbound::TokenCache,
    next_request: AtomicU64,
    /// The budget the tables took their bounds from, at start.
    pub budget: warden_config::model::MemoryBudget,
}

impl Gateway {
    pub fn new(
        rt: Runtime,
        audit: AuditSink,
        source: String,
        shared: Arc<warden_filters::snapshot::Shared>,
    ) -> Gateway {
        let revision = rt.snap.revision.clone();
        let budget = rt.snap.config.limits.memory;
        use warden_config::model::Table;
        Gateway {
            telemetry: std::sync::OnceLock::new(),
            current: Arc::new(Current::new(rt)),
            sessions: Sessions::new(budget.entries(Table::Sessions)),
            bundles: Arc::new(crate::hub::bundles::BundleState::new(source, revision)),
            shared,
            audit,
            tool_labels: LabelGuard::new(1000),
            // Two caches (asked and owed) share the ledger's share.
            ledger: crate::sessions::ledger::Ledger::new(
                budget.entries(Table::Ledger) / 2,
                Duration::from_secs(3600),
            ),
            next_request: AtomicU64::new(1),
            live: crate::observability::live::Live::new(budget.entries(Table::Live).min(10_000)),
            leaving: std::sync::atomic::AtomicBool::new(false),
            approvals: std::sync::OnceLock::new(),
            vault: std::sync::OnceLock::new(),
            tokens: Default::default(),
            budget,
        }
    }

    /// Sets the table gauges: entries held and bound, per table.
    pub fn report_tables(&self) {
        use warden_config::model::Table;
        let m = crate::observability::metrics::metrics();
        let budget = self.budget;
        for t in Table::ALL {
            let held = match t {
                Table::Ledger => {
                    self.ledger.sync();
                    self.ledger.len()
                }
                Table::Sessions => self.sessions.len(),
                Table::Quotas => self.shared.quotas.len(),
                Table::Runaway => self.shared.runaway.len(),
                Table::Tasks => self.shared.task_owners.len(),
                Table::Live => self.live.len(),
                Table::Flows => self.shared.flows.len(),
                Table::Names => self.shared.listed.len() as u64,
                Table::Grants => self.shared.grants.len() as u64,
                Table::Credentials => self.vault.get().map_or(0, |v| v.weight()),
                Table::Budgets => self.shared.budgets.len(),
                Table::Baselines => self.shared.baselines.len() as u64,
            };
            m.table_entries
                .with_label_values(&[t.as_str()])
                .set(held as i64);
            m.table_capacity
                .with_label_values(&[t.as_str()])
                .set(budget.entries(t) as i64);
        }
    }

    /// True once this process hands its sockets over or drains.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// The global quota store, when the current bundle has one.
    pub fn quota_store(&self) -> Option<Arc<crate::hub::quota_store::QuotaStore>> {
        self.current.quota_store()
    }

    /// The runtime a request uses from start to end.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load()
    }

    /// Where new bundles are published (the watcher, the admin reload).
    pub fn publisher(&self) -> crate::hub::bundles::Publisher {
        crate::hub::bundles::Publisher {
            current: self.current.clone(),
            shared: self.shared.clone(),
            status: self.bundles.clone(),
        }
    }

    pub fn next_request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }
}
