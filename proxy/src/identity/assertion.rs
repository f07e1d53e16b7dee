//! Identity assertions: for a server with `identity_assertion`, every call
//! goes upstream with a short-lived JWT the gateway signs, naming the user
//! behind the agent. The upstream never sees the caller's own token or key;
//! it verifies the assertion against the gateway's JWKS
//! (`/.well-known/jwks.json` on the admin listener) and can authorise per
//! user and name the user in its own logs.
//!
//! Claims: `iss` (the gateway, `assertions.issuer`), `aud` (the server's
//! `audience`), `sub` (principal id), `tenant`, `roles`, `auth` (how the
//! caller proved itself), `orig_iss` (the issuer of the caller's token, for
//! JWT callers), `client_id` (when the token named one), `trace_id`, `iat`,
//! `nbf`, `exp` (`ttl` later), `jti` (unique).
//!
//! Keys: Ed25519 (`EdDSA`). The key of each rotation period (`assertions.
//! rotate`) is derived with HKDF-SHA256 from a master secret: the fleet
//! secret (`sessions.secret`) when the bundle has one, so every replica signs
//! with the same key and serves the same JWKS; otherwise a random secret
//! made once per process (replicas then sign differently and each serves
//! its own keys). The JWKS holds the previous, current and next period's
//! public keys, so a verifier's cached set covers a rotation.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};
use warden_config::model::{Assertions, IdentityAssertion};
use warden_filters::engines::identity::Principal;

struct Key {
    pair: Ed25519KeyPair,
    kid: String,
}

/// Signs identity assertions with the key of the current period.
/// The call an assertion is for: a captured assertion replayed on another
/// request (another method, tool or arguments) is told apart by a verifier
/// that compares `req_sha256` with the SHA-256 of the body it received
/// (the exact bytes the gateway forwarded), and `jti` (one per assertion)
/// with those it has seen.
#[derive(Debug, Default)]
pub struct CallBinding<'a> {
    pub method: Option<&'a str>,
    /// The tool or prompt name, or the resource URI.
    pub name: Option<&'a str>,
    /// The forwarded body (`None` for a GET or DELETE).
    pub body: Option<&'a [u8]>,
}

pub struct Signer {
    master: [u8; 32],
    issuer: String,
    rotate: u64,
    current: Mutex<Option<(u64, Arc<Key>)>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("issuer", &self.issuer)
            .field("rotate", &self.rotate)
            .finish_non_exhaustive()
    }
}

fn process_master() -> [u8; 32] {
    static MASTER: OnceLock<[u8; 32]> = OnceLock::new();
    *MASTER.get_or_init(rand::random)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

struct Len32;
impl ring::hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl Signer {
    /// `fleet_secret`: the bundle's `sessions.secret`, if any.
    pub fn new(cfg: &Assertions, fleet_secret: Option<&str>) -> Signer {
        let master = match fleet_secret {
            Some(s) => {
                let mut h = Sha256::new();
                h.update(b"warden identity assertion master v1\0");
                h.update(s.as_bytes());
                h.finalize().into()
            }
            None => process_master(),
        };
        Signer {
            master,
            issuer: cfg.issuer.clone(),
            rotate: cfg.rotate.as_secs().max(60),
            current: Mutex::new(None),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn derive(&self, period: u64) -> Key {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"warden identity assertion v1");
        let prk = salt.extract(&self.master);
        let info = period.to_be_bytes();
        let info = [&info[..]];
        let mut seed = [0u8; 32];
        // A 32-byte output of HKDF-SHA256 cannot fail.
        if let Ok(okm) = prk.expand(&info, Len32) {
            let _ = okm.fill(&mut seed);
        }
        let pair = match Ed25519KeyPair::from_seed_unchecked(&seed) {
            Ok(p) => p,
            // Every 32-byte seed is a valid Ed25519 key.
            Err(_) => unreachable!("an Ed25519 seed of 32 bytes"),
        };
        let kid = hex::encode(&Sha256::digest(pair.public_key().as_ref())[..8]);
        Key { pair, kid }
    }

    fn key(&self, period: u64) -> Arc<Key> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match &*cur {
            Some((p, k)) if *p == period => k.clone(),
            _ => {
                let k = Arc::new(self.derive(period));
                *cur = Some((period, k.clone()));
                k
            }
        }
    }

    /// A signed assertion for one call of `principal` to the server that
    /// `a` describes, bound to that call (see [`CallBinding`]).
    pub fn mint(
        &self,
        a: &IdentityAssertion,
        principal: &Principal,
        trace_id: Option<&str>,
        call: &CallBinding<'_>,
        now: SystemTime,
    ) -> String {
        let t = secs(now);
        let key = self.key(t / self.rotate);
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid});
        let mut claims = serde_json::json!({
            "iss": self.issuer,
            "aud": a.audience,
            "sub": principal.id,
            "tenant": principal.tenant,
            "roles": principal.roles,
            "auth": principal.auth.as_str(),
            "iat": t,
            // Verifiers whose clocks run a little behind still accept it.
            "nbf": t.saturating_sub(30),
            "exp": t + a.ttl.as_secs().max(1),
            "jti": hex::encode(rand::random::<[u8; 16]>()),
        });
        if let Some(iss) = principal.attributes.get("iss") {
            claims["orig_iss"] = iss.as_str().into();
        }
        if let Some(c) = principal.attributes.get("client_id") {
            claims["client_id"] = c.as_str().into();
        }
        if let Some(t) = trace_id {
            claims["trace_id"] = t.into();
        }
        if let Some(m) = call.method {
            claims["mcp_method"] = m.into();
        }
        if let Some(n) = call.name {
            claims["mcp_name"] = n.into();
        }
        if let Some(b) = call.body {
            claims["req_sha256"] = hex::encode(Sha256::digest(b)).into();
        }
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = key.pair.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(sig.as_ref()))
    }

    /// The public keys of the previous, current and next period.
    pub fn jwks(&self, now: SystemTime) -> serde_json::Value {
        let period = secs(now) / self.rotate;
        let keys: Vec<serde_json::Value> = [period.saturating_sub(1), period, period + 1]
            .into_iter()
            .map(|p| {
                let k = if p == period {
                    self.key(p)
                } else {
                    Arc::new(self.derive(p))
                };
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "use": "sig",
                    "alg": "EdDSA",
                    "kid": k.kid,
                    "x": B64.encode(k.pair.public_key().as_ref()),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// How long verifiers may cache the JWKS.
    pub fn cache_for(&self) -> Duration {
        Duration::from_secs((self.rotate / 4).clamp(60, 3600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ED25519};

    fn assertions(rotate: u64) -> Assertions {
        Assertions {
            issuer: "https://gw.example".into(),
            rotate: Duration::from_secs(rotate),
        }
    }

    fn verify(jwks: &serde_json::Value, token: &str) -> serde_json::Value {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[0]).expect("b64")).expect("header");
        let key = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["kid"] == header["kid"])
            .expect("the kid is in the JWKS");
        let x = B64.decode(key["x"].as_str().expect("x")).expect("x");
        UnparsedPublicKey::new(&ED25519, x)
            .verify(
                format!("{}.{}", parts[0], parts[1]).as_bytes(),
                &B64.decode(parts[2]).expect("sig"),
            )
            .expect("signature verifies");
        serde_json::from_slice(&B64.decode(parts[1]).expect("b64")).expect("claims")
    }

    #[test]
    fn assertions_verify_against_the_jwks_across_a_rotation() {
        let s = Signer::new(&assertions(3600), Some("fleet secret"));
        let a = IdentityAssertion {
            audience: "https://jira.internal/mcp".into(),
            ttl: Duration::from_secs(60),
            header: "authorization".into(),
        };
        let mut p = Principal::anonymous();
        p.id = "alice".into();
        p.attributes
            .insert("iss".into(), "https://idp.example".into());
        let t0 = UNIX_EPOCH + Duration::from_secs(3600 * 1000 + 3590);
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy"}}"#;
        let call = CallBinding {
            method: Some("tools/call"),
            name: Some("deploy"),
            body: Some(body),
        };
        let token = s.mint(&a, &p, Some("abc"), &call, t0);
        let claims = verify(&s.jwks(t0), &token);
        // Bound to the call: method, tool and the digest of the exact body.
        assert_eq!(claims["mcp_method"], "tools/call");
        assert_eq!(claims["mcp_name"], "deploy");
        assert_eq!(claims["req_sha256"], hex::encode(Sha256::digest(body)));
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["aud"], "https://jira.internal/mcp");
        assert_eq!(claims["iss"], "https://gw.example");
        assert_eq!(claims["orig_iss"], "https://idp.example");
        assert_eq!(claims["trace_id"], "abc");
        assert_eq!(
            claims["exp"].as_u64(),
            claims["iat"].as_u64().map(|i| i + 60)
        );
        // Twenty seconds later the key rotated; the JWKS a verifier fetched
        // before still holds the new key, and the new JWKS the old one.
        let t1 = t0 + Duration::from_secs(20);
        let next = s.mint(&a, &p, None, &CallBinding::default(), t1);
        verify(&s.jwks(t0), &next);
        verify(&s.jwks(t1), &token);
        // Replicas sharing the fleet secret sign alike; others do not.
        let other = Signer::new(&assertions(3600), Some("fleet secret"));
        verify(&other.jwks(t0), &token);
        let stranger = Signer::new(&assertions(3600), Some("another secret"));
        let kids: Vec<_> = stranger.jwks(t0)["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].clone())
            .collect();
        let header: serde_json::Value = serde_json::from_slice(
            &B64.decode(token.split('.').next().expect("h"))
                .expect("b64"),
        )
        .expect("header");
        assert!(!kids.contains(&header["kid"]));
        // Every assertion is unique.
        let none = CallBinding::default();
        assert_ne!(
            s.mint(&a, &p, None, &none, t0),
            s.mint(&a, &p, None, &none, t0)
        );
    }
}
