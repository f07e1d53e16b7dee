//! URIs a server sends the client: resource links and embedded resources
//! in a tool's result (its content, structured content and `_meta`), a
//! prompt's messages, a read's contents, a task's result, a sampling
//! request's messages, an update notification's URI and an error's data —
//! every member a peer reads as `uri` (`URI` and `urı` too, as a client
//! that folds names reads them), at any depth of a server→client message. A
//! client reads such a URI through the gateway (`resources/read`, judged
//! then) or, for a web URL, fetches or opens it itself, from the user's
//! machine: the same request forgery a URL elicitation is. So each meets
//! the rules a URI in a client's request meets — judged by both readers
//! of a URL (a URL curl, Go or urllib read with another host than WHATWG
//! does is refused as ambiguous), against the SSRF rules and the
//! allowlists' exceptions to them; a URI of a resource scheme (`file:`, a
//! server's own) is no egress. One refused URI refuses the reply (the
//! client gets the denial for its request id) or drops the notification
//! or request. The items of a list a server describes (`resources/list`)
//! are judged where icons are (`icons.rs`): a refused one is removed.

use serde_json::Value as Json;
use warden_config::guards::HostPattern;

use super::readers::{check, check_found};
use crate::chain::filter::{Decision, Denial, Message};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;
use crate::protocol::names::same_name;

/// The requests whose replies describe the server or list what it offers.
pub(super) const DESCRIBING: &[&str] = &[
    "initialize",
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
];

/// The lists whose items carry icons.
pub(super) const LISTS: &[&str] = &["tools", "prompts", "resources", "resourceTemplates"];

/// How deep URIs are looked for: as deep as a message can be read into a
/// value (serde_json's limit).
const DEPTH: usize = 128;

/// The verdict on every URI `msg` (a server→client message) carries.
pub(super) fn judge<'h>(
    msg: &Message<'_>,
    allow: impl FnOnce() -> Vec<&'h HostPattern>,
) -> Decision {
    // `"uri"` in any ASCII case, an escape, or a byte a decoder folds
    // (`urı`): prose with `security` or `during` in it is not parsed.
    if !msg.may_name_uri() {
        return Decision::Pass;
    }
    let Some(v) = msg.value() else {
        return refuse("egress_unreadable_uri");
    };
    let env = msg.envelope;
    let part = match env.kind {
        Kind::Response if env.is_error => v.get("error").and_then(|e| e.get("data")),
        Kind::Response => v.get("result"),
        Kind::Request | Kind::Notification => v.get("params"),
    };
    let Some(part) = part else {
        return Decision::Pass;
    };
    // A list's items are the icon filter's to remove; their other members
    // (`_meta` …) are read here.
    let listed = env.kind == Kind::Response
        && !env.is_error
        && msg.request_method.is_none_or(|m| DESCRIBING.contains(&m));
    let mut uris = Vec::new();
    match part {
        Json::Object(o) if listed => {
            for (k, x) in o {
                match (LISTS.contains(&k.as_str()), x) {
                    (true, Json::Array(items)) => {
                        for item in items {
                            match item {
                                Json::Object(i) => i
                                    .iter()
                                    .filter(|(k, _)| !is_uri(k))
                                    .for_each(|(_, x)| uris_in(x, &mut uris, DEPTH)),
                                x => uris_in(x, &mut uris, DEPTH),
                            }
                        }
                    }
                    _ => collect(k, x, &mut uris, DEPTH),
                }
            }
        }
        x => uris_in(x, &mut uris, DEPTH),
    }
    if uris.is_empty() {
        return Decision::Pass;
    }
    let allow = allow();
    for uri in uris {
        if let Err(rule) = sent(uri, &allow) {
            return refuse(rule);
        }
    }
    Decision::Pass
}

/// The verdict on one URI a server sends the client: as a client's
/// request's URI is judged (`filter.rs`), the allowlists counting only for
/// their exceptions to the SSRF rules.
pub(super) fn sent(uri: &Json, allow: &[&HostPattern]) -> Result<(), &'static str> {
    let Some(u) = uri.as_str() else {
        // Not MCP's `uri`: a list (which a lenient client reads its one
        // string from) is read item by item as URIs; an object (a tool's
        // own data) for the `uri` members it holds.
        let mut inner = Vec::new();
        match uri {
            Json::Array(a) => inner.extend(a.iter()),
            _ => uris_in(uri, &mut inner, DEPTH),
        }
        return inner.into_iter().try_for_each(|u| sent(u, allow));
    };
    // The URI, and where it does not start as a URL the host and the
    // addresses it names without a scheme, read as a client's request's
    // `uri` is (`found::uri_found`).
    let mut found = Vec::new();
    super::found::uri_found(u, &mut found);
    found.iter().try_for_each(|f| {
        let verdict = if f.whole {
            check(&f.value, allow)
        } else {
            check_found(&f.value, allow, false)
        };
        match verdict {
            Ok(()) | Err("egress_not_allowlisted") => Ok(()),
            Err(rule) => Err(rule),
        }
    })
}

/// Every `uri` member at any depth under `v`.
fn uris_in<'a>(v: &'a Json, out: &mut Vec<&'a Json>, depth: usize) {
    if depth == 0 {
        return;
    }
    match v {
        Json::Object(o) => o.iter().for_each(|(k, x)| collect(k, x, out, depth)),
        Json::Array(a) => a.iter().for_each(|x| uris_in(x, out, depth - 1)),
        _ => {}
    }
}

/// Whether a member named `key` is a `uri` to some mainstream peer: a
/// client that folds case or drops invisible characters reads `URI` or
/// `urı` as one (see `protocol::names::same_name`).
pub(super) fn is_uri(key: &str) -> bool {
    key == "uri" || same_name(key, "uri")
}

fn collect<'a>(key: &str, x: &'a Json, out: &mut Vec<&'a Json>, depth: usize) {
    if is_uri(key) {
        out.push(x);
    } else {
        uris_in(x, out, depth - 1);
    }
}

fn refuse(rule: &'static str) -> Decision {
    Decision::Reject(Denial::error(
        JsonRpcError::new(
            codes::EGRESS_DENIED,
            format!("The server sent a URI that points at an address this gateway does not allow ({rule})"),
        )
        .with_data(serde_json::json!({"reason": "egress_denied", "rule": rule})),
        format!("egress_denied:{rule}"),
    ))
}
