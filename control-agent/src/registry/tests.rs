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

/// What the tenants' layers define: finance's `ledger`, hr's `payroll`
/// (a tenant admin registers only those of their own layer).
fn nobody(n: &str) -> Option<(String, Option<String>)> {
    [("ledger", "finance"), ("payroll", "hr")]
        .into_iter()
        .find(|(s, _)| warden_config::names::same_name(warden_config::names::Name::Server, s, n))
        .map(|(s, t)| (s.to_owned(), Some(t.to_owned())))
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
    let org = |n: &str| (n == "crm").then(|| ("crm".to_owned(), None));
    assert!(matches!(
        r.register(&harry, "crm", None, &def("x", false), &org, now()),
        Err(Refusal::Forbidden(_))
    ));
    // Another tenant's server in another case: not theirs, and the
    // refusal names nobody.
    match r.register(&harry, "LEDGER", None, &def("x", false), &nobody, now()) {
        Err(Refusal::Forbidden(m)) => assert!(!m.contains("finance"), "{m}"),
        other => panic!("{other:?}"),
    }
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
    assert!(r.summary_view(&harry).is_empty());
    assert_eq!(r.summary_view(&fiona).len(), 1);
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
        r.approve_share(&reviewer("rita"), "ledger", Some(&seen(&r)), now()),
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
            r.approve_share(who, "ledger", Some(&seen(&r)), now()),
            Err(Refusal::Forbidden(_))
        ));
    }
    assert!(!r.servers["ledger"].shared);
    r.approve_share(&reviewer("rita"), "ledger", Some(&seen(&r)), now())
        .unwrap();
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
            r.approve_share(who, "ledger", Some(&seen(&r)), now()),
            Err(Refusal::Forbidden(_))
        ));
    }
    let root = Actor::root();
    let mut r2 = r.clone();
    r2.servers.get_mut("ledger").unwrap().share_requested_by = None;
    r2.request_share(&root, "ledger", now()).unwrap();
    assert!(matches!(
        r2.approve_share(&root, "ledger", Some(&seen(&r2)), now()),
        Err(Refusal::Forbidden(_))
    ));
    r.approve_share(&reviewer("rita"), "ledger", Some(&seen(&r)), now())
        .unwrap();
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
    assert!(matches!(e, Refusal::Changed(_)), "{e}");
    assert_eq!(e.code(), "definition_changed");
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
        Err(Refusal::Changed(_))
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

fn org_admin(name: &str) -> Actor {
    Actor {
        name: name.into(),
        kind: Kind::OrgAdmin,
    }
}

/// `ledger` of finance registered by fiona, approved by felix, deployed.
fn deployed() -> Registry {
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
    r
}

/// What the bundle tells the gateways of `ledger`.
fn served(r: &Registry) -> Json {
    let b: Json = serde_json::from_slice(&r.bundle_json()).unwrap();
    b["servers"]["ledger"].clone()
}

/// The finding: fiona asks to share `ledger`, an org reviewer approves,
/// fiona registers a new (hostile) definition, and felix, a second admin
/// of the same tenant, approves and deploys it. The new definition must
/// never reach another tenant without an org reviewer's approval of
/// exactly it: registering it withdraws the share.
#[test]
fn a_new_definition_of_a_shared_server_is_not_shared_on_its_tenants_approval() {
    let mut r = deployed();
    let fiona = tenant_admin("fiona", "finance");
    let felix = tenant_admin("felix", "finance");
    r.request_share(&fiona, "ledger", now()).unwrap();
    let reviewed = seen(&r);
    r.approve_share(&reviewer("rita"), "ledger", Some(&reviewed), now())
        .unwrap();
    let s = &r.servers["ledger"];
    assert!(s.shared && s.share_current(), "{s:?}");
    assert_eq!(s.share_reviewed.as_deref(), Some(reviewed.as_str()));
    assert_eq!(served(&r)["shared"], true);
    // Fiona registers another definition: the share is withdrawn.
    r.register(&fiona, "ledger", None, &def("evil", true), &nobody, now())
        .unwrap();
    let s = &r.servers["ledger"];
    assert_eq!(s.state, State::Testing);
    assert!(
        !s.shared && s.share_reviewed.is_none() && s.share_requested_by.is_none(),
        "{s:?}"
    );
    assert!(
        s.events.last().unwrap().note.contains("share is withdrawn"),
        "{:?}",
        s.events.last()
    );
    assert_eq!(served(&r)["shared"], false);
    // Felix approves and deploys it: finance's own, not every tenant's.
    r.transition(
        &felix,
        "ledger",
        State::Approved,
        Some(&seen(&r)),
        "",
        now(),
    )
    .unwrap();
    r.transition(&felix, "ledger", State::Deployed, None, "", now())
        .unwrap();
    assert!(!r.servers["ledger"].shared);
    assert_eq!(served(&r)["shared"], false);
    assert_eq!(served(&r)["state"], "deployed");
    // Offered again only through a request and an org reviewer approving
    // this definition.
    assert!(matches!(
        r.approve_share(&reviewer("rita"), "ledger", Some(&seen(&r)), now()),
        Err(Refusal::Conflict(_))
    ));
    r.request_share(&felix, "ledger", now()).unwrap();
    // The digest of the definition shared before is not this one's.
    let e = r
        .approve_share(&reviewer("rita"), "ledger", Some(&reviewed), now())
        .unwrap_err();
    assert!(matches!(e, Refusal::Changed(_)), "{e}");
    r.approve_share(&reviewer("rita"), "ledger", Some(&seen(&r)), now())
        .unwrap();
    assert_eq!(served(&r)["shared"], true);
}

/// A share request waiting for the org is withdrawn by a new definition
/// too: the org reviewer finds nothing to approve.
#[test]
fn a_new_definition_withdraws_a_pending_share_request() {
    let mut r = deployed();
    let fiona = tenant_admin("fiona", "finance");
    r.request_share(&fiona, "ledger", now()).unwrap();
    let read = seen(&r);
    r.register(&fiona, "ledger", None, &def("evil", false), &nobody, now())
        .unwrap();
    let s = &r.servers["ledger"];
    assert!(!s.shared && s.share_requested_by.is_none(), "{s:?}");
    assert!(s
        .events
        .last()
        .unwrap()
        .note
        .contains("share request is withdrawn"));
    assert!(matches!(
        r.approve_share(&reviewer("rita"), "ledger", Some(&read), now()),
        Err(Refusal::Conflict(_))
    ));
    assert!(!r.servers["ledger"].shared);
}

/// The share approval names the definition its reviewer read: refused
/// without it (400), and with the digest of another (409
/// `definition_changed`), nothing shared.
#[test]
fn a_share_approval_names_the_definition_its_reviewer_read() {
    let mut r = Registry::default();
    let fiona = tenant_admin("fiona", "finance");
    r.register(&fiona, "ledger", None, &def("a", false), &nobody, now())
        .unwrap();
    r.request_share(&fiona, "ledger", now()).unwrap();
    // Rita reads the entry; fiona registers another definition (a draft
    // stays a draft) and asks again.
    let read = seen(&r);
    r.register(&fiona, "ledger", None, &def("evil", false), &nobody, now())
        .unwrap();
    r.request_share(&fiona, "ledger", now()).unwrap();
    for none in [None, Some("")] {
        let e = r
            .approve_share(&reviewer("rita"), "ledger", none, now())
            .unwrap_err();
        assert!(matches!(e, Refusal::Invalid(_)), "{e}");
        assert!(e.to_string().contains("needs `reviewed`"), "{e}");
    }
    let e = r
        .approve_share(&reviewer("rita"), "ledger", Some(&read), now())
        .unwrap_err();
    assert!(matches!(e, Refusal::Changed(_)), "{e}");
    assert_eq!(e.code(), "definition_changed");
    assert!(
        e.to_string()
            .contains("the definition changed since you reviewed it"),
        "{e}"
    );
    let s = &r.servers["ledger"];
    assert!(!s.shared && s.share_requested_by.is_some());
    // Read again: approved, bound to what was read.
    let read = seen(&r);
    r.approve_share(&reviewer("rita"), "ledger", Some(&read), now())
        .unwrap();
    let s = &r.servers["ledger"];
    assert_eq!(s.share_reviewed.as_deref(), Some(read.as_str()));
    assert!(s.events.last().unwrap().note.contains(&read));
}

/// While a changed definition is under review, testers may use a tool's
/// approved version or its candidate: sharing then would put a version
/// the org reviewer's digest does not name before every tenant's testers.
/// Approving sharing waits for the change to be approved; the digest read
/// stays good across that approval.
#[test]
fn sharing_waits_for_a_change_under_review() {
    let mut r = deployed();
    let fiona = tenant_admin("fiona", "finance");
    let felix = tenant_admin("felix", "finance");
    r.register(&fiona, "ledger", None, &def("b", true), &nobody, now())
        .unwrap();
    r.request_share(&fiona, "ledger", now()).unwrap();
    let read = seen(&r);
    let e = r
        .approve_share(&reviewer("rita"), "ledger", Some(&read), now())
        .unwrap_err();
    assert!(matches!(e, Refusal::Conflict(_)), "{e}");
    assert!(e.to_string().contains("under review"), "{e}");
    assert!(!r.servers["ledger"].shared);
    r.transition(&felix, "ledger", State::Approved, Some(&read), "", now())
        .unwrap();
    r.approve_share(&reviewer("rita"), "ledger", Some(&read), now())
        .unwrap();
    assert!(r.servers["ledger"].share_current());
}

/// Whoever registered the definition (an org admin may register a
/// tenant's server) does not approve sharing it either.
#[test]
fn the_registrant_does_not_approve_sharing_their_definition() {
    let mut r = Registry::default();
    let alice = org_admin("alice");
    r.register(
        &alice,
        "ledger",
        Some("finance"),
        &def("a", false),
        &nobody,
        now(),
    )
    .unwrap();
    r.request_share(&tenant_admin("fiona", "finance"), "ledger", now())
        .unwrap();
    for me in [
        org_admin("alice"),
        org_admin("Alice"),
        reviewer("ＡＬＩＣＥ"),
    ] {
        let e = r
            .approve_share(&me, "ledger", Some(&seen(&r)), now())
            .unwrap_err();
        assert!(matches!(e, Refusal::Forbidden(_)), "{}: {e}", me.name);
    }
    r.approve_share(&reviewer("rita"), "ledger", Some(&seen(&r)), now())
        .unwrap();
    assert!(r.servers["ledger"].shared);
}

/// The moves that widen who reaches a definition refuse a `reviewed`
/// digest that is not the current one (a console page read before a new
/// registration); deprecating and retiring never wait on a stale page.
#[test]
fn moves_that_widen_check_the_definition_they_name() {
    let mut r = Registry::default();
    let fiona = tenant_admin("fiona", "finance");
    let felix = tenant_admin("felix", "finance");
    r.register(&fiona, "ledger", None, &def("a", false), &nobody, now())
        .unwrap();
    let stale = seen(&r);
    r.register(&fiona, "ledger", None, &def("b", false), &nobody, now())
        .unwrap();
    assert!(matches!(
        r.transition(&fiona, "ledger", State::Testing, Some(&stale), "", now()),
        Err(Refusal::Changed(_))
    ));
    assert_eq!(r.servers["ledger"].state, State::Draft);
    r.transition(&fiona, "ledger", State::Testing, Some(&seen(&r)), "", now())
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
    assert!(matches!(
        r.transition(&fiona, "ledger", State::Deployed, Some(&stale), "", now()),
        Err(Refusal::Changed(_))
    ));
    assert_eq!(r.servers["ledger"].state, State::Approved);
    r.transition(
        &fiona,
        "ledger",
        State::Deployed,
        Some(&seen(&r)),
        "",
        now(),
    )
    .unwrap();
    r.transition(&fiona, "ledger", State::Deprecated, Some(&stale), "", now())
        .unwrap();
    r.transition(&fiona, "ledger", State::Retired, Some(&stale), "", now())
        .unwrap();
}

/// Shares recorded before a share named its definition: kept (bound to
/// the definition) when no definition was registered after the org
/// approved sharing; withdrawn when one was (the finding's state, left
/// by an agent without the fix), or when the approval is not among the
/// events kept.
#[test]
fn shares_from_before_are_settled() {
    let mut r = deployed();
    let fiona = tenant_admin("fiona", "finance");
    r.request_share(&fiona, "ledger", now()).unwrap();
    r.approve_share(&reviewer("rita"), "ledger", Some(&seen(&r)), now())
        .unwrap();
    // As an older agent kept it.
    let old = |r: &mut Registry| {
        let s = r.servers.get_mut("ledger").unwrap();
        s.share_reviewed = None;
        for e in &mut s.events {
            if e.note.starts_with("shared with every tenant") {
                e.note = "shared with every tenant".into();
            }
        }
    };
    let mut kept = r.clone();
    old(&mut kept);
    assert!(!kept.servers["ledger"].share_current());
    assert!(kept.settle_shares(now()).is_empty());
    assert!(kept.servers["ledger"].share_current());
    // The older agent let a new definition keep the share.
    let mut changed = r.clone();
    changed
        .register(&fiona, "ledger", None, &def("evil", true), &nobody, now())
        .unwrap();
    {
        let s = changed.servers.get_mut("ledger").unwrap();
        s.shared = true;
    }
    old(&mut changed);
    let withdrawn = changed.settle_shares(now());
    assert_eq!(withdrawn.len(), 1);
    assert_eq!(withdrawn[0].0, "ledger");
    let s = &changed.servers["ledger"];
    assert!(!s.shared && s.share_reviewed.is_none());
    assert_eq!(served(&changed)["shared"], false);
    // A move's note (free text) that reads as the approval does not keep
    // a share across a later definition.
    let mut forged = r.clone();
    forged
        .register(&fiona, "ledger", None, &def("evil", true), &nobody, now())
        .unwrap();
    forged
        .transition(
            &tenant_admin("felix", "finance"),
            "ledger",
            State::Approved,
            Some(&seen(&forged)),
            "shared with every tenant",
            now(),
        )
        .unwrap();
    forged.servers.get_mut("ledger").unwrap().shared = true;
    old(&mut forged);
    assert_eq!(forged.settle_shares(now()).len(), 1);
    assert!(!forged.servers["ledger"].shared);
    // No approval among the events: withdrawn.
    let mut lost = r.clone();
    old(&mut lost);
    lost.servers.get_mut("ledger").unwrap().events.clear();
    assert_eq!(lost.settle_shares(now()).len(), 1);
    assert!(!lost.servers["ledger"].shared);
    // Even unsettled, the bundle shares only what the org approved.
    let mut raw = changed.clone();
    raw.servers.get_mut("ledger").unwrap().shared = true;
    assert_eq!(served(&raw)["shared"], false);
}
