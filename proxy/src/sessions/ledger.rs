//! Which request each reply answers, on every transport.
//!
//! Filters judge a reply by the request it answers (a `tools/list` result is
//! filtered, a `tools/call` result checked against the tool's output schema),
//! so the gateway must know that request wherever the reply arrives: in the
//! POST's own JSON or SSE reply (the exchange knows its ids), on the GET
//! stream of a legacy HTTP+SSE session, or in a replay after `Last-Event-ID`.
//! The ledger remembers, per server, principal and session, the id → method
//! of every client request whose reply may arrive elsewhere, and the ids of
//! the server→client requests the gateway let through, which are the only
//! client responses it accepts. Entries are bounded in number and expire.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use siphasher::sip128::{Hasher128, SipHasher24};
use warden_filters::Id;

/// What a remembered client request was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub method: String,
    /// The tool, prompt or resource it named; for a completion of a
    /// resource template, what it completed (see [`Asked::completion`]).
    pub target: Option<String>,
    /// `sha256:<hex>` of its raw arguments (a multi-round-trip retry must
    /// carry the same).
    pub args_digest: Option<String>,
    /// The audit link of the task it named (`tasks/*`).
    pub task: Option<String>,
}

impl Asked {
    /// The tool, prompt or resource it named (a completion names none).
    pub fn target(&self) -> Option<&str> {
        match self.method.as_str() {
            "completion/complete" => None,
            _ => self.target.as_deref(),
        }
    }

    /// The resource template argument a completion completed, as the
    /// chain wrote it (see `warden_filters::chain::notes::Completing`):
    /// kept in `target`, which a completion does not otherwise use.
    pub fn completion(&self) -> Option<&str> {
        match self.method.as_str() {
            "completion/complete" => self.target.as_deref(),
            _ => None,
        }
    }

    /// Whether `other` is the same request (a retry): the same method,
    /// target and task, whatever its arguments.
    fn same_request(&self, other: &Asked) -> bool {
        self.method == other.method && self.target == other.target && self.task == other.task
    }
}

pub struct Ledger {
    /// Client requests whose replies may arrive on another exchange.
    asked: Bounded<Arc<Asked>>,
    /// Server→client requests the client may answer (single use).
    owed: Bounded<()>,
    /// The key of the entries' digests (see [`Ledger::key`]).
    sip: (u64, u64),
}

/// What [`Ledger::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The id names this request now (new, or the same request again).
    Held,
    /// The id names another request of the session.
    Reused,
    /// The table is full and the owner holds its share of it.
    Full,
}

/// Scope of one session: server, owner (see `sessions::owner_key`), session key.
pub struct Scope<'a> {
    pub server: &'a str,
    pub owner: &'a str,
    pub session: &'a str,
}

/// An entry's key: a 128-bit SipHash, under a key drawn at start, of the
/// scope and the id. Fixed in size however long a client makes its ids
/// (a string id can be as long as a request body), and no string is
/// built per call. Finding two scopes and ids with one digest needs the
/// key.
type Key = u128;

/// Shards of the tables: workers on other cores rarely wait on one
/// another, and each shard is small enough to stay warm.
const SHARDS: usize = 16;

/// A table bounded in entries that forgets its least recently used entry
/// to make room (every new entry is kept: the requests a reply may answer
/// are the recent ones), and treats an entry idle for longer than `ttl`
/// as gone.
struct Bounded<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    /// Entries a shard holds at most (its maps grow to it, none is
    /// reserved up front).
    per: usize,
    ttl: Duration,
    /// Where `Slot::used` counts from.
    epoch: Instant,
}

/// One shard: its entries in use order, and how many each owner holds.
struct Shard<V> {
    lru: lru::LruCache<Key, Slot<V>, BuildHasherDefault<Spread>>,
    owners: std::collections::HashMap<u32, u32, BuildHasherDefault<Spread>>,
}

struct Slot<V> {
    value: V,
    /// Seconds from the table's epoch to the entry's last use.
    used: u32,
    /// The digest of the entry's server and owner (see [`Ledger::key`]),
    /// 32 bits of it: two owners sharing one only share a count.
    owner: u32,
}

/// The least recently used entries an owner over its share looks through
/// for one of its own to give up.
const OWN_LOOK: usize = 32;

impl<V> Shard<V> {
    fn new() -> Shard<V> {
        Shard {
            lru: lru::LruCache::unbounded_with_hasher(Default::default()),
            owners: Default::default(),
        }
    }

    fn forget(&mut self, owner: u32) {
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.owners.entry(owner) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    fn pop(&mut self, k: &Key) -> Option<Slot<V>> {
        let slot = self.lru.pop(k)?;
        self.forget(slot.owner);
        Some(slot)
    }

    fn pop_lru(&mut self) -> Option<Slot<V>> {
        let (_, slot) = self.lru.pop_lru()?;
        self.forget(slot.owner);
        Some(slot)
    }

    /// Puts `slot` at `k`. When the shard is full and `k` is new, the
    /// least recently used entry makes room, unless the entry's owner
    /// already holds `share` or more: then one of its own among the
    /// [`OWN_LOOK`] least recently used does, and with none there the
    /// entry is not kept (`false`). One principal sending new ids as fast
    /// as it can pushes out no more than its share of the others'.
    fn insert(&mut self, k: Key, slot: Slot<V>, per: usize, share: usize) -> bool {
        if let Some(held) = self.lru.get_mut(&k) {
            // The key holds its owner: same count.
            *held = slot;
            return true;
        }
        if self.lru.len() >= per {
            let mine = self.owners.get(&slot.owner).copied().unwrap_or(0) as usize;
            if mine >= share {
                let own = self
                    .lru
                    .iter()
                    .rev()
                    .take(OWN_LOOK)
                    .find(|(_, s)| s.owner == slot.owner)
                    .map(|(k, _)| *k);
                match own {
                    Some(own) => {
                        self.pop(&own);
                    }
                    None => return false,
                }
            } else {
                self.pop_lru();
            }
        }
        *self.owners.entry(slot.owner).or_insert(0) += 1;
        self.lru.put(k, slot);
        true
    }
}

/// The keys are keyed digests already: their low bits place them.
#[derive(Default)]
struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u128` keys and `u32` owners are hashed (`write_u128`,
        // `write_u32`); any other input is folded in whole.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, k: u128) {
        self.0 = (k as u64) ^ ((k >> 64) as u64);
    }

    /// Owner digests (32 bits): spread to the high bits too, which the
    /// hash table's control bytes read.
    fn write_u32(&mut self, k: u32) {
        self.0 = u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl<V: Clone> Bounded<V> {
    fn new(capacity: u64, ttl: Duration) -> Bounded<V> {
        let per = usize::try_from(capacity.div_ceil(SHARDS as u64))
            .unwrap_or(usize::MAX)
            .max(1);
        Bounded {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            per,
            ttl,
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn live(&self, slot: &Slot<V>, now: u32) -> bool {
        u64::from(now.saturating_sub(slot.used)) <= self.ttl.as_secs()
    }

    fn shard(&self, k: Key) -> std::sync::MutexGuard<'_, Shard<V>> {
        // The digest's high bits pick the shard; its low bits the bucket.
        self.shards[(k >> 120) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The live entry at `k`, marked used.
    fn get(&self, k: Key) -> Option<V> {
        let now = self.now();
        let mut shard = self.shard(k);
        match shard.lru.get_mut(&k) {
            Some(slot) if self.live(slot, now) => {
                slot.used = now;
                return Some(slot.value.clone());
            }
            Some(_) => {}
            None => return None,
        }
        shard.pop(&k);
        None
    }

    /// An owner's share of a full shard (see [`Shard::insert`]): half.
    fn share(&self) -> usize {
        self.per.div_ceil(2)
    }

    /// Whether the entry was kept (see [`Shard::insert`]).
    fn put(&self, (k, owner): (Key, u32), value: V) -> bool {
        let used = self.now();
        let (per, share) = (self.per, self.share());
        self.shard(k)
            .insert(k, Slot { value, used, owner }, per, share)
    }

    /// Removes the entry at `k`; whether a live one was there.
    fn take(&self, k: Key) -> bool {
        let now = self.now();
        self.shard(k)
            .pop(&k)
            .is_some_and(|slot| self.live(&slot, now))
    }

    /// `f` on the live entry at `k` (or `None`), which may replace it;
    /// with `f`'s answer, whether a replacement was kept.
    fn update<R>(
        &self,
        (k, owner): (Key, u32),
        f: impl FnOnce(Option<&V>) -> (R, Option<V>),
    ) -> (R, bool) {
        let now = self.now();
        let (per, share) = (self.per, self.share());
        let mut shard = self.shard(k);
        let held = shard
            .lru
            .get(&k)
            .filter(|slot| self.live(slot, now))
            .map(|slot| &slot.value);
        let (r, replace) = f(held);
        let kept = match replace {
            Some(value) => shard.insert(
                k,
                Slot {
                    value,
                    used: now,
                    owner,
                },
                per,
                share,
            ),
            // Kept as it is: marked used if live, forgotten if not (never
            // brought back to life).
            None => {
                match shard.lru.get_mut(&k) {
                    Some(slot) if self.live(slot, now) => slot.used = now,
                    Some(_) => {
                        shard.pop(&k);
                    }
                    None => {}
                }
                true
            }
        };
        (r, kept)
    }

    fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).lru.len() as u64)
            .sum()
    }

    /// Drops the entries idle past `ttl` (the least recently used end of
    /// each shard), so that `len` counts live entries.
    fn expire(&self) {
        let now = self.now();
        for s in self.shards.iter() {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            while s
                .lru
                .peek_lru()
                .is_some_and(|(_, slot)| !self.live(slot, now))
            {
                s.pop_lru();
            }
        }
    }
}

/// How peers may read an id (see `Id::read_as_number`).
enum Reading<'a> {
    /// As this number (`-0` read as `0`).
    Number(f64),
    /// As some number this reading does not settle.
    Unsettled,
    /// As text only.
    Text(&'a str),
}

fn reading(id: &Id) -> Reading<'_> {
    let settled = |v: f64| Reading::Number(if v == 0.0 { 0.0 } else { v });
    match id {
        Id::Num(n) => n.as_f64().map_or(Reading::Unsettled, settled),
        Id::Str(s) if id.read_as_number() => number_text(s).map_or(Reading::Unsettled, settled),
        Id::Str(s) => Reading::Text(s),
    }
}

/// The number JavaScript's `Number(s)` reads in `s` (blank is 0; `0x`,
/// `0o`, `0b` integers), or Python's `int(s)` with `_` between digits.
fn number_text(s: &str) -> Option<f64> {
    let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if t.is_empty() {
        return Some(0.0);
    }
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let radix = match body.get(..2).map(str::to_ascii_lowercase).as_deref() {
        Some("0x") => Some(16),
        Some("0o") => Some(8),
        Some("0b") => Some(2),
        _ => None,
    };
    let v = match radix {
        Some(r) => {
            u64::from_str_radix(&body[2..], r)
                .ok()
                .map(|v| if neg { -(v as f64) } else { v as f64 })
        }
        None => t
            .parse::<f64>()
            .ok()
            .or_else(|| t.replace('_', "").parse::<i64>().ok().map(|v| v as f64)),
    }?;
    v.is_finite().then_some(v)
}

impl Ledger {
    /// The digest of a scope and an id: each part length-prefixed, the id
    /// as a peer may read it. Ids peers read as one number are one key
    /// (`7`, `7.0`, `7e0`, `"7"`, `" 7"`, `"0x7"`: the TypeScript SDK
    /// correlates a reply by `Number(id)`, the Python SDK compares `7 ==
    /// 7.0`, a JavaScript server echoes `7.0` as `7`), so a session cannot
    /// hold two requests under ids a reply answers alike: the second is
    /// refused as a reused id. With it, the digest of the server and the
    /// owner alone, whose share of a full table the entry counts in.
    fn key(&self, scope: &Scope<'_>, id: &Id) -> (Key, u32) {
        let mut h = SipHasher24::new_with_keys(self.sip.0, self.sip.1);
        for part in [scope.server, scope.owner] {
            h.write_usize(part.len());
            h.write(part.as_bytes());
        }
        let owner = h.clone().finish128().h1 as u32;
        h.write_usize(scope.session.len());
        h.write(scope.session.as_bytes());
        match reading(id) {
            Reading::Number(v) => {
                h.write_u8(b'n');
                h.write_u64(v.to_bits());
            }
            // Number-like text no reading here settles (`"7_0"`, `"٧"`):
            // all such ids of a session are one key.
            Reading::Unsettled => h.write_u8(b'u'),
            Reading::Text(s) => {
                h.write_u8(b's');
                h.write_usize(s.len());
                h.write(s.as_bytes());
            }
        }
        (h.finish128().as_u128(), owner)
    }

    /// Entries remembered now (both tables).
    pub fn len(&self) -> u64 {
        self.asked.len() + self.owed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the entries idle past their time, so that `len` is current.
    pub fn sync(&self) {
        self.asked.expire();
        self.owed.expire();
    }

    /// Two tables of `capacity` entries each; an entry idle for `ttl` is gone.
    pub fn new(capacity: u64, ttl: Duration) -> Ledger {
        let mut seed = [0u8; 16];
        let sip = match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        {
            Ok(()) => {
                let (a, b) = seed.split_at(8);
                let word = |x: &[u8]| u64::from_le_bytes(x.try_into().unwrap_or([0; 8]));
                (word(a), word(b))
            }
            Err(_) => {
                // No system randomness (it does not happen on Linux): std's
                // per-process keys, weaker but not fixed.
                use std::hash::BuildHasher;
                tracing::warn!("no system randomness for the reply ledger's key");
                let r = std::collections::hash_map::RandomState::new();
                (r.hash_one(1u8), r.hash_one(2u8))
            }
        };
        Ledger {
            asked: Bounded::new(capacity, ttl),
            owed: Bounded::new(capacity, ttl),
            sip,
        }
    }

    /// A client request was forwarded and its reply may come on another exchange.
    pub fn asked(&self, scope: &Scope<'_>, id: &Id, asked: Arc<Asked>) {
        let _ = self.asked.put(self.key(scope, id), asked);
    }

    /// Remembers a request of an exchange without a session, where ids are
    /// not claimed (stateless clients reuse them freely): when `id`
    /// already names another request, neither is remembered, so a reply
    /// replayed elsewhere is judged as one to an unknown request (by its
    /// shape), never as the other request's.
    pub fn asked_unclaimed(&self, scope: &Scope<'_>, id: &Id, asked: Arc<Asked>) {
        let _ = self.asked.update(self.key(scope, id), |held| match held {
            // Two requests under one id: the id answers nothing from now on
            // (until the entry expires), whatever a later request adds.
            Some(held) if held.method.is_empty() || !held.same_request(&asked) => (
                (),
                Some(Arc::new(Asked {
                    method: String::new(),
                    target: None,
                    args_digest: None,
                    task: None,
                })),
            ),
            _ => ((), Some(asked)),
        });
    }

    /// Claims `id` in the session for a request about to be forwarded. An
    /// id names one request for as long as the ledger remembers it (MCP:
    /// a requestor never reuses an id within a session): [`Claim::Reused`]
    /// when it already names another (another method, target or task),
    /// whose replies, replayed on another exchange, would otherwise be
    /// judged as this one's. The same request sent again (a retry) keeps
    /// its claim. [`Claim::Full`] when the table is full and the owner
    /// holds its share of it: a claim not remembered could not refuse a
    /// reuse, so the request is not forwarded.
    pub fn claim(&self, scope: &Scope<'_>, id: &Id, asked: &Arc<Asked>) -> Claim {
        let (fresh, kept) = self.asked.update(self.key(scope, id), |held| match held {
            None => (true, Some(asked.clone())),
            Some(held) if held.same_request(asked) => {
                (true, (**held != **asked).then(|| asked.clone()))
            }
            Some(_) => (false, None),
        });
        match (fresh, kept) {
            (false, _) => Claim::Reused,
            (true, false) => Claim::Full,
            (true, true) => Claim::Held,
        }
    }

    /// Whether the claim holds (tests).
    #[cfg(test)]
    fn claims(&self, scope: &Scope<'_>, id: &Id, asked: &Arc<Asked>) -> bool {
        self.claim(scope, id, asked) == Claim::Held
    }

    /// The request a reply on another exchange answers. Kept after the
    /// answer: a replayed stream answers again, and is judged the same way.
    /// A reply whose id a peer reads as a number it does not spell (`"7"`,
    /// `7.0`) answers nothing here: the reply path drops it rather than
    /// judge it as the request the client may take it for.
    pub fn answered(&self, scope: &Scope<'_>, id: &Id) -> Option<Arc<Asked>> {
        if id.read_as_number() {
            return None;
        }
        self.asked
            .get(self.key(scope, id).0)
            .filter(|a| !a.method.is_empty())
    }

    /// Whether `id` names a request of the scope the gateway forwarded
    /// (whatever a peer may read it as: a client cancels its own `"5"`).
    pub fn holds(&self, scope: &Scope<'_>, id: &Id) -> bool {
        self.asked
            .get(self.key(scope, id).0)
            .is_some_and(|a| !a.method.is_empty())
    }

    /// A server→client request went out to the client.
    pub fn owe(&self, scope: &Scope<'_>, id: &Id) {
        // Not kept (the owner holds its share of a full table): the
        // client's answer is refused as unsolicited.
        let _ = self.owed.put(self.key(scope, id), ());
    }

    /// Whether the client may answer server→client request `id`; consumes it.
    pub fn settle(&self, scope: &Scope<'_>, id: &Id) -> bool {
        // Only the id as the server sent it (see `answered`).
        !id.read_as_number() && self.owed.take(self.key(scope, id).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(method: &str, target: Option<&str>) -> Arc<Asked> {
        Arc::new(Asked {
            method: method.into(),
            target: target.map(str::to_owned),
            args_digest: None,
            task: None,
        })
    }

    /// Without a session ids are not claimed: an id that named two
    /// requests answers neither on another exchange, nor a third.
    #[test]
    fn an_unclaimed_id_naming_two_requests_answers_none() {
        let l = Ledger::new(100, Duration::from_secs(60));
        let sc = Scope {
            server: "s",
            owner: "t\0alice",
            session: "",
        };
        let id = Id::Num(7.into());
        l.asked_unclaimed(&sc, &id, asked("tools/list", None));
        l.asked_unclaimed(&sc, &id, asked("tools/list", None));
        assert_eq!(
            l.answered(&sc, &id).map(|a| a.method.clone()).as_deref(),
            Some("tools/list")
        );
        l.asked_unclaimed(&sc, &id, asked("tools/call", Some("echo")));
        assert!(l.answered(&sc, &id).is_none());
        l.asked_unclaimed(&sc, &id, asked("tools/call", Some("echo")));
        assert!(l.answered(&sc, &id).is_none());
    }

    #[test]
    fn scoped_by_server_owner_and_session() {
        let l = Ledger::new(100, Duration::from_secs(60));
        let a = Scope {
            server: "s",
            owner: "t\0alice",
            session: "1",
        };
        let b = Scope {
            server: "s",
            owner: "t\0bob",
            session: "1",
        };
        let id = Id::Num(7.into());
        l.asked(&a, &id, asked("tools/list", None));
        assert_eq!(
            l.answered(&a, &id).map(|x| x.method.clone()).as_deref(),
            Some("tools/list")
        );
        assert!(l.answered(&b, &id).is_none());
        // A reply in a disguised id answers nothing (the reply path drops it).
        assert!(l.answered(&a, &Id::Str("7".into())).is_none());
        assert!(l.answered(&a, &Id::Str("s7".into())).is_none());
        let call = |tool: &str| asked("tools/call", Some(tool));
        let ping = asked("ping", None);
        let c = Id::Num(8.into());
        assert!(l.claims(&a, &c, &call("echo")), "a fresh id");
        assert!(l.claims(&a, &c, &call("echo")), "the same request again");
        assert!(!l.claims(&a, &c, &call("purge")), "another tool");
        assert!(!l.claims(&a, &c, &ping), "another method");
        assert!(!l.claims(&a, &id, &ping), "an id asked before");
        assert!(l.claims(&b, &c, &ping), "another principal's session");
        assert_eq!(
            l.answered(&a, &c).and_then(|x| x.target.clone()).as_deref(),
            Some("echo"),
            "a refused claim relabels nothing"
        );
        l.owe(&a, &id);
        assert!(!l.settle(&b, &id));
        assert!(l.settle(&a, &id));
        assert!(!l.settle(&a, &id), "single use");
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    fn call(tool: &str) -> Arc<Asked> {
        Arc::new(Asked {
            method: "tools/call".into(),
            target: Some(tool.into()),
            args_digest: Some(format!("sha256:{}", "0".repeat(64))),
            task: None,
        })
    }

    const SC: Scope<'static> = Scope {
        server: "s",
        owner: "t\0alice",
        session: "0123456789abcdef",
    };

    /// A full ledger keeps every new claim and forgets the least recently
    /// used: a client that sends a new id per call is judged by its own
    /// requests, never left with claims the table refused to hold.
    #[test]
    fn a_full_ledger_keeps_new_claims_and_forgets_the_oldest() {
        let cap = 64u64;
        let l = Ledger::new(cap, Duration::from_secs(3600));
        let n = 10_000u64;
        for i in 0..n {
            assert!(l.claims(&SC, &Id::Num(i.into()), &call("echo")));
            // The newest claim is always there.
            assert!(l.answered(&SC, &Id::Num(i.into())).is_some(), "claim {i}");
        }
        // Bounded: at most the capacity (rounded up to whole shards).
        assert!(l.len() <= cap + SHARDS as u64, "{} entries", l.len());
        assert!(l.answered(&SC, &Id::Num(0u64.into())).is_none());
        // An entry read lately outlives ones written after it (two entries
        // a shard: it and the newest of its shard).
        let l = Ledger::new(2 * SHARDS as u64, Duration::from_secs(3600));
        let keep = Id::Str("keep".into());
        assert!(l.claims(&SC, &keep, &call("echo")));
        for i in 0..1000u64 {
            l.claims(&SC, &Id::Num(i.into()), &call("echo"));
            assert!(l.answered(&SC, &keep).is_some(), "after {i}");
        }
    }

    /// Scopes never share a key, even parts that would read alike joined
    /// (`ab`+`c` and `a`+`bc`), nor ids no peer reads alike.
    #[test]
    fn keys_keep_ids_and_scopes_apart() {
        let l = Ledger::new(1000, Duration::from_secs(3600));
        let k = |server, owner, session, id: &Id| {
            l.key(
                &Scope {
                    server,
                    owner,
                    session,
                },
                id,
            )
        };
        let seven = Id::Num(7u64.into());
        assert_ne!(
            k("s", "o", "x", &seven),
            k("s", "o", "x", &Id::Str("s7".into()))
        );
        assert_ne!(
            k("s", "o", "x", &seven),
            k("s", "o", "x", &Id::Num(8u64.into()))
        );
        assert_ne!(k("ab", "c", "x", &seven), k("a", "bc", "x", &seven));
        assert_ne!(
            k("s", "o", "x", &seven),
            k("s", "o", "x7", &Id::Str(String::new()))
        );
        assert_eq!(k("s", "o", "x", &seven), k("s", "o", "x", &seven));
        // Another ledger (another replica, a restart) draws another key.
        let other = Ledger::new(1000, Duration::from_secs(3600));
        assert_ne!(l.key(&SC, &seven), other.key(&SC, &seven));
    }

    /// An entry idle past its time is gone, and `sync` drops it from the count.
    #[test]
    fn idle_entries_expire() {
        let l = Ledger::new(100, Duration::ZERO);
        assert!(l.claims(&SC, &Id::Num(1u64.into()), &call("echo")));
        l.owe(&SC, &Id::Num(2u64.into()));
        assert_eq!(l.len(), 2);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(l.answered(&SC, &Id::Num(1u64.into())).is_none());
        assert!(!l.settle(&SC, &Id::Num(2u64.into())));
        // A claim on an expired id is a fresh one, whatever it was.
        assert!(l.claims(&SC, &Id::Num(1u64.into()), &call("purge")));
        l.owe(&SC, &Id::Num(3u64.into()));
        std::thread::sleep(Duration::from_millis(1100));
        l.sync();
        assert_eq!(l.len(), 0);
    }

    /// An entry's size does not depend on its id: a string id as long as a
    /// request body is kept as a 16-byte digest. What an entry of a call
    /// takes stays within what the memory budget counts for it.
    #[test]
    fn an_entry_fits_its_share_of_the_budget() {
        let l = Ledger::new(100, Duration::from_secs(3600));
        let long = Id::Str("x".repeat(1 << 20));
        assert!(l.claims(&SC, &long, &call("echo")));
        assert!(l.answered(&SC, &long).is_some());
        // The list node (key, slot, two links), the hash table's pointer
        // and control byte at its 7/8 load, the shared `Asked` with its
        // counts, and its strings: a 64-byte tool name and the digest.
        let node = std::mem::size_of::<(Key, Slot<Arc<Asked>>)>() + 2 * 8;
        let table = (8 + 1) * 8 / 7 + 1;
        let asked = 16 + std::mem::size_of::<Asked>() + "tools/call".len() + 64 + 71;
        let entry = node + table + asked;
        let counted = warden_config::model::Table::Ledger.entry_bytes() as usize;
        assert!(
            entry <= counted,
            "an entry takes {entry} bytes, the budget counts {counted}"
        );
    }

    /// Review: a client claimed `1` for a call and `"1"` (or `1.0`) for
    /// `tools/list` in one session; a reply a peer reads as `1` answers
    /// both to it. Ids a peer reads as one number are one claim, and a
    /// reply in a spelling other than the plain one answers nothing.
    #[test]
    fn ids_peers_read_alike_are_one_claim() {
        let l = Ledger::new(1000, Duration::from_secs(3600));
        let num = |v: serde_json::Value| match v {
            serde_json::Value::Number(n) => Id::Num(n),
            _ => unreachable!(),
        };
        let list = Arc::new(Asked {
            method: "tools/list".into(),
            target: None,
            args_digest: None,
            task: None,
        });
        assert!(l.claims(&SC, &num(serde_json::json!(1)), &call("echo")));
        for other in [
            num(serde_json::json!(1.0)),
            num(serde_json::json!(1e0)),
            Id::Str("1".into()),
            Id::Str(" 1 ".into()),
            Id::Str("+1".into()),
            Id::Str("1.0".into()),
            Id::Str("0x1".into()),
            Id::Str("0b1".into()),
        ] {
            assert!(!l.claims(&SC, &other, &list), "{other}");
            // The call's claim is untouched, and a reply in the other
            // spelling is matched to nothing (the reply path drops it).
            assert!(l.answered(&SC, &other).is_none(), "{other}");
        }
        // Zero and minus zero, blank text; negative numbers stay apart.
        assert!(l.claims(&SC, &num(serde_json::json!(0)), &call("echo")));
        assert!(!l.claims(&SC, &num(serde_json::json!(-0.0)), &list));
        assert!(!l.claims(&SC, &Id::Str(String::new()), &list));
        assert!(l.claims(&SC, &num(serde_json::json!(-1)), &list));
        assert!(!l.claims(&SC, &Id::Str("-1".into()), &call("echo")));
        assert!(!l.claims(&SC, &Id::Str("-0x1".into()), &call("echo")));
        // Integers past 2^53 that JavaScript reads as one number.
        assert!(l.claims(
            &SC,
            &num(serde_json::json!(9_007_199_254_740_992u64)),
            &list
        ));
        assert!(!l.claims(
            &SC,
            &num(serde_json::json!(9_007_199_254_740_993u64)),
            &call("echo")
        ));
        // Text no peer reads as a number is its own id.
        assert!(l.claims(&SC, &Id::Str("req-1".into()), &list));
        // Number-like text this reading cannot settle is one id.
        assert!(l.claims(&SC, &Id::Str("\u{0667}".into()), &list));
        assert!(!l.claims(&SC, &Id::Str("\u{0668}".into()), &call("echo")));
        assert_eq!(
            l.answered(&SC, &num(serde_json::json!(1)))
                .and_then(|a| a.target.clone())
                .as_deref(),
            Some("echo")
        );
        // A server's request `5` is settled by `5` only, once.
        l.owe(&SC, &num(serde_json::json!(5)));
        assert!(!l.settle(&SC, &num(serde_json::json!(5.0))));
        assert!(!l.settle(&SC, &Id::Str("5".into())));
        assert!(l.settle(&SC, &num(serde_json::json!(5))));
        assert!(!l.settle(&SC, &num(serde_json::json!(5))));
    }

    /// Review: one principal sending new ids as fast as it can pushed every
    /// other principal's entries out of the shared table. In a full table
    /// an owner holding half of a shard gives up its own entries, or, with
    /// none of them among the least recently used, is refused the claim;
    /// the others' entries stay.
    #[test]
    fn a_flooding_principal_pushes_out_no_more_than_its_share() {
        let l = Ledger::new(64 * SHARDS as u64, Duration::from_secs(3600));
        let other = |session: &'static str| Scope {
            server: "s",
            owner: "t\0bob",
            session,
        };
        // Bob's calls (about a quarter of each shard), then Mallory's
        // flood of new ids.
        let bob = 16 * SHARDS as u64;
        for i in 0..bob {
            assert!(l.claims(&other("b"), &Id::Num(i.into()), &call("echo")));
        }
        let flood = Scope {
            server: "s",
            owner: "t\0mallory",
            session: "m",
        };
        let last = 100 * SHARDS as u64;
        for i in 0..last {
            assert_ne!(
                l.claim(&flood, &Id::Num(i.into()), &call("echo")),
                Claim::Reused
            );
        }
        // Bob keeps every entry: once a shard is full, Mallory, holding
        // more than half of it, gives up her own oldest entries.
        let kept = (0..bob)
            .filter(|i| l.answered(&other("b"), &Id::Num((*i).into())).is_some())
            .count() as u64;
        assert_eq!(kept, bob);
        assert!(l.answered(&flood, &Id::Num((last - 1).into())).is_some());
        assert!(l.len() <= 64 * SHARDS as u64);
        // A principal alone uses the whole table, whatever its share, and
        // two at one rate give up their own oldest entries in turn.
        let alone = Ledger::new(64, Duration::from_secs(3600));
        for i in 0..10_000u64 {
            assert_eq!(
                alone.claim(&flood, &Id::Num(i.into()), &call("echo")),
                Claim::Held
            );
            assert_eq!(
                alone.claim(&other("b"), &Id::Num(i.into()), &call("echo")),
                Claim::Held
            );
        }
    }
}
