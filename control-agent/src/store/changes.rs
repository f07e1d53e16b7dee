//! Reading back the change record (`changes.jsonl`) and the sources of
//! published revisions, for the console.

use std::io::{Read, Seek, SeekFrom};

use super::*;

/// How much of the end of the change record the console reads.
const TAIL: u64 = 256 * 1024;

impl Store {
    /// The newest `n` entries of the change record, newest first.
    pub fn recent_changes(&self, n: usize) -> Vec<serde_json::Value> {
        let Ok(mut f) = std::fs::File::open(self.dir.join("changes.jsonl")) else {
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

    /// The source files of a published revision (as it was built, before
    /// the kill-switch overlay).
    pub fn files_of(&self, revision: &str) -> Result<Files, String> {
        let seq = self
            .lock()
            .history
            .iter()
            .find(|h| h.revision == revision)
            .map(|h| h.seq)
            .ok_or_else(|| format!("no revision `{revision}` in the history"))?;
        let bytes = std::fs::read(self.revision_path(seq, "src.tar.gz"))
            .or_else(|_| std::fs::read(self.revision_path(seq, "tar.gz")))
            .map_err(|e| format!("{revision}: {e}"))?;
        archive::unpack(&bytes).map_err(|e| format!("{revision}: {e}"))
    }
}
