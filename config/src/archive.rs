//! Bundles as `tar.gz` archives (what the control agent serves and any static
//! HTTP server could serve too) and their OPA-style signatures.
//!
//! Signatures follow OPA's `.signatures.json` convention: `{"signatures":
//! ["<JWS>"]}` whose payload lists every other file of the bundle with its
//! SHA-256 (`{"files": [{"name", "hash", "algorithm": "SHA-256"}]}`); JSON
//! files are hashed over their canonical form (keys sorted, no whitespace),
//! everything else over its bytes. Verification uses the configured public
//! key whatever key id the token names, and requires the listed files to be
//! exactly the files present.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const SIGNATURES_FILE: &str = ".signatures.json";
/// Where tenant layers live in a bundle (`tenants/<tenant>/`).
pub const TENANTS_DIR: &str = "tenants";
/// A tenant layer's metadata and signature (left out of the layer digest).
pub const LAYER_META_FILE: &str = ".layer.json";
/// Largest unpacked bundle accepted.
pub const MAX_BUNDLE_BYTES: u64 = 64 << 20;
/// Most files in one bundle.
pub const MAX_BUNDLE_FILES: usize = 4096;
/// Bytes an archive's gzip stream may unpack to at most: the files (at
/// most [`MAX_BUNDLE_BYTES`]) and the tar's headers, long names and padding
/// around them (about 1 KiB per file: 4 MiB for [`MAX_BUNDLE_FILES`]), with
/// room to spare. Past it [`unpack`] stops with [`ArchiveError::Unpacked`].
pub const MAX_UNPACKED_BYTES: u64 = MAX_BUNDLE_BYTES + (16 << 20);

/// A bundle's files by relative path (`/`-separated).
pub type Files = BTreeMap<String, Vec<u8>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    #[error("not a complete tar.gz archive: {0}")]
    Corrupt(String),
    #[error("archive entry `{0}` has an unsafe path")]
    UnsafePath(String),
    #[error("archive entry `{0}` is not a regular file")]
    NotAFile(String),
    #[error("archive is larger than {MAX_BUNDLE_BYTES} bytes unpacked or holds more than {MAX_BUNDLE_FILES} files")]
    TooLarge,
    #[error("archive's gzip stream unpacks to more than {MAX_UNPACKED_BYTES} bytes")]
    Unpacked,
    #[error("bundle is not signed (no {SIGNATURES_FILE})")]
    Unsigned,
    #[error("signature does not verify with the configured key: {0}")]
    BadSignature(String),
    #[error("file `{0}` does not match its signed hash")]
    Tampered(String),
    #[error("file `{0}` is not covered by the signature")]
    NotCovered(String),
    #[error("signed file `{0}` is missing")]
    Missing(String),
    #[error("{0}")]
    Io(String),
}

fn safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Packs `files` deterministically (sorted, mtime 0, mode 0644).
pub fn pack(files: &Files) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        // Paths were validated when the files were collected.
        let _ = tar.append_data(&mut h, name, data.as_slice());
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .unwrap_or_default()
}

/// A reader that fails once more than `left` bytes would come through it
/// (and says so in `over`).
struct Bounded<'a, R> {
    inner: R,
    left: u64,
    over: &'a std::cell::Cell<bool>,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // At the bound: one byte more is one too many.
            if self.inner.read(&mut [0u8; 1])? == 0 {
                return Ok(0);
            }
            self.over.set(true);
            return Err(std::io::Error::other(ArchiveError::Unpacked.to_string()));
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Unpacks an archive, refusing unsafe paths, links, and oversize content.
/// The gzip stream is read through a bound ([`MAX_UNPACKED_BYTES`]): the
/// tar reader reads what lies between and after the files (skipped
/// entries, long names, the stream's rest after the tar's end), and a
/// gateway unpacks a fetched bundle before it verifies the signature, so
/// a small gzip of zeros would otherwise take gigabytes of memory.
pub fn unpack(bytes: &[u8]) -> Result<Files, ArchiveError> {
    let over = std::cell::Cell::new(false);
    let gz = Bounded {
        inner: flate2::read::GzDecoder::new(bytes),
        left: MAX_UNPACKED_BYTES,
        over: &over,
    };
    let corrupt = |e: std::io::Error| {
        if over.get() {
            ArchiveError::Unpacked
        } else {
            ArchiveError::Corrupt(e.to_string())
        }
    };
    let mut ar = tar::Archive::new(gz);
    let mut files = Files::new();
    let mut total = 0u64;
    let entries = ar.entries().map_err(corrupt)?;
    for entry in entries {
        let mut e = entry.map_err(corrupt)?;
        let name = e
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        match e.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular => {}
            _ => return Err(ArchiveError::NotAFile(name)),
        }
        if !safe(&name) {
            return Err(ArchiveError::UnsafePath(name));
        }
        total += e.size();
        if total > MAX_BUNDLE_BYTES || files.len() >= MAX_BUNDLE_FILES {
            return Err(ArchiveError::TooLarge);
        }
        let mut data = Vec::with_capacity(e.size() as usize);
        e.read_to_end(&mut data).map_err(corrupt)?;
        files.insert(name, data);
    }
    // A truncated gzip stream can end the tar reader early without an error:
    // insist the compressed stream was read to its end intact (read, not
    // kept, and within the bound).
    let mut gz = ar.into_inner();
    std::io::copy(&mut gz, &mut std::io::sink()).map_err(corrupt)?;
    if files.is_empty() {
        return Err(ArchiveError::Corrupt("no files".into()));
    }
    Ok(files)
}

/// Whether a directory entry named `name` is left out of a bundle read
/// from a directory: `.git` and editor leftovers. Every reader of a bundle
/// directory (this module, the bundle loader) leaves out the same ones.
pub fn skipped(name: &str) -> bool {
    // `..data`, `..2024_…`: a Kubernetes volume's own directories, whose
    // files the volume's top-level links name.
    name == ".git" || name.starts_with("..") || name.ends_with('~') || name.ends_with(".swp")
}

/// Whether the link at `path` names a file inside `root` (a Kubernetes
/// ConfigMap or Secret volume links each file into its own directory); a
/// link out of the bundle, to a directory, or that does not resolve, is
/// not followed.
pub fn link_inside(root: &Path, path: &Path) -> bool {
    let (Ok(root), Ok(target)) = (root.canonicalize(), path.canonicalize()) else {
        return false;
    };
    target.starts_with(&root) && target.is_file()
}

/// Reads every regular file under `dir` (skipping what [`skipped`] names),
/// and each link to a file inside `dir` ([`link_inside`]). Any other link
/// or kind of entry is refused: a bundle never reaches outside itself, and
/// what is verified must be what is loaded.
pub fn read_dir(dir: &Path) -> Result<Files, ArchiveError> {
    fn walk(root: &Path, dir: &Path, out: &mut Files) -> Result<(), ArchiveError> {
        let io = |e: std::io::Error| ArchiveError::Io(format!("{}: {e}", dir.display()));
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if skipped(&name) {
                continue;
            }
            let rel = e
                .path()
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or(name);
            let ft = e.file_type().map_err(io)?;
            if ft.is_dir() {
                walk(root, &e.path(), out)?;
            } else if ft.is_file() || (ft.is_symlink() && link_inside(root, &e.path())) {
                if out.len() >= MAX_BUNDLE_FILES {
                    return Err(ArchiveError::TooLarge);
                }
                out.insert(rel, std::fs::read(e.path()).map_err(io)?);
            } else {
                return Err(ArchiveError::NotAFile(rel));
            }
        }
        Ok(())
    }
    let mut out = Files::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Writes `files` under `dir` (which must not exist yet).
pub fn write_dir(files: &Files, dir: &Path) -> Result<(), ArchiveError> {
    for (name, data) in files {
        if !safe(name) {
            return Err(ArchiveError::UnsafePath(name.clone()));
        }
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ArchiveError::Io(e.to_string()))?;
        }
        std::fs::write(&path, data).map_err(|e| ArchiveError::Io(e.to_string()))?;
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct FileEntry {
    name: String,
    hash: String,
    algorithm: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Signatures {
    signatures: Vec<String>,
}

/// SHA-256 of a file as the signature lists it.
pub fn file_hash(name: &str, data: &[u8]) -> String {
    let canonical = if name.ends_with(".json") || name.ends_with(".manifest") {
        serde_json::from_slice::<serde_json::Value>(data)
            .ok()
            .and_then(|v| serde_json::to_vec(&v).ok())
    } else {
        None
    };
    hex::encode(Sha256::digest(canonical.as_deref().unwrap_or(data)))
}

/// The signing algorithms Warden accepts for bundles.
pub fn algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "EdDSA" => Some(Algorithm::EdDSA),
        "ES256" => Some(Algorithm::ES256),
        "RS256" => Some(Algorithm::RS256),
        "PS256" => Some(Algorithm::PS256),
        _ => None,
    }
}

fn encoding_key(pem: &[u8], alg: Algorithm) -> Result<EncodingKey, String> {
    match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .map_err(|e| format!("signing key: {e}"))
}

fn decoding_key(pem: &[u8], alg: Algorithm) -> Result<DecodingKey, String> {
    match alg {
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    }
    .map_err(|e| format!("public key: {e}"))
}

/// Adds `.signatures.json` to `files`, signing every other file.
pub fn sign(
    files: &mut Files,
    private_pem: &[u8],
    alg: Algorithm,
    keyid: &str,
) -> Result<(), String> {
    files.remove(SIGNATURES_FILE);
    let payload = Payload {
        files: files
            .iter()
            .map(|(n, d)| FileEntry {
                name: n.clone(),
                hash: file_hash(n, d),
                algorithm: "SHA-256".into(),
            })
            .collect(),
        keyid: Some(keyid.to_owned()),
        scope: None,
    };
    let mut h = Header::new(alg);
    h.kid = Some(keyid.to_owned());
    let jws = jsonwebtoken::encode(&h, &payload, &encoding_key(private_pem, alg)?)
        .map_err(|e| format!("signing: {e}"))?;
    let sig = serde_json::to_vec(&Signatures {
        signatures: vec![jws],
    })
    .map_err(|e| e.to_string())?;
    files.insert(SIGNATURES_FILE.into(), sig);
    Ok(())
}

/// The JWS `typ` of a tenant layer's signature (`.layer.json`).
pub const LAYER_TYP: &str = "warden-layer+jws";

/// The digest of a tenant layer: hex SHA-256 over its files (paths
/// relative to the layer's directory) as the agent's source digest
/// computes it — each file's name length, name, data length (little-endian
/// u64) and data, in name order — with `.layer.json` left out.
pub fn layer_digest(files: &Files) -> String {
    let mut h = Sha256::new();
    for (n, d) in files {
        if n == LAYER_META_FILE {
            continue;
        }
        h.update((n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
        h.update((d.len() as u64).to_le_bytes());
        h.update(d);
    }
    hex::encode(h.finalize())
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs a layer's digest: a compact JWS with a detached payload
/// (`<header>..<signature>`, the payload being the digest's text), the
/// value of `.layer.json`'s `signature`.
pub fn sign_layer(
    digest: &str,
    private_pem: &[u8],
    alg: Algorithm,
    keyid: &str,
) -> Result<String, String> {
    let mut h = Header::new(alg);
    h.kid = Some(keyid.to_owned());
    h.typ = Some(LAYER_TYP.to_owned());
    let header = b64(&serde_json::to_vec(&h).map_err(|e| e.to_string())?);
    let input = format!("{header}.{}", b64(digest.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &encoding_key(private_pem, alg)?, alg)
        .map_err(|e| format!("signing: {e}"))?;
    Ok(format!("{header}..{sig}"))
}

/// The files of each tenant layer in `files` (`tenants/<t>/…`), by tenant,
/// their paths relative to the layer's directory.
pub fn layers(files: &Files) -> BTreeMap<String, Files> {
    let mut out: BTreeMap<String, Files> = BTreeMap::new();
    let prefix = format!("{}/", TENANTS_DIR);
    for (name, data) in files {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some((tenant, file)) = rest.split_once('/') else {
            continue;
        };
        out.entry(tenant.to_owned())
            .or_default()
            .insert(file.to_owned(), data.clone());
    }
    out
}

/// The JWS `typ` of an approval grant (signed by the agent, checked by gateways).
pub const APPROVAL_GRANT_TYP: &str = "warden-approval+jwt";

/// The JWS `typ` of the list of just-in-time grants that hold (signed by
/// the agent, checked by gateways).
pub const JIT_GRANTS_TYP: &str = "warden-grants+jwt";

/// A signed bundle's expiry as its `.manifest` names it (`expires`, RFC
/// 3339, seconds, UTC), written by the agent and read by gateways with
/// this one pair of functions, so that both read it alike.
pub fn write_expires(at: std::time::SystemTime) -> serde_json::Value {
    humantime::format_rfc3339_seconds(at).to_string().into()
}

/// The expiry `expires` (the manifest's member, if any) names: `None`
/// without one; an error for a value that is not an RFC 3339 time.
pub fn read_expires(
    expires: Option<&serde_json::Value>,
) -> Result<Option<std::time::SystemTime>, String> {
    let Some(v) = expires else {
        return Ok(None);
    };
    v.as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "the bundle's manifest names its expiry in a form this gateway cannot read: {v}"
            )
        })
}

/// The JWS `typ` of the agent's proof that the bundle it answers with is
/// the one it serves that gateway now (`X-Warden-Freshness`).
pub const FRESHNESS_TYP: &str = "warden-bundle-freshness+jwt";

/// What the agent signs beside a bundle it serves: the nonce the gateway
/// sent with its request (`X-Warden-Nonce`), the SHA-256 of the archive in
/// the answer, and the gateway it was asked for. A mirror, a cache or a man
/// in the middle cannot make one for a nonce it has not seen answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Freshness {
    pub nonce: String,
    pub bundle: String,
    pub gateway: String,
}

/// A gateway's nonce as the agent takes it: 32 to 64 lowercase hex digits.
pub fn valid_nonce(n: &str) -> bool {
    (32..=64).contains(&n.len()) && n.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Signs `claims` as a compact JWS whose header names `typ`, so a signed
/// thing of one kind (an approval grant) is never read as another (a
/// bundle's signature block).
pub fn sign_claims<T: serde::Serialize>(
    claims: &T,
    private_pem: &[u8],
    alg: Algorithm,
    keyid: &str,
    typ: &str,
) -> Result<String, String> {
    let mut h = Header::new(alg);
    h.kid = Some(keyid.to_owned());
    h.typ = Some(typ.to_owned());
    jsonwebtoken::encode(&h, claims, &encoding_key(private_pem, alg)?)
        .map_err(|e| format!("signing: {e}"))
}

/// A public key a gateway verifies bundles with.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    alg: Algorithm,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("alg", &self.alg).finish()
    }
}

impl Verifier {
    pub fn new(public_pem: &[u8], alg: Algorithm) -> Result<Self, String> {
        Ok(Verifier {
            key: decoding_key(public_pem, alg)?,
            alg,
        })
    }

    /// The claims of a JWS made by [`sign_claims`] with this key's private
    /// half and the same `typ`.
    pub fn verify_claims<T: serde::de::DeserializeOwned>(
        &self,
        jws: &str,
        typ: &str,
    ) -> Result<T, String> {
        let header = jsonwebtoken::decode_header(jws).map_err(|e| e.to_string())?;
        if header.typ.as_deref() != Some(typ) {
            return Err(format!("not a {typ}"));
        }
        let mut v = Validation::new(self.alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        jsonwebtoken::decode::<T>(jws, &self.key, &v)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }

    /// Checks a layer's signature (made by [`sign_layer`]) over `digest`.
    pub fn verify_layer(&self, jws: &str, digest: &str) -> Result<(), String> {
        let mut parts = jws.split('.');
        let (Some(header), Some(""), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a compact JWS with a detached payload".into());
        };
        let h = jsonwebtoken::decode_header(format!("{header}.e30.x"))
            .map_err(|e| format!("header: {e}"))?;
        if h.typ.as_deref() != Some(LAYER_TYP) {
            return Err(format!("not a {LAYER_TYP}"));
        }
        if h.alg != self.alg {
            return Err(format!(
                "signed with {:?}, the key is {:?}",
                h.alg, self.alg
            ));
        }
        let input = format!("{header}.{}", b64(digest.as_bytes()));
        match jsonwebtoken::crypto::verify(sig, input.as_bytes(), &self.key, self.alg) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the signature does not verify with the configured key".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Every tenant layer of a bundle carries a `.layer.json` whose digest
    /// is its files' and whose signature verifies over it.
    pub fn verify_layers(&self, files: &Files) -> Result<(), ArchiveError> {
        for (tenant, layer) in layers(files) {
            let bad =
                |m: String| ArchiveError::BadSignature(format!("tenant layer `{tenant}`: {m}"));
            let meta = layer
                .get(LAYER_META_FILE)
                .ok_or_else(|| bad(format!("no {}", LAYER_META_FILE)))?;
            let meta: crate::raw::LayerMetaConfig =
                serde_json::from_slice(meta).map_err(|e| bad(e.to_string()))?;
            let digest = layer_digest(&layer);
            if meta.digest != digest {
                return Err(bad("its digest does not match its files".into()));
            }
            let sig = meta
                .signature
                .as_deref()
                .ok_or_else(|| bad("not signed".into()))?;
            self.verify_layer(sig, &digest).map_err(bad)?;
        }
        Ok(())
    }

    /// Checks the signature block and that it covers exactly these files.
    pub fn verify(&self, files: &Files) -> Result<(), ArchiveError> {
        let raw = files.get(SIGNATURES_FILE).ok_or(ArchiveError::Unsigned)?;
        let sigs: Signatures = serde_json::from_slice(raw)
            .map_err(|e| ArchiveError::BadSignature(format!("{SIGNATURES_FILE}: {e}")))?;
        let [jws] = sigs.signatures.as_slice() else {
            return Err(ArchiveError::BadSignature(
                "exactly one signature is supported".into(),
            ));
        };
        let mut v = Validation::new(self.alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        let payload = jsonwebtoken::decode::<Payload>(jws, &self.key, &v)
            .map_err(|e| ArchiveError::BadSignature(e.to_string()))?
            .claims;
        let mut signed: BTreeMap<&str, &FileEntry> = BTreeMap::new();
        for f in &payload.files {
            if f.algorithm != "SHA-256" {
                return Err(ArchiveError::BadSignature(format!(
                    "unsupported hash algorithm {} for {}",
                    f.algorithm, f.name
                )));
            }
            signed.insert(f.name.trim_start_matches('/'), f);
        }
        for (name, data) in files {
            if name == SIGNATURES_FILE {
                continue;
            }
            let entry = signed
                .remove(name.as_str())
                .ok_or_else(|| ArchiveError::NotCovered(name.clone()))?;
            if entry.hash != file_hash(name, data) {
                return Err(ArchiveError::Tampered(name.clone()));
            }
        }
        if let Some((name, _)) = signed.into_iter().next() {
            return Err(ArchiveError::Missing(name.to_owned()));
        }
        self.verify_layers(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trip_and_refusals() {
        let mut f = Files::new();
        f.insert("warden.yaml".into(), b"version: 1\n".to_vec());
        f.insert("policies/a.rego".into(), b"package a\n".to_vec());
        let tgz = pack(&f);
        assert_eq!(unpack(&tgz).expect("unpack"), f);
        assert!(matches!(
            unpack(&tgz[..tgz.len() / 2]),
            Err(ArchiveError::Corrupt(_))
        ));
        assert!(matches!(unpack(b"not gzip"), Err(ArchiveError::Corrupt(_))));
        assert!(!safe("../etc/passwd") && !safe("/abs") && !safe("a/./b") && safe("a/b.rego"));
    }

    /// A tar.gz whose gzip stream goes on with `zeros` bytes after the tar.
    fn bomb(zeros: usize) -> Vec<u8> {
        use std::io::Write;
        let mut f = Files::new();
        f.insert("warden.yaml".into(), b"version: 1\n".to_vec());
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&pack(&f)[..])
            .read_to_end(&mut tar)
            .expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&tar).expect("gzip");
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..zeros / chunk.len() {
            gz.write_all(&chunk).expect("gzip");
        }
        gz.finish().expect("gzip")
    }

    /// What the gzip stream unpacks to is bounded, whatever the tar says:
    /// 100 MiB of zeros after a small tar (about 100 KiB of gzip) is
    /// refused, not read into memory.
    #[test]
    fn a_gzip_bomb_is_refused() {
        assert!(unpack(&bomb(1 << 20)).is_ok(), "a tar's trailing zeros");
        let b = bomb(100 << 20);
        assert!(b.len() < 1 << 20, "{} bytes of gzip", b.len());
        let e = unpack(&b).expect_err("100 MiB unpacked");
        assert_eq!(e, ArchiveError::Unpacked);
        assert!(e.to_string().contains("unpacks to more than"), "{e}");
    }

    #[test]
    fn json_is_hashed_canonically() {
        assert_eq!(
            file_hash("data.json", br#"{ "b": 1, "a": [1, 2] }"#),
            file_hash("data.json", br#"{"a":[1,2],"b":1}"#)
        );
        assert_ne!(file_hash("x.rego", b"a "), file_hash("x.rego", b"a"));
    }
}
