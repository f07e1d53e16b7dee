//! The embedded backend: everything in `vault.json` in the state
//! directory (data keys, connections, secrets), read at open and held in
//! memory; each write replaces the file whole (written to a temporary file
//! readable by the agent alone, synced, renamed over the old one), so a
//! crash leaves the old file or the new one, never half of either.
//!
//! One agent keeps a state directory: the compare-and-set of `put` and
//! `claim_refresh` is between the threads of this process (its lock).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;

use super::backend::{ConnKey, Filter, SealedConn, SealedSecret, VaultBackend, WrappedKey};

/// The file's name in the state directory.
pub const FILE_NAME: &str = "vault.json";

/// `vault.json`, held in memory.
pub struct VaultFile {
    path: PathBuf,
    kept: Mutex<Kept>,
}

impl std::fmt::Debug for VaultFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What the file holds, indexed.
#[derive(Clone, Default)]
struct Kept {
    keys: BTreeMap<(String, u32), WrappedKey>,
    conns: BTreeMap<ConnKey, SealedConn>,
    secrets: BTreeMap<String, SealedSecret>,
}

/// The file's JSON, as read.
#[derive(serde::Deserialize)]
struct OnDisk {
    #[serde(default)]
    keys: Vec<WrappedKey>,
    #[serde(default)]
    connections: Vec<SealedConn>,
    #[serde(default)]
    secrets: Vec<SealedSecret>,
}

/// The file's JSON, as written (sorted, so two writes of the same state
/// are the same bytes).
#[derive(serde::Serialize)]
struct ToDisk<'a> {
    keys: Vec<&'a WrappedKey>,
    connections: Vec<&'a SealedConn>,
    secrets: Vec<&'a SealedSecret>,
}

impl Kept {
    fn from_disk(d: OnDisk) -> anyhow::Result<Kept> {
        let mut k = Kept::default();
        for w in d.keys {
            let id = (w.tenant.clone(), w.version);
            anyhow::ensure!(
                !k.keys.contains_key(&id),
                "data key {} of tenant {:?} is there twice",
                w.version,
                w.tenant
            );
            k.keys.insert(id, w);
        }
        for c in d.connections {
            anyhow::ensure!(
                !k.conns.contains_key(&c.key),
                "connection {:?} is there twice",
                c.key
            );
            k.conns.insert(c.key.clone(), c);
        }
        for s in d.secrets {
            anyhow::ensure!(
                !k.secrets.contains_key(&s.name),
                "secret {:?} is there twice",
                s.name
            );
            k.secrets.insert(s.name.clone(), s);
        }
        Ok(k)
    }

    fn to_disk(&self) -> ToDisk<'_> {
        ToDisk {
            keys: self.keys.values().collect(),
            connections: self.conns.values().collect(),
            secrets: self.secrets.values().collect(),
        }
    }
}

impl VaultFile {
    /// `<state_dir>/vault.json`, read now (none yet: an empty vault, the
    /// file made at the first write).
    pub fn open(state_dir: &Path) -> anyhow::Result<VaultFile> {
        let path = state_dir.join(FILE_NAME);
        let kept = match std::fs::read(&path) {
            Ok(b) => {
                let d: OnDisk = serde_json::from_slice(&b)
                    .with_context(|| format!("{} is not readable", path.display()))?;
                Kept::from_disk(d).with_context(|| format!("{}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Kept::default(),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        Ok(VaultFile {
            path,
            kept: Mutex::new(kept),
        })
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a copy of what is kept; when it says it changed
    /// something, the copy is written whole and then becomes what is kept
    /// (a failed write changes nothing).
    fn change<T>(&self, f: impl FnOnce(&mut Kept) -> (T, bool)) -> std::io::Result<T> {
        let mut kept = self.kept();
        let mut next = kept.clone();
        let (out, changed) = f(&mut next);
        if changed {
            self.save(&next)?;
            *kept = next;
        }
        Ok(out)
    }

    /// Writes `kept` whole: a temporary file (mode 0600), synced, renamed
    /// over the old one, the directory synced.
    fn save(&self, kept: &Kept) -> std::io::Result<()> {
        let what = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
        };
        let bytes = serde_json::to_vec(&kept.to_disk())?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                // Sealed, but still for the agent alone.
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(what)?;
            f.write_all(&bytes).map_err(what)?;
            f.sync_all().map_err(what)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(what)?;
        sync_dir(&self.path);
        Ok(())
    }
}

/// Syncs the directory holding `path` (the rename is then durable too);
/// best effort: not every system lets a directory be opened.
fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

impl VaultBackend for VaultFile {
    fn keys(&self) -> std::io::Result<Vec<WrappedKey>> {
        Ok(self.kept().keys.values().cloned().collect())
    }

    fn add_key(&self, key: &WrappedKey) -> std::io::Result<bool> {
        self.change(|k| {
            let id = (key.tenant.clone(), key.version);
            if k.keys.contains_key(&id) {
                return (false, false);
            }
            k.keys.insert(id, key.clone());
            (true, true)
        })
    }

    fn rewrap_keys(&self, keys: &[WrappedKey]) -> std::io::Result<()> {
        self.change(|k| {
            let mut changed = false;
            for w in keys {
                if let Some(kept) = k.keys.get_mut(&(w.tenant.clone(), w.version)) {
                    kept.master.clone_from(&w.master);
                    kept.wrapped.clone_from(&w.wrapped);
                    changed = true;
                }
            }
            ((), changed)
        })
    }

    fn get(&self, key: &ConnKey) -> std::io::Result<Option<SealedConn>> {
        Ok(self.kept().conns.get(key).cloned())
    }

    fn list(&self, filter: &Filter) -> std::io::Result<Vec<SealedConn>> {
        Ok(self
            .kept()
            .conns
            .values()
            .filter(|c| filter.matches(&c.key))
            .cloned()
            .collect())
    }

    fn put(&self, conn: &SealedConn, expected: Option<u64>) -> std::io::Result<bool> {
        self.change(|k| {
            let kept = k.conns.get(&conn.key).map(|c| c.version);
            if kept != expected {
                return (false, false);
            }
            let mut c = conn.clone();
            c.version = expected.map_or(1, |v| v.saturating_add(1));
            c.refreshing = None;
            k.conns.insert(c.key.clone(), c);
            (true, true)
        })
    }

    fn claim_refresh(
        &self,
        key: &ConnKey,
        expected: u64,
        holder: &str,
        until: u64,
        now: u64,
    ) -> std::io::Result<Option<SealedConn>> {
        self.change(|k| {
            let Some(c) = k.conns.get_mut(key) else {
                return (None, false);
            };
            let free = match &c.refreshing {
                None => true,
                Some((h, u)) => h == holder || *u <= now,
            };
            if c.version != expected || !free {
                return (None, false);
            }
            c.refreshing = Some((holder.to_owned(), until));
            (Some(c.clone()), true)
        })
    }

    fn remove(&self, filter: &Filter) -> std::io::Result<Vec<SealedConn>> {
        self.change(|k| {
            let (gone, kept): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut k.conns)
                .into_iter()
                .partition(|(key, _)| filter.matches(key));
            k.conns = kept;
            let changed = !gone.is_empty();
            (gone.into_values().collect(), changed)
        })
    }

    fn secret(&self, name: &str) -> std::io::Result<Option<SealedSecret>> {
        Ok(self.kept().secrets.get(name).cloned())
    }

    fn secrets(&self) -> std::io::Result<Vec<SealedSecret>> {
        Ok(self.kept().secrets.values().cloned().collect())
    }

    fn put_secret(&self, s: &SealedSecret) -> std::io::Result<()> {
        self.change(|k| {
            let version = k
                .secrets
                .get(&s.name)
                .map_or(1, |old| old.version.saturating_add(1));
            let mut s = s.clone();
            s.version = version;
            k.secrets.insert(s.name.clone(), s);
            ((), true)
        })
    }

    fn remove_secret(&self, name: &str) -> std::io::Result<bool> {
        self.change(|k| {
            let gone = k.secrets.remove(name).is_some();
            (gone, gone)
        })
    }
}
