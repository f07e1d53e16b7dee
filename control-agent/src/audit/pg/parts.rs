//! The audit table's partitions: each a span of whole UTC days of the time
//! a record is kept by ([`span_days`]: one day for a retention up to 32
//! days, longer for longer ones, so that a store holds about 32 partitions
//! whatever it keeps: a search's planning, the catalog and the tables
//! stay bounded), made ahead of time (and for an older day when a record
//! of it arrives), counted in `warden_audit_partitions` with every ingest
//! and deletion, vacuumed once their span is over, and dropped whole by
//! the retention.
//!
//! DDL runs under one advisory lock (`warden_audit partitions`), so two
//! agents never make or drop one partition twice. A partition is made
//! standalone and attached (`ATTACH PARTITION` takes only SHARE UPDATE
//! EXCLUSIVE on the table: ingest and searches go on). Dropping one takes
//! ACCESS EXCLUSIVE on the table: it waits for the ingests and searches
//! in flight, and gives up after [`LOCK_TIMEOUT_MS`] (tried again at the
//! next round) rather than hold them up longer.

use postgres::error::SqlState;
use postgres::Client;

use super::super::Limits;
use super::LOCK_CLASS;

/// A day, in unix microseconds.
pub(crate) const DAY_US: i64 = 86_400_000_000;
/// About as many partitions as a store holds, whatever its retention.
const PARTITIONS: i64 = 32;
/// The longest span of a partition, in days.
const MAX_SPAN_DAYS: i64 = 32;
/// Days made ahead of today.
pub(crate) const AHEAD_DAYS: i64 = 3;
/// Partitions one batch may have made (for records of older days); a
/// batch needing more is refused, and its gateway sends it line by line.
pub(crate) const MAX_NEW_PER_BATCH: usize = 8;
/// Records deleted per statement (the bounds of rows and bytes).
const TRIM_CHUNK: i64 = 5_000;
/// How long a drop waits for the table (ingests and searches in flight).
const LOCK_TIMEOUT_MS: i64 = 1_000;
/// How long making a partition waits for the table (an `ANALYZE`).
const MAKE_TIMEOUT_MS: i64 = 5_000;

/// The day (its first microsecond) of `ts_us`.
pub(crate) fn day(ts_us: i64) -> i64 {
    ts_us.div_euclid(DAY_US) * DAY_US
}

/// The days a new partition spans: the retention over [`PARTITIONS`],
/// at least one, at most [`MAX_SPAN_DAYS`] (7 days of retention: daily;
/// 90: three days; a year: 12). Agents with other retentions may make
/// other spans: a partition is cut to the gap the others leave.
pub(crate) fn span_days(limits: &Limits) -> i64 {
    let days = limits.retention.as_secs().div_ceil(86_400).max(1) as i64;
    (days + PARTITIONS - 1)
        .checked_div(PARTITIONS)
        .unwrap_or(1)
        .clamp(1, MAX_SPAN_DAYS)
}

/// Whether one of `ranges` (`lo` → `hi`) holds `t`.
pub(crate) fn covered(ranges: &std::collections::BTreeMap<i64, i64>, t: i64) -> bool {
    ranges
        .range(..=t)
        .next_back()
        .is_some_and(|(_, hi)| t < *hi)
}

/// The time before which the retention keeps nothing.
pub(crate) fn cutoff(now: i64, limits: &Limits) -> i64 {
    now.saturating_sub(limits.retention.as_micros().min(i64::MAX as u128) as i64)
}

/// The partition of the day starting at `lo`: `warden_audit_pYYYYMMDD`
/// (digits only, made from a number: never from a record's text).
pub(crate) fn name(lo: i64) -> String {
    let date = jiff::Timestamp::from_microsecond(lo)
        .ok()
        .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date())
        .filter(|d| (1000..=9999).contains(&d.year()));
    match date {
        Some(d) => format!(
            "warden_audit_p{:04}{:02}{:02}",
            d.year(),
            d.month(),
            d.day()
        ),
        None => format!("warden_audit_d{}", (lo / DAY_US).unsigned_abs()),
    }
}

/// Makes partitions for the days `days` (their first microsecond) that
/// none holds: each `span` days on the grid of spans since the epoch, cut
/// to the gap between the partitions around it; at most `most` (`Err(n)`:
/// `n` were needed, none made). Every partition now, `lo` → `hi`.
pub(crate) fn ensure(
    c: &mut Client,
    days: &[i64],
    span: i64,
    most: usize,
) -> Result<Result<std::collections::BTreeMap<i64, i64>, usize>, postgres::Error> {
    let mut t = c.transaction()?;
    t.batch_execute(&format!("SET LOCAL lock_timeout = {MAKE_TIMEOUT_MS}"))?;
    t.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext('warden_audit partitions'))",
        &[&LOCK_CLASS],
    )?;
    let mut ranges: std::collections::BTreeMap<i64, i64> = t
        .query("SELECT lo, hi FROM warden_audit_partitions", &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let width = span.max(1) * DAY_US;
    let mut new: Vec<(i64, i64)> = Vec::new();
    for d in days {
        let d = day(*d);
        if covered(&ranges, d) {
            continue;
        }
        let mut lo = d.div_euclid(width) * width;
        let mut hi = lo + width;
        if let Some((_, before)) = ranges.range(..=d).next_back() {
            lo = lo.max(*before);
        }
        if let Some((after, _)) = ranges.range(d + 1..).next() {
            hi = hi.min(*after);
        }
        ranges.insert(lo, hi);
        new.push((lo, hi));
    }
    if new.len() > most {
        return Ok(Err(new.len()));
    }
    for (lo, hi) in &new {
        let name = name(*lo);
        // Vacuumed after every 10,000 records or so (PostgreSQL waits
        // for a fifth more by default): the days being written keep their
        // visibility map, so the searches' index-only scans stay so. (A
        // server without the setting, before 13, keeps its default.)
        t.batch_execute(&format!(
            "CREATE TABLE {name} (LIKE warden_audit); \
             DO $$ BEGIN \
               ALTER TABLE {name} SET (autovacuum_vacuum_insert_threshold = 10000, \
                 autovacuum_vacuum_insert_scale_factor = 0.02); \
             EXCEPTION WHEN OTHERS THEN NULL; END $$; \
             ALTER TABLE warden_audit ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"
        ))?;
        t.execute(
            "INSERT INTO warden_audit_partitions (lo, hi, name) VALUES ($1, $2, $3)",
            &[lo, hi, &name],
        )?;
    }
    t.commit()?;
    Ok(Ok(ranges))
}

/// The store's records and bytes in use: each partition's size as last
/// measured, in proportion to the records it holds of the most it held
/// (what deletions freed inside it is reused by the next records, not
/// given back).
pub(crate) fn totals(c: &mut Client) -> Result<(u64, u64), postgres::Error> {
    let r = c.query_one(
        "SELECT coalesce(sum(rows), 0)::int8, \
         coalesce(sum(CASE WHEN peak > 0 \
             THEN bytes::numeric * rows / greatest(peak, rows) ELSE bytes END), 0)::int8 \
         FROM warden_audit_partitions",
        &[],
    )?;
    Ok((
        r.get::<_, i64>(0).max(0) as u64,
        r.get::<_, i64>(1).max(0) as u64,
    ))
}

/// Measures the partitions whose records changed since they were last
/// measured (and today's and yesterday's).
fn measure(c: &mut Client, now: i64) -> Result<(), postgres::Error> {
    c.execute(
        "UPDATE warden_audit_partitions \
         SET bytes = coalesce(pg_total_relation_size(to_regclass(name)), 0), measured_rows = rows \
         WHERE measured_rows IS DISTINCT FROM rows OR hi > $1",
        &[&(day(now) - DAY_US)],
    )?;
    Ok(())
}

/// One partition as counted.
#[derive(Debug, Clone)]
struct Part {
    lo: i64,
    hi: i64,
    rows: i64,
    peak: i64,
    bytes: i64,
}

impl Part {
    /// Its bytes in use (see [`totals`]).
    fn used(&self) -> u128 {
        if self.peak > 0 {
            self.bytes.max(0) as u128 * self.rows.max(0) as u128
                / self.peak.max(self.rows).max(1) as u128
        } else {
            self.bytes.max(0) as u128
        }
    }
}

fn partitions(c: &mut Client) -> Result<Vec<Part>, postgres::Error> {
    Ok(c.query(
        "SELECT lo, hi, rows, peak, bytes FROM warden_audit_partitions ORDER BY lo",
        &[],
    )?
    .iter()
    .map(|r| Part {
        lo: r.get(0),
        hi: r.get(1),
        rows: r.get(2),
        peak: r.get(3),
        bytes: r.get(4),
    })
    .collect())
}

/// Drops the partition of `lo` whole when `still(its records, every
/// record)` holds once no ingest is in flight (the table locked); its
/// records deleted, or `None` (not now: the table was busy, or it no
/// longer holds).
fn drop_part(
    c: &mut Client,
    lo: i64,
    still: impl Fn(i64, i64) -> bool,
) -> Result<Option<i64>, postgres::Error> {
    let name = name(lo);
    let mut t = c.transaction()?;
    t.batch_execute(&format!("SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))?;
    // The partitions' lock, then the table (what the drop takes anyway):
    // no ingest is then writing, so the counts read next are what the
    // partition holds. Either busy past the timeout: not now.
    for sql in [
        format!("SELECT pg_advisory_xact_lock({LOCK_CLASS}, hashtext('warden_audit partitions'))"),
        "LOCK TABLE warden_audit IN ACCESS EXCLUSIVE MODE".to_owned(),
    ] {
        match t.batch_execute(&sql) {
            Ok(()) => {}
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    let r = t.query_one(
        "SELECT (SELECT rows FROM warden_audit_partitions WHERE lo = $1), \
         (SELECT hi FROM warden_audit_partitions WHERE lo = $1), \
         (SELECT coalesce(sum(rows), 0)::int8 FROM warden_audit_partitions)",
        &[&lo],
    )?;
    let (Some(rows), Some(hi)) = (r.get::<_, Option<i64>>(0), r.get::<_, Option<i64>>(1)) else {
        return Ok(None);
    };
    if !still(rows, r.get(2)) {
        return Ok(None);
    }
    t.batch_execute(&format!("DROP TABLE {name}"))?;
    t.execute("DELETE FROM warden_audit_partitions WHERE lo = $1", &[&lo])?;
    t.execute(
        "DELETE FROM warden_audit_moved WHERE ts_us >= $1 AND ts_us < $2",
        &[&lo, &hi],
    )?;
    t.commit()?;
    tracing::info!(partition = %name, records = rows, "audit store: partition dropped");
    Ok(Some(rows))
}

/// Deletes the `n` oldest records (by id) of the partition of `lo`; how
/// many went.
fn delete_oldest(c: &mut Client, lo: i64, n: i64) -> Result<i64, postgres::Error> {
    let name = name(lo);
    let mut t = c.transaction()?;
    let gone: i64 = t
        .query_one(
            &format!(
                "WITH gone AS (DELETE FROM {name} WHERE id IN \
                   (SELECT id FROM {name} ORDER BY id LIMIT $1) RETURNING gateway, hash), \
                 m AS (DELETE FROM warden_audit_moved mv USING gone \
                   WHERE mv.gateway = gone.gateway AND mv.hash = gone.hash) \
                 SELECT count(*)::int8 FROM gone"
            ),
            &[&n],
        )?
        .get(0);
    t.execute(
        "UPDATE warden_audit_partitions SET rows = greatest(rows - $2, 0) WHERE lo = $1",
        &[&lo, &gone],
    )?;
    t.commit()?;
    Ok(gone)
}

/// One round of the retention (one agent at a time: another agent's
/// round in progress makes this one a no-op). `(records deleted,
/// partitions made)`.
///
/// 1. Partitions for today and the next [`AHEAD_DAYS`] days are made.
/// 2. **Age**: a partition whose span ended before `now - retention` is
///    dropped whole (a record is kept up to a span past the retention).
///    A past day's partition left empty is dropped too.
/// 3. **Rows**: past `max_rows`, the oldest partition is dropped whole
///    while every record in it is over the bound, then the oldest records
///    of the oldest are deleted (by id, in chunks), as on SQLite.
/// 4. **Bytes**: the same past `max_bytes`, the bytes in use read as in
///    [`totals`]; records go in proportion to the overshoot (a few rounds
///    at most each time), so large records never take the newest with
///    them.
/// 5. A partition whose span is over is vacuumed and analyzed, once.
pub(crate) fn trim(
    c: &mut Client,
    limits: &Limits,
    now: i64,
    sealed: &mut std::collections::BTreeSet<i64>,
) -> Result<(u64, Option<std::collections::BTreeMap<i64, i64>>), postgres::Error> {
    let mine: bool = c
        .query_one(
            "SELECT pg_try_advisory_lock($1, hashtext('warden_audit retention'))",
            &[&LOCK_CLASS],
        )?
        .get(0);
    if !mine {
        return Ok((0, None));
    }
    let r = trim_held(c, limits, now, sealed);
    let _ = c.execute(
        "SELECT pg_advisory_unlock($1, hashtext('warden_audit retention'))",
        &[&LOCK_CLASS],
    );
    r
}

fn trim_held(
    c: &mut Client,
    limits: &Limits,
    now: i64,
    sealed: &mut std::collections::BTreeSet<i64>,
) -> Result<(u64, Option<std::collections::BTreeMap<i64, i64>>), postgres::Error> {
    let today = day(now);
    let cutoff = cutoff(now, limits);
    let ahead: Vec<i64> = (0..=AHEAD_DAYS)
        .map(|d| today + d * DAY_US)
        .filter(|lo| lo + DAY_US > cutoff)
        .collect();
    ensure(c, &ahead, span_days(limits), usize::MAX)?.ok();
    let mut deleted = 0u64;
    // Age; and past days left empty.
    for p in partitions(c)? {
        let expired = p.hi <= cutoff;
        if expired || (p.rows == 0 && p.hi <= today) {
            if let Some(n) = drop_part(c, p.lo, |rows, _| expired || rows == 0)? {
                deleted += n.max(0) as u64;
            }
        }
    }
    // Rows.
    let max_rows = limits.max_rows.min(i64::MAX as u64) as i64;
    for _ in 0..1_000 {
        let parts = partitions(c)?;
        let total: i64 = parts.iter().map(|p| p.rows).sum();
        let excess = total - max_rows;
        if excess <= 0 {
            break;
        }
        let Some(p) = parts.iter().find(|p| p.rows > 0) else {
            break;
        };
        let gone = if p.rows <= excess && p.hi <= today {
            drop_part(c, p.lo, |rows, total| rows > 0 && rows <= total - max_rows)?
        } else {
            Some(delete_oldest(c, p.lo, excess.min(TRIM_CHUNK))?)
        };
        match gone {
            Some(n) if n > 0 => deleted += n as u64,
            _ => break,
        }
    }
    // Bytes.
    measure(c, now)?;
    let max_bytes = limits.max_bytes as u128;
    for _ in 0..16 {
        let parts = partitions(c)?;
        let used: u128 = parts.iter().map(Part::used).sum();
        if used <= max_bytes {
            break;
        }
        let Some(p) = parts.iter().find(|p| p.rows > 0) else {
            break;
        };
        let over = used - max_bytes;
        let gone = if used - p.used() >= max_bytes && p.hi <= today {
            let p2 = p.clone();
            // Still all over the bound once the table is held (an ingest
            // into it since would have moved the counts).
            drop_part(c, p.lo, move |rows, _| rows == p2.rows)?
        } else {
            // In proportion, never more: with large records a few are the
            // whole overshoot, and the newest must stay.
            let want = (p.rows.max(0) as u128 * over)
                .div_ceil(p.used().max(1))
                .clamp(1, TRIM_CHUNK as u128) as i64;
            Some(delete_oldest(c, p.lo, want)?)
        };
        match gone {
            Some(n) if n > 0 => deleted += n as u64,
            _ => break,
        }
    }
    // A partition whose span is over is vacuumed and analyzed once (by
    // this agent: again after the lease moves): the last records of its
    // span, fewer than what wakes autovacuum, get their visibility map,
    // and its statistics are those of the whole span.
    let parts = partitions(c)?;
    sealed.retain(|lo| parts.iter().any(|p| p.lo == *lo));
    if let Some(p) = parts
        .iter()
        .find(|p| p.hi <= now && !sealed.contains(&p.lo))
    {
        c.batch_execute(&format!("VACUUM (ANALYZE) {}", name(p.lo)))?;
        sealed.insert(p.lo);
    }
    Ok((deleted, Some(parts.iter().map(|p| (p.lo, p.hi)).collect())))
}
