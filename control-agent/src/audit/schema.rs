//! The store's schema, the migrations that bring an older store up to date
//! (the `tenant_key` column, the strict re-keying, the cost columns), and
//! how a connection is opened. The budget alerts' queue (`budget_alerts`,
//! see `alerts.rs`) is a table of its own: a store written before it gets
//! it from [`SCHEMA`] (`CREATE TABLE IF NOT EXISTS`), empty.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::{params, Connection};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    principal TEXT NOT NULL,
    tenant TEXT NOT NULL,
    tenant_key TEXT NOT NULL,
    server TEXT NOT NULL,
    tool TEXT,
    method TEXT,
    direction TEXT NOT NULL,
    outcome TEXT NOT NULL,
    decided_by TEXT,
    reason TEXT,
    risk TEXT,
    trace_id TEXT NOT NULL,
    approval_id TEXT,
    latency_us INTEGER,
    dlp TEXT,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL,
    cost_micros INTEGER,
    currency TEXT,
    team TEXT
);
CREATE TABLE IF NOT EXISTS lines (id INTEGER PRIMARY KEY, raw TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS records_gone AFTER DELETE ON records
    BEGIN DELETE FROM lines WHERE id = old.id; END;
CREATE UNIQUE INDEX IF NOT EXISTS records_line ON records(gateway, hash);
CREATE INDEX IF NOT EXISTS records_chain ON records(gateway, seq);
CREATE INDEX IF NOT EXISTS records_ts ON records(ts_us, tenant_key);
CREATE INDEX IF NOT EXISTS records_gateway ON records(gateway, ts_us, tenant_key);
CREATE INDEX IF NOT EXISTS records_principal ON records(principal, ts_us, tenant_key);
CREATE INDEX IF NOT EXISTS records_tenant ON records(tenant_key, ts_us);
CREATE INDEX IF NOT EXISTS records_server ON records(server, ts_us, tenant_key);
CREATE INDEX IF NOT EXISTS records_tool ON records(tool, ts_us, tenant_key);
CREATE INDEX IF NOT EXISTS records_outcome ON records(outcome, ts_us, tenant_key);
CREATE INDEX IF NOT EXISTS records_trace ON records(trace_id);
CREATE INDEX IF NOT EXISTS records_approval ON records(approval_id) WHERE approval_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_priced ON records(ts_us, tenant_key) WHERE cost_micros IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_team ON records(team, ts_us, tenant_key) WHERE team IS NOT NULL;
CREATE TABLE IF NOT EXISTS budget_alerts (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    queued_us INTEGER NOT NULL,
    alert TEXT NOT NULL,
    sent TEXT NOT NULL DEFAULT '',
    done_us INTEGER
);
CREATE INDEX IF NOT EXISTS budget_alerts_waiting ON budget_alerts(id) WHERE done_us IS NULL;
CREATE INDEX IF NOT EXISTS budget_alerts_done ON budget_alerts(done_us) WHERE done_us IS NOT NULL;
";

/// The columns a [`Row`] is read from, in its order.
pub(super) const COLUMNS: &str =
    "r.id, r.gateway, r.seq, r.ts, r.ts_us, r.principal, r.tenant, r.server, \
     r.tool, r.method, r.direction, r.outcome, r.decided_by, r.reason, r.risk, r.trace_id, \
     r.approval_id, r.latency_us, r.dlp, \
     (SELECT CASE json_type(raw, '$.notice') WHEN 'text' THEN json_extract(raw, '$.notice') END \
      FROM lines WHERE lines.id = r.id)";

/// The indexes that held the tenant as written, before `tenant_key`.
pub(super) const TENANT_INDEXES: &[&str] = &[
    "records_ts",
    "records_gateway",
    "records_principal",
    "records_tenant",
    "records_server",
    "records_tool",
    "records_outcome",
];

/// The form a tenant is compared in (a search's, a viewer's scope, a
/// record's): the tenant scope key approvals and console sessions use
/// ([`warden_config::person::in_scope`]), so `ACME` and `acme` are one
/// tenant everywhere, and `financé`, `ﬁnance` or `ｆｉｎａｎｃｅ` never
/// `finance`.
pub(super) fn tenant_key(tenant: &str) -> String {
    warden_config::names::name_key(warden_config::names::Name::Tenant, tenant)
}

/// The store's `user_version` once every row's `tenant_key` is the tenant
/// scope key ([`tenant_key`]); before it (0), the key of a tenant that is
/// not plain ASCII was its canonical form, which folds accents and
/// compatibility forms (`financé` was `finance`).
pub(super) const KEYS_STRICT: i64 = 1;

/// Brings a store written before `tenant_key` existed up to date: the
/// column, filled from each row's tenant, and the indexes that scope by it
/// (made again by [`SCHEMA`]).
pub(super) fn migrate(c: &mut Connection) -> rusqlite::Result<()> {
    let old = c
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'")?
        .exists([])?
        && !c
            .prepare("SELECT 1 FROM pragma_table_info('records') WHERE name = 'tenant_key'")?
            .exists([])?;
    if !old {
        return Ok(());
    }
    let tx = c.transaction()?;
    tx.execute_batch("ALTER TABLE records ADD COLUMN tenant_key TEXT NOT NULL DEFAULT '';")?;
    for index in TENANT_INDEXES {
        tx.execute_batch(&format!("DROP INDEX IF EXISTS {index};"))?;
    }
    let tenants: Vec<String> = tx
        .prepare("SELECT DISTINCT tenant FROM records")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for t in tenants {
        tx.execute(
            "UPDATE records SET tenant_key = ?1 WHERE tenant = ?2",
            params![tenant_key(&t), t],
        )?;
    }
    tx.commit()
}

/// Brings a store written before the cost columns up to date: the
/// columns (`cost_micros`: the amount in millionths, `currency`, `team`;
/// NULL on a record without a readable cost), filled from the lines that
/// name a cost as ingest fills them ([`super::cost::cost_in`]), in one
/// transaction (their indexes are made by [`SCHEMA`]).
pub(super) fn migrate_cost(c: &mut Connection) -> rusqlite::Result<()> {
    let old = c
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'")?
        .exists([])?
        && !c
            .prepare("SELECT 1 FROM pragma_table_info('records') WHERE name = 'cost_micros'")?
            .exists([])?;
    if !old {
        return Ok(());
    }
    let tx = c.transaction()?;
    tx.execute_batch(
        "ALTER TABLE records ADD COLUMN cost_micros INTEGER; \
         ALTER TABLE records ADD COLUMN currency TEXT; \
         ALTER TABLE records ADD COLUMN team TEXT;",
    )?;
    {
        // Only a line naming `cost` (or holding an escape, which may
        // spell it) can carry one.
        let mut lines = tx.prepare(
            "SELECT id, raw FROM lines WHERE instr(raw, 'cost') > 0 OR instr(raw, '\\u') > 0",
        )?;
        let mut set = tx.prepare(
            "UPDATE records SET cost_micros = ?1, currency = ?2, team = ?3 WHERE id = ?4",
        )?;
        let mut rows = lines.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let raw: String = r.get(1)?;
            let c = super::cost::cost_in(&raw);
            if c.priced.is_some() || c.team.is_some() {
                let (micros, currency) = c.priced.unzip();
                set.execute(params![micros, currency, c.team, id])?;
            }
        }
    }
    tx.commit()
}

/// Brings the `tenant_key` of a store written before [`KEYS_STRICT`] up to
/// date, once (its `user_version` says so): the rows whose tenant is not
/// plain ASCII are keyed again (an ASCII tenant's key did not change).
/// Those are found by their tenant's length in bytes, which is its length
/// in characters only for ASCII (or a NUL, which SQLite's `length` stops
/// at: keyed again too, to the same key).
pub(super) fn rekey(c: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= KEYS_STRICT {
        return Ok(());
    }
    let tx = c.transaction()?;
    let rows: Vec<(i64, String)> = tx
        .prepare(
            "SELECT id, tenant FROM records WHERE length(CAST(tenant AS BLOB)) <> length(tenant)",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut keys: HashMap<String, String> = HashMap::new();
    {
        let mut set = tx.prepare("UPDATE records SET tenant_key = ?1 WHERE id = ?2")?;
        for (id, tenant) in rows {
            let key = keys
                .entry(tenant)
                .or_insert_with_key(|t| tenant_key(t))
                .as_str();
            set.execute(params![key, id])?;
        }
    }
    tx.execute_batch(&format!("PRAGMA user_version = {KEYS_STRICT};"))?;
    tx.commit()
}

pub(super) fn connect(path: &Path) -> anyhow::Result<Connection> {
    let c = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    c.busy_timeout(Duration::from_secs(10))?;
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY; \
         PRAGMA cache_size=-16384; PRAGMA mmap_size=268435456;",
    )?;
    Ok(c)
}
