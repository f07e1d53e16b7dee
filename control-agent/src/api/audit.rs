//! The audit routes:
//!
//! - `POST /v1/audit/ingest` (a gateway, `X-Warden-Gateway`): a batch of
//!   raw audit lines (NDJSON); `{"accepted", "duplicates"}`, 400 with the
//!   reason for a malformed batch (nothing of it stored), 413 past
//!   [`MAX_BODY`], 503 when the store cannot write (the gateway sends it
//!   again), 409 `gateway_id_conflict` while several live processes
//!   report under the gateway id (their chains are never merged; the
//!   gateway sends the batch again).
//! - `GET /v1/audit`: a page of records, newest first, filtered by
//!   `from`, `to` (RFC 3339 or unix seconds), `gateway`, `principal`,
//!   `tenant`, `server`, `tool`, `outcome`, `reason` (a substring),
//!   `approval_id`, `trace_id`, `team` (a priced record's `cost.team`),
//!   `currency`, `priced=1` (only records with a readable cost),
//!   `absent=team,tool,…` (only records without those fields: how a spend
//!   row's records are listed); paged by `before` (the `next_before` of
//!   the previous page) and `limit` (1–500, default 50).
//! - `GET /v1/audit/verify`: the hash chains of the records those filters
//!   match (`limit`, when given, caps the records read; the answer says
//!   `truncated`).
//! - `GET /v1/audit/live?window=300&gateway=`: the last window's figures.
//!
//! A tenant admin reads their tenant's records only: a `tenant=` naming
//! another is refused and recorded.

use std::time::Duration;

use axum::body::Body;
use http::{HeaderMap, StatusCode};

use super::Agent;
use crate::audit::query::{parse_live, parse_query};
use crate::audit::{valid_gateway, AuditStore, IngestError, Query, MAX_BODY, SEARCH_TOO_BROAD};
use crate::caller::Caller;
use crate::server::error::{ok, ApiError, ApiResult};
use crate::server::extract::{QueryPairs, What};

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

pub async fn ingest(agent: Agent, caller: Caller, headers: HeaderMap, body: Body) -> ApiResult {
    agent
        .tokens
        .speaks_for(&caller, &super::bundles::named_gateway(&headers))
        .map_err(ApiError::forbidden)?;
    let counted = |result: &str, n: u64| {
        agent
            .metrics
            .audit_ingested
            .with_label_values(&[result])
            .inc_by(n)
    };
    let gateway = headers
        .get("x-warden-gateway")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !valid_gateway(&gateway) {
        counted("refused", 1);
        return Err(ApiError::bad_request(
            "X-Warden-Gateway must name the gateway: 1-128 visible ASCII characters",
        ));
    }
    // The process shipping (its instance id, as on bundle fetches and
    // reports): a second process under this id is seen by its audit
    // alone, before it ever reports.
    if let Some(instance) = headers
        .get("x-warden-instance")
        .and_then(|v| v.to_str().ok())
    {
        let (store, id, instance) = (agent.store.clone(), gateway.clone(), instance.to_owned());
        super::blocking(move || store.fetched_by(&id, &instance)).await?;
    }
    // Several live processes under this id: their chains would be mixed
    // into one (the same seqs, two `prev` lines). Refused while it lasts
    // (409: the gateways keep the records in their trails and send them
    // again), never merged.
    let (store, id) = (agent.store.clone(), gateway.clone());
    if let Some(instances) = super::blocking(move || store.conflict(&id)).await? {
        counted("refused", 1);
        conflict_logged(&gateway, instances.len());
        return Err(ApiError::coded(
            StatusCode::CONFLICT,
            format!(
                "gateway id `{gateway}` is shared by {} live gateway processes: their audit chains would be mixed into one, so their records are refused until each runs with its own --gateway-id (the records wait in the gateways' trails)",
                instances.len().max(2)
            ),
            "gateway_id_conflict",
        ));
    }
    let too_large = || {
        counted("refused", 1);
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a batch may have {MAX_BODY} bytes at most"),
        )
    };
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    use http_body_util::BodyExt;
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            counted("refused", 1);
            return Err(ApiError::bad_request(format!("body: {e}")));
        }
    };
    let store = agent.audit.clone();
    let lines = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count() as u64;
    match tokio::task::spawn_blocking(move || store.ingest(&gateway, &body))
        .await
        .map_err(ApiError::internal)?
    {
        Ok(done) => {
            counted("accepted", done.accepted);
            counted("duplicate", done.duplicates);
            agent
                .metrics
                .audit_unreadable_costs
                .inc_by(done.unreadable_costs);
            agent
                .metrics
                .budget_alerts_queued
                .inc_by(done.alerts_queued);
            agent
                .metrics
                .budget_alerts_dropped
                .inc_by(done.alerts_dropped);
            ok(&done)
        }
        Err(e @ IngestError::StoreFailed(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
        Err(e) => {
            counted("refused", lines.max(1));
            Err(ApiError::bad_request(e.to_string()))
        }
    }
}

/// The tenants a caller's audit reads are confined to (empty: every
/// tenant, the org's roles); a tenant admin's `tenant=` naming another
/// tenant is refused and recorded. Spend reports (`super::spend`) are
/// scoped by the same rule.
pub(super) fn scope(
    agent: &Agent,
    caller: &Caller,
    q: &QueryPairs,
    what: &str,
) -> Result<Vec<String>, ApiError> {
    let Some((a, t)) = caller.actor().and_then(|a| Some((a, a.tenant()?))) else {
        return Ok(Vec::new());
    };
    if let Some((_, other)) =
        q.0.iter()
            .find(|(k, v)| k == "tenant" && !v.is_empty() && !crate::admins::same_tenant(v, t))
    {
        return Err(agent.refuse(
            a,
            what,
            &format!("tenant `{}` is not {}'s", other.escape_debug(), a.label()),
        ));
    }
    Ok(vec![t.to_owned()])
}

/// A failure of the audit store: 400 when the search was too broad.
fn store_failed(e: anyhow::Error) -> ApiError {
    let text = format!("{e:#}");
    let status = if text.starts_with(SEARCH_TOO_BROAD) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    ApiError::new(status, text)
}

/// The audit query a caller asks, confined to their tenants.
fn asked(
    agent: &Agent,
    caller: &Caller,
    q: &QueryPairs,
    what: &str,
    uri: &http::Uri,
) -> Result<Query, ApiError> {
    let tenants = scope(agent, caller, q, what)?;
    let mut query = parse_query(uri.query().unwrap_or("")).map_err(ApiError::bad_request)?;
    query.tenants = tenants;
    Ok(query)
}

/// Runs a read of the audit store off the async workers.
pub(super) async fn read<T: Send + 'static>(
    agent: &Agent,
    f: impl FnOnce(&AuditStore) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let store = agent.audit.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(ApiError::internal)?
        .map_err(store_failed)
}

pub async fn search(
    agent: Agent,
    caller: Caller,
    q: QueryPairs,
    What(what): What,
    uri: http::Uri,
) -> ApiResult {
    let query = asked(&agent, &caller, &q, &what, &uri)?;
    ok(&read(&agent, move |s| s.search(&query)).await?)
}

pub async fn verify(
    agent: Agent,
    caller: Caller,
    q: QueryPairs,
    What(what): What,
    uri: http::Uri,
) -> ApiResult {
    let query = asked(&agent, &caller, &q, &what, &uri)?;
    // One verification at a time (each reads and hashes up to MAX_VERIFY
    // records), as the console's.
    static VERIFYING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _running = VERIFYING.try_acquire().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "a verification is already running: try again when it ends",
        )
    })?;
    ok(&read(&agent, move |s| s.verify(&query)).await?)
}

pub async fn live(
    agent: Agent,
    caller: Caller,
    q: QueryPairs,
    What(what): What,
    uri: http::Uri,
) -> ApiResult {
    let scope = scope(&agent, &caller, &q, &what)?;
    let (window, gateway) = parse_live(uri.query().unwrap_or("")).map_err(ApiError::bad_request)?;
    ok(&read(&agent, move |s| s.live(window, gateway.as_deref(), &scope)).await?)
}
