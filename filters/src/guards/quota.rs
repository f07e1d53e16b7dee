//! Quotas: exact fixed-window counters, pingora-limits estimates, and
//! concurrency caps, per any combination of principal, tenant, server, group
//! and tool.
//!
//! Exactness: each (quota, key) has one `AtomicU64` holding the window
//! number (high 32 bits) and the units used in it (low 32 bits), updated by a
//! compare-and-swap loop, so concurrent callers can never push a window past
//! its limit. Memory: counters live in a sharded map bounded by a sweep that
//! drops counters whose windows are over (so a sweep never resets a live
//! window) before it drops the least recently used. Tables are shared across bundle swaps and
//! keyed by the quota's definition digest: an unchanged quota keeps counting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use warden_config::access::ServerCatalog;
use warden_config::guards::{Quota, QuotaKey, QuotaKind, StoreFailure};

use crate::chain::filter::{
    Acts, Decision, Denial, Exchange, Hold, McpFilter, Message, Methods, Notes,
};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::{Envelope, Kind, Parsed};

pub use crate::chain::filter::{GlobalVerdict, GlobalVerdicts};

/// Units of a global quota a request needs (summed over a batch's elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalDemand {
    pub quota: String,
    pub key: Vec<u8>,
    pub limit: u64,
    pub window: Duration,
    pub cost: u64,
    pub on_failure: StoreFailure,
}

/// The global-quota units the messages of a request need, one entry per key.
/// The proxy reserves them in the shared store (waiting only when its local
/// lease is empty) and hands the verdicts to the chain in the `Exchange`.
pub fn global_demands(
    quotas: &[Quota],
    catalog: &std::collections::HashMap<String, ServerCatalog>,
    parsed: &Parsed,
    ctx: &Exchange<'_>,
) -> Vec<GlobalDemand> {
    let mut out: Vec<GlobalDemand> = Vec::new();
    if !quotas.iter().any(|q| q.global.is_some()) {
        return out;
    }
    let messages: Vec<&Envelope> = match parsed {
        Parsed::Single(env) => vec![env],
        Parsed::Batch(items) => items.iter().filter_map(|i| i.as_ref().ok()).collect(),
    };
    for env in messages {
        let (Kind::Request, Some(method)) = (env.kind, env.method.as_deref()) else {
            continue;
        };
        let tool = tool_of(method, env);
        for q in quotas.iter().filter(|q| q.global.is_some()) {
            let (
                QuotaKind::Window {
                    limit,
                    window,
                    weighted,
                    ..
                },
                Some(on_failure),
            ) = (&q.kind, q.global)
            else {
                continue;
            };
            if !applies(q, method, tool, ctx) {
                continue;
            }
            let key = QuotaFilter::key(q, ctx, tool);
            let cost = cost_of(*weighted, catalog, ctx.server, tool);
            match out.iter_mut().find(|d| d.key == key) {
                Some(d) => d.cost += cost,
                None => out.push(GlobalDemand {
                    quota: q.name.clone(),
                    key,
                    limit: *limit,
                    window: *window,
                    cost,
                    on_failure,
                }),
            }
        }
    }
    out
}

fn tool_of<'e>(method: &str, env: &'e Envelope) -> Option<&'e str> {
    (method == "tools/call")
        .then_some(env.name.as_deref())
        .flatten()
}

fn applies(q: &Quota, method: &str, tool: Option<&str>, ctx: &Exchange<'_>) -> bool {
    q.methods.iter().any(|m| m == method)
        && (listed(&q.servers, Some(ctx.server))
            || ctx.via.is_some_and(|v| q.servers.iter().any(|s| s == v)))
        && listed(&q.groups, Some(ctx.group))
        && listed(&q.tools, tool)
        && listed(&q.tenants, Some(ctx.principal.canonical_tenant()))
}

fn cost_of(
    weighted: bool,
    catalog: &std::collections::HashMap<String, ServerCatalog>,
    server: &str,
    tool: Option<&str>,
) -> u64 {
    if weighted {
        tool.and_then(|t| catalog.get(server)?.tool(t))
            .map_or(1, |t| t.cost)
    } else {
        1
    }
}

/// One counter and how long it must outlive its last use.
pub struct Counter {
    value: AtomicU64,
    /// Unix second of the last use.
    used: AtomicU64,
    keep: u64,
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counters of every quota, shared by all snapshots of a gateway.
///
/// A sharded concurrent map (one lookup, no global lock) of counters,
/// bounded by `max_keys` (its share of `limits.memory`). When it is full,
/// counters whose windows are long over are dropped; a live counter is
/// never dropped (its key would start a fresh window and could spend its
/// limit again), so while the table is still full a key it does not hold
/// is refused as over its quota: the bound fails closed.
pub struct QuotaTables {
    counters: dashmap::DashMap<Vec<u8>, Arc<Counter>, foldhash::fast::RandomState>,
    max_keys: usize,
    /// When the table was last swept (seconds): a full table is swept at
    /// most once a second, never once per refused key.
    swept: AtomicU64,
    estimates: moka::sync::Cache<[u8; 32], Arc<pingora_limits::rate::Rate>>,
}

impl QuotaTables {
    /// At most `max_keys` live counters (idle ones are evicted first).
    pub fn new(max_keys: u64) -> Self {
        QuotaTables {
            counters: dashmap::DashMap::with_hasher(foldhash::fast::RandomState::default()),
            max_keys: max_keys.max(1) as usize,
            swept: AtomicU64::new(0),
            estimates: moka::sync::Cache::new(1024),
        }
    }

    /// Live counters.
    pub fn len(&self) -> u64 {
        self.counters.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    fn sweep(&self, now: u64) {
        self.counters.retain(|_, c| {
            now.saturating_sub(c.used.load(Ordering::Relaxed)) <= c.keep || Arc::strong_count(c) > 1
        });
    }

    /// The counter of `key`; `None` when the table is full of live counters
    /// and does not hold it (see the type's docs).
    fn counter(&self, key: &[u8], keep: Duration, now: u64) -> Option<Arc<Counter>> {
        if let Some(c) = self.counters.get(key) {
            c.used.store(now, Ordering::Relaxed);
            return Some(c.clone());
        }
        if self.counters.len() >= self.max_keys {
            let last = self.swept.load(Ordering::Relaxed);
            if last < now
                && self
                    .swept
                    .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                self.sweep(now);
            }
            if self.counters.len() >= self.max_keys {
                return None;
            }
        }
        Some(
            self.counters
                .entry(key.to_vec())
                .or_insert_with(|| {
                    Arc::new(Counter {
                        value: AtomicU64::new(0),
                        used: AtomicU64::new(now),
                        keep: keep.as_secs(),
                    })
                })
                .clone(),
        )
    }

    /// Takes `cost` units from the fixed window containing `now`, and returns
    /// the number of the window charged. A call stamped earlier than the
    /// window already in the counter (requests racing across a boundary) is
    /// charged to that newer window: windows never move back, so none can be
    /// reset and refilled. `Err` holds the seconds until the window ends.
    pub fn take_window(
        &self,
        key: &[u8],
        limit: u64,
        window: Duration,
        cost: u64,
        now: SystemTime,
    ) -> Result<u64, u64> {
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let w = window.as_secs().max(1);
        let index = (secs / w) & 0xffff_ffff;
        let retry = (secs / w + 1) * w - secs;
        if cost > limit {
            return Err(retry);
        }
        let Some(c) = self.counter(key, window * 2 + Duration::from_secs(1), secs) else {
            return Err(retry.max(1));
        };
        let mut cur = c.value.load(Ordering::Acquire);
        loop {
            let (win, used) = (cur >> 32, cur & 0xffff_ffff);
            // Window numbers wrap at 2^32 (136 years of 1 s windows): compare mod 2^32.
            let newer_stored = win != index && (win.wrapping_sub(index) & 0xffff_ffff) < (1 << 31);
            let (charge, used) = if win == index || newer_stored {
                (win, used)
            } else {
                (index, 0)
            };
            if used + cost > limit {
                return Err(retry.max(1));
            }
            let next = (charge << 32) | (used + cost);
            match c
                .value
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(charge),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes one of `max` concurrency slots; the slot is given back when the
    /// returned guard is dropped.
    pub fn take_slot(&self, key: &[u8], max: u64) -> Option<Slot> {
        let c = self.counter(key, Duration::from_secs(3600), unix(SystemTime::now()))?;
        c.value
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(c))
    }

    fn estimate(&self, definition: [u8; 32], window: Duration) -> Arc<pingora_limits::rate::Rate> {
        self.estimates.get_with(definition, || {
            Arc::new(pingora_limits::rate::Rate::new(window))
        })
    }
}

/// A concurrency slot in use.
pub struct Slot(Arc<Counter>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.value.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Applies the bundle's quotas to each matching request.
pub struct QuotaFilter {
    quotas: Vec<Quota>,
    tables: Arc<QuotaTables>,
    catalog: std::collections::HashMap<String, ServerCatalog>,
}

impl std::fmt::Debug for QuotaFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaFilter")
            .field("quotas", &self.quotas.len())
            .finish()
    }
}

fn listed(list: &[String], v: Option<&str>) -> bool {
    list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
}

impl QuotaFilter {
    pub fn new(
        quotas: Vec<Quota>,
        tables: Arc<QuotaTables>,
        catalog: std::collections::HashMap<String, ServerCatalog>,
    ) -> Self {
        QuotaFilter {
            quotas,
            tables,
            catalog,
        }
    }

    /// The counter key: the quota's definition, then each `per` field.
    pub fn key(q: &Quota, ctx: &Exchange<'_>, tool: Option<&str>) -> Vec<u8> {
        let mut k = Vec::with_capacity(64);
        k.extend_from_slice(&q.definition);
        for p in &q.per {
            let v: &str = match p {
                QuotaKey::Principal => {
                    // One person, however the credential spells the name.
                    k.extend_from_slice(ctx.principal.person().as_bytes());
                    k.push(0);
                    continue;
                }
                // One budget per tenant, however the claim spells it
                // (`ACME` is `acme`), by the strict key that decides whose
                // a call is: `ｆｉｎａｎｃｅ` from another identity provider
                // does not spend `finance`'s.
                QuotaKey::Tenant => {
                    k.extend_from_slice(
                        warden_config::person::tenant_key(&ctx.principal.tenant).as_bytes(),
                    );
                    k.push(0);
                    continue;
                }
                QuotaKey::Server => ctx.server,
                QuotaKey::Group => ctx.group,
                QuotaKey::Tool => tool.unwrap_or(""),
            };
            k.extend_from_slice(v.as_bytes());
            k.push(0);
        }
        k
    }

    fn store_denial(q: &Quota) -> Denial {
        Denial::error(
            JsonRpcError::new(
                codes::QUOTA_EXCEEDED,
                format!(
                    "Quota `{}` cannot be checked: the shared quota store is unreachable",
                    q.name
                ),
            )
            .with_data(serde_json::json!({
                "reason": "quota_store_unavailable",
                "limit": q.name,
                "retry_after": 1,
            })),
            format!("quota_store_unavailable:{}", q.name),
        )
    }

    fn denial(q: &Quota, retry_after: u64) -> Denial {
        Denial::error(
            JsonRpcError::new(
                codes::QUOTA_EXCEEDED,
                format!("Quota `{}` exceeded", q.name),
            )
            .with_data(serde_json::json!({
                "reason": "quota_exceeded",
                "limit": q.name,
                "retry_after": retry_after,
            })),
            format!("quota_exceeded:{}", q.name),
        )
    }
}

impl McpFilter for QuotaFilter {
    fn name(&self) -> &'static str {
        "quota"
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::All,
            responses: Methods::None,
        }
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        let (Kind::Request, Some(method)) = (env.kind, env.method.as_deref()) else {
            return Decision::Pass;
        };
        let tool = tool_of(method, env);
        let mut slots: Vec<Slot> = Vec::new();
        for q in &self.quotas {
            if !applies(q, method, tool, ctx) {
                continue;
            }
            let key = Self::key(q, ctx, tool);
            match &q.kind {
                QuotaKind::Window {
                    limit,
                    window,
                    weighted,
                    exact,
                } => {
                    let cost = cost_of(*weighted, &self.catalog, ctx.server, tool);
                    if let Some(on_failure) = q.global {
                        match ctx.global.and_then(|g| g.get(&key)) {
                            Some(GlobalVerdict::Granted) => {
                                // Also counted locally, so a later store outage
                                // (`local` mode) starts from what this replica used.
                                let _ = self
                                    .tables
                                    .take_window(&key, *limit, *window, cost, ctx.now);
                                continue;
                            }
                            Some(GlobalVerdict::Exhausted { retry_after }) => {
                                return Decision::Reject(Self::denial(q, *retry_after));
                            }
                            Some(GlobalVerdict::Unavailable) | None => {
                                if on_failure == StoreFailure::Closed {
                                    return Decision::Reject(Self::store_denial(q));
                                }
                                // Local: this replica enforces the limit alone.
                            }
                        }
                    }
                    if *exact {
                        if let Err(retry) = self
                            .tables
                            .take_window(&key, *limit, *window, cost, ctx.now)
                        {
                            return Decision::Reject(Self::denial(q, retry));
                        }
                    } else {
                        let rate = self.tables.estimate(q.definition, *window);
                        let seen = rate.observe(&key, cost as isize);
                        if seen as u64 > *limit {
                            return Decision::Reject(Self::denial(q, window.as_secs().max(1)));
                        }
                    }
                }
                QuotaKind::Concurrency { max } => match self.tables.take_slot(&key, *max) {
                    Some(s) => slots.push(s),
                    // Slots taken so far are released as `slots` drops.
                    None => return Decision::Reject(Self::denial(q, 1)),
                },
            }
        }
        if !slots.is_empty() {
            notes.hold(Hold(Box::new(slots)));
        }
        Decision::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At its bound the table refuses a key it does not hold rather than
    /// forget a live one; once windows are over, room returns.
    #[test]
    fn a_full_table_fails_closed() {
        let t = QuotaTables::new(2);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let w = Duration::from_secs(60);
        assert!(t.take_window(b"a", 5, w, 1, now).is_ok());
        assert!(t.take_window(b"b", 5, w, 1, now).is_ok());
        assert!(
            t.take_window(b"c", 5, w, 1, now).is_err(),
            "a third key while two live"
        );
        assert!(
            t.take_window(b"a", 5, w, 1, now).is_ok(),
            "held keys still count"
        );
        let later = now + Duration::from_secs(3600);
        assert!(
            t.take_window(b"c", 5, w, 1, later).is_ok(),
            "expired windows make room"
        );
    }

    /// A quota naming tenants, or counting per tenant, reads the caller's
    /// tenant as every tenant rule does: `ACME` is `acme`, one budget.
    #[test]
    fn quotas_read_tenants_in_their_canonical_form() {
        let q = Quota {
            name: "q".into(),
            per: vec![QuotaKey::Tenant],
            kind: QuotaKind::Concurrency { max: 1 },
            servers: vec![],
            groups: vec![],
            tools: vec![],
            tenants: vec!["acme".into()],
            methods: vec!["tools/call".into()],
            definition: [0; 32],
            global: None,
        };
        let keys: Vec<Vec<u8>> = ["acme", "ACME", " Acme"]
            .into_iter()
            .map(|t| {
                let mut p = crate::engines::identity::Principal::anonymous();
                p.tenant = t.into();
                let ex = Exchange::new(&p, "s");
                assert!(applies(&q, "tools/call", Some("t"), &ex), "{t}");
                QuotaFilter::key(&q, &ex, Some("t"))
            })
            .collect();
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
        let mut wide = crate::engines::identity::Principal::anonymous();
        wide.tenant = "ａｃｍｅ".into();
        let ex = Exchange::new(&wide, "s");
        assert!(
            applies(&q, "tools/call", Some("t"), &ex),
            "held to acme's rules"
        );
        assert_ne!(
            QuotaFilter::key(&q, &ex, Some("t")),
            keys[0],
            "not acme's budget"
        );
        let mut other = crate::engines::identity::Principal::anonymous();
        other.tenant = "globex".into();
        assert!(!applies(
            &q,
            "tools/call",
            Some("t"),
            &Exchange::new(&other, "s")
        ));
    }

    #[test]
    fn windows_roll_over_and_slots_come_back() {
        let t = QuotaTables::new(1000);
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let w = Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(t.take_window(b"k", 3, w, 1, at(100)), Ok(10));
        }
        assert_eq!(t.take_window(b"k", 3, w, 1, at(105)), Err(5));
        assert_eq!(t.take_window(b"k", 3, w, 1, at(110)), Ok(11), "next window");
        assert_eq!(t.take_window(b"k", 3, w, 3, at(111)), Err(9));
        // A late call from window 10 is charged to window 11.
        assert_eq!(t.take_window(b"k", 3, w, 1, at(109)), Ok(11));
        assert_eq!(t.take_window(b"k", 3, w, 1, at(109)), Ok(11));
        assert_eq!(t.take_window(b"k", 3, w, 1, at(109)), Err(1));
        assert!(t.take_window(b"other", 3, w, 3, at(111)).is_ok());
        let a = t.take_slot(b"c", 2).expect("1");
        let b = t.take_slot(b"c", 2).expect("2");
        assert!(t.take_slot(b"c", 2).is_none());
        drop(a);
        let c = t.take_slot(b"c", 2).expect("released");
        drop((b, c));
    }
}
