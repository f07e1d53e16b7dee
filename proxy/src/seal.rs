//! Sealed session ids: what makes replicas stateless for sessions.
//!
//! With `sessions.seal_key_*` set, the `Mcp-Session-Id` an upstream hands out
//! (and a legacy endpoint's query) never reaches the client as is. The client
//! gets `ws1.<base64url(nonce ‖ ChaCha20-Poly1305(payload))>`, the payload
//! naming the upstream's own session id, the upstream replica that holds the
//! session, the principal it is bound to and the server. Any replica with the
//! fleet's secret opens it: the session is routed to its replica, bound to
//! its principal (another principal → 403), and the upstream sees its own
//! id. A token that does not open (forged, tampered, another fleet's, or
//! issued for another server) is an unknown session → 404, as MCP prescribes.

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warden_filters::token::{TokenKey, NONCE_LEN};

const PREFIX: &str = "ws1.";
const AAD: &[u8] = b"warden session v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSession {
    /// The upstream's session id (or a legacy endpoint's original query).
    #[serde(rename = "s")]
    pub session: String,
    /// The upstream replica serving it.
    #[serde(rename = "a")]
    pub upstream: String,
    /// The principal it is bound to (`sessions::owner_key`).
    #[serde(rename = "o")]
    pub owner: String,
    /// The server (route target) it belongs to.
    #[serde(rename = "v")]
    pub server: String,
}

pub struct Sealer {
    key: TokenKey,
    rng: SystemRandom,
    /// Digest of the secret, to tell whether a new bundle changed it.
    pub id: [u8; 32],
}

impl Sealer {
    pub fn new(secret: &str) -> Option<Sealer> {
        let mut h = Sha256::new();
        h.update(b"warden session seal key v1\0");
        h.update(secret.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        Some(Sealer {
            key: TokenKey::new(&key),
            rng: SystemRandom::new(),
            id: Sha256::digest(key).into(),
        })
    }

    pub fn seal(&self, s: &SealedSession) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        self.key
            .seal(PREFIX, AAD, nonce, serde_json::to_vec(s).ok()?)
    }

    pub fn open(&self, token: &str) -> Option<SealedSession> {
        let plain = self.key.open(PREFIX, AAD, token, 8192)?;
        serde_json::from_slice(&plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SealedSession {
        SealedSession {
            session: "abc-123".into(),
            upstream: "10.0.0.7:8931".into(),
            owner: "acme\0agent-dev".into(),
            server: "jira".into(),
        }
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let a = Sealer::new("a fleet secret of at least thirty-two chars").expect("sealer");
        let t = a.seal(&sample()).expect("seal");
        assert!(t.starts_with(PREFIX));
        assert_eq!(a.open(&t), Some(sample()));
        // Fresh nonce each time: two tokens for one session differ.
        assert_ne!(t, a.seal(&sample()).expect("seal"));
        // Any flipped character fails to open.
        let body = t.strip_prefix(PREFIX).expect("prefix").as_bytes().to_vec();
        for i in 0..body.len() {
            let mut b = body.clone();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let forged = format!("{PREFIX}{}", String::from_utf8_lossy(&b));
            assert_eq!(a.open(&forged), None, "flipped byte {i}");
        }
        // Another fleet's key, garbage, and truncation fail too.
        let b = Sealer::new("another fleet secret, also long enough!!").expect("sealer");
        assert_eq!(b.open(&t), None);
        assert_eq!(a.open("ws1.%%%"), None);
        assert_eq!(a.open(&t[..t.len() - 4]), None);
        assert_eq!(a.open("plain-session-id"), None);
    }
}
