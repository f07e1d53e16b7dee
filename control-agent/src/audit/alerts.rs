//! Budget alerts: the `"budget": {"alerts": [...]}` member a gateway puts
//! on the audit record of the charge that took a money budget's holder
//! across one of its alert thresholds (docs/guards.md, "Budgets").
//!
//! When the store keeps a record for the first time, each alert it carries
//! is queued in the store (`budget_alerts` on SQLite,
//! `warden_budget_alerts` on PostgreSQL, in the same transaction as the
//! record) for the notifier (`crate::notify`) to deliver to the webhooks
//! that hear of `budget_alerts`. A batch sent again stores no record again
//! and so queues no alert again; each alert also has a key (its gateway,
//! its line's hash, its place in the line) that is unique in the queue.
//!
//! - **Only when asked.** Alerts are queued only by a store told to
//!   ([`super::AuditStore::queue_alerts`]: `serve --notify` with a webhook
//!   that hears of budget alerts).
//! - **Bounded.** At most the bound given of alerts wait (not yet
//!   delivered to every webhook that wants them nor given up); past it an
//!   alert is dropped, counted ([`super::Ingested::alerts_dropped`],
//!   `warden_agent_budget_alerts_dropped_total`) and logged.
//! - **Remembered.** Which webhooks took an alert is kept with it
//!   ([`super::AuditStore::alert_sent`]), so none is sent it twice after
//!   it answered 2xx, whichever agent delivers; an alert that every
//!   webhook took (or that was given up) is marked done, and forgotten a
//!   day later ([`KEEP_DONE_US`]).
//! - **Never a refusal.** An alert that cannot be read (not an object, a
//!   member missing) is skipped; the record is stored as ever.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Alerts that may wait for delivery at once (`serve` queues up to it).
pub const MAX_QUEUED: usize = 10_000;
/// Alerts read from one record at most.
const MAX_PER_RECORD: usize = 16;
/// Characters of one field kept at most.
const MAX_TEXT: usize = 256;
/// How long an alert marked done is kept (microseconds).
pub const KEEP_DONE_US: i64 = 86_400 * 1_000_000;

/// One alert, with the record it came on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetAlert {
    /// Unique in the queue: the same on every agent for the same line.
    pub key: String,
    pub gateway: String,
    pub tenant: String,
    pub principal: String,
    pub server: String,
    pub tool: Option<String>,
    /// The record's time, as it says it.
    pub ts: String,
    pub trace_id: String,
    pub budget: String,
    /// What the budget is held per (`tenant`, `principal`, `team`, …).
    pub per: String,
    pub holder: String,
    /// The fraction of the limit crossed, as the gateway wrote it (`0.8`).
    pub threshold: String,
    pub spent: String,
    pub limit: String,
    pub currency: String,
    pub period: String,
    pub resets_at: String,
}

/// An alert waiting in the queue.
#[derive(Debug, Clone)]
pub struct PendingAlert {
    /// Its row in the queue.
    pub id: i64,
    /// When it was queued (unix microseconds).
    pub queued_us: i64,
    pub alert: BudgetAlert,
    /// The webhooks that took it.
    pub sent: Vec<String>,
}

/// A value as text: a string as it is, a number as written; anything else
/// is not read. NULs become U+FFFD (PostgreSQL's text holds none), and at
/// most [`MAX_TEXT`] characters are kept.
fn text(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(s.replace('\0', "\u{fffd}").chars().take(MAX_TEXT).collect())
}

/// The key of a line's `n`th alert.
fn key(gateway: &str, hash: &[u8; 32], n: usize) -> String {
    let mut h = Sha256::new();
    h.update(gateway.as_bytes());
    h.update([0]);
    h.update(hash);
    format!("{}-{n}", &hex::encode(h.finalize())[..32])
}

/// The budget alerts of the line `raw` (already checked as a record) that
/// `gateway` sent, whose hash in the chain is `hash`.
pub(super) fn alerts_in(raw: &str, gateway: &str, hash: &[u8; 32]) -> Vec<BudgetAlert> {
    // Most lines carry none; a member name may be escaped.
    if !raw.contains("alerts") && !raw.contains("\\u") {
        return Vec::new();
    }
    let Ok(Value::Object(rec)) = serde_json::from_str::<Value>(raw) else {
        return Vec::new();
    };
    let Some(Value::Array(list)) = rec.get("budget").and_then(|b| b.get("alerts")) else {
        return Vec::new();
    };
    let of = |k: &str| text(rec.get(k)).unwrap_or_default();
    let mut out = Vec::new();
    for (n, a) in list.iter().take(MAX_PER_RECORD).enumerate() {
        let field = |k: &str| text(a.get(k));
        let (Some(budget), Some(holder), Some(threshold)) =
            (field("budget"), field("holder"), field("threshold"))
        else {
            tracing::warn!(
                gateway,
                "a budget alert without its budget, holder or threshold was not queued"
            );
            continue;
        };
        out.push(BudgetAlert {
            key: key(gateway, hash, n),
            gateway: gateway.to_owned(),
            tenant: of("tenant"),
            principal: of("principal"),
            server: of("server"),
            tool: text(rec.get("tool")),
            ts: of("ts"),
            trace_id: of("trace_id"),
            budget,
            per: field("per").unwrap_or_default(),
            holder,
            threshold,
            spent: field("spent").unwrap_or_default(),
            limit: field("limit").unwrap_or_default(),
            currency: field("currency").unwrap_or_default(),
            period: field("period").unwrap_or_default(),
            resets_at: field("resets_at").unwrap_or_default(),
        });
    }
    out
}

/// The webhooks a `sent` column names (comma-separated: webhook names are
/// letters, digits, `-` and `_`).
pub(super) fn sent_of(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_records_alerts_are_read_with_the_record_and_a_bad_one_is_skipped() {
        let raw = serde_json::json!({
            "seq": 1, "prev": "00", "ts": "2026-11-20T10:00:00Z", "tenant": "acme",
            "principal": "agent-7", "server": "llm", "tool": "chat", "trace_id": "t-1",
            "budget": {"alerts": [
                {"budget": "acme-month", "per": "tenant", "holder": "acme", "threshold": "0.8",
                 "spent": "8.100000", "limit": "10.000000", "currency": "EUR",
                 "period": "2026-11", "resets_at": "2026-12-01T00:00:00+01:00"},
                {"per": "tenant"},
                {"budget": "b\u{0}x", "holder": "acme", "threshold": 0.5}
            ]}
        })
        .to_string();
        let a = alerts_in(&raw, "gw-1", &[7; 32]);
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!(a[0].budget, "acme-month");
        assert_eq!(a[0].tenant, "acme");
        assert_eq!(a[0].tool.as_deref(), Some("chat"));
        assert_eq!(a[0].resets_at, "2026-12-01T00:00:00+01:00");
        assert_eq!(a[1].threshold, "0.5");
        assert_eq!(a[1].budget, "b\u{fffd}x");
        // The keys differ by place, and are the same for the same line.
        assert_ne!(a[0].key, a[1].key);
        assert_eq!(alerts_in(&raw, "gw-1", &[7; 32]), a);
        assert_ne!(alerts_in(&raw, "gw-2", &[7; 32])[0].key, a[0].key);
        // No alerts, or not a list: none.
        assert!(alerts_in(r#"{"seq":1,"budget":{"alerts":"x"}}"#, "g", &[0; 32]).is_empty());
        assert!(alerts_in(r#"{"seq":1,"tool":"alerts"}"#, "g", &[0; 32]).is_empty());
    }
}
