//! Where approvals are kept across restarts: [`ApprovalBackend`] is what
//! the queue asks of it; [`JsonFile`] keeps them in `approvals.json`, as
//! the agent always has (written whole, synced, then renamed over the old
//! one; readable by the agent alone: held arguments are for approvers).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::types::Approval;

/// What the approval queue keeps: every approval, by id.
pub trait ApprovalBackend: Send + Sync {
    /// The approvals kept (none yet: empty).
    fn load(&self) -> anyhow::Result<BTreeMap<String, Approval>>;
    /// Keeps `all`, replacing what was kept, durably before it returns:
    /// an approval is never handed out twice, even across a crash.
    fn save(&self, all: &BTreeMap<String, Approval>) -> std::io::Result<()>;
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

    fn save(&self, all: &BTreeMap<String, Approval>) -> std::io::Result<()> {
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
