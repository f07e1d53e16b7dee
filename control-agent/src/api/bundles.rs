//! `GET /v1/bundles/current`: the signed bundle a gateway should run, with
//! its `ETag` (the revision), long-polled (`If-None-Match` with `Prefer:
//! wait=N` or `?wait=N`, up to 60 s) and, for a gateway that sends a
//! nonce, a signed proof of freshness bound to it.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};

use super::Agent;
use crate::caller::Caller;
use crate::server::error::{ApiError, ApiResult};

/// Seconds a client asks to wait: `Prefer: wait=N` (OPA) or `?wait=N`, capped at 60.
fn wait_of(headers: &HeaderMap, uri: &Uri) -> Duration {
    let from_header = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').find_map(|p| p.trim().strip_prefix("wait=")))
        .and_then(|n| n.trim().parse::<u64>().ok());
    let from_query = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("wait="))
            .and_then(|n| n.parse::<u64>().ok())
    });
    Duration::from_secs(from_header.or(from_query).unwrap_or(0).min(60))
}

/// The gateway a request names (`X-Warden-Gateway`), which its token must
/// speak for.
pub(crate) fn named_gateway(headers: &HeaderMap) -> String {
    headers
        .get("x-warden-gateway")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// What the gateway asking says of itself.
struct Asking {
    id: String,
    instance: String,
    labels: crate::rollout::Labels,
    nonce: Option<String>,
    have: Option<String>,
}

fn asking(headers: &HeaderMap) -> Result<Asking, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let nonce = match header("x-warden-nonce") {
        n if n.is_empty() => None,
        n if warden_config::archive::valid_nonce(&n) => Some(n),
        _ => {
            return Err(ApiError::bad_request(
                "X-Warden-Nonce: 32 to 64 lowercase hex digits",
            ))
        }
    };
    let labels = crate::rollout::labels_of(&header("x-warden-labels"))?;
    Ok(Asking {
        // Who asks: a gateway names itself and its labels (one without
        // them gets what is published to all).
        id: header("x-warden-gateway"),
        // The process asking (its instance id): two processes under one
        // id are told apart from one that restarted (see `Store::conflict`).
        instance: header("x-warden-instance"),
        labels,
        nonce,
        have: headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_owned()
            }),
    })
}

/// Notes what gateway `a` was answered with (off the runtime's workers).
async fn served_to(api: &crate::server::Api, a: &Asking, revision: &str) -> Result<(), ApiError> {
    let (store, id, instance, labels, revision) = (
        api.store.clone(),
        a.id.clone(),
        a.instance.clone(),
        a.labels.clone(),
        revision.to_owned(),
    );
    super::blocking(move || store.served_to(&id, &instance, &labels, &revision)).await
}

pub async fn current(agent: Agent, caller: Caller, headers: HeaderMap, uri: Uri) -> ApiResult {
    let api = &agent.0;
    api.tokens
        .speaks_for(&caller, &named_gateway(&headers))
        .map_err(ApiError::forbidden)?;
    let a = asking(&headers)?;
    let wait = wait_of(&headers, &uri);
    let (store, id, instance) = (api.store.clone(), a.id.clone(), a.instance.clone());
    super::blocking(move || store.fetched_by(&id, &instance)).await?;
    let mut rx = api.store.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        rx.borrow_and_update();
        match api.store.for_gateway(&a.id, &a.labels) {
            Some(p) if a.have.as_deref() != Some(p.revision.as_str()) => {
                let r = answer(api, &a, &p)?;
                // What a canary counts this gateway's reports by.
                served_to(api, &a, &p.revision).await?;
                return Ok(r);
            }
            // It holds what it should run: confirmed.
            Some(p) => served_to(api, &a, &p.revision).await?,
            None => {}
        }
        // Nothing newer: wait for a change or the deadline.
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = if api.store.has_published() {
                    StatusCode::NOT_MODIFIED
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                return Ok(r);
            }
        }
    }
}

/// The bundle `p` for the gateway asking, with its headers.
fn answer(
    api: &crate::server::Api,
    a: &Asking,
    p: &crate::store::Published,
) -> Result<Response, ApiError> {
    let mut r = Response::new(Body::from(p.archive.clone()));
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/gzip"));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", p.revision)) {
        h.insert("etag", v);
    }
    if let Ok(v) = HeaderValue::from_str(&p.target.why()) {
        h.insert("x-warden-rollout", v);
    }
    // Proof that this is what the agent serves this gateway now, bound to
    // the nonce it sent: a gateway with no state has no sequence to
    // compare with.
    if let (Some(nonce), Some(s)) = (&a.nonce, api.store.signer()) {
        use sha2::Digest;
        let claims = warden_config::archive::Freshness {
            nonce: nonce.clone(),
            bundle: hex::encode(sha2::Sha256::digest(&p.archive)),
            gateway: a.id.clone(),
        };
        let v = warden_config::archive::sign_claims(
            &claims,
            &s.pem,
            s.alg,
            &s.keyid,
            warden_config::archive::FRESHNESS_TYP,
        )
        .ok()
        .and_then(|jws| HeaderValue::from_str(&jws).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot sign the bundle's freshness",
            )
        })?;
        h.insert("x-warden-freshness", v);
    }
    Ok(r)
}
