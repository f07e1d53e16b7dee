//! HTTPS on the agent (`serve --tls-cert --tls-key`): rustls, with the
//! certificate and key read again when their files change (a rotated
//! certificate is served without a restart; one that does not load leaves
//! the last good one served and says why), and, with `--tls-client-ca`,
//! gateways' client certificates: verified against that CA, and the
//! gateway id a certificate names ([`gateway_of`]) is the only gateway
//! its connection may speak for.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often the files are looked at for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Where the agent's TLS comes from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates are asked for and verified against this CA
    /// (optional for a client: people and the CLI present none).
    pub client_ca: Option<PathBuf>,
}

/// The server's TLS, swapped whole when its files change.
pub struct Tls {
    files: TlsFiles,
    config: ArcSwap<rustls::ServerConfig>,
    stamps: std::sync::Mutex<Vec<Option<[u8; 32]>>>,
}

/// What a file holds now, to tell a change (its digest: a file rewritten
/// within its clock's tick is a change too).
fn stamp(p: &Path) -> Option<[u8; 32]> {
    use sha2::Digest;
    std::fs::read(p)
        .ok()
        .map(|b| sha2::Sha256::digest(b).into())
}

fn load(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("--tls-cert {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--tls-cert {}", files.cert.display()))?;
    if certs.is_empty() {
        bail!("--tls-cert {}: no certificate in it", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("--tls-key {}: no private key in it", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("--tls-client-ca {}", ca.display()))?
            {
                roots.add(c.with_context(|| format!("--tls-client-ca {}", ca.display()))?)?;
            }
            if roots.is_empty() {
                bail!("--tls-client-ca {}: no certificate in it", ca.display());
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("--tls-cert and --tls-key do not make a pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    /// Reads the files (a failure stops the start).
    pub fn open(files: TlsFiles) -> anyhow::Result<Arc<Tls>> {
        let config = load(&files)?;
        let tls = Arc::new(Tls {
            stamps: std::sync::Mutex::new(Tls::stamps_of(&files)),
            config: ArcSwap::from_pointee(config),
            files,
        });
        let weak = Arc::downgrade(&tls);
        std::thread::Builder::new()
            .name("tls-reload".into())
            .spawn(move || loop {
                std::thread::sleep(RELOAD_EVERY);
                match weak.upgrade() {
                    Some(t) => t.reload_if_changed(),
                    None => return,
                }
            })?;
        Ok(tls)
    }

    fn stamps_of(files: &TlsFiles) -> Vec<Option<[u8; 32]>> {
        [
            Some(&files.cert),
            Some(&files.key),
            files.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| stamp(p))
        .collect()
    }

    /// Loads the files again when one changed; a set that does not load
    /// leaves the one served (logged, and tried again at the next change).
    pub fn reload_if_changed(&self) {
        let now = Tls::stamps_of(&self.files);
        let mut seen = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return;
        }
        *seen = now;
        match load(&self.files) {
            Ok(c) => {
                self.config.store(Arc::new(c));
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate loaded again");
            }
            Err(e) => tracing::error!(
                error = %format!("{e:#}"),
                "the changed TLS files do not load: the previous certificate is still served"
            ),
        }
    }

    /// An acceptor with the configuration served now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// Whether client certificates are asked for.
    pub fn asks_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }
}

/// The gateway id a client certificate names: its URI SAN
/// `spiffe://<trust domain>/gateway/<id>`, else its first DNS SAN (`None`:
/// it names none, or the certificate does not parse).
pub fn gateway_of(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = x.subject_alternative_name().ok()??;
    let names = &san.value.general_names;
    let spiffe = names.iter().find_map(|n| match n {
        GeneralName::URI(u) => u
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split_once("/gateway/"))
            .map(|(_, id)| id.to_owned())
            .filter(|id| !id.is_empty() && !id.contains('/')),
        _ => None,
    });
    spiffe.or_else(|| {
        names.iter().find_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
    })
}
