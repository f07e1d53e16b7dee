//! Signed bundle directories: what is verified is what is loaded.

use super::*;

// An Ed25519 test key.
pub(crate) const PRIVATE: &[u8] = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJL4wWCTcbhQT/5IX5tPsWrKdIBoQzVaQcyzCund/WdU\n-----END PRIVATE KEY-----\n";
pub(crate) const PUBLIC: &[u8] = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAk+eZta8zXsquyhrg8M8TtTYHVwNV5JVrKD7eP5NRBvc=\n-----END PUBLIC KEY-----\n";

/// A new Ed25519 private key (PKCS#8 PEM) no gateway knows.
pub(crate) fn rogue_key() -> String {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    use base64::Engine;
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    )
}

const YAML: &str = "version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {name: s, upstreams: [\"127.0.0.1:1\"]}\nroutes:\n  - {prefix: /s, server: s}\n";
const REGO: &str =
    "package warden.authz\n\ndefault decision := {\"allow\": false, \"reason\": \"no\"}\n";

fn signed(revision: &str, rego: &str) -> archive::Files {
    signed_with(&format!(r#"{{"revision":"{revision}"}}"#), rego)
}

fn signed_with(manifest: &str, rego: &str) -> archive::Files {
    let mut f = archive::Files::new();
    f.insert("warden.yaml".into(), YAML.as_bytes().to_vec());
    f.insert("policies/authz.rego".into(), rego.as_bytes().to_vec());
    f.insert(".manifest".into(), manifest.as_bytes().to_vec());
    archive::sign(
        &mut f,
        PRIVATE,
        archive::algorithm("EdDSA").expect("EdDSA"),
        "k",
    )
    .expect("signs");
    f
}

fn options(state: &Path, source: &Path) -> SourceOptions {
    SourceOptions {
        source: Source::Dir(source.to_path_buf()),
        verifier: Some(
            archive::Verifier::new(PUBLIC, archive::algorithm("EdDSA").expect("EdDSA"))
                .expect("key"),
        ),
        state_dir: state.to_path_buf(),
        gateway_id: "gw".into(),
        labels: BTreeMap::new(),
        poll: Duration::from_secs(1),
        report_every: Duration::from_secs(5),
        allow_unexpiring: true,
    }
}

/// A file the signature never covered (under `.git`, an editor leftover)
/// or a link out of the directory never reaches the gateway: the signed
/// files are read once, verified, and loaded from a copy.
#[test]
fn a_signed_directory_loads_only_what_was_verified() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("src");
    archive::write_dir(&signed("r1", REGO), &src).expect("write");
    let opts = options(&tmp.path().join("state"), &src);
    let b = load_local(&src, &opts).expect("loads");
    assert_eq!(b.policies.len(), 1);
    // Rego hidden where the verifier does not look.
    for hidden in [".git/pwn.rego", "policies/x.rego~", "policies/y.rego.swp"] {
        let p = src.join(hidden);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(&p, "package warden.authz\n\ntool_allowed if true\n").expect("write");
    }
    let b = load_local(&src, &opts).expect("loads");
    assert_eq!(
        b.policies.keys().collect::<Vec<_>>(),
        ["policies/authz.rego"],
        "only the signed policy is loaded"
    );
    assert!(!b.root.starts_with(&src), "loaded from the verified copy");
    // A link in the directory is refused, signed file or not.
    let evil = tmp.path().join("evil.json");
    std::fs::write(&evil, r#"{"warden":{}}"#).expect("write");
    std::os::unix::fs::symlink(&evil, src.join("data.json")).expect("link");
    let err = load_local(&src, &opts).expect_err("a link is refused");
    assert!(err.contains("data.json"), "{err}");
    // Unsigned loading of the same directory refuses the link too.
    let err = Bundle::load(&src).expect_err("a link is refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

/// A refused bundle that reuses the revision name of the last good one
/// never replaces it on disk: directories are named by content too.
#[test]
fn a_refused_bundle_never_replaces_the_last_good_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let opts = options(&tmp.path().join("state"), tmp.path());
    let good = materialize(&archive::pack(&signed("manual", REGO)), &opts).expect("good");
    let bad = materialize(
        &archive::pack(&signed("manual", "package warden.authz\n\nbroken {")),
        &opts,
    )
    .expect("written");
    assert_ne!(good, bad);
    assert_eq!(
        std::fs::read_to_string(good.join("policies/authz.rego")).expect("kept"),
        REGO,
        "the good one is still on disk"
    );
    // The same content again is the same directory.
    let again = materialize(&archive::pack(&signed("manual", REGO)), &opts).expect("again");
    assert_eq!(good, again);
}

/// A bundle mounted as a Kubernetes ConfigMap or Secret volume (each file
/// a link into the volume's own `..data` directory) loads, signed or not;
/// a link out of it does not.
#[test]
fn a_configmap_volume_loads() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("cm");
    let files = signed("r1", REGO);
    archive::write_dir(&files, &src.join("..2026_11_26_20_00_00.1")).expect("write");
    std::os::unix::fs::symlink("..2026_11_26_20_00_00.1", src.join("..data")).expect("link");
    for name in files.keys() {
        let top = name.split('/').next().expect("name");
        let link = src.join(top);
        if !link.exists() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link).expect("link");
        }
    }
    // Directories are linked whole by Kubernetes only for subPaths; here
    // `policies/` must be a real directory of links.
    std::fs::remove_file(src.join("policies")).expect("unlink");
    std::fs::create_dir(src.join("policies")).expect("dir");
    std::os::unix::fs::symlink(
        "../..data/policies/authz.rego",
        src.join("policies/authz.rego"),
    )
    .expect("link");
    let opts = options(&tmp.path().join("state"), &src);
    let b = load_local(&src, &opts).expect("a signed ConfigMap loads");
    assert_eq!(b.revision, "r1");
    assert!(Bundle::load(&src).is_ok(), "unsigned too");
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A signed bundle is refused past its `expires`, without one (unless the
/// gateway allows it), or with one it cannot read; the sequence check
/// still applies to a fresh one. A gateway with no state (a new pod)
/// would otherwise take any old bundle a mirror or a man in the middle
/// served it.
#[test]
fn a_stale_signed_bundle_is_refused_by_a_gateway_with_no_state() {
    let tmp = tempfile::tempdir().expect("tmp");
    let now = SystemTime::now();
    let mut opts = options(&tmp.path().join("state"), tmp.path());
    opts.allow_unexpiring = false;
    let load = |manifest: &str| {
        let dir = materialize(&archive::pack(&signed_with(manifest, REGO)), &opts)
            .expect("signature good");
        let b = load_dir(&dir).expect("loads");
        fresh(&b, &opts)
    };
    let later = rfc3339(now + Duration::from_secs(3600));
    load(&format!(
        r#"{{"revision":"r1","sequence":5,"expires":"{later}"}}"#
    ))
    .expect("a fresh bundle is taken");
    let past = rfc3339(now - Duration::from_secs(1));
    let err = load(&format!(
        r#"{{"revision":"r1","sequence":9,"expires":"{past}"}}"#
    ))
    .expect_err("expired");
    assert!(err.starts_with("expired:"), "{err}");
    let err = load(r#"{"revision":"r1","sequence":9}"#).expect_err("no expiry");
    assert!(err.starts_with("never expires:"), "{err}");
    // Forms a peer might read differently are unreadable here: refused.
    for odd in [
        r#""tomorrow""#,
        "1893456000",
        r#""2999-01-01""#,
        r#"["2999-01-01T00:00:00Z"]"#,
        "null",
    ] {
        let err = load(&format!(
            r#"{{"revision":"r1","sequence":9,"expires":{odd}}}"#
        ))
        .expect_err("unreadable expiry");
        assert!(err.contains("cannot read"), "{odd}: {err}");
    }
    // Allowed on purpose: a bundle without expiry is taken, an expired
    // one still is not.
    opts.allow_unexpiring = true;
    let dir = materialize(
        &archive::pack(&signed_with(r#"{"revision":"r2","sequence":9}"#, REGO)),
        &opts,
    )
    .expect("written");
    fresh(&load_dir(&dir).expect("loads"), &opts).expect("allowed");
    let dir = materialize(
        &archive::pack(&signed_with(
            &format!(r#"{{"revision":"r3","sequence":9,"expires":"{past}"}}"#),
            REGO,
        )),
        &opts,
    )
    .expect("written");
    assert!(fresh(&load_dir(&dir).expect("loads"), &opts).is_err());
    // Unsigned sources prove nothing and are not judged.
    opts.verifier = None;
    fresh(&load_dir(&dir).expect("loads"), &opts).expect("unsigned");
}

/// From the agent, a signed bundle must come with the agent's proof that
/// it is what it serves this gateway now, bound to this request's nonce:
/// a recorded answer (another nonce), another bundle, another gateway or
/// another kind of signed token are refused; a plain URL is not asked.
#[test]
fn an_agent_bundle_must_be_proven_current_for_this_request() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut opts = options(&tmp.path().join("state"), tmp.path());
    opts.source = Source::Agents {
        agents: crate::hub::agents::Agents::new("agent", &["http://agent".into()]).expect("agents"),
        token: None,
    };
    let body = archive::pack(&signed("r1", REGO));
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(&body));
    let nonce = "0123456789abcdef0123456789abcdef";
    let proof = |nonce: &str, bundle: &str, gateway: &str, typ: &str| {
        archive::sign_claims(
            &archive::Freshness {
                nonce: nonce.into(),
                bundle: bundle.into(),
                gateway: gateway.into(),
            },
            PRIVATE,
            archive::algorithm("EdDSA").expect("EdDSA"),
            "k",
            typ,
        )
        .expect("signs")
    };
    let good = proof(nonce, &digest, "gw", archive::FRESHNESS_TYP);
    proven_current(&opts, nonce, Some(&good), &body).expect("proven");
    let other = "fedcba9876543210fedcba9876543210";
    for (what, p) in [
        ("none", None),
        ("replayed", Some(good.clone())),
        (
            "other bundle",
            Some(proof(other, &"0".repeat(64), "gw", archive::FRESHNESS_TYP)),
        ),
        (
            "other gateway",
            Some(proof(other, &digest, "gw-2", archive::FRESHNESS_TYP)),
        ),
        (
            "other kind",
            Some(proof(other, &digest, "gw", archive::APPROVAL_GRANT_TYP)),
        ),
        ("garbage", Some("not.a.jws".to_owned())),
    ] {
        let err = proven_current(&opts, other, p.as_deref(), &body).expect_err(what);
        assert!(err.starts_with("not proven current"), "{what}: {err}");
    }
    // Signed with another key.
    let rogue = rogue_key();
    let forged = archive::sign_claims(
        &archive::Freshness {
            nonce: other.into(),
            bundle: digest.clone(),
            gateway: "gw".into(),
        },
        rogue.as_bytes(),
        archive::algorithm("EdDSA").expect("EdDSA"),
        "k",
        archive::FRESHNESS_TYP,
    )
    .expect("signs");
    assert!(proven_current(&opts, other, Some(&forged), &body).is_err());
    // A plain URL is judged by expiry and sequence only.
    opts.source = Source::Http {
        url: "http://cdn/bundle.tar.gz".into(),
        token: None,
    };
    proven_current(&opts, other, None, &body).expect("not asked");
}

/// Whichever agent answers, the gateway's floor holds: a bundle below the
/// newest sequence applied is refused, and so is one at that sequence
/// with other content (two builds never share a sequence); the same
/// content at that sequence (a restart, the same build from another
/// agent) is taken. The floor outlives the process: it is on disk.
#[test]
fn no_agent_rolls_the_gateway_back_nor_swaps_content_under_its_sequence() {
    let tmp = tempfile::tempdir().expect("tmp");
    let opts = options(&tmp.path().join("state"), tmp.path());
    let build = |seq: u64, rego: &str| {
        let dir = materialize(
            &archive::pack(&signed_with(
                &format!(r#"{{"revision":"r{seq}","sequence":{seq}}}"#),
                rego,
            )),
            &opts,
        )
        .expect("signature good");
        load_dir(&dir).expect("loads")
    };
    let applied = build(20, REGO);
    fresh(&applied, &opts).expect("first");
    applied_sequence(&applied, &opts);
    // An older build, from any agent.
    let err = fresh(&build(19, REGO), &opts).expect_err("older");
    assert!(
        err.starts_with("rollback: the bundle's sequence 19 is older than 20"),
        "{err}"
    );
    // The same sequence, other content.
    let other =
        "package warden.authz\n\ndefault decision := {\"allow\": true, \"reason\": \"open\"}\n";
    let err = fresh(&build(20, other), &opts).expect_err("other content");
    assert!(
        err.starts_with("rollback: the bundle's sequence 20 is the newest")
            && err.contains("content is not what was applied"),
        "{err}"
    );
    // The same build again: taken.
    fresh(&build(20, REGO), &opts).expect("same build");
    // Newer: taken, and the floor moves with its content.
    let newer = build(21, other);
    fresh(&newer, &opts).expect("newer");
    applied_sequence(&newer, &opts);
    assert!(fresh(&build(21, REGO), &opts).is_err());
    assert!(fresh(&build(20, REGO), &opts).is_err());
    // State from before the content was recorded: the same sequence is
    // taken once and recorded.
    std::fs::remove_file(tmp.path().join("state/sequence.content")).expect("rm");
    let same = build(21, other);
    fresh(&same, &opts).expect("no record yet");
    applied_sequence(&same, &opts);
    assert!(fresh(&build(21, REGO), &opts).is_err());
}

/// Unsigned bundles prove nothing against a hostile source, but from
/// agents the floor still holds: an agent answering from an old state
/// does not roll the gateway back. A plain URL's unsigned bundle is not
/// judged.
#[test]
fn an_unsigned_bundle_from_agents_is_held_to_the_floor_too() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut opts = options(&tmp.path().join("state"), tmp.path());
    opts.verifier = None;
    opts.source = Source::Agents {
        agents: crate::hub::agents::Agents::new(
            "agent",
            &["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
        )
        .expect("agents"),
        token: None,
    };
    let build = |seq: u64| {
        let mut f = archive::Files::new();
        f.insert("warden.yaml".into(), YAML.as_bytes().to_vec());
        f.insert("policies/authz.rego".into(), REGO.as_bytes().to_vec());
        f.insert(
            ".manifest".into(),
            format!(r#"{{"revision":"r{seq}","sequence":{seq}}}"#).into_bytes(),
        );
        load_dir(&materialize(&archive::pack(&f), &opts).expect("unpacks")).expect("loads")
    };
    let applied = build(7);
    fresh(&applied, &opts).expect("first");
    applied_sequence(&applied, &opts);
    let err = fresh(&build(6), &opts).expect_err("older");
    assert!(err.starts_with("rollback:"), "{err}");
    fresh(&build(8), &opts).expect("newer");
    let older = build(6);
    opts.source = Source::Http {
        url: "http://cdn/bundle.tar.gz".into(),
        token: None,
    };
    fresh(&older, &opts).expect("a plain URL's unsigned bundle is not judged");
}
