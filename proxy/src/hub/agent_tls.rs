//! TLS towards the control agents (`--agent-ca`, `--agent-client-cert`,
//! `--agent-client-key`): which certificates an `https://` agent may
//! present, and the certificate this gateway presents to every agent (bundle
//! polls, fleet reports, audit shipping, approval claims).
//!
//! With `--agent-ca`, an agent's certificate must chain to one of the CA
//! certificates in that file, and to nothing else: the built-in roots are
//! not consulted. Without it, the built-in roots (Mozilla's, as reqwest has
//! them) verify it, as before.
//!
//! An agent that asks for client certificates maps one to a gateway id: its
//! URI SAN `spiffe://<trust domain>/gateway/<id>`, else its first DNS SAN
//! ([`gateway_of`]). A gateway whose certificate names another id than its
//! `--gateway-id` would be refused by every agent; it is refused here, at
//! start, instead.
//!
//! The files are looked at again (their modification time, size and inode)
//! at most every [`RELOAD_EVERY`], when a client to an agent is wanted: a
//! changed set that loads (and still names this gateway) replaces the one in
//! use, and the clients to the agents are built again with it, so a rotated
//! certificate is presented without a restart. A set that does not load
//! leaves the one in use, said once per change.
//!
//! Nothing of the key is ever logged: errors about the key file name the
//! file and what is wrong, never its content.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How often, at most, the files are looked at for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The files, as the flags name them.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// `--agent-ca`: the CA certificates agents' certificates chain to.
    pub ca: Option<PathBuf>,
    /// `--agent-client-cert` and `--agent-client-key`: both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any is given.
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [self.ca.as_ref(), self.cert.as_ref(), self.key.as_ref()]
            .into_iter()
            .flatten()
    }
}

/// What tells a changed file: modification time, size and inode (a file
/// replaced by a rename, as secret mounts do, is another inode).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(p: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// A loaded set: the TLS client configuration, and what it presents.
struct Loaded {
    config: Arc<rustls::ClientConfig>,
    /// The gateway id the client certificate names, and how.
    names: Option<String>,
}

struct State {
    config: Arc<rustls::ClientConfig>,
    /// Counts the sets loaded: clients built with an older one are built
    /// again.
    generation: u64,
    /// The files as they were when last read (loaded or not).
    seen: Vec<Stamp>,
    checked: Instant,
}

/// The gateway's TLS towards its agents, shared by every client to them.
pub struct AgentTls {
    files: TlsFiles,
    gateway_id: String,
    every: Duration,
    state: Mutex<State>,
}

impl std::fmt::Debug for AgentTls {
    // The paths only: the configuration holds the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTls")
            .field("ca", &self.files.ca)
            .field("cert", &self.files.cert)
            .finish_non_exhaustive()
    }
}

impl AgentTls {
    /// Reads and checks the files (`None`: none given). Any problem is an
    /// error that stops the start: a CA file with no certificate or one
    /// that does not parse, a certificate without its key (or the reverse),
    /// a key that is not the certificate's, a certificate that names
    /// another gateway than `gateway_id`.
    pub fn open(files: TlsFiles, gateway_id: &str) -> Result<Option<Arc<AgentTls>>, String> {
        Self::open_with(files, gateway_id, RELOAD_EVERY)
    }

    pub(crate) fn open_with(
        files: TlsFiles,
        gateway_id: &str,
        every: Duration,
    ) -> Result<Option<Arc<AgentTls>>, String> {
        if !files.any() {
            return Ok(None);
        }
        match (&files.cert, &files.key) {
            (Some(_), None) => {
                return Err(
                    "--agent-client-cert is given without --agent-client-key: give both \
                     (the certificate and its private key) or neither"
                        .into(),
                )
            }
            (None, Some(_)) => {
                return Err(
                    "--agent-client-key is given without --agent-client-cert: give both \
                     (the certificate and its private key) or neither"
                        .into(),
                )
            }
            _ => {}
        }
        let seen = files.paths().map(|p| stamp(p)).collect();
        let loaded = load(&files, gateway_id)?;
        if let Some(names) = &loaded.names {
            tracing::info!(
                cert = %files.cert.as_deref().unwrap_or(Path::new("")).display(),
                "control agents: this gateway presents its client certificate, which names it {names}"
            );
        }
        if let Some(ca) = &files.ca {
            tracing::info!(ca = %ca.display(), "control agents: their certificates are verified against --agent-ca only");
        }
        Ok(Some(Arc::new(AgentTls {
            files,
            gateway_id: gateway_id.to_owned(),
            every,
            state: Mutex::new(State {
                config: loaded.config,
                generation: 0,
                seen,
                checked: Instant::now(),
            }),
        })))
    }

    /// The configuration to build a client with now, and its generation
    /// (it changes when the files were loaded again). Looks at the files
    /// when the last look is older than [`RELOAD_EVERY`].
    pub fn current(&self) -> (u64, Arc<rustls::ClientConfig>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.checked.elapsed() >= self.every {
            st.checked = Instant::now();
            self.reload_if_changed(&mut st);
        }
        (st.generation, st.config.clone())
    }

    fn reload_if_changed(&self, st: &mut State) {
        let now: Vec<Stamp> = self.files.paths().map(|p| stamp(p)).collect();
        if now == st.seen {
            return;
        }
        st.seen = now;
        match load(&self.files, &self.gateway_id) {
            Ok(l) => {
                st.config = l.config;
                st.generation += 1;
                tracing::info!(
                    names = l.names.as_deref().unwrap_or(""),
                    cert = %self.files.cert.as_deref().unwrap_or(Path::new("")).display(),
                    ca = %self.files.ca.as_deref().unwrap_or(Path::new("")).display(),
                    "control agents: the TLS files changed and were loaded again; new connections use them"
                );
            }
            Err(e) => tracing::error!(
                error = %e,
                "control agents: the TLS files changed but do not load; the previous ones stay in use"
            ),
        }
    }
}

/// Reads the files into a client configuration.
fn load(files: &TlsFiles, gateway_id: &str) -> Result<Loaded, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &files.ca {
        Some(ca) => ca_roots(ca)?,
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS towards the agents: {e}"))?
        .with_root_certificates(roots);
    let (mut config, names) = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = client_chain(cert)?;
            let names = names_gateway(cert, &chain[0], gateway_id)?;
            let key_der = client_key(key)?;
            let config = builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "--agent-client-key {}: not the key of --agent-client-cert {} ({})",
                    key.display(),
                    cert.display(),
                    key_error(&e)
                )
            })?;
            (config, Some(names))
        }
        _ => (builder.with_no_client_auth(), None),
    };
    // As reqwest offers by default.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        names,
    })
}

/// What rustls says of a key that does not load or match, without any of
/// its bytes.
fn key_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => "the key does not match the certificate".into(),
        rustls::Error::General(_) => "a key of a kind not supported (RSA, ECDSA, Ed25519)".into(),
        _ => "the key does not load".into(),
    }
}

fn ca_roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("--agent-ca {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| {
            format!(
                "--agent-ca {}: not a PEM bundle of certificates ({e})",
                ca.display()
            )
        })?;
        roots.add(c).map_err(|e| {
            format!(
                "--agent-ca {}: a certificate in it does not parse ({e})",
                ca.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "--agent-ca {}: holds no certificate (give the PEM certificates of the CA that \
             signed the agents' certificates)",
            ca.display()
        ));
    }
    Ok(roots)
}

fn client_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(cert).map_err(|e| format!("--agent-client-cert {}: {e}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "--agent-client-cert {}: not a PEM certificate ({e})",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "--agent-client-cert {}: holds no certificate",
            cert.display()
        ));
    }
    Ok(chain)
}

fn client_key(key: &Path) -> Result<PrivateKeyDer<'static>, String> {
    // The error of the parser is not shown: it may quote a line of the file.
    let pem =
        std::fs::read(key).map_err(|e| format!("--agent-client-key {}: {e}", key.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "--agent-client-key {}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })
}

/// The gateway id a client certificate names, as the agents read it: its
/// URI SAN `spiffe://<trust domain>/gateway/<id>`, else its first DNS SAN
/// (`None`: it names none, or does not parse). Answers the id and how it
/// was named.
pub fn gateway_of(cert: &[u8]) -> Option<(String, &'static str)> {
    use x509_parser::extensions::GeneralName;
    let (_, x) = x509_parser::parse_x509_certificate(cert).ok()?;
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
    if let Some(id) = spiffe {
        return Some((id, "its URI SAN spiffe://…/gateway/"));
    }
    names.iter().find_map(|n| match n {
        GeneralName::DNSName(d) => Some(((*d).to_owned(), "its first DNS SAN")),
        _ => None,
    })
}

/// Checks that the leaf certificate is one an agent takes from this
/// gateway: it parses, names `gateway_id`, and may authenticate a client.
/// Answers how it names the gateway, for the log.
fn names_gateway(
    path: &Path,
    leaf: &CertificateDer<'_>,
    gateway_id: &str,
) -> Result<String, String> {
    let p = path.display();
    let (_, x) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("--agent-client-cert {p}: the certificate does not parse ({e})"))?;
    match gateway_of(leaf.as_ref()) {
        Some((id, how)) if id == gateway_id => {
            if let Ok(Some(eku)) = x.extended_key_usage() {
                if !eku.value.client_auth {
                    return Err(format!(
                        "--agent-client-cert {p}: its extended key usage does not allow client \
                         authentication (the agents would refuse it): issue it with \
                         extendedKeyUsage=clientAuth"
                    ));
                }
            }
            let v = x.validity();
            if !v.is_valid() {
                tracing::warn!(
                    cert = %p,
                    not_before = %v.not_before,
                    not_after = %v.not_after,
                    "control agents: the client certificate is not valid now; the agents will refuse it"
                );
            }
            Ok(format!("`{id}` ({how})"))
        }
        Some((id, how)) => Err(format!(
            "--agent-client-cert {p} names gateway `{id}` ({how}), not this gateway's \
             --gateway-id `{gateway_id}`: the agents take a gateway for the one its certificate \
             names. Give --gateway-id {id}, or a certificate with the URI SAN \
             spiffe://<trust domain>/gateway/{gateway_id} (or the DNS SAN {gateway_id})"
        )),
        None => Err(format!(
            "--agent-client-cert {p} names no gateway: the agents read the gateway id from a URI \
             SAN spiffe://<trust domain>/gateway/<id>, else the first DNS SAN; issue it with \
             spiffe://<trust domain>/gateway/{gateway_id} (this gateway's --gateway-id)"
        )),
    }
}

/// Says what a failed request to an agent failed on: reqwest's message and
/// its causes (the TLS error among them), the URL left out. A certificate
/// refused either way is said in words.
pub fn why(e: reqwest::Error) -> String {
    chain(&e.without_url())
}

/// `e` and its causes, the TLS refusal among them said in words first.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut tls: Option<String> = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        // An io::Error's source is its inner error's source: the inner
        // errors themselves are looked at (hyper-rustls wraps tokio-rustls'
        // io::Error, which wraps rustls' error, in another io::Error).
        let mut inner = Some(err);
        while let Some(i) = inner {
            if let Some(r) = i.downcast_ref::<rustls::Error>() {
                tls = tls.or_else(|| tls_words(r));
            }
            inner = i
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|i| i as &(dyn std::error::Error + 'static));
        }
        cur = err.source();
    }
    let chain = parts.join(": ");
    match tls {
        Some(w) => format!("{w} ({chain})"),
        None => chain,
    }
}

fn tls_words(e: &rustls::Error) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    Some(match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "TLS: the agent's certificate is not trusted (not signed by --agent-ca, or the \
             built-in roots without it)"
                .into()
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "TLS: the agent's certificate does not name the host in its URL".into()
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "TLS: the agent's certificate has expired".into()
        }
        E::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => {
            "TLS: the agent's certificate is not one for a server (its extended key usage)".into()
        }
        E::InvalidCertificate(_) => "TLS: the agent's certificate is not trusted".into(),
        E::AlertReceived(A::CertificateRequired) => {
            "TLS: the agent requires a client certificate (give --agent-client-cert and \
             --agent-client-key)"
                .into()
        }
        E::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::AccessDenied,
        ) => format!("TLS: the agent refused this gateway's client certificate ({e})"),
        _ => return None,
    })
}

#[cfg(test)]
#[path = "agent_tls_tests.rs"]
mod tests;
