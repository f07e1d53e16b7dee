//! Where approvals are kept across restarts: [`ApprovalBackend`] is what
//! the queue asks of it; [`JsonFile`] keeps them in `approvals.json`, as
//! the agent always has (written whole, synced, then renamed over the old
//! one; readable by the agent alone: held arguments are for approvers).
//! [`super::postgres::Postgres`] keeps them in PostgreSQL, shared by the
//! agents on one database.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::types::Approval;

/// What one save changes: the approvals added or changed since the last
/// save, and those dropped. A backend that writes everything whole (the
/// file) needs neither; a shared one writes only these.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Ids of approvals added or changed (each is in the map saved).
    pub changed: Vec<String>,
    /// Ids of approvals dropped (none is in the map saved).
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
}

/// What the approval queue keeps: every approval, by id.
pub trait ApprovalBackend: Send + Sync {
    /// The approvals kept (none yet: empty).
    fn load(&self) -> anyhow::Result<BTreeMap<String, Approval>>;
    /// Keeps `all`, replacing what was kept, durably before it returns
    /// (or, inside a turn, when the turn commits): an approval is never
    /// handed out twice, even across a crash. `changes` says what differs
    /// from what was kept before.
    fn save(&self, all: &BTreeMap<String, Approval>, changes: &Changes) -> std::io::Result<()>;

    /// Takes the turn to change what is kept, when several agents keep it
    /// together (one database): every other agent's turn waits until this
    /// one ends. The generation of what is kept now (an agent whose memory
    /// is of another loads again before it changes anything); `None`: this
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
    /// Brings `all`, what was kept at generation `since` (`None`: not
    /// known), up to what is kept now; inside a turn. Whole or not at all:
    /// on an error `all` is as it was. By default everything is read again.
    fn reload(
        &self,
        all: &mut BTreeMap<String, Approval>,
        since: Option<u64>,
    ) -> anyhow::Result<()> {
        let _ = since;
        *all = self.load()?;
        Ok(())
    }
}

/// `approvals.json` in the state directory.
pub struct JsonFile {
    path: PathBuf,
}

impl JsonFile {
    pub fn new(dir: &Path) -> JsonFile {
        JsonFile {
            path: dir.join("approvals.json"),
        }
    }
}

impl ApprovalBackend for JsonFile {
    fn load(&self) -> anyhow::Result<BTreeMap<String, Approval>> {
        match std::fs::read(&self.path) {
            Ok(b) => Ok(serde_json::from_slice(&b)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Written whole, whatever changed.
    fn save(&self, all: &BTreeMap<String, Approval>, _changes: &Changes) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                // Held arguments are for approvers only.
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(&serde_json::to_vec(all)?)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }
}
