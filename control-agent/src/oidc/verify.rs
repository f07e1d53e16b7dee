//! Checking an ID token (OpenID Connect Core 1.0, 3.1.3.7): signed by a
//! key of the provider's JWKS with an asymmetric algorithm (never `none`,
//! never HMAC), issued by the configured issuer to this client (`aud`, and
//! `azp` when there is more than one audience or it is given), for this
//! sign-in (`nonce`), unexpired, not issued in the future or long ago, and
//! — when the sign-in asked for a recent authentication — authenticated
//! recently enough (`auth_time`). Clocks may differ by the configured skew
//! (at most [`super::config::MAX_SKEW`]).

use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The algorithms an ID token may be signed with.
pub const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// An ID token older than this (by `iat`) is refused, whatever its `exp`.
pub const MAX_TOKEN_AGE: Duration = Duration::from_secs(600);

/// What the agent takes from an ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default)]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub auth_time: Option<u64>,
    #[serde(default)]
    pub acr: Option<String>,
    #[serde(default)]
    pub sid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    aud: Audience,
    /// Every claim, for the role rules.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

/// What the sign-in expects of its token.
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// The sign-in asked the provider for an authentication at most this old.
    pub max_age: Option<Duration>,
    pub skew: Duration,
    /// Seconds since the epoch.
    pub now: u64,
}

/// Why a token is refused (said to the person, recorded).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("the ID token is malformed: {0}")]
    Malformed(String),
    #[error(
        "the ID token's algorithm `{0}` is not accepted (an asymmetric signature is required)"
    )]
    Algorithm(String),
    #[error("no key of the provider's JWKS signs this ID token (kid {0:?})")]
    NoKey(Option<String>),
    #[error("the ID token does not verify: {0}")]
    Invalid(String),
    #[error("the ID token was not issued for this sign-in (nonce)")]
    Nonce,
    #[error("the ID token names another party (azp)")]
    Azp,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token was issued in the future or too long ago (iat, nbf)")]
    Iat,
    #[error("the sign-in at the provider is older than the {0}s asked (auth_time)")]
    Stale(u64),
    #[error("the ID token's subject cannot name a person: {0}")]
    Subject(String),
}

/// The key of `keys` that may verify a token of header `kid`/`alg`: the
/// one of that id (or the only one of the algorithm's family when the
/// token names none), for signatures, of a family the algorithm uses.
pub fn key_for(keys: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, Refused> {
    let fits = |k: &&jsonwebtoken::jwk::Jwk| {
        let for_sig = k
            .common
            .public_key_use
            .as_ref()
            .is_none_or(|u| *u == jsonwebtoken::jwk::PublicKeyUse::Signature);
        let family = match (&k.algorithm, alg) {
            (
                AlgorithmParameters::RSA(_),
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512,
            ) => true,
            (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => {
                p.curve == EllipticCurve::P256
            }
            (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => {
                p.curve == EllipticCurve::P384
            }
            (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
                p.curve == EllipticCurve::Ed25519
            }
            _ => false,
        };
        // A key published for one algorithm (`alg`, RFC 7517 4.4) signs
        // with that one alone: an RS256 key takes no PS256 or RS512
        // signature. A key that names none: any of its family.
        let named = k
            .common
            .key_algorithm
            .is_none_or(|ka| KeyAlgorithm::from_str(&format!("{alg:?}")).ok() == Some(ka));
        for_sig && family && named
    };
    let candidates: Vec<&jsonwebtoken::jwk::Jwk> = match kid {
        Some(kid) => keys
            .keys
            .iter()
            .filter(|k| k.common.key_id.as_deref() == Some(kid))
            .filter(fits)
            .collect(),
        None => keys.keys.iter().filter(fits).collect(),
    };
    match candidates.as_slice() {
        [one] => DecodingKey::from_jwk(one).map_err(|e| Refused::Invalid(e.to_string())),
        _ => Err(Refused::NoKey(kid.map(str::to_owned))),
    }
}

/// The algorithm and key id a token's header names.
pub fn header_of(token: &str) -> Result<(Algorithm, Option<String>), Refused> {
    // The header's `alg` as written: a name the library does not know
    // (`none`) is refused as an algorithm, not as a malformed token.
    let first = token.split('.').next().unwrap_or("");
    let raw: serde_json::Value =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, first)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Refused::Malformed("its header is not base64url JSON".into()))?;
    let alg_name = raw["alg"].as_str().unwrap_or("").to_owned();
    let h = jsonwebtoken::decode_header(token).map_err(|_| Refused::Algorithm(alg_name.clone()))?;
    if !ALGORITHMS.contains(&h.alg) {
        return Err(Refused::Algorithm(alg_name));
    }
    Ok((h.alg, h.kid))
}

/// Checks `token` with `key` against what the sign-in expects.
pub fn verify(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    want: &Expect<'_>,
) -> Result<IdClaims, Refused> {
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.set_issuer(&[want.issuer]);
    v.set_audience(&[want.client_id]);
    // Times are judged below against `want.now`, one clock for them all.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<IdClaims>(token, key, &v)
        .map_err(|e| Refused::Invalid(e.to_string()))?;
    let c = data.claims;
    // The library checked `aud`; so does this, on the claim as read here.
    let ours = match &c.aud {
        Audience::One(a) => a == want.client_id,
        Audience::Many(v) => v.iter().any(|a| a == want.client_id),
        Audience::None => false,
    };
    if !ours {
        return Err(Refused::Invalid(
            "the token is not for this client (aud)".into(),
        ));
    }
    let many = matches!(&c.aud, Audience::Many(a) if a.len() > 1);
    match &c.azp {
        Some(azp) if azp != want.client_id => return Err(Refused::Azp),
        None if many => return Err(Refused::Azp),
        _ => {}
    }
    if !c
        .nonce
        .as_deref()
        .is_some_and(|n| crate::console::session::same_secret(n, want.nonce))
    {
        return Err(Refused::Nonce);
    }
    // The times are the provider's numbers: added to without overflow
    // (an `exp` at `u64::MAX` is far off, not a panic of the callback).
    let skew = want.skew.as_secs();
    let late = want.now.saturating_add(skew);
    if c.exp.saturating_add(skew) < want.now {
        return Err(Refused::Expired);
    }
    if c.nbf.is_some_and(|nbf| nbf > late) {
        return Err(Refused::Iat);
    }
    if c.iat > late
        || c.iat
            .saturating_add(MAX_TOKEN_AGE.as_secs())
            .saturating_add(skew)
            < want.now
    {
        return Err(Refused::Iat);
    }
    if let Some(max) = want.max_age {
        let at = c.auth_time.ok_or(Refused::Stale(max.as_secs()))?;
        if at > late || at.saturating_add(max.as_secs()).saturating_add(skew) < want.now {
            return Err(Refused::Stale(max.as_secs()));
        }
    }
    subject(&c.sub)?;
    Ok(c)
}

/// Whether a provider's `sub` can name a person here: 1-255 bytes, no
/// control or invisible characters, no `/` (a name `tenant/id` would read
/// it as a tenant's), and a canonical form.
///
/// The slash is looked for as the approvals read a name
/// ([`warden_config::person::Person::parse`], after NFKC): there `／`,
/// and `℀` `℁` `℅` `℆` (`a/c`, `a/s`, `c/o`, `c/u`), are slashes too, so
/// a subject `a℅b` would be tenant `ac`'s `ob` to the approvals while a
/// caller of that name is the id `ac/ob`: not the same person, and the
/// person would approve their own calls.
pub fn subject(sub: &str) -> Result<(), Refused> {
    if sub.is_empty() || sub.len() > 255 {
        return Err(Refused::Subject("empty or longer than 255 bytes".into()));
    }
    if sub.contains('/') || sub.contains('／') {
        return Err(Refused::Subject("it holds a slash".into()));
    }
    let person =
        warden_config::person::Person::parse(sub).map_err(|e| Refused::Subject(e.to_string()))?;
    if person.tenant.is_some() {
        return Err(Refused::Subject(
            "it holds a character read as a slash (℀, ℁, ℅, ℆)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
