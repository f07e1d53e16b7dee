//! The agent's published revisions, kill-switch overlay, change record and
//! fleet view, persisted under its state directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use warden_config::archive::{self, Files};

use crate::build::{self, BuildFailure, KillState, Signer};

/// One published revision.
#[derive(Debug)]
pub struct Published {
    pub seq: u64,
    pub revision: String,
    pub archive: Bytes,
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
    pub revision: String,
    pub healthy: bool,
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Member {
    report: Report,
    seen: Instant,
}

struct Inner {
    history: Vec<HistoryEntry>,
    kill: KillState,
    /// Digest of the source directory last built (successfully or not).
    source_digest: Option<String>,
    last_error: Option<String>,
    fleet: BTreeMap<String, Member>,
}

pub struct Store {
    dir: PathBuf,
    source: PathBuf,
    signer: Option<Signer>,
    inner: Mutex<Inner>,
    current: watch::Sender<Option<Arc<Published>>>,
    /// A member is stale when it has not reported for this long.
    pub stale_after: Duration,
}

fn io(e: impl std::fmt::Display) -> BuildFailure {
    BuildFailure(vec![warden_config::error::Problem {
        file: String::new(),
        path: String::new(),
        message: e.to_string(),
    }])
}

impl Store {
    /// Opens (or creates) the state directory and restores the last published revision.
    pub fn open(dir: &Path, source: &Path, signer: Option<Signer>) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir.join("revisions"))?;
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
        let current = match history.last() {
            Some(h) => {
                let archive =
                    std::fs::read(dir.join("revisions").join(format!("{:08}.tar.gz", h.seq)))?;
                Some(Arc::new(Published {
                    seq: h.seq,
                    revision: h.revision.clone(),
                    archive: Bytes::from(archive),
                }))
            }
            None => None,
        };
        let source_digest = history.last().and_then(|h| h.source.clone());
        let (tx, _) = watch::channel(current);
        Ok(Store {
            dir: dir.to_path_buf(),
            source: source.to_path_buf(),
            signer,
            inner: Mutex::new(Inner {
                history,
                kill,
                source_digest,
                last_error: None,
                fleet: BTreeMap::new(),
            }),
            current: tx,
            stale_after: Duration::from_secs(15),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key bundles (and approval grants) are signed with.
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.current.subscribe()
    }

    pub fn current(&self) -> Option<Arc<Published>> {
        self.current.borrow().clone()
    }

    /// Appends one line to the change record.
    pub fn record(
        &self,
        actor: &str,
        action: &str,
        revision: Option<&str>,
        ok: bool,
        detail: &str,
    ) {
        let line = serde_json::json!({
            "ts": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "actor": actor, "action": action, "revision": revision, "ok": ok, "detail": detail,
        });
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("changes.jsonl"))
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = res {
            tracing::error!(error = %e, "cannot write the change record");
        }
    }

    fn publish_files(
        &self,
        inner: &mut Inner,
        files: &Files,
        kill: &KillState,
        actor: &str,
        reason: &str,
    ) -> Result<Arc<Published>, BuildFailure> {
        let seq = inner.history.last().map_or(1, |h| h.seq + 1);
        let d = build::digest(files);
        let revision = format!("r{seq}-{}", &d[..8]);
        let built = build::build(files, &revision, kill, self.signer.as_ref())?;
        let tgz = archive::pack(&built);
        let path = self.dir.join("revisions").join(format!("{seq:08}.tar.gz"));
        std::fs::write(&path, &tgz).map_err(io)?;
        let entry = HistoryEntry {
            seq,
            revision: revision.clone(),
            published_at: SystemTime::now(),
            actor: actor.into(),
            reason: reason.into(),
            source: Some(d.clone()),
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("history.jsonl"))
            .map_err(io)?;
        writeln!(f, "{}", serde_json::to_string(&entry).map_err(io)?).map_err(io)?;
        inner.history.push(entry);
        let p = Arc::new(Published {
            seq,
            revision,
            archive: Bytes::from(tgz),
        });
        self.current.send_replace(Some(p.clone()));
        Ok(p)
    }

    /// Builds the source directory and publishes it when it changed (or `force`).
    pub fn publish_source(
        &self,
        actor: &str,
        force: bool,
    ) -> Result<Option<Arc<Published>>, BuildFailure> {
        let files = archive::read_dir(&self.source).map_err(io)?;
        let d = build::digest(&files);
        let mut inner = self.lock();
        if !force && inner.source_digest.as_deref() == Some(d.as_str()) {
            return Ok(None);
        }
        inner.source_digest = Some(d);
        let kill = inner.kill.clone();
        let res = self.publish_files(&mut inner, &files, &kill, actor, "source changed");
        drop(inner);
        self.after(actor, "publish", res).map(Some)
    }

    fn after(
        &self,
        actor: &str,
        action: &str,
        res: Result<Arc<Published>, BuildFailure>,
    ) -> Result<Arc<Published>, BuildFailure> {
        match &res {
            Ok(p) => {
                self.lock().last_error = None;
                self.record(actor, action, Some(&p.revision), true, "");
                tracing::info!(revision = %p.revision, action, "published");
            }
            Err(e) => {
                let msg = e.to_string();
                self.lock().last_error = Some(msg.clone());
                self.record(actor, action, None, false, &msg);
                tracing::error!(action, "refused to publish:\n{msg}");
            }
        }
        res
    }

    /// Republishes an earlier revision's content as a new revision.
    pub fn rollback(&self, actor: &str, to: &str) -> Result<Arc<Published>, BuildFailure> {
        let mut inner = self.lock();
        let Some(h) = inner.history.iter().find(|h| h.revision == to).cloned() else {
            drop(inner);
            return self.after(
                actor,
                "rollback",
                Err(io(format!("no revision `{to}` in the history"))),
            );
        };
        let res = std::fs::read(
            self.dir
                .join("revisions")
                .join(format!("{:08}.tar.gz", h.seq)),
        )
        .map_err(io)
        .and_then(|b| archive::unpack(&b).map_err(io))
        .and_then(|files| {
            self.publish_files(
                &mut inner,
                &files,
                &KillState::default(),
                actor,
                &format!("rollback to {to}"),
            )
        });
        drop(inner);
        self.after(actor, "rollback", res)
    }

    /// Changes the kill switch and publishes the source with it.
    pub fn kill(
        &self,
        actor: &str,
        scope: &str,
        value: &str,
        on: bool,
    ) -> Result<Arc<Published>, BuildFailure> {
        let action = if on { "kill" } else { "revive" };
        let files = archive::read_dir(&self.source).map_err(io)?;
        let mut inner = self.lock();
        let mut kill = inner.kill.clone();
        if let Err(e) = kill.set(scope, value, on) {
            drop(inner);
            return self.after(actor, action, Err(io(e)));
        }
        let res = self.publish_files(
            &mut inner,
            &files,
            &kill,
            actor,
            &format!("{action} {scope} {value}"),
        );
        if res.is_ok() {
            inner.kill = kill.clone();
            inner.source_digest = Some(build::digest(&files));
            let _ = std::fs::write(
                self.dir.join("kill.json"),
                serde_json::to_vec_pretty(&kill).unwrap_or_default(),
            );
        }
        drop(inner);
        self.after(actor, action, res)
    }

    pub fn report(&self, r: Report) {
        self.lock().fleet.insert(
            r.id.clone(),
            Member {
                report: r,
                seen: Instant::now(),
            },
        );
    }

    /// The fleet as JSON: who runs what, who is stale.
    pub fn fleet(&self) -> serde_json::Value {
        let current = self.current().map(|p| p.revision.clone());
        let inner = self.lock();
        let members: Vec<serde_json::Value> = inner
            .fleet
            .values()
            .map(|m| {
                let age = m.seen.elapsed();
                serde_json::json!({
                    "id": m.report.id,
                    "revision": m.report.revision,
                    "current": Some(&m.report.revision) == current.as_ref(),
                    "healthy": m.report.healthy,
                    "last_error": m.report.last_error,
                    "last_seen_secs": age.as_secs_f64(),
                    "stale": age > self.stale_after,
                })
            })
            .collect();
        serde_json::json!({
            "current": current,
            "last_build_error": inner.last_error,
            "kill_switch": inner.kill,
            "members": members,
        })
    }

    pub fn history(&self) -> Vec<HistoryEntry> {
        self.lock().history.clone()
    }
}
