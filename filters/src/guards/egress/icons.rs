//! Icons and website links a server describes itself and its tools,
//! prompts and resources with (`icons[].src`, `websiteUrl`, 2025-11-25):
//! the client fetches an icon itself, and opens a website link for its
//! user, from the user's machine. An icon on loopback, a private network
//! or a metadata address is a request forgery the client makes without
//! asking; one in a scheme a client should not fetch (`javascript:`,
//! `file:`, `ftp:`, `ws:`) is no image. Such an icon or link is removed
//! from the reply, the rest of it passes: the server's list stays usable,
//! and nothing the gateway refuses reaches the client. `data:` icons are
//! inline images and pass; an icon the gateway cannot read (not an object,
//! `src` not a string, `icons` not an array) is removed too. A resource
//! link (a content block of a tool's result, a prompt's messages, a
//! sampling request, an error's data …) carries icons as a resource
//! does: judged wherever it is. A listed resource whose URI the rules
//! refuse (`links.rs`) is removed from the list as its icons would be.

use serde_json::Value as Json;
use warden_config::guards::HostPattern;

use super::detect::lead;
use super::elicitation::opened;
use super::links::{sent, DESCRIBING, LISTS};
use crate::chain::filter::{Decision, Message, Word};
use crate::protocol::jsonrpc::Kind;

// Member names as the raw bytes spell them (or with a `\u` escape, which
// `may_hold` looks for too): prose naming icons is not parsed for them.
static ICONS: Word = Word::new("\"icons\"");
static WEBSITE: Word = Word::new("\"websiteUrl\"");

/// How deep resource links are looked for (serde_json's limit).
const DEPTH: usize = 128;

/// `msg` (a server→client message) with every icon, website link and
/// listed resource the address rules refuse removed, or `Pass` when it
/// holds none.
pub(super) fn judge<'h>(
    msg: &Message<'_>,
    allow: impl FnOnce() -> Vec<&'h HostPattern>,
) -> Decision {
    let env = msg.envelope;
    // Replies that describe things; a reply whose request is unknown may.
    // An error describes nothing, but its data may hold resource links.
    let describing = env.kind == Kind::Response
        && !env.is_error
        && msg.request_method.is_none_or(|m| DESCRIBING.contains(&m));
    if !(msg.may_hold(&ICONS) || describing && (msg.may_hold(&WEBSITE) || msg.may_name_uri())) {
        return Decision::Pass;
    }
    let Some(v) = msg.value() else {
        return Decision::Pass;
    };
    let part = match env.kind {
        Kind::Response if env.is_error => "error",
        Kind::Response => "result",
        Kind::Request | Kind::Notification => "params",
    };
    if v.get(part).is_none() {
        return Decision::Pass;
    }
    let allow = allow();
    let mut out = v.clone();
    let Some(r) = out.get_mut(part) else {
        return Decision::Pass;
    };
    let mut changed = describing && clean(r, &allow);
    changed |= links(r, &allow, DEPTH);
    if changed {
        Decision::rewrite(&out)
    } else {
        Decision::Pass
    }
}

/// Removes what the rules refuse from `result`; whether anything was.
fn clean(result: &mut Json, allow: &[&HostPattern]) -> bool {
    let mut changed = false;
    if let Some(info) = result.get_mut("serverInfo") {
        changed |= described(info, allow);
    }
    for list in LISTS {
        if let Some(Json::Array(items)) = result.get_mut(*list) {
            let before = items.len();
            items.retain(|i| {
                i.as_object().is_none_or(|o| {
                    o.iter()
                        .filter(|(k, _)| super::links::is_uri(k))
                        .all(|(_, u)| sent(u, allow).is_ok())
                })
            });
            changed |= items.len() != before;
            for item in items {
                changed |= described(item, allow);
            }
        }
    }
    changed
}

/// Every resource link at any depth under `v`, its refused icons removed;
/// whether any was.
fn links(v: &mut Json, allow: &[&HostPattern], depth: usize) -> bool {
    if depth == 0 {
        return false;
    }
    match v {
        Json::Object(o) if o.get("type").and_then(Json::as_str) == Some("resource_link") => {
            described(v, allow)
        }
        Json::Object(o) => o
            .values_mut()
            .fold(false, |c, x| links(x, allow, depth - 1) | c),
        Json::Array(a) => a
            .iter_mut()
            .fold(false, |c, x| links(x, allow, depth - 1) | c),
        _ => false,
    }
}

/// One described thing (an implementation, a tool, a prompt, a resource):
/// its refused icons and website link removed; whether any was.
fn described(thing: &mut Json, allow: &[&HostPattern]) -> bool {
    let Json::Object(o) = thing else {
        return false;
    };
    let mut changed = false;
    if let Some(link) = o.get("websiteUrl") {
        if link.as_str().is_none_or(|u| opened(u, allow).is_err()) {
            o.remove("websiteUrl");
            changed = true;
        }
    }
    match o.get_mut("icons") {
        None => {}
        Some(Json::Array(icons)) => {
            let before = icons.len();
            icons.retain(|i| {
                i.get("src")
                    .and_then(Json::as_str)
                    .is_some_and(|src| fetched(src, allow))
            });
            changed |= icons.len() != before;
        }
        Some(_) => {
            o.remove("icons");
            changed = true;
        }
    }
    changed
}

/// Whether a client may fetch an icon at `src`.
fn fetched(src: &str, allow: &[&HostPattern]) -> bool {
    lead(src).scheme.as_deref() == Some("data") || opened(src, allow).is_ok()
}
