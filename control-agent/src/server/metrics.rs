//! The agent's own metrics (`GET /metrics`), read fresh at each scrape.

use crate::server::Api;

/// The agent's own metrics.
pub struct Metrics {
    registry: prometheus::Registry,
    pub(crate) waiting: prometheus::IntGauge,
    pub(crate) oldest: prometheus::Gauge,
    pub(crate) decisions: prometheus::IntCounterVec,
    pub(crate) claims: prometheus::IntCounterVec,
    console_sessions: prometheus::IntGauge,
    /// (address, token) pairs proven right, let past an address's lockout.
    proven_tokens: prometheus::IntGauge,
    /// Records in the audit store.
    pub(crate) audit_rows: prometheus::IntGauge,
    pub(crate) audit_bytes: prometheus::IntGauge,
    pub(crate) bundle_expires: prometheus::IntGauge,
    pub(crate) resign_failures: prometheus::IntCounter,
    /// Audit lines shipped by gateways, by result.
    pub(crate) audit_ingested: prometheus::IntCounterVec,
    /// Audit records stored unpriced: their `cost` could not be read.
    pub(crate) audit_unreadable_costs: prometheus::IntCounter,
    /// Notifications of held calls (`--notify`), by webhook and outcome.
    pub(crate) notifications: prometheus::IntCounterVec,
    /// (held call, webhook) pairs whose retries the notifier keeps.
    pub(crate) notify_retries: prometheus::IntGauge,
    /// Notifications of budget alerts, by webhook and outcome.
    pub(crate) budget_alert_notifications: prometheus::IntCounterVec,
    /// Budget alerts queued for the webhooks at ingest.
    pub(crate) budget_alerts_queued: prometheus::IntCounter,
    /// Budget alerts the full queue had no room for.
    pub(crate) budget_alerts_dropped: prometheus::IntCounter,
    /// 1 while this agent holds the jobs lease (always, on its own files).
    jobs_lease: prometheus::IntGauge,
    /// The lease the gauge reads (`None`: the agent's alone).
    lease: Option<std::sync::Arc<crate::pg::Lease>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = prometheus::Registry::new();
        let waiting = prometheus::IntGauge::new(
            "warden_agent_approvals_waiting",
            "Held calls waiting for their approvers",
        )
        .expect("metric");
        let oldest = prometheus::Gauge::new(
            "warden_agent_approval_oldest_wait_seconds",
            "How long the oldest waiting approval has waited",
        )
        .expect("metric");
        let decisions = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "warden_agent_approval_decisions_total",
                "Approvers' answers, by verdict",
            ),
            &["verdict"],
        )
        .expect("metric");
        let claims = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "warden_agent_approval_claims_total",
                "Gateways' claims of held calls, by answer",
            ),
            &["answer"],
        )
        .expect("metric");
        let console_sessions = prometheus::IntGauge::new(
            "warden_agent_console_sessions",
            "Console sessions open (bounded by the console's session table)",
        )
        .expect("metric");
        let proven_tokens = prometheus::IntGauge::new(
            "warden_agent_proven_tokens",
            "Tokens proven right from an address, let past its lockout (bounded at 4096)",
        )
        .expect("metric");
        let audit_rows = prometheus::IntGauge::new(
            "warden_agent_audit_rows",
            "Audit records kept in the agent's store",
        )
        .expect("metric");
        let bundle_expires = prometheus::IntGauge::new(
            "warden_agent_bundle_expires_timestamp_seconds",
            "When the first served bundle's signature expires (Unix seconds; 0: none expires)",
        )
        .expect("metric");
        let resign_failures = prometheus::IntCounter::new(
            "warden_agent_resign_failures_total",
            "Re-signs of what is served that failed (tried again; the change record says why)",
        )
        .expect("metric");
        let audit_bytes = prometheus::IntGauge::new(
            "warden_agent_audit_bytes",
            "Bytes of the agent's audit store in use (records, lines, indexes; bounded by --audit-max-bytes)",
        )
        .expect("metric");
        let audit_ingested = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "warden_agent_audit_ingested_total",
                "Audit lines shipped by gateways, by result (accepted, duplicate, refused)",
            ),
            &["result"],
        )
        .expect("metric");
        let audit_unreadable_costs = prometheus::IntCounter::new(
            "warden_agent_audit_unreadable_costs_total",
            "Audit records stored unpriced because their `cost` member could not be read (the record is kept; spend reports leave it out)",
        )
        .expect("metric");
        let notifications = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "warden_agent_notifications_total",
                "Attempts to notify webhooks of held calls, by webhook and outcome (sent, failed, given_up)",
            ),
            &["webhook", "outcome"],
        )
        .expect("metric");
        let notify_retries = prometheus::IntGauge::new(
            "warden_agent_notify_retries",
            "Held calls and budget alerts, times webhooks, whose notification retries the notifier keeps (bounded by the pending approvals and the alerts read a round, times the webhooks)",
        )
        .expect("metric");
        let budget_alert_notifications = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "warden_agent_budget_alert_notifications_total",
                "Attempts to notify webhooks of budget alerts, by webhook and outcome (sent, failed, given_up, expired)",
            ),
            &["webhook", "outcome"],
        )
        .expect("metric");
        let budget_alerts_queued = prometheus::IntCounter::new(
            "warden_agent_budget_alerts_queued_total",
            "Budget alerts read from ingested audit records and queued for the webhooks",
        )
        .expect("metric");
        let budget_alerts_dropped = prometheus::IntCounter::new(
            "warden_agent_budget_alerts_dropped_total",
            "Budget alerts not queued for the webhooks because the queue was full (the records are stored)",
        )
        .expect("metric");
        let jobs_lease = prometheus::IntGauge::new(
            "warden_agent_jobs_lease_held",
            "1 while this agent runs the background jobs (agents on one database take turns; alone: always 1)",
        )
        .expect("metric");
        for c in [
            Box::new(jobs_lease.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(audit_rows.clone()),
            Box::new(audit_bytes.clone()),
            Box::new(bundle_expires.clone()),
            Box::new(resign_failures.clone()),
            Box::new(audit_ingested.clone()),
            Box::new(audit_unreadable_costs.clone()),
            Box::new(notifications.clone()),
            Box::new(notify_retries.clone()),
            Box::new(budget_alert_notifications.clone()),
            Box::new(budget_alerts_queued.clone()),
            Box::new(budget_alerts_dropped.clone()),
            Box::new(console_sessions.clone()),
            Box::new(proven_tokens.clone()),
            Box::new(waiting.clone()),
            Box::new(oldest.clone()),
            Box::new(decisions.clone()),
            Box::new(claims.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics {
            registry,
            waiting,
            oldest,
            decisions,
            claims,
            console_sessions,
            proven_tokens,
            audit_rows,
            audit_bytes,
            bundle_expires,
            resign_failures,
            audit_ingested,
            audit_unreadable_costs,
            notifications,
            notify_retries,
            budget_alert_notifications,
            budget_alerts_queued,
            budget_alerts_dropped,
            jobs_lease,
            lease: None,
        }
    }
}

impl Metrics {
    /// The metrics of an agent whose jobs run while it holds `lease`.
    pub fn with_lease(lease: std::sync::Arc<crate::pg::Lease>) -> Metrics {
        Metrics {
            lease: Some(lease),
            ..Metrics::default()
        }
    }
}

impl Api {
    /// The metrics in Prometheus' text format, their gauges read now.
    pub(crate) fn metrics_text(&self) -> String {
        let (n, oldest) = self.approvals.waiting(std::time::SystemTime::now());
        self.metrics.waiting.set(n as i64);
        self.metrics.oldest.set(oldest.as_secs_f64());
        self.metrics.audit_rows.set(self.audit.rows() as i64);
        self.metrics.audit_bytes.set(self.audit.bytes() as i64);
        self.metrics.bundle_expires.set(
            self.store
                .earliest_expiry()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64),
        );
        let failed = self
            .store
            .resign_failures
            .load(std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .resign_failures
            .inc_by(failed.saturating_sub(self.metrics.resign_failures.get()));
        self.metrics
            .console_sessions
            .set(self.console.sessions.count() as i64);
        self.metrics
            .proven_tokens
            .set(self.console.sessions.failures.proven() as i64);
        self.metrics.jobs_lease.set(i64::from(
            self.metrics.lease.as_ref().is_none_or(|l| l.held()),
        ));
        prometheus::TextEncoder::new()
            .encode_to_string(&self.metrics.registry.gather())
            .unwrap_or_default()
    }
}
