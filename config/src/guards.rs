//! Typed quotas (and the Redis store of global ones), schema options,
//! egress allowlists, DLP rules, runaway guards and human approvals.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::denial::DenialStyle;
use crate::error::Problems;
use crate::fields::parse_duration;
use crate::raw;
use crate::risk::Risk;
use crate::secret::{secret, Secret};

// Lives in a leaf module (the tool catalog reads it too); re-exported here,
// where it has always been.
use crate::host::host_patterns;
pub use crate::host::HostPattern;

/// What a quota keeps one counter per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKey {
    Principal,
    Tenant,
    Server,
    Group,
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaKind {
    /// At most `limit` calls (or cost units) per fixed window.
    Window {
        limit: u64,
        window: Duration,
        weighted: bool,
        exact: bool,
    },
    /// At most `max` calls in flight.
    Concurrency { max: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub name: String,
    pub per: Vec<QuotaKey>,
    pub kind: QuotaKind,
    pub servers: Vec<String>,
    pub groups: Vec<String>,
    pub tools: Vec<String>,
    pub tenants: Vec<String>,
    pub methods: Vec<String>,
    /// Digest of the definition: counters carry over a bundle swap when it is unchanged.
    pub definition: [u8; 32],
    /// Enforced across replicas through the shared store (window quotas only).
    pub global: Option<StoreFailure>,
}

/// What a global quota does while the shared store is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// Each replica enforces the limit on its own counters.
    Local,
    /// Refuse the calls the quota covers.
    Closed,
}

/// The shared store for global quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redis {
    pub url: String,
    /// Fixed lease size; `None`: 1 % of each limit (1 … 1000).
    pub lease: Option<u64>,
    pub timeout: Duration,
    pub prefix: String,
}

impl Redis {
    /// Units a replica takes from the store per round trip for `limit`.
    pub fn lease_for(&self, limit: u64) -> u64 {
        self.lease
            .unwrap_or((limit / 100).clamp(1, 1000))
            .clamp(1, limit.max(1))
    }
}

pub(crate) fn redis(raw: Option<&raw::RedisConfig>, p: &mut Problems) -> Option<Redis> {
    let r = raw?;
    if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://")) {
        p.push("redis.url", "must start with redis:// or rediss://");
    }
    if r.lease == Some(0) {
        p.push("redis.lease", "must be at least 1");
    }
    let timeout = match &r.timeout {
        None => Duration::from_millis(250),
        Some(t) => parse_duration(t).unwrap_or_else(|e| {
            p.push("redis.timeout", e);
            Duration::from_millis(250)
        }),
    };
    Some(Redis {
        url: r.url.clone(),
        lease: r.lease,
        timeout,
        prefix: r.prefix.clone().unwrap_or_else(|| "warden:".into()),
    })
}

#[derive(Debug, Clone)]
pub struct Schemas {
    pub invalid_arguments: DenialStyle,
    pub validate_output: bool,
}

impl Default for Schemas {
    fn default() -> Self {
        Schemas {
            invalid_arguments: DenialStyle::ToolError,
            validate_output: true,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Egress {
    /// Networks upstream addresses must lie in (empty: any).
    pub upstreams: Vec<ipnet::IpNet>,
    pub upstream_addrs: Vec<SocketAddr>,
    pub allow: Vec<HostPattern>,
    pub detect_urls: bool,
}

pub(crate) fn quotas(raw: &[raw::QuotaConfig], has_store: bool, p: &mut Problems) -> Vec<Quota> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, q) in raw.iter().enumerate() {
        let base = format!("quotas[{i}]");
        if q.name.is_empty() || !names.insert(q.name.clone()) {
            p.push(format!("{base}.name"), "must be a unique, non-empty name");
        }
        let mut per = Vec::new();
        for (j, k) in q.per.iter().enumerate() {
            per.push(match k.as_str() {
                "principal" => QuotaKey::Principal,
                "tenant" => QuotaKey::Tenant,
                "server" => QuotaKey::Server,
                "group" => QuotaKey::Group,
                "tool" => QuotaKey::Tool,
                o => {
                    p.push(
                        format!("{base}.per[{j}]"),
                        format!("`{o}` is not principal, tenant, server, group or tool"),
                    );
                    continue;
                }
            });
        }
        let kind = match (q.limit, &q.window, q.concurrency) {
            (Some(limit), Some(w), None) => {
                let window = parse_duration(w).unwrap_or_else(|e| {
                    p.push(format!("{base}.window"), e);
                    Duration::from_secs(1)
                });
                if window < Duration::from_secs(1) || window > Duration::from_secs(86_400) {
                    p.push(format!("{base}.window"), "must be between 1s and 1d");
                }
                if window.subsec_nanos() != 0 {
                    p.push(format!("{base}.window"), "must be whole seconds");
                }
                if limit == 0 || limit > u32::MAX as u64 {
                    p.push(format!("{base}.limit"), "must be between 1 and 4294967295");
                }
                QuotaKind::Window {
                    limit,
                    window,
                    weighted: q.weighted,
                    exact: q.exact.unwrap_or(true),
                }
            }
            (None, None, Some(max)) if max > 0 => QuotaKind::Concurrency { max },
            _ => {
                p.push(
                    base.clone(),
                    "set `limit` and `window`, or `concurrency` (> 0)",
                );
                continue;
            }
        };
        let methods = if q.methods.is_empty() {
            vec!["tools/call".to_owned()]
        } else {
            q.methods.clone()
        };
        let global = if q.global {
            if !matches!(kind, QuotaKind::Window { exact: true, .. }) {
                p.push(
                    format!("{base}.global"),
                    "only exact `limit`/`window` quotas can be global",
                );
            }
            if !has_store {
                p.push(format!("{base}.global"), "needs the `redis` section");
            }
            Some(match q.on_store_failure.as_deref() {
                None | Some("local") => StoreFailure::Local,
                Some("closed") => StoreFailure::Closed,
                Some(o) => {
                    p.push(
                        format!("{base}.on_store_failure"),
                        format!("`{o}` is not local or closed"),
                    );
                    StoreFailure::Local
                }
            })
        } else {
            if q.on_store_failure.is_some() {
                p.push(
                    format!("{base}.on_store_failure"),
                    "applies to `global: true` quotas only",
                );
            }
            None
        };
        let mut h = Sha256::new();
        h.update(format!(
            "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            q.name, per, kind, q.servers, q.groups, q.tools, q.tenants, methods, global
        ));
        out.push(Quota {
            name: q.name.clone(),
            per,
            kind,
            servers: q.servers.clone(),
            groups: q.groups.clone(),
            tools: q.tools.clone(),
            // Compared with a caller's canonical tenant, as every rule
            // that names tenants is (`ACME` is `acme`'s).
            tenants: q
                .tenants
                .iter()
                .map(|t| crate::person::canonical_or_marked(t))
                .collect(),
            methods,
            definition: h.finalize().into(),
            global,
        });
    }
    out
}

pub(crate) fn schemas(raw: &raw::SchemasConfig, p: &mut Problems) -> Schemas {
    Schemas {
        invalid_arguments: match raw.invalid_arguments.as_deref() {
            None | Some("tool_error") => DenialStyle::ToolError,
            Some("error") => DenialStyle::Error,
            Some(o) => {
                p.push(
                    "schemas.invalid_arguments",
                    format!("`{o}` is not tool_error or error"),
                );
                DenialStyle::ToolError
            }
        },
        validate_output: raw.validate_output.unwrap_or(true),
    }
}

pub(crate) fn egress(raw: &raw::EgressConfig, p: &mut Problems) -> Egress {
    let mut e = Egress {
        detect_urls: raw.detect_urls.unwrap_or(true),
        allow: host_patterns(&raw.allow, "egress.allow", p),
        ..Egress::default()
    };
    for (i, u) in raw.upstreams.iter().enumerate() {
        if let Ok(a) = u.parse::<SocketAddr>() {
            e.upstream_addrs.push(a);
        } else if let Ok(n) = u.parse::<ipnet::IpNet>() {
            e.upstreams.push(n);
        } else if let Ok(ip) = u.parse::<IpAddr>() {
            e.upstreams.push(ipnet::IpNet::from(ip));
        } else {
            p.push(
                format!("egress.upstreams[{i}]"),
                format!("`{u}` is not a CIDR, IP or ip:port"),
            );
        }
    }
    e
}

impl Egress {
    /// Whether an upstream address is allowed.
    pub fn upstream_allowed(&self, a: SocketAddr) -> bool {
        (self.upstreams.is_empty() && self.upstream_addrs.is_empty())
            || self.upstream_addrs.contains(&a)
            || self.upstreams.iter().any(|n| n.contains(&a.ip()))
    }
}

/// Which way a message travels, as DLP rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlpDirection {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlpAction {
    /// Refuse the message (a denial naming the rules, never the text).
    Block,
    /// Replace each match with the mask or a keyed hash token.
    Redact,
    /// Remove each match.
    Strip,
    /// Record only.
    Log,
}

impl DlpAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DlpAction::Block => "block",
            DlpAction::Redact => "redact",
            DlpAction::Strip => "strip",
            DlpAction::Log => "log",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DlpRule {
    pub name: String,
    /// Detector names, `prefix_*`, `category:pii|secret|injection`, or `*`.
    pub detectors: Vec<String>,
    pub request: bool,
    pub response: bool,
    /// Applies to calls of tools at least this risky (others: any message).
    pub min_risk: Option<Risk>,
    pub action: DlpAction,
    /// Replacement text for `redact`; `{detector}` and `{rule}` are filled in.
    pub mask: String,
    /// Redact with a stable keyed hash token instead of the mask.
    pub hash: bool,
}

#[derive(Debug, Clone)]
pub struct CustomDetector {
    pub name: String,
    pub regex: Option<String>,
    /// Literals (any case) of which every match contains one: the regex runs
    /// only around them (none: runs on every string).
    pub anchors: Vec<String>,
    /// Words matched as whole words, case-insensitively.
    pub keywords: Vec<String>,
    /// SHA-256 hex of lower-cased tokens (e.g. hashed customer ids).
    pub dictionary_sha256: Vec<String>,
    pub secret: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Dlp {
    pub rules: Vec<DlpRule>,
    pub custom: Vec<CustomDetector>,
    pub hash_key: Option<Secret>,
}

impl Dlp {
    /// The first rule that covers this finding.
    pub fn rule_for(
        &self,
        detector: &str,
        category: &str,
        dir: DlpDirection,
        risk: Risk,
    ) -> Option<&DlpRule> {
        self.rules.iter().find(|r| {
            let dir_ok = match dir {
                DlpDirection::Request => r.request,
                DlpDirection::Response => r.response,
            };
            dir_ok
                && r.min_risk.is_none_or(|m| risk >= m)
                && r.detectors.iter().any(|d| {
                    d == "*"
                        || d == detector
                        || d.strip_prefix("category:") == Some(category)
                        || d.strip_suffix('*').is_some_and(|p| detector.starts_with(p))
                })
        })
    }
}

pub(crate) fn dlp(raw: &raw::DlpConfig, p: &mut Problems) -> Dlp {
    let mut rules = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let base = format!("dlp.rules[{i}]");
        let action = match r.action.as_str() {
            "block" => DlpAction::Block,
            "redact" => DlpAction::Redact,
            "strip" => DlpAction::Strip,
            "log" | "flag" => DlpAction::Log,
            o => {
                p.push(
                    format!("{base}.action"),
                    format!("`{o}` is not block, redact, strip or log"),
                );
                continue;
            }
        };
        let (request, response) = match r.direction.as_deref() {
            None | Some("both") => (true, true),
            Some("request") => (true, false),
            Some("response") => (false, true),
            Some(o) => {
                p.push(
                    format!("{base}.direction"),
                    format!("`{o}` is not request, response or both"),
                );
                (true, true)
            }
        };
        let min_risk = r.min_risk.as_deref().and_then(|x| {
            Risk::parse(x).or_else(|| {
                p.push(
                    format!("{base}.min_risk"),
                    format!("`{x}` is not a risk level"),
                );
                None
            })
        });
        if r.detectors.is_empty() {
            p.push(
                format!("{base}.detectors"),
                "name at least one detector (or `*`)",
            );
        }
        rules.push(DlpRule {
            name: r.name.clone(),
            detectors: r.detectors.clone(),
            request,
            response,
            min_risk,
            action,
            mask: r
                .mask
                .clone()
                .unwrap_or_else(|| "[REDACTED:{detector}]".into()),
            hash: r.hash.unwrap_or(false),
        });
    }
    let custom = raw
        .custom
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.regex.is_none() && c.keywords.is_empty() && c.dictionary_sha256.is_empty() {
                p.push(
                    format!("dlp.custom[{i}]"),
                    "needs regex, keywords or dictionary_sha256",
                );
            }
            if let Some(r) = &c.regex {
                if let Err(e) = regex::Regex::new(r) {
                    p.push(format!("dlp.custom[{i}].regex"), e.to_string());
                }
            }
            CustomDetector {
                name: c.name.clone(),
                regex: c.regex.clone(),
                anchors: c.anchors.clone(),
                keywords: c.keywords.clone(),
                dictionary_sha256: c.dictionary_sha256.clone(),
                secret: c.secret.unwrap_or(false),
            }
        })
        .collect();
    let hash_key = raw
        .hash_key_env
        .as_ref()
        .and_then(|var| match std::env::var(var) {
            Ok(v) if v.len() >= 16 => Some(secret(v)),
            _ => {
                p.push(
                    "dlp.hash_key_env",
                    format!("environment variable `{var}` must hold at least 16 characters"),
                );
                None
            }
        });
    Dlp {
        rules,
        custom,
        hash_key,
    }
}

/// Runaway-agent guards (`runaway:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runaway {
    pub session: Option<SessionBudget>,
    pub loops: Option<LoopDetection>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionBudget {
    pub calls: Option<u64>,
    pub duration: Option<Duration>,
    pub per_tool: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopDetection {
    pub max_repeats: u64,
    pub window: Duration,
}

pub(crate) fn runaway(raw: Option<&raw::RunawayConfig>, p: &mut Problems) -> Runaway {
    let Some(raw) = raw else {
        return Runaway::default();
    };
    let session = raw.session.as_ref().map(|s| {
        if s.calls == Some(0) {
            p.push("runaway.session.calls", "must be greater than zero");
        }
        for (t, n) in &s.per_tool {
            if *n == 0 {
                p.push(
                    format!("runaway.session.per_tool.{t}"),
                    "must be greater than zero",
                );
            }
        }
        let duration = s.duration.as_ref().and_then(|d| match parse_duration(d) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                p.push("runaway.session.duration", "must be greater than zero");
                None
            }
            Err(e) => {
                p.push("runaway.session.duration", e);
                None
            }
        });
        if s.calls.is_none() && s.duration.is_none() && s.per_tool.is_empty() {
            p.push("runaway.session", "set calls, duration or per_tool");
        }
        SessionBudget {
            calls: s.calls,
            duration,
            per_tool: s.per_tool.clone(),
        }
    });
    let loops = raw.loops.as_ref().and_then(|l| {
        if l.max_repeats == 0 {
            p.push("runaway.loops.max_repeats", "must be greater than zero");
        }
        match parse_duration(&l.window) {
            Ok(w) if !w.is_zero() && w <= Duration::from_secs(86_400) => Some(LoopDetection {
                max_repeats: l.max_repeats.max(1),
                window: w,
            }),
            Ok(_) => {
                p.push("runaway.loops.window", "must be between 1s and 1d");
                None
            }
            Err(e) => {
                p.push("runaway.loops.window", e);
                None
            }
        }
    });
    Runaway { session, loops }
}

/// Human approval of risky calls (`approvals:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approvals {
    /// Distinct approvers each risk tier needs (0: none), by
    /// `Risk as usize` (LOW, MEDIUM, HIGH, CRITICAL).
    pub require: [u8; 4],
    /// How long an approved call stays usable.
    pub expires: Duration,
    /// How long a held call waits for its approvers.
    pub pending: Duration,
    /// Approval page template (`{id}`), if not the agent's own URL.
    pub url: Option<String>,
    pub timeout: Duration,
}

impl Default for Approvals {
    fn default() -> Self {
        Approvals {
            require: [0; 4],
            expires: Duration::from_secs(15 * 60),
            pending: Duration::from_secs(3600),
            url: None,
            timeout: Duration::from_secs(3),
        }
    }
}

impl Approvals {
    /// Approvers a call of `risk` needs by its tier alone.
    pub fn required(&self, risk: Risk) -> u8 {
        self.require[risk as usize]
    }
}

/// The most approvers a call may ask for.
pub const MAX_APPROVERS: u8 = 5;

pub(crate) fn approvals(raw: Option<&raw::ApprovalsConfig>, p: &mut Problems) -> Approvals {
    let mut out = Approvals::default();
    let Some(raw) = raw else {
        return out;
    };
    for (tier, n) in &raw.require {
        match Risk::parse(tier) {
            Some(r) if (1..=MAX_APPROVERS).contains(n) => out.require[r as usize] = *n,
            Some(_) => p.push(
                format!("approvals.require.{tier}"),
                format!("must be between 1 and {MAX_APPROVERS} approvers"),
            ),
            None => p.push(
                format!("approvals.require.{tier}"),
                format!("`{tier}` is not a risk (LOW, MEDIUM, HIGH, CRITICAL)"),
            ),
        }
    }
    let mut span = |field: &str,
                    v: &Option<String>,
                    min: Duration,
                    max: Duration,
                    dflt: Duration| match v.as_deref().map(parse_duration) {
        None => dflt,
        Some(Ok(d)) if d >= min && d <= max => d,
        Some(Ok(_)) => {
            p.push(
                format!("approvals.{field}"),
                format!("must be between {} and {}", humanize(min), humanize(max)),
            );
            dflt
        }
        Some(Err(e)) => {
            p.push(format!("approvals.{field}"), e);
            dflt
        }
    };
    out.expires = span(
        "expires",
        &raw.expires,
        Duration::from_secs(1),
        Duration::from_secs(86_400),
        out.expires,
    );
    out.pending = span(
        "pending",
        &raw.pending,
        Duration::from_secs(1),
        Duration::from_secs(7 * 86_400),
        out.pending,
    );
    out.timeout = span(
        "timeout",
        &raw.timeout,
        Duration::from_millis(100),
        Duration::from_secs(60),
        out.timeout,
    );
    if let Some(u) = &raw.url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            p.push("approvals.url", "must be an http(s) URL");
        } else if u.chars().any(|c| c.is_control() || c.is_whitespace()) {
            p.push(
                "approvals.url",
                "must not contain spaces or control characters",
            );
        } else {
            out.url = Some(u.clone());
        }
    }
    out
}

fn humanize(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
