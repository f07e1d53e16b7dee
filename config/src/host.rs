//! `HostPattern`: a host an argument URL may point at (a domain, any
//! subdomain of one, or a network), and the allowlists made of them. A leaf:
//! the egress guard and the tool catalog both read it.

use std::net::{IpAddr, SocketAddr};

use crate::error::Problems;

/// A host an argument URL may point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exact domain (lower case, no trailing dot).
    Domain(String),
    /// `*.example.com`: any subdomain (not the apex).
    Suffix(String),
    Net(ipnet::IpNet),
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let t = s.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Ok(n) = t.parse::<ipnet::IpNet>() {
            return Ok(HostPattern::Net(n));
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(HostPattern::Net(ipnet::IpNet::from(ip)));
        }
        let (suffix, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, t.as_str()),
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!("`{s}` is not a host, `*.domain` or CIDR"));
        }
        Ok(if suffix {
            HostPattern::Suffix(format!(".{name}"))
        } else {
            HostPattern::Domain(name.to_owned())
        })
    }

    /// Whether a normalised host (lower-case domain or IP) matches.
    pub fn matches_domain(&self, domain: &str) -> bool {
        match self {
            HostPattern::Domain(d) => d == domain,
            HostPattern::Suffix(s) => domain.ends_with(s.as_str()),
            HostPattern::Net(_) => false,
        }
    }

    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        match self {
            HostPattern::Net(n) => n.contains(&ip),
            _ => false,
        }
    }
}

pub(crate) fn host_patterns(list: &[String], base: &str, p: &mut Problems) -> Vec<HostPattern> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            HostPattern::parse(s)
                .map_err(|e| p.push(format!("{base}[{i}]"), e))
                .ok()
        })
        .collect()
}

/// This host's own addresses, read now from its interfaces (none when
/// they cannot be read): an upstream at one of them is this host, as one
/// at loopback or an unspecified address is.
pub fn own_addresses() -> Vec<IpAddr> {
    let Ok(all) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    all.filter_map(|i| {
        let a = i.address?;
        if let Some(v4) = a.as_sockaddr_in() {
            Some(IpAddr::V4(v4.ip()))
        } else {
            a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        }
    })
    .collect()
}

/// Whether `ip` names this host: loopback, unspecified, or one of its
/// interfaces' addresses (`own`, from [`own_addresses`]); IPv4-mapped
/// IPv6 as its IPv4.
pub fn this_host(ip: IpAddr, own: &[IpAddr]) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ip.is_unspecified() || own.iter().any(|o| o.to_canonical() == ip)
}

/// Where an upstream address leads, for telling whether two servers are
/// one: an IPv4-mapped IPv6 address is its IPv4 address, and every
/// loopback or unspecified address (127/8, `::1`, `0.0.0.0`, `::`, and
/// `localhost` where a name is allowed) is this host, which a server
/// listening on all its addresses answers at any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    ThisHost(u16),
    Ip(IpAddr, u16),
}

pub fn place(a: SocketAddr) -> Place {
    let ip = match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    // This host's own interface addresses are this host too: a server
    // bound to every address answers at each of them.
    static OWN: std::sync::LazyLock<Vec<IpAddr>> = std::sync::LazyLock::new(own_addresses);
    if this_host(ip, &OWN) {
        Place::ThisHost(a.port())
    } else {
        Place::Ip(ip, a.port())
    }
}

/// [`place`] of an address written in the config (an upstream, a
/// listener): `ip:port`, or `localhost:port` in any case.
pub fn place_of(s: &str) -> Option<Place> {
    if let Ok(a) = s.trim().parse::<SocketAddr>() {
        return Some(place(a));
    }
    let (host, port) = s.trim().rsplit_once(':')?;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let local = host == "localhost" || host.ends_with(".localhost");
    local.then_some(())?;
    port.parse().ok().map(Place::ThisHost)
}
