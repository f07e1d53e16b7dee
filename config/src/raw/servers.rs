//! `service_groups:` and their servers (upstreams, stdio, virtual, TLS,
//! health checks), and `routes:`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::gateway::TimeoutsConfig;
use super::upstream_auth::{
    CallerTokenConfig, CredentialsConfig, IdentityAssertionConfig, OutboundOAuthConfig,
    SecretRefConfig,
};

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
