//! Outbound identity fetched per call: the upstream token an OAuth
//! authorization server issues for this call, or the caller's own token
//! where a server opted in. Static credentials and identity assertions need
//! no I/O and are set in `upstream::Rewrite`.
//!
//! - **Token exchange** (RFC 8693): the caller's validated OAuth token is
//!   exchanged at the server's `oauth.token_endpoint` for one scoped to the
//!   server (`audience`, sent as RFC 8693 `audience` and RFC 8707
//!   `resource`). Cached until shortly before it expires (never past the
//!   caller's own token), keyed by principal, caller token, server,
//!   audience and scope: one principal never receives another's token.
//!   A caller without an OAuth token (an API key, mTLS) is refused.
//! - **Client credentials**: the gateway's own service token, cached and
//!   refreshed the same way (shared by every caller of that server: it names
//!   the gateway, not a user).
//! - **Caller token** (opt-in): the caller's token goes on unchanged, only
//!   if its `aud` names the server's configured audience. Since that
//!   server then holds a token the gateway also accepts, a token naming a
//!   server's `caller_token` audience is accepted only on that server's
//!   routes (`check_reuse`): the server cannot replay it against another.
//!
//! A failure is the caller's clear JSON-RPC error and no call: 403 when the
//! caller's token cannot be used (or the authorization server refuses the
//! exchange), 502 when the authorization server cannot be reached.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use sha2::{Digest, Sha256};
use warden_config::model::{CallerToken, OAuthGrant, OutboundOAuth, Server};
use warden_filters::{codes, JsonRpcError, Principal, Refusal};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Upstream tokens by call identity, across bundle swaps.
pub struct TokenCache {
    cache: moka::sync::Cache<[u8; 32], Arc<Cached>>,
    /// One fetch per key at a time: calls that miss together wait for the
    /// first one's token instead of each asking the token endpoint.
    inflight: dashmap::DashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>,
    /// No proxy from the environment, no redirects (a redirect would carry
    /// the caller's token and the client secret elsewhere).
    http: Option<reqwest::Client>,
}

/// The most of a token endpoint's answer that is read.
const MAX_ANSWER: usize = 64 * 1024;
/// The longest a fetched token is cached, whatever it says.
const MAX_LIFE: Duration = Duration::from_secs(24 * 3600);

struct Cached {
    /// The header value (`Bearer <token>` for `authorization`).
    value: String,
    until: Instant,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            inflight: dashmap::DashMap::new(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .map_err(|e| tracing::error!("no HTTP client for token endpoints: {e}"))
                .ok(),
        }
    }
}

/// Why no token (or credential): the caller's answer, 403 when the
/// caller's own credential cannot be used, else the upstream unavailable.
pub(crate) fn refuse(status: u16, reason: &'static str, message: String) -> Refusal {
    let code = if status == 403 {
        codes::FORBIDDEN
    } else {
        codes::UPSTREAM_UNAVAILABLE
    };
    Refusal::new(
        status,
        reason,
        JsonRpcError::new(code, message).with_data(serde_json::json!({"reason": reason})),
    )
}

/// The claims of a JWT the gateway has already verified (admission), read
/// without verifying again.
fn claims_of(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The caller's OAuth token, when it authenticated with one.
fn caller_token<'a>(
    principal: &Principal,
    req: &'a pingora::http::RequestHeader,
) -> Option<&'a str> {
    if principal.auth != warden_filters::engines::identity::AuthMethod::Jwt {
        return None;
    }
    let h = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    warden_filters::engines::identity::bearer(h)
}

fn header_value(header: &str, token: &str) -> String {
    if header == "authorization" {
        format!("Bearer {token}")
    } else {
        token.to_owned()
    }
}

/// A token that names some server's `caller_token` audience is accepted
/// only on that server's routes (see the module docs): `routed` is the
/// server of this request, one of `servers` (names are unique).
pub fn check_reuse(
    principal: &Principal,
    req: &pingora::http::RequestHeader,
    servers: &[Server],
    routed: &Server,
) -> Result<(), Refusal> {
    if !servers.iter().any(|s| s.caller_token.is_some()) {
        return Ok(());
    }
    let Some(token) = caller_token(principal, req) else {
        return Ok(());
    };
    let aud = claims_of(token)
        .map(|c| c["aud"].clone())
        .unwrap_or_default();
    let names = |a: &str| match &aud {
        serde_json::Value::String(x) => x == a,
        serde_json::Value::Array(xs) => xs.iter().any(|x| x.as_str() == Some(a)),
        _ => false,
    };
    for s in servers {
        if let Some(c) = &s.caller_token {
            if s.name != routed.name && names(&c.audience) {
                return Err(refuse(
                    403,
                    "caller_token_elsewhere",
                    format!(
                        "This token was also issued for `{}`, which receives it: it is accepted only on that server's routes",
                        s.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What of an authorization server's `error` may be repeated: RFC 6749's
/// error code characters, at most 64.
fn error_code(v: &serde_json::Value) -> String {
    v["error"]
        .as_str()
        .filter(|e| {
            e.len() <= 64
                && e.bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
        })
        .unwrap_or("")
        .to_owned()
}

impl TokenCache {
    /// The upstream identity (header, value) for a server that fetches it
    /// per call; none for the others.
    pub async fn prepare(
        &self,
        principal: &Principal,
        server: &Server,
        req: &pingora::http::RequestHeader,
    ) -> Result<Option<(String, String)>, Refusal> {
        if let Some(c) = &server.caller_token {
            Ok(Some((c.header.clone(), pass_through(principal, req, c)?)))
        } else if let Some(o) = &server.oauth {
            let v = self.fetch(principal, server, o, req).await;
            let m = crate::observability::metrics::metrics();
            let grant = match o.grant {
                OAuthGrant::TokenExchange => "token_exchange",
                OAuthGrant::ClientCredentials => "client_credentials",
            };
            let result = match &v {
                Ok((_, true)) => "cached",
                Ok((_, false)) => "fetched",
                Err(_) => "failed",
            };
            m.outbound_tokens
                .with_label_values(&[&server.name, grant, result])
                .inc();
            Ok(Some((o.header.clone(), v?.0)))
        } else {
            Ok(None)
        }
    }

    /// The header value and whether it came from the cache.
    async fn fetch(
        &self,
        principal: &Principal,
        server: &Server,
        o: &OutboundOAuth,
        req: &pingora::http::RequestHeader,
    ) -> Result<(String, bool), Refusal> {
        let subject = match o.grant {
            OAuthGrant::TokenExchange => Some(caller_token(principal, req).ok_or_else(|| {
                refuse(
                    403,
                    "token_exchange_needs_caller_token",
                    format!(
                        "`{}` acts for the user behind the agent: call it with an OAuth access token (Authorization: Bearer), not an API key or certificate",
                        server.name
                    ),
                )
            })?),
            OAuthGrant::ClientCredentials => None,
        };
        // Length-prefixed parts: no two identities spell the same key.
        let mut h = Sha256::new();
        let owner = principal.owner_key();
        // The secret too: rotating a leaked one drops what it obtained.
        let secret = hex::encode(Sha256::digest(o.client_secret.expose().as_bytes()));
        let parts: [&str; 9] = [
            &server.name,
            &o.token_endpoint,
            &o.client_id,
            &secret,
            &o.audience,
            o.scope.as_deref().unwrap_or(""),
            &o.header,
            if subject.is_some() { &owner } else { "" },
            subject.unwrap_or(""),
        ];
        for part in parts {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let key: [u8; 32] = h.finalize().into();
        if let Some(hit) = self.cached(&key) {
            return Ok((hit, true));
        }
        let gate = self
            .inflight
            .entry(key)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let _turn = gate.lock().await;
        // Another call may have fetched it while this one waited.
        let fetched = match self.cached(&key) {
            Some(hit) => Ok((hit, true)),
            None => self.fetch_uncached(server, o, subject, key).await,
        };
        drop(_turn);
        self.inflight
            .remove_if(&key, |_, g| Arc::strong_count(g) <= 2);
        fetched
    }

    /// The cached header value for `key`, if still fresh.
    fn cached(&self, key: &[u8; 32]) -> Option<String> {
        let c = self.cache.get(key)?;
        if c.until > Instant::now() {
            return Some(c.value.clone());
        }
        self.cache.invalidate(key);
        None
    }

    /// Asks the token endpoint (see the module docs).
    async fn fetch_uncached(
        &self,
        server: &Server,
        o: &OutboundOAuth,
        subject: Option<&str>,
        key: [u8; 32],
    ) -> Result<(String, bool), Refusal> {
        let now = Instant::now();
        let mut form: Vec<(&str, &str)> = match subject {
            Some(t) => vec![
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", t),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("requested_token_type", ACCESS_TOKEN_TYPE),
                ("audience", &o.audience),
                ("resource", &o.audience),
            ],
            None => vec![
                ("grant_type", "client_credentials"),
                ("resource", &o.audience),
            ],
        };
        if let Some(s) = &o.scope {
            form.push(("scope", s));
        }
        let Some(http) = &self.http else {
            return Err(refuse(
                502,
                "token_endpoint_unavailable",
                format!(
                    "The authorization server for `{}` cannot be reached; the call was not made",
                    server.name
                ),
            ));
        };
        let resp = http
            .post(&o.token_endpoint)
            .basic_auth(
                form_encode(&o.client_id),
                Some(form_encode(o.client_secret.expose())),
            )
            .header("accept", "application/json")
            .form(&form)
            .timeout(o.timeout)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(server = %server.name, "token endpoint unreachable: {e}");
                refuse(
                    502,
                    "token_endpoint_unavailable",
                    format!(
                        "The authorization server for `{}` cannot be reached; the call was not made",
                        server.name
                    ),
                )
            })?;
        let status = resp.status();
        let body = read_capped(resp).await;
        if !status.is_success() {
            let error = error_code(&body);
            tracing::warn!(server = %server.name, %status, error = %error, "token endpoint refused");
            return Err(if status.is_client_error() && subject.is_some() {
                refuse(
                    403,
                    "token_exchange_refused",
                    format!(
                        "The authorization server refused a token for `{}` on this caller's behalf ({}); the call was not made",
                        server.name,
                        if error.is_empty() { status.as_str() } else { &error }
                    ),
                )
            } else {
                refuse(
                    502,
                    "token_endpoint_refused",
                    format!(
                        "The authorization server did not issue a token for `{}` ({status}); the call was not made",
                        server.name
                    ),
                )
            });
        }
        let token = body["access_token"].as_str().unwrap_or("");
        let bearer = body["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"));
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) || !bearer {
            return Err(refuse(
                502,
                "token_endpoint_malformed",
                format!(
                    "The authorization server's answer for `{}` holds no usable bearer token; the call was not made",
                    server.name
                ),
            ));
        }
        let value = header_value(&o.header, token);
        // Cached until shortly before it expires, and never past the
        // caller's own token.
        let mut life = body["expires_in"]
            .as_u64()
            .map_or(Duration::ZERO, Duration::from_secs)
            .min(MAX_LIFE);
        if let Some(exp) = subject
            .and_then(claims_of)
            .and_then(|c| c["exp"].as_f64())
            .filter(|e| e.is_finite() && *e >= 0.0)
        {
            let left = Duration::from_secs_f64(exp.min(1e12))
                .checked_sub(
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default(),
                )
                .unwrap_or_default();
            life = life.min(left);
        }
        let skew = (life / 5).min(Duration::from_secs(30));
        if let Some(until) = life
            .checked_sub(skew)
            .filter(|d| *d > Duration::from_secs(1))
            .and_then(|d| now.checked_add(d))
        {
            self.cache.insert(
                key,
                Arc::new(Cached {
                    value: value.clone(),
                    until,
                }),
            );
        }
        Ok((value, false))
    }
}

/// The token endpoint's JSON answer, read up to `MAX_ANSWER` bytes
/// (`Null` when longer or not JSON).
async fn read_capped(mut resp: reqwest::Response) -> serde_json::Value {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        if buf.len() + chunk.len() > MAX_ANSWER {
            return serde_json::Value::Null;
        }
        buf.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&buf).unwrap_or_default()
}

/// RFC 6749 §2.3.1: client id and secret are form-encoded before Basic.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The caller's own token, for a server that opted in, only when issued for it.
fn pass_through(
    principal: &Principal,
    req: &pingora::http::RequestHeader,
    c: &CallerToken,
) -> Result<String, Refusal> {
    let token = caller_token(principal, req).ok_or_else(|| {
        refuse(
            403,
            "caller_token_missing",
            "This server takes the caller's own OAuth token: call it with one (Authorization: Bearer)".into(),
        )
    })?;
    let aud = claims_of(token)
        .map(|c| c["aud"].clone())
        .unwrap_or_default();
    let fits = match &aud {
        serde_json::Value::String(a) => *a == c.audience,
        serde_json::Value::Array(a) => a.iter().any(|x| x.as_str() == Some(c.audience.as_str())),
        _ => false,
    };
    if !fits {
        return Err(refuse(
            403,
            "caller_token_audience",
            format!(
                "The caller's token was not issued for this server (its audience does not name `{}`); it is never passed on",
                c.audience
            ),
        ));
    }
    Ok(header_value(&c.header, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_credentials_are_form_encoded_for_basic() {
        assert_eq!(form_encode("gw:1 a/b"), "gw%3A1+a%2Fb");
        assert_eq!(form_encode("plain-id_1.x"), "plain-id_1.x");
    }

    #[test]
    fn claims_are_read_from_the_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"aud":["a","b"],"exp":5}"#);
        let c = claims_of(&format!("h.{payload}.s")).expect("claims");
        assert_eq!(c["exp"], 5);
        assert!(claims_of("not-a-jwt").is_none());
    }
}
