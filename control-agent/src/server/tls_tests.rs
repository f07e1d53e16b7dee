//! HTTPS on the agent, against a real client (reqwest over rustls) and
//! certificates made by `openssl`: it serves only TLS; a gateway's client
//! certificate pins the gateway its connection speaks for (the fleet
//! token narrowed to it, another gateway's token refused); gateways
//! without one are refused when certificates are required, people are
//! not; a rotated certificate is served without a restart, and one that
//! does not load leaves the last good one served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use sha2::Digest;

use super::tls::{Tls, TlsFiles};
use super::{Api, Tokens};

const ADMIN: &str = "admin-token-0123456789";
const FLEET: &str = "fleet-token-0123456789";
const OWN: &str = "edge-own-token-0123456789";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate it signs for `san` (`name.crt`, `name.key`).
fn issue(dir: &Path, name: &str, san: &str) {
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, format!("subjectAltName={san}\n")).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=warden test CA",
        ],
    );
    issue(dir, "server", "IP:127.0.0.1");
    issue(dir, "gw1", "URI:spiffe://warden.test/gateway/gw-1");
    issue(dir, "own", "DNS:edge-own");
    issue(dir, "next", "IP:127.0.0.1");
}

struct Served {
    _d: tempfile::TempDir,
    dir: std::path::PathBuf,
    url: String,
    tls: Arc<Tls>,
}

async fn serve(require: bool) -> Served {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    certificates(&dir);
    let state = dir.join("state");
    let src = dir.join("source");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("warden.yaml"), crate::store::layer_tests::ORG).unwrap();
    let store = crate::store::Store::open(&state, &src, None).unwrap();
    store.publish_source("test", true).unwrap();
    let api = Arc::new(Api {
        store: Arc::new(store),
        tokens: Tokens::new(ADMIN, FLEET)
            .with_gateways([("edge-own".to_owned(), sha2::Sha256::digest(OWN).into())])
            .requiring_gateway_certs(require),
        approvals: Arc::new(crate::approvals::Approvals::open(&state, Default::default()).unwrap()),
        metrics: Default::default(),
        audit: Arc::new(
            crate::audit::AuditStore::open(&state.join("audit.sqlite3"), Default::default())
                .unwrap(),
        ),
        console: Default::default(),
        admins: Default::default(),
        connect: None,
    });
    let tls = Tls::open(TlsFiles {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        client_ca: Some(dir.join("ca.crt")),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(super::serve(listener, api, Some(tls.clone())));
    Served {
        _d: d,
        dir,
        url,
        tls,
    }
}

fn client(dir: &Path, cert: Option<&str>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.crt")).unwrap()).unwrap();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .tls_info(true);
    if let Some(name) = cert {
        let mut pem = std::fs::read(dir.join(format!("{name}.crt"))).unwrap();
        pem.extend(std::fs::read(dir.join(format!("{name}.key"))).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// A bundle fetch as gateway `id` with `token`: its status.
async fn fetch(c: &reqwest::Client, url: &str, token: &str, id: &str) -> u16 {
    c.get(format!("{url}/v1/bundles/current"))
        .bearer_auth(token)
        .header("x-warden-gateway", id)
        .header("x-warden-wait", "0")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_pins_the_gateway_its_connection_speaks_for() {
    let s = serve(false).await;
    let gw1 = client(&s.dir, Some("gw1"));
    // HTTPS only: plain HTTP on the port gets nothing back.
    let plain = reqwest::get(s.url.replace("https://", "http://") + "/healthz").await;
    assert!(!plain.map(|r| r.status().is_success()).unwrap_or(false));
    // The fleet token, narrowed to the gateway the certificate names.
    assert_eq!(fetch(&gw1, &s.url, FLEET, "gw-1").await, 200);
    assert_eq!(fetch(&gw1, &s.url, FLEET, "gw-2").await, 403);
    // A gateway's own token from another gateway's certificate: refused.
    assert_eq!(fetch(&gw1, &s.url, OWN, "edge-own").await, 403);
    // Its own certificate (a DNS name) with its own token: served.
    let own = client(&s.dir, Some("own"));
    assert_eq!(fetch(&own, &s.url, OWN, "edge-own").await, 200);
    // No certificate: the fleet token speaks for any gateway, as before.
    let none = client(&s.dir, None);
    assert_eq!(fetch(&none, &s.url, FLEET, "gw-2").await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn gateways_without_a_certificate_are_refused_when_one_is_required() {
    let s = serve(true).await;
    let none = client(&s.dir, None);
    assert_eq!(fetch(&none, &s.url, FLEET, "gw-1").await, 403);
    assert_eq!(
        fetch(&client(&s.dir, Some("gw1")), &s.url, FLEET, "gw-1").await,
        200
    );
    // People present none: the admin token still reads the history.
    let r = none
        .get(format!("{}/v1/history", s.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn served_certificate(s: &Served) -> Vec<u8> {
    let r = client(&s.dir, None)
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap();
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the server's certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let s = serve(false).await;
    let der = |name: &str| {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_file(s.dir.join(format!("{name}.crt")))
            .unwrap()
            .to_vec()
    };
    assert_eq!(served_certificate(&s).await, der("server"));
    // A key that is no key: the old certificate stays served.
    std::fs::write(s.dir.join("server.key"), "not a key").unwrap();
    s.tls.reload_if_changed();
    assert_eq!(served_certificate(&s).await, der("server"));
    // The next certificate and its key: served from the next connection.
    std::fs::copy(s.dir.join("next.crt"), s.dir.join("server.crt")).unwrap();
    std::fs::copy(s.dir.join("next.key"), s.dir.join("server.key")).unwrap();
    s.tls.reload_if_changed();
    assert_eq!(served_certificate(&s).await, der("next"));
}
