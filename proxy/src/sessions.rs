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
        Sessions {
            sticky: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
        }
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

    /// Whether the client of `session` declared URL-mode elicitation.
    pub fn url_elicitation(&self, server: &str, session: &str) -> bool {
        self.sticky
            .get(&sticky_key(server, session))
            .is_some_and(|e| e.url_elicitation)
    }

    /// Records the replica serving `session` and binds the session to `owner`
    /// (see [`owner_key`]); an existing binding keeps its first owner and
    /// what its client declared at `initialize` (`url_elicitation`).
    pub fn remember(
        &self,
        server: &str,
        session: &str,
        addr: SocketAddr,
        owner: &str,
        url_elicitation: bool,
    ) {
        let key = sticky_key(server, session);
        let (owner, url_elicitation) = match self.sticky.get(&key) {
            Some(e) => (e.owner, e.url_elicitation),
            None => (owner.into(), url_elicitation),
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

    pub fn forget(&self, server: &str, session: &str) {
        self.sticky.invalidate(&sticky_key(server, session));
    }
}

/// The identity a session is bound to: tenant and principal id.
pub fn owner_key(p: &warden_filters::Principal) -> String {
    p.owner_key()
}

/// Stickiness key of a legacy session: its upstream POST path and query.
pub fn legacy_key(upstream_path_and_query: &str) -> String {
    format!("legacy:{upstream_path_and_query}")
}

fn sticky_key(server: &str, session: &str) -> String {
    let mut k = String::with_capacity(server.len() + session.len() + 1);
    k.push_str(server);
    k.push('\0');
    k.push_str(session);
    k
}
