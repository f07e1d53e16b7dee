//! The store's domain types: a published revision, what is served and to
//! whom, a canary and its state, the history of revisions and what a
//! gateway reports. Serialised as the state directory and the API have
//! always held them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use warden_config::archive::Files;

use crate::rollout::{Baseline, Guard, Labels, Selector, Stats, Target};

/// One published revision.
#[derive(Debug)]
pub struct Published {
    pub seq: u64,
    pub revision: String,
    pub archive: Bytes,
    /// Who gets it.
    pub target: Target,
    /// The source it was built from (before the kill overlay): a kill
    /// switch rebuilds every served revision from its own source.
    pub files: Arc<Files>,
    /// Tenant layer revisions (by seq) this one carries instead of the
    /// tenant's current one (a layer's canary).
    pub overrides: BTreeMap<String, u64>,
    /// When its signature stops being good (see `Store::refresh`).
    pub expires: Option<SystemTime>,
}

/// Where a canary stands: watched, or how its watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryState {
    Watching,
    Promoted,
    RolledBack,
    Superseded,
}

impl CanaryState {
    /// The name the API and `rollout.json` give it.
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryState::Watching => "watching",
            CanaryState::Promoted => "promoted",
            CanaryState::RolledBack => "rolled_back",
            CanaryState::Superseded => "superseded",
        }
    }
}

impl std::fmt::Display for CanaryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A canary being watched, or how the last one ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rollout {
    pub revision: String,
    pub seq: u64,
    pub labels: Selector,
    pub share: f64,
    pub members: BTreeSet<String>,
    #[serde(with = "rfc3339")]
    pub started: SystemTime,
    pub watch_secs: u64,
    pub guard: Guard,
    pub state: CanaryState,
    #[serde(default)]
    pub reason: Option<String>,
    /// Each member's counters when its window began (a canary member's
    /// once it reported the canary revision).
    #[serde(skip)]
    pub(super) marks: BTreeMap<String, Stats>,
    /// Each member's `Member::restarts` when the watch began (or when
    /// the agent first heard of it after a restart of its own): a member
    /// whose count moves restarted during the canary.
    #[serde(skip)]
    pub(super) restarts: BTreeMap<String, u64>,
    /// Each gateway's `Member::jumps` when the watch began.
    #[serde(skip)]
    pub(super) jumps: BTreeMap<String, u64>,
    /// Gateways of the rest whose reports were not counted (the agent did
    /// not serve what they report, their counters jumped, they restarted or
    /// share their id): at most 32 named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untrusted: Vec<String>,
    /// What the rest's gateways gave as the baseline last judged.
    #[serde(skip)]
    pub(super) baseline: Option<Baseline>,
    /// The last figures judged: the canary's and the rest's.
    #[serde(default)]
    pub canary_stats: Stats,
    #[serde(default)]
    pub rest_stats: Stats,
    /// A tenant layer's canary (`None`: the org's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<LayerCanary>,
    /// When the watch ended (this process's memory): a tenant waits as
    /// long as its last canary held the fleet's slot before it starts
    /// another.
    #[serde(skip)]
    pub ended: Option<SystemTime>,
}

impl Rollout {
    /// Whether the canary is being watched.
    pub fn watching(&self) -> bool {
        self.state == CanaryState::Watching
    }

    /// Ends the watch as `state` says, for `why`.
    pub(super) fn end(&mut self, state: CanaryState, why: impl Into<String>) {
        self.state = state;
        self.ended = Some(SystemTime::now());
        self.reason = Some(why.into());
    }
}

/// How a canary is published.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPlan {
    /// Share of the selected gateways, in (0, 1].
    pub share: f64,
    pub watch_secs: u64,
    #[serde(default)]
    pub guard: Guard,
}

/// One org revision in the history (`history.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub seq: u64,
    pub revision: String,
    #[serde(with = "rfc3339")]
    pub published_at: SystemTime,
    pub actor: String,
    pub reason: String,
    /// Digest of the source files this revision was built from.
    #[serde(default)]
    pub source: Option<String>,
    /// Who it was published to.
    #[serde(default)]
    pub target: Target,
    /// The tenant layers it carries: tenant → layer revision.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layers: BTreeMap<String, String>,
    /// Tenant layers left out because they do not compose: tenant → why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub left_out: BTreeMap<String, String>,
}

/// What `served.json` keeps of one served revision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServedEntry {
    pub seq: u64,
    pub target: Target,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, u64>,
}

impl ServedEntry {
    pub fn of(p: &Published) -> ServedEntry {
        ServedEntry {
            seq: p.seq,
            target: p.target.clone(),
            overrides: p.overrides.clone(),
        }
    }
}

/// Times as the state directory holds them (RFC 3339, milliseconds).
pub(crate) mod rfc3339 {
    use std::time::SystemTime;
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// What a gateway last reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub id: String,
    /// The reporting process's instance id, drawn at its start: two live
    /// processes under one `id` are a conflict (see `Store::conflict`),
    /// a new one replacing the old is a restart. Gateways from before it
    /// send none.
    #[serde(default)]
    pub instance: Option<String>,
    pub revision: String,
    pub healthy: bool,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    /// Counters since the gateway started (canaries are judged on them).
    #[serde(default)]
    pub stats: Stats,
    /// Each upstream server's replicas and how many pass health checks.
    #[serde(default)]
    pub upstreams: Vec<UpstreamHealth>,
}

/// One upstream server as a gateway sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamHealth {
    pub server: String,
    pub replicas: u32,
    pub healthy: u32,
}

/// Upstream servers one report may list.
pub const MAX_REPORTED_UPSTREAMS: usize = 1024;
/// The longest revision a report may name (the agent's own are a few bytes).
pub const MAX_REPORTED_REVISION: usize = 128;
/// The part of a report's `last_error` the fleet table keeps.
pub const MAX_REPORTED_ERROR: usize = 4096;

/// The layer a canary carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerCanary {
    pub tenant: String,
    pub seq: u64,
    pub revision: String,
}

/// One pull or release of the kill switch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KillEvent {
    pub at: String,
    pub actor: String,
    /// `kill` or `revive`.
    pub action: String,
    pub scope: String,
    pub value: String,
    /// The revision that carried it.
    pub revision: String,
}
