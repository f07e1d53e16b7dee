//! Keeping the SQLite audit store within its bounds: retention by age, by
//! rows and by bytes, applied in chunks (the jobs module runs it every
//! couple of seconds), and a weak handle on either store for that job.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use rusqlite::{params, Connection};

use super::{lock, now_us, AuditStore, Backend, Inner};

/// Rows deleted per statement, so that the writer is never held long.
const TRIM_CHUNK: i64 = 5_000;

impl Inner {
    /// Deletes the `n` oldest records (their lines with them); returns how
    /// many went.
    pub(super) fn delete_oldest(&self, n: u64) -> anyhow::Result<u64> {
        let gone = lock(&self.writer)
            .prepare_cached(
                "DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT ?1)",
            )?
            .execute([n as i64])? as u64;
        self.rows.fetch_sub(
            gone.min(self.rows.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        Ok(gone)
    }

    /// Deletes what is older than the retention and the oldest beyond
    /// `max_rows`, a chunk at a time.
    pub(super) fn trim(&self) -> anyhow::Result<u64> {
        let cutoff =
            now_us().saturating_sub(self.limits.retention.as_micros().min(i64::MAX as u128) as i64);
        let mut deleted = 0u64;
        loop {
            let n = {
                let c = lock(&self.writer);
                let n = c
                    .prepare_cached(
                        "DELETE FROM records WHERE id IN \
                         (SELECT id FROM records WHERE ts_us < ?1 LIMIT ?2)",
                    )?
                    .execute(params![cutoff, TRIM_CHUNK])?;
                n as u64
            };
            self.rows
                .fetch_sub(n.min(self.rows.load(Ordering::Relaxed)), Ordering::Relaxed);
            deleted += n;
            if n < TRIM_CHUNK as u64 {
                break;
            }
        }
        loop {
            let excess = self
                .rows
                .load(Ordering::Relaxed)
                .saturating_sub(self.limits.max_rows);
            if excess == 0 {
                break;
            }
            let n = self.delete_oldest(excess.min(TRIM_CHUNK as u64))?;
            deleted += n;
            if n == 0 {
                break;
            }
        }
        // The bytes: the oldest records go, in proportion to the
        // overshoot (pages freed in the indexes lag the rows deleted), a
        // few rounds at most per trim; the next trim goes on.
        for _ in 0..16 {
            let used = used_bytes(&lock(&self.writer))?;
            self.bytes.store(used, Ordering::Relaxed);
            if used <= self.limits.max_bytes {
                break;
            }
            let rows = self.rows.load(Ordering::Relaxed);
            let over = (used - self.limits.max_bytes) as u128;
            // In proportion, never more: with large lines a few rows are
            // the whole overshoot, and the newest must stay.
            let want =
                ((rows as u128 * over).div_ceil(used as u128) as u64).clamp(1, TRIM_CHUNK as u64);
            let n = self.delete_oldest(want)?;
            deleted += n;
            if n == 0 {
                break;
            }
        }
        Ok(deleted)
    }
}

/// The bytes of the database's pages in use (its file less the free pages).
fn used_bytes(c: &Connection) -> rusqlite::Result<u64> {
    let pragma = |p: &str| c.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0));
    let pages = pragma("page_count")? - pragma("freelist_count")?;
    Ok(pages.max(0) as u64 * pragma("page_size")?.max(0) as u64)
}

/// A hold on an [`AuditStore`] that does not keep it open: the retention
/// job ([`crate::jobs::audit_retention`]) keeps one and ends once the store
/// is dropped.
#[derive(Clone)]
pub struct WeakAuditStore(Weak<Backend>);

impl WeakAuditStore {
    /// The store, while it is open.
    pub fn upgrade(&self) -> Option<AuditStore> {
        self.0.upgrade().map(|inner| AuditStore { inner })
    }
}

impl AuditStore {
    /// A hold on the store that does not keep it open.
    pub fn downgrade(&self) -> WeakAuditStore {
        WeakAuditStore(Arc::downgrade(&self.inner))
    }

    /// Refreshes the planner's statistics (the retention job does, every
    /// ten minutes): SQLite's `PRAGMA optimize` on the writer; on
    /// PostgreSQL, `ANALYZE` of the partitioned table (autovacuum analyzes
    /// each partition, never their parent). A failure is ignored.
    pub fn optimize(&self) {
        match &*self.inner {
            Backend::Sqlite(s) => {
                let _ = lock(&s.writer).execute_batch("PRAGMA optimize;");
            }
            Backend::Postgres(p) => p.optimize(),
        }
    }
}
