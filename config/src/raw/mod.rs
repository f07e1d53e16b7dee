//! Raw serde types that mirror `warden.yaml` field for field.
//!
//! Every struct denies unknown fields: a typo in a bundle must fail loudly
//! rather than silently drop a setting. Values stay as written (strings for
//! durations and sizes); `crate::model` turns them into typed values.
//!
//! The sections live in the files beside this one, mirroring where they are
//! read: `gateway`, `servers`, `upstream_auth`, `access` and `guards`.

mod access;
mod anomaly;
mod budgets;
mod flows;
mod gateway;
mod guards;
mod servers;
mod tenants;
mod upstream_auth;

use std::collections::BTreeMap;

use serde::Deserialize;

pub use access::{
    ApiKeyConfig, IdentityConfig, JwtConfig, KillSwitchConfig, MtlsPrincipalConfig, PolicyConfig,
    PriceConfig, ServerCatalogConfig, ToolCatalogConfig, UnitPriceConfig,
};
pub use anomaly::{AcceptConfig, AnomalyConfig};
pub use budgets::{BudgetConfig, BudgetsConfig};
pub use flows::{FlowsConfig, ResourceLabelConfig};
pub use gateway::{
    AdminConfig, AuditConfig, AuditExportConfig, HttpExportConfig, LimitsConfig, ListenerConfig,
    ListenerTlsConfig, PinningConfig, SecurityConfig, SyslogExportConfig, SyslogTlsConfig,
    TimeoutsConfig,
};
pub use guards::{
    ApprovalsConfig, CustomDetectorConfig, DlpConfig, DlpRuleConfig, EgressConfig, LoopConfig,
    QuotaConfig, RedisConfig, RunawayConfig, SchemasConfig, SessionBudgetConfig,
};
pub use servers::{
    EjectConfig, EnvValueConfig, HealthCheckConfig, RouteConfig, RunAsConfig, ServerConfig,
    ServiceGroupConfig, StdioConfig, StdioLimitsConfig, ToolViewConfig, UpstreamTlsConfig,
    VirtualConfig, VirtualMemberConfig,
};
pub use tenants::{
    LayerMetaConfig, RegistryConfig, RegistryServerConfig, RegistryState, RegistryToolConfig,
    TenantApprovalsConfig, TenantDlpConfig, TenantEgressConfig, TenantGrantConfig,
    TenantIdentityConfig, TenantLayerConfig, TenantRouteConfig,
};
pub use upstream_auth::{
    AssertionsConfig, CallerTokenConfig, CredentialsConfig, IdentityAssertionConfig,
    OutboundOAuthConfig, SecretRefConfig, SessionsConfig,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WardenConfig {
    /// Schema version of this file; only `1` exists.
    pub version: u32,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    pub service_groups: Vec<ServiceGroupConfig>,
    pub routes: Vec<RouteConfig>,
    /// Who may call: API keys, JWT, mTLS. Absent: every caller is `anonymous`.
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Tool risk levels per server name.
    #[serde(default)]
    pub catalog: BTreeMap<String, ServerCatalogConfig>,
    #[serde(default)]
    pub kill_switch: KillSwitchConfig,
    /// Per-principal (tenant, server, group, tool) rate, budget and concurrency limits.
    #[serde(default)]
    pub quotas: Vec<QuotaConfig>,
    /// Store shared by replicas (global quotas).
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// Money budgets over the catalog's prices (`docs/guards.md`).
    #[serde(default)]
    pub budgets: Option<BudgetsConfig>,
    /// Session ids sealed with a fleet key, so any replica serves any session.
    #[serde(default)]
    pub sessions: Option<SessionsConfig>,
    #[serde(default)]
    pub schemas: SchemasConfig,
    #[serde(default)]
    pub egress: EgressConfig,
    #[serde(default)]
    pub tool_pinning: PinningConfig,
    /// Data-loss prevention and prompt-injection rules. Absent: no scanning.
    #[serde(default)]
    pub dlp: Option<DlpConfig>,
    /// Runaway agents: per-session budgets and loop detection.
    #[serde(default)]
    pub runaway: Option<RunawayConfig>,
    /// Signing of identity assertions (servers with `identity_assertion`).
    #[serde(default)]
    pub assertions: Option<AssertionsConfig>,
    /// Human approval of risky calls (held until approvers say yes).
    #[serde(default)]
    pub approvals: Option<ApprovalsConfig>,
    /// Data classification and information flow. Absent: no flow tracking.
    #[serde(default)]
    pub flows: Option<FlowsConfig>,
    /// Per-principal behaviour baselines (`input.anomaly`). Absent: none.
    #[serde(default)]
    pub anomaly: Option<AnomalyConfig>,
    /// The tenants that may publish a layer, and what each may own
    /// (see `docs/governance.md`).
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantGrantConfig>,
}
