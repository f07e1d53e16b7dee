//! Building a bundle from a source directory: OPA layout (`.manifest` with
//! revision and roots), the kill-switch overlay merged into `warden.yaml`,
//! validation with the gateway's own `Snapshot::build`, and the signature.

use std::path::Path;

use warden_config::archive::{self, Files};
use warden_config::error::Problem;

/// What the kill switch pauses on top of the source's own `kill_switch`
/// (the same shape as the bundle's `kill_switch` section).
pub use warden_config::raw::KillSwitchConfig as KillState;

/// The signing key of an agent.
pub struct Signer {
    pub pem: Vec<u8>,
    pub alg: jsonwebtoken::Algorithm,
    pub keyid: String,
    /// How long a bundle signed with it stays good (`.manifest`'s
    /// `expires`); `None`: forever (gateways refuse such a bundle unless
    /// told to take it). The agent re-signs what it serves at half of it.
    pub valid_for: Option<std::time::Duration>,
}

/// Why a build was refused: every problem, with file and (where the Rego
/// compiler tells) line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct BuildFailure(pub Vec<Problem>);

fn problem(file: &str, message: impl Into<String>) -> BuildFailure {
    BuildFailure(vec![Problem {
        file: file.into(),
        path: String::new(),
        message: message.into(),
    }])
}

/// Merges the kill overlay into the source's `warden.yaml` text.
fn merge_kill(yaml: &[u8], kill: &KillState) -> Result<Vec<u8>, BuildFailure> {
    if kill.is_empty() {
        return Ok(yaml.to_vec());
    }
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_slice(yaml)
        .map_err(|e| problem("warden.yaml", format!("not YAML: {e}")))?;
    let map = doc
        .as_mapping_mut()
        .ok_or_else(|| problem("warden.yaml", "must be a mapping"))?;
    let key = serde_yaml_ng::Value::from("kill_switch");
    let mut ks: KillState = match map.get(&key) {
        Some(v) => serde_yaml_ng::from_value(v.clone())
            .map_err(|e| problem("warden.yaml", format!("kill_switch: {e}")))?,
        None => KillState::default(),
    };
    ks.all |= kill.all;
    for (dst, src) in [
        (&mut ks.tenants, &kill.tenants),
        (&mut ks.principals, &kill.principals),
        (&mut ks.servers, &kill.servers),
        (&mut ks.tools, &kill.tools),
    ] {
        for v in src {
            if !dst.contains(v) {
                dst.push(v.clone());
            }
        }
    }
    for (server, at) in &kill.upstreams {
        let dst = ks.upstreams.entry(server.clone()).or_default();
        for a in at {
            if !dst.contains(a) {
                dst.push(a.clone());
            }
        }
    }
    map.insert(
        key,
        serde_yaml_ng::to_value(&ks).map_err(|e| problem("warden.yaml", e.to_string()))?,
    );
    serde_yaml_ng::to_string(&doc)
        .map(String::into_bytes)
        .map_err(|e| problem("warden.yaml", e.to_string()))
}

/// Content digest of a source directory (to notice changes and name revisions).
pub fn digest(files: &Files) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (n, d) in files {
        if n == archive::SIGNATURES_FILE {
            continue;
        }
        h.update((n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
        h.update((d.len() as u64).to_le_bytes());
        h.update(d);
    }
    hex::encode(h.finalize())
}

static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The highest sequence this process has given a build.
pub fn last_sequence() -> u64 {
    LAST.load(std::sync::atomic::Ordering::Relaxed)
}

/// Never gives a build a sequence at or below `floor` (the last one a
/// store recorded): a clock set back, or one that ran ahead before a
/// restart, never makes a build older than one gateways applied.
pub fn raise_sequence_floor(floor: u64) {
    LAST.fetch_max(floor, std::sync::atomic::Ordering::Relaxed);
}

/// The sequence of the next build: milliseconds since the epoch, and always
/// more than the last one this process made. Time orders builds across
/// restarts of the agent and across agents (and `warden-agent build`), so a
/// lost store never starts it over.
pub fn next_sequence() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    use std::sync::atomic::Ordering;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Builds, validates and (with a signer) signs a bundle from `source` files,
/// for the gateways carrying every label of `audience` (none: every
/// gateway). The audience is signed with the rest (`.manifest`'s
/// `labels`): a gateway refuses a bundle published for labels it does not
/// carry, so a validly signed bundle meant for some gateways cannot be
/// served to others.
pub fn build(
    source: &Files,
    revision: &str,
    kill: &KillState,
    signer: Option<&Signer>,
    audience: &std::collections::BTreeMap<String, String>,
) -> Result<Files, BuildFailure> {
    let mut files = source.clone();
    files.remove(archive::SIGNATURES_FILE);
    let yaml = files
        .get("warden.yaml")
        .ok_or_else(|| problem("warden.yaml", "missing: every bundle needs a warden.yaml"))?;
    let merged = merge_kill(yaml, kill)?;
    files.insert("warden.yaml".into(), merged);
    let mut manifest: serde_json::Map<String, serde_json::Value> = match files.get(".manifest") {
        Some(b) => serde_json::from_slice(b)
            .map_err(|e| problem(".manifest", format!("not a JSON object: {e}")))?,
        None => serde_json::Map::new(),
    };
    manifest.insert("revision".into(), revision.into());
    // Signed with the rest: gateways refuse a bundle older than the newest
    // they applied (a mirror or a man in the middle serving an old, validly
    // signed bundle would undo a kill switch or a deny).
    manifest.insert("sequence".into(), next_sequence().into());
    manifest
        .entry("roots")
        .or_insert_with(|| serde_json::json!(["warden"]));
    // Signed with the rest: a gateway with no state (a new pod) has no
    // sequence to compare with, and refuses a bundle past this instead.
    manifest.remove("expires");
    if let Some(valid) = signer.and_then(|s| s.valid_for) {
        let at = std::time::SystemTime::now() + valid;
        manifest.insert("expires".into(), archive::write_expires(at));
    }
    // The agent's to say, never the source's.
    manifest.remove("labels");
    if !audience.is_empty() {
        manifest.insert("labels".into(), serde_json::json!(audience));
    }
    files.insert(
        ".manifest".into(),
        serde_json::to_vec_pretty(&manifest).map_err(|e| problem(".manifest", e.to_string()))?,
    );
    validate(&files)?;
    if let Some(s) = signer {
        archive::sign(&mut files, &s.pem, s.alg, &s.keyid)
            .map_err(|e| problem(archive::SIGNATURES_FILE, e))?;
    }
    // What every gateway checks first on a fetched archive (its files and
    // bytes in all): a build it would refuse is refused here, where the
    // one who asked for it hears why, instead of leaving the fleet on the
    // last bundle it took (kill switches built after it included).
    archive::unpack(&archive::pack(&files)).map_err(|e| {
        problem(
            "",
            format!("the built bundle is one every gateway would refuse: {e}"),
        )
    })?;
    Ok(files)
}

/// Loads the files as the gateway would and compiles the snapshot.
pub fn validate(files: &Files) -> Result<(), BuildFailure> {
    let dir = tempfile::tempdir().map_err(|e| problem("", e.to_string()))?;
    archive::write_dir(files, dir.path()).map_err(|e| problem("", e.to_string()))?;
    validate_dir(dir.path())
}

pub fn validate_dir(dir: &Path) -> Result<(), BuildFailure> {
    let bundle = warden_config::Bundle::load(dir).map_err(|e| match e {
        warden_config::error::BundleError::Invalid(p) => BuildFailure(p),
        other => problem("", other.to_string()),
    })?;
    warden_filters::Snapshot::build(&bundle).map_err(|e| match e {
        warden_filters::snapshot::BuildError::Invalid(p) => BuildFailure(vec![p]),
        other => problem("warden.yaml", other.to_string()),
    })?;
    Ok(())
}

/// When a built bundle's signature stops being good (its manifest's
/// `expires`); `None` when it names none or cannot be read.
pub fn expires_of(files: &Files) -> Option<std::time::SystemTime> {
    let m: serde_json::Value = serde_json::from_slice(files.get(".manifest")?).ok()?;
    archive::read_expires(m.get("expires")).ok().flatten()
}
