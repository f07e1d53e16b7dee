//! The vault: each person's upstream credentials (their tokens at a SaaS
//! provider, from the consent flow of [`crate::api::connect`]) and the
//! bundle's static secrets that name the vault, kept encrypted.
//!
//! Envelope encryption: every tenant has data keys (AES-256-GCM, random),
//! each kept wrapped by a master key ([`keys::MasterKeys`], from a file or
//! an environment variable; [`keys::KeyWrap`] is what a KMS would
//! implement). A tenant's newest data key wrapped by the current master
//! key seals new writes; when the current master key changes, the next
//! write makes a new data key under it, and the older ones still open what
//! they sealed while their master key is listed. `rewrap` wraps every data
//! key again under the current master key, after which the old master key
//! may leave the file. Nothing in the backend is in clear: tokens are
//! sealed with the connection's key and id as associated data, so a row
//! copied under another principal does not open.
//!
//! Parts: `backend` (what is kept, and the backend trait), `keys` (master
//! keys and AES-256-GCM sealing), `seal` (the data keys: which seals a
//! write, opening them, what each sealed value is bound to), `file` (the
//! embedded backend), `postgres` (shared by the agents on one database).

pub mod backend;
pub mod file;
pub mod keys;
pub mod postgres;
mod seal;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

pub use backend::{ConnKey, Filter, SealedConn, SealedSecret, VaultBackend, WrappedKey};
pub use keys::{KeyWrap, MasterKeys};

use seal::{conn_aad, secret_aad, DataKeys};

/// A connection's tokens, in clear (only ever in memory).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tokens {
    pub access: String,
    #[serde(default)]
    pub refresh: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(…)")
    }
}

/// Why the vault could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The backend failed (the database, the file).
    #[error("the vault's store: {0}")]
    Store(#[from] std::io::Error),
    /// A data key or a sealed value did not open: its master key is not
    /// listed any more, or what is kept was changed.
    #[error("the vault cannot open {0}")]
    Sealed(String),
    /// The master keys (or the KMS) failed to wrap or seal.
    #[error("the vault's keys: {0}")]
    Keys(String),
}

/// The vault: what the backend keeps, sealed and opened with the master
/// keys' data keys.
pub struct Vault {
    backend: Box<dyn VaultBackend>,
    keys: Arc<dyn KeyWrap>,
    /// The data keys known and those opened (bounded).
    data: Mutex<DataKeys>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(…)")
    }
}

impl Vault {
    /// The vault on `backend`, its data keys wrapped by `keys`. Every data
    /// key kept is opened once: one that does not open (its master key is
    /// not listed) is an error naming its tenant, version and master key,
    /// and the agent should not start (what it sealed would not open).
    pub fn new(backend: Box<dyn VaultBackend>, keys: Arc<dyn KeyWrap>) -> anyhow::Result<Vault> {
        let vault = Vault {
            backend,
            keys,
            data: Mutex::new(DataKeys::default()),
        };
        vault.reload_keys()?;
        let kept: Vec<WrappedKey> = vault.data_keys().wrapped.values().cloned().collect();
        for wk in &kept {
            vault.open_key(wk).map_err(|e| {
                anyhow::anyhow!(
                    "the vault's data key {} of tenant {:?} (wrapped by master key `{}`) does not open: {e:#}",
                    wk.version,
                    wk.tenant,
                    wk.master
                )
            })?;
        }
        Ok(vault)
    }

    /// What wraps the data keys (its MAC keys serve the agent's HMACs).
    pub fn keys(&self) -> &Arc<dyn KeyWrap> {
        &self.keys
    }

    /// The connection under `key` and its tokens, opened.
    pub fn connection(&self, key: &ConnKey) -> Result<Option<(SealedConn, Tokens)>, VaultError> {
        match self.backend.get(key)? {
            Some(c) => {
                let t = self.open_tokens(&c)?;
                Ok(Some((c, t)))
            }
            None => Ok(None),
        }
    }

    /// The connections `filter` names, tokens sealed.
    pub fn list(&self, filter: &Filter) -> Result<Vec<SealedConn>, VaultError> {
        Ok(self.backend.list(filter)?)
    }

    /// Seals `tokens` into `meta` (its `tokens` and `dek_version`
    /// overwritten) and writes it when the kept version is `expected` (see
    /// [`VaultBackend::put`]). `Ok(false)`: someone wrote first.
    pub fn store(
        &self,
        mut meta: SealedConn,
        tokens: &Tokens,
        expected: Option<u64>,
    ) -> Result<bool, VaultError> {
        let plain = serde_json::to_vec(tokens)
            .map_err(|_| VaultError::Keys("the tokens do not encode".into()))?;
        let aad = conn_aad(&meta.key, &meta.id);
        let (version, sealed) = self.seal_for(&meta.key.tenant, &aad, &plain)?;
        meta.dek_version = version;
        meta.tokens = sealed;
        Ok(self.backend.put(&meta, expected)?)
    }

    /// Marks a refresh of `key` by `holder` (see
    /// [`VaultBackend::claim_refresh`]): the connection and its tokens
    /// when the mark was taken.
    pub fn claim_refresh(
        &self,
        key: &ConnKey,
        expected: u64,
        holder: &str,
        until: u64,
        now: u64,
    ) -> Result<Option<(SealedConn, Tokens)>, VaultError> {
        match self
            .backend
            .claim_refresh(key, expected, holder, until, now)?
        {
            Some(c) => {
                let t = self.open_tokens(&c)?;
                Ok(Some((c, t)))
            }
            None => Ok(None),
        }
    }

    /// Removes the connections `filter` names: each with its tokens, or
    /// `None` when they do not open (removed all the same).
    pub fn remove(&self, filter: &Filter) -> Result<Vec<(SealedConn, Option<Tokens>)>, VaultError> {
        let gone = self.backend.remove(filter)?;
        Ok(gone
            .into_iter()
            .map(|c| {
                let t = self.open_tokens(&c).ok();
                (c, t)
            })
            .collect())
    }

    /// The secret `name` and its value, opened.
    pub fn secret(&self, name: &str) -> Result<Option<(SealedSecret, String)>, VaultError> {
        let Some(s) = self.backend.secret(name)? else {
            return Ok(None);
        };
        let what = || format!("secret {name:?}");
        let aad = secret_aad(&s.name, &s.tenant);
        let plain = self.open_for(&s.tenant, s.dek_version, &aad, &s.value, what)?;
        let value = String::from_utf8(plain).map_err(|_| VaultError::Sealed(what()))?;
        Ok(Some((s, value)))
    }

    /// Seals `value` as secret `name` of `tenant` (`""`: the
    /// organisation's), replacing what was kept under that name.
    pub fn put_secret(&self, name: &str, tenant: &str, value: &str) -> Result<(), VaultError> {
        let aad = secret_aad(name, tenant);
        let (dek_version, sealed) = self.seal_for(tenant, &aad, value.as_bytes())?;
        let s = SealedSecret {
            name: name.to_owned(),
            tenant: tenant.to_owned(),
            dek_version,
            value: sealed,
            updated: now(),
            version: 0,
        };
        Ok(self.backend.put_secret(&s)?)
    }

    /// Every secret kept, values sealed (names and metadata to list).
    pub fn secret_names(&self) -> Result<Vec<SealedSecret>, VaultError> {
        Ok(self.backend.secrets()?)
    }

    /// Removes secret `name`; whether it was kept.
    pub fn remove_secret(&self, name: &str) -> Result<bool, VaultError> {
        Ok(self.backend.remove_secret(name)?)
    }

    /// Wraps every data key that the current master key does not wrap
    /// again under it (those it wraps already are left as they are); how
    /// many were rewrapped. After it, master keys other than the current
    /// one may leave the keys file.
    pub fn rewrap(&self) -> Result<usize, VaultError> {
        let current = self
            .keys
            .current()
            .map_err(|e| seal::keys_failed("the current master key", e))?;
        self.reload_keys()?;
        let stale: Vec<WrappedKey> = self
            .data_keys()
            .wrapped
            .values()
            .filter(|k| k.master != current)
            .cloned()
            .collect();
        let mut again = Vec::with_capacity(stale.len());
        for wk in stale {
            again.push(self.rewrapped(wk)?);
        }
        if !again.is_empty() {
            self.backend.rewrap_keys(&again)?;
            self.reload_keys()?;
        }
        Ok(again.len())
    }

    /// `wk` wrapped again under the current master key.
    fn rewrapped(&self, wk: WrappedKey) -> Result<WrappedKey, VaultError> {
        let dek = self.data_key(&wk.tenant, wk.version)?;
        let aad = seal::dek_aad(&wk.tenant, wk.version);
        let (master, wrapped) = self.keys.wrap(&dek, &aad).map_err(|e| {
            seal::keys_failed(
                &format!(
                    "rewrapping data key {} of tenant {:?}",
                    wk.version, wk.tenant
                ),
                e,
            )
        })?;
        Ok(WrappedKey {
            master,
            wrapped,
            ..wk
        })
    }

    /// Opens a connection's tokens.
    fn open_tokens(&self, c: &SealedConn) -> Result<Tokens, VaultError> {
        let what = || {
            format!(
                "the tokens of connection {:?}/{:?}/{:?}",
                c.key.tenant, c.key.principal, c.key.server
            )
        };
        let aad = conn_aad(&c.key, &c.id);
        let plain = self.open_for(&c.key.tenant, c.dek_version, &aad, &c.tokens, what)?;
        // The decoder's error is not shown: it may quote what it read.
        serde_json::from_slice(&plain).map_err(|_| VaultError::Sealed(what()))
    }
}

/// Seconds since the epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
