//! URIs a hostile server sends the client outside elicitations, icons and
//! website links: resource links and embedded resources in a tool's or a
//! prompt's result, a read's contents, a list's resources, an update's URI,
//! a sampling request's messages, structured content, `_meta`, an error's
//! data — and the URLs a client opens or fetches, read by every client.

use serde_json::json;

use super::elicitation_tests::{filter, reply, rule};
use super::filter::EgressFilter;
use crate::chain::filter::{Decision, Exchange, McpFilter, Message, Notes};
use crate::engines::identity::Principal;

/// Every place a server→client message carries a URI, with `uri` in it,
/// and the method of the request it answers (`None`: not a reply).
fn carriers(uri: &str) -> Vec<(String, Option<&'static str>)> {
    let link = json!({"type":"resource_link","uri":uri,"name":"doc"});
    let embedded = json!({"type":"resource","resource":{"uri":uri,"text":"x"}});
    vec![
        (
            json!({"jsonrpc":"2.0","id":1,"result":{"content":[link]}}),
            Some("tools/call"),
        ),
        (
            json!({"jsonrpc":"2.0","id":1,"result":{"content":[embedded]}}),
            Some("tools/call"),
        ),
        (
            json!({"jsonrpc":"2.0","id":1,"result":{"content":[],
                "structuredContent":{"items":[{"uri":uri}]}}}),
            Some("tools/call"),
        ),
        (
            json!({"jsonrpc":"2.0","id":1,"result":{"content":[],
                "_meta":{"io.example/source":{"uri":uri}}}}),
            Some("tools/call"),
        ),
        (
            json!({"jsonrpc":"2.0","id":1,"result":{"messages":[
                {"role":"user","content":link}]}}),
            Some("prompts/get"),
        ),
        (
            json!({"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":uri,"text":"x"}]}}),
            Some("resources/read"),
        ),
        (
            json!({"jsonrpc":"2.0","id":1,"result":{"content":[link]}}),
            Some("tasks/result"),
        ),
        (
            json!({"jsonrpc":"2.0","id":1,"result":{"content":[link]}}),
            None,
        ),
        (
            json!({"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"m",
                "data":{"uri":uri}}}),
            Some("tools/call"),
        ),
        (
            json!({"jsonrpc":"2.0","method":"notifications/resources/updated",
                "params":{"uri":uri}}),
            None,
        ),
        (
            json!({"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage",
                "params":{"maxTokens":5,"messages":[{"role":"user","content":link}]}}),
            None,
        ),
    ]
    .into_iter()
    .map(|(v, m)| (v.to_string(), m))
    .collect()
}

const FORBIDDEN: &[&str] = &[
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:8080/admin",
    "https://localhost/",
    "http://2130706433/",
    "http://[::ffff:10.0.0.1]/",
    "HTTP://LOCALHOST./",
    "gopher://0x7f.1:6379/_INFO",
];

/// Read with different hosts by WHATWG and by curl, Go or urllib.
const AMBIGUOUS: &[&str] = &[
    "http://evil.example\\@127.0.0.1/",
    "https://docs.example.com\\@evil.example/",
    "http:/127.0.0.1/",
    "http://ex%61mple.com/",
    "http://0x7f000001/",
];

#[test]
fn uris_a_server_sends_the_client_are_judged_wherever_they_are() {
    let f = filter(&[]);
    for uri in FORBIDDEN.iter().chain(AMBIGUOUS) {
        for (raw, asked) in carriers(uri) {
            assert!(
                rule(reply(&f, &raw, asked)).is_some(),
                "{uri} passed in {raw} ({asked:?})"
            );
        }
    }
    for uri in AMBIGUOUS.iter().take(2) {
        let (raw, asked) = &carriers(uri)[0];
        assert_eq!(
            rule(reply(&f, raw, *asked)).as_deref(),
            Some(super::AMBIGUOUS),
            "{uri}"
        );
    }
}

#[test]
fn ordinary_uris_from_a_server_pass() {
    let f = filter(&[]);
    for uri in [
        "https://example.com/docs/a.pdf",
        "https://docs.example.com:8443/x?y=1#z",
        "file:///project/src/main.rs",
        "file:///C:/Users/me/notes.txt",
        "notes://internal/7",
        "urn:isbn:0451450523",
        "data:text/plain,hi",
    ] {
        for (raw, asked) in carriers(uri) {
            assert_eq!(rule(reply(&f, &raw, asked)), None, "{uri} in {raw}");
        }
    }
    // A tool's text naming a local address is its content, not a link.
    let text = json!({"jsonrpc":"2.0","id":1,"result":{"content":[
        {"type":"text","text":"the service is on http://127.0.0.1:8080/"}]}})
    .to_string();
    assert_eq!(rule(reply(&f, &text, Some("tools/call"))), None);
    // An allowlist CIDR makes its exception here as it does for requests.
    let f = filter(&["10.0.0.0/8"]);
    for (raw, asked) in carriers("http://10.1.2.3/wiki") {
        assert_eq!(rule(reply(&f, &raw, asked)), None, "{raw}");
    }
}

/// The reply as the client gets it: the rewrite, or `raw` when passed.
fn as_sent(f: &EgressFilter, raw: &str, asked: &str) -> serde_json::Value {
    match reply(f, raw, Some(asked)) {
        Decision::Pass => serde_json::from_str(raw).expect("json"),
        Decision::Mutated(b) => serde_json::from_slice(&b).expect("json"),
        _ => panic!("refused: {raw}"),
    }
}

#[test]
fn a_resource_links_icons_are_judged_as_a_lists_are() {
    let f = filter(&[]);
    let icon = |src: &str| json!({"src": src, "mimeType": "image/png"});
    let link = |icons: serde_json::Value| json!({"type":"resource_link","uri":"https://example.com/a","name":"a","icons":icons});
    let ok = icon("https://cdn.example.com/a.png");
    for (raw, asked) in [
        (
            json!({"jsonrpc":"2.0","id":1,"result":{"content":[
                link(json!([ok, icon("http://127.0.0.1:8080/admin/delete")]))]}}),
            "tools/call",
        ),
        (
            json!({"jsonrpc":"2.0","id":1,"result":{"messages":[{"role":"user",
                "content":link(json!([ok, icon("http://evil.example\\@10.0.0.1/i.png")]))}]}}),
            "prompts/get",
        ),
        (
            json!({"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"failed",
                "data":{"see":[link(json!([ok, icon("http://127.0.0.1:8080/admin/delete")]))]}}}),
            "tools/call",
        ),
    ] {
        let v = as_sent(&f, &raw.to_string(), asked);
        let sent = v.to_string();
        assert!(sent.contains("cdn.example.com"), "{sent}");
        assert!(
            !sent.contains("127.0.0.1") && !sent.contains("10.0.0.1"),
            "{sent}"
        );
    }
}

/// A URL the client opens for its user or fetches itself (a URL
/// elicitation, an icon, a website link) is read by whichever library the
/// client is written with: a URL they read with different hosts is no
/// URL to open (`https://bank.example\@evil.example/` shows one host and
/// opens another).
#[test]
fn urls_a_client_opens_are_read_as_every_client_reads_them() {
    let f = filter(&[]);
    for url in [
        "http://evil.example\\@127.0.0.1/",
        "https://bank.example\\@evil.example/login",
        "http://0x7f000001/",
        "https:/example.com/",
        "http://a@b@example.com/",
    ] {
        let ask = json!({"jsonrpc":"2.0","id":7,"method":"elicitation/create",
            "params":{"mode":"url","elicitationId":"e","message":"m","url":url}})
        .to_string();
        assert!(rule(reply(&f, &ask, None)).is_some(), "{url}");
        let init = json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25",
            "capabilities":{},"serverInfo":{"name":"s","version":"1","websiteUrl":url,
            "icons":[{"src":url}]}}})
        .to_string();
        let v = as_sent(&f, &init, "initialize");
        assert!(
            v["result"]["serverInfo"].get("websiteUrl").is_none(),
            "{url}: {v}"
        );
        assert_eq!(v["result"]["serverInfo"]["icons"], json!([]), "{url}: {v}");
    }
}

/// The verdict on a client→server message `raw`.
fn request(f: &EgressFilter, raw: &str) -> Option<String> {
    let env = crate::protocol::jsonrpc::single(raw);
    let p = Principal::anonymous();
    let ctx = Exchange::new(&p, "s");
    rule(f.on_request(
        &Message::new(&env, raw.as_bytes()),
        &ctx,
        &mut Notes::default(),
    ))
}

/// A `file:` URI with a host is no local file: Windows opens
/// `file://10.0.0.5/share` as `\\10.0.0.5\share` over SMB (with the user's
/// NTLM credentials), Java's `file:` handler fetches it over FTP. Its host
/// is judged wherever a URI is, in both directions.
#[test]
fn a_file_uri_with_a_host_is_judged_by_its_host() {
    let f = filter(&[]);
    let read = |uri: &str| {
        json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":uri}}).to_string()
    };
    let root = |uri: &str| {
        json!({"jsonrpc":"2.0","id":2,"result":{"roots":[{"uri":uri,"name":"r"}]}}).to_string()
    };
    let complete = |uri: &str| {
        json!({"jsonrpc":"2.0","id":3,"method":"completion/complete","params":{
            "ref":{"type":"ref/resource","uri":uri},"argument":{"name":"a","value":"b"}}})
        .to_string()
    };
    for uri in [
        "file://169.254.169.254/latest/meta-data",
        "file://10.0.0.5/share/x",
        "FILE://192.168.1.10/c$/",
        "file:\\\\127.0.0.1\\c$\\",
        "file://fileserver.corp/share",
        "file:////10.0.0.5/share",
        "file://0x7f000001/x",
    ] {
        for raw in [read(uri), root(uri), complete(uri)] {
            assert!(request(&f, &raw).is_some(), "{raw}");
        }
        for (raw, asked) in carriers(uri) {
            assert!(rule(reply(&f, &raw, asked)).is_some(), "{raw}");
        }
    }
    for uri in [
        "file:///home/me/project",
        "file://localhost/home/me",
        "file:///C:/Users/me",
        "file://files.example.com/pub/readme",
    ] {
        for raw in [read(uri), root(uri), complete(uri)] {
            assert_eq!(request(&f, &raw), None, "{raw}");
        }
        for (raw, asked) in carriers(uri) {
            assert_eq!(rule(reply(&f, &raw, asked)), None, "{raw}");
        }
    }
}

/// The fast path looks for the member names as raw JSON spells them
/// (`"uri"`, `"icons"`): one spelled with a `\u` escape is still judged,
/// and prose that merely contains the words is not mistaken for them.
#[test]
fn member_names_spelled_with_escapes_are_judged() {
    let f = filter(&[]);
    for raw in [
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"resource_link","\u0075ri":"http://169.254.169.254/latest/","name":"d"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"t","inputSchema":{"type":"object"},"\u0069cons":[{"src":"http://127.0.0.1/x.png"}]}]}}"#,
    ] {
        let asked = raw.contains("tools").then_some("tools/list");
        let d = reply(&f, raw, asked.or(Some("tools/call")));
        let passed_as_is = matches!(d, Decision::Pass);
        assert!(!passed_as_is, "{raw}");
    }
    let prose = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"security during icons review: see http://169.254.169.254/ uri"}]}}"#;
    assert!(matches!(
        reply(&f, prose, Some("tools/call")),
        Decision::Pass
    ));
}

/// A `uri` without a scheme names an address a peer that dials it (a
/// server that prefixes `http://`, a `{+url}` template, a client that
/// fetches what it is sent) reads as a host: it meets the SSRF rules as
/// the same text anywhere else does, in both directions and with
/// detection off. A URL is read by its scheme (the numbers in a `file:`
/// path are no address).
#[test]
fn a_uri_without_a_scheme_is_judged_by_the_address_it_names() {
    for detect in [true, false] {
        let f = EgressFilter::new(
            Vec::new(),
            std::collections::HashMap::new(),
            std::sync::Arc::default(),
            detect,
        );
        let read = |m: &str, uri: &str| {
            json!({"jsonrpc":"2.0","id":1,"method":m,"params":{"uri":uri}}).to_string()
        };
        let root = |uri: &str| {
            json!({"jsonrpc":"2.0","id":2,"result":{"roots":[{"uri":uri,"name":"r"}]}}).to_string()
        };
        // A client's error answer to a server's request goes to the server too.
        let error = |uri: &str| {
            json!({"jsonrpc":"2.0","id":"s1","error":{"code":1,"message":"x","data":{"uri":uri}}})
                .to_string()
        };
        let complete = |uri: &str| {
            json!({"jsonrpc":"2.0","id":3,"method":"completion/complete","params":{
                "ref":{"type":"ref/resource","uri":uri},"argument":{"name":"a","value":"b"}}})
            .to_string()
        };
        for uri in [
            "169.254.169.254/latest/meta-data",
            "localhost:8080/admin",
            "10.0.0.1/",
            "user@192.168.1.1:22",
            "127.0.0.1:6379",
            "[::1]:8080/x",
            "0x7f.0.0.1/x",
            "metadata.google.internal/computeMetadata/v1/",
            // Alone, as a CIDR block or a number with a port: prose would
            // let them be, a `uri` names them.
            "169.254.169.254",
            "localhost",
            "metadata.google.internal",
            "user@10.0.0.1",
            "2852039166:80",
            "169.254.169.254/1",
            "10.0.0.1/24",
        ] {
            for raw in [
                read("resources/read", uri),
                read("resources/subscribe", uri),
                root(uri),
                error(uri),
                complete(uri),
            ] {
                assert!(request(&f, &raw).is_some(), "detect {detect}: {raw}");
            }
            for (raw, asked) in carriers(uri) {
                assert!(
                    rule(reply(&f, &raw, asked)).is_some(),
                    "detect {detect}: {raw}"
                );
            }
        }
        for uri in [
            "file:///var/log/hosts/10.0.0.5.log",
            "notes/2024.10.01",
            "db://orders/10.0.0.1",
            "https://example.com/10.0.0.1",
            "report-v1.2.pdf",
            "notes/x",
            "mailto:ops@example.com",
            "example.com/docs",
        ] {
            for raw in [
                read("resources/read", uri),
                root(uri),
                error(uri),
                complete(uri),
            ] {
                assert_eq!(request(&f, &raw), None, "detect {detect}: {raw}");
            }
            for (raw, asked) in carriers(uri) {
                assert_eq!(rule(reply(&f, &raw, asked)), None, "detect {detect}: {raw}");
            }
        }
    }
}

/// A `uri` that is a list (`["http://…"]`, which a lenient peer reads its
/// one string from): each item is judged as a URI, both directions.
#[test]
fn a_uri_given_as_a_list_is_judged_item_by_item() {
    let f = EgressFilter::new(
        Vec::new(),
        std::collections::HashMap::new(),
        std::sync::Arc::default(),
        false,
    );
    for uri in [
        json!(["http://169.254.169.254/latest/meta-data/"]),
        json!([["http://127.0.0.1:8080/"]]),
        json!(["https://example.com/a", "10.0.0.1/"]),
    ] {
        // (A request's own `params.uri` that is no string never parses.)
        for raw in [
            json!({"jsonrpc":"2.0","id":2,"result":{"roots":[{"uri":uri,"name":"r"}]}}),
            json!({"jsonrpc":"2.0","id":1,"method":"resources/read",
                "params":{"uri":"file:///a","_meta":{"io.example/src":{"uri":uri}}}}),
        ] {
            let raw = raw.to_string();
            assert!(request(&f, &raw).is_some(), "{raw}");
        }
        let link = json!({"jsonrpc":"2.0","id":1,"result":{"content":[
            {"type":"resource_link","name":"x","uri":uri}]}})
        .to_string();
        assert!(
            rule(reply(&f, &link, Some("tools/call"))).is_some(),
            "{link}"
        );
    }
    let fine = json!(["https://example.com/a", "file:///tmp/x"]);
    let link = json!({"jsonrpc":"2.0","id":1,"result":{"content":[
        {"type":"resource_link","name":"x","uri":fine}]}})
    .to_string();
    assert_eq!(rule(reply(&f, &link, Some("tools/call"))), None, "{link}");
}

/// A member a folding client reads as `uri` (`URI`, `Uri`, `urı` with a
/// dotless i, `uri` with an invisible character) is judged as `uri` is —
/// in a prompt's or a sampling request's single content block, which the
/// parser reads as payload, in a tool result's links and in a list's items.
#[test]
fn near_names_of_uri_are_judged_as_uri() {
    let f = filter(&[]);
    let metadata = "http://169.254.169.254/latest/meta-data/iam/";
    for name in ["URI", "Uri", "urI", "ur\u{131}", "uri\u{200b}"] {
        let link = json!({"type": "resource_link", name: metadata, "name": "x"});
        for (raw, asked) in [
            (
                json!({"jsonrpc":"2.0","id":3,"result":{"messages":[
                    {"role":"user","content":link}]}}),
                Some("prompts/get"),
            ),
            (
                json!({"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage",
                    "params":{"maxTokens":5,"messages":[{"role":"user","content":link}]}}),
                None,
            ),
            (
                json!({"jsonrpc":"2.0","id":4,"result":{"content":[],
                    "structuredContent":{"items":[{name: metadata}]}}}),
                Some("tools/call"),
            ),
        ] {
            let raw = raw.to_string();
            assert_eq!(
                rule(reply(&f, &raw, asked)).as_deref(),
                Some("ssrf_metadata"),
                "{raw}"
            );
        }
        // In a list's item (MCP's own structure) the parser refuses the
        // near-name before any filter sees it.
        let list = json!({"jsonrpc":"2.0","id":5,"result":{"resources":[
            {name: metadata, "name": "creds"}]}})
        .to_string();
        assert!(
            !matches!(
                crate::protocol::jsonrpc::parse(list.as_bytes(), Default::default()),
                Ok(crate::protocol::jsonrpc::Parsed::Single(_))
            ),
            "{list}"
        );
    }
    // Other members that merely contain the letters are no URI.
    let other = json!({"jsonrpc":"2.0","id":6,"result":{"content":[
        {"type":"text","text":"x"}],"structuredContent":{"uris":"http://10.0.0.1/ (a note)",
        "security":"http://127.0.0.1/"}}})
    .to_string();
    assert!(matches!(
        reply(&f, &other, Some("tools/call")),
        Decision::Pass
    ));
}
