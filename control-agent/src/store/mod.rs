//! The agent's published revisions, the set of them being served (to all,
//! to label selectors, to a canary), the kill-switch overlay, the change
//! record and the fleet view, persisted under its state directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use warden_config::archive::{self, Files};

use crate::build::{self, BuildFailure, KillState, Signer};
use crate::rollout::{self, Guard, Labels, Selector, Stats, Target, Verdict};

mod canary;
mod changes;
mod compose;
pub mod layers;
mod registry;
pub use canary::CanaryRefusal;
pub use changes::KillEvent;
pub use registry::RegistryError;
mod fleet;
mod prune;
pub use prune::MAX_ORG_REVISIONS;
#[cfg(test)]
pub(crate) mod fleet_tests;
#[cfg(test)]
mod isolation_tests;
#[cfg(test)]
pub(crate) mod layer_tests;
#[cfg(test)]
mod tests;

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
    /// When its signature stops being good (see [`Store::refresh`]).
    pub expires: Option<SystemTime>,
}

/// A canary being watched, or how the last one ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rollout {
    pub revision: String,
    pub seq: u64,
    pub labels: Selector,
    pub share: f64,
    pub members: BTreeSet<String>,
    #[serde(with = "humantime_serde_compat")]
    pub started: SystemTime,
    pub watch_secs: u64,
    pub guard: Guard,
    /// `watching`, `promoted`, `rolled_back` or `superseded`.
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// Each member's counters when its window began (a canary member's
    /// once it reported the canary revision).
    #[serde(skip)]
    marks: BTreeMap<String, Stats>,
    /// Each member's [`Member::restarts`] when the watch began (or when
    /// the agent first heard of it after a restart of its own): a member
    /// whose count moves restarted during the canary.
    #[serde(skip)]
    restarts: BTreeMap<String, u64>,
    /// Each gateway's [`Member::jumps`] when the watch began.
    #[serde(skip)]
    jumps: BTreeMap<String, u64>,
    /// Gateways of the rest whose reports were not counted (the agent did
    /// not serve what they report, their counters jumped, they restarted or
    /// share their id): at most 32 named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untrusted: Vec<String>,
    /// What the rest's gateways gave as the baseline last judged.
    #[serde(skip)]
    baseline: Option<rollout::Baseline>,
    /// The last figures judged: the canary's and the rest's.
    #[serde(default)]
    pub canary_stats: Stats,
    #[serde(default)]
    pub rest_stats: Stats,
    /// A tenant layer's canary (`None`: the org's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<layers::LayerCanary>,
    /// When the watch ended (this process's memory): a tenant waits as
    /// long as its last canary held the fleet's slot before it starts
    /// another.
    #[serde(skip)]
    pub ended: Option<SystemTime>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub seq: u64,
    pub revision: String,
    #[serde(with = "humantime_serde_compat")]
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

mod humantime_serde_compat {
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
    /// processes under one `id` are a conflict (see [`Store::conflict`]),
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

#[derive(Debug)]
struct Member {
    report: Report,
    seen: Instant,
    /// Client calls per second between its last two reports.
    rate: f64,
    /// Times its reports showed another process than the one before (a
    /// new instance id, or counters lower than the last report's): a
    /// restart, or a second process under the id. A canary is judged on
    /// its members' count not moving.
    restarts: u64,
    /// Reports whose counters rose faster than [`rollout::MAX_CALLS_PER_SEC`]
    /// allows since the one before: a canary is judged on this not moving.
    jumps: u64,
}

struct Inner {
    history: Vec<HistoryEntry>,
    /// What gateways are given: each gets the newest entry that reaches it.
    served: Vec<Arc<Published>>,
    rollout: Option<Rollout>,
    kill: KillState,
    /// Who pulled and released the kill switch, newest last (bounded).
    kill_log: std::collections::VecDeque<KillEvent>,
    /// Digest of the source directory last built (successfully or not).
    source_digest: Option<String>,
    last_error: Option<String>,
    fleet: BTreeMap<String, Member>,
    /// The instances seen under each gateway id (reports and bundle
    /// fetches), to tell two live processes under one id from a restart.
    sightings: BTreeMap<String, fleet::Sightings>,
    /// What each gateway id's bundle fetches were answered with.
    fetched: BTreeMap<String, fleet::Fetches>,
    /// Each tenant's layer revisions.
    layers: BTreeMap<String, layers::Tenant>,
    registry: crate::registry::Registry,
}

/// A test's code run inside the store at a chosen point.
#[cfg(test)]
pub(crate) type TestHook = Box<dyn FnOnce(&Store) + Send>;

pub struct Store {
    dir: PathBuf,
    source: PathBuf,
    signer: Option<Signer>,
    inner: Mutex<Inner>,
    /// Bumped whenever what is served changes (long polls wake on it).
    generation: watch::Sender<u64>,
    /// A member is stale when it has not reported for this long.
    pub stale_after: Duration,
    /// The change record's size at which it is moved aside (one previous
    /// file is kept): [`changes::MAX_FILE`] unless a test makes it smaller.
    pub changes_limit: u64,
    /// Revisions of one tenant's layer kept (tests lower it).
    pub layer_revisions: usize,
    /// Org revisions kept beside those served ([`MAX_ORG_REVISIONS`]).
    pub org_revisions: usize,
    /// Taken while the change record is written (and moved aside).
    changes_turn: Mutex<()>,
    /// Re-signs that failed since start (`warden_agent_resign_failures_total`).
    pub resign_failures: std::sync::atomic::AtomicU64,
    /// Run once after the next [`Store::rollout`] read (a test's way into
    /// the gap between a check and an action).
    #[cfg(test)]
    pub(crate) after_rollout_read: Mutex<Option<TestHook>>,
}

fn io(e: impl std::fmt::Display) -> BuildFailure {
    BuildFailure(vec![warden_config::error::Problem {
        file: String::new(),
        path: String::new(),
        message: e.to_string(),
    }])
}

/// Gateways the fleet table holds at most.
const MAX_FLEET: usize = 10_000;

fn served_has(entries: &[ServedEntry], seq: u64) -> bool {
    entries.iter().any(|e| e.seq == seq)
}

/// What `served.json` keeps of one served revision.
#[derive(Serialize, Deserialize)]
struct ServedEntry {
    seq: u64,
    target: Target,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    overrides: BTreeMap<String, u64>,
}

impl Store {
    fn revision_path(&self, seq: u64, what: &str) -> PathBuf {
        self.dir.join("revisions").join(format!("{seq:08}.{what}"))
    }

    /// A published revision read back from the state directory.
    fn load_published(
        dir: &Path,
        h: &HistoryEntry,
        target: Target,
        overrides: BTreeMap<String, u64>,
    ) -> anyhow::Result<Published> {
        let archive = std::fs::read(dir.join("revisions").join(format!("{:08}.tar.gz", h.seq)))?;
        // The source it was built from; a state directory written before
        // sources were kept has only the built archive.
        let files = match std::fs::read(
            dir.join("revisions")
                .join(format!("{:08}.src.tar.gz", h.seq)),
        ) {
            Ok(b) => archive::unpack(&b)?,
            Err(_) => archive::unpack(&archive)?,
        };
        let expires = archive::unpack(&archive)
            .ok()
            .and_then(|built| build::expires_of(&built));
        Ok(Published {
            seq: h.seq,
            revision: h.revision.clone(),
            archive: Bytes::from(archive),
            target,
            files: Arc::new(files),
            overrides,
            expires,
        })
    }

    /// Opens (or creates) the state directory and restores what was served.
    pub fn open(dir: &Path, source: &Path, signer: Option<Signer>) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir.join("revisions"))?;
        // Builds stay newer than every one this store published, whatever
        // the clock says now (see `build::next_sequence`).
        if let Some(floor) = std::fs::read_to_string(dir.join(SEQUENCE_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            build::raise_sequence_floor(floor);
        }
        let history: Vec<HistoryEntry> = match std::fs::read_to_string(dir.join("history.jsonl")) {
            Ok(t) => t
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let kill = match std::fs::read(dir.join("kill.json")) {
            Ok(b) => serde_json::from_slice(&b)?,
            Err(_) => KillState::default(),
        };
        let entries: Vec<ServedEntry> = match std::fs::read(dir.join("served.json")) {
            Ok(b) => serde_json::from_slice(&b)?,
            // Only a state directory from before targeted rollout has none;
            // any other failure must not widen a targeted revision to all.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            Err(_) => history
                .last()
                .map(|h| ServedEntry {
                    seq: h.seq,
                    target: Target::all(),
                    overrides: BTreeMap::new(),
                })
                .into_iter()
                .collect(),
        };
        let mut served = Vec::new();
        for e in &entries {
            let Some(h) = history.iter().find(|h| h.seq == e.seq) else {
                anyhow::bail!(
                    "served.json names revision {} that the history lacks",
                    e.seq
                );
            };
            served.push(Arc::new(Self::load_published(
                dir,
                h,
                e.target.clone(),
                e.overrides.clone(),
            )?));
        }
        let mut rollout: Option<Rollout> = match std::fs::read(dir.join("rollout.json")) {
            Ok(b) => Some(serde_json::from_slice(&b)?),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            Err(_) => None,
        };
        // A canary being watched when the agent stopped is watched again
        // from now: the members' windows (and what they did while nobody
        // watched) are gone, and judging the rest of an old watch on a
        // few reports would decide on nothing.
        if let Some(r) = rollout.as_mut().filter(|r| r.state == "watching") {
            if served_has(&entries, r.seq) {
                r.started = SystemTime::now();
            } else {
                r.state = "superseded".into();
                r.ended = Some(SystemTime::now());
                r.reason =
                    Some("its revision was no longer served when the agent restarted".into());
            }
        }
        let source_digest = history.last().and_then(|h| h.source.clone());
        let (registry, withdrawn) = registry::load(dir)?;
        let (tx, _) = watch::channel(0);
        let store = Store {
            dir: dir.to_path_buf(),
            source: source.to_path_buf(),
            signer,
            inner: Mutex::new(Inner {
                history,
                served,
                rollout,
                kill,
                kill_log: changes::load_kill_log(dir),
                source_digest,
                last_error: None,
                fleet: BTreeMap::new(),
                sightings: BTreeMap::new(),
                fetched: BTreeMap::new(),
                layers: layers::load(dir)?,
                registry,
            }),
            generation: tx,
            stale_after: Duration::from_secs(15),
            changes_limit: changes::MAX_FILE,
            layer_revisions: layers::MAX_LAYER_REVISIONS,
            org_revisions: MAX_ORG_REVISIONS,
            changes_turn: Mutex::new(()),
            resign_failures: Default::default(),
            #[cfg(test)]
            after_rollout_read: Mutex::new(None),
        };
        store.shares_withdrawn_at_start(&withdrawn);
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key bundles (and approval grants) are signed with.
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// Wakes when what is served changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Whether anything is published at all.
    pub fn has_published(&self) -> bool {
        !self.lock().served.is_empty()
    }

    /// The revision a gateway gets: the newest served one that reaches it.
    pub fn for_gateway(&self, id: &str, labels: &Labels) -> Option<Arc<Published>> {
        Self::pick_for(&self.lock().served, id, labels)
    }

    fn pick_for(served: &[Arc<Published>], id: &str, labels: &Labels) -> Option<Arc<Published>> {
        served
            .iter()
            .filter(|p| p.target.reaches(id, labels))
            .max_by_key(|p| p.seq)
            .cloned()
    }

    /// Appends one line to the change record. Each value is cut to
    /// [`changes::MAX_VALUE`] characters (what a user typed reaches it), and
    /// the file is bounded: past `changes_limit` bytes it is moved aside to
    /// `changes.jsonl.1` (replacing the one before) and started again.
    pub fn record(
        &self,
        actor: &str,
        action: &str,
        revision: Option<&str>,
        ok: bool,
        detail: &str,
    ) {
        let cut = changes::cut;
        let line = serde_json::json!({
            "ts": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "actor": cut(actor), "action": cut(action), "revision": revision.map(cut),
            "ok": ok, "detail": cut(detail),
        });
        let path = self.dir.join(changes::FILE);
        // One writer at a time: two that both found the file full would
        // each move it aside, the second over the first's.
        let _turn = self.changes_turn.lock().unwrap_or_else(|p| p.into_inner());
        let full = std::fs::metadata(&path).is_ok_and(|m| m.len() >= self.changes_limit);
        if full {
            if let Err(e) = std::fs::rename(&path, self.dir.join(changes::PREVIOUS)) {
                tracing::error!(error = %e, "cannot move the full change record aside");
            }
        }
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = res {
            tracing::error!(error = %e, "cannot write the change record");
        }
    }

    /// Writes what is served (and the rollout) and wakes the long polls.
    fn served_changed(&self, inner: &Inner) {
        let entries: Vec<ServedEntry> = inner
            .served
            .iter()
            .map(|p| ServedEntry {
                seq: p.seq,
                target: p.target.clone(),
                overrides: p.overrides.clone(),
            })
            .collect();
        let mut res = write_atomic(
            &self.dir.join("served.json"),
            &serde_json::to_vec_pretty(&entries).unwrap_or_default(),
        );
        if let Some(r) = &inner.rollout {
            res = res.and(write_atomic(
                &self.dir.join("rollout.json"),
                &serde_json::to_vec_pretty(r).unwrap_or_default(),
            ));
        }
        if let Err(e) = res {
            tracing::error!(error = %e, "cannot persist what is served");
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// Builds, signs and stores one revision (not yet served): the org
    /// source `files` composed with each tenant's current layer (or the
    /// one `overrides` names) and the registry; a layer that does not
    /// compose is left out (and recorded as its tenant's last error).
    #[allow(clippy::too_many_arguments)]
    fn build_revision(
        &self,
        inner: &mut Inner,
        files: Arc<Files>,
        kill: &KillState,
        actor: &str,
        reason: &str,
        target: Target,
        overrides: BTreeMap<String, u64>,
    ) -> Result<Arc<Published>, BuildFailure> {
        let seq = inner.history.last().map_or(1, |h| h.seq + 1);
        let d = build::digest(&files);
        let revision = format!("r{seq}-{}", &d[..8]);
        let layers = self.layer_set(inner, &overrides, None)?;
        let registry = inner.registry.bundle_json();
        // Signed for the gateways its selector names (a canary's members
        // are among them): promoted, the same archive reaches them all.
        let audience = match &target {
            Target::Select { labels } | Target::Canary { labels, .. } => labels.0.clone(),
        };
        let composed = self.compose_build(
            &files,
            &layers,
            &registry,
            layers::Release {
                revision: &revision,
                audience: &audience,
            },
            kill,
            self.signer.as_ref(),
        )?;
        self.note_left_out(inner, &composed, &overrides, actor, &revision);
        let built = composed.files;
        let expires = build::expires_of(&built);
        let tgz = archive::pack(&built);
        std::fs::write(self.revision_path(seq, "tar.gz"), &tgz).map_err(io)?;
        std::fs::write(self.revision_path(seq, "src.tar.gz"), archive::pack(&files)).map_err(io)?;
        write_atomic(
            &self.dir.join(SEQUENCE_FILE),
            build::last_sequence().to_string().as_bytes(),
        )
        .map_err(io)?;
        let entry = HistoryEntry {
            seq,
            revision: revision.clone(),
            published_at: SystemTime::now(),
            actor: actor.into(),
            reason: reason.into(),
            source: Some(d.clone()),
            target: target.clone(),
            layers: composed.layers,
            left_out: composed
                .left_out
                .iter()
                .map(|(t, e)| (t.clone(), e.to_string()))
                .collect(),
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("history.jsonl"))
            .map_err(io)?;
        writeln!(f, "{}", serde_json::to_string(&entry).map_err(io)?).map_err(io)?;
        inner.history.push(entry);
        self.prune_revisions(inner);
        Ok(Arc::new(Published {
            seq,
            revision,
            archive: Bytes::from(tgz),
            target,
            files,
            overrides,
            expires,
        }))
    }

    /// Serves `p`: a revision for everyone replaces every other; one for a
    /// selector replaces older ones for the same selector. A canary that a
    /// newer revision for everyone replaces is over (superseded).
    fn serve(&self, inner: &mut Inner, p: Arc<Published>) {
        let mut superseded = false;
        match &p.target {
            t if t.is_all() => inner.served.clear(),
            Target::Select { labels } => inner
                .served
                .retain(|q| !matches!(&q.target, Target::Select { labels: l } if l == labels)),
            Target::Canary { .. } => {}
        }
        // Any other publish during a watch ends the canary: its members
        // would run the newer revision (or the canary, once promoted, would
        // undo it), so its figures would judge nothing.
        if let Some(r) = inner.rollout.as_mut().filter(|r| r.state == "watching") {
            if !matches!(p.target, Target::Canary { .. }) && p.seq > r.seq {
                r.state = "superseded".into();
                r.ended = Some(SystemTime::now());
                r.reason = Some(format!(
                    "{} was published ({}) during the watch",
                    p.revision,
                    p.target.why()
                ));
                let seq = r.seq;
                inner.served.retain(|q| q.seq != seq);
                superseded = !p.target.is_all();
            }
        }
        inner.served.push(p.clone());
        if superseded {
            // The canary's members go back to what they were served before
            // it, built again so that it is newer than the canary they ran
            // (gateways refuse an older bundle than one they applied).
            let kill = inner.kill.clone();
            if let Err(e) = self.rebuild_served(inner, &kill, "agent", "canary superseded") {
                tracing::error!(error = %e, "rebuilding after a superseded canary failed; its gateways keep the canary until the next publish");
                self.served_changed(inner);
            }
            return;
        }
        self.served_changed(inner);
    }

    fn publish_files(
        &self,
        inner: &mut Inner,
        files: Arc<Files>,
        kill: &KillState,
        actor: &str,
        reason: &str,
        target: Target,
    ) -> Result<Arc<Published>, BuildFailure> {
        let p = self.build_revision(inner, files, kill, actor, reason, target, BTreeMap::new())?;
        self.serve(inner, p.clone());
        Ok(p)
    }

    /// Builds the source directory and publishes it to everyone when it
    /// changed (or `force`).
    pub fn publish_source(
        &self,
        actor: &str,
        force: bool,
    ) -> Result<Option<Arc<Published>>, BuildFailure> {
        self.publish_source_to(actor, force, Selector::default())
    }

    /// As [`Store::publish_source`], to the gateways `labels` selects.
    pub fn publish_source_to(
        &self,
        actor: &str,
        force: bool,
        labels: Selector,
    ) -> Result<Option<Arc<Published>>, BuildFailure> {
        let files = archive::read_dir(&self.source).map_err(io)?;
        let d = build::digest(&files);
        let mut inner = self.lock();
        if !force && inner.source_digest.as_deref() == Some(d.as_str()) {
            return Ok(None);
        }
        inner.source_digest = Some(d);
        let kill = inner.kill.clone();
        let reason = if labels.is_all() {
            "source changed".to_owned()
        } else {
            format!("published to {labels}")
        };
        let res = self.publish_files(
            &mut inner,
            Arc::new(files),
            &kill,
            actor,
            &reason,
            Target::Select { labels },
        );
        drop(inner);
        self.after(actor, "publish", res).map(Some)
    }
}

impl Store {
    fn after(
        &self,
        actor: &str,
        action: &str,
        res: Result<Arc<Published>, BuildFailure>,
    ) -> Result<Arc<Published>, BuildFailure> {
        self.after_with(actor, action, "", res)
    }

    /// As [`Store::after`], saying what was done (`detail`) in the record.
    fn after_with(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        res: Result<Arc<Published>, BuildFailure>,
    ) -> Result<Arc<Published>, BuildFailure> {
        match &res {
            Ok(p) => {
                self.lock().last_error = None;
                self.record(actor, action, Some(&p.revision), true, detail);
                tracing::info!(revision = %p.revision, action, "published");
            }
            Err(e) => {
                let msg = e.to_string();
                self.lock().last_error = Some(msg.clone());
                self.record(
                    actor,
                    action,
                    None,
                    false,
                    &if detail.is_empty() {
                        msg.clone()
                    } else {
                        format!("{detail}: {msg}")
                    },
                );
                tracing::error!(action, "refused to publish:\n{msg}");
            }
        }
        res
    }
    /// Republishes an earlier revision's content as the newest revision for
    /// everyone (ending any canary), with the current kill switch.
    pub fn rollback(&self, actor: &str, to: &str) -> Result<Arc<Published>, BuildFailure> {
        let mut inner = self.lock();
        let Some(h) = inner.history.iter().find(|h| h.revision == to).cloned() else {
            let why = Self::no_revision(&inner, to);
            drop(inner);
            return self.after(actor, "rollback", Err(io(why)));
        };
        // The revision's own source (its built archive for one published
        // before sources were kept), built with today's kill switch: a
        // rollback of content never lifts an emergency pause.
        let kill = inner.kill.clone();
        let res = std::fs::read(self.revision_path(h.seq, "src.tar.gz"))
            .or_else(|_| std::fs::read(self.revision_path(h.seq, "tar.gz")))
            .map_err(io)
            .and_then(|b| archive::unpack(&b).map_err(io))
            .and_then(|files| {
                self.publish_files(
                    &mut inner,
                    Arc::new(files),
                    &kill,
                    actor,
                    &format!("rollback to {to}"),
                    Target::all(),
                )
            });
        drop(inner);
        self.after_with(actor, "rollback", &format!("to {to}"), res)
    }

    /// Changes the kill switch: every served revision (for everyone, for a
    /// selector, a canary) is rebuilt from its own source with it, so the
    /// switch reaches every gateway at once whatever it runs, and nothing
    /// else changes (an unpublished source edit stays unpublished).
    pub fn kill(
        &self,
        actor: &str,
        scope: &str,
        value: &str,
        on: bool,
    ) -> Result<Arc<Published>, BuildFailure> {
        let action = if on { "kill" } else { "revive" };
        let mut inner = self.lock();
        let mut kill = inner.kill.clone();
        if let Err(e) = kill.set(scope, value, on) {
            drop(inner);
            return self.after_with(actor, action, &format!("{scope} {value}"), Err(io(e)));
        }
        // What is paused is the server: where it is reached now, so that
        // every gateway pauses whatever name a layer gives it later.
        if on && scope == "server" {
            let at = self.upstreams_of(&inner, value);
            if !at.is_empty() {
                kill.upstreams.insert(value.to_owned(), at);
            }
        }
        let reason = format!("{action} {scope} {value}");
        let res = (|| {
            if inner.served.is_empty() {
                let files = archive::read_dir(&self.source).map_err(io)?;
                inner.source_digest = Some(build::digest(&files));
                return self.publish_files(
                    &mut inner,
                    Arc::new(files),
                    &kill,
                    actor,
                    &reason,
                    Target::all(),
                );
            }
            self.rebuild_served(&mut inner, &kill, actor, &reason)
                .map(|p| p.expect("one served revision at least"))
        })();
        if let Ok(p) = &res {
            inner.kill = kill.clone();
            let _ = write_atomic(
                &self.dir.join("kill.json"),
                &serde_json::to_vec_pretty(&kill).unwrap_or_default(),
            );
            let event = KillEvent {
                at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                actor: actor.to_owned(),
                action: action.to_owned(),
                scope: scope.to_owned(),
                value: value.to_owned(),
                revision: p.revision.clone(),
            };
            changes::log_kill(&self.dir, &mut inner.kill_log, event);
        }
        drop(inner);
        self.after_with(actor, action, &format!("{scope} {value}"), res)
    }

    /// The revision for everyone (the newest served one without a target).
    pub fn current(&self) -> Option<Arc<Published>> {
        self.lock()
            .served
            .iter()
            .filter(|p| p.target.is_all())
            .max_by_key(|p| p.seq)
            .cloned()
    }

    pub fn history(&self) -> Vec<HistoryEntry> {
        self.lock().history.clone()
    }

    /// What a publish of revision `seq` warns of: each tenant layer left
    /// out of it (it does not compose), whose principals every gateway
    /// refuses until it composes again.
    pub fn warnings_of(&self, seq: u64) -> Vec<String> {
        let inner = self.lock();
        let Some(h) = inner.history.iter().find(|h| h.seq == seq) else {
            return Vec::new();
        };
        h.left_out
            .iter()
            .map(|(t, why)| {
                format!(
                    "tenant `{t}`'s layer does not compose with this configuration and is left out: its principals' calls are refused on every gateway until it composes again (publish a layer that does, or restore its grant): {why}"
                )
            })
            .collect()
    }

    /// Re-signs what is served before it expires: when a served revision
    /// has less than half of the signer's validity left at `now` (or names
    /// no expiry: built before expiry existed), every served revision is
    /// rebuilt from its own source (as a kill switch rebuilds them: newer
    /// sequence, a new expiry, a new revision name so that gateways fetch
    /// it). `None` when nothing was due (or bundles are not signed to
    /// expire). A failure is recorded; what is served keeps being served
    /// until it expires, and the gateways running it keep running it.
    pub fn refresh(&self, now: SystemTime) -> Result<Option<Arc<Published>>, BuildFailure> {
        let Some(valid) = self.signer.as_ref().and_then(|s| s.valid_for) else {
            return Ok(None);
        };
        let mut inner = self.lock();
        // During a canary's watch, not before a quarter is left: its
        // members report the revision they run, and a new name mid-watch
        // would judge them on nothing.
        let watching = inner
            .rollout
            .as_ref()
            .is_some_and(|r| r.state == "watching");
        let left = if watching { valid / 4 } else { valid / 2 };
        let due = inner.served.iter().any(|p| {
            p.expires
                .is_none_or(|at| at.duration_since(now).unwrap_or_default() < left)
        });
        if !due {
            return Ok(None);
        }
        let kill = inner.kill.clone();
        let res = self
            .rebuild_served(&mut inner, &kill, "agent", RESIGN_REASON)
            .transpose();
        if matches!(res, Some(Ok(_))) {
            self.forget_resigns(&mut inner);
        }
        drop(inner);
        if matches!(res, Some(Err(_))) {
            self.resign_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        match res {
            None => Ok(None),
            Some(res) => self.after("agent", "re-sign", res).map(Some),
        }
    }

    /// When the first of the served revisions' signatures expires
    /// (`warden_agent_bundle_expires_timestamp_seconds`).
    pub fn earliest_expiry(&self) -> Option<SystemTime> {
        self.lock().served.iter().filter_map(|p| p.expires).min()
    }

    /// How long after a failed re-sign it is tried again: well inside the
    /// half of the validity left when re-signing starts.
    pub fn resign_retry(&self) -> Duration {
        self.signer
            .as_ref()
            .and_then(|s| s.valid_for)
            .map_or(Duration::from_secs(600), |v| {
                (v / 20).clamp(Duration::from_secs(10), Duration::from_secs(600))
            })
    }

    /// Rebuilds every served revision (for everyone, for a selector, a
    /// canary) from its own source with `kill` and today's layers and
    /// registry, oldest first so that the newest stays the newest for every
    /// gateway it reaches. `None` when nothing is served.
    fn rebuild_served(
        &self,
        inner: &mut Inner,
        kill: &KillState,
        actor: &str,
        reason: &str,
    ) -> Result<Option<Arc<Published>>, BuildFailure> {
        let mut old = inner.served.clone();
        old.sort_by_key(|p| p.seq);
        let mut rebuilt = Vec::with_capacity(old.len());
        for p in &old {
            rebuilt.push(self.build_revision(
                inner,
                p.files.clone(),
                kill,
                actor,
                &format!("{reason} (rebuilt {})", p.revision),
                p.target.clone(),
                p.overrides.clone(),
            )?);
        }
        if let Some(r) = inner.rollout.as_mut().filter(|r| r.state == "watching") {
            if let Some(i) = old.iter().position(|p| p.seq == r.seq) {
                r.seq = rebuilt[i].seq;
                r.revision = rebuilt[i].revision.clone();
            }
        }
        if rebuilt.is_empty() {
            return Ok(None);
        }
        inner.served = rebuilt.clone();
        self.served_changed(inner);
        Ok(rebuilt.pop())
    }
}

/// The highest build sequence this store gave a bundle.
const SEQUENCE_FILE: &str = "sequence";

/// How a re-sign's history line begins (see [`Store::refresh`]).
const RESIGN_REASON: &str = "re-signed before it expires";

/// Writes a file whole or not at all (a temporary file renamed over it).
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}
