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

pub use super::user::{Role, Session, User, IDLE, MAX_AGE, MAX_PER_USER, MAX_SESSIONS};

/// Failed tokens one address may present per `FAIL_WINDOW`: console
/// logins and the API's bearer tokens together (they are one token space).
pub const MAX_FAILURES: u32 = 10;
pub const FAIL_WINDOW: Duration = Duration::from_secs(300);
/// Addresses whose failures are remembered.
const MAX_FAIL_ENTRIES: usize = 4096;

/// The cookie's name: `__Host-` makes a browser take it only when it is
/// `Secure`, has `Path=/` and names no domain, so a sibling domain cannot
/// plant its own session.
pub const COOKIE: &str = "__Host-warden_console";

#[derive(Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
    /// Kept in the database instead (agents on one database share them):
    /// `by_digest` is then unused.
    shared: Option<super::shared::SharedSessions>,
    /// Failed tokens per address, the console's logins and the API's
    /// bearer tokens alike: past [`MAX_FAILURES`] every token of the
    /// address is refused for the rest of the window, the right one too.
    pub failures: Failures,
    /// Cross-site login forms per address: refused, never counted in
    /// `failures` (any page a browser opens can send them, and counting
    /// them would let it lock the operator out); counted here only so that
    /// their records stay bounded.
    pub cross_site: Failures,
    /// Refused sign-ins through the identity provider per address (a
    /// callback without its cookie or state, a start the provider did
    /// not answer, the closed token form): anyone can send them, so they
    /// are counted only so that their records stay bounded, never to
    /// refuse (an address shared with a person signing in would lock
    /// them out).
    pub sign_ins: Failures,
}

/// Attempts per address (an IPv4 address, an IPv6 /64) in a window of
/// [`FAIL_WINDOW`] from the first; bounded to [`MAX_FAIL_ENTRIES`]
/// addresses.
///
/// A token that was right from an address (its bucket) within
/// [`PROVEN_FOR`] stays usable from there while the address is locked: a
/// gateway or an approver sharing an address (a NAT, an IPv6 /64) with
/// someone guessing is not locked out by the guesses. No guess gains by
/// it: only a token already known to be right passes.
#[derive(Default)]
pub struct Failures {
    by_addr: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    proven: Mutex<HashMap<(IpAddr, [u8; 32]), Instant>>,
}

/// How long a right token stays proven for its address after its last use.
pub const PROVEN_FOR: Duration = Duration::from_secs(24 * 3600);
/// Proven (address, token) pairs remembered; the least recently used
/// goes first.
pub const MAX_PROVEN: usize = 4096;

/// An attempt refused because its address is past [`MAX_FAILURES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    /// Attempts of the address in the window, this one included.
    pub n: u32,
    /// Until the window ends (at least a second): the `Retry-After`.
    pub retry_after: Duration,
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
    /// Keeps the sessions in the database from now on.
    pub fn share(&mut self, shared: super::shared::SharedSessions) {
        self.shared = Some(shared);
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_digest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for `user`; returns the cookie value. A user at
    /// [`MAX_PER_USER`] loses their own oldest session; a full table
    /// refuses the login (it never ends someone else's session).
    pub fn open(&self, user: User) -> Result<(String, Session), String> {
        let id = random_token();
        let now = Instant::now();
        let s = Session {
            user,
            csrf: random_token(),
            flash: None,
            created: now,
            used: now,
        };
        if let Some(db) = &self.shared {
            db.open(digest(&id), &s)?;
            return Ok((id, s));
        }
        let mut all = self.lock_sessions();
        all.retain(|_, s| live(s, now));
        let mine: Vec<([u8; 32], Instant)> = all
            .iter()
            .filter(|(_, x)| x.user.same_user(&s.user))
            .map(|(k, x)| (*k, x.created))
            .collect();
        if mine.len() >= MAX_PER_USER {
            if let Some((k, _)) = mine.iter().min_by_key(|(_, c)| *c) {
                all.remove(k);
            }
        }
        if all.len() >= MAX_SESSIONS {
            return Err(format!(
                "the console holds {MAX_SESSIONS} sessions: log in again when some have ended"
            ));
        }
        all.insert(digest(&id), s.clone());
        Ok((id, s))
    }

    /// The live session of a cookie value, refreshed.
    pub fn get(&self, id: &str) -> Option<Session> {
        if let Some(db) = &self.shared {
            return db.get(digest(id));
        }
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
        if let Some(db) = &self.shared {
            return db.flash(digest(id), Some(msg));
        }
        if let Some(s) = self.lock_sessions().get_mut(&digest(id)) {
            s.flash = Some(msg);
        }
    }

    /// Takes the session's message, if any.
    pub fn take_flash(&self, id: &str) -> Option<String> {
        if let Some(db) = &self.shared {
            return db.take_flash(digest(id));
        }
        self.lock_sessions()
            .get_mut(&digest(id))
            .and_then(|s| s.flash.take())
    }

    pub fn close(&self, id: &str) {
        if let Some(db) = &self.shared {
            return db.close(digest(id));
        }
        self.lock_sessions().remove(&digest(id));
    }

    pub fn count(&self) -> usize {
        if let Some(db) = &self.shared {
            return db.count();
        }
        let now = Instant::now();
        let mut all = self.lock_sessions();
        all.retain(|_, s| live(s, now));
        all.len()
    }
}

impl Failures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.by_addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one attempt of `ip` (a window over starts again); returns
    /// the attempts in the window, this one included, and when the window
    /// ends.
    fn count(f: &mut HashMap<IpAddr, (u32, Instant)>, ip: IpAddr) -> (u32, Duration) {
        let now = Instant::now();
        let ip = bucket(ip);
        if f.len() >= MAX_FAIL_ENTRIES {
            f.retain(|_, (_, since)| since.elapsed() <= FAIL_WINDOW);
        }
        if f.len() >= MAX_FAIL_ENTRIES && !f.contains_key(&ip) {
            // Full of recent failures from as many addresses: the oldest
            // entry goes (the table stays bounded; an attacker with more
            // addresses than it holds gets more tries).
            if let Some(k) = f.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| *k) {
                f.remove(&k);
            }
        }
        let e = f.entry(ip).or_insert((0, now));
        if e.1.elapsed() > FAIL_WINDOW {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(1);
        let left = FAIL_WINDOW.saturating_sub(e.1.elapsed());
        (e.0, left.max(Duration::from_secs(1)))
    }

    /// Reserves an attempt of `ip` before its token is known, counted as a
    /// failure until [`Failures::give_back`] says it was right. Checking
    /// first and counting after the token is read would let concurrent
    /// attempts all pass the check before any failure was counted: forty
    /// logins at once would be forty guesses. `Ok(n)`: the attempts in
    /// the window, this one included (at most [`MAX_FAILURES`]); a refused
    /// attempt is counted too, so the first refusal can be told apart.
    pub fn reserve(&self, ip: IpAddr) -> Result<u32, Locked> {
        let (n, retry_after) = Self::count(&mut self.lock(), ip);
        if n > MAX_FAILURES {
            Err(Locked { n, retry_after })
        } else {
            Ok(n)
        }
    }

    /// Gives back the attempt [`Failures::reserve`] counted: its token was
    /// right (or it presented none). The failures before it stay: a
    /// success does not reset them, they age out with the window.
    pub fn give_back(&self, ip: IpAddr) {
        Self::uncount(&mut self.lock(), ip);
    }

    fn uncount(f: &mut HashMap<IpAddr, (u32, Instant)>, ip: IpAddr) {
        let ip = bucket(ip);
        if let Some(e) = f.get_mut(&ip) {
            e.0 = e.0.saturating_sub(1);
            if e.0 == 0 {
                f.remove(&ip);
            }
        }
    }

    /// Checks `token`, which `ip` presents: `check` runs while the
    /// address is within its allowance, under the table's lock, so its
    /// failure is counted before another attempt of the address is looked
    /// at; a right token (`Some`) is not counted, and is proven for the
    /// address. Past the allowance only a proven token is checked.
    pub fn check<T>(
        &self,
        ip: IpAddr,
        token: &str,
        check: impl FnOnce() -> Option<T>,
    ) -> Result<Option<T>, Locked> {
        let mut f = self.lock();
        let (n, retry_after) = Self::count(&mut f, ip);
        let key = (bucket(ip), digest(token));
        if n > MAX_FAILURES {
            Self::uncount(&mut f, ip);
            let proven = self
                .lock_proven()
                .get(&key)
                .is_some_and(|at| at.elapsed() <= PROVEN_FOR);
            if proven {
                if let Some(found) = check() {
                    self.prove(key);
                    return Ok(Some(found));
                }
            }
            Self::count(&mut f, ip);
            return Err(Locked { n, retry_after });
        }
        let found = check();
        if found.is_some() {
            Self::uncount(&mut f, ip);
            self.prove(key);
        }
        Ok(found)
    }

    /// Proven (address, token) pairs held (at most [`MAX_PROVEN`]).
    pub fn proven(&self) -> usize {
        self.lock_proven().len()
    }

    fn lock_proven(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, [u8; 32]), Instant>> {
        self.proven.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn prove(&self, key: (IpAddr, [u8; 32])) {
        let mut p = self.lock_proven();
        if p.len() >= MAX_PROVEN && !p.contains_key(&key) {
            p.retain(|_, at| at.elapsed() <= PROVEN_FOR);
            if p.len() >= MAX_PROVEN {
                if let Some(k) = p.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k) {
                    p.remove(&k);
                }
            }
        }
        p.insert(key, Instant::now());
    }
}

/// The unit failed logins are counted by: an IPv4 address, or an IPv6
/// /64 (one host usually holds a whole /64).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
        v4 => v4,
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
            actor: None,
            oidc: None,
            cli: false,
        }
    }

    #[test]
    fn sessions_open_find_and_close() {
        let s = Sessions::default();
        let (id, sess) = match s.open(user()) {
            Ok(x) => x,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.get(&id).map(|x| x.csrf), Some(sess.csrf));
        assert!(s.get("forged").is_none());
        s.close(&id);
        assert!(s.get(&id).is_none());
    }

    fn opened(s: &Sessions, u: User) -> String {
        match s.open(u) {
            Ok((id, _)) => id,
            Err(e) => panic!("{e}"),
        }
    }

    fn named(n: usize) -> User {
        User {
            name: format!("user{n}"),
            ..user()
        }
    }

    #[test]
    fn one_user_cannot_end_anothers_session() {
        let s = Sessions::default();
        let other = opened(&s, named(9999));
        // One user logging in again and again keeps MAX_PER_USER sessions.
        let first = opened(&s, user());
        for _ in 0..100 {
            assert!(s.open(user()).is_ok());
        }
        assert_eq!(s.count(), MAX_PER_USER + 1);
        assert!(s.get(&first).is_none(), "their own oldest went");
        assert!(s.get(&other).is_some(), "the other user's stays");
        // A full table refuses new logins rather than ending sessions.
        for n in 0..MAX_SESSIONS {
            let _ = s.open(named(n));
        }
        assert_eq!(s.count(), MAX_SESSIONS);
        assert!(s.open(named(5000)).is_err());
        assert!(s.get(&other).is_some());
    }

    #[test]
    fn a_viewer_cannot_end_the_sessions_of_a_tenant_admin_of_their_name() {
        let s = Sessions::default();
        let fiona = User {
            name: "fiona".into(),
            role: Role::Viewer,
            tenants: vec!["finance".into()],
            actor: Some(crate::admins::Actor {
                name: "fiona".into(),
                kind: crate::admins::Kind::TenantAdmin("finance".into()),
            }),
            oidc: None,
            cli: false,
        };
        let admins = opened(&s, fiona);
        for _ in 0..MAX_PER_USER {
            let _ = opened(
                &s,
                User {
                    name: "fiona".into(),
                    ..user()
                },
            );
        }
        assert!(s.get(&admins).is_some(), "the tenant admin's session stays");
    }

    #[test]
    fn failed_logins_are_limited_per_address() {
        let s = Failures::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for n in 1..=MAX_FAILURES {
            assert_eq!(s.reserve(ip), Ok(n));
        }
        let locked = s.reserve(ip).err();
        assert_eq!(locked.map(|l| l.n), Some(MAX_FAILURES + 1));
        assert!(locked.is_some_and(
            |l| l.retry_after <= FAIL_WINDOW && l.retry_after >= Duration::from_secs(1)
        ));
        assert!(s
            .reserve("192.0.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 1])))
            .is_ok());
        // One IPv6 /64 is one address.
        let a: IpAddr = "2001:db8::1".parse().unwrap_or(ip);
        for n in 0..MAX_FAILURES {
            let other: IpAddr = format!("2001:db8::{:x}", n + 2).parse().unwrap_or(ip);
            assert!(s.reserve(other).is_ok());
        }
        assert!(s.reserve(a).is_err());
        assert!(s.reserve("2001:db8:0:1::1".parse().unwrap_or(ip)).is_ok());
    }

    #[test]
    fn attempts_in_flight_at_once_are_counted_before_any_token_is_read() {
        // Forty logins at once from one address: each reserves its attempt
        // before its form is read, so only MAX_FAILURES get to present a
        // token; a right one gives its reservation back, the wrong ones'
        // stay.
        let s = Failures::default();
        let ip: IpAddr = "198.51.100.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let let_in = (0..40).filter(|_| s.reserve(ip).is_ok()).count();
        assert_eq!(let_in, MAX_FAILURES as usize);
        let s = Failures::default();
        for _ in 0..MAX_FAILURES - 1 {
            assert!(s.reserve(ip).is_ok());
        }
        assert!(s.reserve(ip).is_ok(), "the tenth attempt");
        s.give_back(ip);
        assert!(s.reserve(ip).is_ok(), "a right token's attempt came back");
        assert!(s.reserve(ip).is_err());
    }

    #[test]
    fn a_checked_token_counts_only_when_it_is_wrong() {
        let s = Failures::default();
        let ip: IpAddr = "203.0.113.9".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for _ in 0..100 {
            assert_eq!(s.check(ip, "right", || Some(())), Ok(Some(())));
        }
        for i in 0..MAX_FAILURES {
            assert_eq!(s.check(ip, &format!("guess {i}"), || None::<()>), Ok(None));
        }
        // Past the allowance a right token not proven here waits, and is
        // not looked at.
        let mut looked = false;
        let r = s.check(ip, "another right one", || {
            looked = true;
            Some(())
        });
        assert!(r.is_err() && !looked);
        // One proven right from this address (its /64 for IPv6) is let in;
        // from another address it is just a token.
        assert_eq!(s.check(ip, "right", || Some(())), Ok(Some(())));
        // A proven token that is no longer right (revoked) is locked out
        // with the rest, and counted.
        assert!(s.check(ip, "right", || None::<()>).is_err());
        assert!(s.check(ip, "guess 0", || None::<()>).is_err());
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or(ip);
        assert_eq!(s.check(v6, "six", || Some(())), Ok(Some(())));
        for i in 0..=MAX_FAILURES {
            let other: IpAddr = format!("2001:db8::{:x}", i + 2).parse().unwrap_or(ip);
            let _ = s.check(other, &format!("guess {i}"), || None::<()>);
        }
        let neighbour: IpAddr = "2001:db8::ff".parse().unwrap_or(ip);
        assert_eq!(s.check(neighbour, "six", || Some(())), Ok(Some(())));
        assert!(s.check(neighbour, "seven", || Some(())).is_err());
    }
}
