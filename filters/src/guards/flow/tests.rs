use std::collections::HashMap;

use super::*;
use crate::chain::notes::FindingNote;
use crate::engines::identity::Principal;
use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};
use warden_config::access::ToolEntry;
use warden_config::flows::{Labels, Roles, DEFAULT_LEVELS};

/// The one message `body` holds, parsed.
pub(super) fn envelope(body: &str) -> crate::protocol::jsonrpc::Envelope {
    match parse(body.as_bytes(), ParseLimits::default()).expect("parse") {
        Parsed::Single(env) => env,
        _ => panic!("one message"),
    }
}

pub(super) fn flows(on_violation: OnViolation, track: Track) -> Flows {
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

pub(super) fn labels(level: Option<u8>, roles: Roles) -> Labels {
    Labels {
        classification: level,
        roles: Some(roles),
    }
}

pub(super) fn catalog() -> HashMap<String, ServerCatalog> {
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
        tools: HashMap::from_iter([
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

pub(super) struct Gw {
    pub(super) req: FlowFilter,
    pub(super) reply: FlowReplyFilter,
}

pub(super) fn gateway(on_violation: OnViolation, track: Track) -> Gw {
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

pub(super) fn principal(clearance: Option<&str>) -> Principal {
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
pub(super) fn call(
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
fn resources_take_their_pattern_labels() {
    let f = flows(OnViolation::Deny, Track::Session);
    let c = catalog();
    let l = call_labels(
        &f,
        c.get("hr"),
        "hr",
        "resources/read",
        "hr://public/handbook",
        false,
    );
    assert_eq!((l.level, l.what.as_str()), (0, "hr:hr://public/handbook"));
    let l = call_labels(
        &f,
        c.get("hr"),
        "hr",
        "resources/read",
        "hr://employees/1",
        false,
    );
    assert_eq!(l.level, 3, "the server's label");
}

#[test]
fn names_a_server_may_read_otherwise_take_the_stricter_label() {
    let f = flows(OnViolation::Deny, Track::Session);
    let mut c = catalog();
    // A case variant of a sink is that sink.
    let l = call_labels(&f, c.get("web"), "web", "tools/call", "POST", false);
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
        "hr://employeeſ/1",
    ] {
        let l = call_labels(&f, c.get("hr"), "hr", "resources/read", uri, false);
        assert_eq!(l.level, 3, "{uri}");
    }
    // A pattern written in one spelling labels the resource in the other.
    if let Some(hr) = c.get_mut("hr") {
        hr.resources.insert(
            0,
            (
                "hr://reports%202024/*".into(),
                labels(Some(2), Roles::default()),
            ),
        );
        hr.resources.insert(
            0,
            ("hr://pay roll/*".into(), labels(Some(2), Roles::default())),
        );
    }
    for uri in ["hr://reports 2024/q1", "hr://pay%20roll/march"] {
        let l = call_labels(&f, c.get("hr"), "hr", "resources/read", uri, false);
        assert!(l.level >= 2, "{uri}: {l:?}");
    }
    let l = call_labels(
        &f,
        c.get("hr"),
        "hr",
        "resources/read",
        "hr://public/handbook",
        false,
    );
    assert_eq!(l.level, 0);
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

mod review;
mod sinks;
mod streams;
