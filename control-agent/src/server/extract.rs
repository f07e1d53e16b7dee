//! What a handler takes from a request: who calls ([`Caller`], put there
//! by [`authenticate`]), JSON bodies within their limits, query pairs.
//! The only HTTP plumbing below the route table.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::caller::Caller;
use crate::server::Api;

/// Bytes of a JSON body at most ([`JsonBody`]).
pub const MAX_JSON: usize = 1 << 20;
/// Bytes of a small optional JSON body at most ([`JsonOrEmpty`]'s default).
pub const MAX_SMALL_JSON: usize = 1 << 16;

/// The address a connection came from (set by the server).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::IpAddr);

/// The gateway id the connection's client certificate names (set by the
/// server on HTTPS with `--tls-client-ca`; none: no certificate, or one
/// that names no gateway).
#[derive(Clone, Debug)]
pub struct PeerGateway(pub Option<String>);

/// The bearer token of an `Authorization` value.
pub(crate) fn bearer(v: &HeaderValue) -> Option<&str> {
    v.to_str().ok()?.strip_prefix("Bearer ")
}

/// The address the connection came from (0.0.0.0 when the server did
/// not say: a request built in a test).
pub(crate) fn peer_of(ext: &http::Extensions) -> std::net::IpAddr {
    ext.get::<PeerAddr>()
        .map(|p| p.0)
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
}

/// Finds who calls the API, before any route: 401 without a credential
/// the agent knows, 429 with `Retry-After` once the address is past its
/// allowance of wrong ones.
///
/// A request that presents a credential is a guess until it is known:
/// wrong ones count against the address as failed console logins do (one
/// allowance for both), and past it every token of the address waits, the
/// right one too (else the refusals would tell which guess was right) but
/// one proven right from this address before (a gateway behind the same
/// NAT as a guesser). One without any guesses nothing. Console viewers'
/// tokens read the console only: the API does not know them.
pub(crate) async fn authenticate(
    State(api): State<Arc<Api>>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = match req.headers().get(http::header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let token = String::from_utf8_lossy(v.as_bytes()).into_owned();
            let peer = peer_of(req.extensions());
            let lookup = || {
                bearer(v)
                    .and_then(|t| api.caller(t).or_else(|| api.cli_caller(t)))
                    .filter(|c| !matches!(c, Caller::Viewer { .. }))
            };
            match api.console.sessions.failures.check(peer, &token, lookup) {
                Ok(c) => c,
                Err(l) => {
                    let mut e = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many wrong tokens from this address: wait for Retry-After",
                    );
                    if let Ok(v) = HeaderValue::from_str(&l.retry_after.as_secs().to_string()) {
                        e = e.header(http::header::RETRY_AFTER, v);
                    }
                    return e.into_response();
                }
            }
        }
    };
    let Some(caller) = caller else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required (16 characters at least)",
        )
        .header(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        )
        .into_response();
    };
    let caller = match gateway_by_certificate(&api, caller, req.extensions()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// A gateway's caller as its connection's client certificate makes it:
/// the gateway the certificate names is the only one it speaks for (the
/// fleet token narrowed to it; a gateway's own token must be that
/// gateway's). Without a certificate naming a gateway, refused when
/// gateways must present one (`--require-gateway-certs`).
fn gateway_by_certificate(
    api: &Api,
    caller: Caller,
    ext: &http::Extensions,
) -> Result<Caller, ApiError> {
    let Caller::Gateway(claimed) = caller else {
        return Ok(caller);
    };
    let named = ext.get::<PeerGateway>().and_then(|g| g.0.clone());
    match (claimed, named) {
        (None, Some(cert)) => Ok(Caller::Gateway(Some(cert))),
        (Some(id), Some(cert)) if id == cert => Ok(Caller::Gateway(Some(id))),
        (Some(id), Some(cert)) => Err(ApiError::forbidden(format!(
            "this connection's certificate names gateway `{cert}`, the token gateway `{id}`"
        ))),
        (_, None) if api.tokens.gateway_certs_required() => Err(ApiError::forbidden(
            "a gateway must present its client certificate, naming its gateway id",
        )),
        (claimed, None) => Ok(Caller::Gateway(claimed)),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required")
        })
    }
}

/// The body, at most `max` bytes (400 past it, as a malformed body).
pub(crate) async fn body_bytes(body: Body, max: usize) -> Result<bytes::Bytes, ApiError> {
    http_body_util::Limited::new(body, max)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

/// A JSON body of at most [`MAX_JSON`] bytes.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let b = body_bytes(req.into_body(), MAX_JSON).await?;
        serde_json::from_slice(&b)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("JSON body: {e}")))
    }
}

/// A JSON body of at most `MAX` bytes, an empty (or blank) one being
/// `T::default()`.
pub struct JsonOrEmpty<T, const MAX: usize = MAX_SMALL_JSON>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default, const MAX: usize> FromRequest<S>
    for JsonOrEmpty<T, MAX>
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let b = body_bytes(req.into_body(), MAX).await?;
        if b.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonOrEmpty(T::default()));
        }
        serde_json::from_slice(&b)
            .map(JsonOrEmpty)
            .map_err(|e| ApiError::bad_request(format!("JSON body: {e}")))
    }
}

/// The query's pairs, percent-decoded, in order.
#[derive(Debug, Default, Clone)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The query as it came (for the audit routes' own parser).
    pub fn of(uri: &http::Uri) -> QueryPairs {
        QueryPairs(
            url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<QueryPairs, ApiError> {
        Ok(QueryPairs::of(&parts.uri))
    }
}

/// `METHOD /path?query` of a request, as the change record names it.
pub struct What(pub String);

impl<S: Send + Sync> FromRequestParts<S> for What {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<What, ApiError> {
        Ok(What(what(&parts.method, &parts.uri)))
    }
}

pub(crate) fn what(method: &http::Method, uri: &http::Uri) -> String {
    format!(
        "{} {}",
        method,
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    )
}
