//! `anomaly:`: per-principal behaviour baselines and the signals the policy
//! reads as `input.anomaly` (read into `crate::anomaly`).

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// How long a principal is learnt, from its first call, before its
    /// rate, hour and denial signals are raised (default `7d`).
    #[serde(default)]
    pub learning: Option<String>,
    /// The window a call rate is counted in (default `1m`).
    #[serde(default)]
    pub rate_window: Option<String>,
    /// A window's calls above this many times the usual raise `rate`
    /// (default 5).
    #[serde(default)]
    pub rate_factor: Option<f64>,
    /// A recent denial rate above this many times the usual raises
    /// `denial_rate` (default 3).
    #[serde(default)]
    pub denial_factor: Option<f64>,
    /// How long the fleet's first-use facts live in Redis after they were
    /// last added to (default `30d`).
    #[serde(default)]
    pub fleet_ttl: Option<String>,
    /// Behaviours accepted into principals' baselines (applied on swap).
    #[serde(default)]
    pub accept: Vec<AcceptConfig>,
}

/// One accepted behaviour: a server, a tool of a server, or an egress host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptConfig {
    pub tenant: String,
    pub principal: String,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub tool: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
}
