//! The fleet view shared by two agents on one PostgreSQL database (issue
//! 84): a canary whose gateways report to the other agent is judged on
//! them, once; a gateway that reports to both keeps its figures; two
//! processes under one id on two agents are a conflict on both; each
//! agent's view lists every gateway. A real server (`tests/src/postgres.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::pg::testing::PgServer;
use crate::rollout::{Labels, Selector, Stats, Verdict};
use crate::store::fleet_tests::{report, stats};
use crate::store::layer_tests::ORG;
use crate::store::postgres::Postgres;
use crate::store::{CanaryPlan, CanaryState, FleetView, MemberView, Report, Store};

/// Two agents (stores) on one database, stale after `stale`.
struct Pair {
    _dir: tempfile::TempDir,
    a: Store,
    b: Store,
}

fn pair(pg: &PgServer, db: &str, stale: Duration) -> Pair {
    let url = pg.database(db);
    crate::pg::migrate(&url).unwrap();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("source");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("warden.yaml"), ORG).unwrap();
    let open = |src: &Path| {
        let mut s =
            Store::with_backend(Box::new(Postgres::connect(&url).unwrap()), src, None).unwrap();
        s.stale_after = stale;
        s
    };
    let (a, b) = (open(&src), open(&src));
    Pair { _dir: d, a, b }
}

/// Publishes the source on A; B catches up. The revision.
fn published(p: &Pair) -> String {
    let rev =
        p.a.publish_source("ann", true)
            .unwrap()
            .unwrap()
            .revision
            .clone();
    p.b.catch_up().unwrap();
    rev
}

fn member<'a>(fleet: &'a FleetView, id: &str) -> &'a MemberView {
    fleet
        .members
        .iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("`{id}` is not in the fleet view: {fleet:#?}"))
}

fn plan(share: f64, watch_secs: u64) -> CanaryPlan {
    serde_json::from_value(serde_json::json!({"share": share, "watch_secs": watch_secs})).unwrap()
}

/// How many lines of the change record are `action`.
fn recorded(s: &Store, action: &str) -> usize {
    s.recent_changes(1000)
        .iter()
        .filter(|l| l["action"] == action)
        .count()
}

/// A canary whose gateways all report to agent B is published and judged
/// on agent A, on their figures: promoted when its member is healthy,
/// rolled back when the member denies; the verdict is given once (B,
/// judging after, finds nothing to judge).
#[test]
fn a_canary_whose_gateways_report_to_the_other_agent_is_judged_on_them_once() {
    let pg = PgServer::start();
    for bad in [false, true] {
        let p = pair(
            &pg,
            if bad { "judge_bad" } else { "judge_good" },
            Duration::from_secs(15),
        );
        let old = published(&p);
        let inst = |id: &str| format!("i{}", &id[2..]);
        // Five gateways fetch from B and report to B, and to B alone.
        for i in 0..5 {
            let id = format!("gw{i}");
            report(&p.b, &id, Some(&inst(&id)), &old, stats(100));
        }
        // A picks the canary's member among them.
        let canary =
            p.a.publish_canary("ann", Selector::default(), plan(0.2, 1))
                .expect("A sees B's gateways");
        let started = Instant::now();
        let ro = p.a.rollout_view();
        let members: Vec<String> = ro
            .canary()
            .unwrap()
            .rollout
            .members
            .iter()
            .cloned()
            .collect();
        assert_eq!(members.len(), 1, "{members:?}");
        let m = members[0].clone();
        let rest: Vec<String> = (0..5)
            .map(|i| format!("gw{i}"))
            .filter(|id| *id != m)
            .collect();
        // B serves the member the canary; it reports it to B.
        p.b.catch_up().unwrap();
        assert_eq!(
            p.b.for_gateway(&m, &Labels::new()).unwrap().revision,
            canary.revision
        );
        report(&p.b, &m, Some(&inst(&m)), &canary.revision, stats(150));
        for id in &rest {
            report(&p.b, id, Some(&inst(id)), &old, stats(200));
        }
        assert_eq!(p.a.tick(), Some(Verdict::Wait));
        let later = if bad {
            Stats {
                denied: 120,
                ..stats(300)
            }
        } else {
            stats(300)
        };
        report(&p.b, &m, Some(&inst(&m)), &canary.revision, later);
        for id in &rest {
            report(&p.b, id, Some(&inst(id)), &old, stats(500));
        }
        if !bad {
            // The watch (1 s) ends healthy.
            sleep(Duration::from_millis(1100).saturating_sub(started.elapsed()));
        }
        match p.a.tick() {
            Some(Verdict::Promote(_)) if !bad => {}
            Some(Verdict::RollBack(why)) if bad => {
                assert!(why.contains("denial"), "{why}")
            }
            v => panic!("bad: {bad}: {v:?}"),
        }
        // Judged on their figures: the member's window (150 → 300) and
        // the rest's (100 when the canary began → 500).
        let ro = p.a.rollout_view();
        let c = ro.canary().unwrap();
        assert_eq!(c.canary.calls, 150, "{c:?}");
        assert_eq!(c.rest.calls, 4 * 400, "{c:?}");
        assert!(c.rollout.untrusted.is_empty(), "{c:?}");
        let (state, action) = if bad {
            (CanaryState::RolledBack, "canary_rollback")
        } else {
            (CanaryState::Promoted, "promote")
        };
        assert_eq!(c.rollout.state, state);
        // Once: B, judging after, and A again, find nothing to judge.
        assert_eq!(p.b.tick(), None);
        assert_eq!(p.a.tick(), None);
        assert_eq!(recorded(&p.a, action), 1);
        assert_eq!(p.b.rollout_view().state(), Some(state));
    }
}

/// A gateway whose reports alternate between the agents: each report's
/// figures come from the one before, whichever agent took it (a rate of
/// zero when nothing happened since the other agent's report), and a
/// restart is counted once, not a conflict.
#[test]
fn a_gateway_reporting_to_both_agents_keeps_its_rate_and_restarts() {
    let pg = PgServer::start();
    let p = pair(&pg, "alternate", Duration::from_secs(15));
    let rev = published(&p);
    let on = |s: &Store, instance: &str, calls: u64| {
        let before = Instant::now();
        report(s, "edge-1", Some(instance), &rev, stats(calls));
        (before, Instant::now())
    };
    let both = |check: &dyn Fn(&MemberView)| {
        for s in [&p.a, &p.b] {
            check(member(&s.fleet_view(), "edge-1"));
        }
    };
    on(&p.a, "x", 0);
    sleep(Duration::from_millis(200));
    on(&p.b, "x", 100);
    sleep(Duration::from_millis(200));
    // No call since its report to B: A reads a rate of zero.
    let (start, end) = on(&p.a, "x", 100);
    both(&|m| {
        assert_eq!(m.calls_per_sec, 0.0, "{m:?}");
        assert_eq!(m.calls, 100);
    });
    sleep(Duration::from_millis(200));
    // 200 calls since its report to A.
    let (start2, end2) = on(&p.b, "x", 300);
    // The database stamps each report, and a report's time is read back as
    // an age from a later query: the interval the agents see may be longer
    // or shorter, at each end, than the one measured here around the calls
    // by that query's round trip (a flake of 0.05 % under a loaded run).
    let slack = Duration::from_millis(10);
    let (slowest, fastest) = (
        200.0 / (end2.duration_since(start) + slack).as_secs_f64(),
        200.0
            / start2
                .duration_since(end)
                .saturating_sub(slack)
                .as_secs_f64(),
    );
    both(&|m| {
        assert!(
            (slowest..=fastest).contains(&m.calls_per_sec),
            "{} not in {slowest}..={fastest}",
            m.calls_per_sec
        );
        assert_eq!((m.restarts, m.jumps), (0, 0), "{m:?}");
        assert!(m.served && !m.conflict, "{m:?}");
    });
    // It restarts (a new process) and reports to A, then to B: one restart.
    on(&p.a, "y", 5);
    both(&|m| assert_eq!((m.restarts, m.instance.as_deref()), (1, Some("y"))));
    on(&p.b, "y", 10);
    both(&|m| {
        assert_eq!((m.restarts, m.jumps), (1, 0), "{m:?}");
        assert!(m.calls_per_sec > 0.0 && !m.conflict, "{m:?}");
    });
    assert_eq!(p.a.conflict("edge-1"), None);
    assert_eq!(p.b.conflict("edge-1"), None);
}

/// Two processes under one id, one reporting to A and one to B: a
/// conflict on both agents (their views, a canary on the id refused, the
/// audit's question), by reports as by fetches; gone once one of them is
/// silent long enough.
#[test]
fn two_processes_under_one_id_on_two_agents_are_a_conflict_on_both() {
    let pg = PgServer::start();
    let p = pair(&pg, "conflict", Duration::from_secs(1));
    let rev = published(&p);
    report(&p.a, "edge-1", Some("x"), &rev, stats(10));
    report(&p.b, "edge-1", Some("y"), &rev, stats(20));
    assert_eq!(p.a.conflict("edge-1"), None, "y is new: a restart so far");
    report(&p.a, "edge-1", Some("x"), &rev, stats(12));
    for s in [&p.a, &p.b] {
        let live = s.conflict("edge-1").expect("a conflict");
        assert_eq!(live.len(), 2, "{live:?}");
        let f = s.fleet_view();
        assert_eq!(f.conflicts, ["edge-1"]);
        assert!(member(&f, "edge-1").conflict);
        assert_eq!(member(&f, "edge-1").instances.len(), 2);
    }
    let e =
        p.b.publish_canary("bob", Selector::default(), plan(1.0, 60))
            .unwrap_err();
    assert!(e.0[0].message.contains("`edge-1`"), "{e}");
    // Fetches (and audit batches) name their process as well.
    p.a.fetched_by("edge-2", "p");
    p.b.fetched_by("edge-2", "q");
    p.a.fetched_by("edge-2", "p");
    assert!(p.a.conflict("edge-2").is_some());
    assert!(p.b.conflict("edge-2").is_some());
    // x goes away: once it has been silent long enough, y alone is fine.
    sleep(Duration::from_millis(1100));
    report(&p.b, "edge-1", Some("y"), &rev, stats(21));
    sleep(Duration::from_millis(1100));
    report(&p.b, "edge-1", Some("y"), &rev, stats(22));
    for s in [&p.a, &p.b] {
        assert_eq!(s.conflict("edge-1"), None);
        assert!(!member(&s.fleet_view(), "edge-1").conflict);
    }
}

/// Each agent's fleet view lists every gateway, whichever agent it
/// reports to, with what that agent served it.
#[test]
fn the_fleet_view_on_either_agent_lists_every_gateway() {
    let pg = PgServer::start();
    let p = pair(&pg, "view", Duration::from_secs(15));
    let rev = published(&p);
    for i in 0..6 {
        let s = if i < 3 { &p.a } else { &p.b };
        report(s, &format!("gw{i}"), Some(&format!("i{i}")), &rev, stats(i));
    }
    for s in [&p.a, &p.b] {
        let f = s.fleet_view();
        let ids: Vec<&str> = f.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["gw0", "gw1", "gw2", "gw3", "gw4", "gw5"]);
        for (i, m) in f.members.iter().enumerate() {
            assert_eq!(m.instance, Some(format!("i{i}")));
            assert_eq!(m.calls, i as u64);
            assert!(m.served && m.current && !m.stale, "{m:?}");
        }
    }
    // Whatever changes later shows on the other agent's next view, what
    // a gateway says in its own words (U+0000 included) too.
    report(&p.b, "gw0", Some("i0"), &rev, stats(50));
    assert_eq!(member(&p.a.fleet_view(), "gw0").calls, 50);
    p.b.accept_report(Report {
        id: "gw1".into(),
        instance: Some("i1".into()),
        revision: rev.clone(),
        healthy: false,
        last_error: Some("bad\u{0}bundle".into()),
        labels: Labels::new(),
        stats: stats(60),
        upstreams: vec![],
    })
    .unwrap();
    let f = p.a.fleet_view();
    assert_eq!(
        (
            member(&f, "gw1").calls,
            member(&f, "gw1").last_error.as_deref()
        ),
        (60, Some("bad\u{0}bundle"))
    );
}

/// Reports write rows of their own: the store's generation never moves
/// (no agent loads the store again for a report), and an id keeps at
/// most as many instances and fetches in the database as in memory.
#[test]
fn reports_move_no_generation_and_the_tables_stay_bounded() {
    let pg = PgServer::start();
    let p = pair(&pg, "bounds", Duration::from_secs(15));
    let rev = published(&p);
    let generation = || {
        pg.psql(
            "bounds",
            "SELECT gen FROM warden_generation WHERE domain = 'store'",
        )
        .unwrap()
    };
    let before = generation();
    for i in 0..12 {
        let s = if i % 2 == 0 { &p.a } else { &p.b };
        // A new process each time (a crash loop), served a revision of
        // its own name.
        s.served_to("edge-1", &format!("i{i}"), &Labels::new(), &format!("r{i}"));
        report(s, "edge-1", Some(&format!("i{i}")), &rev, stats(i));
    }
    assert_eq!(generation(), before);
    let rows = |table: &str| {
        pg.psql("bounds", &format!("SELECT count(*) FROM {table}"))
            .unwrap()
    };
    assert_eq!(rows("warden_fleet"), "1");
    assert_eq!(rows("warden_fleet_sightings"), "8");
    assert_eq!(rows("warden_fleet_fetches"), "8");
    let m = p.b.fleet_view().members.remove(0);
    assert_eq!((m.restarts, m.instance.as_deref()), (11, Some("i11")));
    // A confirmed fetch is not written again.
    let at = || {
        pg.psql(
            "bounds",
            "SELECT max(xid::text::bigint) FROM warden_fleet_fetches",
        )
        .unwrap()
    };
    let was = at();
    p.b.served_to("edge-1", "i11", &Labels::new(), &rev);
    assert_eq!(at(), was);
    // A gateway forgotten (its row removed, as a full table does) and
    // heard again by B: A's next report goes over B's row, not beside it.
    pg.psql("bounds", "DELETE FROM warden_fleet").unwrap();
    report(&p.b, "edge-1", Some("i11"), &rev, stats(40));
    report(&p.a, "edge-1", Some("i11"), &rev, stats(41));
    assert_eq!(
        pg.psql(
            "bounds",
            "SELECT report::jsonb->'stats'->>'calls' || ' ' || restarts FROM warden_fleet"
        )
        .unwrap(),
        "41 0"
    );
    let m = p.b.fleet_view().members.remove(0);
    assert_eq!((m.calls, m.restarts), (41, 0));
}

/// A report the database cannot keep is refused with 503 (the gateway
/// takes it to its next agent), not kept in this agent's memory alone,
/// where neither the canary judge on another agent nor the other agents'
/// views would see it; once the database is back, reports are kept again.
#[test]
fn a_report_the_database_cannot_keep_is_refused_for_another_agent() {
    let mut pg = PgServer::start();
    let p = pair(&pg, "down", Duration::from_secs(15));
    let rev = published(&p);
    report(&p.a, "gw0", Some("i0"), &rev, stats(1));
    pg.stop();
    let r = Report {
        id: "gw1".into(),
        instance: Some("i1".into()),
        revision: rev.clone(),
        healthy: true,
        last_error: None,
        labels: Labels::new(),
        stats: stats(2),
        upstreams: vec![],
    };
    let e = p.a.accept_report(r.clone()).unwrap_err();
    assert!(
        matches!(e, crate::store::ReportError::Unavailable(_)),
        "{e:?}"
    );
    assert_eq!(e.status(), 503);
    assert!(
        p.a.fleet_view().members.iter().all(|m| m.id != "gw1"),
        "not kept in this agent's memory"
    );
    pg.run();
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.a.accept_report(r.clone()).is_err() {
        assert!(
            Instant::now() < deadline,
            "reports kept again after the restart"
        );
        sleep(Duration::from_millis(200));
    }
    assert_eq!(member(&p.b.fleet_view(), "gw1").calls, 2);
}
