//! Two stores on one PostgreSQL database (two agents in HA): what one
//! publishes the other serves, two publishes at once get two sequences,
//! a change made while another agent changed the store is made on what
//! that agent left, and a database that went away refuses changes
//! instead of losing them. A real server (`tests/src/postgres.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::layer_tests::{layer, rego, ORG};
use super::*;
use crate::pg::testing::PgServer;

struct Pair {
    _dir: tempfile::TempDir,
    a: Arc<Store>,
    b: Arc<Store>,
    url: String,
    src: PathBuf,
}

fn shared(pg: &PgServer, db: &str) -> Pair {
    let url = pg.database(db);
    crate::pg::migrate(&url).unwrap();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("source");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("warden.yaml"), ORG).unwrap();
    let open = || {
        Arc::new(
            Store::with_backend(
                Box::new(postgres::Postgres::connect(&url).unwrap()),
                &src,
                None,
            )
            .unwrap(),
        )
    };
    let (a, b) = (open(), open());
    Pair {
        _dir: d,
        a,
        b,
        url,
        src,
    }
}

fn served(s: &Store) -> Vec<String> {
    s.lock().served.iter().map(|p| p.revision.clone()).collect()
}

#[test]
fn what_one_agent_publishes_the_other_serves() {
    let pg = PgServer::start();
    let p = shared(&pg, "publish");
    let first = p.a.publish_source("ann", true).unwrap().unwrap();
    // B has not looked yet; it catches up (as its listener makes it).
    let woke = p.b.subscribe();
    p.b.catch_up().unwrap();
    assert!(woke.has_changed().unwrap(), "B's long polls woke");
    assert_eq!(served(&p.b), vec![first.revision.clone()]);
    assert_eq!(
        p.b.for_gateway("gw-1", &Default::default())
            .unwrap()
            .archive,
        first.archive,
        "the same bytes under the same revision"
    );
    // A change on B starts from what A left: a layer published on B, then
    // the org's source published again on A, keeps B's layer.
    p.b.publish_layer(
        "bob",
        "finance",
        layer("finance", &rego("finance", "decision := {\"allow\": true}")),
        None,
    )
    .unwrap();
    std::fs::write(p.src.join("warden.yaml"), format!("{ORG}# edited\n")).unwrap();
    let again = p.a.publish_source("ann", false).unwrap().unwrap();
    assert!(again.seq > first.seq);
    let files = archive::unpack(&again.archive).unwrap();
    assert!(
        files.keys().any(|k| k.contains("finance")),
        "A built with B's layer: {:?}",
        files.keys().collect::<Vec<_>>()
    );
    p.b.catch_up().unwrap();
    assert_eq!(served(&p.a), served(&p.b));
    assert_eq!(p.a.history().len(), p.b.history().len());
    // A third agent started now loads the same state.
    let c = Store::with_backend(
        Box::new(postgres::Postgres::connect(&p.url).unwrap()),
        &p.src,
        None,
    )
    .unwrap();
    assert_eq!(served(&c), served(&p.a));
}

#[test]
fn two_publishes_at_once_get_two_sequences_and_both_are_kept() {
    let pg = PgServer::start();
    let p = shared(&pg, "race");
    p.a.publish_source("ann", true).unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let run = |s: Arc<Store>, who: &'static str| {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            let mut seqs = Vec::new();
            for _ in 0..5 {
                barrier.wait();
                seqs.push(s.publish_source(who, true).unwrap().unwrap().seq);
            }
            seqs
        })
    };
    let ta = run(p.a.clone(), "ann");
    let tb = run(p.b.clone(), "bob");
    let mut all: Vec<u64> = ta.join().unwrap();
    all.extend(tb.join().unwrap());
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "every publish its own sequence: {all:?}");
    // Both agents end on the newest, and the history holds all eleven.
    p.a.catch_up().unwrap();
    p.b.catch_up().unwrap();
    let newest = *all.last().unwrap();
    assert_eq!(p.a.current().unwrap().seq, newest);
    assert_eq!(p.b.current().unwrap().seq, newest);
    let hist: Vec<u64> = p.a.history().iter().map(|h| h.seq).collect();
    for s in &all {
        assert!(hist.contains(s), "{s} kept in the history {hist:?}");
    }
    assert_eq!(
        pg.psql("race", "SELECT count(*) FROM warden_revisions")
            .unwrap(),
        "11"
    );
}

#[test]
fn a_database_gone_refuses_changes_and_nothing_is_half_kept() {
    let mut pg = PgServer::start();
    let p = shared(&pg, "outage");
    let first = p.a.publish_source("ann", true).unwrap().unwrap();
    pg.stop();
    std::fs::write(p.src.join("warden.yaml"), format!("{ORG}# during\n")).unwrap();
    let err = p.a.publish_source("ann", false).unwrap_err();
    assert!(
        err.0.iter().any(|e| e.file == UNAVAILABLE),
        "refused as the store's unavailability: {err}"
    );
    // What is served is what was served.
    assert_eq!(p.a.current().unwrap().revision, first.revision);
    pg.run();
    // Back: the same change goes through, on either agent.
    let again = p.b.publish_source("bob", true).unwrap().unwrap();
    p.a.catch_up().unwrap();
    assert_eq!(p.a.current().unwrap().revision, again.revision);
}
