//! Who a gateway id stands for (one process, or several sharing it), and
//! what a canary's members must do for it to be promoted: keep reporting,
//! not restart, not withhold what their servers answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::layer_tests::org_store;
use super::*;
use crate::rollout::{Selector, Stats, Verdict};

pub(crate) fn stats(calls: u64) -> Stats {
    Stats {
        calls,
        replies: calls,
        latency: vec![(0.01, calls), (1e9, calls)],
        ..Stats::default()
    }
}

/// A gateway's report of `revision`, which the agent served it first (as
/// a gateway's bundle fetch is answered).
pub(crate) fn report(s: &Store, id: &str, instance: Option<&str>, revision: &str, st: Stats) {
    s.served_to(id, instance.unwrap_or(""), &Labels::new(), revision);
    s.accept_report(Report {
        id: id.into(),
        instance: instance.map(str::to_owned),
        revision: revision.into(),
        healthy: true,
        last_error: None,
        labels: Labels::new(),
        stats: st,
        upstreams: vec![],
    })
    .unwrap();
}

fn member<'a>(fleet: &'a FleetView, id: &str) -> &'a MemberView {
    fleet.members.iter().find(|m| m.id == id).unwrap()
}

pub(crate) fn plan(share: f64) -> CanaryPlan {
    serde_json::from_value(serde_json::json!({"share": share, "watch_secs": 600})).unwrap()
}

/// A restart replaces one instance by another; two processes whose
/// reports (or bundle fetches) interleave under one id are a conflict,
/// shown in the fleet, until one of them has been silent long enough.
#[test]
fn two_live_processes_under_one_id_are_a_conflict_a_restart_is_not() {
    let (_d, mut s) = org_store();
    s.stale_after = Duration::from_secs(1);
    let rev = s.current().unwrap().revision.clone();
    // edge-1 restarts: instance a, then b only.
    report(&s, "edge-1", Some("a"), &rev, stats(10));
    report(&s, "edge-1", Some("a"), &rev, stats(12));
    report(&s, "edge-1", Some("b"), &rev, stats(1));
    report(&s, "edge-1", Some("b"), &rev, stats(3));
    assert_eq!(s.conflict("edge-1"), None);
    let f = s.fleet_view();
    assert!(!member(&f, "edge-1").conflict);
    assert_eq!(member(&f, "edge-1").instance.as_deref(), Some("b"));
    assert_eq!(member(&f, "edge-1").restarts, 1);
    // a was still alive: it reports again after b appeared.
    report(&s, "edge-1", Some("a"), &rev, stats(14));
    let live = s.conflict("edge-1").expect("a conflict");
    assert_eq!(live.len(), 2, "{live:?}");
    let f = s.fleet_view();
    assert!(member(&f, "edge-1").conflict, "{f:?}");
    assert_eq!(f.conflicts, ["edge-1"]);
    // A bundle fetch names its process as well.
    report(&s, "edge-2", Some("x"), &rev, stats(1));
    s.fetched_by("edge-2", "y");
    assert_eq!(s.conflict("edge-2"), None, "y is new: a restart so far");
    report(&s, "edge-2", Some("x"), &rev, stats(2));
    assert!(s.conflict("edge-2").is_some());
    // What is no instance id is ignored.
    s.fetched_by("edge-3", "not an id");
    s.fetched_by("", "a");
    assert_eq!(s.conflict("edge-3"), None);
    // a goes away: once it has been silent long enough, b alone is fine.
    std::thread::sleep(Duration::from_millis(1100));
    report(&s, "edge-1", Some("b"), &rev, stats(5));
    std::thread::sleep(Duration::from_millis(1100));
    report(&s, "edge-1", Some("b"), &rev, stats(6));
    assert_eq!(s.conflict("edge-1"), None);
    assert!(!member(&s.fleet_view(), "edge-1").conflict);
    // A malformed instance id is refused with the report.
    assert!(s
        .accept_report(Report {
            id: "edge-4".into(),
            instance: Some("a b".into()),
            revision: rev,
            healthy: true,
            last_error: None,
            labels: Labels::new(),
            stats: Stats::default(),
            upstreams: vec![],
        })
        .is_err());
}

/// A canary whose member id several live processes share would reach
/// every one of them: it is refused, saying why, and nothing is served.
#[test]
fn a_canary_on_a_shared_id_is_refused() {
    let (_d, s) = org_store();
    let rev = s.current().unwrap().revision.clone();
    report(&s, "edge-1", Some("a"), &rev, stats(1));
    report(&s, "edge-1", Some("b"), &rev, stats(1));
    report(&s, "edge-1", Some("a"), &rev, stats(2));
    let e = s
        .publish_canary("admin", Selector::default(), plan(1.0))
        .unwrap_err();
    let text = e.0[0].message.clone();
    assert!(
        text.contains("`edge-1`") && text.contains("--gateway-id"),
        "{text}"
    );
    assert_eq!(s.rollout_view().state(), None);
    assert_eq!(s.current().unwrap().revision, rev);
    // Each process under its own id: the canary starts.
    let (_d, s) = org_store();
    report(&s, "edge-1", Some("a"), &rev, stats(1));
    report(&s, "edge-2", Some("b"), &rev, stats(1));
    report(&s, "edge-1", Some("a"), &rev, stats(2));
    assert!(s
        .publish_canary("admin", Selector::default(), plan(1.0))
        .is_ok());
}

/// Starts a canary on one of five gateways that report; returns its
/// revision, its member and the rest.
fn canary_on_one(s: &Store) -> (String, String, Vec<String>) {
    let rev = s.current().unwrap().revision.clone();
    for i in 0..5 {
        let id = format!("gw{i}");
        report(s, &id, Some(&format!("i{i}")), &rev, stats(100));
    }
    let p = s
        .publish_canary("admin", Selector::default(), plan(0.2))
        .unwrap();
    let ro = s.rollout_view();
    let members: Vec<String> = ro
        .canary()
        .unwrap()
        .rollout
        .members
        .iter()
        .cloned()
        .collect();
    assert_eq!(members.len(), 1);
    let rest = (0..5)
        .map(|i| format!("gw{i}"))
        .filter(|id| *id != members[0])
        .collect();
    (p.revision.clone(), members[0].clone(), rest)
}

/// The rest report healthy traffic on the old revision.
fn rest_report(s: &Store, rest: &[String], old: &str, calls: u64) {
    for id in rest {
        let i = &id[2..];
        report(s, id, Some(&format!("i{i}")), old, stats(calls));
    }
}

/// A member that crashes on the canary comes back as another process (or
/// with its counters begun again): the canary is rolled back, not
/// promoted on the figures of the processes that survived.
#[test]
fn a_member_that_restarts_during_the_canary_rolls_it_back() {
    for with_instance in [true, false] {
        let (_d, s) = org_store();
        let old = s.current().unwrap().revision.clone();
        let (rev, m, rest) = canary_on_one(&s);
        let me = |n: u64| {
            let inst = with_instance.then(|| format!("i{}", &m[2..]));
            report(&s, &m, inst.as_deref(), &rev, stats(n));
        };
        me(150);
        rest_report(&s, &rest, &old, 200);
        assert_eq!(s.tick(), Some(Verdict::Wait));
        // It restarts: a new process (or counters from zero).
        if with_instance {
            report(&s, &m, Some("fresh"), &rev, stats(160));
        } else {
            report(&s, &m, None, &rev, stats(3));
        }
        match s.tick() {
            Some(Verdict::RollBack(why)) => {
                assert!(why.contains("restarted") && why.contains(&m), "{why}")
            }
            v => panic!("{with_instance}: {v:?}"),
        }
        assert_eq!(s.rollout_view().state(), Some(CanaryState::RolledBack));
    }
}

/// A member that stops reporting (crashed, hung) holds nothing up: the
/// canary is rolled back once it has been silent for the stale period.
#[test]
fn a_member_that_stops_reporting_rolls_the_canary_back() {
    let (_d, mut s) = org_store();
    s.stale_after = Duration::from_secs(1);
    let old = s.current().unwrap().revision.clone();
    let (rev, m, rest) = canary_on_one(&s);
    report(&s, &m, Some(&format!("i{}", &m[2..])), &rev, stats(150));
    rest_report(&s, &rest, &old, 200);
    assert_eq!(s.tick(), Some(Verdict::Wait));
    std::thread::sleep(Duration::from_millis(300));
    rest_report(&s, &rest, &old, 300);
    assert_eq!(s.tick(), Some(Verdict::Wait), "not silent for long yet");
    std::thread::sleep(Duration::from_millis(800));
    rest_report(&s, &rest, &old, 400);
    match s.tick() {
        Some(Verdict::RollBack(why)) => {
            assert!(
                why.contains("has not reported") && why.contains(&m),
                "{why}"
            )
        }
        v => panic!("{v:?}"),
    }
}

/// A member that never reported since the canary began (it died picking
/// the canary up) is silent as well.
#[test]
fn a_member_that_never_reports_the_canary_rolls_it_back() {
    let (_d, mut s) = org_store();
    s.stale_after = Duration::from_millis(200);
    let old = s.current().unwrap().revision.clone();
    let (_rev, m, rest) = canary_on_one(&s);
    std::thread::sleep(Duration::from_millis(250));
    rest_report(&s, &rest, &old, 200);
    assert!(
        matches!(s.tick(), Some(Verdict::RollBack(why)) if why.contains(&m)),
        "{:?}",
        s.rollout_view()
    );
}

/// A canary bundle that lets every call through and withholds every
/// server's answer denies as surely as one that refuses the calls.
#[test]
fn a_canary_that_withholds_replies_is_rolled_back() {
    let (_d, s) = org_store();
    let old = s.current().unwrap().revision.clone();
    let (rev, m, rest) = canary_on_one(&s);
    let inst = format!("i{}", &m[2..]);
    report(&s, &m, Some(&inst), &rev, stats(100));
    rest_report(&s, &rest, &old, 100);
    assert_eq!(s.tick(), Some(Verdict::Wait));
    report(
        &s,
        &m,
        Some(&inst),
        &rev,
        Stats {
            withheld: 50,
            ..stats(150)
        },
    );
    rest_report(&s, &rest, &old, 200);
    match s.tick() {
        Some(Verdict::RollBack(why)) => assert!(why.contains("withheld replies"), "{why}"),
        v => panic!("{v:?}"),
    }
    assert_eq!(s.rollout_view().state(), Some(CanaryState::RolledBack));
}

/// What a report may make the fleet table hold is bounded: a revision
/// longer than any the agent names is refused, an error is kept in part.
#[test]
fn a_report_grows_the_fleet_table_by_a_bounded_amount() {
    let (_d, s) = org_store();
    let rev = s.current().unwrap().revision.clone();
    let with = |revision: String, last_error: Option<String>| Report {
        id: "edge-1".into(),
        instance: Some("a".into()),
        revision,
        healthy: false,
        last_error,
        labels: Labels::new(),
        stats: stats(1),
        upstreams: vec![],
    };
    let err = s
        .accept_report(with("r".repeat(MAX_REPORTED_REVISION + 1), None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("revision"), "{err}");
    assert!(s.accept_report(with(format!("{rev}\n"), None)).is_err());
    // 480 KB of error (multi-byte characters on the cut) keeps 4 KiB.
    s.accept_report(with(rev.clone(), Some("é".repeat(240_000))))
        .unwrap();
    let fleet = s.fleet_view();
    let kept = member(&fleet, "edge-1").last_error.clone().unwrap();
    assert!(kept.len() <= MAX_REPORTED_ERROR + 16, "{}", kept.len());
    assert!(kept.ends_with("(cut)"));
    // A usual report is kept whole.
    s.accept_report(with(rev, Some("archive: bad signature".into())))
        .unwrap();
    assert_eq!(
        member(&s.fleet_view(), "edge-1").last_error.as_deref(),
        Some("archive: bad signature")
    );
}
