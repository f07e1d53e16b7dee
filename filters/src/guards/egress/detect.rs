//! Which strings are URLs: how a string starts as a WHATWG parser sees it,
//! where URLs start inside text, scheme-less forbidden addresses in free
//! text, and which schemes a client dials.

use super::address::{
    ssrf_name, ssrf_rule_v4, ssrf_rule_v6, ECHO_ZONES, LOOPBACK_ZONES, PRIVATE_SUFFIXES,
    WORDLIKE_SUFFIXES,
};

/// Schemes that WHATWG parsers give a host after any mix of `/` and `\`, or
/// none (`http:host`).
pub(crate) const SPECIAL: &[&str] = &["http", "https", "ws", "wss", "ftp"];

/// ASCII tab and newlines, which WHATWG parsers delete anywhere in a URL.
pub(crate) fn dropped(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r')
}

/// How a string starts, seen the way a WHATWG parser sees it: leading C0
/// controls and spaces skipped, tabs and newlines deleted.
#[derive(Debug, Default)]
pub(crate) struct Lead {
    /// The scheme (lower case), when the string starts with `scheme:`.
    pub(crate) scheme: Option<String>,
    /// How many `/` and `\` follow that colon (or open the string).
    pub(crate) slashes: usize,
    /// Whether text follows them, up to the next `/`, `\`, `?` or `#`,
    /// without a space or control character: a host, if anything.
    pub(crate) host_like: bool,
}

pub(crate) fn lead(s: &str) -> Lead {
    let mut b = s
        .bytes()
        .skip_while(|&c| c <= b' ')
        .filter(|&c| !dropped(c as char))
        .peekable();
    // The leading run of scheme bytes is measured first and copied only
    // when a colon ends it: most strings (prose) start with a word and a
    // space, and are looked at without an allocation.
    let mut scan = b.clone();
    let mut n = 0;
    let mut first = 0u8;
    while let Some(c) =
        scan.next_if(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
    {
        if n == 0 {
            first = c;
        }
        n += 1;
    }
    let scheme = if n == 0 {
        None
    } else if first.is_ascii_alphabetic() && scan.next_if_eq(&b':').is_some() {
        let name = b.take(n).map(|c| c.to_ascii_lowercase() as char).collect();
        b = scan;
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
pub(super) fn starts_as_url(s: &str) -> bool {
    let l = lead(s);
    match l.scheme.as_deref() {
        Some(scheme) if SPECIAL.contains(&scheme) => true,
        // `C:\dir`, `C:/dir`: a drive path.
        Some(scheme) => l.slashes > 0 && !(scheme.len() == 1 && l.slashes == 1),
        None => (l.slashes >= 2 && l.host_like) || device_path(s),
    }
}

/// A Windows path to a network share through a device namespace —
/// `\\?\UNC\host\share`, `\\.\UNC\…`, `\??\UNC\…`, either slash, any
/// case — which opens `\\host\share` over SMB: a place a client opens,
/// never prose, though no host follows its first slashes. Local device
/// paths (`\\?\C:\dir`, `\\.\pipe\x`) are not.
pub(super) fn device_path(s: &str) -> bool {
    let t = s.trim_start_matches(|c: char| c <= ' ').as_bytes();
    let slash = |c: u8| matches!(c, b'/' | b'\\');
    let prefix = t.len() >= 4
        && slash(t[0])
        && ((slash(t[1]) && matches!(t[2], b'?' | b'.')) || (t[1] == b'?' && t[2] == b'?'))
        && slash(t[3]);
    prefix && t.len() >= 8 && t[4..7].eq_ignore_ascii_case(b"UNC") && slash(t[7])
}

/// Where a URL may start inside `s`: before each `scheme:` followed by `/`
/// or `\`, and before a special scheme that ends such a scheme
/// (`xhttp://` holds `http://` for a reader that looks for it).
pub(super) fn embedded(s: &str) -> Vec<usize> {
    let b = s.as_bytes();
    let mut starts = Vec::new();
    for i in memchr::memchr_iter(b':', b) {
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
pub(super) fn url_like(s: &str) -> bool {
    if s.contains("://") || starts_as_url(s) {
        return true;
    }
    let b = s.as_bytes();
    memchr::memchr_iter(b':', b).any(|i| {
        let mut next = b[i + 1..].iter().filter(|&&c| !dropped(c as char));
        matches!(next.next(), Some(b'/' | b'\\'))
            && SPECIAL.iter().any(|scheme| {
                i >= scheme.len() && b[i - scheme.len()..i].eq_ignore_ascii_case(scheme.as_bytes())
            })
    })
}

/// Whether `b` holds `localhost` in any ASCII case. Prose is full of `l`s,
/// so one byte is no filter: the `l` and the `t` eight bytes on are
/// compared (case folded) at 32 positions at a time, and only where both
/// are there is the word compared whole.
pub(super) fn holds_localhost(b: &[u8]) -> bool {
    use wide::u8x32 as V;
    const WORD: &[u8; 9] = b"localhost";
    let at = |i: usize| {
        b.get(i..i + WORD.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(WORD))
    };
    let lane = |i: usize| {
        let mut x = [0u8; 32];
        x.copy_from_slice(&b[i..i + 32]);
        V::new(x) | V::splat(0x20)
    };
    let mut i = 0;
    while i + 32 + 8 <= b.len() {
        let both = lane(i).simd_eq(V::splat(b'l')) & lane(i + 8).simd_eq(V::splat(b't'));
        let mut m = both.to_bitmask();
        while m != 0 {
            if at(i + m.trailing_zeros() as usize) {
                return true;
            }
            m &= m - 1;
        }
        i += 32;
    }
    (i..b.len()).any(at)
}

/// A scheme-less address in free text that curl, wget, a browser's URL
/// parser or a link finder would dial and the SSRF rules forbid, followed
/// by a port (possibly empty) or a path (`127.0.0.1:6379`,
/// `localhost:8080/admin`, `[::1]:80/`, `169.254.169.254\latest`,
/// `metadata.google.internal/computeMetadata/`): an IPv4 literal in any
/// form a URL parser reads with a dot (`169.254.169.254`, `0x7f.1`,
/// `2130706433.`) or as a long or hex number (`0x7f000001`), a bracketed
/// IPv6 literal (zone ids too), `localhost` and the other forbidden names.
/// The host is read as a WHATWG client reads it (percent-decoding, IDNA
/// mapping: full-width letters, ideographic full stops, a trailing dot),
/// whatever credentials or `http:`-like prefix precede it, and wherever
/// punctuation or non-Latin text glues it to its neighbours (`**…**`,
/// `host=…`, `访问127.0.0.1:6379/`). An address alone is prose (`host
/// 10.1.2.3 is up`), as are a dotless name before a path (`metadata/x`),
/// a CIDR block (`10.0.0.0/8`), addresses no TCP client can reach
/// (`0.5/1.0` is 0.0.0.5, `250.5/s` multicast) and a `.local` or
/// `.internal` name without a port; only forbidden addresses are reported
/// (so a version number or a public address is not judged against the
/// allowlist), each as the token a client would dial.
#[cfg(test)]
pub(super) fn bare_forbidden(s: &str) -> Option<&str> {
    bare_forbidden_all(s).into_iter().next()
}

/// Every forbidden address [`bare_forbidden`] would report, in order and
/// without repeats: each is judged, so an allowlisted one cannot stand in
/// front of another.
pub(super) fn bare_forbidden_all(s: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    // Most text holds no dotted number, forbidden dotted name, bracket,
    // percent sign, `localhost`, number or name before a port, or
    // non-ASCII character: a few passes over its bytes, and nothing is
    // tokenised.
    let b = s.as_bytes();
    let mut bracket = false;
    let mut candidate = false;
    for i in memchr::memchr3_iter(b'.', b'[', b'%', b) {
        match b[i] {
            b'[' => {
                bracket = true;
                candidate = true;
            }
            b'%' => candidate = true,
            _ => {
                let before = if i > 0 { b[i - 1] } else { 0 };
                let after = b.get(i + 1).copied().unwrap_or(0);
                if ((before.is_ascii_hexdigit() || before | 0x20 == b'x') && after.is_ascii_digit())
                    || (before.is_ascii_digit()
                        && matches!(after, b':' | b'/' | b'\\' | b'?' | b'#'))
                    || forbidden_name_at_dot(b, i)
                {
                    candidate = true;
                }
            }
        }
        if candidate && bracket {
            break;
        }
    }
    if !candidate {
        // A host after `scheme://` needs no port or path to be dialled
        // (`valkey://2130706433`, `xds:///metadata`).
        candidate = memchr::memchr2_iter(b':', b'/', b).any(|i| dotless_before_port(b, i))
            || memchr::memmem::find(b, b"://").is_some();
    }
    if !candidate && !holds_localhost(b) && s.is_ascii() {
        return out;
    }
    if bracket {
        out.extend(bracketed_forbidden(s));
    }
    if !dials_anything(b) {
        return out;
    }
    judge_tokens(s, &mut out);
    out
}

/// Every forbidden address among the tokens of `s`, added to `out` in
/// order and without repeats: the tokens as prose splits text (keeping
/// non-ASCII letters together, so IDNA reads a full-width name), then as a
/// link finder carves an ASCII address out of glued text. Every token: a
/// cap would leave the rest of a long text unjudged. Only a token holding
/// a byte a dialled address needs (`:/\?#`, [`dials_anything`]) can be
/// one: without one, it is one host with no port, path or `scheme://`
/// before it, which is prose
/// (`a_token_without_a_dialling_byte_is_never_forbidden`).
fn judge_tokens<'a>(s: &'a str, out: &mut Vec<&'a str>) {
    let mut judge = |token: &'a str| {
        let token = token.trim_end_matches(['.', '!', '?', ':', '\u{3002}']);
        if !dials_anything(token.as_bytes()) {
            return;
        }
        if let Some(t) = forbidden_token(token) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    };
    if s.is_ascii() {
        // Byte by byte, and only the tokens around those bytes (the same
        // tokens, in the same order: a property test holds the two
        // readings equal).
        for sep in [PROSE_SEP, GLUED_SEP] {
            for (a, z) in tokens_that_may_dial(s.as_bytes(), sep) {
                judge(&s[a..z]);
            }
        }
        return;
    }
    let prose = s.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | '"' | '\'' | '(' | ')' | '<' | '>' | '[' | ']' | '{' | '}' | '|' | '`'
            )
    });
    let glued = s.split(|c: char| {
        !(c.is_ascii_alphanumeric()
            || matches!(c, '.' | '-' | ':' | '/' | '\\' | '?' | '#' | '@' | '%'))
    });
    for token in prose.chain(glued).filter(|t| !t.is_empty()) {
        judge(token);
    }
}

/// [`TOKEN_CLASS`] bits: an ASCII byte that ends a token as prose splits
/// text (white space and the punctuation around words), one that ends a
/// token as a link finder carves one (anything but letters, digits and
/// `.-:/\?#@%`), and one [`may_dial`] looks for.
const PROSE_SEP: u8 = 1;
const GLUED_SEP: u8 = 2;
const DIAL: u8 = 4;

static TOKEN_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        let mut v = 0;
        // `char::is_whitespace` of an ASCII character.
        if matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
            || matches!(
                c,
                b',' | b';'
                    | b'"'
                    | b'\''
                    | b'('
                    | b')'
                    | b'<'
                    | b'>'
                    | b'['
                    | b']'
                    | b'{'
                    | b'}'
                    | b'|'
                    | b'`'
            )
        {
            v |= PROSE_SEP;
        }
        if !(c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'.' | b'-' | b':' | b'/' | b'\\' | b'?' | b'#' | b'@' | b'%'
            ))
        {
            v |= GLUED_SEP;
        }
        if matches!(c, b':' | b'/' | b'\\' | b'?' | b'#') {
            v |= DIAL;
        }
        t[i] = v;
        i += 1;
    }
    t
};

/// The tokens of ASCII text `b` split at the bytes of class `sep`, in
/// order, that hold a byte [`dials_anything`] looks for: each found from
/// such a byte outwards to the separators around it, the text between two
/// of them never read twice. (No such byte is a separator.)
fn tokens_that_may_dial(b: &[u8], sep: u8) -> impl Iterator<Item = (usize, usize)> + '_ {
    let class = move |i: usize| TOKEN_CLASS[b[i] as usize];
    let mut from = 0;
    std::iter::from_fn(move || {
        let p = (from..b.len()).find(|&i| class(i) & DIAL != 0)?;
        let start = (from..p)
            .rev()
            .find(|&i| class(i) & sep != 0)
            .map_or(from, |i| i + 1);
        let end = (p..b.len())
            .find(|&i| class(i) & sep != 0)
            .unwrap_or(b.len());
        from = end;
        Some((start, end))
    })
}

/// Whether `s`, taken whole, is a forbidden address as a server that
/// dials a `host` argument reads it (`{"host": "169.254.169.254", "port":
/// 80}`): the value read as a host the way a WHATWG parser and `inet_aton`
/// read one (`127.0.0.01`, `0177.0.0.1`, `0x7f000001`, full-width digits,
/// an IPv6 address bracketed or not) or a forbidden name (`localhost`,
/// `db.internal`, `metadata.google.internal`) — with nothing around it but
/// white space. An address inside prose stays prose (see
/// [`forbidden_token`]). Left alone, because other values look like them:
/// decimal numbers of up to three parts (`2130706433`, `0.5`, `1.2.3`:
/// ids and versions, though WHATWG reads them as addresses), single words
/// (`metadata`, `local`) and names under a suffix that also ends words
/// (`user.home`, `.env.private`: see `WORDLIKE_SUFFIXES`).
pub(super) fn whole_forbidden(s: &str) -> bool {
    let v = s.trim_matches(|c: char| c.is_whitespace());
    // A leading dot names a file (`.env.local`), never a host.
    if v.is_empty()
        || v.len() > 253
        || v.starts_with('.')
        || v.contains(|c: char| c.is_whitespace() || matches!(c, '/' | '\\' | '@' | '?' | '#'))
    {
        return false;
    }
    let b = v.as_bytes();
    // Ids, counts and versions: digits in up to three dot-separated parts.
    if b.split(|&c| c == b'.').count() <= 3
        && b.split(|&c| c == b'.')
            .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
    {
        return false;
    }
    // What could be an address at all: a dot, a colon, a hex form, or a
    // character IDNA maps (full-width digits and dots).
    let hexish = b.len() > 2 && b[..2].eq_ignore_ascii_case(b"0x");
    let named = v.eq_ignore_ascii_case("localhost")
        || v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("ip6-"));
    if !(v.contains(['.', ':']) || hexish || named || !v.is_ascii()) {
        return false;
    }
    let inner = v
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(v);
    if inner.contains(':') {
        // A zone (`fe80::1%eth0`) is the same address to a dialler.
        let addr = inner.split('%').next().unwrap_or(inner);
        return addr
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ssrf_rule_v6(ip).is_some());
    }
    let Ok(url) = url::Url::parse(&format!("http://{v}/")) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ssrf_rule_v4(ip).is_some(),
        Some(url::Host::Ipv6(ip)) => ssrf_rule_v6(ip).is_some(),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.');
            (d.contains('.') || named)
                && !WORDLIKE_SUFFIXES.iter().any(|w| d.ends_with(w))
                && ssrf_name(d).is_some()
        }
        None => false,
    }
}

/// Whether `token` (or what follows a `scheme:` or `label:` in it) is a
/// forbidden address a client dials; the part that is.
/// Whether `b` holds a byte without which no token is dialled: a token
/// with no `:`, `/`, `\\`, `?` or `#` has no port, path, scheme or
/// leading `//`, and [`forbidden_token`] passes it whatever its host (text
/// in other scripts and emoji is then not tokenised at all).
fn dials_anything(b: &[u8]) -> bool {
    memchr::memchr3(b':', b'/', b'\\', b).is_some() || memchr::memchr2(b'?', b'#', b).is_some()
}

fn forbidden_token(token: &str) -> Option<&str> {
    // (Each look below is at ASCII bytes, which no other character's UTF-8
    // holds, so every cut falls on a character's edge. A text's tokens are
    // many and short, and this runs for each that holds a dialling byte:
    // plain loops, which cost less than a vector search's set-up there.)
    let slash = |b: u8| b == b'/' || b == b'\\';
    let slashes = |t: &str| t.bytes().take_while(|&b| slash(b)).count();
    // `//host/…` (protocol-relative) and `\\host\share` (UNC) dial the host.
    let lead = slashes(token);
    let mut hosted = lead >= 2;
    let mut token = &token[lead..];
    // `http:169.254.169.254/`, `Target:10.0.0.1:80`: each part after a
    // colon that does not hold a port may start the address.
    for _ in 0..32 {
        if token.is_empty() {
            return None;
        }
        let b = token.as_bytes();
        let cut = b
            .iter()
            .position(|&c| matches!(c, b'/' | b'\\' | b'?' | b'#'))
            .unwrap_or(b.len());
        let (authority, rest) = token.split_at(cut);
        // `user:password@host` dials the host as `user@host` does.
        let host_port = match authority.bytes().rposition(|c| c == b'@') {
            Some(at) => &authority[at + 1..],
            None => authority,
        };
        let colon_in_host = host_port.bytes().rposition(|c| c == b':');
        let (host, port) = match colon_in_host {
            // An empty port is the scheme's own to a WHATWG reader.
            Some(c) if host_port.as_bytes()[c + 1..].iter().all(u8::is_ascii_digit) => {
                (&host_port[..c], true)
            }
            _ => (host_port, false),
        };
        // An address alone is prose: a client dials it with a port or a
        // path, or as the host of `scheme://host` (whatever the scheme:
        // `valkey://127.0.0.1`, gRPC's `xds:///metadata.google.internal`).
        let dialled = port || !rest.is_empty() || hosted;
        if !host.is_empty()
            && !host.bytes().any(|c| c == b':')
            && dialled
            && forbidden_host(host, port, rest, hosted)
        {
            return Some(token);
        }
        let colon = b.iter().position(|&c| c == b':')?;
        // A scheme's name ends in a letter or digit.
        let scheme = colon > 0 && b[colon - 1].is_ascii_alphanumeric();
        let after = &token[colon + 1..];
        let n = slashes(after);
        token = &after[n..];
        hosted = scheme && n >= 2;
    }
    None
}

/// Whether the dot at `b[i]` belongs to a forbidden name (`*.internal`,
/// `*.local`, `*.localhost`, `*.localdomain`, `*.svc`, `metadata.*`,
/// `instance-data.*`, a wildcard DNS service's), in any ASCII case.
fn forbidden_name_at_dot(b: &[u8], i: usize) -> bool {
    let after = &b[i + 1..];
    let before = &b[..i];
    let starts = |w: &[u8]| after.len() >= w.len() && after[..w.len()].eq_ignore_ascii_case(w);
    let ends = |w: &[u8]| {
        before.len() >= w.len() && before[before.len() - w.len()..].eq_ignore_ascii_case(w)
    };
    let words = &*DOT_WORDS;
    words.after.iter().any(|w| starts(w))
        || ends(b"metadata")
        || ends(b"instance-data")
        || words
            .around
            .iter()
            .any(|(head, tail)| ends(head) && starts(tail))
}

/// What [`forbidden_name_at_dot`] looks for around a dot, split out of
/// the lists of names once (a text has a dot in every sentence).
struct DotWords {
    /// The first label of each private suffix (`internal` of `.internal`).
    after: Vec<&'static [u8]>,
    /// Each wildcard DNS zone at its first dot (`nip`, `io`).
    around: Vec<(&'static [u8], &'static [u8])>,
}

static DOT_WORDS: std::sync::LazyLock<DotWords> = std::sync::LazyLock::new(|| DotWords {
    after: PRIVATE_SUFFIXES
        .iter()
        .map(|p| p[1..].split('.').next().unwrap_or_default().as_bytes())
        .collect(),
    around: LOOPBACK_ZONES
        .iter()
        .chain(ECHO_ZONES)
        .filter_map(|z| z.split_once('.'))
        .map(|(head, tail)| (head.as_bytes(), tail.as_bytes()))
        .collect(),
});

/// Dotless forbidden names a resolver knows (`/etc/hosts`, a cloud's
/// search domain): dialled with a port.
const DOTLESS: &[&str] = &[
    "metadata",
    "instance-data",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
];

/// Whether the colon or slash at `b[i]` follows a dotless forbidden name
/// (a trailing dot allowed) or a number a URL parser reads as an address
/// (`metadata:80`, `ip6-loopback.:80`, `0x7f000001:`, `2130706433/`), and
/// precedes a port or a path (a name only with a port).
fn dotless_before_port(b: &[u8], i: usize) -> bool {
    let colon = b[i] == b':';
    if colon && !matches!(b.get(i + 1), Some(b'0'..=b'9' | b'/' | b'\\')) {
        return false;
    }
    let mut end = i;
    while end > 0 && b[end - 1] == b'.' {
        end -= 1;
    }
    let from = b[..end]
        .iter()
        .rposition(|c| !(c.is_ascii_alphanumeric() || *c == b'-'))
        .map_or(0, |p| p + 1);
    let word = &b[from..end];
    (word.len() >= 3 && word[..2].eq_ignore_ascii_case(b"0x"))
        || (word.len() >= 8 && word.iter().all(u8::is_ascii_digit))
        || (colon
            && DOTLESS
                .iter()
                .any(|d| d.as_bytes().eq_ignore_ascii_case(word)))
}

/// Whether a host a WHATWG parser reads as IPv4 is written as an address
/// rather than as a number of prose: four dotted parts (ASCII, full-width
/// or ideographic dots, or percent-encoded), any part in hex or octal
/// (`0x7f.1`, `0177.1`), or one number of eight digits or more before a
/// path (`2130706433/admin`; `1684000000:123` is a timestamp). Prices,
/// versions, scores and ratios (`10.99/month`, `10.0/11.0`, `10.5:1`)
/// have fewer parts.
fn literal_form(host: &str, rest: &str) -> bool {
    if host.contains('%') {
        return true;
    }
    let h = host.trim_end_matches(['.', '\u{3002}', '\u{ff0e}', '\u{ff61}']);
    let parts: Vec<&str> = h.split(['.', '\u{3002}', '\u{ff0e}', '\u{ff61}']).collect();
    if parts.len() == 4 {
        return true;
    }
    let marked = |p: &str| {
        p.get(..2).is_some_and(|x| x.eq_ignore_ascii_case("0x"))
            || (p.len() > 1 && p.starts_with('0'))
    };
    if parts.iter().any(|p| marked(p)) {
        return true;
    }
    parts.len() == 1 && h.len() >= 8 && h.bytes().all(|c| c.is_ascii_digit()) && !rest.is_empty()
}

/// Whether a scheme-less token's host, read as a WHATWG client reads it,
/// is one the SSRF rules forbid and a client can reach. An IPv4 literal
/// counts when written with a dot (`10:30` is a time, `3/4` a fraction),
/// in hex (`0x7f000001`) or as a number of eight digits or more; a name
/// with a dot or as `localhost`'s family, or with a port among the dotless
/// names a resolver knows (`metadata/x` is a path); a `.local` or
/// `.internal` name other than a metadata service's with a port.
fn forbidden_host(host: &str, port: bool, rest: &str, hosted: bool) -> bool {
    if host.is_ascii() {
        let hb = host.as_bytes();
        let ipv4_like = hb[0].is_ascii_digit()
            && hb
                .iter()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, b'.' | b'x' | b'X'));
        let localhost = hb.len() >= 9 && hb[..9].eq_ignore_ascii_case(b"localhost");
        let dotless = (port || hosted) && DOTLESS.iter().any(|d| d.eq_ignore_ascii_case(host));
        if !ipv4_like && !localhost && !dotless && !host.contains(['.', '%']) {
            return false;
        }
    }
    match url::Host::parse(host) {
        Ok(url::Host::Ipv4(ip)) => {
            let o = ip.octets();
            // After `scheme://` any form is a host (`valkey://2130706433`).
            let written = hosted || literal_form(host, rest);
            // `10.0.0.0/8` is a block, not a path.
            let cidr = !port
                && rest.len() <= 3
                && rest.starts_with('/')
                && rest[1..].bytes().all(|c| c.is_ascii_digit())
                && rest.len() > 1;
            // 0.x.y.z other than 0.0.0.0, multicast and reserved
            // addresses take no TCP connection.
            let reachable = ip.is_unspecified() || (o[0] != 0 && o[0] < 224);
            written && !cidr && reachable && ssrf_rule_v4(ip).is_some()
        }
        Ok(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.');
            let Some(rule) = ssrf_name(d) else {
                return false;
            };
            if rule == "ssrf_internal_name" {
                // In prose a dotless word before a colon is a label
                // (`步骤:1/2`), not a host: only a private suffix counts.
                (port || hosted)
                    && d.contains('.')
                    && !WORDLIKE_SUFFIXES.iter().any(|w| d.ends_with(w))
            } else {
                d.contains('.') || d.starts_with("localhost") || port || hosted
            }
        }
        Ok(url::Host::Ipv6(_)) | Err(_) => false,
    }
}

/// A bracketed IPv6 literal the SSRF rules forbid, followed by anything a
/// URL continues with (`[::1]:8080/admin`, `[::1]?x`, `[fe80::1%25eth0]:80`),
/// up to the next space.
fn bracketed_forbidden(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    for p in memchr::memchr_iter(b'[', b) {
        let Some(len) = b[p + 1..].iter().take(80).position(|&c| c == b']') else {
            continue;
        };
        let q = p + 1 + len;
        let inner = &s[p + 1..q];
        if !inner.contains(':')
            || !inner
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b':' | b'.' | b'%' | b'-' | b'_'))
        {
            continue;
        }
        let after = &b[q + 1..];
        let dialled = matches!(after.first(), Some(b'/' | b'\\' | b'?' | b'#'))
            || (after.first() == Some(&b':')
                && after
                    .get(1)
                    .is_none_or(|c| c.is_ascii_digit() || matches!(c, b'/' | b'\\')));
        if !dialled {
            continue;
        }
        // A zone id (`%25eth0`, `%eth0`) names the interface, not the address.
        let addr = inner.split('%').next().unwrap_or("");
        let Ok(ip) = addr.parse::<std::net::Ipv6Addr>() else {
            continue;
        };
        if ssrf_rule_v6(ip).is_some() {
            let end = s[q..]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
                .map_or(s.len(), |e| q + e);
            out.push(&s[p..end]);
        }
    }
    out
}

/// Schemes some client dials as a network address (curl's, the browsers',
/// the language runtimes', and the SSRF classics): a URL of one of them is
/// judged by its host. Any other scheme (`file:`, `test:`, `urn:`, a
/// server's own) names a resource, not a place to connect to.
pub(crate) const NETWORK: &[&str] = &[
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
    "gophers",
    "socks",
    "socks4",
    "socks4a",
    "socks5",
    "socks5h",
    "kafka",
    "nats",
    "tls",
    "ssl",
    "memcached",
    "memcache",
    "ldapi",
    "rtmps",
    "rtmpt",
    "rtsps",
    "dav",
    "davs",
    "webdav",
    "webdavs",
    "mariadb",
    "mssql",
    "sqlserver",
    "clickhouse",
    "cassandra",
    "couchdb",
    "couchbase",
    "neo4j",
    "bolt",
    "zk",
    "etcd",
    "consul",
    "hdfs",
    "webhdfs",
    "thrift",
    "ipp",
    "ipps",
    "snmp",
    "syslog",
    "stomp",
    "stomps",
    "wais",
    "prospero",
    // Dialled by clients found in the wild: calendar and feed fetchers,
    // the Redis forks, brokers, media stacks (ffmpeg's protocols),
    // SQL dialects and drivers, gRPC's name resolvers, file-sharing and
    // remote-shell clients, version control.
    "webcal",
    "webcals",
    "feed",
    "valkey",
    "valkeys",
    "pulsar",
    "rtp",
    "srt",
    "mms",
    "mmsh",
    "mmst",
    "icecast",
    "rtmpe",
    "rtmpte",
    "sctp",
    "zmq",
    "oracle",
    "cockroachdb",
    "trino",
    "presto",
    "hive",
    "crate",
    "redshift",
    "snowflake",
    "h2c",
    "spice",
    "gemini",
    "finger",
    "afp",
    "cifs",
    "fish",
    "ftpes",
    "elasticsearch",
    "opensearch",
    "influxdb",
    "zookeeper",
    "dask",
    "jupyter",
    "tcp4",
    "tcp6",
    "udp4",
    "udp6",
    "x11",
    "rsh",
    "rlogin",
    "bzr",
    "cvs",
    "hg",
    "passthrough",
    "xds",
    "ipv4",
    "ipv6",
];

/// The host a client of any scheme dials in `u` (a URI that starts as
/// `scheme://`), when the SSRF rules forbid it: the host after `//`, or
/// the first segment after `///` (a gRPC target, `xds:///host:port`),
/// read as an address in any form or a forbidden name (see
/// [`forbidden_host`]). A scheme no list names may still be dialled
/// (`webcal:`, `valkey:`, a driver's own): a resource identifier's host
/// is judged by the SSRF rules, though not by the allowlist.
pub(super) fn hosted_forbidden(u: &str) -> Option<&str> {
    let u = u.trim_start_matches(|c: char| c <= ' ');
    if let Some(t) = forbidden_token(u) {
        return Some(t);
    }
    // A bracketed IPv6 host (`x://[::1]/`, `x://u@[fe80::1%25eth0]:80`).
    let after = &u[u.find(':')? + 1..];
    let host = after.trim_start_matches(['/', '\\']);
    let authority = host.split(['/', '\\', '?', '#']).next().unwrap_or("");
    let at = authority.rfind('@').map_or(0, |i| i + 1);
    let inner = authority[at..].strip_prefix('[')?;
    let addr = inner[..inner.find(']')?].split('%').next().unwrap_or("");
    let ip = addr.parse::<std::net::Ipv6Addr>().ok()?;
    ssrf_rule_v6(ip).map(|_| &authority[at..])
}

/// Whether a scheme names a network address: one of [`NETWORK`], or a
/// compound whose parts hold one (`git+ssh`, `postgresql+psycopg2`,
/// `mongodb+srv`, `svn+ssh`).
pub(crate) fn network_scheme(scheme: &str) -> bool {
    NETWORK.contains(&scheme)
        || (scheme.contains('+') && scheme.split('+').any(|p| NETWORK.contains(&p)))
}

/// Whether a string that starts as `lead` names a network address, or,
/// with `files` (in a tool's or prompt's arguments, which a fetching tool
/// hands to a URL client: curl and Python's urllib read `file:` URLs), a
/// local file.
pub(super) fn dialled(l: &Lead, files: bool) -> bool {
    match l.scheme.as_deref() {
        Some("file") => files,
        Some(s) => network_scheme(s),
        // Protocol-relative `//host`.
        None => l.slashes >= 2,
    }
}

#[cfg(test)]
mod dial_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What lets text without `:`, `/`, `\`, `?` or `#` go
        /// untokenised: no token of it is dialled, whatever address it
        /// names (`127.0.0.1`, `localhost`, `[::1]`, full-width digits,
        /// `user@10.0.0.5`).
        #[test]
        fn a_token_without_a_dialling_byte_is_never_forbidden(
            token in "[0-9a-fA-Fx.@%\\[\\]lochst ０-９．。-]{0,40}",
        ) {
            prop_assume!(!dials_anything(token.as_bytes()));
            prop_assert_eq!(forbidden_token(&token), None);
        }
    }

    /// `forbidden_token` as it was written first, with the standard
    /// library's searches for several characters.
    fn forbidden_token_reference(token: &str) -> Option<&str> {
        let mut hosted = token.starts_with(['/', '\\']) && token[1..].starts_with(['/', '\\']);
        let mut token = token.trim_start_matches(['/', '\\']);
        for _ in 0..32 {
            if token.is_empty() {
                return None;
            }
            let authority = token.split(['/', '\\', '?', '#']).next().unwrap_or("");
            let rest = &token[authority.len()..];
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let (host, port) = match host_port.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, true),
                _ => (host_port, false),
            };
            let dialled = port || !rest.is_empty() || hosted;
            if !host.is_empty()
                && !host.contains(':')
                && dialled
                && forbidden_host(host, port, rest, hosted)
            {
                return Some(token);
            }
            let colon = token.find(':')?;
            let scheme = token[..colon].ends_with(|c: char| c.is_ascii_alphanumeric());
            let after = &token[colon + 1..];
            token = after.trim_start_matches(['/', '\\']);
            hosted = scheme && after.len() - token.len() >= 2;
        }
        None
    }

    proptest! {
        /// The byte-level reading of a token finds what the first one
        /// found, on tokens built from the pieces of dialled addresses
        /// (schemes, credentials, ports, paths, full-width and other
        /// non-ASCII characters around the bytes it cuts at).
        #[test]
        fn a_token_is_read_as_it_was(
            lead in prop_oneof![Just(""), Just("/"), Just("//"), Just("\\\\"), Just("/\\")],
            parts in proptest::collection::vec((
                prop_oneof![
                    Just("127.0.0.1"), Just("10.0.0.5"), Just("0x7f000001"), Just("localhost"),
                    Just("metadata.google.internal"), Just("db.internal"), Just("metadata"),
                    Just("2130706433"), Just("user"), Just("http"), Just("valkey"), Just("80"),
                    Just("."), Just("%2e"), Just("a"), Just("-"), Just("１２７．０．０．１"),
                    Just("é"), Just("\u{3002}"), Just("访问"), Just(""),
                ],
                prop_oneof![
                    Just(""), Just(":"), Just(":/"), Just("://"), Just(":\\\\"), Just(":///"),
                    Just("@"), Just("/"), Just("\\"), Just("?"), Just("#"), Just(":80"),
                    Just(":80/"), Just("é:"),
                ],
            ), 0..5),
        ) {
            let t: String = std::iter::once(lead.to_owned())
                .chain(parts.iter().map(|(w, sep)| format!("{w}{sep}")))
                .collect();
            prop_assert_eq!(forbidden_token(&t), forbidden_token_reference(&t), "{:?}", t);
        }
    }

    /// The tokens judged as they were: every token of both splits.
    fn judge_every_token(s: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let prose = s.split(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    ',' | ';'
                        | '"'
                        | '\''
                        | '('
                        | ')'
                        | '<'
                        | '>'
                        | '['
                        | ']'
                        | '{'
                        | '}'
                        | '|'
                        | '`'
                )
        });
        let glued = s.split(|c: char| {
            !(c.is_ascii_alphanumeric()
                || matches!(c, '.' | '-' | ':' | '/' | '\\' | '?' | '#' | '@' | '%'))
        });
        for token in prose.chain(glued).filter(|t| !t.is_empty()) {
            let token = token.trim_end_matches(['.', '!', '?', ':', '\u{3002}']);
            if let Some(t) = forbidden_token(token) {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out
    }

    proptest! {
        /// Only the tokens around a dialling byte are judged, ASCII text
        /// split a byte at a time: the same addresses, in the same order,
        /// as judging every token of both splits (text built from pieces
        /// of addresses, the separators of both splits, the bytes that
        /// dial, and full-width forms that keep it off the ASCII path).
        #[test]
        fn judging_the_tokens_that_may_dial_finds_what_every_token_finds(
            parts in proptest::collection::vec(prop_oneof![
                Just("127.0.0.1"), Just("10.0.0.5"), Just("169.254.169.254"), Just("0x7f000001"),
                Just("localhost"), Just("metadata.google.internal"), Just("db.internal"),
                Just("[::1]"), Just("2130706433"), Just("user@"), Just("http:"), Just("valkey://"),
                Just(":"), Just(":80"), Just(":6379"), Just("/"), Just("//"), Just("\\"),
                Just("?"), Just("#"), Just("."), Just(" "), Just("\n"), Just("\u{b}"), Just(","),
                Just("\""), Just("'"), Just("("), Just(")"), Just("<"), Just(">"), Just("{"),
                Just("}"), Just("|"), Just("`"), Just(";"), Just("="), Just("*"), Just("-"),
                Just("%"), Just("%2e"), Just("word"), Just("v1.2"), Just("491.02"), Just("a"),
                Just("１２７．０．０．１"), Just("\u{3002}"), Just("\u{85}"),
            ], 0..24),
        ) {
            let s = parts.concat();
            let mut got = Vec::new();
            judge_tokens(&s, &mut got);
            prop_assert_eq!(got, judge_every_token(&s), "{:?}", s);
        }
    }

    #[test]
    fn addresses_that_are_dialled_hold_a_dialling_byte() {
        for v in [
            "127.0.0.1",
            "localhost",
            "169.254.169.254",
            "１２７．０．０．１",
        ] {
            assert_eq!(forbidden_token(v), None, "{v}");
        }
        for v in [
            "127.0.0.1:80",
            "//127.0.0.1",
            "localhost/x",
            "10.0.0.5?x",
            "10.0.0.5#x",
        ] {
            assert!(dials_anything(v.as_bytes()), "{v}");
            assert!(forbidden_token(v).is_some(), "{v}");
        }
    }
}
