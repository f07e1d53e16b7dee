//! Reading back the change record (`changes.jsonl`) and the sources of
//! published revisions, for the console.

use std::io::{Read, Seek, SeekFrom};

use super::*;

/// How much of the end of the change record the console reads.
const TAIL: u64 = 256 * 1024;
/// The change record, and where it is moved when it is full.
pub(super) const FILE: &str = "changes.jsonl";
pub(super) const PREVIOUS: &str = "changes.jsonl.1";
/// The size past which the change record is moved aside (64 MiB): with the
/// one previous file, the record takes at most about twice this on disk.
pub const MAX_FILE: u64 = 64 << 20;
/// Characters of one value (an actor, an action, a detail) the record
/// keeps: what a user typed reaches it, and a line stays small.
pub const MAX_VALUE: usize = 512;

/// `v` cut to [`MAX_VALUE`] characters, marked when cut.
pub(super) fn cut(v: &str) -> String {
    match v.char_indices().nth(MAX_VALUE) {
        Some((at, _)) => format!("{}…", &v[..at]),
        None => v.to_owned(),
    }
}
/// Kill-switch events kept (`kill-log.json`).
const KILL_LOG: usize = 100;

/// One pull or release of the kill switch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KillEvent {
    pub at: String,
    pub actor: String,
    /// `kill` or `revive`.
    pub action: String,
    pub scope: String,
    pub value: String,
    /// The revision that carried it.
    pub revision: String,
}

pub(super) fn load_kill_log(dir: &Path) -> std::collections::VecDeque<KillEvent> {
    std::fs::read(dir.join("kill-log.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub(super) fn log_kill(
    dir: &Path,
    log: &mut std::collections::VecDeque<KillEvent>,
    event: KillEvent,
) {
    log.push_back(event);
    while log.len() > KILL_LOG {
        log.pop_front();
    }
    if let Err(e) = write_atomic(
        &dir.join("kill-log.json"),
        &serde_json::to_vec_pretty(log).unwrap_or_default(),
    ) {
        tracing::error!(error = %e, "cannot write the kill-switch log");
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

impl Store {
    /// Who pulled and released the kill switch, newest first (its own
    /// bounded log: a flood of other changes cannot push it away).
    pub fn kill_log(&self) -> Vec<KillEvent> {
        self.lock().kill_log.iter().rev().cloned().collect()
    }

    /// The newest `n` entries of the change record, newest first (from the
    /// file moved aside too, when the current one holds fewer).
    pub fn recent_changes(&self, n: usize) -> Vec<serde_json::Value> {
        let mut out = tail(&self.dir.join(FILE), n);
        if out.len() < n {
            let more = tail(&self.dir.join(PREVIOUS), n - out.len());
            out.extend(more);
        }
        out
    }

    /// Whether `revision` is in the history.
    pub fn has_revision(&self, revision: &str) -> bool {
        self.lock().history.iter().any(|h| h.revision == revision)
    }

    /// The source files of a published revision (as it was built, before
    /// the kill-switch overlay).
    pub fn files_of(&self, revision: &str) -> Result<Files, String> {
        let seq = {
            let inner = self.lock();
            inner
                .history
                .iter()
                .find(|h| h.revision == revision)
                .map(|h| h.seq)
                .ok_or_else(|| Self::no_revision(&inner, revision))?
        };
        let bytes = std::fs::read(self.revision_path(seq, "src.tar.gz"))
            .or_else(|_| std::fs::read(self.revision_path(seq, "tar.gz")))
            .map_err(|e| format!("{revision}: {e}"))?;
        archive::unpack(&bytes).map_err(|e| format!("{revision}: {e}"))
    }
}
