//! Sessions: which upstream replica serves each MCP session and which
//! principal opened it (the sticky table), and the keys sessions are known
//! by. Sealed session tokens themselves are in `seal`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// `server \0 session` → the replica that serves the session and the
/// principal that opened it.
pub struct Sessions {
    sticky: moka::sync::Cache<String, SessionEntry>,
    /// `server \0 canonical path` of every legacy (HTTP+SSE) message
    /// endpoint an `endpoint` event named: a POST there belongs to a
    /// legacy session, whatever its query says.
    legacy_paths: moka::sync::Cache<String, ()>,
    /// Whether any `endpoint` event was seen: until then no POST is a
    /// legacy one, and none pays for the lookup.
    any_legacy: std::sync::atomic::AtomicBool,
    /// Session tokens opened lately, with the key that opened them: a
    /// session's every request presents the same token, and opening it
    /// (AEAD and JSON) costs more than the rest of its admission. Keyed by
    /// a seeded fast hash: only tokens that opened (this gateway sealed
    /// them) are ever inserted.
    opened: moka::sync::Cache<Arc<str>, Opened, foldhash::fast::RandomState>,
    /// When this process started (Unix seconds): a sealed token without an
    /// issue time counts its age from here (`SealedSession::expired`).
    pub started: u64,
}

/// A token opened by the sealer whose id is `sealer`.
#[derive(Clone)]
struct Opened {
    sealer: [u8; 32],
    session: Arc<crate::sessions::seal::SealedSession>,
}

#[derive(Clone)]
struct SessionEntry {
    addr: SocketAddr,
    owner: Arc<str>,
    /// The client declared URL-mode elicitation when it initialised.
    url_elicitation: bool,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(1_000_000)
    }
}

impl Sessions {
    /// At most `capacity` sessions remembered (the least recently used go:
    /// a sealed session id still names its replica and owner).
    pub fn new(capacity: u64) -> Self {
        Sessions {
            sticky: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            legacy_paths: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            any_legacy: std::sync::atomic::AtomicBool::new(false),
            // A token and what it opens are about four sticky entries.
            opened: moka::sync::Cache::builder()
                .max_capacity((capacity / 4).max(1))
                .time_to_idle(Duration::from_secs(3600))
                .build_with_hasher(foldhash::fast::RandomState::default()),
            started: crate::sessions::seal::unix_now(),
        }
    }

    /// Sessions remembered now (an opened token counts as four).
    pub fn len(&self) -> u64 {
        self.sticky.entry_count() + self.legacy_paths.entry_count() + 4 * self.opened.entry_count()
    }

    /// What `token` opens to under `sealer`: remembered from an earlier
    /// request of the session, else opened now (and remembered). A token
    /// another key sealed opens only under that key.
    pub fn open(
        &self,
        sealer: &crate::sessions::seal::Sealer,
        token: &str,
    ) -> Option<Arc<crate::sessions::seal::SealedSession>> {
        if let Some(o) = self.opened.get(token) {
            if o.sealer == sealer.id {
                return Some(o.session);
            }
        }
        let session = Arc::new(sealer.open(token)?);
        self.opened.insert(
            token.into(),
            Opened {
                sealer: sealer.id,
                session: session.clone(),
            },
        );
        Some(session)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Sessions {
    /// The replica this process saw serve `session`.
    pub fn replica(&self, server: &str, session: &str) -> Option<SocketAddr> {
        self.sticky
            .get(&sticky_key(server, session))
            .map(|e| e.addr)
    }

    /// Who opened `session` on `server`, when known.
    pub fn owner(&self, server: &str, session: &str) -> Option<Arc<str>> {
        self.sticky
            .get(&sticky_key(server, session))
            .map(|e| e.owner)
    }

    /// Who opened `session` on `server`'s replica `replica` (any replica
    /// when `None`), when known. Replicas whose session ids are counters
    /// hand one id out on each: a binding made on one replica says nothing
    /// of the session a sealed id names on another.
    pub fn owner_on(
        &self,
        server: &str,
        session: &str,
        replica: Option<SocketAddr>,
    ) -> Option<Arc<str>> {
        self.sticky
            .get(&sticky_key(server, session))
            .filter(|e| replica.is_none_or(|r| r == e.addr))
            .map(|e| e.owner)
    }

    /// Whether the client of `session` declared URL-mode elicitation.
    pub fn url_elicitation(&self, server: &str, session: &str) -> bool {
        self.sticky
            .get(&sticky_key(server, session))
            .is_some_and(|e| e.url_elicitation)
    }

    /// Records the replica serving `session` and binds the session to `owner`
    /// (see [`owner_key`]); an existing binding keeps its first owner and
    /// what its client declared at `initialize` (`url_elicitation`),
    /// unless the session is `fresh`: the server created it for `owner`
    /// just now (its `initialize` reply, a legacy `endpoint` event), so a
    /// session it handed out under that id before is over, and its holder
    /// is refused here from now on.
    pub fn remember(
        &self,
        server: &str,
        session: &str,
        addr: SocketAddr,
        owner: &str,
        url_elicitation: bool,
        fresh: bool,
    ) {
        let key = sticky_key(server, session);
        let (owner, url_elicitation) = match self.sticky.get(&key) {
            Some(e) if !fresh => (e.owner, e.url_elicitation),
            _ => (owner.into(), url_elicitation),
        };
        self.sticky.insert(
            key,
            SessionEntry {
                addr,
                owner,
                url_elicitation,
            },
        );
    }

    /// A reply named `session`, served by `addr`: an existing binding
    /// follows the replica; none is made.
    pub fn seen(&self, server: &str, session: &str, addr: SocketAddr) {
        let key = sticky_key(server, session);
        if let Some(e) = self.sticky.get(&key) {
            if e.addr != addr {
                self.sticky.insert(key, SessionEntry { addr, ..e });
            }
        }
    }

    /// An `endpoint` event named `path` (the upstream's, without its query)
    /// as a legacy session's message endpoint.
    pub fn remember_legacy_path(&self, server: &str, path: &str) {
        self.legacy_paths
            .insert(sticky_key(server, &canonical_path(path)), ());
        self.any_legacy
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether a POST to `path` (the upstream's, without its query) is one
    /// of a legacy session: its path is, read as a server would read it, a
    /// message endpoint some `endpoint` event named.
    /// A path below one counts too: a server may route its message
    /// endpoint by prefix (the Python SDK mounts `/messages/`), so
    /// `/messages/x?session_id=…` reaches the same session.
    pub fn is_legacy_path(&self, server: &str, path: &str) -> bool {
        if !self.any_legacy.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let path = canonical_path(path);
        // Its first parents, up to a bound on the segments looked at, and
        // the path itself.
        path.match_indices('/')
            .map(|(i, _)| i)
            .skip(1)
            .take(MAX_LEGACY_DEPTH)
            .chain(std::iter::once(path.len()))
            .any(|end| {
                self.legacy_paths
                    .contains_key(&sticky_key(server, &path[..end]))
            })
    }

    pub fn forget(&self, server: &str, session: &str) {
        self.sticky.invalidate(&sticky_key(server, session));
    }
}

/// The identity a session is bound to: tenant and principal id.
pub fn owner_key(p: &warden_filters::Principal) -> String {
    p.owner_key()
}

/// How many leading segments of a POST's path are compared with the
/// legacy message endpoints.
const MAX_LEGACY_DEPTH: usize = 16;

/// Stickiness key of a legacy session: its upstream POST path and query.
pub fn legacy_key(upstream_path_and_query: &str) -> String {
    format!("legacy:{upstream_path_and_query}")
}

/// A path as the loosest server router reads it: percent-decoded, in lower
/// case, repeated and trailing slashes collapsed, dot segments resolved. Two spellings a server may
/// route alike compare equal (the comparison only ever widens what counts
/// as a legacy endpoint, so folding too much is safe).
pub fn canonical_path(path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut segs: Vec<String> = Vec::new();
    for seg in decoded.split(['/', '\\']).filter(|s| !s.is_empty()) {
        match seg {
            "." => {}
            ".." => {
                segs.pop();
            }
            // A `;` starts path parameters, which servlet containers drop
            // before routing (`/message;x` is `/message`).
            _ => segs.push(
                seg.split(';')
                    .next()
                    .unwrap_or("")
                    .chars()
                    .flat_map(char::to_lowercase)
                    .collect(),
            ),
        }
    }
    format!("/{}", segs.join("/"))
}

fn sticky_key(server: &str, session: &str) -> String {
    let mut k = String::with_capacity(server.len() + session.len() + 1);
    k.push_str(server);
    k.push('\0');
    k.push_str(session);
    k
}

#[cfg(test)]
mod tests {
    use super::canonical_path;

    #[test]
    fn paths_a_router_reads_alike_compare_equal() {
        for p in [
            "/messages/",
            "/messages",
            "//Messages//",
            "/%6Dessages/",
            "/x/../messages",
            "/./messages/.",
            "/x/%2e%2e/messages",
            "\\messages",
        ] {
            assert_eq!(canonical_path(p), "/messages", "{p}");
        }
        assert_eq!(canonical_path("/"), "/");
        assert_eq!(canonical_path("/a/b"), "/a/b");
    }

    /// A path below a message endpoint is one too (a server mounting
    /// `/messages/` routes `/messages/x` to it); a sibling is not.
    #[test]
    fn paths_below_a_message_endpoint_are_legacy_posts() {
        let s = super::Sessions::new(1000);
        assert!(!s.is_legacy_path("m", "/messages/"));
        s.remember_legacy_path("m", "/messages/");
        for p in [
            "/messages/",
            "/messages",
            "/messages/x",
            "/MESSAGES/x/y",
            "/%6Dessages/x",
            "/messages;jsessionid=1",
            "/messages%3Bx/y",
        ] {
            assert!(s.is_legacy_path("m", p), "{p}");
        }
        for p in ["/messagesx", "/mcp", "/", "/x/messages"] {
            assert!(!s.is_legacy_path("m", p), "{p}");
        }
        assert!(!s.is_legacy_path("other", "/messages/x"));
        // An endpoint deeper than the parents looked at is still one.
        let deep = "/a".repeat(20) + "/messages";
        s.remember_legacy_path("m", &deep);
        assert!(s.is_legacy_path("m", &deep));
    }
}
