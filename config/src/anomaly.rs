//! Per-principal behaviour baselines (`anomaly:`): the typed model. The
//! baselines and their signals are `warden_filters::engines::anomaly`;
//! `docs/guards.md` explains them.

use std::collections::HashSet;
use std::time::Duration;

use crate::error::Problems;
use crate::fields::duration;
use crate::raw;

pub const DEFAULT_LEARNING: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_RATE_FACTOR: f64 = 5.0;
pub const DEFAULT_DENIAL_FACTOR: f64 = 3.0;
pub const DEFAULT_FLEET_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// From a principal's first call: no rate, hour or denial signal yet.
    pub learning: Duration,
    /// The window a call rate is counted in.
    pub rate_window: Duration,
    pub rate_factor: f64,
    pub denial_factor: f64,
    /// How long the fleet's first-use facts live in Redis (`redis:`).
    pub fleet_ttl: Duration,
    /// Behaviours accepted into principals' baselines.
    pub accept: Vec<Accept>,
}

impl Default for Anomaly {
    fn default() -> Self {
        Anomaly {
            learning: DEFAULT_LEARNING,
            rate_window: DEFAULT_RATE_WINDOW,
            rate_factor: DEFAULT_RATE_FACTOR,
            denial_factor: DEFAULT_DENIAL_FACTOR,
            fleet_ttl: DEFAULT_FLEET_TTL,
            accept: Vec::new(),
        }
    }
}

/// A behaviour accepted into a principal's baseline: a server (and with
/// `tool`, one of its tools) and/or an egress host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accept {
    pub tenant: String,
    pub principal: String,
    pub server: Option<String>,
    pub tool: Option<String>,
    /// Lower case, no trailing dot.
    pub host: Option<String>,
}

impl Accept {
    /// Checks one accepted behaviour; `known`: the bundle's servers
    /// (`None`: not checked, as on the admin listener).
    pub fn check(&self, known: Option<&HashSet<&str>>) -> Result<(), String> {
        if self.tenant.trim().is_empty() || self.principal.trim().is_empty() {
            return Err("needs a tenant and a principal".into());
        }
        if self.server.is_none() && self.host.is_none() {
            return Err("names nothing to accept: give a server (and a tool) or a host".into());
        }
        if self.tool.is_some() && self.server.is_none() {
            return Err("a tool needs its server".into());
        }
        if let (Some(s), Some(known)) = (&self.server, known) {
            if !known.contains(s.as_str()) {
                return Err(format!("`{s}` is not a server of this bundle"));
            }
        }
        if let Some(h) = &self.host {
            if h.is_empty() || h.contains(['/', ' ', '@']) {
                return Err(format!("`{h}` is not a host"));
            }
        }
        Ok(())
    }

    /// `host` as baselines keep it: lower case, no trailing dot.
    pub fn normalize(mut self) -> Accept {
        // not a name comparison: DNS names are case-insensitive.
        self.host = self
            .host
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase());
        self
    }
}

pub(crate) fn anomaly(r: &raw::AnomalyConfig, known: &HashSet<&str>, p: &mut Problems) -> Anomaly {
    let d = Anomaly::default();
    let factor = |p: &mut Problems, path: &str, v: Option<f64>, default: f64| match v {
        None => default,
        Some(f) if f.is_finite() && f > 1.0 && f <= 1000.0 => f,
        Some(_) => {
            p.push(path, "must be a number above 1 and at most 1000");
            default
        }
    };
    let accept = r
        .accept
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let a = Accept {
                tenant: a.tenant.clone(),
                principal: a.principal.clone(),
                server: a.server.clone(),
                tool: a.tool.clone(),
                host: a.host.clone(),
            }
            .normalize();
            match a.check(Some(known)) {
                Ok(()) => Some(a),
                Err(e) => {
                    p.push(format!("anomaly.accept[{i}]"), e);
                    None
                }
            }
        })
        .collect();
    let a = Anomaly {
        learning: duration(p, "anomaly.learning", &r.learning, d.learning),
        rate_window: duration(p, "anomaly.rate_window", &r.rate_window, d.rate_window),
        rate_factor: factor(p, "anomaly.rate_factor", r.rate_factor, d.rate_factor),
        denial_factor: factor(p, "anomaly.denial_factor", r.denial_factor, d.denial_factor),
        fleet_ttl: duration(p, "anomaly.fleet_ttl", &r.fleet_ttl, d.fleet_ttl),
        accept,
    };
    if a.rate_window > Duration::from_secs(24 * 3600) {
        p.push("anomaly.rate_window", "must be at most 1day");
    }
    a
}
