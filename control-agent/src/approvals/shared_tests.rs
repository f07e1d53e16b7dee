//! Two approval queues on one PostgreSQL database (two agents in HA): a
//! call held on one agent and approved on the other is served once, claims
//! racing through both agents take an approval once, a pending approval
//! outlives the agent that opened it, and a database that went away (or
//! restarted in the middle of a claim) refuses changes instead of losing
//! them or handing an approval out twice. A real server
//! (`tests/src/postgres.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};

use super::*;
use crate::pg::testing::PgServer;

/// A held call of `principal`, one approver needed.
fn call(principal: &str) -> Claim {
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
        required: 1,
        pending_secs: 60,
        grant_secs: 30,
        gateway: "gw1".into(),
        trace_id: None,
        nonce: None,
        for_tenants: Vec::new(),
    }
}

fn approvers() -> BTreeMap<String, Approver> {
    ["alice", "bob"]
        .into_iter()
        .map(|n| (n.to_owned(), Approver::default()))
        .collect()
}

/// An agent's approvals on the database at `url`.
fn agent(url: &str) -> Approvals {
    Approvals::on_database(url, approvers()).unwrap()
}

/// Database `db`, migrated, and two agents on it.
fn shared(pg: &PgServer, db: &str) -> (String, Approvals, Approvals) {
    let url = pg.database(db);
    crate::pg::migrate(&url).unwrap();
    let (a, b) = (agent(&url), agent(&url));
    (url, a, b)
}

/// How many approvals the database holds used.
fn used_in_db(pg: &PgServer, db: &str) -> String {
    pg.psql(
        db,
        "SELECT count(*) FROM warden_approvals WHERE approval::jsonb->>'used_at' IS NOT NULL",
    )
    .unwrap()
}

fn approved_id(answer: &ClaimAnswer) -> Option<&str> {
    match answer {
        ClaimAnswer::Approved { id, .. } => Some(id),
        _ => None,
    }
}

#[test]
fn a_call_held_on_one_agent_and_approved_on_the_other_is_served_once() {
    let pg = PgServer::start();
    let (_url, a, b) = shared(&pg, "once");
    let t0 = SystemTime::now();
    let held = a.claim(call("agent-7"), None, t0).unwrap();
    assert!(held.created(), "{held:?}");
    let id = held.id().to_owned();
    // B never saw the claim: its turn loads what A kept.
    let v = b
        .decision(&id, "alice", Verdict::Approve, None, t0)
        .unwrap();
    assert_eq!(v.state, State::Approved);
    // A's memory still says pending: its turn loads B's decision.
    let taken = a.claim(call("agent-7"), None, t0).unwrap();
    assert_eq!(approved_id(&taken), Some(id.as_str()), "{taken:?}");
    // The same call claimed again through B, which decided it and holds
    // it approved: used, so the call waits for a new approval.
    let replay = b.claim(call("agent-7"), None, t0).unwrap();
    assert!(
        matches!(&replay, ClaimAnswer::Pending { created: true, id: other, .. } if *other != id),
        "{replay:?}"
    );
    assert_eq!(b.get_view(&id, None, t0).unwrap().state, State::Used);
    // Through A again: the new approval B opened, not a third one.
    let again = a.claim(call("agent-7"), None, t0).unwrap();
    assert!(
        matches!(&again, ClaimAnswer::Pending { created: false, id: other, .. } if other == replay.id()),
        "{again:?}"
    );
    // Deciding the used one again is refused on either agent.
    for ap in [&a, &b] {
        assert_eq!(
            ap.decision(&id, "bob", Verdict::Approve, None, t0).err(),
            Some(Refused::Finished("used"))
        );
    }
    assert_eq!(used_in_db(&pg, "once"), "1");
    assert_eq!(
        pg.psql("once", "SELECT count(*) FROM warden_approvals")
            .unwrap(),
        "2"
    );
}

#[test]
fn twenty_claims_at_once_through_two_agents_take_one_approval_once() {
    let pg = PgServer::start();
    let (url, a, _) = shared(&pg, "race");
    let t0 = SystemTime::now();
    let id = a.claim(call("agent-7"), None, t0).unwrap().id().to_owned();
    a.decision(&id, "alice", Verdict::Approve, None, t0)
        .unwrap();
    // Two agents started now both hold the approval approved in memory
    // (they loaded it): only the turn keeps them from both handing it out.
    let agents = [Arc::new(agent(&url)), Arc::new(agent(&url))];
    for ag in &agents {
        assert_eq!(ag.get_view(&id, None, t0).unwrap().state, State::Approved);
    }
    let n = 20;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (ag, barrier) = (agents[i % 2].clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                ag.claim(call("agent-7"), None, t0).unwrap()
            })
        })
        .collect();
    let answers: Vec<ClaimAnswer> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let taken: Vec<&str> = answers.iter().filter_map(approved_id).collect();
    assert_eq!(taken, vec![id.as_str()], "exactly one claim takes it");
    // Every other claim waits on one new approval, opened once fleet-wide.
    let waiting: Vec<&ClaimAnswer> = answers
        .iter()
        .filter(|a| approved_id(a).is_none())
        .collect();
    assert_eq!(waiting.len(), n - 1);
    assert!(
        waiting
            .iter()
            .all(|w| matches!(w, ClaimAnswer::Pending { .. })),
        "{waiting:?}"
    );
    let mut ids: Vec<&str> = waiting.iter().map(|w| w.id()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one new approval: {ids:?}");
    assert_eq!(waiting.iter().filter(|w| w.created()).count(), 1);
    assert_eq!(used_in_db(&pg, "race"), "1");
    assert_eq!(
        pg.psql("race", "SELECT count(*) FROM warden_approvals")
            .unwrap(),
        "2"
    );
}

#[test]
fn a_pending_approval_outlives_the_agent_that_opened_it() {
    let pg = PgServer::start();
    let (url, a, b) = shared(&pg, "survives");
    let t0 = SystemTime::now();
    let id = a.claim(call("agent-7"), None, t0).unwrap().id().to_owned();
    drop(a);
    // A new agent on the database sees it waiting, and the call claimed
    // through it again finds it (no second approval).
    let c = agent(&url);
    assert_eq!(c.get_view(&id, None, t0).unwrap().state, State::Pending);
    let again = c.claim(call("agent-7"), None, t0).unwrap();
    assert!(
        matches!(&again, ClaimAnswer::Pending { created: false, id: same, .. } if *same == id),
        "{again:?}"
    );
    // B, started before the claim, approves it (its turn loads it).
    b.decision(&id, "alice", Verdict::Approve, None, t0)
        .unwrap();
    let taken = c.claim(call("agent-7"), None, t0).unwrap();
    assert_eq!(approved_id(&taken), Some(id.as_str()), "{taken:?}");
    let replay = b.claim(call("agent-7"), None, t0).unwrap();
    assert!(approved_id(&replay).is_none(), "{replay:?}");
    assert_eq!(used_in_db(&pg, "survives"), "1");
}

#[test]
fn a_database_gone_refuses_claims_and_decisions_and_nothing_is_half_kept() {
    let mut pg = PgServer::start();
    let (url, a, _) = shared(&pg, "outage");
    let t0 = SystemTime::now();
    let id = a.claim(call("agent-7"), None, t0).unwrap().id().to_owned();
    a.decision(&id, "alice", Verdict::Approve, None, t0)
        .unwrap();
    // B started now: both hold the approval approved.
    let b = agent(&url);
    pg.stop();
    for ap in [&a, &b] {
        let err = ap.claim(call("agent-7"), None, t0).unwrap_err();
        assert!(matches!(err, ClaimRefused::Unavailable(_)), "{err:?}");
        assert_eq!(err.status(), 503);
    }
    let err = a.claim(call("agent-8"), None, t0).unwrap_err();
    assert!(matches!(err, ClaimRefused::Unavailable(_)), "{err:?}");
    let err = b.decision(&id, "bob", Verdict::Deny, None, t0).unwrap_err();
    assert!(matches!(err, Refused::Unavailable(_)), "{err:?}");
    assert_eq!(err.status(), 503);
    // Nothing half-kept: reads serve the memory as it was.
    for ap in [&a, &b] {
        let v = ap.get_view(&id, None, t0).unwrap();
        assert_eq!(v.state, State::Approved);
        assert_eq!(v.approval.decisions.len(), 1, "bob's denial was not made");
        assert_eq!(ap.list_view(true, None, t0).len(), 1, "none for agent-8");
    }
    pg.run();
    // Back: taken once, through either agent.
    let taken = a.claim(call("agent-7"), None, t0).unwrap();
    assert_eq!(approved_id(&taken), Some(id.as_str()), "{taken:?}");
    let replay = b.claim(call("agent-7"), None, t0).unwrap();
    assert!(approved_id(&replay).is_none(), "{replay:?}");
    assert_eq!(used_in_db(&pg, "outage"), "1");
    assert_eq!(
        pg.psql(
            "outage",
            "SELECT count(*) FROM warden_approvals WHERE approval LIKE '%agent-8%'"
        )
        .unwrap(),
        "0"
    );
}

/// The database restarts after a claim wrote the approval used and before
/// it committed: the claim is refused, the approval is not used (in the
/// database nor in memory), and it is handed out once afterwards.
#[test]
fn a_restart_in_the_middle_of_a_claim_hands_nothing_out_and_loses_nothing() {
    let pg = Arc::new(Mutex::new(PgServer::start()));
    let (url, a, _) = shared(&pg.lock().unwrap(), "midclaim");
    let t0 = SystemTime::now();
    let id = a.claim(call("agent-7"), None, t0).unwrap().id().to_owned();
    a.decision(&id, "alice", Verdict::Approve, None, t0)
        .unwrap();
    // B started now holds it approved; its claim's commit meets a restart.
    let b = agent(&url);
    let server = pg.clone();
    *b.before_commit.lock().unwrap() = Some(Box::new(move || {
        let mut s = server.lock().unwrap();
        s.stop();
        s.run();
    }));
    let err = b.claim(call("agent-7"), None, t0).unwrap_err();
    assert!(matches!(err, ClaimRefused::Unavailable(_)), "{err:?}");
    let pg = pg.lock().unwrap();
    assert_eq!(used_in_db(&pg, "midclaim"), "0");
    assert_eq!(b.get_view(&id, None, t0).unwrap().state, State::Approved);
    let taken = a.claim(call("agent-7"), None, t0).unwrap();
    assert_eq!(approved_id(&taken), Some(id.as_str()), "{taken:?}");
    let replay = b.claim(call("agent-7"), None, t0).unwrap();
    assert!(approved_id(&replay).is_none(), "{replay:?}");
    assert_eq!(used_in_db(&pg, "midclaim"), "1");
}

/// Reads serve the memory; `catch_up` brings it up to date with what
/// another agent kept, dropped ones included. A change writes its own
/// row only, and a turn that changes nothing bumps nothing.
#[test]
fn catch_up_reads_what_changed_and_a_change_writes_its_row_only() {
    let pg = PgServer::start();
    let (_url, a, b) = shared(&pg, "catchup");
    let t0 = SystemTime::now();
    let ids: Vec<String> = ["p1", "p2", "p3"]
        .iter()
        .map(|p| a.claim(call(p), None, t0).unwrap().id().to_owned())
        .collect();
    assert!(b.get_view(&ids[0], None, t0).is_none(), "not caught up yet");
    b.catch_up().unwrap();
    assert_eq!(b.list_view(false, None, t0).len(), 3);
    let rows = || {
        pg.psql(
            "catchup",
            "SELECT string_agg(id || '=' || gen, ' ' ORDER BY id) FROM warden_approvals",
        )
        .unwrap()
    };
    let gen = || {
        pg.psql(
            "catchup",
            "SELECT gen FROM warden_generation WHERE domain = 'approvals'",
        )
        .unwrap()
    };
    let (rows_before, gen_before) = (rows(), gen());
    // A claim that changes nothing, and catching up with nothing new:
    // nothing written, no generation bumped.
    a.claim(call("p1"), None, t0).unwrap();
    a.catch_up().unwrap();
    b.catch_up().unwrap();
    assert_eq!((rows(), gen()), (rows_before.clone(), gen_before.clone()));
    // A decision writes the decided approval's row alone.
    b.decision(&ids[1], "alice", Verdict::Approve, None, t0)
        .unwrap();
    let after = rows();
    let changed: Vec<(&str, &str)> = rows_before
        .split(' ')
        .zip(after.split(' '))
        .filter(|(x, y)| x != y)
        .collect();
    assert_eq!(changed.len(), 1, "{rows_before} -> {after}");
    assert!(changed[0].1.starts_with(&ids[1]), "{changed:?}");
    a.catch_up().unwrap();
    assert_eq!(
        a.get_view(&ids[1], None, t0).unwrap().state,
        State::Approved
    );
    // Eight days on, the lapsed ones are dropped by the next change (on
    // B), and A's memory drops them when it catches up.
    let later = t0 + Duration::from_secs(8 * 86_400);
    b.claim(call("p4"), None, later).unwrap();
    assert_eq!(
        pg.psql("catchup", "SELECT count(*) FROM warden_approvals")
            .unwrap(),
        "1"
    );
    a.catch_up().unwrap();
    assert_eq!(a.list_view(true, None, later).len(), 1);
    assert!(a.get_view(&ids[0], None, later).is_none());
}

/// A held call's text may hold U+0000 (jsonb would refuse it, and the
/// call could never be recorded): it is kept, and shown to approvers on
/// the other agent as it came.
#[test]
fn a_claim_holding_a_nul_is_kept_and_shown_as_it_came() {
    let pg = PgServer::start();
    let (_url, a, b) = shared(&pg, "nul");
    let t0 = SystemTime::now();
    let mut c = call("agent-7");
    c.justification = Some("INC-1\u{0}2".into());
    c.reason = "risk\u{0}".into();
    let id = a.claim(c, None, t0).unwrap().id().to_owned();
    let v = b
        .decision(&id, "alice", Verdict::Approve, None, t0)
        .unwrap();
    assert_eq!(v.approval.justification.as_deref(), Some("INC-1\u{0}2"));
    assert_eq!(v.approval.reason, "risk\u{0}");
}
