//! The audit store on a real PostgreSQL (`tests/src/postgres.rs`): ingest,
//! search, verification and retention; two stores on one database (two
//! agents) taking one gateway's batches; the same answers as SQLite for
//! the same records; what a hostile gateway or searcher sends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::super::tests::{held, now_s, sample, stub_of, Trail};
use super::super::*;
use super::parts::{self, DAY_US};
use crate::pg::testing::PgServer;

/// A store on a new database `db`.
fn on(pg: &PgServer, db: &str, limits: Limits) -> AuditStore {
    AuditStore::on_database(&pg.database(db), limits).unwrap()
}

/// Another agent's store on the same database.
fn again(pg: &PgServer, db: &str, limits: Limits) -> AuditStore {
    AuditStore::on_database(&pg.url(db), limits).unwrap()
}

fn count(pg: &PgServer, db: &str, sql: &str) -> i64 {
    pg.psql(db, sql).unwrap().parse().unwrap()
}

fn stored(pg: &PgServer, db: &str) -> i64 {
    count(pg, db, "SELECT count(*) FROM warden_audit")
}

/// Whether the partition of the day holding unix second `at` exists.
fn partition_of(pg: &PgServer, db: &str, at: i64) -> bool {
    let name = parts::name(parts::day(at * 1_000_000));
    pg.psql(db, &format!("SELECT to_regclass('{name}') IS NOT NULL"))
        .unwrap()
        == "t"
}

/// A call of `principal` at unix second `at`.
fn call_at(t: &mut Trail, at: i64, principal: &str) {
    t.call(at, principal, "acme", "echo", "forwarded");
}

/// The start of today (UTC), unix seconds, and a base time for "recent"
/// records that stays inside today (a test run just after midnight would
/// otherwise spread them over two partitions).
fn recent_base() -> i64 {
    let now = now_s();
    let today = parts::day(now * 1_000_000) / 1_000_000;
    (now - 100).max(today)
}

#[test]
fn a_batch_is_kept_once_across_agents_and_read_back_byte_for_byte() {
    let pg = PgServer::start();
    let a = on(&pg, "once", Limits::default());
    let b = again(&pg, "once", Limits::default());
    let t = sample();
    let n = t.lines.len();
    let half = n / 2;
    assert_eq!(
        a.ingest("gw-1", &t.body(0, half)).unwrap(),
        Ingested {
            accepted: half as u64,
            duplicates: 0,
            unreadable_costs: 0,
            ..Default::default()
        }
    );
    // The gateway timed out on A and fails over to B with an overlapping
    // batch: the overlap is B's duplicates.
    let done = b.ingest("gw-1", &t.body(half - 3, n)).unwrap();
    assert_eq!((done.accepted, done.duplicates), ((n - half) as u64, 3));
    // The whole trail again, through either: all duplicates.
    for s in [&a, &b] {
        let d = s.ingest("gw-1", &t.body(0, n)).unwrap();
        assert_eq!((d.accepted, d.duplicates), (0, n as u64));
    }
    // A line twice in one batch is kept once.
    let mut twice = t.body(0, 1);
    twice.extend(t.body(0, 1));
    assert_eq!(b.ingest("gw-2", &twice).unwrap().duplicates, 1);
    assert_eq!(stored(&pg, "once"), n as i64 + 1);
    // The same lines from another gateway are that gateway's records.
    assert_eq!(a.ingest("gw-3", &t.body(0, 2)).unwrap().accepted, 2);
    // Read back through the other agent, byte for byte.
    let page = b
        .search(&Query {
            gateway: Some("gw-1".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(page.total, n as u64);
    let newest = b.get(page.rows[0].id, &[]).unwrap().unwrap();
    assert_eq!(newest.raw.as_deref(), Some(t.lines[n - 1].as_str()));
    assert_eq!(newest.seq, (n - 1) as u64);
    // Every agent's rows are counted in each agent's figure.
    a.trim().unwrap();
    b.trim().unwrap();
    assert_eq!(a.rows(), n as u64 + 3);
    assert_eq!(b.rows(), n as u64 + 3);
    // Today's partition and the next days' were made at start.
    for d in 0..=parts::AHEAD_DAYS {
        assert!(partition_of(&pg, "once", now_s() + d * 86_400), "day +{d}");
    }
}

/// Two agents take the same batches of one gateway at the same moment
/// (the gateway's resend racing its failover): every line is kept once,
/// and the chain verifies through either agent.
#[test]
fn two_agents_racing_on_one_chain_keep_each_line_once() {
    let pg = PgServer::start();
    let a = Arc::new(on(&pg, "race", Limits::default()));
    let b = Arc::new(again(&pg, "race", Limits::default()));
    let mut t = Trail::new();
    let base = recent_base();
    for i in 0..600 {
        call_at(&mut t, base + i / 10, &format!("p{}", i % 7));
    }
    let t = Arc::new(t);
    let n = t.lines.len();
    let barrier = Arc::new(Barrier::new(2));
    let run = |s: Arc<AuditStore>, reverse: bool| {
        let (t, barrier) = (t.clone(), barrier.clone());
        std::thread::spawn(move || {
            let mut batches: Vec<(usize, usize)> =
                (0..n).step_by(37).map(|f| (f, (f + 37).min(n))).collect();
            if reverse {
                batches.reverse();
            }
            let mut got = Ingested::default();
            for (from, to) in batches {
                barrier.wait();
                let d = s.ingest("gw-1", &t.body(from, to)).unwrap();
                got.accepted += d.accepted;
                got.duplicates += d.duplicates;
            }
            got
        })
    };
    let ta = run(a.clone(), false);
    let tb = run(b.clone(), true);
    let (ga, gb) = (ta.join().unwrap(), tb.join().unwrap());
    assert_eq!(ga.accepted + gb.accepted, n as u64, "{ga:?} {gb:?}");
    assert_eq!(ga.duplicates + gb.duplicates, n as u64, "{ga:?} {gb:?}");
    assert_eq!(stored(&pg, "race"), n as i64);
    for s in [&a, &b] {
        let v = s.verify(&Query::default()).unwrap();
        assert!(v.ok, "{:?}", v.chains);
        assert_eq!(v.records, n as u64);
        assert_eq!(
            (v.chains[0].first_seq, v.chains[0].last_seq),
            (0, n as u64 - 1)
        );
    }
}

/// A gateway's batches arrive through two agents in turn (each failover
/// re-sending the last batch to the other): the chain is whole, in order,
/// and verifies through either.
#[test]
fn a_chain_whose_batches_alternate_between_agents_verifies() {
    let pg = PgServer::start();
    let a = on(&pg, "alternate", Limits::default());
    let b = again(&pg, "alternate", Limits::default());
    let mut t = Trail::new();
    let base = recent_base();
    for i in 0..90 {
        call_at(&mut t, base + i / 3, "alice");
    }
    let n = t.lines.len();
    let mut from = 0;
    let mut turn = 0;
    while from < n {
        let to = (from + 11).min(n);
        let (first, second) = if turn % 2 == 0 { (&a, &b) } else { (&b, &a) };
        first.ingest("gw-1", &t.body(from, to)).unwrap();
        // The answer was lost: the next agent is sent the batch again.
        assert_eq!(
            second.ingest("gw-1", &t.body(from, to)).unwrap().accepted,
            0
        );
        from = to;
        turn += 1;
    }
    assert_eq!(stored(&pg, "alternate"), n as i64);
    for s in [&a, &b] {
        let v = s.verify(&Query::default()).unwrap();
        assert!(v.ok && v.records == n as u64, "{v:?}");
        // A principal's range, each record's link looked up.
        let alice = s
            .verify(&Query {
                principal: Some("alice".into()),
                from_us: Some((base + 10) * 1_000_000),
                ..Query::default()
            })
            .unwrap();
        assert!(alice.ok && alice.records > 0, "{alice:?}");
    }
    // Ids follow the chain: newest first is the chain backwards.
    let page = a.search(&Query::default()).unwrap();
    assert!(page.rows.windows(2).all(|w| w[0].seq > w[1].seq));
}

#[test]
fn verify_finds_an_edited_line_a_gap_and_a_line_altered_in_the_store() {
    let pg = PgServer::start();
    let s = on(&pg, "verify", Limits::default());
    let t = sample();
    let n = t.lines.len();
    s.ingest("good", &t.body(0, n)).unwrap();
    let mut edited = t.lines.clone();
    edited[4] = edited[4].replace("\"alice\"", "\"mallory\"");
    s.ingest("edited", (edited.join("\n") + "\n").as_bytes())
        .unwrap();
    let mut gap = t.lines.clone();
    gap.drain(6..8);
    s.ingest("gap", (gap.join("\n") + "\n").as_bytes()).unwrap();
    let v = s.verify(&Query::default()).unwrap();
    assert!(!v.ok);
    let chain = |g: &str| v.chains.iter().find(|c| c.gateway == g).unwrap().clone();
    assert!(chain("good").ok);
    assert!(
        chain("edited")
            .problems
            .iter()
            .any(|p| p.starts_with("seq 5: break")),
        "{:?}",
        chain("edited").problems
    );
    assert_eq!(
        chain("gap").problems,
        vec!["gap: seqs 6 to 7 are missing".to_owned()]
    );
    // A line changed in the database itself.
    pg.psql(
        "verify",
        "UPDATE warden_audit SET raw = replace(raw, 'echo', 'ECHO') \
         WHERE gateway = 'good' AND seq = 0",
    )
    .unwrap();
    let v = s
        .verify(&Query {
            gateway: Some("good".into()),
            ..Query::default()
        })
        .unwrap();
    let p = &v.chains[0].problems;
    assert!(
        p.iter().any(|p| p.contains("altered in the store"))
            && p.iter().any(|p| p.starts_with("seq 1: break")),
        "{p:?}"
    );
}

/// Past the retention a day's partition is dropped whole (its table is
/// gone); what is left verifies, the dropped start no gap. A record older
/// than the retention is acknowledged and not kept, and no partition is
/// made for it.
#[test]
fn retention_drops_a_days_partition_whole() {
    let pg = PgServer::start();
    let long = on(
        &pg,
        "age",
        Limits {
            retention: Duration::from_secs(30 * 86_400),
            ..Limits::default()
        },
    );
    let now = now_s();
    let old = now - 5 * 86_400;
    let mut t = Trail::new();
    for i in 0..4 {
        call_at(&mut t, old + i, "old");
    }
    let old_end = t.lines.len();
    for i in 0..5 {
        call_at(&mut t, recent_base() + i, "new");
    }
    long.ingest("gw", &t.body(0, t.lines.len())).unwrap();
    assert!(partition_of(&pg, "age", old));
    // An agent keeping two days applies its retention.
    let short = again(
        &pg,
        "age",
        Limits {
            retention: Duration::from_secs(2 * 86_400),
            ..Limits::default()
        },
    );
    let gone = short.trim().unwrap();
    assert_eq!(gone, old_end as u64);
    assert!(
        !partition_of(&pg, "age", old),
        "the old day's table is dropped"
    );
    assert_eq!(stored(&pg, "age"), (t.lines.len() - old_end) as i64);
    assert_eq!(short.rows(), (t.lines.len() - old_end) as u64);
    let page = short.search(&Query::default()).unwrap();
    assert!(page.rows.iter().all(|r| r.principal == "new"));
    assert!(short.verify(&Query::default()).unwrap().ok);
    // Records of four days ago, sent to the two-day agent: acknowledged,
    // not kept, no partition made for them.
    let before = count(&pg, "age", "SELECT count(*) FROM warden_audit_partitions");
    let mut late = Trail::new();
    for i in 0..3 {
        call_at(&mut late, now - 4 * 86_400 + i, "late");
    }
    let d = short
        .ingest("gw-late", &late.body(0, late.lines.len()))
        .unwrap();
    assert_eq!(d.accepted, late.lines.len() as u64);
    assert_eq!(
        count(&pg, "age", "SELECT count(*) FROM warden_audit_partitions"),
        before
    );
    assert!(!partition_of(&pg, "age", now - 4 * 86_400));
    assert_eq!(stored(&pg, "age"), (t.lines.len() - old_end) as i64);
}

/// Past `max_rows` the oldest partitions go whole while every record in
/// them is over the bound, then the oldest records of the next; two
/// agents applying it at once delete no more than one would.
#[test]
fn the_rows_bound_drops_whole_days_then_the_oldest_records() {
    let pg = PgServer::start();
    let feed = on(
        &pg,
        "rows",
        Limits {
            retention: Duration::from_secs(30 * 86_400),
            ..Limits::default()
        },
    );
    let now = now_s();
    let mut t = Trail::new();
    // Two old days of 3 calls (6 records each), then 10 recent calls (20).
    for day in [4, 3] {
        for i in 0..3 {
            call_at(&mut t, now - day * 86_400 + i, "old");
        }
    }
    for i in 0..10 {
        call_at(&mut t, recent_base() + i, "new");
    }
    let n = t.lines.len();
    assert_eq!(n, 32);
    feed.ingest("gw", &t.body(0, n)).unwrap();
    let bounded = Limits {
        retention: Duration::from_secs(30 * 86_400),
        max_rows: 16,
        ..Limits::default()
    };
    let a = Arc::new(again(&pg, "rows", bounded.clone()));
    let b = Arc::new(again(&pg, "rows", bounded));
    // Both agents at once (a lease handed over mid-round).
    let barrier = Arc::new(Barrier::new(2));
    let hs: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|s| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                s.trim().unwrap()
            })
        })
        .collect();
    let gone: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
    a.trim().unwrap();
    assert_eq!(stored(&pg, "rows"), 16, "deleted {gone}");
    assert!(!partition_of(&pg, "rows", now - 4 * 86_400));
    assert!(!partition_of(&pg, "rows", now - 3 * 86_400));
    assert!(partition_of(&pg, "rows", now));
    // The newest 16 are kept.
    let page = a.search(&Query::default()).unwrap();
    assert_eq!(page.total, 16);
    assert_eq!(page.rows[0].seq, n as u64 - 1);
    assert_eq!(page.rows.last().unwrap().seq, n as u64 - 16);
    assert!(a.verify(&Query::default()).unwrap().ok);
    assert_eq!(
        count(&pg, "rows", "SELECT sum(rows) FROM warden_audit_partitions"),
        16,
        "the partitions' counts follow"
    );
}

/// A line of `bytes` bytes of hex that does not compress.
fn noise(seed: u64, bytes: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut s = String::with_capacity(bytes);
    while s.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{x:016x}"));
    }
    s.truncate(bytes);
    s
}

/// Past `max_bytes` an older day whose every byte is over the bound goes
/// whole, then the oldest records of today in proportion to the
/// overshoot: the store ends under the bound, not far under it, with the
/// newest kept, and verifies.
#[test]
fn the_byte_bound_drops_an_old_day_then_the_oldest_records() {
    let pg = PgServer::start();
    let feed = on(
        &pg,
        "bytes",
        Limits {
            retention: Duration::from_secs(30 * 86_400),
            ..Limits::default()
        },
    );
    let now = now_s();
    let old = now - 3 * 86_400;
    let mut t = Trail::new();
    let record = |t: &mut Trail, at: i64, i: usize| {
        t.push(serde_json::json!({
            "ts": jiff::Timestamp::from_second(at).unwrap().to_string(),
            "principal": "alice", "tenant": "acme", "server": "mock",
            "direction": "request", "method": "tools/call", "tool": "echo",
            "outcome": "forwarded", "reason": format!("{i} {}", noise(i as u64, 4000)),
        }));
    };
    for i in 0..200 {
        record(&mut t, old, i);
    }
    let old_end = t.lines.len();
    let base = recent_base();
    for i in 200..2200 {
        record(&mut t, base + (i as i64 - 200) / 50, i);
    }
    let n = t.lines.len();
    for from in (0..n).step_by(250) {
        feed.ingest("gw", &t.body(from, (from + 250).min(n)))
            .unwrap();
    }
    let max: u64 = 3 << 20;
    let s = again(
        &pg,
        "bytes",
        Limits {
            retention: Duration::from_secs(30 * 86_400),
            max_bytes: max,
            ..Limits::default()
        },
    );
    for _ in 0..20 {
        s.trim().unwrap();
        if s.bytes() <= max {
            break;
        }
    }
    assert!(!partition_of(&pg, "bytes", old), "the old day went whole");
    assert!(s.bytes() <= max, "{} bytes in use", s.bytes());
    assert!(
        s.bytes() > max / 4,
        "far more deleted than needed: {}",
        s.bytes()
    );
    let kept = s.rows();
    assert!(kept > 0 && kept < (n - old_end) as u64, "{kept} of {n}");
    assert_eq!(stored(&pg, "bytes"), kept as i64);
    let page = s.search(&Query::default()).unwrap();
    assert_eq!(page.rows[0].seq, n as u64 - 1, "the newest is kept");
    assert!(s.verify(&Query::default()).unwrap().ok);
}

/// The trail both stores are given: calls of several principals, tenants
/// (look-alikes among them), servers and outcomes, approvals, a notice, a
/// stub, DLP findings, a record stamped in the future.
fn varied() -> Trail {
    let mut t = sample();
    let base = now_s() - 3000;
    let tenants = [
        "acme",
        "ACME",
        "globex",
        "financ\u{e9}",
        "\u{fb01}nance",
        "finance",
    ];
    let servers = ["ops", "mock", "jira"];
    let outcomes = ["forwarded", "denied", "quota_exceeded", "failed"];
    for i in 0..120usize {
        let ts = jiff::Timestamp::from_second(base + i as i64 * 20)
            .unwrap()
            .to_string();
        let outcome = outcomes[i % 4];
        t.push(serde_json::json!({
            "ts": ts, "principal": format!("user-{}", i % 9), "tenant": tenants[i % 6],
            "server": servers[i % 3], "direction": if i % 5 == 0 { "response" } else { "request" },
            "method": if i % 7 == 0 { "tools/list" } else { "tools/call" },
            "tool": format!("tool_{}", i % 4), "outcome": outcome,
            "decided_by": (outcome != "forwarded").then_some("policy"),
            "reason": (outcome != "forwarded").then(|| format!("{outcome}: rule {} for user-{}", i % 3, i % 9)),
            "risk": (["LOW", "HIGH"][i % 2]), "trace_id": format!("trace-{}", i / 2),
            "latency_us": 1000 + i, "approval": (i % 11 == 0).then(|| serde_json::json!({"id": format!("ap_{}", i % 3)})),
            "dlp": if i % 13 == 0 { serde_json::json!([{"detector": "email"}, {"detector": "aws_key"}]) } else { serde_json::json!([]) },
        }));
    }
    let ts = jiff::Timestamp::from_second(now_s() - 30)
        .unwrap()
        .to_string();
    t.push(serde_json::json!({
        "ts": ts, "principal": "alice", "tenant": "acme", "server": "oldapi",
        "direction": "request", "method": "tools/call", "tool": "echo",
        "outcome": "forwarded", "trace_id": "trace-notice", "latency_us": 10,
        "notice": "server `oldapi` is deprecated",
    }));
    let big = t
        .push(serde_json::json!({
            "ts": ts, "principal": "mallory", "tenant": "acme", "server": "mock",
            "direction": "request", "method": "tools/call", "tool": "wire_money",
            "outcome": "forwarded", "trace_id": "trace-big", "arguments": {"memo": "x".repeat(2000)},
        }))
        .to_owned();
    let at = t.lines.len() - 1;
    t.lines[at] = stub_of(
        &big,
        &[
            "seq",
            "prev",
            "ts",
            "principal",
            "tenant",
            "server",
            "direction",
            "method",
            "tool",
            "outcome",
            "trace_id",
        ],
    );
    held(&mut t, "acme", "ops", Some("ap_9"));
    t.call(
        now_s() + 5 * 86_400,
        "time-traveller",
        "acme",
        "echo",
        "forwarded",
    );
    t
}

/// Every field of a row but its id.
fn fields(r: &Row) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap();
    v.as_object_mut().unwrap().remove("id");
    // Kept as of arrival when stamped later: each store's own arrival.
    if r.principal == "time-traveller" {
        v.as_object_mut().unwrap().remove("ts_us");
    }
    v
}

/// The same records in SQLite and PostgreSQL answer every search, page,
/// record, verification and live figure the same.
#[test]
fn sqlite_and_postgres_answer_the_same_for_the_same_records() {
    let pg = PgServer::start();
    let p = on(&pg, "same", Limits::default());
    let dir = tempfile::tempdir().unwrap();
    let s = AuditStore::open(&dir.path().join("audit.sqlite3"), Limits::default()).unwrap();
    let t = varied();
    let n = t.lines.len();
    for store in [&s, &p] {
        for (g, step) in [("gw-1", 17), ("gw-2", 40)] {
            for from in (0..n).step_by(step) {
                let d = store
                    .ingest(g, &t.body(from, (from + step).min(n)))
                    .unwrap();
                assert_eq!(d.duplicates, 0);
            }
        }
        // A resend: duplicates on both.
        assert_eq!(store.ingest("gw-1", &t.body(5, 25)).unwrap().duplicates, 20);
    }
    let now = now_s() * 1_000_000;
    let mut queries: Vec<Query> = vec![Query::default()];
    let mut add = |f: &dyn Fn(&mut Query)| {
        let mut q = Query::default();
        f(&mut q);
        queries.push(q);
    };
    add(&|q| q.principal = Some("user-3".into()));
    add(&|q| q.principal = Some("alice".into()));
    add(&|q| q.tool = Some("tool_2".into()));
    add(&|q| q.tool = Some("wire_money".into()));
    add(&|q| q.server = Some("jira".into()));
    add(&|q| q.outcome = Some("denied".into()));
    add(&|q| q.gateway = Some("gw-2".into()));
    add(&|q| q.tenant = Some("ACME".into()));
    add(&|q| q.tenant = Some("financ\u{e9}".into()));
    add(&|q| q.tenants = vec!["finance".into()]);
    add(&|q| q.tenants = vec!["acme".into(), "globex".into()]);
    add(&|q| q.reason = Some("rule 1".into()));
    add(&|q| q.reason = Some("RULE".into()));
    add(&|q| q.approval_id = Some("ap_0".into()));
    add(&|q| q.trace_id = Some("trace-7".into()));
    add(&|q| {
        q.from_us = Some(now - 2000 * 1_000_000);
        q.to_us = Some(now - 1000 * 1_000_000);
    });
    add(&|q| {
        q.principal = Some("user-1".into());
        q.outcome = Some("denied".into());
        q.from_us = Some(now - 2500 * 1_000_000);
    });
    add(&|q| {
        q.server = Some("ops".into());
        q.tenants = vec!["acme".into()];
        q.limit = 7;
    });
    add(&|q| q.limit = 3);
    for q in &queries {
        let (a, b) = (s.search(q).unwrap(), p.search(q).unwrap());
        assert_eq!(a.total, b.total, "{q:?}");
        let fa: Vec<_> = a.rows.iter().map(fields).collect();
        let fb: Vec<_> = b.rows.iter().map(fields).collect();
        assert_eq!(fa, fb, "{q:?}");
        assert_eq!(
            a.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            b.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            "ids in arrival order: {q:?}"
        );
        assert_eq!(a.next_before, b.next_before, "{q:?}");
        // Every page, to the end.
        let mut pq = Query {
            limit: 9,
            ..q.clone()
        };
        loop {
            let (pa, pb) = (s.search(&pq).unwrap(), p.search(&pq).unwrap());
            assert_eq!(
                pa.rows.iter().map(fields).collect::<Vec<_>>(),
                pb.rows.iter().map(fields).collect::<Vec<_>>(),
                "{pq:?}"
            );
            assert_eq!(pa.next_before, pb.next_before);
            match pa.next_before {
                Some(x) => pq.before_id = Some(x),
                None => break,
            }
        }
        let (va, vb) = (s.verify(q).unwrap(), p.verify(q).unwrap());
        assert_eq!(
            serde_json::to_value(&va).unwrap(),
            serde_json::to_value(&vb).unwrap(),
            "{q:?}"
        );
        for r in &a.rows {
            for scope in [vec![], vec!["acme".to_owned()]] {
                let (ra, rb) = (s.get(r.id, &scope).unwrap(), p.get(r.id, &scope).unwrap());
                assert_eq!(ra.is_some(), rb.is_some());
                if let (Some(ra), Some(rb)) = (ra, rb) {
                    assert_eq!(ra.raw, rb.raw);
                    assert_eq!(fields(&ra), fields(&rb));
                }
            }
        }
    }
    let notice = p
        .search(&Query {
            server: Some("oldapi".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(
        notice.rows[0].notice.as_deref(),
        Some("server `oldapi` is deprecated")
    );
    for scope in [vec![], vec!["acme".to_owned()], vec!["finance".to_owned()]] {
        for g in [None, Some("gw-2")] {
            let (la, lb) = (
                s.live(Duration::from_secs(3600), g, &scope).unwrap(),
                p.live(Duration::from_secs(3600), g, &scope).unwrap(),
            );
            assert_eq!(
                (la.calls, &la.outcomes, &la.top_tools, &la.top_principals),
                (lb.calls, &lb.outcomes, &lb.top_tools, &lb.top_principals),
                "{scope:?} {g:?}"
            );
            assert_eq!(
                (&la.top_reasons, &la.dlp, &la.gateways, la.p50_ms, la.p99_ms),
                (&lb.top_reasons, &lb.dlp, &lb.gateways, lb.p50_ms, lb.p99_ms)
            );
        }
    }
}

/// What a searcher types is a value, never SQL; a gateway's id with SQL
/// in it is a name; a NUL in a record (which PostgreSQL's text cannot
/// hold) is kept as U+FFFD where it is searched, and found by the NUL.
#[test]
fn sql_in_a_search_or_a_record_is_a_value() {
    let pg = PgServer::start();
    let s = on(&pg, "hostile", Limits::default());
    let mut t = Trail::new();
    let at = recent_base();
    let nasty = [
        "x'; DROP TABLE warden_audit; --",
        "' OR '1'='1",
        "%",
        "_",
        "a\\b",
        "$1",
        "a\u{0}b",
    ];
    for (i, p) in nasty.iter().enumerate() {
        t.push(serde_json::json!({
            "ts": jiff::Timestamp::from_second(at + i as i64).unwrap().to_string(),
            "principal": p, "tenant": p, "server": p, "direction": "request",
            "method": "tools/call", "tool": p, "outcome": "denied",
            "reason": format!("why: {p}"), "trace_id": p,
        }));
    }
    let gw = "gw');DROP/**/TABLE/**/warden_audit;--";
    assert!(valid_gateway(gw));
    let done = s.ingest(gw, &t.body(0, t.lines.len())).unwrap();
    assert_eq!(done.accepted, nasty.len() as u64);
    for (i, p) in nasty.iter().enumerate() {
        for q in [
            Query {
                principal: Some((*p).to_owned()),
                ..Query::default()
            },
            Query {
                tool: Some((*p).to_owned()),
                trace_id: Some((*p).to_owned()),
                ..Query::default()
            },
            Query {
                tenant: Some((*p).to_owned()),
                server: Some((*p).to_owned()),
                ..Query::default()
            },
            Query {
                tenants: vec![(*p).to_owned()],
                reason: Some(format!("why: {p}")),
                gateway: Some(gw.to_owned()),
                ..Query::default()
            },
        ] {
            let found = s.search(&q).unwrap();
            assert_eq!(
                found.rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
                vec![i as u64],
                "{p:?} {q:?}"
            );
        }
    }
    // A substring is a substring: no wildcard, no quoting.
    // `_` is in `warden_audit` too.
    for (x, n) in [("%", 1), ("_", 2), ("' OR ", 1), ("OR '1'='1' --", 0)] {
        let q = Query {
            reason: Some(x.into()),
            ..Query::default()
        };
        assert_eq!(s.search(&q).unwrap().total, n, "{x:?}");
    }
    assert_eq!(
        stored(&pg, "hostile"),
        nasty.len() as i64,
        "the table is there"
    );
    // The NUL: U+FFFD in the columns, the escape in the line.
    let r = &s
        .search(&Query {
            principal: Some("a\u{0}b".into()),
            ..Query::default()
        })
        .unwrap()
        .rows[0];
    assert_eq!(r.principal, "a\u{fffd}b");
    let line = s.get(r.id, &[]).unwrap().unwrap().raw.unwrap();
    assert!(line.contains("a\\u0000b"), "{line}");
    assert!(s.verify(&Query::default()).unwrap().ok);
}

/// A record stamped ahead (a gateway's clock, or a forged stamp) is kept
/// as of its arrival, in today's partition (no future partition is made
/// for it); sent again once its stamp has passed, through another agent,
/// it is still one record.
#[test]
fn a_record_from_the_future_is_kept_once_as_of_its_arrival() {
    let pg = PgServer::start();
    let a = on(&pg, "future", Limits::default());
    let b = again(&pg, "future", Limits::default());
    let mut t = Trail::new();
    let soon = now_s() + 2;
    let far = now_s() + 10 * 365 * 86_400;
    t.call(soon, "ann", "acme", "echo", "denied");
    t.call(far, "bob", "acme", "echo", "denied");
    let parts_before = count(
        &pg,
        "future",
        "SELECT count(*) FROM warden_audit_partitions",
    );
    assert_eq!(a.ingest("gw-1", &t.body(0, 2)).unwrap().accepted, 2);
    assert_eq!(
        count(
            &pg,
            "future",
            "SELECT count(*) FROM warden_audit_partitions"
        ),
        parts_before
    );
    assert!(
        count(&pg, "future", "SELECT max(ts_us) FROM warden_audit")
            <= now_s() * 1_000_000 + 1_000_000
    );
    assert_eq!(
        a.live(Duration::from_secs(300), None, &[]).unwrap().calls,
        2
    );
    std::thread::sleep(Duration::from_millis(3_100));
    // `soon` has passed: the line now reads as of its own time.
    let d = b.ingest("gw-1", &t.body(0, 2)).unwrap();
    assert_eq!((d.accepted, d.duplicates), (0, 2));
    assert_eq!(stored(&pg, "future"), 2);
    assert!(a.verify(&Query::default()).unwrap().ok);
}

/// A batch as large as a body may be (tens of thousands of short lines)
/// is one transaction: stored whole, or, with one bad line at its end,
/// not at all; sent again, all duplicates.
#[test]
fn a_huge_batch_is_all_or_nothing() {
    let pg = PgServer::start();
    let s = on(&pg, "huge", Limits::default());
    let mut t = Trail::new();
    let ts = jiff::Timestamp::from_second(recent_base())
        .unwrap()
        .to_string();
    let mut size = 0;
    while size < MAX_BODY - 400 {
        size += t
            .push(
                serde_json::json!({"ts": ts, "principal": "p", "tenant": "t", "server": "s",
                "direction": "request", "outcome": "forwarded"}),
            )
            .len()
            + 1;
    }
    t.lines.pop();
    let n = t.lines.len();
    let body = t.body(0, n);
    assert!(body.len() <= MAX_BODY && n > 40_000, "{} lines", n);
    let mut bad = body.clone();
    bad.extend_from_slice(b"{\"seq\":1}\n");
    assert!(matches!(
        s.ingest("gw", &bad),
        Err(IngestError::Refused(e)) if e.starts_with(&format!("line {}: ", n + 1))
    ));
    assert_eq!(stored(&pg, "huge"), 0);
    let started = std::time::Instant::now();
    assert_eq!(s.ingest("gw", &body).unwrap().accepted, n as u64);
    eprintln!("{n} lines in one batch: {:?}", started.elapsed());
    assert_eq!(s.ingest("gw", &body).unwrap().duplicates, n as u64);
    assert_eq!(stored(&pg, "huge"), n as i64);
    let mut over = body;
    over.resize(MAX_BODY + 1, b'\n');
    assert!(matches!(
        s.ingest("gw", &over),
        Err(IngestError::Refused(_))
    ));
}

/// A batch whose records fall on more past days than a batch may make
/// partitions for is refused (its gateway then sends it line by line, each
/// line making at most one): a gateway cannot make partitions without
/// bound, and the retention bounds them all.
#[test]
fn one_batch_makes_few_partitions() {
    let pg = PgServer::start();
    // A retention of 30 days: a partition a day.
    let s = on(
        &pg,
        "days",
        Limits {
            retention: Duration::from_secs(30 * 86_400),
            ..Limits::default()
        },
    );
    let now = now_s();
    let mut t = Trail::new();
    for d in 0..10 {
        t.push(serde_json::json!({
            "ts": jiff::Timestamp::from_second(now - (20 + d) * 86_400).unwrap().to_string(),
            "principal": "p", "tenant": "t", "server": "s", "direction": "request", "outcome": "forwarded",
        }));
    }
    let before = count(&pg, "days", "SELECT count(*) FROM warden_audit_partitions");
    let e = s.ingest("gw", &t.body(0, 10)).unwrap_err();
    assert!(
        matches!(&e, IngestError::Refused(m) if m.contains("need 10 partitions")),
        "{e}"
    );
    assert_eq!(stored(&pg, "days"), 0);
    for i in 0..10 {
        assert_eq!(s.ingest("gw", &t.body(i, i + 1)).unwrap().accepted, 1);
    }
    assert_eq!(
        count(&pg, "days", "SELECT count(*) FROM warden_audit_partitions"),
        before + 10
    );
    assert!(s.verify(&Query::default()).unwrap().ok);
}

/// A search or a verification that runs past its budget is cut off (the
/// statement timeout), and the reader is left as it was. Another session
/// holds the table while they run, so they wait on it until the timeout
/// (which covers a wait on a lock) whatever the machine's speed: a
/// store small enough to read within the budget on a fast machine would
/// otherwise pass the search uncut.
#[test]
fn a_search_past_its_budget_is_cut_off() {
    let pg = PgServer::start();
    let s = on(&pg, "budget", Limits::default());
    let mut t = Trail::new();
    let base = recent_base();
    for i in 0..2_000 {
        call_at(&mut t, base + i / 200, "alice");
    }
    s.ingest("gw", &t.body(0, t.lines.len())).unwrap();
    let broad = Query {
        reason: Some("never matches".into()),
        ..Query::default()
    };
    let mut holder = postgres::Client::connect(&pg.url("budget"), postgres::NoTls).unwrap();
    let mut held = holder.transaction().unwrap();
    held.batch_execute("LOCK TABLE warden_audit IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let started = std::time::Instant::now();
    let e = s
        .search_within(&broad, Duration::from_millis(300), 1)
        .expect_err("cut off");
    assert!(format!("{e:#}").starts_with(SEARCH_TOO_BROAD), "{e:#}");
    match s.verify_within(&Query::default(), Duration::from_millis(300)) {
        Ok(v) => assert!(v.truncated, "read {}", v.records),
        Err(e) => assert!(e.to_string().starts_with(SEARCH_TOO_BROAD), "{e}"),
    }
    // Cut off at the budget, not after the holder let go.
    assert!(started.elapsed() < Duration::from_secs(20));
    held.rollback().unwrap();
    for _ in 0..3 {
        assert_eq!(
            s.search(&Query::default()).unwrap().total,
            t.lines.len() as u64
        );
        assert_eq!(
            s.verify(&Query::default()).unwrap().records,
            t.lines.len() as u64
        );
    }
    // The bound of one day is a day.
    assert_eq!(parts::day(DAY_US + 5), DAY_US);
}

/// The partitions' span follows the retention, so a store holds about 32
/// of them whatever it keeps (a year: 12 days each); agents keeping
/// different retentions on one database cut their partitions to the gaps
/// the others left, never overlapping.
#[test]
fn partitions_span_the_retention_over_thirty_two() {
    let pg = PgServer::start();
    let year = Limits {
        retention: Duration::from_secs(365 * 86_400),
        ..Limits::default()
    };
    let month = Limits {
        retention: Duration::from_secs(30 * 86_400),
        ..Limits::default()
    };
    assert_eq!(parts::span_days(&year), 12);
    assert_eq!(parts::span_days(&month), 1);
    assert_eq!(parts::span_days(&Limits::default()), 1);
    assert_eq!(
        parts::span_days(&Limits {
            retention: Duration::from_secs(10 * 365 * 86_400),
            ..Limits::default()
        }),
        32
    );
    let a = on(&pg, "spans", year);
    let b = again(&pg, "spans", month);
    let now = now_s();
    // B (30 days) first: a day 20 days ago.
    let mut tb = Trail::new();
    call_at(&mut tb, now - 20 * 86_400, "b");
    b.ingest("gw-b", &tb.body(0, tb.lines.len())).unwrap();
    // A (a year): ten consecutive days from 100 days ago, one batch, and
    // the days around B's.
    let mut ta = Trail::new();
    for d in (95..105).chain(18..23) {
        call_at(&mut ta, now - d * 86_400, "a");
    }
    let d = a.ingest("gw-a", &ta.body(0, ta.lines.len())).unwrap();
    assert_eq!(d.accepted, ta.lines.len() as u64);
    let ranges: Vec<(i64, i64)> = pg
        .psql(
            "spans",
            "SELECT lo || ' ' || hi FROM warden_audit_partitions ORDER BY lo",
        )
        .unwrap()
        .lines()
        .map(|l| {
            let mut it = l.split(' ').map(|n| n.parse::<i64>().unwrap());
            (it.next().unwrap(), it.next().unwrap())
        })
        .collect();
    assert!(
        ranges.windows(2).all(|w| w[0].1 <= w[1].0),
        "no two overlap: {ranges:?}"
    );
    assert!(ranges.iter().all(|(lo, hi)| hi - lo <= 12 * DAY_US));
    // Ten days, most in 12-day spans: a handful of partitions, not ten.
    let old: Vec<_> = ranges
        .iter()
        .filter(|(lo, _)| *lo < (now - 90 * 86_400) * 1_000_000)
        .collect();
    assert!(old.len() <= 2, "{old:?}");
    // B's day kept its own partition; A's around it are cut to the gap.
    let bday = parts::day((now - 20 * 86_400) * 1_000_000);
    assert!(ranges.contains(&(bday, bday + DAY_US)), "{ranges:?}");
    assert_eq!(
        stored(&pg, "spans"),
        (ta.lines.len() + tb.lines.len()) as i64
    );
    assert!(a.verify(&Query::default()).unwrap().ok);
    // A's retention drops a span once all of it is past.
    let gone = again(
        &pg,
        "spans",
        Limits {
            retention: Duration::from_secs(60 * 86_400),
            ..Limits::default()
        },
    )
    .trim()
    .unwrap();
    assert_eq!(gone, 20, "the ten calls of 95-104 days ago");
    assert_eq!(stored(&pg, "spans"), 12);
}

/// PostgreSQL restarted under the agents: their connections (and the
/// statements prepared on them) are gone; a batch or a verification that
/// fails on the broken connection succeeds the next time it is tried (as a
/// gateway sends a batch again), on a new connection with its statements
/// prepared again, and nothing is stored twice.
#[test]
fn a_database_restart_is_survived() {
    let mut pg = PgServer::start();
    let s = on(&pg, "restart", Limits::default());
    let mut t = Trail::new();
    let base = recent_base();
    for i in 0..40 {
        call_at(&mut t, base + i, "alice");
    }
    s.ingest("gw", &t.body(0, 40)).unwrap();
    let principal = Query {
        principal: Some("alice".into()),
        from_us: Some((base + 5) * 1_000_000),
        ..Query::default()
    };
    assert!(s.verify(&principal).unwrap().ok);
    pg.stop();
    pg.run();
    let mut tries = 0;
    let done = loop {
        tries += 1;
        match s.ingest("gw", &t.body(20, 80)) {
            Ok(d) => break d,
            Err(IngestError::StoreFailed(_)) if tries < 2 => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!((done.accepted, done.duplicates), (40, 20));
    let mut tries = 0;
    let v = loop {
        tries += 1;
        match s.verify(&principal) {
            Ok(v) => break v,
            Err(_) if tries < 2 => continue,
            Err(e) => panic!("{e:#}"),
        }
    };
    assert!(v.ok && v.records > 0, "{v:?}");
    assert_eq!(stored(&pg, "restart"), 80);
}

/// Two agents take the same batch whose records carry budget alerts:
/// each alert is queued once; the bound holds; which webhooks took one
/// is kept once each, whichever agent keeps it.
#[test]
fn budget_alerts_are_queued_once_across_agents() {
    let pg = PgServer::start();
    let a = on(&pg, "alerts", Limits::default());
    let b = again(&pg, "alerts", Limits::default());
    a.queue_alerts(3);
    b.queue_alerts(3);
    let mut t = Trail::new();
    let base = recent_base();
    super::super::tests::alerting(&mut t, base, 2);
    super::super::tests::alerting(&mut t, base + 1, 2);
    let body = t.body(0, 2);
    let (x, y) = std::thread::scope(|s| {
        let x = s.spawn(|| a.ingest("gw-1", &body).unwrap());
        let y = s.spawn(|| b.ingest("gw-1", &body).unwrap());
        (x.join().unwrap(), y.join().unwrap())
    });
    assert_eq!(x.accepted + y.accepted, 2, "{x:?} {y:?}");
    assert_eq!(x.alerts_queued + y.alerts_queued, 3, "{x:?} {y:?}");
    assert_eq!(x.alerts_dropped + y.alerts_dropped, 1, "{x:?} {y:?}");
    assert_eq!(
        count(&pg, "alerts", "SELECT count(*) FROM warden_budget_alerts"),
        3
    );
    let p = a.pending_alerts(10).unwrap();
    assert_eq!(p.len(), 3);
    a.alert_sent(p[0].id, "ops").unwrap();
    b.alert_sent(p[0].id, "ops").unwrap();
    b.alert_sent(p[0].id, "chat").unwrap();
    let p = b.pending_alerts(10).unwrap();
    assert_eq!(p[0].sent, vec!["ops".to_owned(), "chat".to_owned()]);
    b.alert_done(p[0].id).unwrap();
    assert_eq!(a.pending_alerts(10).unwrap().len(), 2);
}
