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
use warden_filters::engines::token::{TokenKey, NONCE_LEN};

const PREFIX: &str = "ws1.";
const AAD: &[u8] = b"warden session v1";

/// This install's own sealing secret (`<state dir>/install.key`): what seals
/// session ids, task ids, cursors, event ids and multi-round-trip state
/// when the bundle names no fleet secret, so that every process of one
/// install (a restart, a binary upgrade) opens what another issued.
static INSTALL_SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The install's secret, once [`load_install_secret`] ran.
pub fn install_secret() -> Option<&'static str> {
    INSTALL_SECRET.get().map(String::as_str)
}

/// Reads `<state_dir>/install.key`, creating it (32 random bytes, hex,
/// mode 0600) on the install's first start. Two processes starting at once
/// agree: the file is created exclusively, and a reader waits for the
/// writer's bytes. A key that is not 64 hex digits is an error, never
/// replaced (it may be what the running fleet's sessions are sealed with).
pub fn load_install_secret(state_dir: &std::path::Path) -> std::io::Result<&'static str> {
    use std::io::Write;
    std::fs::create_dir_all(state_dir)?;
    let path = state_dir.join("install.key");
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| std::io::Error::other("no system randomness"))?;
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(&path) {
        Ok(mut f) => {
            f.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
            f.sync_all()?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&path)?;
        if text.ends_with('\n') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not 64 hex digits", path.display()),
        ));
    }
    Ok(INSTALL_SECRET.get_or_init(|| text.to_owned()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSession {
    /// The upstream's session id (or a legacy endpoint's path and query as
    /// the server wrote it; the query alone in tokens sealed before).
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
    /// When the `initialize` that opened the session was relayed (Unix
    /// seconds; a token sealed again for a later reply keeps it); `0` in
    /// a token sealed by a gateway before this field existed. With
    /// `sessions.max_age` it opens for that long ([`SealedSession::expired`]).
    #[serde(rename = "t", default)]
    pub issued: u64,
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    unix_secs(std::time::SystemTime::now())
}

/// `t` in Unix seconds (0 before the epoch).
pub fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SealedSession {
    /// Whether the token has outlived `max_age` at `now` (Unix seconds). A
    /// server that hands one session id out again (a restart that starts
    /// its counter over) would otherwise let an old holder's token into
    /// the new holder's session on every replica that does not remember
    /// the first. A token without an issue time (sealed by an older
    /// gateway) counts from `started`, when this process started: an
    /// upgrade keeps every session, for at most `max_age` more.
    pub fn expired(&self, now: u64, started: u64, max_age: std::time::Duration) -> bool {
        let issued = if self.issued == 0 {
            started
        } else {
            self.issued
        };
        now.saturating_sub(issued) > max_age.as_secs()
    }
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
            issued: 1_790_000_000,
        }
    }

    #[test]
    fn a_token_opens_for_max_age_after_it_was_issued() {
        let day = std::time::Duration::from_secs(86_400);
        let s = sample();
        assert!(!s.expired(s.issued, 0, day));
        assert!(!s.expired(s.issued + 86_400, 0, day));
        assert!(s.expired(s.issued + 86_401, 0, day));
        // A clock that went back does not expire it.
        assert!(!s.expired(s.issued - 10, 0, day));
        // An older gateway's token (no issue time) counts from this
        // process's start, whenever it was sealed.
        let old: SealedSession = serde_json::from_str(
            r#"{"s":"abc-123","a":"10.0.0.7:8931","o":"acme\u0000agent-dev","v":"jira"}"#,
        )
        .expect("a token of the field-less format");
        assert_eq!(old.issued, 0);
        assert!(!old.expired(2_000_000_000, 2_000_000_000 - 3_600, day));
        assert!(old.expired(2_000_000_000, 2_000_000_000 - 86_401, day));
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
