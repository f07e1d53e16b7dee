//! Raw serde types that mirror `warden.yaml` field for field.
//!
//! Every struct denies unknown fields: a typo in a bundle must fail loudly
//! rather than silently drop a setting. Values stay as written (strings for
//! durations and sizes); `crate::model` turns them into typed values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
}

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

/// Sealed session ids: the gateway hands clients an encrypted, authenticated
/// token holding the upstream's session id, the upstream replica and the
/// principal the session is bound to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Environment variable holding the fleet's sealing secret (≥ 32 characters).
    #[serde(default)]
    pub seal_key_env: Option<String>,
    /// File holding it (relative paths resolve against the bundle root).
    #[serde(default)]
    pub seal_key_file: Option<String>,
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinningConfig {
    /// Fingerprint tool definitions and quarantine changed ones (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    /// `host:port`; port 0 is allowed only for the `--listen` override.
    pub address: String,
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// Accept HTTP/2 over cleartext (prior knowledge, h2c). Default true.
    #[serde(default)]
    pub h2c: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// PEM certificate chain, path relative to the bundle root.
    pub cert: String,
    /// PEM private key, path relative to the bundle root.
    pub key: String,
    /// PEM bundle of CAs that sign client certificates (mTLS), relative to the bundle root.
    #[serde(default)]
    pub client_ca: Option<String>,
    /// `optional` (default when `client_ca` is set: other methods still work) or `required`.
    #[serde(default)]
    pub client_auth: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub address: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted, e.g. `4MiB` (default).
    pub max_request_body: Option<String>,
    /// Largest `application/json` response body inspected, e.g. `16MiB` (default).
    pub max_response_body: Option<String>,
    /// Largest single SSE event, e.g. `4MiB` (default).
    pub max_sse_event: Option<String>,
    /// Deepest JSON nesting accepted in a message (default 64).
    pub max_json_depth: Option<u32>,
    /// Most elements in a 2025-03-26 batch (default 64).
    pub max_batch_len: Option<u32>,
    /// Largest request header block (all headers), e.g. `32KiB` (default).
    pub max_header_bytes: Option<String>,
    /// Slowest request body accepted, in bytes per second after a 5 s grace
    /// period, e.g. `1KiB` (default).
    pub min_request_body_rate: Option<String>,
    /// The memory every table that grows with sessions or calls shares,
    /// e.g. `128MiB` (default, sized for a sidecar): each takes its bound
    /// from it (see the operations guide).
    pub memory: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    pub connect: Option<String>,
    pub read: Option<String>,
    pub write: Option<String>,
    pub idle: Option<String>,
    /// Longest silence on a server-sent event stream before it is cut.
    pub stream_idle: Option<String>,
    /// How long shutdown waits for in-flight requests and streams.
    pub drain: Option<String>,
    /// How long a client may take to send a whole request body.
    pub request_body: Option<String>,
    /// How long a client may take to send a whole request header, from its
    /// first byte (default `10s`). Read from the top-level `timeouts` only.
    pub request_header: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON-lines file, relative paths resolve against the working directory;
    /// `-` writes to stdout. Default `-`.
    pub path: Option<String>,
    /// Records buffered between the request path and the writer (default 65536).
    pub queue: Option<u32>,
    /// What happens when the queue is full: `closed` (default: new calls are
    /// refused until the writer catches up) or `open` (calls go on; every lost
    /// record is counted in `warden_audit_dropped_total` and logged).
    pub fail_mode: Option<String>,
    /// Start a new file when the current one reaches this size (e.g. `100MiB`).
    pub rotate_size: Option<String>,
    /// Start a new file after this long (e.g. `1h`).
    pub rotate_interval: Option<String>,
    /// Put the raw `tools/call` arguments / prompt arguments in records (default false: digest only).
    pub include_arguments: Option<bool>,
    /// Risk tiers whose tool calls are logged in full: arguments and
    /// results, DLP-redacted (default `[HIGH, CRITICAL]`; `[]` turns it off).
    #[serde(default)]
    pub log_io: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Browser origins allowed to call the gateway. A request carrying an
    /// `Origin` not in this list is refused with 403. Empty: no browser origin
    /// is allowed (requests without `Origin` are unaffected).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Host names (without port) requests may name in `Host`, beside the
    /// routes' own hosts and, on a loopback listener, the loopback names.
    /// Empty: a non-loopback listener takes any `Host`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// What to do with an `Mcp-Param-*` header that no listed tool
    /// definition declares (`x-mcp-header`): `scan` (default: DLP-scan its
    /// value like an argument and refuse the request on a finding) or
    /// `strip` (never forward it).
    #[serde(default)]
    pub undeclared_param_headers: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceGroupConfig {
    pub name: String,
    pub servers: Vec<ServerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub name: String,
    /// `host:port` of each replica of this MCP server (none for a `stdio` server).
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// A local MCP server spoken to over stdio: the program and its arguments.
    #[serde(default)]
    pub stdio: Option<StdioConfig>,
    /// A virtual server: several servers of this bundle behind one endpoint.
    #[serde(default, rename = "virtual")]
    pub virtual_server: Option<VirtualConfig>,
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Authority sent as `Host` upstream; default: the chosen upstream address.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub timeouts: Option<TimeoutsConfig>,
    /// Warden's own credential for this server (the client's is never forwarded).
    #[serde(default)]
    pub credentials: Option<CredentialsConfig>,
    /// A JWT minted per call naming the user behind the agent (instead of
    /// one static credential).
    #[serde(default)]
    pub identity_assertion: Option<IdentityAssertionConfig>,
    /// A token from an OAuth authorization server: the caller's token
    /// exchanged (RFC 8693), or the gateway's own (client credentials).
    #[serde(default)]
    pub oauth: Option<OutboundOAuthConfig>,
    /// Opt-in: forward the caller's own token, only when it was issued for
    /// this server (its `aud` names `audience`).
    #[serde(default)]
    pub caller_token: Option<CallerTokenConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioConfig {
    /// The program (an absolute path: nothing is looked up in a PATH).
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// The whole environment of the process: nothing is inherited. A value
    /// is text, or `{env: VAR}` / `{file: path}` (a secret reference).
    #[serde(default)]
    pub env: BTreeMap<String, EnvValueConfig>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// `session` (default: a process per MCP session) or `shared` (one
    /// process for every session: a server declared stateless).
    #[serde(default)]
    pub mode: Option<String>,
    /// Processes of this server at once (default 16).
    #[serde(default)]
    pub max_processes: Option<u32>,
    /// Processes one principal may hold at once (default 4; session mode).
    #[serde(default)]
    pub max_per_principal: Option<u32>,
    /// Run as this user and group (`{uid, gid}`; the gateway must be root).
    #[serde(default)]
    pub run_as: Option<RunAsConfig>,
    /// A session's process idle this long is ended (default 10m).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Resource limits per process (rlimits).
    #[serde(default)]
    pub limits: Option<StdioLimitsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualConfig {
    /// The servers composed, in priority order (an earlier member keeps a
    /// bare name a later one also has).
    pub members: Vec<VirtualMemberConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualMemberConfig {
    /// A server of this bundle (HTTP or stdio; not itself virtual).
    pub server: String,
    /// The member's MCP endpoint path (default `/mcp`).
    #[serde(default)]
    pub path: Option<String>,
    /// `always`, `never` or `conflict` (default: prefix a name only when an
    /// earlier member already has it).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The prefix (default: the server's name); names become `<prefix>_<name>`.
    #[serde(default)]
    pub prefix_name: Option<String>,
    /// Per tool (by its upstream name): how the client sees it.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolViewConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolViewConfig {
    /// The name the client sees (final: never prefixed).
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Arguments the client neither sees nor sets: always these values.
    #[serde(default)]
    pub hidden: BTreeMap<String, serde_json::Value>,
    /// Values for arguments the client leaves out.
    #[serde(default)]
    pub defaults: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAsConfig {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EnvValueConfig {
    Text(String),
    Secret(SecretRefConfig),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioLimitsConfig {
    /// CPU time, e.g. `10m` (RLIMIT_CPU; default 1h).
    #[serde(default)]
    pub cpu: Option<String>,
    /// Address space in MiB (RLIMIT_AS; default 2048).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Open files (RLIMIT_NOFILE; default 256).
    #[serde(default)]
    pub open_files: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundOAuthConfig {
    /// `token_exchange` or `client_credentials`.
    pub grant: String,
    pub token_endpoint: String,
    pub client_id: String,
    /// The client secret, as `{env: VAR}` or `{file: path}`.
    pub client_secret: SecretRefConfig,
    /// This server's identifier at the authorization server (sent as
    /// `resource`, RFC 8707, and `audience`, RFC 8693).
    pub audience: String,
    #[serde(default)]
    pub scope: Option<String>,
    /// Header that carries the token (default `authorization`, as `Bearer`).
    #[serde(default)]
    pub header: Option<String>,
    /// How long the gateway waits for the token endpoint (default 5s).
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRefConfig {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerTokenConfig {
    /// The caller's token goes on only if its `aud` names this.
    pub audience: String,
    #[serde(default)]
    pub header: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityAssertionConfig {
    /// The `aud` claim: the upstream's own identifier (its resource URL).
    pub audience: String,
    /// Lifetime of each assertion (default 60s, at most 5m).
    #[serde(default)]
    pub ttl: Option<String>,
    /// Header that carries it (default `authorization`, as `Bearer <jwt>`).
    #[serde(default)]
    pub header: Option<String>,
}

/// How the gateway signs identity assertions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionsConfig {
    /// The `iss` claim (default: the origin of `identity.resource`, else `urn:warden`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// How often the signing key changes (default 1h).
    #[serde(default)]
    pub rotate: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// Header to set (default `authorization`).
    #[serde(default)]
    pub header: Option<String>,
    /// Text put before the secret (default `Bearer ` for `authorization`, empty otherwise).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the secret (trailing newline trimmed); relative paths resolve against the bundle root.
    #[serde(default)]
    pub file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// Server name for SNI and certificate verification.
    pub sni: String,
    /// Verify the upstream certificate (default true).
    #[serde(default)]
    pub verify: Option<bool>,
    /// Speak HTTP/2 to the upstream when it offers it via ALPN (default false).
    #[serde(default)]
    pub h2: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Seconds between TCP health checks, e.g. `5s` (default).
    pub interval: Option<String>,
    /// Consecutive failures before an upstream is taken out (default 1).
    pub failures: Option<u32>,
    /// Consecutive successes before it is put back (default 1).
    pub successes: Option<u32>,
    /// `tcp` (default: a connection), `ping` (an MCP `ping` answered with a
    /// result) or `initialize` (for servers that take nothing else outside
    /// a session; the probe's session is deleted after).
    #[serde(default)]
    pub probe: Option<String>,
    /// The MCP endpoint's path on the upstream, for MCP probes (default `/mcp`).
    #[serde(default)]
    pub path: Option<String>,
    /// How long an MCP probe may take (default 2s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Passive ejection: a replica whose calls fail `failures` times in a
    /// row (connect errors, timeouts, 5xx, unreadable replies) is taken out
    /// for `cooldown`.
    #[serde(default)]
    pub eject: Option<EjectConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EjectConfig {
    pub failures: u32,
    #[serde(default)]
    pub cooldown: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix matched on a segment boundary (`/jira` matches `/jira/mcp`, not `/jiramcp`).
    pub prefix: String,
    /// Optional exact host (without port) the request must carry.
    #[serde(default)]
    pub host: Option<String>,
    /// Name of the MCP server this route leads to.
    pub server: String,
    /// Prefix that replaces `prefix` upstream (default `/`).
    #[serde(default)]
    pub upstream_prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Canonical URI of this protected resource (RFC 9728 `resource`, the JWT audience).
    pub resource: String,
    /// Authorization servers advertised in the protected-resource metadata.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes advertised in the metadata.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Scopes a JWT must carry (all of them), else 403 `insufficient_scope`.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Let callers without credentials through as principal `anonymous` (default false).
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Header carrying an API key (default `x-api-key`); `Authorization: Bearer <key>` works too.
    #[serde(default)]
    pub api_key_header: Option<String>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Client certificates mapped to principals (the listener needs `tls.client_ca`).
    #[serde(default)]
    pub mtls: Vec<MtlsPrincipalConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// `agent` (default) or `user`.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// `sha256:<salt hex>:<hex of sha256(salt ‖ key)>` — `warden apikey hash` prints one.
    pub hash: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values (default: the identity `resource`).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted algorithms (default RS256, ES256, EdDSA).
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// JWKS file, relative to the bundle root.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// JWKS URL fetched in the background.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often the JWKS URL is fetched again (default `5m`).
    #[serde(default)]
    pub jwks_refresh: Option<String>,
    /// Tolerance on `exp` / `nbf` (default `30s`).
    #[serde(default)]
    pub clock_skew: Option<String>,
    /// Claim holding the tenant (default `tenant`).
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// Claim holding the roles (default `roles`; an array or a space-separated string).
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Claim holding `agent` or `user` (default: `user`).
    #[serde(default)]
    pub kind_claim: Option<String>,
    /// String claims copied into `principal.attributes`.
    #[serde(default)]
    pub attribute_claims: Vec<String>,
    /// Clients whose tokens are accepted, by their `client_id` (or `azp`)
    /// claim: exact ids, or an `https://host/` prefix for Client ID Metadata
    /// Document URLs of one origin. Empty: any client.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// Scope hierarchy: a granted scope (key) implies the listed narrower ones.
    #[serde(default)]
    pub scope_implies: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsPrincipalConfig {
    /// Match on a URI SAN `spiffe://…`.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Match on a DNS SAN.
    #[serde(default)]
    pub dns: Option<String>,
    /// Match on the subject common name.
    #[serde(default)]
    pub subject_cn: Option<String>,
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Rule evaluated per message (default `data.warden.authz.decision`).
    #[serde(default)]
    pub entrypoint: Option<String>,
    /// How a denied `tools/call` is answered: `tool_error` (default, an
    /// `isError` result the model can read) or `error` (a JSON-RPC error).
    #[serde(default)]
    pub denial: Option<String>,
    /// IANA time zone for `context.hour` / `context.weekday` (default `UTC`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Decisions kept in the cache (default 100000; 0 turns the cache off).
    #[serde(default)]
    pub cache_capacity: Option<u64>,
    /// A candidate rule evaluated beside the enforced one on every message
    /// and never enforced: each disagreement is audited and counted.
    #[serde(default)]
    pub shadow: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerCatalogConfig {
    /// Risk of tools the catalog does not list (default `MEDIUM`).
    #[serde(default)]
    pub default_risk: Option<String>,
    #[serde(default)]
    pub tools: BTreeMap<String, ToolCatalogConfig>,
    /// Hosts URL arguments of this server's tools may reach (adds to `egress.allow`).
    #[serde(default)]
    pub egress_allow: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCatalogConfig {
    /// `LOW`, `MEDIUM`, `HIGH` or `CRITICAL` (default: the server's `default_risk`).
    #[serde(default)]
    pub risk: Option<String>,
    /// Cost units a call counts for in `weighted` quotas (default 1).
    #[serde(default)]
    pub cost: Option<u64>,
    /// JSON Schema for the arguments; wins over the server's advertised `inputSchema`.
    #[serde(default)]
    pub input_schema: Option<serde_json::Value>,
    #[serde(default)]
    pub output_schema: Option<serde_json::Value>,
    /// Approved definition fingerprints (`warden tools fingerprint`); a
    /// definition matching one is never quarantined.
    #[serde(default)]
    pub fingerprints: Vec<String>,
    /// Argument names (top level) holding URLs or hosts, checked against the egress allowlist.
    #[serde(default)]
    pub url_arguments: Vec<String>,
    /// Hosts this tool's URL arguments may reach (adds to the server's and the global list).
    #[serde(default)]
    pub egress_allow: Vec<String>,
    /// OAuth scopes a caller's token must carry to call this tool (step-up:
    /// without them, 403 `insufficient_scope` naming them).
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchConfig {
    /// Pause everything.
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub servers: Vec<String>,
    /// `tool` (on every server) or `server/tool`.
    #[serde(default)]
    pub tools: Vec<String>,
}

impl KillSwitchConfig {
    /// Adds (`on`) or removes one entry. `kind` is all, tenant, principal, server or tool.
    pub fn set(&mut self, kind: &str, value: &str, on: bool) -> Result<(), String> {
        let list = match kind {
            "all" => {
                self.all = on;
                return Ok(());
            }
            "tenant" => &mut self.tenants,
            "principal" => &mut self.principals,
            "server" => &mut self.servers,
            "tool" => &mut self.tools,
            other => return Err(format!("unknown kill-switch scope `{other}`")),
        };
        if value.is_empty() {
            return Err(format!("`{kind}` needs a value"));
        }
        list.retain(|v| v != value);
        if on {
            list.push(value.to_owned());
            list.sort();
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        *self == KillSwitchConfig::default()
    }
}
