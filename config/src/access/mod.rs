//! Typed identity, policy, tool-catalog, kill-switch and upstream-credential
//! settings, validated from the raw `warden.yaml` sections.
//!
//! - `identity`: who may call (API keys, JWT, mTLS rules, principals).
//! - `policy`: the policy engine's settings and the kill switch (composed
//!   over the servers by `model`).
//! - `catalog`: what the bundle says about each server's tools.
//! - `credentials`: Warden's own credentials for upstreams, and the
//!   session-sealing secret.
//!
//! `Risk`, `DenialStyle` and `Secret` live in leaf modules the guards read
//! too; they are re-exported here, where they have always been.

mod catalog;
mod credentials;
mod identity;
mod policy;

pub use crate::denial::DenialStyle;
pub use crate::risk::Risk;
pub use crate::secret::Secret;
pub use catalog::{currency, micros, Price, ServerCatalog, ToolEntry, ToolMap};
pub use credentials::{vault_name, Credentials, VaultCredential, VaultSource};
pub use identity::{
    hash_api_key, parse_key_hash, ApiKey, CertMatch, Identity, JwksSource, Jwt, MtlsRule,
    PrincipalKind, PrincipalSpec,
};
pub(crate) use policy::named;
pub use policy::{KillSwitch, PolicySettings};

pub(crate) use catalog::catalog;
pub(crate) use credentials::{
    credentials, from_vault, outbound_header, session_seal, vault_credential,
};
pub(crate) use identity::identity;
pub(crate) use policy::{kill_switch, policy};
