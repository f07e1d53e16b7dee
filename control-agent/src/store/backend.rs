//! Where the store keeps what it must find again after a restart: the
//! org revisions and their history, what is served and the rollout, the
//! kill switch and its log, the change record, the registry and the
//! tenants' layers. [`Backend`] is what the store asks of it; [`StateDir`]
//! keeps it in files under the state directory, as the agent always has.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::admins::tenant_name;
use crate::build::KillState;
use crate::registry::{Event, Registry};

use super::fleet::shared::{FleetChanges, Reported, Sighted, SightingRow};
use super::layers::{LayerEntry, LayerState, Tenant};
use super::types::KillEvent;
use super::types::{HistoryEntry, Report, Rollout, ServedEntry};
use crate::rollout::Labels;

/// A revision's archive: as built (and signed), or its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    Built,
    Source,
}

/// What the store keeps across restarts. Reads of what the store cannot
/// start without fail; writes report their failure, which the store logs
/// or answers with, as the operation requires.
pub trait Backend: Send + Sync {
    /// The highest build sequence the store gave a bundle.
    fn sequence(&self) -> Option<u64>;
    fn save_sequence(&self, seq: u64) -> std::io::Result<()>;

    /// The org revisions' history, oldest first.
    fn load_history(&self) -> anyhow::Result<Vec<HistoryEntry>>;
    fn append_history(&self, entry: &HistoryEntry) -> std::io::Result<()>;
    /// Replaces the history whole (atomically).
    fn rewrite_history(&self, all: &[HistoryEntry]) -> std::io::Result<()>;

    /// Keeps revision `seq`'s built archive and its source.
    fn save_revision(&self, seq: u64, built: &[u8], source: &[u8]) -> std::io::Result<()>;
    fn read_revision(&self, seq: u64, which: Archive) -> std::io::Result<Vec<u8>>;
    fn remove_revision(&self, seq: u64);

    /// What is served; `None` when nothing was ever written (a state
    /// directory from before targeted rollout).
    fn load_served(&self) -> anyhow::Result<Option<Vec<ServedEntry>>>;
    /// What is served and, when there is one, the rollout.
    fn save_served(&self, served: &[ServedEntry], rollout: Option<&Rollout>)
        -> std::io::Result<()>;
    fn load_rollout(&self) -> anyhow::Result<Option<Rollout>>;

    /// The kill switch (none kept: nothing paused).
    fn load_kill(&self) -> anyhow::Result<KillState>;
    fn save_kill(&self, kill: &KillState) -> std::io::Result<()>;
    /// Who pulled and released the kill switch (none readable: empty).
    fn load_kill_log(&self) -> VecDeque<KillEvent>;
    fn save_kill_log(&self, log: &VecDeque<KillEvent>) -> std::io::Result<()>;

    /// Appends one line to the change record, moving it aside first when
    /// it holds `limit` bytes or more.
    fn append_change(&self, line: &str, limit: u64) -> std::io::Result<()>;
    /// The newest `n` lines of the change record, newest first.
    fn recent_changes(&self, n: usize) -> Vec<serde_json::Value>;

    /// The registry as kept (`None`: none yet).
    fn load_registry(&self) -> anyhow::Result<Option<Registry>>;
    fn save_registry(&self, registry: &Registry) -> std::io::Result<()>;
    /// Appends one step of `server`'s life to the registry's events.
    fn append_registry_event(&self, server: &str, event: &Event) -> std::io::Result<()>;

    /// Every tenant's layer history and state.
    fn load_layers(&self) -> anyhow::Result<BTreeMap<String, Tenant>>;
    /// Keeps the source of `tenant`'s layer revision `seq`.
    fn save_layer(&self, tenant: &str, seq: u64, source: &[u8]) -> std::io::Result<()>;
    fn read_layer(&self, tenant: &str, seq: u64) -> std::io::Result<Vec<u8>>;
    fn remove_layer(&self, tenant: &str, seq: u64);
    fn append_layer_history(&self, tenant: &str, entry: &LayerEntry) -> std::io::Result<()>;
    fn rewrite_layer_history(&self, tenant: &str, all: &[LayerEntry]) -> std::io::Result<()>;
    fn save_layer_state(&self, tenant: &str, state: &LayerState) -> std::io::Result<()>;

    /// The whole change record, oldest first (what `migrate` and `backup`
    /// copy).
    fn all_changes(&self) -> anyhow::Result<Vec<String>>;
    /// The registry's events kept, oldest first: (server, event).
    fn registry_events(&self) -> anyhow::Result<Vec<(String, Event)>>;

    /// Takes the turn to change what is kept, when several agents keep it
    /// together (one database): every other agent's turn waits until this
    /// one ends. The generation of what is kept now (an agent that loaded
    /// an older one loads again before it changes anything); `None`: this
    /// agent keeps it alone, and its own lock is turn enough.
    fn begin(&self) -> std::io::Result<Option<u64>> {
        Ok(None)
    }
    /// Ends the turn, keeping what it wrote: the generation now (bumped
    /// when anything was written, and the other agents told).
    fn commit(&self) -> std::io::Result<Option<u64>> {
        Ok(None)
    }
    /// Ends the turn, undoing what it wrote.
    fn rollback(&self) {}
    /// The generation of what is kept, read without a turn (`None`: kept
    /// by this agent alone).
    fn generation(&self) -> std::io::Result<Option<u64>> {
        Ok(None)
    }

    // The fleet (gateways' reports, the instances heard under each id,
    // what their bundle fetches were answered with), when several agents
    // share it: each agent's gateways land here, and every agent's view
    // and canary judge see them all (see `fleet_shared/`). Outside any
    // turn, and no generation moves. `Ok(None)`, as the defaults answer:
    // the backend keeps no fleet, and the agent's memory is the fleet
    // (one agent: the state directory).

    /// Keeps report `r` with its figures, computed from the gateway's
    /// previous report whichever agent took it; members silent for
    /// `forget` make room for a new gateway when the table is full.
    fn fleet_report(&self, _r: &Report, _forget: Duration) -> std::io::Result<Option<Reported>> {
        Ok(None)
    }
    /// Notes that `instance` spoke for gateway `id`: whether it
    /// interleaves with another instance heard within `live` (by any
    /// agent), and the id's instances now.
    fn fleet_sighting(
        &self,
        _id: &str,
        _instance: &str,
        _live: Duration,
        _forget: Duration,
    ) -> std::io::Result<Option<Sighted>> {
        Ok(None)
    }
    /// The instances heard under gateway `id`.
    fn fleet_sightings_of(&self, _id: &str) -> std::io::Result<Option<Vec<SightingRow>>> {
        Ok(None)
    }
    /// Notes that gateway `id`'s fetch (`labels`, `instance`) was answered
    /// with `revision`: whether it was kept (not when the table is full).
    fn fleet_fetch(
        &self,
        _id: &str,
        _revision: &str,
        _labels: &Labels,
        _instance: Option<&str>,
    ) -> std::io::Result<Option<bool>> {
        Ok(None)
    }
    /// What was written of the fleet since the last call (all of it, the
    /// first time).
    fn fleet_changes(&self) -> std::io::Result<Option<FleetChanges>> {
        Ok(None)
    }
    /// The newest version of gateway `id`'s row this agent has written or
    /// read: memory keeps no older one.
    fn fleet_version(&self, _id: &str) -> Option<u64> {
        None
    }
}

/// The highest build sequence this store gave a bundle.
pub(super) const SEQUENCE_FILE: &str = "sequence";
const HISTORY: &str = "history.jsonl";
const SERVED: &str = "served.json";
const ROLLOUT: &str = "rollout.json";
const KILL: &str = "kill.json";
const KILL_LOG: &str = "kill-log.json";
/// The change record, and where it is moved when it is full.
pub(super) const CHANGES: &str = "changes.jsonl";
pub(super) const CHANGES_PREVIOUS: &str = "changes.jsonl.1";
/// How much of the end of the change record is read back.
const TAIL: u64 = 256 * 1024;
const REGISTRY: &str = "registry.json";
const REGISTRY_EVENTS: &str = "registry-events.jsonl";
/// Where the events file is moved when it is full (replacing the one before).
const REGISTRY_EVENTS_PREVIOUS: &str = "registry-events.jsonl.1";
/// The size past which the registry's events file is moved aside (16
/// MiB): with the previous one, the registry's events take at most about
/// twice this.
pub const MAX_EVENTS_FILE: u64 = 16 << 20;

/// The state directory: the store's files, as the agent has always kept
/// them.
pub struct StateDir {
    dir: PathBuf,
    /// Taken while the change record is written (and moved aside): two
    /// writers that both found the file full would each move it aside,
    /// the second over the first's.
    changes_turn: Mutex<()>,
}

impl StateDir {
    /// Opens (or creates) the state directory.
    pub fn open(dir: &Path) -> std::io::Result<StateDir> {
        std::fs::create_dir_all(dir.join("revisions"))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
            changes_turn: Mutex::new(()),
        })
    }

    fn revision_path(&self, seq: u64, what: &str) -> PathBuf {
        self.dir.join("revisions").join(format!("{seq:08}.{what}"))
    }

    fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.dir.join("tenants").join(tenant)
    }

    fn layer_path(&self, tenant: &str, seq: u64) -> PathBuf {
        self.tenant_dir(tenant).join(format!("{seq:08}.src.tar.gz"))
    }
}

/// Writes a file whole or not at all (a temporary file renamed over it).
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"))
}

fn json_lines<T: serde::Serialize>(all: &[T]) -> String {
    all.iter()
        .filter_map(|e| serde_json::to_string(e).ok())
        .map(|l| l + "\n")
        .collect()
}

/// The lines of a JSON-lines file (none: no file).
fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// A JSON file (`None`: no file).
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The newest `n` entries of one change-record file, newest first (its
/// last [`TAIL`] bytes at most).
fn tail(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL);
    let mut text = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut text).is_err() {
        return Vec::new();
    }
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if start > 0 && !lines.is_empty() {
        // The first line read may be cut.
        lines.remove(0);
    }
    lines
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .take(n)
        .collect()
}

/// The lines of the file moved aside, then of the file (none: empty).
fn lines_of_both(dir: &Path, file: &str, previous: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for name in [previous, file] {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(t) => out.extend(
                t.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

impl Backend for StateDir {
    fn all_changes(&self) -> anyhow::Result<Vec<String>> {
        lines_of_both(&self.dir, CHANGES, CHANGES_PREVIOUS)
    }

    fn registry_events(&self) -> anyhow::Result<Vec<(String, Event)>> {
        #[derive(serde::Deserialize)]
        struct Line {
            server: String,
            event: Event,
        }
        lines_of_both(&self.dir, REGISTRY_EVENTS, REGISTRY_EVENTS_PREVIOUS)?
            .iter()
            .map(|l| {
                let l: Line = serde_json::from_str(l)?;
                Ok((l.server, l.event))
            })
            .collect()
    }

    fn sequence(&self) -> Option<u64> {
        std::fs::read_to_string(self.dir.join(SEQUENCE_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    }

    fn save_sequence(&self, seq: u64) -> std::io::Result<()> {
        write_atomic(&self.dir.join(SEQUENCE_FILE), seq.to_string().as_bytes())
    }

    fn load_history(&self) -> anyhow::Result<Vec<HistoryEntry>> {
        read_lines(&self.dir.join(HISTORY))
    }

    fn append_history(&self, entry: &HistoryEntry) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(HISTORY))?;
        writeln!(f, "{}", serde_json::to_string(entry)?)
    }

    fn rewrite_history(&self, all: &[HistoryEntry]) -> std::io::Result<()> {
        write_atomic(&self.dir.join(HISTORY), json_lines(all).as_bytes())
    }

    fn save_revision(&self, seq: u64, built: &[u8], source: &[u8]) -> std::io::Result<()> {
        std::fs::write(self.revision_path(seq, "tar.gz"), built)?;
        std::fs::write(self.revision_path(seq, "src.tar.gz"), source)
    }

    fn read_revision(&self, seq: u64, which: Archive) -> std::io::Result<Vec<u8>> {
        let what = match which {
            Archive::Built => "tar.gz",
            Archive::Source => "src.tar.gz",
        };
        std::fs::read(self.revision_path(seq, what))
    }

    fn remove_revision(&self, seq: u64) {
        for what in ["tar.gz", "src.tar.gz"] {
            let _ = std::fs::remove_file(self.revision_path(seq, what));
        }
    }

    fn load_served(&self) -> anyhow::Result<Option<Vec<ServedEntry>>> {
        read_json(&self.dir.join(SERVED))
    }

    fn save_served(
        &self,
        served: &[ServedEntry],
        rollout: Option<&Rollout>,
    ) -> std::io::Result<()> {
        let mut res = write_atomic(
            &self.dir.join(SERVED),
            &serde_json::to_vec_pretty(served).unwrap_or_default(),
        );
        if let Some(r) = rollout {
            res = res.and(write_atomic(
                &self.dir.join(ROLLOUT),
                &serde_json::to_vec_pretty(r).unwrap_or_default(),
            ));
        }
        res
    }

    fn load_rollout(&self) -> anyhow::Result<Option<Rollout>> {
        read_json(&self.dir.join(ROLLOUT))
    }

    fn load_kill(&self) -> anyhow::Result<KillState> {
        match std::fs::read(self.dir.join(KILL)) {
            Ok(b) => Ok(serde_json::from_slice(&b)?),
            Err(_) => Ok(KillState::default()),
        }
    }

    fn save_kill(&self, kill: &KillState) -> std::io::Result<()> {
        write_atomic(
            &self.dir.join(KILL),
            &serde_json::to_vec_pretty(kill).unwrap_or_default(),
        )
    }

    fn load_kill_log(&self) -> VecDeque<KillEvent> {
        std::fs::read(self.dir.join(KILL_LOG))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_kill_log(&self, log: &VecDeque<KillEvent>) -> std::io::Result<()> {
        write_atomic(
            &self.dir.join(KILL_LOG),
            &serde_json::to_vec_pretty(log).unwrap_or_default(),
        )
    }

    fn append_change(&self, line: &str, limit: u64) -> std::io::Result<()> {
        let path = self.dir.join(CHANGES);
        let _turn = self.changes_turn.lock().unwrap_or_else(|p| p.into_inner());
        let full = std::fs::metadata(&path).is_ok_and(|m| m.len() >= limit);
        if full {
            if let Err(e) = std::fs::rename(&path, self.dir.join(CHANGES_PREVIOUS)) {
                tracing::error!(error = %e, "cannot move the full change record aside");
            }
        }
        append_line(&path, line)
    }

    fn recent_changes(&self, n: usize) -> Vec<serde_json::Value> {
        let mut out = tail(&self.dir.join(CHANGES), n);
        if out.len() < n {
            let more = tail(&self.dir.join(CHANGES_PREVIOUS), n - out.len());
            out.extend(more);
        }
        out
    }

    fn load_registry(&self) -> anyhow::Result<Option<Registry>> {
        read_json(&self.dir.join(REGISTRY))
    }

    fn save_registry(&self, registry: &Registry) -> std::io::Result<()> {
        write_atomic(
            &self.dir.join(REGISTRY),
            &serde_json::to_vec_pretty(registry).unwrap_or_default(),
        )
    }

    fn append_registry_event(&self, server: &str, event: &Event) -> std::io::Result<()> {
        let line = serde_json::json!({"server": server, "event": event});
        let path = self.dir.join(REGISTRY_EVENTS);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= MAX_EVENTS_FILE) {
            std::fs::rename(&path, self.dir.join(REGISTRY_EVENTS_PREVIOUS))?;
        }
        append_line(&path, &line.to_string())
    }

    fn load_layers(&self) -> anyhow::Result<BTreeMap<String, Tenant>> {
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(self.dir.join("tenants")) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if tenant_name(&name).ok().as_deref() != Some(name.as_str()) {
                anyhow::bail!("{}: not a tenant's directory", e.path().display());
            }
            let history: Vec<LayerEntry> = read_lines(&e.path().join("history.jsonl"))?;
            let state: LayerState = read_json(&e.path().join("state.json"))?.unwrap_or_default();
            out.insert(name, Tenant { history, state });
        }
        Ok(out)
    }

    fn save_layer(&self, tenant: &str, seq: u64, source: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(self.tenant_dir(tenant))?;
        std::fs::write(self.layer_path(tenant, seq), source)
    }

    fn read_layer(&self, tenant: &str, seq: u64) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.layer_path(tenant, seq))
    }

    fn remove_layer(&self, tenant: &str, seq: u64) {
        let _ = std::fs::remove_file(self.layer_path(tenant, seq));
    }

    fn append_layer_history(&self, tenant: &str, entry: &LayerEntry) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tenant_dir(tenant).join("history.jsonl"))?;
        writeln!(f, "{}", serde_json::to_string(entry)?)
    }

    fn rewrite_layer_history(&self, tenant: &str, all: &[LayerEntry]) -> std::io::Result<()> {
        std::fs::create_dir_all(self.tenant_dir(tenant))?;
        write_atomic(
            &self.tenant_dir(tenant).join("history.jsonl"),
            json_lines(all).as_bytes(),
        )
    }

    fn save_layer_state(&self, tenant: &str, state: &LayerState) -> std::io::Result<()> {
        std::fs::create_dir_all(self.tenant_dir(tenant))?;
        write_atomic(
            &self.tenant_dir(tenant).join("state.json"),
            &serde_json::to_vec_pretty(state).unwrap_or_default(),
        )
    }
}
