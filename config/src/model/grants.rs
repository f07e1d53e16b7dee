//! What the org grants each tenant (`tenants:` of `warden.yaml`): where
//! its layer's routes and servers may live. Read here, beside the rest of
//! the org's model; the layers themselves are checked in `crate::tenants`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::access::PrincipalKind;
use crate::error::Problems;
use crate::raw;

/// The role that may call servers and definitions under review (the
/// registry's `testing` and `approved` states).
pub const TESTER_ROLE: &str = "tester";

/// Roles only the org gives: a grant cannot let a layer's keys carry them.
pub const ORG_ONLY_ROLES: &[&str] = &[TESTER_ROLE];

/// Attributes only the org (or a verified token) gives, which the gateway
/// reads as facts: the flow clearance, and a token's issuer and client
/// (identity assertions carry them on to upstreams as `orig_iss` and
/// `client_id`). A grant cannot let a layer's keys carry them.
pub const ORG_ONLY_ATTRIBUTES: &[&str] = &[crate::flows::CLEARANCE_ATTRIBUTE, "iss", "client_id"];

/// Whether `name` is one of `reserved` (without ASCII case: a policy that
/// lower-cases a name before it compares must not find one there).
pub fn reserved(reserved: &[&str], name: &str) -> bool {
    reserved.iter().any(|r| r.eq_ignore_ascii_case(name.trim()))
}

/// A tenant's name: 1–63 of `a-z 0-9 _`, starting with a letter. Written
/// in its canonical form (a principal's tenant is compared after
/// canonicalisation, `crate::person`), and a plain Rego identifier so that
/// its package is `warden.tenants.<name>`.
pub fn valid_tenant_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok && name == crate::person::NO_TENANT {
        Err(format!(
            "`{NO_TENANT}` is no tenant to grant: it is the tenant of anonymous callers and of credentials that name none, so its layer would rule, and its admins read, every one of them",
            NO_TENANT = crate::person::NO_TENANT
        ))
    } else if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a tenant name (1-63 of a-z, 0-9 and _, starting with a letter, in lower case)",
            name.escape_debug()
        ))
    }
}

/// What the org grants a tenant (`tenants.<name>`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    /// Path prefixes without a trailing `/` (`/finance/` is `/finance`).
    pub path_prefixes: Vec<String>,
    /// Lower-case host names, without a trailing dot.
    pub hosts: Vec<String>,
    /// Networks the layer's servers may live in, and single addresses;
    /// both empty: the layer may define no servers (an org that names no
    /// place for them has not said where a tenant's servers may live, and
    /// anywhere would include its own servers' hosts).
    pub upstreams: Vec<ipnet::IpNet>,
    pub upstream_addrs: Vec<SocketAddr>,
    /// Roles the layer's API keys may carry (compared exactly, as the
    /// gateway and Rego compare them); never one of [`ORG_ONLY_ROLES`].
    pub roles: Vec<String>,
    /// Attribute names the layer's API keys may carry; never one of
    /// [`ORG_ONLY_ATTRIBUTES`].
    pub attributes: Vec<String>,
    /// Kinds the layer's API keys may name besides `agent`, their default.
    pub kinds: Vec<PrincipalKind>,
}

impl Grant {
    /// Whether the grant names any place for the layer's servers.
    pub fn grants_upstreams(&self) -> bool {
        !self.upstreams.is_empty() || !self.upstream_addrs.is_empty()
    }

    /// Whether a server of the layer may live at `a`: an address or
    /// network the grant names (none named: nowhere).
    pub fn upstream_allowed(&self, a: SocketAddr) -> bool {
        self.upstream_addrs.contains(&a) || self.upstreams.iter().any(|n| n.contains(&a.ip()))
    }

    /// Whether the layer's keys may carry role `r`.
    pub fn role_allowed(&self, r: &str) -> bool {
        !reserved(ORG_ONLY_ROLES, r) && self.roles.iter().any(|g| g == r)
    }

    /// Whether the layer's keys may carry attribute `a`.
    pub fn attribute_allowed(&self, a: &str) -> bool {
        !reserved(ORG_ONLY_ATTRIBUTES, a) && self.attributes.iter().any(|g| g == a)
    }

    /// Whether the layer's keys may be of kind `k`.
    pub fn kind_allowed(&self, k: PrincipalKind) -> bool {
        k == PrincipalKind::Agent || self.kinds.contains(&k)
    }
}

/// Reads `tenants:` of `warden.yaml`.
pub(crate) fn grants(
    raw: &BTreeMap<String, raw::TenantGrantConfig>,
    p: &mut Problems,
) -> BTreeMap<String, Grant> {
    let mut out = BTreeMap::new();
    for (name, g) in raw {
        let base = format!("tenants.{name}");
        if let Err(e) = valid_tenant_name(name) {
            p.push(&base, e);
            continue;
        }
        let mut grant = Grant::default();
        for (i, pre) in g.path_prefixes.iter().enumerate() {
            let trimmed = if pre == "/" {
                "/"
            } else {
                pre.strip_suffix('/').unwrap_or(pre)
            };
            if !crate::model::valid_route_prefix(trimmed) {
                p.push(
                    format!("{base}.path_prefixes[{i}]"),
                    format!("`{pre}` must start with `/` and have no `//`, `.`/`..` segments, `%`, `?` or `#`"),
                );
                continue;
            }
            if crate::model::gateway_own_prefix(trimmed) {
                p.push(
                    format!("{base}.path_prefixes[{i}]"),
                    format!("`{pre}` is the gateway's own (`/.warden`: virtual servers reach their members there)"),
                );
                continue;
            }
            grant.path_prefixes.push(trimmed.to_owned());
        }
        for (i, h) in g.hosts.iter().enumerate() {
            let h = h.trim_end_matches('.').to_ascii_lowercase();
            if h.is_empty() || !h.is_ascii() || h.contains(['/', ':', '*', ' ']) {
                p.push(
                    format!("{base}.hosts[{i}]"),
                    "must be a host name (no port, no wildcard)",
                );
                continue;
            }
            grant.hosts.push(h);
        }
        for (i, u) in g.upstreams.iter().enumerate() {
            if let Ok(a) = u.parse::<SocketAddr>() {
                grant.upstream_addrs.push(a);
            } else if let Ok(n) = u.parse::<ipnet::IpNet>() {
                grant.upstreams.push(n);
            } else if let Ok(ip) = u.parse::<IpAddr>() {
                grant.upstreams.push(ipnet::IpNet::from(ip));
            } else {
                p.push(
                    format!("{base}.upstreams[{i}]"),
                    format!("`{u}` is not a CIDR, IP or ip:port"),
                );
            }
        }
        grant.roles = granted(
            &g.roles,
            ORG_ONLY_ROLES,
            &format!("{base}.roles"),
            "a tenant's keys never carry it (it reaches servers under review)",
            p,
        );
        grant.attributes = granted(
            &g.attributes,
            ORG_ONLY_ATTRIBUTES,
            &format!("{base}.attributes"),
            "the gateway reads it as a fact (flow clearance, a token's issuer or client)",
            p,
        );
        for (i, k) in g.kinds.iter().enumerate() {
            match PrincipalKind::parse(k) {
                Some(k) => grant.kinds.push(k),
                None => p.push(
                    format!("{base}.kinds[{i}]"),
                    format!("`{k}` is not a principal kind (agent or user)"),
                ),
            }
        }
        out.insert(name.clone(), grant);
    }
    out
}

/// The names of a grant's list (`roles`, `attributes`) a tenant may give
/// its keys: every one but the empty and those `reserved` keeps for the
/// org (`why` says what the org's own use of it is).
fn granted(
    names: &[String],
    reserved_for_org: &[&str],
    at: &str,
    why: &str,
    p: &mut Problems,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        if reserved(reserved_for_org, n) {
            p.push(
                format!("{at}[{i}]"),
                format!("`{n}` is the org's alone: {why}"),
            );
        } else if n.is_empty() {
            p.push(format!("{at}[{i}]"), "must not be empty");
        } else {
            out.push(n.clone());
        }
    }
    out
}
