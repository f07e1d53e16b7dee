//! Talking to the provider: its discovery document (read when first
//! needed and every hour; its `issuer` must be the configured one), its
//! keys (read again when a token names a key the agent does not hold, at
//! most every [`JWKS_MIN_GAP`]), the code exchange at its token endpoint
//! and its userinfo endpoint. Every answer is bounded ([`MAX_ANSWER`]) and
//! every request times out ([`TIMEOUT`]); a provider that does not answer
//! is a sign-in refused with that reason, never a session.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

use super::config::OidcConfig;

/// The longest the agent waits for the provider.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The most the agent reads of one answer.
pub const MAX_ANSWER: usize = 256 * 1024;
/// The discovery document is read again after this.
pub const METADATA_TTL: Duration = Duration::from_secs(3600);
/// The keys are read again at most this often for an unknown key id.
pub const JWKS_MIN_GAP: Duration = Duration::from_secs(10);

/// What discovery says (the parts the agent uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// What the token endpoint answers a code.
#[derive(Debug, Deserialize)]
pub struct Tokens {
    pub id_token: String,
    #[serde(default)]
    pub access_token: Option<String>,
}

/// The provider, as the agent knows it.
pub struct Provider {
    pub config: OidcConfig,
    http: reqwest::Client,
    metadata: Mutex<Option<(Metadata, Instant)>>,
    keys: Mutex<Option<(JwkSet, Instant)>>,
}

/// Why the provider could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("the identity provider does not answer: {0}")]
    Down(String),
    #[error("the identity provider's answer is not usable: {0}")]
    Bad(String),
}

impl Provider {
    pub fn new(config: OidcConfig) -> anyhow::Result<Provider> {
        // No connection kept between requests: sign-ins are rare, and a
        // kept connection the provider closed when its keep-alive ended
        // (Node's after 5 s) would fail the one request that reuses it at
        // that moment, a code exchange among them (a code is single use).
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Provider {
            config,
            http,
            metadata: Mutex::new(None),
            keys: Mutex::new(None),
        })
    }

    async fn read(&self, req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), Unreachable> {
        let mut resp = req
            .send()
            .await
            .map_err(|e| Unreachable::Down(e.to_string()))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Unreachable::Down(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(Unreachable::Bad(format!(
                    "an answer longer than {MAX_ANSWER} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, Unreachable> {
        let (status, body) = self.read(self.http.get(url)).await?;
        if status != 200 {
            return Err(Unreachable::Bad(format!("{url} answered {status}")));
        }
        serde_json::from_slice(&body).map_err(|e| Unreachable::Bad(format!("{url}: {e}")))
    }

    /// The discovery document, read when missing or older than
    /// [`METADATA_TTL`].
    pub async fn metadata(&self) -> Result<Metadata, Unreachable> {
        if let Some((m, at)) = self.lock_metadata().as_ref() {
            if at.elapsed() < METADATA_TTL {
                return Ok(m.clone());
            }
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let m: Metadata = self.get_json(&url).await?;
        // OpenID Connect Discovery 4.3: the issuer it names is the one asked.
        if m.issuer != self.config.issuer {
            return Err(Unreachable::Bad(format!(
                "discovery names issuer `{}`, not the configured `{}`",
                m.issuer, self.config.issuer
            )));
        }
        for (what, u) in [
            ("authorization_endpoint", Some(&m.authorization_endpoint)),
            ("token_endpoint", Some(&m.token_endpoint)),
            ("jwks_uri", Some(&m.jwks_uri)),
            ("userinfo_endpoint", m.userinfo_endpoint.as_ref()),
            ("end_session_endpoint", m.end_session_endpoint.as_ref()),
            (
                "device_authorization_endpoint",
                m.device_authorization_endpoint.as_ref(),
            ),
        ] {
            if let Some(u) = u {
                super::config::secure_url(what, u).map_err(Unreachable::Bad)?;
            }
        }
        if m.code_challenge_methods_supported
            .as_ref()
            .is_some_and(|v| !v.iter().any(|x| x == "S256"))
        {
            return Err(Unreachable::Bad(
                "the provider does not support PKCE with S256".into(),
            ));
        }
        *self.lock_metadata() = Some((m.clone(), Instant::now()));
        Ok(m)
    }

    fn lock_metadata(&self) -> std::sync::MutexGuard<'_, Option<(Metadata, Instant)>> {
        self.metadata.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, Option<(JwkSet, Instant)>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The provider's keys: those held, or read again when `kid` is none
    /// of them (at most every [`JWKS_MIN_GAP`]).
    pub async fn keys(&self, kid: Option<&str>) -> Result<JwkSet, Unreachable> {
        let held = self.lock_keys().clone();
        let knows = |set: &JwkSet| match kid {
            Some(k) => set.find(k).is_some(),
            None => !set.keys.is_empty(),
        };
        if let Some((set, at)) = &held {
            if knows(set) || at.elapsed() < JWKS_MIN_GAP {
                return Ok(set.clone());
            }
        }
        let m = self.metadata().await?;
        // Keys of a kind the agent does not read (an encryption key of
        // another curve) are skipped, not the set.
        #[derive(Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw = self.get_json(&m.jwks_uri).await?;
        let set = JwkSet {
            keys: raw
                .keys
                .into_iter()
                .filter_map(|k| serde_json::from_value(k).ok())
                .collect(),
        };
        *self.lock_keys() = Some((set.clone(), Instant::now()));
        Ok(set)
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange(&self, code: &str, verifier: &str) -> Result<Tokens, Unreachable> {
        let m = self.metadata().await?;
        let redirect = self.config.redirect_url.as_str();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ];
        let mut req = self.http.post(&m.token_endpoint);
        match &self.config.client_secret {
            // RFC 6749 2.3.1: both form-encoded before the basic scheme.
            Some(secret) => {
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                req = req.basic_auth(enc(&self.config.client_id), Some(enc(secret)));
            }
            None => form.push(("client_id", &self.config.client_id)),
        }
        let (status, body) = self
            .read(req.header("accept", "application/json").form(&form))
            .await?;
        if status != 200 {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            return Err(Unreachable::Bad(format!(
                "the token endpoint refused the code ({status} {}{})",
                v["error"].as_str().unwrap_or(""),
                v["error_description"]
                    .as_str()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| Unreachable::Bad(format!("the token endpoint's answer: {e}")))
    }

    /// The claims the userinfo endpoint gives for `access_token` (none
    /// when the provider has no such endpoint).
    pub async fn userinfo(
        &self,
        access_token: &str,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, Unreachable> {
        let m = self.metadata().await?;
        let Some(url) = m.userinfo_endpoint else {
            return Ok(None);
        };
        let (status, body) = self
            .read(
                self.http
                    .get(&url)
                    .bearer_auth(access_token)
                    .header("accept", "application/json"),
            )
            .await?;
        if status != 200 {
            return Err(Unreachable::Bad(format!("userinfo answered {status}")));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Unreachable::Bad(format!("userinfo: {e} (a signed userinfo is not read)")))
    }
}
