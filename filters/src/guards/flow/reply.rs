//! The reply half of the flow guard: whatever a server sends the client
//! raises the client's flow.
//!
//! - A call's reply (`tools/call`, `resources/read`, `prompts/get`,
//!   `completion/complete`, a task's result) by the call's labels: its
//!   classification, untrusted when the call returns untrusted content. A
//!   sink's reply too: being a sink never lowers what a reply brings.
//! - Everything else a server sends is that server's content, judged by
//!   its own labels (`flows.unlabelled` when it has none: untrusted by
//!   default): its notifications (`notifications/message`, progress
//!   messages) and its requests to the client's model (sampling,
//!   elicitation) by its classification and roles; what it says of itself
//!   — the reply to `initialize` (its instructions), to a list (its
//!   descriptions), to any other request — by its roles only (untrusted or
//!   not: it is no read of the server's data). A message with nothing in
//!   it (`{}`) brings nothing.
//! - A reply the gateway cannot match to its call (it was forwarded by
//!   another replica whose ledger lacks it) as the most it could be: the
//!   highest level of the server, its tools and its resource patterns, and
//!   untrusted. So is every reply that comes on a GET stream (resumed,
//!   or the legacy transport's), matched or not: the ledger holds the
//!   latest request of its id on this replica, and an id is claimed again
//!   once its entry expires or is evicted, or on another replica, so the
//!   match cannot say which call the server answers.
//!
//! A DLP finding in any of them makes it at least `flows.dlp_level`; one
//! in a message the chain refuses raises the flow all the same (a finding
//! may span into what the stream delivered before it:
//! [`FlowFilter::refused_reply`]).

use std::sync::Arc;

use super::{
    call_labels, clearance, empty, flow_key, flow_owner, server_labels, unmatched_labels,
    FlowFilter, FLOWING,
};
use crate::chain::filter::{
    Acts, Decision, Exchange, McpFilter, Message, Methods, Notes, StreamCall,
};
use crate::engines::flow::{unix_secs, CallLabels, FlowOut, Loaded, Source};
use crate::protocol::jsonrpc::Kind;

/// The reply half of the flow guard: after DLP, so its findings raise the
/// reply's level.
pub struct FlowReplyFilter(pub Arc<FlowFilter>);

impl McpFilter for FlowReplyFilter {
    fn name(&self) -> &'static str {
        "flow"
    }

    /// Every server→client message: each brings the server's content to
    /// the client (see the module docs).
    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::None,
            responses: Methods::All,
        }
    }

    fn on_response(&self, msg: &Message<'_>, ex: &Exchange<'_>, notes: &mut Notes) -> Decision {
        self.0.reply(msg, ex, notes)
    }

    /// A message refused with a DLP finding raises the flow all the same
    /// (see [`FlowFilter::refused_reply`]).
    fn on_refused_response(&self, msg: &Message<'_>, ex: &Exchange<'_>, notes: &mut Notes) {
        self.0.refused_reply(msg, ex, notes)
    }
}

/// Whether what a server says holds a task with its outcome inline (an
/// object naming a `taskId` beside a `result` or `error`, under any name
/// a peer reads as those): a task's result outside `tasks/result`, as a
/// status notification, `tasks/list` or a 2026-07-28 task object may
/// carry it. Deeper than any such message needs: assumed to.
fn carries_task_outcome(msg: &Message<'_>) -> bool {
    fn holds(v: &serde_json::Value, depth: usize) -> bool {
        use crate::protocol::names::same_name;
        if depth > 16 {
            return true;
        }
        match v {
            serde_json::Value::Object(o) => {
                let named = |n: &str| o.keys().any(|k| same_name(k, n));
                (named("taskId") && (named("result") || named("error") || named("inputRequests")))
                    || o.values().any(|x| holds(x, depth + 1))
            }
            serde_json::Value::Array(a) => a.iter().any(|x| holds(x, depth + 1)),
            _ => false,
        }
    }
    if !crate::guards::task_binding::may_name_task(msg) {
        return false;
    }
    msg.said().is_none_or(|v| holds(v, 0))
}

/// Whether a server's request or notification relates to a call: progress
/// (`notifications/progress`), or anything naming a related task (its
/// `_meta`, under any spelling a peer reads as that).
fn relates_to_a_call(msg: &Message<'_>) -> bool {
    msg.envelope.method.as_deref() == Some("notifications/progress")
        || (crate::guards::task_binding::may_name_task(msg)
            && msg
                .said()
                .is_none_or(crate::guards::task_binding::names_related_task))
}

/// `labels` raised to `r`'s level (and its name) when higher, and
/// untrusted when `r` is.
fn raised(labels: &mut CallLabels, r: CallLabels) {
    if r.level > labels.level {
        labels.level = r.level;
        labels.what = r.what;
    }
    labels.roles.untrusted |= r.roles.untrusted;
}

impl FlowFilter {
    /// The labels of what a server→client message brings, `None` when it
    /// brings nothing.
    fn brought(&self, msg: &Message<'_>, ex: &Exchange<'_>) -> Option<CallLabels> {
        let env = msg.envelope;
        let catalog = self.catalog.get(ex.server);
        let call = |method: &str, target: &str| {
            call_labels(&self.flows, catalog, ex.server, method, target, false)
        };
        let own = if env.kind != Kind::Response {
            // A server's own request or notification.
            if empty(msg.params_raw()) {
                return None;
            }
            let what = env.method.as_deref().unwrap_or("request");
            let mut l = server_labels(&self.flows, catalog, ex.server, what);
            // On a call's own stream it may be that call's data (a
            // progress message with a partial result, a sampling request
            // quoting it): at least the call's labels.
            match msg.stream_call {
                StreamCall::One(m, t) if FLOWING.contains(&m) => raised(&mut l, call(m, t)),
                // A task's stream: its tool's data.
                StreamCall::One(m, t) if crate::guards::task_binding::names_task(m) => {
                    raised(&mut l, call("tools/call", t))
                }
                StreamCall::One(..) | StreamCall::None => {}
                StreamCall::Several => {
                    raised(&mut l, unmatched_labels(&self.flows, catalog, ex.server))
                }
                // Progress, or a message a task's metadata relates, on a
                // stream of no call: of a call (a task's, whose POST
                // closed) the gateway cannot name.
                StreamCall::NoCall if relates_to_a_call(msg) => {
                    raised(&mut l, unmatched_labels(&self.flows, catalog, ex.server))
                }
                StreamCall::NoCall => {}
            }
            // A task's status with its outcome inline is that task's
            // tool's output, and the status names no tool.
            if carries_task_outcome(msg) {
                raised(&mut l, unmatched_labels(&self.flows, catalog, ex.server));
            }
            l
        } else {
            match (msg.request_method, msg.request_target) {
                (Some(m @ ("tools/call" | "resources/read" | "prompts/get")), Some(t)) => {
                    call(m, t)
                }
                (Some("completion/complete"), _) => {
                    self.with_completed(msg, ex, call("completion/complete", "completion"))
                }
                // A task's result (`tasks/result`, or inline in the task
                // any task request returns) is its creating tool's
                // output.
                (Some(m), Some(t)) if crate::guards::task_binding::names_task(m) => {
                    call("tools/call", t)
                }
                // A list of tasks whose outcomes are inline: of tools it
                // does not name.
                (Some("tasks/list"), _) if carries_task_outcome(msg) => {
                    unmatched_labels(&self.flows, catalog, ex.server)
                }
                // What the server says of itself (`initialize`, its lists, …):
                // untrusted as its roles say; no read of its data, so of no
                // level but what DLP finds in it.
                (Some(m), _)
                    if !FLOWING.contains(&m) && !crate::guards::task_binding::names_task(m) =>
                {
                    if empty(msg.result_raw()) && empty(msg.error_raw()) {
                        return None;
                    }
                    CallLabels {
                        level: 0,
                        ..server_labels(&self.flows, catalog, ex.server, m)
                    }
                }
                // A reply to a request the gateway does not know.
                _ => unmatched_labels(&self.flows, catalog, ex.server),
            }
        };
        // A reply matched through the ledger (on a GET stream) may answer
        // an earlier request of the same id than the one the ledger now
        // holds (see `Message::ledger_matched`): the most it could be.
        let own = if env.kind == Kind::Response && msg.ledger_matched {
            let mut l = own;
            raised(&mut l, unmatched_labels(&self.flows, catalog, ex.server));
            l
        } else {
            own
        };
        // Whatever the message is, each resource it carries (`contents[].uri`,
        // an embedded `resource`, wherever it is: a
        // result, a list item's `_meta`, an error's data, a sampling
        // request, a log message) is data of its own label, whatever was
        // asked for (`hr://public/index` may carry `hr://employees/7`).
        // The message is the most of them.
        Some(self.with_carried(msg, ex, own))
    }

    /// `labels` raised by the resources the values of a completion of a
    /// resource template name (each value's URIs of the template): a
    /// value whose URI is unknown is the most the server could send.
    fn with_completed(
        &self,
        msg: &Message<'_>,
        ex: &Exchange<'_>,
        mut labels: CallLabels,
    ) -> CallLabels {
        use crate::protocol::names::members_named;
        let Some(c) = msg
            .request_completion
            .and_then(crate::chain::notes::Completing::from_text)
        else {
            return labels;
        };
        let catalog = self.catalog.get(ex.server);
        let Some(result) = msg.value().and_then(|v| v.get("result")) else {
            return labels;
        };
        let values = members_named(result, "completion")
            .flat_map(|c| members_named(c, "values"))
            .filter_map(serde_json::Value::as_array)
            .flatten()
            .filter_map(serde_json::Value::as_str);
        let mut raise = |r: CallLabels| raised(&mut labels, r);
        for value in values {
            match c.uris(value) {
                Some(uris) => {
                    for uri in uris {
                        raise(call_labels(
                            &self.flows,
                            catalog,
                            ex.server,
                            "resources/read",
                            &uri,
                            false,
                        ));
                    }
                }
                None => raise(unmatched_labels(&self.flows, catalog, ex.server)),
            }
        }
        labels
    }

    /// `labels` raised by every resource whose data the message carries
    /// (see [`crate::protocol::mcp::carried_uris`]); a message too deep to read
    /// through is the most it could be.
    fn with_carried(
        &self,
        msg: &Message<'_>,
        ex: &Exchange<'_>,
        mut labels: CallLabels,
    ) -> CallLabels {
        if !msg.may_name_uri() {
            return labels;
        }
        let catalog = self.catalog.get(ex.server);
        let Some(carrier) = msg.said() else {
            return labels;
        };
        let deep = crate::protocol::mcp::carried_uris(carrier, 0, &mut |uri| {
            raised(
                &mut labels,
                call_labels(
                    &self.flows,
                    catalog,
                    ex.server,
                    "resources/read",
                    uri,
                    false,
                ),
            );
        });
        if deep {
            let most = unmatched_labels(&self.flows, catalog, ex.server);
            labels.level = labels.level.max(most.level);
            labels.roles.untrusted |= most.roles.untrusted;
        }
        labels
    }

    pub(super) fn reply(
        &self,
        msg: &Message<'_>,
        ex: &Exchange<'_>,
        notes: &mut Notes,
    ) -> Decision {
        let Some(call) = self.brought(msg, ex) else {
            return Decision::Pass;
        };
        let mut level = call.level;
        if !notes.findings.is_empty() {
            level = level.max(self.flows.dlp_level);
        }
        let untrusted = call.roles.untrusted;
        if level == 0 && !untrusted {
            return Decision::Pass;
        }
        // What reaches the client must be within its clearance: a reply a
        // DLP finding raised above it, a server's notification or request
        // of a level above it, are withheld (and raise nothing). With
        // `decide: policy`, a reply at exactly the level its request was
        // judged at is the policy's to allow (it saw that level).
        let clear = clearance(&self.flows, ex);
        let judged_by_policy = self.flows.decide == warden_config::flows::Decide::Policy
            && msg.envelope.kind == Kind::Response
            && msg.request_method.is_some_and(|m| FLOWING.contains(&m))
            && level == call.level;
        if level > clear && !judged_by_policy {
            return Decision::Reject(self.above_clearance(msg, ex, level, clear));
        }
        match self.record(ex, call.what, level, untrusted, notes) {
            Some(()) => Decision::Pass,
            // The table cannot hold a state for this key (full of live
            // states, or its principal at its cap): recorded in the
            // shared store alone, it would come back clean at the next
            // sink once the store forgets (a restart without
            // persistence); without a store it cannot be recorded at
            // all. Withheld either way: the bound fails closed.
            None => Decision::Reject(self.unrecorded(msg, ex)),
        }
    }

    /// A server→client message the chain refused (DLP blocked it, or it
    /// was above the caller's clearance) while DLP found data in it: the
    /// flow is raised as if it had been delivered — its labels, at least
    /// `flows.dlp_level`. A finding may span into text the client already
    /// holds (`ssn 123-45` in a delivered progress event, `-6789` in the
    /// refused one), and a refusal never recalls what was delivered, so a
    /// finding raises the flow whatever became of the message holding it
    /// (fail closed: a refused finding wholly inside the message raises it
    /// too). A refused message without findings raises nothing: none of it
    /// reached the client. A state the table cannot hold is not raised
    /// (the message is refused already).
    pub(super) fn refused_reply(&self, msg: &Message<'_>, ex: &Exchange<'_>, notes: &mut Notes) {
        if notes.findings.is_empty() || notes.flow_out.is_some() {
            return;
        }
        let call = self.brought(msg, ex).unwrap_or_else(|| {
            server_labels(
                &self.flows,
                self.catalog.get(ex.server),
                ex.server,
                msg.envelope.method.as_deref().unwrap_or("response"),
            )
        });
        let level = call.level.max(self.flows.dlp_level);
        let _ = self.record(ex, call.what, level, call.roles.untrusted, notes);
    }

    /// Raises this exchange's flow by a source of `what` at `level`
    /// (`untrusted`), naming it in `notes.flow_out` when that adds to the
    /// flow; `None` when this process's table cannot hold the state.
    fn record(
        &self,
        ex: &Exchange<'_>,
        what: String,
        level: u8,
        untrusted: bool,
        notes: &mut Notes,
    ) -> Option<()> {
        let source = Source {
            id: next_id(),
            what,
            level,
            untrusted,
        };
        let key = flow_key(&self.flows, ex);
        let seen = match ex.flow {
            Some(Loaded::State(s)) => Some(s),
            _ => None,
        };
        let owner = flow_owner(ex);
        // Written to the shared store whenever the fleet's state (as read
        // for this message) would be raised, even when this process's own
        // view holds it already: a store that lost it gets it back.
        let changed = self
            .tables
            .raise(&key, &owner, &source, seen, unix_secs(ex.now))?
            || seen.is_some_and(|s| s.would_raise(level, untrusted));
        // A reply that adds nothing to its flow is neither shared nor named
        // (the lineage names the calls that raised the state).
        if changed {
            let level_name = self.flows.name(source.level).to_owned();
            notes.flow_out = Some(FlowOut {
                key,
                source,
                level_name,
                held: true,
            });
        }
        Some(())
    }

    /// The refusal of a reply above the caller's clearance: a reply
    /// reaches the client as the error (a tool error for a call, as the
    /// bundle answers denials); a server's request or notification is
    /// dropped.
    fn above_clearance(
        &self,
        msg: &Message<'_>,
        ex: &Exchange<'_>,
        level: u8,
        clear: u8,
    ) -> crate::chain::filter::Denial {
        let method = match msg.envelope.kind {
            Kind::Response => msg.request_method.unwrap_or("response"),
            _ => msg.envelope.method.as_deref().unwrap_or("request"),
        };
        let f = &self.flows;
        self.denial(
            method,
            "flow_above_clearance",
            format!(
                "Refused: the reply of `{}` was withheld: it carries {} data, above your clearance ({}) (flow_above_clearance).",
                ex.server,
                f.name(level),
                f.name(clear)
            ),
        )
    }

    /// The refusal of a reply whose flow cannot be recorded: this
    /// process's flows table is full of live states (`limits.memory`) and
    /// there is no shared store. A refused reply reaches the client as the
    /// error (a tool error for a call, as the bundle answers denials); a
    /// refused server request or notification is dropped.
    fn unrecorded(&self, msg: &Message<'_>, ex: &Exchange<'_>) -> crate::chain::filter::Denial {
        let method = match msg.envelope.kind {
            Kind::Response => msg.request_method.unwrap_or("response"),
            _ => msg.envelope.method.as_deref().unwrap_or("request"),
        };
        self.denial(
            method,
            "flow_unrecorded",
            format!(
                "Refused: the reply of `{}` was withheld: what it carries could not be recorded in this session's flow state (the gateway's flows table is full) (flow_unrecorded). Retry later.",
                ex.server
            ),
        )
    }
}

/// `fl_` and 16 hex digits: a process-random prefix and a counter, so ids
/// of replicas and restarts do not collide and no call pays for a random
/// draw. A link between audit records, not a secret.
fn next_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            b = t.to_le_bytes();
        }
        u64::from_le_bytes(b) & 0xffff_ffff_0000_0000
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
    format!("fl_{:016x}", prefix | n)
}

#[cfg(test)]
mod tests;
