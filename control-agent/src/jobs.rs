//! The agent's background jobs, all started by [`start`]: what runs
//! beside the API without a request asking for it. Each job below says
//! what state it reads and writes, how often it runs and what a failure
//! does, so that an agent of a pair can be made to run only some of them.
//!
//! | job | state | every | on failure |
//! |---|---|---|---|
//! | [`source_watcher`] | source directory → bundle store | `--watch-interval` | recorded (last error, change record); built again once the source changes |
//! | [`resigner`] | bundle store (what is served) | 60 s | recorded and counted; tried again after `resign_retry` |
//! | [`canary_judge`] | bundle store (the canary, fleet reports) | 500 ms | — (a verdict or none) |
//! | [`audit_retention`] | audit store | 2 s (optimize: 10 min) | logged; tried again next time |
//!
//! Agents sharing one database (`serve --database`) run these jobs on one
//! agent at a time: the one holding the `jobs` lease ([`Lease`]), which
//! another agent takes within about a second once its holder dies. Each
//! job asks before each round; a round that an old holder began as it lost
//! the lease changes the store only inside a turn, on what the database
//! holds, so that a canary is promoted or rolled back once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::audit::{AuditStore, WeakAuditStore};
use crate::pg::Lease;
use crate::store::Store;

/// How often the re-signer looks at what is served (at most).
pub const RESIGN_CHECK: Duration = Duration::from_secs(60);
/// How often the canary being watched is judged.
pub const CANARY_TICK: Duration = Duration::from_millis(500);
/// How often the audit store's limits are applied.
pub const RETENTION_EVERY: Duration = Duration::from_secs(2);
/// How often the audit store's writer runs `PRAGMA optimize`.
pub const OPTIMIZE_EVERY: Duration = Duration::from_secs(600);

/// The jobs [`start`] started. A task's handle dropped leaves it running
/// (it runs as long as the runtime does); the audit retention's thread
/// ends by itself once its store is dropped.
pub struct Jobs {
    /// `None` when the watch interval is zero (`serve --watch-interval 0`).
    pub source_watcher: Option<JoinHandle<()>>,
    pub resigner: JoinHandle<()>,
    pub canary_judge: JoinHandle<()>,
    pub audit_retention: std::thread::JoinHandle<()>,
}

/// Starts every background job of a serving agent: the audit retention,
/// the source watcher (unless `watch_interval` is zero), the re-signer and
/// the canary judge. Call it inside a Tokio runtime (the jobs but the
/// audit retention are tasks on it).
pub fn start(
    store: &Arc<Store>,
    audit: &AuditStore,
    watch_interval: Duration,
    lease: &Arc<Lease>,
) -> anyhow::Result<Jobs> {
    let audit_retention = audit_retention(audit, lease.clone())?;
    Ok(Jobs {
        source_watcher: source_watcher(store.clone(), watch_interval, lease.clone()),
        resigner: resigner(store.clone(), lease.clone()),
        canary_judge: canary_judge(store.clone(), lease.clone()),
        audit_retention,
    })
}

/// The source watcher. Every `every` it reads the store's source
/// directory and, when its digest changed since the last look, builds it
/// and publishes it to every gateway ([`Store::publish_source`] as
/// `watcher`): writes the store's history, served revisions and change
/// record. A source that does not build is recorded (the store's last
/// error, which the fleet status shows, and the change record) and what
/// is served stays served; it is built again once the source changes (an
/// unreadable directory is looked at again next time). `None` (nothing
/// started) when `every` is zero: the source is then published only when
/// asked (`publish`).
pub fn source_watcher(
    store: Arc<Store>,
    every: Duration,
    lease: Arc<Lease>,
) -> Option<JoinHandle<()>> {
    if every.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if !lease.held() {
                continue;
            }
            let s = store.clone();
            let _ = tokio::task::spawn_blocking(move || s.publish_source("watcher", false)).await;
        }
    }))
}

/// The re-signer. What is served is re-signed before it expires
/// ([`Store::refresh`]): reads the served revisions' expiries, writes new
/// revisions of them (newer sequence, new expiry) to the store. Checked
/// each [`RESIGN_CHECK`] (sooner when [`Store::resign_retry`] is
/// shorter); a failure is recorded and counted by the store, what is
/// served stays served, and it is tried again after
/// [`Store::resign_retry`] (a twentieth of the validity, 10 s to 10 min).
pub fn resigner(store: Arc<Store>, lease: Arc<Lease>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut pause = RESIGN_CHECK;
        loop {
            tokio::time::sleep(pause).await;
            if !lease.held() {
                // Asked again soon: the lease may move here any time.
                pause = CANARY_TICK;
                continue;
            }
            let s = store.clone();
            let retry = s.resign_retry();
            let res =
                tokio::task::spawn_blocking(move || s.refresh(SystemTime::now()).is_ok()).await;
            pause = if matches!(res, Ok(true)) {
                RESIGN_CHECK.min(retry)
            } else {
                retry
            };
        }
    })
}

/// The canary judge. Every [`CANARY_TICK`] the canary being watched, if
/// any, is judged on what the gateways report ([`Store::tick`]): reads the
/// rollout and the fleet's reports, writes the promotion or rollback it
/// decides (served revisions, history, change record). It cannot fail as
/// such: a verdict's own failure is the store's to record.
pub fn canary_judge(store: Arc<Store>, lease: Arc<Lease>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(CANARY_TICK).await;
            if lease.held() {
                let s = store.clone();
                let _ = tokio::task::spawn_blocking(move || s.tick()).await;
            }
        }
    })
}

/// The audit retention, on a thread of its own (`audit-retention`).
/// Every [`RETENTION_EVERY`] it applies the store's limits
/// ([`AuditStore::trim`]: deletes records older than the retention and the
/// oldest beyond the rows and bytes bounds) and every [`OPTIMIZE_EVERY`]
/// runs `PRAGMA optimize` ([`AuditStore::optimize`]); reads and writes the
/// audit store only. A failed trim is logged and tried again next time. It
/// holds the store weakly and ends once the store is dropped. Errs only
/// when the thread cannot be started.
pub fn audit_retention(
    store: &AuditStore,
    lease: Arc<Lease>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let weak = store.downgrade();
    std::thread::Builder::new()
        .name("audit-retention".into())
        .spawn(move || retention(weak, lease))
        .context("starting the audit retention")
}

/// [`AuditStore::open`] with its [`audit_retention`] started: a store
/// used on its own (tests, benchmarks), as `serve` runs it.
pub fn open_audit_with_retention(
    path: &std::path::Path,
    limits: crate::audit::Limits,
) -> anyhow::Result<AuditStore> {
    let store = AuditStore::open(path, limits)?;
    audit_retention(&store, Arc::new(Lease::alone("jobs")))?;
    Ok(store)
}

fn retention(store: WeakAuditStore, lease: Arc<Lease>) {
    let mut optimized = Instant::now();
    loop {
        std::thread::sleep(RETENTION_EVERY);
        let Some(store) = store.upgrade() else {
            return;
        };
        if !lease.held() {
            continue;
        }
        if let Err(e) = store.trim() {
            tracing::warn!("audit store retention: {e}");
        }
        if optimized.elapsed() >= OPTIMIZE_EVERY {
            optimized = Instant::now();
            store.optimize();
        }
    }
}
