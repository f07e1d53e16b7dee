//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`, `/top`.

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
        match path.as_str() {
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
                let principals: Vec<_> = self
                    .gateway
                    .live
                    .principals(50)
                    .into_iter()
                    .map(|(id, n)| serde_json::json!({"principal": id, "requests": n}))
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
                b"not found: try /metrics /healthz /readyz /status /top /.well-known/jwks.json\n"
                    .to_vec(),
            ),
        }
    }
}
