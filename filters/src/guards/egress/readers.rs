//! The two readers of a URL — the WHATWG parser (the `url` crate) and an
//! RFC 3986 reader (curl, Go, urllib) — and the verdicts: on a value taken
//! whole ([`check`]), on a URI where MCP carries one ([`check_uri`]) and on
//! a string detection found.

use warden_config::guards::HostPattern;

use super::address::{judge, single_label, Dest};
use super::detect::{device_path, dialled, dropped, embedded, lead, starts_as_url, Lead, SPECIAL};

/// The rule for a URL that clients could read with different hosts.
pub const AMBIGUOUS: &str = "egress_ambiguous_url";

/// The raw host an RFC 3986 client reads in `text`, a URL; refuses a scheme
/// other than http(s) and ws(s), and text that such clients and WHATWG
/// parsers could split into authority and host differently.
pub(super) fn rfc3986_host(text: &str) -> Result<&str, &'static str> {
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

/// Whether what follows `host:` is a port (and perhaps a path or query).
pub(super) fn is_port(rest: &str) -> bool {
    let after = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    rest.is_empty()
        || after.len() < rest.len()
            && after
                .chars()
                .next()
                .is_none_or(|c| matches!(c, '/' | '?' | '#'))
}

/// What a client trims around a URL before reading it: controls and
/// spaces (WHATWG), any Unicode white space and the byte-order mark
/// (JavaScript's `trim()`).
fn trimmed(c: char) -> bool {
    c <= ' ' || c.is_whitespace() || c == '\u{feff}'
}

/// The verdict on a value that is a URL or a bare host as a whole (a declared
/// argument, or a found string that starts as a URL): `Ok` or the rule that
/// refuses it.
pub fn check(value: &str, allow: &[&HostPattern]) -> Result<(), &'static str> {
    check_as(value, allow, true)?;
    no_urls_after(value)
}

/// A URL followed by white space and another URL
/// (`https://allowed.example/\nhttp://127.1:2375/`): a URL parser reads one
/// URL (WHATWG deletes the newline, encodes a space), a tool that splits
/// its input on white space (a crawler's seed list, a shell) reads two and
/// dials both. Refused as ambiguous, whatever the first URL's verdict.
fn no_urls_after(value: &str) -> Result<(), &'static str> {
    let v = value.trim_matches(trimmed);
    let Some(gap) = v.find(trimmed) else {
        return Ok(());
    };
    // Any word after the gap that a tool could dial: a URL (with or
    // without slashes, `http:10.0.0.5/`), or a host (`169.254.169.254`,
    // `evil.example:8080/x`: a dot or a colon in it). Words of prose
    // (`now`, `see below`) are none.
    let dialable = |w: &str| {
        let w =
            w.trim_matches(|c: char| matches!(c, '"' | '\'' | '(' | ')' | '<' | '>' | ',' | ';'));
        !w.is_empty()
            && (w.contains([':', '\\'])
                || w.trim_end_matches('.').contains('.')
                || w.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x")))
    };
    if !embedded(&v[gap..]).is_empty() || v[gap..].split(trimmed).any(dialable) {
        return Err(AMBIGUOUS);
    }
    Ok(())
}

/// [`check`]; `web`: the value is dialled as written (http(s), ws(s), a
/// bare host), so a single-label host is refused, rather than a URI of
/// another scheme read as http to find its host.
fn check_as(value: &str, allow: &[&HostPattern], web: bool) -> Result<(), &'static str> {
    let v = value.trim_matches(trimmed);
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
    let verdict = match judge(&host, allow) {
        Ok(()) if web && single_label(&host, allow) => Err("ssrf_internal_name"),
        v => v,
    };
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

/// The verdict on a URI where MCP carries one (`resources/read`, a root, a
/// completion value …) or on a found string that starts as a URL: a network
/// URL is judged as a declared one is (a scheme other than http's read as
/// http would dial its host, so `gopher://2130706433/` is loopback); any
/// other scheme names a resource and is no egress.
pub fn check_uri(value: &str, allow: &[&HostPattern], files: bool) -> Result<(), &'static str> {
    let v = value.trim_matches(trimmed);
    let l = lead(v);
    let remote = remote_file(&l, v);
    if !dialled(&l, files) && !remote && !device_path(v) {
        return Ok(());
    }
    match l.scheme.as_deref() {
        Some(s) if (s != "file" && !SPECIAL.contains(&s)) || (remote && !files) => {
            let rest = v.find(':').map_or("", |i| &v[i + 1..]);
            check_as(&format!("http:{rest}"), allow, false)?;
            no_urls_after(v)
        }
        _ => check(v, allow),
    }
}

/// Whether `v` (starting as `l`) is a `file:` URI with a host other than
/// the local one (`file://10.0.0.5/share/x`, `file:\\\\host\\share`): not
/// a local file but a place some client connects to — Windows opens it as
/// the UNC path `\\\\host\\share` over SMB (sending the user's NTLM
/// credentials), Java's `file:` handler fetches it over FTP. Its host is
/// judged as a network URL's is, and so is `file:////host/share` (no host
/// to WHATWG, a UNC path to Windows: refused as ambiguous); `file:///…`
/// and `file://localhost/…` are local files.
fn remote_file(l: &Lead, v: &str) -> bool {
    l.scheme.as_deref() == Some("file")
        && (l.slashes >= 4
            || l.slashes >= 2
                && url::Url::parse(v).map_or(true, |u| u.host_str().is_some_and(|h| !h.is_empty())))
}

/// The verdict on a string detection found: a URL as a whole, or text that
/// holds URLs. No client reads such text as one URL, and text that holds a
/// network URL is refused as it always was — named by the first refusal
/// among those URLs (each up to the next whitespace, as link finders read
/// them; at most 8 judged). Resource identifiers in text are prose.
pub(super) fn check_found(
    s: &str,
    allow: &[&HostPattern],
    files: bool,
) -> Result<(), &'static str> {
    if starts_as_url(s) && (dialled(&lead(s), files) || remote_file(&lead(s), s) || device_path(s))
    {
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
