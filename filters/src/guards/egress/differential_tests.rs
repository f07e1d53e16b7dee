//! Parser differentials: what curl, Go, urllib and WHATWG read differently.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value as Json;
use warden_config::access::{ServerCatalog, ToolEntry};
use warden_config::guards::HostPattern;

use super::address::*;
use super::detect::*;
use super::filter::*;
use super::readers::*;
use crate::chain::filter::{Decision, Exchange, McpFilter, Message, Notes};
use crate::engines::identity::Principal;
use crate::protocol::error::{codes, JsonRpcError};
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
        labels: Default::default(),
        price: None,
    };
    let catalog = ServerCatalog {
        tools: HashMap::from_iter([("fetch".to_owned(), tool)]),
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
    let env = crate::protocol::jsonrpc::single(&raw);
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
        let env = crate::protocol::jsonrpc::single(&raw);
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
    let env = crate::protocol::jsonrpc::single(raw);
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

/// The forms a client dials without a scheme that a byte-level reading
/// misses: a trailing dot, credentials with a password, a bracketed IPv6
/// literal, full-width letters and ideographic full stops (IDNA maps both),
/// forbidden dotted names, and an address after hundreds of words.
#[test]
fn scheme_less_addresses_are_read_as_the_client_reads_their_host() {
    let long = format!("{} localhost:8080/admin", "word ".repeat(400));
    let dialled = [
        "localhost.:8080/admin",
        "foo.localhost.:80/",
        "LOCALHOST.:80",
        "user:pw@127.0.0.1:6379/",
        "user:pw@localhost:8080/admin",
        "mailto:a@10.0.0.1:25/",
        "[::1]:8080/admin",
        "see [::ffff:127.0.0.1]:80/x",
        "[fd00:ec2::254]/latest",
        "(user@[::1]:22)",
        "\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}:8080/",
        "127\u{3002}0\u{3002}0\u{3002}1:80/",
        "169\u{ff0e}254\u{ff0e}169\u{ff0e}254/latest",
        "\u{8bbf}\u{95ee} 127\u{3002}0\u{3002}0\u{3002}1:80/\u{3002}",
        "metadata.google.internal/computeMetadata/v1/",
        "Metadata.Google.Internal:80",
        "db.internal:5432",
        "printer.local:631/admin",
        "instance-data.ec2.internal/latest",
        "127.0.0.1.:6379",
        long.as_str(),
    ];
    for v in dialled {
        let found = bare_forbidden(v);
        assert!(found.is_some(), "{v:?} not found");
        assert!(
            check(found.unwrap_or_default(), &[]).is_err(),
            "{v:?} judged allowed as {found:?}"
        );
    }
    for v in [
        "[::1]",
        "[1]: see the note",
        "the array a[0]:1/2",
        "[2001:db8::1]:443/",
        "metadata/schema.json",
        "see docs/metadata.md",
        "example.com/path",
        "\u{4e2d}\u{6587}\u{6587}\u{672c} 10:30",
        "\u{ff11}\u{ff10}:30",
        "3/4 of the 10.0 ratio",
        "user:pw@example.com:80/",
        "localhost.",
    ] {
        assert_eq!(bare_forbidden(v), None, "{v:?}");
    }
    // Through the filter, in detection mode.
    let raw = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"other","arguments":{"q":"GET [::1]:8080/admin now"}}}"#;
    assert!(refused_with(raw, true), "detection on");
    let raw = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"other","arguments":{"q":"\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:8080/admin"}}}"#;
    assert!(refused_with(raw, true), "escaped full-width letters");
}

/// Scheme-less addresses a hostile peer glues, pads, encodes or prefixes
/// so that a byte-level tokeniser misses them, each refused through the
/// filter; and the prose that must still pass.
#[test]
fn scheme_less_addresses_are_found_however_the_text_wraps_them() {
    let zeros = format!("{}177.0.0.1:6379/", "0".repeat(1100));
    let refused = [
        // Text holding a resource URL still has its addresses read.
        "see test://x and 169.254.169.254/latest/meta-data",
        "see :// then 127.0.0.1:6379/",
        "s3://bucket/key then localhost:8080/admin",
        "note:/ 10.0.0.1:80/",
        "localhost:/admin",
        // Dotted forms the old prefilter missed.
        "0x.0x.0x.0x:8080/",
        "2130706433.:6379/",
        "0x7f000001./latest",
        zeros.as_str(),
        // Percent-encoded hosts.
        "%6cocalhost:8080/admin",
        "127%2e0%2e0%2e1:80/",
        "metadata%2egoogle%2einternal/computeMetadata/v1/",
        // How a token is read.
        "127.0.0.1:/admin",
        "169.254.169.254:/latest/meta-data/",
        "[::1]:/x",
        "[::1]?x=1",
        "[::1]#f",
        "[::1]\\x",
        "[fe80::1%25eth0]:80/",
        "[fe80::1%eth0]:80/",
        "localhost:8080\\admin",
        "169.254.169.254\\latest\\meta-data",
        "127.0.0\t.1:80/",
        "local\nhost:8080/",
        "fetch http:169.254.169.254/latest/meta-data/",
        "fetch http:\t//169.254.169.254/latest",
        "htt\tp://169.254.169.254/latest",
        "metadata:80/computeMetadata/v1/instance/service-accounts/default/token",
        "instance-data:80/latest/meta-data/",
        "ip6-localhost:80/",
        "ip6-loopback:8080/admin",
        "0x7f000001:6379/",
        "**127.0.0.1:6379/**",
        "__169.254.169.254/latest/meta-data__",
        "host=169.254.169.254/latest/meta-data",
        "Target:169.254.169.254/latest/meta-data",
        "\u{8bbf}\u{95ee}127.0.0.1:6379/",
        "\u{5730}\u{5740}\u{ff1a}169.254.169.254/latest/meta-data",
        "\u{ff08}127.0.0.1:6379/\u{ff09}",
        "\u{300c}169.254.169.254/latest\u{300d}",
        // Network schemes beyond the list, and compounds.
        "gophers://127.0.0.1:6379/_x",
        "socks5h://127.0.0.1:1080",
        "postgresql+psycopg2://u:p@169.254.169.254:5432/db",
        "mongodb+srv://10.0.0.5/db",
        "git+ssh://git@10.0.0.5/x.git",
        "kafka://10.0.0.5:9092",
        // Wildcard DNS names carrying a forbidden address.
        "redis at 127.0.0.1.nip.io:6379/",
        "http://app-169-254-169-254.sslip.io/latest/meta-data/",
        "curl localtest.me:8080/admin",
        "curl x-127.0.0.1.nip.io/admin",
        "curl 7f000001.foo.nip.io:80",
        "printer.lan:631/admin",
        "http://redis:6379/",
    ];
    for v in refused {
        let raw = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "other", "arguments": {"q": v}}})
        .to_string();
        assert!(refused_with(&raw, true), "{v:?} passed");
    }
    for v in [
        "scored 0.5/1.0",
        "\u{6b65}\u{9aa4}:1/2",
        "Note:5/10 and Step:2/3",
        "lan:8/9",
        "probability 0.85/1.00",
        "a 0.1:1 ratio",
        "see 0.1.0/0.2.0 changelog",
        "throughput 250.5/s",
        "ratio 224.1:1",
        "route 10.0.0.0/8",
        "subnet 192.168.1.0/24",
        "config.local/settings",
        "db.internal/overview in docs",
        "metadata/schema.json",
        "the meeting is at 10:30",
        "a 100:1 ratio",
        "docs/v1.2/api.md and 3.10.4/3.11",
        "Done. See below: 1/2 of it",
        "**bold** and __under__ host=example.com/x",
    ] {
        let raw = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "other", "arguments": {"q": v}}})
        .to_string();
        assert!(!refused_with(&raw, true), "{v:?} refused");
    }
}

/// Prices, versions, scores, ratios and timestamps are prose; an address
/// written as one (four parts, hex or octal, a long number before a path),
/// after `//` or `\\`, behind an allowlisted decoy, or a `*.svc` name, is
/// not.
#[test]
fn numbers_of_prose_pass_and_addresses_behind_decoys_do_not() {
    for v in [
        "Pro plan: $10.99/month, billed yearly",
        "costs 10.99/mo",
        "price 127.50/share",
        "$192.50/night",
        "Supports Android 10.0/11.0/12.0",
        "macOS 10.15/arm64 build",
        "version 10.1.2/linux",
        "see sections 10.2/10.3",
        "scored 0.0/1.0 on the test",
        "x = img*127.5/255",
        "contrast ratio 10.5:1",
        "meeting at 10.30:00",
        "ts=1684000000:123",
        "ports: 8080:80",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ] {
        assert_eq!(bare_forbidden(v), None, "{v:?}");
    }
    for v in [
        "fetch //169.254.169.254/latest/meta-data please",
        "see //localhost:8080/admin",
        "GET //10.0.0.1/",
        "see \\\\10.0.0.5\\share",
        "redis.default.svc:6379",
        "my-service.default.svc:8080/admin",
        "2130706433/admin",
        "0x7f000001/admin",
        "017700000001/x",
        "0177.1:22",
        "ip6-allnodes.:80/x",
        "ip6-loopback.:80/",
        "a:a:a:a:a:a:a:a:a:a:a:a:127.0.0.1:6379/",
    ] {
        assert!(bare_forbidden(v).is_some(), "{v:?} not found");
    }
    // An allowlisted address does not stand in front of a forbidden one.
    let v = "use 10.0.0.5:80/ then 169.254.169.254/latest/meta-data";
    let all = super::detect::bare_forbidden_all(v);
    assert_eq!(all.len(), 2, "{all:?}");
}

/// Every member of a call's `params` besides its arguments is read: a
/// retry's answers and state, and any URI in them.
#[test]
fn a_calls_other_params_are_judged_too() {
    for params in [
        serde_json::json!({"name": "fetch", "arguments": {},
            "inputResponses": {"r1": {"action": "accept", "content": {"url": "http://169.254.169.254/latest/meta-data/"}}}}),
        serde_json::json!({"name": "fetch", "arguments": {},
            "inputResponses": {"r1": {"uri": "http://169.254.169.254/latest/"}}}),
        serde_json::json!({"name": "fetch", "arguments": {}, "requestState": "http://169.254.169.254/latest/"}),
    ] {
        let raw = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
            .to_string();
        assert!(refused_with(&raw, true), "{raw}");
    }
    // A `uri` member is judged without detection.
    let raw = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params":
        {"name": "fetch", "arguments": {}, "inputResponses": {"r1": {"uri": "http://169.254.169.254/latest/"}}}})
    .to_string();
    assert!(refused_with(&raw, false), "{raw}");
    // Subscriptions: a scheme-less address too.
    let raw = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params":
        {"name": "fetch", "arguments": {}, "_meta": {"resourceSubscriptions": ["169.254.169.254/latest/meta-data"]}}})
    .to_string();
    assert!(refused_with(&raw, false), "{raw}");
}

/// A client's answers go to the server like a call's arguments: a form's
/// answer or a sampled text holding an address is judged with detection;
/// a `uri` (a root) always.
#[test]
fn a_clients_answers_are_judged_like_arguments() {
    let elicited = r#"{"jsonrpc":"2.0","id":7,"result":{"action":"accept","content":{"url":"http://169.254.169.254/latest/meta-data/"}}}"#;
    assert!(refused_with(elicited, true), "form answer, detection on");
    assert!(!refused_with(elicited, false), "form answer, detection off");
    let sampled = r#"{"jsonrpc":"2.0","id":8,"result":{"role":"assistant","model":"m","content":{"type":"text","text":"fetch 169.254.169.254/latest/meta-data next"}}}"#;
    assert!(refused_with(sampled, true), "sampled text");
    let fine = r#"{"jsonrpc":"2.0","id":9,"result":{"action":"accept","content":{"url":"https://example.com/page","n":3}}}"#;
    assert!(!refused_with(fine, true), "a public URL");
    let root = r#"{"jsonrpc":"2.0","id":10,"result":{"roots":[{"uri":"http://127.0.0.1/"}]}}"#;
    assert!(refused_with(root, false), "a root");
}

/// A byte-order mark JavaScript's `trim()` removes does not hide a URL.
#[test]
fn a_leading_byte_order_mark_is_trimmed_as_a_client_trims_it() {
    assert!(check("\u{feff}http://169.254.169.254/latest/meta-data/", &[]).is_err());
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
    proptest::collection::vec(proptest::sample::select(options), 0..=max).prop_map(|v| v.concat())
}

fn urlish() -> impl Strategy<Value = (String, bool)> {
    // Mostly clean parts, so that a fair share is allowed and the
    // property has something to say.
    (
        prop_oneof![4 => Just(""), 1 => proptest::sample::select(&[" ", "\u{1}", "\t", "\n"][..])],
        proptest::sample::select(
            &["http", "https", "ws", "wss", "ht\ttp", "ftp", "gopher", ""][..],
        ),
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
            let user = if user.is_empty() {
                user
            } else {
                format!("{user}@")
            };
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    /// The 32-at-a-time search for `localhost` finds it exactly where a
    /// byte-by-byte, case-blind comparison does: at every offset (in the
    /// SIMD body, across its 32-byte steps, in the scalar tail), in any
    /// case, beside near misses and bytes whose case fold collides.
    #[test]
    fn localhost_is_found_where_a_byte_scan_finds_it(
        parts in prop::collection::vec(prop_oneof![
            Just("l"), Just("L"), Just("t"), Just("T"), Just(" "), Just("x"), Just("\u{e9}"),
            Just("\u{ff4c}"), Just("\u{4c}\u{54}"), Just("localhost"), Just("LOCALHOST"),
            Just("lOcAlHoSt"), Just("localhos"), Just("ocalhost"), Just("local host"),
            Just("lXcalhost"), Just("l\u{0}calhost"), Just("localhosT:8080/"),
            Just("01234567890123456789012345678901"),
        ], 0..24),
    ) {
        let s: String = parts.concat();
        let b = s.as_bytes();
        let naive = b.windows(9).any(|w| w.eq_ignore_ascii_case(b"localhost"));
        prop_assert_eq!(holds_localhost(b), naive, "{:?}", s);
    }
}

#[test]
fn localhost_is_found_at_every_offset_and_case() {
    for len in 0..100 {
        for at in 0..=len {
            if at + 9 > len {
                break;
            }
            for (k, word) in ["localhost", "LOCALHOST", "LocalHost", "localhosT"]
                .iter()
                .enumerate()
            {
                let mut b = vec![b'a' + (k as u8); len];
                b[at..at + 9].copy_from_slice(word.as_bytes());
                assert!(holds_localhost(&b), "{len} {at} {word}");
                // One byte off: not found.
                b[at + 4] = b'_';
                assert!(!holds_localhost(&b), "{len} {at} {word}");
            }
        }
    }
}

/// A single-label host is refused where a client dials it as the web does
/// (a URL, a declared host), not in a server's own resource URIs
/// (`mysql://users/data` names a table) nor as a word of prose; private
/// suffixes that are also words of code count in URLs only.
#[test]
fn single_labels_and_wordlike_suffixes_count_where_a_client_dials() {
    for uri in [
        "mysql://users/data",
        "postgres://orders/schema",
        "redis://sessions/key1",
        "git://repo/README.md",
    ] {
        let raw = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"resources/read",
            "params":{"uri":uri}})
        .to_string();
        assert!(!refused_with(&raw, true), "{uri} refused");
    }
    for v in [
        "obj.home:12",
        "self.private:1/x",
        "user.home:8080/path",
        "see wiki.corp:443/x",
    ] {
        let raw = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "other", "arguments": {"q": v}}})
        .to_string();
        assert!(!refused_with(&raw, true), "{v:?} refused");
    }
    for v in [
        "http://intranet/",
        "see http://redis:6379/ now",
        "https://wiki.corp/x",
        "printer.lan:631/",
    ] {
        let raw = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "other", "arguments": {"q": v}}})
        .to_string();
        assert!(refused_with(&raw, true), "{v:?} passed");
    }
    assert_eq!(check("redis:6379", &[]), Err("ssrf_internal_name"));
    assert_eq!(check("http://db/", &[]), Err("ssrf_internal_name"));
}

/// A URL, white space, then more URLs: one URL to a URL parser (WHATWG
/// deletes the newline, encodes a space), several to a tool that splits
/// its input on white space. Refused as ambiguous wherever a URL is judged
/// whole; a URL followed by prose alone still passes.
#[test]
fn urls_after_white_space_in_a_url_are_ambiguous() {
    let example = allow_example();
    let example: Vec<&HostPattern> = example.iter().collect();
    for v in [
        "https://api.example.com/\nhttp://127.1:2375/containers/json",
        "https://api.example.com/ https://attacker.example/?k=SECRET",
        "https://api.example.com/\thttp://10.0.0.5/",
        "https://api.example.com/x\r\nwss://evil.example/",
        "https://api.example.com/\u{2003}gopher://127.0.0.1:6379/_x",
        "https://api.example.com/ see xhttp://169.254.169.254/",
        "//api.example.com/ http://10.0.0.5/",
        // A second address without a scheme, or without slashes.
        "https://api.example.com/ 169.254.169.254",
        "https://api.example.com/ evil.example:8080/x",
        "https://api.example.com/ http:10.0.0.5:2375/",
        "https://api.example.com/\n10.0.0.5:2375/",
        "https://api.example.com/ 0x7f000001",
        "https://api.example.com/ (localhost:6379)",
    ] {
        assert_eq!(check(v, &example), Err(AMBIGUOUS), "{v:?}");
        assert_eq!(check_uri(v, &example, true), Err(AMBIGUOUS), "{v:?}");
        assert_eq!(check_found(v, &example, true), Err(AMBIGUOUS), "{v:?}");
    }
    // What the first URL's host makes of it is still said first.
    assert_eq!(
        check("http://10.0.0.1/ http://api.example.com/", &example),
        Err("ssrf_private")
    );
    for v in [
        "https://api.example.com/ now",
        "https://api.example.com/a b c",
        "  https://api.example.com/path  ",
        "https://api.example.com/ see below.",
    ] {
        assert_eq!(check(v, &example), Ok(()), "{v:?}");
        assert_eq!(check_found(v, &example, true), Ok(()), "{v:?}");
    }
    // Through the filter: a declared URL argument and an undeclared one.
    let f = filter(true);
    for args in [
        serde_json::json!({"target": "https://api.example.com/\nhttp://127.1:2375/"}),
        serde_json::json!({"seeds": "https://api.example.com/\nhttps://attacker.example/"}),
        serde_json::json!({"opts": {"list": ["https://api.example.com/ http://10.0.0.5/"]}}),
    ] {
        assert_eq!(
            denial(call(&f, args.clone())).code,
            codes::EGRESS_DENIED,
            "{args}"
        );
    }
    assert!(matches!(
        call(
            &f,
            serde_json::json!({"target": "https://api.example.com/ now"})
        ),
        Decision::Pass
    ));
}

/// Windows device paths (`\\?\UNC\host\share`, `\\.\UNC\…`, either
/// slash) open the host over SMB: judged as the network places they are,
/// never read as prose.
#[test]
fn windows_device_paths_are_judged() {
    for v in [
        "\\\\?\\UNC\\10.0.0.5\\c$\\x",
        "\\\\.\\UNC\\10.0.0.5\\c$\\x",
        "//?/UNC/10.0.0.5/c$/x",
        "\\\\?\\UNC\\api.example.com\\share",
        " \\/?\\unc\\169.254.169.254\\x",
        "\\??\\UNC\\10.0.0.5\\share",
    ] {
        assert!(starts_as_url(v), "{v:?}");
        assert!(check(v, &[]).is_err(), "{v:?}");
        assert!(check_uri(v, &[], true).is_err(), "{v:?}");
        assert!(check_found(v, &[], true).is_err(), "{v:?}");
        assert!(check_found(v, &[], false).is_err(), "{v:?}");
    }
    let f = filter(true);
    let d = denial(call(
        &f,
        serde_json::json!({"path": "\\\\?\\UNC\\10.0.0.5\\c$\\x"}),
    ));
    assert_eq!(d.code, codes::EGRESS_DENIED);
    // A relative path or prose with a question mark is no device path,
    // nor is a local device path (a drive, a named pipe).
    assert!(!starts_as_url("?/a/b"));
    assert!(!starts_as_url("/?/x"));
    for local in ["\\\\?\\C:\\proj\\main.rs", "\\??\\C:\\x"] {
        assert!(!device_path(local), "{local:?}");
        assert!(
            matches!(call(&f, serde_json::json!({"path": local})), Decision::Pass),
            "{local:?}"
        );
    }
}

/// A value that is nothing but a forbidden address — a `host` argument
/// beside a `port` — is judged as the place a server dials, in any
/// argument and with no declaration; values that only look like one
/// (versions, short forms, single words, public addresses, prose) pass.
#[test]
fn a_value_that_is_only_a_forbidden_address_is_judged() {
    let f = filter(true);
    for host in [
        "169.254.169.254",
        "127.0.0.1",
        " 10.0.0.5 ",
        "192.168.1.10.",
        "0.0.0.0",
        "::1",
        "[::1]",
        "fd00::5",
        "fe80::1%eth0",
        "::ffff:127.0.0.1",
        "::",
        "localhost",
        "LOCALHOST",
        "db.internal",
        "redis.default.svc",
        "metadata.google.internal",
        "printer.local",
        // As a WHATWG parser and inet_aton read them.
        "127.0.0.01",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}",
        "127.0.0.1.",
    ] {
        for args in [
            serde_json::json!({"host": host, "port": 80}),
            serde_json::json!({"opts": {"servers": [host]}}),
        ] {
            assert_eq!(
                denial(call(&f, args.clone())).code,
                codes::EGRESS_DENIED,
                "{args}"
            );
        }
        assert!(whole_forbidden(host), "{host:?}");
    }
    for value in [
        "0.5",
        "1.2.3",
        "0.1.2",
        "1.2.3.4",
        "8.8.8.8",
        "2001:db8::1",
        "metadata",
        "local",
        "home",
        "example.com",
        "v10.0.0.5",
        "the host is 10.0.0.5",
        "10.0.0.5/24 is the subnet",
        "a::b::c",
        "2130706433",
        "127.1.1",
        ".env.local",
        "user.home",
        "java.home",
        "notes.private",
        "README.md",
        "eu-west-1",
    ] {
        assert!(!whole_forbidden(value), "{value:?}");
    }
    for args in [
        serde_json::json!({"version": "0.1.2", "scope": "local", "kind": "metadata"}),
        serde_json::json!({"dns": "8.8.8.8", "site": "example.com"}),
    ] {
        assert!(matches!(call(&f, args.clone()), Decision::Pass), "{args}");
    }
}

/// A URI of a scheme no list here names still has a host some client of
/// it dials (a calendar fetcher's `webcal:`, a Redis fork's `valkey:`,
/// gRPC's `xds:///host`, a driver's own): wherever MCP carries a URI, and
/// in arguments, a forbidden host there is refused as a bare one is, in
/// any notation, with or without a port or path. The host of a server's
/// own resource URI (`test://static/1`) stays a name.
#[test]
fn unknown_schemes_are_judged_by_the_host_a_client_dials() {
    let forbidden = [
        "webcal://169.254.169.254/latest/meta-data/",
        "valkey://127.0.0.1:6379/0",
        "valkey://127.0.0.1",
        "xds:///metadata.google.internal",
        "passthrough:///169.254.169.254:80",
        "spice://127.0.0.1:5900",
        "acme-cache://2130706433",
        "acme-db://scott:tiger@10.0.0.5:1521/orcl",
        "acme-db://[::1]/x",
        "acme-db://localhost/x",
        "acme-db://cache.internal/x",
        "acme-meta://metadata/computeMetadata/v1/",
        "Acme://0x7f.1/",
        "acme://169.254.169.254.",
        "acme:////10.0.0.5/share",
    ];
    let resource = [
        "test://static/resource/1",
        "memo://insights",
        "note://my-notes/2024",
        "db://users/data",
        "ui://widget/1.2.3",
        "demo://resource/10.0",
        "urn:isbn:0451450523",
        "acme://build-7/logs/10.0.0.5.log",
    ];
    let read = |uri: &str| {
        serde_json::json!({"jsonrpc":"2.0","id":1,"method":"resources/read",
            "params":{"uri":uri}})
        .to_string()
    };
    let meta = |uri: &str| {
        serde_json::json!({"jsonrpc":"2.0","id":1,"method":"ping",
            "params":{"_meta":{"uri":uri}}})
        .to_string()
    };
    let arg = |v: &str| {
        serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"other","arguments":{"q":{"deep":[v]}}}})
        .to_string()
    };
    for detect in [false, true] {
        for uri in forbidden {
            assert!(refused_with(&read(uri), detect), "{detect} {uri} read");
            assert!(refused_with(&meta(uri), detect), "{detect} {uri} _meta");
        }
        for uri in resource {
            assert!(!refused_with(&read(uri), detect), "{detect} {uri} refused");
        }
    }
    for v in forbidden {
        assert!(refused_with(&arg(v), true), "{v} in arguments");
    }
    for v in [
        "see test://static/1 ok",
        "memo://insights",
        "ui://widget/1.2.3",
    ] {
        assert!(!refused_with(&arg(v), true), "{v} refused in arguments");
    }
}
