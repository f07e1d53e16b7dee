//! SSRF address rules: which IP addresses and host names are refused
//! (loopback, private, link-local, CGNAT, metadata, IPv6 forms embedding
//! one …), a host as either reader normalises it, and the verdict on one
//! host against the allowlists.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use warden_config::guards::HostPattern;

/// Why a host is refused (the rule name in denials and audit).
pub fn ssrf_rule_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [127, ..] => "ssrf_loopback",
        [10, ..] | [192, 168, ..] => "ssrf_private",
        [172, b, ..] if (16..32).contains(&b) => "ssrf_private",
        [169, 254, 169, 254] | [100, 100, 100, 200] => "ssrf_metadata",
        [169, 254, ..] => "ssrf_link_local",
        [100, b, ..] if (64..128).contains(&b) => "ssrf_cgnat",
        [0, ..] => "ssrf_unspecified",
        [a, ..] if a >= 224 => "ssrf_multicast_or_reserved",
        [192, 0, 0, _] | [198, 18..=19, _, _] => "ssrf_reserved",
        _ => return None,
    })
}

pub fn ssrf_rule(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => ssrf_rule_v4(v4),
        IpAddr::V6(v6) => ssrf_rule_v6(v6),
    }
}

pub(super) fn ssrf_rule_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        return Some("ssrf_loopback");
    }
    if ip.is_unspecified() {
        return Some("ssrf_unspecified");
    }
    // Forms that embed an IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(ssrf_rule_v4(v4).unwrap_or("ssrf_ipv4_mapped"));
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if s[..6] == [0; 6] {
        // IPv4-compatible (deprecated) ::a.b.c.d
        return Some(ssrf_rule_v4(embedded(s[6], s[7])).unwrap_or("ssrf_ipv4_compatible"));
    }
    if s[0] == 0x2002 {
        if let Some(r) = ssrf_rule_v4(embedded(s[1], s[2])) {
            return Some(r);
        }
    }
    // Teredo `2001:0::/32` (RFC 4380): the relay's IPv4 address in bits
    // 32–63 and the client's, each bit inverted, in the last 32; a host
    // with a Teredo interface reaches either.
    if s[..2] == [0x2001, 0] {
        let client = embedded(!s[6], !s[7]);
        if let Some(r) = ssrf_rule_v4(client).or_else(|| ssrf_rule_v4(embedded(s[2], s[3]))) {
            return Some(r);
        }
    }
    // SIIT's IPv4-translated `::ffff:0:a.b.c.d`.
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return Some(ssrf_rule_v4(embedded(s[6], s[7])).unwrap_or("ssrf_ipv4_translated"));
    }
    // NAT64's local-use prefix `64:ff9b:1::/48` (RFC 8215) carries the
    // IPv4 address in its last 32 bits as the well-known prefix does.
    if s[..3] == [0x64, 0xff9b, 1] {
        if let Some(r) = ssrf_rule_v4(embedded(s[6], s[7])) {
            return Some(r);
        }
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        if let Some(r) = ssrf_rule_v4(embedded(s[6], s[7])) {
            return Some(r);
        }
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("ssrf_metadata");
    }
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => "ssrf_private",
        x if x & 0xffc0 == 0xfe80 => "ssrf_link_local",
        // Site-local (deprecated, still routed inside some networks).
        x if x & 0xffc0 == 0xfec0 => "ssrf_private",
        x if x & 0xff00 == 0xff00 => "ssrf_multicast_or_reserved",
        _ => return None,
    })
}

pub(super) fn ssrf_name(domain: &str) -> Option<&'static str> {
    const LOOPBACK: &[&str] = &[
        "localhost",
        "localhost.localdomain",
        "localhost6",
        "localhost6.localdomain6",
        "ip6-localhost",
        "ip6-loopback",
    ];
    // The other IPv6 names of Debian's /etc/hosts (ff00::0, ff02::1, …, fe00::0).
    const RESERVED: &[&str] = &[
        "ip6-localnet",
        "ip6-mcastprefix",
        "ip6-allnodes",
        "ip6-allrouters",
        "ip6-allhosts",
    ];
    const METADATA: &[&str] = &[
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
    ];
    if LOOPBACK.contains(&domain) || domain.ends_with(".localhost") {
        return Some("ssrf_loopback");
    }
    if let Some(rule) = wildcard_dns(domain) {
        return Some(rule);
    }
    if RESERVED.contains(&domain) {
        return Some("ssrf_multicast_or_reserved");
    }
    if METADATA.contains(&domain) {
        return Some("ssrf_metadata");
    }
    if PRIVATE_SUFFIXES
        .iter()
        .any(|p| domain.ends_with(p) || domain == &p[1..])
    {
        return Some("ssrf_internal_name");
    }
    None
}

/// Names only a private resolver answers: the reserved `.internal` and
/// `home.arpa` (RFC 8375), mDNS `.local`, cluster `.svc`, and the
/// undelegated suffixes home and office networks use.
pub(super) const PRIVATE_SUFFIXES: &[&str] = &[
    ".internal",
    ".svc",
    ".local",
    ".localdomain",
    ".home.arpa",
    ".lan",
    ".home",
    ".corp",
    ".intranet",
    ".private",
];

/// Private suffixes that are also words of code and prose (`user.home`,
/// `self.private`): judged in URLs and declared hosts, not in free text.
pub(super) const WORDLIKE_SUFFIXES: &[&str] = &[".home", ".corp", ".intranet", ".private"];

/// A single-label host (`redis`, `intranet`): a resolver completes it with
/// its search domain, so it names a host of the local network. Judged in
/// URLs of the schemes a client dials as the web does (and in declared
/// hosts); a resource URI of a server's own scheme (`mysql://users/data`)
/// names a resource, not a host.
pub(super) fn single_label(host: &Dest, allow: &[&HostPattern]) -> bool {
    matches!(host, Dest::Name(d) if !d.contains('.') && !allow.iter().any(|p| p.matches_domain(d)))
}

/// Public names under which every name resolves to loopback.
pub(super) const LOOPBACK_ZONES: &[&str] = &[
    "localtest.me",
    "lvh.me",
    "vcap.me",
    "localho.st",
    "localhost.direct",
    "local.gd",
    "lacolhost.com",
];
/// Public DNS services that answer with an address written into the name
/// (`10.0.0.1.nip.io`, `app-7f000001.sslip.io`), or alternate between two
/// (rebinding: `rbndr.us`, `1u.ms`).
pub(super) const ECHO_ZONES: &[&str] = &[
    "nip.io",
    "sslip.io",
    "xip.io",
    "traefik.me",
    "nip.direct",
    "rbndr.us",
    "1u.ms",
];

/// Names of the public services SSRF payloads use to reach an address
/// by name: every name under a loopback zone is loopback; every name
/// under an echo or rebinding service is refused whatever address it
/// seems to spell (the services read an address anywhere in the name, in
/// forms of their own, and a rebinding name answers with two). No lookup
/// is made; these are named as the metadata services are.
fn wildcard_dns(domain: &str) -> Option<&'static str> {
    let under = |zone: &str| {
        domain
            .strip_suffix(zone)
            .is_some_and(|rest| rest.ends_with('.'))
    };
    if LOOPBACK_ZONES.iter().any(|z| domain == *z || under(z)) {
        return Some("ssrf_loopback");
    }
    ECHO_ZONES
        .iter()
        .any(|z| under(z))
        .then_some("ssrf_wildcard_dns")
}

/// A host, normalised for comparison and judgement.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Dest {
    Ip(IpAddr),
    /// Lower case, ASCII (IDNA applied), no trailing dots.
    Name(String),
}

impl Dest {
    pub(super) fn whatwg(host: url::Host<&str>) -> Dest {
        match host {
            url::Host::Ipv4(ip) => Dest::Ip(ip.into()),
            url::Host::Ipv6(ip) => Dest::Ip(ip.into()),
            url::Host::Domain(d) => Dest::Name(d.trim_end_matches('.').to_ascii_lowercase()),
        }
    }

    /// The host an RFC 3986 client dials for the raw `host` of an authority,
    /// or `None` when such clients need not agree on one.
    pub(super) fn rfc3986(host: &str) -> Option<Dest> {
        if let Some(inner) = host.strip_prefix('[') {
            let ip: Ipv6Addr = inner.strip_suffix(']')?.parse().ok()?;
            return Some(Dest::Ip(ip.into()));
        }
        if host.is_ascii() {
            let h = host.trim_end_matches('.').to_ascii_lowercase();
            // Only the strict dotted quad: other numeric forms are names to
            // some clients (Go, a resolver without inet_aton) and addresses to
            // others.
            return Some(match h.parse::<Ipv4Addr>() {
                Ok(ip) => Dest::Ip(ip.into()),
                Err(_) => Dest::Name(h),
            });
        }
        // IDNA: clients map names alike, except the deviation characters
        // (IDNA2003 and UTS 46 transitional processing differ), the dots
        // that only IDNA-aware readers split labels at, and digits or dots
        // that become an IP address.
        if host.contains([
            'ß', 'ς', '\u{200c}', '\u{200d}', '\u{3002}', '\u{ff0e}', '\u{ff61}',
        ]) {
            return None;
        }
        match url::Host::parse(host).ok()? {
            url::Host::Domain(d) => Some(Dest::Name(d.trim_end_matches('.').to_owned())),
            _ => None,
        }
    }
}

/// The verdict on one normalised host.
pub(super) fn judge(host: &Dest, allow: &[&HostPattern]) -> Result<(), &'static str> {
    let rule = match host {
        Dest::Ip(ip) => {
            if allow.iter().any(|p| p.matches_ip(*ip)) {
                return Ok(());
            }
            ssrf_rule(*ip)
        }
        Dest::Name(d) => {
            if allow.iter().any(|p| p.matches_domain(d)) {
                return Ok(());
            }
            ssrf_name(d)
        }
    };
    match rule {
        Some(r) => Err(r),
        None if allow.is_empty() => Ok(()),
        None => Err("egress_not_allowlisted"),
    }
}
