//! The agent's published revisions, the set of them being served (to all,
//! to label selectors, to a canary), the kill-switch overlay, the change
//! record and the fleet view, kept by a [`Backend`] (the state directory's
//! files, [`StateDir`]).
//!
//! [`Store`] holds the logic (composing, signing, the canary's state
//! machine); each submodule is one responsibility of it and imports what
//! it uses: `types` (the domain types), `backend` (persistence), `publish`
//! (building and serving revisions), `canary`, `fleet`, `layers`,
//! `registry`, `prune`, `changes`, `views` (what the API reads) and
//! `error` (why an operation was refused).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;
use warden_config::archive;

use crate::build::{self, BuildFailure, KillState, Signer};
use crate::rollout::{Labels, Target};

pub mod backend;
mod canary;
mod changes;
mod compose;
pub mod copy;
mod error;
mod fleet;
pub mod layers;
pub mod postgres;
mod prune;
mod publish;
mod registry;
mod types;
mod views;

pub use backend::{Archive, Backend, StateDir};
pub use canary::CanaryRefusal;
pub use error::{ReportError, RevisionError};
pub use prune::MAX_ORG_REVISIONS;
pub use registry::RegistryError;
pub use types::KillEvent;
pub use types::{
    CanaryPlan, CanaryState, HistoryEntry, Published, Report, Rollout, ServedEntry, UpstreamHealth,
    MAX_REPORTED_ERROR, MAX_REPORTED_REVISION, MAX_REPORTED_UPSTREAMS,
};
pub use views::{
    BaselineView, FigureView, FleetView, LayerCanaryView, LayerDiff, LayerFileDiff, LayerHistory,
    LayerSummary, MemberView, RolloutRef, RolloutView, ServedView, UpstreamHealthView,
};

#[cfg(test)]
pub(crate) mod fleet_tests;
#[cfg(test)]
pub(crate) mod isolation_tests;
#[cfg(test)]
pub(crate) mod layer_tests;
#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod view_tests;

#[derive(Debug)]
struct Member {
    report: Report,
    seen: Instant,
    /// Client calls per second between its last two reports.
    rate: f64,
    /// Times its reports showed another process than the one before (a
    /// new instance id, or counters lower than the last report's): a
    /// restart, or a second process under the id. A canary is judged on
    /// its members' count not moving.
    restarts: u64,
    /// Reports whose counters rose faster than
    /// [`crate::rollout::MAX_CALLS_PER_SEC`] allows since the one before:
    /// a canary is judged on this not moving.
    jumps: u64,
}

struct Inner {
    history: Vec<HistoryEntry>,
    /// What gateways are given: each gets the newest entry that reaches it.
    served: Vec<Arc<Published>>,
    rollout: Option<Rollout>,
    kill: KillState,
    /// Who pulled and released the kill switch, newest last (bounded).
    kill_log: VecDeque<KillEvent>,
    /// Digest of the source directory last built (successfully or not).
    source_digest: Option<String>,
    last_error: Option<String>,
    fleet: BTreeMap<String, Member>,
    /// The instances seen under each gateway id (reports and bundle
    /// fetches), to tell two live processes under one id from a restart.
    sightings: BTreeMap<String, fleet::Sightings>,
    /// What each gateway id's bundle fetches were answered with.
    fetched: BTreeMap<String, fleet::Fetches>,
    /// Each tenant's layer revisions.
    layers: BTreeMap<String, layers::Tenant>,
    registry: crate::registry::Registry,
    /// The backend's generation this memory holds (`None`: unknown, or
    /// the backend is this agent's alone): another agent changed what is
    /// kept when the backend's differs, and it is loaded again.
    loaded: Option<u64>,
}

/// What the backend keeps of the store's state, read back whole (at start,
/// and when another agent changed it).
struct Kept {
    history: Vec<HistoryEntry>,
    served: Vec<Arc<Published>>,
    entries: Vec<ServedEntry>,
    rollout: Option<Rollout>,
    kill: KillState,
    kill_log: VecDeque<KillEvent>,
    layers: BTreeMap<String, layers::Tenant>,
}

impl Inner {
    /// The canary being watched, if one is.
    fn watching(&self) -> Option<&Rollout> {
        self.rollout.as_ref().filter(|r| r.watching())
    }

    /// The canary being watched, if one is, to change.
    fn watching_mut(&mut self) -> Option<&mut Rollout> {
        self.rollout.as_mut().filter(|r| r.watching())
    }
}

/// A test's code run inside the store at a chosen point.
#[cfg(test)]
pub(crate) type TestHook = Box<dyn FnOnce(&Store) + Send>;

pub struct Store {
    backend: Box<dyn Backend>,
    source: PathBuf,
    signer: Option<Signer>,
    inner: Mutex<Inner>,
    /// Bumped whenever what is served changes (long polls wake on it).
    generation: watch::Sender<u64>,
    /// A member is stale when it has not reported for this long.
    pub stale_after: Duration,
    /// The change record's size at which it is moved aside (one previous
    /// file is kept): [`changes::MAX_FILE`] unless a test makes it smaller.
    pub changes_limit: u64,
    /// Revisions of one tenant's layer kept (tests lower it).
    pub layer_revisions: usize,
    /// Org revisions kept beside those served ([`MAX_ORG_REVISIONS`]).
    pub org_revisions: usize,
    /// Re-signs that failed since start (`warden_agent_resign_failures_total`).
    pub resign_failures: std::sync::atomic::AtomicU64,
    /// Run once after the next [`Store::rollout`] read (a test's way into
    /// the gap between a check and an action).
    #[cfg(test)]
    pub(crate) after_rollout_read: Mutex<Option<TestHook>>,
}

fn io(e: impl std::fmt::Display) -> BuildFailure {
    BuildFailure(vec![warden_config::error::Problem {
        file: String::new(),
        path: String::new(),
        message: e.to_string(),
    }])
}

/// Gateways the fleet table holds at most.
const MAX_FLEET: usize = 10_000;

fn served_has(entries: &[ServedEntry], seq: u64) -> bool {
    entries.iter().any(|e| e.seq == seq)
}

impl Store {
    /// A published revision read back from the backend.
    fn load_published(
        backend: &dyn Backend,
        h: &HistoryEntry,
        target: Target,
        overrides: BTreeMap<String, u64>,
    ) -> anyhow::Result<Published> {
        let archive = backend.read_revision(h.seq, Archive::Built)?;
        // The source it was built from; a state directory written before
        // sources were kept has only the built archive.
        let files = match backend.read_revision(h.seq, Archive::Source) {
            Ok(b) => archive::unpack(&b)?,
            Err(_) => archive::unpack(&archive)?,
        };
        let expires = archive::unpack(&archive)
            .ok()
            .and_then(|built| build::expires_of(&built));
        Ok(Published {
            seq: h.seq,
            revision: h.revision.clone(),
            archive: Bytes::from(archive),
            target,
            files: Arc::new(files),
            overrides,
            expires,
        })
    }

    /// Reads back what `backend` keeps: the history, what is served (each
    /// revision's archives), the rollout, the kill switch and its log, the
    /// tenants' layers.
    fn load_kept(backend: &dyn Backend) -> anyhow::Result<Kept> {
        // Builds stay newer than every one this store published, whatever
        // the clock says now (see `build::next_sequence`).
        if let Some(floor) = backend.sequence() {
            build::raise_sequence_floor(floor);
        }
        let history = backend.load_history()?;
        let kill = backend.load_kill()?;
        // Only a state directory from before targeted rollout has none;
        // any other failure must not widen a targeted revision to all.
        let entries: Vec<ServedEntry> = match backend.load_served()? {
            Some(e) => e,
            None => history
                .last()
                .map(|h| ServedEntry {
                    seq: h.seq,
                    target: Target::all(),
                    overrides: BTreeMap::new(),
                })
                .into_iter()
                .collect(),
        };
        let mut served = Vec::new();
        for e in &entries {
            let Some(h) = history.iter().find(|h| h.seq == e.seq) else {
                anyhow::bail!(
                    "what is served names revision {} that the history lacks",
                    e.seq
                );
            };
            served.push(Arc::new(Self::load_published(
                backend,
                h,
                e.target.clone(),
                e.overrides.clone(),
            )?));
        }
        Ok(Kept {
            rollout: backend.load_rollout()?,
            kill_log: backend.load_kill_log(),
            layers: backend.load_layers()?,
            history,
            served,
            entries,
            kill,
        })
    }

    /// Opens (or creates) the state directory and restores what was served.
    pub fn open(dir: &Path, source: &Path, signer: Option<Signer>) -> anyhow::Result<Store> {
        Self::with_backend(Box::new(StateDir::open(dir)?), source, signer)
    }

    /// Restores what `backend` kept and serves it.
    pub fn with_backend(
        backend: Box<dyn Backend>,
        source: &Path,
        signer: Option<Signer>,
    ) -> anyhow::Result<Store> {
        // Read first: a change another agent makes while this one loads
        // leaves the memory older than the generation, and loaded again.
        let loaded = backend.generation()?;
        let Kept {
            history,
            served,
            entries,
            mut rollout,
            kill,
            kill_log,
            layers,
        } = Self::load_kept(&*backend)?;
        // A canary being watched when the agent stopped is watched again
        // from now: the members' windows (and what they did while nobody
        // watched) are gone, and judging the rest of an old watch on a
        // few reports would decide on nothing.
        if let Some(r) = rollout.as_mut().filter(|r| r.watching()) {
            if served_has(&entries, r.seq) {
                r.started = SystemTime::now();
            } else {
                r.end(
                    CanaryState::Superseded,
                    "its revision was no longer served when the agent restarted",
                );
            }
        }
        let source_digest = history.last().and_then(|h| h.source.clone());
        let (registry, withdrawn) = registry::load(&*backend)?;
        let (tx, _) = watch::channel(0);
        let store = Store {
            source: source.to_path_buf(),
            signer,
            inner: Mutex::new(Inner {
                history,
                served,
                rollout,
                kill,
                kill_log,
                source_digest,
                last_error: None,
                fleet: BTreeMap::new(),
                sightings: BTreeMap::new(),
                fetched: BTreeMap::new(),
                layers,
                registry,
                loaded,
            }),
            backend,
            generation: tx,
            stale_after: Duration::from_secs(15),
            changes_limit: changes::MAX_FILE,
            layer_revisions: layers::MAX_LAYER_REVISIONS,
            org_revisions: MAX_ORG_REVISIONS,
            resign_failures: Default::default(),
            #[cfg(test)]
            after_rollout_read: Mutex::new(None),
        };
        store.shares_withdrawn_at_start(&withdrawn);
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store's lock, taken to change what is kept: with a shared
    /// backend, inside a turn (every other agent's change waits), the
    /// memory loaded again first when another agent changed the store
    /// since. Fails when the backend cannot give the turn (its database
    /// unreachable): nothing may change then.
    fn write(&self) -> Result<Turn<'_>, Unavailable> {
        let mut inner = self.lock();
        let Some(g) = self.backend.begin().map_err(Unavailable::of)? else {
            return Ok(Turn {
                store: self,
                inner,
                shared: false,
            });
        };
        if inner.loaded != Some(g) {
            if let Err(e) = self.reload(&mut inner) {
                self.backend.rollback();
                return Err(Unavailable::of(e));
            }
            inner.loaded = Some(g);
        }
        Ok(Turn {
            store: self,
            inner,
            shared: true,
        })
    }

    /// Loads again what the backend keeps (another agent changed it): the
    /// gateways' fetches, reports and what this agent saw of them stay.
    fn reload(&self, inner: &mut Inner) -> anyhow::Result<()> {
        let k = Self::load_kept(&*self.backend)?;
        let registry = self.backend.load_registry()?.unwrap_or_default();
        let before: Vec<(u64, String)> = inner
            .served
            .iter()
            .map(|p| (p.seq, p.revision.clone()))
            .collect();
        inner.source_digest = k.history.last().and_then(|h| h.source.clone());
        inner.history = k.history;
        inner.served = k.served;
        inner.rollout = k.rollout;
        inner.kill = k.kill;
        inner.kill_log = k.kill_log;
        inner.layers = k.layers;
        inner.registry = registry;
        let after: Vec<(u64, String)> = inner
            .served
            .iter()
            .map(|p| (p.seq, p.revision.clone()))
            .collect();
        if before != after {
            // Long polls wake to what another agent published.
            self.generation.send_modify(|g| *g += 1);
        }
        Ok(())
    }

    /// Loads again what another agent changed, when the backend is shared
    /// and its generation moved: how an agent that changes nothing
    /// itself keeps serving what the others publish (called when another
    /// agent says it changed the store, and every few seconds).
    pub fn catch_up(&self) -> anyhow::Result<()> {
        let Some(g) = self.backend.generation()? else {
            return Ok(());
        };
        if self.lock().loaded == Some(g) {
            return Ok(());
        }
        // A turn loads again; it writes nothing, so it bumps nothing.
        let turn = self.write()?;
        turn.finish(Ok::<(), Unavailable>(()))?;
        Ok(())
    }

    /// The key bundles (and approval grants) are signed with.
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// Wakes when what is served changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Whether anything is published at all.
    pub fn has_published(&self) -> bool {
        !self.lock().served.is_empty()
    }

    /// The revision a gateway gets: the newest served one that reaches it.
    pub fn for_gateway(&self, id: &str, labels: &Labels) -> Option<Arc<Published>> {
        Self::pick_for(&self.lock().served, id, labels)
    }

    fn pick_for(served: &[Arc<Published>], id: &str, labels: &Labels) -> Option<Arc<Published>> {
        served
            .iter()
            .filter(|p| p.target.reaches(id, labels))
            .max_by_key(|p| p.seq)
            .cloned()
    }

    /// Appends one line to the change record. Each value is cut to
    /// [`changes::MAX_VALUE`] characters (what a user typed reaches it), and
    /// the record is bounded: past `changes_limit` bytes it is moved aside
    /// (replacing the one before) and started again.
    pub fn record(
        &self,
        actor: &str,
        action: &str,
        revision: Option<&str>,
        ok: bool,
        detail: &str,
    ) {
        let cut = changes::cut;
        let line = serde_json::json!({
            "ts": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "actor": cut(actor), "action": cut(action), "revision": revision.map(cut),
            "ok": ok, "detail": cut(detail),
        });
        if let Err(e) = self
            .backend
            .append_change(&line.to_string(), self.changes_limit)
        {
            tracing::error!(error = %e, "cannot write the change record");
        }
    }

    /// Keeps what is served (and the rollout) and wakes the long polls.
    fn served_changed(&self, inner: &Inner) {
        let entries: Vec<ServedEntry> = inner.served.iter().map(|p| ServedEntry::of(p)).collect();
        if let Err(e) = self.backend.save_served(&entries, inner.rollout.as_ref()) {
            tracing::error!(error = %e, "cannot persist what is served");
        }
        self.generation.send_modify(|g| *g += 1);
    }
}

/// The store could not take its turn to change what is kept (its
/// database unreachable, or what it keeps unreadable): nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the store is unavailable: {0}")]
pub struct Unavailable(pub String);

impl Unavailable {
    fn of(e: impl std::fmt::Display) -> Unavailable {
        Unavailable(e.to_string())
    }
}

/// Where a [`BuildFailure`] that is the store's unavailability, not the
/// bundle's, says so (`file`): the API answers it 503.
pub const UNAVAILABLE: &str = "(store)";

impl From<Unavailable> for BuildFailure {
    fn from(e: Unavailable) -> BuildFailure {
        BuildFailure(vec![warden_config::error::Problem {
            file: UNAVAILABLE.into(),
            path: String::new(),
            message: e.0,
        }])
    }
}

/// The store's lock held for a change (see [`Store::write`]). Dropped, it
/// ends the turn keeping what was written, as files would have (a panic
/// inside it undoes it); a change whose caller must know it was kept ends
/// with [`Turn::finish`].
struct Turn<'a> {
    store: &'a Store,
    inner: std::sync::MutexGuard<'a, Inner>,
    shared: bool,
}

impl Turn<'_> {
    /// Ends the turn: `res` kept when it succeeded (a failure to keep it
    /// is the caller's failure), undone when it failed.
    fn finish<T, E: From<Unavailable>>(mut self, res: Result<T, E>) -> Result<T, E> {
        if !std::mem::take(&mut self.shared) {
            return res;
        }
        match res {
            Ok(v) => match self.store.backend.commit() {
                Ok(g) => {
                    self.inner.loaded = g;
                    Ok(v)
                }
                Err(e) => {
                    // Undone by the database: the memory is loaded again
                    // at the next turn.
                    self.inner.loaded = None;
                    Err(Unavailable::of(e).into())
                }
            },
            Err(e) => {
                self.store.backend.rollback();
                self.inner.loaded = None;
                Err(e)
            }
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.shared {
            return;
        }
        if std::thread::panicking() {
            // A change cut short: undone, and the memory loaded again.
            self.store.backend.rollback();
            self.inner.loaded = None;
            return;
        }
        match self.store.backend.commit() {
            Ok(g) => self.inner.loaded = g,
            Err(e) => {
                tracing::error!(error = %e, "a change to the store was not kept");
                self.inner.loaded = None;
            }
        }
    }
}

impl std::ops::Deref for Turn<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl std::ops::DerefMut for Turn<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.inner
    }
}
