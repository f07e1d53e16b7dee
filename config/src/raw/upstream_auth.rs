//! How the gateway authenticates to upstreams and seals sessions:
//! `credentials:`, `identity_assertion:`, `oauth:`, `caller_token:` (on a
//! server), `assertions:`, `sessions:`, and secret references.

use serde::Deserialize;

/// Sealed session ids: the gateway hands clients an encrypted, authenticated
/// token holding the upstream's session id, the upstream replica and the
/// principal the session is bound to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Environment variable holding the fleet's sealing secret (≥ 32 characters).
    #[serde(default)]
    pub seal_key_env: Option<String>,
    /// File holding it (relative paths resolve against the bundle root).
    #[serde(default)]
    pub seal_key_file: Option<String>,
    /// How long a sealed session id opens after the `initialize` that
    /// issued it (24h by default; `none`: no limit); after that the client
    /// is told the session is unknown (404) and must open a new one.
    #[serde(default)]
    pub max_age: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundOAuthConfig {
    /// `token_exchange` or `client_credentials`.
    pub grant: String,
    pub token_endpoint: String,
    pub client_id: String,
    /// The client secret, as `{env: VAR}` or `{file: path}`.
    pub client_secret: SecretRefConfig,
    /// This server's identifier at the authorization server (sent as
    /// `resource`, RFC 8707, and `audience`, RFC 8693).
    pub audience: String,
    #[serde(default)]
    pub scope: Option<String>,
    /// Header that carries the token (default `authorization`, as `Bearer`).
    #[serde(default)]
    pub header: Option<String>,
    /// How long the gateway waits for the token endpoint (default 5s).
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRefConfig {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerTokenConfig {
    /// The caller's token goes on only if its `aud` names this.
    pub audience: String,
    #[serde(default)]
    pub header: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityAssertionConfig {
    /// The `aud` claim: the upstream's own identifier (its resource URL).
    pub audience: String,
    /// Lifetime of each assertion (default 60s, at most 5m).
    #[serde(default)]
    pub ttl: Option<String>,
    /// Header that carries it (default `authorization`, as `Bearer <jwt>`).
    #[serde(default)]
    pub header: Option<String>,
}

/// How the gateway signs identity assertions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionsConfig {
    /// The `iss` claim (default: the origin of `identity.resource`, else `urn:warden`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// How often the signing key changes (default 1h).
    #[serde(default)]
    pub rotate: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// Header to set (default `authorization`).
    #[serde(default)]
    pub header: Option<String>,
    /// Text put before the secret (default `Bearer ` for `authorization`, empty otherwise).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the secret (trailing newline trimmed); relative paths resolve against the bundle root.
    #[serde(default)]
    pub file: Option<String>,
    /// A secret kept in the control agent's vault, by name: fetched by
    /// the gateway when used (briefly cached), so a rotation in the vault
    /// needs no new bundle and no restart.
    #[serde(default)]
    pub vault: Option<String>,
    /// Each principal's own credential at a provider, from their consent
    /// (kept in the control agent's vault).
    #[serde(default)]
    pub per_user: Option<PerUserConfig>,
}

/// `credentials: {per_user: {provider: github, scopes: [repo]}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerUserConfig {
    /// The provider, as the control agent's `--connections` file names it
    /// (its endpoints and client secret live there, never in a bundle).
    pub provider: String,
    /// The scopes the server needs; a connection granted fewer asks for
    /// consent again.
    #[serde(default)]
    pub scopes: Vec<String>,
}
