//! URLs a server asks the client to open (URL-mode elicitation): on a
//! stream as an `elicitation/create` request, inside `inputRequests`
//! (2026-07-28 multi-round-trip requests, and tasks waiting for input,
//! wherever a result, a notification, a request or an error carries them:
//! `protocol::embedded`, the walk the policy reads them with), and in an error's
//! `data.elicitations` (`-32042`, 2025-11-25). The client opens such a URL
//! in the user's browser, on the user's network: a URL that points at
//! loopback, a private network or a metadata address is a request forgery
//! against the user's machine, so it meets the SSRF rules (and the
//! allowlists' exceptions to them) as a URI in a request does. Only `http`
//! and `https` are opened; any other scheme, or an elicitation whose URL
//! cannot be read, is refused. Member names are read as a folding client
//! reads them (`URL`, `Elicitations`), and an error's code in any form a
//! client compares equal; errors are read whatever their code says.

use serde_json::Value as Json;
use warden_config::guards::HostPattern;

use super::readers::check;
use crate::chain::filter::{Decision, Denial, Message};
use crate::protocol::embedded::{self, Found};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;
use crate::protocol::names::members_named;

/// One URL to judge, or an elicitation that cannot be read.
type Asked<'a> = Result<&'a str, ()>;

/// The verdict on every URL elicitation `msg` (a server→client message)
/// carries, against the allowlists `allow` gives (asked for only when
/// there is a URL to judge).
pub(super) fn judge<'h>(
    msg: &Message<'_>,
    allow: impl FnOnce() -> Vec<&'h HostPattern>,
) -> Decision {
    let env = msg.envelope;
    // Requests inside the message, wherever they sit (see
    // `protocol::embedded`): any message may carry them.
    let embedded = msg.may_embed_requests();
    let asks = match env.kind {
        Kind::Request => env.method.as_deref() == Some("elicitation/create"),
        // Errors are few: every one is read.
        Kind::Response if env.is_error => true,
        Kind::Response | Kind::Notification => false,
    };
    if !(asks || embedded) {
        return Decision::Pass;
    }
    let Some(v) = msg.value() else {
        return refuse("egress_unreadable_elicitation");
    };
    let mut urls: Vec<Asked<'_>> = Vec::new();
    match env.kind {
        Kind::Request if asks => {
            if let Some(p) = v.get("params") {
                elicitation(p, &mut urls);
            }
        }
        Kind::Response if env.is_error => {
            for data in v
                .get("error")
                .into_iter()
                .flat_map(|e| members_named(e, "data"))
            {
                for list in members_named(data, "elicitations") {
                    match list {
                        Json::Array(a) => a.iter().for_each(|e| elicitation(e, &mut urls)),
                        _ => urls.push(Err(())),
                    }
                }
            }
        }
        _ => {}
    }
    if embedded {
        embedded::in_message(v, &mut |found| match found {
            // A request the client reads as another (`Elicitation/Create`,
            // positional params) is read by no check here.
            Found::Unreadable => urls.push(Err(())),
            Found::Request {
                method: "elicitation/create",
                request,
                ..
            } => {
                if let Some(p) = request.get("params") {
                    elicitation(p, &mut urls);
                }
            }
            Found::Request { .. } => {}
        });
    }
    if urls.is_empty() {
        return Decision::Pass;
    }
    let allow = allow();
    for url in urls {
        let verdict = match url {
            Ok(u) => opened(u, &allow),
            Err(()) => Err("egress_unreadable_elicitation"),
        };
        if let Err(rule) = verdict {
            return refuse(rule);
        }
    }
    Decision::Pass
}

/// The URLs of one elicitation (`params` of an `elicitation/create`, or an
/// item of `elicitations`: `{mode: "url", url, …}`). Every member a
/// folding client reads as `url` is judged whatever the mode says; a
/// URL-mode one without a URL cannot be read.
fn elicitation<'a>(e: &'a Json, urls: &mut Vec<Asked<'a>>) {
    if !e.is_object() {
        urls.push(Err(()));
        return;
    }
    let mut any = false;
    for u in members_named(e, "url") {
        any = true;
        urls.push(u.as_str().ok_or(()));
    }
    let url_mode =
        members_named(e, "mode").any(|m| m.as_str().is_some_and(|m| m.eq_ignore_ascii_case("url")));
    if url_mode && !any {
        urls.push(Err(()));
    }
}

/// The verdict on a URL the client opens (or fetches) for the user: a
/// web URL, read by both readers of a URL as a tool's is (`check`). The
/// client is written with one library or another — its consent prompt may
/// show the host urllib reads while the browser opens the one WHATWG reads
/// (`https://bank.example\\@evil.example/`), and a client that fetches an
/// icon with Python's `requests` dials the host curl would — so a URL they
/// read with different hosts is refused as ambiguous.
pub(super) fn opened(url: &str, allow: &[&HostPattern]) -> Result<(), &'static str> {
    let parsed = url::Url::parse(url).map_err(|_| "egress_unparsable_url")?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("egress_scheme");
    }
    match check(url, allow) {
        // The allowlists are for what tools are sent: here only their
        // exceptions to the SSRF rules count.
        Ok(()) | Err("egress_not_allowlisted") => Ok(()),
        Err(rule) => Err(rule),
    }
}

fn refuse(rule: &'static str) -> Decision {
    Decision::Reject(Denial::error(
        JsonRpcError::new(
            codes::EGRESS_DENIED,
            format!(
                "The server asked the client to open a URL this gateway does not allow ({rule})"
            ),
        )
        .with_data(serde_json::json!({
            "reason": "egress_denied",
            "rule": rule,
            "inputRequest": "elicitation/create",
        })),
        format!("egress_denied:{rule}"),
    ))
}
