//! Each person's own account behind the agent: per-user upstream
//! credentials, with consent, kept in the [`crate::vault`].
//!
//! A bundle's server may need the calling principal's own credential at a
//! provider (`credentials: {per_user: {provider, scopes}}`). A gateway
//! asks the agent for it on each call it has not cached
//! ([`Connect::token`], `POST /v1/vault/token`):
//! - **none yet, or fewer scopes than the server needs**: the agent makes
//!   a consent link ([`seal::Link`]: the tenant, principal, server,
//!   provider and scopes, MACed, ending after `link_lifetime`), which the
//!   gateway hands the caller as a URL-mode elicitation;
//! - **a connection**: its access token, refreshed first when it ends
//!   within `refresh_before`. A refresh runs once across the fleet: the
//!   agent that marks the connection in the store ([`Vault::claim_refresh`],
//!   a compare-and-set) refreshes it, the others wait for what it writes.
//!   A refresh the provider refuses removes the connection: the next call
//!   asks for consent again.
//!
//! The consent pages ([`crate::console::connect_pages`]): the person opens the link, signs in
//! through the organisation's provider (who they are: they must be the
//! link's principal, by the principals their claims name), sees which
//! principal, gateway, server, provider and scopes ask, and consents; the
//! agent then sends them to the provider (authorization code + PKCE, the
//! `state` and verifier in a sealed cookie bound to the link and the
//! person) and keeps what the provider issues. Every consent, refresh and
//! revocation is in the change record; a use is in the gateway's audit
//! record, by the connection's id.

pub mod config;
pub mod oauth;
pub mod seal;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use warden_config::person::{strict_key, tenant_key};

use crate::oidc::now_secs;
use crate::vault::{ConnKey, Filter, SealedConn, Tokens, Vault, VaultError};
use config::Connections;
use seal::{Kind, Link};

/// How long a refresh's mark holds before another agent may take it.
const REFRESH_MARK: u64 = 20;
/// How long a gateway's ask waits for another agent's refresh.
const REFRESH_WAIT: Duration = Duration::from_secs(10);

/// What a gateway asks: the credential of `principal` (in `tenant`) for
/// `server`, at `provider`, with at least `scopes`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Ask {
    pub tenant: String,
    pub principal: String,
    pub server: String,
    pub provider: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub gateway: String,
}

/// The agent's answer to an ask.
#[derive(Clone, serde::Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Answer {
    /// The access token, until `expires_at` (seconds since the epoch; 0:
    /// not said); `connection` is its id (what the audit records).
    Ready {
        token: String,
        expires_at: u64,
        connection: String,
    },
    /// The person must consent first, at `url`.
    Consent { id: String, url: String, until: u64 },
}

/// Why an ask was not answered.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    #[error("no provider `{0}` in this agent's --connections file")]
    NoProvider(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("the provider `{0}` cannot be reached to refresh the credential: {1}")]
    Provider(String, String),
    #[error("another agent's refresh of this credential did not finish in time")]
    Busy,
}

/// The consent flow and the credentials it keeps.
pub struct Connect {
    pub config: Connections,
    pub vault: Arc<Vault>,
    http: reqwest::Client,
    /// This agent, in a refresh's mark (each ask adds its own part).
    holder: String,
    /// The console's origin, where consent links point.
    origin: url::Url,
    /// Where consents, refreshes and revocations are recorded.
    store: Arc<crate::store::Store>,
}

/// The key a connection is kept under.
pub fn conn_key(tenant: &str, principal: &str, server: &str) -> ConnKey {
    ConnKey {
        tenant: tenant_key(tenant),
        principal: strict_key(principal),
        server: warden_config::names::name_key(warden_config::names::Name::Server, server),
    }
}

fn random() -> String {
    crate::console::session::random_token()
}

impl Connect {
    pub fn new(
        config: Connections,
        vault: Arc<Vault>,
        origin: url::Url,
        store: Arc<crate::store::Store>,
    ) -> anyhow::Result<Self> {
        Ok(Connect {
            config,
            vault,
            http: oauth::client()?,
            holder: format!("agent-{}", random()),
            origin,
            store,
        })
    }

    /// The client the agent reaches providers with.
    pub fn http_client(&self) -> reqwest::Client {
        self.http.clone()
    }

    /// The MAC keys of what the flow hands out (current first).
    pub fn keys(&self) -> Vec<[u8; 32]> {
        self.vault.keys().mac_keys()
    }

    fn provider(&self, name: &str) -> Result<&config::Provider, Failed> {
        self.config
            .providers
            .get(name)
            .ok_or_else(|| Failed::NoProvider(name.to_owned()))
    }

    /// A consent link for `ask`.
    fn link(&self, ask: &Ask) -> Result<Answer, Failed> {
        let mut scopes = ask.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let link = Link {
            id: random(),
            tenant: ask.tenant.clone(),
            principal: ask.principal.clone(),
            server: ask.server.clone(),
            provider: ask.provider.clone(),
            scopes,
            gateway: ask.gateway.clone(),
            until: now_secs() + self.config.link_lifetime.as_secs(),
        };
        let sealed = seal::seal(&self.keys(), Kind::Link, &link).map_err(Failed::Refused)?;
        let mut url = self.origin.clone();
        url.set_path("/console/connect");
        url.query_pairs_mut().clear().append_pair("link", &sealed);
        Ok(Answer::Consent {
            id: link.id,
            url: url.into(),
            until: link.until,
        })
    }

    /// The credential `ask` names (see the module docs).
    pub async fn token(&self, ask: &Ask) -> Result<Answer, Failed> {
        for (what, v) in [
            ("tenant", &ask.tenant),
            ("principal", &ask.principal),
            ("server", &ask.server),
        ] {
            if v.len() > crate::approvals::MAX_CLAIM_NAME || v.chars().any(char::is_control) {
                return Err(Failed::Refused(format!("the {what} is no name")));
            }
        }
        if ask.principal.is_empty() {
            return Err(Failed::Refused(
                "an anonymous caller has no account of its own to connect".into(),
            ));
        }
        let provider = self.provider(&ask.provider)?.clone();
        let key = conn_key(&ask.tenant, &ask.principal, &ask.server);
        let deadline = tokio::time::Instant::now() + REFRESH_WAIT;
        loop {
            let vault = self.vault.clone();
            let k = key.clone();
            let kept = tokio::task::spawn_blocking(move || vault.connection(&k))
                .await
                .map_err(|e| Failed::Refused(e.to_string()))??;
            let Some((conn, tokens)) = kept else {
                return self.link(ask);
            };
            let covers = ask.scopes.iter().all(|s| conn.scopes.contains(s));
            if !covers || conn.provider != ask.provider {
                return self.link(ask);
            }
            let now = now_secs();
            let fresh = conn.expires_at == 0
                || conn.expires_at > now + self.config.refresh_before.as_secs();
            if fresh {
                return Ok(ready(&conn, tokens));
            }
            let Some(refresh_token) = tokens.refresh.clone() else {
                // Nothing to refresh with: usable until it ends, then
                // consent again.
                if conn.expires_at > now {
                    return Ok(ready(&conn, tokens));
                }
                self.remove_quietly(&key, "expired without a refresh token");
                return self.link(ask);
            };
            // Mark it as this ask's to refresh; another holding the mark
            // is waited for. Each ask is a holder of its own, not the
            // agent: two asks of one agent at once (two gateways whose
            // caches ended together) would both refresh, and the second
            // would spend a rotated refresh token, which the provider
            // refuses (ending the grant, perhaps) and which removes the
            // connection here.
            let vault = self.vault.clone();
            let holder = format!("{}:{}", self.holder, random());
            let (k, h) = (key.clone(), holder.clone());
            let version = conn.version;
            let marked = tokio::task::spawn_blocking(move || {
                vault.claim_refresh(&k, version, &h, now + REFRESH_MARK, now)
            })
            .await
            .map_err(|e| Failed::Refused(e.to_string()))??;
            let Some((conn, _)) = marked else {
                if conn.expires_at > now {
                    // Still valid while another agent refreshes it.
                    return Ok(ready(&conn, tokens));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(Failed::Busy);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let version = conn.version;
            // What it was, served while the provider cannot be reached and
            // the token has not ended.
            let (valid_until, old) = (conn.expires_at, ready(&conn, tokens));
            let refreshed = self.refresh(ask, &provider, conn, &refresh_token).await;
            if refreshed.is_err() {
                // Nothing was written: the mark is let go now rather than
                // held its 20 s, so the next ask tries again at once.
                let vault = self.vault.clone();
                let now = now_secs();
                let _ = tokio::task::spawn_blocking(move || {
                    vault.claim_refresh(&key, version, &holder, now, now)
                })
                .await;
            }
            if matches!(refreshed, Err(Failed::Provider(..))) && valid_until > now_secs() {
                return Ok(old);
            }
            return refreshed;
        }
    }

    /// Refreshes `conn`, marked as this agent's.
    async fn refresh(
        &self,
        ask: &Ask,
        provider: &config::Provider,
        conn: SealedConn,
        refresh_token: &str,
    ) -> Result<Answer, Failed> {
        let label = format!(
            "{}/{} at {}",
            conn.key.tenant, conn.key.principal, conn.key.server
        );
        match oauth::refresh(&self.http, provider, refresh_token).await {
            Ok(issued) => {
                let now = now_secs();
                let mut meta = conn.clone();
                meta.refreshed = now;
                meta.expires_at = issued.expires_in.map_or(0, |s| now.saturating_add(s));
                if let Some(granted) = &issued.scope {
                    let mut g = granted.clone();
                    g.sort();
                    g.dedup();
                    meta.scopes = g;
                }
                let tokens = Tokens {
                    access: issued.access,
                    // A provider that does not rotate keeps the old one.
                    refresh: issued.refresh.or_else(|| Some(refresh_token.to_owned())),
                };
                let vault = self.vault.clone();
                let (m, t, expected) = (meta.clone(), tokens.clone(), conn.version);
                let written =
                    tokio::task::spawn_blocking(move || vault.store(m, &t, Some(expected)))
                        .await
                        .map_err(|e| Failed::Refused(e.to_string()))??;
                if !written {
                    // Revoked (or consented again) meanwhile: what is kept
                    // now decides.
                    return Box::pin(self.token(ask)).await;
                }
                meta.version = conn.version + 1;
                self.record(
                    "vault.refresh",
                    true,
                    &format!("{label} (connection {})", conn.id),
                );
                Ok(ready(&meta, tokens))
            }
            Err(oauth::Refused::Grant(code)) => {
                self.remove_quietly(
                    &conn.key,
                    &format!("the provider refused a refresh ({code})"),
                );
                self.record(
                    "vault.refresh",
                    false,
                    &format!("{label}: the provider refused ({code}); consent is asked again"),
                );
                self.link(ask)
            }
            Err(oauth::Refused::Unreachable(why)) => {
                self.record("vault.refresh", false, &format!("{label}: {why}"));
                Err(Failed::Provider(provider.name.clone(), why))
            }
        }
    }

    fn remove_quietly(&self, key: &ConnKey, why: &str) {
        let f = Filter {
            tenant: Some(key.tenant.clone()),
            principal: Some(key.principal.clone()),
            server: Some(key.server.clone()),
        };
        if let Err(e) = self.vault.remove(&f) {
            tracing::warn!("removing a connection ({why}): {e}");
        }
    }

    /// Writes a step of a connection's life to the change record.
    pub fn record(&self, action: &str, ok: bool, detail: &str) {
        self.store.record("vault", action, None, ok, detail);
    }

    /// Keeps what the provider issued for `link`, consented by `person`.
    pub async fn connected(
        &self,
        link: &Link,
        person: &str,
        issued: oauth::Issued,
    ) -> Result<SealedConn, Failed> {
        let now = now_secs();
        let key = conn_key(&link.tenant, &link.principal, &link.server);
        let mut scopes = issued.scope.clone().unwrap_or_else(|| link.scopes.clone());
        scopes.sort();
        scopes.dedup();
        if let Some(missing) = link.scopes.iter().find(|s| !scopes.contains(s)) {
            return Err(Failed::Refused(format!(
                "the provider granted fewer scopes than the server needs (no `{missing}`)"
            )));
        }
        let tokens = Tokens {
            access: issued.access,
            refresh: issued.refresh,
        };
        // A new consent replaces what was kept, whatever its version.
        for _ in 0..5 {
            let vault = self.vault.clone();
            let k = key.clone();
            let kept =
                tokio::task::spawn_blocking(move || vault.connection(&k).map(|c| c.map(|c| c.0)))
                    .await
                    .map_err(|e| Failed::Refused(e.to_string()))?;
            let expected = match kept {
                Ok(c) => c.map(|c| c.version),
                // What is kept no longer opens: replaced all the same.
                Err(VaultError::Sealed(_)) => {
                    self.remove_quietly(&key, "replaced by a new consent");
                    None
                }
                Err(e) => return Err(e.into()),
            };
            let meta = SealedConn {
                key: key.clone(),
                id: random(),
                provider: link.provider.clone(),
                scopes: scopes.clone(),
                person: person.to_owned(),
                created: now,
                refreshed: now,
                expires_at: issued.expires_in.map_or(0, |s| now.saturating_add(s)),
                dek_version: 0,
                tokens: Vec::new(),
                version: 0,
                refreshing: None,
            };
            let vault = self.vault.clone();
            let (m, t) = (meta.clone(), tokens.clone());
            if tokio::task::spawn_blocking(move || vault.store(m, &t, expected))
                .await
                .map_err(|e| Failed::Refused(e.to_string()))??
            {
                return Ok(meta);
            }
        }
        Err(Failed::Refused(
            "the connection kept changing: try again".into(),
        ))
    }

    /// Removes the connections `filter` names and revokes their tokens at
    /// the provider where it can; those removed.
    pub async fn revoke(&self, filter: Filter) -> Result<Vec<SealedConn>, Failed> {
        let vault = self.vault.clone();
        let removed = tokio::task::spawn_blocking(move || vault.remove(&filter))
            .await
            .map_err(|e| Failed::Refused(e.to_string()))??;
        let mut out = Vec::new();
        for (conn, tokens) in removed {
            if let (Some(p), Some(t)) = (self.config.providers.get(&conn.provider), tokens) {
                // The refresh token first: revoking it ends the grant.
                let done = match &t.refresh {
                    Some(r) => oauth::revoke(&self.http, p, r, "refresh_token").await,
                    None => false,
                };
                if !done {
                    oauth::revoke(&self.http, p, &t.access, "access_token").await;
                }
            }
            out.push(conn);
        }
        Ok(out)
    }
}

fn ready(conn: &SealedConn, tokens: Tokens) -> Answer {
    Answer::Ready {
        token: tokens.access,
        expires_at: conn.expires_at,
        connection: conn.id.clone(),
    }
}

#[cfg(test)]
mod provider_tests;
