//! A hostile server puts server→client requests everywhere a client may
//! read one: each meets the decision the same request gets on a stream,
//! and what cannot be read is refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::*;
use crate::engines::identity::Principal;
use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};

/// Sampling is denied (as the example bundle denies it); every other
/// request is allowed.
const REGO: &str = "package warden.authz\n\ndefault decision := {\"allow\": true, \"reason\": \"ok\"}\n\ndecision := {\"allow\": false, \"reason\": \"no_sampling\"} if input.request.method == \"sampling/createMessage\"\n";

fn filter() -> PolicyFilter {
    filter_of(REGO)
}

/// A policy filter over one module, `authz.rego`, deciding
/// `data.warden.authz.decision`, with an empty catalog.
pub(super) fn filter_of(rego: &str) -> PolicyFilter {
    let modules = BTreeMap::from([("authz.rego".to_owned(), rego.to_owned())]);
    let engine = PolicyEngine::compile(
        &modules,
        &serde_json::json!({}),
        "data.warden.authz.decision",
        "UTC",
        1000,
    )
    .expect("rego");
    PolicyFilter::new(Arc::new(engine), HashMap::new(), DenialStyle::Error)
}

/// The filter's verdict on the server's `bytes` (parsed as `shape`)
/// answering a request of `asked`; `None` when the parser refuses it
/// (it never reaches a filter).
fn judge(f: &PolicyFilter, shape: &str, bytes: &str, asked: Option<&str>) -> Option<Decision> {
    let Ok(Parsed::Single(env)) = parse(shape.as_bytes(), ParseLimits::default()) else {
        return None;
    };
    let p = Principal::anonymous();
    let msg = Message::from_server(&env, bytes.as_bytes(), asked, None);
    Some(f.on_response(&msg, &Exchange::new(&p, "s"), &mut Notes::default()))
}

fn refused(d: &Decision) -> bool {
    matches!(d, Decision::Reject(_))
}

/// Where a request sits in a server's message, `@R@` standing for the
/// request; the method the message answers.
const SHAPES: &[(&str, &str)] = &[
    // A multi-round-trip InputRequiredResult.
    (
        r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{"k":@R@}}}"#,
        "tools/call",
    ),
    // A task waiting for input: the tasks extension's tasks/get reply.
    (
        r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","taskId":"t","status":"input_required","inputRequests":{"k":@R@}}}"#,
        "tasks/get",
    ),
    // The task nested (2025-11-25's handle shape).
    (
        r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t","status":"input_required","inputRequests":{"k":@R@}}}}"#,
        "tasks/get",
    ),
    (
        r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t","status":"input_required","inputRequests":{"k":@R@}}}}"#,
        "tasks/result",
    ),
    // A listed task, not the first.
    (
        r#"{"jsonrpc":"2.0","id":1,"result":{"tasks":[{"taskId":"u","status":"working"},{"taskId":"t","status":"input_required","inputRequests":{"k":@R@}}]}}"#,
        "tasks/list",
    ),
    // Status notifications, both revisions'.
    (
        r#"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"t","status":"input_required","inputRequests":{"k":@R@}}}"#,
        "",
    ),
    (
        r#"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"t","status":"input_required","inputRequests":{"k":@R@}}}"#,
        "",
    ),
    // Any other notification.
    (
        r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":{"inputRequests":{"k":@R@}}}}"#,
        "",
    ),
    // Deep in a tool's structured content.
    (
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":{"a":[[{"b":{"inputRequests":{"k":@R@}}}]]}}}"#,
        "tools/call",
    ),
    // In an error's data.
    (
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"m","data":{"x":[{"inputRequests":{"k":@R@}}]}}}"#,
        "tools/call",
    ),
    (
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32002,"message":"m","data":{"inputRequests":{"k":@R@}}}}"#,
        "resources/read",
    ),
    // In a server→client request's params.
    (
        r#"{"jsonrpc":"2.0","id":"s1","method":"roots/list","params":{"_meta":{"inputRequests":{"k":@R@}}}}"#,
        "",
    ),
    // Inside another (allowed) embedded request's params.
    (
        r#"{"jsonrpc":"2.0","id":1,"result":{"taskId":"t","status":"input_required","inputRequests":{"a":{"method":"roots/list","params":{"inputRequests":{"k":@R@}}}}}}"#,
        "tasks/get",
    ),
    // In a list result (judged before it is filtered).
    (
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"inputRequests":{"k":@R@}}}"#,
        "tools/list",
    ),
    // A reply whose request the gateway does not know.
    (
        r#"{"jsonrpc":"2.0","id":1,"result":{"taskId":"t","inputRequests":{"k":@R@}}}"#,
        "?",
    ),
];

/// A request spelled so a client reads it; the method as sent on a stream.
fn requests() -> [(&'static str, &'static str); 4] {
    [
        (
            "sampling/createMessage",
            r#"{"method":"sampling/createMessage","params":{"messages":[],"maxTokens":5}}"#,
        ),
        (
            "elicitation/create",
            r#"{"method":"elicitation/create","params":{"message":"m","requestedSchema":{"type":"object","properties":{}}}}"#,
        ),
        ("roots/list", r#"{"method":"roots/list"}"#),
        ("ping", r#"{"method":"ping","params":{}}"#),
    ]
}

/// The decision on a request sent on a stream (the reference).
fn on_a_stream(f: &PolicyFilter, method: &str) -> bool {
    let raw = format!(r#"{{"jsonrpc":"2.0","id":"s","method":"{method}","params":{{}}}}"#);
    refused(&judge(f, &raw, &raw, None).expect("parse"))
}

#[test]
fn an_embedded_request_gets_the_decision_it_gets_on_a_stream() {
    let f = filter();
    assert!(on_a_stream(&f, "sampling/createMessage"));
    assert!(!on_a_stream(&f, "elicitation/create"));
    for (method, request) in requests() {
        let direct = on_a_stream(&f, method);
        for (shape, asked) in SHAPES {
            let raw = shape.replace("@R@", request);
            let asked = (!asked.is_empty() && *asked != "?").then_some(*asked);
            let d = judge(&f, &raw, &raw, asked).unwrap_or_else(|| panic!("parse {raw}"));
            assert_eq!(refused(&d), direct, "{method} in {raw}: {d:?}");
            if let Decision::Reject(d) = d {
                assert_eq!(d.error.code, codes::DENIED, "{raw}");
                assert_eq!(d.reason, "no_sampling");
                let data = d.error.data.expect("data");
                assert_eq!(data["inputRequest"], method, "{raw}");
            }
        }
    }
}

/// One denied request among allowed ones refuses the message, wherever
/// it sits and however many allowed ones come first.
#[test]
fn one_denied_request_among_many_refuses_the_message() {
    let f = filter();
    let allowed = r#"{"method":"elicitation/create","params":{"message":"m"}}"#;
    let denied = r#"{"method":"sampling/createMessage","params":{"messages":[],"maxTokens":5}}"#;
    let raw = format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"tasks":[{{"taskId":"a","inputRequests":{{"a1":{allowed},"a2":{allowed}}}}},{{"taskId":"b","inputRequests":{{"b1":{allowed}}}}},{{"taskId":"c","x":{{"y":[{{"inputRequests":{{"c1":{allowed},"c2":{denied}}}}}]}}}}]}}}}"#
    );
    assert!(refused(
        &judge(&f, &raw, &raw, Some("tasks/list")).expect("parse")
    ));
    let raw = raw.replace("sampling/createMessage", "roots/list");
    assert_eq!(
        judge(&f, &raw, &raw, Some("tasks/list")).expect("parse"),
        Decision::Pass
    );
}

/// Every spelling a client reads as `inputRequests`, escaped or raw (in
/// another case, with a character a decoder drops or folds): where MCP's
/// structure is read, refused by the parser or judged as the word is; in
/// a tool's payload or error data (where no client reads requests),
/// judged too, but for a raw spelling with a capital other than the
/// word's, which is payload there (the gate looks for the word as it is
/// and in lower case only: `protocol::embedded::named_in`).
#[test]
fn every_spelling_of_input_requests_is_judged() {
    let f = filter();
    let denied = r#"{"method":"sampling/createMessage","params":{}}"#;
    let payload = [
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":{"@N@":{"k":@R@}}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"m","data":{"@N@":{"k":@R@}}}}"#,
    ];
    let shapes = [
        r#"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"t","status":"input_required","@N@":{"k":@R@}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"t","status":"input_required","@N@":{"k":@R@}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"taskId":"t","status":"input_required","@N@":{"k":@R@}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","@N@":{"k":@R@}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t","@N@":{"k":@R@}}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tasks":[{"taskId":"t","@N@":{"k":@R@}}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"taskId":"t","inputRequests":{"a":{"method":"roots/list","params":{"@N@":{"k":@R@}}}}}}"#,
    ];
    let mut judged = 0;
    for name in [
        // Escaped.
        r"input\u0052equests",
        r"\u0069nputRequests",
        r"\u0049nputRequests",
        r"INPUT\u0052EQUESTS",
        r"inputReque\u017fts",
        r"input\u200bRequests",
        r"inputrequests\u0000",
        // Raw.
        "InputRequests",
        "INPUTREQUESTS",
        "inputrequests",
        "iNpUtReQuEsTs",
        "inputRequeſts",
        "inputrequeſts",
        "input\u{200b}Requests",
        "inputrequests\u{200b}",
        "input\u{7f}requests",
    ] {
        // Raw printable ASCII with a capital the word has not.
        let capital = !name.contains('\\')
            && name.bytes().all(|b| (0x20..0x7f).contains(&b))
            && name != "inputRequests"
            && name.bytes().any(|b| b.is_ascii_uppercase());
        for (shape, structure) in shapes
            .iter()
            .map(|s| (s, true))
            .chain(payload.iter().map(|s| (s, false)))
        {
            let raw = shape.replace("@N@", name).replace("@R@", denied);
            // What the parser refuses reaches no filter.
            let Some(d) = judge(&f, &raw, &raw, Some("tasks/get")) else {
                assert!(structure, "the parser refused payload: {raw}");
                continue;
            };
            if structure || !capital {
                assert!(refused(&d), "{raw}: {d:?}");
                judged += 1;
            }
        }
    }
    assert!(judged > 20, "{judged}");
}

/// A request the gateway cannot read refuses its message, wherever it
/// sits: a map that is no object, a method a client reads as another,
/// params that are no object, no method at all.
#[test]
fn an_unreadable_embedded_request_refuses_its_message() {
    let f = filter();
    for bad in [
        r#"[{"method":"roots/list"}]"#,
        r#""roots/list""#,
        "null",
        r#"{"k":{"method":"Sampling/CreateMessage","params":{}}}"#,
        r#"{"k":{"method":"sampling/createMessage\u0000","params":{}}}"#,
        r#"{"k":{"method":"roots/list","params":["x"]}}"#,
        r#"{"k":{"params":{}}}"#,
        r#"{"k":"roots/list"}"#,
    ] {
        for (shape, asked) in SHAPES {
            let raw = shape.replace(r#"{"k":@R@}"#, bad);
            let asked = (!asked.is_empty() && *asked != "?").then_some(*asked);
            if let Some(d) = judge(&f, &raw, &raw, asked) {
                assert!(
                    matches!(&d, Decision::Reject(d) if d.reason == "input_request_unreadable"),
                    "{raw}: {d:?}"
                );
            }
        }
    }
    // A message naming `inputRequests` that cannot be read at all.
    let shape = r#"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"t"}}"#;
    let bytes = r#"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"inputRequests":"#;
    assert!(refused(&judge(&f, shape, bytes, None).expect("parse")));
}

/// What carries no request passes, and a message that cannot name
/// `inputRequests` is not even read for them (the common reply stays as
/// cheap as it was: the bytes here are no JSON, and are never parsed).
#[test]
fn messages_without_requests_pass_unread() {
    let f = filter();
    for (shape, asked) in [
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}"#,
            Some("tools/call"),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"t","status":"working"}}"#,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"m"}}"#,
            Some("tools/call"),
        ),
    ] {
        let not_json = &shape[..shape.len() - 2];
        assert_eq!(
            judge(&f, shape, not_json, asked).expect("parse"),
            Decision::Pass,
            "{shape}"
        );
        assert_eq!(
            judge(&f, shape, shape, asked).expect("parse"),
            Decision::Pass
        );
    }
    // Text that merely names the word is read, and passes.
    let raw =
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"inputRequests"}]}}"#;
    assert_eq!(
        judge(&f, raw, raw, Some("tools/call")).expect("parse"),
        Decision::Pass
    );
}

/// A resource read for one principal is never marked for a shared cache.
#[test]
fn a_resource_read_is_cached_privately() {
    let f = filter();
    let bytes = r#"{"jsonrpc":"2.0","id":5,"result":{"contents":[{"uri":"file:///finance/payroll.csv","text":"x"}],"ttlMs":86400000,"cacheScope":"public"}}"#;
    match judge(&f, bytes, bytes, Some("resources/read")).expect("parsed") {
        Decision::Mutated(out) => {
            let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
            assert_eq!(v["result"]["cacheScope"], "private", "{v}");
        }
        d => panic!("not rewritten: {d:?}"),
    }
}
