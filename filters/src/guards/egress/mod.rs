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
//!
//! Where things are: the SSRF address rules in `address.rs`; which strings
//! are or hold URLs in `detect.rs`; the two readers of a URL and the
//! verdicts in `readers.rs`; what the schema declares in `schema.rs`; the
//! values to judge in `found.rs`; the filter in `filter.rs`. What a server
//! sends the client: URL elicitations in `elicitation.rs`, URIs (resource
//! links, contents, updates, anywhere a `uri` member is) in `links.rs`,
//! icons, website links and listed resources in `icons.rs` — each read by
//! both readers as a tool's URL is.

mod address;
mod detect;
mod elicitation;
mod filter;
mod found;
mod icons;
mod links;
mod readers;
mod schema;

/// The hosts the URLs in `args` reach as a WHATWG parser reads them (and
/// the bare addresses detection finds), lower case without a trailing
/// dot, each once, at most `max`: what the anomaly guard learns.
pub fn hosts_in(args: &serde_json::Value, max: usize) -> Vec<String> {
    let mut found = Vec::new();
    found::walk(args, None, &mut found);
    let mut out: Vec<String> = Vec::new();
    let mut add = |h: &str| {
        let h = crate::engines::anomaly::normalize_host(h);
        if !h.is_empty() && out.len() < max && !out.contains(&h) {
            out.push(h);
        }
    };
    for f in &found {
        let v = f.value.trim();
        if f.whole {
            add(v);
            continue;
        }
        let mut starts = vec![0];
        starts.extend(detect::embedded(v));
        for at in starts {
            if let Some(h) = v
                .get(at..)
                .and_then(|t| url::Url::parse(t).ok())
                .and_then(|u| u.host_str().map(str::to_owned))
            {
                add(&h);
            }
        }
    }
    out
}

#[cfg(test)]
mod differential_tests;
#[cfg(test)]
mod elicitation_tests;
#[cfg(test)]
mod links_tests;
#[cfg(test)]
mod tests;

pub use address::{ssrf_rule, ssrf_rule_v4};
/// How a string starts and which schemes are dialled, as the information
/// flow guard reads what reaches out.
pub(crate) use detect::{dropped, lead, network_scheme, SPECIAL};
pub use filter::EgressFilter;
pub use readers::{check, check_uri, AMBIGUOUS};
