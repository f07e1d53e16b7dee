//! Prometheus metrics, registered once per process.

use prometheus::{
    exponential_buckets, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec,
};
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

pub struct Metrics {
    /// MCP messages by server, method, tool and outcome.
    pub messages: IntCounterVec,
    /// HTTP requests by server, HTTP method and status.
    pub requests: IntCounterVec,
    /// Whole-request latency by server and HTTP method.
    pub latency: HistogramVec,
    /// Request and response body sizes by server and direction.
    pub body_bytes: HistogramVec,
    /// Upstream failures by server and kind.
    pub upstream_errors: IntCounterVec,
    /// Requests refused before proxying, by reason.
    pub refusals: IntCounterVec,
    /// SSE events processed by server.
    pub sse_events: IntCounterVec,
    pub audit_written: IntCounter,
    pub audit_failed: IntCounter,
    pub audit_queue: IntGauge,
    /// Records lost in fail-open mode (queue full).
    pub audit_dropped: IntCounter,
    /// Calls refused in fail-closed mode because the audit could not keep up.
    pub audit_refused: IntCounter,
    /// 1 while the writer is failing to write (disk full, I/O error).
    pub audit_stalled: IntGauge,
    /// Decision-cache lookups of the active bundle by result (`hit`, `miss`),
    /// refreshed at each scrape.
    pub policy_cache: prometheus::IntGaugeVec,
    /// Entries each bounded table holds, and its bound (`limits.memory`).
    pub table_entries: IntGaugeVec,
    pub table_capacity: IntGaugeVec,
    /// Authentication results by method and outcome.
    pub auth: IntCounterVec,
    pub quota_store_up: IntGaugeVec,
    pub quota_store_requests: IntCounterVec,
    pub quota_store_fallbacks: IntCounterVec,
    /// Money budgets' alert thresholds crossed, by budget and threshold.
    pub budget_alerts: IntCounterVec,
    /// Budget reservations the shared store refused or could not answer.
    pub budget_store: IntCounterVec,
    /// DLP findings by detector, direction and action.
    pub dlp_findings: IntCounterVec,
    pub policy_shadow_disagreements: IntCounterVec,
    /// Behaviour signals raised on calls (`anomaly`), by kind.
    pub anomalies: IntCounterVec,
    /// Calls to servers the registry marks deprecated, by server.
    pub deprecated_calls: IntCounterVec,
    /// Calls refused by a quota, by quota name.
    pub quota_denied: IntCounterVec,
    /// Tools quarantined (definition changed, or name refused), refreshed at each scrape.
    pub tools_quarantined: IntGauge,
    /// Bundle reloads by result (`ok`, `failed`).
    pub bundle_reloads: IntCounterVec,
    pub bundle_expires: IntGauge,
    pub inflight: IntGauge,
    pub bundle_info: prometheus::IntGaugeVec,
    /// `tools/call` requests of the HIGH and CRITICAL tiers, by server,
    /// risk and outcome (an alert fires on every CRITICAL one).
    pub risky_calls: IntCounterVec,
    /// Held calls by the control agent's answer (`approved`,
    /// `approval_pending`, `approval_denied`, `approval_unavailable`).
    pub approvals: IntCounterVec,
    /// Upstream tokens from authorization servers, by server, grant and
    /// result (`cached`, `fetched`, `failed`).
    pub outbound_tokens: IntCounterVec,
    pub vault_credentials: IntCounterVec,
    pub spend: IntCounterVec,
    pub unpriced_calls: IntCounterVec,
    /// Replicas taken out of rotation by passive ejection, by server.
    pub ejections: IntCounterVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    Ok(Metrics {
        risky_calls: register_int_counter_vec!(
            "warden_risky_calls_total",
            "tools/call requests of the HIGH and CRITICAL tiers, by server, risk and outcome",
            &["server", "risk", "outcome"]
        )?,
        approvals: register_int_counter_vec!(
            "warden_approvals_total",
            "Held calls by the control agent's answer",
            &["server", "answer"]
        )?,
        ejections: register_int_counter_vec!(
            "warden_upstream_ejections_total",
            "Replicas taken out of rotation after consecutive failed calls, by server",
            &["server"]
        )?,
        outbound_tokens: register_int_counter_vec!(
            "warden_outbound_tokens_total",
            "Upstream tokens from authorization servers, by server, grant and result",
            &["server", "grant", "result"]
        )?,
        spend: register_int_counter_vec!(
            "warden_spend_micros_total",
            "What tool calls cost by the catalog's prices, in millionths of the currency, by tenant, server and currency",
            &["tenant", "server", "currency"]
        )?,
        unpriced_calls: register_int_counter_vec!(
            "warden_unpriced_calls_total",
            "Tool calls answered whose tool has no price in the catalog, by server",
            &["server"]
        )?,
        vault_credentials: register_int_counter_vec!(
            "warden_vault_credentials_total",
            "Credentials from the control agent's vault, by server, kind (per_user, secret) and result (cached, fetched, consent_required, refused, unavailable)",
            &["server", "kind", "result"]
        )?,
        messages: register_int_counter_vec!(
            "warden_mcp_messages_total",
            "MCP messages by server, method, tool and outcome",
            &["server", "direction", "method", "tool", "outcome"]
        )?,
        requests: register_int_counter_vec!(
            "warden_http_requests_total",
            "HTTP requests by server, method and status",
            &["server", "method", "status"]
        )?,
        latency: register_histogram_vec!(
            "warden_request_duration_seconds",
            "Time from request start to the end of the response",
            &["server", "method"],
            exponential_buckets(0.000_05, 2.0, 20)?
        )?,
        body_bytes: register_histogram_vec!(
            "warden_body_bytes",
            "Request and response body sizes",
            &["server", "direction"],
            exponential_buckets(64.0, 4.0, 12)?
        )?,
        upstream_errors: register_int_counter_vec!(
            "warden_upstream_errors_total",
            "Upstream failures by server and kind",
            &["server", "kind"]
        )?,
        refusals: register_int_counter_vec!(
            "warden_refusals_total",
            "Requests refused by the gateway itself, by reason",
            &["reason"]
        )?,
        sse_events: register_int_counter_vec!(
            "warden_sse_events_total",
            "Server-sent events inspected",
            &["server"]
        )?,
        audit_written: register_int_counter!(
            "warden_audit_records_written_total",
            "Audit records written"
        )?,
        audit_failed: register_int_counter!(
            "warden_audit_write_errors_total",
            "Audit records that could not be written"
        )?,
        audit_queue: register_int_gauge!(
            "warden_audit_queue_depth",
            "Audit records waiting to be written"
        )?,
        audit_dropped: register_int_counter!(
            "warden_audit_records_dropped_total",
            "Audit records lost because the queue was full (audit.fail_mode: open)"
        )?,
        audit_refused: register_int_counter!(
            "warden_audit_refused_requests_total",
            "Requests refused because the audit queue was full (audit.fail_mode: closed)"
        )?,
        audit_stalled: register_int_gauge!(
            "warden_audit_writer_stalled",
            "1 while the audit writer cannot write and is retrying"
        )?,
        table_entries: register_int_gauge_vec!(
            "warden_table_entries",
            "Entries a table that grows with sessions or calls holds now",
            &["table"]
        )?,
        table_capacity: register_int_gauge_vec!(
            "warden_table_capacity",
            "The most entries the table keeps (its share of limits.memory)",
            &["table"]
        )?,
        policy_cache: prometheus::register_int_gauge_vec!(
            "warden_policy_cache_lookups",
            "Policy decision-cache lookups since the active bundle was loaded, by result",
            &["result"]
        )?,
        deprecated_calls: register_int_counter_vec!(
            "warden_deprecated_calls_total",
            "Calls to servers the registry marks deprecated, by server",
            &["server"]
        )?,
        policy_shadow_disagreements: register_int_counter_vec!(
            "warden_policy_shadow_disagreements_total",
            "Messages on which the bundle's shadow rule (policy.shadow) decided otherwise than the enforced one, by server and by what was enforced",
            &["server", "enforced"]
        )?,
        anomalies: register_int_counter_vec!(
            "warden_anomalies_total",
            "Behaviour signals raised on tools/call requests against their principal's baseline (anomaly), by kind",
            &["kind"]
        )?,
        dlp_findings: register_int_counter_vec!(
            "warden_dlp_findings_total",
            "DLP findings by detector, direction and action",
            &["detector", "direction", "action"]
        )?,
        quota_denied: register_int_counter_vec!(
            "warden_quota_denied_total",
            "Calls refused by a quota",
            &["limit"]
        )?,
        tools_quarantined: register_int_gauge!(
            "warden_tools_quarantined",
            "Tool definitions quarantined until a bundle approves them"
        )?,
        bundle_reloads: register_int_counter_vec!(
            "warden_bundle_reloads_total",
            "Bundle reloads by result; a failed one keeps the current bundle",
            &["result"]
        )?,
        bundle_expires: register_int_gauge!(
            "warden_bundle_expires_timestamp_seconds",
            "When the running signed bundle's signature expires (Unix seconds; 0: unsigned or never)"
        )?,
        auth: register_int_counter_vec!(
            "warden_auth_total",
            "Authentication attempts by method and result",
            &["method", "result"]
        )?,
        quota_store_up: register_int_gauge_vec!(
            "warden_quota_store_up",
            "1 while the global quota store (Redis) answers",
            &["store"]
        )?,
        quota_store_requests: register_int_counter_vec!(
            "warden_quota_store_requests_total",
            "Lease requests to the global quota store by result",
            &["result"]
        )?,
        quota_store_fallbacks: register_int_counter_vec!(
            "warden_quota_store_fallbacks_total",
            "Global quota checks decided without the store, by on_store_failure mode",
            &["mode"]
        )?,
        budget_alerts: register_int_counter_vec!(
            "warden_budget_alerts_total",
            "Money budgets' alert thresholds crossed (once per holder, threshold and period)",
            &["budget", "threshold"]
        )?,
        budget_store: register_int_counter_vec!(
            "warden_budget_store_total",
            "Global budget reservations refused by the shared store (over) or decided without it (unavailable)",
            &["result"]
        )?,
        inflight: register_int_gauge!("warden_inflight_requests", "Requests in flight")?,
        bundle_info: prometheus::register_int_gauge_vec!(
            "warden_bundle_info",
            "The active bundle revision (value 1)",
            &["revision"]
        )?,
    })
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process-wide metrics. Registration can only fail on a duplicate name,
/// which is a programming error caught by the first test that runs.
#[allow(clippy::expect_used)]
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| build().expect("metric registration"))
}

/// Keeps a label's cardinality bounded: values from clients (tool names) are
/// admitted up to a fixed number of distinct values, then folded into
/// `_other`. An admitted value stays admitted, as its series stays in the
/// registry. Asked on every message: the set is read without a lock and
/// copied on the rare admission (at most `max` of them in a process).
pub struct LabelGuard {
    seen: ArcSwap<HashSet<Box<str>, foldhash::fast::RandomState>>,
    /// Serialises admissions, so that the bound is exact.
    admitting: std::sync::Mutex<()>,
    max: usize,
}

impl LabelGuard {
    pub fn new(max: usize) -> Self {
        LabelGuard {
            seen: ArcSwap::from_pointee(HashSet::default()),
            admitting: std::sync::Mutex::new(()),
            max,
        }
    }
    pub fn admit<'a>(&self, v: &'a str) -> &'a str {
        if v.len() > 128 {
            return "_other";
        }
        if self.seen.load().contains(v) {
            return v;
        }
        let _one = self.admitting.lock().unwrap_or_else(|p| p.into_inner());
        let seen = self.seen.load_full();
        if seen.contains(v) {
            return v;
        }
        if seen.len() >= self.max {
            return "_other";
        }
        let mut next = HashSet::clone(&seen);
        next.insert(v.into());
        self.seen.store(Arc::new(next));
        v
    }
}

/// Counts what a tool call cost: `warden_spend_micros_total` for a
/// priced one (tenants are the callers': the first 1,000 distinct get a
/// label of their own, the rest `_other`), `warden_unpriced_calls_total`
/// for one whose tool has no price.
pub fn spent(tenant: &str, server: &str, cost: &warden_filters::Cost) {
    static TENANTS: OnceLock<LabelGuard> = OnceLock::new();
    let m = metrics();
    match &cost.currency {
        Some(c) => {
            let t = TENANTS.get_or_init(|| LabelGuard::new(1000)).admit(tenant);
            m.spend
                .with_label_values(&[t, server, c])
                .inc_by(cost.micros);
        }
        None => m.unpriced_calls.with_label_values(&[server]).inc(),
    }
}

/// MCP methods get their own label value; anything else a client invents is
/// folded into `_other` so the label set stays bounded.
pub fn method_label(method: Option<&str>) -> &str {
    match method {
        None => "-",
        Some(m) if warden_filters::protocol::jsonrpc::is_mcp_method(m) => m,
        Some(_) => "_other",
    }
}

/// The counters the control agent judges a canary on, summed over every
/// server: client messages judged, those denied, servers' messages judged
/// (`replies`) and those withheld, 5xx answers, and the request latency
/// histogram (cumulative buckets, `+Inf` last). A reply withheld is a
/// refusal as much as a call denied: a bundle that withholds every answer
/// must not look healthy to the canary's judge.
pub fn fleet_stats() -> serde_json::Value {
    let (mut calls, mut denied, mut errors) = (0u64, 0u64, 0u64);
    let (mut replies, mut withheld) = (0u64, 0u64);
    let mut latency: Vec<(f64, u64)> = Vec::new();
    for fam in prometheus::gather() {
        let label = |m: &prometheus::proto::Metric, name: &str| {
            m.get_label()
                .iter()
                .find(|p| p.name() == name)
                .map(|p| p.value().to_owned())
        };
        match fam.name() {
            "warden_mcp_messages_total" => {
                for m in fam.get_metric() {
                    let v = m.get_counter().get_value() as u64;
                    let refused = label(m, "outcome").as_deref() == Some("denied");
                    match label(m, "direction").as_deref() {
                        Some("request") => {
                            calls += v;
                            denied += if refused { v } else { 0 };
                        }
                        Some("response") => {
                            replies += v;
                            withheld += if refused { v } else { 0 };
                        }
                        _ => {}
                    }
                }
            }
            "warden_http_requests_total" => {
                for m in fam.get_metric() {
                    // POST exchanges (what carries calls); a GET stream's
                    // end is no call.
                    if label(m, "method").as_deref() == Some("POST")
                        && label(m, "status").is_some_and(|s| s.starts_with('5'))
                    {
                        errors += m.get_counter().get_value() as u64;
                    }
                }
            }
            "warden_request_duration_seconds" => {
                // POST only: a GET stream lasts as long as the client keeps it.
                for m in fam
                    .get_metric()
                    .iter()
                    .filter(|m| label(m, "method").as_deref() == Some("POST"))
                {
                    let h = m.get_histogram();
                    let mut row: Vec<(f64, u64)> = h
                        .get_bucket()
                        .iter()
                        .map(|b| (b.upper_bound(), b.cumulative_count()))
                        .collect();
                    row.push((f64::INFINITY, h.get_sample_count()));
                    if latency.is_empty() {
                        latency = row;
                    } else if latency.len() == row.len() {
                        for (a, b) in latency.iter_mut().zip(row) {
                            a.1 += b.1;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    // JSON has no infinity: the last bound is written as a large number.
    let latency: Vec<(f64, u64)> = latency
        .into_iter()
        .map(|(le, n)| (if le.is_finite() { le } else { 1e9 }, n))
        .collect();
    serde_json::json!({
        "calls": calls,
        "denied": denied,
        "replies": replies,
        "withheld": withheld,
        "errors": errors,
        "latency": latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_bounded() {
        assert_eq!(method_label(Some("tools/call")), "tools/call");
        assert_eq!(method_label(Some("x/attacker-chosen-1")), "_other");
        assert_eq!(method_label(None), "-");
        let g = LabelGuard::new(3);
        for i in 0..10 {
            let v = format!("tool{i}");
            let got = g.admit(&v).to_owned();
            assert!(i < 3 && got == v || i >= 3 && got == "_other", "{i}: {got}");
        }
        assert_eq!(g.admit("tool1"), "tool1", "admitted values stay admitted");
        assert_eq!(g.admit(&"x".repeat(200)), "_other");
    }

    /// What the agent judges a canary on counts the servers' messages a
    /// guard withheld, not only the calls it denied: a bundle that lets
    /// every call through and withholds every answer is not healthy.
    #[test]
    fn fleet_stats_count_replies_withheld() {
        let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
        let before = fleet_stats();
        let m = metrics();
        let count = |dir: &str, outcome: &str, by: u64| {
            m.messages
                .with_label_values(&["fleet-stats-test", dir, "tools/call", "-", outcome])
                .inc_by(by)
        };
        count("request", "forwarded", 5);
        count("request", "denied", 1);
        count("response", "denied", 4);
        count("response", "forwarded", 2);
        let after = fleet_stats();
        // Other tests of the process may count messages meanwhile: at
        // least what this one did is seen.
        assert!(n(&after, "calls") >= n(&before, "calls") + 6, "{after}");
        assert!(n(&after, "denied") > n(&before, "denied"), "{after}");
        assert!(n(&after, "replies") >= n(&before, "replies") + 6, "{after}");
        assert!(
            n(&after, "withheld") >= n(&before, "withheld") + 4,
            "{after}"
        );
        assert!(n(&after, "withheld") <= n(&after, "replies"), "{after}");
    }
}
