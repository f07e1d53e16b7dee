//! Spend reports on a real PostgreSQL: the checks of SQLite's
//! (`../spend_tests.rs`) on the same records, and the migration that
//! fills the cost columns of records stored before them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::super::spend_tests::{check_store, records, Period};
use super::super::*;
use crate::pg::testing::PgServer;

#[test]
fn spend_adds_up_to_the_records_each_row_lists() {
    let pg = PgServer::start();
    let s = AuditStore::on_database(&pg.database("spend"), Limits::default()).unwrap();
    let p = Period::recent();
    let t = records(&p);
    let done = s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    assert_eq!((done.accepted, done.unreadable_costs), (13, 1));
    let again = s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    assert_eq!((again.duplicates, again.unreadable_costs), (13, 0));
    check_store(&s, &p);
}

/// Records stored before schema step 7 gain their cost when an agent
/// that knows it starts: the step's SQL reads them as ingest does (a line
/// jsonb cannot read, holding U+0000, is left unpriced, not refused).
#[test]
fn the_migration_fills_the_cost_of_older_records() {
    let pg = PgServer::start();
    let url = pg.database("older");
    let p = Period::recent();
    let mut t = records(&p);
    // A priced call whose principal holds a NUL (jsonb refuses it).
    let ts = jiff::Timestamp::from_second(p.from + 5)
        .unwrap()
        .to_string();
    t.push(serde_json::json!({
        "ts": ts, "tenant": "acme", "principal": "nul\u{0}", "direction": "request",
        "method": "tools/call", "outcome": "forwarded", "trace_id": "t-nul",
        "cost": {"amount": "7", "currency": "EUR"},
    }));
    {
        let s = AuditStore::on_database(&url, Limits::default()).unwrap();
        s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    }
    // The store as step 6 left it.
    pg.psql(
        "older",
        "DROP INDEX warden_audit_priced; DROP INDEX warden_audit_team; \
         ALTER TABLE warden_audit DROP COLUMN cost_micros, DROP COLUMN currency, \
         DROP COLUMN team; DELETE FROM warden_migrations WHERE version = 7",
    )
    .unwrap();
    let s = AuditStore::on_database(&pg.url("older"), Limits::default()).unwrap();
    let unpriced: i64 = pg
        .psql(
            "older",
            "SELECT count(*) FROM warden_audit WHERE principal LIKE 'nul%' AND cost_micros IS NULL",
        )
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(unpriced, 1);
    // Without that record, the same reports as on a store that had the
    // columns all along.
    pg.psql(
        "older",
        "DELETE FROM warden_audit WHERE principal LIKE 'nul%'",
    )
    .unwrap();
    check_store(&s, &p);
}
