//! Service groups and their servers (`service_groups:`): upstreams, TLS,
//! health checks, timeouts and the ways each server learns who calls; and
//! how virtual servers relate to the servers they compose.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use crate::access::{self, Credentials, VaultCredential};
use crate::error::Problems;
use crate::fields::{duration, nonzero, valid_name};
use crate::raw;

use super::limits::{timeouts, Timeouts};
use super::stdio::{stdio, Stdio};
use super::upstream_auth::{
    identity_assertion, outbound_oauth, CallerToken, IdentityAssertion, OutboundOAuth,
};
use super::virtual_servers::{virtual_server, Virtual};

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
    /// A credential fetched per call from the control agent's vault: the
    /// calling principal's own (`per_user`) or a static secret (`vault`).
    pub vault: Option<VaultCredential>,
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

/// Reads every group and its servers, in order; also returns each server's
/// group by server name (routes are checked against it).
pub(crate) fn service_groups(
    raw: &[raw::ServiceGroupConfig],
    root: &Path,
    timeouts_v: Timeouts,
    p: &mut Problems,
) -> (Vec<ServiceGroup>, Vec<Server>, HashMap<String, String>) {
    let mut groups = Vec::new();
    let mut servers = Vec::new();
    let mut group_names = HashSet::new();
    let mut server_names: HashMap<String, String> = HashMap::new();
    for (gi, g) in raw.iter().enumerate() {
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
            } else if let Some(other) = server_names.keys().find(|n| {
                n.as_str() != s.name
                    && crate::names::same_name(crate::names::Name::Server, n, &s.name)
            }) {
                // The registry, the kill switch and every policy read
                // them as one name.
                p.push(
                    format!("{sbase}.name"),
                    format!(
                        "server `{}` is `{other}` in another case: one name, one server",
                        s.name
                    ),
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
            let hc = s.health_check.as_ref().map(|h| health_check(h, &sbase, p));
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
            let (credentials, vault) = match s.credentials.as_ref() {
                Some(c) if access::from_vault(c) => (
                    None,
                    access::vault_credential(c, &format!("{sbase}.credentials"), p),
                ),
                Some(c) => (
                    access::credentials(c, root, &format!("{sbase}.credentials"), p),
                    None,
                ),
                None => (None, None),
            };
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
            if let Some(c) = &vault {
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
                vault,
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
    if raw.is_empty() {
        p.push("service_groups", "at least one service group is needed");
    }
    (groups, servers, server_names)
}

fn health_check(h: &raw::HealthCheckConfig, sbase: &str, p: &mut Problems) -> HealthCheck {
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
        failures: nonzero(p, &format!("{base}.eject.failures"), Some(e.failures), 5),
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
}

/// A virtual server's own legs (to its aggregator) wait a second longer
/// than its slowest member may take (`timeouts.read`, and `stream_idle`
/// for streams), so a member that does not answer is reported by the
/// member's own timeout, naming the member, not by the outer leg's.
pub(super) fn outlast_members(servers: &mut [Server]) {
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
pub(super) fn check_members(servers: &[Server], p: &mut Problems) {
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
