//! The agent's HTTP API (bearer-token authenticated):
//!
//! | route | token | what |
//! |---|---|---|
//! | `GET /v1/bundles/current` | fleet | the signed tar.gz; `ETag` = revision; `If-None-Match` + `Prefer: wait=N` (or `?wait=N`) long-polls up to 60 s for a newer one, else 304 |
//! | `POST /v1/fleet/report` | fleet | a gateway's `{id, instance, revision, healthy, last_error, labels, stats, upstreams}` |
//! | `GET /v1/fleet` | admin | members, their revisions, stale ones, ids several live processes share (`conflict`, `conflicts`), the last build error |
//! | `GET /v1/history` | admin | published revisions |
//! | `POST /v1/publish` | admin | rebuild the source now |
//! | `POST /v1/rollback` | admin | `{revision}`: republish an earlier revision |
//! | `POST /v1/kill`, `/v1/revive` | admin | `{scope: all\|tenant\|principal\|server\|tool, value}` |
//! | `GET /v1/rollout` | admin | the canary being watched (or the last one) |
//! | `POST /v1/rollout/promote`, `/rollback` | admin | `{revision}`: the canary revision judged, required to promote; 409 `revision_changed` when the canary watched is another, 409 `no_canary` when none is |
//! | `POST /v1/approvals/claim` | fleet | a gateway's held call: pending, approved (taken, single use) or denied (see `approvals`) |
//! | `GET /v1/approvals` | approver, admin | waiting and approved-unused approvals (`?all=1`: every kept one) |
//! | `GET /v1/approvals/{id}` | approver, admin | one approval |
//! | `POST /v1/approvals/{id}/approve`, `/deny` | approver | `{comment}` optional; not one's own call |
//! | `POST /v1/audit/ingest` | fleet | a gateway's raw audit lines (NDJSON, `X-Warden-Gateway`, `X-Warden-Instance`): `{accepted, duplicates}` (see `audit`); 409 `gateway_id_conflict` while several live processes report under that id |
//! | `GET /v1/audit`, `/v1/audit/verify`, `/v1/audit/live` | admin | search the shipped records, verify their chains, the last minutes' figures |
//! | `GET /metrics` | — | Prometheus: approvals waiting, the oldest wait, decisions, audit rows |
//! | `GET /healthz` | — | liveness |
//! | `/console…` | a console session (login with a token) | the web console: see [`crate::console`] |
//! | `/v1/tenants…`, `/v1/registry…` | admins (`--admins`) | tenant layers and the registry: see [`crate::governance`], which also confines tenant admins and org reviewers on the routes above |
//!
//! A wrong bearer token counts against its address as a failed console
//! login does (one allowance for both, [`crate::console::session::Failures`]);
//! past it every token of the address gets 429 with `Retry-After`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use crate::admins::{Actor, Admin};
use crate::approvals::{Approvals, ClaimRefused, Refused, Verdict};
use crate::store::{Report, Store};

/// The shortest token the agent takes: the admin and fleet tokens are
/// refused at start below it, and a presented token below it is never
/// looked up (the approvers, viewers and admins files keep only digests,
/// whose tokens' length cannot be checked when the files are read).
pub const MIN_TOKEN_LEN: usize = 16;

pub struct Tokens {
    /// SHA-256 of the admin token.
    admin: [u8; 32],
    /// SHA-256 of the fleet token (gateways).
    fleet: [u8; 32],
    /// Gateways with a token of their own (`--gateways`): SHA-256 of the
    /// token → the gateway id it speaks for, alone.
    gateways: std::collections::HashMap<[u8; 32], String>,
    /// SHA-256 of the token `/metrics` asks for (`--metrics-token`); `None`:
    /// `/metrics` is open.
    metrics: Option<[u8; 32]>,
}

/// Reads the gateways file (`--gateways`): a YAML map of gateway id →
/// SHA-256 (64 hex) of that gateway's token.
pub fn read_gateway_tokens(
    path: &std::path::Path,
) -> anyhow::Result<std::collections::BTreeMap<String, [u8; 32]>> {
    let text = std::fs::read_to_string(path)?;
    let raw: std::collections::BTreeMap<String, String> = serde_yaml_ng::from_str(&text)?;
    let empty: [u8; 32] = Sha256::digest(b"").into();
    raw.into_iter()
        .map(|(id, hexd)| {
            if !crate::audit::valid_gateway(&id) {
                anyhow::bail!(
                    "{}: gateway id `{id}` must be 1-128 visible ASCII characters",
                    path.display()
                );
            }
            let d: [u8; 32] = hex::decode(hexd.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .filter(|d| *d != empty)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: `{id}` must map to the SHA-256 (64 hex) of the gateway's token",
                        path.display()
                    )
                })?;
            Ok((id, d))
        })
        .collect()
}

impl Tokens {
    pub fn new(admin: &str, fleet: &str) -> Tokens {
        Tokens {
            admin: Sha256::digest(admin.as_bytes()).into(),
            fleet: Sha256::digest(fleet.as_bytes()).into(),
            gateways: Default::default(),
            metrics: None,
        }
    }

    /// `/metrics` answers only with this token (or the admin's).
    pub fn with_metrics_token(mut self, token: Option<&str>) -> Self {
        self.metrics = token.map(|t| Sha256::digest(t.as_bytes()).into());
        self
    }

    /// Whether a request may read `/metrics`: any request while it is
    /// open; else one with the metrics token or the admin token.
    fn reads_metrics(&self, req: &Request<Incoming>) -> bool {
        let Some(want) = self.metrics else {
            return true;
        };
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())))
            .is_some_and(|d| d == want || d == self.admin)
    }

    /// Gateways that each have a token of their own: id → SHA-256 of it.
    /// Such an id can be spoken for by its token alone (never by the
    /// shared fleet token, nor another gateway's).
    pub fn with_gateways(mut self, gateways: impl IntoIterator<Item = (String, [u8; 32])>) -> Self {
        self.gateways = gateways.into_iter().map(|(id, d)| (d, id)).collect();
        self
    }

    /// Whether a fleet request of `role` may speak for gateway `id`: a
    /// gateway's own token for its id alone; the shared fleet token (and
    /// an admin) for any id without a token of its own.
    pub(crate) fn speaks_for(&self, role: &Role, id: &str) -> Result<(), String> {
        match role {
            Role::Fleet(Some(own)) if own == id => Ok(()),
            Role::Fleet(Some(own)) => Err(format!(
                "this token is gateway `{own}`'s: it cannot speak for gateway `{id}`"
            )),
            _ if self.gateways.values().any(|g| g == id) => Err(format!(
                "gateway `{id}` has a token of its own (--gateways): only that token speaks for it"
            )),
            _ => Ok(()),
        }
    }

    /// Whether `digest` is the admin token's.
    pub fn is_admin(&self, digest: &[u8; 32]) -> bool {
        *digest == self.admin
    }
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// The admin token (`admin`) or an entry of the admins file.
    Admin(Actor),
    /// The shared fleet token (`None`), or a gateway's own token (its id).
    Fleet(Option<String>),
    /// An approver, by the name the approvers file gives their token.
    Approver(String),
}

pub struct Api {
    pub store: Arc<Store>,
    pub tokens: Tokens,
    pub approvals: Arc<Approvals>,
    pub metrics: Metrics,
    /// Audit records shipped by the gateways (search, live, verification).
    pub audit: Arc<crate::audit::AuditStore>,
    /// The web console's sessions and viewers (`/console`).
    pub console: crate::console::state::Console,
    /// Org admins, org reviewers and tenant admins (`--admins`).
    pub admins: std::collections::BTreeMap<String, Admin>,
}

/// The agent's own metrics.
pub struct Metrics {
    registry: prometheus::Registry,
    waiting: prometheus::IntGauge,
    oldest: prometheus::Gauge,
    decisions: prometheus::IntCounterVec,
    claims: prometheus::IntCounterVec,
    console_sessions: prometheus::IntGauge,
    /// (address, token) pairs proven right, let past an address's lockout.
    proven_tokens: prometheus::IntGauge,
    /// Records in the audit store.
    pub(crate) audit_rows: prometheus::IntGauge,
    pub(crate) audit_bytes: prometheus::IntGauge,
    pub(crate) bundle_expires: prometheus::IntGauge,
    pub(crate) resign_failures: prometheus::IntCounter,
    /// Audit lines shipped by gateways, by result.
    pub(crate) audit_ingested: prometheus::IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = prometheus::Registry::new();
        let waiting = prometheus::IntGauge::new(
            "warden_agent_approvals_waiting",
            "Held calls waiting for their approvers",
        )
        .expect("metric");
        let oldest = prometheus::Gauge::new(
            "warden_agent_approval_oldest_wait_seconds",
            "How long the oldest waiting approval has waited",
        )
        .expect("metric");
        let decisions = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "warden_agent_approval_decisions_total",
                "Approvers' answers, by verdict",
            ),
            &["verdict"],
        )
        .expect("metric");
        let claims = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "warden_agent_approval_claims_total",
                "Gateways' claims of held calls, by answer",
            ),
            &["answer"],
        )
        .expect("metric");
        let console_sessions = prometheus::IntGauge::new(
            "warden_agent_console_sessions",
            "Console sessions open (bounded by the console's session table)",
        )
        .expect("metric");
        let proven_tokens = prometheus::IntGauge::new(
            "warden_agent_proven_tokens",
            "Tokens proven right from an address, let past its lockout (bounded at 4096)",
        )
        .expect("metric");
        let audit_rows = prometheus::IntGauge::new(
            "warden_agent_audit_rows",
            "Audit records kept in the agent's store",
        )
        .expect("metric");
        let bundle_expires = prometheus::IntGauge::new(
            "warden_agent_bundle_expires_timestamp_seconds",
            "When the first served bundle's signature expires (Unix seconds; 0: none expires)",
        )
        .expect("metric");
        let resign_failures = prometheus::IntCounter::new(
            "warden_agent_resign_failures_total",
            "Re-signs of what is served that failed (tried again; the change record says why)",
        )
        .expect("metric");
        let audit_bytes = prometheus::IntGauge::new(
            "warden_agent_audit_bytes",
            "Bytes of the agent's audit store in use (records, lines, indexes; bounded by --audit-max-bytes)",
        )
        .expect("metric");
        let audit_ingested = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "warden_agent_audit_ingested_total",
                "Audit lines shipped by gateways, by result (accepted, duplicate, refused)",
            ),
            &["result"],
        )
        .expect("metric");
        for c in [
            Box::new(audit_rows.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(audit_bytes.clone()),
            Box::new(bundle_expires.clone()),
            Box::new(resign_failures.clone()),
            Box::new(audit_ingested.clone()),
            Box::new(console_sessions.clone()),
            Box::new(proven_tokens.clone()),
            Box::new(waiting.clone()),
            Box::new(oldest.clone()),
            Box::new(decisions.clone()),
            Box::new(claims.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics {
            registry,
            waiting,
            oldest,
            decisions,
            claims,
            console_sessions,
            proven_tokens,
            audit_rows,
            audit_bytes,
            bundle_expires,
            resign_failures,
            audit_ingested,
        }
    }
}

type Resp = Response<Full<Bytes>>;

fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
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

/// Seconds a client asks to wait: `Prefer: wait=N` (OPA) or `?wait=N`, capped at 60.
fn wait_of(req: &Request<Incoming>) -> Duration {
    let from_header = req
        .headers()
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').find_map(|p| p.trim().strip_prefix("wait=")))
        .and_then(|n| n.trim().parse::<u64>().ok());
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("wait="))
            .and_then(|n| n.parse::<u64>().ok())
    });
    Duration::from_secs(from_header.or(from_query).unwrap_or(0).min(60))
}

impl Api {
    fn role(&self, req: &Request<Incoming>) -> Option<Role> {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| t.len() >= MIN_TOKEN_LEN)?;
        let d: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if d == self.tokens.admin {
            Some(Role::Admin(Actor::root()))
        } else if d == self.tokens.fleet {
            Some(Role::Fleet(None))
        } else if let Some(id) = self.tokens.gateways.get(&d) {
            Some(Role::Fleet(Some(id.clone())))
        } else if let Some((name, a)) = self.admins.iter().find(|(_, a)| a.token == d) {
            Some(Role::Admin(Actor {
                name: name.clone(),
                kind: a.kind.clone(),
            }))
        } else {
            self.approvals
                .approvers
                .iter()
                .find(|(_, a)| a.token == d)
                .map(|(name, _)| Role::Approver(name.clone()))
        }
    }

    /// Whether `role` may speak for the gateway the request names
    /// (`X-Warden-Gateway`): `403` naming why when it may not.
    fn named_gateway(&self, role: &Role, req: &Request<Incoming>) -> Result<(), Resp> {
        let id = req
            .headers()
            .get("x-warden-gateway")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        self.tokens
            .speaks_for(role, &id)
            .map_err(|e| error(StatusCode::FORBIDDEN, &e))
    }

    fn metrics_text(&self) -> Resp {
        let (n, oldest) = self.approvals.waiting(std::time::SystemTime::now());
        self.metrics.waiting.set(n as i64);
        self.metrics.oldest.set(oldest.as_secs_f64());
        self.metrics.audit_rows.set(self.audit.rows() as i64);
        self.metrics.audit_bytes.set(self.audit.bytes() as i64);
        self.metrics.bundle_expires.set(
            self.store
                .earliest_expiry()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64),
        );
        let failed = self
            .store
            .resign_failures
            .load(std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .resign_failures
            .inc_by(failed.saturating_sub(self.metrics.resign_failures.get()));
        self.metrics
            .console_sessions
            .set(self.console.sessions.count() as i64);
        self.metrics
            .proven_tokens
            .set(self.console.sessions.failures.proven() as i64);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.metrics.registry.gather())
            .unwrap_or_default();
        let mut r = Response::new(Full::new(Bytes::from(text)));
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        r
    }

    /// The approval routes (`/v1/approvals…`).
    async fn approvals(&self, role: Role, req: Request<Incoming>, path: &str) -> Resp {
        let now = std::time::SystemTime::now();
        let rest = path.trim_start_matches("/v1/approvals");
        let viewer = match &role {
            Role::Approver(name) => Some(name.as_str()),
            _ => None,
        };
        let method = req.method().clone();
        match (&method, rest, &role) {
            (&Method::POST, "/claim", Role::Fleet(_)) => {
                match read_json::<crate::approvals::Claim>(req).await {
                    Ok(c) => {
                        if let Err(e) = self.tokens.speaks_for(&role, &c.gateway) {
                            return error(StatusCode::FORBIDDEN, &e);
                        }
                        let (gw, tool, principal) =
                            (c.gateway.clone(), c.tool.clone(), c.principal.clone());
                        match self.approvals.claim(c, self.store.signer(), now) {
                            Ok(a) => {
                                let v = serde_json::to_value(&a).unwrap_or_default();
                                let state = v["state"].as_str().unwrap_or("").to_owned();
                                self.metrics.claims.with_label_values(&[&state]).inc();
                                if state != "pending" || v["created"] == true {
                                    self.store.record(
                                        &format!("gateway:{gw}"),
                                        &format!("approval.claim.{state}"),
                                        None,
                                        true,
                                        &format!(
                                            "{} {principal} {tool}",
                                            v["id"].as_str().unwrap_or("")
                                        ),
                                    );
                                }
                                json(StatusCode::OK, &v)
                            }
                            Err(e @ (ClaimRefused::TooMany | ClaimRefused::Full)) => {
                                error(StatusCode::TOO_MANY_REQUESTS, &e.to_string())
                            }
                            Err(
                                e @ (ClaimRefused::Malformed(_)
                                | ClaimRefused::DigestMismatch
                                | ClaimRefused::TooLarge(_)),
                            ) => error(StatusCode::BAD_REQUEST, &e.to_string()),
                            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                        }
                    }
                    Err(e) => error(StatusCode::BAD_REQUEST, &e),
                }
            }
            (_, _, Role::Fleet(_)) => error(
                StatusCode::FORBIDDEN,
                "gateways may only claim approvals, never list or decide them",
            ),
            (&Method::GET, "" | "/", _) => {
                let all = req
                    .uri()
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv == "all=1" || kv == "all=true"));
                json(
                    StatusCode::OK,
                    &serde_json::json!({"approvals": self.approvals.list(all, viewer, now)}),
                )
            }
            (&Method::GET, id, _) => {
                match self.approvals.get(id.trim_start_matches('/'), viewer, now) {
                    Some(v) => json(StatusCode::OK, &v),
                    None => error(StatusCode::NOT_FOUND, "no such approval"),
                }
            }
            (&Method::POST, r, Role::Approver(name)) => {
                let Some((id, verb)) = r.trim_start_matches('/').split_once('/') else {
                    return error(StatusCode::NOT_FOUND, "no such route");
                };
                let verdict = match verb {
                    "approve" => Verdict::Approve,
                    "deny" => Verdict::Deny,
                    _ => return error(StatusCode::NOT_FOUND, "no such route"),
                };
                #[derive(serde::Deserialize, Default)]
                struct Body {
                    #[serde(default)]
                    comment: Option<String>,
                }
                let body = match read_json_or_empty::<Body>(req).await {
                    Ok(b) => b,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                };
                match self.decide(name, id, verdict, body.comment) {
                    Ok(v) => json(StatusCode::OK, &v),
                    Err(e @ Refused::NotFound) => error(StatusCode::NOT_FOUND, &e.to_string()),
                    Err(e @ (Refused::SelfApproval | Refused::NotTheirs)) => {
                        error(StatusCode::FORBIDDEN, &e.to_string())
                    }
                    Err(e) => error(StatusCode::CONFLICT, &e.to_string()),
                }
            }
            (&Method::POST, _, _) => error(
                StatusCode::FORBIDDEN,
                "only an approver's token may approve or deny",
            ),
            _ => error(StatusCode::NOT_FOUND, "no such route"),
        }
    }

    /// An approver's answer to a held call, recorded and counted (the API
    /// and the console both decide through here).
    pub fn decide(
        &self,
        approver: &str,
        id: &str,
        verdict: Verdict,
        comment: Option<String>,
    ) -> Result<serde_json::Value, Refused> {
        let now = std::time::SystemTime::now();
        let res = self
            .approvals
            .decide(id, approver, verdict.clone(), comment, now);
        let (action, verb) = match verdict {
            Verdict::Approve => ("approval.approve", "approve"),
            Verdict::Deny => ("approval.deny", "deny"),
        };
        self.store.record(
            &format!("approver:{approver}"),
            action,
            None,
            res.is_ok(),
            &match &res {
                Ok(_) => id.to_owned(),
                Err(e) => format!("{id}: {e}"),
            },
        );
        if res.is_ok() {
            self.metrics.decisions.with_label_values(&[verb]).inc();
        }
        res
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Resp, Infallible> {
        let path = req.uri().path().to_owned();
        if path == "/healthz" {
            return Ok(json(StatusCode::OK, &serde_json::json!({"ok": true})));
        }
        if path == "/metrics" {
            if !self.tokens.reads_metrics(&req) {
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    "/metrics takes the metrics token (--metrics-token)",
                );
                r.headers_mut()
                    .insert("www-authenticate", http::HeaderValue::from_static("Bearer"));
                return Ok(r);
            }
            return Ok(self.metrics_text());
        }
        if path == "/console" || path.starts_with("/console/") {
            return Ok(self.console(req).await);
        }
        // A request that presents a credential is a guess until it is
        // known: wrong ones count against the address as failed console
        // logins do (one allowance for both), and past it every token of
        // the address waits, the right one too (else the refusals would
        // tell which guess was right) but one proven right from this
        // address before (a gateway behind the same NAT as a guesser). One
        // without any guesses nothing.
        let role = if let Some(token) = req
            .headers()
            .get("authorization")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        {
            let peer = req
                .extensions()
                .get::<crate::console::state::PeerAddr>()
                .map(|p| p.0)
                .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
            match self
                .console
                .sessions
                .failures
                .check(peer, &token, || self.role(&req))
            {
                Ok(role) => role,
                Err(l) => {
                    let mut r = error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many wrong tokens from this address: wait for Retry-After",
                    );
                    if let Ok(v) = http::HeaderValue::from_str(&l.retry_after.as_secs().to_string())
                    {
                        r.headers_mut().insert("retry-after", v);
                    }
                    return Ok(r);
                }
            }
        } else {
            None
        };
        let Some(role) = role else {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required (16 characters at least)",
            );
            r.headers_mut()
                .insert("www-authenticate", http::HeaderValue::from_static("Bearer"));
            return Ok(r);
        };
        if path == "/v1/approvals" || path.starts_with("/v1/approvals/") {
            if let Role::Admin(a) = &role {
                if let Some(t) = a.tenant() {
                    return Ok(self.tenant_approvals(a, t, req, &path));
                }
            }
            return Ok(self.approvals(role, req, &path).await);
        }
        if matches!(role, Role::Approver(_)) {
            return Ok(error(
                StatusCode::FORBIDDEN,
                "an approver's token reaches only /v1/approvals",
            ));
        }
        let req = match &role {
            Role::Admin(a) => match self.governance(a, req, &path).await {
                Ok(r) => return Ok(r),
                Err(req) => req,
            },
            _ => req,
        };
        // Past `governance`: the org admins, and org reviewers' reads.
        let actor = match &role {
            Role::Admin(a) => a.label(),
            _ => String::new(),
        };
        Ok(match (req.method().clone(), path.as_str()) {
            (Method::GET, "/v1/bundles/current") => match self.named_gateway(&role, &req) {
                Err(refused) => refused,
                Ok(()) => self.bundle(req).await,
            },
            (Method::POST, "/v1/fleet/report") => match read_json::<Report>(req).await {
                Ok(r) => match self.tokens.speaks_for(&role, &r.id) {
                    Err(e) => error(StatusCode::FORBIDDEN, &e),
                    Ok(()) => match self.store.report(r) {
                        Ok(()) => json(StatusCode::OK, &serde_json::json!({"ok": true})),
                        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
                    },
                },
                Err(e) => error(StatusCode::BAD_REQUEST, &e),
            },
            (Method::POST, "/v1/audit/ingest") => match self.named_gateway(&role, &req) {
                Err(refused) => refused,
                Ok(()) => self.audit_ingest(req).await,
            },
            _ if !matches!(role, Role::Admin(_)) => {
                error(StatusCode::FORBIDDEN, "admin token required")
            }
            (Method::GET, p @ ("/v1/audit" | "/v1/audit/verify" | "/v1/audit/live")) => {
                self.audit_read(p, &req, &[]).await
            }
            (Method::GET, "/v1/fleet") => json(StatusCode::OK, &self.store.fleet()),
            (Method::GET, "/v1/history") => {
                json(StatusCode::OK, &serde_json::json!(self.store.history()))
            }
            (Method::POST, "/v1/publish") => {
                /// `{}` publishes the source to all; `select` narrows it to
                /// the gateways carrying those labels; `canary` publishes
                /// it to a share of them, watched against the rest.
                #[derive(Default, serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    #[serde(default)]
                    select: crate::rollout::Selector,
                    #[serde(default)]
                    canary: Option<crate::store::CanaryPlan>,
                }
                let b = match read_json_or_empty::<Body>(req).await {
                    Ok(b) => b,
                    Err(e) => return Ok(error(StatusCode::BAD_REQUEST, &e)),
                };
                if let Err(e) = b.select.check() {
                    return Ok(error(StatusCode::BAD_REQUEST, &e));
                }
                let store = self.store.clone();
                let res = tokio::task::spawn_blocking(move || match b.canary {
                    Some(plan) => store.publish_canary(&actor, b.select, plan).map(Some),
                    None => store.publish_source_to(&actor, true, b.select),
                })
                .await;
                match res {
                    Ok(Ok(p)) => json(
                        StatusCode::OK,
                        &serde_json::json!({
                            "published": p.as_ref().map(|p| p.revision.clone()),
                            "target": p.as_ref().map(|p| p.target.clone()),
                            // Tenant layers this revision leaves out.
                            "warnings": p.as_ref().map(|p| self.store.warnings_of(p.seq)).unwrap_or_default(),
                        }),
                    ),
                    Ok(Err(e)) => json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &serde_json::json!({"error": "bundle refused", "problems": e.0.iter().map(|p| p.to_string()).collect::<Vec<_>>()}),
                    ),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                }
            }
            (Method::GET, "/v1/rollout") => json(StatusCode::OK, &self.store.rollout()),
            (Method::POST, p @ ("/v1/rollout/promote" | "/v1/rollout/rollback")) => {
                /// `revision`: the canary revision the operator judged
                /// (`GET /v1/rollout`); required to promote.
                #[derive(Default, serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    #[serde(default)]
                    revision: Option<String>,
                }
                let b = match read_json_or_empty::<Body>(req).await {
                    Ok(b) => b,
                    Err(e) => return Ok(error(StatusCode::BAD_REQUEST, &e)),
                };
                let res = if p.ends_with("promote") {
                    self.store.promote(&actor, b.revision.as_deref())
                } else {
                    self.store.roll_back_canary(&actor, b.revision.as_deref())
                };
                match res {
                    Ok(_) => json(StatusCode::OK, &self.store.rollout()),
                    Err(e) => canary_refused(&e),
                }
            }
            (Method::POST, "/v1/rollback") => {
                #[derive(serde::Deserialize)]
                struct Body {
                    revision: String,
                }
                match read_json::<Body>(req).await {
                    Ok(b) => {
                        let store = self.store.clone();
                        self.mutate(move || store.rollback(&actor, &b.revision))
                            .await
                    }
                    Err(e) => error(StatusCode::BAD_REQUEST, &e),
                }
            }
            (Method::POST, p @ ("/v1/kill" | "/v1/revive")) => {
                #[derive(serde::Deserialize)]
                struct Body {
                    scope: String,
                    #[serde(default)]
                    value: String,
                }
                let on = p == "/v1/kill";
                match read_json::<Body>(req).await {
                    Ok(b) => {
                        let store = self.store.clone();
                        self.mutate(move || store.kill(&actor, &b.scope, &b.value, on))
                            .await
                    }
                    Err(e) => error(StatusCode::BAD_REQUEST, &e),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "no such route"),
        })
    }

    async fn mutate(
        &self,
        f: impl FnOnce() -> Result<Arc<crate::store::Published>, crate::build::BuildFailure>
            + Send
            + 'static,
    ) -> Resp {
        match tokio::task::spawn_blocking(f).await {
            Ok(Ok(p)) => json(
                StatusCode::OK,
                &serde_json::json!({"published": p.revision, "warnings": self.store.warnings_of(p.seq)}),
            ),
            Ok(Err(e)) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({"error": "refused", "problems": e.0.iter().map(|p| p.to_string()).collect::<Vec<_>>()}),
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    async fn bundle(&self, req: Request<Incoming>) -> Resp {
        let have = req
            .headers()
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_owned()
            });
        let wait = wait_of(&req);
        // Who asks: a gateway names itself and its labels (one without them
        // gets what is published to all).
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let id = header("x-warden-gateway");
        let nonce = match header("x-warden-nonce") {
            n if n.is_empty() => None,
            n if warden_config::archive::valid_nonce(&n) => Some(n),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "X-Warden-Nonce: 32 to 64 lowercase hex digits",
                )
            }
        };
        let labels = match crate::rollout::parse_labels(&header("x-warden-labels")) {
            Ok(l) => l,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        // The process asking (its instance id): two processes under one id
        // are told apart from one that restarted (see `Store::conflict`).
        let instance = header("x-warden-instance");
        self.store.fetched_by(&id, &instance);
        let mut rx = self.store.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            rx.borrow_and_update();
            match self.store.for_gateway(&id, &labels) {
                Some(p) if have.as_deref() != Some(p.revision.as_str()) => {
                    let mut r = Response::new(Full::new(p.archive.clone()));
                    let h = r.headers_mut();
                    h.insert(
                        "content-type",
                        http::HeaderValue::from_static("application/gzip"),
                    );
                    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", p.revision)) {
                        h.insert("etag", v);
                    }
                    if let Ok(v) = http::HeaderValue::from_str(&p.target.why()) {
                        h.insert("x-warden-rollout", v);
                    }
                    // Proof that this is what the agent serves this
                    // gateway now, bound to the nonce it sent: a gateway
                    // with no state has no sequence to compare with.
                    if let (Some(nonce), Some(s)) = (&nonce, self.store.signer()) {
                        use sha2::Digest;
                        let claims = warden_config::archive::Freshness {
                            nonce: nonce.clone(),
                            bundle: hex::encode(sha2::Sha256::digest(&p.archive)),
                            gateway: id.clone(),
                        };
                        match warden_config::archive::sign_claims(
                            &claims,
                            &s.pem,
                            s.alg,
                            &s.keyid,
                            warden_config::archive::FRESHNESS_TYP,
                        )
                        .map(|jws| http::HeaderValue::from_str(&jws))
                        {
                            Ok(Ok(v)) => {
                                h.insert("x-warden-freshness", v);
                            }
                            _ => {
                                return error(
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    "cannot sign the bundle's freshness",
                                )
                            }
                        }
                    }
                    // What a canary counts this gateway's reports by.
                    self.store.served_to(&id, &instance, &labels, &p.revision);
                    return r;
                }
                // It holds what it should run: confirmed.
                Some(p) => self.store.served_to(&id, &instance, &labels, &p.revision),
                None => {}
            }
            // Nothing newer: wait for a change or the deadline.
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = if self.store.has_published() {
                        StatusCode::NOT_MODIFIED
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    return r;
                }
            }
        }
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, String> {
    let body = http_body_util::Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("JSON body: {e}"))
}

/// As [`read_json`], an empty body reading as `T::default()`.
/// A canary not ended by hand: its status, `{error, code}`.
pub(crate) fn canary_refused(e: &crate::store::CanaryRefusal) -> Resp {
    json(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::CONFLICT),
        &serde_json::json!({"error": e.to_string(), "code": e.code()}),
    )
}

pub(crate) async fn read_json_or_empty<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, String> {
    let body = http_body_util::Limited::new(req.into_body(), 1 << 16)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| format!("JSON body: {e}"))
}

/// Serves the API until the process ends.
/// What one peer, or all of them, may hold of the agent's HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once; more wait in the kernel's backlog.
    pub total: usize,
    /// Connections one address may hold at once; more are closed on
    /// accept. A fleet behind one NAT address long-polls through one
    /// connection per gateway, so this is generous; one peer holding
    /// sockets open cannot take the agent's descriptors from everyone else.
    pub per_address: usize,
    /// How long a connection may take to send a request's head (and how
    /// long it may sit idle between requests): it is closed after that.
    pub head: Duration,
    /// How long one request may take from its head to the end of the
    /// answer, its body and a 60-second long-poll included; after that it
    /// is answered 408 and the connection closed.
    pub request: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            total: 4096,
            per_address: 512,
            head: Duration::from_secs(30),
            request: Duration::from_secs(120),
        }
    }
}

/// The connections each address holds now.
#[derive(Default)]
struct PerAddress {
    max: usize,
    held: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's place in [`PerAddress`], given back on drop.
struct AddressSlot(Arc<PerAddress>, std::net::IpAddr);

impl PerAddress {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<AddressSlot> {
        let mut m = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.clone(), ip))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self.0.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Whether the peer sends, within `within`, enough for hyper to tell
/// HTTP/1 from HTTP/2 (the first bytes, or the whole HTTP/2 preface when
/// they begin as one). hyper's own head timeout starts only after that
/// choice; a peer that connects and sends nothing, or a stalled preface,
/// would otherwise hold its connection for ever.
async fn version_known(stream: &tokio::net::TcpStream, within: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 24];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        if n >= PREFACE.len() || buf[..n] != PREFACE[..n] {
            return true;
        }
        // Part of a preface: peek answers at once while bytes wait, so
        // pause before looking again.
        if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(10)))
            .await
            .is_err()
        {
            return false;
        }
    }
}

/// Serves the API on `listener` until the process ends. An error accepting
/// one connection (the descriptor limit reached, say) is transient: the
/// loop waits a moment and goes on, it never ends the agent. Every
/// connection has a deadline for its request heads and every request one
/// for its whole exchange; the connections at once are bounded in all and
/// per address ([`ConnLimits`], its defaults here).
pub async fn serve(listener: tokio::net::TcpListener, api: Arc<Api>) -> anyhow::Result<()> {
    serve_with(listener, api, ConnLimits::default()).await
}

/// As [`serve`], with other limits.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    limits: ConnLimits,
) -> anyhow::Result<()> {
    let total = Arc::new(tokio::sync::Semaphore::new(limits.total));
    let per = Arc::new(PerAddress {
        max: limits.per_address,
        held: Default::default(),
    });
    let mut failing = false;
    loop {
        let permit = total.clone().acquire_owned().await?;
        let (stream, peer) = match listener.accept().await {
            Ok(c) => {
                failing = false;
                c
            }
            Err(e) => {
                if !failing {
                    eprintln!("warden-agent: accepting a connection failed (retrying): {e}");
                    failing = true;
                }
                drop(permit);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = per.take(peer.ip()) else {
            // Closed at once: this address holds its share already.
            continue;
        };
        let api = api.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            if !version_known(&stream, limits.head).await {
                return;
            }
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut()
                    .insert(crate::console::state::PeerAddr(peer.ip()));
                let api = api.clone();
                async move {
                    match tokio::time::timeout(limits.request, api.handle(req)).await {
                        Ok(r) => r,
                        Err(_) => {
                            let mut r = json(
                                StatusCode::REQUEST_TIMEOUT,
                                &serde_json::json!({"error": "request_timeout",
                                    "message": "the request took longer than the agent allows"}),
                            );
                            r.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                            Ok(r)
                        }
                    }
                }
            });
            let mut b =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            b.http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.head);
            b.http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Some(limits.head))
                .keep_alive_timeout(limits.head);
            let _ = b
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
#[path = "fleet_http_tests.rs"]
pub(crate) mod fleet_http_tests;
