//! The scheme and authority of a resource URI, as every server reads them.
//!
//! A rule on a resource URI judges its text (`startswith(uri,
//! "https://admin.example.com/")`, `startswith(uri, "file:///secret/")`); a
//! server acts on what the text names. Servers lower-case a scheme
//! (`FILE:`, `HTTPS:`), read `file://localhost/x`, `file:/x` and `file:///x`
//! as one file, and connect to one host for `https://ADMIN.example.com./`,
//! `https://u@admin.example.com:443/`, `https://0x7f.1/` and their
//! canonical forms. [`uncanonical`] refuses, as `ambiguous_uri` refuses a
//! path a server could normalise, a URI whose scheme or authority is not
//! written in the one form those readings share.

use std::fmt::Write as _;

/// Whether `uri`'s scheme or authority is not in its canonical form: a
/// scheme with an upper-case letter; a `file:` URI that is not `file:///`
/// and its path (a host, `localhost` included, the single-slash form, or
/// `file:////host/share`, a UNC path to Windows); a web URI (http, https,
/// ws, wss) whose scheme is not followed by `//`, or whose authority is
/// not the host and port a WHATWG parser serialises (lower case, IDNA
/// applied, no userinfo, no default port, no trailing dot, an IPv4
/// address as a dotted quad). Any other scheme's authority is the
/// server's own to read.
pub(crate) fn uncanonical(uri: &str) -> bool {
    let Some(colon) = uri.find(':') else {
        return false;
    };
    let (scheme, rest) = (&uri[..colon], &uri[colon + 1..]);
    if scheme.bytes().any(|b| b.is_ascii_uppercase()) {
        return true;
    }
    match scheme {
        "file" => !rest.starts_with("///") || rest.starts_with("////"),
        "http" | "https" | "ws" | "wss" => {
            let Some(r) = rest.strip_prefix("//") else {
                return true;
            };
            let authority = &r[..r.find(['/', '?', '#']).unwrap_or(r.len())];
            let Ok(url) = url::Url::parse(uri) else {
                return true;
            };
            let Some(host) = url.host_str() else {
                return true;
            };
            let canonical = match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            };
            authority != canonical || host.ends_with('.')
        }
        _ => false,
    }
}

/// The other spellings of resource URI `uri` that servers read as the
/// same resource, each of which a rule on the text must see: the form a
/// URL parser serialises (`file:///Reports 2024` is sent on as
/// `file:///Reports%202024` by a server that parses it, `é` as `%C3%A9`),
/// the form with every character a URI may not hold raw escaped and every
/// escape in upper case (what a server that builds URIs by hand writes),
/// and the form a server that percent-decodes reads (`Reports%202024` is
/// the file `Reports 2024`). Empty for the common URI, written in
/// characters no reader changes and without an escape. A spelling none of
/// these reaches is caught by [`loose`] against the bundle's own text.
pub fn readings(uri: &str) -> smallvec::SmallVec<[String; 3]> {
    let mut out = smallvec::SmallVec::new();
    if uri.bytes().all(plain) {
        return out;
    }
    if let Ok(url) = url::Url::parse(uri) {
        if url.as_str() != uri {
            out.push(url.as_str().to_owned());
        }
    }
    // Every character a URI may not hold raw, escaped: the serialisation
    // of a URI a URL parser refuses (`note://a b`), which a server that
    // builds its URIs by hand still reads.
    let b = uri.as_bytes();
    let mut escaped = String::with_capacity(uri.len() + 8);
    let mut i = 0;
    while i < b.len() {
        match escape_at(b, i) {
            Some(byte) => {
                let _ = write!(escaped, "%{byte:02X}");
                i += 3;
            }
            None if plain(b[i]) => {
                escaped.push(b[i] as char);
                i += 1;
            }
            None => {
                let _ = write!(escaped, "%{:02X}", b[i]);
                i += 1;
            }
        }
    }
    if escaped != uri && !out.contains(&escaped) {
        out.push(escaped);
    }
    // Read as a replacing decoder reads bytes that are no UTF-8 (`%FF`):
    // the rest of the URI is still decoded.
    let decoded = String::from_utf8_lossy(&decoded(uri.as_bytes())).into_owned();
    if decoded != uri && !out.contains(&decoded) {
        out.push(decoded);
    }
    out
}

/// Characters RFC 3986 allows unescaped, which a serialiser keeps.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&b)
}

/// The byte the escape at `b[i]` stands for, if a whole escape starts there.
fn escape_at(b: &[u8], i: usize) -> Option<u8> {
    let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
    if b[i] != b'%' {
        return None;
    }
    Some((hex(b.get(i + 1))? * 16 + hex(b.get(i + 2))?) as u8)
}

/// `b` with every whole escape decoded until none is left (double
/// encoding, at most a few levels); a `%` that starts no escape is kept as
/// text, as lenient decoders keep it.
fn decoded(b: &[u8]) -> Vec<u8> {
    let mut text = b.to_vec();
    for _ in 0..4 {
        if !text.contains(&b'%') {
            break;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            match escape_at(&text, i) {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(text[i]);
                    i += 1;
                }
            }
        }
        if out == text {
            break;
        }
        text = out;
    }
    text
}

/// The text of a URI (or of a rule's literal) as the loosest server reads
/// it: escapes decoded to the end (and `+` as the space a form decoder
/// reads in a query), compatibility forms folded (NFKC, which also joins
/// `e` and a combining accent into `é`, and reads `ſ` as `s`), and one
/// case (upper, then lower: `ı` and `i` meet, as a case-insensitive file
/// system or `toUpperCase` make them). A rule's literal found in a
/// request's URI so read more often than any spelling of the URI
/// ([`readings`]) holds it as written judges one text while the server
/// reads another: `file:///data/SECRET/x` or `file:///data/Reports%20(2024)`
/// for a rule on `file:///data/secret/` or `file:///data/Reports%20%282024%29`.
pub fn loose(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let folded: String = String::from_utf8_lossy(&decoded(text.as_bytes()))
        .nfkc()
        .map(|c| if c == '+' { ' ' } else { c })
        .collect();
    folded.to_uppercase().to_lowercase()
}

/// Whether `literal` is text a rule could compare a resource URI with: it
/// starts with a scheme (`file:`, `hr:`), or is a path (`/secret`, or a
/// longer text with a `/`: `alice/secret`). Short texts with a slash
/// (`N/A`, `n/a`) and format strings (`%s`) are words, not places, and
/// plain words (a role, a reason) are left out: a URI that holds one in
/// another case is no other resource to the rule that names it.
pub fn uri_like(literal: &str) -> bool {
    let scheme = literal.split_once(':').is_some_and(|(s, _)| {
        s.len() >= 2
            && s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    scheme
        || (literal.starts_with('/') && literal.len() >= 3)
        || (literal.contains('/') && literal.len() >= 6)
}

/// Texts a policy compares resource URIs with, each as written and
/// [`loose`], found in a URI in one pass each way however many there are.
#[derive(Debug)]
pub struct UriLiterals {
    exact: Option<aho_corasick::AhoCorasick>,
    lax: Option<aho_corasick::AhoCorasick>,
}

impl UriLiterals {
    pub fn new(texts: &[String]) -> UriLiterals {
        let build = |pats: Vec<String>| {
            (!pats.is_empty())
                .then(|| aho_corasick::AhoCorasick::new(pats).ok())
                .flatten()
        };
        UriLiterals {
            exact: build(texts.to_vec()),
            lax: build(texts.iter().map(|t| loose(t)).collect()),
        }
    }

    /// Whether `uri`, read loosely, holds one of the texts more often than
    /// the URI as sent, or any spelling of it, holds it as written: a copy
    /// as written elsewhere in the URI (a decoy in a fragment) stands for
    /// no other occurrence. Linear in the URI's length.
    pub fn near(&self, uri: &str) -> bool {
        let (Some(exact), Some(lax)) = (&self.exact, &self.lax) else {
            return false;
        };
        let mut loose_counts: std::collections::HashMap<usize, usize> = Default::default();
        for m in lax.find_overlapping_iter(&loose(uri)) {
            *loose_counts.entry(m.pattern().as_usize()).or_default() += 1;
        }
        if loose_counts.is_empty() {
            return false;
        }
        let count_in = |text: &str| {
            let mut c: std::collections::HashMap<usize, usize> = Default::default();
            for m in exact.find_overlapping_iter(text) {
                let id = m.pattern().as_usize();
                if loose_counts.contains_key(&id) {
                    *c.entry(id).or_default() += 1;
                }
            }
            c
        };
        let mut most = count_in(uri);
        for r in readings(uri) {
            for (id, n) in count_in(&r) {
                let e = most.entry(id).or_default();
                *e = (*e).max(n);
            }
        }
        loose_counts
            .iter()
            .any(|(id, n)| most.get(id).copied().unwrap_or(0) < *n)
    }
}

#[cfg(test)]
mod tests {
    use super::readings;
    use crate::protocol::mcp::ambiguous_uri;

    #[test]
    fn a_uri_is_read_as_serialised_and_as_decoded() {
        assert_eq!(
            readings("file:///Reports 2024/q.txt").as_slice(),
            ["file:///Reports%202024/q.txt"]
        );
        assert_eq!(
            readings("file:///Reports%202024/q.txt").as_slice(),
            ["file:///Reports 2024/q.txt"]
        );
        assert_eq!(readings("file:///caf%C3%A9").as_slice(), ["file:///café"]);
        assert_eq!(readings("file:///café").as_slice(), ["file:///caf%C3%A9"]);
        assert_eq!(readings("note://a b").as_slice(), ["note://a%20b"]);
        for plain in [
            "file:///secret/x",
            "https://a.example/x?y=1#z",
            "urn:isbn:0451450523",
        ] {
            assert!(readings(plain).is_empty(), "{plain}");
        }
    }

    #[test]
    fn a_resource_uri_in_another_spelling_of_its_scheme_or_host_is_ambiguous() {
        for uri in [
            "FILE:///secret/x",
            "File:///secret/x",
            "file://localhost/secret/x",
            "file://LOCALHOST/secret/x",
            "file:/secret/x",
            "file:secret/x",
            "file:////fileserver/secret/x",
            "file://10.0.0.5/secret/x",
            "HTTPS://admin.example.com/",
            "https://ADMIN.example.com/",
            "https://admin.example.com./",
            "https://admin.example.com:443/",
            "http://admin.example.com:80/x",
            "https://user@admin.example.com/",
            "https://user:pw@admin.example.com/",
            "https:admin.example.com/",
            "https:/admin.example.com/",
            "https:///admin.example.com/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://127.1/",
            "http://[::FFFF:7f00:1]/",
            "https://ａｄｍｉｎ.example.com/",
            "https://admin。example.com/",
            "https://bücher.example/",
            "HR://employees/7",
        ] {
            assert!(ambiguous_uri(uri), "{uri}");
        }
        for uri in [
            "file:///secret/x",
            "file:///C:/Users/me/a.txt",
            "https://admin.example.com/",
            "https://admin.example.com",
            "https://admin.example.com:8443/x?y=1#z",
            "https://xn--bcher-kva.example/",
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "wss://stream.example.com/feed",
            "hr://employees/7",
            "test://static-text",
            "postgres://db/table%2F41",
            "urn:isbn:0451450523",
        ] {
            assert!(!ambiguous_uri(uri), "{uri}");
        }
    }
}
