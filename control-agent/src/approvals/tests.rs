//! Unit tests of the approval queue: claims, decisions, approver rules.

use super::*;

fn claim(principal: &str, n: u8) -> Claim {
    Claim {
        tenant: "acme".into(),
        principal: principal.into(),
        server: "ops".into(),
        tool: "deploy".into(),
        args_digest: warden_filters::chain::plan::args_digest("{}"),
        arguments: "{}".into(),
        risk: "CRITICAL".into(),
        reason: "risk_tier:CRITICAL".into(),
        justification: None,
        required: n,
        pending_secs: 60,
        grant_secs: 30,
        gateway: "gw1".into(),
        trace_id: None,
        nonce: None,
        for_tenants: Vec::new(),
    }
}

/// The approvers the tests decide as: each of every tenant.
fn approvers() -> BTreeMap<String, Approver> {
    ["alice", "bob", "agent-7"]
        .into_iter()
        .map(|n| (n.to_owned(), Approver::default()))
        .collect()
}

fn open() -> (tempfile::TempDir, Approvals) {
    let d = tempfile::tempdir().expect("tempdir");
    let a = Approvals::open(d.path(), approvers()).expect("open");
    (d, a)
}

fn id_of(a: &ClaimAnswer) -> String {
    match a {
        ClaimAnswer::Approved { id, .. }
        | ClaimAnswer::Pending { id, .. }
        | ClaimAnswer::Denied { id, .. } => id.clone(),
    }
}

#[test]
fn two_distinct_approvers_then_one_use() {
    let (_d, ap) = open();
    let t0 = SystemTime::now();
    let first = ap.claim(claim("agent-7", 2), None, t0).expect("claim");
    assert!(matches!(first, ClaimAnswer::Pending { created: true, .. }));
    let id = id_of(&first);
    // The same call again finds the same approval.
    let again = ap.claim(claim("agent-7", 2), None, t0).expect("claim");
    assert!(matches!(&again, ClaimAnswer::Pending { created: false, id: i, .. } if *i == id));
    assert_eq!(
        ap.decision(&id, "agent-7", Verdict::Approve, None, t0)
            .err(),
        Some(Refused::SelfApproval)
    );
    ap.decision(&id, "alice", Verdict::Approve, None, t0)
        .expect("alice");
    assert_eq!(
        ap.decision(&id, "alice", Verdict::Approve, None, t0).err(),
        Some(Refused::Already("alice".into()))
    );
    assert!(matches!(
        ap.claim(claim("agent-7", 2), None, t0).expect("claim"),
        ClaimAnswer::Pending { approvals: 1, .. }
    ));
    ap.decision(&id, "bob", Verdict::Approve, None, t0)
        .expect("bob");
    assert!(matches!(
        ap.claim(claim("agent-7", 2), None, t0).expect("claim"),
        ClaimAnswer::Approved { approvers, .. } if approvers.len() == 2
    ));
    // Used: the next identical call needs a new approval.
    let next = ap.claim(claim("agent-7", 2), None, t0).expect("claim");
    assert!(matches!(&next, ClaimAnswer::Pending { created: true, id: i, .. } if *i != id));
    // Kept across a restart.
    let reopened = Approvals::open(_d.path(), approvers()).expect("reopen");
    assert_eq!(
        reopened.get_view(&id, None, t0).map(|v| v.state),
        Some(State::Used)
    );
}

#[test]
fn approvals_lapse_and_denials_are_told_once() {
    let (_d, ap) = open();
    let t0 = SystemTime::now();
    let id = id_of(&ap.claim(claim("agent-7", 1), None, t0).expect("claim"));
    ap.decision(&id, "alice", Verdict::Approve, None, t0)
        .expect("approve");
    // Usable for grant_secs (30 s) only.
    let late = t0 + Duration::from_secs(31);
    assert!(matches!(
        ap.claim(claim("agent-7", 1), None, late).expect("claim"),
        ClaimAnswer::Pending { created: true, .. }
    ));
    let id2 = ap.list_view(false, None, late)[0].approval.id.clone();
    ap.decision(&id2, "bob", Verdict::Deny, Some("not today".into()), late)
        .expect("deny");
    assert!(matches!(
        ap.claim(claim("agent-7", 1), None, late).expect("claim"),
        ClaimAnswer::Denied { by, .. } if by.approver == "bob"
    ));
    // The denial holds for the pending time: no flood of new requests.
    assert!(matches!(
        ap.claim(claim("agent-7", 1), None, late).expect("claim"),
        ClaimAnswer::Denied { .. }
    ));
    let late = late + Duration::from_secs(61);
    assert!(matches!(
        ap.claim(claim("agent-7", 1), None, late).expect("claim"),
        ClaimAnswer::Pending { created: true, .. }
    ));
    // A pending approval nobody answers lapses.
    let id3 = ap.list_view(false, None, late)[0].approval.id.clone();
    let lapsed = late + Duration::from_secs(61);
    assert_eq!(
        ap.decision(&id3, "alice", Verdict::Approve, None, lapsed)
            .err(),
        Some(Refused::Finished("expired"))
    );
}

/// One person however the name is spelled: a non-ASCII caller cannot
/// approve his own call under another case, and one person is never
/// two approvers.
#[test]
fn one_person_is_one_approver_in_any_spelling() {
    let d = tempfile::tempdir().expect("tempdir");
    let approvers = BTreeMap::from([
        ("ÖLAF".to_owned(), Approver::default()),
        ("bob".to_owned(), Approver::default()),
    ]);
    let ap = Approvals::open(d.path(), approvers).expect("open");
    let t0 = SystemTime::now();
    let id = id_of(&ap.claim(claim("ölaf", 2), None, t0).expect("claim"));
    assert_eq!(
        ap.decision(&id, "ÖLAF", Verdict::Approve, None, t0).err(),
        Some(Refused::SelfApproval)
    );
    // Files that name one person twice are refused whole.
    for (text, what) in [
        ("alice: {h}\nALICE: {h2}\n", "case"),
        (
            "alice: {h}\nbob: {{token_sha256: {h2}, principals: [acme/Alice]}}\n",
            "tenant",
        ),
        ("ölaf: {h}\nÖLAF: {h2}\n", "Unicode case"),
        ("olaf: {h}\n\"o\\u0308laf\": {h2}\n", "normalisation"),
        ("\"al\\u200bice\": {h}\n", "invisible"),
        ("ann: {h}\n\"acme\\uff0fann\": {h2}\n", "full-width solidus"),
        (
            "ann: {h}\nbob: {{token_sha256: {h2}, principals: [\"acme\\uff0fAnn\"]}}\n",
            "full-width solidus in principals",
        ),
    ] {
        let text = text
            .replace("{h}", &"a".repeat(64))
            .replace("{h2}", &"b".repeat(64))
            .replace("{{", "{")
            .replace("}}", "}");
        let f = d.path().join("approvers.yaml");
        std::fs::write(&f, text).expect("write");
        assert!(read_approvers_file(&f).is_err(), "{what}");
    }
    // A name or a principal qualified by a full-width solidus is the
    // caller as the ASCII slash makes it.
    let solidus = d.path().join("solidus");
    std::fs::create_dir_all(&solidus).expect("dir");
    let ap = Approvals::open(
        &solidus,
        BTreeMap::from([
            ("acme\u{ff0f}agent-7".to_owned(), Approver::default()),
            (
                "carol".to_owned(),
                Approver {
                    principals: vec!["\u{ff41}cme\u{ff0f}Agent-7".into()],
                    ..Approver::default()
                },
            ),
        ]),
    )
    .expect("open");
    let id = id_of(&ap.claim(claim("agent-7", 2), None, t0).expect("claim"));
    for who in ["acme\u{ff0f}agent-7", "carol"] {
        assert_eq!(
            ap.decision(&id, who, Verdict::Approve, None, t0).err(),
            Some(Refused::SelfApproval),
            "{who}"
        );
    }
    let f = d.path().join("approvers.yaml");
    std::fs::write(
        &f,
        format!("alice: {}\nalicia: {}\n", "a".repeat(64), "b".repeat(64)),
    )
    .expect("write");
    assert_eq!(read_approvers_file(&f).expect("distinct people").len(), 2);
}

#[test]
fn approvers_never_approve_themselves_and_see_their_tenants() {
    let d = tempfile::tempdir().expect("tempdir");
    let approvers = BTreeMap::from([
        ("Agent-7".to_owned(), Approver::default()),
        (
            "carol".to_owned(),
            Approver {
                principals: vec!["acme/agent-7".into()],
                ..Approver::default()
            },
        ),
        (
            "dave".to_owned(),
            Approver {
                tenants: vec!["globex".into()],
                ..Approver::default()
            },
        ),
    ]);
    let ap = Approvals::open(d.path(), approvers).expect("open");
    let t0 = SystemTime::now();
    let id = id_of(&ap.claim(claim("agent-7", 1), None, t0).expect("claim"));
    // The same name in another case, and a listed principal, are the caller.
    assert_eq!(
        ap.decision(&id, "Agent-7", Verdict::Approve, None, t0)
            .err(),
        Some(Refused::SelfApproval)
    );
    assert_eq!(
        ap.decision(&id, "carol", Verdict::Approve, None, t0).err(),
        Some(Refused::SelfApproval)
    );
    // Another tenant's approver does not see it.
    assert_eq!(
        ap.decision(&id, "dave", Verdict::Approve, None, t0).err(),
        Some(Refused::NotFound)
    );
    assert!(ap.list_view(false, Some("dave"), t0).is_empty());
    assert_eq!(ap.list_view(false, Some("carol"), t0).len(), 1);
}

/// An approver or a tenant admin of finance sees finance's held calls
/// (`finance` in any ASCII case), never those of a principal whose tenant
/// claim only looks like finance: the admin and an unscoped approver see
/// them all.
#[test]
fn a_look_alike_tenants_calls_are_not_the_tenants() {
    let d = tempfile::tempdir().expect("tempdir");
    let approvers = BTreeMap::from([
        (
            "fran".to_owned(),
            Approver {
                tenants: vec!["finance".into()],
                ..Approver::default()
            },
        ),
        (
            "eve".to_owned(),
            Approver {
                tenants: vec!["financ\u{e9}".into()],
                ..Approver::default()
            },
        ),
        ("olga".to_owned(), Approver::default()),
    ]);
    let ap = Approvals::open(d.path(), approvers).expect("open");
    let t0 = SystemTime::now();
    let tenants = [
        "finance",
        "FINANCE",
        "financ\u{e9}",
        "\u{fb01}nance",
        "\u{ff46}\u{ff49}\u{ff4e}\u{ff41}\u{ff4e}\u{ff43}\u{ff45}",
        "finance\u{301}",
    ];
    let ids: Vec<String> = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let c = Claim {
                tenant: (*t).to_owned(),
                ..claim(&format!("bot-{i}"), 1)
            };
            id_of(&ap.claim(c, None, t0).expect("claim"))
        })
        .collect();
    let listed = |v: Vec<ApprovalView>| -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|a| a.approval.id.clone()).collect();
        v.sort();
        v
    };
    let of = |which: &[usize]| -> Vec<String> {
        let mut v: Vec<String> = which.iter().map(|i| ids[*i].clone()).collect();
        v.sort();
        v
    };
    assert_eq!(listed(ap.list_view(true, Some("fran"), t0)), of(&[0, 1]));
    assert_eq!(
        listed(ap.list_in_view(true, &["finance".into()], t0)),
        of(&[0, 1])
    );
    assert_eq!(
        listed(ap.list_in_view(true, &["Finance".into()], t0)),
        of(&[0, 1])
    );
    // financé, precomposed or not, is one tenant: not finance.
    assert_eq!(listed(ap.list_view(true, Some("eve"), t0)), of(&[2, 5]));
    assert_eq!(
        listed(ap.list_in_view(true, &["finance\u{301}".into()], t0)),
        of(&[2, 5])
    );
    for (i, id) in ids.iter().enumerate() {
        let finances = i < 2;
        assert_eq!(
            ap.get_view(id, Some("fran"), t0).is_some(),
            finances,
            "{:?}",
            tenants[i]
        );
        assert!(ap.get_view(id, Some("olga"), t0).is_some());
        assert!(ap.get_view(id, None, t0).is_some());
        if !finances {
            assert_eq!(
                ap.decision(id, "fran", Verdict::Approve, None, t0).err(),
                Some(Refused::NotFound),
                "{:?}",
                tenants[i]
            );
        }
    }
    assert_eq!(
        listed(ap.list_view(true, Some("olga"), t0)),
        of(&[0, 1, 2, 3, 4, 5])
    );
    assert_eq!(
        listed(ap.list_view(true, None, t0)),
        of(&[0, 1, 2, 3, 4, 5])
    );
    assert!(ap
        .decision(&ids[0], "fran", Verdict::Approve, None, t0)
        .is_ok());
}

/// A name the approvers file does not hold is nobody: it sees no
/// approval (not every tenant's, as a default approver would) and
/// decides none.
#[test]
fn an_unknown_approver_sees_and_decides_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let approvers = BTreeMap::from([(
        "dave".to_owned(),
        Approver {
            tenants: vec!["globex".into()],
            ..Approver::default()
        },
    )]);
    let ap = Approvals::open(d.path(), approvers).expect("open");
    let t0 = SystemTime::now();
    let id = id_of(&ap.claim(claim("agent-7", 1), None, t0).expect("claim"));
    for who in ["mallory", "", "Dave2"] {
        for verdict in [Verdict::Approve, Verdict::Deny] {
            assert_eq!(
                ap.decision(&id, who, verdict, None, t0).err(),
                Some(Refused::NotFound),
                "{who:?}"
            );
        }
        assert!(ap.list_view(true, Some(who), t0).is_empty(), "{who:?}");
        assert!(ap.get_view(&id, Some(who), t0).is_none(), "{who:?}");
    }
    // Nothing was decided: the call still waits, with no decision.
    let v = ap.get_view(&id, None, t0).expect("kept");
    assert_eq!(v.state, State::Pending);
    assert_eq!(v.approval.decisions.len(), 0);
}

#[test]
fn claims_show_approvers_what_the_digest_binds() {
    let (_d, ap) = open();
    let t0 = SystemTime::now();
    let mut lie = claim("agent-7", 1);
    lie.arguments = r#"{"harmless":true}"#.into();
    assert!(matches!(
        ap.claim(lie, None, t0),
        Err(ClaimRefused::DigestMismatch)
    ));
    let mut big = claim("agent-7", 1);
    big.arguments = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_SHOWN_ARGS));
    big.args_digest = warden_filters::chain::plan::args_digest(&big.arguments);
    assert!(matches!(
        ap.claim(big, None, t0),
        Err(ClaimRefused::TooLarge(_))
    ));
    // A later claim asking more approvers raises what the approval needs.
    let id = id_of(&ap.claim(claim("agent-7", 1), None, t0).expect("claim"));
    ap.decision(&id, "alice", Verdict::Approve, None, t0)
        .expect("alice");
    assert!(matches!(
        ap.claim(claim("agent-7", 2), None, t0).expect("claim"),
        ClaimAnswer::Pending {
            required: 2,
            approvals: 1,
            ..
        }
    ));
}

#[test]
fn ids_are_long_and_distinct() {
    let a = new_id();
    assert_eq!(a.len(), 3 + 26);
    assert_ne!(a, new_id());
}

/// A call a tenant's own rules held (its layer, on its server, called by
/// another tenant's principal) is decided by that tenant's approvers: the
/// caller's tenant's see it but may not decide it.
#[test]
fn the_tenant_whose_rules_held_a_call_decides_it() {
    let d = tempfile::tempdir().expect("tempdir");
    let scoped = |t: &str| Approver {
        tenants: vec![t.to_owned()],
        ..Approver::default()
    };
    let approvers = BTreeMap::from([
        ("fin_appr".to_owned(), scoped("finance")),
        ("hr_appr".to_owned(), scoped("hr")),
        ("ops_appr".to_owned(), scoped("ops")),
    ]);
    let ap = Approvals::open(d.path(), approvers).expect("open");
    let t0 = SystemTime::now();
    let c = Claim {
        tenant: "hr".into(),
        for_tenants: vec!["finance".into()],
        ..claim("h", 1)
    };
    let id = id_of(&ap.claim(c, None, t0).expect("claim"));
    assert_eq!(
        ap.decision(&id, "hr_appr", Verdict::Approve, None, t0)
            .err(),
        Some(Refused::NotTheirs)
    );
    assert_eq!(
        ap.decision(&id, "ops_appr", Verdict::Approve, None, t0)
            .err(),
        Some(Refused::NotFound)
    );
    assert!(
        ap.get_view(&id, Some("fin_appr"), t0).is_some(),
        "shown to finance"
    );
    assert!(
        ap.get_view(&id, Some("hr_appr"), t0).is_some(),
        "shown to hr"
    );
    ap.decision(&id, "fin_appr", Verdict::Approve, None, t0)
        .expect("finance decides");
}

/// A claim under a bundle that now has the owner's rules hold the call
/// (`for_tenants` grows) does not take an approval the caller's tenant's
/// approvers gave before: the owner's approvers must decide it too.
#[test]
fn a_claim_naming_more_deciding_tenants_needs_their_approvers() {
    let d = tempfile::tempdir().expect("tempdir");
    let scoped = |t: &str| Approver {
        tenants: vec![t.to_owned()],
        ..Approver::default()
    };
    let approvers = BTreeMap::from([
        ("fin_appr".to_owned(), scoped("finance")),
        ("hr_appr".to_owned(), scoped("hr")),
    ]);
    let ap = Approvals::open(d.path(), approvers).expect("open");
    let t0 = SystemTime::now();
    let before = Claim {
        tenant: "hr".into(),
        ..claim("h", 1)
    };
    let id = id_of(&ap.claim(before.clone(), None, t0).expect("claim"));
    ap.decision(&id, "hr_appr", Verdict::Approve, None, t0)
        .expect("hr decides under the old bundle");
    let after = Claim {
        for_tenants: vec!["finance".into()],
        ..before
    };
    match ap.claim(after.clone(), None, t0).expect("claim") {
        ClaimAnswer::Pending {
            id: same,
            approvals,
            ..
        } => {
            assert_eq!(same, id);
            assert_eq!(approvals, 0, "hr's approval no longer counts");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ap.decision(&id, "hr_appr", Verdict::Approve, None, t0)
            .err(),
        Some(Refused::NotTheirs)
    );
    ap.decision(&id, "fin_appr", Verdict::Approve, None, t0)
        .expect("finance decides");
    assert!(matches!(
        ap.claim(after, None, t0).expect("claim"),
        ClaimAnswer::Approved { .. }
    ));
}

/// An approver never approves a call made under their own name, whatever
/// minted the credential (a tenant layer's key: holder `bob~layer`; a
/// token whose subject holds a `~`: `bob~x~principal`).
#[test]
fn a_suffixed_holder_is_still_the_approvers_own_call() {
    let d = tempfile::tempdir().expect("tempdir");
    let approvers = BTreeMap::from([
        ("bob".to_owned(), Approver::default()),
        ("bob~x".to_owned(), Approver::default()),
        ("carol".to_owned(), Approver::default()),
    ]);
    let ap = Approvals::open(d.path(), approvers).expect("open");
    let t0 = SystemTime::now();
    for (holder, own) in [("bob~layer", "bob"), ("bob~x~principal", "bob~x")] {
        let id = id_of(&ap.claim(claim(holder, 1), None, t0).expect("claim"));
        assert_eq!(
            ap.decision(&id, own, Verdict::Approve, None, t0).err(),
            Some(Refused::SelfApproval),
            "{holder}"
        );
        ap.decision(&id, "carol", Verdict::Approve, None, t0)
            .expect("another approver");
    }
}

/// Unauthenticated callers, one holder per session, share one principal's
/// share of pending approvals: opening sessions does not fill the table.
#[test]
fn anonymous_holders_share_one_share_of_the_pending_table() {
    let (_d, ap) = open();
    let t0 = SystemTime::now();
    let mut refused = None;
    for i in 0..60u32 {
        let holder = format!("anonymous~{:016x}", u64::from(i) * 7919);
        match ap.claim(claim(&holder, 1), None, t0) {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, why) = refused.expect("a limit");
    assert_eq!(at, 50);
    assert!(matches!(why, ClaimRefused::TooMany), "{why:?}");
    // An authenticated principal still has its own share.
    ap.claim(claim("alice", 1), None, t0).expect("alice");
}

/// What one claim may make the table hold is bounded: a name longer than
/// any is refused, a reason or justification is kept in part.
#[test]
fn a_claims_fields_are_bounded() {
    let (_d, ap) = open();
    let t0 = SystemTime::now();
    for field in ["tenant", "principal", "server", "tool", "risk", "gateway"] {
        let mut c = claim("agent-7", 1);
        let long = "x".repeat(MAX_CLAIM_NAME + 1);
        match field {
            "tenant" => c.tenant = long,
            "principal" => c.principal = long,
            "server" => c.server = long,
            "tool" => c.tool = long,
            "risk" => c.risk = long,
            _ => c.gateway = long,
        }
        let Err(e) = ap.claim(c, None, t0) else {
            panic!("a {field} over the bound is refused");
        };
        assert!(matches!(e, ClaimRefused::Malformed(f) if f == field), "{e}");
    }
    let mut c = claim("agent-7", 1);
    c.for_tenants = vec!["t".into(); MAX_CLAIM_TENANTS + 1];
    assert!(ap.claim(c, None, t0).is_err());
    let mut c = claim("agent-7", 1);
    c.nonce = Some("n".repeat(MAX_CLAIM_NAME + 1));
    assert!(ap.claim(c, None, t0).is_err());
    // A megabyte of justification keeps its first 4 KiB.
    let mut c = claim("agent-7", 1);
    c.justification = Some("ü".repeat(500_000));
    c.reason = "r".repeat(1 << 20);
    let id = id_of(&ap.claim(c, None, t0).expect("claim"));
    let shown = ap.get_view(&id, None, t0).expect("kept");
    let text = serde_json::to_string(&shown).expect("json");
    assert!(text.len() < 3 * MAX_CLAIM_TEXT, "{}", text.len());
    assert!(text.contains("(cut)"));
}

/// An approvers file's approvers, read as the agent reads it.
fn read_approvers_file(f: &std::path::Path) -> anyhow::Result<BTreeMap<String, Approver>> {
    crate::caller::people::read(f, crate::caller::people::FileKind::Approvers).map(|p| p.approvers)
}

/// An approver the identity provider made (not in the approvers file)
/// decides as the principals and tenants it was given: never the call of
/// a principal it also is, never twice as one person with a token and a
/// sign-in, never a tenant it does not see; its decision keeps who it was,
/// so a widened approval drops it as it drops a file approver's.
#[test]
fn an_approver_signed_in_through_the_provider_is_who_the_provider_made_them() {
    let (_d, ap) = open();
    let t0 = SystemTime::now();
    let oidc = |principals: &[&str], tenants: &[&str]| Approver {
        principals: principals.iter().map(|p| (*p).to_owned()).collect(),
        tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        ..Approver::default()
    };
    let id = id_of(&ap.claim(claim("agent-7", 2), None, t0).expect("claim"));
    // The principal they are, in another spelling.
    assert_eq!(
        ap.decision_by(
            &id,
            "oidc:u-7",
            Some(&oidc(&["AGENT-7"], &[])),
            Verdict::Approve,
            None,
            t0
        )
        .err(),
        Some(Refused::SelfApproval)
    );
    // Another tenant's approver sees nothing of acme.
    assert_eq!(
        ap.decision_by(
            &id,
            "oidc:u-8",
            Some(&oidc(&["u-8"], &["globex"])),
            Verdict::Approve,
            None,
            t0
        )
        .err(),
        Some(Refused::NotFound)
    );
    // `alice` with her token, then `alice` signed in: one person.
    ap.decision(&id, "alice", Verdict::Approve, None, t0)
        .expect("alice");
    assert_eq!(
        ap.decision_by(
            &id,
            "oidc:a-1",
            Some(&oidc(&["Alice"], &[])),
            Verdict::Approve,
            None,
            t0
        )
        .err(),
        Some(Refused::Already("oidc:a-1".into()))
    );
    // A second person signed in completes it; the decision keeps who.
    let v = ap
        .decision_by(
            &id,
            "oidc:u-9",
            Some(&oidc(&["u-9"], &["acme"])),
            Verdict::Approve,
            None,
            t0,
        )
        .expect("u-9");
    assert_eq!(v.state.as_str(), "approved");
    let kept = ap.lock().all[&id].decisions[1].decider.clone();
    assert_eq!(
        kept,
        Some(Decider {
            principals: vec!["u-9".into()],
            tenants: vec!["acme".into()]
        })
    );
    // Without the provider's word, a name the file does not hold is nobody.
    let other = id_of(&ap.claim(claim("agent-8", 1), None, t0).expect("claim"));
    assert_eq!(
        ap.decision(&other, "oidc:u-9", Verdict::Approve, None, t0)
            .err(),
        Some(Refused::NotFound)
    );
}

/// A caller whose id holds a slash once folded (`acme/alice` as a bare id,
/// `a℅b`) matches no approver's principals, which read such a name as a
/// tenant's person: nobody approves its calls rather than anybody.
#[test]
fn a_caller_whose_id_reads_with_a_slash_is_nobodys_to_approve() {
    let (_d, ap) = open();
    let t0 = SystemTime::now();
    for principal in ["acme/alice", "a\u{2105}b", "x\u{ff0f}y"] {
        let id = id_of(&ap.claim(claim(principal, 1), None, t0).expect("claim"));
        assert_eq!(
            ap.decision(&id, "bob", Verdict::Approve, None, t0).err(),
            Some(Refused::SelfApproval),
            "{principal}"
        );
    }
}

/// A claim of the same call at a higher risk tier raises the approval's
/// tier, and approvals given for the lower one no longer count (a CRITICAL
/// approval asks more of its approvers than a LOW one did).
#[test]
fn a_call_claimed_again_at_a_higher_tier_needs_approvals_of_that_tier() {
    let (_d, ap) = open();
    let t0 = SystemTime::now();
    let mut low = claim("agent-7", 1);
    low.risk = "LOW".into();
    let id = id_of(&ap.claim(low, None, t0).expect("claim"));
    ap.decision(&id, "alice", Verdict::Approve, None, t0)
        .expect("alice");
    let again = ap.claim(claim("agent-7", 1), None, t0).expect("claim");
    assert!(
        matches!(&again, ClaimAnswer::Pending { id: i, approvals: 0, .. } if *i == id),
        "{again:?}"
    );
    let v = ap.get_view(&id, None, t0).expect("kept");
    assert_eq!(v.approval.risk, "CRITICAL");
    ap.decision(&id, "bob", Verdict::Approve, None, t0)
        .expect("bob");
    assert!(matches!(
        ap.claim(claim("agent-7", 1), None, t0).expect("claim"),
        ClaimAnswer::Approved { .. }
    ));
}

/// A just-in-time grant's request for `principal` of acme: `deploy` for
/// `secs`.
fn grant_request(principal: &str, secs: u64) -> Claim {
    let arguments = format!(
        "{{\"duration_secs\":{secs},\"kind\":\"tool\",\"name\":\"deploy\",\"server\":null}}"
    );
    Claim {
        server: jit::GRANT_SERVER.into(),
        tool: "tool:*/deploy".into(),
        args_digest: warden_filters::chain::plan::args_digest(&arguments),
        arguments,
        risk: "HIGH".into(),
        reason: "just-in-time access asked by admin".into(),
        justification: Some("incident 7".into()),
        pending_secs: 3600,
        grant_secs: secs,
        gateway: "agent:admin".into(),
        ..claim(principal, 1)
    }
}

/// A grant's request: asked again while in play it is the same one; it
/// is listed to gateways once approved, never taken by a gateway's claim
/// (even one naming every field of it), never approved by the principal
/// it is for, withdrawn by a denial, and asked anew once it has ended.
#[test]
fn a_grant_request_from_asking_to_its_end() {
    let (_d, ap) = open();
    let t0 = SystemTime::now();
    let v = ap
        .request_grant(grant_request("agent-7", 60), t0)
        .expect("asked");
    let id = v.approval.id.clone();
    assert!(v.approval.jit && v.state == State::Pending);
    assert!(ap.active_grants(t0).is_empty(), "pending is no grant");
    let again = ap
        .request_grant(grant_request("agent-7", 60), t0)
        .expect("asked");
    assert_eq!(again.approval.id, id);
    // No gateway claims it, in any spelling of the reserved server.
    for server in [jit::GRANT_SERVER, "~GRANT", "~other"] {
        let c = Claim {
            server: server.into(),
            ..grant_request("agent-7", 60)
        };
        assert!(
            matches!(
                ap.claim(c, None, t0),
                Err(ClaimRefused::Malformed("server"))
            ),
            "{server}"
        );
    }
    assert_eq!(
        ap.decision(&id, "agent-7", Verdict::Approve, None, t0)
            .err(),
        Some(Refused::SelfApproval)
    );
    ap.decision(&id, "alice", Verdict::Approve, None, t0)
        .expect("alice");
    let held = ap.active_grants(t0);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].1, t0 + Duration::from_secs(60));
    assert_eq!(
        ap.request_grant(grant_request("agent-7", 60), t0)
            .expect("asked")
            .approval
            .id,
        id,
        "asked while it holds: the same grant"
    );
    // Over at its end.
    let end = t0 + Duration::from_secs(61);
    assert!(ap.active_grants(end).is_empty());
    let anew = ap
        .request_grant(grant_request("agent-7", 60), end)
        .expect("asked");
    assert_ne!(anew.approval.id, id);
    ap.decision(&anew.approval.id, "bob", Verdict::Approve, None, end)
        .expect("bob");
    assert_eq!(ap.active_grants(end).len(), 1);
    // Withdrawn by a denial, and asked again it stays denied for its
    // pending time.
    ap.decision(&anew.approval.id, "alice", Verdict::Deny, None, end)
        .expect("withdrawn");
    assert!(ap.active_grants(end).is_empty());
    let denied = ap
        .request_grant(grant_request("agent-7", 60), end)
        .expect("asked");
    assert_eq!(denied.approval.id, anew.approval.id);
    assert_eq!(denied.state, State::Denied);
}

/// What [`SharedStore`] keeps: the approvals, the generation, and
/// whether it is unreachable.
#[derive(Default)]
struct Kept {
    all: BTreeMap<String, Approval>,
    generation: u64,
    down: bool,
}

/// A store two queues share, as two agents share one database (a turn
/// each, a generation bumped by every write), that can go away.
#[derive(Clone, Default)]
struct SharedStore(std::sync::Arc<Mutex<Kept>>);

impl SharedStore {
    fn down(&self, down: bool) {
        self.0.lock().expect("store").down = down;
    }

    fn up(&self) -> std::io::Result<MutexGuard<'_, Kept>> {
        let g = self.0.lock().expect("store");
        if g.down {
            return Err(std::io::Error::other("the database is unreachable"));
        }
        Ok(g)
    }
}

impl ApprovalBackend for SharedStore {
    fn load(&self) -> anyhow::Result<BTreeMap<String, Approval>> {
        Ok(self.up()?.all.clone())
    }
    fn save(&self, all: &BTreeMap<String, Approval>, _: &Changes) -> std::io::Result<()> {
        let mut g = self.up()?;
        g.all = all.clone();
        g.generation += 1;
        Ok(())
    }
    fn begin(&self) -> std::io::Result<Option<u64>> {
        Ok(Some(self.up()?.generation))
    }
    fn commit(&self) -> std::io::Result<Option<u64>> {
        Ok(Some(self.up()?.generation))
    }
    fn generation(&self) -> std::io::Result<Option<u64>> {
        Ok(Some(self.up()?.generation))
    }
}

/// Two agents on one database: a grant withdrawn on one is not listed by
/// the other, though nothing told it (its memory is brought up to date
/// first), and an agent that cannot reach the database lists no grant
/// rather than those it last saw (gateways ask another agent).
#[test]
fn an_agent_lists_the_grants_the_database_holds_or_none() {
    let store = SharedStore::default();
    let a = Approvals::with_backend(Box::new(store.clone()), approvers()).expect("a");
    let b = Approvals::with_backend(Box::new(store.clone()), approvers()).expect("b");
    let t0 = SystemTime::now();
    let id = a
        .request_grant(grant_request("agent-7", 600), t0)
        .expect("asked")
        .approval
        .id;
    a.decision(&id, "alice", Verdict::Approve, None, t0)
        .expect("alice");
    assert_eq!(b.current_grants(t0).expect("b lists").len(), 1);
    a.decision(&id, "bob", Verdict::Deny, None, t0)
        .expect("withdrawn");
    assert!(b.current_grants(t0).expect("b lists").is_empty());
    // Approved again (a new request), then withdrawn while b cannot see it.
    let id = a
        .request_grant(grant_request("agent-8", 600), t0)
        .expect("asked")
        .approval
        .id;
    a.decision(&id, "alice", Verdict::Approve, None, t0)
        .expect("alice");
    assert_eq!(b.current_grants(t0).expect("b lists").len(), 1);
    a.decision(&id, "bob", Verdict::Deny, None, t0)
        .expect("withdrawn");
    store.down(true);
    assert!(matches!(b.current_grants(t0), Err(Unavailable(_))));
    store.down(false);
    assert!(b.current_grants(t0).expect("b lists").is_empty());
}

/// Whoever asked a grant does not approve it (a tenant admin who is also
/// an approver would otherwise widen access alone), in any spelling of
/// their name; another approver does.
#[test]
fn the_asker_of_a_grant_never_approves_it() {
    let (_d, ap) = open();
    let t0 = SystemTime::now();
    let asked = Claim {
        gateway: "agent:admin:Alice".into(),
        ..grant_request("agent-9", 60)
    };
    let id = ap.request_grant(asked, t0).expect("asked").approval.id;
    assert_eq!(
        ap.decision(&id, "alice", Verdict::Approve, None, t0).err(),
        Some(Refused::SelfApproval)
    );
    let by_approver = Claim {
        gateway: "agent:approver:bob".into(),
        ..grant_request("agent-8", 60)
    };
    let other = ap
        .request_grant(by_approver, t0)
        .expect("asked")
        .approval
        .id;
    assert_eq!(
        ap.decision(&other, "bob", Verdict::Approve, None, t0).err(),
        Some(Refused::SelfApproval)
    );
    ap.decision(&id, "bob", Verdict::Approve, None, t0)
        .expect("bob approves alice's");
    ap.decision(&other, "alice", Verdict::Approve, None, t0)
        .expect("alice approves bob's");
}
