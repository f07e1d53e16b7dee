//! The change record (`changes.jsonl`) and the kill switch's own log, and
//! reading back the sources of published revisions, for the console.

use std::collections::VecDeque;

use warden_config::archive::{self, Files};

use super::backend::{Archive, Backend};
use super::error::RevisionError;
use super::types::KillEvent;
use super::Store;

#[cfg(test)]
pub(super) use super::backend::{CHANGES as FILE, CHANGES_PREVIOUS as PREVIOUS};

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

pub(super) fn log_kill(backend: &dyn Backend, log: &mut VecDeque<KillEvent>, event: KillEvent) {
    log.push_back(event);
    while log.len() > KILL_LOG {
        log.pop_front();
    }
    if let Err(e) = backend.save_kill_log(log) {
        tracing::error!(error = %e, "cannot write the kill-switch log");
    }
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
        self.backend.recent_changes(n)
    }

    /// Whether `revision` is in the history.
    pub fn has_revision(&self, revision: &str) -> bool {
        self.lock().history.iter().any(|h| h.revision == revision)
    }

    /// The source files of a published revision (as it was built, before
    /// the kill-switch overlay).
    pub fn revision_files(&self, revision: &str) -> Result<Files, RevisionError> {
        let seq = {
            let inner = self.lock();
            inner
                .history
                .iter()
                .find(|h| h.revision == revision)
                .map(|h| h.seq)
                .ok_or_else(|| Self::no_revision(&inner, revision))?
        };
        let unreadable = |e: &dyn std::fmt::Display| RevisionError::Unreadable {
            revision: revision.to_owned(),
            why: e.to_string(),
        };
        let bytes = self
            .backend
            .read_revision(seq, Archive::Source)
            .or_else(|_| self.backend.read_revision(seq, Archive::Built))
            .map_err(|e| unreadable(&e))?;
        archive::unpack(&bytes).map_err(|e| unreadable(&e))
    }
}
