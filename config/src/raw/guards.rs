//! The guards on calls: `quotas:`, `redis:`, `schemas:`, `egress:`,
//! `dlp:`, `runaway:` and `approvals:` (read into `crate::guards`).

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Distinct approvers a call of each risk tier needs (`HIGH: 1`,
    /// `CRITICAL: 2`); tiers not named need none unless the policy asks.
    #[serde(default)]
    pub require: BTreeMap<String, u8>,
    /// How long an approved call stays usable (default 15m).
    #[serde(default)]
    pub expires: Option<String>,
    /// How long a held call waits for its approvers (default 1h).
    #[serde(default)]
    pub pending: Option<String>,
    /// Where approvers act, shown to the caller; `{id}` is replaced by the
    /// approval id (default: the agent's `/v1/approvals/{id}`).
    #[serde(default)]
    pub url: Option<String>,
    /// How long the gateway waits for the agent (default 3s).
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunawayConfig {
    /// Budgets per MCP session (on top of the per-principal quotas).
    #[serde(default)]
    pub session: Option<SessionBudgetConfig>,
    /// The same tool with the same arguments, over and over.
    #[serde(default)]
    pub loops: Option<LoopConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBudgetConfig {
    /// Tool calls per session.
    #[serde(default)]
    pub calls: Option<u64>,
    /// How long after its first call a session may still call tools.
    #[serde(default)]
    pub duration: Option<String>,
    /// Calls of one tool per session, by tool name.
    #[serde(default)]
    pub per_tool: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// The most times the same call may be made within `window`.
    pub max_repeats: u64,
    pub window: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpConfig {
    /// First matching rule wins.
    #[serde(default)]
    pub rules: Vec<DlpRuleConfig>,
    #[serde(default)]
    pub custom: Vec<CustomDetectorConfig>,
    /// Environment variable holding the key of `hash: true` redaction tokens
    /// (default: a random key per process).
    #[serde(default)]
    pub hash_key_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpRuleConfig {
    pub name: String,
    /// Detector names, `prefix_*`, `category:pii|secret|injection`, or `*`.
    pub detectors: Vec<String>,
    /// block, redact, strip or log (`flag` = log).
    pub action: String,
    /// request, response or both (default).
    #[serde(default)]
    pub direction: Option<String>,
    /// Only for tools at least this risky.
    #[serde(default)]
    pub min_risk: Option<String>,
    #[serde(default)]
    pub mask: Option<String>,
    #[serde(default)]
    pub hash: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetectorConfig {
    pub name: String,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub anchors: Vec<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub dictionary_sha256: Vec<String>,
    /// Counts as a secret (`category:secret`) rather than personal data.
    #[serde(default)]
    pub secret: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Stable name (metrics, denials, and counters that survive a bundle swap).
    pub name: String,
    /// What one counter is kept per: any of principal, tenant, server, group, tool.
    #[serde(default)]
    pub per: Vec<String>,
    /// Calls (or cost units, with `weighted`) allowed per `window`.
    #[serde(default)]
    pub limit: Option<u64>,
    /// `1s` … `1d`.
    #[serde(default)]
    pub window: Option<String>,
    /// Calls in flight at once (instead of `limit`/`window`).
    #[serde(default)]
    pub concurrency: Option<u64>,
    /// Count each call at its tool's `cost` from the catalog (default 1).
    #[serde(default)]
    pub weighted: bool,
    /// `false`: a pingora-limits estimate (count-min sketch; may refuse a
    /// little early, never admits more). Default true: exact counters.
    #[serde(default)]
    pub exact: Option<bool>,
    /// Only calls matching all the given lists count (empty: any).
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Methods counted (default `[tools/call]`).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Enforce the limit across every replica through the `redis` store.
    #[serde(default)]
    pub global: bool,
    /// Global quotas while the store is unreachable: `local` (default: each
    /// replica enforces the limit on its own) or `closed` (refuse).
    #[serde(default)]
    pub on_store_failure: Option<String>,
}

/// The shared store for global quotas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]` (`rediss://` for TLS).
    pub url: String,
    /// Units a replica takes from the store per round trip (default: 1 % of
    /// the limit, at least 1, at most 1000).
    #[serde(default)]
    pub lease: Option<u64>,
    /// Longest wait for the store before its failure mode applies (default 250ms).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Key prefix (default `warden:`), so fleets can share one Redis.
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemasConfig {
    /// Invalid `tools/call` arguments: `tool_error` (default: an `isError`
    /// result listing the problems, which a model can correct) or `error` (-32602).
    #[serde(default)]
    pub invalid_arguments: Option<String>,
    /// Check `structuredContent` against `outputSchema` (default true).
    #[serde(default)]
    pub validate_output: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Addresses upstreams may have: CIDRs (`10.0.0.0/8`) or exact `ip:port`.
    /// Empty: any.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Hosts URL-valued tool arguments may point at, for every server:
    /// `example.com`, `*.example.com`, or CIDRs. Empty: any public host.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Also check string arguments that merely look like URLs (default true).
    #[serde(default)]
    pub detect_urls: Option<bool>,
}
