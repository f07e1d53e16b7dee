#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// A self-signed P-256 certificate with `san` (an openssl `subjectAltName`
/// value) and `ext` more extensions, as `dir/<name>.pem` and
/// `dir/<name>.key`.
fn cert(dir: &Path, name: &str, san: &str, ext: &[&str]) -> (PathBuf, PathBuf) {
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let mut cmd = std::process::Command::new("openssl");
    cmd.args([
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
        "-addext",
        &format!("subjectAltName={san}"),
    ]);
    for e in ext {
        cmd.args(["-addext", e]);
    }
    let out = cmd
        .arg("-keyout")
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (c, k)
}

fn der(p: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(p)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

fn files(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> TlsFiles {
    TlsFiles {
        ca: ca.map(Path::to_path_buf),
        cert: cert.map(Path::to_path_buf),
        key: key.map(Path::to_path_buf),
    }
}

#[test]
fn the_gateway_a_certificate_names_is_read_as_the_agents_read_it() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let cases = [
        // The SPIFFE id wins over a DNS name, wherever it is.
        (
            "DNS:other.example,URI:spiffe://prod.example/gateway/gw-1",
            Some("gw-1"),
        ),
        // A URI that is no gateway's is passed over.
        (
            "URI:spiffe://prod.example/agent/a1,URI:spiffe://prod.example/gateway/gw-2",
            Some("gw-2"),
        ),
        ("URI:spiffe://prod.example/gateway/", Some("")),
        (
            "URI:spiffe://prod.example/gateway/a/b,DNS:gw-3",
            Some("gw-3"),
        ),
        ("URI:https://prod.example/gateway/gw-4", None),
        ("DNS:gw-5,DNS:gw-6", Some("gw-5")),
        ("IP:127.0.0.1", None),
    ];
    for (i, (san, want)) in cases.into_iter().enumerate() {
        let (c, _) = cert(p, &format!("c{i}"), san, &[]);
        let got = gateway_of(&der(&c)).map(|(id, _)| id);
        // `spiffe://…/gateway/` with no id names none: the DNS SAN would
        // be next, and there is none.
        let want = want.filter(|w| !w.is_empty());
        assert_eq!(got.as_deref(), want, "{san}");
    }
}

#[test]
fn a_client_certificate_must_come_with_its_key_and_name_this_gateway() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (c, k) = cert(p, "gw", "URI:spiffe://t.example/gateway/gw-1", &[]);
    let (other, other_key) = cert(p, "other", "DNS:gw-1", &[]);
    let (named_other, named_other_key) = cert(p, "x", "URI:spiffe://t.example/gateway/gw-2", &[]);
    let (dns, dns_key) = cert(p, "dns", "DNS:gw-1,DNS:gw-2", &[]);
    let (none, none_key) = cert(p, "none", "IP:127.0.0.1", &[]);
    let (server_only, server_only_key) =
        cert(p, "srv", "DNS:gw-1", &["extendedKeyUsage=serverAuth"]);
    let (client, client_key) = cert(p, "cli", "DNS:gw-1", &["extendedKeyUsage=clientAuth"]);
    let empty = p.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let junk = p.join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = |f: TlsFiles| AgentTls::open(f, "gw-1").expect_err("refused");

    assert!(AgentTls::open(TlsFiles::default(), "gw-1")
        .unwrap()
        .is_none());
    for (f, says) in [
        (files(None, Some(&c), None), "without --agent-client-key"),
        (files(None, None, Some(&k)), "without --agent-client-cert"),
        (files(Some(&empty), None, None), "holds no certificate"),
        // A key is no certificate.
        (files(Some(&k), None, None), "holds no certificate"),
        (files(Some(&junk), None, None), "not a PEM bundle"),
        (files(Some(&p.join("absent.pem")), None, None), "absent.pem"),
        (files(None, Some(&c), Some(&other_key)), "not the key of"),
        (files(None, Some(&empty), Some(&k)), "holds no certificate"),
        (
            files(None, Some(&c), Some(&empty)),
            "holds no PEM private key",
        ),
        (
            files(None, Some(&named_other), Some(&named_other_key)),
            "names gateway `gw-2` (its URI SAN",
        ),
        (
            files(None, Some(&none), Some(&none_key)),
            "names no gateway",
        ),
        (
            files(None, Some(&server_only), Some(&server_only_key)),
            "extended key usage",
        ),
    ] {
        let e = err(f.clone());
        assert!(e.contains(says), "{f:?}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    // The key's content is never in an error.
    let key_text = std::fs::read_to_string(&other_key).unwrap();
    let secret = key_text.lines().nth(1).unwrap();
    let e = err(files(None, Some(&c), Some(&other_key)));
    assert!(!e.contains(secret), "{e}");

    for (cert, key) in [(&c, &k), (&other, &other_key), (&client, &client_key)] {
        assert!(
            AgentTls::open(files(Some(&c), Some(cert), Some(key)), "gw-1")
                .unwrap()
                .is_some()
        );
    }
    // The first DNS SAN names it, not the second.
    assert!(AgentTls::open(files(None, Some(&dns), Some(&dns_key)), "gw-1").is_ok());
    let e = AgentTls::open(files(None, Some(&dns), Some(&dns_key)), "gw-2").unwrap_err();
    assert!(
        e.contains("names gateway `gw-1` (its first DNS SAN)"),
        "{e}"
    );
}

#[test]
fn changed_files_are_loaded_again_and_a_bad_change_is_not() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (c, k) = cert(p, "gw", "URI:spiffe://t.example/gateway/gw-1", &[]);
    let (c2, k2) = cert(p, "gw2", "DNS:gw-1", &[]);
    let (x, xk) = cert(p, "x", "DNS:gw-2", &[]);
    let (cur, cur_key) = (p.join("cur.pem"), p.join("cur.key"));
    std::fs::copy(&c, &cur).unwrap();
    std::fs::copy(&k, &cur_key).unwrap();
    let tls = AgentTls::open_with(
        files(None, Some(&cur), Some(&cur_key)),
        "gw-1",
        Duration::ZERO,
    )
    .unwrap()
    .unwrap();
    let (g0, first) = tls.current();
    assert_eq!(tls.current().0, g0, "nothing changed");

    // Half a rotation (the certificate, not yet its key): not loaded.
    std::fs::copy(&c2, &cur).unwrap();
    let (g, now) = tls.current();
    assert_eq!(g, g0);
    assert!(Arc::ptr_eq(&now, &first));
    // The key follows: loaded.
    std::fs::copy(&k2, &cur_key).unwrap();
    let (g1, _) = tls.current();
    assert_eq!(g1, g0 + 1);

    // A certificate for another gateway is not taken on a reload either.
    std::fs::copy(&x, &cur).unwrap();
    std::fs::copy(&xk, &cur_key).unwrap();
    assert_eq!(tls.current().0, g1);
    // Nor a file cut short.
    std::fs::write(&cur, b"-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    assert_eq!(tls.current().0, g1);
    // The good pair back: loaded.
    std::fs::copy(&c, &cur).unwrap();
    std::fs::copy(&k, &cur_key).unwrap();
    assert_eq!(tls.current().0, g1 + 1);
}

#[test]
fn files_are_looked_at_no_more_often_than_asked() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (c, k) = cert(p, "gw", "DNS:gw-1", &[]);
    let (c2, k2) = cert(p, "gw2", "DNS:gw-1", &[]);
    let (cur, cur_key) = (p.join("cur.pem"), p.join("cur.key"));
    std::fs::copy(&c, &cur).unwrap();
    std::fs::copy(&k, &cur_key).unwrap();
    let tls = AgentTls::open_with(
        files(None, Some(&cur), Some(&cur_key)),
        "gw-1",
        Duration::from_secs(3600),
    )
    .unwrap()
    .unwrap();
    std::fs::copy(&c2, &cur).unwrap();
    std::fs::copy(&k2, &cur_key).unwrap();
    assert_eq!(tls.current().0, 0);
}

#[test]
fn tls_refusals_are_said_in_words() {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let w = |e: E| tls_words(&e).unwrap_or_default();
    assert!(w(E::InvalidCertificate(C::UnknownIssuer)).contains("not trusted"));
    assert!(w(E::InvalidCertificate(C::BadSignature)).contains("not trusted"));
    assert!(w(E::InvalidCertificate(C::NotValidForName)).contains("does not name"));
    assert!(w(E::AlertReceived(A::CertificateRequired)).contains("--agent-client-cert"));
    assert!(w(E::AlertReceived(A::BadCertificate)).contains("refused this gateway's"));
    assert!(tls_words(&E::DecryptError).is_none());
}

#[test]
fn a_tls_refusal_is_found_under_the_io_errors_that_wrap_it() {
    use std::io;
    let rustls_err = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    // As hyper-rustls hands it over: io::Error::other(tokio-rustls' io::Error).
    let e = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, rustls_err));
    let said = chain(&e);
    assert!(
        said.starts_with("TLS: the agent's certificate is not trusted"),
        "{said}"
    );
    assert!(said.contains("UnknownIssuer"), "{said}");
    let plain = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
    assert_eq!(chain(&plain), "connection refused");
}
