//! Authenticated opaque tokens the gateway hands out and takes back (sealed
//! session ids, sealed task ids): `prefix ‖ base64url(nonce ‖
//! ChaCha20-Poly1305(payload))`. Only a holder of the key can make one or
//! read one; a token that was tampered with, truncated, or made under
//! another key does not open.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

pub use ring::aead::NONCE_LEN;

pub struct TokenKey {
    key: LessSafeKey,
}

impl TokenKey {
    pub fn new(key: &[u8; 32]) -> TokenKey {
        TokenKey {
            key: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, key).expect("32-byte ChaCha20 key"),
            ),
        }
    }

    /// Seals `payload` under `nonce` (never reuse one for two payloads).
    pub fn seal(
        &self,
        prefix: &str,
        aad: &[u8],
        nonce: [u8; NONCE_LEN],
        mut payload: Vec<u8>,
    ) -> Option<String> {
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut payload,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&payload);
        Some(format!(
            "{prefix}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
        ))
    }

    /// The payload of a token made by [`TokenKey::seal`] with this key,
    /// prefix and `aad`; `None` for anything else (or longer than `max`).
    pub fn open(&self, prefix: &str, aad: &[u8], token: &str, max: usize) -> Option<Vec<u8>> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.strip_prefix(prefix)?)
            .ok()?;
        if raw.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() || raw.len() > max {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}
