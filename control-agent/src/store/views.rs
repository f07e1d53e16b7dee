//! What the API and the console read of the store, as typed views: each
//! serialises (through `serde_json::Value`, whose keys are sorted) to the
//! JSON the agent has always answered.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::admins::{same_tenant, tenant_name};
use crate::build::KillState;
use crate::rollout::{Baseline, Labels, Stats, Target};

use super::error::RevisionError;
use super::layers::LayerEntry;
use super::types::{CanaryState, Rollout, UpstreamHealth};
use super::Store;

/// The canary being watched or the last one (`GET /v1/rollout`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RolloutView {
    /// There never was one: `{"state": "none"}`.
    None {
        state: &'static str,
    },
    Canary(Box<CanaryView>),
}

/// A canary with the figures it was last judged on.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryView {
    #[serde(flatten)]
    pub rollout: Rollout,
    /// The canary's members' figures.
    pub canary: FigureView,
    /// The rest's.
    pub rest: FigureView,
    /// What the canary was last judged against: one vote per gateway.
    pub baseline: Option<BaselineView>,
    pub elapsed_secs: u64,
}

/// One side's figures.
#[derive(Debug, Clone, Serialize)]
pub struct FigureView {
    pub calls: u64,
    pub denial_rate: f64,
    pub replies: u64,
    pub withheld_rate: f64,
    pub error_rate: f64,
    pub p99_ms: Option<f64>,
}

impl FigureView {
    fn of(s: &Stats) -> FigureView {
        FigureView {
            calls: s.calls,
            denial_rate: s.denial_rate(),
            replies: s.replies,
            withheld_rate: s.withheld_rate(),
            error_rate: s.error_rate(),
            p99_ms: s.p99().map(|p| p * 1000.0),
        }
    }
}

/// The rest's baseline a canary was judged against.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineView {
    pub gateways: usize,
    pub denial_rate: f64,
    pub error_rate: f64,
    pub withheld_rate: Option<f64>,
    pub p99_ms: Option<f64>,
    pub disputed: bool,
    pub absent: Option<String>,
}

impl BaselineView {
    fn of(b: &Baseline) -> BaselineView {
        BaselineView {
            gateways: b.gateways,
            denial_rate: b.denial,
            error_rate: b.error,
            withheld_rate: b.withheld,
            p99_ms: b.p99.map(|p| p * 1000.0),
            disputed: b.disputed,
            absent: b.absent.clone(),
        }
    }
}

impl RolloutView {
    pub(super) fn of(r: Option<&Rollout>) -> RolloutView {
        let Some(r) = r else {
            return RolloutView::None { state: "none" };
        };
        RolloutView::Canary(Box::new(CanaryView {
            rollout: r.clone(),
            canary: FigureView::of(&r.canary_stats),
            rest: FigureView::of(&r.rest_stats),
            baseline: r.baseline.as_ref().map(BaselineView::of),
            elapsed_secs: r.started.elapsed().unwrap_or_default().as_secs(),
        }))
    }

    /// The canary (`None`: there never was one).
    pub fn canary(&self) -> Option<&CanaryView> {
        match self {
            RolloutView::None { .. } => None,
            RolloutView::Canary(c) => Some(c),
        }
    }

    /// The canary's state (`None`: there never was one).
    pub fn state(&self) -> Option<CanaryState> {
        match self {
            RolloutView::None { .. } => None,
            RolloutView::Canary(c) => Some(c.rollout.state),
        }
    }
}

/// The fleet: who runs what and why, who is stale (`GET /v1/fleet`).
#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    /// The revision for everyone.
    pub current: Option<String>,
    pub served: Vec<ServedView>,
    pub rollout: Option<RolloutRef>,
    pub last_build_error: Option<String>,
    pub kill_switch: KillState,
    pub members: Vec<MemberView>,
    /// Gateway ids several live processes report under.
    pub conflicts: Vec<String>,
}

/// One served revision and whom it reaches.
#[derive(Debug, Clone, Serialize)]
pub struct ServedView {
    pub revision: String,
    pub target: Target,
    pub why: String,
}

/// The canary, named.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutRef {
    pub revision: String,
    pub state: CanaryState,
}

/// One gateway of the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: String,
    pub instance: Option<String>,
    /// Several live processes report under this id: they share whatever
    /// it is served, a canary included.
    pub conflict: bool,
    pub instances: Vec<String>,
    pub restarts: u64,
    /// Reports whose counters rose faster than a gateway counts.
    pub jumps: u64,
    /// Whether the agent served what it reports.
    pub served: bool,
    pub labels: Labels,
    pub revision: String,
    pub due: Option<String>,
    pub why: Option<String>,
    pub current: bool,
    pub healthy: bool,
    pub last_error: Option<String>,
    pub calls: u64,
    pub calls_per_sec: f64,
    pub upstreams: Vec<UpstreamHealth>,
    pub last_seen_secs: f64,
    pub stale: bool,
}

/// What one gateway reports of one upstream server.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamHealthView {
    pub gateway: String,
    pub server: String,
    pub replicas: u32,
    pub healthy: u32,
    pub stale: bool,
}

/// A tenant's layer history, its current revision and last error.
#[derive(Debug, Clone, Serialize)]
pub struct LayerHistory {
    pub tenant: String,
    pub current: Option<String>,
    pub last_error: Option<String>,
    pub canary: Option<LayerCanaryView>,
    pub history: Vec<LayerEntry>,
}

/// The tenant's layer canary, being watched or the last one.
#[derive(Debug, Clone, Serialize)]
pub struct LayerCanaryView {
    pub revision: Option<String>,
    pub state: CanaryState,
    pub reason: Option<String>,
}

/// One tenant with a layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub tenant: String,
    pub current: Option<String>,
    pub last_error: Option<String>,
}

/// Per-file unified diff between two revisions of a tenant's layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerDiff {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub files: Vec<LayerFileDiff>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerFileDiff {
    pub file: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    pub diff: String,
}

impl Store {
    /// The fleet: who runs what and why, who is stale.
    pub fn fleet_view(&self) -> FleetView {
        // Every gateway, whichever agent it reports to.
        self.merged_fleet("the fleet view");
        let current = self.current().map(|p| p.revision.clone());
        let inner = self.lock();
        let mut conflicts = Vec::new();
        let members = inner
            .fleet
            .values()
            .map(|m| {
                let age = m.seen.elapsed();
                let due = Self::pick_for(&inner.served, &m.report.id, &m.report.labels);
                let conflict = Self::conflict_in(&inner.sightings, &m.report.id, self.stale_after);
                if conflict.is_some() {
                    conflicts.push(m.report.id.clone());
                }
                MemberView {
                    id: m.report.id.clone(),
                    instance: m.report.instance.clone(),
                    conflict: conflict.is_some(),
                    instances: conflict.unwrap_or_default(),
                    restarts: m.restarts,
                    jumps: m.jumps,
                    served: Self::served_what_it_reports(&inner.fetched, &m.report),
                    labels: m.report.labels.clone(),
                    revision: m.report.revision.clone(),
                    due: due.as_ref().map(|p| p.revision.clone()),
                    why: due.as_ref().map(|p| p.target.why()),
                    current: due.as_ref().map(|p| &p.revision) == Some(&m.report.revision),
                    healthy: m.report.healthy,
                    last_error: m.report.last_error.clone(),
                    calls: m.report.stats.calls,
                    calls_per_sec: m.rate,
                    upstreams: m.report.upstreams.clone(),
                    last_seen_secs: age.as_secs_f64(),
                    stale: age > self.stale_after,
                }
            })
            .collect();
        FleetView {
            current,
            served: inner
                .served
                .iter()
                .map(|p| ServedView {
                    revision: p.revision.clone(),
                    target: p.target.clone(),
                    why: p.target.why(),
                })
                .collect(),
            rollout: inner.rollout.as_ref().map(|r| RolloutRef {
                revision: r.revision.clone(),
                state: r.state,
            }),
            last_build_error: inner.last_error.clone(),
            kill_switch: inner.kill.clone(),
            members,
            conflicts,
        }
    }

    /// What gateways report of `servers`' upstreams, and nothing else.
    pub fn upstream_health_view(&self, servers: &BTreeSet<String>) -> Vec<UpstreamHealthView> {
        self.merged_fleet("the upstream health");
        let inner = self.lock();
        let mut out = Vec::new();
        for m in inner.fleet.values() {
            for u in m
                .report
                .upstreams
                .iter()
                .filter(|u| servers.contains(&u.server))
            {
                out.push(UpstreamHealthView {
                    gateway: m.report.id.clone(),
                    server: u.server.clone(),
                    replicas: u.replicas,
                    healthy: u.healthy,
                    stale: m.seen.elapsed() > self.stale_after,
                });
            }
        }
        out
    }

    /// A tenant's layer history, its current revision and last error.
    pub fn layer_history_view(&self, tenant: &str) -> LayerHistory {
        let inner = self.lock();
        let t = tenant_name(tenant)
            .ok()
            .and_then(|t| inner.layers.get(&t).cloned());
        let t = t.unwrap_or_default();
        let current = t
            .state
            .current
            .and_then(|s| t.history.iter().find(|e| e.seq == s))
            .map(|e| e.revision.clone());
        let canary = inner
            .rollout
            .as_ref()
            .filter(|r| {
                r.layer
                    .as_ref()
                    .is_some_and(|l| same_tenant(&l.tenant, tenant))
            })
            .map(|r| LayerCanaryView {
                revision: r.layer.as_ref().map(|l| l.revision.clone()),
                state: r.state,
                reason: r.reason.clone(),
            });
        LayerHistory {
            tenant: tenant.to_owned(),
            current,
            last_error: t.state.last_error,
            canary,
            history: t.history,
        }
    }

    /// Every tenant with a layer: current revision and last error.
    pub fn layers_summary_view(&self) -> Vec<LayerSummary> {
        let inner = self.lock();
        inner
            .layers
            .iter()
            .map(|(name, t)| LayerSummary {
                tenant: name.clone(),
                current: t
                    .state
                    .current
                    .and_then(|s| t.history.iter().find(|e| e.seq == s))
                    .map(|e| e.revision.clone()),
                last_error: t.state.last_error.clone(),
            })
            .collect()
    }

    /// Per-file unified diff between two revisions of a tenant's layer.
    pub fn layer_diff_view(
        &self,
        tenant: &str,
        a: &str,
        b: &str,
    ) -> Result<LayerDiff, RevisionError> {
        let (fa, fb) = (
            self.layer_revision_files(tenant, a)?,
            self.layer_revision_files(tenant, b)?,
        );
        let names: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
        let mut files = Vec::new();
        for n in names {
            let (x, y) = (fa.get(n), fb.get(n));
            if x == y {
                continue;
            }
            let change = match (x, y) {
                (None, _) => "added",
                (_, None) => "removed",
                _ => "changed",
            };
            let text = |v: Option<&Vec<u8>>| {
                String::from_utf8_lossy(v.map_or(&[][..], |v| v)).into_owned()
            };
            let (tx, ty) = (text(x), text(y));
            let diff = similar::TextDiff::from_lines(&tx, &ty)
                .unified_diff()
                .context_radius(3)
                .header(&format!("{a}/{n}"), &format!("{b}/{n}"))
                .to_string();
            files.push(LayerFileDiff {
                file: n.clone(),
                change,
                diff,
            });
        }
        Ok(LayerDiff {
            tenant: tenant.to_owned(),
            from: a.to_owned(),
            to: b.to_owned(),
            files,
        })
    }
}
