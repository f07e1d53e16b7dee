//! The audit routes of the agent's API (the routing is in `server`):
//!
//! - `POST /v1/audit/ingest` (fleet token, `X-Warden-Gateway`): a batch of
//!   raw audit lines (NDJSON); `{"accepted", "duplicates"}`, 400 with the
//!   reason for a malformed batch (nothing of it stored), 413 past
//!   [`MAX_BODY`], 503 when the store cannot write (the gateway sends it
//!   again), 409 `gateway_id_conflict` while several live processes
//!   report under the gateway id (their chains are never merged; the
//!   gateway sends the batch again).
//! - `GET /v1/audit` (admin): a page of records, newest first, filtered by
//!   `from`, `to` (RFC 3339 or unix seconds), `gateway`, `principal`,
//!   `tenant`, `server`, `tool`, `outcome`, `reason` (a substring),
//!   `approval_id`, `trace_id`; paged by `before` (the `next_before` of
//!   the previous page) and `limit` (1–500, default 50).
//! - `GET /v1/audit/verify` (admin): the hash chains of the records those
//!   filters match (`limit`, when given, caps the records read; the answer
//!   says `truncated`).
//! - `GET /v1/audit/live?window=300&gateway=` (admin): the last window's
//!   figures.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::{valid_gateway, Query, MAX_BODY, STORE_FAILED};
use crate::server::Api;

type Resp = Response<Full<Bytes>>;

fn json(status: StatusCode, v: &impl serde::Serialize) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: &str) -> Resp {
    json(status, &serde_json::json!({"error": msg}))
}

/// Logs a refusal of `gateway`'s records for a shared id, once a minute
/// per gateway at most (its gateways send them again every few seconds).
fn conflict_logged(gateway: &str, processes: usize) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;
    static LOGGED: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);
    let mut g = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    if map.len() > 1000 {
        map.retain(|_, t| t.elapsed() < Duration::from_secs(60));
    }
    if map
        .get(gateway)
        .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
    {
        return;
    }
    map.insert(gateway.to_owned(), Instant::now());
    tracing::warn!(
        gateway,
        processes,
        "audit records refused: several live gateway processes report under this gateway id; their chains are not merged"
    );
}

/// A time as the API takes it: RFC 3339, or unix seconds (a fraction
/// allowed); unix microseconds out.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs.abs() < 1e11 {
            return Ok((secs * 1e6).round() as i64);
        }
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_microsecond())
        .map_err(|_| format!("`{s}` is neither an RFC 3339 time nor unix seconds"))
}

/// A query string's filters and paging as a [`Query`] (every tenant).
pub fn parse_query(qs: &str) -> Result<Query, String> {
    let mut q = Query::default();
    for (k, v) in url::form_urlencoded::parse(qs.as_bytes()) {
        let v = v.into_owned();
        if v.is_empty() {
            continue;
        }
        let text = Some(v.clone());
        match k.as_ref() {
            "from" => q.from_us = Some(parse_time(&v)?),
            "to" => q.to_us = Some(parse_time(&v)?),
            "gateway" => q.gateway = text,
            "principal" => q.principal = text,
            "tenant" => q.tenant = text,
            "server" => q.server = text,
            "tool" => q.tool = text,
            "outcome" => q.outcome = text,
            "reason" => q.reason = text,
            "approval_id" | "approval" => q.approval_id = text,
            "trace_id" | "trace" => q.trace_id = text,
            "before" => {
                q.before_id = Some(
                    v.parse()
                        .map_err(|_| format!("before `{v}` is not a record id"))?,
                )
            }
            "limit" => {
                q.limit = v
                    .parse()
                    .map_err(|_| format!("limit `{v}` is not a number"))?
            }
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    Ok(q)
}

/// `window` (seconds, or a duration such as `5m`) and `gateway` of
/// `/v1/audit/live`.
fn parse_live(qs: &str) -> Result<(Duration, Option<String>), String> {
    let mut window = Duration::from_secs(300);
    let mut gateway = None;
    for (k, v) in url::form_urlencoded::parse(qs.as_bytes()) {
        match k.as_ref() {
            "window" => {
                window = match v.parse::<u64>() {
                    Ok(n) => Duration::from_secs(n),
                    Err(_) => humantime::parse_duration(&v)
                        .map_err(|_| format!("window `{v}` is not seconds or a duration"))?,
                }
            }
            "gateway" if !v.is_empty() => gateway = Some(v.into_owned()),
            "gateway" => {}
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    Ok((window, gateway))
}

impl Api {
    /// `POST /v1/audit/ingest`.
    pub async fn audit_ingest(&self, req: Request<Incoming>) -> Resp {
        let counted = |result: &str, n: u64| {
            self.metrics
                .audit_ingested
                .with_label_values(&[result])
                .inc_by(n)
        };
        let gateway = req
            .headers()
            .get("x-warden-gateway")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if !valid_gateway(&gateway) {
            counted("refused", 1);
            return error(
                StatusCode::BAD_REQUEST,
                "X-Warden-Gateway must name the gateway: 1-128 visible ASCII characters",
            );
        }
        // The process shipping (its instance id, as on bundle fetches and
        // reports): a second process under this id is seen by its audit
        // alone, before it ever reports.
        if let Some(instance) = req
            .headers()
            .get("x-warden-instance")
            .and_then(|v| v.to_str().ok())
        {
            self.store.fetched_by(&gateway, instance);
        }
        // Several live processes under this id: their chains would be
        // mixed into one (the same seqs, two `prev` lines). Refused while
        // it lasts (409: the gateways keep the records in their trails and
        // send them again), never merged.
        if let Some(instances) = self.store.conflict(&gateway) {
            counted("refused", 1);
            conflict_logged(&gateway, instances.len());
            return json(
                StatusCode::CONFLICT,
                &serde_json::json!({
                    "error": format!(
                        "gateway id `{gateway}` is shared by {} live gateway processes: their audit chains would be mixed into one, so their records are refused until each runs with its own --gateway-id (the records wait in the gateways' trails)",
                        instances.len().max(2)
                    ),
                    "code": "gateway_id_conflict",
                }),
            );
        }
        let too_large = || {
            counted("refused", 1);
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a batch may have {MAX_BODY} bytes at most"),
            )
        };
        let declared = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return too_large();
        }
        let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
            Err(e) => {
                counted("refused", 1);
                return error(StatusCode::BAD_REQUEST, &format!("body: {e}"));
            }
        };
        let store = self.audit.clone();
        let lines = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .count() as u64;
        match tokio::task::spawn_blocking(move || store.ingest(&gateway, &body)).await {
            Ok(Ok(done)) => {
                counted("accepted", done.accepted);
                counted("duplicate", done.duplicates);
                json(StatusCode::OK, &done)
            }
            Ok(Err(e)) if e.starts_with(STORE_FAILED) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
            Ok(Err(e)) => {
                counted("refused", lines.max(1));
                error(StatusCode::BAD_REQUEST, &e)
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    /// `GET /v1/audit`, `/v1/audit/verify`, `/v1/audit/live`, of the
    /// tenants of `scope` (empty: every tenant, the org's roles).
    pub async fn audit_read(&self, path: &str, req: &Request<Incoming>, scope: &[String]) -> Resp {
        let scope = scope.to_vec();
        let qs = req.uri().query().unwrap_or("").to_owned();
        let store = self.audit.clone();
        let res = match path {
            "/v1/audit/live" => {
                let (window, gateway) = match parse_live(&qs) {
                    Ok(w) => w,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                };
                tokio::task::spawn_blocking(move || {
                    store
                        .live(window, gateway.as_deref(), &scope)
                        .map(|l| serde_json::to_value(l).unwrap_or_default())
                })
                .await
            }
            _ => {
                let mut q = match parse_query(&qs) {
                    Ok(q) => q,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                };
                q.tenants = scope;
                let verify = path == "/v1/audit/verify";
                // One verification at a time (each reads and hashes up to
                // MAX_VERIFY records), as the console's.
                static VERIFYING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
                let _running = if verify {
                    match VERIFYING.try_acquire() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            return error(
                                StatusCode::TOO_MANY_REQUESTS,
                                "a verification is already running: try again when it ends",
                            )
                        }
                    }
                } else {
                    None
                };
                tokio::task::spawn_blocking(move || {
                    if verify {
                        store
                            .verify(&q)
                            .map(|v| serde_json::to_value(v).unwrap_or_default())
                    } else {
                        store
                            .search(&q)
                            .map(|p| serde_json::to_value(p).unwrap_or_default())
                    }
                })
                .await
            }
        };
        match res {
            Ok(Ok(v)) => json(StatusCode::OK, &v),
            Ok(Err(e)) => {
                let text = format!("{e:#}");
                let status = if text.starts_with(super::SEARCH_TOO_BROAD) {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                error(status, &text)
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }
}
