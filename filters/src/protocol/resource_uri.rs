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
    if let Ok(decoded) = String::from_utf8(decoded(uri.as_bytes())) {
        if decoded != uri && !out.contains(&decoded) {
            out.push(decoded);
        }
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
/// it: escapes decoded to the end, compatibility forms folded (NFKC, which
/// also joins `e` and a combining accent into `é`), and lower case (a
/// case-insensitive file system, a host). A rule's literal that is within
/// a request's URI so read, while no spelling of the URI ([`readings`])
/// holds the literal as written, judges one text while the server reads
/// another: `file:///data/SECRET/x` or `file:///data/Reports%20(2024)` for
/// a rule on `file:///data/secret/` or `file:///data/Reports%20%282024%29`.
pub fn loose(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    String::from_utf8_lossy(&decoded(text.as_bytes()))
        .nfkc()
        .collect::<String>()
        .to_lowercase()
}

/// Whether `literal` is text a rule could compare a resource URI with: it
/// holds a separator (`/`, `:`) or an escape. Plain words (a role, a
/// reason) are left out: a URI that holds one in another case is no
/// other resource to the rule that names it.
pub fn uri_like(literal: &str) -> bool {
    literal.len() >= 2 && literal.contains(['/', ':', '%'])
}

/// Whether `uri` holds, read loosely, one of `literals` (each written and
/// [`loose`]) that none of its spellings holds as written.
pub fn near_literal<'a>(
    uri: &str,
    literals: impl IntoIterator<Item = &'a (String, String)>,
) -> bool {
    let mut read: Option<(String, smallvec::SmallVec<[String; 3]>)> = None;
    literals.into_iter().any(|(exact, lax)| {
        if uri.contains(exact.as_str()) {
            return false;
        }
        let (l, spellings) = read.get_or_insert_with(|| (loose(uri), readings(uri)));
        l.contains(lax.as_str()) && !spellings.iter().any(|r| r.contains(exact.as_str()))
    })
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
