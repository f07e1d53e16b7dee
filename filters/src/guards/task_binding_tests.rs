use super::*;
use crate::engines::identity::Principal;

fn who(id: &str) -> Principal {
    Principal {
        id: id.into(),
        ..Principal::anonymous()
    }
}

/// At 2026-07-28 `tasks/result` is no method (the extension removed
/// it): -32601, whatever id it names, sealed or not; earlier revisions
/// still open it.
#[test]
fn the_removed_tasks_result_is_no_method_at_2026_07_28() {
    use crate::chain::filter::{Decision, McpFilter, Message, Notes};
    use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};
    let sealer = Arc::new(TaskSealer::new(b"fleet secret"));
    let f = TaskFilter::new(sealer.clone(), Arc::new(TaskOwners::new(100)));
    let alice = who("alice");
    let sealed = sealer
        .seal(
            "task-1",
            &holder(&Exchange::new(&alice, "jira")),
            "jira",
            None,
        )
        .expect("seal");
    for id in [sealed.as_str(), "raw-server-id"] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tasks/result","params":{{"taskId":"{id}"}}}}"#
        );
        let Ok(Parsed::Single(env)) = parse(body.as_bytes(), ParseLimits::default()) else {
            panic!("parse")
        };
        let msg = Message::new(&env, body.as_bytes());
        let modern = Exchange {
            protocol_version: Some("2026-07-28"),
            ..Exchange::new(&alice, "jira")
        };
        assert!(matches!(
            f.on_request(&msg, &modern, &mut Notes::default()),
            Decision::Reject(d) if d.error.code == -32601
        ));
        let older = Exchange {
            protocol_version: Some("2025-11-25"),
            ..Exchange::new(&alice, "jira")
        };
        let d = f.on_request(&msg, &older, &mut Notes::default());
        // Opened and forwarded with the server's id; an unsealed one is unknown.
        assert_eq!(!matches!(d, Decision::Reject(_)), id == sealed, "{id}");
    }
}

/// A server that spells `task` with escapes gets its ids sealed and
/// judged as one that writes it plainly.
#[test]
fn escaped_task_members_are_sealed_and_judged() {
    use crate::chain::filter::{Decision, McpFilter, Message, Notes};
    let sealer = Arc::new(TaskSealer::new(b"fleet secret"));
    let f = TaskFilter::new(sealer, Arc::new(TaskOwners::new(100)));
    let bob = who("bob");
    let ex = Exchange::new(&bob, "jira");
    for raw in [
        r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"T-esc","status":"working","createdAt":"2026-01-01T00:00:00Z"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"T-alice","status":"completed","createdAt":"2026-01-01T00:00:00Z"}}"#,
        // The tasks extension's (2026-07-28) status notification.
        r#"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"T-alice","status":"completed","createdAt":"2026-01-01T00:00:00Z"}}"#,
    ] {
        let env = crate::protocol::jsonrpc::single(raw);
        let msg = Message::from_server(&env, raw.as_bytes(), Some("tools/call"), Some("t"));
        let d = f.on_response(&msg, &ex, &mut Notes::default());
        assert!(!matches!(d, Decision::Pass), "{raw} passed unsealed");
    }
}

/// Every unauthenticated client is the one anonymous principal: its
/// tasks are bound to its session too, so another such client neither
/// opens nor lists them. An authenticated principal's follow it across
/// sessions.
#[test]
fn anonymous_tasks_are_bound_to_their_session() {
    let s = TaskSealer::new(b"fleet secret");
    let anon = Principal::anonymous();
    let at = |p: &Principal, sid: &'static str| -> String {
        let ex = Exchange {
            session_id: Some(sid),
            ..Exchange::new(p, "jira")
        };
        holder(&ex).into_owned()
    };
    let t = s
        .seal("task-1", &at(&anon, "sA"), "jira", None)
        .expect("seal");
    assert!(s.open(&t, &at(&anon, "sA"), "jira").is_some());
    assert_eq!(s.open(&t, &at(&anon, "sB"), "jira"), None);
    let alice = Principal {
        id: "alice".into(),
        auth: crate::engines::identity::AuthMethod::ApiKey,
        ..Principal::anonymous()
    };
    let t = s
        .seal("task-2", &at(&alice, "s1"), "jira", None)
        .expect("seal");
    assert!(s.open(&t, &at(&alice, "s2"), "jira").is_some());
}

#[test]
fn sealed_for_one_principal_and_server() {
    let s = TaskSealer::new(b"fleet secret");
    let t = s
        .seal("task-1", who("alice").owner(), "jira", None)
        .expect("seal");
    assert!(t.starts_with(PREFIX));
    let id = |o: Option<Opened>| o.map(|o| o.task);
    assert_eq!(
        id(s.open(&t, who("alice").owner(), "jira")).as_deref(),
        Some("task-1")
    );
    assert_eq!(s.open(&t, who("bob").owner(), "jira"), None);
    // Spellings merged into one person for rules own no handles.
    for other in ["alic\u{e9}", "\u{ff41}lice", " alice\u{301}"] {
        assert_eq!(s.open(&t, who(other).owner(), "jira"), None, "{other}");
    }
    assert!(s.open(&t, who("ALICE").owner(), "jira").is_some());
    assert_eq!(s.open(&t, who("alice").owner(), "gmail"), None);
    assert_eq!(s.open("task-1", who("alice").owner(), "jira"), None);
    let other = TaskSealer::new(b"another fleet");
    assert_eq!(other.open(&t, who("alice").owner(), "jira"), None);
    assert_eq!(
        s.seal("task-1", who("alice").owner(), "jira", None)
            .as_deref(),
        Some(t.as_str())
    );
    assert_ne!(
        s.seal("task-2", who("alice").owner(), "jira", None)
            .as_deref(),
        Some(t.as_str())
    );
    // Another replica with the same secret opens it.
    let twin = TaskSealer::new(b"fleet secret");
    assert_eq!(
        id(twin.open(&t, who("alice").owner(), "jira")).as_deref(),
        Some("task-1")
    );
    // The creating tool travels sealed; the link names the task, not the token.
    let with_tool = s
        .seal("task-1", who("alice").owner(), "jira", Some("export"))
        .expect("seal");
    let o = s
        .open(&with_tool, who("alice").owner(), "jira")
        .expect("opens");
    assert_eq!(o.tool.as_deref(), Some("export"));
    assert_eq!(
        s.link("task-1", who("alice").owner(), "jira"),
        s.link(&o.task, who("alice").owner(), "jira")
    );
    assert_ne!(
        s.link("task-1", who("alice").owner(), "jira"),
        s.link("task-1", who("bob").owner(), "jira")
    );
}

/// The filter, its sealer, and exchanges with alice and bob on `jira`.
struct Fixture {
    sealer: Arc<TaskSealer>,
    f: TaskFilter,
    alice: Principal,
    bob: Principal,
}

impl Fixture {
    fn new() -> Fixture {
        let sealer = Arc::new(TaskSealer::new(b"fleet secret"));
        let f = TaskFilter::new(sealer.clone(), Arc::new(TaskOwners::new(100)));
        Fixture {
            sealer,
            f,
            alice: who("alice"),
            bob: who("bob"),
        }
    }

    /// `p`'s token for the server's `task` on `server`.
    fn token(&self, p: &Principal, task: &str, server: &str) -> String {
        let ex = Exchange::new(p, server);
        self.sealer
            .seal(task, &holder(&ex), server, None)
            .expect("seal")
    }

    /// The server hands `p` the task `task` (a `tools/call` handle).
    fn create(&self, p: &Principal, task: &str) {
        let raw = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"task":{{"taskId":"{task}","status":"working"}}}}}}"#
        );
        let d = self.reply(p, &raw, &raw, "tools/call", None);
        assert!(matches!(d, Decision::Mutated(_)), "{d:?}");
    }

    /// The filter's verdict on the server's `bytes` (parsed as `shape`, the
    /// same message as the parser reads it) answering `method`.
    fn reply(
        &self,
        p: &Principal,
        shape: &str,
        bytes: &str,
        method: &str,
        task: Option<&str>,
    ) -> Decision {
        let env = crate::protocol::jsonrpc::single(shape);
        let mut msg = Message::from_server(&env, bytes.as_bytes(), Some(method), Some("t"));
        msg.request_task = task;
        self.f
            .on_response(&msg, &Exchange::new(p, "jira"), &mut Notes::default())
    }

    /// The filter's verdict on the client's `raw`.
    fn client_sends(&self, p: &Principal, raw: &str) -> Decision {
        let env = crate::protocol::jsonrpc::single(raw);
        let msg = Message::new(&env, raw.as_bytes());
        self.f
            .on_request(&msg, &Exchange::new(p, "jira"), &mut Notes::default())
    }

    /// Whether `token` is `p`'s, for the server's `task`.
    fn opens_to(&self, p: &Principal, token: &str, task: &str) -> bool {
        let ex = Exchange::new(p, "jira");
        self.sealer
            .open(token, &holder(&ex), "jira")
            .is_some_and(|o| o.task == task)
    }
}

use crate::chain::filter::{Decision, McpFilter, Message, Notes};

fn rewritten(d: &Decision) -> Json {
    match d {
        Decision::Mutated(b) => serde_json::from_slice(b).expect("json"),
        other => panic!("not rewritten: {other:?}"),
    }
}

/// Every string a member some peer reads as `taskId` holds, at any depth.
fn task_id_values(v: &Json, out: &mut Vec<Json>) {
    match v {
        Json::Object(o) => {
            for (k, x) in o {
                if k.eq_ignore_ascii_case("taskid") {
                    out.push(x.clone());
                } else {
                    task_id_values(x, out);
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|x| task_id_values(x, out)),
        _ => {}
    }
}

/// A server's error reply names tasks in `data` at any depth, in any
/// spelling a peer reads (`TaskId`, `TASKID`, `\u0074askId`), inside
/// arrays and in related-task metadata: this caller's are sealed, every
/// other (another principal's, one nobody created here, no string) is
/// removed; a related-task entry losing its id goes whole.
#[test]
fn task_ids_in_server_errors_are_sealed_or_removed() {
    let x = Fixture::new();
    x.create(&x.alice, "T-a");
    x.create(&x.bob, "T-b");
    let raw = r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32000,"message":"failed","data":{
        "taskId":"T-a",
        "others":[{"TaskId":"T-b"},{"deep":{"TASKID":"T-unknown"}},[{"\u0074askId":"T-a"}]],
        "count":{"taskId":7},
        "list":{"taskId":["T-b"]},
        "_meta":{"io.modelcontextprotocol/related-task":{"taskId":"T-b"},"keep":1},
        "more":{"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"T-a"}}},
        "odd":{"_meta":{"io.modelcontextprotocol/related-task":"T-b"}}},
        "_meta":{"io.modelcontextprotocol/related-task":{"taskId":"T-b"}}}}"#;
    let v = rewritten(&x.reply(&x.alice, raw, raw, "tools/call", None));
    let text = v.to_string();
    for leaked in ["T-b", "T-unknown", "\"T-a\""] {
        assert!(
            !text.contains(leaked),
            "{leaked} reached the client: {text}"
        );
    }
    let mut ids = Vec::new();
    task_id_values(&v, &mut ids);
    assert_eq!(ids.len(), 3, "{text}");
    for id in ids {
        let t = id.as_str().expect("string");
        assert!(x.opens_to(&x.alice, t, "T-a"), "{text}");
    }
    let data = &v["error"]["data"];
    assert_eq!(data["_meta"], serde_json::json!({"keep": 1}), "{text}");
    assert!(data["more"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"].is_string());
    assert_eq!(data["odd"]["_meta"], serde_json::json!({}), "{text}");
    assert_eq!(v["error"]["_meta"], serde_json::json!({}), "{text}");
    assert_eq!(v["error"]["code"], -32000);

    // Bob is told nothing of alice's task.
    let raw =
        r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"x","data":{"taskId":"T-a"}}}"#;
    let v = rewritten(&x.reply(&x.bob, raw, raw, "tools/call", None));
    assert_eq!(v["error"]["data"], serde_json::json!({}), "{v}");

    // An error naming no task passes as it is, unread.
    let raw = r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32000,"message":"task failed","data":{"t":1}}}"#;
    assert_eq!(
        x.reply(&x.alice, raw, raw, "tools/call", None),
        Decision::Pass
    );
}

/// The error answering a task request names the asked task: sealed even
/// when this replica does not remember it (the caller's token named it);
/// another task it names is this caller's only when remembered as such.
#[test]
fn a_task_requests_error_seals_the_asked_task() {
    let x = Fixture::new();
    let ex = Exchange::new(&x.alice, "jira");
    let link = x.sealer.link("T-asked", &holder(&ex), "jira");
    let raw = r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32603,"message":"x","data":{
        "taskId":"T-asked","also":{"taskId":"T-other"}}}}"#;
    let v = rewritten(&x.reply(&x.alice, raw, raw, "tasks/result", Some(&link)));
    let data = &v["error"]["data"];
    let t = data["taskId"].as_str().expect("sealed");
    assert!(x.opens_to(&x.alice, t, "T-asked"), "{v}");
    assert_eq!(data["also"], serde_json::json!({}), "{v}");
    // The same error to a request that named no task: nothing is known.
    let v = rewritten(&x.reply(&x.alice, raw, raw, "tools/call", None));
    assert_eq!(v["error"]["data"], serde_json::json!({"also": {}}), "{v}");
}

/// A 2026-07-28 task inline: a failed task's `error` and a finished one's
/// `result` name tasks as an error reply and a result do.
#[test]
fn an_inline_tasks_error_and_result_are_sealed_or_removed() {
    let x = Fixture::new();
    x.create(&x.alice, "T-a");
    x.create(&x.bob, "T-b");
    let ex = Exchange::new(&x.alice, "jira");
    let link = x.sealer.link("T-a", &holder(&ex), "jira");
    let raw = r#"{"jsonrpc":"2.0","id":2,"result":{"resultType":"complete","taskId":"T-a","status":"failed",
        "error":{"code":-32000,"message":"x","data":{"taskId":"T-b"}},
        "result":{"content":[],"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"T-b"}}}}}"#;
    let v = rewritten(&x.reply(&x.alice, raw, raw, "tasks/get", Some(&link)));
    let text = v.to_string();
    assert!(!text.contains("T-b"), "{text}");
    assert_eq!(
        v["result"]["error"]["data"],
        serde_json::json!({}),
        "{text}"
    );
    assert_eq!(
        v["result"]["result"]["_meta"],
        serde_json::json!({}),
        "{text}"
    );
}

/// Related-task metadata in a result, under a name a case-insensitive peer
/// reads as `taskId` or `_meta`: judged as the exact spelling, whether or
/// not the parser already refused it.
#[test]
fn related_task_ids_in_another_case_are_sealed_or_removed() {
    let x = Fixture::new();
    x.create(&x.alice, "T-a");
    let shape = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[],"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"T-a"}}}}"#;
    for (bytes, id, kept) in [
        (
            r#"{"jsonrpc":"2.0","id":2,"result":{"content":[],"_meta":{"io.modelcontextprotocol/related-task":{"TaskId":"T-a"}}}}"#,
            "TaskId",
            true,
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"result":{"content":[],"_meta":{"io.modelcontextprotocol/related-task":{"TASKID":"T-zz"}}}}"#,
            "TASKID",
            false,
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"result":{"content":[],"_Meta":{"io.modelcontextprotocol/related-task":{"taskId":"T-zz"}}}}"#,
            "taskId",
            false,
        ),
    ] {
        let v = rewritten(&x.reply(&x.alice, shape, bytes, "tools/call", None));
        let meta = v["result"]
            .as_object()
            .and_then(|r| r.iter().find(|(k, _)| k.eq_ignore_ascii_case("_meta")))
            .map(|(_, m)| m.clone())
            .expect("meta");
        let entry = &meta["io.modelcontextprotocol/related-task"];
        if kept {
            let t = entry[id].as_str().expect("sealed");
            assert!(x.opens_to(&x.alice, t, "T-a"), "{v}");
        } else {
            assert_eq!(meta, serde_json::json!({}), "{bytes}: {v}");
        }
    }
}

fn refused_as_unknown(d: &Decision) -> bool {
    matches!(d, Decision::Reject(r) if r.error.code == -32602 && r.reason == "task_unknown")
}

/// A client request's related-task metadata reaches the server as the
/// server's id only when the token opens for this caller and server;
/// otherwise the request is answered as an unknown task.
#[test]
fn a_client_requests_related_task_is_opened_or_refused() {
    let x = Fixture::new();
    let mine = x.token(&x.alice, "T-a", "jira");
    let call = |id: &str, key: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{}},
            "_meta":{{"io.modelcontextprotocol/related-task":{{"{key}":"{id}"}},"progressToken":1}}}}}}"#
        )
    };
    let v = rewritten(&x.client_sends(&x.alice, &call(&mine, "taskId")));
    assert_eq!(
        v["params"]["_meta"],
        serde_json::json!({"io.modelcontextprotocol/related-task":{"taskId":"T-a"},"progressToken":1})
    );
    let escaped = rewritten(&x.client_sends(&x.alice, &call(&mine, "\\u0074askId")));
    assert_eq!(
        escaped["params"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        "T-a"
    );
    for (who, id, why) in [
        (&x.alice, "T-a".to_owned(), "the server's raw id"),
        (&x.bob, "T-a".to_owned(), "another principal's raw id"),
        (&x.bob, mine.clone(), "another principal's token"),
        (
            &x.alice,
            x.token(&x.alice, "T-a", "gmail"),
            "another server's token",
        ),
        (&x.alice, "wt1.AAAA".to_owned(), "a forged token"),
    ] {
        for key in ["taskId", "\\u0074askId"] {
            let d = x.client_sends(who, &call(&id, key));
            assert!(refused_as_unknown(&d), "{why} ({key}): {d:?}");
        }
    }
    // An entry that is no object names nothing the gateway can judge.
    let raw = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t",
        "_meta":{"io.modelcontextprotocol/related-task":"T-a"}}}"#;
    assert!(refused_as_unknown(&x.client_sends(&x.alice, raw)));
    // A task request's metadata opens like its `taskId`.
    let get = |meta: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{{"taskId":"{mine}",
            "_meta":{{"io.modelcontextprotocol/related-task":{{"taskId":"{meta}"}}}}}}}}"#
        )
    };
    let v = rewritten(&x.client_sends(&x.alice, &get(&mine)));
    assert_eq!(v["params"]["taskId"], "T-a");
    assert_eq!(
        v["params"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        "T-a"
    );
    let bobs = x.token(&x.bob, "T-b", "jira");
    for other in [bobs.as_str(), "T-b"] {
        assert!(refused_as_unknown(&x.client_sends(&x.alice, &get(other))));
    }
}

/// A client's notification or response cannot be answered: a related-task
/// id (or an error's task id) that does not open is removed, one that
/// opens becomes the server's.
#[test]
fn a_client_notification_or_responses_task_ids_are_opened_or_removed() {
    let x = Fixture::new();
    let mine = x.token(&x.alice, "T-a", "jira");
    let bobs = x.token(&x.bob, "T-b", "jira");
    let related = |id: &str| {
        format!(r#"{{"io.modelcontextprotocol/related-task":{{"taskId":"{id}"}},"k":1}}"#)
    };
    for (body, at) in [
        (
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1,"_meta":M}}"#,
            "params",
        ),
        (
            r#"{"jsonrpc":"2.0","id":"s1","result":{"action":"accept","content":{},"_meta":M}}"#,
            "result",
        ),
    ] {
        let v = rewritten(&x.client_sends(&x.alice, &body.replace('M', &related(&mine))));
        assert_eq!(
            v[at]["_meta"],
            serde_json::json!({"io.modelcontextprotocol/related-task":{"taskId":"T-a"},"k":1}),
            "{body}"
        );
        for id in [bobs.as_str(), "T-a", "T-b"] {
            let v = rewritten(&x.client_sends(&x.alice, &body.replace('M', &related(id))));
            assert_eq!(v[at]["_meta"], serde_json::json!({"k":1}), "{id}: {v}");
        }
    }
    // A client's error answer names tasks as a server's does.
    let raw = format!(
        r#"{{"jsonrpc":"2.0","id":"s2","error":{{"code":-1,"message":"no","data":{{"taskId":"{mine}","x":[{{"TaskId":"T-b"}}]}}}}}}"#
    );
    let v = rewritten(&x.client_sends(&x.alice, &raw));
    assert_eq!(
        v["error"]["data"],
        serde_json::json!({"taskId":"T-a","x":[{}]}),
        "{v}"
    );
}

/// Client messages that cannot name a task are passed unread; one that may
/// but names none passes unchanged; a client's answer (no method) reaches
/// the filter through the chain.
#[test]
fn client_messages_naming_no_task_pass() {
    let x = Fixture::new();
    for raw in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"q":"x"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"q":"task"},"_meta":{"progressToken":1}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","task":{"ttl":60000}}}"#,
        r#"{"jsonrpc":"2.0","id":"s1","result":{"action":"decline"}}"#,
        r#"{"jsonrpc":"2.0","id":"s1","error":{"code":-1,"message":"task refused"}}"#,
    ] {
        assert_eq!(x.client_sends(&x.alice, raw), Decision::Pass, "{raw}");
    }
    let chain = crate::chain::filter::FilterChain::new(
        vec![Arc::new(TaskFilter::new(
            x.sealer.clone(),
            Arc::new(TaskOwners::new(10)),
        ))],
        crate::protocol::jsonrpc::ParseLimits::default(),
    );
    let raw = r#"{"jsonrpc":"2.0","id":"s1","result":{"action":"accept","_meta":{"io.modelcontextprotocol/related-task":{"taskId":"T-raw"}}}}"#;
    let env = crate::protocol::jsonrpc::single(raw);
    let msg = Message::new(&env, raw.as_bytes());
    let verdict = chain.run(
        &msg,
        &Exchange::new(&x.alice, "jira"),
        &mut Notes::default(),
    );
    match verdict {
        crate::chain::filter::Verdict::ForwardMutated(b, _) => {
            assert!(!String::from_utf8_lossy(&b).contains("T-raw"));
        }
        other => panic!("the client's answer passed unjudged: {other:?}"),
    }
}

/// The fast path (`may_hold`) must not skip a message naming a task in a
/// spelling the walk folds: `TASKID`, `TaskId`, `taſkId`, `tas<DEL>kId`,
/// `ta\tskId` hold no lowercase `task` and no `\u` escape, yet a
/// case-insensitive or lenient peer reads each as `taskId`.
#[test]
fn a_task_id_spelled_without_lowercase_task_is_not_skipped() {
    let x = Fixture::new();
    x.create(&x.bob, "T-b");
    for key in [
        "TASKID",
        "TaskId",
        "TAsKID",
        "ta\u{17f}kId",
        "tas\u{7f}kId",
        // A control character a lenient reader drops, written as an escape.
        "ta\\tskId",
        "taskI\\nd",
    ] {
        let raw = format!(
            r#"{{"jsonrpc":"2.0","id":2,"error":{{"code":-32000,"message":"failed","data":{{"{key}":"T-b"}}}}}}"#
        );
        let d = x.reply(&x.alice, &raw, &raw, "tools/call", None);
        let out = match &d {
            Decision::Pass => raw.clone(),
            Decision::Mutated(b) => String::from_utf8_lossy(b).into_owned(),
            Decision::Reject(_) => String::new(),
        };
        assert!(
            !out.contains("T-b"),
            "{key:?}: bob's raw id reached alice: {out}"
        );
    }
    // The other way: a related-task entry whose key and id member a
    // case-insensitive server reads, with no lowercase `task` anywhere.
    let bobs = x.token(&x.bob, "T-b", "jira");
    for (key, id) in [
        ("IO.MODELCONTEXTPROTOCOL/RELATED-TASK", "TASKID"),
        ("IO.ModelContextProtocol/Related-Task", "TaskId"),
    ] {
        for value in ["T-b", bobs.as_str()] {
            let raw = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{}},"_meta":{{"{key}":{{"{id}":"{value}"}}}}}}}}"#
            );
            let d = x.client_sends(&x.alice, &raw);
            assert!(refused_as_unknown(&d), "{key}/{id}={value}: {d:?}");
        }
    }
}

/// A tool call's reply naming its task in both shapes (2026-07-28
/// `resultType: "task"` with `taskId`, and 2025-11-25 `task.taskId`):
/// a client of either revision reads one of them, so both reach it
/// sealed, never raw.
#[test]
fn a_task_handle_in_either_shape_is_sealed() {
    let x = Fixture::new();
    for raw in [
        r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":"T-1","status":"working","task":{"taskId":"T-2","status":"working"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"taskId":"T-2","status":"working","task":{"taskId":"T-1","status":"working"}}}"#,
    ] {
        let d = x.reply(&x.alice, raw, raw, "tools/call", None);
        let v = rewritten(&d);
        let text = v.to_string();
        assert!(
            !text.contains("\"T-1\"") && !text.contains("\"T-2\""),
            "{text}"
        );
    }
}

/// `params.taskId` on a request the gateway does not open (`tasks/list`,
/// a method of a later draft or a vendor's): a server that reads it there
/// must never get another principal's id, nor a raw one.
#[test]
fn a_task_id_on_any_other_request_is_opened_or_refused() {
    let x = Fixture::new();
    let mine = x.token(&x.alice, "T-a", "jira");
    let bobs = x.token(&x.bob, "T-b", "jira");
    for method in ["tasks/list", "tasks/watch", "vendor/tasks/delete"] {
        let send = |id: &str| {
            let raw = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"taskId":"{id}"}}}}"#
            );
            x.client_sends(&x.alice, &raw)
        };
        for id in ["T-b", bobs.as_str()] {
            let d = send(id);
            assert!(refused_as_unknown(&d), "{method} {id}: {d:?}");
        }
        let v = rewritten(&send(&mine));
        assert_eq!(v["params"]["taskId"], "T-a", "{method}");
    }
}

/// A message the parser accepts is one `msg.value()` reads (the filter
/// passes one it cannot read): at the deepest nesting the bundle may allow,
/// with numbers serde_json reads only as some type, with escapes.
#[test]
fn every_message_the_parser_accepts_is_read() {
    use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};
    let x = Fixture::new();
    let limits = ParseLimits {
        max_depth: 128,
        ..ParseLimits::default()
    };
    let handle = r#""task":{"taskId":"T-raw","status":"working"}"#;
    let mut odd: Vec<String> = (110..130)
        .map(|n| format!(r#""d":{}1{}"#, "[".repeat(n), "]".repeat(n)))
        .collect();
    for v in [
        "1e400",
        "-1e400",
        "18446744073709551616",
        "-9223372036854775809",
        "1.7976931348623157e309",
        r#""\ud800""#,
        r#""\udc00\ud800""#,
        "-0",
        "0.0000000000000000000000000000000000001e-400",
    ] {
        odd.push(format!(r#""d":{v}"#));
    }
    for member in odd {
        let raw = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[],"structuredContent":{{{member}}},{handle}}}}}"#
        );
        let Ok(Parsed::Single(env)) = parse(raw.as_bytes(), limits) else {
            continue;
        };
        let msg = Message::from_server(&env, raw.as_bytes(), Some("tools/call"), Some("t"));
        let d = x.f.on_response(
            &msg,
            &Exchange::new(&x.alice, "jira"),
            &mut Notes::default(),
        );
        assert!(!matches!(d, Decision::Pass), "{member}: passed unread");
    }
}

/// A `tasks/list` reply whose `tasks` is no array (an object keyed by
/// the server's ids) cannot be filtered per principal: it is refused, not
/// passed with every principal's raw ids.
#[test]
fn a_task_list_that_is_no_array_is_refused() {
    let x = Fixture::new();
    x.create(&x.bob, "T-b");
    let raw = r#"{"jsonrpc":"2.0","id":5,"result":{"tasks":{"T-b":{"taskId":"T-b","status":"working"}}}}"#;
    let d = x.reply(&x.alice, raw, raw, "tasks/list", None);
    assert!(matches!(d, Decision::Reject(_)), "{d:?}");
}

#[path = "task_binding_deep_tests.rs"]
mod deep;

#[path = "task_binding_input_tests.rs"]
mod input_tests;

proptest::proptest! {
    /// Review: `task` found by its last letter is `task` found by its first,
    /// at the start and end of the bytes and in every case.
    #[test]
    fn task_by_its_last_letter_is_task_by_its_first(
        b in proptest::collection::vec(proptest::sample::select(b"tTaAsSkKx\\u0\xc5\x7f".to_vec()), 0..12)
    ) {
        let first = memchr::memchr2_iter(b't', b'T', &b).any(|i| {
            b.get(i..i + 4).is_some_and(|w| w.eq_ignore_ascii_case(b"task"))
        });
        proptest::prop_assert_eq!(super::task_any_case(&b), first, "{:?}", b);
    }
}

#[test]
fn task_at_the_edges() {
    for b in [&b"TASK"[..], b"xTaSk", b"taskx", b"tas", b"ask", b"k", b""] {
        let want = b.windows(4).any(|w| w.eq_ignore_ascii_case(b"task"));
        assert_eq!(super::task_any_case(b), want, "{b:?}");
    }
}

/// A server that reuses a task id (it restarted, or forgot alice's task)
/// and hands it to bob: alice's old handle for that id opens nothing of
/// bob's on a replica that knows the task as bob's.
#[test]
fn an_old_handle_opens_no_task_the_server_gave_another() {
    let fx = Fixture::new();
    let old = fx.token(&fx.alice, "1", "jira");
    fx.create(&fx.bob, "1");
    for method in ["tasks/get", "tasks/cancel", "tasks/result"] {
        let raw = format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"{method}","params":{{"taskId":"{old}"}}}}"#
        );
        let d = fx.client_sends(&fx.alice, &raw);
        assert!(refused_as_unknown(&d), "{method}: {d:?}");
    }
    // Bob's own handle still works.
    let bobs = fx.token(&fx.bob, "1", "jira");
    let raw = format!(
        r#"{{"jsonrpc":"2.0","id":8,"method":"tasks/get","params":{{"taskId":"{bobs}"}}}}"#
    );
    assert!(matches!(
        fx.client_sends(&fx.bob, &raw),
        Decision::Mutated(_)
    ));
}

/// A server that hands a second holder an id it handed the first (it
/// restarted and reused its counter, or it hands one task to two) burns
/// the id: the gateway cannot tell which task the id names now, so neither
/// holder's handle opens it — the first holder's would otherwise reach the
/// second's new task — and the reply that burnt it asks the fleet to burn
/// it too.
#[test]
fn a_task_id_handed_to_a_second_holder_is_burnt_for_both() {
    let fx = Fixture::new();
    fx.create(&fx.alice, "7");
    let alices = fx.token(&fx.alice, "7", "jira");
    let get = |token: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tasks/get","params":{{"taskId":"{token}"}}}}"#
        )
    };
    assert!(matches!(
        fx.client_sends(&fx.alice, &get(&alices)),
        Decision::Mutated(_)
    ));
    // The server hands "7" to Bob as new: refused, and burnt.
    let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"7","status":"working"}}}"#;
    let env = crate::protocol::jsonrpc::single(raw);
    let msg = Message::from_server(&env, raw.as_bytes(), Some("tools/call"), Some("t"));
    let mut notes = Notes::default();
    let d =
        fx.f.on_response(&msg, &Exchange::new(&fx.bob, "jira"), &mut notes);
    assert!(matches!(d, Decision::Reject(_)), "{d:?}");
    assert_eq!(notes.task_burns.len(), 1);
    assert_eq!(
        notes.task_burns[0].kind,
        crate::chain::notes::ClaimKind::Burn
    );
    assert!(notes.task_claims.is_empty());
    // Neither holder's handle opens it now, for any task method.
    let bobs = fx.token(&fx.bob, "7", "jira");
    for (who, token) in [(&fx.alice, &alices), (&fx.bob, &bobs)] {
        for method in ["tasks/get", "tasks/cancel", "tasks/result"] {
            let raw = format!(
                r#"{{"jsonrpc":"2.0","id":8,"method":"{method}","params":{{"taskId":"{token}"}}}}"#
            );
            let d = fx.client_sends(who, &raw);
            assert!(refused_as_unknown(&d), "{method}: {d:?}");
        }
    }
    // Nor anywhere else a client's request carries it: `params.taskId`
    // on another method, related-task metadata.
    for raw in [
        format!(
            r#"{{"jsonrpc":"2.0","id":9,"method":"tasks/list","params":{{"taskId":"{alices}"}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{{"name":"t","arguments":{{}},"_meta":{{"io.modelcontextprotocol/related-task":{{"taskId":"{alices}"}}}}}}}}"#
        ),
    ] {
        let d = fx.client_sends(&fx.alice, &raw);
        assert!(refused_as_unknown(&d), "{raw}: {d:?}");
    }
    // Handed out again, to either, it is no one's.
    for who in [&fx.alice, &fx.bob] {
        let raw = r#"{"jsonrpc":"2.0","id":2,"result":{"task":{"taskId":"7","status":"working"}}}"#;
        let d = fx.reply(who, raw, raw, "tools/call", None);
        assert!(matches!(d, Decision::Reject(_)), "{d:?}");
    }
    // Another id is unaffected.
    fx.create(&fx.alice, "8");
}
