//! A batch's ingest on PostgreSQL: its lines as columns, the partitions
//! its days need, and its one transaction (the gateway's lock, the look-up
//! of the lines already kept, the insert of the new ones, their
//! partitions' counts).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::Ordering;

use postgres::error::SqlState;
use postgres::Client;

use super::super::lines::Parsed;
use super::super::{lock, now_us, parse_batch, IngestError, Ingested};
use super::parts::{self, DAY_US};
use super::{logged, no_nul, prepared, unprepared, PgStore, LOCK_CLASS};

fn opt_no_nul(s: &Option<String>) -> Option<String> {
    s.as_deref().map(no_nul)
}

/// The `notice` a record carries as text (a deprecated server's), read as
/// SQLite's store reads it from the line.
fn notice_of(raw: &str) -> Option<String> {
    // Most lines hold no notice; a member name may be escaped.
    if !raw.contains("notice") && !raw.contains("\\u") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Notice {
        #[serde(default)]
        notice: Option<serde_json::Value>,
    }
    match serde_json::from_str::<Notice>(raw) {
        Ok(Notice {
            notice: Some(serde_json::Value::String(s)),
        }) => Some(no_nul(&s)),
        _ => None,
    }
}

/// Why a batch's transaction did not store it.
enum Unstored {
    /// A partition it needed is gone (another agent's retention dropped
    /// it): made again, and the batch tried once more.
    NoPartition,
}

/// The new lines of a batch, column by column (one array per column of
/// the `INSERT … SELECT FROM unnest`).
#[derive(Default, Clone)]
struct Columns {
    /// The time each line bears (where an earlier copy of it is kept).
    line_us: Vec<i64>,
    /// Kept at its arrival, its own time being later.
    moved: Vec<bool>,
    seq: Vec<i64>,
    ts: Vec<String>,
    ts_us: Vec<i64>,
    principal: Vec<String>,
    tenant: Vec<String>,
    tenant_key: Vec<String>,
    server: Vec<String>,
    tool: Vec<Option<String>>,
    method: Vec<Option<String>>,
    direction: Vec<String>,
    outcome: Vec<String>,
    decided_by: Vec<Option<String>>,
    reason: Vec<Option<String>>,
    risk: Vec<Option<String>>,
    trace_id: Vec<String>,
    approval_id: Vec<Option<String>>,
    latency_us: Vec<Option<i64>>,
    dlp: Vec<Option<String>>,
    notice: Vec<Option<String>>,
    cost_micros: Vec<Option<i64>>,
    currency: Vec<Option<String>>,
    team: Vec<Option<String>>,
    /// The line's `cost` could not be read (it is stored unpriced).
    unreadable: Vec<bool>,
    prev: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
    raw: Vec<String>,
}

impl Columns {
    fn push(&mut self, p: &Parsed<'_>, kept_us: i64) {
        let f = &p.f;
        let s = |o: &Option<String>| o.as_deref().map(no_nul).unwrap_or_default();
        self.line_us.push(p.ts_us);
        self.moved.push(kept_us != p.ts_us);
        self.seq.push(f.seq as i64);
        self.ts.push(no_nul(&f.ts));
        self.ts_us.push(kept_us);
        self.principal.push(s(&f.principal));
        self.tenant.push(s(&f.tenant));
        self.tenant_key
            .push(no_nul(&super::super::schema::tenant_key(
                f.tenant.as_deref().unwrap_or(""),
            )));
        self.server.push(s(&f.server));
        self.tool.push(opt_no_nul(&f.tool));
        self.method.push(opt_no_nul(&f.method));
        self.direction.push(s(&f.direction));
        self.outcome.push(s(&f.outcome));
        self.decided_by.push(opt_no_nul(&f.decided_by));
        self.reason.push(opt_no_nul(&f.reason));
        self.risk.push(opt_no_nul(&f.risk));
        self.trace_id.push(s(&f.trace_id));
        self.approval_id.push(opt_no_nul(&p.approval_id));
        self.latency_us
            .push(f.latency_us.map(|n| n.min(i64::MAX as u64) as i64));
        self.dlp.push(opt_no_nul(&p.dlp));
        self.notice.push(notice_of(p.raw));
        let (micros, currency) = p.cost.priced.clone().unzip();
        self.cost_micros.push(micros);
        self.currency.push(currency.as_deref().map(no_nul));
        self.team.push(opt_no_nul(&p.cost.team));
        self.unreadable.push(p.cost.unreadable);
        self.prev.push(p.prev.to_vec());
        self.hash.push(p.hash.to_vec());
        self.raw.push(p.raw.to_owned());
    }

    fn len(&self) -> usize {
        self.seq.len()
    }

    /// Only the lines at `keep` (ascending indexes).
    fn only(self, keep: &[usize]) -> Columns {
        fn pick<T: Clone>(v: Vec<T>, keep: &[usize]) -> Vec<T> {
            keep.iter().map(|i| v[*i].clone()).collect()
        }
        Columns {
            line_us: pick(self.line_us, keep),
            moved: pick(self.moved, keep),
            seq: pick(self.seq, keep),
            ts: pick(self.ts, keep),
            ts_us: pick(self.ts_us, keep),
            principal: pick(self.principal, keep),
            tenant: pick(self.tenant, keep),
            tenant_key: pick(self.tenant_key, keep),
            server: pick(self.server, keep),
            tool: pick(self.tool, keep),
            method: pick(self.method, keep),
            direction: pick(self.direction, keep),
            outcome: pick(self.outcome, keep),
            decided_by: pick(self.decided_by, keep),
            reason: pick(self.reason, keep),
            risk: pick(self.risk, keep),
            trace_id: pick(self.trace_id, keep),
            approval_id: pick(self.approval_id, keep),
            latency_us: pick(self.latency_us, keep),
            dlp: pick(self.dlp, keep),
            notice: pick(self.notice, keep),
            cost_micros: pick(self.cost_micros, keep),
            currency: pick(self.currency, keep),
            team: pick(self.team, keep),
            unreadable: pick(self.unreadable, keep),
            prev: pick(self.prev, keep),
            hash: pick(self.hash, keep),
            raw: pick(self.raw, keep),
        }
    }
}

/// Where a batch's lines may already be kept at their own time: one
/// index probe per line in the partition of that time, queried by its name
/// (planned for one table, with the three equalities the unique index
/// answers: through the partitioned table, a partition that has no
/// statistics yet was probed by its time index, a scan of every record of
/// that time for each line). `{}`: the partition. The numbers (from 1) of
/// the lines found.
const HELD_IN: &str = "SELECT i.n FROM unnest($2::bytea[], $3::int8[], $4::int8[]) AS i(h, t, n) \
     CROSS JOIN LATERAL (SELECT 1 FROM {} a \
       WHERE a.gateway = $1 AND a.hash = i.h AND a.ts_us = i.t LIMIT 1) AS kept";

/// The lines kept at their arrival (stamped ahead when they arrived).
const HELD_MOVED: &str = "SELECT i.n FROM unnest($2::bytea[]) WITH ORDINALITY AS i(h, n) \
     JOIN warden_audit_moved m ON m.gateway = $1 AND m.hash = i.h";

/// The new lines, in one statement.
const INSERT: &str = "INSERT INTO warden_audit (id, gateway, seq, ts, ts_us, principal, tenant, \
     tenant_key, server, tool, method, direction, outcome, decided_by, reason, risk, trace_id, \
     approval_id, latency_us, dlp, notice, prev, hash, raw, cost_micros, currency, team) \
     SELECT u.id, $1, u.seq, u.ts, u.ts_us, u.principal, u.tenant, u.tenant_key, u.server, u.tool, \
     u.method, u.direction, u.outcome, u.decided_by, u.reason, u.risk, u.trace_id, u.approval_id, \
     u.latency_us, u.dlp, u.notice, u.prev, u.hash, u.raw, u.cost_micros, u.currency, u.team \
     FROM unnest($2::int8[], $3::int8[], $4::text[], $5::int8[], $6::text[], $7::text[], \
     $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], \
     $15::text[], $16::text[], $17::text[], $18::text[], $19::int8[], $20::text[], $21::text[], \
     $22::bytea[], $23::bytea[], $24::text[], $25::int8[], $26::text[], $27::text[]) \
     AS u(id, seq, ts, ts_us, principal, tenant, tenant_key, server, tool, method, direction, \
     outcome, decided_by, reason, risk, trace_id, approval_id, latency_us, dlp, notice, prev, \
     hash, raw, cost_micros, currency, team) \
     ON CONFLICT DO NOTHING RETURNING ts_us, id";

impl PgStore {
    /// Makes partitions for the days `days` that none holds (at most
    /// `most`; more is a refusal of the batch, which its gateway then sends
    /// line by line).
    pub(super) fn ensure(&self, days: &BTreeSet<i64>, most: usize) -> Result<(), IngestError> {
        let missing: Vec<i64> = {
            let known = lock(&self.shared.known);
            days.iter()
                .filter(|d| !parts::covered(&known, **d))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let span = parts::span_days(&self.shared.limits);
        let now = self
            .shared
            .writer
            .run(move |c| {
                parts::ensure(c, &missing, span, most).map_err(|e| logged("partitions", e))
            })
            .map_err(|e| IngestError::StoreFailed(e.to_string()))?;
        match now {
            Ok(ranges) => {
                *lock(&self.shared.known) = ranges;
                Ok(())
            }
            Err(n) => Err(IngestError::Refused(format!(
                "the batch's records need {n} partitions the store has not made yet (at most {most} are made for one batch): send fewer days at once"
            ))),
        }
    }

    /// [`crate::audit::AuditStore::ingest`] on PostgreSQL.
    pub(in crate::audit) fn ingest(
        &self,
        gateway: &str,
        ndjson: &[u8],
    ) -> Result<Ingested, IngestError> {
        let lines = parse_batch(gateway, ndjson)?;
        let mut done = Ingested::default();
        let now = now_us();
        let cutoff = parts::cutoff(now, &self.shared.limits);
        let mut cols = Columns::default();
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        for p in &lines {
            // A line twice in one batch is stored once, as on SQLite.
            if !seen.insert(p.hash) {
                done.duplicates += 1;
                continue;
            }
            // Kept by its own time, or its arrival when that is earlier (a
            // gateway's clock ahead, or a forged stamp, never keeps a row
            // past retention nor in a future window).
            let kept_us = p.ts_us.min(now);
            if parts::day(kept_us) + DAY_US <= cutoff {
                // Older than the retention keeps: acknowledged, as the
                // retention would delete it at once, and no partition is
                // made for it.
                done.accepted += 1;
                continue;
            }
            cols.push(p, kept_us);
        }
        if cols.len() == 0 {
            return Ok(done);
        }
        let days: BTreeSet<i64> = cols.ts_us.iter().map(|t| parts::day(*t)).collect();
        self.ensure(&days, parts::MAX_NEW_PER_BATCH)?;
        let stored = match self.store(gateway, cols.clone())? {
            Ok(n) => n,
            Err(Unstored::NoPartition) => {
                // Dropped by another agent since: known again, made again.
                lock(&self.shared.known).clear();
                self.ensure(&days, parts::MAX_NEW_PER_BATCH)?;
                match self.store(gateway, cols)? {
                    Ok(n) => n,
                    Err(Unstored::NoPartition) => {
                        return Err(IngestError::StoreFailed(
                            "a partition the batch needs was dropped as it was stored".into(),
                        ))
                    }
                }
            }
        };
        done.accepted += stored.0;
        done.duplicates += stored.1;
        done.unreadable_costs += stored.2;
        done.alerts_queued += stored.3;
        done.alerts_dropped += stored.4;
        self.shared.rows.fetch_add(stored.0, Ordering::Relaxed);
        super::super::unreadable_logged(gateway, stored.2);
        super::super::dropped_logged(gateway, stored.4);
        Ok(done)
    }

    /// One transaction: `gateway`'s lock, the look-up of the lines already
    /// kept, the new ones stored, their partitions counted, their budget
    /// alerts queued. `(accepted, duplicates, unreadable costs, alerts
    /// queued, alerts dropped)`.
    fn store(&self, gateway: &str, cols: Columns) -> Result<Result<Stored, Unstored>, IngestError> {
        let gateway = gateway.to_owned();
        let ranges = lock(&self.shared.known).clone();
        let bound = self.shared.alert_bound.load(Ordering::Relaxed) as i64;
        let res = self.shared.writer.write(move |c| {
            store_batch(c, &gateway, cols, &ranges, bound)
                .map_err(|e| unprepared(logged("ingest", e)))
        });
        res.map_err(|e| IngestError::StoreFailed(e.to_string()))
    }
}

/// What a batch's transaction stored: (accepted, duplicates, unreadable
/// costs, alerts queued, alerts dropped).
type Stored = (u64, u64, u64, u64, u64);

/// Queues the budget alerts of the lines stored (`raws` with their
/// `hashes`), up to `bound` waiting: (queued, dropped).
fn queue_alerts(
    t: &mut postgres::Transaction<'_>,
    gateway: &str,
    raws: &[&str],
    hashes: &[&Vec<u8>],
    bound: i64,
) -> Result<(u64, u64), postgres::Error> {
    let mut found = Vec::new();
    for (raw, hash) in raws.iter().zip(hashes) {
        let Ok(h) = <[u8; 32]>::try_from(hash.as_slice()) else {
            continue;
        };
        found.extend(super::super::alerts::alerts_in(raw, gateway, &h));
    }
    if found.is_empty() {
        return Ok((0, 0));
    }
    // Two agents' batches may both see room for their last alerts: the
    // bound may be passed by a batch's alerts, never more.
    let waiting: i64 = t
        .query_one(
            "SELECT count(*) FROM warden_budget_alerts WHERE done_us IS NULL",
            &[],
        )?
        .get(0);
    let room = (bound - waiting).max(0) as usize;
    let dropped = found.len().saturating_sub(room) as u64;
    found.truncate(room);
    if found.is_empty() {
        return Ok((0, dropped));
    }
    let keys: Vec<&str> = found.iter().map(|a| a.key.as_str()).collect();
    let json: Vec<String> = found
        .iter()
        .map(|a| serde_json::to_string(a).unwrap_or_default())
        .collect();
    let queued = t.execute(
        "INSERT INTO warden_budget_alerts (key, queued_us, alert) \
         SELECT k, $3, a FROM unnest($1::text[], $2::text[]) AS u(k, a) \
         ON CONFLICT (key) DO NOTHING",
        &[&keys, &json, &now_us()],
    )?;
    Ok((queued, dropped))
}

/// The lines of a batch one partition may hold: their hashes, times and
/// numbers in the batch (from 1).
#[derive(Default)]
struct Probes {
    hashes: Vec<Vec<u8>>,
    times: Vec<i64>,
    numbers: Vec<i64>,
}

/// One batch's transaction (see [`PgStore::store`]).
fn store_batch(
    c: &mut Client,
    gateway: &str,
    cols: Columns,
    ranges: &BTreeMap<i64, i64>,
    bound: i64,
) -> Result<Result<Stored, Unstored>, postgres::Error> {
    let mut t = c.transaction()?;
    // One gateway's batches one at a time, across agents: what the
    // look-up below saw is what is kept when this one stores.
    t.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_CLASS, &gateway],
    )?;
    // The lines of each partition their own time falls in (a time no
    // partition holds holds no line; a partition another agent made since
    // this one looked is caught by the unique index behind the insert).
    let mut by_part: BTreeMap<i64, Probes> = BTreeMap::new();
    for (i, t_us) in cols.line_us.iter().enumerate() {
        if let Some((lo, hi)) = ranges.range(..=*t_us).next_back() {
            if t_us < hi {
                let e = by_part.entry(*lo).or_default();
                e.hashes.push(cols.hash[i].clone());
                e.times.push(*t_us);
                e.numbers.push(i as i64 + 1);
            }
        }
    }
    let mut held: Vec<i64> = t
        .query(HELD_MOVED, &[&gateway, &cols.hash])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (lo, p) in &by_part {
        let sql = HELD_IN.replace("{}", &parts::name(*lo));
        match t.query(&sql, &[&gateway, &p.hashes, &p.times, &p.numbers]) {
            Ok(rows) => held.extend(rows.iter().map(|r| r.get::<_, i64>(0))),
            // Dropped by another agent since this one looked.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                return Ok(Err(Unstored::NoPartition))
            }
            Err(e) => return Err(e),
        }
    }
    let total = cols.len();
    let held: HashSet<usize> = held.iter().map(|n| (*n - 1) as usize).collect();
    let keep: Vec<usize> = (0..total).filter(|i| !held.contains(i)).collect();
    if keep.is_empty() {
        t.commit()?;
        return Ok(Ok((0, total as u64, 0, 0, 0)));
    }
    let c = cols.only(&keep);
    let ids: Vec<i64> = t
        .query(
            "SELECT nextval('warden_audit_id') FROM generate_series(1, $1::int8)",
            &[&(c.len() as i64)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let insert_sql = prepared(&mut t, INSERT)?;
    let inserted = t.query(
        &insert_sql,
        &[
            &gateway,
            &ids,
            &c.seq,
            &c.ts,
            &c.ts_us,
            &c.principal,
            &c.tenant,
            &c.tenant_key,
            &c.server,
            &c.tool,
            &c.method,
            &c.direction,
            &c.outcome,
            &c.decided_by,
            &c.reason,
            &c.risk,
            &c.trace_id,
            &c.approval_id,
            &c.latency_us,
            &c.dlp,
            &c.notice,
            &c.prev,
            &c.hash,
            &c.raw,
            &c.cost_micros,
            &c.currency,
            &c.team,
        ],
    );
    let inserted = match inserted {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&SqlState::CHECK_VIOLATION) => {
            // "no partition of relation … found for row"
            return Ok(Err(Unstored::NoPartition));
        }
        Err(e) => return Err(e),
    };
    let (moved_h, moved_t): (Vec<Vec<u8>>, Vec<i64>) = (0..c.len())
        .filter(|i| c.moved[*i])
        .map(|i| (c.hash[i].clone(), c.ts_us[i]))
        .unzip();
    if !moved_h.is_empty() {
        t.execute(
            "INSERT INTO warden_audit_moved (gateway, hash, ts_us) \
             SELECT $1, m.h, m.t FROM unnest($2::bytea[], $3::int8[]) AS m(h, t) \
             ON CONFLICT DO NOTHING",
            &[&gateway, &moved_h, &moved_t],
        )?;
    }
    let kept: Vec<i64> = inserted.iter().map(|r| r.get(0)).collect();
    let per_part: Vec<(i64, i64)> = t
        .query(
            "SELECT p.lo, count(*)::int8 FROM unnest($1::int8[]) AS k(ts) \
             JOIN warden_audit_partitions p ON k.ts >= p.lo AND k.ts < p.hi \
             GROUP BY p.lo ORDER BY p.lo",
            &[&kept],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // In order of their partitions: two batches never wait on each
    // other's counts crosswise.
    for (lo, n) in &per_part {
        t.execute(
            "UPDATE warden_audit_partitions SET rows = rows + $2, \
             peak = greatest(peak, rows + $2) WHERE lo = $1",
            &[lo, n],
        )?;
    }
    // The lines kept (by their ids): a line another agent kept first
    // queues no alert here.
    let kept_ids: HashSet<i64> = inserted.iter().map(|r| r.get(1)).collect();
    let (mut queued, mut dropped) = (0, 0);
    if bound > 0 {
        let kept: Vec<usize> = (0..c.len())
            .filter(|i| kept_ids.contains(&ids[*i]))
            .collect();
        let raws: Vec<&str> = kept.iter().map(|i| c.raw[*i].as_str()).collect();
        let hashes: Vec<&Vec<u8>> = kept.iter().map(|i| &c.hash[*i]).collect();
        (queued, dropped) = queue_alerts(&mut t, gateway, &raws, &hashes, bound)?;
    }
    t.commit()?;
    let accepted = inserted.len() as u64;
    // The lines kept whose cost could not be read.
    let unreadable = (0..c.len())
        .filter(|i| c.unreadable[*i] && kept_ids.contains(&ids[*i]))
        .count() as u64;
    Ok(Ok((
        accepted,
        total as u64 - accepted,
        unreadable,
        queued,
        dropped,
    )))
}
