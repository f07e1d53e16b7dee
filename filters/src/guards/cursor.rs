//! Handles the gateway relays from a server to one client, bound to that
//! client: list cursors (`nextCursor` → `cursor`) and SSE event ids (`id:` →
//! `Last-Event-ID`). A server hands them out by its own rules, and a server
//! that resumes a stream or pages a list by them trusts whoever presents
//! them. So the client never sees the server's handle: it gets a token
//! sealed (ChaCha20-Poly1305, the fleet's or the install's key) over the
//! handle, its kind, the principal (for an unauthenticated client without
//! a session, also its address: [`owner_of`]), the server, the session
//! and, for a cursor, the list method. Any replica with the key opens it for the same
//! principal, server, session and method; for anyone else it is unknown.
//! (Task ids and multi-round-trip state are sealed the same way by their
//! own filters; session ids by the proxy.)

use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::engines::token::{TokenKey, NONCE_LEN};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;

/// The owner key a handle is bound to: the principal's
/// ([`crate::engines::identity::Principal::owner`]). Every unauthenticated
/// client is the one anonymous principal; with a session, the session
/// (which every handle binds too) tells them apart, but without one
/// nothing does, and each would open the others' handles (list a task
/// another created, resume another's stream). So the anonymous principal
/// without a session owns handles per client address, as a virtual
/// server's sessions are (`aggregate::owner_digest`): one client behind
/// one address keeps its handles, another address opens none of them.
pub fn owner_of<'a>(
    principal: &'a crate::engines::identity::Principal,
    session: Option<&str>,
    source: Option<std::net::IpAddr>,
) -> std::borrow::Cow<'a, str> {
    let owner = principal.owner();
    if principal.auth != crate::engines::identity::AuthMethod::Anonymous || session.is_some() {
        return std::borrow::Cow::Borrowed(owner);
    }
    // `::ffff:a.b.c.d` and `a.b.c.d` are one client.
    let at = source.map(|ip| ip.to_canonical().to_string());
    std::borrow::Cow::Owned(format!("{owner}\0@{}", at.unwrap_or_default()))
}

/// What a handle names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleKind {
    /// A list's `nextCursor`.
    Cursor,
    /// An SSE event's `id:`.
    EventId,
}

impl HandleKind {
    fn prefix(self) -> &'static str {
        match self {
            HandleKind::Cursor => "wc1.",
            HandleKind::EventId => "we1.",
        }
    }
    fn aad(self) -> &'static [u8] {
        match self {
            HandleKind::Cursor => b"warden cursor v1",
            HandleKind::EventId => b"warden event id v1",
        }
    }
}

/// To whom a handle was given.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    /// The principal's owner key (canonical person).
    pub owner: &'a str,
    pub server: &'a str,
    pub session: Option<&'a str>,
    /// For a cursor, the list method it pages.
    pub scope: &'a str,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Sealed {
    h: String,
    o: String,
    v: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    m: String,
}

/// Seals and opens handles.
pub struct HandleSealer {
    key: TokenKey,
    /// Keys the nonce: one handle sealed for one holder always gives the same
    /// token (a client comparing event ids sees stable ones).
    nonce_key: [u8; 32],
}

impl HandleSealer {
    pub fn new(secret: &[u8]) -> HandleSealer {
        let key: [u8; 32] = Sha256::new()
            .chain_update(b"warden handle seal key v1\0")
            .chain_update(secret)
            .finalize()
            .into();
        let nonce_key: [u8; 32] = Sha256::new()
            .chain_update(b"warden handle nonce key v1\0")
            .chain_update(key)
            .finalize()
            .into();
        HandleSealer {
            key: TokenKey::new(&key),
            nonce_key,
        }
    }

    /// A sealer with a random key (handles end with the process).
    pub fn random() -> HandleSealer {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).expect("system randomness");
        HandleSealer::new(&k)
    }

    pub fn seal(&self, kind: HandleKind, handle: &str, to: Holder<'_>) -> Option<String> {
        let buf = serde_json::to_vec(&Sealed {
            h: handle.to_owned(),
            o: to.owner.to_owned(),
            v: to.server.to_owned(),
            x: to.session.map(str::to_owned),
            m: to.scope.to_owned(),
        })
        .ok()?;
        let digest = Sha256::new()
            .chain_update(self.nonce_key)
            .chain_update(kind.aad())
            .chain_update(&buf)
            .finalize();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&digest[..NONCE_LEN]);
        self.key.seal(kind.prefix(), kind.aad(), nonce, buf)
    }

    /// The server's handle, when `token` was sealed for exactly this holder.
    pub fn open(&self, kind: HandleKind, token: &str, by: Holder<'_>) -> Option<String> {
        let plain = self.key.open(kind.prefix(), kind.aad(), token, 8192)?;
        let s: Sealed = serde_json::from_slice(&plain).ok()?;
        (s.o == by.owner && s.v == by.server && s.x.as_deref() == by.session && s.m == by.scope)
            .then_some(s.h)
    }
}

/// The list methods whose results page with `nextCursor`.
const PAGED: &[&str] = &[
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "tasks/list",
];

/// Seals list cursors for the principal, session and list they page.
pub struct CursorFilter {
    sealer: Arc<HandleSealer>,
}

impl CursorFilter {
    pub fn new(sealer: Arc<HandleSealer>) -> Self {
        CursorFilter { sealer }
    }
}

fn holder<'a>(ctx: &'a Exchange<'_>, owner: &'a str, method: &'a str) -> Holder<'a> {
    Holder {
        owner,
        server: ctx.server,
        session: ctx.session_id,
        scope: method,
    }
}

impl McpFilter for CursorFilter {
    fn name(&self) -> &'static str {
        "cursor"
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::Only(PAGED),
            responses: Methods::Only(PAGED),
        }
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        let Some(method) = env.method.as_deref().filter(|m| PAGED.contains(m)) else {
            return Decision::Pass;
        };
        if env.kind != Kind::Request || !env.has_params {
            return Decision::Pass;
        }
        let Some(v) = msg.value() else {
            return Decision::Pass;
        };
        let cursor = match v.get("params").and_then(|p| p.get("cursor")) {
            None => return Decision::Pass,
            Some(Json::String(c)) => c,
            Some(_) => return invalid_cursor(),
        };
        let owner = owner_of(ctx.principal, ctx.session_id, ctx.source_ip);
        let Some(raw) = self
            .sealer
            .open(HandleKind::Cursor, cursor, holder(ctx, &owner, method))
        else {
            return invalid_cursor();
        };
        let mut out = v.clone();
        if let Some(p) = out.get_mut("params").and_then(Json::as_object_mut) {
            p.insert("cursor".into(), Json::String(raw));
        }
        Decision::rewrite(&out)
    }

    fn on_response(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        let Some(method) = msg.request_method.filter(|m| PAGED.contains(m)) else {
            return Decision::Pass;
        };
        if env.kind != Kind::Response || env.is_error {
            return Decision::Pass;
        }
        let Some(v) = msg.value() else {
            return crate::chain::filter::unreadable_reply();
        };
        let next = match v.get("result").and_then(|r| r.get("nextCursor")) {
            None | Some(Json::Null) => return Decision::Pass,
            Some(Json::String(c)) => c,
            Some(_) => return crate::chain::filter::unreadable_reply(),
        };
        let owner = owner_of(ctx.principal, ctx.session_id, ctx.source_ip);
        let Some(token) = self
            .sealer
            .seal(HandleKind::Cursor, next, holder(ctx, &owner, method))
        else {
            return crate::chain::filter::unreadable_reply();
        };
        let mut out = v.clone();
        if let Some(r) = out.get_mut("result").and_then(Json::as_object_mut) {
            r.insert("nextCursor".into(), Json::String(token));
        }
        Decision::rewrite(&out)
    }
}

/// A cursor this principal was not given: what a server says of a cursor it
/// does not know.
fn invalid_cursor() -> Decision {
    Decision::Reject(Denial::error(
        JsonRpcError::new(codes::INVALID_PARAMS, "Invalid cursor"),
        "cursor_unknown",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_opens_only_for_its_holder() {
        let s = HandleSealer::new(b"fleet");
        let to = Holder {
            owner: "acme\0alice",
            server: "jira",
            session: Some("s1"),
            scope: "tools/list",
        };
        let t = s.seal(HandleKind::Cursor, "page-2", to).expect("seal");
        assert!(t.starts_with("wc1.") && !t.contains("page"));
        assert_eq!(
            s.open(HandleKind::Cursor, &t, to).as_deref(),
            Some("page-2")
        );
        // Stable for one holder.
        assert_eq!(
            s.seal(HandleKind::Cursor, "page-2", to).as_deref(),
            Some(&*t)
        );
        for other in [
            Holder {
                owner: "acme\0bob",
                ..to
            },
            Holder {
                server: "git",
                ..to
            },
            Holder {
                session: Some("s2"),
                ..to
            },
            Holder {
                session: None,
                ..to
            },
            Holder {
                scope: "prompts/list",
                ..to
            },
        ] {
            assert_eq!(s.open(HandleKind::Cursor, &t, other), None);
        }
        assert_eq!(s.open(HandleKind::EventId, &t, to), None, "kinds differ");
        assert_eq!(
            HandleSealer::new(b"other").open(HandleKind::Cursor, &t, to),
            None
        );
        // Another replica with the fleet's key opens it.
        assert_eq!(
            HandleSealer::new(b"fleet")
                .open(HandleKind::Cursor, &t, to)
                .as_deref(),
            Some("page-2")
        );
    }

    /// Unauthenticated clients without a session are one principal: a
    /// cursor one of them was given opens for it, not for a client at
    /// another address (nor does an event id, sealed for the same owner).
    #[test]
    fn anonymous_clients_without_a_session_do_not_share_cursors() {
        use crate::chain::filter::{Decision, Message, Notes};
        let f = CursorFilter::new(Arc::new(HandleSealer::new(b"fleet")));
        let anon = crate::engines::identity::Principal::anonymous();
        let from = |ip: &str| Exchange {
            source_ip: Some(ip.parse().expect("ip")),
            ..Exchange::new(&anon, "jira")
        };
        let (a, b) = (from("10.0.0.1"), from("10.0.0.2"));
        let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"nextCursor":"page-2"}}"#;
        let env = crate::protocol::jsonrpc::single(raw);
        let msg = Message::from_server(&env, raw.as_bytes(), Some("tools/list"), None);
        let Decision::Mutated(out) = f.on_response(&msg, &a, &mut Notes::default()) else {
            panic!("cursor not sealed")
        };
        let v: Json = serde_json::from_slice(&out).expect("json");
        let cursor = v["result"]["nextCursor"].as_str().expect("cursor");
        let next = format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{{"cursor":"{cursor}"}}}}"#
        );
        let env = crate::protocol::jsonrpc::single(&next);
        let msg = Message::new(&env, next.as_bytes());
        assert!(matches!(
            f.on_request(&msg, &a, &mut Notes::default()),
            Decision::Mutated(_)
        ));
        assert!(
            matches!(
                f.on_request(&msg, &b, &mut Notes::default()),
                Decision::Reject(_)
            ),
            "another client paged with the cursor"
        );
        // The same client over IPv4 and IPv4-mapped IPv6 is one client.
        assert_eq!(
            owner_of(&anon, None, Some("10.0.0.1".parse().expect("ip"))),
            owner_of(&anon, None, Some("::ffff:10.0.0.1".parse().expect("ip")))
        );
        // With a session, or authenticated, the address plays no part.
        assert_eq!(
            owner_of(&anon, Some("s"), Some("10.0.0.1".parse().expect("ip"))),
            anon.owner()
        );
    }
}
