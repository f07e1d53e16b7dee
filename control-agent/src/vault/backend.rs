//! Where the vault keeps what it holds: [`VaultBackend`] is what the vault
//! asks of it. Everything it stores is ciphertext or a wrapped key; the
//! backend never sees a token or a secret in clear.
//!
//! Two implementations: [`super::file::VaultFile`] (`vault.json` in the
//! state directory, the embedded default) and
//! [`super::postgres::PgVault`] (`serve --database`, shared by the agents
//! of a fleet).

/// A per-tenant data key, as kept: wrapped by a master key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrappedKey {
    /// The tenant (`""`: the organisation's own secrets).
    pub tenant: String,
    /// 1, 2, …: a tenant's newest version encrypts new writes; older ones
    /// still open what they encrypted.
    pub version: u32,
    /// The master key that wraps it (its id in the key file).
    pub master: String,
    /// The data key sealed by that master key (nonce ‖ AES-256-GCM).
    #[serde(with = "b64")]
    pub wrapped: Vec<u8>,
}

/// Which connection: one principal's credential for one server.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ConnKey {
    pub tenant: String,
    pub principal: String,
    pub server: String,
}

/// A connection as kept: what may be listed in clear, and the tokens
/// sealed under the tenant's data key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedConn {
    pub key: ConnKey,
    /// A stable id (shown, audited: the reference of a use).
    pub id: String,
    /// The provider the person consented at (`connections` file name).
    pub provider: String,
    /// The scopes granted, sorted.
    pub scopes: Vec<String>,
    /// Who consented (their `iss`-qualified subject at the organisation's
    /// provider), shown to admins.
    pub person: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub refreshed: u64,
    /// When the access token expires (seconds since the epoch; 0: not said).
    pub expires_at: u64,
    /// The data key version of `tenant` that sealed `tokens`.
    pub dek_version: u32,
    /// nonce ‖ AES-256-GCM(JSON of the access and refresh tokens), with
    /// the connection's key and id as associated data (a row copied under
    /// another principal does not open).
    #[serde(with = "b64")]
    pub tokens: Vec<u8>,
    /// Bumped by each write: what a refresh's compare-and-set compares.
    pub version: u64,
    /// A refresh under way: who holds it and until when (seconds since the
    /// epoch). Another agent waits for it, or takes it once it lapsed.
    #[serde(default)]
    pub refreshing: Option<(String, u64)>,
}

/// A static secret (`credentials: {vault: name}`), sealed likewise.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedSecret {
    pub name: String,
    pub tenant: String,
    pub dek_version: u32,
    /// nonce ‖ AES-256-GCM(value), the name and tenant as associated data.
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    pub updated: u64,
    pub version: u64,
}

/// Which connections an operation is about (every field set must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub tenant: Option<String>,
    pub principal: Option<String>,
    pub server: Option<String>,
}

impl Filter {
    pub fn matches(&self, k: &ConnKey) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == k.tenant)
            && self.principal.as_ref().is_none_or(|p| *p == k.principal)
            && self.server.as_ref().is_none_or(|s| *s == k.server)
    }
}

/// What the vault keeps. Every write is durable before it returns.
pub trait VaultBackend: Send + Sync {
    /// Every data key kept.
    fn keys(&self) -> std::io::Result<Vec<WrappedKey>>;
    /// Adds a data key; `false` when that tenant already has that version
    /// (another agent made it first: read the keys again).
    fn add_key(&self, key: &WrappedKey) -> std::io::Result<bool>;
    /// Replaces the wrapping of existing data keys (a master-key rewrap);
    /// the data keys themselves are unchanged.
    fn rewrap_keys(&self, keys: &[WrappedKey]) -> std::io::Result<()>;

    fn get(&self, key: &ConnKey) -> std::io::Result<Option<SealedConn>>;
    fn list(&self, filter: &Filter) -> std::io::Result<Vec<SealedConn>>;
    /// Writes `conn` when what is kept under its key has version
    /// `expected` (`None`: nothing kept), with `conn.version` then set to
    /// one more than that (1 for a new one) and `refreshing` cleared.
    /// `Ok(false)` when the version differs: someone else wrote first.
    fn put(&self, conn: &SealedConn, expected: Option<u64>) -> std::io::Result<bool>;
    /// Marks a refresh of `key` by `holder` until `until`, when the kept
    /// version is `expected` and no other holder's mark runs past `now`
    /// (a mark whose `until` is `now` or earlier has lapsed; the holder's
    /// own mark may be renewed). The mark leaves `version` as it was: the
    /// holder then writes the refreshed tokens with `put(…, Some(expected))`.
    /// The connection as now kept when the mark was taken, else `None`.
    fn claim_refresh(
        &self,
        key: &ConnKey,
        expected: u64,
        holder: &str,
        until: u64,
        now: u64,
    ) -> std::io::Result<Option<SealedConn>>;
    /// Removes the connections `filter` names; those removed.
    fn remove(&self, filter: &Filter) -> std::io::Result<Vec<SealedConn>>;

    fn secret(&self, name: &str) -> std::io::Result<Option<SealedSecret>>;
    fn secrets(&self) -> std::io::Result<Vec<SealedSecret>>;
    /// Writes a secret (its `version` is set to one more than kept, 1 for
    /// a new one; the one given is ignored).
    fn put_secret(&self, s: &SealedSecret) -> std::io::Result<()>;
    fn remove_secret(&self, name: &str) -> std::io::Result<bool>;
}

/// Byte strings in JSON as standard base64 (the file backend's
/// `vault.json`), not arrays of numbers.
mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        STANDARD
            .decode(text)
            .map_err(|_| serde::de::Error::custom("not standard base64"))
    }
}
