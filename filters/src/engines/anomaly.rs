//! Per-principal behaviour baselines (`anomaly:`) and the signals a call
//! raises against its principal's (`input.anomaly`).
//!
//! A [`Baseline`] is what one principal (tenant and id, by its strict key:
//! [`Principal::owner`]) was seen doing: the servers, tools (`server/tool`)
//! and egress hosts it used, each set capped ([`MAX_SERVERS`],
//! [`MAX_TOOLS`], [`MAX_HOSTS`]) and kept as 64-bit hashes
//! ([`fact_hash`]: SHA-256, so a name cannot be chosen to collide with a
//! learnt one), its calls by hour of day (UTC, decayed day by day), its
//! calls per rate window (an average over the windows it worked in), and
//! its denial rate (a recent and a usual average). A name a full set
//! cannot learn is reported as new every time, never as known.
//!
//! [`Baselines`] holds them, at most its share of the memory budget
//! (`Table::Baselines`); a principal it cannot hold is judged as wholly
//! new (every first-use signal, and `untracked`), never as normal.
//! Baselines learn only from calls the chain forwarded
//! ([`Baselines::settle`]); denials count towards the denial rate only.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::identity::Principal;

/// The most servers one baseline learns.
pub const MAX_SERVERS: usize = 64;
/// The most tools (`server/tool`) one baseline learns.
pub const MAX_TOOLS: usize = 256;
/// The most egress hosts one baseline learns.
pub const MAX_HOSTS: usize = 64;
/// The most hosts one call is judged by (the rest are not learnt).
pub const MAX_CALL_HOSTS: usize = 8;
/// A baseline unused this long may be dropped to make room.
pub const IDLE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a signal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The principal's first call of this server.
    FirstServer,
    /// The principal's first call of this tool (`server/tool`).
    FirstTool,
    /// A host the principal's calls never reached.
    NewHost,
    /// More calls in this window than `rate_factor` times the usual.
    Rate,
    /// An hour of day (UTC) the principal (almost) never works.
    Hour,
    /// A recent denial rate `denial_factor` times the usual.
    DenialRate,
    /// The table is full: no baseline could be kept for the principal.
    Untracked,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::FirstServer,
        Kind::FirstTool,
        Kind::NewHost,
        Kind::Rate,
        Kind::Hour,
        Kind::DenialRate,
        Kind::Untracked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::FirstServer => "first_server",
            Kind::FirstTool => "first_tool",
            Kind::NewHost => "new_host",
            Kind::Rate => "rate",
            Kind::Hour => "hour",
            Kind::DenialRate => "denial_rate",
            Kind::Untracked => "untracked",
        }
    }
}

/// One signal: its kind, how strong (1.0 for a first use; a ratio for a
/// rate), and what it is about (`server/tool`, a host, figures).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    pub kind: Kind,
    pub strength: f64,
    pub detail: String,
}

/// The facts of one call a baseline learns: hashes of its server, its
/// tool and the hosts its arguments reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub server: u64,
    pub tool: u64,
    pub hosts: Vec<u64>,
}

impl Facts {
    /// The facts of a call of `tool` on `server` reaching `hosts`.
    pub fn of(server: &str, tool: &str, hosts: &[String]) -> Facts {
        Facts {
            server: server_hash(server),
            tool: tool_hash(server, tool),
            hosts: hosts.iter().map(|h| host_hash(h)).collect(),
        }
    }
}

/// What the anomaly guard saw of a call (`input.anomaly`, the audit
/// record's `anomaly`).
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyNote {
    /// Within the principal's learning period (or its first call).
    pub learning: bool,
    pub signals: Vec<Signal>,
    /// What the call's baseline learns once it is forwarded.
    pub facts: Facts,
}

impl AnomalyNote {
    /// `{"learning": bool, "signals": [{"kind", "strength", "detail"}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"learning": self.learning, "signals": self.signals})
    }

    /// The bytes the decision cache keys on: the whole value the policy reads.
    pub fn key_bytes(&self, out: &mut Vec<u8>) {
        out.push(self.learning as u8);
        out.extend_from_slice(&(self.signals.len() as u32).to_le_bytes());
        for s in &self.signals {
            out.push(s.kind as u8);
            out.extend_from_slice(&s.strength.to_bits().to_le_bytes());
            out.extend_from_slice(&(s.detail.len() as u32).to_le_bytes());
            out.extend_from_slice(s.detail.as_bytes());
        }
    }
}

/// The settings signals are raised by (`anomaly:`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub learning: Duration,
    pub rate_window: Duration,
    pub rate_factor: f64,
    pub denial_factor: f64,
}

impl From<&warden_config::anomaly::Anomaly> for Settings {
    fn from(a: &warden_config::anomaly::Anomaly) -> Self {
        Settings {
            learning: a.learning,
            rate_window: a.rate_window,
            rate_factor: a.rate_factor,
            denial_factor: a.denial_factor,
        }
    }
}

/// A stable 64-bit hash of one fact (the same on every gateway: Redis
/// shares them).
pub fn fact_hash(kind: u8, text: &str) -> u64 {
    let d = Sha256::new()
        .chain_update([kind])
        .chain_update(text.as_bytes())
        .finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

pub fn server_hash(server: &str) -> u64 {
    fact_hash(b's', server)
}

pub fn tool_hash(server: &str, tool: &str) -> u64 {
    fact_hash(b't', &format!("{server}/{tool}"))
}

/// `host` is lower case without a trailing dot (as [`hosts`] reads them).
pub fn host_hash(host: &str) -> u64 {
    fact_hash(b'h', host)
}

/// A sorted set of hashes, at most `cap`.
fn knows(set: &[u64], h: u64) -> bool {
    set.binary_search(&h).is_ok()
}

/// Adds `h` unless `set` holds `cap` (with `force`, a full set gives up
/// one fact for it: that one is new again, never wrongly known); whether
/// `set` holds it after.
fn learn(set: &mut Vec<u64>, h: u64, cap: usize, force: bool) -> bool {
    match set.binary_search(&h) {
        Ok(_) => true,
        Err(_) if set.len() >= cap && !force => false,
        Err(mut at) => {
            if set.len() >= cap {
                let out = (h as usize) % set.len();
                set.remove(out);
                if out < at {
                    at -= 1;
                }
            }
            set.insert(at, h);
            true
        }
    }
}

/// How much of an hour's count is left after a day.
const DAILY_DECAY: f32 = 0.97;
/// The weight of a closed window in the usual rate.
const RATE_WEIGHT: f32 = 0.2;
/// The weight of one call in the recent and usual denial rates.
const RECENT_WEIGHT: f32 = 0.25;
const USUAL_WEIGHT: f32 = 0.02;
/// A recent denial rate below this is never raised (two denials in a row
/// reach it).
const DENIAL_RECENT_MIN: f32 = 0.4;
/// A usual denial rate is taken as at least this.
const DENIAL_FLOOR: f32 = 0.05;
/// Calls judged before the denial rate is compared.
const DENIAL_MIN_CALLS: u32 = 20;
/// Closed windows before a rate is compared.
const RATE_MIN_WINDOWS: u32 = 3;
/// Calls counted by hour before an hour is judged.
const HOUR_MIN_CALLS: f32 = 20.0;
/// An hour with less than this share of the calls is "never".
const HOUR_SHARE: f32 = 0.01;

/// One principal's baseline (see the module).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    /// Seconds since the epoch of its first call.
    pub first_seen: u64,
    pub last_seen: u64,
    pub servers: Vec<u64>,
    pub tools: Vec<u64>,
    pub hosts: Vec<u64>,
    /// Calls by hour of day (UTC), decayed by [`DAILY_DECAY`] a day.
    pub hours: [f32; 24],
    /// The day (since the epoch) `hours` was last decayed to.
    pub hours_day: u64,
    /// Start of the current rate window (ms since the epoch) and its calls.
    pub window_start: u64,
    pub window_calls: u32,
    /// Calls in a window it worked in, averaged.
    pub usual_rate: f32,
    /// Windows closed with calls in them.
    pub windows: u32,
    pub denial_recent: f32,
    pub denial_usual: f32,
    pub judged: u32,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Baseline {
    pub fn new(now: SystemTime) -> Baseline {
        Baseline {
            first_seen: secs(now),
            last_seen: secs(now),
            hours_day: secs(now) / 86_400,
            ..Baseline::default()
        }
    }

    /// Whether `now` is within the learning period.
    pub fn learning(&self, s: &Settings, now: SystemTime) -> bool {
        secs(now).saturating_sub(self.first_seen) < s.learning.as_secs().max(1)
    }

    /// The signals a call with `facts` raises now (named for the details).
    pub fn signals(
        &self,
        s: &Settings,
        now: SystemTime,
        facts: &Facts,
        names: &Names<'_>,
        out: &mut Vec<Signal>,
    ) {
        first_uses(Some(self), facts, names, out);
        if self.learning(s, now) {
            return;
        }
        // The rate: this window's calls with this one, against the usual.
        let window = s.rate_window.as_millis().max(1) as u64;
        let at = millis(now);
        let calls = if at / window == self.window_start / window {
            self.window_calls + 1
        } else {
            1
        };
        if self.windows >= RATE_MIN_WINDOWS {
            let usual = self.usual_rate.max(1.0);
            let ratio = calls as f32 / usual;
            if ratio > s.rate_factor as f32 {
                out.push(Signal {
                    kind: Kind::Rate,
                    strength: round(ratio),
                    detail: format!(
                        "{calls} calls in {}, usually {:.1}",
                        humantime::format_duration(s.rate_window),
                        self.usual_rate
                    ),
                });
            }
        }
        // The hour of day.
        let mut hours = self.hours;
        decay(&mut hours, self.hours_day, secs(now) / 86_400);
        let total: f32 = hours.iter().sum();
        let hour = ((secs(now) / 3600) % 24) as usize;
        if total >= HOUR_MIN_CALLS {
            let share = hours[hour] / total;
            if share < HOUR_SHARE {
                out.push(Signal {
                    kind: Kind::Hour,
                    strength: round(1.0 - share / HOUR_SHARE),
                    detail: format!("{hour:02}:00 UTC"),
                });
            }
        }
        // The denial rate.
        if self.judged >= DENIAL_MIN_CALLS {
            let usual = self.denial_usual.max(DENIAL_FLOOR);
            let ratio = self.denial_recent / usual;
            if self.denial_recent >= DENIAL_RECENT_MIN && ratio > s.denial_factor as f32 {
                out.push(Signal {
                    kind: Kind::DenialRate,
                    strength: round(ratio),
                    detail: format!(
                        "{:.0}% denied lately, usually {:.0}%",
                        self.denial_recent * 100.0,
                        self.denial_usual * 100.0
                    ),
                });
            }
        }
    }

    /// Learns a forwarded call: its facts, its hour and its window.
    pub fn learn(&mut self, s: &Settings, now: SystemTime, facts: &Facts) {
        self.accept(facts, false);
        self.last_seen = secs(now);
        let day = secs(now) / 86_400;
        decay(&mut self.hours, self.hours_day, day);
        self.hours_day = self.hours_day.max(day);
        self.hours[((secs(now) / 3600) % 24) as usize] += 1.0;
        let window = s.rate_window.as_millis().max(1) as u64;
        let at = millis(now);
        if at / window != self.window_start / window {
            if self.window_calls > 0 {
                let n = self.window_calls as f32;
                self.usual_rate = if self.windows == 0 {
                    n
                } else {
                    self.usual_rate * (1.0 - RATE_WEIGHT) + n * RATE_WEIGHT
                };
                self.windows = self.windows.saturating_add(1);
            }
            self.window_start = at - at % window;
            self.window_calls = 0;
        }
        self.window_calls = self.window_calls.saturating_add(1);
        self.judged_one(false);
    }

    /// Adds `facts` to the sets as far as their caps allow; with `force`
    /// (an operator's acceptance) a full set gives up another fact for it.
    pub fn accept(&mut self, facts: &Facts, force: bool) {
        if facts.server != 0 {
            learn(&mut self.servers, facts.server, MAX_SERVERS, force);
        }
        if facts.tool != 0 {
            learn(&mut self.tools, facts.tool, MAX_TOOLS, force);
        }
        for h in &facts.hosts {
            learn(&mut self.hosts, *h, MAX_HOSTS, force);
        }
    }

    /// Counts one judged call towards the denial rates.
    pub fn judged_one(&mut self, denied: bool) {
        let d = denied as u8 as f32;
        self.denial_recent = self.denial_recent * (1.0 - RECENT_WEIGHT) + d * RECENT_WEIGHT;
        self.denial_usual = self.denial_usual * (1.0 - USUAL_WEIGHT) + d * USUAL_WEIGHT;
        self.judged = self.judged.saturating_add(1);
    }

    /// Which of `facts` this baseline does not hold.
    pub fn unknown(&self, facts: &Facts) -> Facts {
        Facts {
            server: if knows(&self.servers, facts.server) {
                0
            } else {
                facts.server
            },
            tool: if knows(&self.tools, facts.tool) {
                0
            } else {
                facts.tool
            },
            hosts: facts
                .hosts
                .iter()
                .copied()
                .filter(|h| !knows(&self.hosts, *h))
                .collect(),
        }
    }
}

fn round(x: f32) -> f64 {
    ((x as f64) * 100.0).round() / 100.0
}

/// Decays `hours` from day `from` to day `to`.
fn decay(hours: &mut [f32; 24], from: u64, to: u64) {
    if to > from {
        let f = DAILY_DECAY.powi((to - from).min(365) as i32);
        for h in hours.iter_mut() {
            *h *= f;
        }
    }
}

/// The names of a call's facts, for the signals' details.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    pub server: &'a str,
    pub tool: &'a str,
    pub hosts: &'a [String],
}

/// The first-use signals of `facts` against `b` (`None`: no baseline,
/// every fact is new).
fn first_uses(b: Option<&Baseline>, facts: &Facts, names: &Names<'_>, out: &mut Vec<Signal>) {
    let new = |set: fn(&Baseline) -> &Vec<u64>, h: u64| b.is_none_or(|b| !knows(set(b), h));
    if new(|b| &b.servers, facts.server) {
        out.push(Signal {
            kind: Kind::FirstServer,
            strength: 1.0,
            detail: names.server.to_owned(),
        });
    }
    if new(|b| &b.tools, facts.tool) {
        out.push(Signal {
            kind: Kind::FirstTool,
            strength: 1.0,
            detail: format!("{}/{}", names.server, names.tool),
        });
    }
    for (h, name) in facts.hosts.iter().zip(names.hosts) {
        if new(|b| &b.hosts, *h) {
            out.push(Signal {
                kind: Kind::NewHost,
                strength: 1.0,
                detail: name.clone(),
            });
        }
    }
}

/// Every principal's baseline, bounded (see the module).
pub struct Baselines {
    map: DashMap<String, Baseline, foldhash::fast::RandomState>,
    limit: usize,
    held: AtomicUsize,
    /// When the last sweep of idle baselines ran (seconds since the epoch).
    swept: AtomicU64,
}

impl Default for Baselines {
    fn default() -> Self {
        Baselines::new(
            warden_config::model::MemoryBudget::default()
                .entries(warden_config::model::Table::Baselines) as usize,
        )
    }
}

impl std::fmt::Debug for Baselines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baselines")
            .field("len", &self.len())
            .field("limit", &self.limit)
            .finish()
    }
}

/// Why a baseline could not be changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Baselines {
    pub fn new(limit: usize) -> Baselines {
        Baselines {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            limit: limit.max(1),
            held: AtomicUsize::new(0),
            swept: AtomicU64::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The note of a call by `who` with `facts` now.
    pub fn observe(
        &self,
        who: &Principal,
        s: &Settings,
        now: SystemTime,
        facts: Facts,
        names: &Names<'_>,
    ) -> AnomalyNote {
        let mut signals = Vec::new();
        let learning = match self.map.get(who.owner()) {
            Some(b) => {
                b.signals(s, now, &facts, names, &mut signals);
                b.learning(s, now)
            }
            None if self.room(now) => {
                first_uses(None, &facts, names, &mut signals);
                true
            }
            None => {
                first_uses(None, &facts, names, &mut signals);
                signals.push(Signal {
                    kind: Kind::Untracked,
                    strength: 1.0,
                    detail: "the baseline table is full".to_owned(),
                });
                false
            }
        };
        AnomalyNote {
            learning,
            signals,
            facts,
        }
    }

    /// Whether a new baseline fits (sweeping idle ones, at most once a
    /// minute, when it would not).
    fn room(&self, now: SystemTime) -> bool {
        if self.len() < self.limit {
            return true;
        }
        let t = secs(now);
        let last = self.swept.load(Ordering::Relaxed);
        if t >= last + 60
            && self
                .swept
                .compare_exchange(last, t, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.map.retain(|_, b| {
                let keep = t.saturating_sub(b.last_seen) < IDLE.as_secs();
                if !keep {
                    self.held.fetch_sub(1, Ordering::Relaxed);
                }
                keep
            });
        }
        self.len() < self.limit
    }

    /// Changes `key`'s baseline with `f`, making one when there is room.
    fn with(&self, key: &str, now: SystemTime, f: impl FnOnce(&mut Baseline)) -> Result<(), Full> {
        if let Some(mut b) = self.map.get_mut(key) {
            f(&mut b);
            return Ok(());
        }
        if !self.room(now) {
            return Err(Full);
        }
        // Counted before it is made, so racing inserts never pass the bound.
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return Err(Full);
        }
        let mut fresh = false;
        let mut b = self.map.entry(key.to_owned()).or_insert_with(|| {
            fresh = true;
            Baseline::new(now)
        });
        if !fresh {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
        f(&mut b);
        Ok(())
    }

    /// What became of a call noted with `note`: forwarded calls are learnt,
    /// denied ones counted towards the denial rate (held ones: nothing).
    pub fn settle(
        &self,
        who: &Principal,
        s: &Settings,
        now: SystemTime,
        note: &AnomalyNote,
        forwarded: bool,
    ) {
        let _ = self.with(who.owner(), now, |b| {
            if forwarded {
                b.learn(s, now, &note.facts)
            } else {
                b.judged_one(true)
            }
        });
    }

    /// Accepts `facts` into the baseline of the principal keyed `key`
    /// (`grants::holder_key`, or [`Principal::owner`]); `force`: an
    /// operator's acceptance, which a full set makes room for (facts the
    /// fleet learnt are taken only as far as the caps allow).
    pub fn accept(
        &self,
        key: &str,
        now: SystemTime,
        facts: &Facts,
        force: bool,
    ) -> Result<(), Full> {
        self.with(key, now, |b| b.accept(facts, force))
    }

    /// Which of `facts` the baseline of `who` does not hold (all of them
    /// without one).
    pub fn unknown(&self, who: &Principal, facts: &Facts) -> Facts {
        match self.map.get(who.owner()) {
            Some(b) => b.unknown(facts),
            None => facts.clone(),
        }
    }

    /// A copy of the baseline of `key`, if there is one.
    pub fn get(&self, key: &str) -> Option<Baseline> {
        self.map.get(key).map(|b| b.clone())
    }
}

/// The hosts `args`' URLs reach, in lower case without a trailing dot,
/// each once, at most [`MAX_CALL_HOSTS`] (the egress guard's detection
/// finds them: `guards::egress::hosts_in`).
pub fn normalize_host(h: &str) -> String {
    // not a name comparison: DNS names are case-insensitive.
    h.trim()
        .trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

#[cfg(test)]
#[path = "anomaly_tests.rs"]
mod tests;
