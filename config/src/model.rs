//! Typed, validated configuration built from the raw serde types.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use crate::access::{self, Credentials, Identity, KillSwitch, PolicySettings, ServerCatalog};
use crate::error::Problems;
use crate::raw;

pub const DEFAULT_MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;
pub const DEFAULT_MAX_SSE_EVENT: usize = 4 * 1024 * 1024;
pub const DEFAULT_MAX_JSON_DEPTH: u32 = 64;
pub const DEFAULT_MAX_BATCH_LEN: u32 = 64;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub admin: Option<String>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub audit: Audit,
    pub allowed_origins: HashSet<String>,
    /// `security.allowed_hosts`, lower-cased (DNS-rebinding protection).
    pub allowed_hosts: HashSet<String>,
    /// `Mcp-Param-*` headers no tool declares: scanned or stripped.
    pub undeclared_params: UndeclaredParams,
    pub service_groups: Vec<ServiceGroup>,
    /// Every server of every group, by name.
    pub servers: Vec<Server>,
    pub routes: Vec<Route>,
    /// `None`: no authentication, every caller is `anonymous`.
    pub identity: Option<Identity>,
    pub policy: PolicySettings,
    /// Tool risk levels by server name.
    pub catalog: HashMap<String, ServerCatalog>,
    pub kill_switch: KillSwitch,
    pub quotas: Vec<crate::guards::Quota>,
    /// Shared store of global quotas.
    pub redis: Option<crate::guards::Redis>,
    /// Fleet secret that seals session ids (stateless replicas).
    pub session_seal: Option<crate::access::Secret>,
    pub schemas: crate::guards::Schemas,
    pub egress: crate::guards::Egress,
    /// Per-session budgets and loop detection.
    pub runaway: crate::guards::Runaway,
    /// How identity assertions are signed.
    pub assertions: Assertions,
    /// Human approval of risky calls.
    pub approvals: crate::guards::Approvals,
    /// Fingerprint tool definitions and quarantine changes.
    pub tool_pinning: bool,
    /// `None`: no DLP scanning.
    pub dlp: Option<crate::guards::Dlp>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub address: String,
    pub tls: Option<ListenerTls>,
    pub h2c: bool,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CAs for client certificates (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Refuse the handshake without a valid client certificate.
    pub client_auth_required: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_body: usize,
    pub max_response_body: usize,
    pub max_sse_event: usize,
    pub max_json_depth: NonZeroU32,
    pub max_batch_len: NonZeroU32,
    pub max_header_bytes: usize,
    /// Slowest request body accepted (bytes per second, after a grace period).
    pub min_request_body_rate: usize,
    /// What the tables that grow with sessions and calls share.
    pub memory: MemoryBudget,
}

/// The tables that grow with sessions or calls, each bounded by its share
/// of one memory budget (`limits.memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Request ids remembered per session, to judge replies that arrive on
    /// another exchange (and the server→client requests owed an answer).
    Ledger,
    /// Which replica serves each session, and its owner.
    Sessions,
    /// Quota counters.
    Quotas,
    /// Runaway budgets and loop counters per session.
    Runaway,
    /// Who created each task.
    Tasks,
    /// Requests per principal for `/top`.
    Live,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Ledger,
        Table::Sessions,
        Table::Quotas,
        Table::Runaway,
        Table::Tasks,
        Table::Live,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Ledger => "ledger",
            Table::Sessions => "sessions",
            Table::Quotas => "quotas",
            Table::Runaway => "runaway",
            Table::Tasks => "tasks",
            Table::Live => "live",
        }
    }

    /// Its share of the budget (per mille; the rest is headroom for what
    /// no table holds: buffers, connections, the snapshot).
    fn share(self) -> u64 {
        match self {
            Table::Ledger => 300,
            Table::Sessions => 100,
            Table::Quotas => 100,
            Table::Runaway => 100,
            Table::Tasks => 80,
            Table::Live => 20,
        }
    }

    /// What one entry costs, measured with its key, value and the cache's
    /// own bookkeeping (compact keys: digests, not strings; BENCHMARKS.md).
    pub fn entry_bytes(self) -> u64 {
        match self {
            Table::Ledger => 320,
            Table::Sessions => 256,
            Table::Quotas => 256,
            Table::Runaway => 256,
            Table::Tasks => 320,
            Table::Live => 256,
        }
    }
}

/// One budget for every table that grows with sessions or calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    pub bytes: u64,
}

impl MemoryBudget {
    /// The most entries `table` keeps (never fewer than 1,000).
    pub fn entries(self, table: Table) -> u64 {
        (self.bytes / 1000 * table.share() / table.entry_bytes()).max(1000)
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget {
            bytes: DEFAULT_MEMORY,
        }
    }
}

/// The default budget: a sidecar with a 256 MiB limit keeps half of it.
pub const DEFAULT_MEMORY: u64 = 128 << 20;

/// What happens to an `Mcp-Param-*` header that mirrors no declared argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UndeclaredParams {
    /// DLP-scanned like an argument; a finding refuses the request (400).
    #[default]
    Scan,
    /// Removed before the request goes upstream.
    Strip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
    pub stream_idle: Duration,
    pub drain: Duration,
    pub request_body: Duration,
    /// Longest time from a request header's first byte to its end.
    pub request_header: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(60),
            write: Duration::from_secs(30),
            idle: Duration::from_secs(90),
            stream_idle: Duration::from_secs(300),
            drain: Duration::from_secs(10),
            request_body: Duration::from_secs(30),
            request_header: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Audit {
    /// `None` means stdout.
    pub path: Option<PathBuf>,
    pub queue: usize,
    pub fail_mode: AuditFailMode,
    pub rotate_size: Option<u64>,
    pub rotate_interval: Option<Duration>,
    pub include_arguments: bool,
    /// Risk tiers whose calls are logged in full (arguments and results,
    /// DLP-redacted).
    pub log_io: Vec<crate::access::Risk>,
}

/// What the gateway does when audit records cannot be written fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFailMode {
    /// Refuse new calls while the queue is full.
    Closed,
    /// Keep serving; count and log every lost record.
    Open,
}

#[derive(Debug, Clone)]
pub struct ServiceGroup {
    pub name: String,
    pub servers: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub group: String,
    pub upstreams: Vec<SocketAddr>,
    pub tls: Option<UpstreamTls>,
    pub host: Option<String>,
    pub health_check: HealthCheck,
    pub timeouts: Timeouts,
    pub credentials: Option<Credentials>,
    /// Mint a JWT per call naming the principal (see `Assertions`).
    pub assertion: Option<IdentityAssertion>,
    /// Fetch a token from an OAuth authorization server per call (cached).
    pub oauth: Option<OutboundOAuth>,
    /// Forward the caller's own token (opt-in, audience-checked).
    pub caller_token: Option<CallerToken>,
    /// A local server spoken to over stdio (then `upstreams` is empty and
    /// the gateway reaches it through its own loopback bridge).
    pub stdio: Option<Stdio>,
    /// A virtual server composed of other servers of this bundle (then
    /// `upstreams` is empty: the gateway's own aggregator serves it).
    pub composed: Option<Virtual>,
}

/// A virtual server: members reached through the gateway itself (each call
/// judged as a call to the member), their lists merged.
#[derive(Debug, Clone)]
pub struct Virtual {
    pub members: Vec<VirtualMember>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefixing {
    Always,
    Never,
    /// Only when an earlier member already exposes the name.
    Conflict,
}

#[derive(Debug, Clone)]
pub struct VirtualMember {
    pub server: String,
    /// The member's MCP endpoint path.
    pub path: String,
    pub prefixing: Prefixing,
    pub prefix: String,
    /// By the tool's upstream name.
    pub tools: std::collections::BTreeMap<String, ToolView>,
}

/// How a member's tool looks to the client of a virtual server.
#[derive(Debug, Clone, Default)]
pub struct ToolView {
    pub alias: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub hidden: serde_json::Map<String, serde_json::Value>,
    pub defaults: serde_json::Map<String, serde_json::Value>,
}

impl Virtual {
    /// A digest of the composition (the aggregator is rebuilt when it changes).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for m in &self.members {
            h.update(format!("{:?}", m).as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }
}

/// A local MCP server process (see the gateway's `stdio`).
#[derive(Debug, Clone)]
pub struct Stdio {
    pub command: String,
    pub args: Vec<String>,
    /// The whole environment (secrets resolved).
    pub env: Vec<(String, crate::access::Secret)>,
    pub cwd: Option<String>,
    /// One process for every session (a stateless server).
    pub shared: bool,
    pub max_processes: u32,
    pub max_per_principal: u32,
    /// (uid, gid) to run as.
    pub run_as: Option<(u32, u32)>,
    pub idle_timeout: Duration,
    pub cpu: Duration,
    pub memory_mb: u64,
    pub open_files: u64,
}

impl Stdio {
    /// What identifies a process's setup: a changed bundle that keeps it
    /// keeps the processes.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [&self.command, self.cwd.as_deref().unwrap_or("")]
            .into_iter()
            .chain(self.args.iter().map(String::as_str))
        {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        for (k, v) in &self.env {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
            h.update(Sha256::digest(v.expose().as_bytes()));
        }
        h.update([u8::from(self.shared)]);
        h.update(self.max_processes.to_be_bytes());
        h.update(self.max_per_principal.to_be_bytes());
        if let Some((u, g)) = self.run_as {
            h.update(u.to_be_bytes());
            h.update(g.to_be_bytes());
        }
        h.update(self.idle_timeout.as_millis().to_be_bytes());
        h.update(self.cpu.as_secs().to_be_bytes());
        h.update(self.memory_mb.to_be_bytes());
        h.update(self.open_files.to_be_bytes());
        hex::encode(h.finalize())
    }
}

fn virtual_server(raw: &raw::VirtualConfig, base: &str, p: &mut Problems) -> Virtual {
    if raw.members.is_empty() {
        p.push(
            format!("{base}.members"),
            "a virtual server needs at least one member",
        );
    }
    let mut members = Vec::new();
    for (i, m) in raw.members.iter().enumerate() {
        let mb = format!("{base}.members[{i}]");
        let prefixing = match m.prefix.as_deref() {
            None | Some("conflict") => Prefixing::Conflict,
            Some("always") => Prefixing::Always,
            Some("never") => Prefixing::Never,
            Some(o) => {
                p.push(
                    format!("{mb}.prefix"),
                    format!("`{o}` is not `always`, `never` or `conflict`"),
                );
                Prefixing::Conflict
            }
        };
        let prefix = m.prefix_name.clone().unwrap_or_else(|| m.server.clone());
        if !valid_name(&prefix) {
            p.push(
                format!("{mb}.prefix_name"),
                "must be a name ([A-Za-z0-9._-], 1-64 chars)",
            );
        }
        let path = m.path.clone().unwrap_or_else(|| "/mcp".into());
        // Plain segments only: nothing a URL parser would resolve elsewhere.
        let dots = path.split('/').any(|seg| seg == "." || seg == "..");
        if !path.starts_with('/')
            || path.starts_with("//")
            || dots
            || path
                .bytes()
                .any(|b| !b.is_ascii_graphic() || matches!(b, b'?' | b'#' | b'%' | b'\\'))
        {
            p.push(format!("{mb}.path"), "must be a plain path such as `/mcp`");
        }
        let mut tools = std::collections::BTreeMap::new();
        for (name, t) in &m.tools {
            let tb = format!("{mb}.tools.{name}");
            if let Some(a) = &t.alias {
                if !valid_tool_name(a) {
                    p.push(
                        format!("{tb}.alias"),
                        "must be a tool name ([A-Za-z0-9_.-], 1-128 chars)",
                    );
                }
            }
            let hidden: serde_json::Map<String, serde_json::Value> = t
                .hidden
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let defaults: serde_json::Map<String, serde_json::Value> = t
                .defaults
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for k in hidden.keys() {
                if defaults.contains_key(k) {
                    p.push(
                        format!("{tb}.defaults.{k}"),
                        "is also hidden: a hidden argument has one fixed value",
                    );
                }
            }
            tools.insert(
                name.clone(),
                ToolView {
                    alias: t.alias.clone(),
                    title: t.title.clone(),
                    description: t.description.clone(),
                    hidden,
                    defaults,
                },
            );
        }
        members.push(VirtualMember {
            server: m.server.clone(),
            path,
            prefixing,
            prefix,
            tools,
        });
    }
    Virtual { members }
}

/// MCP's tool name characters (SEP-986).
fn valid_tool_name(n: &str) -> bool {
    (1..=128).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A virtual server's own legs (to its aggregator) wait a second longer
/// than its slowest member may take (`timeouts.read`, and `stream_idle`
/// for streams), so a member that does not answer is reported by the
/// member's own timeout, naming the member, not by the outer leg's.
fn outlast_members(servers: &mut [Server]) {
    let margin = Duration::from_secs(1);
    let bounds: Vec<Option<(Duration, Duration)>> = servers
        .iter()
        .map(|s| {
            let v = s.composed.as_ref()?;
            v.members
                .iter()
                .filter_map(|m| servers.iter().find(|o| o.name == m.server))
                .map(|o| (o.timeouts.read, o.timeouts.stream_idle))
                .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
        })
        .collect();
    for (s, b) in servers.iter_mut().zip(bounds) {
        if let Some((read, stream)) = b {
            s.timeouts.read = s.timeouts.read.max(read + margin);
            s.timeouts.stream_idle = s.timeouts.stream_idle.max(stream + margin);
        }
    }
}

/// Each virtual server's members name servers of this bundle that are not
/// virtual themselves, once each; aliases are unique within it.
fn check_members(servers: &[Server], p: &mut Problems) {
    for s in servers {
        let Some(v) = &s.composed else { continue };
        let base = format!("servers.{}.virtual", s.name);
        let mut seen = HashSet::new();
        let mut aliases = HashSet::new();
        let mut prefixes = HashSet::new();
        for (i, m) in v.members.iter().enumerate() {
            // A prefixed name says which member it is.
            if !prefixes.insert(m.prefix.as_str()) {
                p.push(
                    format!("{base}.members[{i}].prefix_name"),
                    format!("`{}` is already another member's prefix", m.prefix),
                );
            }
            match servers.iter().find(|o| o.name == m.server) {
                None => p.push(
                    format!("{base}.members[{i}].server"),
                    format!("no server `{}` in this bundle", m.server),
                ),
                Some(o) if o.composed.is_some() => p.push(
                    format!("{base}.members[{i}].server"),
                    format!("`{}` is itself virtual: members are real servers", m.server),
                ),
                // The caller's token names the member as its audience, which
                // the virtual server's own leg refuses (a token for one
                // server is taken on that server's routes only).
                Some(o) if o.caller_token.is_some() => p.push(
                    format!("{base}.members[{i}].server"),
                    format!("`{}` forwards the caller's own token (`caller_token`): it cannot be reached through a virtual server", m.server),
                ),
                Some(_) => {}
            }
            if !seen.insert(m.server.as_str()) {
                p.push(
                    format!("{base}.members[{i}].server"),
                    format!("`{}` is a member twice", m.server),
                );
            }
            for (t, view) in &m.tools {
                if let Some(a) = &view.alias {
                    if !aliases.insert(a.as_str()) {
                        p.push(
                            format!("{base}.members[{i}].tools.{t}.alias"),
                            format!("`{a}` is already another tool's alias"),
                        );
                    }
                }
            }
        }
    }
}

fn stdio(
    raw: &raw::StdioConfig,
    root: &std::path::Path,
    base: &str,
    p: &mut Problems,
) -> Option<Stdio> {
    if !raw.command.starts_with('/') {
        p.push(
            format!("{base}.command"),
            "must be an absolute path (no PATH is searched: the process gets only the bundle's environment)",
        );
        return None;
    }
    let mut env = Vec::new();
    for (k, v) in &raw.env {
        if k.is_empty() || k.contains('=') || k.bytes().any(|b| b == 0) {
            p.push(
                format!("{base}.env.{k}"),
                "is not an environment variable name",
            );
            continue;
        }
        let value = match v {
            raw::EnvValueConfig::Text(t) => crate::access::Secret::new(t.clone()),
            raw::EnvValueConfig::Secret(r) => match crate::access::secret_ref(
                r.env.as_deref(),
                r.file.as_deref(),
                root,
                &format!("{base}.env.{k}"),
                p,
            ) {
                Some(s) => s,
                None => continue,
            },
        };
        if value.expose().bytes().any(|b| b == 0) {
            p.push(format!("{base}.env.{k}"), "must not contain NUL");
            continue;
        }
        env.push((k.clone(), value));
    }
    let shared = match raw.mode.as_deref() {
        None | Some("session") => false,
        Some("shared") => true,
        Some(m) => {
            p.push(
                format!("{base}.mode"),
                format!("`{m}` is not `session` or `shared`"),
            );
            false
        }
    };
    let limits = raw.limits.clone().unwrap_or_default();
    let max_processes = raw.max_processes.unwrap_or(16);
    if max_processes == 0 || max_processes > 4096 {
        p.push(
            format!("{base}.max_processes"),
            "must be between 1 and 4096",
        );
    }
    let max_per_principal = raw.max_per_principal.unwrap_or(4);
    if max_per_principal == 0 {
        p.push(
            format!("{base}.max_per_principal"),
            "must be greater than zero",
        );
    }
    let memory_mb = limits.memory_mb.unwrap_or(2048);
    if !(16..=1 << 20).contains(&memory_mb) {
        p.push(
            format!("{base}.limits.memory_mb"),
            "must be between 16 and 1048576",
        );
    }
    Some(Stdio {
        command: raw.command.clone(),
        args: raw.args.clone(),
        env,
        cwd: raw.cwd.clone(),
        shared,
        max_processes: max_processes.clamp(1, 4096),
        max_per_principal: max_per_principal.max(1),
        run_as: raw.run_as.map(|r| (r.uid, r.gid)),
        idle_timeout: duration(
            p,
            &format!("{base}.idle_timeout"),
            &raw.idle_timeout,
            Duration::from_secs(600),
        ),
        cpu: duration(
            p,
            &format!("{base}.limits.cpu"),
            &limits.cpu,
            Duration::from_secs(3600),
        ),
        memory_mb: memory_mb.clamp(16, 1 << 20),
        open_files: limits.open_files.unwrap_or(256).max(16),
    })
}

/// How the gateway gets an upstream token from an authorization server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthGrant {
    /// RFC 8693: the caller's validated token, exchanged for one scoped to
    /// this server.
    TokenExchange,
    /// OAuth 2.0 client credentials: the gateway's own service token.
    ClientCredentials,
}

#[derive(Debug, Clone)]
pub struct OutboundOAuth {
    pub grant: OAuthGrant,
    pub token_endpoint: String,
    pub client_id: String,
    pub client_secret: crate::access::Secret,
    pub audience: String,
    pub scope: Option<String>,
    /// Lower-case header name; `authorization` carries `Bearer <token>`.
    pub header: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerToken {
    pub audience: String,
    pub header: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityAssertion {
    pub audience: String,
    pub ttl: Duration,
    /// Lower-case header name; `authorization` carries `Bearer <jwt>`.
    pub header: String,
}

/// Signing settings for identity assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertions {
    pub issuer: String,
    pub rotate: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub sni: String,
    pub verify: bool,
    pub h2: bool,
}

#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub interval: Duration,
    pub failures: NonZeroU32,
    pub successes: NonZeroU32,
    pub probe: Probe,
    /// Path of the MCP endpoint on the upstream (MCP probes).
    pub path: String,
    /// How long an MCP probe may take.
    pub timeout: Duration,
    /// Passive ejection after consecutive failed calls.
    pub eject: Option<Ejection>,
}

/// What an active health check sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A TCP (or TLS) connection.
    Tcp,
    /// An MCP `ping`, answered with a JSON-RPC result.
    Ping,
    /// An MCP `initialize`, answered with a result (the session is deleted).
    Initialize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    pub failures: NonZeroU32,
    pub cooldown: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval: Duration::from_secs(5),
            failures: NonZeroU32::MIN,
            successes: NonZeroU32::MIN,
            probe: Probe::Tcp,
            path: "/mcp".into(),
            timeout: Duration::from_secs(2),
            eject: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    pub host: Option<String>,
    pub server: String,
    pub upstream_prefix: String,
}

/// Parses sizes such as `4MiB`, `512KiB`, `1048576`, `16MB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (try `4MiB`)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn identity_assertion(
    raw: &raw::IdentityAssertionConfig,
    base: &str,
    p: &mut Problems,
) -> Option<IdentityAssertion> {
    if raw.audience.trim().is_empty() {
        p.push(
            format!("{base}.audience"),
            "must name the upstream (its resource URL)",
        );
        return None;
    }
    let ttl = duration(p, &format!("{base}.ttl"), &raw.ttl, Duration::from_secs(60));
    if ttl > Duration::from_secs(300) {
        p.push(
            format!("{base}.ttl"),
            "at most 5m: an assertion is a bearer token for its lifetime, and one call needs seconds",
        );
    }
    let header = crate::access::outbound_header(raw.header.as_deref(), base, p)?;
    Some(IdentityAssertion {
        audience: raw.audience.clone(),
        ttl,
        header,
    })
}

fn outbound_oauth(
    raw: &raw::OutboundOAuthConfig,
    root: &std::path::Path,
    base: &str,
    p: &mut Problems,
) -> Option<OutboundOAuth> {
    let grant = match raw.grant.as_str() {
        "token_exchange" => OAuthGrant::TokenExchange,
        "client_credentials" => OAuthGrant::ClientCredentials,
        g => {
            p.push(
                format!("{base}.grant"),
                format!("`{g}` is not `token_exchange` or `client_credentials`"),
            );
            return None;
        }
    };
    let e = &raw.token_endpoint;
    if !(e.starts_with("https://") || e.starts_with("http://"))
        || e.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        p.push(format!("{base}.token_endpoint"), "must be an http(s) URL");
        return None;
    }
    // The caller's token and the client secret travel to it: TLS, unless
    // the authorization server is on this host.
    // Read as the HTTP client will read it (WHATWG URL parsing).
    let Ok(parsed) = url::Url::parse(e) else {
        p.push(format!("{base}.token_endpoint"), "must be an http(s) URL");
        return None;
    };
    if parsed.scheme() == "http" {
        let loopback = match parsed.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            None => false,
        };
        if !loopback || !parsed.username().is_empty() || parsed.password().is_some() {
            p.push(
                format!("{base}.token_endpoint"),
                "must be https (the caller's token and the client secret go there); plain http only on loopback",
            );
            return None;
        }
    }
    for (field, v) in [("client_id", &raw.client_id), ("audience", &raw.audience)] {
        if v.trim().is_empty() || v.chars().any(char::is_control) {
            p.push(format!("{base}.{field}"), "must not be empty");
            return None;
        }
    }
    let client_secret = crate::access::secret_ref(
        raw.client_secret.env.as_deref(),
        raw.client_secret.file.as_deref(),
        root,
        &format!("{base}.client_secret"),
        p,
    )?;
    let timeout = duration(
        p,
        &format!("{base}.timeout"),
        &raw.timeout,
        Duration::from_secs(5),
    );
    let header = crate::access::outbound_header(raw.header.as_deref(), base, p)?;
    Some(OutboundOAuth {
        grant,
        token_endpoint: e.clone(),
        client_id: raw.client_id.clone(),
        client_secret,
        audience: raw.audience.clone(),
        scope: raw.scope.clone().filter(|s| !s.trim().is_empty()),
        header,
        timeout,
    })
}

fn assertions(
    raw: Option<&raw::AssertionsConfig>,
    identity: Option<&raw::IdentityConfig>,
    p: &mut Problems,
) -> Assertions {
    let issuer = raw.and_then(|r| r.issuer.clone()).unwrap_or_else(|| {
        identity
            .and_then(|i| url::Url::parse(&i.resource).ok())
            .map(|u| u.origin().ascii_serialization())
            .filter(|o| o != "null")
            .unwrap_or_else(|| "urn:warden".into())
    });
    let rotate = duration(
        p,
        "assertions.rotate",
        &raw.and_then(|r| r.rotate.clone()),
        Duration::from_secs(3600),
    );
    if rotate < Duration::from_secs(60) {
        p.push("assertions.rotate", "at least 1m");
    }
    Assertions { issuer, rotate }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); try `5s` or `250ms`"))
}

fn size(p: &mut Problems, path: &str, v: &Option<String>, default: usize) -> usize {
    match v {
        None => default,
        Some(s) => match parse_size(s) {
            Ok(0) => {
                p.push(path, "must be greater than zero");
                default
            }
            Ok(n) => n,
            Err(e) => {
                p.push(path, e);
                default
            }
        },
    }
}

fn duration(p: &mut Problems, path: &str, v: &Option<String>, default: Duration) -> Duration {
    match v {
        None => default,
        Some(s) => match parse_duration(s) {
            Ok(d) if d.is_zero() => {
                p.push(path, "must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                p.push(path, e);
                default
            }
        },
    }
}

fn nonzero(p: &mut Problems, path: &str, v: Option<u32>, default: u32) -> NonZeroU32 {
    let d = NonZeroU32::new(default).unwrap_or(NonZeroU32::MIN);
    match v {
        None => d,
        Some(n) => NonZeroU32::new(n).unwrap_or_else(|| {
            p.push(path, "must be greater than zero");
            d
        }),
    }
}

fn timeouts(p: &mut Problems, base: &str, raw: &raw::TimeoutsConfig, d: Timeouts) -> Timeouts {
    Timeouts {
        connect: duration(p, &format!("{base}.connect"), &raw.connect, d.connect),
        read: duration(p, &format!("{base}.read"), &raw.read, d.read),
        write: duration(p, &format!("{base}.write"), &raw.write, d.write),
        idle: duration(p, &format!("{base}.idle"), &raw.idle, d.idle),
        stream_idle: duration(
            p,
            &format!("{base}.stream_idle"),
            &raw.stream_idle,
            d.stream_idle,
        ),
        drain: duration(p, &format!("{base}.drain"), &raw.drain, d.drain),
        request_body: duration(
            p,
            &format!("{base}.request_body"),
            &raw.request_body,
            d.request_body,
        ),
        request_header: duration(
            p,
            &format!("{base}.request_header"),
            &raw.request_header,
            d.request_header,
        ),
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn valid_prefix(s: &str) -> bool {
    s.starts_with('/')
        && (s == "/" || !s.ends_with('/'))
        && !s.contains("//")
        && !s.split('/').any(|seg| seg == "." || seg == "..")
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#' && b != b'%')
}

impl Config {
    /// Validates raw config into the typed model, collecting every problem.
    /// `root` resolves the relative file paths the config names.
    pub fn from_raw(raw: &raw::WardenConfig, root: &std::path::Path, p: &mut Problems) -> Config {
        if raw.version != 1 {
            p.push(
                "version",
                format!("unsupported version {} (only 1 exists)", raw.version),
            );
        }
        let mut listeners = Vec::new();
        let mut listener_names = HashSet::new();
        for (i, l) in raw.listeners.iter().enumerate() {
            let base = format!("listeners[{i}]");
            if !listener_names.insert(l.name.clone()) {
                p.push(
                    format!("{base}.name"),
                    format!("duplicate listener name `{}`", l.name),
                );
            }
            if l.address.parse::<SocketAddr>().is_err() {
                p.push(
                    format!("{base}.address"),
                    format!("`{}` is not an ip:port address", l.address),
                );
            }
            let tls = l.tls.as_ref().map(|t| {
                let cert = root.join(&t.cert);
                let key = root.join(&t.key);
                if !cert.is_file() {
                    p.push(
                        format!("{base}.tls.cert"),
                        format!("file `{}` not found in the bundle", t.cert),
                    );
                }
                if !key.is_file() {
                    p.push(
                        format!("{base}.tls.key"),
                        format!("file `{}` not found in the bundle", t.key),
                    );
                }
                let client_ca = t.client_ca.as_ref().map(|c| {
                    let f = root.join(c);
                    if !f.is_file() {
                        p.push(
                            format!("{base}.tls.client_ca"),
                            format!("file `{c}` not found in the bundle"),
                        );
                    }
                    f
                });
                let client_auth_required = match t.client_auth.as_deref() {
                    None | Some("optional") => false,
                    Some("required") => true,
                    Some(o) => {
                        p.push(
                            format!("{base}.tls.client_auth"),
                            format!("`{o}` is not `optional` or `required`"),
                        );
                        false
                    }
                };
                if t.client_auth.is_some() && client_ca.is_none() {
                    p.push(format!("{base}.tls.client_auth"), "needs `client_ca`");
                }
                ListenerTls {
                    cert,
                    key,
                    client_ca,
                    client_auth_required,
                }
            });
            listeners.push(Listener {
                name: l.name.clone(),
                address: l.address.clone(),
                tls,
                h2c: l.h2c.unwrap_or(true),
            });
        }
        let admin = raw.admin.as_ref().map(|a| {
            if a.address.parse::<SocketAddr>().is_err() {
                p.push(
                    "admin.address",
                    format!("`{}` is not an ip:port address", a.address),
                );
            }
            a.address.clone()
        });
        let rl = &raw.limits;
        let limits = Limits {
            max_request_body: size(
                p,
                "limits.max_request_body",
                &rl.max_request_body,
                DEFAULT_MAX_REQUEST_BODY,
            ),
            max_response_body: size(
                p,
                "limits.max_response_body",
                &rl.max_response_body,
                DEFAULT_MAX_RESPONSE_BODY,
            ),
            max_sse_event: size(
                p,
                "limits.max_sse_event",
                &rl.max_sse_event,
                DEFAULT_MAX_SSE_EVENT,
            ),
            max_json_depth: nonzero(
                p,
                "limits.max_json_depth",
                rl.max_json_depth,
                DEFAULT_MAX_JSON_DEPTH,
            ),
            max_batch_len: nonzero(
                p,
                "limits.max_batch_len",
                rl.max_batch_len,
                DEFAULT_MAX_BATCH_LEN,
            ),
            max_header_bytes: size(
                p,
                "limits.max_header_bytes",
                &rl.max_header_bytes,
                DEFAULT_MAX_HEADER_BYTES,
            ),
            min_request_body_rate: size(
                p,
                "limits.min_request_body_rate",
                &rl.min_request_body_rate,
                1024,
            ),
            memory: MemoryBudget {
                bytes: size(p, "limits.memory", &rl.memory, DEFAULT_MEMORY as usize) as u64,
            },
        };
        if limits.memory.bytes < 8 << 20 {
            p.push("limits.memory", "must be at least 8MiB");
        }
        if limits.max_json_depth.get() > 128 {
            p.push("limits.max_json_depth", "must be at most 128");
        }
        let timeouts_v = timeouts(p, "timeouts", &raw.timeouts, Timeouts::default());
        let audit = Audit {
            path: match raw.audit.path.as_deref() {
                None | Some("-") => None,
                Some("") => {
                    p.push("audit.path", "must not be empty (use `-` for stdout)");
                    None
                }
                Some(s) => Some(PathBuf::from(s)),
            },
            queue: raw.audit.queue.map(|q| q as usize).unwrap_or(65_536).max(1),
            fail_mode: match raw.audit.fail_mode.as_deref() {
                None | Some("closed") => AuditFailMode::Closed,
                Some("open") => AuditFailMode::Open,
                Some(o) => {
                    p.push(
                        "audit.fail_mode",
                        format!("`{o}` is not `closed` or `open`"),
                    );
                    AuditFailMode::Closed
                }
            },
            rotate_size: raw.audit.rotate_size.as_ref().and_then(|s| {
                parse_size(s)
                    .map(|n| n as u64)
                    .map_err(|e| p.push("audit.rotate_size", e))
                    .ok()
            }),
            rotate_interval: raw.audit.rotate_interval.as_ref().and_then(|s| {
                parse_duration(s)
                    .map_err(|e| p.push("audit.rotate_interval", e))
                    .ok()
            }),
            include_arguments: raw.audit.include_arguments.unwrap_or(false),
            log_io: match &raw.audit.log_io {
                None => vec![crate::access::Risk::High, crate::access::Risk::Critical],
                Some(list) => list
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        let risk = crate::access::Risk::parse(r);
                        if risk.is_none() {
                            p.push(
                                format!("audit.log_io[{i}]"),
                                format!("`{r}` is not a risk (LOW, MEDIUM, HIGH, CRITICAL)"),
                            );
                        }
                        risk
                    })
                    .collect(),
            },
        };
        let allowed_origins = raw.security.allowed_origins.iter().cloned().collect();
        let mut allowed_hosts = HashSet::new();
        for (i, h) in raw.security.allowed_hosts.iter().enumerate() {
            let name = h.trim().to_ascii_lowercase();
            if name.is_empty() || name.contains(['/', ':', ' ']) && !name.starts_with('[') {
                p.push(
                    format!("security.allowed_hosts[{i}]"),
                    "a host name or address without scheme, port or path",
                );
            } else {
                allowed_hosts.insert(name);
            }
        }
        let undeclared_params = match raw.security.undeclared_param_headers.as_deref() {
            None | Some("scan") => UndeclaredParams::Scan,
            Some("strip") => UndeclaredParams::Strip,
            Some(other) => {
                p.push(
                    "security.undeclared_param_headers",
                    format!("`{other}` is not one of scan, strip"),
                );
                UndeclaredParams::Scan
            }
        };

        let mut groups = Vec::new();
        let mut servers = Vec::new();
        let mut group_names = HashSet::new();
        let mut server_names: HashMap<String, String> = HashMap::new();
        for (gi, g) in raw.service_groups.iter().enumerate() {
            let gbase = format!("service_groups[{gi}]");
            if !valid_name(&g.name) {
                p.push(
                    format!("{gbase}.name"),
                    format!(
                        "`{}` is not a valid name ([A-Za-z0-9._-], 1-64 chars)",
                        g.name
                    ),
                );
            }
            if !group_names.insert(g.name.clone()) {
                p.push(
                    format!("{gbase}.name"),
                    format!("duplicate service group `{}`", g.name),
                );
            }
            if g.servers.is_empty() {
                p.push(
                    format!("{gbase}.servers"),
                    "a service group needs at least one server",
                );
            }
            let mut names = Vec::new();
            for (si, s) in g.servers.iter().enumerate() {
                let sbase = format!("{gbase}.servers[{si}]");
                if !valid_name(&s.name) {
                    p.push(
                        format!("{sbase}.name"),
                        format!(
                            "`{}` is not a valid name ([A-Za-z0-9._-], 1-64 chars)",
                            s.name
                        ),
                    );
                }
                if let Some(prev) = server_names.insert(s.name.clone(), g.name.clone()) {
                    p.push(
                        format!("{sbase}.name"),
                        format!("server `{}` is already defined in group `{prev}`", s.name),
                    );
                }
                let stdio_cfg = s
                    .stdio
                    .as_ref()
                    .and_then(|c| stdio(c, root, &format!("{sbase}.stdio"), p));
                if s.stdio.is_some() {
                    // The bridge is reached with its own secret: a token or
                    // credential for it would be thrown away.
                    for (field, set) in [
                        ("credentials", s.credentials.is_some()),
                        ("identity_assertion", s.identity_assertion.is_some()),
                        ("oauth", s.oauth.is_some()),
                        ("caller_token", s.caller_token.is_some()),
                        ("tls", s.tls.is_some()),
                    ] {
                        if set {
                            p.push(
                                format!("{sbase}.{field}"),
                                "a stdio server takes no upstream credentials or TLS (it gets only its `env`)",
                            );
                        }
                    }
                    if s.health_check
                        .as_ref()
                        .and_then(|h| h.probe.as_deref())
                        .is_some_and(|p| p != "tcp")
                    {
                        p.push(
                            format!("{sbase}.health_check.probe"),
                            "a stdio server is checked through its bridge (tcp); its process failing ends its sessions",
                        );
                    }
                }
                let composed = s
                    .virtual_server
                    .as_ref()
                    .map(|v| virtual_server(v, &format!("{sbase}.virtual"), p));
                if composed.is_some() {
                    // Its members are reached through the gateway itself, each
                    // with its own credentials and checks.
                    for (field, set) in [
                        ("stdio", s.stdio.is_some()),
                        ("credentials", s.credentials.is_some()),
                        ("identity_assertion", s.identity_assertion.is_some()),
                        ("oauth", s.oauth.is_some()),
                        ("caller_token", s.caller_token.is_some()),
                        ("tls", s.tls.is_some()),
                        ("host", s.host.is_some()),
                        ("health_check", s.health_check.is_some()),
                    ] {
                        if set {
                            p.push(
                                format!("{sbase}.{field}"),
                                "a virtual server takes no upstream settings: set them on its members",
                            );
                        }
                    }
                }
                match (
                    s.upstreams.is_empty(),
                    s.stdio.is_some() || composed.is_some(),
                ) {
                    (true, false) => p.push(
                        format!("{sbase}.upstreams"),
                        "a server needs at least one upstream address (or `stdio`, or `virtual`)",
                    ),
                    (false, true) if s.stdio.is_some() => p.push(
                        format!("{sbase}.stdio"),
                        "a server is either `upstreams` or `stdio`, not both",
                    ),
                    (false, true) => p.push(
                        format!("{sbase}.virtual"),
                        "a virtual server has no `upstreams` of its own (its members do)",
                    ),
                    _ => {}
                }
                let mut ups = Vec::new();
                for (ui, u) in s.upstreams.iter().enumerate() {
                    match u.parse::<SocketAddr>() {
                        Ok(a) if a.port() == 0 => p.push(
                            format!("{sbase}.upstreams[{ui}]"),
                            "port 0 is not a reachable upstream",
                        ),
                        Ok(a) => ups.push(a),
                        Err(_) => p.push(
                            format!("{sbase}.upstreams[{ui}]"),
                            format!("`{u}` is not an ip:port address"),
                        ),
                    }
                }
                let tls = s.tls.as_ref().map(|t| {
                    if t.sni.is_empty() {
                        p.push(format!("{sbase}.tls.sni"), "must not be empty");
                    }
                    UpstreamTls {
                        sni: t.sni.clone(),
                        verify: t.verify.unwrap_or(true),
                        h2: t.h2.unwrap_or(false),
                    }
                });
                let hc = s.health_check.as_ref().map(|h| {
                    let base = format!("{sbase}.health_check");
                    let probe = match h.probe.as_deref() {
                        None | Some("tcp") => Probe::Tcp,
                        Some("ping") => Probe::Ping,
                        Some("initialize") => Probe::Initialize,
                        Some(other) => {
                            p.push(
                                format!("{base}.probe"),
                                format!("`{other}` is not tcp, ping or initialize"),
                            );
                            Probe::Tcp
                        }
                    };
                    let path = h.path.clone().unwrap_or_else(|| "/mcp".into());
                    if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic()) {
                        p.push(format!("{base}.path"), "must be a path such as `/mcp`");
                    }
                    let eject = h.eject.as_ref().map(|e| Ejection {
                        failures: nonzero(
                            p,
                            &format!("{base}.eject.failures"),
                            Some(e.failures),
                            5,
                        ),
                        cooldown: duration(
                            p,
                            &format!("{base}.eject.cooldown"),
                            &e.cooldown,
                            Duration::from_secs(30),
                        ),
                    });
                    HealthCheck {
                        interval: duration(
                            p,
                            &format!("{base}.interval"),
                            &h.interval,
                            Duration::from_secs(5),
                        ),
                        failures: nonzero(p, &format!("{base}.failures"), h.failures, 1),
                        successes: nonzero(p, &format!("{base}.successes"), h.successes, 1),
                        probe,
                        path,
                        timeout: duration(
                            p,
                            &format!("{base}.timeout"),
                            &h.timeout,
                            Duration::from_secs(2),
                        ),
                        eject,
                    }
                });
                let st = s
                    .timeouts
                    .as_ref()
                    .map(|t| timeouts(p, &format!("{sbase}.timeouts"), t, timeouts_v))
                    .unwrap_or(timeouts_v);
                if let Some(h) = &s.host {
                    if h.is_empty() || h.bytes().any(|b| !b.is_ascii_graphic()) {
                        p.push(
                            format!("{sbase}.host"),
                            "must be a plain authority such as `api.internal:8443`",
                        );
                    }
                }
                names.push(s.name.clone());
                let credentials = s
                    .credentials
                    .as_ref()
                    .and_then(|c| access::credentials(c, root, &format!("{sbase}.credentials"), p));
                let assertion = s
                    .identity_assertion
                    .as_ref()
                    .and_then(|a| identity_assertion(a, &format!("{sbase}.identity_assertion"), p));
                let oauth = s
                    .oauth
                    .as_ref()
                    .and_then(|o| outbound_oauth(o, root, &format!("{sbase}.oauth"), p));
                let caller_token = s.caller_token.as_ref().and_then(|c| {
                    let base = format!("{sbase}.caller_token");
                    if c.audience.trim().is_empty() {
                        p.push(format!("{base}.audience"), "must name this server");
                        return None;
                    }
                    Some(CallerToken {
                        audience: c.audience.clone(),
                        header: crate::access::outbound_header(c.header.as_deref(), &base, p)?,
                    })
                });
                if oauth.is_some() && caller_token.is_some() {
                    p.push(
                        format!("{sbase}.caller_token"),
                        "`oauth` already says how this server learns who calls: choose one",
                    );
                }
                // One way for this server to learn who calls, per header.
                let mut headers: Vec<(&str, &str)> = Vec::new();
                if let Some(c) = &credentials {
                    headers.push(("credentials", &c.header));
                }
                if let Some(a) = &assertion {
                    headers.push(("identity_assertion", &a.header));
                }
                if let Some(o) = &oauth {
                    headers.push(("oauth", &o.header));
                }
                if let Some(c) = &caller_token {
                    headers.push(("caller_token", &c.header));
                }
                for (i, (field, h)) in headers.iter().enumerate() {
                    if let Some((other, _)) = headers[..i].iter().find(|(_, o)| o == h) {
                        p.push(
                            format!("{sbase}.{field}"),
                            format!("`{other}` already sets `{h}`: choose one way for this server to prove who calls"),
                        );
                    }
                }
                servers.push(Server {
                    name: s.name.clone(),
                    group: g.name.clone(),
                    upstreams: ups,
                    tls,
                    host: s.host.clone(),
                    health_check: hc.unwrap_or_default(),
                    timeouts: st,
                    credentials,
                    assertion,
                    oauth,
                    caller_token,
                    stdio: stdio_cfg,
                    composed,
                });
            }
            groups.push(ServiceGroup {
                name: g.name.clone(),
                servers: names,
            });
        }
        if raw.service_groups.is_empty() {
            p.push("service_groups", "at least one service group is needed");
        }
        check_members(&servers, p);
        outlast_members(&mut servers);
        let mut routes = Vec::new();
        let mut seen_routes = HashSet::new();
        for (ri, r) in raw.routes.iter().enumerate() {
            let base = format!("routes[{ri}]");
            if !valid_prefix(&r.prefix) {
                p.push(format!("{base}.prefix"), format!("`{}` must start with `/`, have no trailing `/`, `//`, `.`/`..` segments, `%`, `?` or `#`", r.prefix));
            }
            // The gateway's own routes (virtual servers' members) live there.
            if r.prefix == "/.warden" || r.prefix.starts_with("/.warden/") {
                p.push(
                    format!("{base}.prefix"),
                    "`/.warden` is the gateway's own (virtual servers reach their members there)",
                );
            }
            let up = r.upstream_prefix.clone().unwrap_or_else(|| "/".to_string());
            if !valid_prefix(&up) {
                p.push(format!("{base}.upstream_prefix"), format!("`{up}` must start with `/` and have no trailing `/`, `//`, `.`/`..` segments, `%`, `?` or `#`"));
            }
            if !server_names.contains_key(&r.server) {
                p.push(
                    format!("{base}.server"),
                    format!("unknown server `{}`", r.server),
                );
            }
            let host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
            if !seen_routes.insert((host.clone(), r.prefix.clone())) {
                p.push(
                    format!("{base}.prefix"),
                    format!(
                        "another route already uses prefix `{}` for this host",
                        r.prefix
                    ),
                );
            }
            routes.push(Route {
                prefix: r.prefix.clone(),
                host,
                server: r.server.clone(),
                upstream_prefix: up,
            });
        }
        if raw.routes.is_empty() {
            p.push("routes", "at least one route is needed");
        }
        let identity = raw.identity.as_ref().map(|i| access::identity(i, root, p));
        let policy = access::policy(&raw.policy, p);
        let known: HashSet<&str> = servers.iter().map(|s: &Server| s.name.as_str()).collect();
        let catalog = access::catalog(&raw.catalog, &known, p);
        let kill_switch = access::kill_switch(&raw.kill_switch, p);
        let redis = crate::guards::redis(raw.redis.as_ref(), p);
        let quotas = crate::guards::quotas(&raw.quotas, redis.is_some(), p);
        // A virtual server's calls are judged as its members' (their own
        // names and tools); rules for it are written for the members: an
        // alias names nothing a guard sees.
        let aliases: HashSet<&str> = servers
            .iter()
            .filter_map(|s| s.composed.as_ref())
            .flat_map(|v| v.members.iter())
            .flat_map(|m| m.tools.values().filter_map(|t| t.alias.as_deref()))
            .collect();
        for (qi, q) in quotas.iter().enumerate() {
            for t in q.tools.iter().filter(|t| aliases.contains(t.as_str())) {
                p.push(
                    format!("quotas[{qi}].tools"),
                    format!("`{t}` is a virtual server's alias: name the member's own tool"),
                );
            }
        }
        for t in kill_switch
            .tools
            .iter()
            .filter(|t| aliases.contains(t.as_str()))
        {
            p.push(
                "kill_switch.tools",
                format!("`{t}` is a virtual server's alias: name the member's own tool"),
            );
        }
        for s in servers.iter().filter(|s| s.composed.is_some()) {
            if catalog.contains_key(&s.name) {
                p.push(
                    format!("catalog.{}", s.name),
                    "is a virtual server: list the tools under each member server (calls are judged as the member's)",
                );
            }
            if kill_switch
                .server_tools
                .iter()
                .any(|(srv, _)| *srv == s.name)
            {
                p.push(
                    "kill_switch.tools",
                    format!("`{}/…` names a virtual server: pause `<member>/<tool>` (the member's own tool name), or the whole `{}` in kill_switch.servers", s.name, s.name),
                );
            }
        }
        let session_seal = access::session_seal(raw.sessions.as_ref(), root, p);
        let schemas = crate::guards::schemas(&raw.schemas, p);
        let egress = crate::guards::egress(&raw.egress, p);
        let runaway = crate::guards::runaway(raw.runaway.as_ref(), p);
        let approvals = crate::guards::approvals(raw.approvals.as_ref(), p);
        let assertions = assertions(raw.assertions.as_ref(), raw.identity.as_ref(), p);
        // A route can only reach addresses the bundle allows.
        for (gi, g) in raw.service_groups.iter().enumerate() {
            for (si, s) in g.servers.iter().enumerate() {
                for (ui, u) in s.upstreams.iter().enumerate() {
                    if let Ok(a) = u.parse::<SocketAddr>() {
                        if !egress.upstream_allowed(a) {
                            p.push(
                                format!("service_groups[{gi}].servers[{si}].upstreams[{ui}]"),
                                format!("`{a}` is outside egress.upstreams"),
                            );
                        }
                    }
                }
            }
        }
        let has_mtls_listener = listeners
            .iter()
            .any(|l| l.tls.as_ref().is_some_and(|t| t.client_ca.is_some()));
        // A caller token goes on only to the one server it names, and a
        // token naming the gateway alone never goes on.
        let gateway_auds: Vec<&str> = identity
            .as_ref()
            .map(|i| {
                let mut v = vec![i.resource.as_str()];
                if let Some(j) = &i.jwt {
                    v.extend(j.audiences.iter().map(String::as_str));
                }
                v
            })
            .unwrap_or_default();
        for (i, s) in servers.iter().enumerate() {
            let Some(c) = &s.caller_token else { continue };
            if gateway_auds.contains(&c.audience.as_str()) {
                p.push(
                    format!("servers.{}.caller_token.audience", s.name),
                    "names the gateway itself: every caller's token would go on to this server",
                );
            }
            if let Some(o) = servers[..i].iter().find(|o| {
                o.caller_token
                    .as_ref()
                    .is_some_and(|oc| oc.audience == c.audience)
            }) {
                p.push(
                    format!("servers.{}.caller_token.audience", s.name),
                    format!(
                        "`{}` has the same audience: a token for one would reach both",
                        o.name
                    ),
                );
            }
        }
        if identity.as_ref().is_some_and(|i| !i.mtls.is_empty()) && !has_mtls_listener {
            p.push(
                "identity.mtls",
                "no listener asks for client certificates (set `tls.client_ca` on one)",
            );
        }
        Config {
            identity,
            policy,
            catalog,
            kill_switch,
            quotas,
            redis,
            session_seal,
            schemas,
            egress,
            runaway,
            assertions,
            approvals,
            tool_pinning: raw.tool_pinning.enabled.unwrap_or(true),
            dlp: raw.dlp.as_ref().map(|d| crate::guards::dlp(d, p)),
            listeners,
            admin,
            limits,
            timeouts: timeouts_v,
            audit,
            allowed_origins,
            allowed_hosts,
            undeclared_params,
            service_groups: groups,
            servers,
            routes,
        }
    }

    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("/"));
        assert!(valid_prefix("/jira"));
        assert!(valid_prefix("/a/b-c"));
        assert!(!valid_prefix("jira"));
        assert!(!valid_prefix("/jira/"));
        assert!(!valid_prefix("/a//b"));
        assert!(!valid_prefix("/a/../b"));
        assert!(!valid_prefix("/a%2e"));
    }
}
