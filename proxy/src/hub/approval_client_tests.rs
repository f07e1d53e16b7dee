//! The list of just-in-time grants as a gateway takes it from one agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn client() -> ApprovalClient {
    let agents = Agents::new("approvals", &["http://127.0.0.1:9".to_owned()]).expect("agents");
    ApprovalClient::new(agents, None, "gw-1", None).expect("client")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn list(issued_at: u64) -> Vec<u8> {
    serde_json::json!({"grants": [{"id": "ap_1", "tenant": "acme", "principal": "alice",
        "kind": "tool", "name": "deploy", "expires_at": u64::MAX}], "issued_at": issued_at})
    .to_string()
    .into_bytes()
}

/// A list is taken while it is recent; one too old, or issued ahead of
/// this gateway's clock by more than the age a list may have (its age
/// cannot be judged: a replay of it would hold for as long), is not, nor
/// one whose `issued_at` is so large its age would wrap round.
#[test]
fn a_list_of_grants_is_taken_while_recent_only() {
    let c = client();
    let t = now();
    assert_eq!(c.grants_of(&list(t)).expect("recent").len(), 1);
    assert!(c.grants_of(&list(t - 30)).is_ok());
    assert!(c.grants_of(&list(t + 5)).is_ok(), "a clock a little ahead");
    let old = c.grants_of(&list(t - 120)).expect_err("old");
    assert!(old.contains("too old"), "{old}");
    let ahead = c.grants_of(&list(t + 3600)).expect_err("ahead");
    assert!(ahead.contains("ahead"), "{ahead}");
    for huge in [u64::MAX, u64::MAX - 30] {
        assert!(c.grants_of(&list(huge)).is_err(), "{huge}");
    }
    assert!(c.grants_of(b"not json").is_err());
}

// The Ed25519 test key the bundle tests sign with (the agent's bundle key
// as gateways know it), and one no gateway knows.
use crate::hub::bundles::tests::{rogue_key, PRIVATE, PUBLIC};

/// A hostile agent, or anyone between a gateway and its agents, cannot
/// hand a gateway that knows the bundle key a list of grants of its own:
/// a list signed with another key, one not signed, one signed as another
/// kind of thing (an approval grant, a bundle's freshness proof) with the
/// right key, one whose signed `typ` was edited, and one whose payload was
/// swapped under a real signature are each refused; the agent's own list
/// is taken.
#[test]
fn a_gateway_with_the_bundle_key_takes_only_the_agents_signed_grants() {
    use warden_config::archive;
    let agents = Agents::new("approvals", &["http://127.0.0.1:9".to_owned()]).expect("agents");
    let alg = archive::algorithm("EdDSA").expect("EdDSA");
    let verifier = archive::Verifier::new(PUBLIC, alg).expect("verifier");
    let c = ApprovalClient::new(agents, None, "gw-1", Some(verifier)).expect("client");
    let claims: serde_json::Value = serde_json::from_slice(&list(now())).expect("list");
    let wrap = |jws: String| serde_json::json!({ "jws": jws }).to_string().into_bytes();
    let sign = |key: &[u8], typ: &str, claims: &serde_json::Value| {
        archive::sign_claims(claims, key, alg, "k", typ).expect("signs")
    };

    let genuine = sign(PRIVATE, archive::JIT_GRANTS_TYP, &claims);
    assert_eq!(
        c.grants_of(&wrap(genuine.clone()))
            .expect("the agent's")
            .len(),
        1
    );

    let rogue = rogue_key();
    let other_key = c
        .grants_of(&wrap(sign(
            rogue.as_bytes(),
            archive::JIT_GRANTS_TYP,
            &claims,
        )))
        .expect_err("another key");
    assert!(other_key.contains("signature"), "{other_key}");

    let unsigned = c.grants_of(&list(now())).expect_err("unsigned");
    assert!(unsigned.contains("not signed"), "{unsigned}");

    for typ in [archive::APPROVAL_GRANT_TYP, archive::FRESHNESS_TYP, "JWT"] {
        let e = c
            .grants_of(&wrap(sign(PRIVATE, typ, &claims)))
            .expect_err(typ);
        assert!(e.contains("signature"), "{typ}: {e}");
    }

    // The header and the payload edited under the agent's signature.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = genuine.split('.').collect();
    let header = b64.encode(
        String::from_utf8(b64.decode(parts[0]).expect("header"))
            .expect("utf-8")
            .replace(archive::JIT_GRANTS_TYP, "warden-grants+JWT"),
    );
    let mut wider = claims.clone();
    wider["grants"][0]["name"] = "*".into();
    wider["grants"][0]["principal"] = "mallory".into();
    let payload = b64.encode(wider.to_string());
    for (what, jws) in [
        ("typ edited", format!("{header}.{}.{}", parts[1], parts[2])),
        (
            "payload swapped",
            format!("{}.{payload}.{}", parts[0], parts[2]),
        ),
        ("no signature", format!("{}.{}.", parts[0], parts[1])),
    ] {
        assert!(c.grants_of(&wrap(jws)).is_err(), "{what}");
    }
}
