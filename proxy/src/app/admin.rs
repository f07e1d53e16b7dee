//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`, `/top`,
//! `/anomaly` (a principal's baseline, in counts), and its one write,
//! `POST /anomaly/accept` (a bearer token: `--admin-token-file`).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use prometheus::Encoder;

use crate::hub::state::Gateway;

pub struct AdminApp {
    pub gateway: Arc<Gateway>,
    pub started: std::time::SystemTime,
    /// SHA-256 of the token writes need (`--admin-token-file`); `None`:
    /// writes are refused.
    pub token: Option<[u8; 32]>,
}

/// The SHA-256 of the token in `path` (its first line, trimmed; at least
/// 16 characters).
pub fn read_token(path: &std::path::Path) -> Result<[u8; 32], String> {
    use sha2::Digest;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?;
    let t = text.lines().next().unwrap_or("").trim();
    if t.len() < 16 {
        return Err(format!(
            "--admin-token-file {}: the token must be at least 16 characters",
            path.display()
        ));
    }
    Ok(sha2::Sha256::digest(t.as_bytes()).into())
}

/// The most bytes a write's body may hold.
const MAX_WRITE_BODY: usize = 16 * 1024;

fn json_reply(status: u16, v: serde_json::Value) -> Response<Vec<u8>> {
    reply(
        status,
        "application/json",
        serde_json::to_vec(&v).unwrap_or_default(),
    )
}

fn reply(status: u16, ct: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", ct)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

impl AdminApp {
    fn status(&self) -> serde_json::Value {
        let rt = self.gateway.runtime();
        let upstreams: Vec<_> = rt
            .health()
            .into_iter()
            .map(|(server, list)| {
                serde_json::json!({
                    "server": server,
                    "upstreams": list.iter().map(|(a, ok)| serde_json::json!({"address": a.to_string(), "healthy": ok})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let b = self.gateway.bundles.status.load();
        serde_json::json!({
            "bundle": {
                "revision": rt.snap.revision,
                "source": b.source,
                "loaded_at": b.loaded_at,
                "reloads": b.reloads,
                "failures": b.failures,
                "last_error": b.last_error,
                "last_error_at": b.last_error_at,
                "rollout": b.rollout,
                "labels": b.labels,
                "expires": b.expires,
                "policy_on_vm": rt.snap.policy.as_ref().map(|p| p.compiled_to_vm()),
                "policy_cacheable": rt.snap.policy.as_ref().map(|p| p.cacheable()),
            },
            "filters": rt.snap.chain.names(),
            "baselines": rt.snap.config.anomaly.as_ref().map(|_| {
                let b = &self.gateway.shared.baselines;
                serde_json::json!({"entries": b.len(), "limit": b.limit()})
            }),
            "quota_store": match (self.gateway.quota_store(), &rt.snap.config.redis) {
                (Some(q), _) => Some(serde_json::json!({
                    "url": q.display_url(),
                    "up": q.is_up(),
                    "probed": q.probed(),
                    "down_since": q.down_since(),
                    "leases": q.leases(),
                })),
                // Named by the bundle, but this process could not build it
                // (see the log): as down as a store can be.
                (None, Some(_)) => Some(serde_json::json!({
                    "url": null,
                    "up": false,
                    "probed": true,
                    "error": "the store named by `redis:` could not be set up (see the log)",
                })),
                (None, None) => None,
            },
            "quarantined_tools": self.gateway.shared.pins.quarantined().into_iter().map(|(s, t, f)| serde_json::json!({"server": s, "tool": t, "fingerprint": f})).collect::<Vec<_>>(),
            "routes": rt.snap.routes.iter().map(|r| serde_json::json!({"prefix": r.prefix, "host": r.host, "server": rt.snap.config.servers[r.server].name})).collect::<Vec<_>>(),
            "servers": upstreams,
            "virtual_servers": warden_local_servers::aggregate::status(),
            "started": humantime::format_rfc3339_seconds(self.started).to_string(),
            "version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// Whether the request carries the admin token (compared as digests,
    /// in constant time).
    fn authorized(&self, session: &ServerSession) -> Result<(), Response<Vec<u8>>> {
        use sha2::Digest;
        let Some(want) = &self.token else {
            return Err(json_reply(
                403,
                serde_json::json!({"error": "admin reads of baselines and writes are off: start the gateway with --admin-token-file"}),
            ));
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| -> [u8; 32] { sha2::Sha256::digest(t.trim().as_bytes()).into() });
        match given {
            Some(g) if g.iter().zip(want).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0 => Ok(()),
            _ => Err(json_reply(
                401,
                serde_json::json!({"error": "a bearer token the gateway's --admin-token-file holds is needed"}),
            )),
        }
    }

    /// `GET /anomaly?tenant=T&principal=P`: what the baseline of that
    /// principal holds, in counts (it keeps hashes, never names), and the
    /// table's use.
    fn anomaly(&self, query: Option<&str>) -> Response<Vec<u8>> {
        let pairs: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let b = &self.gateway.shared.baselines;
        let table = serde_json::json!({"entries": b.len(), "limit": b.limit()});
        let baseline = match (pairs.get("tenant"), pairs.get("principal")) {
            (Some(t), Some(p)) => b
                .get(&warden_filters::engines::grants::holder_key(t, p))
                .map(|x| {
                    serde_json::json!({
                        "first_seen": x.first_seen,
                        "last_seen": x.last_seen,
                        "servers": x.servers.len(),
                        "tools": x.tools.len(),
                        "hosts": x.hosts.len(),
                        "calls_by_hour": x.hours.iter().map(|h| (*h as f64 * 10.0).round() / 10.0).collect::<Vec<_>>(),
                        "usual_rate": x.usual_rate,
                        "denial_usual": x.denial_usual,
                        "judged": x.judged,
                    })
                }),
            _ => None,
        };
        json_reply(
            200,
            serde_json::json!({"table": table, "baseline": baseline}),
        )
    }

    /// `POST /anomaly/accept` with `{"tenant", "principal", "server",
    /// "tool", "host"}`: the behaviour becomes part of that principal's
    /// baseline here at once (and the fleet's, with `redis:`).
    async fn accept(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if let Err(r) = self.authorized(session) {
            return r;
        }
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_WRITE_BODY {
                        return json_reply(413, serde_json::json!({"error": "body too large"}));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return json_reply(400, serde_json::json!({"error": format!("body: {e}")}))
                }
            }
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Asked {
            tenant: String,
            principal: String,
            #[serde(default)]
            server: Option<String>,
            #[serde(default)]
            tool: Option<String>,
            #[serde(default)]
            host: Option<String>,
        }
        let asked: Asked = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => return json_reply(400, serde_json::json!({"error": e.to_string()})),
        };
        let a = warden_config::anomaly::Accept {
            tenant: asked.tenant,
            principal: asked.principal,
            server: asked.server,
            tool: asked.tool,
            host: asked.host,
        }
        .normalize();
        if let Err(e) = a.check(None) {
            return json_reply(400, serde_json::json!({"error": e}));
        }
        let facts = warden_filters::snapshot::accepted_facts(&a);
        let key = warden_filters::engines::grants::holder_key(&a.tenant, &a.principal);
        if self
            .gateway
            .shared
            .baselines
            .accept(&key, std::time::SystemTime::now(), &facts, true)
            .is_err()
        {
            return json_reply(
                507,
                serde_json::json!({"error": "the baseline table is full (limits.memory)"}),
            );
        }
        let rt = self.gateway.runtime();
        let shared = match (&rt.quota_store, &rt.snap.config.anomaly) {
            (Some(store), Some(cfg)) => Some(
                crate::hub::anomaly_store::add(store, &key, &facts, cfg.fleet_ttl)
                    .await
                    .is_ok(),
            ),
            _ => None,
        };
        tracing::info!(
            tenant = %a.tenant,
            principal = %a.principal,
            server = ?a.server,
            tool = ?a.tool,
            host = ?a.host,
            "behaviour accepted into the baseline"
        );
        json_reply(200, serde_json::json!({"accepted": true, "shared": shared}))
    }

    /// Ready when every server has at least one healthy upstream.
    fn ready(&self) -> (bool, Vec<String>) {
        let down: Vec<String> = self
            .gateway
            .runtime()
            .health()
            .into_iter()
            .filter(|(_, l)| !l.iter().any(|(_, ok)| *ok))
            .map(|(s, _)| s)
            .collect();
        // Not before the global quota store was tried once (up or not), so the
        // first calls are not decided by its failure mode for want of a probe.
        let probed = self.gateway.quota_store().is_none_or(|q| q.probed());
        let mut down = down;
        if !probed {
            down.push("(global quota store not probed yet)".into());
        }
        (down.is_empty(), down)
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        let post = session.req_header().method == http::Method::POST;
        match path.as_str() {
            "/anomaly/accept" if post => self.accept(session).await,
            "/anomaly/accept" => reply(405, "text/plain", b"POST only\n".to_vec()),
            // A principal's behaviour is an operator's to read, as accepting
            // into it is: the same token.
            "/anomaly" => match self.authorized(session) {
                Ok(()) => self.anomaly(session.req_header().uri.query()),
                Err(r) => r,
            },
            "/metrics" => {
                crate::observability::metrics::metrics()
                    .tools_quarantined
                    .set(self.gateway.shared.pins.quarantined().len() as i64);
                self.gateway.report_tables();
                if let Some(engine) = &self.gateway.runtime().snap.policy {
                    let (hits, misses) = engine.cache_stats();
                    let m = crate::observability::metrics::metrics();
                    m.policy_cache.with_label_values(&["hit"]).set(hits as i64);
                    m.policy_cache
                        .with_label_values(&["miss"])
                        .set(misses as i64);
                }
                let mut buf = Vec::new();
                let enc = prometheus::TextEncoder::new();
                if enc.encode(&prometheus::gather(), &mut buf).is_err() {
                    return reply(500, "text/plain", b"metrics encoding failed\n".to_vec());
                }
                reply(200, enc.format_type(), buf)
            }
            "/healthz" => reply(200, "text/plain", b"ok\n".to_vec()),
            // The public keys upstreams verify identity assertions with.
            "/.well-known/jwks.json" => {
                let rt = self.gateway.runtime();
                let (jwks, max_age) = match &rt.assertions {
                    Some(s) => (
                        s.jwks(std::time::SystemTime::now()),
                        s.cache_for().as_secs(),
                    ),
                    None => (serde_json::json!({"keys": []}), 60),
                };
                let mut r = reply(
                    200,
                    "application/json",
                    serde_json::to_vec(&jwks).unwrap_or_default(),
                );
                if let Ok(v) = http::HeaderValue::from_str(&format!("max-age={max_age}")) {
                    r.headers_mut().insert(http::header::CACHE_CONTROL, v);
                }
                r
            }
            // Requests per principal since first seen (metrics have no
            // principal label); `warden top` turns them into rates.
            "/top" => {
                let live = &self.gateway.live;
                let principals: Vec<_> = live
                    .principals(50)
                    .into_iter()
                    .map(|(id, n)| {
                        serde_json::json!({"principal": id, "requests": n, "anomalies": live.anomalies_of(&id)})
                    })
                    .collect();
                reply(
                    200,
                    "application/json",
                    serde_json::to_vec(&serde_json::json!({ "principals": principals }))
                        .unwrap_or_default(),
                )
            }
            "/readyz" => {
                let (ok, down) = self.ready();
                if self.gateway.is_leaving() {
                    // Load balancers stop sending here; the successor (which
                    // shares this admin socket after an upgrade) answers too.
                    reply(
                        503,
                        "text/plain",
                        b"leaving: draining or handing over\n".to_vec(),
                    )
                } else if ok {
                    reply(200, "text/plain", b"ready\n".to_vec())
                } else {
                    reply(
                        503,
                        "text/plain",
                        format!("no healthy upstream for: {}\n", down.join(", ")).into_bytes(),
                    )
                }
            }
            "/status" => reply(
                200,
                "application/json",
                serde_json::to_vec_pretty(&self.status()).unwrap_or_default(),
            ),
            _ => reply(
                404,
                "text/plain",
                b"not found: try /metrics /healthz /readyz /status /top /anomaly /.well-known/jwks.json\n"
                    .to_vec(),
            ),
        }
    }
}
