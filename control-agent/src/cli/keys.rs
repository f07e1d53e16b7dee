//! Signing keys: `keygen`, and the signer `--signing-key`,
//! `--signing-alg` and `--valid-for` name (`serve`, `build`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use warden_config::archive;

use crate::build::Signer;

#[derive(clap::Args)]
pub struct Signing {
    /// PEM private key that signs bundles (see `keygen`).
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// EdDSA (default), ES256, RS256 or PS256.
    #[arg(long, default_value = "EdDSA")]
    signing_alg: String,
    /// How long a signed bundle stays good (its manifest's `expires`):
    /// gateways refuse it after that, so an old bundle served again to a
    /// new gateway is refused. `serve` re-signs what it serves at half of
    /// it (default 7d, at least 10m); `build` defaults to 30d. `never`
    /// makes bundles gateways refuse unless run with
    /// `--allow-unexpiring-bundles`.
    #[arg(long, value_parser = parse_validity)]
    valid_for: Option<Validity>,
}

#[derive(Clone, Copy, Debug)]
pub enum Validity {
    For(Duration),
    Never,
}

/// The longest a signed bundle may stay good.
const MAX_VALIDITY: Duration = Duration::from_secs(366 * 86_400);

fn parse_validity(s: &str) -> Result<Validity, String> {
    if s == "never" {
        return Ok(Validity::Never);
    }
    match humantime::parse_duration(s) {
        // Gateways refuse an expiry further ahead than that (`fresh`).
        Ok(d) if d > MAX_VALIDITY => Err("a validity is at most 366d (or `never`)".into()),
        Ok(d) if !d.is_zero() => Ok(Validity::For(d)),
        Ok(_) => Err("a validity must be above zero (or `never`)".into()),
        Err(e) => Err(format!("{e} (a duration such as 7d, or `never`)")),
    }
}

/// The signer `s` names, its bundles good for `--valid-for` (else
/// `default`).
pub fn signer(s: &Signing, default: Duration) -> anyhow::Result<Option<Signer>> {
    let Some(path) = &s.signing_key else {
        if s.valid_for.is_some() {
            bail!("--valid-for needs --signing-key: an unsigned bundle carries no expiry a gateway could trust");
        }
        return Ok(None);
    };
    let valid_for = match s.valid_for {
        None => Some(default),
        Some(Validity::For(d)) => Some(d),
        Some(Validity::Never) => None,
    };
    let alg = archive::algorithm(&s.signing_alg)
        .with_context(|| format!("unsupported signing algorithm `{}`", s.signing_alg))?;
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    use sha2::Digest;
    let keyid = hex::encode(&sha2::Sha256::digest(&pem)[..8]);
    Ok(Some(Signer {
        pem,
        alg,
        keyid,
        valid_for,
    }))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// `keygen`: an Ed25519 key pair written as PEM (PKCS#8 and SPKI).
pub fn keygen(private: &Path, public: &Path) -> anyhow::Result<()> {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("key generation failed"))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("key generation failed"))?;
    // SubjectPublicKeyInfo for Ed25519 (RFC 8410).
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    std::fs::write(private, pem("PRIVATE KEY", pkcs8.as_ref()))?;
    std::fs::write(public, pem("PUBLIC KEY", &spki))?;
    println!(
        "private key: {}\npublic key:  {}",
        private.display(),
        public.display()
    );
    Ok(())
}
