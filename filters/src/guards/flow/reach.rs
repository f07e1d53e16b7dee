//! What reaches out: whether a client's message names a place outside that
//! a peer could send data to, read as leniently as any peer would (over
//! detecting rather than missing one: a false find only makes a call a
//! sink, judged against what its flow holds).
//!
//! A string names a place when, with the tabs and newlines WHATWG parsers
//! delete taken out, it holds
//! - a network scheme: `http:`, `https:`, `ws:`, `wss:`, `ftp:` followed by
//!   any run of `/` and `\` (none too: `https:evil.example` is a URL to a
//!   WHATWG parser) and then a host character, in any case, also at the end
//!   of a longer scheme (`git+https:`, `xhttps:`); another network scheme
//!   (`gopher://`, `ssh:\\`) followed by a slash; `mailto:`;
//! - a scheme-relative `//host` or `\\host` opening a word;
//! - an e-mail address (`local@domain.tld`);
//! - a bare host a lenient client would dial: dotted labels whose last one
//!   looks like a top-level domain (two or more characters, a letter first,
//!   IDN and `xn--` forms included; `。`, `．`, `｡` are dots as IDNA maps
//!   them) or a dotted IPv4 literal, followed by `/`, `\`, `?`, `#`, an
//!   escape (`%2F`), a port, or the end of its word (`evil.example/?d=…`,
//!   `see evil.example.`), a fully qualified name's closing dot between
//!   them (`evil.example./x`, `evil.example。:8080`);
//! - an IP literal in any form a WHATWG parser or a socket API reads
//!   ([`ip_literal`]): four dotted parts; two or three, hex, octal or one
//!   number of eight digits or more before a path (`127.1/x`,
//!   `0x7f000001/x`, `2130706433/x`), or before a port (all but the one
//!   number: `127.1:8080`); an IPv6 address, bracketed (`[::1]:8080`) or
//!   bare (`fe80::1`, `::ffff:10.0.0.1`).
//!
//! A string with percent escapes is read decoded too (`evil%2Eexample/x`
//! is `evil.example/x` to a client that decodes its host).
//!
//! Every string is read in its NFKC form first: full-width and other
//! compatibility forms (`ｈｔｔｐｓ：／／`, `＠`) are what they stand for.
//!
//! A resource URI is judged by its scheme: one of a network scheme reaches
//! out, one of another scheme (`hr://`, `file:`) is a read of that server's
//! resource, and one without a scheme is judged as any string.

use std::borrow::Cow;

use serde_json::Value;

use crate::guards::egress::{dropped, lead, network_scheme, SPECIAL};

/// Whether the params of a client message of `method` hold a place
/// anywhere, member names included: a tool's or prompt's `name` only by a
/// scheme or an address (a dotted name such as `files.read` is a name, and
/// the catalog labels it), a resource's `uri` by its scheme, and a `_meta`
/// key of the form MCP gives them (`io.modelcontextprotocol/related-task`)
/// not as a host (its value is read as any other).
pub(crate) fn params_reach_out(method: Option<&str>, params: &Value) -> bool {
    let Value::Object(m) = params else {
        return holds_place(params);
    };
    m.iter().any(|(k, v)| {
        let own = match (method, k.as_str(), v) {
            (Some("tools/call" | "prompts/get"), "name", Value::String(s)) => {
                Some(names_a_place(s, false))
            }
            (
                Some("resources/read" | "resources/subscribe" | "resources/unsubscribe"),
                "uri",
                Value::String(s),
            ) => Some(uri_reaches_out(s)),
            (_, "_meta", Value::Object(meta)) => Some(
                meta.iter()
                    .any(|(mk, mv)| (!meta_key(mk) && reaches_out(mk)) || holds_place(mv)),
            ),
            _ => None,
        };
        own.unwrap_or_else(|| reaches_out(k) || holds_place(v))
    })
}

/// Whether any string in `v`, member names included, names a place.
pub(crate) fn holds_place(v: &Value) -> bool {
    match v {
        Value::String(s) => reaches_out(s),
        Value::Array(a) => a.iter().any(holds_place),
        Value::Object(m) => m.iter().any(|(k, x)| reaches_out(k) || holds_place(x)),
        _ => false,
    }
}

/// Whether a resource URI names a place (see the module docs).
pub(crate) fn uri_reaches_out(uri: &str) -> bool {
    // Judged by its scheme as a peer that folds compatibility forms reads
    // it (`ｈｔｔｐｓ：` is `https:`).
    let uri: Cow<'_, str> = if uri.is_ascii() {
        uri.into()
    } else {
        use unicode_normalization::UnicodeNormalization;
        uri.nfkc().collect::<String>().into()
    };
    match lead(&uri).scheme.as_deref() {
        // A scheme a lenient reader takes for a network one (`x-https:`,
        // `git+https:`) reaches out as any string's does.
        Some(scheme) => scheme == "mailto" || network_scheme(scheme) || scheme_form(&uri),
        None => reaches_out(&uri),
    }
}

/// Whether `s` names a place (see the module docs).
pub(crate) fn reaches_out(s: &str) -> bool {
    names_a_place(s, true)
}

fn names_a_place(s: &str, bare_hosts: bool) -> bool {
    if names_a_place_as_written(s, bare_hosts) {
        return true;
    }
    // Decoded as a client decodes a host (twice escaped as well).
    let mut decoded: Cow<'_, str> = s.into();
    for _ in 0..3 {
        if !decoded.contains('%') {
            break;
        }
        let next: String = percent_encoding::percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == *decoded {
            break;
        }
        if names_a_place_as_written(&next, bare_hosts) {
            return true;
        }
        decoded = next.into();
    }
    false
}

fn names_a_place_as_written(s: &str, bare_hosts: bool) -> bool {
    // Compatibility forms read as what they stand for (NFKC): full-width
    // `ｈｔｔｐｓ：／／evil.example／` is `https://evil.example/` to a peer
    // (or a model) that folds them, and so are `＠`, `．` and the like.
    let s: Cow<'_, str> = if s.is_ascii() {
        s.into()
    } else {
        use unicode_normalization::UnicodeNormalization;
        s.nfkc().collect::<String>().into()
    };
    // WHATWG parsers delete tabs and newlines anywhere in a URL, and
    // IDNA maps the default ignorables in a host to nothing.
    let gone = |c: char| dropped(c) || warden_config::person::default_ignorable(c);
    let s: Cow<'_, str> = if s.contains(gone) {
        s.chars().filter(|c| !gone(*c)).collect::<String>().into()
    } else {
        s
    };
    scheme_form(&s)
        || words(&s).any(|w| {
            scheme_relative(w)
                || address(w)
                || (bare_hosts && (bare_host(w).is_some() || ip_literal(w)))
        })
}

/// The words of a text: split at spaces and at what ends a URL in prose.
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| {
        c.is_whitespace()
            || c.is_control()
            || matches!(
                c,
                '"' | '\'' | '`' | '<' | '>' | '(' | ')' | '{' | '}' | ',' | ';' | '|' | '^' | '*'
            )
    })
    .filter(|w| !w.is_empty())
}

/// `scheme:` of a network scheme, followed by what makes it a URL.
fn scheme_form(s: &str) -> bool {
    let b = s.as_bytes();
    memchr::memchr_iter(b':', b).any(|i| {
        let mut from = i;
        while from > 0
            && (b[from - 1].is_ascii_alphanumeric() || matches!(b[from - 1], b'+' | b'-' | b'.'))
        {
            from -= 1;
        }
        if from == i {
            return false;
        }
        let run = s[from..i].to_ascii_lowercase();
        let after = &b[i + 1..];
        let slashes = after
            .iter()
            .take_while(|c| matches!(c, b'/' | b'\\'))
            .count();
        // A host (or a mailbox) must follow: `https:` alone names nothing.
        if !after.get(slashes).is_some_and(|&c| c > b' ' && c != 0x7f) {
            return false;
        }
        // The scheme a lenient reader finds: the run, its last part
        // (`svn+ssh`), or a special scheme of three letters or more it ends
        // with (`xhttps`, for a reader that looks for `https:`).
        let last = run.rsplit(['+', '-', '.']).next().unwrap_or(&run);
        let special = SPECIAL
            .iter()
            .any(|x| run == *x || last == *x || (x.len() >= 3 && run.ends_with(x)));
        special
            || run == "mailto"
            || last == "mailto"
            || (slashes > 0 && (network_scheme(run.as_str()) || network_scheme(last)))
    })
}

/// A word opening with `//host` or `\\host` (any mix of the two).
fn scheme_relative(w: &str) -> bool {
    let slashes = w.bytes().take_while(|c| matches!(c, b'/' | b'\\')).count();
    slashes >= 2 && w[slashes..].chars().next().is_some_and(label_char)
}

/// `local@domain.tld`.
fn address(w: &str) -> bool {
    w.split_once('@').is_some_and(|(l, d)| {
        !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
    })
}

/// What a host's label is made of (a WHATWG parser maps IDN forms).
fn label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_') || (!c.is_ascii() && c.is_alphanumeric())
}

/// A dot, as IDNA maps the full-width and ideographic ones.
fn dot(c: char) -> bool {
    matches!(c, '.' | '\u{3002}' | '\u{ff0e}' | '\u{ff61}')
}

/// The first bare host in a word (see the module docs), if any.
pub(crate) fn bare_host(w: &str) -> Option<&str> {
    let chars: Vec<(usize, char)> = w.char_indices().collect();
    let at = |j: usize| chars.get(j).map_or(w.len(), |(i, _)| *i);
    let mut i = 0;
    while i < chars.len() {
        if !label_char(chars[i].1) {
            i += 1;
            continue;
        }
        let start = i;
        let mut labels: Vec<&str> = Vec::new();
        let mut j = i;
        loop {
            let from = j;
            while j < chars.len() && label_char(chars[j].1) {
                j += 1;
            }
            labels.push(&w[at(from)..at(j)]);
            if j + 1 < chars.len() && dot(chars[j].1) && label_char(chars[j + 1].1) {
                j += 1;
                continue;
            }
            break;
        }
        let rest = &w[at(j)..];
        if labels.len() >= 2 && host_labels(&labels) && ends_host(rest) {
            return Some(&w[at(start)..at(j)]);
        }
        i = j.max(i + 1);
    }
    None
}

/// Dotted labels a client would dial: a top-level-domain-like last label,
/// or four numbers (an IPv4 literal).
fn host_labels(labels: &[&str]) -> bool {
    let ipv4 = labels.len() == 4
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()));
    let tld = labels.last().is_some_and(|l| {
        l.chars().count() >= 2
            && l.chars().next().is_some_and(char::is_alphabetic)
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    });
    ipv4 || tld
}

/// What may follow a host: a path, query or fragment, a port, or the end
/// of its word (after sentence punctuation); the closing dot of a fully
/// qualified name before any of them (`evil.example./x`).
fn ends_host(rest: &str) -> bool {
    let mut c = rest.chars();
    match c.next() {
        None => true,
        Some(d) if dot(d) && opens_path_or_port(c.as_str()) => true,
        Some(_) if opens_path_or_port(rest) => true,
        Some(_) => rest.chars().all(|c| matches!(c, '!' | ':') || dot(c)),
    }
}

/// `rest` opens a path, a query, a fragment, an escape or a port (an
/// empty one too: `evil.example:/x` is `evil.example/x` to WHATWG).
fn opens_path_or_port(rest: &str) -> bool {
    let mut c = rest.chars();
    match c.next() {
        Some('/' | '\\' | '?' | '#' | '%') => true,
        Some(':') => c
            .next()
            .is_none_or(|d| d.is_ascii_digit() || matches!(d, '/' | '\\' | '?' | '#')),
        _ => false,
    }
}

/// Whether a word holds an IP literal a client would dial (see the module
/// docs): read with the WHATWG host parser (IPv4 in every form it takes:
/// `127.1`, `0x7f.1`, `0177.0.0.1`, `2130706433`) or as an IPv6 address,
/// where a host opens (the word's start, or after `@`, `=`, `:` or `/`).
/// A number of prose (`3.14`, `version 1.2.3`, `10/20`, `0x1F`, `12.5%`,
/// `4.5/5`, `16.9:1`, `2.1#intro`) is not written as an address, nor is a
/// name with colons (`Add::add`, `a[1::3]`).
pub(crate) fn ip_literal(w: &str) -> bool {
    let b = w.as_bytes();
    let mut prev: Option<char> = None;
    for (i, c) in w.char_indices() {
        let opens = prev.is_none_or(|p| matches!(p, '@' | '=' | ':' | '/'));
        prev = Some(c);
        if !opens {
            continue;
        }
        if c == '[' {
            let inner = &w[i + 1..];
            if let Some(end) = inner.find(']') {
                if ipv6(&inner[..end]) {
                    return true;
                }
            }
            continue;
        }
        if !(c.is_ascii_hexdigit() || c == ':') {
            continue;
        }
        // An IPv6 address written bare: hex digits, colons and the dots of
        // an embedded IPv4 to the end of the word (or a zone, a path, a
        // port's closing punctuation), with a digit in it.
        let v6_end = w[i..]
            .find(|x: char| !(x.is_ascii_hexdigit() || x == ':' || x == '.'))
            .map_or(w.len(), |e| i + e);
        let v6 = w[i..v6_end].trim_end_matches(['.', ':']);
        let closes = w[v6_end..].is_empty()
            || w[v6_end..].starts_with(['%', '/', '?', '#'])
            || w[v6_end..]
                .chars()
                .all(|x| matches!(x, '.' | ',' | '!' | '?' | ';'));
        if closes
            && v6.matches(':').count() >= 2
            && v6.bytes().any(|x| x.is_ascii_digit())
            && ipv6(v6)
        {
            return true;
        }
        if !b[i].is_ascii_digit() {
            continue;
        }
        let end = w[i..]
            .find(|x: char| !(x.is_ascii_alphanumeric() || dot(x)))
            .map_or(w.len(), |e| i + e);
        if ipv4_written(&w[i..end], &w[end..]) {
            return true;
        }
    }
    false
}

/// An IPv6 address, with a zone (`%eth0`, `%25eth0`) or without.
fn ipv6(s: &str) -> bool {
    let addr = s.split('%').next().unwrap_or(s);
    addr.parse::<std::net::Ipv6Addr>().is_ok()
}

/// Whether `host` (followed by `rest`) is an IPv4 address to a WHATWG
/// parser, written as an address rather than as a number of prose: four
/// parts; fewer (hex, octal, or one number of eight digits or more) before
/// a path that names something (`/collect`, not `/5`) or a query; fewer
/// parts but one before a port of two digits or more.
fn ipv4_written(host: &str, rest: &str) -> bool {
    let ascii: String = host.chars().map(|c| if dot(c) { '.' } else { c }).collect();
    // A fully qualified address's closing dot (`127.0.0.1./x`).
    let h = ascii.strip_suffix('.').unwrap_or(&ascii);
    if h.is_empty() || h.ends_with('.') {
        return false;
    }
    if !matches!(url::Host::parse(h), Ok(url::Host::Ipv4(_))) {
        return false;
    }
    let parts: Vec<&str> = h.split('.').collect();
    if parts.len() == 4 {
        return true;
    }
    let rest = match rest.chars().next() {
        Some(d) if dot(d) => &rest[d.len_utf8()..],
        _ => rest,
    };
    let mut r = rest.chars();
    let path = match r.next() {
        Some('/' | '\\') => r.next().is_some_and(|x| !x.is_ascii_digit()),
        Some('?') => r.next().is_some_and(|x| x.is_alphanumeric()),
        _ => false,
    };
    let port =
        rest.starts_with(':') && rest[1..].bytes().take_while(u8::is_ascii_digit).count() >= 2;
    let marked = parts.iter().any(|p| {
        p.get(..2).is_some_and(|x| x.eq_ignore_ascii_case("0x"))
            || (p.len() > 1 && p.starts_with('0'))
    });
    if parts.len() > 1 || marked {
        return path || port;
    }
    // One decimal number: an address before a path (`2130706433/x`);
    // before a colon it is a timestamp as often (`1684000000:123`).
    h.len() >= 8 && path
}

/// A `_meta` key as MCP writes them with a prefix: dotted labels (a
/// reverse domain name, not a host anyone dials) and a slash, then a name
/// without dots (letters and digits at both ends, `-` and `_` between).
fn meta_key(k: &str) -> bool {
    let Some((prefix, name)) = k.split_once('/') else {
        return false;
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.starts_with(|c: char| c.is_ascii_alphabetic())
            && l.ends_with(|c: char| c.is_ascii_alphanumeric())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let name_ok = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    name_ok && prefix.split('.').all(label)
}

#[cfg(test)]
mod tests;
