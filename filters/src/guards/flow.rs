//! Information flow: labels that follow data through a session.
//!
//! Servers, tools and resource URI patterns carry a classification (from
//! the ordered `flows.levels`) and flow roles: `private` (reads private
//! data), `untrusted` (returns content from outside), `sink` (sends data
//! outward). Each flow key — an MCP session of a principal, or the
//! principal itself (`flows.track: principal`, and every call without a
//! session) — keeps a small monotone [`FlowState`]: the highest level
//! returned to the client so far, whether untrusted content was returned,
//! and the calls that brought them (the lineage, bounded).
//!
//! - **On a request** (`tools/call`, `resources/read`): a read of a level
//!   above the principal's clearance (`attributes.clearance`, else
//!   `flows.default_clearance`) is refused; a sink call is refused once the
//!   state holds data above the sink's level together with untrusted
//!   content ("restricted data from `hr/get_employee` cannot go to
//!   `web/post` after untrusted content from `web/fetch`"), or held for an
//!   approval of that call (`flows.on_violation: approval`). With
//!   `flows.decide: policy` the gateway refuses nothing itself: the Rego
//!   input carries the state and the call's labels (`input.flow`).
//! - **On the reply**: what it returned raises the state — the tool's
//!   classification, at least `flows.dlp_level` when DLP found something
//!   in it, and untrusted when the tool returns untrusted content.
//!
//! The state lives in a bounded table of this process, or in the shared
//! store (Redis) when the bundle has one: the gateway reads it before the
//! chain and hands it in [`Exchange::flow`]; a state it could not read
//! refuses sink calls (fail closed).

use std::sync::Arc;

use sha2::{Digest, Sha256};
use warden_config::access::{DenialStyle, ServerCatalog};
use warden_config::flows::{Decide, Flows, OnViolation, Track};

use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::engines::flow::{CallLabels, FlowNote, FlowOut, FlowState, FlowTables, Loaded, Source};
use crate::engines::policy::ApprovalAsk;
use crate::protocol::error::{codes, JsonRpcError};

/// The flow key of an exchange: the principal's own, plus the session's
/// when flows are tracked per session and the call has one.
pub fn flow_key(flows: &Flows, ex: &Exchange<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    let owner = ex.principal.owner_key();
    // A member leg of a virtual server tracks the client's session of the
    // virtual server (its aggregator names it), not its own leg's.
    let session = match flows.track {
        Track::Session => ex.flow_session.or(ex.session_id).unwrap_or(""),
        Track::Principal => "",
    };
    // Anonymous callers all share one principal: without a session, one
    // caller's flow is its address's, so it neither taints nor clears
    // another's.
    let address = match (ex.principal.auth, session) {
        (crate::engines::identity::AuthMethod::Anonymous, "") => {
            ex.source_ip.map(|ip| ip.to_string()).unwrap_or_default()
        }
        _ => String::new(),
    };
    for part in ["flow", owner.as_str(), session, address.as_str()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// Whether any string in `v` (member names too) names a place outside:
/// a URL anywhere in it (`scheme://`, `//host`, `mailto:`), or an e-mail
/// address.
fn holds_url(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => reaches_out(s),
        serde_json::Value::Array(a) => a.iter().any(holds_url),
        serde_json::Value::Object(m) => m.iter().any(|(k, x)| reaches_out(k) || holds_url(x)),
        _ => false,
    }
}

fn reaches_out(s: &str) -> bool {
    let t = s.trim_start();
    if s.contains("://") || t.starts_with("//") {
        return true;
    }
    let lower = t.get(..7).map(str::to_ascii_lowercase).unwrap_or_default();
    if lower.starts_with("mailto:") {
        return true;
    }
    // An address: `local@domain.tld`, anywhere in the text.
    s.split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';' | '"' | '\''))
        .any(|w| {
            w.split_once('@').is_some_and(|(l, d)| {
                !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
            })
        })
}

/// The labels of a call of `server` to `target` (a tool, or a resource URI
/// for `resources/read`).
pub fn call_labels(
    flows: &Flows,
    catalog: Option<&ServerCatalog>,
    server: &str,
    method: &str,
    target: &str,
    arguments: Option<&serde_json::Value>,
) -> CallLabels {
    let (what, own, server_labels, tool) = match method {
        "prompts/get" | "completion/complete" => (
            format!("{server} ({method} {target})"),
            warden_config::flows::Labels::default(),
            catalog.map(|c| c.labels.clone()),
            None,
        ),
        "resources/read" => {
            let own = catalog
                .map(|c| resource_labels(c, target))
                .unwrap_or_default();
            (
                format!("{server}:{target}"),
                own,
                catalog.map(|c| c.labels.clone()),
                None,
            )
        }
        _ => {
            // A name that differs from a catalog entry only by case is
            // that entry (a server may read it so).
            let tool = catalog.and_then(|c| {
                c.tool(target).or_else(|| {
                    let folded = target.to_lowercase();
                    c.tools
                        .iter()
                        .find(|(n, _)| n.to_lowercase() == folded)
                        .map(|(_, t)| t)
                })
            });
            (
                format!("{server}/{target}"),
                tool.map(|t| t.labels.clone()).unwrap_or_default(),
                catalog.map(|c| c.labels.clone()),
                tool,
            )
        }
    };
    let server_labels = server_labels.unwrap_or_default();
    // Unlabelled: the bundle's default roles. Labelled or not, a call
    // that can reach out (URL arguments, an egress allowance, a URL or an
    // address given, a resource URI of a network scheme) is a sink too: a
    // fetch with the data in its query sends it out.
    let mut roles = own
        .roles
        .or(server_labels.roles)
        .unwrap_or(flows.unlabelled);
    let reaches = tool.is_some_and(|t| !t.url_arguments.is_empty() || !t.egress_allow.is_empty())
        || catalog.is_some_and(|c| !c.egress_allow.is_empty())
        || arguments.is_some_and(holds_url)
        || (method == "resources/read" && reaches_out(target));
    roles.sink |= reaches;
    let level = own
        .classification
        .or(server_labels.classification)
        .unwrap_or(if roles.private { flows.dlp_level } else { 0 });
    CallLabels { what, level, roles }
}

/// The labels of a resource URI. The first pattern it matches decides; a
/// URI a server could read as another one — dot segments, escapes,
/// backslashes, or a pattern it matches only ignoring case — takes the
/// highest label of every pattern it could be, and the server's.
fn resource_labels(c: &ServerCatalog, uri: &str) -> warden_config::flows::Labels {
    use warden_config::flows::{uri_matches, Labels};
    let exact = c
        .resources
        .iter()
        .find(|(p, _)| uri_matches(p, uri))
        .map(|(_, l)| l.clone());
    let lower = uri.to_lowercase();
    let ambiguous = uri.contains("/.")
        || uri.contains('%')
        || uri.contains('\\')
        || c.resources
            .iter()
            .any(|(p, _)| uri_matches(&p.to_lowercase(), &lower) && !uri_matches(p, uri));
    if !ambiguous {
        return exact.unwrap_or_default();
    }
    let mut out = exact.unwrap_or_default();
    let mut raise = |l: &Labels| {
        out.classification = out.classification.max(l.classification);
        if let Some(r) = l.roles {
            let mut mine = out.roles.unwrap_or_default();
            mine.private |= r.private;
            mine.untrusted |= r.untrusted;
            mine.sink |= r.sink;
            out.roles = Some(mine);
        }
    };
    raise(&c.labels);
    for (_, l) in &c.resources {
        raise(l);
    }
    out
}

/// A principal's clearance: its `clearance` attribute, else the default.
/// An attribute naming no level clears nothing above the lowest.
pub fn clearance(flows: &Flows, ex: &Exchange<'_>) -> u8 {
    match ex.principal.attributes.get("clearance") {
        Some(c) => flows.level(c).unwrap_or(0),
        None => flows.default_clearance,
    }
}

pub struct FlowFilter {
    flows: Flows,
    names: Arc<[String]>,
    catalog: Arc<std::collections::HashMap<String, ServerCatalog>>,
    tables: Arc<FlowTables>,
    style: DenialStyle,
}

impl FlowFilter {
    pub fn new(
        flows: Option<&Flows>,
        catalog: Arc<std::collections::HashMap<String, ServerCatalog>>,
        tables: Arc<FlowTables>,
        style: DenialStyle,
    ) -> Option<Self> {
        flows.map(|f| FlowFilter {
            flows: f.clone(),
            names: f.levels.clone().into(),
            catalog,
            tables,
            style,
        })
    }

    /// A refusal the model can read: a tool error for a `tools/call` when
    /// the bundle answers denials so, a JSON-RPC error otherwise (a read's
    /// result has no tool-error shape).
    /// The audit record's reason names the flow too: `flow_blocked:
    /// restricted data from … cannot go to …`.
    fn denial(&self, method: &str, reason: &str, text: String) -> Denial {
        let error = JsonRpcError::new(codes::DENIED, text.clone())
            .with_data(serde_json::json!({ "reason": reason }));
        let said = text
            .strip_prefix("Refused: ")
            .and_then(|t| t.rsplit_once(" (").map(|(t, _)| t))
            .unwrap_or(&text);
        Denial::readable(
            error,
            format!("{reason}: {said}"),
            &text,
            self.style == DenialStyle::ToolError && method == "tools/call",
        )
    }

    fn labels(
        &self,
        ex: &Exchange<'_>,
        method: &str,
        target: &str,
        args: Option<&serde_json::Value>,
    ) -> CallLabels {
        call_labels(
            &self.flows,
            self.catalog.get(ex.server),
            ex.server,
            method,
            target,
            args,
        )
    }

    /// The state of this exchange's flow key: what the gateway read for it
    /// (the shared store), else this process's table.
    /// The state, and whether the fleet's view could be read (when it
    /// could not, this process's own view is all there is).
    fn state(&self, ex: &Exchange<'_>) -> (FlowState, bool) {
        let local = self.tables.get(&flow_key(&self.flows, ex));
        match ex.flow {
            Some(Loaded::State(s)) => {
                let mut st = s.clone();
                st.merge(&local);
                (st, true)
            }
            Some(Loaded::Unreadable(_)) => (local, false),
            None => (local, true),
        }
    }
}

/// The methods whose replies bring data to the client (the flow guard
/// judges their requests and raises the flow by their replies).
pub const FLOWING: [&str; 4] = [
    "tools/call",
    "resources/read",
    "prompts/get",
    "completion/complete",
];

fn target_of<'m>(msg: &'m Message<'_>) -> Option<(&'m str, &'m str)> {
    let env = msg.envelope;
    let method = env.method.as_deref()?;
    let target = match method {
        "tools/call" | "prompts/get" => env.name.as_deref()?,
        "resources/read" => env.uri.as_deref()?,
        "completion/complete" => "completion",
        _ => return None,
    };
    Some((method, target))
}

impl McpFilter for FlowFilter {
    fn name(&self) -> &'static str {
        "flow"
    }

    /// Requests: before the policy (which reads what this notes). The
    /// replies are [`FlowReplyFilter`]'s, after DLP has looked at them.
    fn acts_on(&self) -> Acts {
        // Every client message: a client's answer to a server's request
        // has no method, and is judged too (`client_reply`).
        Acts {
            requests: Methods::All,
            responses: Methods::None,
        }
    }

    fn on_request(&self, msg: &Message<'_>, ex: &Exchange<'_>, notes: &mut Notes) -> Decision {
        if msg.envelope.kind == crate::protocol::jsonrpc::Kind::Response {
            return self.client_reply(ex);
        }
        let Some((method, target)) = target_of(msg) else {
            return Decision::Pass;
        };
        let call = self.labels(ex, method, target, msg.arguments());
        let (state, readable) = self.state(ex);
        let unreadable = !readable;
        let f = &self.flows;
        let clear = clearance(f, ex);
        notes.flow = Some(FlowNote {
            state: state.clone(),
            call: call.clone(),
            unreadable,
            clearance: clear,
            names: self.names.clone(),
        });
        // A sink whose flow cannot be read is refused, whoever decides:
        // an empty state would look harmless to any rule.
        if call.roles.sink && unreadable {
            return Decision::Reject(self.denial(
                method,
                "flow_state_unavailable",
                format!(
                    "Refused: what this session has read cannot be checked now, so `{}` (which sends data outward) is refused (flow_state_unavailable). Retry shortly.",
                    call.what
                ),
            ));
        }
        if self.flows.decide == Decide::Policy {
            return Decision::Pass;
        }
        if (!call.roles.sink || call.roles.private) && call.level > clear {
            return Decision::Reject(self.denial(
                method,
                "flow_above_clearance",
                format!(
                    "Refused: {} data from `{}` is above your clearance ({}) (flow_above_clearance).",
                    f.name(call.level),
                    call.what,
                    f.name(clear)
                ),
            ));
        }
        if !call.roles.sink {
            return Decision::Pass;
        }
        if !(state.level > call.level && state.untrusted) {
            return Decision::Pass;
        }
        let (high, untrusted) = state.culprits();
        let text = format!(
            "{} data from `{}` cannot go to `{}` after untrusted content from `{}`",
            f.name(state.level),
            high.map_or("an earlier call", |s| s.what.as_str()),
            call.what,
            untrusted.map_or("an earlier call", |s| s.what.as_str()),
        );
        match f.on_violation {
            OnViolation::Deny => Decision::Reject(self.denial(
                method,
                "flow_blocked",
                format!("Refused: {text} (flow_blocked)."),
            )),
            OnViolation::Approval => {
                let ask = ApprovalAsk {
                    approvers: f.approvers,
                    reason: format!("{text}: a human must release this flow").into(),
                };
                notes.approval_asked = Some(match notes.approval_asked.take() {
                    Some(a) if a.approvers >= ask.approvers => a,
                    _ => ask,
                });
                Decision::Pass
            }
        }
    }
}

impl FlowFilter {
    /// A client's answer to a server's request (a sampling result, an
    /// elicitation's content, its roots) goes to that server: it is judged
    /// as a sink of the server's level. A refused answer is dropped (the
    /// server's request goes unanswered), never passed.
    fn client_reply(&self, ex: &Exchange<'_>) -> Decision {
        let level = self
            .catalog
            .get(ex.server)
            .and_then(|c| c.labels.classification)
            .unwrap_or(0);
        let what = format!("{} (an answer to its request)", ex.server);
        let (state, readable) = self.state(ex);
        let f = &self.flows;
        if !readable {
            return Decision::Reject(self.denial(
                "response",
                "flow_state_unavailable",
                format!("Refused: what this session has read cannot be checked now, so an answer to `{}` is not sent (flow_state_unavailable).", ex.server),
            ));
        }
        if f.decide == Decide::Policy || !(state.level > level && state.untrusted) {
            return Decision::Pass;
        }
        let (high, untrusted) = state.culprits();
        Decision::Reject(self.denial(
            "response",
            "flow_blocked",
            format!(
                "Refused: {} data from `{}` cannot go to `{what}` after untrusted content from `{}` (flow_blocked).",
                f.name(state.level),
                high.map_or("an earlier call", |s| s.what.as_str()),
                untrusted.map_or("an earlier call", |s| s.what.as_str()),
            ),
        ))
    }
}

/// The reply half of the flow guard: after DLP, so its findings raise the
/// reply's level.
pub struct FlowReplyFilter(pub Arc<FlowFilter>);

impl McpFilter for FlowReplyFilter {
    fn name(&self) -> &'static str {
        "flow"
    }

    /// Replies to calls and reads, a task's result (its creating tool's
    /// output), and what a server asks of the client's model (sampling,
    /// elicitation: content from that server).
    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::None,
            responses: Methods::Only(&[
                "tools/call",
                "resources/read",
                "prompts/get",
                "completion/complete",
                "tasks/result",
                "tasks/get",
                "sampling/createMessage",
                "elicitation/create",
            ]),
        }
    }

    fn on_response(&self, msg: &Message<'_>, ex: &Exchange<'_>, notes: &mut Notes) -> Decision {
        self.0.reply(msg, ex, notes)
    }
}

impl FlowFilter {
    fn reply(&self, msg: &Message<'_>, ex: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        let server_asks = env.kind == crate::protocol::jsonrpc::Kind::Request;
        let (method, target) = match (msg.request_method, msg.request_target) {
            _ if server_asks => ("server", "?"),
            (Some(m @ ("tools/call" | "resources/read" | "prompts/get")), Some(t)) => (m, t),
            (Some("completion/complete"), _) => ("completion/complete", "completion"),
            // A task's result (`tasks/result`, or inline in `tasks/get`)
            // is its creating tool's output.
            (Some("tasks/result" | "tasks/get"), Some(t)) => ("tools/call", t),
            // A reply to a request the gateway does not know: untrusted,
            // of the level DLP gives it.
            _ => ("tools/call", "?"),
        };
        let call = if server_asks {
            // Content the server sends the client's model: the server's
            // labels, untrusted unless the catalog says otherwise.
            let l = self
                .catalog
                .get(ex.server)
                .map(|c| c.labels.clone())
                .unwrap_or_default();
            CallLabels {
                what: format!(
                    "{} ({})",
                    ex.server,
                    env.method.as_deref().unwrap_or("request")
                ),
                level: l.classification.unwrap_or(0),
                roles: l.roles.unwrap_or(self.flows.unlabelled),
            }
        } else {
            self.labels(ex, method, target, None)
        };
        if call.roles.sink
            && !call.roles.untrusted
            && !call.roles.private
            && notes.findings.is_empty()
        {
            return Decision::Pass;
        }
        let mut level = if call.roles.sink { 0 } else { call.level };
        if !notes.findings.is_empty() {
            level = level.max(self.flows.dlp_level);
        }
        let untrusted = call.roles.untrusted || target == "?";
        if level == 0 && !untrusted {
            return Decision::Pass;
        }
        let source = Source {
            id: next_id(),
            what: call.what,
            level,
            untrusted,
        };
        let key = flow_key(&self.flows, ex);
        let seen = match ex.flow {
            Some(Loaded::State(s)) => Some(s),
            _ => None,
        };
        // A reply that adds nothing to its flow is neither shared nor named
        // (the lineage names the calls that raised the state).
        if !self.tables.raise(&key, &source, seen) {
            return Decision::Pass;
        }
        let level_name = self.flows.name(source.level).to_owned();
        notes.flow_out = Some(FlowOut {
            key,
            source,
            level_name,
        });
        Decision::Pass
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
