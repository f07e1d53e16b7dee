//! The gateway's own sections: `listeners:`, `admin:`, `limits:`,
//! `timeouts:`, `audit:`, `security:` and `tool_pinning:`.

use serde::Deserialize;

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
    /// Slowest a client may read its replies, in bytes per second, e.g.
    /// `1KiB` (default): each wait on a write adds to a debt, each byte
    /// taken pays back `1 / rate` s, and a wait fails once it and the debt
    /// reach `timeouts.write`. Also sizes HTTP/2 reply slices.
    pub min_response_rate: Option<String>,
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
    /// Where records are exported as they are written (a SIEM).
    #[serde(default)]
    pub export: Option<AuditExportConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditExportConfig {
    pub syslog: Option<SyslogExportConfig>,
    pub http: Option<HttpExportConfig>,
    /// Ship the raw records to the control agent the gateway runs on
    /// (`--agent`), for search, live figures and chain verification there
    /// (default true; needs the trail in a file).
    pub agent: Option<bool>,
}

/// JSON over HTTP: OCSF API Activity events, or Splunk HEC.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpExportConfig {
    /// Where batches are POSTed (`http://` or `https://`).
    pub url: String,
    /// `ocsf` (default: a JSON array of OCSF events per POST) or
    /// `splunk_hec` (HEC events, `Authorization: Splunk <token>`).
    pub format: Option<String>,
    /// The environment variable that holds the receiver's token (sent as
    /// `Bearer`, or as HEC's `Splunk`).
    pub token_env: Option<String>,
    /// A CA file for an `https://` receiver signed by a private CA.
    pub ca_file: Option<String>,
    /// As for syslog (default `1GiB`).
    pub max_lag: Option<String>,
}

/// RFC 5424 syslog over TCP (RFC 6587 octet counting), or over TLS (RFC 5425).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogExportConfig {
    /// `host:port` of the receiver.
    pub address: String,
    /// TLS to the receiver: the CA file that signs its certificate and the
    /// name it must carry (default: the host of `address`).
    pub tls: Option<SyslogTlsConfig>,
    /// The APP-NAME field (default `warden`).
    pub app_name: Option<String>,
    /// The facility, `local0`..`local7`, `auth`, `authpriv`, `daemon`, `user` (default `local0`).
    pub facility: Option<String>,
    /// How far the export may fall behind the trail (the unsent part of the
    /// audit files, which are its spool) before it skips the oldest records,
    /// counting them as dropped (default `1GiB`).
    pub max_lag: Option<String>,
    /// The longest message the receiver takes (rsyslog's `maxMessageSize`,
    /// default `8KiB`, at least `2KiB`): a record whose message would be
    /// longer is sent as its stub (see the audit docs), never split.
    pub max_message_size: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogTlsConfig {
    pub ca_file: String,
    pub server_name: Option<String>,
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
