#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::time::SystemTime;

fn tenant_admin(name: &str, t: &str) -> Actor {
    Actor {
        name: name.into(),
        kind: Kind::TenantAdmin(t.into()),
    }
}

fn reviewer(name: &str) -> Actor {
    Actor {
        name: name.into(),
        kind: Kind::OrgReviewer,
    }
}

fn def(desc: &str, extra: bool) -> Json {
    let mut tools = vec![serde_json::json!({
        "name": "post_entry", "description": desc,
        "inputSchema": {"type": "object"},
    })];
    if extra {
        tools.push(serde_json::json!({"name": "close_books", "inputSchema": {"type": "object"}}));
    }
    serde_json::json!({ "tools": tools })
}

fn nobody(_: &str) -> Option<Option<String>> {
    None
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// What a reviewer reads of `ledger` before approving: its digest.
fn seen(r: &Registry) -> String {
    r.servers["ledger"].definition_digest()
}

#[test]
fn the_lifecycle_moves_only_along_its_edges() {
    let mut r = Registry::default();
    let fiona = tenant_admin("fiona", "finance");
    let felix = tenant_admin("felix", "finance");
    r.register(&fiona, "ledger", None, &def("a", false), &nobody, now())
        .unwrap();
    let s = &r.servers["ledger"];
    assert_eq!(
        (s.state, s.tenant.as_deref()),
        (State::Draft, Some("finance"))
    );
    assert_eq!(
        s.tools["post_entry"].candidate.as_deref(),
        Some(warden_filters::guards::tools::fingerprint(&def("a", false)["tools"][0]).as_str())
    );
    // Illegal jumps: 409.
    for to in [
        State::Approved,
        State::Deployed,
        State::Deprecated,
        State::Draft,
    ] {
        let e = r
            .transition(&fiona, "ledger", to, None, "", now())
            .unwrap_err();
        assert!(matches!(e, Refusal::Conflict(_)), "{to:?}: {e}");
    }
    r.transition(&fiona, "ledger", State::Testing, None, "", now())
        .unwrap();
    // The registrant cannot approve, under any spelling.
    for me in ["fiona", "Fiona", "ＦＩＯＮＡ", "ﬁona"] {
        let e = r
            .transition(
                &tenant_admin(me, "finance"),
                "ledger",
                State::Approved,
                Some(&seen(&r)),
                "",
                now(),
            )
            .unwrap_err();
        assert!(matches!(e, Refusal::Forbidden(_)), "{me}: {e}");
    }
    // Another tenant's admin may not review; an org reviewer or a second
    // admin of the tenant may.
    let harry = tenant_admin("harry", "hr");
    assert!(matches!(
        r.transition(
            &harry,
            "ledger",
            State::Approved,
            Some(&seen(&r)),
            "",
            now()
        ),
        Err(Refusal::Forbidden(_))
    ));
    r.transition(
        &felix,
        "ledger",
        State::Approved,
        Some(&seen(&r)),
        "ok",
        now(),
    )
    .unwrap();
    let s = &r.servers["ledger"];
    assert_eq!(s.approved_by.as_deref(), Some("admin:felix"));
    assert!(s.tools["post_entry"].approved.is_some() && s.tools["post_entry"].candidate.is_none());
    // A reviewer reviews, never moves.
    assert!(matches!(
        r.transition(
            &reviewer("rita"),
            "ledger",
            State::Deployed,
            None,
            "",
            now()
        ),
        Err(Refusal::Forbidden(_))
    ));
    r.transition(&fiona, "ledger", State::Deployed, None, "", now())
        .unwrap();
    r.transition(&fiona, "ledger", State::Deprecated, None, "", now())
        .unwrap();
    r.transition(&fiona, "ledger", State::Retired, None, "gone", now())
        .unwrap();
    let s = &r.servers["ledger"];
    assert!(s.retired_at.is_some());
    assert!(matches!(
        r.transition(&fiona, "ledger", State::Retired, None, "", now()),
        Err(Refusal::Conflict(_))
    ));
    let steps: Vec<_> = r.servers["ledger"].events.iter().map(|e| e.to).collect();
    assert_eq!(
        steps,
        [
            State::Draft,
            State::Testing,
            State::Approved,
            State::Deployed,
            State::Deprecated,
            State::Retired
        ]
    );
}

#[test]
fn a_changed_definition_goes_back_to_testing_keeping_the_approved_pin() {
    let mut r = Registry::default();
    let fiona = tenant_admin("fiona", "finance");
    let felix = tenant_admin("felix", "finance");
    r.register(&fiona, "ledger", None, &def("a", false), &nobody, now())
        .unwrap();
    r.transition(&fiona, "ledger", State::Testing, None, "", now())
        .unwrap();
    r.transition(
        &felix,
        "ledger",
        State::Approved,
        Some(&seen(&r)),
        "",
        now(),
    )
    .unwrap();
    r.transition(&fiona, "ledger", State::Deployed, None, "", now())
        .unwrap();
    let pinned = r.servers["ledger"].tools["post_entry"].approved.clone();
    // The same definition again is no change.
    assert!(matches!(
        r.register(&felix, "ledger", None, &def("a", false), &nobody, now()),
        Err(Refusal::Conflict(_))
    ));
    // Felix changes a description and adds a tool: he is now the registrant.
    r.register(
        &felix,
        "ledger",
        Some("finance"),
        &def("b", true),
        &nobody,
        now(),
    )
    .unwrap();
    let s = &r.servers["ledger"];
    assert_eq!(s.state, State::Testing);
    assert_eq!(s.tools["post_entry"].approved, pinned);
    assert!(s.tools["post_entry"].candidate.is_some());
    assert_eq!(s.tools["close_books"].approved, None);
    assert!(s.tools["close_books"].candidate.is_some());
    // Felix cannot approve his own change; Fiona can.
    assert!(matches!(
        r.transition(
            &felix,
            "ledger",
            State::Approved,
            Some(&seen(&r)),
            "",
            now()
        ),
        Err(Refusal::Forbidden(_))
    ));
    r.transition(
        &fiona,
        "ledger",
        State::Approved,
        Some(&seen(&r)),
        "",
        now(),
    )
    .unwrap();
    let s = &r.servers["ledger"];
    assert_ne!(s.tools["post_entry"].approved, pinned);
    assert!(s
        .tools
        .values()
        .all(|p| p.approved.is_some() && p.candidate.is_none()));
    // The bundle's form carries the pins.
    let b: Json = serde_json::from_slice(&r.bundle_json()).unwrap();
    assert_eq!(b["version"], 1);
    assert_eq!(b["servers"]["ledger"]["state"], "approved");
    assert_eq!(b["servers"]["ledger"]["tenant"], "finance");
    assert!(b["servers"]["ledger"]["tools"]["close_books"]["approved"].is_string());
}

#[test]
fn tenants_cannot_touch_each_other_or_the_org() {
    let mut r = Registry::default();
    let fiona = tenant_admin("fiona", "finance");
    let harry = tenant_admin("harry", "hr");
    r.register(&fiona, "ledger", None, &def("a", false), &nobody, now())
        .unwrap();
    // Harry cannot register for finance, re-register finance's server,
    // take a name an org server has, or one that differs by case.
    assert!(matches!(
        r.register(
            &harry,
            "payroll",
            Some("Finance"),
            &def("a", false),
            &nobody,
            now()
        ),
        Err(Refusal::Forbidden(_))
    ));
    assert!(matches!(
        r.register(&harry, "ledger", None, &def("x", false), &nobody, now()),
        Err(Refusal::Forbidden(_))
    ));
    let org = |n: &str| (n == "crm").then_some(None);
    assert!(matches!(
        r.register(&harry, "crm", None, &def("x", false), &org, now()),
        Err(Refusal::Forbidden(_))
    ));
    assert!(matches!(
        r.register(&harry, "LEDGER", None, &def("x", false), &nobody, now()),
        Err(Refusal::Conflict(_))
    ));
    for to in [State::Testing, State::Retired] {
        assert!(matches!(
            r.transition(&harry, "ledger", to, None, "", now()),
            Err(Refusal::Forbidden(_))
        ));
    }
    assert!(matches!(
        r.request_share(&harry, "ledger", now()),
        Err(Refusal::Forbidden(_))
    ));
    assert_eq!(r.summary(&harry), serde_json::json!([]));
    assert_eq!(r.summary(&fiona).as_array().unwrap().len(), 1);
    // A tenant admin cannot register an org server.
    assert!(matches!(
        r.register(&fiona, "crm", None, &def("x", false), &org, now()),
        Err(Refusal::Forbidden(_))
    ));
}

#[test]
fn sharing_needs_an_org_reviewer() {
    let mut r = Registry::default();
    let fiona = tenant_admin("fiona", "finance");
    r.register(&fiona, "ledger", None, &def("a", false), &nobody, now())
        .unwrap();
    assert!(matches!(
        r.approve_share(&reviewer("rita"), "ledger", now()),
        Err(Refusal::Conflict(_))
    ));
    r.request_share(&fiona, "ledger", now()).unwrap();
    assert!(matches!(
        r.request_share(&fiona, "ledger", now()),
        Err(Refusal::Conflict(_))
    ));
    // Neither the asker nor another admin of the tenant approves it.
    for who in [&fiona, &tenant_admin("felix", "finance")] {
        assert!(matches!(
            r.approve_share(who, "ledger", now()),
            Err(Refusal::Forbidden(_))
        ));
    }
    assert!(!r.servers["ledger"].shared);
    r.approve_share(&reviewer("rita"), "ledger", now()).unwrap();
    let s = &r.servers["ledger"];
    assert!(s.shared && s.share_requested_by.is_none());
    assert_eq!(s.events.last().unwrap().actor, "admin:rita");
}

#[test]
fn malformed_definitions_are_refused() {
    let mut r = Registry::default();
    let fiona = tenant_admin("fiona", "finance");
    for bad in [
        serde_json::json!({}),
        serde_json::json!({"tools": []}),
        serde_json::json!({"tools": [{"name": "a b", "inputSchema": {}}]}),
        serde_json::json!({"tools": [{"name": "a"}]}),
        serde_json::json!({"tools": [{"name": "a", "inputSchema": {}, "x": 1}]}),
        serde_json::json!({"tools": [{"name": "a", "inputSchema": {}}, {"name": "a", "inputSchema": {}}]}),
    ] {
        assert!(
            matches!(
                r.register(&fiona, "ledger", None, &bad, &nobody, now()),
                Err(Refusal::Invalid(_))
            ),
            "{bad}"
        );
    }
    for name in ["", "a/b", "../x", "ledger\u{200b}"] {
        assert!(matches!(
            r.register(&fiona, name, None, &def("a", false), &nobody, now()),
            Err(Refusal::Invalid(_))
        ));
    }
    assert!(r.servers.is_empty());
}

/// An org admin who asks to share a tenant's server cannot approve the
/// share too: the admin token's bearer, or an entry under another spelling.
#[test]
fn who_asked_to_share_does_not_approve_it() {
    let mut r = Registry::default();
    let fiona = tenant_admin("fiona", "finance");
    r.register(&fiona, "ledger", None, &def("a", false), &nobody, now())
        .unwrap();
    let alice = Actor {
        name: "alice".into(),
        kind: Kind::OrgAdmin,
    };
    let alice_again = Actor {
        name: "Alice".into(),
        kind: Kind::OrgAdmin,
    };
    r.request_share(&alice, "ledger", now()).unwrap();
    for who in [&alice, &alice_again] {
        assert!(matches!(
            r.approve_share(who, "ledger", now()),
            Err(Refusal::Forbidden(_))
        ));
    }
    let root = Actor::root();
    let mut r2 = r.clone();
    r2.servers.get_mut("ledger").unwrap().share_requested_by = None;
    r2.request_share(&root, "ledger", now()).unwrap();
    assert!(matches!(
        r2.approve_share(&root, "ledger", now()),
        Err(Refusal::Forbidden(_))
    ));
    r.approve_share(&reviewer("rita"), "ledger", now()).unwrap();
    assert!(r.servers["ledger"].shared);
}

/// An approval pins the definition its reviewer read, never one registered
/// after: the registrant re-registering between the reviewer's read and
/// the approval is refused with 409 and nothing is approved.
#[test]
fn an_approval_names_the_definition_its_reviewer_read() {
    let mut r = Registry::default();
    let fiona = tenant_admin("fiona", "finance");
    let felix = tenant_admin("felix", "finance");
    r.register(&fiona, "ledger", None, &def("a", true), &nobody, now())
        .unwrap();
    r.transition(&fiona, "ledger", State::Testing, None, "", now())
        .unwrap();
    // Felix reads the definition under review.
    let read = seen(&r);
    assert!(read.starts_with("sha256:") && read.len() == 71, "{read}");
    // Fiona registers another one (a changed description) meanwhile.
    r.register(&fiona, "ledger", None, &def("evil", true), &nobody, now())
        .unwrap();
    let before = r.servers["ledger"].tools.clone();
    let e = r
        .transition(&felix, "ledger", State::Approved, Some(&read), "", now())
        .unwrap_err();
    assert!(matches!(e, Refusal::Conflict(_)), "{e}");
    assert!(
        e.to_string()
            .contains("the definition changed since you reviewed it"),
        "{e}"
    );
    let s = &r.servers["ledger"];
    assert_eq!(
        (s.state, &s.tools, &s.approved_by),
        (State::Testing, &before, &None)
    );
    // A removal is a change too: the digest of a definition without
    // close_books is another one.
    let evil = seen(&r);
    r.register(&fiona, "ledger", None, &def("evil", false), &nobody, now())
        .unwrap();
    assert_ne!(seen(&r), evil);
    assert!(matches!(
        r.transition(&felix, "ledger", State::Approved, Some(&evil), "", now()),
        Err(Refusal::Conflict(_))
    ));
    // Without saying what was reviewed: refused (400).
    for none in [None, Some("")] {
        assert!(matches!(
            r.transition(&felix, "ledger", State::Approved, none, "", now()),
            Err(Refusal::Invalid(_))
        ));
    }
    // Read again, approved: what was read is what is pinned.
    let read = seen(&r);
    r.transition(&felix, "ledger", State::Approved, Some(&read), "", now())
        .unwrap();
    let s = &r.servers["ledger"];
    assert_eq!(s.state, State::Approved);
    assert_eq!(
        s.tools["post_entry"].approved.as_deref(),
        Some(warden_filters::guards::tools::fingerprint(&def("evil", false)["tools"][0]).as_str())
    );
    // Approval leaves the digest as it was: the same definition.
    assert_eq!(seen(&r), read);
}
