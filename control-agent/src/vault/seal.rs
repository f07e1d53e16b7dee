//! The vault's data keys: which one seals a tenant's next write (making a
//! new one when the current master key does not wrap the newest), opening
//! them (cached), and the associated data every sealed value is bound to.

use std::collections::{BTreeMap, HashMap};

use super::backend::{ConnKey, WrappedKey};
use super::keys;
use super::{Vault, VaultError};

/// How many opened data keys the vault keeps in memory (all dropped when
/// full: they are opened again, one master-key unwrap each).
const CACHE_MAX: usize = 4096;
/// How many times a tenant's new data key is tried when other agents keep
/// making one first.
const MAKE_TRIES: usize = 3;

/// The data keys known to this agent: as kept (wrapped), and those opened.
#[derive(Default)]
pub(super) struct DataKeys {
    /// Every data key read from the backend, by (tenant, version).
    pub(super) wrapped: BTreeMap<(String, u32), WrappedKey>,
    /// Opened data keys by (tenant, version, master), with the wrapped
    /// bytes they were opened from (a different wrapping is opened again).
    opened: HashMap<(String, u32, String), Opened>,
}

struct Opened {
    wrapped: Vec<u8>,
    key: [u8; 32],
}

impl DataKeys {
    fn cached(&self, wk: &WrappedKey) -> Option<[u8; 32]> {
        let id = (wk.tenant.clone(), wk.version, wk.master.clone());
        self.opened
            .get(&id)
            .filter(|o| o.wrapped == wk.wrapped)
            .map(|o| o.key)
    }

    fn remember(&mut self, wk: &WrappedKey, key: [u8; 32]) {
        if self.opened.len() >= CACHE_MAX {
            self.opened.clear();
        }
        let id = (wk.tenant.clone(), wk.version, wk.master.clone());
        let wrapped = wk.wrapped.clone();
        self.opened.insert(id, Opened { wrapped, key });
    }

    fn newest(&self, tenant: &str) -> Option<WrappedKey> {
        self.wrapped
            .range((tenant.to_owned(), 0)..=(tenant.to_owned(), u32::MAX))
            .next_back()
            .map(|(_, k)| k.clone())
    }
}

/// What a data key's wrapping is bound to: tenant ‖ 0 ‖ version (4 bytes,
/// big-endian; fixed width, so the encoding is unambiguous).
pub(super) fn dek_aad(tenant: &str, version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tenant.len() + 5);
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// What a connection's tokens are bound to: its key and id.
pub(super) fn conn_aad(key: &ConnKey, id: &str) -> Vec<u8> {
    canonical(
        "warden vault connection v1",
        &[&key.tenant, &key.principal, &key.server, id],
    )
}

/// What a secret's value is bound to: its name and tenant.
pub(super) fn secret_aad(name: &str, tenant: &str) -> Vec<u8> {
    canonical("warden vault secret v1", &[name, tenant])
}

/// `label` then each field, each preceded by its length (8 bytes,
/// big-endian): two different lists never encode alike.
fn canonical(label: &str, fields: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for f in std::iter::once(label).chain(fields.iter().copied()) {
        out.extend_from_slice(&(f.len() as u64).to_be_bytes());
        out.extend_from_slice(f.as_bytes());
    }
    out
}

/// A failure of the master keys (or the KMS) while sealing.
pub(super) fn keys_failed(what: &str, e: anyhow::Error) -> VaultError {
    VaultError::Keys(format!("{what}: {e:#}"))
}

impl Vault {
    /// Reads the kept data keys again (another agent made or rewrapped
    /// some).
    pub(super) fn reload_keys(&self) -> Result<(), VaultError> {
        let kept = self.backend.keys()?;
        let mut dk = self.data_keys();
        dk.wrapped = kept
            .into_iter()
            .map(|k| ((k.tenant.clone(), k.version), k))
            .collect();
        Ok(())
    }

    pub(super) fn data_keys(&self) -> std::sync::MutexGuard<'_, DataKeys> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens `wk` (from the cache when it was opened before).
    pub(super) fn open_key(&self, wk: &WrappedKey) -> anyhow::Result<[u8; 32]> {
        if let Some(k) = self.data_keys().cached(wk) {
            return Ok(k);
        }
        let aad = dek_aad(&wk.tenant, wk.version);
        let key = self.keys.unwrap(&wk.master, &wk.wrapped, &aad)?;
        self.data_keys().remember(wk, key);
        Ok(key)
    }

    /// Data key `version` of `tenant`, opened: read from the backend again
    /// when not known or when it does not open as known (another agent
    /// made or rewrapped it).
    pub(super) fn data_key(&self, tenant: &str, version: u32) -> Result<[u8; 32], VaultError> {
        let id = (tenant.to_owned(), version);
        let known = self.data_keys().wrapped.get(&id).cloned();
        if let Some(k) = known.and_then(|wk| self.open_key(&wk).ok()) {
            return Ok(k);
        }
        self.reload_keys()?;
        let wk = self.data_keys().wrapped.get(&id).cloned().ok_or_else(|| {
            VaultError::Sealed(format!("data key {version} of tenant {tenant:?}: not kept"))
        })?;
        self.open_key(&wk).map_err(|e| {
            VaultError::Sealed(format!(
                "data key {version} of tenant {tenant:?} (master key `{}`): {e:#}",
                wk.master
            ))
        })
    }

    /// The data key that seals `tenant`'s next write, and its version: the
    /// tenant's newest when the current master key wraps it, else a new
    /// one (newest + 1) wrapped by the current master key.
    pub(super) fn sealing_key(&self, tenant: &str) -> Result<(u32, [u8; 32]), VaultError> {
        let current = self
            .keys
            .current()
            .map_err(|e| keys_failed("the current master key", e))?;
        if let Some(k) = self.usable(tenant, &current)? {
            return Ok(k);
        }
        for _ in 0..MAKE_TRIES {
            self.reload_keys()?;
            if let Some(k) = self.usable(tenant, &current)? {
                return Ok(k);
            }
            if let Some(k) = self.make_key(tenant)? {
                return Ok(k);
            }
        }
        Err(VaultError::Store(std::io::Error::other(format!(
            "tenant {tenant:?}: other agents made a data key first {MAKE_TRIES} times running"
        ))))
    }

    /// The tenant's newest data key, when `current` wraps it.
    fn usable(&self, tenant: &str, current: &str) -> Result<Option<(u32, [u8; 32])>, VaultError> {
        // The guard is let go before `data_key` takes the lock again (a
        // temporary in a `match` head lives to the match's end).
        let newest = self.data_keys().newest(tenant);
        match newest {
            Some(wk) if wk.master == current => {
                Ok(Some((wk.version, self.data_key(tenant, wk.version)?)))
            }
            _ => Ok(None),
        }
    }

    /// Makes and keeps the tenant's next data key; `None` when another
    /// agent kept that version first.
    fn make_key(&self, tenant: &str) -> Result<Option<(u32, [u8; 32])>, VaultError> {
        let newest = self.data_keys().newest(tenant).map_or(0, |k| k.version);
        let version = newest.checked_add(1).ok_or_else(|| {
            VaultError::Keys(format!("tenant {tenant:?} has no data key version left"))
        })?;
        let dek = keys::random_key().map_err(|e| keys_failed("a new data key", e))?;
        let (master, wrapped) = self
            .keys
            .wrap(&dek, &dek_aad(tenant, version))
            .map_err(|e| keys_failed("wrapping a new data key", e))?;
        let wk = WrappedKey {
            tenant: tenant.to_owned(),
            version,
            master,
            wrapped,
        };
        if !self.backend.add_key(&wk)? {
            return Ok(None);
        }
        let mut dk = self.data_keys();
        dk.remember(&wk, dek);
        dk.wrapped.insert((wk.tenant.clone(), version), wk);
        Ok(Some((version, dek)))
    }

    /// Seals `plain` under `tenant`'s sealing key: its version and the
    /// sealed bytes.
    pub(super) fn seal_for(
        &self,
        tenant: &str,
        aad: &[u8],
        plain: &[u8],
    ) -> Result<(u32, Vec<u8>), VaultError> {
        let (version, dek) = self.sealing_key(tenant)?;
        let sealed = keys::seal(&dek, aad, plain).map_err(|e| keys_failed("sealing", e))?;
        Ok((version, sealed))
    }

    /// Opens `sealed` with data key `version` of `tenant`; `what` names it
    /// in the error.
    pub(super) fn open_for(
        &self,
        tenant: &str,
        version: u32,
        aad: &[u8],
        sealed: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<Vec<u8>, VaultError> {
        let dek = self.data_key(tenant, version)?;
        keys::open(&dek, aad, sealed).ok_or_else(|| VaultError::Sealed(what()))
    }
}
