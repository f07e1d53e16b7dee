//! Health that knows MCP: active probes that speak the protocol, and
//! passive ejection of replicas whose calls keep failing.
//!
//! - **Probes** (`health_check.probe`): `tcp` (a connection, the default),
//!   `ping` (an MCP `ping`, which must be answered with a JSON-RPC result)
//!   or `initialize` (for servers that take nothing else outside a session;
//!   the probe's session is deleted after). A server that accepts TCP but
//!   answers with an HTTP error, a JSON-RPC error, something that is not
//!   JSON-RPC, or nothing within `timeout` fails the probe. An answer 401
//!   or 403 passes: the server is up and speaking MCP's authorization (a
//!   probe carries the server's static `credentials`, never a user's).
//! - **Passive ejection** (`health_check.eject`): `failures` calls in a row
//!   failing on one replica (connect errors, 5xx the upstream itself sent,
//!   replies the gateway cannot read) take it out of rotation for
//!   `cooldown`; one success resets the count. What a caller can provoke
//!   (the gateway's own timeouts, a reply over the size limit) does not
//!   count, and the last replica in rotation is never ejected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::Result;
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::Backend;
use warden_config::model::{Ejection, Probe, Server};

/// An active MCP probe of one server's replicas.
pub struct McpHealthCheck {
    server: String,
    probe: Probe,
    path: String,
    timeout: Duration,
    tls: Option<warden_config::model::UpstreamTls>,
    host: Option<String>,
    credentials: Option<(String, String)>,
    successes: usize,
    failures: usize,
}

impl McpHealthCheck {
    pub fn new(s: &Server) -> McpHealthCheck {
        McpHealthCheck {
            server: s.name.clone(),
            probe: s.health_check.probe,
            path: s.health_check.path.clone(),
            timeout: s.health_check.timeout,
            tls: s.tls.clone(),
            host: s.host.clone(),
            credentials: s
                .credentials
                .as_ref()
                .map(|c| (c.header.clone(), c.value.expose().to_owned())),
            successes: s.health_check.successes.get() as usize,
            failures: s.health_check.failures.get() as usize,
        }
    }

    fn fail(&self, addr: SocketAddr, why: impl std::fmt::Display) -> Box<pingora::Error> {
        tracing::debug!(server = %self.server, upstream = %addr, "MCP probe failed: {why}");
        pingora::Error::explain(
            pingora::ErrorType::Custom("mcp_probe_failed"),
            format!("MCP probe of {addr}: {why}"),
        )
    }

    async fn probe(&self, addr: SocketAddr) -> std::result::Result<(), String> {
        let mut b = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        let url = match &self.tls {
            Some(t) => {
                // Reach this replica under the name its certificate carries.
                b = b.resolve(&t.sni, addr);
                if !t.verify {
                    b = b.danger_accept_invalid_certs(true);
                }
                format!("https://{}:{}{}", t.sni, addr.port(), self.path)
            }
            None => format!("http://{addr}{}", self.path),
        };
        let client = b.build().map_err(|e| e.to_string())?;
        let body = match self.probe {
            Probe::Initialize => serde_json::json!({
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "warden-health", "version": env!("CARGO_PKG_VERSION")}},
            }),
            _ => serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
        };
        let mut req = client
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        if self.probe == Probe::Ping {
            req = req.header("mcp-protocol-version", "2025-06-18");
        }
        if let Some(h) = &self.host {
            req = req.header("host", h);
        }
        if let Some((h, v)) = &self.credentials {
            req = req.header(h.as_str(), v.as_str());
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Ok(());
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let text = resp.text().await.map_err(|e| e.to_string())?;
        let answer = if sse {
            // The first event carrying data is the answer.
            text.split("\n\n")
                .map(|ev| {
                    ev.lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .find(|d| !d.is_empty())
                .unwrap_or_default()
        } else {
            text
        };
        let v: serde_json::Value =
            serde_json::from_str(&answer).map_err(|_| "the answer is not JSON-RPC".to_owned())?;
        if let Some(sid) = session.filter(|_| self.probe == Probe::Initialize) {
            // The probe's own session ends here.
            let mut del = client.delete(&url).header("mcp-session-id", sid);
            if let Some(h) = &self.host {
                del = del.header("host", h);
            }
            if let Some((h, v)) = &self.credentials {
                del = del.header(h.as_str(), v.as_str());
            }
            let _ = del.send().await;
        }
        if v["id"] != 1 || v["jsonrpc"] != "2.0" {
            return Err("the answer is not the probe's".into());
        }
        if !v["result"].is_object() {
            return Err(format!(
                "JSON-RPC error {}",
                v["error"]["code"].as_i64().unwrap_or_default()
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl HealthCheck for McpHealthCheck {
    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.successes
        } else {
            self.failures
        }
    }

    async fn check(&self, target: &Backend) -> Result<()> {
        let Some(addr) = target.addr.as_inet().copied() else {
            return Err(pingora::Error::explain(
                pingora::ErrorType::Custom("mcp_probe_failed"),
                "not an IP address",
            ));
        };
        self.probe(addr).await.map_err(|why| self.fail(addr, why))
    }
}

/// Passive ejection of one server's replicas (see the module docs).
#[derive(Default)]
pub struct Outliers {
    cfg: Option<Ejection>,
    /// Replicas of the server: the last one in rotation stays.
    replicas: usize,
    /// Per replica: failed calls in a row, and until when it is out.
    state: Mutex<HashMap<SocketAddr, (u32, Option<Instant>)>>,
}

impl Outliers {
    pub fn new(cfg: Option<Ejection>, replicas: usize) -> Outliers {
        Outliers {
            cfg,
            replicas,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, (u32, Option<Instant>)>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `addr` is out of rotation now.
    pub fn ejected(&self, addr: SocketAddr) -> bool {
        self.cfg.is_some()
            && self
                .lock()
                .get(&addr)
                .and_then(|s| s.1)
                .is_some_and(|until| Instant::now() < until)
    }

    /// Counts one call's result on `addr`.
    pub fn record(&self, server: &str, addr: SocketAddr, ok: bool) {
        let Some(cfg) = self.cfg else {
            return;
        };
        let mut st = self.lock();
        let e = st.entry(addr).or_default();
        if ok {
            e.0 = 0;
            return;
        }
        e.0 += 1;
        let now = Instant::now();
        if e.0 >= cfg.failures.get() && e.1.is_none_or(|u| now >= u) {
            let out = st
                .values()
                .filter(|(_, until)| until.is_some_and(|u| now < u))
                .count();
            if out + 1 >= self.replicas {
                // The last replica in rotation serves on (its errors reach
                // the callers) rather than leave the server with none.
                return;
            }
            let e = st.entry(addr).or_default();
            e.0 = 0;
            e.1 = Some(now + cfg.cooldown);
            tracing::warn!(
                server = %server,
                upstream = %addr,
                "upstream ejected: {} calls in a row failed; out of rotation for {}",
                cfg.failures,
                humantime::format_duration(cfg.cooldown)
            );
            crate::observability::metrics::metrics()
                .ejections
                .with_label_values(&[server])
                .inc();
        }
    }
}
