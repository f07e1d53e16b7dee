//! The agent's HTTP API (bearer-token authenticated):
//!
//! | route | token | what |
//! |---|---|---|
//! | `GET /v1/bundles/current` | fleet | the signed tar.gz; `ETag` = revision; `If-None-Match` + `Prefer: wait=N` (or `?wait=N`) long-polls up to 60 s for a newer one, else 304 |
//! | `POST /v1/fleet/report` | fleet | a gateway's `{id, revision, healthy, last_error}` |
//! | `GET /v1/fleet` | admin | members, their revisions, stale ones, the last build error |
//! | `GET /v1/history` | admin | published revisions |
//! | `POST /v1/publish` | admin | rebuild the source now |
//! | `POST /v1/rollback` | admin | `{revision}`: republish an earlier revision |
//! | `POST /v1/kill`, `/v1/revive` | admin | `{scope: all\|tenant\|principal\|server\|tool, value}` |
//! | `GET /healthz` | — | liveness |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use crate::store::{Report, Store};

pub struct Tokens {
    /// SHA-256 of the admin token.
    admin: [u8; 32],
    /// SHA-256 of the fleet token (gateways).
    fleet: [u8; 32],
}

impl Tokens {
    pub fn new(admin: &str, fleet: &str) -> Tokens {
        Tokens {
            admin: Sha256::digest(admin.as_bytes()).into(),
            fleet: Sha256::digest(fleet.as_bytes()).into(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Fleet,
}

pub struct Api {
    pub store: Arc<Store>,
    pub tokens: Tokens,
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
            .and_then(|v| v.strip_prefix("Bearer "))?;
        let d: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        if d == self.tokens.admin {
            Some(Role::Admin)
        } else if d == self.tokens.fleet {
            Some(Role::Fleet)
        } else {
            None
        }
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Resp, Infallible> {
        let path = req.uri().path().to_owned();
        if path == "/healthz" {
            return Ok(json(StatusCode::OK, &serde_json::json!({"ok": true})));
        }
        let Some(role) = self.role(&req) else {
            let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            r.headers_mut()
                .insert("www-authenticate", http::HeaderValue::from_static("Bearer"));
            return Ok(r);
        };
        let admin_only = |r: Role| r == Role::Admin;
        Ok(match (req.method().clone(), path.as_str()) {
            (Method::GET, "/v1/bundles/current") => self.bundle(req).await,
            (Method::POST, "/v1/fleet/report") => match read_json::<Report>(req).await {
                Ok(r) => {
                    self.store.report(r);
                    json(StatusCode::OK, &serde_json::json!({"ok": true}))
                }
                Err(e) => error(StatusCode::BAD_REQUEST, &e),
            },
            _ if !admin_only(role) => error(StatusCode::FORBIDDEN, "admin token required"),
            (Method::GET, "/v1/fleet") => json(StatusCode::OK, &self.store.fleet()),
            (Method::GET, "/v1/history") => {
                json(StatusCode::OK, &serde_json::json!(self.store.history()))
            }
            (Method::POST, "/v1/publish") => {
                let store = self.store.clone();
                let res =
                    tokio::task::spawn_blocking(move || store.publish_source("api", true)).await;
                match res {
                    Ok(Ok(p)) => json(
                        StatusCode::OK,
                        &serde_json::json!({"published": p.map(|p| p.revision.clone())}),
                    ),
                    Ok(Err(e)) => json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &serde_json::json!({"error": "bundle refused", "problems": e.0.iter().map(|p| p.to_string()).collect::<Vec<_>>()}),
                    ),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
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
                        self.mutate(move || store.rollback("api", &b.revision))
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
                        self.mutate(move || store.kill("api", &b.scope, &b.value, on))
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
                &serde_json::json!({"published": p.revision}),
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
        let mut rx = self.store.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let cur = rx.borrow_and_update().clone();
            match cur {
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
                    return r;
                }
                _ => {}
            }
            // Nothing newer: wait for a publish or the deadline.
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = if self.store.current().is_some() {
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

/// Serves the API until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, api: Arc<Api>) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let api = api.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| api.clone().handle(req));
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
        });
    }
}
