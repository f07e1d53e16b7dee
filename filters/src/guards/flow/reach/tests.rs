use proptest::prelude::*;
use serde_json::json;

use super::*;

/// The forms a WHATWG parser (browsers, Node `fetch`), curl or a lenient
/// tool reads as a place to send data to.
const PLACES: &[&str] = &[
    "https://evil.example/?d=536-22-8145",
    "https:/evil.example/?d=1",
    "https:evil.example",
    "https:\\\\evil.example",
    "https:\\/evil.example",
    "HTTPS://EVIL.EXAMPLE/",
    "  hTtPs://evil.example",
    "ht\ttps://evil.example/",
    "https:\n//evil.example/",
    "ws:evil.example",
    "WSS://evil.example",
    "ftp:evil.example/x",
    "git+https://evil.example/r",
    "xhttps://evil.example",
    "see https:evil.example/?d=1 now",
    "gopher://evil.example/x",
    "ssh:\\\\evil.example",
    "MAILTO:a",
    "//evil.example/x",
    "\\\\evil\\share",
    "/\\evil.example",
    "to attacker@evil.example please",
    "evil.example/?d=536-22-8145",
    "evil.example?d=1",
    "evil.example#d=1",
    "evil.example:8080",
    "evil.example",
    "EVIL.EXAMPLE/",
    "send it to evil.example.",
    "(evil.example)",
    "[a link](evil.example/x)",
    "x=evil.example/?d=1",
    "https%3A%2F%2Fevil.example%2F",
    "evil\u{3002}example/x",
    "evil\u{ff0e}example",
    "\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}/x",
    "evil.xn--p1ai/x",
    "10.0.0.1/x",
    "169.254.169.254",
    "127.0.0.1:6379",
    // IPv4 in the forms a WHATWG parser takes, before a path or a port.
    "2130706433/x",
    "0x7f000001/x",
    "0x7f.1/x",
    "0177.0.0.1",
    "127.1/collect?d=536",
    "127.1:8080",
    "x=127.1/y",
    "key:10.1/x",
    "\u{ff11}\u{ff12}\u{ff17}\u{ff0e}\u{ff11}/x",
    "127.0.0.1./x",
    // IPv6, bracketed or bare.
    "[::1]:8080/x",
    "[fe80::1%25eth0]/x",
    "at [2001:db8::7]",
    "fe80::1",
    "::ffff:10.0.0.1",
    "2001:db8::7/x",
    // A fully qualified name's closing dot before a path or a port.
    "evil.example./x",
    "evil.example\u{3002}/x",
    "evil.example\u{3002}:8080",
    // Percent-escaped, once or twice.
    "evil%2Eexample/x",
    "evil%252Eexample/x",
    // Code points IDNA maps to nothing, inside the host.
    "evil.exam\u{ad}ple/?d=1",
    "evil.exa\u{200b}mple/x",
    "ev\u{2060}il.example/x",
    "evil\u{fe0f}.example/x",
    "evil.ex\u{34f}ample",
    // An empty port.
    "evil.example:/?d=1",
];

/// Text that names no place.
const PROSE: &[&str] = &[
    "",
    "employee 7",
    "see the notes",
    "version 1.2.3",
    "pi is 3.14",
    "e.g. this, i.e. that",
    "U.S.A.",
    "news: today",
    "the time is 10:30",
    "https:",
    "https://",
    "C:\\dir\\file",
    "hr://employees/7",
    "file:///etc/passwd",
    "a // comment",
    "@someone said",
    "0x1F",
    "10/20",
    "price 10.99",
    "pi is 3.14.",
    "at 1684000000:123",
    "12:34:56",
    "std::io::Read",
    "100% done",
    "the year 2024",
    "::",
    "inflation of 3.5% this year",
    "rated 4.5/5",
    "aspect 16.9:1",
    "see section 2.1#intro",
    "is 1.5?",
    "numpy a[1::3]",
    "Add::add",
    "dead::beef",
];

#[test]
fn every_form_a_lenient_peer_dials_is_found() {
    for s in PLACES {
        assert!(reaches_out(s), "{s:?}");
        assert!(holds_place(&json!({ "k": s })), "{s:?} as a value");
        assert!(holds_place(&json!({ *s: 1 })), "{s:?} as a member name");
    }
}

#[test]
fn prose_names_no_place() {
    for s in PROSE {
        assert!(!reaches_out(s), "{s:?}");
    }
}

/// What WHATWG parsers read as a URL with a host is a place, whatever
/// the case, slashes and deleted characters around its scheme.
#[test]
fn the_special_forms_are_urls_to_whatwg() {
    for s in [
        "https:/evil.example/?d=1",
        "https:evil.example",
        "https:\\\\evil.example",
        "HTTPS://evil.example",
        "ht\ttps://evil.example/",
    ] {
        let u = url::Url::parse(s).expect(s);
        assert_eq!(u.host_str(), Some("evil.example"), "{s:?}");
        assert!(reaches_out(s), "{s:?}");
    }
}

#[test]
fn resource_uris_are_judged_by_their_scheme() {
    for uri in [
        "hr://employees/7",
        "hr://evil.example/?d=1",
        "file:///etc/passwd",
        "mem:notes/1",
        "urn:x:y",
    ] {
        assert!(!uri_reaches_out(uri), "{uri:?} is a read");
    }
    for uri in [
        "https://evil.example/x",
        " HTTPS:evil.example",
        "ht\ttps://evil.example",
        "gopher://evil.example",
        "//evil.example/x",
        "evil.example/?d=1",
        "mailto:a@evil.example",
        "x-https://evil.example/x",
        "git+https://evil.example/r",
    ] {
        assert!(uri_reaches_out(uri), "{uri:?} reaches out");
    }
}

#[test]
fn every_member_of_a_clients_params_is_read() {
    let reach = |method: &str, params: serde_json::Value| params_reach_out(Some(method), &params);
    assert!(reach(
        "notifications/cancelled",
        json!({"requestId": 1, "reason": "see https:evil.example/?d=536"})
    ));
    assert!(reach(
        "resources/subscribe",
        json!({"uri": "https://evil.example/?d=536"})
    ));
    assert!(!reach(
        "resources/subscribe",
        json!({"uri": "hr://employees/7"})
    ));
    assert!(reach(
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "p"},
               "argument": {"name": "a", "value": "evil.example/?d=536"}})
    ));
    assert!(reach(
        "tools/call",
        json!({"name": "t", "arguments": {}, "_meta": {"trace": "https://evil.example"}})
    ));
    assert!(reach(
        "tools/call",
        json!({"name": "t", "_meta": {"evil.example": 1}})
    ));
    assert!(reach(
        "tools/call",
        json!({"name": "https://evil.example/"})
    ));
    // A dotted tool name is a name; an MCP `_meta` key is not a host.
    assert!(!reach(
        "tools/call",
        json!({"name": "files.read", "arguments": {"path": "notes"},
               "_meta": {"io.modelcontextprotocol/related-task": {"taskId": "t1"},
                         "progressToken": "p1"}})
    ));
    assert!(!reach(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "mcp", "version": "0.1.0"}})
    ));
}

proptest! {
    /// Differential: any string the WHATWG parser reads as a URL of a
    /// special scheme with a host is found, however it is spelled.
    #[test]
    fn what_whatwg_reads_as_a_url_is_found(
        lead in "[ \\t]{0,2}",
        scheme in prop::sample::select(vec!["http", "https", "ws", "wss", "ftp", "HTTPS", "hTTp", "Ws"]),
        tab in prop::sample::select(vec!["", "\t", "\n"]),
        slashes in "[/\\\\]{0,4}",
        host in "[a-z0-9]{1,8}(\\.[a-z]{2,6}){0,2}",
        rest in "(/[a-z?=&%0-9]{0,8})?",
    ) {
        let (a, b) = scheme.split_at(1);
        let s = format!("{lead}{a}{tab}{b}:{slashes}{host}{rest}");
        if let Ok(u) = url::Url::parse(&s) {
            if u.host_str().is_some_and(|h| !h.is_empty()) {
                prop_assert!(reaches_out(&s), "{:?} is {}", s, u);
            }
        }
    }
}

/// Compatibility forms (full-width letters, colon, slashes, at sign, dot)
/// are what they stand for: read in NFKC.
#[test]
fn full_width_forms_are_what_they_stand_for() {
    for s in [
        "ｈｔｔｐｓ：／／evil.example／?d=536-22-8145",
        "see ｈｔｔｐｓ：／／ｅｖｉｌ．ｅｘａｍｐｌｅ／",
        "evil.example／?d=536",
        "ａ＠evil.example",
        "／／evil.example／x",
    ] {
        assert!(reaches_out(s), "{s:?}");
        assert!(holds_place(&json!({ "k": s })), "{s:?}");
    }
    assert!(uri_reaches_out("ｈｔｔｐｓ：／／evil.example／x"));
    assert!(params_reach_out(
        Some("resources/read"),
        &json!({"uri": "ｈｔｔｐｓ：／／evil.example／?d=1"})
    ));
    assert!(!reaches_out(
        "ｆｕｌｌ－ｗｉｄｔｈ ｐｒｏｓｅ， ｎｏ ｐｌａｃｅ"
    ));
}
