//! Operators sign in to the console through the organisation's OpenID
//! Connect provider (`serve --oidc FILE`, [`config`]): the authorization
//! code flow with PKCE (S256), `state` and `nonce`; the ID token checked
//! against the provider's keys ([`verify`]); the person's claims, read
//! from the ID token and the userinfo endpoint, make their role
//! ([`roles`]). The sign-in under way lives in a sealed cookie
//! ([`pending`]), so any agent of the fleet finishes it.
//!
//! A session of a signed-in person is read again from the provider every
//! `recheck` (`prompt=none`: no page while the provider's session lives):
//! a person removed from a group loses the role then, and one signed out
//! at the provider loses the session. A CRITICAL approval may ask for a
//! sign-in within `critical.max_age` (and one of `critical.acr`).

pub mod config;
pub mod pending;
pub mod provider;
pub mod roles;
pub mod verify;

#[cfg(test)]
mod attack_tests;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::console::user::User;
use pending::{Mode, Pending, Sealer};
use provider::{Provider, Unreachable};

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The provider and the key of the sign-ins under way.
pub struct Oidc {
    pub provider: Provider,
    sealer: Sealer,
}

/// Where a sign-in began: where to send the browser, and the cookie that
/// remembers it.
pub struct Started {
    pub location: String,
    pub set_cookie: String,
}

/// A finished sign-in.
#[derive(Debug)]
pub struct Finished {
    /// The console user the person is (`None` for [`Mode::Consent`], which
    /// asks who they are, not a role).
    pub user: Option<User>,
    /// Who the person is at the provider.
    pub person: roles::Identity,
    pub mode: Mode,
    pub next: String,
}

/// A sign-in that did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    /// Nothing ties this callback to a sign-in of this browser (no cookie,
    /// another `state`, a forged or old cookie): refused, nobody signed in.
    #[error("refused: {0}")]
    Refused(String),
    /// The provider answered with an error (`access_denied`, …).
    #[error("the identity provider said: {0}")]
    Provider(String),
    /// A refresh found the provider's session over (`login_required`).
    #[error("your sign-in at the identity provider has ended: sign in again")]
    Ended,
    /// The token or the provider's answer failed a check.
    #[error("{0}")]
    Token(#[from] verify::Refused),
    #[error("{0}")]
    Unreachable(#[from] Unreachable),
    /// Signed in, but no rule gives the person a role.
    #[error("`{0}` signed in at the identity provider, but no role rule of this agent matches their claims")]
    NoRole(String),
}

fn random() -> String {
    crate::console::session::random_token()
}

impl Oidc {
    pub fn new(config: config::OidcConfig) -> anyhow::Result<Oidc> {
        let sealer = Sealer::new(config.client_secret.as_deref());
        Ok(Oidc {
            provider: Provider::new(config)?,
            sealer,
        })
    }

    pub fn config(&self) -> &config::OidcConfig {
        &self.provider.config
    }

    /// Begins a sign-in of `mode` that returns to `next`.
    pub async fn start(&self, mode: Mode, next: &str) -> Result<Started, Unreachable> {
        let m = self.provider.metadata().await?;
        let cfg = self.config();
        let p = Pending {
            state: random(),
            nonce: random(),
            verifier: random(),
            at: now_secs(),
            next: pending::safe_next(next),
            mode,
        };
        let mut url = url::Url::parse(&m.authorization_endpoint)
            .map_err(|e| Unreachable::Bad(format!("authorization_endpoint: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &cfg.client_id)
                .append_pair("redirect_uri", cfg.redirect_url.as_str())
                .append_pair("scope", &cfg.scopes.join(" "))
                .append_pair("state", &p.state)
                .append_pair("nonce", &p.nonce)
                .append_pair("code_challenge", &pending::challenge(&p.verifier))
                .append_pair("code_challenge_method", "S256");
            match mode {
                Mode::Login | Mode::Consent => {}
                Mode::Refresh => {
                    q.append_pair("prompt", "none");
                }
                Mode::Fresh => {
                    q.append_pair("prompt", "login");
                    if let Some(c) = &cfg.critical {
                        q.append_pair("max_age", &c.max_age.as_secs().to_string());
                        if !c.acr.is_empty() {
                            q.append_pair("acr_values", &c.acr.join(" "));
                        }
                    }
                }
            }
        }
        Ok(Started {
            location: url.into(),
            set_cookie: pending::set_cookie(Some(&self.sealer.seal(&p))),
        })
    }

    /// Finishes a sign-in from the callback's query and the browser's
    /// pending cookie.
    pub async fn finish(
        &self,
        query: &BTreeMap<String, String>,
        cookie: Option<&str>,
    ) -> Result<Finished, Failed> {
        let now = now_secs();
        let p = self
            .sealer
            .open(
                cookie.ok_or_else(|| {
                    Failed::Refused("no sign-in of this browser is under way".into())
                })?,
                now,
            )
            .map_err(|e| Failed::Refused(e.into()))?;
        let state = query.get("state").map(String::as_str).unwrap_or("");
        if !crate::console::session::same_secret(state, &p.state) {
            return Err(Failed::Refused(
                "the callback's state is not this browser's sign-in".into(),
            ));
        }
        if let Some(e) = query.get("error") {
            let ended = matches!(
                e.as_str(),
                "login_required"
                    | "interaction_required"
                    | "consent_required"
                    | "account_selection_required"
            );
            return Err(if ended && p.mode == Mode::Refresh {
                Failed::Ended
            } else {
                let d = query
                    .get("error_description")
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                Failed::Provider(format!("{e}{d}").chars().take(300).collect())
            });
        }
        let code = query
            .get("code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Failed::Refused("the callback carries no code".into()))?;
        let tokens = self.provider.exchange(code, &p.verifier).await?;
        let (alg, kid) = verify::header_of(&tokens.id_token)?;
        let keys = self.provider.keys(kid.as_deref()).await?;
        let key = verify::key_for(&keys, kid.as_deref(), alg)?;
        let cfg = self.config();
        let claims = verify::verify(
            &tokens.id_token,
            &key,
            alg,
            &verify::Expect {
                issuer: &cfg.issuer,
                client_id: &cfg.client_id,
                nonce: &p.nonce,
                max_age: match p.mode {
                    Mode::Fresh => cfg.critical.as_ref().map(|c| c.max_age),
                    _ => None,
                },
                skew: cfg.clock_skew,
                now,
            },
        )?;
        if p.mode == Mode::Fresh {
            if let Some(c) = cfg.critical.as_ref().filter(|c| !c.acr.is_empty()) {
                if !claims.acr.as_ref().is_some_and(|a| c.acr.contains(a)) {
                    return Err(Failed::Refused(format!(
                        "the provider's sign-in is not of the class a CRITICAL approval asks ({})",
                        c.acr.join(", ")
                    )));
                }
            }
        }
        // The userinfo's claims join the ID token's; its subject must be
        // the token's (OpenID Connect Core 5.3.2).
        let mut all = claims.rest.clone();
        if let Some(at) = &tokens.access_token {
            if let Some(info) = self.provider.userinfo(at).await? {
                if info.get("sub").and_then(|s| s.as_str()) != Some(claims.sub.as_str()) {
                    return Err(Failed::Refused(
                        "the userinfo endpoint names another subject than the ID token".into(),
                    ));
                }
                for (k, v) in info {
                    all.insert(k, v);
                }
            }
        }
        let signed = roles::Signed {
            sub: &claims.sub,
            claims: &all,
            auth_time: claims.auth_time,
            acr: claims.acr.clone(),
            now,
        };
        let user = match p.mode {
            Mode::Consent => None,
            _ => Some(
                roles::user_of(cfg, &signed)
                    .ok_or_else(|| Failed::NoRole(format!("{}{}", roles::PREFIX, claims.sub)))?,
            ),
        };
        Ok(Finished {
            user,
            person: roles::identity_of(cfg, &signed),
            mode: p.mode,
            next: p.next,
        })
    }

    /// Where the console's logout sends a person signed in through the
    /// provider (its end-session endpoint, back to the login page), when
    /// the provider has one.
    pub async fn logout_url(&self) -> Option<String> {
        let m = self.provider.metadata().await.ok()?;
        let mut url = url::Url::parse(m.end_session_endpoint.as_deref()?).ok()?;
        let mut back = self.config().redirect_url.clone();
        back.set_path("/console/login");
        url.query_pairs_mut()
            .append_pair("client_id", &self.config().client_id)
            .append_pair("post_logout_redirect_uri", back.as_str());
        Some(url.into())
    }
}
