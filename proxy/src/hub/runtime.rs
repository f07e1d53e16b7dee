//! The runtime every request reads: the compiled bundle, the upstream pools
//! built from it, and the fleet settings that follow it (session sealer,
//! global quota store), swapped as one value so a request never sees two
//! generations.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_load_balancing::health_check::TcpHealthCheck;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, LoadBalancer};
use warden_filters::Snapshot;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::{Duration, Instant};

use crate::observability::metrics::metrics;

/// A snapshot plus the live objects built from it (connection pools, health).
/// Everything a request reads, swapped as one value: the compiled bundle,
/// the upstream pools, and the fleet settings that follow the bundle (the
/// session sealer, the global quota store). A request loads it once, so it
/// never sees two generations.
pub struct Runtime {
    pub snap: Snapshot,
    pub pools: Vec<Arc<LoadBalancer<RoundRobin>>>,
    /// Seals session ids when the bundle has a `sessions` secret.
    pub sealer: Option<Arc<crate::sessions::seal::Sealer>>,
    /// The global quota store (the bundle's `redis` section), if any.
    pub quota_store: Option<Arc<crate::hub::quota_store::QuotaStore>>,
    /// Signs identity assertions, when a server asks for them.
    pub assertions: Option<Arc<crate::identity::assertion::Signer>>,
    /// The bundle revision, shared by every audit record.
    pub revision: Arc<str>,
    /// Per server (same order as `snap.config.servers`): names and metric
    /// handles resolved once per bundle, not per request.
    pub servers: Vec<ServerMeta>,
    /// Per server: replicas out of rotation after failed calls (see `health`).
    pub outliers: Vec<crate::upstreams::health::Outliers>,
}

/// A server of a runtime's bundle: its position in `snap.config.servers`,
/// `pools`, `servers` and `outliers` (valid for that runtime only, which a
/// request holds for its whole life).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerId(pub usize);

impl Runtime {
    /// The bundle's definition of server `id`.
    pub fn server(&self, id: ServerId) -> &warden_config::model::Server {
        &self.snap.config.servers[id.0]
    }

    /// Server `id`'s names and metric handles.
    pub fn meta(&self, id: ServerId) -> &ServerMeta {
        &self.servers[id.0]
    }

    /// Whether calls of `tool` on `server` are logged in full (`audit.log_io`).
    pub fn logs_io(&self, server: ServerId, tool: &str) -> bool {
        let cfg = &self.snap.config;
        !cfg.audit.log_io.is_empty()
            && cfg.servers.get(server.0).is_some_and(|s| {
                // A virtual server's leg: its member's leg logs (with the
                // tool's own risk).
                if s.composed.is_some() {
                    return false;
                }
                let risk = cfg
                    .catalog
                    .get(&s.name)
                    .map_or(warden_config::access::Risk::Medium, |c| c.risk(tool));
                cfg.audit.log_io.contains(&risk)
            })
    }

    /// Server `id`'s replicas out of rotation.
    pub fn outliers(&self, id: ServerId) -> &crate::upstreams::health::Outliers {
        &self.outliers[id.0]
    }
}

/// A server's names as audit records carry them, and its metric handles.
pub struct ServerMeta {
    pub name: Arc<str>,
    pub group: Arc<str>,
    /// Request latency for POST, GET, DELETE.
    pub latency: [prometheus::Histogram; 3],
    pub body_in: prometheus::Histogram,
    pub body_out: prometheus::Histogram,
    /// `warden_requests_total` of POSTs answered 200, the common case.
    pub posts_ok: prometheus::IntCounter,
}

impl ServerMeta {
    fn new(name: &str, group: &str) -> ServerMeta {
        let m = metrics();
        ServerMeta {
            name: name.into(),
            group: group.into(),
            latency: ["POST", "GET", "DELETE"].map(|h| m.latency.with_label_values(&[name, h])),
            body_in: m.body_bytes.with_label_values(&[name, "request"]),
            body_out: m.body_bytes.with_label_values(&[name, "response"]),
            posts_ok: m.requests.with_label_values(&[name, "POST", "200"]),
        }
    }

    /// The latency histogram for `method` (POST, GET or DELETE).
    pub fn latency(&self, method: &str) -> Option<&prometheus::Histogram> {
        match method {
            "POST" => Some(&self.latency[0]),
            "GET" => Some(&self.latency[1]),
            "DELETE" => Some(&self.latency[2]),
            _ => None,
        }
    }
}

impl Runtime {
    pub fn new(snap: Snapshot) -> std::io::Result<Runtime> {
        let mut pools = Vec::with_capacity(snap.config.servers.len());
        for s in &snap.config.servers {
            // A stdio server is reached through the gateway's own bridge.
            let addrs = match (&s.stdio, &s.composed) {
                (Some(_), _) => vec![warden_local_servers::stdio::bridge_for(s, &snap.redactor)?],
                (_, Some(_)) => vec![warden_local_servers::aggregate::aggregator_for(
                    s,
                    &snap.config,
                )?],
                _ => s.upstreams.clone(),
            };
            let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(addrs)?;
            if s.health_check.probe == warden_config::model::Probe::Tcp {
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
            } else {
                lb.set_health_check(Box::new(crate::upstreams::health::McpHealthCheck::new(s)));
            }
            lb.health_check_frequency = Some(s.health_check.interval);
            pools.push(Arc::new(lb));
        }
        let servers = snap
            .config
            .servers
            .iter()
            .map(|s| ServerMeta::new(&s.name, &s.group))
            .collect();
        let user_tokens = |s: &&warden_config::model::Server| {
            s.assertion.is_some()
                || s.caller_token.is_some()
                || s.oauth
                    .as_ref()
                    .is_some_and(|o| o.grant == warden_config::model::OAuthGrant::TokenExchange)
        };
        for s in snap.config.servers.iter().filter(user_tokens) {
            if s.tls.is_none() && s.upstreams.iter().any(|a| !a.ip().is_loopback()) {
                tracing::warn!(
                    server = %s.name,
                    "tokens naming users go to this server over plain HTTP off this host: anyone on the path can replay one until it expires (set `tls:`)"
                );
            }
        }
        let assertions = snap
            .config
            .servers
            .iter()
            .any(|s| s.assertion.is_some())
            .then(|| {
                Arc::new(crate::identity::assertion::Signer::new(
                    &snap.config.assertions,
                    snap.config.session_seal.as_ref().map(|s| s.expose()),
                ))
            });
        let outliers = snap
            .config
            .servers
            .iter()
            .map(|s| {
                crate::upstreams::health::Outliers::new(
                    s.health_check.eject,
                    s.upstreams.len().max(1),
                )
            })
            .collect();
        Ok(Runtime {
            outliers,
            assertions,
            revision: snap.revision.as_str().into(),
            servers,
            snap,
            pools,
            sealer: None,
            quota_store: None,
        })
    }

    /// Whether `addr` is one of `server`'s replicas (healthy or not).
    pub fn has_replica(&self, server: ServerId, addr: SocketAddr) -> bool {
        self.pools[server.0]
            .backends()
            .get_backend()
            .iter()
            .any(|b| b.addr.as_inet() == Some(&addr))
    }

    /// Picks a backend for `server`: the sticky one if it is healthy, otherwise
    /// the next healthy one not tried yet. `None` when every replica is down or tried.
    pub fn select(
        &self,
        server: ServerId,
        sticky: Option<SocketAddr>,
        tried: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let pool = &self.pools[server.0];
        if let Some(addr) = sticky {
            if !tried.contains(&addr) {
                if let Some(b) = pool
                    .backends()
                    .get_backend()
                    .iter()
                    .find(|b| b.addr.as_inet() == Some(&addr))
                {
                    if pool.backends().ready(b) && !self.outliers(server).ejected(addr) {
                        return Some(addr);
                    }
                }
            }
        }
        let n = self.server(server).upstreams.len().max(1) * 2;
        let out = self.outliers(server);
        let accept = |b: &Backend, healthy: bool| {
            healthy
                && b.addr
                    .as_inet()
                    .is_some_and(|a| !tried.contains(a) && !out.ejected(*a))
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
            .zip(&self.outliers)
            .map(|((s, lb), out)| {
                let backends = lb.backends();
                let set = backends.get_backend();
                let list = set
                    .iter()
                    .filter_map(|b| {
                        b.addr
                            .as_inet()
                            .map(|a| (*a, backends.ready(b) && !out.ejected(*a)))
                    })
                    .collect();
                (s.name.clone(), list)
            })
            .collect()
    }
}

/// The current runtime, swapped atomically. Requests load it once; background
/// services re-read it each round, so a bundle swap reaches them too.
pub struct Current {
    rt: ArcSwap<Runtime>,
}

impl Current {
    pub fn new(mut rt: Runtime) -> Current {
        adopt_fleet_settings(&mut rt, None);
        metrics()
            .bundle_info
            .with_label_values(&[rt.snap.revision.as_str()])
            .set(1);
        Current {
            rt: ArcSwap::from_pointee(rt),
        }
    }

    /// The runtime a request uses from start to end.
    pub fn load(&self) -> Arc<Runtime> {
        self.rt.load_full()
    }

    /// Publishes a new runtime; requests in flight keep the one they loaded.
    pub fn swap(&self, mut rt: Runtime) {
        adopt_fleet_settings(&mut rt, Some(&self.rt.load()));
        let m = metrics();
        let old = self.rt.swap(Arc::new(rt));
        m.bundle_info
            .with_label_values(&[old.snap.revision.as_str()])
            .set(0);
        m.bundle_info
            .with_label_values(&[self.rt.load().snap.revision.as_str()])
            .set(1);
    }

    /// The global quota store, when the current bundle has one.
    pub fn quota_store(&self) -> Option<Arc<crate::hub::quota_store::QuotaStore>> {
        self.rt.load().quota_store.clone()
    }
}

/// The quota store and the session sealer follow the bundle's `redis` and
/// `sessions` sections: carried over from the runtime in use while those are
/// unchanged, rebuilt when they change (a new store starts with no leases; a
/// new secret ends every sealed session).
fn adopt_fleet_settings(rt: &mut Runtime, before: Option<&Runtime>) {
    let cfg = &rt.snap.config;
    let kept_store = before
        .and_then(|b| b.quota_store.clone())
        .filter(|s| cfg.redis.as_ref() == Some(&s.cfg));
    rt.quota_store = match kept_store {
        Some(s) => Some(s),
        None => cfg.redis.clone().and_then(|r| {
            crate::hub::quota_store::QuotaStore::new(r)
                .map_err(|e| tracing::error!(error = %e, "global quota store"))
                .ok()
        }),
    };
    // The fleet's secret, else this install's: sessions outlive a restart
    // and a binary upgrade either way.
    let sealer = match cfg.session_seal.as_ref() {
        Some(s) => crate::sessions::seal::Sealer::new(s.expose()),
        None => {
            crate::sessions::seal::install_secret().and_then(crate::sessions::seal::Sealer::new)
        }
    };
    let kept_sealer = before
        .and_then(|b| b.sealer.clone())
        .filter(|k| sealer.as_ref().map(|s| s.id) == Some(k.id));
    rt.sealer = kept_sealer.or_else(|| sealer.map(Arc::new));
}

/// Runs TCP health checks for the current runtime's pools, re-reading the
/// runtime each round so a bundle swap is picked up.
pub struct HealthChecker {
    pub current: Arc<Current>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last: Vec<Option<Instant>> = Vec::new();
        // What each upstream was last seen as: one concise line per change
        // (Pingora's own line dumps the whole peer configuration).
        let mut seen: std::collections::HashMap<(String, SocketAddr), bool> =
            std::collections::HashMap::new();
        loop {
            let rt = self.current.load();
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
            for (server, list) in rt.health() {
                for (addr, healthy) in list {
                    let before = seen.insert((server.clone(), addr), healthy);
                    match (before, healthy) {
                        (Some(true) | None, false) => tracing::warn!(
                            server = %server,
                            upstream = %addr,
                            "upstream down: its health check fails; calls go to the other replicas, or get -31001"
                        ),
                        (Some(false), true) => {
                            tracing::info!(server = %server, upstream = %addr, "upstream healthy again")
                        }
                        _ => {}
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// Probes the store every second (connect, PING) so an outage is noticed
/// without a request waiting on it, and recovery without a request risking it;
/// then shares tool pins through it.
pub struct StoreProbe {
    pub current: Arc<Current>,
    pub pins: Arc<warden_filters::guards::tools::ToolPins>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for StoreProbe {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    if let Some(store) = self.current.quota_store() {
                        store.probe().await;
                        let rt = self.current.load();
                        if store.is_up() && rt.snap.config.tool_pinning {
                            let servers: Vec<String> =
                                rt.snap.config.servers.iter().map(|s| s.name.clone()).collect();
                            store.sync_pins(&self.pins, &servers).await;
                        }
                    }
                }
            }
        }
    }
}
