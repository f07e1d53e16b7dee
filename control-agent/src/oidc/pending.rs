//! A sign-in under way, between the agent sending the browser to the
//! provider and the provider sending it back: the `state` that ties the
//! callback to this browser (login CSRF), the `nonce` the ID token must
//! carry, the PKCE verifier, when it began, where to go after it and why
//! it was asked. It lives in a cookie of the browser, not in the agent, so
//! the callback may reach any agent of an HA fleet and no table grows with
//! sign-ins nobody finishes. The cookie is `__Host-` (no sibling domain
//! plants one), `HttpOnly`, `Secure`, `SameSite=Lax` (the provider's
//! redirect is a cross-site navigation) and MACed with a key derived from
//! the client secret (every agent of the fleet holds it; a public client's
//! key is the process's own, so its callback must reach the same agent).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The cookie's name.
pub const COOKIE: &str = "__Host-warden_oidc";
/// A sign-in not finished within this is refused.
pub const LIFETIME: Duration = Duration::from_secs(600);

/// Why the sign-in was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// The login page's button.
    Login,
    /// The session's roles are read again (`prompt=none`: no page at the
    /// provider while its session lives; its end ends this one).
    Refresh,
    /// A CRITICAL approval asks for a sign-in within `critical.max_age`
    /// (`prompt=login`, `max_age`, the `acr` values named).
    Fresh,
    /// A person opens a consent link (`/console/connect`): who they are is
    /// asked, not a role (anyone the provider knows may connect their own
    /// account; [`crate::connect`] checks they are the link's principal).
    Consent,
}

/// The sign-in under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// Seconds since the epoch.
    pub at: u64,
    /// The console path to go to after it.
    pub next: String,
    pub mode: Mode,
}

/// The PKCE challenge of `verifier` (S256).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A console path to go to after signing in: `/console` or under it,
/// nothing that leaves the agent (`//host`, a backslash, a scheme), also
/// as a browser resolves it: `%2e%2e` is a `..` segment there, and a tab
/// or a line break inside `.\t.` is dropped, so no control character
/// passes and the path is resolved as the browser would before it is
/// judged.
pub fn safe_next(next: &str) -> String {
    let ok = (next == "/console" || next.starts_with("/console/") || next.starts_with("/console?"))
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
        && !next.contains("//")
        && !next.contains("/..")
        && next.len() <= 2048
        && stays_in_console(next);
    if ok {
        next.to_owned()
    } else {
        "/console".into()
    }
}

/// Whether `next`, resolved as a browser resolves a path (WHATWG URL:
/// dot segments, percent-encoded ones too), is still `/console` or under
/// it, on this agent.
fn stays_in_console(next: &str) -> bool {
    const BASE: &str = "https://agent.invalid/";
    url::Url::parse(BASE)
        .and_then(|b| b.join(next))
        .is_ok_and(|u| {
            u.host_str() == Some("agent.invalid")
                && (u.path() == "/console" || u.path().starts_with("/console/"))
        })
}

/// The MAC key of the cookie.
pub struct Sealer(ring::hmac::Key);

impl Sealer {
    /// From the client secret; `None`: a key of this process.
    pub fn new(client_secret: Option<&str>) -> Sealer {
        let key: [u8; 32] = match client_secret {
            Some(s) => {
                let mut h = Sha256::new();
                h.update(b"warden oidc pending sign-in\0");
                h.update(s.as_bytes());
                h.finalize().into()
            }
            None => {
                let mut b = [0u8; 32];
                #[allow(clippy::expect_used)]
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
                    .expect("the system's random source");
                b
            }
        };
        Sealer(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key))
    }

    /// The cookie's value for `p`.
    pub fn seal(&self, p: &Pending) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(p).unwrap_or_default());
        let tag = ring::hmac::sign(&self.0, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The sign-in a cookie value holds, when its MAC is right and it is
    /// younger than [`LIFETIME`] at `now` (seconds since the epoch).
    pub fn open(&self, value: &str, now: u64) -> Result<Pending, &'static str> {
        let (body, tag) = value
            .split_once('.')
            .ok_or("the sign-in cookie is malformed")?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| "the sign-in cookie is malformed")?;
        ring::hmac::verify(&self.0, body.as_bytes(), &tag)
            .map_err(|_| "the sign-in cookie was not made by this agent")?;
        let p: Pending = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("the sign-in cookie is malformed")?;
        if p.at > now + 60 || p.at + LIFETIME.as_secs() < now {
            return Err("the sign-in took too long: start again");
        }
        Ok(p)
    }
}

/// The `Set-Cookie` value that keeps `sealed`, or (`None`) clears it.
pub fn set_cookie(sealed: Option<&str>) -> String {
    match sealed {
        Some(v) => format!(
            "{COOKIE}={v}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
            LIFETIME.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pending() -> Pending {
        Pending {
            state: "st".into(),
            nonce: "no".into(),
            verifier: "ve".into(),
            at: 1_000,
            next: "/console/approvals/x".into(),
            mode: Mode::Fresh,
        }
    }

    /// A cookie opens only as this agent (or its fleet) sealed it, and
    /// only within its lifetime: a changed byte, another key, an old one
    /// or one from the future are refused.
    #[test]
    fn a_pending_sign_in_opens_only_as_sealed() {
        let s = Sealer::new(Some("secret"));
        let v = s.seal(&pending());
        assert_eq!(s.open(&v, 1_100).unwrap(), pending());
        // Another agent of the fleet holds the same secret.
        assert_eq!(
            Sealer::new(Some("secret")).open(&v, 1_100).unwrap(),
            pending()
        );
        assert!(Sealer::new(Some("other")).open(&v, 1_100).is_err());
        assert!(Sealer::new(None).open(&v, 1_100).is_err());
        let mut bytes = v.clone().into_bytes();
        bytes[3] ^= 1;
        assert!(s.open(&String::from_utf8(bytes).unwrap(), 1_100).is_err());
        assert!(s.open(&v, 1_000 + LIFETIME.as_secs() + 1).is_err());
        assert!(s.open(&v, 900).is_err());
        assert!(s.open("garbage", 1_100).is_err());
        // A body forged with the MAC of another body.
        let other = s.seal(&Pending {
            mode: Mode::Login,
            ..pending()
        });
        let forged = format!(
            "{}.{}",
            v.split_once('.').unwrap().0,
            other.split_once('.').unwrap().1
        );
        assert!(s.open(&forged, 1_100).is_err());
    }

    /// After the sign-in the browser goes to a console page, never away.
    #[test]
    fn the_page_after_a_sign_in_is_the_consoles() {
        for (asked, went) in [
            ("/console/approvals/a1", "/console/approvals/a1"),
            ("/console", "/console"),
            ("/console?x=1", "/console?x=1"),
            ("//evil.example/console", "/console"),
            ("https://evil.example/console", "/console"),
            ("/console//evil.example", "/console"),
            ("/console/\\evil", "/console"),
            ("/consolex", "/console"),
            ("/console/../v1/kill", "/console"),
            ("/v1/publish", "/console"),
        ] {
            assert_eq!(safe_next(asked), went, "{asked}");
        }
    }

    /// S256 (RFC 7636 4.2): base64url of the SHA-256 of the verifier, no
    /// padding (the value `openssl dgst -sha256 -binary | base64` gives,
    /// with `+/` as `-_` and `=` dropped).
    #[test]
    fn the_challenge_is_s256_of_the_verifier() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWXOEjXk"),
            "ixTXRNjcs2t268cvWnWX5VszIOQVHn11amyq8l3uFfA"
        );
    }
}
