//! Console sessions: who logged in, with which role, and the CSRF token of
//! their forms. A session id is 256 random bits in an `HttpOnly; Secure;
//! SameSite=Strict` cookie; the table keeps only its SHA-256 (a memory
//! dump or a log line of the table gives no usable cookie). Sessions end
//! after `IDLE` without a request, `MAX_AGE` after login, or at logout; the
//! table holds at most `MAX_SESSIONS` (the one idle longest is dropped).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Sessions at once, fleet-wide (operators, not agents, log in).
pub const MAX_SESSIONS: usize = 1024;
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session this old ends, used or not.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// Failed logins one address may make per `FAIL_WINDOW`.
pub const MAX_FAILURES: u32 = 10;
pub const FAIL_WINDOW: Duration = Duration::from_secs(300);
/// Addresses whose failures are remembered.
const MAX_FAIL_ENTRIES: usize = 4096;

pub const COOKIE: &str = "warden_console";

/// What a console user may do. Each role can do what the one before can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads the fleet, bundles, approvals, audit and live figures.
    Viewer,
    /// Also approves and denies held calls (an approver's token).
    Approver,
    /// Publishes, rolls back, pulls the kill switch; never approves (the
    /// rules of the CLI: only an approver's token decides a held call).
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Tenants whose calls, approvals and records this user sees (empty:
    /// every tenant).
    pub tenants: Vec<String>,
}

impl User {
    pub fn sees(&self, tenant: &str) -> bool {
        let t = warden_config::person::canonical_or_marked(tenant);
        self.tenants.is_empty()
            || self
                .tenants
                .iter()
                .any(|mine| warden_config::person::canonical_or_marked(mine) == t)
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    /// The token every form of this session carries.
    pub csrf: String,
    /// A message for the next page (what the last action did).
    pub flash: Option<String>,
    created: Instant,
    used: Instant,
}

#[derive(Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// 256 random bits, URL-safe base64.
pub fn random_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    #[allow(clippy::expect_used)]
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Sessions {
    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_digest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for `user`; returns the cookie value.
    pub fn open(&self, user: User) -> (String, Session) {
        let id = random_token();
        let now = Instant::now();
        let s = Session {
            user,
            csrf: random_token(),
            flash: None,
            created: now,
            used: now,
        };
        let mut all = self.lock_sessions();
        all.retain(|_, s| live(s, now));
        if all.len() >= MAX_SESSIONS {
            if let Some(k) = all.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| *k) {
                all.remove(&k);
            }
        }
        all.insert(digest(&id), s.clone());
        (id, s)
    }

    /// The live session of a cookie value, refreshed.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut all = self.lock_sessions();
        let d = digest(id);
        match all.get_mut(&d) {
            Some(s) if live(s, now) => {
                s.used = now;
                Some(s.clone())
            }
            Some(_) => {
                all.remove(&d);
                None
            }
            None => None,
        }
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, id: &str, msg: String) {
        if let Some(s) = self.lock_sessions().get_mut(&digest(id)) {
            s.flash = Some(msg);
        }
    }

    /// Takes the session's message, if any.
    pub fn take_flash(&self, id: &str) -> Option<String> {
        self.lock_sessions()
            .get_mut(&digest(id))
            .and_then(|s| s.flash.take())
    }

    pub fn close(&self, id: &str) {
        self.lock_sessions().remove(&digest(id));
    }

    pub fn count(&self) -> usize {
        let now = Instant::now();
        let mut all = self.lock_sessions();
        all.retain(|_, s| live(s, now));
        all.len()
    }

    /// Whether `ip` may try to log in now.
    pub fn may_try(&self, ip: IpAddr) -> bool {
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match f.get(&ip) {
            Some((n, since)) => since.elapsed() > FAIL_WINDOW || *n < MAX_FAILURES,
            None => true,
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() >= MAX_FAIL_ENTRIES {
            f.retain(|_, (_, since)| since.elapsed() <= FAIL_WINDOW);
        }
        if f.len() >= MAX_FAIL_ENTRIES && !f.contains_key(&ip) {
            // Full of recent failures: everyone's next try is refused
            // until some age out, rather than forgetting an attacker.
            if let Some(k) = f.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| *k) {
                f.remove(&k);
            }
        }
        let e = f.entry(ip).or_insert((0, now));
        if e.1.elapsed() > FAIL_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.used) < IDLE && now.duration_since(s.created) < MAX_AGE
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    digest(a) == digest(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "ann".into(),
            role: Role::Viewer,
            tenants: vec![],
        }
    }

    #[test]
    fn sessions_open_find_and_close() {
        let s = Sessions::default();
        let (id, sess) = s.open(user());
        assert_eq!(s.get(&id).map(|x| x.csrf), Some(sess.csrf));
        assert!(s.get("forged").is_none());
        s.close(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sessions::default();
        let (first, _) = s.open(user());
        for _ in 0..MAX_SESSIONS {
            s.open(user());
        }
        assert_eq!(s.count(), MAX_SESSIONS);
        assert!(s.get(&first).is_none(), "the longest idle one goes");
    }

    #[test]
    fn failed_logins_are_limited_per_address() {
        let s = Sessions::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for _ in 0..MAX_FAILURES {
            assert!(s.may_try(ip));
            s.failed(ip);
        }
        assert!(!s.may_try(ip));
        assert!(s.may_try("192.0.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 1]))));
    }
}
