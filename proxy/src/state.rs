//! Process-wide gateway state: the current runtime (swapped atomically),
//! session stickiness, the audit sink.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::audit::AuditSink;
use crate::metrics::{metrics, LabelGuard};
use crate::upstream::Runtime;

pub struct Gateway {
    current: ArcSwap<Runtime>,
    /// `server \0 session` → the replica that serves the session and the
    /// principal that opened it.
    sticky: moka::sync::Cache<String, SessionEntry>,
    pub audit: AuditSink,
    pub tool_labels: LabelGuard,
    /// Which request each reply answers, across exchanges (see `ledger`).
    pub ledger: crate::ledger::Ledger,
    pub bundles: crate::bundles::BundleState,
    /// Quota counters and tool pins, carried across bundle swaps.
    pub shared: std::sync::Arc<warden_filters::snapshot::Shared>,
    /// Span export (OTLP), when configured.
    pub telemetry: std::sync::OnceLock<crate::otel::Telemetry>,
    next_request: AtomicU64,
}

impl Gateway {
    pub fn new(
        mut rt: Runtime,
        audit: AuditSink,
        source: String,
        shared: std::sync::Arc<warden_filters::snapshot::Shared>,
    ) -> Gateway {
        metrics()
            .bundle_info
            .with_label_values(&[rt.snap.revision.as_str()])
            .set(1);
        let revision = rt.snap.revision.clone();
        adopt_fleet_settings(&mut rt, None);
        Gateway {
            telemetry: std::sync::OnceLock::new(),
            current: ArcSwap::from_pointee(rt),
            sticky: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            bundles: crate::bundles::BundleState::new(source, revision),
            shared,
            audit,
            tool_labels: LabelGuard::new(1000),
            ledger: crate::ledger::Ledger::new(1_000_000, Duration::from_secs(3600)),
            next_request: AtomicU64::new(1),
        }
    }

    /// The global quota store, when the current bundle has one.
    pub fn quota_store(&self) -> Option<Arc<crate::global::QuotaStore>> {
        self.current.load().quota_store.clone()
    }

    /// The runtime a request uses from start to end.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Publishes a new runtime; requests in flight keep the one they loaded.
    pub fn swap(&self, mut rt: Runtime) {
        adopt_fleet_settings(&mut rt, Some(&self.current.load()));
        let m = metrics();
        let old = self.current.swap(Arc::new(rt));
        m.bundle_info
            .with_label_values(&[old.snap.revision.as_str()])
            .set(0);
        m.bundle_info
            .with_label_values(&[self.current.load().snap.revision.as_str()])
            .set(1);
    }

    pub fn next_request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    pub fn sticky_get(&self, server: &str, session: &str) -> Option<SocketAddr> {
        self.sticky
            .get(&sticky_key(server, session))
            .map(|e| e.addr)
    }

    /// The upstream replica that holds this request's session: named in a
    /// sealed session id, or remembered by this process.
    pub fn sticky_for(&self, server: &str, ctx: &crate::ctx::RequestCtx) -> Option<SocketAddr> {
        ctx.sealed_upstream
            .or_else(|| ctx.session_key().and_then(|k| self.sticky_get(server, &k)))
    }

    /// Who opened `session` on `server`, when known.
    pub fn session_owner(&self, server: &str, session: &str) -> Option<Arc<str>> {
        self.sticky
            .get(&sticky_key(server, session))
            .map(|e| e.owner)
    }

    /// Records the replica serving `session` and binds the session to `owner`
    /// (see [`owner_key`]); an existing binding keeps its first owner.
    pub fn sticky_set(&self, server: &str, session: &str, addr: SocketAddr, owner: &str) {
        let key = sticky_key(server, session);
        let owner = match self.sticky.get(&key) {
            Some(e) => e.owner,
            None => owner.into(),
        };
        self.sticky.insert(key, SessionEntry { addr, owner });
    }

    pub fn sticky_forget(&self, server: &str, session: &str) {
        self.sticky.invalidate(&sticky_key(server, session));
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
            crate::global::QuotaStore::new(r)
                .map_err(|e| tracing::error!(error = %e, "global quota store"))
                .ok()
        }),
    };
    let sealer = cfg
        .session_seal
        .as_ref()
        .and_then(|s| crate::seal::Sealer::new(s.expose()));
    let kept_sealer = before
        .and_then(|b| b.sealer.clone())
        .filter(|k| sealer.as_ref().map(|s| s.id) == Some(k.id));
    rt.sealer = kept_sealer.or_else(|| sealer.map(Arc::new));
}

#[derive(Clone)]
struct SessionEntry {
    addr: SocketAddr,
    owner: Arc<str>,
}

/// The identity a session is bound to: tenant and principal id.
pub fn owner_key(p: &warden_filters::Principal) -> String {
    format!("{}\0{}", p.tenant, p.id)
}

fn sticky_key(server: &str, session: &str) -> String {
    let mut k = String::with_capacity(server.len() + session.len() + 1);
    k.push_str(server);
    k.push('\0');
    k.push_str(session);
    k
}
