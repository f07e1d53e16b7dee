//! Multi-round-trip requests (2026-07-28, SEP-2322): the client's
//! `inputResponses` are bound to the principal and the request they answer.
//!
//! A server that needs input answers a request (`tools/call`,
//! `prompts/get`, `resources/read`; any other it chooses to, a list
//! included) with an `InputRequiredResult` (`inputRequests`, and an
//! opaque `requestState` the client must echo on its retry). The revision
//! asks servers to bind that state to the principal and the request, but
//! nothing makes them, and a state-less round has nothing to bind. So the
//! gateway does it for every server: each `InputRequiredResult` reaches the
//! client with `requestState` replaced by `wm1.<base64url(nonce ‖
//! ChaCha20-Poly1305({server's state or none, owner, server, method, name or
//! URI, digest of the arguments, the input request keys, expiry}))>`. The
//! client echoes it byte for byte (the revision requires that); the gateway
//! opens it and forwards the server's own state, or none.
//!
//! Every request method but those that name a task (`tasks/get`,
//! `tasks/update`, `tasks/cancel`, `tasks/result`, whose `requestState` is
//! the task's own, see `task_binding_input`) is bound so: a
//! state the server hands out on a `tools/list` is as replayable as one on
//! a call, and a retry of any method carries none the gateway did not seal.
//!
//! A retry is refused (-32602, never forwarded) when its `requestState` does
//! not open (tampered, another gateway's), was issued to another principal,
//! for another server, method, name, or other arguments, or has expired.
//! An input response that answers a key the server never asked for, and
//! `inputResponses` with no state at all (input nobody asked for), are
//! dropped before the request is forwarded: the revision asks servers to
//! ignore what they do not recognise, and nothing unsolicited reaches one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::chain::filter::{
    Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes, Word,
};
use crate::engines::token::{TokenKey, NONCE_LEN};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;

pub use crate::chain::plan::args_digest;

const PREFIX: &str = "wm1.";
const AAD: &[u8] = b"warden input state v1";

/// How long a client has to answer a server's input requests.
pub const STATE_TTL: Duration = Duration::from_secs(15 * 60);

/// Whether a request of `method` is bound here: every method but those
/// that name a task (`tasks/get`, `tasks/update`, `tasks/cancel`,
/// `tasks/result`), whose `requestState` is the task's own (`task_binding_input`).
fn bound(method: &str) -> bool {
    !crate::guards::task_binding::names_task(method)
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Sealed {
    /// The server's own `requestState`, if it sent one.
    s: Option<String>,
    o: String,
    v: String,
    m: String,
    n: Option<String>,
    /// Canonical digest of the arguments (`tools/call`, `prompts/get`).
    a: Option<String>,
    /// The keys of the `inputRequests` this state answers.
    k: Vec<String>,
    /// Expiry, seconds since the epoch.
    e: u64,
    /// The MCP session it was issued on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
}

/// Seals and opens the gateway's `requestState`.
pub struct StateSealer {
    key: TokenKey,
    rng: SystemRandom,
}

impl StateSealer {
    pub fn new(secret: &[u8]) -> StateSealer {
        let key: [u8; 32] = Sha256::new()
            .chain_update(b"warden input state key v1\0")
            .chain_update(secret)
            .finalize()
            .into();
        StateSealer {
            key: TokenKey::new(&key),
            rng: SystemRandom::new(),
        }
    }

    /// A sealer with a random key (one replica).
    pub fn random() -> StateSealer {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).expect("system randomness");
        StateSealer::new(&k)
    }

    fn seal(&self, s: &Sealed) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        self.key
            .seal(PREFIX, AAD, nonce, serde_json::to_vec(s).ok()?)
    }

    fn open(&self, token: &str) -> Option<Sealed> {
        serde_json::from_slice(&self.key.open(PREFIX, AAD, token, 64 * 1024)?).ok()
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether a message may hold a member this filter reads (escaped member
/// names are left to the parse).
static REQUEST_STATE: Word = Word::new("requestState");
static INPUT_RESPONSES: Word = Word::new("inputResponses");
static INPUT_REQUIRED: Word = Word::new("input_required");

/// Binds multi-round-trip input to its principal and request (see the module
/// documentation).
pub struct InputStateFilter {
    sealer: std::sync::Arc<StateSealer>,
}

impl InputStateFilter {
    pub fn new(sealer: std::sync::Arc<StateSealer>) -> Self {
        InputStateFilter { sealer }
    }
}

impl std::fmt::Debug for InputStateFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InputStateFilter")
    }
}

fn refuse(why: &str) -> Decision {
    Decision::Reject(Denial::error(
        JsonRpcError::new(
            codes::INVALID_PARAMS,
            format!("Invalid requestState: {why}"),
        ),
        "input_state_invalid",
    ))
}

impl McpFilter for InputStateFilter {
    fn name(&self) -> &'static str {
        "input_state"
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::All,
            responses: Methods::All,
        }
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Request
            || !env.method.as_deref().is_some_and(bound)
            || !(msg.may_hold(&REQUEST_STATE) || msg.may_hold(&INPUT_RESPONSES))
        {
            return Decision::Pass;
        }
        let Some(v) = msg.value() else {
            return refuse("the request cannot be read");
        };
        let params = v.get("params");
        let state = params.and_then(|p| p.get("requestState"));
        let responses = params.and_then(|p| p.get("inputResponses"));
        let Some(state) = state else {
            // Input nobody asked for: dropped (the revision asks servers to
            // ignore what they do not recognise), never forwarded.
            return match responses {
                None => Decision::Pass,
                Some(_) => {
                    let mut out = v.clone();
                    if let Some(p) = out.get_mut("params").and_then(Json::as_object_mut) {
                        p.remove("inputResponses");
                    }
                    Decision::rewrite(&out)
                }
            };
        };
        let Some(sealed) = state.as_str().and_then(|t| self.sealer.open(t)) else {
            return refuse("not issued by this gateway");
        };
        // The retry names the same tool (prompt, resource) with the same
        // arguments, byte for byte, as the request the state was issued on.
        let name = crate::protocol::mcp::judged_target(env).map(str::to_owned);
        let args = msg.arguments_raw().map(args_digest);
        let method = env.method.as_deref().unwrap_or_default();
        let owner = crate::guards::cursor::owner_of(ctx.principal, ctx.session_id, ctx.source_ip);
        if sealed.o != owner || sealed.v != ctx.server || sealed.x.as_deref() != ctx.session_id {
            return refuse("not issued to this caller");
        }
        if sealed.m != method || sealed.n != name || sealed.a != args {
            return refuse("issued for another request");
        }
        if secs(ctx.now) > sealed.e {
            return refuse("expired");
        }
        match responses {
            None | Some(Json::Object(_)) => {}
            Some(_) => return refuse("inputResponses is not an object"),
        }
        let mut out = v.clone();
        let Some(p) = out.get_mut("params").and_then(Json::as_object_mut) else {
            return refuse("the request cannot be read");
        };
        // An input response that answers no request the server made is
        // dropped: only what was asked for reaches the server.
        if let Some(Json::Object(r)) = p.get_mut("inputResponses") {
            r.retain(|k, _| sealed.k.contains(k));
        }
        match sealed.s {
            Some(s) => {
                p.insert("requestState".into(), Json::String(s));
            }
            None => {
                p.remove("requestState");
            }
        }
        Decision::rewrite(&out)
    }

    fn on_response(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        // A reply to a request this gateway does not know (no method)
        // carries no input state: `unmatched_response` drops any that does.
        let method = msg.request_method.unwrap_or_default();
        if env.kind != Kind::Response
            || env.is_error
            || method.is_empty()
            || !bound(method)
            || !msg.may_hold(&INPUT_REQUIRED)
        {
            return Decision::Pass;
        }
        let Some(v) = msg.value() else {
            return Decision::Pass;
        };
        let result = &v["result"];
        if result.get("resultType").and_then(Json::as_str) != Some("input_required") {
            return Decision::Pass;
        }
        let server_state = match result.get("requestState") {
            None => None,
            Some(Json::String(s)) => Some(s.clone()),
            Some(_) => {
                return Decision::Reject(Denial::error(
                    JsonRpcError::new(
                        codes::UPSTREAM_PROTOCOL,
                        "The server sent a requestState the gateway cannot read",
                    ),
                    "input_state_unreadable",
                ))
            }
        };
        let keys = result
            .get("inputRequests")
            .and_then(Json::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        // The request this answers, as the client will retry it: the name
        // and arguments the gateway forwarded.
        let sealed = Sealed {
            s: server_state,
            o: crate::guards::cursor::owner_of(ctx.principal, ctx.session_id, ctx.source_ip)
                .into_owned(),
            v: ctx.server.to_owned(),
            m: method.to_owned(),
            n: msg.request_target.map(str::to_owned),
            a: msg.request_args_digest.map(str::to_owned),
            k: keys,
            e: secs(ctx.now + STATE_TTL),
            x: ctx.session_id.map(str::to_owned),
        };
        let Some(token) = self.sealer.seal(&sealed) else {
            return Decision::Pass;
        };
        let mut out = v.clone();
        if let Some(r) = out.get_mut("result").and_then(Json::as_object_mut) {
            r.insert("requestState".into(), Json::String(token));
        }
        Decision::rewrite(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};

    #[test]
    fn the_arguments_digest_is_sha256_in_lower_hex() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            args_digest("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn env(bytes: &[u8]) -> crate::protocol::jsonrpc::Envelope {
        match parse(bytes, ParseLimits::default()).expect("parse") {
            Parsed::Single(e) => e,
            Parsed::Batch(_) => panic!("batch"),
        }
    }

    /// The client's retry of a `tools/call` of `t` with the state sealed in
    /// the server's `input_required` `reply` to it, under `ctx`.
    fn sealed_retry(f: &InputStateFilter, reply: &[u8], ctx: &Exchange<'_>) -> String {
        let e = env(reply);
        let mut m = Message::from_server(&e, reply, Some("tools/call"), Some("t"));
        let digest = args_digest("{}");
        m.request_args_digest = Some(&digest);
        let Decision::Mutated(out) = f.on_response(&m, ctx, &mut Notes::default()) else {
            panic!("state not sealed")
        };
        let v: Json = serde_json::from_slice(&out).expect("json");
        let state = v["result"]["requestState"].as_str().expect("state");
        serde_json::json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{
            "name":"t","arguments":{},"requestState":state,"inputResponses":{"e1":{"action":"decline"}}}})
        .to_string()
    }

    /// A state outlives neither its TTL nor its principal.
    #[test]
    fn state_expires() {
        let f = InputStateFilter::new(std::sync::Arc::new(StateSealer::random()));
        let who = crate::engines::identity::Principal::anonymous();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ctx = Exchange {
            now: t0,
            ..Exchange::new(&who, "s")
        };
        let reply = br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{"e1":{"method":"elicitation/create","params":{}}}}}"#;
        let retry = sealed_retry(&f, reply, &ctx);
        let e = env(retry.as_bytes());
        let judge = |now: SystemTime| {
            let ctx = Exchange {
                now,
                ..Exchange::new(&who, "s")
            };
            f.on_request(
                &Message::new(&e, retry.as_bytes()),
                &ctx,
                &mut Notes::default(),
            )
        };
        assert!(matches!(
            judge(t0 + Duration::from_secs(60)),
            Decision::Mutated(_)
        ));
        assert!(matches!(
            judge(t0 + STATE_TTL + Duration::from_secs(2)),
            Decision::Reject(d) if d.error.message.contains("expired")
        ));
    }

    #[test]
    fn state_opens_only_under_its_key() {
        let s = StateSealer::new(b"fleet");
        let sealed = Sealed {
            s: Some("server".into()),
            o: "t\0alice".into(),
            v: "jira".into(),
            m: "tools/call".into(),
            n: Some("deploy".into()),
            a: None,
            k: vec!["e1".into()],
            e: 10,
            x: None,
        };
        let t = s.seal(&sealed).expect("seal");
        assert!(t.starts_with(PREFIX));
        assert_eq!(s.open(&t), Some(sealed));
        assert_eq!(StateSealer::new(b"other").open(&t), None);
        let mut bad = t.clone().into_bytes();
        let i = bad.len() - 3;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.open(&String::from_utf8(bad).expect("utf8")), None);
    }

    /// Unauthenticated clients without a session are one principal: the
    /// state one of them was given is refused from another address.
    #[test]
    fn anonymous_clients_without_a_session_do_not_share_state() {
        let f = InputStateFilter::new(std::sync::Arc::new(StateSealer::random()));
        let who = crate::engines::identity::Principal::anonymous();
        let from = |ip: &str| Exchange {
            source_ip: Some(ip.parse().expect("ip")),
            ..Exchange::new(&who, "s")
        };
        let reply = br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","requestState":"srv","inputRequests":{"e1":{"method":"elicitation/create","params":{}}}}}"#;
        let retry = sealed_retry(&f, reply, &from("10.0.0.1"));
        let e = env(retry.as_bytes());
        let judge = |ex: &Exchange<'_>| {
            f.on_request(
                &Message::new(&e, retry.as_bytes()),
                ex,
                &mut Notes::default(),
            )
        };
        assert!(matches!(judge(&from("10.0.0.1")), Decision::Mutated(_)));
        assert!(matches!(
            judge(&from("10.0.0.2")),
            Decision::Reject(d) if d.error.message.contains("not issued to this caller")
        ));
    }

    /// A server's input state on any request (a list included) reaches the
    /// client sealed, and a retry of any method carries only a state the
    /// gateway sealed for that caller and method; the task methods' own
    /// `requestState` is not this filter's.
    #[test]
    fn every_method_but_the_task_methods_is_bound() {
        let f = InputStateFilter::new(std::sync::Arc::new(StateSealer::random()));
        let who = crate::engines::identity::Principal::anonymous();
        let ctx = Exchange::new(&who, "s");
        let reply = br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","requestState":"srv-state","inputRequests":{"e1":{"method":"elicitation/create","params":{}}}}}"#;
        let e = env(reply);
        for method in [
            "tools/list",
            "prompts/list",
            "resources/list",
            "resources/templates/list",
            "completion/complete",
        ] {
            let m = Message::from_server(&e, reply, Some(method), None);
            let Decision::Mutated(out) = f.on_response(&m, &ctx, &mut Notes::default()) else {
                panic!("{method}: state not sealed")
            };
            let v: Json = serde_json::from_slice(&out).expect("json");
            let state = v["result"]["requestState"].as_str().expect("state");
            assert!(state.starts_with(PREFIX), "{method}");
            let retry = |state: &str, method: &str| {
                serde_json::json!({"jsonrpc":"2.0","id":2,"method":method,"params":{
                    "requestState":state,"inputResponses":{"e1":{"action":"decline"},"e9":{}}}})
                .to_string()
            };
            let judge = |raw: &str| {
                let e = env(raw.as_bytes());
                f.on_request(
                    &Message::new(&e, raw.as_bytes()),
                    &ctx,
                    &mut Notes::default(),
                )
            };
            // The sealed state opens for the same method: the server gets
            // its own state back and only the answers it asked for.
            match judge(&retry(state, method)) {
                Decision::Mutated(b) => {
                    let v: Json = serde_json::from_slice(&b).expect("json");
                    assert_eq!(v["params"]["requestState"], "srv-state", "{method}");
                    assert!(
                        v["params"]["inputResponses"].get("e9").is_none(),
                        "{method}"
                    );
                }
                d => panic!("{method}: {d:?}"),
            }
            // The server's raw state, or the state replayed on another method, is refused.
            assert!(
                matches!(judge(&retry("srv-state", method)), Decision::Reject(_)),
                "{method}"
            );
            let other = if method == "tools/list" {
                "prompts/list"
            } else {
                "tools/list"
            };
            assert!(
                matches!(judge(&retry(state, other)), Decision::Reject(_)),
                "{method}"
            );
        }
        // Unsolicited answers on a list are dropped before it goes on.
        let raw = r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"inputResponses":{"e1":{}}}}"#;
        let e3 = env(raw.as_bytes());
        match f.on_request(
            &Message::new(&e3, raw.as_bytes()),
            &ctx,
            &mut Notes::default(),
        ) {
            Decision::Mutated(b) => {
                let v: Json = serde_json::from_slice(&b).expect("json");
                assert!(v["params"].get("inputResponses").is_none());
            }
            d => panic!("{d:?}"),
        }
        // A task method's `requestState` is the task's own: left to `task_binding_input`.
        let raw = r#"{"jsonrpc":"2.0","id":4,"method":"tasks/update","params":{"taskId":"t1","requestState":"task-own"}}"#;
        let e4 = env(raw.as_bytes());
        assert!(matches!(
            f.on_request(
                &Message::new(&e4, raw.as_bytes()),
                &ctx,
                &mut Notes::default()
            ),
            Decision::Pass
        ));
        let m = Message::from_server(&e, reply, Some("tasks/get"), None);
        assert!(matches!(
            f.on_response(&m, &ctx, &mut Notes::default()),
            Decision::Pass
        ));
    }
}
