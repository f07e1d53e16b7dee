//! The gateway reaches its control agents over TLS it can trust and proves
//! who it is: `--agent-ca` (the agents' certificates chain to that CA and
//! to nothing else), `--agent-client-cert`/`--agent-client-key` (presented
//! to every agent, naming the gateway's `--gateway-id`, checked at start),
//! read again when they change.
//!
//! Against a TLS server started here (rustls, requiring a client
//! certificate signed by the test CA, recording each certificate it got),
//! and end to end against `warden-agent serve --tls-client-ca`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use warden_tests::{bin, keygen, mock_bundle, openssl, run_with_timeout, Agent, Gateway};

/// A CA: `dir/<name>.pem`, `dir/<name>.key` (P-256).
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A certificate `dir/<name>.pem` (key `dir/<name>.key`) signed by the CA
/// `issuer`, with `san` (openssl's `subjectAltName` syntax) and `eku`.
fn leaf(dir: &Path, name: &str, issuer: &str, san: &str, eku: &str) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={san}\nextendedKeyUsage={eku}\n"),
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// The test PKI in `dir`: the CA `ca`, the agent's server certificate for
/// 127.0.0.1 (`agent`), gateway `gw-1`'s client certificate (`gw1`, by its
/// SPIFFE id), another CA (`other`) and an agent certificate it signed for
/// 127.0.0.1 (`rogue`).
fn pki(dir: &Path) {
    ca(dir, "ca");
    ca(dir, "other");
    leaf(dir, "agent", "ca", "IP:127.0.0.1", "serverAuth");
    leaf(
        dir,
        "gw1",
        "ca",
        "URI:spiffe://warden.test/gateway/gw-1",
        "clientAuth",
    );
    leaf(dir, "rogue", "other", "IP:127.0.0.1", "serverAuth");
}

fn der(p: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(p)
        .expect("pem")
        .next()
        .expect("a certificate")
        .expect("parses")
        .as_ref()
        .to_vec()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// What the TLS server answers.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// As an agent whose store is down: 503 with its JSON error.
    Unavailable,
    /// A bundle (revision `rev-1`), reports and audit taken.
    Serves,
}

const UNAVAILABLE: &str = "the bundle store is not available (test)";

/// `METHOD /path` of each request, and the client certificate it came with.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A TLS server on 127.0.0.1:0 that asks for a client certificate signed by
/// `client_ca` (and refuses a connection without one), and records the
/// certificate of each connection and the requests that came over it.
struct TlsAgent {
    addr: SocketAddr,
    /// The leaf certificate (DER) each completed handshake presented.
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Handshakes that failed, and why.
    failed: Arc<Mutex<Vec<String>>>,
    /// `METHOD /path` and the certificate it came with.
    requests: Requests,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsAgent {
    fn start(cert: &Path, key: &Path, client_ca: &Path, answer: Answer) -> TlsAgent {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(client_ca).expect("client ca") {
            roots.add(c.expect("ca cert")).expect("ca added");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("verifier");
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("cert")
            .collect::<Result<_, _>>()
            .expect("certs");
        let key = PrivateKeyDer::from_pem_file(key).expect("key");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let bundle = Bytes::from(warden_config::archive::pack(
            &[(
                "warden.yaml".to_owned(),
                mock_bundle(&["127.0.0.1:9".parse().expect("addr")], "").into_bytes(),
            )]
            .into_iter()
            .collect(),
        ));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (seen2, failed2, requests2) = (seen.clone(), failed.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let tcp = tokio::select! {
                        _ = &mut stopped => return,
                        a = listener.accept() => match a {
                            Ok((tcp, _)) => tcp,
                            Err(_) => continue,
                        },
                    };
                    let (acceptor, seen, failed, requests, bundle) = (
                        acceptor.clone(),
                        seen2.clone(),
                        failed2.clone(),
                        requests2.clone(),
                        bundle.clone(),
                    );
                    tokio::spawn(async move {
                        let tls = match acceptor.accept(tcp).await {
                            Ok(t) => t,
                            Err(e) => {
                                failed.lock().expect("lock").push(e.to_string());
                                return;
                            }
                        };
                        let cert = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.as_ref().to_vec())
                            .unwrap_or_default();
                        seen.lock().expect("lock").push(cert.clone());
                        let service = hyper::service::service_fn(move |req| {
                            serve(req, answer, bundle.clone(), requests.clone(), cert.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        TlsAgent {
            addr,
            seen,
            failed,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn seen(&self) -> Vec<Vec<u8>> {
        self.seen.lock().expect("lock").clone()
    }

    fn requests(&self) -> Vec<(String, Vec<u8>)> {
        self.requests.lock().expect("lock").clone()
    }

    fn failed(&self) -> Vec<String> {
        self.failed.lock().expect("lock").clone()
    }
}

impl Drop for TlsAgent {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    req: hyper::Request<hyper::body::Incoming>,
    answer: Answer,
    bundle: Bytes,
    requests: Requests,
    cert: Vec<u8>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let what = format!("{} {}", req.method(), req.uri().path());
    requests
        .lock()
        .expect("lock")
        .push((what.clone(), cert.clone()));
    let has_it = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("rev-1"));
    let _ = req.into_body().collect().await;
    let json = |status: u16, v: serde_json::Value| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .expect("response")
    };
    if answer == Answer::Unavailable {
        return Ok(json(503, serde_json::json!({ "error": UNAVAILABLE })));
    }
    Ok(match what.as_str() {
        "GET /v1/bundles/current" if has_it => {
            // A short long poll: nothing new.
            tokio::time::sleep(Duration::from_millis(300)).await;
            hyper::Response::builder()
                .status(304)
                .body(Full::new(Bytes::new()))
                .expect("response")
        }
        "GET /v1/bundles/current" => hyper::Response::builder()
            .status(200)
            .header("etag", "\"rev-1\"")
            .header("content-type", "application/gzip")
            .body(Full::new(bundle))
            .expect("response"),
        "POST /v1/fleet/report" => json(200, serde_json::json!({ "ok": true })),
        "POST /v1/audit/ingest" => json(200, serde_json::json!({ "accepted": 1 })),
        _ => json(404, serde_json::json!({ "error": "no such route" })),
    })
}

/// `warden run` with `args` until it exits (it must, within 20 s): its
/// exit status and stderr.
fn run_until_exit(args: &[&str]) -> (bool, String) {
    let state = tempfile::tempdir().expect("state");
    let (ok, _, err) = run_with_timeout(
        std::process::Command::new(bin("warden"))
            .arg("run")
            .args(args)
            .arg("--state-dir")
            .arg(state.path())
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]),
        Duration::from_secs(20),
    )
    .expect("warden runs");
    (ok, err)
}

fn wait_for(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_gateway_presents_its_certificate_to_an_agent_it_trusts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    pki(d);
    let agent = TlsAgent::start(
        &d.join("agent.pem"),
        &d.join("agent.key"),
        &d.join("ca.pem"),
        Answer::Unavailable,
    );
    let url = agent.url();
    // No last good bundle, an agent that cannot serve one: the start
    // fails, saying what the agent said.
    let err = Gateway::start_with(
        "",
        false,
        &[],
        &[
            "--agent",
            &url,
            "--agent-ca",
            s(&d.join("ca.pem")),
            "--agent-client-cert",
            s(&d.join("gw1.pem")),
            "--agent-client-key",
            s(&d.join("gw1.key")),
            "--gateway-id",
            "gw-1",
        ],
        None,
    )
    .err()
    .expect("no bundle, no start")
    .to_string();
    assert!(err.contains("HTTP 503"), "{err}");
    assert!(
        err.contains(UNAVAILABLE),
        "the agent's error is shown: {err}"
    );
    // The connection was made, and over it the gateway's certificate.
    let gw1 = der(&d.join("gw1.pem"));
    let seen = agent.seen();
    assert!(
        !seen.is_empty(),
        "no handshake completed: {:?}",
        agent.failed()
    );
    assert!(seen.iter().all(|c| *c == gw1), "another certificate seen");
    let asked: Vec<String> = agent.requests().into_iter().map(|(r, _)| r).collect();
    assert!(
        asked.iter().any(|r| r == "GET /v1/bundles/current"),
        "{asked:?}"
    );
}

#[test]
fn an_agent_certificate_another_ca_signed_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    pki(d);
    let (cert, key) = (d.join("gw1.pem"), d.join("gw1.key"));
    let client = [
        "--agent-client-cert",
        s(&cert),
        "--agent-client-key",
        s(&key),
        "--gateway-id",
        "gw-1",
    ];
    // The agent's certificate is the test CA's, the gateway trusts another
    // CA; an agent (a man in the middle) with a certificate for the right
    // address from another CA, the gateway trusting the test CA; the test
    // CA's certificate, the gateway on the built-in roots.
    let cases = [
        ("agent", Some("other.pem")),
        ("rogue", Some("ca.pem")),
        ("agent", None),
    ];
    for (served, trusted) in cases {
        let agent = TlsAgent::start(
            &d.join(format!("{served}.pem")),
            &d.join(format!("{served}.key")),
            &d.join("ca.pem"),
            Answer::Unavailable,
        );
        let url = agent.url();
        let mut args = vec!["--agent", url.as_str()];
        let ca = trusted.map(|t| d.join(t));
        if let Some(ca) = &ca {
            args.extend(["--agent-ca", s(ca)]);
        }
        args.extend(client);
        let (ok, err) = run_until_exit(&args);
        assert!(!ok, "{served}/{trusted:?}: started: {err}");
        assert!(
            err.contains("the agent's certificate is not trusted"),
            "{served}/{trusted:?}: {err}"
        );
        // Refused before the gateway showed its certificate or sent a
        // request (and its token) to it.
        assert!(agent.seen().is_empty(), "{served}/{trusted:?}");
        assert!(agent.requests().is_empty(), "{served}/{trusted:?}");
        assert!(!agent.failed().is_empty(), "{served}/{trusted:?}");
    }
}

#[test]
fn start_up_refuses_what_the_agents_would_refuse_later() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    pki(d);
    leaf(d, "spare", "ca", "DNS:gw-1", "clientAuth");
    leaf(d, "server-only", "ca", "DNS:gw-1", "serverAuth");
    std::fs::write(d.join("empty.pem"), "").expect("empty");
    std::fs::write(d.join("junk.pem"), "-----BEGIN CERTIFICATE-----\n!!\n").expect("junk");
    let (ca, cert, key) = (
        s(&d.join("ca.pem")).to_owned(),
        s(&d.join("gw1.pem")).to_owned(),
        s(&d.join("gw1.key")).to_owned(),
    );
    let spare_key = s(&d.join("spare.key")).to_owned();
    let empty = s(&d.join("empty.pem")).to_owned();
    let junk = s(&d.join("junk.pem")).to_owned();
    let (so, so_key) = (
        s(&d.join("server-only.pem")).to_owned(),
        s(&d.join("server-only.key")).to_owned(),
    );
    let bundle_dir = tmp.path().join("bundle");
    std::fs::create_dir_all(&bundle_dir).expect("bundle dir");
    let agent = "https://127.0.0.1:9";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--agent", agent, "--agent-client-cert", &cert, "--gateway-id", "gw-1"],
            "without --agent-client-key",
        ),
        (
            vec!["--agent", agent, "--agent-client-key", &key, "--gateway-id", "gw-1"],
            "without --agent-client-cert",
        ),
        (
            vec![
                "--agent", agent, "--agent-client-cert", &cert, "--agent-client-key", &key,
                "--gateway-id", "gw-2",
            ],
            "names gateway `gw-1` (its URI SAN spiffe://…/gateway/), not this gateway's --gateway-id `gw-2`",
        ),
        (
            // No --gateway-id: the default (host name and pid) is not it.
            vec!["--agent", agent, "--agent-client-cert", &cert, "--agent-client-key", &key],
            "names gateway `gw-1`",
        ),
        (
            vec!["--agent", agent, "--agent-ca", &empty, "--gateway-id", "gw-1"],
            "holds no certificate",
        ),
        (
            vec!["--agent", agent, "--agent-ca", &junk, "--gateway-id", "gw-1"],
            "not a PEM bundle of certificates",
        ),
        (
            vec!["--agent", agent, "--agent-ca", &key, "--gateway-id", "gw-1"],
            "holds no certificate",
        ),
        (
            vec![
                "--agent", agent, "--agent-client-cert", &cert, "--agent-client-key", &spare_key,
                "--gateway-id", "gw-1",
            ],
            "not the key of --agent-client-cert",
        ),
        (
            vec![
                "--agent", agent, "--agent-client-cert", &so, "--agent-client-key", &so_key,
                "--gateway-id", "gw-1",
            ],
            "does not allow client authentication",
        ),
        (
            vec!["--agent", "http://127.0.0.1:9", "--agent-ca", &ca, "--gateway-id", "gw-1"],
            "reached over https://",
        ),
        (
            vec![
                "--bundle",
                s(&bundle_dir),
                "--agent-ca",
                &ca,
                "--gateway-id",
                "gw-1",
            ],
            "give --agent",
        ),
    ];
    let secret = std::fs::read_to_string(&spare_key).expect("key");
    let secret = secret.lines().nth(1).expect("a key line");
    for (args, says) in cases {
        let (ok, err) = run_until_exit(&args);
        assert!(!ok, "{args:?}: started");
        let err = err.trim();
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains('\n'), "{args:?}: one line: {err}");
        assert!(err.starts_with("warden: "), "{args:?}: {err}");
        assert!(!err.contains(secret), "{args:?}: the key in the error");
    }
}

/// Replaces `to` with `from` whole (a rename), as a rotation does.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_client_certificate_is_presented_without_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    pki(d);
    leaf(
        d,
        "gw1-next",
        "ca",
        "URI:spiffe://warden.test/gateway/gw-1",
        "clientAuth",
    );
    leaf(
        d,
        "gw2",
        "ca",
        "URI:spiffe://warden.test/gateway/gw-2",
        "clientAuth",
    );
    let (cert, key) = (d.join("client.pem"), d.join("client.key"));
    replace(&d.join("gw1.pem"), &cert);
    replace(&d.join("gw1.key"), &key);
    let agent = TlsAgent::start(
        &d.join("agent.pem"),
        &d.join("agent.key"),
        &d.join("ca.pem"),
        Answer::Serves,
    );
    let url = agent.url();
    let gw = Gateway::start_with(
        "",
        false,
        &[],
        &[
            "--agent",
            &url,
            "--agent-ca",
            s(&d.join("ca.pem")),
            "--agent-client-cert",
            s(&cert),
            "--agent-client-key",
            s(&key),
            "--gateway-id",
            "gw-1",
            "--report-interval",
            "200ms",
        ],
        None,
    )
    .expect("gateway");
    let st = gw.status().await;
    assert!(
        st["bundle"]["revision"]
            .as_str()
            .is_some_and(|r| r.starts_with("sha256:")),
        "runs the agent's bundle: {st}"
    );
    let (first, next, other) = (
        der(&d.join("gw1.pem")),
        der(&d.join("gw1-next.pem")),
        der(&d.join("gw2.pem")),
    );
    // Bundle polls, reports and audit come with the certificate: a call
    // makes an audit record, shipped to the agent.
    let _ = warden_tests::post_json(
        &gw.url("/mock/mcp"),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        &[],
    )
    .await;
    tokio::task::block_in_place(|| {
        wait_for(
            "a report and an audit batch",
            Duration::from_secs(20),
            || {
                let r = agent.requests();
                [
                    "GET /v1/bundles/current",
                    "POST /v1/fleet/report",
                    "POST /v1/audit/ingest",
                ]
                .iter()
                .all(|w| r.iter().any(|(x, c)| x == w && *c == first))
            },
        )
    });
    assert!(agent.seen().iter().all(|c| *c == first));

    // Rotated: the key first, then the certificate (in between, the pair
    // does not match and is not taken).
    replace(&d.join("gw1-next.key"), &key);
    std::thread::sleep(Duration::from_millis(200));
    replace(&d.join("gw1-next.pem"), &cert);
    tokio::task::block_in_place(|| {
        wait_for(
            "the rotated certificate presented",
            Duration::from_secs(30),
            || {
                agent
                    .requests()
                    .iter()
                    .any(|(r, c)| *c == next && r == "POST /v1/fleet/report")
                    && agent
                        .requests()
                        .iter()
                        .any(|(r, c)| *c == next && r == "GET /v1/bundles/current")
            },
        )
    });
    assert!(gw.log().iter().any(|l| l.contains("loaded again")));

    // A rotation to a certificate for another gateway is not taken: the
    // gateway goes on with the one it has, and says why.
    replace(&d.join("gw2.key"), &key);
    replace(&d.join("gw2.pem"), &cert);
    tokio::task::block_in_place(|| {
        wait_for("the refusal logged", Duration::from_secs(30), || {
            gw.log()
                .iter()
                .any(|l| l.contains("do not load") && l.contains("names gateway `gw-2`"))
        })
    });
    let before = agent.requests().len();
    tokio::task::block_in_place(|| {
        wait_for("more requests", Duration::from_secs(20), || {
            agent.requests().len() > before + 3
        })
    });
    assert!(
        !agent.seen().contains(&other),
        "a certificate naming another gateway was presented"
    );
    assert!(agent.requests()[before..].iter().all(|(_, c)| *c == next));
    // No key in the log.
    let secret = std::fs::read_to_string(d.join("gw1-next.key")).expect("key");
    let secret = secret.lines().nth(1).expect("a key line");
    assert!(!gw.log().iter().any(|l| l.contains(secret)));
}

const POLICY: &str = r#"package warden.authz

import rego.v1

decision := {"allow": true, "reason": "ok"}
"#;

/// `warden-agent serve` over HTTPS, asking gateways for their certificates
/// (and refusing those without), `extra` more flags.
fn tls_agent(d: &Path) -> (Agent, String, PathBuf) {
    let source = d.join("source");
    std::fs::create_dir_all(source.join("policies")).expect("source");
    std::fs::write(
        source.join("warden.yaml"),
        mock_bundle(&["127.0.0.1:9".parse().expect("addr")], ""),
    )
    .expect("yaml");
    std::fs::write(source.join("policies/authz.rego"), POLICY).expect("rego");
    std::fs::write(source.join("data.json"), "{}").expect("data");
    let (private, public) = keygen(d, "sign");
    let agent = Agent::start_with(
        &source,
        &d.join("agent-state"),
        Some(&private),
        &[
            "--tls-cert".as_ref(),
            d.join("agent.pem").as_os_str(),
            "--tls-key".as_ref(),
            d.join("agent.key").as_os_str(),
            "--tls-client-ca".as_ref(),
            d.join("ca.pem").as_os_str(),
            "--require-gateway-certs".as_ref(),
        ],
    )
    .expect("agent");
    // `listening on ADDR (https)`.
    let addr = agent
        .url
        .trim_start_matches("http://")
        .trim_end_matches(" (https)")
        .to_owned();
    (agent, format!("https://{addr}"), public)
}

#[tokio::test(flavor = "multi_thread")]
async fn end_to_end_a_gateway_gets_its_bundle_from_an_agent_over_mutual_tls() {
    if !bin("warden-agent").exists() {
        panic!("warden-agent is not built: cargo build --workspace --bins");
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    pki(d);
    let (_agent, url, public) = tls_agent(d);
    let ca = d.join("ca.pem");
    let (cert, key) = (d.join("gw1.pem"), d.join("gw1.key"));
    let with_cert = [
        "--agent-ca",
        s(&ca),
        "--agent-client-cert",
        s(&cert),
        "--agent-client-key",
        s(&key),
    ];
    let state = d.join("gw-1");
    let gw = tokio::task::block_in_place(|| {
        Gateway::on_agent_with(&url, &public, &state, "gw-1", &with_cert)
    })
    .expect("the gateway with its certificate starts on the agent's bundle");
    let st = gw.status().await;
    let rev = st["bundle"]["revision"].as_str().unwrap_or_default();
    assert!(!rev.is_empty(), "{st}");
    drop(gw);

    // The same certificate for another gateway id: refused at start.
    let other_state = d.join("gw-2");
    let err = tokio::task::block_in_place(|| {
        Gateway::on_agent_with(&url, &public, &other_state, "gw-2", &with_cert)
    })
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("names gateway `gw-1`"), "{err}");

    // No certificate: the agent refuses the gateway (and it has no bundle
    // to start on).
    let bare_state = d.join("gw-3");
    let err = tokio::task::block_in_place(|| {
        Gateway::on_agent_with(&url, &public, &bare_state, "gw-1", &["--agent-ca", s(&ca)])
    })
    .err()
    .expect("refused")
    .to_string();
    assert!(
        err.contains("HTTP 403") && err.contains("must present its client certificate"),
        "{err}"
    );

    // Another CA trusted: the agent is not.
    let other_ca = d.join("other.pem");
    let wrong_state = d.join("gw-4");
    let err = tokio::task::block_in_place(|| {
        Gateway::on_agent_with(
            &url,
            &public,
            &wrong_state,
            "gw-1",
            &[
                "--agent-ca",
                s(&other_ca),
                "--agent-client-cert",
                s(&cert),
                "--agent-client-key",
                s(&key),
            ],
        )
    })
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("not trusted"), "{err}");
}
