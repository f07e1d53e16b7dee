//! Backup, restore and migration bring back the same control plane:
//! revisions (their bytes), history, what is served, the kill switch and
//! its log, the registry and its events, tenants' layers, the change
//! record and approvals. A backup restored into a new directory, a state
//! directory moved into PostgreSQL, and that database dumped with
//! `pg_dump` and restored into another: each is opened as an agent opens
//! it and compared with the original.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::state::{backup, migrate, restore};
use crate::pg::testing::PgServer;
use crate::store::backend::{Archive, Backend, StateDir};
use crate::store::isolation_tests::{finance_defines, fiona};
use crate::store::layer_tests::ORG;
use crate::store::Store;

fn digest(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Everything a control plane keeps, read through its backend.
fn fingerprint(b: &dyn Backend) -> Value {
    let history = b.load_history().unwrap();
    let revisions: Vec<Value> = history
        .iter()
        .map(|h| {
            let built = b.read_revision(h.seq, Archive::Built).ok();
            let source = b.read_revision(h.seq, Archive::Source).ok();
            json!({"seq": h.seq, "built": built.map(|x| digest(&x)), "source": source.map(|x| digest(&x))})
        })
        .collect();
    let layers: Vec<Value> = b
        .load_layers()
        .unwrap()
        .into_iter()
        .map(|(t, l)| {
            let sources: Vec<Option<String>> = l
                .history
                .iter()
                .map(|e| b.read_layer(&t, e.seq).ok().map(|x| digest(&x)))
                .collect();
            json!({"tenant": t, "history": l.history, "state": l.state, "sources": sources})
        })
        .collect();
    json!({
        "sequence": b.sequence(),
        "history": history,
        "revisions": revisions,
        "served": b.load_served().unwrap(),
        "rollout": b.load_rollout().unwrap(),
        "kill": b.load_kill().unwrap(),
        "kill_log": b.load_kill_log(),
        "registry": b.load_registry().unwrap(),
        "registry_events": b.registry_events().unwrap().into_iter().map(|(s, e)| json!([s, e])).collect::<Vec<_>>(),
        "layers": layers,
        "changes": b.all_changes().unwrap(),
    })
}

/// An agent's state with a bit of everything: two org revisions, a
/// tenant's layer defining a server, a registry entry, the kill switch
/// pulled, a pending approval.
fn busy_state(dir: &Path) {
    let src = dir.join("source");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("warden.yaml"), ORG).unwrap();
    let s = Store::open(&dir.join("state"), &src, None).unwrap();
    s.publish_source("ann", true).unwrap();
    finance_defines(&s, &["ledger"]);
    let tools =
        json!({"tools": [{"name": "t", "description": "d", "inputSchema": {"type": "object"}}]});
    s.registry_apply(&fiona(), "registry.register", "", |r, taken| {
        r.register(&fiona(), "ledger", None, &tools, taken, SystemTime::now())
    })
    .unwrap();
    s.kill("ann", "tool", "deploy", true).unwrap();
    std::fs::write(src.join("warden.yaml"), format!("{ORG}# two\n")).unwrap();
    s.publish_source("ann", false).unwrap();
    let a = crate::approvals::Approvals::open(&dir.join("state"), Default::default()).unwrap();
    let held = crate::approvals::Claim {
        tenant: "acme".into(),
        principal: "p-1".into(),
        server: "ops".into(),
        tool: "deploy".into(),
        args_digest: warden_filters::chain::plan::args_digest("{}"),
        arguments: "{}".into(),
        risk: "CRITICAL".into(),
        reason: "risk_tier:CRITICAL".into(),
        justification: None,
        required: 1,
        pending_secs: 600,
        grant_secs: 30,
        gateway: "gw1".into(),
        trace_id: None,
        nonce: None,
        for_tenants: Vec::new(),
    };
    a.claim(held, None, SystemTime::now()).unwrap();
    // Ten calls of a gateway in the audit store.
    let audit = crate::audit::AuditStore::open(
        &dir.join("state").join("audit.sqlite3"),
        crate::audit::Limits::default(),
    )
    .unwrap();
    let t = crate::audit::tests::sample();
    audit.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
}

/// The audit store's records and whether every chain verifies.
fn audit_of(a: &crate::audit::AuditStore) -> (u64, bool) {
    let q = crate::audit::Query::default();
    let v = a.verify(&q).unwrap();
    (a.search(&q).unwrap().total, v.ok && !v.truncated)
}

fn approvals_of(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("approvals.json")).unwrap()).unwrap()
}

#[test]
fn a_backup_restored_is_the_same_control_plane() {
    let d = tempfile::tempdir().unwrap();
    busy_state(d.path());
    let state = d.path().join("state");
    let before = fingerprint(&StateDir::open(&state).unwrap());
    assert_eq!(before["history"].as_array().unwrap().len(), 5, "{before}");
    let out = d.path().join("backup.tar.gz");
    backup(&state, &out).unwrap();
    assert!(backup(&state, &out).is_err(), "never written over");
    let again = d.path().join("restored");
    restore(&out, &again).unwrap();
    assert_eq!(fingerprint(&StateDir::open(&again).unwrap()), before);
    assert_eq!(approvals_of(&again), approvals_of(&state));
    let audit = |d: &Path| {
        crate::audit::AuditStore::open(&d.join("audit.sqlite3"), crate::audit::Limits::default())
            .unwrap()
    };
    assert_eq!(audit_of(&audit(&again)), audit_of(&audit(&state)));
    assert!(audit_of(&audit(&again)).0 > 0);
    assert!(
        restore(&out, &again).is_err(),
        "never into a directory in use"
    );
    // An agent opens it.
    Store::open(&again, &d.path().join("source"), None).unwrap();
}

#[test]
fn a_backup_with_a_link_or_a_way_out_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let evil = d.path().join("evil.tar.gz");
    let f = std::fs::File::create(&evil).unwrap();
    let mut t = tar::Builder::new(flate2::write::GzEncoder::new(
        f,
        flate2::Compression::default(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    t.append_link(&mut h, "revisions", "/etc").unwrap();
    t.into_inner().unwrap().finish().unwrap();
    let err = restore(&evil, &d.path().join("s")).unwrap_err();
    assert!(err.to_string().contains("link"), "{err}");
    assert!(!Path::new("/etc/00000001.tar.gz").exists());
}

#[test]
fn a_state_directory_moved_into_postgres_and_dumped_is_the_same_control_plane() {
    let pg = PgServer::start();
    let d = tempfile::tempdir().unwrap();
    busy_state(d.path());
    let state = d.path().join("state");
    let before = fingerprint(&StateDir::open(&state).unwrap());
    let url = pg.database("moved");
    let (copied, approvals, audit) = migrate(&state, &url).unwrap();
    let files_audit = crate::audit::AuditStore::open(
        &state.join("audit.sqlite3"),
        crate::audit::Limits::default(),
    )
    .unwrap();
    let (lines, verified) = audit_of(&files_audit);
    assert_eq!((copied.history, approvals, audit), (5, 1, lines));
    let pg_audit =
        crate::audit::AuditStore::on_database(&url, crate::audit::Limits::default()).unwrap();
    assert_eq!(audit_of(&pg_audit), (lines, verified));
    assert!(
        verified,
        "the chain verifies in the database as in the file"
    );
    let on_pg = crate::store::postgres::Postgres::connect(&url).unwrap();
    assert_eq!(fingerprint(&on_pg), before);
    assert!(
        migrate(&state, &url).is_err(),
        "never into a database in use"
    );
    // The database backed up with pg_dump, restored into another.
    let dump = d.path().join("warden.dump");
    let out = std::process::Command::new(pg.bin("pg_dump"))
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = pg.database("restored");
    let out = std::process::Command::new(pg.bin("pg_restore"))
        .args(["--no-owner", "-d", &restored])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = crate::store::postgres::Postgres::connect(&restored).unwrap();
    assert_eq!(fingerprint(&back), before);
    assert_eq!(
        pg.psql("restored", "SELECT count(*) FROM warden_approvals")
            .unwrap(),
        "1"
    );
    // An agent opens it and serves what the files served.
    let s = Store::with_backend(Box::new(back), &d.path().join("source"), None).unwrap();
    let files = Store::open(&state, &d.path().join("source"), None).unwrap();
    assert_eq!(
        s.current().unwrap().archive,
        files.current().unwrap().archive
    );
}
