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

fn judged(bytes: &str, asked: Option<&str>) -> Decision {
    let Ok(Parsed::Single(env)) = parse(bytes.as_bytes(), ParseLimits::default()) else {
        panic!("parse {bytes}")
    };
    let p = Principal::anonymous();
    let msg = Message::from_server(&env, bytes.as_bytes(), asked, None);
    filter().on_response(&msg, &Exchange::new(&p, "s"), &mut Notes::default())
}

/// Whatever the message is, the resources it carries are read: a list
/// reply (beside its items, in an item's `_meta`), an `input_required`
/// result's embedded request, an update notification's `_meta`.
#[test]
fn every_kind_of_message_is_read_for_the_resources_it_carries() {
    for (bytes, asked) in [
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"file:///shared/a","name":"a","_meta":{"x":{"type":"resource","resource":{"uri":"file:///finance/b","text":"x"}}}}]}}"#,
            Some("resources/list"),
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"contents":[{"uri":"file:///finance/b","text":"x"}]}}"#,
            Some("tools/list"),
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{"r1":{"method":"sampling/createMessage","params":{"messages":[{"role":"user","content":{"type":"resource","resource":{"uri":"file:///finance/b","text":"x"}}}],"maxTokens":9}}}}}"#,
            Some("tools/call"),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///shared/a","_meta":{"p":{"type":"resource","resource":{"uri":"file:///finance/b","text":"x"}}}}}"#,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"completion":{"values":[]},"_meta":{"x":{"type":"resource_link","uri":"file:///finance/b","name":"b"}}}}"#,
            Some("completion/complete"),
        ),
    ] {
        assert!(hidden(&judged(bytes, asked)), "{bytes}");
    }
    // An update of a visible resource with nothing else passes.
    let d = judged(
        r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///shared/a"}}"#,
        None,
    );
    assert!(matches!(d, Decision::Pass), "{d:?}");
}

/// The policy filter's judgment of `bytes`, a server's reply to the
/// completion the ledger kept as `completing`.
fn completed(bytes: &str, completing: &str) -> Decision {
    let Ok(Parsed::Single(env)) = parse(bytes.as_bytes(), ParseLimits::default()) else {
        panic!("parse {bytes}")
    };
    let p = Principal::anonymous();
    let mut msg = Message::from_server(&env, bytes.as_bytes(), Some("completion/complete"), None);
    msg.request_completion = Some(completing);
    filter().on_response(&msg, &Exchange::new(&p, "s"), &mut Notes::default())
}

fn request(bytes: &str) -> (Decision, Notes) {
    let Ok(Parsed::Single(env)) = parse(bytes.as_bytes(), ParseLimits::default()) else {
        panic!("parse {bytes}")
    };
    let p = Principal::anonymous();
    let msg = Message::new(&env, bytes.as_bytes());
    let mut notes = Notes::default();
    let d = filter().on_request(&msg, &Exchange::new(&p, "s"), &mut notes);
    (d, notes)
}

/// A completion's reference is read as every peer reads it: a `type`
/// a folding server reads, none at all, or both kinds' members, is no
/// way around the judgment of the resource.
#[test]
fn a_completion_reference_is_read_as_every_peer_reads_it() {
    let refused = |r: &str| {
        let bytes = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{{"ref":{r},"argument":{{"name":"x","value":""}}}}}}"#
        );
        // Refused by the parser (a member name a folding peer reads as a
        // protocol member) or by the policy filter.
        let Ok(Parsed::Single(_)) = parse(bytes.as_bytes(), ParseLimits::default()) else {
            return true;
        };
        matches!(request(&bytes).0, Decision::Reject(_))
    };
    for r in [
        r#"{"Type":"ref/resource","uri":"file:///finance/{x}"}"#,
        r#"{"type":"ref/resource","URI":"file:///finance/{x}"}"#,
        r#"{"uri":"file:///finance/{x}"}"#,
        r#"{"type":"REF/RESOURCE","uri":"file:///shared/{x}"}"#,
        r#"{"type":"ref/prompt","name":"p","uri":"file:///finance/{x}"}"#,
        r#"{"type":"ref/resource","uri":7}"#,
        r#""file:///shared/{x}""#,
    ] {
        assert!(refused(r), "{r}");
    }
    assert!(!refused(
        r#"{"type":"ref/resource","uri":"file:///shared/{x}"}"#
    ));
    assert!(!refused(r#"{"type":"ref/prompt","name":"p"}"#));
}

/// The values a completion offers for a resource template are judged as
/// the URIs they make of it: one naming a hidden resource is taken out
/// (and the total with it), as a list's hidden item is.
#[test]
fn completion_values_naming_a_hidden_resource_are_taken_out() {
    let ask = r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///{dir}/{+path}"},"argument":{"name":"path","value":"p"},"context":{"arguments":{"dir":"finance"}}}}"#;
    let (d, notes) = request(ask);
    assert!(matches!(d, Decision::Pass), "{d:?}");
    let completing = notes.completing.expect("noted");
    assert_eq!(
        crate::chain::notes::Completing::from_text(&completing).map(|c| c.argument),
        Some("path".to_owned())
    );
    let reply = |values: &str| {
        let bytes = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"completion":{{"values":{values},"total":2,"hasMore":false}}}}}}"#
        );
        completed(&bytes, &completing)
    };
    // `dir` is `finance` in the context: every value names a hidden file.
    match reply(r#"["payroll.csv","q3/summary"]"#) {
        Decision::Mutated(out) => {
            let v: Json = serde_json::from_slice(&out).expect("json");
            assert_eq!(v["result"]["completion"]["values"], serde_json::json!([]));
            assert_eq!(v["result"]["completion"]["total"], 0, "{v}");
        }
        d => panic!("not filtered: {d:?}"),
    }
    // Values that are no strings, or more than MCP allows, are refused.
    assert!(matches!(reply(r#"[1]"#), Decision::Reject(_)));
    let many: Vec<String> = (0..101).map(|i| format!("\"v{i}\"")).collect();
    assert!(matches!(
        reply(&format!("[{}]", many.join(","))),
        Decision::Reject(_)
    ));
    // With another directory, only what reaches into finance goes.
    let ask = r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///{+path}"},"argument":{"name":"path","value":""}}}"#;
    let completing = request(ask).1.completing.expect("noted");
    let bytes = r#"{"jsonrpc":"2.0","id":1,"result":{"completion":{"values":["shared/a","finance/payroll.csv","shared/../finance/x"]}}}"#;
    match completed(bytes, &completing) {
        Decision::Mutated(out) => {
            let v: Json = serde_json::from_slice(&out).expect("json");
            assert_eq!(
                v["result"]["completion"]["values"],
                serde_json::json!(["shared/a"])
            );
            assert_eq!(v["result"]["completion"]["total"], 1, "{v}");
        }
        d => panic!("not filtered: {d:?}"),
    }
    // Nothing hidden: the reply still takes the one form (its `total` the
    // values sent), so no difference tells that something matched.
    let judge_values = |template: &str, argument: &str, context: &str, values: &str| {
        let ask = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{{"ref":{{"type":"ref/resource","uri":"{template}"}},"argument":{{"name":"{argument}","value":""}},"context":{{"arguments":{context}}}}}}}"#
        );
        let (d, notes) = request(&ask);
        if let Decision::Reject(r) = d {
            return Err(r.reason);
        }
        let completing = notes.completing.expect("noted");
        let bytes = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"completion":{{"values":{values},"total":250,"hasMore":true}}}}}}"#
        );
        match completed(&bytes, &completing) {
            Decision::Mutated(out) => {
                let v: Json = serde_json::from_slice(&out).expect("json");
                Ok(v["result"]["completion"].clone())
            }
            d => panic!("not rewritten: {d:?}"),
        }
    };
    assert_eq!(
        judge_values("file:///shared/{x}", "x", "{}", r#"["a","b"]"#),
        Ok(serde_json::json!({"values":["a","b"],"total":2}))
    );
    // Another variable without a value in the context: the URI the server
    // completed in is unknown, so no value is offered.
    assert_eq!(
        judge_values("file:///{dir}/{x}", "x", "{}", r#"["a"]"#),
        Ok(serde_json::json!({"values":[],"total":0}))
    );
    assert_eq!(
        judge_values(
            "file:///{dir}/{x}",
            "x",
            r#"{"dir":"shared","other":"y"}"#,
            r#"["a"]"#
        ),
        Ok(serde_json::json!({"values":["a"],"total":1}))
    );
    // A prefix modifier: the whole value and its prefix are both judged.
    assert_eq!(
        judge_values(
            "file:///{+x:7}",
            "x",
            "{}",
            r#"["finance/payroll","shared/a"]"#
        ),
        Ok(serde_json::json!({"values":["shared/a"],"total":1}))
    );
    // An argument that is none of the template's variables is refused.
    assert_eq!(
        judge_values("file:///shared/{x}", "y", "{}", "[]"),
        Err("params_unreadable".into())
    );
}

/// A list page longer than any server needs is refused, not judged item
/// by item.
#[test]
fn an_oversize_list_page_is_refused() {
    let items: Vec<String> = (0..10_001)
        .map(|i| format!(r#"{{"uri":"file:///shared/{i}","name":"n"}}"#))
        .collect();
    let bytes = format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"resources":[{}]}}}}"#,
        items.join(",")
    );
    let d = judged(&bytes, Some("resources/list"));
    assert!(
        matches!(&d, Decision::Reject(x) if x.reason == "list_too_long"),
        "{d:?}"
    );
}

/// A completion reply to no request this replica knows loses its values;
/// a completion too long to keep for its reply is refused.
#[test]
fn completions_without_their_request_offer_nothing() {
    match judged(
        r#"{"jsonrpc":"2.0","id":1,"result":{"completion":{"values":["a","b"]}}}"#,
        None,
    ) {
        Decision::Mutated(out) => {
            let v: Json = serde_json::from_slice(&out).expect("json");
            assert_eq!(v["result"]["completion"]["values"], serde_json::json!([]));
            assert_eq!(v["result"]["completion"]["total"], 0);
        }
        d => panic!("not emptied: {d:?}"),
    }
    // A prompt's completion passes as it is.
    assert!(matches!(
        judged(
            r#"{"jsonrpc":"2.0","id":1,"result":{"completion":{"values":["a"]}}}"#,
            Some("completion/complete"),
        ),
        Decision::Pass
    ));
    let long = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{{"ref":{{"type":"ref/resource","uri":"file:///shared/{}/{{x}}"}},"argument":{{"name":"x","value":""}}}}}}"#,
        "d".repeat(120)
    );
    assert!(matches!(request(&long).0, Decision::Reject(d) if d.reason == "completion_too_long"));
}

/// A member name a reader that drops control characters reads as `uri`
/// (`"uri\t"`) is read for the resource it names, as `"uri"` is.
#[test]
fn a_name_spelled_with_a_control_escape_is_read() {
    for bytes in [
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x","data":{"contents":[{"uri\t":"file:///finance/b","text":"x"}]}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x","data":{"contents":[{"u\nri":"file:///finance/b","text":"x"}]}}}"#,
    ] {
        assert!(hidden(&judged(bytes, Some("tools/call"))), "{bytes}");
    }
}

/// A multi-line tool result naming a member like `InputRequests` in its
/// own payload passes as before: a newline in a value spells no name.
#[test]
fn a_newline_in_a_value_is_no_name() {
    let d = judged(
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a\nb"}],"structuredContent":{"InputRequests":{"k":1}}}}"#,
        Some("tools/call"),
    );
    assert!(matches!(d, Decision::Pass), "{d:?}");
}

/// A failed completion of a resource template answers as an empty one:
/// the server's error would tell a missing value from a hidden one.
#[test]
fn a_failed_resource_completion_answers_as_an_empty_one() {
    let ask = r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///{dir}/{x}"},"argument":{"name":"x","value":""},"context":{"arguments":{"dir":"finance"}}}}"#;
    let completing = request(ask).1.completing.expect("noted");
    let bytes = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"unknown department finance"}}"#;
    match completed(bytes, &completing) {
        Decision::Mutated(out) => {
            let v: Json = serde_json::from_slice(&out).expect("json");
            assert_eq!(
                v,
                serde_json::json!({"jsonrpc":"2.0","id":1,"result":{"completion":{"values":[],"total":0}}})
            );
        }
        d => panic!("not answered as empty: {d:?}"),
    }
    // A template too long to keep is refused before it is read.
    let long = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{{"ref":{{"type":"ref/resource","uri":"file:///{}"}},"argument":{{"name":"a0","value":""}}}}}}"#,
        (0..2000).map(|i| format!("{{a{i}}}")).collect::<String>()
    );
    assert!(matches!(request(&long).0, Decision::Reject(d) if d.reason == "completion_too_long"));
}
