//! Downstream TLS settings: certificates, ALPN, and client certificates (mTLS).

use std::any::Any;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use warden_config::model::ListenerTls;
use warden_filters::engines::identity::ClientCert;

/// After the handshake, reads the verified leaf certificate into a
/// [`ClientCert`] that the request path finds in the session's TLS digest.
struct CaptureClientCert;

#[async_trait]
impl TlsAccept for CaptureClientCert {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let der = tls.peer_certificate_der()?;
        let cert = ClientCert::from_der(der)?;
        Some(Arc::new(cert))
    }
}

/// TLS settings for one listener.
pub fn settings(name: &str, t: &ListenerTls) -> anyhow::Result<TlsSettings> {
    let cert = t.cert.to_str().context("certificate path is not UTF-8")?;
    let key = t.key.to_str().context("key path is not UTF-8")?;
    let mut tls = match &t.client_ca {
        None => TlsSettings::intermediate(cert, key)
            .with_context(|| format!("listener `{name}`: loading TLS certificate"))?,
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("listener `{name}`: reading {}", ca.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("listener `{name}`: parsing {}", ca.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                anyhow::bail!(
                    "listener `{name}`: no usable CA certificate in {}",
                    ca.display()
                );
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            // Optional client auth: callers may still use API keys or JWTs;
            // a certificate that is presented must verify.
            let builder = if t.client_auth_required {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            let verifier = builder
                .build()
                .map_err(|e| anyhow::anyhow!("listener `{name}`: client CA: {e}"))?;
            let mut s = TlsSettings::with_callbacks(Box::new(CaptureClientCert))
                .with_context(|| format!("listener `{name}`: TLS settings"))?;
            s.set_certificate_chain_file(cert)
                .with_context(|| format!("listener `{name}`: loading TLS certificate"))?;
            s.set_private_key_file(key)
                .with_context(|| format!("listener `{name}`: loading TLS key"))?;
            s.set_client_cert_verifier(verifier);
            s
        }
    };
    tls.enable_h2();
    Ok(tls)
}
