//! Unit tests of the reply path's pure parts.

use super::inferred_method;
use crate::pipeline::ctx::JsonEnds;

/// A second top-level value is seen where it begins, however the text
/// is cut into chunks; braces, quotes and escapes in strings are text.
#[test]
fn a_second_json_value_is_seen_where_it_begins() {
    let cases: [(&str, bool); 15] = [
        ("1{", true),
        ("true\"x\"", true),
        ("-1.5e+3[", true),
        ("null}", true),
        ("12\u{a0}", true),
        ("-1.5e+3 \t\r\n", false),
        (r#"{"a":"}{"}"#, false),
        (r#"{"a":"\"}"}  "#, false),
        (r#"{"a":"\\"} {"#, true),
        ("[1,[2]]\n[", true),
        ("{} \"x\"", true),
        ("12 3", true),
        ("true", false),
        (r#"{"a":{"b":[]}}"#, false),
        (r#"{"a":"x\"}{"}"#, false),
    ];
    for (text, second) in cases {
        for cut in 0..=text.len() {
            let mut e = JsonEnds::default();
            let (a, b) = text.as_bytes().split_at(cut);
            let seen = e.second_begins(a) || e.second_begins(b);
            assert_eq!(seen, second, "{text:?} cut at {cut}");
        }
    }
}

/// The reference reading of [`JsonEnds`]: one byte at a time.
#[derive(Default)]
struct Bytewise {
    depth: u32,
    in_str: bool,
    escaped: bool,
    scalar: bool,
    ended: bool,
}

impl Bytewise {
    fn second_begins(&mut self, b: &[u8]) -> bool {
        for &c in b {
            if self.in_str {
                if self.escaped {
                    self.escaped = false;
                } else if c == b'\\' {
                    self.escaped = true;
                } else if c == b'"' {
                    self.in_str = false;
                    self.ended |= self.depth == 0;
                }
                continue;
            }
            match c {
                b' ' | b'\t' | b'\n' | b'\r' => {
                    if self.scalar {
                        self.scalar = false;
                        self.ended = true;
                    }
                }
                _ if self.ended => return true,
                _ if self.scalar && !crate::pipeline::ctx::scalar_byte(c) => return true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.ended |= self.depth == 0;
                }
                b'"' => self.in_str = true,
                _ => self.scalar |= self.depth == 0,
            }
        }
        false
    }
}

/// The string-skipping reading agrees with the byte-at-a-time one on
/// every text of JSON's structural bytes, cut into three chunks anywhere.
#[test]
fn json_ends_agrees_with_the_bytewise_reading() {
    const ALPHABET: &[u8] = b"{}[]\"\\ \na1,:";
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize
    };
    for _ in 0..3000 {
        let len = next() % 24;
        let text: Vec<u8> = (0..len)
            .map(|_| ALPHABET[next() % ALPHABET.len()])
            .collect();
        for i in 0..=len {
            for j in i..=len {
                let (mut fast, mut slow) = (JsonEnds::default(), Bytewise::default());
                for part in [&text[..i], &text[i..j], &text[j..]] {
                    let (f, s) = (fast.second_begins(part), slow.second_begins(part));
                    assert_eq!(f, s, "{:?} cut at {i}, {j}", String::from_utf8_lossy(&text));
                    if f {
                        break;
                    }
                }
            }
        }
    }
}

/// A reply to a request this replica never saw is judged as the list its
/// shape names; one that also carries a call's output is not a list.
#[test]
fn a_list_shape_beside_a_result_is_no_list() {
    let list = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#;
    assert_eq!(inferred_method(list), Ok(Some("tools/list".into())));
    let plain = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#;
    assert_eq!(inferred_method(plain), Ok(None));
    for disguised in [
        &br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"content":[{"type":"text","text":"x"}]}}"#[..],
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"structuredContent":{"k":1}}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"resources":[],"contents":[]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"prompts":[]}}"#,
        // A shape that cannot be read is not "no list": a `resultType` that
        // is no string hid a whole tool list once.
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"wire"}],"resultType":1}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"wire"}],"resultType":true}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"wire"}],"resultType":["complete"]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"resultType":{}}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":[{"tools":[]}]}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":"tools"}"#,
    ] {
        assert_eq!(inferred_method(disguised), Err(()));
    }
    let done = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"resultType":"complete"}}"#;
    assert_eq!(inferred_method(done), Ok(Some("tools/list".into())));
    let error = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"m"}}"#;
    assert_eq!(inferred_method(error), Ok(None));
}

/// The credential sent upstream is seen in a reply however it comes back:
/// whole, cut into pieces of 23 bytes or more, behind JSON escapes; its
/// `Bearer ` scheme alone, or a short credential nowhere in it, is not.
#[test]
fn a_credential_is_seen_in_a_reply_however_it_is_written() {
    use super::messages::holds_credential;
    let token = "Bearer gho_16C7e42F292c6912E7710c838347Ae178B4a";
    let bare = &token["Bearer ".len()..];
    let seen = |text: &str| {
        let v: Option<serde_json::Value> = serde_json::from_str(text).ok();
        holds_credential(text.as_bytes(), v.as_ref(), token)
    };
    assert!(seen(&format!(r#"{{"result":{{"text":"{bare}"}}}}"#)));
    // A piece of it (23 bytes from anywhere) is enough.
    for at in [0, 5, bare.len() - 23] {
        let piece = &bare[at..at + 23];
        assert!(seen(&format!(r#"{{"result":"… {piece} …"}}"#)), "{piece}");
    }
    // Escaped so that the bytes do not show it: read as the client reads it.
    let escaped: String = bare
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    assert!(seen(&format!(r#"{{"result":"{escaped}"}}"#)));
    // As a member name too.
    assert!(seen(&format!(r#"{{"result":{{"{escaped}":1}}}}"#)));
    // The scheme alone, and other text, are not the credential.
    assert!(!seen(r#"{"result":"use a Bearer token"}"#));
    assert!(!seen(r#"{"result":"gho_ is GitHub's prefix"}"#));
    assert!(!holds_credential(b"short", None, "abc"));
}

/// What the gateway sent upstream for a call: `value` from the vault, its
/// secret after `secret_at`, and a token fetched per call.
fn leg(value: &str, secret_at: usize, outbound: Option<&str>) -> crate::pipeline::ctx::UpstreamLeg {
    crate::pipeline::ctx::UpstreamLeg {
        outbound_auth: outbound.map(|v| ("authorization".to_owned(), v.to_owned())),
        vault_auth: Some(crate::pipeline::ctx::Injected {
            header: "authorization".into(),
            value: value.into(),
            secret_at,
        }),
        credential: None,
        uri: String::new(),
        sealed: None,
        tried: Vec::new(),
        chosen: None,
        status: None,
        error: None,
    }
}

/// A secret behind a prefix of the bundle's choosing (`token `, not
/// `Bearer `) is looked for without it: a short one echoed alone would
/// otherwise hold none of the pieces looked for (each would straddle the
/// prefix).
#[test]
fn a_credential_is_seen_without_the_prefix_its_header_puts_before_it() {
    use super::messages::{holds_credential, sent_secrets};
    let secret = "0123456789abcdef";
    let sent = leg(&format!("token {secret}"), "token ".len(), None);
    let reply = format!(r#"{{"result":{{"text":"your key: {secret}"}}}}"#);
    let v: Option<serde_json::Value> = serde_json::from_str(&reply).ok();
    assert!(sent_secrets(&sent).any(|s| holds_credential(reply.as_bytes(), v.as_ref(), s)));
    let other = r#"{"result":{"text":"token 0123 is not it"}}"#;
    let v: Option<serde_json::Value> = serde_json::from_str(other).ok();
    assert!(!sent_secrets(&sent).any(|s| holds_credential(other.as_bytes(), v.as_ref(), s)));
}

/// A header the client would see (an unsealed session id, `Vary`) that
/// holds the credential sent for the call, or a piece of it, withholds
/// the reply as a body would; other headers do not.
#[test]
fn a_reply_header_holding_the_credential_is_seen() {
    use super::messages::{headers_hold_credential, sent_secrets};
    let token = "gho_16C7e42F292c6912E7710c838347Ae178B4a";
    let fetched = "eyJhbGciOiJFUzI1NiJ9.per-call-token-0123456789";
    let sent = leg(
        &format!("Bearer {token}"),
        "Bearer ".len(),
        Some(&format!("Bearer {fetched}")),
    );
    for (name, value) in [
        ("mcp-session-id", token.to_owned()),
        ("vary", format!("accept, {}", &token[3..30])),
        ("mcp-session-id", fetched.to_owned()),
    ] {
        let mut resp = pingora::http::ResponseHeader::build(200, None).expect("head");
        resp.insert_header("content-type", "application/json")
            .expect("ct");
        resp.insert_header(name, value.as_str()).expect("header");
        assert!(
            headers_hold_credential(&resp, sent_secrets(&sent)),
            "{name}: {value}"
        );
    }
    let mut resp = pingora::http::ResponseHeader::build(200, None).expect("head");
    resp.insert_header("mcp-session-id", "a-session-of-its-own-0123456789")
        .expect("sid");
    resp.insert_header("vary", "accept").expect("vary");
    assert!(!headers_hold_credential(&resp, sent_secrets(&sent)));
}
