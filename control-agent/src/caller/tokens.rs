//! The tokens the agent is started with: the admin and fleet tokens,
//! gateways' own tokens (`--gateways`) and the metrics token.

use sha2::{Digest, Sha256};

use super::Caller;

/// The tokens the agent starts with, kept as digests.
pub struct Tokens {
    /// SHA-256 of the admin token.
    admin: [u8; 32],
    /// SHA-256 of the fleet token (gateways).
    fleet: [u8; 32],
    /// Gateways with a token of their own (`--gateways`): SHA-256 of the
    /// token → the gateway id it speaks for, alone.
    gateways: std::collections::HashMap<[u8; 32], String>,
    /// SHA-256 of the token `/metrics` asks for (`--metrics-token`); `None`:
    /// `/metrics` is open.
    metrics: Option<[u8; 32]>,
    /// Gateways must present a client certificate (`--require-gateway-certs`).
    gateway_certs: bool,
}

/// Reads the gateways file (`--gateways`): a YAML map of gateway id →
/// SHA-256 (64 hex) of that gateway's token.
pub fn read_gateway_tokens(
    path: &std::path::Path,
) -> anyhow::Result<std::collections::BTreeMap<String, [u8; 32]>> {
    let text = std::fs::read_to_string(path)?;
    let raw: std::collections::BTreeMap<String, String> = serde_yaml_ng::from_str(&text)?;
    let empty: [u8; 32] = Sha256::digest(b"").into();
    raw.into_iter()
        .map(|(id, hexd)| {
            if !crate::audit::valid_gateway(&id) {
                anyhow::bail!(
                    "{}: gateway id `{id}` must be 1-128 visible ASCII characters",
                    path.display()
                );
            }
            let d: [u8; 32] = hex::decode(hexd.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .filter(|d| *d != empty)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: `{id}` must map to the SHA-256 (64 hex) of the gateway's token",
                        path.display()
                    )
                })?;
            Ok((id, d))
        })
        .collect()
}

impl Tokens {
    pub fn new(admin: &str, fleet: &str) -> Tokens {
        Tokens {
            admin: Sha256::digest(admin.as_bytes()).into(),
            fleet: Sha256::digest(fleet.as_bytes()).into(),
            gateways: Default::default(),
            metrics: None,
            gateway_certs: false,
        }
    }

    /// `/metrics` answers only with this token (or the admin's).
    /// Gateways' requests without a client certificate naming a gateway
    /// are refused.
    pub fn requiring_gateway_certs(mut self, on: bool) -> Self {
        self.gateway_certs = on;
        self
    }

    /// Whether a gateway must present its client certificate.
    pub fn gateway_certs_required(&self) -> bool {
        self.gateway_certs
    }

    pub fn with_metrics_token(mut self, token: Option<&str>) -> Self {
        self.metrics = token.map(|t| Sha256::digest(t.as_bytes()).into());
        self
    }

    /// Whether a request may read `/metrics`: any request while it is
    /// open; else one with the metrics token or the admin token.
    pub(crate) fn reads_metrics(&self, authorization: Option<&http::HeaderValue>) -> bool {
        let Some(want) = self.metrics else {
            return true;
        };
        authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())))
            .is_some_and(|d| d == want || d == self.admin)
    }

    /// Gateways that each have a token of their own: id → SHA-256 of it.
    /// Such an id can be spoken for by its token alone (never by the
    /// shared fleet token, nor another gateway's).
    pub fn with_gateways(mut self, gateways: impl IntoIterator<Item = (String, [u8; 32])>) -> Self {
        self.gateways = gateways.into_iter().map(|(id, d)| (d, id)).collect();
        self
    }

    /// Whether a fleet request of `role` may speak for gateway `id`: a
    /// gateway's own token for its id alone; the shared fleet token (and
    /// an admin) for any id without a token of its own.
    pub(crate) fn speaks_for(&self, caller: &Caller, id: &str) -> Result<(), String> {
        match caller {
            Caller::Gateway(Some(own)) if own == id => Ok(()),
            Caller::Gateway(Some(own)) => Err(format!(
                "this token is gateway `{own}`'s: it cannot speak for gateway `{id}`"
            )),
            _ if self.gateways.values().any(|g| g == id) => Err(format!(
                "gateway `{id}` has a token of its own (--gateways): only that token speaks for it"
            )),
            _ => Ok(()),
        }
    }

    /// Whether `digest` is the admin token's.
    pub fn is_admin(&self, digest: &[u8; 32]) -> bool {
        *digest == self.admin
    }

    /// The gateway a token digest is: `Some(None)` the shared fleet
    /// token, `Some(Some(id))` gateway `id`'s own.
    pub(crate) fn gateway_of(&self, digest: &[u8; 32]) -> Option<Option<String>> {
        if *digest == self.fleet {
            Some(None)
        } else {
            self.gateways.get(digest).map(|id| Some(id.clone()))
        }
    }
}
