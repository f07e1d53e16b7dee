//! Where bundles come from and how a new one takes effect.
//!
//! Sources: a local directory (watched), or an HTTP URL — the control agent
//! (long-poll with `If-None-Match` + `Prefer: wait`) or any static server
//! (polling with backoff and jitter). Each new bundle is verified (when a
//! public key is configured), written to the state directory, loaded and
//! compiled off the request path, and published with one `ArcSwap` store;
//! requests in flight finish on the snapshot they started with. A bundle
//! that fails any step is refused: the current one keeps serving, and the
//! failure is logged, counted, shown in `/status` and reported to the agent.
//! The last good bundle is kept on disk and used at start when the source is
//! unreachable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};

use super::agents::{Clients, Endpoint, Use};
pub use super::freshness::expires_of;
use super::freshness::{applied_sequence, fresh, proven_current};
use super::source::labels_header;
pub use super::source::{instance_id, parse_label, Source, SourceOptions};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use warden_config::archive;
use warden_config::Bundle;
use warden_filters::Snapshot;

use crate::hub::runtime::{Current, Runtime};
use crate::observability::metrics::metrics;

/// What `/status` says about bundles.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BundleStatus {
    pub source: String,
    pub revision: String,
    pub loaded_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub reloads: u64,
    pub failures: u64,
    /// Why the agent serves this gateway its revision (to all, to a
    /// selector, a canary), as the agent said.
    pub rollout: Option<String>,
    /// The labels this gateway reports.
    pub labels: BTreeMap<String, String>,
    /// Until when the running bundle's signature is good (RFC 3339; none
    /// for an unsigned bundle or one that never expires). Past it the
    /// gateway keeps running it (its own disk is not a stale mirror), but
    /// a fresh gateway would refuse it: the agent is not re-signing.
    pub expires: Option<String>,
}

pub struct BundleState {
    pub status: ArcSwap<BundleStatus>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl BundleState {
    pub fn new(source: String, revision: String) -> Self {
        BundleState {
            status: ArcSwap::from_pointee(BundleStatus {
                source,
                revision,
                loaded_at: Some(now()),
                ..BundleStatus::default()
            }),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Records why the agent serves this gateway what it runs.
    pub fn set_rollout(&self, why: Option<String>, labels: &BTreeMap<String, String>) {
        let mut s = (**self.status.load()).clone();
        s.rollout = why;
        s.labels = labels.clone();
        self.status.store(Arc::new(s));
    }

    fn ok(&self, revision: &str) {
        let n = self.reloads.fetch_add(1, Ordering::Relaxed) + 1;
        let previous = self.status.load().revision.clone();
        tracing::info!(revision, previous = %previous, reloads = n, "bundle applied");
        metrics().bundle_reloads.with_label_values(&["ok"]).inc();
        let mut s = (**self.status.load()).clone();
        s.revision = revision.to_owned();
        s.loaded_at = Some(now());
        s.reloads = n;
        self.status.store(Arc::new(s));
    }

    /// Records until when the running bundle's signature is good (the
    /// status and `warden_bundle_expires_timestamp_seconds`, 0 for none).
    pub fn set_expires(&self, at: Option<SystemTime>) {
        let secs = at
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        metrics().bundle_expires.set(secs);
        let mut s = (**self.status.load()).clone();
        s.expires = at.map(|t| humantime::format_rfc3339_seconds(t).to_string());
        self.status.store(Arc::new(s));
    }

    fn failed(&self, why: &str) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        metrics()
            .bundle_reloads
            .with_label_values(&["failed"])
            .inc();
        tracing::error!(error = why, "bundle refused; the current one keeps serving");
        let mut s = (**self.status.load()).clone();
        s.last_error = Some(why.to_owned());
        s.last_error_at = Some(now());
        s.failures = n;
        self.status.store(Arc::new(s));
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Loads a bundle directory as it is (its signature, if any, verified
/// before it was written where it is).
pub fn load_dir(dir: &Path) -> Result<Bundle, String> {
    Bundle::load(dir).map_err(|e| e.to_string())
}

fn revision_of(files: &archive::Files) -> String {
    files
        .get(".manifest")
        .and_then(|m| serde_json::from_slice::<serde_json::Value>(m).ok())
        .and_then(|m| m["revision"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let all: String = files
                .iter()
                .map(|(n, d)| archive::file_hash(n, d))
                .collect();
            format!(
                "sha256-{}",
                &archive::file_hash("all", all.as_bytes())[..16]
            )
        })
}

fn dir_name(revision: &str) -> String {
    let mut s: String = revision
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, 'r');
    }
    s
}

/// A local source: a bundle directory, or a `.tar.gz` file (unpacked into the state directory).
fn load_local(path: &Path, opts: &SourceOptions) -> Result<Bundle, String> {
    if path.is_file() {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = materialize(&bytes, opts)?;
        // An unsigned archive may be edited too: its revision follows the content.
        return match &opts.verifier {
            Some(_) => load_dir(&dir),
            None => load_dir(&dir).map(Bundle::with_content_revision),
        };
    }
    match &opts.verifier {
        // The files are read once, verified, and what was verified is
        // what is loaded: a copy in the state directory, never the
        // directory again (a file the signature does not cover, or one
        // swapped in between, never reaches the gateway).
        Some(v) => {
            let files = archive::read_dir(path).map_err(|e| e.to_string())?;
            v.verify(&files).map_err(|e| format!("signature: {e}"))?;
            load_dir(&materialize_files(&files, opts)?)
        }
        // Edited in place: the revision follows the content (see `Bundle`).
        None => load_dir(path).map(Bundle::with_content_revision),
    }
}

/// Verifies and unpacks an archive into the state directory; returns its directory.
pub fn materialize(bytes: &[u8], opts: &SourceOptions) -> Result<PathBuf, String> {
    let files = archive::unpack(bytes).map_err(|e| format!("archive: {e}"))?;
    if let Some(v) = &opts.verifier {
        v.verify(&files).map_err(|e| format!("signature: {e}"))?;
    }
    materialize_files(&files, opts)
}

/// Writes `files` into the state directory under their revision and
/// content digest; returns the directory. A directory of that name holds
/// those files already and is kept (it may be the last good bundle, which
/// a refused bundle of the same revision name must never replace).
fn materialize_files(files: &archive::Files, opts: &SourceOptions) -> Result<PathBuf, String> {
    let revs = opts.state_dir.join("revisions");
    std::fs::create_dir_all(&revs).map_err(|e| format!("{}: {e}", revs.display()))?;
    let all: String = files
        .iter()
        .map(|(n, d)| format!("{}:{}\n", n.len(), archive::file_hash(n, d)) + n)
        .collect();
    let digest = archive::file_hash("all", all.as_bytes());
    let name = format!("{}-{}", dir_name(&revision_of(files)), &digest[..16]);
    let dir = revs.join(&name);
    if dir.is_dir() && archive::read_dir(&dir).is_ok_and(|on_disk| &on_disk == files) {
        return Ok(dir);
    }
    let tmp = revs.join(format!(".tmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    archive::write_dir(files, &tmp).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Records `dir` as the last good bundle and prunes older fetched ones.
fn remember_good(opts: &SourceOptions, dir: &Path) {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let cur = opts.state_dir.join("current");
    let tmp = opts.state_dir.join(".current.tmp");
    if std::fs::write(&tmp, name)
        .and_then(|_| std::fs::rename(&tmp, &cur))
        .is_err()
    {
        tracing::warn!("could not record the last good bundle in {}", cur.display());
    }
    // Keep the newest few revisions besides the current one.
    if let Ok(rd) = std::fs::read_dir(opts.state_dir.join("revisions")) {
        let mut dirs: Vec<(SystemTime, PathBuf)> = rd
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n != name && !n.starts_with('.'))
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        dirs.sort();
        let excess = dirs.len().saturating_sub(5);
        for (_, d) in dirs.into_iter().take(excess) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The last good fetched bundle, if any.
fn last_good(opts: &SourceOptions) -> Option<PathBuf> {
    let name = std::fs::read_to_string(opts.state_dir.join("current")).ok()?;
    let dir = opts.state_dir.join("revisions").join(name.trim());
    dir.is_dir().then_some(dir)
}

#[cfg(test)]
fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(http_builder(timeout).build()?)
}

fn http_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(3))
}

/// Clients of the bundle source, each request bounded by `timeout` (with
/// the agents' TLS for agents).
fn clients(timeout: Duration, source: &Source) -> Clients {
    match source {
        Source::Agents { agents, .. } => Clients::for_agents(agents, move || http_builder(timeout)),
        _ => Clients::new(move || http_builder(timeout)),
    }
}

/// One fetch from the source: a plain URL, or the agents, the one in use
/// first and the next when it fails (unreachable, timed out, 5xx, or not
/// the agent's protocol). Answers the agent that answered.
async fn fetch_from(
    opts: &SourceOptions,
    clients: &Clients,
    etag: Option<&str>,
    wait: Duration,
) -> (Result<Fetched, String>, Option<Endpoint>) {
    match &opts.source {
        Source::Dir(d) => (Err(format!("{} is no URL", d.display())), None),
        Source::Http { url, token } => {
            let r = match clients.plain() {
                Ok(c) => fetch(&c, opts, url, token.as_deref(), etag, wait).await,
                Err(e) => Err(e),
            };
            (r, None)
        }
        Source::Agents { agents, token } => {
            let mut errors = Vec::new();
            for ep in agents.candidates().await {
                let url = ep.url("/v1/bundles/current");
                let r = match clients.get(&ep) {
                    Ok(c) => fetch(&c, opts, &url, token.as_deref(), etag, wait).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(f) => {
                        agents.answered(&ep);
                        return (Ok(f), Some(ep));
                    }
                    Err(e) => {
                        agents.failed(&ep, Use::Bundles, &e);
                        errors.push(e);
                    }
                }
            }
            (Err(errors.join("; ")), None)
        }
    }
}

/// Where a refused bundle came from, for the log and `/status`.
fn from_agent(why: String, ep: Option<&Endpoint>) -> String {
    match ep {
        Some(ep) => format!("{why} (served by {})", ep.name()),
        None => why,
    }
}

/// Result of one fetch.
enum Fetched {
    New {
        etag: Option<String>,
        body: bytes::Bytes,
        /// The nonce this request sent, and the agent's signed proof
        /// bound to it (`X-Warden-Freshness`).
        nonce: String,
        proof: Option<String>,
        /// The agent's `X-Warden-Rollout`: why this gateway gets it.
        why: Option<String>,
    },
    NotModified,
}

async fn fetch(
    client: &reqwest::Client,
    opts: &SourceOptions,
    url: &str,
    token: Option<&str>,
    etag: Option<&str>,
    wait: Duration,
) -> Result<Fetched, String> {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let mut req = client
        .get(url)
        .header("x-warden-nonce", &nonce)
        .header("x-warden-gateway", &opts.gateway_id)
        .header("x-warden-instance", instance_id())
        .header("x-warden-labels", labels_header(&opts.labels));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(e) = etag {
        req = req.header("if-none-match", format!("\"{e}\""));
        if !wait.is_zero() {
            req = req.header("prefer", format!("wait={}", wait.as_secs()));
        }
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("fetching {url}: {}", super::agent_tls::why(e)))?;
    match resp.status().as_u16() {
        200 => {
            let etag = resp
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim_start_matches("W/").trim_matches('"').to_owned());
            let why = resp
                .headers()
                .get("x-warden-rollout")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let proof = resp
                .headers()
                .get("x-warden-freshness")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // The agent answers a bundle with its revision as ETag, as
            // gzip: anything else (a proxy's page, a catch-all server) is
            // not an agent, whatever its status.
            if opts.source.is_agent() {
                let gzip = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/gzip"));
                if etag.is_none() || !gzip {
                    return Err(format!(
                        "{url}: not the agent's protocol (a 200 without the bundle's ETag or not application/gzip)"
                    ));
                }
            }
            let body = resp
                .bytes()
                .await
                .map_err(|e| format!("reading {url}: {e}"))?;
            if body.len() as u64 > archive::MAX_BUNDLE_BYTES {
                return Err(format!("{url}: bundle too large"));
            }
            Ok(Fetched::New {
                etag,
                body,
                why,
                nonce,
                proof,
            })
        }
        304 => Ok(Fetched::NotModified),
        s => {
            // The agent says why it refuses (`{"error": …}`, a 403 for a
            // client certificate that names another gateway, say).
            // At most 4 KiB of it: whatever answers is read no further.
            let mut resp = resp;
            let mut body = Vec::new();
            while body.len() < 4096 {
                match resp.chunk().await {
                    Ok(Some(c)) => body.extend_from_slice(&c),
                    _ => break,
                }
            }
            let said = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v["error"].as_str().map(|e| {
                        e.chars()
                            .filter(|c| !c.is_control())
                            .take(300)
                            .collect::<String>()
                    })
                });
            match said {
                Some(why) => Err(format!("fetching {url}: HTTP {s}: {why}")),
                None => Err(format!("fetching {url}: HTTP {s}")),
            }
        }
    }
}

/// The bundle the gateway starts with. An HTTP source that cannot be reached
/// falls back to the last good bundle on disk; with neither, start-up fails.
/// Also returns the source's ETag and why the agent serves this revision.
#[allow(clippy::type_complexity)]
pub fn initial(opts: &SourceOptions) -> anyhow::Result<(Bundle, Option<String>, Option<String>)> {
    match &opts.source {
        Source::Dir(dir) => {
            let b = load_local(dir, opts)
                .and_then(|b| fresh(&b, opts).map(|_| b))
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("loading bundle {}", dir.display()))?;
            applied_sequence(&b, opts);
            Ok((b, None, None))
        }
        Source::Http { .. } | Source::Agents { .. } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // From several agents, the first that serves a bundle this
            // gateway takes: one that is down, or serves one refused (an
            // older sequence, a proof that fails), is passed over.
            let from_source = rt.block_on(async {
                let clients = clients(Duration::from_secs(10), &opts.source);
                let mut errors = Vec::new();
                let tries = match &opts.source {
                    Source::Agents { agents, .. } => agents.len(),
                    _ => 1,
                };
                for _ in 0..tries {
                    let (fetched, ep) = fetch_from(opts, &clients, None, Duration::ZERO).await;
                    let taken = match fetched {
                        Ok(Fetched::New {
                            etag,
                            body,
                            why,
                            nonce,
                            proof,
                        }) => proven_current(opts, &nonce, proof.as_deref(), &body)
                            .and_then(|()| materialize(&body, opts))
                            .and_then(|dir| {
                                let b = load_dir(&dir)?;
                                fresh(&b, opts)?;
                                Snapshot::build(&b).map_err(|e| e.to_string())?;
                                applied_sequence(&b, opts);
                                remember_good(opts, &dir);
                                Ok((b, etag, why))
                            })
                            .map_err(|e| from_agent(e, ep.as_ref())),
                        Ok(Fetched::NotModified) => {
                            Err("the source answered 304 to a first fetch".into())
                        }
                        Err(e) => {
                            errors.push(e);
                            return Err(errors.join("; "));
                        }
                    };
                    match (taken, &opts.source, ep) {
                        (Ok(x), _, _) => return Ok(x),
                        (Err(e), Source::Agents { agents, .. }, Some(ep)) => {
                            tracing::error!(error = %e, "bundle refused at start; asking the next agent");
                            agents.failed(&ep, Use::Bundles, &e);
                            errors.push(e);
                        }
                        (Err(e), _, _) => return Err(e),
                    }
                }
                Err(errors.join("; "))
            });
            match from_source {
                Ok(x) => Ok(x),
                Err(why) => match last_good(opts) {
                    Some(dir) => {
                        tracing::warn!(error = %why, dir = %dir.display(), "bundle source unavailable; starting on the last good bundle");
                        let b = load_dir(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
                        // Its own disk is no stale mirror: it runs, said loudly.
                        if let Ok(Some(at)) = expires_of(&b) {
                            if opts.verifier.is_some() && SystemTime::now() >= at {
                                tracing::warn!(expired = %humantime::format_rfc3339_seconds(at), "the last good bundle's signature has expired: running it until the agent serves a fresh one");
                            }
                        }
                        Ok((b, None, None))
                    }
                    None => bail!(
                        "no bundle: {why}; and no last good bundle in {}",
                        opts.state_dir.display()
                    ),
                },
            }
        }
    }
}

/// Where a new bundle goes: the runtime it replaces, the state that outlives
/// bundles (quota counters, pins), and the bundle status for `/status`.
#[derive(Clone)]
pub struct Publisher {
    pub current: Arc<Current>,
    pub shared: Arc<warden_filters::snapshot::Shared>,
    pub status: Arc<BundleState>,
}

/// Compiles `bundle` and publishes it. Listener, admin and audit settings
/// need a restart to change; a difference is logged.
pub fn apply(target: &Publisher, bundle: &Bundle) -> Result<String, String> {
    let mut snap =
        Snapshot::build_shared(bundle, Vec::new(), &target.shared).map_err(|e| e.to_string())?;
    let old = target.current.load();
    if let (Some(new_auth), Some(old_auth)) = (snap.auth.as_mut(), old.snap.auth.as_ref()) {
        new_auth.adopt_jwks(old_auth);
    }
    let (o, n) = (&old.snap.config, &snap.config);
    if o.listeners.len() != n.listeners.len()
        || o.listeners
            .iter()
            .zip(&n.listeners)
            .any(|(a, b)| a.address != b.address)
        || o.admin != n.admin
        || o.audit.path != n.audit.path
    {
        tracing::warn!("listeners, admin or audit settings changed: they take effect on restart");
    }
    let revision = snap.revision.clone();
    let rt = Runtime::new(snap).map_err(|e| format!("upstream pools: {e}"))?;
    target.current.swap(rt);
    Ok(revision)
}

/// Watches the source and applies new bundles.
pub struct BundleWatcher {
    pub target: Publisher,
    pub opts: SourceOptions,
    /// The ETag the gateway started with (HTTP sources).
    pub etag: Option<String>,
}

fn fingerprint(dir: &Path) -> Vec<(String, u64, SystemTime)> {
    fn walk(dir: &Path, out: &mut Vec<(String, u64, SystemTime)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.filter_map(Result::ok) {
            // Logs written next to a bundle (audit.jsonl …) are not part of it.
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".jsonl") || name.ends_with(".log") || name.starts_with(".tmp") {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                walk(&e.path(), out);
            } else {
                out.push((
                    e.path().to_string_lossy().into_owned(),
                    m.len(),
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
    }
    let mut v = Vec::new();
    if dir.is_file() {
        if let Ok(m) = std::fs::metadata(dir) {
            v.push((
                String::new(),
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ));
        }
        return v;
    }
    walk(dir, &mut v);
    v.sort();
    v
}

/// Whether a report was taken: 2xx with the agent's `{"ok": true}`. A
/// 4xx is the agent's word too (a revision too long, a token refused):
/// logged, never sent elsewhere as if the agent were down.
async fn report_answer(sent: reqwest::Result<reqwest::Response>) -> Result<(), String> {
    let resp = sent.map_err(super::agent_tls::why)?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let ok = serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v["ok"] == true);
    match status.as_u16() {
        200..=299 if ok => Ok(()),
        200..=299 => Err(format!("status {status}: not the agent's protocol")),
        s @ 400..=499
            if serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|v| v["error"].is_string()) =>
        {
            tracing::warn!(status = s, answer = %String::from_utf8_lossy(&body[..body.len().min(300)]), "the agent refused the status report");
            Ok(())
        }
        _ => Err(format!("status {status}")),
    }
}

fn jitter(d: Duration) -> Duration {
    let f = 0.8 + rand::random::<f64>() * 0.4;
    d.mul_f64(f)
}

impl BundleWatcher {
    /// Reports status and counters to the agent in use, or the next one
    /// when it fails; an answer that is not the agent's (`{"ok": true}`)
    /// counts as a failure.
    async fn report(&self, clients: &Clients) {
        let Source::Agents { agents, token } = &self.opts.source else {
            return;
        };
        let st = self.target.status.status.load();
        // Each server's replicas and how many pass their health checks.
        let upstreams: Vec<serde_json::Value> = self
            .target
            .current
            .load()
            .health()
            .into_iter()
            .map(|(server, list)| {
                serde_json::json!({
                    "server": server,
                    "replicas": list.len(),
                    "healthy": list.iter().filter(|(_, ok)| *ok).count(),
                })
            })
            .collect();
        let body = serde_json::json!({
            "id": self.opts.gateway_id,
            "instance": instance_id(),
            "revision": st.revision,
            "healthy": st.last_error.is_none() || st.last_error_at <= st.loaded_at,
            "last_error": st.last_error,
            "labels": self.opts.labels,
            "stats": crate::observability::metrics::fleet_stats(),
            "upstreams": upstreams,
        });
        for ep in agents.candidates().await {
            let url = ep.url("/v1/fleet/report");
            let sent = match clients.get(&ep) {
                Ok(c) => {
                    let mut req = c.post(&url).json(&body);
                    if let Some(t) = token {
                        req = req.bearer_auth(t);
                    }
                    report_answer(req.send().await).await
                }
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => {
                    agents.answered(&ep);
                    return;
                }
                Err(e) => {
                    tracing::debug!(agent = %ep.name(), error = %e, "status report to the agent failed");
                    agents.failed(&ep, Use::Reports, &e);
                }
            }
        }
    }

    async fn run_dir(&self, dir: &Path, mut shutdown: ShutdownWatch) {
        let mut seen = fingerprint(dir);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.opts.poll) => {}
            }
            let now = fingerprint(dir);
            if now == seen {
                continue;
            }
            seen = now;
            let gw = self.target.clone();
            let dir = dir.to_path_buf();
            let opts = self.opts.clone();
            let res = tokio::task::spawn_blocking(move || {
                let b = load_local(&dir, &opts)?;
                fresh(&b, &opts)?;
                let rev = apply(&gw, &b)?;
                applied_sequence(&b, &opts);
                Ok::<_, String>((rev, expires_of(&b).ok().flatten()))
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match res {
                Ok((rev, expires)) => {
                    self.target.status.set_expires(expires);
                    self.target.status.ok(&rev)
                }
                Err(e) => self.target.status.failed(&e),
            }
        }
    }

    async fn run_http(&self, reports: &Clients, mut shutdown: ShutdownWatch) {
        let polls = clients(Duration::from_secs(75), &self.opts.source);
        let mut etag = self.etag.clone();
        let mut backoff = Duration::from_millis(250);
        // A bundle that failed to apply: its ETag, and when it is asked for
        // again. A failure may pass (a full disk, no file descriptor left,
        // a port in use, a response spoiled on the way), and a gateway
        // that gave up on a revision would run the one before it (a kill
        // switch not applied) until the next is published. Meanwhile the
        // long poll asks for anything newer than it, so a fix published
        // after it arrives at once.
        let mut failed: Option<(Option<String>, Instant)> = None;
        let mut retry = Duration::from_secs(1);
        self.report(reports).await;
        loop {
            let started = Instant::now();
            let (asked, wait) = match &failed {
                Some((_, due)) if started >= *due => (etag.clone(), Duration::ZERO),
                Some((tag, due)) => (
                    tag.clone().or_else(|| etag.clone()),
                    (*due - started).clamp(Duration::from_secs(1), Duration::from_secs(30)),
                ),
                None => (etag.clone(), Duration::from_secs(30)),
            };
            let (res, answered) = tokio::select! {
                _ = shutdown.changed() => return,
                r = fetch_from(&self.opts, &polls, asked.as_deref(), wait) => r,
            };
            // Asked again for the failed one, the source has nothing newer
            // than what runs: it was withdrawn.
            if matches!(res, Ok(Fetched::NotModified)) && wait.is_zero() {
                failed = None;
            }
            // Asked for anything newer than a refused bundle, an agent (the
            // next one, after a failover) answered with the revision this
            // gateway runs: nothing new.
            let res = match res {
                Ok(Fetched::New { etag: Some(e), .. })
                    if self.opts.source.is_agent() && etag.as_deref() == Some(e.as_str()) =>
                {
                    failed = None;
                    Ok(Fetched::NotModified)
                }
                r => r,
            };
            let pause = match res {
                Ok(Fetched::New {
                    etag: new_etag,
                    body,
                    why,
                    nonce,
                    proof,
                }) => {
                    backoff = Duration::from_millis(250);
                    let before = self.target.current.load().snap.revision.clone();
                    let gw = self.target.clone();
                    let opts = self.opts.clone();
                    // A refusal is the answer's (`true`: not proven current,
                    // not signed, older than what runs, expired) or this
                    // gateway's (it does not compile here, a pool fails).
                    let res = tokio::task::spawn_blocking(move || {
                        let answer = |e: String| (e, true);
                        let here = |e: String| (e, false);
                        proven_current(&opts, &nonce, proof.as_deref(), &body).map_err(answer)?;
                        let dir = materialize(&body, &opts).map_err(answer)?;
                        let b = load_dir(&dir).map_err(here)?;
                        fresh(&b, &opts).map_err(answer)?;
                        let rev = apply(&gw, &b).map_err(here)?;
                        applied_sequence(&b, &opts);
                        remember_good(&opts, &dir);
                        Ok::<_, (String, bool)>((rev, expires_of(&b).ok().flatten()))
                    })
                    .await
                    .unwrap_or_else(|e| Err((e.to_string(), false)));
                    let refused = res.is_err();
                    match res {
                        Ok((rev, expires)) => {
                            self.target.status.set_expires(expires);
                            etag = new_etag.or(etag).or_else(|| Some(rev.clone()));
                            failed = None;
                            retry = Duration::from_secs(1);
                            self.target.status.set_rollout(why, &self.opts.labels);
                            self.target.status.ok(&rev)
                        }
                        Err((e, by_answer)) => {
                            let e = from_agent(e, answered.as_ref());
                            self.target.status.failed(&e);
                            // An agent that serves what this gateway must
                            // refuse (a stale one, restored from an old
                            // state) is passed over like one that is down:
                            // the others are asked first from now on.
                            if let (true, Source::Agents { agents, .. }, Some(ep)) =
                                (by_answer, &self.opts.source, answered.as_ref())
                            {
                                agents.failed(ep, Use::Bundles, &e);
                            }
                            failed = Some((new_etag, Instant::now() + jitter(retry)));
                            retry = (retry * 2).min(Duration::from_secs(60));
                        }
                    }
                    self.report(reports).await;
                    // A source that answered at once with what is already
                    // running (a static server without ETags) or with a
                    // bundle that fails is polled politely, not in a loop;
                    // the agent's long poll answers only with something new.
                    let same = refused || self.target.current.load().snap.revision == before;
                    if same && started.elapsed() < Duration::from_secs(1) {
                        jitter(self.opts.poll.max(Duration::from_secs(1)))
                    } else {
                        Duration::ZERO
                    }
                }
                // A server without long-poll answers at once: poll politely.
                Ok(Fetched::NotModified) if started.elapsed() < Duration::from_secs(1) => {
                    backoff = Duration::from_millis(250);
                    jitter(self.opts.poll.max(Duration::from_secs(1)))
                }
                Ok(Fetched::NotModified) => {
                    backoff = Duration::from_millis(250);
                    Duration::ZERO
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "bundle source unreachable; keeping the current bundle");
                    let p = jitter(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    p
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

impl BundleWatcher {
    /// Reports status and counters every `report_every`, beside the long
    /// poll (which may wait 30 s for a change).
    async fn report_loop(&self, reports: &Clients, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(jitter(self.opts.report_every)) => {}
            }
            self.report(reports).await;
        }
    }
}

#[async_trait]
impl BackgroundService for BundleWatcher {
    async fn start(&self, shutdown: ShutdownWatch) {
        match self.opts.source.clone() {
            Source::Dir(dir) => self.run_dir(&dir, shutdown).await,
            Source::Http { .. } | Source::Agents { .. } => {
                let reporter = clients(Duration::from_secs(5), &self.opts.source);
                let reports = self.report_loop(&reporter, shutdown.clone());
                let polls = self.run_http(&reporter, shutdown);
                tokio::join!(reports, polls);
            }
        }
    }
}

#[cfg(test)]
#[path = "bundles_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
mod instance_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Every bundle fetch names this process beside the gateway id, by
    /// one instance id drawn once: the agent tells two processes under
    /// one id from one that restarted.
    #[tokio::test]
    async fn a_fetch_names_the_process() {
        let id = instance_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(instance_id(), id, "drawn once per process");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/v1/bundles/current",
            listener.local_addr().expect("addr")
        );
        let served = tokio::spawn(async move {
            let (mut c, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 8192];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = c.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let _ = c
                .write_all(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 0\r\n\r\n")
                .await;
            String::from_utf8_lossy(&got).to_lowercase()
        });
        let opts = SourceOptions {
            source: Source::Dir(PathBuf::from("/nonexistent")),
            verifier: None,
            state_dir: PathBuf::from("/nonexistent"),
            gateway_id: "edge-1".into(),
            labels: BTreeMap::new(),
            poll: Duration::from_secs(1),
            report_every: Duration::from_secs(5),
            allow_unexpiring: false,
        };
        let client = http_client(Duration::from_secs(5)).expect("client");
        let res = fetch(&client, &opts, &url, None, Some("r1"), Duration::ZERO).await;
        assert!(matches!(res, Ok(Fetched::NotModified)));
        let head = served.await.expect("served");
        assert!(head.contains("x-warden-gateway: edge-1"), "{head}");
        assert!(head.contains(&format!("x-warden-instance: {id}")), "{head}");
    }
}
