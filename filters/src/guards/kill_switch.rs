//! The kill switch: refuses everything the bundle pauses (all traffic, a
//! tenant, a principal, a server or a tool), before any other check.

use warden_config::access::KillSwitch;

use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::protocol::error::{codes, JsonRpcError};

/// Refuses everything the bundle's kill switch pauses, before any other check.
#[derive(Debug)]
pub struct KillSwitchFilter {
    switch: KillSwitch,
}

impl KillSwitchFilter {
    pub fn new(switch: KillSwitch) -> Self {
        KillSwitchFilter { switch }
    }

    fn paused(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &Notes) -> Option<&'static str> {
        let env = msg.envelope;
        // A call, or a request about the task a call created (the task
        // filter, which runs first, opened its id).
        let tool = match env.method.as_deref() {
            Some("tools/call") => env.name.as_deref(),
            Some(m) if crate::guards::task_binding::names_task(m) => {
                notes.task.as_ref().and_then(|t| t.tool.as_deref())
            }
            _ => None,
        };
        self.switch.pauses(
            &ctx.principal.tenant,
            &ctx.principal.id,
            ctx.server,
            ctx.via,
            tool,
        )
    }
}

/// The error every kill-switch refusal carries (-31011, `data.scope`):
/// a message's, and a GET stream's or DELETE's at admission.
pub fn paused_error(scope: &str) -> JsonRpcError {
    JsonRpcError::new(
        codes::PAUSED,
        format!("Paused by the kill switch ({scope})"),
    )
    .with_data(serde_json::json!({"reason": "kill_switch", "scope": scope}))
}

impl McpFilter for KillSwitchFilter {
    fn name(&self) -> &'static str {
        "kill_switch"
    }

    fn judges_again(&self) -> bool {
        true
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::All,
            responses: Methods::None,
        }
    }

    /// Every client message: requests, notifications, and answers to a
    /// server's requests (sampling, elicitation), which a paused server,
    /// tenant or principal does not get either (an answer names no tool).
    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        match self.paused(msg, ctx, notes) {
            None => Decision::Pass,
            Some(scope) => Decision::Reject(Denial::error(
                paused_error(scope),
                format!("kill_switch_{scope}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};

    /// Pausing a virtual server pauses what reaches its members through it
    /// (and nothing else of theirs).
    #[test]
    fn a_paused_virtual_server_pauses_its_member_legs() {
        let mut k = warden_config::access::KillSwitch::default();
        k.servers.insert("workspace".into());
        let f = KillSwitchFilter::new(k);
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
        let Ok(Parsed::Single(env)) = parse(body, ParseLimits::default()) else {
            panic!("parse")
        };
        let who = crate::engines::identity::Principal::anonymous();
        let msg = Message::new(&env, body);
        let direct = Exchange::new(&who, "docs");
        assert!(matches!(
            f.on_request(&msg, &direct, &mut Notes::default()),
            Decision::Pass
        ));
        let through = Exchange {
            via: Some("workspace"),
            ..Exchange::new(&who, "docs")
        };
        assert!(matches!(
            f.on_request(&msg, &through, &mut Notes::default()),
            Decision::Reject(d) if d.reason == "kill_switch_server"
        ));
    }

    /// A client's answer to a paused server's request (sampling,
    /// elicitation) does not reach it either; a tool's pause, which an
    /// answer names nothing of, lets answers through.
    #[test]
    fn a_paused_server_gets_no_answers() {
        let body = br#"{"jsonrpc":"2.0","id":"s-1","result":{"content":[]}}"#;
        let Ok(Parsed::Single(env)) = parse(body, ParseLimits::default()) else {
            panic!("parse")
        };
        let who = crate::engines::identity::Principal::anonymous();
        let msg = Message::new(&env, body);
        let ctx = Exchange::new(&who, "docs");
        let mut server = warden_config::access::KillSwitch::default();
        server.servers.insert("docs".into());
        assert!(matches!(
            KillSwitchFilter::new(server).on_request(&msg, &ctx, &mut Notes::default()),
            Decision::Reject(d) if d.reason == "kill_switch_server"
        ));
        let mut tool = warden_config::access::KillSwitch::default();
        tool.tools.insert("echo".into());
        assert!(matches!(
            KillSwitchFilter::new(tool).on_request(&msg, &ctx, &mut Notes::default()),
            Decision::Pass
        ));
    }

    /// A paused tool's tasks are paused too: the kill switch reads the tool
    /// the task filter found in the task's id.
    #[test]
    fn a_paused_tool_pauses_its_tasks() {
        let mut k = warden_config::access::KillSwitch::default();
        k.tools.insert("deploy".into());
        let f = KillSwitchFilter::new(k);
        let body =
            br#"{"jsonrpc":"2.0","id":1,"method":"tasks/result","params":{"taskId":"wt1.x"}}"#;
        let Ok(Parsed::Single(env)) = parse(body, ParseLimits::default()) else {
            panic!("parse")
        };
        let who = crate::engines::identity::Principal::anonymous();
        let ctx = Exchange::new(&who, "ops");
        let msg = Message::new(&env, body);
        let mut notes = Notes::default();
        assert!(matches!(
            f.on_request(&msg, &ctx, &mut notes),
            Decision::Pass
        ));
        notes.task = Some(crate::chain::notes::TaskNote {
            link: "tk_0".into(),
            tool: Some("deploy".into()),
        });
        assert!(matches!(
            f.on_request(&msg, &ctx, &mut notes),
            Decision::Reject(d) if d.reason == "kill_switch_tool"
        ));
    }
}
