//! The typed approval view answers the JSON `Approval::view` answered
//! before it existed (`legacy_view`, the code path it replaced), and the
//! approvals file reads back as it was written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::types::fmt;
use super::*;

fn legacy_view(a: &Approval, now: SystemTime) -> serde_json::Value {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("state".into(), a.state(now).as_str().into());
        o.insert("approvals".into(), a.approvers().len().into());
        if let Some(at) = a.approved_at {
            o.insert(
                "usable_until".into(),
                fmt(at + Duration::from_secs(a.grant_secs)).into(),
            );
        }
        o.insert(
            "waiting_secs".into(),
            now.duration_since(a.requested_at)
                .unwrap_or_default()
                .as_secs()
                .into(),
        );
    }
    v
}

fn claim(principal: &str, args: &str) -> Claim {
    Claim {
        tenant: "acme".into(),
        principal: principal.into(),
        server: "ops".into(),
        tool: "deploy".into(),
        args_digest: warden_filters::chain::plan::args_digest(args),
        arguments: args.into(),
        risk: "CRITICAL".into(),
        reason: "risk_tier:CRITICAL".into(),
        justification: Some("release".into()),
        required: 1,
        pending_secs: 60,
        grant_secs: 30,
        gateway: "gw1".into(),
        trace_id: Some("t1".into()),
        nonce: None,
        for_tenants: vec!["acme".into()],
    }
}

fn id_of(a: &ClaimAnswer) -> String {
    match a {
        ClaimAnswer::Approved { id, .. }
        | ClaimAnswer::Pending { id, .. }
        | ClaimAnswer::Denied { id, .. } => id.clone(),
    }
}

#[test]
fn the_view_answers_the_json_the_approval_answered() {
    let d = tempfile::tempdir().unwrap();
    let approvers = ["alice", "bob"]
        .into_iter()
        .map(|n| (n.to_owned(), Approver::default()))
        .collect();
    let ap = Approvals::open(d.path(), approvers).unwrap();
    let now = SystemTime::now();
    let pending = id_of(&ap.claim(claim("p1", "{}"), None, now).unwrap());
    let approved = id_of(&ap.claim(claim("p2", "{\"a\":1}"), None, now).unwrap());
    let denied = id_of(&ap.claim(claim("p3", "{\"b\":2}"), None, now).unwrap());
    let decided = ap
        .decision(&approved, "alice", Verdict::Approve, Some("ok".into()), now)
        .unwrap();
    let decided = serde_json::to_value(decided).unwrap();
    ap.decision(&denied, "bob", Verdict::Deny, None, now)
        .unwrap();
    let used = id_of(&ap.claim(claim("p2", "{\"a\":1}"), None, now).unwrap());
    assert_eq!(used, approved);
    let later = now + Duration::from_secs(5);
    let all = ap.lock().all.clone();
    assert_eq!(all.len(), 3);
    for (id, a) in &all {
        assert_eq!(
            serde_json::to_value(ap.get_view(id, None, later).unwrap()).unwrap(),
            legacy_view(a, later)
        );
        assert_eq!(
            serde_json::to_value(a.view_of(later)).unwrap(),
            legacy_view(a, later)
        );
    }
    assert_eq!(decided["state"], "approved");
    assert!(decided["usable_until"].is_string());
    assert!(
        serde_json::to_value(ap.get_view(&pending, None, later).unwrap())
            .unwrap()
            .get("usable_until")
            .is_none()
    );
    let listed = serde_json::to_value(ap.list_view(true, None, later)).unwrap();
    let mut want: Vec<&Approval> = all.values().collect();
    want.sort_by_key(|a| a.requested_at);
    let want = serde_json::Value::Array(want.iter().map(|a| legacy_view(a, later)).collect());
    assert_eq!(listed, want);
    assert_eq!(
        serde_json::to_value(ap.list_in_view(true, &["acme".into()], later)).unwrap(),
        want
    );
    // Kept as written: read back, the same approvals.
    let again = Approvals::open(d.path(), BTreeMap::new()).unwrap();
    let kept = again.lock().all.clone();
    assert_eq!(
        serde_json::to_string(&kept).unwrap(),
        serde_json::to_string(&all).unwrap()
    );
    assert_eq!(Refused::NotFound.status(), 404);
    assert_eq!(ClaimRefused::Full.status(), 429);
}
