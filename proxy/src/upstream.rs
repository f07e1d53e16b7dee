//! Upstream pools: one load balancer per MCP server with TCP health checks,
//! peer construction, and session stickiness so a stateful MCP session keeps
//! talking to the replica that created it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::health_check::TcpHealthCheck;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, LoadBalancer};
use warden_config::model::Server;
use warden_filters::Snapshot;

use crate::state::Gateway;

/// A snapshot plus the live objects built from it (connection pools, health).
/// Everything a request reads, swapped as one value: the compiled bundle,
/// the upstream pools, and the fleet settings that follow the bundle (the
/// session sealer, the global quota store). A request loads it once, so it
/// never sees two generations.
pub struct Runtime {
    pub snap: Snapshot,
    pub pools: Vec<Arc<LoadBalancer<RoundRobin>>>,
    /// Seals session ids when the bundle has a `sessions` secret.
    pub sealer: Option<Arc<crate::seal::Sealer>>,
    /// The global quota store (the bundle's `redis` section), if any.
    pub quota_store: Option<Arc<crate::global::QuotaStore>>,
}

impl Runtime {
    pub fn new(snap: Snapshot) -> std::io::Result<Runtime> {
        let mut pools = Vec::with_capacity(snap.config.servers.len());
        for s in &snap.config.servers {
            let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(s.upstreams.iter().copied())?;
            let mut hc = match &s.tls {
                Some(t) => TcpHealthCheck::new_tls(&t.sni),
                None => TcpHealthCheck::new(),
            };
            hc.consecutive_failure = s.health_check.failures.get() as usize;
            hc.consecutive_success = s.health_check.successes.get() as usize;
            hc.peer_template.options.connection_timeout = Some(s.timeouts.connect);
            if let Some(t) = &s.tls {
                // The health check trusts exactly what requests trust.
                hc.peer_template.options.verify_cert = t.verify;
                hc.peer_template.options.verify_hostname = t.verify;
            }
            lb.set_health_check(hc);
            lb.health_check_frequency = Some(s.health_check.interval);
            pools.push(Arc::new(lb));
        }
        Ok(Runtime {
            snap,
            pools,
            sealer: None,
            quota_store: None,
        })
    }

    /// Picks a backend for `server`: the sticky one if it is healthy, otherwise
    /// the next healthy one not tried yet. `None` when every replica is down or tried.
    pub fn select(
        &self,
        server: usize,
        sticky: Option<SocketAddr>,
        tried: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let pool = &self.pools[server];
        if let Some(addr) = sticky {
            if !tried.contains(&addr) {
                if let Some(b) = pool
                    .backends()
                    .get_backend()
                    .iter()
                    .find(|b| b.addr.as_inet() == Some(&addr))
                {
                    if pool.backends().ready(b) {
                        return Some(addr);
                    }
                }
            }
        }
        let n = self.snap.config.servers[server].upstreams.len().max(1) * 2;
        let accept = |b: &Backend, healthy: bool| {
            healthy && b.addr.as_inet().is_some_and(|a| !tried.contains(a))
        };
        pool.select_with(b"", n, accept)
            .and_then(|b| b.addr.as_inet().copied())
    }

    /// Health of each upstream of each server, for `/status`.
    pub fn health(&self) -> Vec<(String, Vec<(SocketAddr, bool)>)> {
        self.snap
            .config
            .servers
            .iter()
            .zip(&self.pools)
            .map(|(s, lb)| {
                let backends = lb.backends();
                let set = backends.get_backend();
                let list = set
                    .iter()
                    .filter_map(|b| b.addr.as_inet().map(|a| (*a, backends.ready(b))))
                    .collect();
                (s.name.clone(), list)
            })
            .collect()
    }
}

/// Builds the Pingora peer for one upstream address of `server`.
pub fn peer(server: &Server, addr: SocketAddr, streaming: bool) -> HttpPeer {
    let (tls, sni) = match &server.tls {
        Some(t) => (true, t.sni.clone()),
        None => (false, String::new()),
    };
    let mut p = HttpPeer::new(addr, tls, sni);
    let t = &server.timeouts;
    p.options.connection_timeout = Some(t.connect);
    p.options.total_connection_timeout = Some(t.connect + Duration::from_secs(1));
    p.options.read_timeout = Some(if streaming { t.stream_idle } else { t.read });
    p.options.write_timeout = Some(t.write);
    p.options.idle_timeout = Some(t.idle);
    if let Some(tls) = &server.tls {
        p.options.verify_cert = tls.verify;
        p.options.verify_hostname = tls.verify;
        if tls.h2 {
            p.options.set_http_version(2, 1);
        }
    }
    p
}

/// Rewrites a request for the upstream: path, Host (the upstream's own
/// authority, which MCP servers validate against DNS rebinding), framing for
/// the judged body; strips the client's credentials, cookies and browser
/// Origin; asks for an uncompressed body so it can be inspected.
pub fn rewrite_request(
    req: &mut pingora::http::RequestHeader,
    ctx: &crate::ctx::RequestCtx,
    server: &Server,
    addr: SocketAddr,
    body_len: Option<usize>,
) -> pingora::Result<()> {
    use pingora::prelude::*;
    let uri: http::Uri = ctx
        .upstream_uri
        .parse()
        .map_err(|e| Error::because(ErrorType::InternalError, "upstream uri", e))?;
    req.set_uri(uri);
    let authority = server.host.clone().unwrap_or_else(|| addr.to_string());
    req.insert_header(http::header::HOST, authority)?;
    // The client's credentials are for the gateway, never for the upstream.
    req.remove_header(&http::header::AUTHORIZATION);
    req.remove_header(&http::header::PROXY_AUTHORIZATION);
    if let Some(id) = ctx
        .rt
        .as_ref()
        .and_then(|rt| rt.snap.config.identity.as_ref())
    {
        req.remove_header(id.api_key_header.as_str());
    }
    if let Some(c) = &server.credentials {
        req.insert_header(c.header.clone(), c.value.expose())?;
    }
    req.remove_header(&http::header::ORIGIN);
    req.remove_header(&http::header::COOKIE);
    // Warden's span becomes the upstream's parent.
    if let Some(t) = &ctx.trace {
        req.insert_header("traceparent", t.traceparent())?;
    }
    // A sealed session id goes upstream as the upstream's own id.
    if ctx.session_sealed {
        if let Some(sid) = &ctx.session_id {
            req.insert_header("mcp-session-id", sid.as_str())?;
        }
    }
    if let Some(n) = &ctx.name_out {
        req.insert_header(warden_filters::mcp::H_NAME, n.as_str())?;
    }
    // Mirrored argument headers: only those judged against the forwarded
    // body (or scanned), on every method; nothing the client sent as is.
    let names: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|n| n.as_str().starts_with(warden_filters::mcp::H_PARAM_PREFIX))
        .cloned()
        .collect();
    for n in names {
        req.remove_header(&n);
    }
    for (name, value) in ctx.params_out.iter().flatten() {
        req.append_header(format!("Mcp-Param-{name}"), value.as_str())?;
    }
    // The body has already been read and judged: the upstream must not ask for it.
    req.remove_header(&http::header::EXPECT);
    req.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
    if let Some(n) = body_len {
        req.remove_header(&http::header::TRANSFER_ENCODING);
        req.insert_header(http::header::CONTENT_LENGTH, n.to_string())?;
    }
    Ok(())
}

/// Runs TCP health checks for the current runtime's pools, re-reading the
/// runtime each round so a bundle swap is picked up.
pub struct HealthChecker {
    pub gateway: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last: Vec<Option<Instant>> = Vec::new();
        loop {
            let rt = self.gateway.runtime();
            if last.len() != rt.pools.len() {
                last = vec![None; rt.pools.len()];
            }
            let now = Instant::now();
            for (i, (pool, server)) in rt.pools.iter().zip(&rt.snap.config.servers).enumerate() {
                if last[i].is_none_or(|t| now.duration_since(t) >= server.health_check.interval) {
                    pool.backends().run_health_check(true).await;
                    last[i] = Some(now);
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}
