//! The gateway as an OAuth protected resource (MCP authorization spec):
//! authenticating each request, answering 401/403 with the right
//! `WWW-Authenticate`, and serving the protected-resource metadata (RFC 9728).

use pingora::http::ResponseHeader;
use pingora_core::protocols::http::ServerSession as Session;
use warden_config::access::Identity;
use warden_filters::engines::identity::{
    AuthError, Authenticator, ClientCert, Presented, Principal,
};
use warden_filters::{codes, JsonRpcError, Refusal};

pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// `scheme://authority` of the configured resource URI.
fn origin(resource: &str) -> &str {
    let after_scheme = resource.find("://").map_or(0, |i| i + 3);
    match resource[after_scheme..].find('/') {
        Some(i) => &resource[..after_scheme + i],
        None => resource,
    }
}

/// Where the metadata for the resource at `path` lives (RFC 9728 §3.1: the
/// well-known segment goes between the authority and the path).
pub fn metadata_url(id: &Identity, path: &str) -> String {
    let p = if path == "/" { "" } else { path };
    format!("{}{WELL_KNOWN}{p}", origin(&id.resource))
}

/// The metadata document for a request to `WELL_KNOWN + suffix`.
pub fn metadata(id: &Identity, suffix: &str) -> serde_json::Value {
    let resource = if suffix.is_empty() || suffix == "/" {
        id.resource.clone()
    } else {
        format!("{}{suffix}", origin(&id.resource))
    };
    serde_json::json!({
        "resource": resource,
        "authorization_servers": id.authorization_servers,
        // Refresh tokens are not a resource requirement (2026-07-28).
        "scopes_supported": supported(id),
        "bearer_methods_supported": ["header"],
        "resource_name": "Warden MCP gateway",
    })
}

/// Never advertised by a protected resource: refresh tokens are the
/// authorization server's business, not a resource requirement.
const OFFLINE_ACCESS: &str = "offline_access";

fn supported(id: &Identity) -> Vec<&str> {
    id.scopes_supported
        .iter()
        .map(String::as_str)
        .filter(|s| *s != OFFLINE_ACCESS)
        .collect()
}

fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

/// Which credentials this bundle accepts, in words a client author can act on.
fn accepted(id: &Identity) -> String {
    let mut ways = Vec::new();
    if !id.api_keys.is_empty() {
        ways.push(format!(
            "an API key as `{}: <key>` or `Authorization: Bearer <key>`",
            id.api_key_header
        ));
    }
    if id.jwt.is_some() {
        ways.push(
            "an OAuth access token as `Authorization: Bearer <token>` (see the resource metadata)"
                .to_owned(),
        );
    }
    if !id.mtls.is_empty() {
        ways.push("a client certificate".to_owned());
    }
    if ways.is_empty() {
        "no credential is configured for this gateway".to_owned()
    } else {
        format!("send {}", ways.join(", or "))
    }
}

/// The refusal for a failed authentication, with the spec's status and header.
pub fn refusal(id: &Identity, path: &str, e: &AuthError) -> Refusal {
    let meta = metadata_url(id, path);
    let (status, header, message) = match e {
        AuthError::Missing => {
            let mut h = format!("Bearer resource_metadata=\"{}\"", quoted(&meta));
            let scopes = supported(id);
            if !scopes.is_empty() {
                h.push_str(&format!(", scope=\"{}\"", quoted(&scopes.join(" "))));
            }
            (401, h, format!("Authentication required: {}", accepted(id)))
        }
        AuthError::Invalid(why) => (
            401,
            format!(
                "Bearer error=\"invalid_token\", error_description=\"{why}\", resource_metadata=\"{}\"",
                quoted(&meta)
            ),
            match *why {
                warden_filters::engines::identity::SUBJECT_NOT_A_NAME => format!(
                    "Invalid credentials: {why}: the token's subject holds an invisible, control or bidi character, a separator, or nothing to compare; such a name is refused"
                ),
                warden_filters::engines::identity::TENANT_NOT_A_NAME => format!(
                    "Invalid credentials: {why}: the token's tenant claim is not a string, or holds an invisible, control or bidi character, a separator, or nothing to compare; such a tenant is refused"
                ),
                _ => format!("Invalid credentials: {why}"),
            },
        ),
        AuthError::InsufficientScope(missing) => (
            403,
            format!(
                "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\"",
                quoted(&id.required_scopes.join(" ")),
                quoted(&meta)
            ),
            format!("Insufficient scope: needs {}", missing.join(" ")),
        ),
    };
    let code = if status == 401 {
        codes::UNAUTHENTICATED
    } else {
        codes::FORBIDDEN
    };
    Refusal::new(
        status,
        e.reason(),
        JsonRpcError::new(code, message).with_data(serde_json::json!({"reason": e.reason()})),
    )
    .with_header("www-authenticate", header)
}

/// Step-up authorization: a call needs OAuth scopes (`missing`) the caller's
/// token lacks. 403 with `WWW-Authenticate: Bearer error="insufficient_scope"`
/// naming, in one challenge, every scope this operation needs (the bundle's
/// required ones and the call's); the client adds them to those it holds
/// (2026-07-28 authorization, scope challenge handling).
pub fn step_up(id: Option<&Identity>, path: &str, missing: &[String]) -> Refusal {
    let mut want: Vec<&str> = Vec::new();
    for s in id
        .map(|i| i.required_scopes.as_slice())
        .unwrap_or_default()
        .iter()
        .chain(missing)
        .filter(|s| *s != OFFLINE_ACCESS)
    {
        if !want.contains(&s.as_str()) {
            want.push(s);
        }
    }
    let mut header = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\"",
        quoted(&want.join(" "))
    );
    if let Some(id) = id {
        header.push_str(&format!(
            ", resource_metadata=\"{}\"",
            quoted(&metadata_url(id, path))
        ));
    }
    Refusal::new(
        403,
        "insufficient_scope",
        JsonRpcError::new(
            codes::FORBIDDEN,
            format!(
                "Insufficient scope for this call: needs {}",
                missing.join(" ")
            ),
        )
        .with_data(serde_json::json!({"reason": "insufficient_scope", "scopes": missing})),
    )
    .with_header("www-authenticate", header)
}

/// The verified client certificate of this connection, if any.
fn client_cert(session: &Session) -> Option<ClientCert> {
    let ssl = session.digest()?.ssl_digest.as_ref()?;
    ssl.extension.get::<ClientCert>().cloned()
}

/// Decides who is calling, at `now` (the request's arrival: a credential's
/// expiry is judged then). `Ok(None)` when the bundle has no identity section.
pub fn authenticate(
    auth: &Authenticator,
    session: &Session,
    path: &str,
    now: std::time::SystemTime,
) -> Result<std::sync::Arc<Principal>, Refusal> {
    let req = session.req_header();
    let id = auth.identity();
    let header = |name: &str| -> Result<Option<&str>, Refusal> {
        let mut values = req.headers.get_all(name).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        // Two credentials in one header name is ambiguous: refuse rather than pick.
        if values.next().is_some() {
            return Err(refusal(
                id,
                path,
                &AuthError::Invalid("credential_repeated"),
            ));
        }
        first
            .to_str()
            .map(Some)
            .map_err(|_| refusal(id, path, &AuthError::Invalid("credential_not_ascii")))
    };
    let authorization = header("authorization")?;
    let api_key = header(&id.api_key_header)?;
    let cert = client_cert(session);
    let presented = if authorization.is_some() {
        "bearer"
    } else if api_key.is_some() {
        "api_key"
    } else if cert.is_some() {
        "mtls"
    } else {
        "none"
    };
    let result = auth.authenticate(
        Presented {
            authorization,
            api_key,
            client_cert: cert.as_ref(),
        },
        now,
    );
    crate::observability::metrics::metrics()
        .auth
        .with_label_values(&[
            presented,
            match &result {
                Ok(_) => "ok",
                Err(e) => e.reason(),
            },
        ])
        .inc();
    result.map_err(|e| refusal(id, path, &e))
}

/// Answers `GET /.well-known/oauth-protected-resource[/path]`.
pub async fn write_metadata(
    session: &mut Session,
    id: Option<&Identity>,
    suffix: &str,
) -> pingora::Result<u16> {
    let (status, body) = match id {
        Some(id) => (200, serde_json::to_vec(&metadata(id, suffix)).unwrap_or_default()),
        None => (
            404,
            br#"{"error":"not_found","error_description":"this gateway does not require authorization"}"#
                .to_vec(),
        ),
    };
    let mut h = ResponseHeader::build(status, Some(3))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "max-age=300")?;
    session.write_response_header(Box::new(h)).await?;
    session
        .write_response_body(bytes::Bytes::from(body), true)
        .await?;
    Ok(status)
}

/// Fetches the JWKS of the active bundle's `identity.jwt.jwks_url`: at start,
/// every `jwks_refresh`, and early (at most every 10 s) when a token names an
/// unknown key id. A failed fetch keeps the previous keys and is retried with
/// backoff; until the first success, JWTs are refused as `token_key_unknown`.
pub struct JwksRefresher {
    pub current: std::sync::Arc<crate::hub::runtime::Current>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for JwksRefresher {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use std::time::{Duration, Instant};
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the JWKS client");
                return;
            }
        };
        let mut last_ok: Option<(String, Instant)> = None;
        let mut last_try: Option<Instant> = None;
        let mut backoff = Duration::from_millis(250);
        loop {
            let rt = self.current.load();
            if let Some((url, refresh, store)) = rt.snap.auth.as_ref().and_then(|a| a.jwks_url()) {
                let fresh = last_ok
                    .as_ref()
                    .is_some_and(|(u, t)| u == url && t.elapsed() < refresh && store.is_loaded());
                let wanted = store.take_wanted()
                    && last_try.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                let due = last_try.is_none_or(|t| t.elapsed() >= backoff);
                if (!fresh && due) || wanted {
                    last_try = Some(Instant::now());
                    let res = async {
                        let r = client.get(url).send().await.map_err(|e| e.to_string())?;
                        if !r.status().is_success() {
                            return Err(format!("HTTP {}", r.status()));
                        }
                        let text = r.text().await.map_err(|e| e.to_string())?;
                        store.install(&text)
                    }
                    .await;
                    match res {
                        Ok(n) => {
                            tracing::info!(url, keys = n, "JWKS loaded");
                            last_ok = Some((url.to_owned(), Instant::now()));
                            backoff = Duration::from_millis(250);
                        }
                        Err(e) => {
                            tracing::warn!(url, error = %e, "JWKS fetch failed; keeping previous keys");
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_inserts_well_known_between_authority_and_path() {
        assert_eq!(
            origin("https://gw.example:8443/mcp"),
            "https://gw.example:8443"
        );
        assert_eq!(origin("https://gw.example"), "https://gw.example");
    }
}
