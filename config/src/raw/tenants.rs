//! Tenants: the org's grants (`tenants:` in `warden.yaml`), a tenant's
//! layer (`tenants/<tenant>/tenant.yaml`), the layer's signed metadata
//! (`tenants/<tenant>/.layer.json`) and the registry (`registry.json`).
//! See `docs/governance.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::access::{ApiKeyConfig, ServerCatalogConfig};
use super::guards::{CustomDetectorConfig, DlpRuleConfig, QuotaConfig};
use super::servers::ServerConfig;

/// What the org grants one tenant (`tenants.<name>` in `warden.yaml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantGrantConfig {
    /// The layer's routes must lie under one of these path prefixes…
    #[serde(default)]
    pub path_prefixes: Vec<String>,
    /// …or be host routes for one of these names.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Where the layer's servers may live (CIDR, IP or ip:port), inside
    /// `egress.upstreams` too; empty: the layer may define no servers.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Roles the layer's API keys may carry (none by default; `tester` is
    /// the org's alone).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Attribute names the layer's API keys may carry (none by default;
    /// `clearance`, `iss` and `client_id` are the org's alone).
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Principal kinds the layer's API keys may name besides `agent`, a
    /// key's default (`user`; none by default).
    #[serde(default)]
    pub kinds: Vec<String>,
}

/// A tenant's layer: `tenants/<tenant>/tenant.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLayerConfig {
    /// Schema version of this file; only `1` exists.
    pub version: u32,
    /// The tenant; must equal the directory's name.
    pub tenant: String,
    /// HTTP servers only (no stdio, virtual servers, credentials or token settings).
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
    #[serde(default)]
    pub routes: Vec<TenantRouteConfig>,
    /// Entries for this layer's servers only.
    #[serde(default)]
    pub catalog: BTreeMap<String, ServerCatalogConfig>,
    #[serde(default)]
    pub identity: Option<TenantIdentityConfig>,
    /// Counted only for calls in the tenant's scope; named `<tenant>/<name>`.
    #[serde(default)]
    pub quotas: Vec<QuotaConfig>,
    #[serde(default)]
    pub dlp: Option<TenantDlpConfig>,
    #[serde(default)]
    pub egress: Option<TenantEgressConfig>,
    #[serde(default)]
    pub approvals: Option<TenantApprovalsConfig>,
    /// Read by the control agent only (who approves the tenant's held
    /// calls); accepted and ignored by the gateway.
    #[serde(default)]
    pub approvers: Option<serde_json::Value>,
}

/// A route of a tenant layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRouteConfig {
    /// Path prefix (segment boundary, as org routes); default `/` (for a host route).
    #[serde(default, alias = "prefix")]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    /// A server of this layer.
    pub server: String,
    #[serde(default)]
    pub upstream_prefix: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantIdentityConfig {
    /// Principals of this tenant only.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantDlpConfig {
    /// Judged beside the org's rules; the stricter action wins.
    #[serde(default)]
    pub rules: Vec<DlpRuleConfig>,
    #[serde(default)]
    pub custom: Vec<CustomDetectorConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantEgressConfig {
    /// URL arguments must match the org's list and this one.
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantApprovalsConfig {
    /// Approvers per risk tier; the higher of the org's and this applies.
    #[serde(default)]
    pub require: BTreeMap<String, u8>,
}

/// `tenants/<tenant>/.layer.json`: who published the layer, and the agent's
/// signature over its digest.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LayerMetaConfig {
    pub tenant: String,
    pub revision: String,
    #[serde(default)]
    pub seq: Option<u64>,
    /// Hex SHA-256 over the layer's files (`archive::layer_digest`).
    pub digest: String,
    #[serde(default)]
    pub published_at: Option<String>,
    #[serde(default)]
    pub actor: Option<String>,
    /// Compact JWS with a detached payload (the digest), by the bundle key.
    #[serde(default)]
    pub signature: Option<String>,
}

/// `registry.json`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub version: u32,
    #[serde(default)]
    pub servers: BTreeMap<String, RegistryServerConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryServerConfig {
    /// The owning tenant; absent for an org server.
    #[serde(default)]
    pub tenant: Option<String>,
    pub state: RegistryState,
    /// RFC 3339.
    #[serde(default)]
    pub since: Option<String>,
    /// Offered to every tenant (an org reviewer approved it).
    #[serde(default)]
    pub shared: bool,
    /// RFC 3339, for a retired server.
    #[serde(default)]
    pub retired_at: Option<String>,
    #[serde(default)]
    pub tools: BTreeMap<String, RegistryToolConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryToolConfig {
    /// Fingerprint (`warden tools fingerprint`) live for everyone.
    #[serde(default)]
    pub approved: Option<String>,
    /// Fingerprint under review: testers may use it.
    #[serde(default)]
    pub candidate: Option<String>,
}

/// A registered server's (or tool's) lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryState {
    Draft,
    Testing,
    Approved,
    Deployed,
    Deprecated,
    Retired,
}

impl RegistryState {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryState::Draft => "draft",
            RegistryState::Testing => "testing",
            RegistryState::Approved => "approved",
            RegistryState::Deployed => "deployed",
            RegistryState::Deprecated => "deprecated",
            RegistryState::Retired => "retired",
        }
    }
}
