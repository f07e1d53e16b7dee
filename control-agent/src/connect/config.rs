//! The connections file (`serve --connections FILE`): the providers at
//! which people connect their own accounts, and how long what the flow
//! hands out lives. A provider's endpoints and client secret live here,
//! with the agent, never in a bundle (bundles go to every gateway and
//! mirror); a bundle's server names the provider and the scopes it needs.
//!
//! ```yaml
//! providers:
//!   github:
//!     authorization_endpoint: https://github.com/login/oauth/authorize
//!     token_endpoint: https://github.com/login/oauth/access_token
//!     revocation_endpoint: https://example.com/oauth/revoke   # optional (RFC 7009)
//!     client_id: Iv1.0123456789
//!     client_secret_env: GITHUB_CLIENT_SECRET                  # or client_secret_file
//!     redirect_url: https://warden.example.com/console/connect/callback
//!     resource: https://api.github.com                         # optional (RFC 8707)
//!     timeout: 5s
//! refresh_before: 60s     # a token closer than this to its end is refreshed first
//! link_lifetime: 10m      # a consent link, and a consent under way, end after this
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::oidc::config::secure_url;

/// The connections file, checked.
#[derive(Debug, Clone)]
pub struct Connections {
    pub providers: BTreeMap<String, Provider>,
    pub refresh_before: Duration,
    pub link_lifetime: Duration,
}

/// One provider people connect their accounts at.
#[derive(Clone)]
pub struct Provider {
    pub name: String,
    pub authorization_endpoint: url::Url,
    pub token_endpoint: url::Url,
    pub revocation_endpoint: Option<url::Url>,
    pub client_id: String,
    /// `None`: a public client (PKCE alone).
    pub client_secret: Option<String>,
    pub redirect_url: url::Url,
    pub resource: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("token_endpoint", &self.token_endpoint.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Connections {
    /// No provider (the vault keeps static secrets only).
    pub fn none() -> Connections {
        Connections {
            providers: BTreeMap::new(),
            refresh_before: Duration::from_secs(60),
            link_lifetime: Duration::from_secs(600),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    refresh_before: Option<String>,
    #[serde(default)]
    link_lifetime: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    client_id: String,
    #[serde(default)]
    client_secret_env: Option<String>,
    #[serde(default)]
    client_secret_file: Option<std::path::PathBuf>,
    redirect_url: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

fn duration(what: &str, v: Option<&str>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| format!("{what}: `{s}`: {e}")),
    }
}

/// Reads and checks the connections file at `path`.
pub fn read(path: &Path) -> anyhow::Result<Connections> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    parse(
        &text,
        |var| std::env::var(var).ok(),
        |p| std::fs::read_to_string(p).ok(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Checks the file's `text`; `env` and `file` read the client secrets.
pub fn parse(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
    file: impl Fn(&Path) -> Option<String>,
) -> Result<Connections, String> {
    let raw: Raw = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    if raw.providers.is_empty() {
        return Err("providers: name at least one".into());
    }
    let mut providers = BTreeMap::new();
    for (name, p) in raw.providers {
        if !warden_config::access::vault_name(&name) {
            return Err(format!(
                "providers: `{}` is not a provider name (1-128 of A-Z a-z 0-9 . _ -, as bundles name it)",
                name.escape_debug()
            ));
        }
        let at = |what: &str| format!("providers.{name}.{what}");
        let client_secret = match (&p.client_secret_env, &p.client_secret_file) {
            (Some(v), None) => Some(env(v).ok_or_else(|| {
                format!(
                    "{}: environment variable `{v}` is not set",
                    at("client_secret_env")
                )
            })?),
            (None, Some(f)) => Some(
                file(f)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                    .ok_or_else(|| {
                        format!(
                            "{}: cannot read `{}`",
                            at("client_secret_file"),
                            f.display()
                        )
                    })?,
            ),
            (None, None) => None,
            _ => {
                return Err(format!(
                    "providers.{name}: set at most one of client_secret_env and client_secret_file"
                ))
            }
        };
        if client_secret
            .as_deref()
            .is_some_and(|s| s.is_empty() || s.chars().any(char::is_control))
        {
            return Err(format!(
                "providers.{name}: the client secret is empty or holds control characters"
            ));
        }
        if p.client_id.is_empty() || p.client_id.chars().any(char::is_control) {
            return Err(format!("{}: must not be empty", at("client_id")));
        }
        let timeout = duration(&at("timeout"), p.timeout.as_deref(), Duration::from_secs(5))?;
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(format!("{}: between 1ms and 60s", at("timeout")));
        }
        let redirect_url = secure_url(&at("redirect_url"), &p.redirect_url)?;
        if redirect_url.path() != "/console/connect/callback" {
            return Err(format!(
                "{}: the agent answers the provider at /console/connect/callback",
                at("redirect_url")
            ));
        }
        providers.insert(
            name.clone(),
            Provider {
                name: name.clone(),
                authorization_endpoint: secure_url(
                    &at("authorization_endpoint"),
                    &p.authorization_endpoint,
                )?,
                token_endpoint: secure_url(&at("token_endpoint"), &p.token_endpoint)?,
                revocation_endpoint: p
                    .revocation_endpoint
                    .as_deref()
                    .map(|u| secure_url(&at("revocation_endpoint"), u))
                    .transpose()?,
                client_id: p.client_id,
                client_secret,
                redirect_url,
                resource: p.resource.filter(|r| !r.is_empty()),
                timeout,
            },
        );
    }
    let refresh_before = duration(
        "refresh_before",
        raw.refresh_before.as_deref(),
        Duration::from_secs(60),
    )?;
    let link_lifetime = duration(
        "link_lifetime",
        raw.link_lifetime.as_deref(),
        Duration::from_secs(600),
    )?;
    if link_lifetime < Duration::from_secs(30) || link_lifetime > Duration::from_secs(3600) {
        return Err("link_lifetime: between 30s and 1h".into());
    }
    if refresh_before > Duration::from_secs(3600) {
        return Err("refresh_before: at most 1h".into());
    }
    Ok(Connections {
        providers,
        refresh_before,
        link_lifetime,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const OK: &str = "providers:\n  saas:\n    authorization_endpoint: http://127.0.0.1:9/auth\n    token_endpoint: http://127.0.0.1:9/token\n    client_id: warden\n    client_secret_env: S\n    redirect_url: http://127.0.0.1:7/console/connect/callback\n";

    fn env(v: &str) -> Option<String> {
        (v == "S").then(|| "shh".to_owned())
    }

    #[test]
    fn a_provider_is_read_with_its_secret_and_defaults() {
        let c = parse(OK, env, |_| None).unwrap();
        let p = &c.providers["saas"];
        assert_eq!(p.client_secret.as_deref(), Some("shh"));
        assert_eq!(c.refresh_before, Duration::from_secs(60));
        assert!(!format!("{p:?}").contains("shh"));
    }

    #[test]
    fn what_the_file_must_not_hold_is_refused_by_name() {
        for (bad, says) in [
            (
                OK.replace("http://127.0.0.1:9/token", "http://example.com/token"),
                "token_endpoint",
            ),
            (
                OK.replace("/console/connect/callback", "/elsewhere"),
                "redirect_url",
            ),
            (
                OK.replace("client_secret_env: S", "client_secret_env: NOPE"),
                "NOPE",
            ),
            (OK.replace("  saas:", "  \"sa as\":"), "provider name"),
            (format!("{OK}link_lifetime: 2h\n"), "link_lifetime"),
            (
                OK.replace("client_id: warden", "client_id: warden\n    extra: 1"),
                "extra",
            ),
        ] {
            let e = parse(&bad, env, |_| None).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
