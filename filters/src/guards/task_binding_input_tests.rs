//! A task's input bound to what its server asked (`task_binding_input`): a
//! hostile server asks in every shape and at every depth, a hostile
//! client answers what was never asked, what another principal, task,
//! server or session was asked, what expired, and forges keys.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::*;
use crate::guards::input_state::STATE_TTL;

/// A moment well inside a window of [`STATE_TTL`].
fn t0() -> SystemTime {
    let ttl = STATE_TTL.as_secs();
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 / ttl * ttl + 10)
}

fn at<'a>(p: &'a Principal, now: SystemTime, session: Option<&'a str>) -> Exchange<'a> {
    Exchange {
        now,
        session_id: session,
        ..Exchange::new(p, "jira")
    }
}

/// The filter's rewrite of the server's `raw` answering `method` (the
/// request naming `task`'s audit link, for a task request), under `ex`.
fn server_sends(
    f: &TaskFilter,
    ex: &Exchange<'_>,
    raw: &str,
    method: &str,
    task: Option<&str>,
) -> Decision {
    let env = crate::protocol::jsonrpc::single(raw);
    let method = (!method.is_empty()).then_some(method);
    let mut msg = Message::from_server(&env, raw.as_bytes(), method, Some("t"));
    msg.request_task = task;
    f.on_response(&msg, ex, &mut Notes::default())
}

fn client_sends(f: &TaskFilter, ex: &Exchange<'_>, v: &Json) -> Decision {
    let raw = v.to_string();
    let env = crate::protocol::jsonrpc::single(&raw);
    f.on_request(
        &Message::new(&env, raw.as_bytes()),
        ex,
        &mut Notes::default(),
    )
}

/// A `tasks/update` of `token` answering `responses`.
fn update(token: &str, responses: Json) -> Json {
    json!({"jsonrpc":"2.0","id":9,"method":"tasks/update",
        "params":{"taskId": token, "inputResponses": responses}})
}

/// What the server gets of a request the filter passed.
fn forwarded(d: &Decision) -> Json {
    match d {
        Decision::Mutated(b) => serde_json::from_slice(b).expect("json"),
        other => panic!("not forwarded: {other:?}"),
    }
}

fn unasked(d: &Decision) -> bool {
    matches!(d, Decision::Reject(d)
        if d.reason == "task_input_unasked" && d.error.code == codes::INVALID_PARAMS)
}

const ELICIT: &str = r#"{"method":"elicitation/create","params":{"message":"Name?","requestedSchema":{"type":"object","properties":{}}}}"#;
const ROOTS: &str = r#"{"method":"roots/list"}"#;

/// Alice's task `T-a` on `jira` through `f`, and her token for it.
fn alices_task(f: &TaskFilter, alice: &Principal, ex: &Exchange<'_>, task: &str) -> String {
    let raw = format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"resultType":"task","taskId":"{task}","status":"working"}}}}"#
    );
    let v = forwarded(&server_sends(f, ex, &raw, "tools/call", None));
    let token = v["result"]["taskId"].as_str().expect("token").to_owned();
    assert!(token.starts_with("wt1."), "{v}");
    let _ = alice;
    token
}

/// The `tasks/get` reply asking `asks` (`{key: request}` text) of `task`.
fn status(task: &str, asks: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":2,"result":{{"resultType":"complete","taskId":"{task}","status":"input_required","inputRequests":{asks}}}}}"#
    )
}

/// The keys of the first `inputRequests` map in `v`.
fn keys(v: &Json) -> Vec<String> {
    let mut out = Vec::new();
    crate::protocol::embedded::in_message(v, &mut |f| {
        if let crate::protocol::embedded::Found::Request { key, .. } = f {
            out.push(key.to_owned());
        }
    });
    out
}

/// The sealed keys the client gets for `asks` of `task` through `f`, in
/// their own order.
fn asked(f: &TaskFilter, ex: &Exchange<'_>, task: &str, asks: &str) -> Vec<String> {
    let v = forwarded(&server_sends(f, ex, &status(task, asks), "tasks/get", None));
    keys(&v)
}

/// The server's key a sealed `key` of `task` stands for, opened for `ex`.
fn server_key(f: &TaskFilter, ex: &Exchange<'_>, task: &str, key: &str) -> Option<String> {
    let me = holder(ex);
    let b = input::Binding::of(task, &me, ex);
    f.sealer.input.open(key, &b, ex.now)
}

fn fixture() -> (Arc<TaskSealer>, TaskFilter) {
    let sealer = Arc::new(TaskSealer::new(b"fleet secret"));
    let f = TaskFilter::new(sealer.clone(), Arc::new(TaskOwners::new(100)));
    (sealer, f)
}

/// The answers to what was asked reach the server under its keys;
/// everything else a client adds is dropped before the request goes on.
#[test]
fn only_what_was_asked_is_answered() {
    let (_, f) = fixture();
    let alice = who("alice");
    let ex = at(&alice, t0(), None);
    let token = alices_task(&f, &alice, &ex, "T-a");
    let asks = format!(r#"{{"e1":{ELICIT},"r1":{ROOTS}}}"#);
    let mut sealed = asked(&f, &ex, "T-a", &asks);
    assert_eq!(sealed.len(), 2);
    assert!(sealed.iter().all(|k| k.starts_with("wk1.")), "{sealed:?}");
    sealed.sort_by_key(|k| server_key(&f, &ex, "T-a", k));
    assert_eq!(
        server_key(&f, &ex, "T-a", &sealed[0]).as_deref(),
        Some("e1")
    );
    let (e1, r1) = (&sealed[0], &sealed[1]);
    let mut tampered = e1.clone().into_bytes();
    let i = tampered.len() - 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("utf8");
    let answers = json!({
        e1.as_str(): {"action":"accept","content":{"name":"x"}},
        // The server's own key, raw: never shown to the client.
        "r1": {"roots":[{"uri":"file:///etc"}]},
        // A key nobody asked for, and forgeries.
        "e9": {"action":"accept"},
        tampered.as_str(): {"action":"decline"},
        "wk1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA": {"action":"accept"},
    });
    let out = forwarded(&client_sends(&f, &ex, &update(&token, answers)));
    assert_eq!(out["params"]["taskId"], "T-a");
    assert_eq!(
        out["params"]["inputResponses"],
        json!({"e1": {"action":"accept","content":{"name":"x"}}}),
        "{out}"
    );
    // Both answers, as asked.
    let out = forwarded(&client_sends(
        &f,
        &ex,
        &update(
            &token,
            json!({e1.as_str(): {"action":"decline"}, r1.as_str(): {"roots":[]}}),
        ),
    ));
    assert_eq!(
        out["params"]["inputResponses"],
        json!({"e1": {"action":"decline"}, "r1": {"roots":[]}})
    );
}

/// Input nobody was asked for never reaches the server: before any ask
/// (pre-answering), with only unasked keys, with an empty or unreadable
/// `inputResponses`; on every task request, not only `tasks/update`.
#[test]
fn input_nobody_asked_for_is_refused() {
    let (_, f) = fixture();
    let alice = who("alice");
    let ex = at(&alice, t0(), None);
    let token = alices_task(&f, &alice, &ex, "T-a");
    for responses in [
        json!({"e1": {"action":"accept"}}),
        json!({}),
        json!({"wk1.": {"action":"accept"}}),
        json!([{"action":"accept"}]),
        json!("e1"),
        json!(null),
    ] {
        let d = client_sends(&f, &ex, &update(&token, responses.clone()));
        assert!(unasked(&d), "{responses}: {d:?}");
    }
    // Without answers, an update (a cancel, a poll) goes on as before.
    let plain = json!({"jsonrpc":"2.0","id":9,"method":"tasks/update","params":{"taskId": token}});
    assert_eq!(
        forwarded(&client_sends(&f, &ex, &plain))["params"]["taskId"],
        "T-a"
    );
    for method in ["tasks/get", "tasks/cancel"] {
        let v = json!({"jsonrpc":"2.0","id":9,"method":method,
            "params":{"taskId": token, "inputResponses": {"e1": {"action":"accept"}}}});
        assert!(unasked(&client_sends(&f, &ex, &v)), "{method}");
    }
    // Asked now: the same key opens; the raw one still does not.
    let sealed = asked(&f, &ex, "T-a", &format!(r#"{{"e1":{ELICIT}}}"#));
    let d = client_sends(&f, &ex, &update(&token, json!({"e1": {"action":"accept"}})));
    assert!(unasked(&d), "{d:?}");
    let d = client_sends(
        &f,
        &ex,
        &update(&token, json!({sealed[0].as_str(): {"action":"accept"}})),
    );
    assert_eq!(
        forwarded(&d)["params"]["inputResponses"],
        json!({"e1": {"action":"accept"}})
    );
    // Two different answers to one ask (under keys of two windows).
    let later = at(&alice, t0() + STATE_TTL, None);
    let next = asked(&f, &later, "T-a", &format!(r#"{{"e1":{ELICIT}}}"#));
    assert_ne!(next, sealed, "a new window gives a new key");
    let both =
        json!({sealed[0].as_str(): {"action":"accept"}, next[0].as_str(): {"action":"decline"}});
    assert!(unasked(&client_sends(&f, &later, &update(&token, both))));
    let same =
        json!({sealed[0].as_str(): {"action":"accept"}, next[0].as_str(): {"action":"accept"}});
    let out = forwarded(&client_sends(&f, &later, &update(&token, same)));
    assert_eq!(
        out["params"]["inputResponses"],
        json!({"e1": {"action":"accept"}})
    );
}

/// An answer opens while its window or the next lasts: at least the TTL
/// after the ask last passed, never after twice that.
#[test]
fn an_answer_expires() {
    let (_, f) = fixture();
    let alice = who("alice");
    let ttl = STATE_TTL.as_secs();
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000 / ttl * ttl);
    let asks = format!(r#"{{"e1":{ELICIT}}}"#);
    for shown in [start, start + STATE_TTL - Duration::from_secs(1)] {
        let ex = at(&alice, shown, None);
        let token = alices_task(&f, &alice, &ex, "T-a");
        let key = asked(&f, &ex, "T-a", &asks).remove(0);
        // The same ask, shown again in the window: the same key.
        let again = at(&alice, start + Duration::from_secs(ttl / 2), None);
        assert_eq!(asked(&f, &again, "T-a", &asks), std::slice::from_ref(&key));
        let answer = |now: SystemTime| {
            client_sends(
                &f,
                &at(&alice, now, None),
                &update(&token, json!({key.as_str(): {"action":"accept"}})),
            )
        };
        for ok in [
            shown,
            shown + STATE_TTL,
            start + STATE_TTL * 2 - Duration::from_secs(1),
        ] {
            assert!(matches!(answer(ok), Decision::Mutated(_)), "{ok:?}");
        }
        for late in [
            start + STATE_TTL * 2,
            shown + STATE_TTL * 3,
            shown + STATE_TTL * 100,
        ] {
            assert!(unasked(&answer(late)), "{late:?}");
        }
        // A key from a window that has not begun (a forged clock) is no
        // key of this one.
        assert!(unasked(&answer(start - STATE_TTL * 2)));
    }
}

/// Keys are bound to the task, the principal, the server and the
/// session: another principal's key, another task's, another session's
/// opens for nobody else; another principal's task stays unknown.
#[test]
fn nobody_answers_anothers_ask() {
    let (sealer, f) = fixture();
    let alice = who("alice");
    let bob = who("bob");
    let ex_a = at(&alice, t0(), None);
    let ex_b = at(&bob, t0(), None);
    let ta = alices_task(&f, &alice, &ex_a, "T-a");
    let ta2 = alices_task(&f, &alice, &ex_a, "T-a2");
    let tb = alices_task(&f, &bob, &ex_b, "T-b");
    let asks = format!(r#"{{"e1":{ELICIT}}}"#);
    let ka = asked(&f, &ex_a, "T-a", &asks).remove(0);
    let kb = asked(&f, &ex_b, "T-b", &asks).remove(0);
    assert_ne!(ka, kb, "one key for two principals' tasks");
    let answer = |k: &str| json!({k: {"action":"accept"}});
    // Bob answers alice's ask on his own task; alice answers T-a's ask
    // on T-a2, and bob's on hers.
    assert!(unasked(&client_sends(&f, &ex_b, &update(&tb, answer(&ka)))));
    assert!(unasked(&client_sends(
        &f,
        &ex_a,
        &update(&ta2, answer(&ka))
    )));
    assert!(unasked(&client_sends(&f, &ex_a, &update(&ta, answer(&kb)))));
    // Bob cannot name alice's task at all.
    let d = client_sends(&f, &ex_b, &update(&ta, answer(&ka)));
    assert!(
        matches!(&d, Decision::Reject(d) if d.reason == "task_unknown"),
        "{d:?}"
    );
    // Another session of alice's: her task, not the ask she was shown.
    let alice_key = Principal {
        auth: crate::engines::identity::AuthMethod::ApiKey,
        ..who("alice")
    };
    let k1 = {
        let s1 = at(&alice_key, t0(), Some("s1"));
        alices_task(&f, &alice_key, &s1, "T-k");
        asked(&f, &s1, "T-k", &asks).remove(0)
    };
    let tk = sealer
        .seal(
            "T-k",
            &holder(&at(&alice_key, t0(), Some("s2"))),
            "jira",
            None,
        )
        .expect("seal");
    assert!(unasked(&client_sends(
        &f,
        &at(&alice_key, t0(), Some("s2")),
        &update(&tk, answer(&k1))
    )));
    assert!(matches!(
        client_sends(
            &f,
            &at(&alice_key, t0(), Some("s1")),
            &update(&tk, answer(&k1))
        ),
        Decision::Mutated(_)
    ));
    // Another server: the same task id and principal on `gmail`.
    let on_gmail = Exchange {
        now: t0(),
        ..Exchange::new(&alice_key, "gmail")
    };
    let tg = sealer
        .seal("T-k", &holder(&on_gmail), "gmail", None)
        .expect("seal");
    assert!(unasked(&client_sends(
        &f,
        &on_gmail,
        &update(&tg, answer(&k1))
    )));
}

/// Every shape a task's status takes, at every depth: its asks reach the
/// client under keys that answer that task.
#[test]
fn a_tasks_asks_are_sealed_wherever_they_sit() {
    let (_, f) = fixture();
    let alice = who("alice");
    let ex = at(&alice, t0(), None);
    let token = alices_task(&f, &alice, &ex, "T-a");
    let shapes: &[(&str, &str)] = &[
        (
            r#"{"jsonrpc":"2.0","id":2,"result":{"resultType":"complete","taskId":"T-a","status":"input_required","inputRequests":@A@}}"#,
            "tasks/get",
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"result":{"task":{"taskId":"T-a","status":"input_required","inputRequests":@A@}}}"#,
            "tasks/get",
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"result":{"tasks":[{"taskId":"T-a","status":"input_required","inputRequests":@A@}]}}"#,
            "tasks/list",
        ),
        (
            r#"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"T-a","status":"input_required","inputRequests":@A@}}"#,
            "",
        ),
        (
            r#"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"T-a","status":"input_required","inputRequests":@A@}}"#,
            "",
        ),
        // Deeper under the task.
        (
            r#"{"jsonrpc":"2.0","id":2,"result":{"taskId":"T-a","status":"input_required","detail":{"x":[{"inputRequests":@A@}]}}}"#,
            "tasks/get",
        ),
        // Inside another ask's params.
        (
            r#"{"jsonrpc":"2.0","id":2,"result":{"taskId":"T-a","status":"input_required","inputRequests":{"outer":{"method":"roots/list","params":{"inputRequests":@A@}}}}}"#,
            "tasks/get",
        ),
        // Escaped, as a client decodes it.
        (
            r#"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"T-a","status":"input_required","input\u0052equests":@A@}}"#,
            "",
        ),
    ];
    for (shape, method) in shapes {
        let raw = shape.replace("@A@", &format!(r#"{{"e1":{ELICIT}}}"#));
        let v = forwarded(&server_sends(&f, &ex, &raw, method, None));
        let found = keys(&v);
        assert!(found.iter().all(|k| k.starts_with("wk1.")), "{raw}: {v}");
        let e1: Vec<&String> = found
            .iter()
            .filter(|k| server_key(&f, &ex, "T-a", k).as_deref() == Some("e1"))
            .collect();
        assert_eq!(e1.len(), 1, "{raw}: {v}");
        let out = forwarded(&client_sends(
            &f,
            &ex,
            &update(&token, json!({e1[0].as_str(): {"action":"accept"}})),
        ));
        assert_eq!(
            out["params"]["inputResponses"],
            json!({"e1": {"action":"accept"}}),
            "{raw}"
        );
    }
}

/// Asks that belong to no task of this caller keep the server's keys,
/// which answer nothing: a multi-round-trip result's own (bound by its
/// `requestState`), asks under a task id the caller does not hold (a raw
/// id in a tool's payload, another principal's), under two tasks at once.
#[test]
fn asks_of_no_task_of_the_callers_answer_nothing() {
    let (_, f) = fixture();
    let alice = who("alice");
    let bob = who("bob");
    let ex = at(&alice, t0(), None);
    let token = alices_task(&f, &alice, &ex, "T-a");
    alices_task(&f, &bob, &at(&bob, t0(), None), "T-b");
    let ask = format!(r#"{{"e1":{ELICIT}}}"#);
    for (raw, method) in [
        (
            format!(
                r#"{{"jsonrpc":"2.0","id":2,"result":{{"resultType":"input_required","inputRequests":{ask}}}}}"#
            ),
            "tools/call",
        ),
        (
            format!(
                r#"{{"jsonrpc":"2.0","id":2,"result":{{"resultType":"input_required","taskId":"T-a","inputRequests":{ask}}}}}"#
            ),
            "tasks/get",
        ),
        (
            format!(
                r#"{{"jsonrpc":"2.0","id":2,"result":{{"content":[],"structuredContent":{{"taskId":"T-b","inputRequests":{ask}}}}}}}"#
            ),
            "tools/call",
        ),
        (
            format!(
                r#"{{"jsonrpc":"2.0","id":2,"result":{{"taskId":"T-a","status":"working","x":{{"taskId":"T-b","inputRequests":{ask}}}}}}}"#
            ),
            "tasks/get",
        ),
    ] {
        let v = match server_sends(&f, &ex, &raw, method, None) {
            Decision::Pass => serde_json::from_str(&raw).expect("json"),
            Decision::Mutated(b) => serde_json::from_slice(&b).expect("json"),
            Decision::Reject(_) => continue,
        };
        assert_eq!(keys(&v), ["e1"], "{raw}: {v}");
        assert!(unasked(&client_sends(
            &f,
            &ex,
            &update(&token, json!({"e1": {}}))
        )));
    }
}

/// A map is its nearest task's: under two different tasks at once, or
/// under an id that is not the caller's, it is nobody's.
#[test]
fn a_map_under_two_tasks_is_neithers() {
    let mut v = json!({
        "taskId": "A", "inputRequests": {"a": {"method": "roots/list"}},
        "both": {"taskId": "A", "TaskId": "B", "inputRequests": {"b": {"method": "roots/list"}}},
        "same": {"taskId": "A", "TASKID": "A", "inputRequests": {"c": {"method": "roots/list"}}},
        "theirs": {"taskId": "X", "deeper": {"inputRequests": {"d": {"method": "roots/list"}}}},
        "plain": {"x": [{"inputRequests": {"e": {"method": "roots/list"}}}]},
    });
    let changed = input::seal_keys(
        &mut v,
        &mut |t| (t != "X").then(|| format!("task-{t}")),
        &mut |task, key| Some(format!("{task}/{key}")),
    );
    assert!(changed);
    let mut found = keys(&json!({ "result": v }));
    found.sort();
    assert_eq!(found, ["b", "d", "task-A/a", "task-A/c", "task-A/e"], "{v}");
}

/// Any replica with the fleet's secret opens the keys another sealed,
/// and shows the same key for the same ask; a replica without it opens
/// none.
#[test]
fn any_replica_of_the_fleet_opens_the_keys() {
    let a = TaskFilter::new(
        Arc::new(TaskSealer::new(b"fleet secret")),
        Arc::new(TaskOwners::new(100)),
    );
    let b_sealer = Arc::new(TaskSealer::new(b"fleet secret"));
    let b = TaskFilter::new(b_sealer.clone(), Arc::new(TaskOwners::new(100)));
    let stranger = TaskFilter::new(
        Arc::new(TaskSealer::new(b"another fleet")),
        Arc::new(TaskOwners::new(100)),
    );
    let alice = who("alice");
    let ex = at(&alice, t0(), None);
    let token = alices_task(&a, &alice, &ex, "T-a");
    let asks = format!(r#"{{"e1":{ELICIT}}}"#);
    let on_a = asked(&a, &ex, "T-a", &asks);
    // Replica B knows the task only from the request's link.
    let link = b_sealer.link("T-a", &holder(&ex), "jira");
    let on_b = keys(&forwarded(&server_sends(
        &b,
        &ex,
        &status("T-a", &asks),
        "tasks/get",
        Some(&link),
    )));
    assert_eq!(on_a, on_b);
    let answer = update(&token, json!({on_a[0].as_str(): {"action":"accept"}}));
    assert!(matches!(
        client_sends(&b, &ex, &answer),
        Decision::Mutated(_)
    ));
    assert!(matches!(
        client_sends(&stranger, &ex, &answer),
        Decision::Reject(d) if d.reason == "task_unknown"
    ));
    // The other fleet's own token for the task: still no key of its.
    let other = TaskSealer::new(b"another fleet")
        .seal("T-a", &holder(&ex), "jira", None)
        .expect("seal");
    let answer = update(&other, json!({on_a[0].as_str(): {"action":"accept"}}));
    assert!(unasked(&client_sends(&stranger, &ex, &answer)));
}

/// The whole chain, on two replicas sharing nothing but the bundle's
/// `sessions` secret, with a policy that denies sampling.
mod through_the_chain {
    use super::*;
    use crate::chain::filter::Verdict;
    use crate::guards::tenant_fixture::{principal, snapshot_with};
    use crate::snapshot::Snapshot;

    const ORG: &str = r#"version: 1
service_groups:
  - name: g
    servers:
      - {name: crm, upstreams: ["127.0.0.1:1"]}
routes:
  - {prefix: /crm, server: crm}
sessions: {seal_key_file: seal.key}
"#;

    const REGO: &str = "package warden.authz\n\ndefault decision := {\"allow\": true, \"reason\": \"ok\"}\n\ndecision := {\"allow\": false, \"reason\": \"no_sampling\"} if input.request.method == \"sampling/createMessage\"\n";

    fn replica() -> Snapshot {
        snapshot_with(
            ORG,
            &[
                ("policies/authz.rego", REGO),
                (
                    "seal.key",
                    "a fleet secret of more than thirty-two characters",
                ),
            ],
        )
    }

    fn run(
        s: &Snapshot,
        p: &Principal,
        raw: &str,
        from_server: Option<(&str, Option<&str>)>,
    ) -> Verdict {
        let env = crate::protocol::jsonrpc::single(raw);
        let ex = Exchange {
            now: t0(),
            ..Exchange::new(p, "crm")
        };
        let msg = match from_server {
            Some((method, task)) => {
                let method = (!method.is_empty()).then_some(method);
                let mut m = Message::from_server(&env, raw.as_bytes(), method, Some("t"));
                m.request_task = task;
                m
            }
            None => Message::new(&env, raw.as_bytes()),
        };
        s.chain.run(&msg, &ex, &mut Notes::default())
    }

    fn sent(v: &Verdict, raw: &str) -> Json {
        match v {
            Verdict::Forward => serde_json::from_str(raw).expect("json"),
            Verdict::ForwardMutated(b, _) => serde_json::from_slice(b).expect("json"),
            Verdict::Reject { filter, denial } => panic!("refused by {filter}: {denial:?}"),
        }
    }

    fn denied(v: &Verdict) -> bool {
        matches!(v, Verdict::Reject { filter: "policy", denial } if denial.error.code == codes::DENIED)
    }

    fn unasked(v: &Verdict) -> bool {
        matches!(v, Verdict::Reject { denial, .. }
            if denial.reason == "task_input_unasked" && denial.error.code == codes::INVALID_PARAMS)
    }

    const SAMPLE: &str =
        r#"{"method":"sampling/createMessage","params":{"messages":[],"maxTokens":5}}"#;

    /// A sampling request is refused wherever the server puts it, as it is
    /// on a stream; no answer to it (nor to anything else the gateway did
    /// not let through) reaches the server from any replica, and what was
    /// let through is answered through either.
    #[test]
    fn a_refused_ask_is_never_answered_and_an_allowed_one_is_on_any_replica() {
        let (a, b) = (replica(), replica());
        let alice = principal("", "alice", &["dev"]);
        let created = r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":"T-1","status":"working"}}"#;
        let v = sent(
            &run(&a, &alice, created, Some(("tools/call", None))),
            created,
        );
        let token = v["result"]["taskId"].as_str().expect("token").to_owned();
        // On a stream, in a status reply, in a status notification, in a
        // mixed status: refused alike.
        let direct = r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{"messages":[],"maxTokens":5}}"#;
        assert!(denied(&run(&a, &alice, direct, Some(("", None)))));
        let only = status("T-1", &format!(r#"{{"s1":{SAMPLE}}}"#));
        assert!(denied(&run(&a, &alice, &only, Some(("tasks/get", None)))));
        let notified = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/tasks","params":{{"taskId":"T-1","status":"input_required","inputRequests":{{"s1":{SAMPLE}}}}}}}"#
        );
        assert!(denied(&run(&a, &alice, &notified, Some(("", None)))));
        let mixed = status("T-1", &format!(r#"{{"e1":{ELICIT},"s1":{SAMPLE}}}"#));
        assert!(denied(&run(&a, &alice, &mixed, Some(("tasks/get", None)))));
        // The client answers the refused ask anyway, on either replica.
        for r in [&a, &b] {
            let answer = update(
                &token,
                json!({"s1": {"role":"assistant","content":{"type":"text","text":"y"}}}),
            );
            assert!(unasked(&run(r, &alice, &answer.to_string(), None)));
            let answer = update(&token, json!({"e1": {"action":"accept"}}));
            assert!(unasked(&run(r, &alice, &answer.to_string(), None)));
        }
        // An allowed ask, let through by replica A, answered through B.
        let allowed = status("T-1", &format!(r#"{{"e2":{ELICIT}}}"#));
        let v = sent(
            &run(&a, &alice, &allowed, Some(("tasks/get", None))),
            &allowed,
        );
        let shown = keys(&v);
        assert_eq!(shown.len(), 1);
        assert!(shown[0].starts_with("wk1."), "{v}");
        let answer = update(
            &token,
            json!({shown[0].as_str(): {"action":"accept"}, "s1": {"role":"assistant"}}),
        );
        let out = sent(&run(&b, &alice, &answer.to_string(), None), "");
        assert_eq!(out["params"]["taskId"], "T-1");
        assert_eq!(
            out["params"]["inputResponses"],
            json!({"e2": {"action":"accept"}})
        );
        // Another principal holding alice's key gets nothing through.
        let bob = principal("", "bob", &["dev"]);
        let created = r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":"T-2","status":"working"}}"#;
        let v = sent(&run(&b, &bob, created, Some(("tools/call", None))), created);
        let bobs = v["result"]["taskId"].as_str().expect("token").to_owned();
        let answer = update(&bobs, json!({shown[0].as_str(): {"action":"accept"}}));
        assert!(unasked(&run(&b, &bob, &answer.to_string(), None)));
    }
}
