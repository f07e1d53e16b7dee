//! Global quotas: limits enforced across replicas through Redis, without a
//! Redis round trip per call.
//!
//! Each replica *leases* blocks of a key's window from Redis: one Lua script
//! grants `min(want, limit − used)` units and adds them to the window's
//! counter atomically, so the units granted to all replicas together never
//! exceed the limit. A replica admits a call only from units it was granted
//! (a lock-free decrement of its local lease); when the lease runs below half
//! a block it fetches the next one in the background, and a call waits on
//! Redis only when its lease is empty. **Overshoot: none** while Redis
//! answers — admitted ≤ granted ≤ limit per window. The price is under-use:
//! units leased but not spent by the end of a window (at most ~1.5 blocks
//! per replica and key) are lost to the fleet.
//!
//! While Redis is unreachable (a failed call, a timeout, or the background
//! probe), each global quota follows its `on_store_failure`: `local` (each
//! replica enforces the limit on its own counters, which include what it
//! spent from leases this window — so the fleet admits at most
//! replicas × limit per window during the outage) or `closed` (refuse).
//! A probe every second notices recovery; leasing resumes by itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use warden_config::guards::{Redis, StoreFailure};
use warden_filters::guards::quota::{GlobalDemand, GlobalVerdict};

use crate::observability::metrics::metrics;

mod budgets;
pub use budgets::{BudgetKey, Reserved};

/// Grant `min(ARGV[2], ARGV[1] − used)` units of KEYS[1], expire it after ARGV[3] ms.
const GRANT: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used)
if grant <= 0 then return 0 end
redis.call('INCRBY', KEYS[1], grant)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return grant
"#;

struct Lease {
    /// The window this lease belongs to.
    index: u64,
    remaining: AtomicU64,
    /// The store has no more units for this window.
    dry: AtomicBool,
    fetching: AtomicBool,
    refill: tokio::sync::Mutex<()>,
    /// Unix second after which the window is over.
    ends: u64,
}

pub struct QuotaStore {
    pub cfg: Redis,
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    script: redis::Script,
    /// [`FLOW_RAISE`], its digest computed once.
    flow_script: redis::Script,
    /// [`FLOW_MERGE`].
    merge_script: redis::Script,
    /// [`TASK_CLAIM`].
    task_script: redis::Script,
    up: AtomicBool,
    /// Per counter key, the lease of its current window (looked up by `&[u8]`,
    /// no allocation on the hot path).
    leases: dashmap::DashMap<Vec<u8>, Arc<ArcSwap<Lease>>, foldhash::fast::RandomState>,
    /// Unix second the store was last seen failing.
    down_since: AtomicU64,
    probed: AtomicBool,
}

/// A global quota decided without the store (it is down, or the bundle
/// names one this process could not build): `on_store_failure` applies,
/// and `warden_quota_store_fallbacks_total` counts it.
pub fn unavailable(d: &GlobalDemand) -> GlobalVerdict {
    metrics()
        .quota_store_fallbacks
        .with_label_values(&[match d.on_failure {
            StoreFailure::Local => "local",
            StoreFailure::Closed => "closed",
        }])
        .inc();
    GlobalVerdict::Unavailable
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn take(n: &AtomicU64, cost: u64) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(cost))
        .is_ok()
}

impl QuotaStore {
    pub fn new(cfg: Redis) -> Result<Arc<QuotaStore>, String> {
        // `rediss://`: rustls with the ring provider (the workspace's), the
        // system's root certificates. The process-wide provider is set once
        // so rustls never has to guess between the providers its
        // dependents enable.
        if cfg.url.starts_with("rediss://") {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client =
            redis::Client::open(cfg.url.as_str()).map_err(|e| format!("redis.url: {e}"))?;
        Ok(Arc::new(QuotaStore {
            cfg,
            client,
            conn: ArcSwapOption::empty(),
            script: redis::Script::new(GRANT),
            flow_script: redis::Script::new(FLOW_RAISE),
            merge_script: redis::Script::new(FLOW_MERGE),
            task_script: redis::Script::new(TASK_CLAIM),
            up: AtomicBool::new(false),
            leases: dashmap::DashMap::with_hasher(foldhash::fast::RandomState::default()),
            down_since: AtomicU64::new(unix(SystemTime::now())),
            probed: AtomicBool::new(false),
        }))
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The URL without its password, for `/status`.
    pub fn display_url(&self) -> String {
        match url::Url::parse(&self.cfg.url) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            Err(_) => "(invalid)".into(),
        }
    }

    pub fn probed(&self) -> bool {
        self.probed.load(Ordering::Acquire)
    }

    /// Unix second the store was last seen failing, while it is down.
    pub fn down_since(&self) -> Option<u64> {
        (!self.is_up()).then(|| self.down_since.load(Ordering::Relaxed))
    }

    pub fn leases(&self) -> usize {
        self.leases.len()
    }

    fn set_up(&self, up: bool) {
        let was = self.up.swap(up, Ordering::AcqRel);
        if was && !up {
            self.down_since
                .store(unix(SystemTime::now()), Ordering::Relaxed);
            tracing::warn!(store = %self.display_url(), "global quota store unreachable; on_store_failure applies");
        } else if !was && up {
            tracing::info!(store = %self.display_url(), "global quota store reachable");
        }
        metrics()
            .quota_store_up
            .with_label_values(&[&self.display_url()])
            .set(i64::from(up));
    }

    /// Connects if needed and pings; run every second by the background probe.
    pub async fn probe(&self) {
        let conn = match self.conn.load_full() {
            Some(c) => Some((*c).clone()),
            None => {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(self.cfg.timeout)
                    .set_response_timeout(self.cfg.timeout)
                    .set_number_of_retries(1);
                match tokio::time::timeout(
                    self.cfg.timeout * 4,
                    ConnectionManager::new_with_config(self.client.clone(), cfg),
                )
                .await
                {
                    Ok(Ok(c)) => {
                        self.conn.store(Some(Arc::new(c.clone())));
                        Some(c)
                    }
                    _ => None,
                }
            }
        };
        let ok = match conn {
            Some(mut c) => matches!(
                tokio::time::timeout(
                    self.cfg.timeout,
                    redis::cmd("PING").query_async::<String>(&mut c)
                )
                .await,
                Ok(Ok(_))
            ),
            None => false,
        };
        self.set_up(ok);
        self.probed.store(true, Ordering::Release);
        // Forget leases of windows that are over.
        let now = unix(SystemTime::now());
        if self.leases.len() > 10_000 {
            self.leases.retain(|_, l| l.load().ends > now);
        }
    }

    fn lease(&self, key: &[u8], index: u64, ends: u64) -> Arc<Lease> {
        let fresh = || {
            Arc::new(Lease {
                index,
                remaining: AtomicU64::new(0),
                dry: AtomicBool::new(false),
                fetching: AtomicBool::new(false),
                refill: tokio::sync::Mutex::new(()),
                ends,
            })
        };
        let slot = match self.leases.get(key) {
            Some(s) => s.clone(),
            None => self
                .leases
                .entry(key.to_vec())
                .or_insert_with(|| Arc::new(ArcSwap::new(fresh())))
                .clone(),
        };
        let cur = slot.load_full();
        if cur.index == index {
            return cur;
        }
        if cur.index > index {
            // A call stamped in an older window than the one in use (a race
            // at the boundary): served from a lease of its own window.
            return fresh();
        }
        // A new window: its lease replaces the old one (unspent units of the
        // old window are the under-use the README states).
        let new = fresh();
        slot.rcu(|old| {
            if old.index >= index {
                Arc::clone(old)
            } else {
                Arc::clone(&new)
            }
        });
        slot.load_full()
    }

    /// Asks the store for `want` units of `key`'s window `index`.
    async fn grant(
        &self,
        key: &[u8],
        index: u64,
        limit: u64,
        want: u64,
        window: u64,
    ) -> Result<u64, ()> {
        let Some(conn) = self.conn.load_full() else {
            return Err(());
        };
        let mut conn = (*conn).clone();
        let digest = Sha256::digest(key);
        let rkey = format!(
            "{}q:{}:{index}",
            self.cfg.prefix,
            hex::encode(&digest[..16])
        );
        let mut inv = self.script.prepare_invoke();
        inv.key(rkey).arg(limit).arg(want).arg(window * 2000);
        let call = inv.invoke_async::<u64>(&mut conn);
        match tokio::time::timeout(self.cfg.timeout, call).await {
            Ok(Ok(g)) => {
                metrics()
                    .quota_store_requests
                    .with_label_values(&[if g == 0 { "exhausted" } else { "granted" }])
                    .inc();
                Ok(g)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "global quota store error");
                metrics()
                    .quota_store_requests
                    .with_label_values(&["error"])
                    .inc();
                self.set_up(false);
                Err(())
            }
            Err(_) => {
                metrics()
                    .quota_store_requests
                    .with_label_values(&["timeout"])
                    .inc();
                self.set_up(false);
                Err(())
            }
        }
    }

    /// Reserves `d.cost` units for one request. Waits on Redis only when
    /// this replica's lease for the key is empty.
    pub async fn reserve(self: &Arc<Self>, d: &GlobalDemand, now: SystemTime) -> GlobalVerdict {
        let secs = unix(now);
        let w = d.window.as_secs().max(1);
        let index = secs / w;
        let ends = (index + 1) * w;
        let retry_after = (ends - secs).max(1);
        if d.cost > d.limit {
            return GlobalVerdict::Exhausted { retry_after };
        }
        let block = self.cfg.lease_for(d.limit);
        let lease = self.lease(&d.key, index, ends);
        loop {
            if take(&lease.remaining, d.cost) {
                self.prefetch(&lease, d, index, block, w);
                return GlobalVerdict::Granted;
            }
            if lease.dry.load(Ordering::Acquire) {
                return GlobalVerdict::Exhausted { retry_after };
            }
            if !self.is_up() {
                return self.unavailable(d);
            }
            let _g = lease.refill.lock().await;
            if lease.remaining.load(Ordering::Acquire) >= d.cost
                || lease.dry.load(Ordering::Acquire)
            {
                continue;
            }
            let want = block.max(d.cost - lease.remaining.load(Ordering::Acquire));
            match self.grant(&d.key, index, d.limit, want, w).await {
                Ok(g) => {
                    lease.remaining.fetch_add(g, Ordering::AcqRel);
                    if g < want {
                        lease.dry.store(true, Ordering::Release);
                    }
                }
                Err(()) => return self.unavailable(d),
            }
        }
    }

    fn unavailable(&self, d: &GlobalDemand) -> GlobalVerdict {
        unavailable(d)
    }

    /// Fetches the next block in the background once the lease runs below half a block.
    fn prefetch(
        self: &Arc<Self>,
        lease: &Arc<Lease>,
        d: &GlobalDemand,
        index: u64,
        block: u64,
        w: u64,
    ) {
        if lease.remaining.load(Ordering::Acquire) * 2 >= block
            || lease.dry.load(Ordering::Acquire)
            || !self.is_up()
            || lease.fetching.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (me, lease, key, limit) = (Arc::clone(self), Arc::clone(lease), d.key.clone(), d.limit);
        tokio::spawn(async move {
            {
                let _g = lease.refill.lock().await;
                if lease.remaining.load(Ordering::Acquire) * 2 < block
                    && !lease.dry.load(Ordering::Acquire)
                {
                    if let Ok(g) = me.grant(&key, index, limit, block, w).await {
                        lease.remaining.fetch_add(g, Ordering::AcqRel);
                        if g < block {
                            lease.dry.store(true, Ordering::Release);
                        }
                    }
                }
            }
            lease.fetching.store(false, Ordering::Release);
        });
    }
}

impl QuotaStore {
    /// Shares tool pins through the store: publishes this replica's pins
    /// (`HSETNX`: the first replica to pin a tool wins) and adopts the
    /// fleet's, quarantining local pins that disagree.
    pub async fn sync_pins(
        &self,
        pins: &warden_filters::guards::tools::ToolPins,
        servers: &[String],
    ) {
        let Some(conn) = self.conn.load_full() else {
            return;
        };
        let mut conn = (*conn).clone();
        let key = |server: &str| format!("{}pins:{server}", self.cfg.prefix);
        let mut pipe = redis::pipe();
        let mine = pins.pinned();
        for (server, tool, fp) in &mine {
            pipe.hset_nx(key(server), tool, fp).ignore();
        }
        for server in servers {
            pipe.hgetall(key(server));
        }
        let got: Result<Vec<std::collections::HashMap<String, String>>, _> =
            self.bounded(pipe.query_async(&mut conn)).await;
        match got {
            Ok(maps) => {
                let fleet = servers.iter().cloned().zip(maps).collect();
                pins.set_fleet(fleet);
            }
            Err(e) => tracing::debug!(error = %e, "tool pin sync failed"),
        }
    }
}

/// Raises a flow's state (`warden_filters::guards::flow`) in the store:
/// KEYS[1] the state hash, KEYS[2] its sources list; ARGV level, untrusted
/// (0/1), the source as JSON, the most sources kept, the lifetime in s.
/// Both only grow, so replicas raising at once never lose a label.
const FLOW_RAISE: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'level') or '-1')
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'level', ARGV[1]) end
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'untrusted', '1') end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
return 1
"#;

/// Gives a flow's state back to the store (one that forgot it, restarted
/// without persistence): KEYS[1] the state hash, KEYS[2] its sources list;
/// ARGV level, untrusted (0/1), the most sources kept, the lifetime in s,
/// then the sources the store lacks as JSON. Only raises, as FLOW_RAISE.
const FLOW_MERGE: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'level') or '-1')
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'level', ARGV[1]) end
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'untrusted', '1') end
for i = 5, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
if #ARGV >= 5 then redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4])) end
return 1
"#;

/// A shared flow lives this long after its last raise.
const FLOW_TTL_SECS: u64 = 86_400;

impl QuotaStore {
    fn flow_keys(&self, key: &[u8; 32]) -> (String, String) {
        let k = format!("{}flow:{}", self.cfg.prefix, hex::encode(key));
        let s = format!("{k}:src");
        (k, s)
    }

    /// A store round trip of the pins and flows, bounded by four times
    /// the store's timeout (a store that does not answer is an error).
    pub(crate) async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        tokio::time::timeout(self.cfg.timeout * 4, f)
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "timeout",
                )))
            })
    }

    pub(crate) async fn conn_or_err(&self) -> Result<ConnectionManager, String> {
        match self.conn.load_full() {
            Some(c) if self.is_up() => Ok((*c).clone()),
            _ => Err(format!(
                "the shared store {} is unreachable",
                self.display_url()
            )),
        }
    }

    /// The fleet's view of a flow (empty when no replica raised it).
    pub async fn flow_get(
        &self,
        key: &[u8; 32],
    ) -> Result<warden_filters::engines::flow::FlowState, String> {
        let mut conn = self.conn_or_err().await?;
        let (k, s) = self.flow_keys(key);
        let mut pipe = redis::pipe();
        // A flow in use lives on, raised or not.
        pipe.hgetall(&k)
            .lrange(&s, 0, -1)
            .expire(&k, FLOW_TTL_SECS as i64)
            .ignore()
            .expire(&s, FLOW_TTL_SECS as i64)
            .ignore();
        type Got = (std::collections::HashMap<String, String>, Vec<String>);
        let got: Result<Got, _> = self.bounded(pipe.query_async(&mut conn)).await;
        let (h, sources) = got.map_err(|e| format!("flow state: {e}"))?;
        Ok(warden_filters::engines::flow::FlowState {
            level: h.get("level").and_then(|l| l.parse().ok()).unwrap_or(0),
            untrusted: h.get("untrusted").is_some_and(|u| u == "1"),
            sources: sources
                .iter()
                .filter_map(|j| serde_json::from_str(j).ok())
                .collect(),
        })
    }

    /// Writes back what this replica knows of a flow (`merged`) that the
    /// store's view (`read`) lacks.
    pub async fn flow_merge(
        &self,
        key: &[u8; 32],
        merged: &warden_filters::engines::flow::FlowState,
        read: &warden_filters::engines::flow::FlowState,
    ) -> Result<(), String> {
        let mut conn = self.conn_or_err().await?;
        let (k, s) = self.flow_keys(key);
        let mut inv = self.merge_script.key(&k);
        inv.key(&s)
            .arg(merged.level)
            .arg(if merged.untrusted { "1" } else { "0" })
            .arg(warden_filters::engines::flow::MAX_SOURCES)
            .arg(FLOW_TTL_SECS);
        for src in merged
            .sources
            .iter()
            .filter(|m| !read.sources.iter().any(|r| r.id == m.id))
        {
            inv.arg(serde_json::to_string(src).unwrap_or_default());
        }
        let res: Result<i64, _> = self.bounded(inv.invoke_async(&mut conn)).await;
        res.map(|_| ()).map_err(|e| format!("flow state: {e}"))
    }

    /// Adds what a reply brought to the fleet's view of its flow.
    pub async fn flow_raise(
        &self,
        key: &[u8; 32],
        source: &warden_filters::engines::flow::Source,
    ) -> Result<(), String> {
        let mut conn = self.conn_or_err().await?;
        let (k, s) = self.flow_keys(key);
        let mut inv = self.flow_script.key(&k);
        inv.key(&s)
            .arg(source.level)
            .arg(if source.untrusted { "1" } else { "0" })
            .arg(serde_json::to_string(source).unwrap_or_default())
            .arg(warden_filters::engines::flow::MAX_SOURCES)
            .arg(FLOW_TTL_SECS);
        let res: Result<i64, _> = self.bounded(inv.invoke_async(&mut conn)).await;
        res.map(|_| ()).map_err(|e| format!("flow state: {e}"))
    }
}

/// Claims a task for a holder: KEYS[1] the task's key; ARGV the holder's
/// digest and the lifetime in s. 1 when the task is (now) this holder's, 0
/// when another holder claimed it first.
/// ARGV: holder, lifetime, kind (`new`, `renew`, `burn`; see
/// `ClaimKind`). A burnt claim holds `!burnt`, which no holder's digest
/// (hex) equals: every later claim of the id is refused, and each one
/// keeps the burn for another lifetime (a handle that keeps being tried
/// never outlives it).
const TASK_CLAIM: &str = r#"
if ARGV[3] == 'burn' then
  redis.call('SET', KEYS[1], '!burnt', 'EX', tonumber(ARGV[2]))
  return 0
end
local cur = redis.call('GET', KEYS[1])
if cur == '!burnt' then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 0
end
if cur and cur ~= ARGV[1] then
  if ARGV[3] == 'new' then
    redis.call('SET', KEYS[1], '!burnt', 'EX', tonumber(ARGV[2]))
  end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
"#;

/// A task's claim lives this long after it was last handed out or its
/// holder last asked about it (as long as a replica remembers an idle
/// task).
const TASK_TTL_SECS: u64 = 86_400;

impl QuotaStore {
    /// Claims the task `task` (a digest, see `TaskClaim`) for `holder`:
    /// `Ok(false)` when another holder claimed it first, or it was burnt
    /// (a new claim against another holder's burns it; a burn always
    /// answers `Ok(false)`).
    pub async fn task_claim(
        &self,
        task: &str,
        holder: &str,
        kind: warden_filters::chain::notes::ClaimKind,
    ) -> Result<bool, String> {
        let mut conn = self.conn_or_err().await?;
        let key = format!("{}task:{task}", self.cfg.prefix);
        let mut inv = self.task_script.key(&key);
        inv.arg(holder).arg(TASK_TTL_SECS).arg(kind.as_str());
        let res: Result<i64, _> = self.bounded(inv.invoke_async(&mut conn)).await;
        res.map(|n| n == 1).map_err(|e| format!("task claim: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rediss://` (which the bundle accepts) is a store this build can
    /// serve, over rustls: a fleet that names one gets a store, never a
    /// silent per-process fallback.
    #[test]
    fn a_tls_store_can_be_built() {
        for url in ["rediss://redis.example:6380/0", "redis://127.0.0.1:6379"] {
            let cfg = Redis {
                url: url.into(),
                lease: None,
                timeout: std::time::Duration::from_millis(250),
                prefix: "warden:".into(),
            };
            assert!(QuotaStore::new(cfg).is_ok(), "{url}");
        }
    }
}
