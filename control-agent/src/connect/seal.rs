//! What the consent flow hands out and must get back unchanged: the
//! consent link (which principal, server, provider and scopes ask), the
//! person's sign-in for it (a cookie) and the authorization under way at
//! the provider (a cookie holding the `state` and the PKCE verifier).
//! Each is JSON MACed with a key derived from the vault's master keys
//! (every agent of the fleet holds them, so any agent finishes a flow
//! another began), under a label of its kind: a value of one kind never
//! opens as another. Each carries when it ends.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The kinds of sealed values, each its own MAC label.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Link,
    Person,
    Authorizing,
    Csrf,
}

impl Kind {
    fn label(self) -> &'static [u8] {
        match self {
            Kind::Link => b"warden consent link\0",
            Kind::Person => b"warden consent person\0",
            Kind::Authorizing => b"warden consent authorizing\0",
            Kind::Csrf => b"warden consent csrf\0",
        }
    }
}

/// A consent link: a principal's first call to a server that needs their
/// own credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Random: the elicitation's id, and what the CSRF token binds.
    pub id: String,
    pub tenant: String,
    pub principal: String,
    pub server: String,
    pub provider: String,
    pub scopes: Vec<String>,
    /// The gateway the call came through (shown on the page).
    pub gateway: String,
    /// Seconds since the epoch.
    pub until: u64,
}

/// Who opened the link, as the organisation's provider said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub sub: String,
    pub shown: String,
    pub principals: Vec<String>,
    pub until: u64,
}

/// An authorization under way at the SaaS provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorizing {
    pub link: Link,
    pub state: String,
    pub verifier: String,
    /// The person who consented (their `sub`): the callback must come
    /// back to the same person's browser.
    pub sub: String,
    pub until: u64,
}

/// Has an end.
pub trait Ends {
    fn until(&self) -> u64;
}

impl Ends for Link {
    fn until(&self) -> u64 {
        self.until
    }
}
impl Ends for Person {
    fn until(&self) -> u64 {
        self.until
    }
}
impl Ends for Authorizing {
    fn until(&self) -> u64 {
        self.until
    }
}

fn tag(key: &[u8; 32], kind: Kind, body: &[u8]) -> ring::hmac::Tag {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&k);
    ctx.update(kind.label());
    ctx.update(body);
    ctx.sign()
}

/// `value` sealed as `kind` with the first (current) key.
pub fn seal<T: Serialize>(keys: &[[u8; 32]], kind: Kind, value: &T) -> Result<String, String> {
    let key = keys.first().ok_or("the vault has no master key")?;
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).map_err(|e| e.to_string())?);
    let t = tag(key, kind, body.as_bytes());
    Ok(format!("{body}.{}", URL_SAFE_NO_PAD.encode(t.as_ref())))
}

/// What `sealed` holds, when one of `keys` made it as `kind` and it has
/// not ended at `now` (seconds since the epoch).
pub fn open<T: DeserializeOwned + Ends>(
    keys: &[[u8; 32]],
    kind: Kind,
    sealed: &str,
    now: u64,
) -> Result<T, &'static str> {
    let (body, t) = sealed.split_once('.').ok_or("malformed")?;
    let t = URL_SAFE_NO_PAD.decode(t).map_err(|_| "malformed")?;
    let made_here = keys.iter().any(|k| {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k);
        let mut v = Vec::with_capacity(kind.label().len() + body.len());
        v.extend_from_slice(kind.label());
        v.extend_from_slice(body.as_bytes());
        ring::hmac::verify(&k, &v, &t).is_ok()
    });
    if !made_here {
        return Err("not made by this control plane (forged or changed)");
    }
    let value: T = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("malformed")?;
    if value.until() < now {
        return Err("expired: start again from your agent");
    }
    Ok(value)
}

/// The CSRF token of the consent form: bound to the link and the person.
pub fn csrf(keys: &[[u8; 32]], link_id: &str, sub: &str) -> String {
    let Some(key) = keys.first() else {
        return String::new();
    };
    let t = tag(key, Kind::Csrf, format!("{link_id}\0{sub}").as_bytes());
    URL_SAFE_NO_PAD.encode(t.as_ref())
}

/// Whether `token` is the CSRF token of the link and person (any key).
pub fn csrf_ok(keys: &[[u8; 32]], link_id: &str, sub: &str, token: &str) -> bool {
    let Ok(t) = URL_SAFE_NO_PAD.decode(token) else {
        return false;
    };
    keys.iter().any(|k| {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k);
        ring::hmac::verify(
            &k,
            &[Kind::Csrf.label(), format!("{link_id}\0{sub}").as_bytes()].concat(),
            &t,
        )
        .is_ok()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn link(until: u64) -> Link {
        Link {
            id: "l1".into(),
            tenant: "acme".into(),
            principal: "alice".into(),
            server: "saas".into(),
            provider: "p".into(),
            scopes: vec!["read".into()],
            gateway: "gw".into(),
            until,
        }
    }

    #[test]
    fn a_link_opens_once_sealed_and_never_changed_forged_or_as_another_kind() {
        let keys = [[7u8; 32]];
        let s = seal(&keys, Kind::Link, &link(100)).unwrap();
        assert_eq!(open::<Link>(&keys, Kind::Link, &s, 50).unwrap(), link(100));
        assert!(open::<Link>(&keys, Kind::Link, &s, 101).is_err(), "expired");
        assert!(
            open::<Link>(&[[8u8; 32]], Kind::Link, &s, 50).is_err(),
            "another key"
        );
        // Another principal written into the body under the old MAC.
        let (body, t) = s.split_once('.').unwrap();
        let mut l = link(100);
        l.principal = "mallory".into();
        let forged = format!(
            "{}.{t}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&l).unwrap())
        );
        assert_ne!(forged.split_once('.').unwrap().0, body);
        assert!(open::<Link>(&keys, Kind::Link, &forged, 50).is_err());
        // A link is no authorization under way, whatever it holds.
        assert!(open::<Authorizing>(&keys, Kind::Authorizing, &s, 50).is_err());
        // An old key still opens after rotation (current first).
        assert!(open::<Link>(&[[9u8; 32], [7u8; 32]], Kind::Link, &s, 50).is_ok());
    }

    #[test]
    fn the_csrf_token_binds_the_link_and_the_person() {
        let keys = [[1u8; 32]];
        let t = csrf(&keys, "l1", "alice");
        assert!(csrf_ok(&keys, "l1", "alice", &t));
        assert!(!csrf_ok(&keys, "l2", "alice", &t));
        assert!(!csrf_ok(&keys, "l1", "bob", &t));
        assert!(!csrf_ok(&keys, "l1", "alice", "AAAA"));
    }
}
