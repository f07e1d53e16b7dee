//! URLs a server asks the client to open (URL-mode elicitation): on a
//! stream as an `elicitation/create` request, inside a result's
//! `inputRequests` (2026-07-28 multi-round-trip requests and tasks waiting
//! for input), and in a `-32042` error's `data.elicitations`. The client
//! opens such a URL in the user's browser, on the user's network: a URL
//! that points at loopback, a private network or a metadata address is a
//! request forgery against the user's machine, so it meets the SSRF rules
//! (and the allowlists' exceptions to them) as a URI in a request does.
//! Only `http` and `https` are opened by a browser for the user; any other
//! scheme, or an elicitation whose URL cannot be read, is refused.

use serde_json::Value as Json;
use warden_config::guards::HostPattern;

use super::detect::lead;
use super::readers::check;
use crate::chain::filter::{Decision, Denial, Message, Word};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;

static INPUT_REQUESTS: Word = Word::new("inputRequests");
static ELICITATIONS: Word = Word::new("elicitations");

/// The verdict on every URL elicitation `msg` (a server→client message)
/// carries, against the allowlists `allow` gives (asked for only when
/// there is a URL to judge).
pub(super) fn judge<'h>(
    msg: &Message<'_>,
    allow: impl FnOnce() -> Vec<&'h HostPattern>,
) -> Decision {
    let env = msg.envelope;
    let asks = match env.kind {
        Kind::Request => env.method.as_deref() == Some("elicitation/create"),
        Kind::Response if env.is_error => msg.may_hold(&ELICITATIONS),
        Kind::Response => msg.may_hold(&INPUT_REQUESTS),
        _ => false,
    };
    if !asks {
        return Decision::Pass;
    }
    let Some(v) = msg.value() else {
        return refuse("egress_unreadable_elicitation");
    };
    let mut urls: Vec<Result<&str, ()>> = Vec::new();
    match env.kind {
        Kind::Request => elicitation(v.get("params"), &mut urls),
        _ if env.is_error => {
            let error = v.get("error");
            if error.and_then(|e| e.get("code")).and_then(Json::as_i64)
                == Some(i64::from(codes::URL_ELICITATION_REQUIRED))
            {
                match error
                    .and_then(|e| e.get("data"))
                    .and_then(|d| d.get("elicitations"))
                {
                    None => {}
                    Some(Json::Array(a)) => a.iter().for_each(|e| url_mode(e, &mut urls)),
                    Some(_) => urls.push(Err(())),
                }
            }
        }
        _ => match v.get("result").and_then(|r| r.get("inputRequests")) {
            None => {}
            Some(Json::Object(reqs)) => {
                for r in reqs.values() {
                    if r.get("method").and_then(Json::as_str) == Some("elicitation/create") {
                        elicitation(r.get("params"), &mut urls);
                    }
                }
            }
            // Policy refuses input requests it cannot read; so does egress.
            Some(_) => urls.push(Err(())),
        },
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

/// The URL of an `elicitation/create`'s `params`, when it asks for one.
fn elicitation<'a>(params: Option<&'a Json>, urls: &mut Vec<Result<&'a str, ()>>) {
    match params {
        Some(p @ Json::Object(_)) => url_mode(p, urls),
        // No params: a form the client cannot show; not a URL.
        None => {}
        Some(_) => urls.push(Err(())),
    }
}

/// The URL of one elicitation (`{mode: "url", url, …}`). A `url` member
/// is judged whatever the mode says: a client that reads the URL first,
/// or a later revision, must not open an unjudged one.
fn url_mode<'a>(e: &'a Json, urls: &mut Vec<Result<&'a str, ()>>) {
    let Json::Object(o) = e else {
        urls.push(Err(()));
        return;
    };
    match (o.get("mode"), o.get("url")) {
        (_, Some(Json::String(u))) => urls.push(Ok(u)),
        (_, Some(_)) => urls.push(Err(())),
        (Some(Json::String(m)), None) if m == "url" => urls.push(Err(())),
        _ => {}
    }
}

/// The verdict on a URL the client opens (or fetches) for the user.
pub(super) fn opened(url: &str, allow: &[&HostPattern]) -> Result<(), &'static str> {
    let web = lead(url.trim_matches(|c: char| c <= ' ' || c.is_whitespace() || c == '\u{feff}'))
        .scheme
        .is_some_and(|s| s == "http" || s == "https");
    if !web {
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
