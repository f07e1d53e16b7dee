//! A client's `notifications/cancelled` names a request of its own.
//!
//! A server that tracks requests in flight by id (most do, per session)
//! cancels whichever request the id names. Another principal sharing the
//! server — or another session of the same one — guessing a small integer
//! id could stop a call that is not theirs. So the gateway forwards a
//! client's cancellation only when its `requestId` names a request this
//! owner sent in this session and the gateway forwarded (the reply
//! ledger's claim, [`Exchange::asked`]). Anything else is not forwarded:
//! an id the session never sent, another session's or another
//! principal's, an exchange without a session (which has no requests of
//! its own to name: a sessionless client cancels by closing the request's
//! stream), or a `requestId` that is not a JSON-RPC id. The client's POST
//! is answered as any notification is (nothing to answer), and the audit
//! record says `cancel_unknown_request`. The ledger is this replica's: a
//! cancellation that reaches another replica than its request, or comes
//! after the request was idle past the ledger's time, is not forwarded
//! either (the call runs to its end; its reply is judged as ever). A
//! virtual server's member legs pass: the aggregator bound the
//! cancellation to the client's request before it reached the leg.

use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::{Id, Kind};

pub struct CancelFilter;

fn unknown() -> Decision {
    Decision::Reject(Denial::error(
        JsonRpcError::new(
            codes::INVALID_PARAMS,
            "A cancellation must name a request this session sent",
        ),
        "cancel_unknown_request",
    ))
}

impl McpFilter for CancelFilter {
    fn name(&self) -> &'static str {
        "cancel"
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::Only(&["notifications/cancelled"]),
            responses: Methods::None,
        }
    }

    fn on_request(&self, msg: &Message<'_>, ex: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        // A virtual server's member leg: its aggregator bound the
        // cancellation to the client's own request (and renumbered it).
        if msg.envelope.kind != Kind::Notification || ex.via.is_some() {
            return Decision::Pass;
        }
        let Some(asked) = ex.asked else {
            return unknown();
        };
        let id = msg
            .value()
            .and_then(|v| v.get("params"))
            .and_then(|p| p.get("requestId"))
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(Id::Str(s.clone())),
                serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
                    Some(Id::Num(n.clone()))
                }
                _ => None,
            });
        match id {
            Some(id) if (asked.0)(&id) => Decision::Pass,
            _ => unknown(),
        }
    }

    /// It reads only: a rewritten cancellation is judged again.
    fn judges_again(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::filter::AskedIds;
    use crate::engines::identity::Principal;
    use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};

    fn judge(body: &str, asked: Option<&dyn Fn(&Id) -> bool>) -> Decision {
        let Ok(Parsed::Single(env)) = parse(body.as_bytes(), ParseLimits::default()) else {
            panic!("parse {body}")
        };
        let p = Principal::anonymous();
        let ex = Exchange {
            asked: asked.map(AskedIds),
            ..Exchange::new(&p, "s")
        };
        CancelFilter.on_request(
            &Message::new(&env, body.as_bytes()),
            &ex,
            &mut Notes::default(),
        )
    }

    fn cancel(id: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":"x"}}}}"#
        )
    }

    #[test]
    fn only_a_request_this_session_sent_is_cancelled() {
        let mine = |id: &Id| *id == Id::Num(7.into()) || *id == Id::Str("a".into());
        assert_eq!(judge(&cancel("7"), Some(&mine)), Decision::Pass);
        assert_eq!(judge(&cancel(r#""a""#), Some(&mine)), Decision::Pass);
        for other in ["8", r#""7""#, "7.0", "null", "{}", r#""A""#, "[7]"] {
            assert!(
                matches!(judge(&cancel(other), Some(&mine)), Decision::Reject(d) if d.reason == "cancel_unknown_request"),
                "{other}"
            );
        }
        let missing = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#;
        assert!(matches!(judge(missing, Some(&mine)), Decision::Reject(_)));
        // Without a session the exchange has no requests of its own.
        assert!(matches!(judge(&cancel("7"), None), Decision::Reject(_)));
    }
}
