//! What a server's message is labelled by when the request it answers or
//! accompanies is not simply the one its id names: replies matched
//! through the ledger, task objects outside `tasks/result`, and messages
//! on a call's own stream.

use super::*;
use crate::chain::filter::StreamCall;

/// The reply half's verdict on `body` from `server` to a caller cleared
/// for `public` only, with `set` applied to the message first.
fn judged(
    server: &str,
    body: &str,
    asked: Option<(&str, &str)>,
    set: impl Fn(&mut Message<'_>),
) -> Decision {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("public"));
    let ex = Exchange {
        session_id: Some("s"),
        ..Exchange::new(&p, server)
    };
    let env = envelope(body);
    let mut msg = Message::from_server(
        &env,
        body.as_bytes(),
        asked.map(|a| a.0),
        asked.map(|a| a.1),
    );
    set(&mut msg);
    gw.reply.on_response(&msg, &ex, &mut Notes::default())
}

fn withheld(d: &Decision) -> bool {
    matches!(d, Decision::Reject(r) if r.reason.starts_with("flow_above_clearance"))
}

/// A reply on a GET stream (resumed, or the legacy transport's) matched
/// through the ledger may answer an earlier request of its id than the
/// one the ledger now holds (the entry expired, was evicted, or another
/// replica took the id): the most the server's replies could be, not
/// the label of the request the id names now.
#[test]
fn a_reply_matched_through_the_ledger_is_the_most_it_could_be() {
    let reply = r#"{"jsonrpc":"2.0","id":42,"result":{"contents":[{"uri":"hr://public/index","text":"hello"}]}}"#;
    let asked = Some(("resources/read", "hr://public/index"));
    assert!(matches!(judged("hr", reply, asked, |_| {}), Decision::Pass));
    assert!(withheld(&judged("hr", reply, asked, |m| m
        .ledger_matched =
        true)));
    // A `ping` on the ledger answered by a tool's result.
    let pong = r#"{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"text","text":"emp 7"}]}}"#;
    assert!(withheld(&judged("hr", pong, Some(("ping", "")), |m| {
        m.request_target = None;
        m.ledger_matched = true;
    })));
}

/// A task's result is its tool's output wherever it comes: the reply to
/// any request naming the task (`tasks/update`, `tasks/cancel` answered
/// with the task inline), and a task list or status notification with an
/// outcome inline (which name no tool: the most the server's could be).
#[test]
fn a_task_outcome_is_its_tools_output_wherever_it_comes() {
    let inline = r#"{"jsonrpc":"2.0","id":7,"result":{"taskId":"t1","status":"completed","result":{"content":[{"type":"text","text":"emp 7"}]}}}"#;
    for m in ["tasks/update", "tasks/cancel", "tasks/get", "tasks/result"] {
        assert!(
            withheld(&judged("web", inline, Some((m, "notes")), |_| {})),
            "{m}"
        );
        assert!(
            matches!(
                judged("web", inline, Some((m, "post")), |_| {}),
                Decision::Pass
            ),
            "{m}"
        );
    }
    let list = r#"{"jsonrpc":"2.0","id":8,"result":{"tasks":[{"taskId":"t1","status":"completed","result":{"content":[]}}]}}"#;
    assert!(withheld(&judged(
        "web",
        list,
        Some(("tasks/list", "")),
        |m| m.request_target = None
    )));
    let statuses =
        r#"{"jsonrpc":"2.0","id":8,"result":{"tasks":[{"taskId":"t1","status":"working"}]}}"#;
    assert!(matches!(
        judged("web", statuses, Some(("tasks/list", "")), |m| m
            .request_target =
            None),
        Decision::Pass
    ));
    let note = r#"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"t1","status":"failed","error":{"code":1,"message":"emp 7 salary"}}}"#;
    assert!(withheld(&judged("web", note, None, |_| {})));
    let status = r#"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"t1","status":"working"}}"#;
    assert!(matches!(
        judged("web", status, None, |_| {}),
        Decision::Pass
    ));
}

/// A server's request or notification on a call's own stream may be that
/// call's data (a progress message with a partial result, a sampling
/// request quoting it): at least the call's labels; on a batch's stream,
/// any of its calls'.
#[test]
fn a_message_on_a_calls_stream_carries_the_calls_labels() {
    let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1,"message":"emp 7 salary 212000"}}"#;
    assert!(matches!(
        judged("web", progress, None, |_| {}),
        Decision::Pass
    ));
    assert!(withheld(&judged("web", progress, None, |m| {
        m.stream_call = StreamCall::One("tools/call", "notes")
    })));
    assert!(matches!(
        judged("web", progress, None, |m| m.stream_call =
            StreamCall::One("tools/call", "post")),
        Decision::Pass
    ));
    assert!(withheld(&judged("web", progress, None, |m| m
        .stream_call =
        StreamCall::Several)));
    let ask = r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{"messages":[{"role":"user","content":{"type":"text","text":"emp 7"}}],"maxTokens":5}}"#;
    assert!(withheld(&judged("web", ask, None, |m| {
        m.stream_call = StreamCall::One("tools/call", "notes")
    })));
}

/// On a task's stream (`tasks/result` held open), what the server sends is
/// the task's tool's; on a stream of no call (GET), progress and what a
/// task's metadata relates belong to a call the gateway cannot name: the
/// most the server's could be. A task holding input requests inline is
/// its tool's data too.
#[test]
fn task_streams_and_streams_of_no_call() {
    let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1,"message":"emp 7 salary 212000"}}"#;
    assert!(withheld(&judged("web", progress, None, |m| {
        m.stream_call = StreamCall::One("tasks/result", "notes")
    })));
    assert!(withheld(&judged("web", progress, None, |m| m
        .stream_call =
        StreamCall::NoCall)));
    let log = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"started"}}"#;
    assert!(matches!(
        judged("web", log, None, |m| m.stream_call = StreamCall::NoCall),
        Decision::Pass
    ));
    let related = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"emp 7","_meta":{"io.modelcontextprotocol/related-task":{"taskId":"t1"}}}}"#;
    assert!(withheld(
        &judged("web", related, None, |m| m.stream_call = StreamCall::NoCall)
    ));
    let spelled = related.replace("related-task", "RELATED-TASK");
    assert!(withheld(&judged("web", &spelled, None, |m| m
        .stream_call =
        StreamCall::NoCall)));
    let asking = r#"{"jsonrpc":"2.0","id":8,"result":{"tasks":[{"taskId":"t1","status":"input_required","inputRequests":{"e1":{"method":"elicitation/create","params":{"message":"emp 7 salary?"}}}}]}}"#;
    assert!(withheld(&judged(
        "web",
        asking,
        Some(("tasks/list", "")),
        |m| { m.request_target = None }
    )));
}
