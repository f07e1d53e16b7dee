//! Raw serde types that mirror `warden.yaml` field for field.
//!
//! Every struct denies unknown fields: a typo in a bundle must fail loudly
//! rather than silently drop a setting. Values stay as written (strings for
//! durations and sizes); `crate::model` turns them into typed values.

use serde::Deserialize;

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
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON-lines file, relative paths resolve against the working directory;
    /// `-` writes to stdout. Default `-`.
    pub path: Option<String>,
    /// Records buffered between the request path and the writer (default 65536).
    pub queue: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Browser origins allowed to call the gateway. A request carrying an
    /// `Origin` not in this list is refused with 403. Empty: no browser origin
    /// is allowed (requests without `Origin` are unaffected).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
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
    /// `host:port` of each replica of this MCP server.
    pub upstreams: Vec<String>,
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Authority sent as `Host` upstream; default: the chosen upstream address.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub timeouts: Option<TimeoutsConfig>,
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
