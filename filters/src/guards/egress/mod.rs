//! Egress checks of URL- and host-valued tool arguments (SSRF defence).
//!
//! Which values: top-level arguments the catalog names (`url_arguments`) and
//! properties the tool's schema marks `format: uri | url | hostname | …` —
//! each string of them judged whole as a URL or a bare `host[:port]`, and any
//! URL-like string or object key nested inside them — and (with
//! `egress.detect_urls`) every string and every object key, at any depth, that
//! looks like a URL to some client: `scheme://` anywhere, and at the start
//! (after the leading C0 controls and spaces, and with the tabs and newlines,
//! that WHATWG parsers drop) any `scheme:` followed by `/` or `\` in any mix,
//! `http:`/`https:`/`ws:`/`wss:`/`ftp:` followed by anything, or a
//! protocol-relative `//host` (`\\host`). Drive paths (`C:\dir`, `C:/dir`) are
//! not URLs. A found string that is not a URL as a whole (text around a URL)
//! is refused, named by the first refusal of the URLs in it.
//!
//! Each URL is read twice. The WHATWG URL parser (the `url` crate; browsers,
//! Node `fetch`) normalises `0x7f.1`, `2130706433`, `0177.0.0.1`, `127.1`,
//! `[::ffff:127.0.0.1]`, `user@host`, `LOCALHOST.` and IDNA forms such as
//! `127。0。0。1` to the host it connects to. An RFC 3986 reader (curl, Go
//! `net/http`, Python `urllib`) takes the authority between `//` and the first
//! `/`, `?` or `#`, the userinfo up to the last `@` and the host up to
//! `:port`. A URL these readers could split differently is refused as
//! `egress_ambiguous_url`: a `\`, whitespace or control character anywhere
//! in the scheme and authority, a special scheme not followed by exactly
//! `//`, more than one `@`, `%` in the host (WHATWG decodes it, curl does
//! not), brackets other than one IPv6 literal (no zone ids), a port that is
//! not digits, an IP address spelled with non-ASCII characters, IDNA
//! deviation characters (`ß`, `ς`, ZWJ, ZWNJ) or dots (`。`, `．`, `｡`)
//! — and so is one whose two hosts
//! differ after normalisation (`0x5db8d822` is an IPv4 address to WHATWG and
//! a name to Go). The WHATWG host is refused when it is loopback (including
//! `localhost.localdomain`, `ip6-localhost`, `ip6-loopback`, `*.localhost`),
//! private, link-local, CGNAT, multicast, unspecified, a cloud metadata
//! address or name, or an IPv6 form embedding one (IPv4-mapped, -compatible,
//! 6to4, NAT64) — unless an allowlist CIDR names it — and, when allowlists are
//! configured, unless it matches one. Denials name the argument only by a
//! name the catalog or schema declares, never by its content.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde_json::Value as Json;
use warden_config::access::{ServerCatalog, ToolEntry};
use warden_config::guards::HostPattern;

use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::guards::tools::ToolPins;
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;

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

fn ssrf_rule_v6(ip: Ipv6Addr) -> Option<&'static str> {
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
        x if x & 0xff00 == 0xff00 => "ssrf_multicast_or_reserved",
        _ => return None,
    })
}

fn ssrf_name(domain: &str) -> Option<&'static str> {
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
    if RESERVED.contains(&domain) {
        return Some("ssrf_multicast_or_reserved");
    }
    if METADATA.contains(&domain) {
        return Some("ssrf_metadata");
    }
    if domain.ends_with(".internal")
        || domain.ends_with(".local")
        || domain.ends_with(".localdomain")
    {
        return Some("ssrf_internal_name");
    }
    None
}

/// The rule for a URL that clients could read with different hosts.
pub const AMBIGUOUS: &str = "egress_ambiguous_url";

/// Schemes that WHATWG parsers give a host after any mix of `/` and `\`, or
/// none (`http:host`).
const SPECIAL: &[&str] = &["http", "https", "ws", "wss", "ftp"];

/// ASCII tab and newlines, which WHATWG parsers delete anywhere in a URL.
fn dropped(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r')
}

/// How a string starts, seen the way a WHATWG parser sees it: leading C0
/// controls and spaces skipped, tabs and newlines deleted.
#[derive(Debug, Default)]
struct Lead {
    /// The scheme (lower case), when the string starts with `scheme:`.
    scheme: Option<String>,
    /// How many `/` and `\` follow that colon (or open the string).
    slashes: usize,
    /// Whether text follows them, up to the next `/`, `\`, `?` or `#`,
    /// without a space or control character: a host, if anything.
    host_like: bool,
}

fn lead(s: &str) -> Lead {
    let mut b = s
        .bytes()
        .skip_while(|&c| c <= b' ')
        .filter(|&c| !dropped(c as char))
        .peekable();
    let mut name = String::new();
    while let Some(c) = b.next_if(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
    {
        name.push(c.to_ascii_lowercase() as char);
    }
    let scheme = if name.is_empty() {
        None
    } else if name.starts_with(|c: char| c.is_ascii_alphabetic()) && b.next_if_eq(&b':').is_some() {
        Some(name)
    } else {
        return Lead::default();
    };
    let mut slashes = 0;
    while b.next_if(|&c| c == b'/' || c == b'\\').is_some() {
        slashes += 1;
    }
    let mut host_like = false;
    for c in b.take_while(|c| !matches!(c, b'/' | b'\\' | b'?' | b'#')) {
        if c <= b' ' || c == 0x7f {
            host_like = false;
            break;
        }
        host_like = true;
    }
    Lead {
        scheme,
        slashes,
        host_like,
    }
}

/// Whether `s`, taken whole, is a URL to some client (see the module docs).
fn starts_as_url(s: &str) -> bool {
    let l = lead(s);
    match l.scheme.as_deref() {
        Some(scheme) if SPECIAL.contains(&scheme) => true,
        // `C:\dir`, `C:/dir`: a drive path.
        Some(scheme) => l.slashes > 0 && !(scheme.len() == 1 && l.slashes == 1),
        None => l.slashes >= 2 && l.host_like,
    }
}

/// Where a URL may start inside `s`: before each `scheme:` followed by `/`
/// or `\`, and before a special scheme that ends such a scheme
/// (`xhttp://` holds `http://` for a reader that looks for it).
fn embedded(s: &str) -> Vec<usize> {
    let b = s.as_bytes();
    let mut starts = Vec::new();
    for (i, _) in s.match_indices(':') {
        if !matches!(b.get(i + 1), Some(b'/' | b'\\')) {
            continue;
        }
        let mut from = i;
        while from > 0
            && (b[from - 1].is_ascii_alphanumeric() || matches!(b[from - 1], b'+' | b'-' | b'.'))
        {
            from -= 1;
        }
        let run = &s[from..i];
        if let Some(first) = run.find(|c: char| c.is_ascii_alphabetic()) {
            starts.push(from + first);
        }
        for scheme in SPECIAL {
            let len = scheme.len();
            if run.len() > len && run[run.len() - len..].eq_ignore_ascii_case(scheme) {
                starts.push(i - len);
            }
        }
    }
    starts
}

/// Whether a string found anywhere in the arguments is or holds a URL.
fn url_like(s: &str) -> bool {
    if s.contains("://") || starts_as_url(s) {
        return true;
    }
    let b = s.as_bytes();
    s.match_indices(':').any(|(i, _)| {
        let mut next = b[i + 1..].iter().filter(|&&c| !dropped(c as char));
        matches!(next.next(), Some(b'/' | b'\\'))
            && SPECIAL.iter().any(|scheme| {
                i >= scheme.len() && b[i - scheme.len()..i].eq_ignore_ascii_case(scheme.as_bytes())
            })
    })
}

/// A scheme-less address in free text that curl or wget would dial and
/// the SSRF rules forbid: an IPv4 literal in any form a URL parser reads
/// with a dot (`169.254.169.254`, `0x7f.1`) or `localhost`, followed by a port or a
/// path (`127.0.0.1:6379`, `localhost:8080/admin`). An address alone is
/// prose (`host 10.1.2.3 is up`), and only forbidden ones are reported (so
/// a version number or a public address is not judged against the
/// allowlist); the token is judged as a whole, as a client would dial it.
fn bare_forbidden(s: &str) -> Option<&str> {
    // Most text holds neither a dotted number nor `localhost`: one pass
    // over its bytes, and nothing is tokenised or parsed.
    let b = s.as_bytes();
    let dotted = memchr::memchr_iter(b'.', b).any(|i| {
        i > 0 && b[i - 1].is_ascii_hexdigit() && b.get(i + 1).is_some_and(u8::is_ascii_digit)
    });
    let local = memchr::memchr2_iter(b'l', b'L', b).any(|i| {
        b.get(i..i + 9)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"localhost"))
    });
    if !dotted && !local {
        return None;
    }
    let tokens = s.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | '"' | '\'' | '(' | ')' | '<' | '>' | '[' | ']' | '{' | '}' | '|' | '`'
            )
    });
    for token in tokens.filter(|t| !t.is_empty()).take(256) {
        let token = token.trim_end_matches(['.', '!', '?']);
        let authority = token.split(['/', '?', '#']).next().unwrap_or("");
        let rest = &token[authority.len()..];
        // `user@host` dials the host; `mailto:a@host` names a mailbox.
        let host_port = match authority.rsplit_once('@') {
            Some((user, _)) if user.contains(':') => continue,
            Some((_, h)) => h,
            None => authority,
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, true),
            Some(_) => continue,
            None => (host_port, false),
        };
        if host.is_empty() {
            continue;
        }
        let dialled = port || !rest.is_empty();
        let hb = host.as_bytes();
        let forbidden = if hb.eq_ignore_ascii_case(b"localhost")
            || (hb.len() > 10 && hb[hb.len() - 10..].eq_ignore_ascii_case(b".localhost"))
        {
            dialled
        } else if !hb[0].is_ascii_digit()
            || !hb
                .iter()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, b'.' | b'x' | b'X'))
        {
            // No IPv4 form a URL parser reads starts otherwise or holds
            // other characters.
            false
        } else {
            match url::Host::parse(host) {
                // A dotted literal: `10:30` is a time, not host 0.0.0.10.
                Ok(url::Host::Ipv4(ip)) if host.contains('.') => {
                    dialled && ssrf_rule_v4(ip).is_some()
                }
                _ => false,
            }
        };
        if forbidden {
            return Some(token);
        }
    }
    None
}

/// A host, normalised for comparison and judgement.
#[derive(Debug, Clone, PartialEq)]
enum Dest {
    Ip(IpAddr),
    /// Lower case, ASCII (IDNA applied), no trailing dots.
    Name(String),
}

impl Dest {
    fn whatwg(host: url::Host<&str>) -> Dest {
        match host {
            url::Host::Ipv4(ip) => Dest::Ip(ip.into()),
            url::Host::Ipv6(ip) => Dest::Ip(ip.into()),
            url::Host::Domain(d) => Dest::Name(d.trim_end_matches('.').to_ascii_lowercase()),
        }
    }

    /// The host an RFC 3986 client dials for the raw `host` of an authority,
    /// or `None` when such clients need not agree on one.
    fn rfc3986(host: &str) -> Option<Dest> {
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

/// The raw host an RFC 3986 client reads in `text`, a URL; refuses a scheme
/// other than http(s) and ws(s), and text that such clients and WHATWG
/// parsers could split into authority and host differently.
fn rfc3986_host(text: &str) -> Result<&str, &'static str> {
    let colon = text.find(':').ok_or("egress_unparsable_url")?;
    let scheme: String = text[..colon].chars().filter(|&c| !dropped(c)).collect();
    if !["http", "https", "ws", "wss"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&scheme))
    {
        return Err("egress_scheme");
    }
    let rest = &text[colon + 1..];
    let after = rest.trim_start_matches(|c: char| c == '/' || c == '\\' || dropped(c));
    let slashes = &rest[..rest.len() - after.len()];
    // RFC 3986 ends the authority at `/`, `?` or `#`; WHATWG also at `\`,
    // which is refused below.
    let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
    let head = &text[..colon + 1 + slashes.len() + authority.len()];
    if slashes != "//"
        || head
            .chars()
            .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    {
        return Err(AMBIGUOUS);
    }
    // Userinfo ends at the last `@` (WHATWG, Go, urllib) — or the first (curl).
    let mut at = authority.rsplitn(2, '@');
    let host_port = at.next().unwrap_or_default();
    if at.next().is_some_and(|userinfo| userinfo.contains('@')) {
        return Err(AMBIGUOUS);
    }
    let (host, port) = match host_port.strip_prefix('[') {
        Some(r) => {
            let close = r.find(']').ok_or(AMBIGUOUS)?;
            (&host_port[..close + 2], &r[close + 1..])
        }
        // urllib ends the host at the first `:`, Go at the last.
        None => host_port.split_at(host_port.find(':').unwrap_or(host_port.len())),
    };
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if !(port.is_empty() || port.starts_with(':') && port[1..].bytes().all(|b| b.is_ascii_digit()))
        || bare.unwrap_or(host).contains(['%', '[', ']'])
    {
        return Err(AMBIGUOUS);
    }
    Ok(host)
}

/// The verdict on one normalised host.
fn judge(host: &Dest, allow: &[&HostPattern]) -> Result<(), &'static str> {
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

/// Whether what follows `host:` is a port (and perhaps a path or query).
fn is_port(rest: &str) -> bool {
    let after = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    rest.is_empty()
        || after.len() < rest.len()
            && after
                .chars()
                .next()
                .is_none_or(|c| matches!(c, '/' | '?' | '#'))
}

/// The verdict on a value that is a URL or a bare host as a whole (a declared
/// argument, or a found string that starts as a URL): `Ok` or the rule that
/// refuses it.
pub fn check(value: &str, allow: &[&HostPattern]) -> Result<(), &'static str> {
    let v = value.trim_matches(|c: char| c <= ' ' || c.is_whitespace());
    let l = lead(v);
    let (text, unparsable) = match l.scheme.as_deref() {
        Some(s) if l.slashes > 0 || s == "file" || SPECIAL.contains(&s) => {
            (std::borrow::Cow::Borrowed(v), "egress_unparsable_url")
        }
        // Protocol-relative: WHATWG reads `\\host` as `//host` too.
        None if l.slashes >= 2 => (format!("http:{v}").into(), "egress_unparsable_url"),
        _ if v.is_empty() => return Err("egress_unparsable_host"),
        // `name:rest` is a URL of scheme `name` unless `rest` is a port
        // (`mailto:a@b`, `gopher:host` for a lenient client).
        Some(_) if !is_port(&v[v.find(':').map_or(0, |i| i + 1)..]) => return Err("egress_scheme"),
        // A bare host or host:port: judge it as a client would dial it.
        _ => (format!("http://{v}/").into(), "egress_unparsable_host"),
    };
    let raw = rfc3986_host(&text)?;
    let url = url::Url::parse(&text).map_err(|_| unparsable)?;
    if !matches!(url.scheme(), "http" | "https" | "ws" | "wss") {
        return Err("egress_scheme");
    }
    let host = Dest::whatwg(url.host().ok_or("egress_no_host")?);
    let verdict = judge(&host, allow);
    if Dest::rfc3986(raw).as_ref() != Some(&host) {
        // Two readings: refused either way, named by the WHATWG one if it
        // is forbidden.
        return Err(match verdict {
            Err(r) if r != "egress_not_allowlisted" => r,
            _ => AMBIGUOUS,
        });
    }
    verdict
}

/// Schemes some client dials as a network address (curl's, the browsers',
/// the language runtimes', and the SSRF classics): a URL of one of them is
/// judged by its host. Any other scheme (`file:`, `test:`, `urn:`, a
/// server's own) names a resource, not a place to connect to.
const NETWORK: &[&str] = &[
    "http",
    "https",
    "ws",
    "wss",
    "ftp",
    "ftps",
    "sftp",
    "scp",
    "gopher",
    "dict",
    "ldap",
    "ldaps",
    "tftp",
    "telnet",
    "smb",
    "smbs",
    "ssh",
    "rtsp",
    "rtmp",
    "mqtt",
    "mqtts",
    "imap",
    "imaps",
    "pop3",
    "pop3s",
    "smtp",
    "smtps",
    "redis",
    "rediss",
    "mysql",
    "postgres",
    "postgresql",
    "mongodb",
    "amqp",
    "amqps",
    "nntp",
    "irc",
    "ircs",
    "xmpp",
    "git",
    "svn",
    "jar",
    "netdoc",
    "dns",
    "rsync",
    "nfs",
    "vnc",
    "rdp",
    "sip",
    "sips",
    "coap",
    "coaps",
    "grpc",
    "grpcs",
    "h2",
    "h3",
    "quic",
    "tcp",
    "udp",
    "unix",
];

/// Whether a string that starts as `lead` names a network address, or,
/// with `files` (in a tool's or prompt's arguments, which a fetching tool
/// hands to a URL client: curl and Python's urllib read `file:` URLs), a
/// local file.
fn dialled(l: &Lead, files: bool) -> bool {
    match l.scheme.as_deref() {
        Some("file") => files,
        Some(s) => NETWORK.contains(&s),
        // Protocol-relative `//host`.
        None => l.slashes >= 2,
    }
}

/// The verdict on a URI where MCP carries one (`resources/read`, a root, a
/// completion value …) or on a found string that starts as a URL: a network
/// URL is judged as a declared one is (a scheme other than http's read as
/// http would dial its host, so `gopher://2130706433/` is loopback); any
/// other scheme names a resource and is no egress.
pub fn check_uri(value: &str, allow: &[&HostPattern], files: bool) -> Result<(), &'static str> {
    let v = value.trim_matches(|c: char| c <= ' ' || c.is_whitespace());
    let l = lead(v);
    if !dialled(&l, files) {
        return Ok(());
    }
    match l.scheme.as_deref() {
        Some(s) if s != "file" && !SPECIAL.contains(&s) => {
            let rest = v.find(':').map_or("", |i| &v[i + 1..]);
            check(&format!("http:{rest}"), allow)
        }
        _ => check(v, allow),
    }
}

/// The verdict on a string detection found: a URL as a whole, or text that
/// holds URLs. No client reads such text as one URL, and text that holds a
/// network URL is refused as it always was — named by the first refusal
/// among those URLs (each up to the next whitespace, as link finders read
/// them; at most 8 judged). Resource identifiers in text are prose.
fn check_found(s: &str, allow: &[&HostPattern], files: bool) -> Result<(), &'static str> {
    if starts_as_url(s) && dialled(&lead(s), files) {
        return check_uri(s, allow, files);
    }
    // A resource identifier, or prose: the network URLs in it, if any.
    let mut urls = embedded(s)
        .into_iter()
        .filter(|&start| dialled(&lead(&s[start..]), files))
        .peekable();
    if urls.peek().is_none() {
        return Ok(());
    }
    for start in urls.take(8) {
        let url = &s[start..];
        check_uri(
            &url[..url.find(char::is_whitespace).unwrap_or(url.len())],
            allow,
            files,
        )?;
    }
    Err("egress_unparsable_url")
}

const URL_FORMATS: &[&str] = &[
    "uri",
    "url",
    "iri",
    "uri-reference",
    "iri-reference",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
];

/// What a local `$ref` in `schema` (`#/$defs/Model`, as Pydantic writes
/// nested models) points at within `root`. The schema's other keywords
/// still apply beside it (JSON Schema 2019-09 on), so the walks below take
/// the target as one more branch, never instead of them.
fn ref_target<'s>(root: &'s Json, schema: &'s Json) -> Option<&'s Json> {
    schema
        .get("$ref")
        .and_then(Json::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| root.pointer(p))
}

/// Schema nodes one call's walk may visit: a base, plus 64 for each node
/// of the arguments (a bulk call's thousand items each cost a few). A
/// pinned schema is the server's, and a hostile one can make `$ref`s and
/// branches multiply (an `allOf` of two `{"$ref": "#"}` doubles the walk at
/// every level). Past this budget the call is refused, never judged by a
/// partial walk.
fn schema_steps(args: &Json) -> usize {
    fn nodes(v: &Json) -> usize {
        1 + match v {
            Json::Array(a) => a.iter().map(nodes).sum(),
            Json::Object(o) => o.values().map(nodes).sum(),
            _ => 0,
        }
    }
    10_000 + 64 * nodes(args)
}

fn schema_too_complex() -> Decision {
    Decision::Reject(Denial::error(
        JsonRpcError::new(
            codes::INVALID_PARAMS,
            "The tool's input schema is too complex to judge its arguments against \
             (its $ref and allOf/anyOf/oneOf branches multiply); the call is refused",
        )
        .with_data(serde_json::json!({"reason": "schema_too_complex"})),
        "schema_too_complex",
    ))
}

/// Whether `schema` declares a URL, host or address anywhere it nests.
fn declares_url(schema: &Json, depth: usize) -> bool {
    if depth > 64 {
        return false;
    }
    match schema {
        Json::Object(o) => {
            o.get("format")
                .and_then(Json::as_str)
                .is_some_and(|f| URL_FORMATS.contains(&f))
                || o.iter().any(|(k, v)| {
                    matches!(
                        k.as_str(),
                        "properties"
                            | "items"
                            | "additionalProperties"
                            | "allOf"
                            | "anyOf"
                            | "oneOf"
                            | "prefixItems"
                            | "$defs"
                            | "definitions"
                    ) && match v {
                        Json::Object(m)
                            if matches!(k.as_str(), "properties" | "$defs" | "definitions") =>
                        {
                            m.values().any(|s| declares_url(s, depth + 1))
                        }
                        v => declares_url(v, depth + 1),
                    }
                })
        }
        Json::Array(a) => a.iter().any(|s| declares_url(s, depth + 1)),
        _ => false,
    }
}

/// The values of `v` that `schema` declares (at any depth: `properties`,
/// `items`, `additionalProperties`, `allOf`/`anyOf`/`oneOf`) as a URL,
/// host or address, judged whole under the declared path `at`.
fn declared_at<'a>(
    root: &Json,
    v: &'a Json,
    schema: &Json,
    at: &str,
    out: &mut Vec<Found<'a>>,
    depth: usize,
    steps: &mut usize,
) {
    if depth > 64 || *steps == 0 {
        return;
    }
    *steps -= 1;
    if let Some(target) = ref_target(root, schema) {
        declared_at(root, v, target, at, out, depth + 1, steps);
    }
    let format = schema.get("format").and_then(Json::as_str);
    if format.is_some_and(|f| URL_FORMATS.contains(&f)) {
        let bracket = format == Some("ipv6");
        let mut one = |at: String, x: &'a Json| match (x, bracket) {
            // A bare IPv6 address is a host once bracketed.
            (Json::String(s), true) if !s.starts_with('[') => out.push(Found {
                argument: Some(at),
                value: format!("[{s}]").into(),
                whole: true,
            }),
            _ => match declared_value(at.clone(), x) {
                Some(f) => out.push(f),
                None => walk(x, Some(&at), out),
            },
        };
        match v {
            Json::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    one(format!("{at}[{i}]"), x);
                }
            }
            x => one(at.to_owned(), x),
        }
    }
    for branch in ["allOf", "anyOf", "oneOf"] {
        for b in schema
            .get(branch)
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            declared_at(root, v, b, at, out, depth + 1, steps);
        }
    }
    match v {
        Json::Object(o) => {
            let props = schema.get("properties").and_then(Json::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, x) in o {
                if let Some(s) = props.and_then(|p| p.get(k)).or(extra) {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    declared_at(root, x, s, &path, out, depth + 1, steps);
                }
            }
        }
        Json::Array(a) => {
            if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
                for (i, x) in a.iter().enumerate() {
                    declared_at(root, x, items, &format!("{at}[{i}]"), out, depth + 1, steps);
                }
            }
        }
        _ => {}
    }
}

pub struct EgressFilter {
    global: Vec<HostPattern>,
    catalog: HashMap<String, ServerCatalog>,
    pins: Arc<ToolPins>,
    detect: bool,
}

impl std::fmt::Debug for EgressFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EgressFilter")
    }
}

/// One value to judge.
struct Found<'a> {
    /// The argument it is in, by a name the catalog or schema declares;
    /// `None` when only the arguments' own content could say (never quoted).
    argument: Option<String>,
    value: std::borrow::Cow<'a, str>,
    /// A declared argument's string, a URL or bare host as a whole; else a
    /// string or key detection found (`check_found`).
    whole: bool,
}

/// Whether `v` holds, at any depth `schema` declares (`properties`,
/// `items`, and the branches of `allOf`/`anyOf`/`oneOf`), a member whose
/// name folds to a declared property's (or one of `extra`, at the top)
/// without being it.
fn near_named(
    root: Option<&Json>,
    v: &Json,
    schema: Option<&Json>,
    extra: &[&str],
    depth: usize,
    steps: &mut usize,
) -> bool {
    // Schemas nest as deep as the arguments may; past this, nothing declares.
    if depth > 64 {
        return false;
    }
    if schema.is_none() && extra.is_empty() {
        return false;
    }
    // Out of budget: the caller refuses the call (`steps` is 0).
    if *steps == 0 {
        return true;
    }
    *steps -= 1;
    let target = root.zip(schema).and_then(|(r, s)| ref_target(r, s));
    let branches = ["allOf", "anyOf", "oneOf"]
        .iter()
        .filter_map(|k| schema.and_then(|s| s.get(*k)).and_then(Json::as_array))
        .flatten()
        .chain(target);
    match v {
        Json::Object(o) => {
            let props = schema
                .and_then(|s| s.get("properties"))
                .and_then(Json::as_object);
            let names: Vec<&str> = extra
                .iter()
                .copied()
                .chain(props.into_iter().flat_map(|p| p.keys().map(String::as_str)))
                .collect();
            if !names.is_empty()
                && o.keys().any(|k| {
                    !names.contains(&k.as_str()) && crate::protocol::names::near_name(k, &names)
                })
            {
                return true;
            }
            o.iter().any(|(k, x)| {
                let declared = props.and_then(|p| p.get(k)).or_else(|| {
                    schema
                        .and_then(|s| s.get("additionalProperties"))
                        .filter(|a| a.is_object())
                });
                near_named(root, x, declared, &[], depth + 1, steps)
            }) || branches
                .into_iter()
                .any(|b| near_named(root, v, Some(b), &[], depth + 1, steps))
        }
        Json::Array(a) => {
            let items = schema
                .and_then(|s| s.get("items"))
                .filter(|i| i.is_object());
            a.iter()
                .any(|x| near_named(root, x, items, &[], depth + 1, steps))
                || branches
                    .into_iter()
                    .any(|b| near_named(root, v, Some(b), &[], depth + 1, steps))
        }
        _ => false,
    }
}

/// A declared argument's value judged whole: a string as it is, and a
/// number or boolean as the text a server formats into its URL
/// (`f"http://{url}/"` with 2130706433 is loopback): never passed
/// unjudged. `None` for an object or null (walked like any content).
fn declared_value(argument: String, value: &Json) -> Option<Found<'_>> {
    Some(Found {
        argument: Some(argument),
        value: match value {
            Json::String(s) => s.as_str().into(),
            Json::Number(n) => n.to_string().into(),
            Json::Bool(b) => b.to_string().into(),
            _ => return None,
        },
        whole: true,
    })
}

/// Every string and object key at any depth under `v` that looks like a URL.
fn walk<'a>(v: &'a Json, argument: Option<&str>, out: &mut Vec<Found<'a>>) {
    let found = |value: &'a str, out: &mut Vec<Found<'a>>| {
        if url_like(value) {
            out.push(Found {
                argument: argument.map(str::to_owned),
                value: value.into(),
                whole: false,
            });
        } else if let Some(addr) = bare_forbidden(value) {
            out.push(Found {
                argument: argument.map(str::to_owned),
                value: addr.into(),
                whole: true,
            });
        }
    };
    match v {
        Json::String(s) => found(s, out),
        Json::Array(a) => {
            for x in a {
                walk(x, argument, out);
            }
        }
        Json::Object(o) => {
            for (k, x) in o {
                found(k, out);
                walk(x, argument, out);
            }
        }
        _ => {}
    }
}

impl EgressFilter {
    pub fn new(
        global: Vec<HostPattern>,
        catalog: HashMap<String, ServerCatalog>,
        pins: Arc<ToolPins>,
        detect: bool,
    ) -> Self {
        EgressFilter {
            global,
            catalog,
            pins,
            detect,
        }
    }
}

impl McpFilter for EgressFilter {
    fn name(&self) -> &'static str {
        "egress"
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::All,
            responses: Methods::None,
        }
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        // URIs wherever MCP carries them, outside a call's arguments.
        let outside = self.judge_outside_arguments(msg, ctx);
        if !matches!(outside, Decision::Pass) {
            return outside;
        }
        if env.kind != Kind::Request {
            return Decision::Pass;
        }
        match env.method.as_deref() {
            Some("tools/call") => {}
            // A prompt's arguments are free text a prompt server may fetch
            // ("summarise this page"): URL detection judges them.
            Some("prompts/get") if self.detect => {
                let Some(args) = msg.arguments() else {
                    return Decision::Pass;
                };
                let mut values = Vec::new();
                walk(args, None, &mut values);
                let server_cat = self.catalog.get(ctx.server);
                return self.verdict(values, server_cat, None);
            }
            _ => return Decision::Pass,
        }
        let tool = env.name.as_deref().unwrap_or_default();
        let server_cat = self.catalog.get(ctx.server);
        let tool_cat = server_cat.and_then(|c| c.tool(tool));
        // Declared URL arguments: the catalog's names and the schema's formats.
        let mut declared: Vec<String> = tool_cat
            .map(|t| t.url_arguments.clone())
            .unwrap_or_default();
        let schema_props = tool_cat.and_then(|t| t.input_schema.clone()).or_else(|| {
            // The server's own advertised schema, as pinned from tools/list.
            self.pins
                .get(ctx.server, tool)
                .and_then(|p| p.input_json.clone())
        });
        let props = schema_props
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(Json::as_object);
        for (k, p) in props.into_iter().flatten() {
            if p.get("format")
                .and_then(Json::as_str)
                .is_some_and(|f| URL_FORMATS.contains(&f))
            {
                declared.push(k.clone());
            }
        }
        // Nothing to judge: no declared URL argument, no schema and
        // detection off. The arguments are then never materialised.
        let nested = schema_props.as_deref().is_some_and(|s| declares_url(s, 0));
        if declared.is_empty() && !self.detect && schema_props.is_none() {
            return Decision::Pass;
        }
        let Some(args) = msg.arguments() else {
            return Decision::Pass;
        };
        // An argument whose name differs from a declared one only by case
        // or Unicode folding (`URL`, `hoſt`, `loc.Region`) is what a
        // case-insensitive server (Go's encoding/json) reads as the declared
        // one, while policy, schema and the lookups below would not see it:
        // refused at any depth the schema declares, never judged by a guess.
        let top: Vec<&str> = declared.iter().map(String::as_str).collect();
        // One budget per schema walk, counted once per call.
        let budget = schema_steps(args);
        let mut steps = budget;
        let near = near_named(
            schema_props.as_deref(),
            args,
            schema_props.as_deref(),
            &top,
            0,
            &mut steps,
        );
        if steps == 0 {
            return schema_too_complex();
        }
        if near {
            return Decision::Reject(Denial::error(
                JsonRpcError::new(
                    codes::INVALID_PARAMS,
                    "An argument's name differs from one the tool declares only by case or \
                     Unicode folding; send the declared name exactly",
                )
                .with_data(serde_json::json!({"reason": "argument_near_name"})),
                "argument_near_name",
            ));
        }
        if declared.is_empty() && !self.detect && !nested {
            return Decision::Pass;
        }
        // Names a denial may quote: declared by the catalog or the schema.
        let known =
            |k: &str| declared.iter().any(|d| d == k) || props.is_some_and(|p| p.contains_key(k));
        let mut values: Vec<Found> = Vec::new();
        for name in &declared {
            match args.get(name) {
                Some(Json::Array(a)) => {
                    for (i, x) in a.iter().enumerate() {
                        let at = format!("{name}[{i}]");
                        match declared_value(at.clone(), x) {
                            Some(f) => values.push(f),
                            None => walk(x, Some(&at), &mut values),
                        }
                    }
                }
                Some(x) => match declared_value(name.clone(), x) {
                    Some(f) => values.push(f),
                    None => walk(x, Some(name), &mut values),
                },
                None => {}
            }
        }
        if self.detect {
            match &args {
                Json::Object(o) => {
                    for (k, x) in o {
                        // The key itself is content unless declared.
                        if url_like(k) {
                            values.push(Found {
                                argument: None,
                                value: k.as_str().into(),
                                whole: false,
                            });
                        }
                        walk(x, known(k).then_some(k.as_str()), &mut values);
                    }
                }
                x => walk(x, None, &mut values),
            }
        }
        if nested {
            if let Some(schema) = schema_props.as_deref() {
                let mut steps = budget;
                declared_at(schema, args, schema, "", &mut values, 0, &mut steps);
                if steps == 0 {
                    return schema_too_complex();
                }
            }
        }
        self.verdict(values, server_cat, tool_cat)
    }
}

/// Every URI-valued member (`uri`, at any depth) under `v`, and with
/// detection every other string and key that is or holds a URL.
fn uris_under<'a>(v: &'a Json, out: &mut Vec<Found<'a>>) {
    match v {
        Json::String(u) => out.push(Found {
            argument: None,
            value: u.as_str().into(),
            whole: false,
        }),
        Json::Array(a) => a.iter().for_each(|x| uris_under(x, out)),
        Json::Object(o) => o.values().for_each(|x| uris_under(x, out)),
        _ => {}
    }
}

fn walk_outside<'a>(v: &'a Json, detect: bool, out: &mut Vec<Found<'a>>) {
    match v {
        Json::String(_) if detect => walk(v, None, out),
        Json::Array(a) => {
            for x in a {
                walk_outside(x, detect, out);
            }
        }
        Json::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("uri", Json::String(u)) => out.push(Found {
                        argument: None,
                        value: u.as_str().into(),
                        whole: false,
                    }),
                    // The resources a subscription stream follows
                    // (2026-07-28): every string under it is a URI,
                    // whatever shape a client gave the filter.
                    ("resourceSubscriptions", v) => uris_under(v, out),
                    _ => {
                        if detect && url_like(k) {
                            out.push(Found {
                                argument: None,
                                value: k.as_str().into(),
                                whole: false,
                            });
                        }
                        walk_outside(x, detect, out);
                    }
                }
            }
        }
        _ => {}
    }
}

impl EgressFilter {
    /// Network URIs outside a call's or prompt's arguments (a resource's
    /// URI, a completion's value, `_meta`, a root a client lists, anything
    /// a method carries): judged by the SSRF rules and the allowlists'
    /// exceptions to them, never by the allowlists alone, which are for
    /// what tools are sent. Other schemes name resources.
    fn judge_outside_arguments(&self, msg: &Message<'_>, ctx: &Exchange<'_>) -> Decision {
        let env = msg.envelope;
        let mut values = Vec::new();
        // A client's answer to a server's request: its URIs (roots) only.
        let detect = self.detect && env.kind != Kind::Response;
        let meta;
        match (env.method.as_deref(), env.kind) {
            // Their arguments are judged on their own; the rest is `_meta`
            // (read alone: the call's arguments are not materialised twice).
            (Some("tools/call" | "prompts/get"), Kind::Request) => {
                meta = msg
                    .meta_raw()
                    .and_then(|m| serde_json::from_str::<Json>(m).ok());
                if let Some(m) = &meta {
                    walk_outside(m, detect, &mut values);
                }
            }
            (_, Kind::Response) => {
                if let Some(r) = msg.value().and_then(|v| v.get("result")) {
                    walk_outside(r, false, &mut values);
                }
            }
            _ => {
                if let Some(p) = msg.value().and_then(|v| v.get("params")) {
                    walk_outside(p, detect, &mut values);
                }
            }
        }
        if values.is_empty() {
            return Decision::Pass;
        }
        let server_cat = self.catalog.get(ctx.server);
        let allow: Vec<&HostPattern> = self
            .global
            .iter()
            .chain(
                server_cat
                    .map(|c| c.egress_allow.iter())
                    .into_iter()
                    .flatten(),
            )
            .collect();
        for found in values {
            let verdict = if found.whole {
                check(&found.value, &allow)
            } else {
                check_found(&found.value, &allow, false)
            };
            match verdict {
                Ok(()) | Err("egress_not_allowlisted") => {}
                Err(rule) => {
                    return Decision::Reject(Denial::error(
                        JsonRpcError::new(
                            codes::EGRESS_DENIED,
                            format!(
                                "A URI in the request points at an address this gateway does not allow ({rule})"
                            ),
                        )
                        .with_data(serde_json::json!({"reason": "egress_denied", "rule": rule})),
                        format!("egress_denied:{rule}"),
                    ))
                }
            }
        }
        Decision::Pass
    }

    /// The first value of `values` the allowlists (global, the server's,
    /// the tool's) refuse, as a denial that names only a declared argument.
    fn verdict(
        &self,
        values: Vec<Found<'_>>,
        server_cat: Option<&ServerCatalog>,
        tool_cat: Option<&ToolEntry>,
    ) -> Decision {
        if values.is_empty() {
            return Decision::Pass;
        }
        let allow: Vec<&HostPattern> = self
            .global
            .iter()
            .chain(
                server_cat
                    .map(|c| c.egress_allow.iter())
                    .into_iter()
                    .flatten(),
            )
            .chain(
                tool_cat
                    .map(|t| t.egress_allow.iter())
                    .into_iter()
                    .flatten(),
            )
            .collect();
        for found in values {
            let verdict = if found.whole {
                check(&found.value, &allow)
            } else {
                check_found(&found.value, &allow, true)
            };
            let Err(rule) = verdict else { continue };
            // Never the value itself, nor a path through the arguments'
            // own keys: only a declared name.
            let what = if rule == AMBIGUOUS {
                "holds a URL that HTTP clients do not all read with the same host"
            } else {
                "points at an address this gateway does not allow"
            };
            let (message, data) = match &found.argument {
                Some(arg) => (
                    format!("Argument `{arg}` {what} ({rule})"),
                    serde_json::json!({"reason": "egress_denied", "rule": rule, "argument": arg}),
                ),
                None => (
                    format!("An argument {what} ({rule})"),
                    serde_json::json!({"reason": "egress_denied", "rule": rule}),
                ),
            };
            return Decision::Reject(Denial::error(
                JsonRpcError::new(codes::EGRESS_DENIED, message).with_data(data),
                format!("egress_denied:{rule}"),
            ));
        }
        Decision::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_of_loopback_and_metadata_is_refused() {
        for v in [
            "http://127.0.0.1/",
            "http://localhost/",
            "http://LOCALHOST./x",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.0x0.0x0.0x1/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "http://127.1/",
            "http://127.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[::127.0.0.1]/",
            "http://[2002:7f00:1::]/",
            "http://[64:ff9b::7f00:1]/",
            "http://user:pw@127.0.0.1/",
            "http://api.example.com@127.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://10.0.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://[fe80::1]/",
            "http://[fc00::1]/",
            "http://0.0.0.0/",
            "http://0/",
            "HTTP://127.0.0.1/",
            "file:///etc/passwd",
            "gopher://127.0.0.1:25/",
            "127.0.0.1:6379",
            "localhost",
        ] {
            assert!(check(v, &[]).is_err(), "{v} was allowed");
        }
        assert_eq!(check("http://0x7f.1/", &[]), Err("ssrf_loopback"));
        assert_eq!(check("http://169.254.169.254/", &[]), Err("ssrf_metadata"));
        for v in [
            "https://api.example.com/v1",
            "http://93.184.216.34/",
            "example.org:443",
        ] {
            assert_eq!(check(v, &[]), Ok(()), "{v}");
        }
    }

    #[test]
    fn allowlists() {
        let allow = [
            HostPattern::parse("*.example.com").expect("p"),
            HostPattern::parse("10.1.0.0/16").expect("p"),
        ];
        let refs: Vec<&HostPattern> = allow.iter().collect();
        assert_eq!(check("https://api.example.com/", &refs), Ok(()));
        assert_eq!(check("https://API.Example.COM./", &refs), Ok(()));
        assert_eq!(
            check("https://example.com/", &refs),
            Err("egress_not_allowlisted")
        );
        assert_eq!(
            check("https://evil.com/", &refs),
            Err("egress_not_allowlisted")
        );
        assert_eq!(
            check("http://10.1.2.3/", &refs),
            Ok(()),
            "an explicit CIDR overrides"
        );
        assert_eq!(check("http://10.2.0.1/", &refs), Err("ssrf_private"));
        assert_eq!(
            check("https://api.example.com.evil.com/", &refs),
            Err("egress_not_allowlisted")
        );
    }
}

#[cfg(test)]
mod differential_tests {
    //! Parser differentials: what curl, Go, urllib and WHATWG read differently.
    use super::*;
    use crate::engines::identity::Principal;
    use proptest::prelude::*;
    use warden_config::access::Risk;

    fn allow_example() -> Vec<HostPattern> {
        vec![HostPattern::parse("*.example.com").expect("p")]
    }

    #[test]
    fn the_reported_differentials_are_ambiguous() {
        let example = allow_example();
        let example: Vec<&HostPattern> = example.iter().collect();
        for v in [
            "http:/169.254.169.254/",
            "https:/10.0.0.5/",
            "http:\\\\127.0.0.1\\",
            "HTTP:/\\127.0.0.1:6379/",
            "http://api.example.com\\@127.0.0.1/",
        ] {
            assert_eq!(check(v, &[]), Err(AMBIGUOUS), "{v}");
            assert_eq!(check(v, &example), Err(AMBIGUOUS), "{v}");
            assert!(url_like(v), "{v}");
            assert_eq!(check_found(v, &[], true), Err(AMBIGUOUS), "{v}");
        }
    }

    #[test]
    fn other_splits_that_readers_disagree_on_are_ambiguous() {
        let example = allow_example();
        let example: Vec<&HostPattern> = example.iter().collect();
        for v in [
            // Slashes: none, one, three, four, mixed, with tabs or newlines.
            "http:127.0.0.1",
            "http:api.example.com",
            "https:\\api.example.com/",
            "http:///127.0.0.1/",
            "http:////api.example.com/",
            "http:\\/api.example.com/",
            "http:/\t/127.0.0.1/",
            "http:/\n/api.example.com/",
            "ws:/127.0.0.1/",
            "WSS:\\\\127.0.0.1/",
            // Tab, CR, LF or other whitespace and controls before the path.
            "ht\ttp://127.0.0.1/",
            "h\nttps://api.example.com/",
            "http://127.0.0\t.1/",
            "http://api.example.com\r\n.evil.net/",
            "http://api.exa mple.com/",
            "http://api.example.com\u{0}.evil.net/",
            "http://api.example.com\u{a0}/",
            "http://a\u{3000}pi.example.com/",
            // Backslashes anywhere in the authority.
            "http://api.example.com\\.evil.net/",
            "http://127.0.0.1\\@api.example.com/",
            "http://user\\:pw@api.example.com/",
            "http://api.example.com:80\\@127.0.0.1/",
            // More than one `@` (curl takes the first, the others the last).
            "http://a@b@127.0.0.1/",
            "http://api.example.com@evil.net@api.example.com/",
            "http://user:p@ss@api.example.com/",
            "http://@@127.0.0.1/",
            "http://a:@b:@api.example.com/",
            // Percent-encoded host bytes (WHATWG decodes, curl does not).
            "http://%31%32%37.0.0.1/",
            "http://api%2eexample.com/",
            "http://exa%6dple.com/",
            // Brackets: zone ids, junk, stray brackets.
            "http://[fe80::1%25eth0]/",
            "http://[::1]x/",
            "http://[::1/",
            "http://api.example.com]/",
            // Ports that are not digits, or several colons.
            "http://127.0.0.1:80:90/",
            "http://api.example.com:80:127.0.0.1/",
            "http://api.example.com:8o/",
            // Forms WHATWG reads as an address and Go as a name.
            "http://0x5db8d822/",
            "http://1572395042/",
            "http://93.184.216.034/",
            "http://93.184.55330/",
            // Addresses spelled in non-ASCII.
            "http://93。184。216。34/",
            "http://９３.１８４.２１６.３４/",
            "http://api。example。com/",
            "http://api．example．com/",
            // IDNA deviation characters.
            "http://straße.example.com/",
            "http://ex\u{3c2}ample.com/",
            // Protocol-relative in any slash form but `//`.
            "\\\\127.0.0.1\\share",
            "/\\127.0.0.1/",
            "\\/api.example.com/",
            "///127.0.0.1/",
        ] {
            assert_eq!(check(v, &[]), Err(AMBIGUOUS), "{v:?}");
            assert_eq!(check(v, &example), Err(AMBIGUOUS), "{v:?}");
        }
    }

    #[test]
    fn a_forbidden_reading_is_named_by_its_rule() {
        for (v, rule) in [
            ("http://127。0。0。1/", "ssrf_loopback"),
            ("http://127．0．0．1/", "ssrf_loopback"),
            ("http://127｡0｡0｡1/", "ssrf_loopback"),
            ("http://１２７.０.０.１/", "ssrf_loopback"),
            ("http://127.0.0.1./", "ssrf_loopback"),
            ("http://localhost.localdomain/", "ssrf_loopback"),
            ("http://LocalHost.LocalDomain./", "ssrf_loopback"),
            ("http://ip6-localhost/", "ssrf_loopback"),
            ("http://IP6-LOOPBACK./x", "ssrf_loopback"),
            ("http://localhost6/", "ssrf_loopback"),
            ("http://anything.localhost/", "ssrf_loopback"),
            ("http://A.B.LOCALHOST../", "ssrf_loopback"),
            ("ip6-localhost:6379", "ssrf_loopback"),
            ("http://ip6-allnodes/", "ssrf_multicast_or_reserved"),
            ("http://db.localdomain/", "ssrf_internal_name"),
            ("//127.0.0.1/", "ssrf_loopback"),
            ("  //169.254.169.254/latest", "ssrf_metadata"),
            ("\u{1}\u{2} http://127.0.0.1/", "ssrf_loopback"),
            ("http://api.example.com:80@127.0.0.1/", "ssrf_loopback"),
            ("http://api.example.com%2f@127.0.0.1/", "ssrf_loopback"),
            ("http://0x7f.1/", "ssrf_loopback"),
            ("http://[::ffff:127.0.0.1]/", "ssrf_loopback"),
        ] {
            assert_eq!(check(v, &[]), Err(rule), "{v:?}");
        }
        assert_eq!(check("//10.0.0.5/", &[]), Err("ssrf_private"));
        // A URL fragment is no host; the userinfo ends at the one `@`.
        assert_eq!(check("http://api.example.com#@127.0.0.1/", &[]), Ok(()));
        assert_eq!(
            check("http://api.example.com:80@127.0.0.1/", &[]),
            Err("ssrf_loopback")
        );
        // Schemes other than http(s) and ws(s), in any slash form.
        for v in [
            "gopher:/127.0.0.1:6379/",
            "dict:\\\\127.0.0.1/",
            "file:/etc/passwd",
            "ftp:/x/",
            "ftp:x",
            "gopher:?@127.0.0.1",
            "gopher:127.0.0.1:6379",
            "mailto:someone@example.org",
        ] {
            assert_eq!(check(v, &[]), Err("egress_scheme"), "{v}");
        }
    }

    #[test]
    fn legitimate_urls_still_pass() {
        let example = allow_example();
        let example: Vec<&HostPattern> = example.iter().collect();
        for v in [
            "https://api.example.com/path?q=a@b",
            "https://user:pa%40ss@api.example.com/",
            "https://user:pw@api.example.com/x",
            "https://api.example.com:8443/x",
            "https://API.Example.COM./x",
            "https://api.example.com",
            "https://api.example.com?x=1",
            "https://api.example.com#frag",
            "https://api.example.com/a\\b?c=\\d",
            "https://api.example.com/a\tb",
            "https://api.example.com/\\@127.0.0.1",
            "https://127.0.0.1:80@api.example.com/",
            "https://a:b:c@api.example.com/",
            "https://api.example.com/?next=http://127.0.0.1/",
            "https://api.example.com/ trailing words",
            "  https://api.example.com/\n",
            "wss://api.example.com/socket",
            "//api.example.com/x",
            "api.example.com",
            "api.example.com:443",
            "https://ａｐｉ.example.com/",
        ] {
            assert_eq!(check(v, &[]), Ok(()), "{v:?}");
            assert_eq!(check(v, &example), Ok(()), "{v:?}");
        }
        for v in [
            "https://bücher.example/",
            "http://93.184.216.34/",
            "https://[2606:2800:220:1:248:1893:25c8:1946]/",
            "example.org:443/x",
        ] {
            assert_eq!(check(v, &[]), Ok(()), "{v:?}");
        }
    }

    #[test]
    fn detection_finds_every_scheme_form() {
        for v in [
            "http://x",
            "see http://x",
            "http:/x",
            "http:\\x",
            "HTTP:/\\127.0.0.1:6379/",
            "hTtPs:x",
            "http:127.0.0.1",
            " \u{1}\u{1f}http:\\\\x",
            "ht\ttp://x",
            "h\nttp:\\\\x",
            "http:\t//x",
            "gopher:/127.0.0.1",
            "git+ssh:\\x",
            "C:\\\\server\\share",
            "//127.0.0.1/",
            "\\\\127.0.0.1\\c$",
            "/\\127.0.0.1",
            "\t//x",
            "text then http:\\\\127.0.0.1",
            "text then xhttps:/127.0.0.1",
        ] {
            assert!(url_like(v), "{v:?} not found");
        }
        for v in [
            "plain text",
            "mailto:someone@example.org",
            "urn:isbn:0451450523",
            "data:text/plain,hi",
            "C:\\Users\\me",
            "c:/Users/me",
            "/usr/local/bin:/usr/bin",
            "// a comment",
            "//",
            "10:30/11:00",
            "/etc/passwd",
            "key: value",
        ] {
            assert!(!url_like(v), "{v:?} found");
        }
        // Text around a URL is refused, named by the URL's refusal.
        assert_eq!(
            check_found("see http://127.0.0.1/ now", &[], true),
            Err("ssrf_loopback")
        );
        assert_eq!(
            check_found("see http:\\\\127.0.0.1\\ now", &[], true),
            Err(AMBIGUOUS)
        );
        assert_eq!(
            check_found("see xhttp://10.0.0.1/", &[], true),
            Err("ssrf_private")
        );
        // Resource identifiers are prose; network URLs of any scheme are not.
        assert_eq!(check_found("test://example-resource", &[], true), Ok(()));
        assert_eq!(
            check_found("see file:///etc/hosts and urn://x", &[], false),
            Ok(())
        );
        // In arguments a URL client reads a local file: refused there.
        assert_eq!(
            check_found("file:///etc/passwd", &[], true),
            Err("egress_scheme")
        );
        assert_eq!(
            check_found("gopher://2130706433:6379/_x", &[], true),
            Err("ssrf_loopback")
        );
        assert_eq!(
            check_found(
                "a://1 b://2 c://3 d://4 e://5 f://6 g://7 h://8 i://9 http://10.0.0.1/",
                &[],
                true
            ),
            Err("ssrf_private"),
            "resource identifiers never crowd out a network URL"
        );
        assert_eq!(
            check_found("see https://example.org/ now", &[], true),
            Err("egress_unparsable_url")
        );
        assert_eq!(check_found("https://example.org/ now", &[], true), Ok(()));
        // Many embedded candidates: bounded work.
        let flood = ".http:/".repeat(100_000);
        assert!(url_like(&flood));
        assert!(check_found(&flood, &[], true).is_err());
    }

    fn filter(detect: bool) -> EgressFilter {
        let tool = ToolEntry {
            risk: Some(Risk::Low),
            cost: 1,
            input_schema: Some(Arc::new(serde_json::json!({
                "type": "object",
                "properties": {"target": {"type": "string", "format": "uri"}, "opts": {"type": "object"}}
            }))),
            output_schema: None,
            fingerprints: Vec::new(),
            url_arguments: vec!["link".into()],
            egress_allow: Vec::new(),
            scopes: Vec::new(),
        };
        let catalog = ServerCatalog {
            tools: HashMap::from([("fetch".to_owned(), tool)]),
            ..ServerCatalog::default()
        };
        EgressFilter::new(
            allow_example(),
            HashMap::from([("s".to_owned(), catalog)]),
            Arc::default(),
            detect,
        )
    }

    /// The `fetch` tool with `schema` as its only declaration (no
    /// catalog URL argument), detection off.
    fn with_schema(schema: Json) -> EgressFilter {
        let mut f = filter(false);
        if let Some(t) = f
            .catalog
            .get_mut("s")
            .and_then(|c| c.tools.get_mut("fetch"))
        {
            t.input_schema = Some(Arc::new(schema));
            t.url_arguments.clear();
        }
        f
    }

    fn call(f: &EgressFilter, args: Json) -> Decision {
        let raw = serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "fetch", "arguments": args}
        })
        .to_string();
        let Ok(crate::protocol::jsonrpc::Parsed::Single(env)) = crate::protocol::jsonrpc::parse(
            raw.as_bytes(),
            crate::protocol::jsonrpc::ParseLimits::default(),
        ) else {
            panic!("not a message: {raw}")
        };
        let p = Principal::anonymous();
        let ctx = Exchange::new(&p, "s");
        f.on_request(
            &Message::new(&env, raw.as_bytes()),
            &ctx,
            &mut Notes::default(),
        )
    }

    fn denial(d: Decision) -> JsonRpcError {
        match d {
            Decision::Reject(d) => d.error,
            _ => panic!("not refused"),
        }
    }

    /// A listen stream's `resourceSubscriptions` holds URIs whatever shape
    /// a client gives it (a bare string, nested arrays, an object): each
    /// network URI meets the SSRF rules, with detection on or off.
    #[test]
    fn subscription_uris_are_judged_whatever_their_shape() {
        let listen = |f: &EgressFilter, subs: Json| {
            let raw = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"subscriptions/listen",
                "params":{"notifications":{"resourceSubscriptions":subs}}})
            .to_string();
            let Ok(crate::protocol::jsonrpc::Parsed::Single(env)) = crate::protocol::jsonrpc::parse(
                raw.as_bytes(),
                crate::protocol::jsonrpc::ParseLimits::default(),
            ) else {
                panic!("not a message: {raw}")
            };
            let p = Principal::anonymous();
            f.on_request(
                &Message::new(&env, raw.as_bytes()),
                &Exchange::new(&p, "s"),
                &mut Notes::default(),
            )
        };
        for detect in [false, true] {
            let f = filter(detect);
            for subs in [
                serde_json::json!("http://169.254.169.254/latest/"),
                serde_json::json!([["gopher://127.0.0.1:6379/_x"]]),
                serde_json::json!({"a": "http://10.0.0.1/"}),
            ] {
                assert!(
                    matches!(listen(&f, subs.clone()), Decision::Reject(_)),
                    "{detect} {subs}"
                );
            }
            assert!(matches!(
                listen(&f, serde_json::json!(["file:///ok", "test://r"])),
                Decision::Pass
            ));
        }
    }

    #[test]
    fn a_near_name_of_a_declared_argument_is_refused() {
        // `link` is declared by the catalog, `target` by the schema's format,
        // `opts` by the schema: a folding server reads these as those.
        for detect in [false, true] {
            let f = filter(detect);
            for args in [
                serde_json::json!({"LINK": "http://169.254.169.254/"}),
                serde_json::json!({"Target": "http://127.0.0.1/"}),
                serde_json::json!({"opt\u{17f}": {}}),
                serde_json::json!({"lin\u{212a}": "https://api.example.com/"}),
                serde_json::json!({"OPTS": {}}),
            ] {
                let Decision::Reject(d) = call(&f, args.clone()) else {
                    panic!("not refused: {args}")
                };
                let e = d.error;
                assert_eq!(e.code, codes::INVALID_PARAMS, "{args}");
                assert!(!e.message.contains("169.254"), "{}", e.message);
            }
            // Exact names, and names unlike any declared one, are judged as before.
            assert!(matches!(
                call(
                    &f,
                    serde_json::json!({"link": "https://api.example.com/", "Other": 1})
                ),
                Decision::Pass
            ));
        }
    }

    #[test]
    fn declared_scalars_are_judged_as_the_text_a_server_formats() {
        // 2130706433 is 127.0.0.1 and 167772161 is 10.0.0.1 once a server
        // writes them into `http://{x}/`.
        for detect in [false, true] {
            let f = filter(detect);
            for args in [
                serde_json::json!({"link": 2130706433u64}),
                serde_json::json!({"target": 167772161u64}),
                serde_json::json!({"link": [2130706433u64]}),
                serde_json::json!({"target": ["https://api.example.com/", 0]}),
            ] {
                assert!(
                    matches!(call(&f, args.clone()), Decision::Reject(_)),
                    "{args}"
                );
            }
        }
    }

    #[test]
    fn hosts_are_judged_at_every_depth_and_format_the_schema_declares() {
        let f = with_schema(serde_json::json!({
            "type": "object",
            "properties": {
                "target": {"type": "object", "properties": {"host": {"format": "hostname"}}},
                "hosts": {"type": "array", "items": {"format": "hostname"}},
                "addr": {"format": "ipv4"},
                "addr6": {"format": "ipv6"},
                "either": {"anyOf": [{"properties": {"u": {"format": "uri"}}}]}
            }
        }));
        for args in [
            serde_json::json!({"target": {"host": "169.254.169.254"}}),
            serde_json::json!({"hosts": ["api.example.com", "169.254.169.254"]}),
            serde_json::json!({"addr": "169.254.169.254"}),
            serde_json::json!({"addr6": "::1"}),
            serde_json::json!({"either": {"u": "http://127.0.0.1/"}}),
            serde_json::json!({"target": {"host": 2130706433u64}}),
        ] {
            let e = denial(call(&f, args.clone()));
            assert_eq!(e.code, codes::EGRESS_DENIED, "{args}");
        }
        for args in [
            serde_json::json!({"target": {"host": "api.example.com"}}),
            serde_json::json!({"hosts": ["api.example.com"], "other": "127.0.0.1"}),
        ] {
            assert!(matches!(call(&f, args.clone()), Decision::Pass), "{args}");
        }
    }

    #[test]
    fn nested_models_behind_a_ref_are_read_too() {
        // Pydantic writes nested models as `$ref` into `$defs`.
        let f = with_schema(serde_json::json!({
            "type": "object",
            "properties": {"target": {"$ref": "#/$defs/Target"}},
            "$defs": {"Target": {"type": "object", "properties": {
                "host": {"type": "string", "format": "hostname"},
                "region": {"type": "string"}
            }}}
        }));
        let e = denial(call(
            &f,
            serde_json::json!({"target": {"host": "169.254.169.254"}}),
        ));
        assert_eq!(e.code, codes::EGRESS_DENIED);
        let e = denial(call(&f, serde_json::json!({"target": {"Region": "us"}})));
        assert_eq!(e.code, codes::INVALID_PARAMS);
        assert!(matches!(
            call(
                &f,
                serde_json::json!({"target": {"host": "api.example.com", "region": "us"}})
            ),
            Decision::Pass
        ));
    }

    #[test]
    fn a_refs_sibling_keywords_are_read_beside_its_target() {
        // JSON Schema 2019-09 on: `$ref` applies beside the schema's other
        // keywords, so a URL the siblings declare is judged too.
        let f = with_schema(serde_json::json!({
            "type": "object",
            "$ref": "#/$defs/Base",
            "properties": {"callback": {"type": "string", "format": "uri"}},
            "$defs": {"Base": {"type": "object", "properties": {
                "host": {"type": "string", "format": "hostname"}
            }}}
        }));
        for args in [
            serde_json::json!({"callback": "http://169.254.169.254/latest/"}),
            serde_json::json!({"host": "169.254.169.254"}),
        ] {
            let e = denial(call(&f, args.clone()));
            assert_eq!(e.code, codes::EGRESS_DENIED, "{args}");
        }
        for args in [
            serde_json::json!({"Callback": "x"}),
            serde_json::json!({"HOST": "x"}),
        ] {
            let e = denial(call(&f, args.clone()));
            assert_eq!(e.code, codes::INVALID_PARAMS, "{args}");
        }
        assert!(matches!(
            call(
                &f,
                serde_json::json!({"callback": "https://api.example.com/cb", "host": "api.example.com"})
            ),
            Decision::Pass
        ));
    }

    #[test]
    fn a_bulk_call_under_a_branching_schema_is_judged_not_refused() {
        let f = with_schema(serde_json::json!({
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
            "$defs": {"Item": {"allOf": [{"$ref": "#/$defs/Base"}], "properties": {
                "url": {"type": "string", "format": "uri"}, "n": {"type": "integer"}
            }}, "Base": {"type": "object", "properties": {"name": {"type": "string"}}}}
        }));
        let items: Vec<Json> = (0..5000)
            .map(|i| serde_json::json!({"url": "https://api.example.com/x", "n": i, "name": "a"}))
            .collect();
        assert!(matches!(
            call(&f, serde_json::json!({ "items": items })),
            Decision::Pass
        ));
    }

    #[test]
    fn a_schema_whose_refs_multiply_is_refused_not_walked_forever() {
        // A hostile server's pinned schema: every level doubles the walk
        // (2^64 nodes without a budget). Refused after a bounded walk.
        for schema in [
            serde_json::json!({
                "type": "object",
                "properties": {"url": {"type": "string", "format": "uri"}},
                "allOf": [{"$ref": "#"}, {"$ref": "#"}]
            }),
            serde_json::json!({
                "type": "object",
                "properties": {"url": {"type": "string", "format": "uri"}},
                "anyOf": [{"$ref": "#/$defs/a"}],
                "$defs": {"a": {"allOf": [{"$ref": "#"}, {"$ref": "#/$defs/a"}]}}
            }),
        ] {
            let f = with_schema(schema.clone());
            let e = denial(call(
                &f,
                serde_json::json!({"url": "https://api.example.com/"}),
            ));
            assert_eq!(e.code, codes::INVALID_PARAMS, "{schema}");
            assert_eq!(
                e.data.as_ref().map(|d| &d["reason"]),
                Some(&serde_json::json!("schema_too_complex"))
            );
        }
    }

    #[test]
    fn prompt_arguments_meet_detection() {
        let raw = r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"page":"http://169.254.169.254/latest/"}}}"#;
        assert!(refused_with(raw, true), "detection on");
        assert!(!refused_with(raw, false), "detection off");
    }

    /// Whether `filter(detect)` refuses the request `raw`.
    fn refused_with(raw: &str, detect: bool) -> bool {
        let Ok(crate::protocol::jsonrpc::Parsed::Single(env)) = crate::protocol::jsonrpc::parse(
            raw.as_bytes(),
            crate::protocol::jsonrpc::ParseLimits::default(),
        ) else {
            panic!("parse")
        };
        let p = Principal::anonymous();
        let msg = Message::new(&env, raw.as_bytes());
        let d = filter(detect).on_request(&msg, &Exchange::new(&p, "s"), &mut Notes::default());
        matches!(d, Decision::Reject(_))
    }

    #[test]
    fn scheme_less_addresses_a_client_would_dial_are_detected() {
        for v in [
            "169.254.169.254/latest/meta-data",
            "fetch 127.0.0.1:6379 please",
            "localhost:8080/admin",
            "api.localhost:80",
            "0x7f.1:22",
            "10.0.0.1/",
            "user@192.168.1.1:22",
            "(169.254.169.254:80/).",
        ] {
            assert!(bare_forbidden(v).is_some(), "{v:?} not found");
            assert!(
                check(bare_forbidden(v).unwrap_or_default(), &[]).is_err(),
                "{v:?}"
            );
        }
        for v in [
            "version 10.1 of the service",
            "release 1.2.3.4",
            "host 10.1.2.3 is up",
            "169.254.169.254",
            "8.8.8.8",
            "8.8.8.8:53",
            "runs on localhost",
            "the 10.0 ratio",
            "2130706433",
            "eu-west-1",
            "10:30",
        ] {
            assert_eq!(bare_forbidden(v), None, "{v:?}");
        }
        // Through the filter, in detection mode only.
        let raw = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"other","arguments":{"q":"GET 169.254.169.254/latest/ now"}}}"#;
        assert!(refused_with(raw, true), "detection on");
        assert!(!refused_with(raw, false), "detection off");
    }

    #[test]
    fn near_names_are_refused_at_every_depth_the_schema_declares() {
        let f = with_schema(serde_json::json!({
            "type": "object",
            "properties": {
                "loc": {"type": "object", "properties": {"region": {"type": "string"}}},
                "list": {"type": "array", "items": {"properties": {"host": {}}}},
                "either": {"anyOf": [{"properties": {"zone": {}}}]}
            }
        }));
        for args in [
            serde_json::json!({"loc": {"Region": "us"}}),
            serde_json::json!({"loc": {"regıon": "us"}}),
            serde_json::json!({"list": [{"HOST": "x"}]}),
            serde_json::json!({"either": {"Zone": "x"}}),
            serde_json::json!({"LOC": {}}),
        ] {
            let e = denial(call(&f, args.clone()));
            assert_eq!(e.code, codes::INVALID_PARAMS, "{args}");
        }
        for args in [
            serde_json::json!({"loc": {"region": "us", "Other": 1}}),
            serde_json::json!({"list": [{"host": "x"}], "free": {"Region": 1}}),
        ] {
            assert!(matches!(call(&f, args.clone()), Decision::Pass), "{args}");
        }
    }

    #[test]
    fn keys_and_nested_strings_are_checked_and_never_quoted() {
        let f = filter(true);
        let secret = "SECRETKEY";
        for args in [
            serde_json::json!({"opts": {"http://127.0.0.1/": 1}}),
            serde_json::json!({"a": [{"b": {"http:/\\127.0.0.1/": {secret: 1}}}]}),
            serde_json::json!({"http:\\\\127.0.0.1\\": "x"}),
            serde_json::json!({secret: {"deep": ["ok", {"k": "HTTP:/\\127.0.0.1:6379/"}]}}),
            serde_json::json!({"target": "https://api.example.com/", secret: "//10.0.0.5/"}),
            serde_json::json!({"note": "see http:\\\\127.0.0.1\\"}),
        ] {
            let e = denial(call(&f, args.clone()));
            assert_eq!(e.code, codes::EGRESS_DENIED, "{args}");
            let data = e.data.clone().expect("data").to_string();
            for leak in ["127.0.0", "10.0.0", secret, "deep", "note", "http"] {
                assert!(
                    !e.message.contains(leak) && !data.contains(leak),
                    "{leak} in {e:?}"
                );
            }
        }
        // A declared name may be said; the object key under it may not.
        let e = denial(call(
            &f,
            serde_json::json!({"opts": {"http://127.0.0.1/": 1}}),
        ));
        assert_eq!(e.data.as_ref().expect("data")["argument"], "opts");
        assert!(e.message.starts_with("Argument `opts` "), "{}", e.message);
        let e = denial(call(
            &f,
            serde_json::json!({"link": "http://api.example.com\\@127.0.0.1/"}),
        ));
        let data = e.data.expect("data");
        assert_eq!(data["rule"], AMBIGUOUS);
        assert_eq!(data["argument"], "link");
        assert!(!e.message.contains("127.0.0.1"), "{}", e.message);
        let e = denial(call(
            &f,
            serde_json::json!({"x": {"y": "http://169.254.169.254/"}}),
        ));
        assert_eq!(e.data.as_ref().expect("data")["rule"], "ssrf_metadata");
        assert!(e.data.expect("data").get("argument").is_none());
        assert!(e.message.starts_with("An argument "), "{}", e.message);
    }

    /// A tool with no URL argument, detection off: egress has nothing to
    /// judge and does not even read the arguments.
    #[test]
    fn nothing_declared_and_detection_off_costs_nothing() {
        let f = EgressFilter::new(allow_example(), HashMap::new(), Arc::default(), false);
        let raw = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"u":"http://127.0.0.1/"}}}"#;
        let Ok(crate::protocol::jsonrpc::Parsed::Single(env)) = crate::protocol::jsonrpc::parse(
            raw.as_bytes(),
            crate::protocol::jsonrpc::ParseLimits::default(),
        ) else {
            panic!("parse")
        };
        let p = Principal::anonymous();
        let msg = Message::new(&env, raw.as_bytes());
        let d = f.on_request(&msg, &Exchange::new(&p, "s"), &mut Notes::default());
        assert!(matches!(d, Decision::Pass));
        assert!(!msg.arguments_materialised());
        // With detection on, the same call is judged (and refused).
        let f = EgressFilter::new(allow_example(), HashMap::new(), Arc::default(), true);
        let msg = Message::new(&env, raw.as_bytes());
        let d = f.on_request(&msg, &Exchange::new(&p, "s"), &mut Notes::default());
        assert!(matches!(d, Decision::Reject(_)));
        assert!(msg.arguments_materialised());
    }

    #[test]
    fn declared_arguments_are_checked_without_detection() {
        let f = filter(false);
        for args in [
            serde_json::json!({"link": "http:/\\127.0.0.1/"}),
            serde_json::json!({"target": ["https://api.example.com/", "//127.0.0.1/"]}),
            serde_json::json!({"target": {"nested": "http://127.0.0.1/"}}),
            serde_json::json!({"target": [{"http://10.0.0.1/": true}]}),
        ] {
            assert!(
                matches!(call(&f, args.clone()), Decision::Reject(_)),
                "{args}"
            );
        }
        // Undeclared ones wait for detection.
        assert!(matches!(
            call(&f, serde_json::json!({"x": "http://127.0.0.1/"})),
            Decision::Pass
        ));
        for args in [
            serde_json::json!({"link": "https://api.example.com/path?q=a@b"}),
            serde_json::json!({"target": "https://user:pa%40ss@api.example.com/", "x": "C:\\dir"}),
            serde_json::json!({"target": "https://api.example.com:8443/x", "mail": "mailto:a@127.0.0.1"}),
        ] {
            assert!(matches!(call(&f, args.clone()), Decision::Pass), "{args}");
            assert!(
                matches!(call(&filter(true), args.clone()), Decision::Pass),
                "{args}"
            );
        }
    }

    /// An RFC 3986 reader written apart from the checker: authority between
    /// `//` and the first `/`, `?` or `#`; userinfo up to the last `@` (Go,
    /// urllib) or the first (`first_at`, curl); host up to the first `:`.
    fn rfc_reader(s: &str, first_at: bool) -> Option<String> {
        let s = s.trim_matches(|c: char| c <= ' ');
        let (scheme, rest) = s.split_once(':')?;
        let mut sc = scheme.chars();
        if !sc.next()?.is_ascii_alphabetic()
            || !sc.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return None;
        }
        let rest = rest.strip_prefix("//")?;
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let host_port = if first_at {
            authority.split_once('@').map_or(authority, |(_, h)| h)
        } else {
            authority.rsplit_once('@').map_or(authority, |(_, h)| h)
        };
        let host = if host_port.starts_with('[') {
            &host_port[..=host_port.find(']')?]
        } else {
            host_port.split(':').next()?
        };
        // Clients that take non-ASCII names apply IDNA (curl with libidn2,
        // Go's idna.Lookup, Python's idna codec).
        let host = if host.is_ascii() {
            host.to_ascii_lowercase()
        } else {
            url::Host::parse(host).ok()?.to_string()
        };
        Some(host.trim_end_matches('.').to_owned())
    }

    fn whatwg_reader(s: &str) -> Option<String> {
        let url = url::Url::parse(s).ok()?;
        Some(url.host_str()?.trim_end_matches('.').to_owned())
    }

    /// `Some(ip)` for an address literal, else `None` (a name).
    fn literal(h: &str) -> Option<IpAddr> {
        h.trim_start_matches('[').trim_end_matches(']').parse().ok()
    }

    fn same(a: &str, b: &str) -> bool {
        match (literal(a), literal(b)) {
            (Some(x), Some(y)) => x == y,
            (None, None) => a == b,
            _ => false,
        }
    }

    fn forbidden(h: &str) -> bool {
        match literal(h) {
            Some(ip) => ssrf_rule(ip).is_some(),
            None => ssrf_name(h).is_some(),
        }
    }

    fn piece(options: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(options), 0..=max)
            .prop_map(|v| v.concat())
    }

    fn urlish() -> impl Strategy<Value = (String, bool)> {
        // Mostly clean parts, so that a fair share is allowed and the
        // property has something to say.
        (
            prop_oneof![4 => Just(""), 1 => proptest::sample::select(&[" ", "\u{1}", "\t", "\n"][..])],
            proptest::sample::select(&["http", "https", "ws", "wss", "ht\ttp", "ftp", "gopher", ""][..]),
            prop_oneof![3 => Just("//".to_owned()), 2 => piece(&["/", "\\", "\t"], 4)],
            prop_oneof![
                2 => Just(String::new()),
                1 => piece(&["a", "@", ":", "\\", "/", "%40", "\t", "b.c", "[", "?", "#"], 4),
            ],
            proptest::sample::select(
                &[
                    "127.0.0.1",
                    "api.example.com",
                    "API.example.COM.",
                    "10.0.0.5",
                    "evil.net",
                    "localhost",
                    "ip6-localhost",
                    "x.localhost.",
                    "0x7f.1",
                    "0x5db8d822",
                    "93.184.216.34",
                    "[::1]",
                    "[::ffff:a9fe:a9fe]",
                    "127。0。0。1",
                    "%31%32%37.0.0.1",
                    "169.254.169.254",
                ][..],
            ),
            prop_oneof![2 => Just(String::new()), 1 => piece(&[":", "80", "\t", "a", "@"], 2)],
            prop_oneof![
                1 => Just(String::new()),
                1 => piece(&["/", "\\", "@", ":", "?", "#", "\t", "127.0.0.1", "x", "\r\n"], 5),
            ],
            proptest::collection::vec(any::<bool>(), 0..48),
        )
            .prop_map(|(lead, scheme, seps, user, host, port, tail, upper)| {
                let user = if user.is_empty() { user } else { format!("{user}@") };
                let colon = if scheme.is_empty() { "" } else { ":" };
                let s = format!("{lead}{scheme}{colon}{seps}{user}{host}{port}{tail}");
                let s = s
                    .chars()
                    .enumerate()
                    .map(|(i, c)| match upper.get(i) {
                        Some(true) => c.to_ascii_uppercase(),
                        _ => c,
                    })
                    .collect();
                (s, scheme.is_empty())
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn allowed_urls_read_alike_and_reach_no_forbidden_host((s, relative) in urlish()) {
            let example = allow_example();
            let example: Vec<&HostPattern> = example.iter().collect();
            for allow in [&[][..], &example[..]] {
                if check(&s, allow).is_err() {
                    continue;
                }
                // The text a client gets: the value, `//host` under `http:`,
                // or a bare `host[:port]` as `http://host:port/`.
                let t = s.trim_matches(|c: char| c <= ' ');
                let untabbed: String = t.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
                let text = if !relative {
                    s.clone()
                } else if untabbed.starts_with(['/', '\\']) && untabbed[1..].starts_with(['/', '\\']) {
                    format!("http:{t}")
                } else {
                    format!("http://{t}/")
                };
                let w = whatwg_reader(&text);
                let r = rfc_reader(&text, false);
                let c = rfc_reader(&text, true);
                prop_assert!(w.is_some() && r.is_some() && c.is_some(), "{s:?}: {w:?} {r:?} {c:?}");
                let (w, r, c) = (w.unwrap_or_default(), r.unwrap_or_default(), c.unwrap_or_default());
                prop_assert!(same(&w, &r) && same(&w, &c), "{s:?}: {w} {r} {c}");
                prop_assert!(!forbidden(&w) && !forbidden(&r), "{s:?}: {w} {r}");
                if !allow.is_empty() {
                    prop_assert!(w.ends_with(".example.com"), "{s:?}: {w}");
                }
            }
        }
    }
}
