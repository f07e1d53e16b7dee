//! The anomaly guard (`anomaly:`): before the policy, every `tools/call`
//! is compared with its principal's behaviour baseline
//! (`engines::anomaly`) and what stands out is noted for the policy
//! (`input.anomaly`) and the audit record. It refuses nothing itself: the
//! policy decides what a signal costs (the example bundle holds an
//! agent's first call of a CRITICAL tool for approval). What the call
//! teaches its baseline is learnt once it is forwarded (the gateway's
//! `settle`), never from a denied or held call.

use std::sync::Arc;

use crate::chain::filter::{Acts, Decision, Exchange, McpFilter, Message, Methods, Notes};
use crate::engines::anomaly::{Baselines, Facts, Names, Settings, MAX_CALL_HOSTS};
use crate::protocol::jsonrpc::Kind;

pub struct AnomalyFilter {
    baselines: Arc<Baselines>,
    settings: Settings,
}

impl std::fmt::Debug for AnomalyFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnomalyFilter")
    }
}

impl AnomalyFilter {
    pub fn new(baselines: Arc<Baselines>, settings: Settings) -> Self {
        AnomalyFilter {
            baselines,
            settings,
        }
    }
}

/// The hosts a call's arguments reach (see `egress::hosts_in`).
pub fn call_hosts(msg: &Message<'_>) -> Vec<String> {
    msg.arguments()
        .map(|a| crate::guards::egress::hosts_in(a, MAX_CALL_HOSTS))
        .unwrap_or_default()
}

impl McpFilter for AnomalyFilter {
    fn name(&self) -> &'static str {
        "anomaly"
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::Only(&["tools/call"]),
            responses: Methods::None,
        }
    }

    fn judges_again(&self) -> bool {
        true
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Request || env.method.as_deref() != Some("tools/call") {
            return Decision::Pass;
        }
        let Some(tool) = env.name.as_deref() else {
            return Decision::Pass;
        };
        let hosts = call_hosts(msg);
        let facts = Facts::of(ctx.server, tool, &hosts);
        let names = Names {
            server: ctx.server,
            tool,
            hosts: &hosts,
        };
        notes.anomaly =
            Some(
                self.baselines
                    .observe(ctx.principal, &self.settings, ctx.now, facts, &names),
            );
        Decision::Pass
    }
}
