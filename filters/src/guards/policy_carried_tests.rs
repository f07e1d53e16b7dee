//! A result carrying data of a resource (a read's `contents`, an embedded
//! `resource` block) reaches only a principal who may read that resource.

use super::*;
use crate::engines::identity::Principal;
use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};

/// `file:///finance/` is hidden from everyone; everything else is allowed.
const REGO: &str = "package warden.authz\nimport rego.v1\n\ndefault decision := {\"allow\": true, \"reason\": \"ok\"}\n\ndecision := {\"allow\": false, \"reason\": \"finance_hidden\"} if startswith(input.request.resource_uri, \"file:///finance/\")\n";

fn filter() -> PolicyFilter {
    super::embedded_tests::filter_of(REGO)
}

fn judge(bytes: &str, asked: &str, target: Option<&str>) -> Decision {
    let Ok(Parsed::Single(env)) = parse(bytes.as_bytes(), ParseLimits::default()) else {
        panic!("parse {bytes}")
    };
    let p = Principal::anonymous();
    let msg = Message::from_server(&env, bytes.as_bytes(), Some(asked), target);
    filter().on_response(&msg, &Exchange::new(&p, "s"), &mut Notes::default())
}

fn hidden(d: &Decision) -> bool {
    matches!(d, Decision::Reject(denial) if denial.reason == "resource_hidden")
}

#[test]
fn a_hidden_resource_never_rides_in_another_ones_reply() {
    let shared = Some("file:///shared/index");
    for (bytes, asked, target) in [
        // A read of a visible resource answering with a hidden one's data.
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":"file:///shared/index","text":"a"},{"uri":"file:///finance/payroll.csv","text":"x"}]}}"#,
            "resources/read",
            shared,
        ),
        // An embedded resource in a call's content.
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"resource","resource":{"uri":"file:///finance/payroll.csv","text":"x"}}]}}"#,
            "tools/call",
            None,
        ),
        // The member written with an escape.
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"resource","resource":{"\u0075ri":"file:///finance/payroll.csv","text":"x"}}]}}"#,
            "tools/call",
            None,
        ),
        // In a prompt's messages.
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"messages":[{"role":"user","content":{"type":"resource","resource":{"uri":"file:///finance/a","text":"x"}}}]}}"#,
            "prompts/get",
            None,
        ),
        // A member a case-folding client (Go, .NET) reads as `uri`.
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"messages":[{"role":"user","content":{"type":"resource","resource":{"URI":"file:///finance/payroll.csv","text":"x"}}}]}}"#,
            "prompts/get",
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"messages":[{"role":"user","content":{"type":"resource","resource":{"urı":"file:///finance/payroll.csv","text":"x"}}}]}}"#,
            "prompts/get",
            None,
        ),
        // A link tells the hidden resource exists.
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"resource_link","uri":"file:///finance/payroll.csv","name":"payroll"}]}}"#,
            "tools/call",
            None,
        ),
        // Spelled so the policy's prefix does not see it.
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":"file:///%66inance/payroll.csv","text":"x"}]}}"#,
            "resources/read",
            shared,
        ),
    ] {
        assert!(hidden(&judge(bytes, asked, target)), "{asked}: {bytes}");
    }
    // What the principal may read passes.
    for (bytes, asked, target) in [
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":"file:///shared/index","text":"a"},{"uri":"file:///shared/b","text":"b"}]}}"#,
            "resources/read",
            shared,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"see file:///finance/ for more"}]}}"#,
            "tools/call",
            None,
        ),
        // A tool's own data naming URLs is no resource.
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":{"results":[{"uri":"file:///finance/x"}]}}}"#,
            "tools/call",
            None,
        ),
    ] {
        assert!(!hidden(&judge(bytes, asked, target)), "{asked}: {bytes}");
    }
}

/// A server's sampling request embedding a hidden resource never reaches
/// the client; a list reply's resources are filtered, not refused whole.
#[test]
fn requests_embedding_a_hidden_resource_are_refused_and_lists_filtered() {
    let req = r#"{"jsonrpc":"2.0","id":9,"method":"sampling/createMessage","params":{"messages":[{"role":"user","content":{"type":"resource","resource":{"uri":"file:///finance/payroll.csv","text":"x"}}}],"maxTokens":5}}"#;
    let Ok(Parsed::Single(env)) = parse(req.as_bytes(), ParseLimits::default()) else {
        panic!("parse")
    };
    let p = Principal::anonymous();
    let msg = Message::from_server(&env, req.as_bytes(), None, None);
    let d = filter().on_response(&msg, &Exchange::new(&p, "s"), &mut Notes::default());
    assert!(hidden(&d), "{d:?}");
    let list = r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"file:///shared/a","name":"a"},{"uri":"file:///finance/b","name":"b"}]}}"#;
    match judge(list, "resources/list", None) {
        Decision::Mutated(out) => {
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.contains("shared/a") && !text.contains("finance"),
                "{text}"
            );
        }
        d => panic!("not filtered: {d:?}"),
    }
}

/// An error's `data` and a server's notifications are read for the
/// resources they carry or link, as a result is: a server cannot hand a
/// hidden resource over (or tell it exists) by failing, or by logging it.
#[test]
fn errors_and_notifications_carry_no_hidden_resource() {
    let from_server = |bytes: &str, asked: Option<&str>| {
        let Ok(Parsed::Single(env)) = parse(bytes.as_bytes(), ParseLimits::default()) else {
            panic!("parse {bytes}")
        };
        let p = Principal::anonymous();
        let msg = Message::from_server(&env, bytes.as_bytes(), asked, None);
        filter().on_response(&msg, &Exchange::new(&p, "s"), &mut Notes::default())
    };
    for (bytes, asked) in [
        (
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"failed","data":{"contents":[{"uri":"file:///finance/payroll.csv","text":"x"}]}}}"#,
            Some("tools/call"),
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"failed","data":[{"type":"resource_link","uri":"file:///finance/payroll.csv","name":"p"}]}}"#,
            Some("tools/call"),
        ),
        // A read's failure that is no not-found keeps its data: read too.
        (
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"failed","data":{"resource":{"URI":"file:///finance/payroll.csv","text":"x"}}}}"#,
            Some("resources/read"),
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"failed","data":{"resource":{"\u0075ri":"file:///finance/payroll.csv","text":"x"}}}}"#,
            Some("prompts/get"),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":{"type":"resource","resource":{"uri":"file:///finance/payroll.csv","text":"x"}}}}"#,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":{"type":"resource_link","uri":"file:///finance/payroll.csv","name":"p"}}}"#,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1,"_meta":{"contents":[{"uri":"file:///finance/payroll.csv","text":"x"}]}}}"#,
            None,
        ),
    ] {
        assert!(hidden(&from_server(bytes, asked)), "{bytes}");
    }
    for (bytes, asked) in [
        (
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"failed","data":{"contents":[{"uri":"file:///shared/a","text":"x"}]}}}"#,
            Some("tools/call"),
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"no such file file:///finance/x"}}"#,
            Some("tools/call"),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":{"type":"resource_link","uri":"file:///shared/a","name":"a"}}}"#,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1,"message":"reading file:///finance/x"}}"#,
            None,
        ),
    ] {
        assert!(!hidden(&from_server(bytes, asked)), "{bytes}");
    }
}
