//! Information flow, the data: what has flowed to the client under one
//! flow key ([`FlowState`]), what a call's labels are, what the guard notes
//! for the policy and the audit record, and the bounded table of this
//! process. The guard that judges calls by them is `guards::flow`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use warden_config::flows::Roles;

mod journal;

/// Calls kept in a state's lineage (the newest that raised it).
pub const MAX_SOURCES: usize = 16;

/// The longest name of a call (`server/tool`, `server:uri`) a state keeps,
/// in bytes: a longer one is cut at a character boundary and ends with
/// `…`, so a state's size has a bound whatever URIs clients send (the
/// flows table's entry estimate, `Table::Flows`, counts on it).
pub const MAX_NAME: usize = 64;

/// The longest id kept (`fl_` and 16 hex digits are 19 bytes).
const MAX_ID: usize = 24;

/// `name`, cut to [`MAX_NAME`] bytes with a marker when longer.
pub fn bounded_name(name: String) -> String {
    if name.len() <= MAX_NAME {
        return name;
    }
    bounded(&name, MAX_NAME)
}

/// `s` in at most `max` bytes (a new string, so no spare capacity stays
/// behind): cut at a character boundary, `…` marking the cut.
fn bounded(s: &str, max: usize) -> String {
    const MARK: &str = "…";
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max - MARK.len();
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + MARK.len());
    out.push_str(&s[..cut]);
    out.push_str(MARK);
    out
}

/// One call that brought data into a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// `fl_` and 16 hex digits: named in that call's audit record.
    pub id: String,
    /// `server/tool` or `server:uri`.
    pub what: String,
    pub level: u8,
    pub untrusted: bool,
}

/// What has flowed to the client under one flow key. Only grows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    pub level: u8,
    pub untrusted: bool,
    pub sources: Vec<Source>,
}

impl Source {
    /// The source as a state keeps it: its id and name bounded (one read
    /// from the shared store may have been written by anyone).
    fn kept(&self) -> Source {
        Source {
            id: bounded(&self.id, MAX_ID),
            what: bounded(&self.what, MAX_NAME),
            level: self.level,
            untrusted: self.untrusted,
        }
    }
}

impl FlowState {
    /// Adds what `src` brought; whether anything changed. A source that
    /// changes nothing is not kept: the lineage names the calls that
    /// raised the state.
    pub fn raise(&mut self, src: &Source) -> bool {
        let changed = src.level > self.level || (src.untrusted && !self.untrusted);
        self.level = self.level.max(src.level);
        self.untrusted |= src.untrusted;
        if changed && !self.sources.iter().any(|s| s.id == src.id) {
            self.sources.push(src.kept());
            self.trim();
        }
        changed
    }

    /// Whether `src` would change this state.
    pub fn would_raise(&self, level: u8, untrusted: bool) -> bool {
        level > self.level || (untrusted && !self.untrusted)
    }

    /// Merges another replica's view (both only grow).
    pub fn merge(&mut self, other: &FlowState) {
        self.level = self.level.max(other.level);
        self.untrusted |= other.untrusted;
        for s in &other.sources {
            if !self.sources.iter().any(|x| x.id == s.id) {
                self.sources.push(s.kept());
            }
        }
        self.trim();
    }

    /// Keeps the sources that explain the state: those at its level and the
    /// untrusted ones first, newest first, at most [`MAX_SOURCES`].
    fn trim(&mut self) {
        if self.sources.len() <= MAX_SOURCES {
            return;
        }
        let level = self.level;
        let mut keep: Vec<Source> = Vec::with_capacity(MAX_SOURCES);
        for want in [
            |s: &Source, l: u8| s.level == l,
            |s: &Source, _: u8| s.untrusted,
            |_: &Source, _: u8| true,
        ] {
            for s in self.sources.iter().rev() {
                if keep.len() < MAX_SOURCES && want(s, level) && !keep.contains(s) {
                    keep.push(s.clone());
                }
            }
        }
        keep.reverse();
        self.sources = keep;
    }

    /// The newest source at the state's level, and the newest untrusted one.
    pub fn culprits(&self) -> (Option<&Source>, Option<&Source>) {
        (
            self.sources.iter().rev().find(|s| s.level == self.level),
            self.sources.iter().rev().find(|s| s.untrusted),
        )
    }
}

impl FlowState {
    /// Whether this state holds more than `other` (a higher level, or
    /// untrusted content `other` lacks): what a store that forgot is
    /// given back.
    pub fn exceeds(&self, other: &FlowState) -> bool {
        other.would_raise(self.level, self.untrusted)
    }
}

/// The state of a call's flow key as the gateway read it before the chain.
#[derive(Debug, Clone)]
pub enum Loaded {
    State(FlowState),
    /// The shared store could not be asked: sink calls are refused.
    Unreadable(String),
}

/// How long a flow state lives after it was last read or raised: a day, a
/// session's idle lifetime (the shared store keeps its states as long).
pub const IDLE_SECS: u64 = 86_400;

/// Flow states kept in this process (shared across bundle swaps), bounded
/// by `max_keys` (the `flows` share of `limits.memory`).
///
/// A live state is never dropped to make room: a forgotten state would
/// come back clean, so a client could push its tainted state out by
/// opening sessions and then call a sink. When the table is full it drops
/// the states idle for [`IDLE_SECS`] (at most once a second); while it is
/// still full, a key it does not hold cannot be raised ([`Self::raise`]
/// says `None`), and the reply that would raise it is withheld unless the
/// shared store records it (`guards::flow`): the bound fails closed.
///
/// So that one principal cannot fill the table on purpose (and have every
/// other principal's raising replies withheld), each principal holds at
/// most [`per_owner`] states: one over its cap has its own replies
/// withheld, nobody else's.
pub struct FlowTables {
    states: dashmap::DashMap<[u8; 32], Held, foldhash::fast::RandomState>,
    /// States held per owner (`guards::flow::flow_owner`).
    owners: dashmap::DashMap<[u8; 32], usize, foldhash::fast::RandomState>,
    max_keys: usize,
    per_owner: usize,
    /// When the table was last swept (seconds): a full table is swept at
    /// most once a second, never once per refused key.
    swept: AtomicU64,
    /// Where each change is kept beyond this process (see `journal`).
    journal: std::sync::OnceLock<journal::Journal>,
    /// Recorded states not read back for want of room.
    unroomed: AtomicU64,
}

/// The states one owner may hold in a table of `max_keys`: a sixteenth of
/// the table, but never fewer than 64 (or the whole of a smaller table).
/// About 106 sessions of one principal at the default 128 MiB, 875 at 1 GiB.
pub fn per_owner(max_keys: usize) -> usize {
    (max_keys / 16).max(max_keys.min(64)).max(1)
}

/// A state, its owner, and when it was last read or raised (seconds).
struct Held {
    state: FlowState,
    owner: [u8; 32],
    used: AtomicU64,
    /// When the journal last recorded it (seconds; see `journal`).
    journaled: AtomicU64,
}

/// Seconds since the epoch of `now` (the clock the exchange carries).
pub fn unix_secs(now: std::time::SystemTime) -> u64 {
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl FlowTables {
    /// At most `max_keys` states.
    pub fn new(max_keys: u64) -> FlowTables {
        let max_keys = usize::try_from(max_keys.max(1)).unwrap_or(usize::MAX);
        FlowTables {
            states: dashmap::DashMap::with_hasher(foldhash::fast::RandomState::default()),
            owners: dashmap::DashMap::with_hasher(foldhash::fast::RandomState::default()),
            max_keys,
            per_owner: per_owner(max_keys),
            swept: AtomicU64::new(0),
            journal: std::sync::OnceLock::new(),
            unroomed: AtomicU64::new(0),
        }
    }

    /// Keeps the table in `dir` (its `flows/` directory): reads what earlier
    /// processes of this install recorded, and records each change from
    /// now on. See `journal`.
    pub fn keep_in(&self, dir: &std::path::Path, now: u64) -> std::io::Result<()> {
        let j =
            journal::Journal::open(dir, |l| self.take(l, now), || self.lines(), &self.unroomed)?;
        self.journal
            .set(j)
            .map_err(|_| std::io::Error::other("the flows table is kept already"))
    }

    /// Reads what other processes of this install (a binary upgrade's
    /// other half) recorded since the last call. Called once a second.
    pub fn follow(&self, now: u64) -> std::io::Result<()> {
        match self.journal.get() {
            Some(j) => j.follow(|l| self.take(l, now), || self.lines(), &self.unroomed),
            None => Ok(()),
        }
    }

    /// Since the start: changes the journal could not record (their
    /// replies were withheld), lines read that held no state (a line a
    /// crash cut), and recorded states not read back for want of room in
    /// the table (a smaller `limits.memory` than the writer's).
    pub fn journal_problems(&self) -> [u64; 3] {
        let j = self.journal.get();
        [
            j.map_or(0, |j| j.failed.load(Ordering::Relaxed)),
            j.map_or(0, |j| j.skipped.load(Ordering::Relaxed)),
            self.unroomed.load(Ordering::Relaxed),
        ]
    }

    /// Merges one recorded state, unless idle for [`IDLE_SECS`] or the
    /// table has no room for it.
    fn take(&self, l: journal::Line, now: u64) {
        // Written again at least once an hour while in use.
        if now.saturating_sub(l.t) > IDLE_SECS + journal::TOUCH_SECS {
            return;
        }
        let Some((key, owner)) = l.parts() else {
            return;
        };
        // Before the entry's lock: counting takes every shard's.
        let full = self.states.len() >= self.max_keys;
        match self.states.entry(key) {
            dashmap::Entry::Occupied(o) => {
                let mut h = o.into_ref();
                h.used.fetch_max(l.t, Ordering::Relaxed);
                h.journaled.fetch_max(l.t, Ordering::Relaxed);
                h.state.merge(&l.s);
            }
            dashmap::Entry::Vacant(v) => {
                let mut n = self.owners.entry(owner).or_insert(0);
                if *n >= self.per_owner || full {
                    self.unroomed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                *n += 1;
                drop(n);
                let mut state = FlowState::default();
                state.merge(&l.s);
                v.insert(Held {
                    state,
                    owner,
                    used: AtomicU64::new(l.t),
                    journaled: AtomicU64::new(l.t),
                });
            }
        }
    }

    /// Every state, as the journal writes it.
    fn lines(&self) -> Vec<journal::Line> {
        self.states
            .iter()
            .map(|e| {
                journal::Line::new(e.key(), &e.owner, e.used.load(Ordering::Relaxed), &e.state)
            })
            .collect()
    }

    /// States `owner` holds.
    fn owned(&self, owner: &[u8; 32]) -> usize {
        self.owners.get(owner).map_or(0, |n| *n)
    }

    /// States held (the `flows` gauge): exact, idle ones included until a
    /// sweep drops them.
    pub fn len(&self) -> u64 {
        self.states.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The state of `key` at `now` (seconds), clean when the table holds
    /// none: it was never raised, or a sweep dropped it after
    /// [`IDLE_SECS`] idle. Reading it keeps it alive.
    pub fn get(&self, key: &[u8; 32], now: u64) -> FlowState {
        self.states
            .get(key)
            .map(|h| {
                h.used.fetch_max(now, Ordering::Relaxed);
                // A state in use is written again now and then, so that a
                // restart does not take it for idle.
                if let Some(j) = self.journal.get() {
                    let last = h.journaled.load(Ordering::Relaxed);
                    if now.saturating_sub(last) >= journal::TOUCH_SECS
                        && h.journaled
                            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                            .is_ok()
                    {
                        j.append(&journal::Line::new(key, &h.owner, now, &h.state));
                    }
                }
                h.state.clone()
            })
            .unwrap_or_default()
    }

    /// Drops the states idle for [`IDLE_SECS`] at `now`, at most once a
    /// second.
    fn sweep(&self, now: u64) {
        let last = self.swept.load(Ordering::Relaxed);
        if last < now
            && self
                .swept
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.states.retain(|_, h| {
                let keep = now.saturating_sub(h.used.load(Ordering::Relaxed)) <= IDLE_SECS;
                if !keep {
                    if let Some(mut n) = self.owners.get_mut(&h.owner) {
                        *n = n.saturating_sub(1);
                    }
                }
                keep
            });
            self.owners.retain(|_, n| *n > 0);
        }
    }

    /// Keeps what this replica read of `key`'s state (of `owner`) in the
    /// shared store, merged with what it holds, and returns the merge: what
    /// this process knows of the flow, never less than either. A store that
    /// forgets (restarted empty) can then only make the fleet stricter: each
    /// replica that saw a state, read or raised, still holds it. A clean
    /// state is not stored. `None` at the table's bound — the key is not
    /// held and the table cannot take it (full of live states, or `owner`
    /// at its cap) — whatever the store said: this replica cannot vouch
    /// for a state it could not keep, so sinks are refused (fail closed).
    pub fn keep(
        &self,
        key: &[u8; 32],
        owner: &[u8; 32],
        read: &FlowState,
        now: u64,
    ) -> Option<FlowState> {
        let clean = read.level == 0 && !read.untrusted;
        if !self.states.contains_key(key)
            && (self.states.len() >= self.max_keys || self.owned(owner) >= self.per_owner)
        {
            self.sweep(now);
            if self.states.len() >= self.max_keys || self.owned(owner) >= self.per_owner {
                return None;
            }
        }
        if clean && !self.states.contains_key(key) {
            return Some(read.clone());
        }
        let mut held = match self.states.entry(*key) {
            dashmap::Entry::Occupied(o) => o.into_ref(),
            dashmap::Entry::Vacant(v) => {
                let mut n = self.owners.entry(*owner).or_insert(0);
                if *n >= self.per_owner {
                    return None;
                }
                *n += 1;
                drop(n);
                v.insert(Held {
                    state: FlowState::default(),
                    owner: *owner,
                    used: AtomicU64::new(now),
                    journaled: AtomicU64::new(now),
                })
            }
        };
        held.used.fetch_max(now, Ordering::Relaxed);
        let before = (held.state.level, held.state.untrusted);
        held.state.merge(read);
        if let Some(j) = self.journal.get() {
            if (held.state.level, held.state.untrusted) != before {
                if !j.append(&journal::Line::new(key, owner, now, &held.state)) {
                    return None;
                }
                held.journaled.fetch_max(now, Ordering::Relaxed);
            }
        }
        Some(held.state.clone())
    }

    /// Raises `key`'s state (of `owner`) by `src` (and by what another
    /// replica saw) at `now` (seconds): whether `src` changed it, or
    /// `None` when the table holds no state for `key` and cannot take one
    /// — it is full of live states, or `owner` holds its cap — and nothing
    /// was recorded (see the type's docs).
    pub fn raise(
        &self,
        key: &[u8; 32],
        owner: &[u8; 32],
        src: &Source,
        seen: Option<&FlowState>,
        now: u64,
    ) -> Option<bool> {
        if !self.states.contains_key(key)
            && (self.states.len() >= self.max_keys || self.owned(owner) >= self.per_owner)
        {
            self.sweep(now);
            if self.states.len() >= self.max_keys {
                return None;
            }
        }
        let mut held = match self.states.entry(*key) {
            dashmap::Entry::Occupied(o) => o.into_ref(),
            dashmap::Entry::Vacant(v) => {
                // Counted under the entry's lock: two raises of one new key
                // count it once.
                let mut n = self.owners.entry(*owner).or_insert(0);
                if *n >= self.per_owner {
                    return None;
                }
                *n += 1;
                drop(n);
                v.insert(Held {
                    state: FlowState::default(),
                    owner: *owner,
                    used: AtomicU64::new(now),
                    journaled: AtomicU64::new(now),
                })
            }
        };
        held.used.fetch_max(now, Ordering::Relaxed);
        let before = (held.state.level, held.state.untrusted);
        if let Some(o) = seen {
            held.state.merge(o);
        }
        let raised = held.state.raise(src);
        // Recorded before the reply that raised it leaves; a state that
        // cannot be recorded is as one the table cannot hold.
        if let Some(j) = self.journal.get() {
            if (held.state.level, held.state.untrusted) != before {
                if !j.append(&journal::Line::new(key, owner, now, &held.state)) {
                    return None;
                }
                held.journaled.fetch_max(now, Ordering::Relaxed);
            }
        }
        Some(raised)
    }
}

impl std::fmt::Debug for FlowTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTables").finish_non_exhaustive()
    }
}

/// A call's labels, as the catalog and the defaults give them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLabels {
    /// `server/tool` or `server:uri`.
    pub what: String,
    /// What a read returns; for a sink, the highest level it may receive.
    pub level: u8,
    pub roles: Roles,
}

/// What the flow guard saw of a request, for the policy and the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowNote {
    pub state: FlowState,
    pub call: CallLabels,
    /// The state could not be read (shared store down).
    pub unreadable: bool,
    /// The caller's clearance.
    pub clearance: u8,
    /// The level names, lowest first.
    pub names: Arc<[String]>,
}

impl FlowNote {
    fn name(&self, i: u8) -> &str {
        self.names.get(usize::from(i)).map_or("?", String::as_str)
    }

    /// Everything `input.flow` is made of, as bytes, for the decision
    /// cache's key: the same bytes exactly when the same `input.flow` (the
    /// level names are the bundle's, fixed for a snapshot).
    pub fn key_bytes(&self, out: &mut Vec<u8>) {
        let r = self.call.roles;
        out.extend_from_slice(&[
            self.state.level,
            u8::from(self.state.untrusted),
            u8::from(self.unreadable),
            self.clearance,
            self.call.level,
            u8::from(r.private) | u8::from(r.untrusted) << 1 | u8::from(r.sink) << 2,
        ]);
        let text = |out: &mut Vec<u8>, t: &str| {
            out.extend_from_slice(&(t.len() as u32).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        };
        text(out, &self.call.what);
        out.extend_from_slice(&(self.state.sources.len() as u32).to_le_bytes());
        for s in &self.state.sources {
            text(out, &s.id);
            text(out, &s.what);
            out.extend_from_slice(&[s.level, u8::from(s.untrusted)]);
        }
    }

    /// `input.flow` as the policy reads it (docs/policy.md), and the
    /// audit record's `flow` (without `out`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "session": {
                "level": self.name(self.state.level),
                "rank": self.state.level,
                "untrusted": self.state.untrusted,
                "readable": !self.unreadable,
                "sources": self.state.sources.iter().map(|s| serde_json::json!({
                    "id": s.id, "what": s.what, "level": self.name(s.level), "rank": s.level,
                    "untrusted": s.untrusted,
                })).collect::<Vec<_>>(),
            },
            "call": {
                "what": self.call.what,
                "level": self.name(self.call.level),
                "rank": self.call.level,
                "roles": self.call.roles.names(),
            },
            "clearance": self.name(self.clearance),
            "clearance_rank": self.clearance,
        })
    }
}

/// What a reply added to its flow: the proxy writes it to the shared
/// store, and the audit record names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowOut {
    pub key: [u8; 32],
    pub source: Source,
    /// The name of the source's level.
    pub level_name: String,
    /// Whether this process's table holds the raised state. When it does
    /// not (the table is full), only the shared store records it: without
    /// one the reply must not leave.
    pub held: bool,
}

#[cfg(test)]
mod tests;
