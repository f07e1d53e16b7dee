#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Each check of an ID token refuses what it is there to refuse, with a
//! real Ed25519 key (ring) and tokens signed as a provider signs them.

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use ring::signature::KeyPair;
use serde_json::json;

const ISS: &str = "https://idp.example";
const CLIENT: &str = "warden";
const NOW: u64 = 1_800_000_000;

struct Signer {
    key: EncodingKey,
    jwks: JwkSet,
}

fn signer(kid: &str) -> Signer {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let jwks: JwkSet = serde_json::from_value(json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}
    ]}))
    .unwrap();
    Signer {
        key: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwks,
    }
}

fn claims() -> serde_json::Value {
    json!({"iss": ISS, "aud": CLIENT, "sub": "alice", "iat": NOW - 5, "exp": NOW + 300,
           "nonce": "n-1", "auth_time": NOW - 10, "groups": ["ops"]})
}

fn token(s: &Signer, kid: Option<&str>, c: &serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, c, &s.key).unwrap()
}

fn expect(max_age: Option<u64>) -> Expect<'static> {
    Expect {
        issuer: ISS,
        client_id: CLIENT,
        nonce: "n-1",
        max_age: max_age.map(Duration::from_secs),
        skew: Duration::from_secs(60),
        now: NOW,
    }
}

fn check(s: &Signer, t: &str, want: &Expect<'_>) -> Result<IdClaims, Refused> {
    let (alg, kid) = header_of(t)?;
    let key = key_for(&s.jwks, kid.as_deref(), alg)?;
    verify(t, &key, alg, want)
}

#[test]
fn a_providers_token_for_this_sign_in_verifies() {
    let s = signer("k1");
    let c = check(&s, &token(&s, Some("k1"), &claims()), &expect(Some(60))).unwrap();
    assert_eq!(c.sub, "alice");
    assert_eq!(c.auth_time, Some(NOW - 10));
    assert_eq!(c.rest["groups"], json!(["ops"]));
    // Without a key id, the one key of the algorithm's family.
    check(&s, &token(&s, None, &claims()), &expect(None)).unwrap();
}

#[test]
fn every_claim_that_is_not_this_sign_ins_is_refused() {
    let s = signer("k1");
    let with = |k: &str, v: serde_json::Value| {
        let mut c = claims();
        c[k] = v;
        token(&s, Some("k1"), &c)
    };
    let without = |k: &str| {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(k);
        token(&s, Some("k1"), &c)
    };
    let e = expect(Some(60));
    for (what, t, want) in [
        (
            "another issuer",
            with("iss", json!("https://evil.example")),
            "Invalid",
        ),
        (
            "the issuer with a slash",
            with("iss", json!("https://idp.example/")),
            "Invalid",
        ),
        ("another audience", with("aud", json!("other")), "Invalid"),
        (
            "audiences without azp",
            with("aud", json!([CLIENT, "other"])),
            "Azp",
        ),
        ("another azp", with("azp", json!("other")), "Azp"),
        ("another nonce", with("nonce", json!("n-2")), "Nonce"),
        ("no nonce", without("nonce"), "Nonce"),
        (
            "expired past the skew",
            with("exp", json!(NOW - 61)),
            "Expired",
        ),
        ("issued in the future", with("iat", json!(NOW + 120)), "Iat"),
        ("issued long ago", with("iat", json!(NOW - 3_600)), "Iat"),
        ("no iat", without("iat"), "Invalid"),
        ("no exp", without("exp"), "Invalid"),
        ("not yet valid", with("nbf", json!(NOW + 600)), "Iat"),
        (
            "a sign-in too old",
            with("auth_time", json!(NOW - 600)),
            "Stale",
        ),
        ("no auth_time", without("auth_time"), "Stale"),
        (
            "a subject with a slash",
            with("sub", json!("acme/alice")),
            "Subject",
        ),
        ("an empty subject", with("sub", json!("")), "Subject"),
        (
            "an invisible subject",
            with("sub", json!("ali\u{200b}ce")),
            "Subject",
        ),
    ] {
        let r = match check(&s, &t, &e) {
            Ok(_) => panic!("{what}: verified"),
            Err(r) => r,
        };
        assert!(format!("{r:?}").starts_with(want), "{what}: {r:?}");
    }
    // Expired within the skew still verifies.
    check(&s, &with("exp", json!(NOW - 30)), &e).unwrap();
    // Audiences with azp naming this client verify.
    let mut c = claims();
    c["aud"] = json!([CLIENT, "other"]);
    c["azp"] = json!(CLIENT);
    check(&s, &token(&s, Some("k1"), &c), &e).unwrap();
}

#[test]
fn only_the_providers_keys_and_asymmetric_algorithms_verify() {
    let s = signer("k1");
    let other = signer("k1");
    // Signed by another key under the same id.
    let forged = token(&other, Some("k1"), &claims());
    assert!(matches!(
        check(&s, &forged, &expect(None)),
        Err(Refused::Invalid(_))
    ));
    // A key id the provider does not have.
    let t = token(&s, Some("k9"), &claims());
    assert_eq!(
        check(&s, &t, &expect(None)).map(|_| ()),
        Err(Refused::NoKey(Some("k9".into())))
    );
    // `alg: none`, and HMAC with a key the JWKS publishes (the classic
    // confusion): refused by algorithm.
    let body = URL_SAFE_NO_PAD.encode(claims().to_string());
    let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
    assert_eq!(
        check(&s, &none, &expect(None)).map(|_| ()),
        Err(Refused::Algorithm("none".into()))
    );
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    assert!(matches!(
        check(&s, &hs, &expect(None)),
        Err(Refused::Algorithm(_))
    ));
    // A key for encryption, or of another curve, signs nothing.
    let mut jwks = s.jwks.clone();
    jwks.keys[0].common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Encryption);
    assert!(key_for(&jwks, Some("k1"), Algorithm::EdDSA).is_err());
    let p256: JwkSet = serde_json::from_value(json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "k1",
         "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
         "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}))
    .unwrap();
    assert!(key_for(&p256, Some("k1"), Algorithm::EdDSA).is_err());
    assert!(key_for(&p256, Some("k1"), Algorithm::ES384).is_err());
    assert!(key_for(&p256, Some("k1"), Algorithm::ES256).is_ok());
    // Two keys without ids: which one is not guessed.
    let mut two = s.jwks.clone();
    two.keys.push(other.jwks.keys[0].clone());
    assert!(key_for(&two, None, Algorithm::EdDSA).is_err());
    assert!(matches!(
        header_of("not a token"),
        Err(Refused::Malformed(_))
    ));
}
