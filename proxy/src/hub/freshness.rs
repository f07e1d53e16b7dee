//! Whether a signed bundle is fresh enough to apply: published for this
//! gateway's labels, not past its signed expiry, and not older than the
//! newest this gateway applied (its sequence, kept in the state directory).
//! An old bundle stays validly signed; these are what keep a mirror, a
//! cache or a man in the middle from serving it again.

use std::path::PathBuf;
use std::time::SystemTime;

use warden_config::Bundle;

use super::source::{labels_header, SourceOptions};

/// The furthest ahead a signed expiry may be (the agent signs for at most
/// 366 days; a few more for clocks apart).
const MAX_AHEAD: std::time::Duration = std::time::Duration::from_secs(370 * 86_400);

/// Where the newest signed bundle's sequence this gateway applied is kept.
fn sequence_file(opts: &SourceOptions) -> PathBuf {
    opts.state_dir.join("sequence")
}

/// Where the content digest of the bundle applied at that sequence is kept
/// (`Bundle::digest`: every file but the signature).
fn content_file(opts: &SourceOptions) -> PathBuf {
    opts.state_dir.join("sequence.content")
}

/// The newest sequence applied, 0 when none is recorded.
fn newest_sequence(opts: &SourceOptions) -> u64 {
    std::fs::read_to_string(sequence_file(opts))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// A signed bundle's sequence (`.manifest`'s `sequence`, set by the agent
/// at each build; 0 when it has none).
fn sequence_of(bundle: &Bundle) -> u64 {
    bundle
        .manifest
        .extra
        .get("sequence")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// When a bundle's signature stops being good: `.manifest`'s `expires`
/// (RFC 3339, signed with the rest, set by the agent at each build). `None`
/// when it names none; an `expires` that cannot be read is an error.
pub fn expires_of(bundle: &Bundle) -> Result<Option<SystemTime>, String> {
    warden_config::archive::read_expires(bundle.manifest.extra.get("expires"))
}

/// Refuses a signed bundle that is stale: published for other gateways,
/// past its expiry (or with none), or older than the newest this gateway
/// applied. An old bundle is still validly signed, and a mirror, a cache or
/// a man in the middle serving it again would undo a kill switch or a deny;
/// the sequence stops that for a gateway that remembers, the expiry for one
/// that starts with no state. An unsigned source proves nothing, so nothing
/// is checked there.
pub(super) fn fresh(bundle: &Bundle, opts: &SourceOptions) -> Result<(), String> {
    if opts.verifier.is_none() {
        // Unsigned, a bundle proves nothing against a hostile source; from
        // agents, the floor still keeps one that answers from an old state
        // from rolling the gateway back.
        return match opts.source.is_agent() {
            true => not_older(bundle, opts),
            false => Ok(()),
        };
    }
    for_these_labels(bundle, opts)?;
    match expires_of(bundle)? {
        Some(at) if SystemTime::now() >= at => {
            return Err(format!(
                "expired: the bundle's signature was good until {} (an agent re-signs what it \
                 serves long before that: is it running? A stale bundle served again could undo \
                 a kill switch or a deny)",
                humantime::format_rfc3339_seconds(at)
            ))
        }
        // The agent signs for at most 366 days: an expiry further ahead is
        // one no agent made, or a way around "never expires".
        Some(at) if at > SystemTime::now() + MAX_AHEAD => {
            return Err(format!(
                "expires too far ahead: the bundle's signature claims to be good until {} (at \
                 most {} days from now)",
                humantime::format_rfc3339_seconds(at),
                MAX_AHEAD.as_secs() / 86_400
            ))
        }
        Some(_) => {}
        None if opts.allow_unexpiring => {}
        None => {
            return Err(
                "never expires: the bundle's manifest names no `expires`, so anyone \
                 holding it could serve it to a new gateway forever (serve it from an agent of \
                 this version, build it with `warden-agent build --valid-for`, or start the \
                 gateway with --allow-unexpiring-bundles)"
                    .into(),
            )
        }
    }
    not_older(bundle, opts)
}

/// Refuses a bundle below the newest sequence applied, or at it with
/// other content.
fn not_older(bundle: &Bundle, opts: &SourceOptions) -> Result<(), String> {
    let newest = newest_sequence(opts);
    let seq = sequence_of(bundle);
    if seq < newest {
        return Err(format!(
            "rollback: the bundle's sequence {seq} is older than {newest}, the newest this \
             gateway applied (remove {} to accept an older bundle on purpose)",
            sequence_file(opts).display()
        ));
    }
    // One build, one sequence: the same sequence with other content is no
    // build this gateway applied (two agents that built apart, or a
    // signing key used by hand), and taking it would let whichever
    // answers last decide. Sequence 0 (no sequence, bundles from before
    // it) proves nothing either way.
    if seq == newest && seq > 0 {
        if let Ok(applied) = std::fs::read_to_string(content_file(opts)) {
            let applied = applied.trim();
            if !applied.is_empty() && applied != bundle.digest {
                return Err(format!(
                    "rollback: the bundle's sequence {seq} is the newest this gateway applied, \
                     but its content is not what was applied under it (content {} instead of \
                     {}; remove {} to accept it on purpose)",
                    &bundle.digest[..bundle.digest.len().min(16)],
                    &applied[..applied.len().min(16)],
                    sequence_file(opts).display()
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a signed bundle published for labels this gateway does not
/// carry (`.manifest`'s `labels`, signed by the agent: the selector it was
/// published to). A bundle meant for some gateways (a region's, a
/// canary's) is validly signed for every other too; served to one of
/// them by a mirror, a cache or a man in the middle, it would put their
/// rules in force there. A manifest without `labels` is for every gateway.
fn for_these_labels(bundle: &Bundle, opts: &SourceOptions) -> Result<(), String> {
    let Some(audience) = bundle.manifest.extra.get("labels") else {
        return Ok(());
    };
    let wanted = audience
        .as_object()
        .ok_or("the bundle's manifest names its labels in a form this gateway cannot read")?;
    for (k, v) in wanted {
        let v = v
            .as_str()
            .ok_or("the bundle's manifest names its labels in a form this gateway cannot read")?;
        if opts.labels.get(k).map(String::as_str) != Some(v) {
            return Err(format!(
                "not for this gateway: the bundle was published to {} and this gateway's labels are {}",
                labels_header(
                    &wanted
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                ),
                if opts.labels.is_empty() {
                    "none".to_owned()
                } else {
                    labels_header(&opts.labels)
                }
            ));
        }
    }
    Ok(())
}

/// Records a bundle's sequence once it is applied (a signed one's, and an
/// unsigned one's from agents).
pub(super) fn applied_sequence(bundle: &Bundle, opts: &SourceOptions) {
    if opts.verifier.is_none() && !opts.source.is_agent() {
        return;
    }
    let path = sequence_file(opts);
    let newest = newest_sequence(opts);
    let seq = sequence_of(bundle);
    let recorded = std::fs::read_to_string(content_file(opts)).unwrap_or_default();
    if seq < newest || (seq == newest && (seq == 0 || recorded.trim() == bundle.digest)) {
        return;
    }
    // The content first, then the sequence: a crash between leaves a
    // content that the recorded sequence never matches, which refuses
    // only another bundle of that older sequence.
    let write = |to: &std::path::Path, tmp: &str, text: &str| {
        let tmp = opts.state_dir.join(tmp);
        std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, to))
    };
    if std::fs::create_dir_all(&opts.state_dir)
        .and_then(|_| write(&content_file(opts), ".sequence.content.tmp", &bundle.digest))
        .and_then(|_| write(&path, ".sequence.tmp", &seq.to_string()))
        .is_err()
    {
        tracing::warn!(
            "could not record the bundle's sequence in {}",
            path.display()
        );
    }
}

/// Checks the control agent's proof that `body` is what it serves this
/// gateway now: a JWS (`X-Warden-Freshness`) signed with the bundle key,
/// naming the nonce this request sent, the archive's SHA-256 and this
/// gateway. Without it, an old bundle a mirror or a man in the middle
/// kept (from before a kill switch, still within its expiry) would start a
/// gateway that has no state to compare it with. Only the agent makes
/// one: a plain URL (`--bundle-url`) is judged by expiry and sequence.
pub(super) fn proven_current(
    opts: &SourceOptions,
    nonce: &str,
    proof: Option<&str>,
    body: &[u8],
) -> Result<(), String> {
    let Some(v) = opts.verifier.as_ref().filter(|_| opts.source.is_agent()) else {
        return Ok(());
    };
    let proof = proof.ok_or(
        "not proven current: the agent sent no X-Warden-Freshness with the bundle (an agent \
         older than this gateway, or something between that dropped it)",
    )?;
    let claims: warden_config::archive::Freshness = v
        .verify_claims(proof, warden_config::archive::FRESHNESS_TYP)
        .map_err(|e| format!("not proven current: X-Warden-Freshness: {e}"))?;
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(body));
    if claims.nonce != nonce || claims.bundle != digest || claims.gateway != opts.gateway_id {
        return Err(
            "not proven current: the agent's X-Warden-Freshness is for another request, \
             bundle or gateway (a bundle or a proof replayed)"
                .into(),
        );
    }
    Ok(())
}
