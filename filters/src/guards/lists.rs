//! A list only in the reply of its own list request.
//!
//! The lists a server returns (`tools`, `prompts`, `resources`,
//! `resourceTemplates`) are what the guards filter for the principal, pin
//! and check: `tools/list`'s reply goes through the policy's list filter,
//! tool pinning, the registry and the mirrored-header catalog. A list in the
//! reply of any other request (a `tools` beside a call's `content`, or a
//! resumed stream answering an old call's id with a list) is judged by none
//! of them, yet a client that reads the reply as its list request's lists
//! it. So it is refused (`reply_foreign_list`) here, in a filter every chain
//! has, whatever else the bundle turns on: with no Rego and no pinning the
//! rule holds all the same.
//!
//! The parser records which lists a result holds (`Envelope::lists`, read
//! under every spelling a peer takes for the member), so this costs a bit
//! test per reply.

use crate::chain::filter::{Decision, Denial, Exchange, McpFilter, Message, Notes};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;
use crate::protocol::results::{COMPLETION_BIT, LIST_NAMES};

/// The list a list request's reply holds, by the request's method.
pub(crate) fn own_list(method: Option<&str>) -> Option<&'static str> {
    Some(match method? {
        "tools/list" => "tools",
        "prompts/list" => "prompts",
        "resources/list" => "resources",
        "resources/templates/list" => "resourceTemplates",
        _ => return None,
    })
}

/// Refuses a reply holding a list its request did not ask for.
pub struct ForeignListFilter;

impl McpFilter for ForeignListFilter {
    fn name(&self) -> &'static str {
        "lists"
    }

    fn on_response(&self, msg: &Message<'_>, _ex: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Response || env.lists == 0 {
            return Decision::Pass;
        }
        let own = match msg.request_method {
            Some("completion/complete") => COMPLETION_BIT,
            m => own_list(m)
                .and_then(|l| LIST_NAMES.iter().position(|n| *n == l))
                .map_or(0u8, |i| 1 << i),
        };
        let foreign = env.lists & !own;
        if foreign == 0 {
            return Decision::Pass;
        }
        // A completion's values are judged by the template it completed:
        // in another request's reply (or one this replica cannot match)
        // nothing says which.
        let what = if foreign == COMPLETION_BIT {
            "a completion"
        } else {
            "a list"
        };
        Decision::Reject(Denial::error(
            JsonRpcError::new(
                codes::UPSTREAM_PROTOCOL,
                format!("MCP server sent {what} in the reply of another request"),
            ),
            "reply_foreign_list",
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::guards::tenant_fixture::{principal, refused, reply, snapshot_with, ORG, ORG_REGO};

    /// A list in a call's reply (which a client that takes the reply for
    /// its pending list request would list), or a second list beside the
    /// asked one, is refused by every chain: with the org's Rego, without
    /// any Rego, and without tool pinning.
    #[test]
    fn a_list_in_another_requests_reply_is_refused_whatever_the_bundle_turns_on() {
        let tools = r#"[{"name":"admin_purge","inputSchema":{"type":"object"}}]"#;
        let unpinned = ORG.replacen(
            "version: 1\n",
            "version: 1\ntool_pinning: {enabled: false}\n",
            1,
        );
        let bundles = [
            (
                "rego",
                snapshot_with(ORG, &[("policies/authz.rego", ORG_REGO)]),
            ),
            ("no rego", snapshot_with(ORG, &[])),
            ("no rego, no pinning", snapshot_with(&unpinned, &[])),
        ];
        let p = principal("", "ann", &[]);
        for (name, s) in &bundles {
            for (asked, result) in [
                ("tools/call", format!(r#"{{"content":[],"tools":{tools}}}"#)),
                (
                    "tools/call",
                    format!(r#"{{"content":[],"\u0074ools":{tools}}}"#),
                ),
                (
                    "prompts/list",
                    format!(r#"{{"prompts":[],"tools":{tools}}}"#),
                ),
                (
                    "resources/read",
                    format!(r#"{{"contents":[],"tools":{tools}}}"#),
                ),
                (
                    "tools/list",
                    format!(r#"{{"tools":{tools},"resources":[]}}"#),
                ),
                (
                    "completion/complete",
                    r#"{"completion":{"values":[]},"prompts":[]}"#.into(),
                ),
                // A completion in another request's reply: its values
                // would be judged by no template.
                (
                    "tools/call",
                    r#"{"content":[],"completion":{"values":["secret"]}}"#.into(),
                ),
                (
                    "tools/list",
                    r#"{"tools":[],"completion":{"values":["secret"]}}"#.into(),
                ),
            ] {
                let bytes = format!(r#"{{"jsonrpc":"2.0","id":3,"result":{result}}}"#);
                let v = reply(s, &p, "crm", asked, &bytes);
                assert!(
                    refused(&v).is_some_and(|r| r.contains("reply_foreign_list")),
                    "{name}: {asked}: {bytes}: {v:?}"
                );
            }
            let bytes = format!(r#"{{"jsonrpc":"2.0","id":3,"result":{{"tools":{tools}}}}}"#);
            let v = reply(s, &p, "crm", "tools/list", &bytes);
            assert!(refused(&v).is_none(), "{name}: {v:?}");
        }
    }
}
