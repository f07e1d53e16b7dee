//! Task ids where a server or client puts them beyond the usual places:
//! related-task metadata at any depth, handles that are no string, a task
//! request's reply in the handle shape.

use super::*;

/// What the client (or the server) gets of a decision on `raw`.
fn delivered(d: &Decision, raw: &str) -> String {
    match d {
        Decision::Pass => raw.to_owned(),
        Decision::Mutated(b) => String::from_utf8_lossy(b).into_owned(),
        Decision::Reject(_) => String::new(),
    }
}

/// Related-task metadata is the protocol's wherever a server puts it: a
/// content block's `_meta`, a listed task's, structured content, a
/// sampling request's message, a notification's data. Another
/// principal's id is removed there as in the result's own `_meta`; this
/// caller's is sealed.
#[test]
fn related_task_ids_below_the_results_meta_are_sealed_or_removed() {
    let x = Fixture::new();
    x.create(&x.alice, "T-a");
    x.create(&x.bob, "T-b");
    let rel =
        |id: &str| format!(r#"{{"io.modelcontextprotocol/related-task":{{"taskId":"{id}"}}}}"#);
    let cases = [
        (
            r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"x","_meta":@M@}]}}"#,
            "tools/call",
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"result":{"content":[],"structuredContent":{"deep":[{"_meta":@M@}]}}}"#,
            "tools/call",
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"resource","resource":{"uri":"x:/a","text":"t","_meta":@M@}}]}}"#,
            "tasks/result",
        ),
        (
            r#"{"jsonrpc":"2.0","id":"s","method":"sampling/createMessage","params":{"messages":[{"role":"user","content":{"type":"text","text":"x","_meta":@M@}}],"maxTokens":1}}"#,
            "",
        ),
        (
            r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":{"_meta":@M@}}}"#,
            "",
        ),
    ];
    for (shape, method) in cases {
        let raw = shape.replace("@M@", &rel("T-b"));
        let d = x.reply(&x.alice, &raw, &raw, method, None);
        let out = delivered(&d, &raw);
        assert!(!out.contains("T-b"), "bob's raw id reached alice: {out}");
        let raw = shape.replace("@M@", &rel("T-a"));
        let v = rewritten(&x.reply(&x.alice, &raw, &raw, method, None));
        let text = v.to_string();
        assert!(!text.contains("\"T-a\""), "alice's raw id: {text}");
        assert!(
            text.contains("wt1."),
            "alice's own entry was not kept sealed: {text}"
        );
    }
    // A listed task of alice's carrying bob's id in its own metadata.
    let raw = format!(
        r#"{{"jsonrpc":"2.0","id":5,"result":{{"tasks":[{{"taskId":"T-a","status":"working","_meta":{}}}]}}}}"#,
        rel("T-b")
    );
    let v = rewritten(&x.reply(&x.alice, &raw, &raw, "tasks/list", None));
    assert!(!v.to_string().contains("T-b"), "{v}");
    assert_eq!(
        v["result"]["tasks"].as_array().map(Vec::len),
        Some(1),
        "{v}"
    );
}

/// The other way: a client's related-task metadata below its message's
/// own `_meta` (a sampling answer's content block, a call's arguments)
/// reaches the server only as this caller's opened id.
#[test]
fn a_clients_related_task_ids_at_any_depth_are_opened_or_refused() {
    let x = Fixture::new();
    let mine = x.token(&x.alice, "T-a", "jira");
    let bobs = x.token(&x.bob, "T-b", "jira");
    let rel =
        |id: &str| format!(r#"{{"io.modelcontextprotocol/related-task":{{"taskId":"{id}"}}}}"#);
    let call = |id: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{"q":{{"_meta":{}}}}}}}}}"#,
            rel(id)
        )
    };
    for id in ["T-b", bobs.as_str()] {
        assert!(
            refused_as_unknown(&x.client_sends(&x.alice, &call(id))),
            "{id}"
        );
    }
    let v = rewritten(&x.client_sends(&x.alice, &call(&mine)));
    assert_eq!(
        v["params"]["arguments"]["q"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        "T-a"
    );
    let answer = |id: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":"s1","result":{{"role":"assistant","model":"m","content":{{"type":"text","text":"x","_meta":{}}}}}}}"#,
            rel(id)
        )
    };
    for id in ["T-b", bobs.as_str()] {
        let raw = answer(id);
        let out = delivered(&x.client_sends(&x.alice, &raw), &raw);
        assert!(!out.contains(id), "{out}");
    }
    let v = rewritten(&x.client_sends(&x.alice, &answer(&mine)));
    assert_eq!(
        v["result"]["content"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        "T-a"
    );
}

/// A task handle that is no string (a number, an object or list holding
/// another's id) cannot be sealed, and a lenient client reads it all the
/// same: the reply is refused, never passed with the server's value.
#[test]
fn a_task_handle_that_is_no_string_is_refused() {
    let x = Fixture::new();
    x.create(&x.bob, "T-b");
    let ex = Exchange::new(&x.alice, "jira");
    let link = x.sealer.link("T-a", &holder(&ex), "jira");
    for (raw, method) in [
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":42,"status":"working"}}}"#,
            "tools/call",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":{"id":"T-b"},"status":"working"}}"#,
            "tools/call",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"task":"T-b"}}"#,
            "tools/call",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"task":["T-b"]}}"#,
            "tools/call",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"taskId":["T-b"],"status":"working"}}"#,
            "tasks/get",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"taskId":7,"status":"working"}}"#,
            "tasks/cancel",
        ),
    ] {
        let d = x.reply(&x.alice, raw, raw, method, Some(&link));
        assert!(
            matches!(&d, Decision::Reject(r) if r.reason == "task_id_unreadable"),
            "{raw}: {d:?}"
        );
    }
}

/// A task request's reply in the 2025-11-25 handle shape (`task.taskId`)
/// names a task as its `taskId` does: another principal's is refused,
/// the asked one is sealed.
#[test]
fn a_task_requests_reply_in_the_handle_shape_is_sealed_or_refused() {
    let x = Fixture::new();
    x.create(&x.bob, "T-b");
    let ex = Exchange::new(&x.alice, "jira");
    let link = x.sealer.link("T-a", &holder(&ex), "jira");
    let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"T-b","status":"working"}}}"#;
    let d = x.reply(&x.alice, raw, raw, "tasks/get", Some(&link));
    assert!(
        matches!(&d, Decision::Reject(r) if r.reason == "task_not_owned"),
        "{d:?}"
    );
    let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"T-a","status":"working"}}}"#;
    let v = rewritten(&x.reply(&x.alice, raw, raw, "tasks/get", Some(&link)));
    let t = v["result"]["task"]["taskId"].as_str().expect("sealed");
    assert!(x.opens_to(&x.alice, t, "T-a"), "{v}");
}

/// Unauthenticated clients without a session (a 2026-07-28 stateless
/// client, say) are one principal: a task one of them created is neither
/// listed to another client nor opened by one, on any address but its
/// own; the client that created it keeps it.
#[test]
fn anonymous_clients_without_a_session_do_not_share_tasks() {
    let x = Fixture::new();
    let anon = Principal::anonymous();
    let from = |ip: &str| Exchange {
        source_ip: Some(ip.parse().expect("ip")),
        ..Exchange::new(&anon, "jira")
    };
    let (a, b) = (from("10.0.0.1"), from("10.0.0.2"));
    let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"T-1","status":"working"}}}"#;
    let env = crate::protocol::jsonrpc::single(raw);
    let msg = Message::from_server(&env, raw.as_bytes(), Some("tools/call"), Some("t"));
    let v = rewritten(&x.f.on_response(&msg, &a, &mut Notes::default()));
    let token = v["result"]["task"]["taskId"]
        .as_str()
        .expect("sealed")
        .to_owned();
    // Listed to its creator only.
    let list =
        r#"{"jsonrpc":"2.0","id":5,"result":{"tasks":[{"taskId":"T-1","status":"working"}]}}"#;
    let env = crate::protocol::jsonrpc::single(list);
    let msg = Message::from_server(&env, list.as_bytes(), Some("tasks/list"), None);
    let listed = |ex: &Exchange<'_>| {
        rewritten(&x.f.on_response(&msg, ex, &mut Notes::default()))["result"]["tasks"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(listed(&a), 1);
    assert_eq!(listed(&b), 0, "another client was listed the task");
    // Opened by its creator only.
    let get = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{{"taskId":"{token}"}}}}"#
    );
    let env = crate::protocol::jsonrpc::single(&get);
    let msg = Message::new(&env, get.as_bytes());
    assert!(matches!(
        x.f.on_request(&msg, &a, &mut Notes::default()),
        Decision::Mutated(_)
    ));
    let d = x.f.on_request(&msg, &b, &mut Notes::default());
    assert!(
        refused_as_unknown(&d),
        "another client opened the task: {d:?}"
    );
}

/// A task handed out as new leaves a claim for the fleet's store: one task
/// digest whoever holds it, one holder digest per holder, neither naming
/// the server's id nor the principal.
#[test]
fn a_new_task_leaves_its_claim() {
    let x = Fixture::new();
    let claim = |p: &Principal| {
        let raw =
            r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"T-9","status":"working"}}}"#;
        let env = crate::protocol::jsonrpc::single(raw);
        let msg = Message::from_server(&env, raw.as_bytes(), Some("tools/call"), Some("t"));
        let mut notes = Notes::default();
        // A fresh replica each time: its own memory knows no holder.
        let f = TaskFilter::new(x.sealer.clone(), Arc::new(TaskOwners::new(10)));
        let d = f.on_response(&msg, &Exchange::new(p, "jira"), &mut notes);
        assert!(matches!(d, Decision::Mutated(_)), "{d:?}");
        assert_eq!(notes.task_claims.len(), 1);
        notes.task_claims.remove(0)
    };
    let (a, b) = (claim(&x.alice), claim(&x.bob));
    assert_eq!(a.task, b.task);
    assert_ne!(a.holder, b.holder);
    assert_eq!(a, claim(&x.alice));
    for c in [&a, &b] {
        assert!(!c.task.contains("T-9") && !c.holder.contains("alice"));
    }
}
