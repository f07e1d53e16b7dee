//! Master keys, and the sealing every key of the vault uses.
//!
//! [`KeyWrap`] is what wraps the vault's data keys: [`MasterKeys`] (a file
//! or an environment variable, `id:base64` a line, the first current) or,
//! later, a KMS. [`seal`] and [`open`] are AES-256-GCM with a random
//! 96-bit nonce (nonce ‖ ciphertext ‖ tag), used both to wrap a data key
//! under a master key and to seal tokens under a data key.
//!
//! Nothing here prints a key: errors name the line or the key's id, and
//! `Debug` shows ids only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// What wraps the vault's data keys: the master keys (a KMS would
/// implement this too).
pub trait KeyWrap: Send + Sync {
    /// The id of the current master key: what new data keys are wrapped by.
    fn current(&self) -> anyhow::Result<String>;
    /// Wraps `dek` under the current master key, bound to `aad` (the
    /// vault gives tenant ‖ 0 ‖ version: a wrapped key copied to another
    /// tenant or version does not open). The master key's id and the
    /// wrapped bytes.
    fn wrap(&self, dek: &[u8; 32], aad: &[u8]) -> anyhow::Result<(String, Vec<u8>)>;
    /// Opens what [`KeyWrap::wrap`] made with master key `master` and the
    /// same `aad`. An error when that master key is not listed or the
    /// bytes do not open.
    fn unwrap(&self, master: &str, wrapped: &[u8], aad: &[u8]) -> anyhow::Result<[u8; 32]>;
    /// Keys for the HMACs the agent derives from the master keys, the
    /// current one's first: SHA-256 of a fixed label ‖ the master key, one
    /// per master key (a verifier tries each, so a rotation keeps the
    /// older MACs valid while their master key is listed).
    fn mac_keys(&self) -> Vec<[u8; 32]>;
}

/// The label of [`KeyWrap::mac_keys`]' derivation.
const MAC_LABEL: &[u8] = b"warden vault mac key v1\0";
/// How often a file-backed [`MasterKeys`] looks whether its file changed.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest id a master key may have.
const MAX_ID: usize = 64;

/// One master key: its id and its 32 bytes.
struct Master {
    id: String,
    key: [u8; 32],
}

/// The master keys, the first current: from a file (re-read when it
/// changes, so a rotation needs no restart), an environment variable or
/// text.
pub struct MasterKeys {
    keys: RwLock<Arc<Vec<Master>>>,
    /// Where they were read from, when a file.
    file: Option<Watched>,
}

/// A keys file and what was last seen of it.
struct Watched {
    path: PathBuf,
    seen: Mutex<Seen>,
}

struct Seen {
    stamp: Stamp,
    checked: Instant,
}

/// What tells a changed file: its modification time and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.snapshot().iter().map(|m| m.id.clone()).collect();
        f.debug_struct("MasterKeys")
            .field("ids", &ids)
            .field("file", &self.file.as_ref().map(|w| &w.path))
            .finish()
    }
}

impl MasterKeys {
    /// The keys in `text` (`id:base64` a line, blank lines and `#`
    /// comments ignored, the first current).
    pub fn parse(text: &str) -> anyhow::Result<MasterKeys> {
        Ok(MasterKeys::holding(parse_keys(text, "master keys")?, None))
    }

    /// The keys in the environment variable `var`.
    pub fn from_env(var: &str) -> anyhow::Result<MasterKeys> {
        let text = std::env::var(var)
            .map_err(|_| anyhow!("master keys: the environment variable {var} is not set"))?;
        Ok(MasterKeys::holding(
            parse_keys(&text, &format!("master keys in ${var}"))?,
            None,
        ))
    }

    /// The keys in the file at `path`, which must be readable by its owner
    /// alone; read again when it changes (a file that changed but is not
    /// valid is ignored with a warning: the keys before stay).
    pub fn from_file(path: &Path) -> anyhow::Result<MasterKeys> {
        let (keys, stamp) = read_file(path)?;
        let seen = Seen {
            stamp,
            checked: Instant::now(),
        };
        let watched = Watched {
            path: path.to_owned(),
            seen: Mutex::new(seen),
        };
        Ok(MasterKeys::holding(keys, Some(watched)))
    }

    fn holding(keys: Vec<Master>, file: Option<Watched>) -> MasterKeys {
        MasterKeys {
            keys: RwLock::new(Arc::new(keys)),
            file,
        }
    }

    /// The ids of the keys, the current one first.
    pub fn ids(&self) -> Vec<String> {
        self.keys().iter().map(|m| m.id.clone()).collect()
    }

    /// The keys now, after reading the file again if it changed.
    fn keys(&self) -> Arc<Vec<Master>> {
        self.reload();
        self.snapshot()
    }

    fn snapshot(&self) -> Arc<Vec<Master>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the file again when its modification time or length changed
    /// (looked at once a second at most).
    fn reload(&self) {
        let Some(w) = &self.file else { return };
        let mut seen = w.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.checked.elapsed() < CHECK_EVERY {
            return;
        }
        seen.checked = Instant::now();
        match stamp(&w.path) {
            Ok(s) if s == seen.stamp => return,
            Ok(s) => seen.stamp = s,
            Err(e) => {
                tracing::warn!(path = %w.path.display(), error = %e, "the master keys file cannot be read; keeping the keys loaded before");
                return;
            }
        }
        match read_file(&w.path) {
            Ok((keys, s)) => {
                seen.stamp = s;
                tracing::info!(path = %w.path.display(), current = %keys.first().map_or("", |m| m.id.as_str()), count = keys.len(), "master keys read again");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
            }
            Err(e) => {
                tracing::warn!(path = %w.path.display(), error = %format!("{e:#}"), "the master keys file changed but is not valid; keeping the keys loaded before");
            }
        }
    }
}

impl KeyWrap for MasterKeys {
    fn current(&self) -> anyhow::Result<String> {
        current(&self.keys()).map(|m| m.id.clone())
    }

    fn wrap(&self, dek: &[u8; 32], aad: &[u8]) -> anyhow::Result<(String, Vec<u8>)> {
        let keys = self.keys();
        let m = current(&keys)?;
        Ok((m.id.clone(), seal(&m.key, aad, dek)?))
    }

    fn unwrap(&self, master: &str, wrapped: &[u8], aad: &[u8]) -> anyhow::Result<[u8; 32]> {
        let keys = self.keys();
        let m = keys
            .iter()
            .find(|m| m.id == master)
            .ok_or_else(|| anyhow!("master key `{master}` is not listed in the master keys"))?;
        let plain = open(&m.key, aad, wrapped)
            .ok_or_else(|| anyhow!("master key `{master}` does not open the wrapped key"))?;
        <[u8; 32]>::try_from(plain.as_slice())
            .map_err(|_| anyhow!("master key `{master}` opened a wrapped key that is not 32 bytes"))
    }

    fn mac_keys(&self) -> Vec<[u8; 32]> {
        self.keys()
            .iter()
            .map(|m| {
                let mut h = Sha256::new();
                h.update(MAC_LABEL);
                h.update(m.key);
                h.finalize().into()
            })
            .collect()
    }
}

fn current(keys: &[Master]) -> anyhow::Result<&Master> {
    keys.first()
        .ok_or_else(|| anyhow!("no master key is listed"))
}

/// A new master key's base64 (32 random bytes), the part after `id:`.
pub fn generate() -> anyhow::Result<String> {
    Ok(STANDARD.encode(random_key()?))
}

/// 32 random bytes: a new data key or master key.
pub(crate) fn random_key() -> anyhow::Result<[u8; 32]> {
    let mut k = [0u8; 32];
    SystemRandom::new()
        .fill(&mut k)
        .map_err(|_| anyhow!("the system's random number generator failed"))?;
    Ok(k)
}

/// Seals `plain` under `key`, bound to `aad`: nonce ‖ ciphertext ‖ tag
/// (AES-256-GCM, a random 96-bit nonce).
pub(crate) fn seal(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| anyhow!("the system's random number generator failed"))?;
    let mut body = plain.to_vec();
    aead_key(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| anyhow!("AES-256-GCM refused to seal"))?;
    let mut out = Vec::with_capacity(NONCE_LEN + body.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens what [`seal`] made under `key` with the same `aad`; `None` when
/// it does not open (another key, other associated data, changed bytes).
pub(crate) fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let (nonce, body) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut body = body.to_vec();
    let plain = aead_key(key)
        .ok()?
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .ok()?;
    Some(plain.to_vec())
}

fn aead_key(key: &[u8; 32]) -> anyhow::Result<LessSafeKey> {
    let k = UnboundKey::new(&AES_256_GCM, key).map_err(|_| anyhow!("not an AES-256 key"))?;
    Ok(LessSafeKey::new(k))
}

/// The keys in the file at `path` and its stamp, refusing a file others
/// may read.
fn read_file(path: &Path) -> anyhow::Result<(Vec<Master>, Stamp)> {
    let shown = path.display();
    let before = stamp(path).with_context(|| format!("master keys {shown}"))?;
    private(path)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("master keys {shown}: cannot read"))?;
    let keys = parse_keys(&text, &format!("master keys {shown}"))?;
    Ok((keys, before))
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// Refuses a keys file that its group or others may read or write.
#[cfg(unix)]
fn private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("master keys {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "master keys {}: its group or others have access (mode {:o}); make it readable by the agent alone (chmod 600)",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn private(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// The keys in `text`; errors name `source` and the line, never what the
/// line holds beyond a valid id.
fn parse_keys(text: &str, source: &str) -> anyhow::Result<Vec<Master>> {
    let mut keys: Vec<(usize, Master)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let m = parse_line(line).with_context(|| format!("{source}, line {n}"))?;
        if let Some((first, _)) = keys.iter().find(|(_, k)| k.id == m.id) {
            bail!(
                "{source}, line {n}: the id `{}` is already on line {first}",
                m.id
            );
        }
        keys.push((n, m));
    }
    if keys.is_empty() {
        bail!("{source}: no master key (a line `id:base64 of 32 random bytes`)");
    }
    Ok(keys.into_iter().map(|(_, m)| m).collect())
}

fn parse_line(line: &str) -> anyhow::Result<Master> {
    let Some((id, b64)) = line.split_once(':') else {
        bail!("not `id:base64`");
    };
    let id = id.trim();
    if !valid_id(id) {
        bail!("the id must be 1 to {MAX_ID} characters of A-Z a-z 0-9 . _ -");
    }
    let bytes = STANDARD
        .decode(b64.trim())
        .map_err(|_| anyhow!("key `{id}` is not standard base64"))?;
    let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        anyhow!(
            "key `{id}` is {} bytes; a master key is 32 random bytes",
            bytes.len()
        )
    })?;
    Ok(Master {
        id: id.to_owned(),
        key,
    })
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
