//! Which request each reply answers, on every transport.
//!
//! Filters judge a reply by the request it answers (a `tools/list` result is
//! filtered, a `tools/call` result checked against the tool's output schema),
//! so the gateway must know that request wherever the reply arrives: in the
//! POST's own JSON or SSE reply (the exchange knows its ids), on the GET
//! stream of a legacy HTTP+SSE session, or in a replay after `Last-Event-ID`.
//! The ledger remembers, per server, principal and session, the id → method
//! of every client request whose reply may arrive elsewhere, and the ids of
//! the server→client requests the gateway let through, which are the only
//! client responses it accepts. Entries are bounded in number and expire.

use std::sync::Arc;
use std::time::Duration;

use warden_filters::Id;

/// What a remembered client request was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub method: String,
    /// The tool, prompt or resource it named.
    pub target: Option<String>,
    /// `sha256:<hex>` of its raw arguments (a multi-round-trip retry must
    /// carry the same).
    pub args_digest: Option<String>,
    /// The audit link of the task it named (`tasks/*`).
    pub task: Option<String>,
}

impl Asked {
    /// Whether `other` is the same request (a retry): the same method,
    /// target and task, whatever its arguments.
    fn same_request(&self, other: &Asked) -> bool {
        self.method == other.method && self.target == other.target && self.task == other.task
    }
}

pub struct Ledger {
    /// Client requests whose replies may arrive on another exchange.
    asked: moka::sync::Cache<String, Arc<Asked>>,
    /// Server→client requests the client may answer (single use).
    owed: moka::sync::Cache<String, ()>,
}

/// Scope of one session: server, owner (see `sessions::owner_key`), session key.
pub struct Scope<'a> {
    pub server: &'a str,
    pub owner: &'a str,
    pub session: &'a str,
}

fn key(scope: &Scope<'_>, id: &Id) -> String {
    let mut k =
        String::with_capacity(scope.server.len() + scope.owner.len() + scope.session.len() + 24);
    k.push_str(scope.server);
    k.push('\0');
    k.push_str(scope.owner);
    k.push('\0');
    k.push_str(scope.session);
    k.push('\0');
    match id {
        Id::Num(n) => {
            k.push('n');
            k.push_str(&n.to_string());
        }
        Id::Str(s) => {
            k.push('s');
            k.push_str(s);
        }
    }
    k
}

impl Ledger {
    /// Entries remembered now (both caches).
    pub fn len(&self) -> u64 {
        self.asked.entry_count() + self.owed.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs the caches' pending evictions, so that `len` is current.
    pub fn sync(&self) {
        self.asked.run_pending_tasks();
        self.owed.run_pending_tasks();
    }

    pub fn new(capacity: u64, ttl: Duration) -> Ledger {
        Ledger {
            asked: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(ttl)
                .build(),
            owed: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(ttl)
                .build(),
        }
    }

    /// A client request was forwarded and its reply may come on another exchange.
    pub fn asked(&self, scope: &Scope<'_>, id: &Id, asked: Arc<Asked>) {
        self.asked.insert(key(scope, id), asked);
    }

    /// Remembers a request of an exchange without a session, where ids are
    /// not claimed (stateless clients reuse them freely): when `id`
    /// already names another request, neither is remembered, so a reply
    /// replayed elsewhere is judged as one to an unknown request (by its
    /// shape), never as the other request's.
    pub fn asked_unclaimed(&self, scope: &Scope<'_>, id: &Id, asked: Arc<Asked>) {
        let k = key(scope, id);
        match self.asked.get(&k) {
            // Two requests under one id: the id answers nothing from now on
            // (until the entry expires), whatever a later request adds.
            Some(held) if held.method.is_empty() || !held.same_request(&asked) => {
                self.asked.insert(
                    k,
                    Arc::new(Asked {
                        method: String::new(),
                        target: None,
                        args_digest: None,
                        task: None,
                    }),
                );
            }
            _ => self.asked.insert(k, asked),
        }
    }

    /// Claims `id` in the session for a request about to be forwarded. An
    /// id names one request for as long as the ledger remembers it (MCP:
    /// a requestor never reuses an id within a session): `false` when it
    /// already names another (another method, target or task), whose
    /// replies, replayed on another exchange, would otherwise be judged as
    /// this one's. The same request sent again (a retry) keeps its claim.
    pub fn claim(&self, scope: &Scope<'_>, id: &Id, asked: &Arc<Asked>) -> bool {
        let entry = self
            .asked
            .entry(key(scope, id))
            .or_insert_with(|| asked.clone());
        if entry.is_fresh() {
            return true;
        }
        let held = entry.value();
        let same = held.same_request(asked);
        if same && **held != **asked {
            self.asked.insert(entry.key().clone(), asked.clone());
        }
        same
    }

    /// The request a reply on another exchange answers. Kept after the
    /// answer: a replayed stream answers again, and is judged the same way.
    pub fn answered(&self, scope: &Scope<'_>, id: &Id) -> Option<Arc<Asked>> {
        self.asked
            .get(&key(scope, id))
            .filter(|a| !a.method.is_empty())
    }

    /// A server→client request went out to the client.
    pub fn owe(&self, scope: &Scope<'_>, id: &Id) {
        self.owed.insert(key(scope, id), ());
    }

    /// Whether the client may answer server→client request `id`; consumes it.
    pub fn settle(&self, scope: &Scope<'_>, id: &Id) -> bool {
        self.owed.remove(&key(scope, id)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(method: &str, target: Option<&str>) -> Arc<Asked> {
        Arc::new(Asked {
            method: method.into(),
            target: target.map(str::to_owned),
            args_digest: None,
            task: None,
        })
    }

    /// Without a session ids are not claimed: an id that named two
    /// requests answers neither on another exchange, nor a third.
    #[test]
    fn an_unclaimed_id_naming_two_requests_answers_none() {
        let l = Ledger::new(100, Duration::from_secs(60));
        let sc = Scope {
            server: "s",
            owner: "t\0alice",
            session: "",
        };
        let id = Id::Num(7.into());
        l.asked_unclaimed(&sc, &id, asked("tools/list", None));
        l.asked_unclaimed(&sc, &id, asked("tools/list", None));
        assert_eq!(
            l.answered(&sc, &id).map(|a| a.method.clone()).as_deref(),
            Some("tools/list")
        );
        l.asked_unclaimed(&sc, &id, asked("tools/call", Some("echo")));
        assert!(l.answered(&sc, &id).is_none());
        l.asked_unclaimed(&sc, &id, asked("tools/call", Some("echo")));
        assert!(l.answered(&sc, &id).is_none());
    }

    #[test]
    fn scoped_by_server_owner_and_session() {
        let l = Ledger::new(100, Duration::from_secs(60));
        let a = Scope {
            server: "s",
            owner: "t\0alice",
            session: "1",
        };
        let b = Scope {
            server: "s",
            owner: "t\0bob",
            session: "1",
        };
        let id = Id::Num(7.into());
        l.asked(&a, &id, asked("tools/list", None));
        assert_eq!(
            l.answered(&a, &id).map(|x| x.method.clone()).as_deref(),
            Some("tools/list")
        );
        assert!(l.answered(&b, &id).is_none());
        assert!(l.answered(&a, &Id::Str("7".into())).is_none());
        let call = |tool: &str| asked("tools/call", Some(tool));
        let ping = asked("ping", None);
        let c = Id::Num(8.into());
        assert!(l.claim(&a, &c, &call("echo")), "a fresh id");
        assert!(l.claim(&a, &c, &call("echo")), "the same request again");
        assert!(!l.claim(&a, &c, &call("purge")), "another tool");
        assert!(!l.claim(&a, &c, &ping), "another method");
        assert!(!l.claim(&a, &id, &ping), "an id asked before");
        assert!(l.claim(&b, &c, &ping), "another principal's session");
        assert_eq!(
            l.answered(&a, &c).and_then(|x| x.target.clone()).as_deref(),
            Some("echo"),
            "a refused claim relabels nothing"
        );
        l.owe(&a, &id);
        assert!(!l.settle(&b, &id));
        assert!(l.settle(&a, &id));
        assert!(!l.settle(&a, &id), "single use");
    }
}
