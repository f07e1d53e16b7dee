//! The values egress judges: a declared argument taken whole, and every
//! string and key detection finds, in the arguments and outside them.

use serde_json::Value as Json;

use super::detect::{
    bare_forbidden_all, dialled, dropped, hosted_forbidden, lead, starts_as_url, url_like,
    whole_forbidden,
};

/// One value to judge.
pub(super) struct Found<'a> {
    /// The argument it is in, by a name the catalog or schema declares;
    /// `None` when only the arguments' own content could say (never quoted).
    pub(super) argument: Option<String>,
    pub(super) value: std::borrow::Cow<'a, str>,
    /// A declared argument's string, a URL or bare host as a whole; else a
    /// string or key detection found (`check_found`).
    pub(super) whole: bool,
}

/// A declared argument's value judged whole: a string as it is, and a
/// number or boolean as the text a server formats into its URL
/// (`f"http://{url}/"` with 2130706433 is loopback): never passed
/// unjudged. `None` for an object or null (walked like any content).
pub(super) fn declared_value(argument: String, value: &Json) -> Option<Found<'_>> {
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

/// Every string and object key at any depth under `v` that looks like a
/// URL or holds a scheme-less forbidden address (both: text that holds a
/// URL of a resource scheme may hold an address too).
pub(super) fn walk<'a>(v: &'a Json, argument: Option<&str>, out: &mut Vec<Found<'a>>) {
    let found = |value: &'a str, out: &mut Vec<Found<'a>>| judge_text(value, argument, out);
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

/// One string found in content: as it is, and, if it holds tabs or line
/// breaks (which a WHATWG parser deletes inside a URL), as a parser reads
/// it without them.
fn judge_text<'a>(value: &'a str, argument: Option<&str>, out: &mut Vec<Found<'a>>) {
    let push = |value: std::borrow::Cow<'a, str>, whole: bool, out: &mut Vec<Found<'a>>| {
        out.push(Found {
            argument: argument.map(str::to_owned),
            value,
            whole,
        })
    };
    if url_like(value) {
        push(value.into(), false, out);
    }
    for addr in bare_forbidden_all(value) {
        push(addr.into(), true, out);
    }
    // A value that is nothing but a forbidden address (a `host`
    // argument): a server dials it with a port it takes elsewhere.
    if whole_forbidden(value) {
        push(value.trim().into(), true, out);
    }
    if memchr::memchr3(b'\t', b'\n', b'\r', value.as_bytes()).is_some() {
        let joined: String = value.chars().filter(|c| !dropped(*c)).collect();
        if url_like(&joined) {
            push(joined.clone().into(), false, out);
        }
        for addr in bare_forbidden_all(&joined) {
            push(addr.to_owned().into(), true, out);
        }
    }
}

/// Every URI-valued member (`uri`, at any depth) under `v`, and with
/// detection every other string and key that is or holds a URL.
pub(super) fn uris_under<'a>(v: &'a Json, out: &mut Vec<Found<'a>>) {
    match v {
        Json::String(u) => uri_found(u, out),
        Json::Array(a) => a.iter().for_each(|x| uris_under(x, out)),
        Json::Object(o) => o.values().for_each(|x| uris_under(x, out)),
        _ => {}
    }
}

/// One URI: itself, and when it does not start as a URL (a scheme and
/// slashes), the addresses it names without one (`169.254.169.254/meta`,
/// `localhost:8080/admin`, `user@10.0.0.1:22`), which a peer that dials
/// it may read as a host. A URL is read by its scheme: the numbers in a
/// `file:///logs/10.0.0.5.log` path are no address.
pub(super) fn uri_found<'a>(u: &'a str, out: &mut Vec<Found<'a>>) {
    out.push(Found {
        argument: None,
        value: u.into(),
        whole: false,
    });
    if starts_as_url(u) {
        // A scheme that names no network protocol this gateway knows is a
        // resource identifier (`test://static/1`), but a client of it may
        // still dial its host: a forbidden one is judged as a bare host.
        if !dialled(&lead(u), true) {
            if let Some(host) = hosted_forbidden(u) {
                out.push(Found {
                    argument: None,
                    value: host.into(),
                    whole: true,
                });
            }
        }
        return;
    }
    // The whole value read as a host, where it names one: `169.254.169.254`,
    // `localhost`, `2852039166:80`, `10.0.0.1/24`, `user@10.0.0.1` are
    // addresses here, not the prose the scan below lets an address alone be.
    if bare_host(u) {
        out.push(Found {
            argument: None,
            value: u.into(),
            whole: true,
        });
    }
    for addr in bare_forbidden_all(u) {
        out.push(Found {
            argument: None,
            value: addr.into(),
            whole: true,
        });
    }
}

/// Whether `u` (no scheme and slashes) reads as a host a client would dial
/// if it were prefixed with `http://`: its head (up to `/`, `?`, `#` or
/// `\\`, after any `user@`) is bracketed, holds a dot, is all digits, is
/// hex (`0x…`) or `localhost`, and no scheme precedes it (`mailto:a@b.c`
/// names a mailbox, `localhost:8080` a port). A single word (`notes/x`)
/// is a relative name, not a host.
fn bare_host(u: &str) -> bool {
    let v = u.trim();
    let l = super::detect::lead(v);
    if l.scheme.is_some() && !super::readers::is_port(&v[v.find(':').map_or(0, |i| i + 1)..]) {
        return false;
    }
    let head = &v[..v.find(['/', '?', '#', '\\']).unwrap_or(v.len())];
    let hostport = &head[head.rfind('@').map_or(0, |i| i + 1)..];
    if hostport.starts_with('[') {
        return true;
    }
    let host = &hostport[..hostport.find(':').unwrap_or(hostport.len())];
    !host.is_empty()
        && (host.contains('.')
            || host.bytes().all(|b| b.is_ascii_digit())
            || host.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"))
            || host.eq_ignore_ascii_case("localhost"))
}

/// The items of a `uri` that is a list: each string a URI.
fn uri_list<'a>(a: &'a [Json], detect: bool, out: &mut Vec<Found<'a>>) {
    for x in a {
        match x {
            Json::String(u) => uri_found(u, out),
            Json::Array(b) => uri_list(b, detect, out),
            x => walk_outside(x, detect, out),
        }
    }
}

pub(super) fn walk_outside<'a>(v: &'a Json, detect: bool, out: &mut Vec<Found<'a>>) {
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
                    // A URI, and the addresses it names without a
                    // scheme (`169.254.169.254/latest`, `localhost:8080/`):
                    // a server that dials a resource's URI may read it as
                    // a host, as the same text anywhere else is read.
                    ("uri", Json::String(u)) => uri_found(u, out),
                    // A list of URIs (`["http://…"]`, which a lenient
                    // peer reads its one string from): each item is one.
                    ("uri", Json::Array(a)) => uri_list(a, detect, out),
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
