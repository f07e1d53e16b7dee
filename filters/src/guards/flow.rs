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
//! - **On a request**: a read (`tools/call`, `resources/read`,
//!   `prompts/get`, `completion/complete`) of a level above the principal's
//!   clearance (`attributes.clearance`, else `flows.default_clearance`) is
//!   refused, whatever else the call is. A sink — a call labelled so, or
//!   any client message that reaches out ([`reach`]: a URL or an address
//!   anywhere in its params, a tool with URL arguments or an egress
//!   allowance) — is refused once the state holds data above the sink's
//!   level together with untrusted content ("restricted data from
//!   `hr/get_employee` cannot go to `web/post` after untrusted content from
//!   `web/fetch`"), or held for an approval of that call
//!   (`flows.on_violation: approval`). A call can be both: a read and a
//!   sink. With `flows.decide: policy` the gateway refuses no request
//!   itself: the Rego input carries the state and the call's labels
//!   (`input.flow`). A client's answer to a server's request (which the
//!   policy never sees) is judged as a sink of that server's level in
//!   either mode, wherever it travels: as a JSON-RPC response, or inside a
//!   request (`inputResponses` on a 2026-07-28 retry or on `tasks/update`).
//! - **On the reply** ([`FlowReplyFilter`]): whatever reaches the client
//!   raises the state — a call's reply by the call's labels (a sink's
//!   too), everything else a server sends (its `initialize` instructions,
//!   its lists' descriptions, its notifications and requests) by the
//!   server's own labels, at least `flows.dlp_level` when DLP found
//!   something in it. What is above the caller's clearance is withheld
//!   (`flow_above_clearance`) and raises nothing.
//! - Only a `tools/call` can wait for an approval: any other blocked
//!   message is refused. A server labelled `sink` is sent nothing
//!   unjudged: every client message to it is a sink, params or not (its
//!   id, the headers and the URL it travels with reach the server too),
//!   and so is a GET stream or DELETE to it ([`FlowFilter::judge_stream`]).
//!
//! The state lives in a bounded table of this process, or in the shared
//! store (Redis) when the bundle has one: the gateway reads it before the
//! chain (for every message [`judges`] names) and hands it in
//! [`Exchange::flow`]; a state it could not read refuses sink calls (fail
//! closed). The table never forgets a live state to make room (a
//! forgotten state would come back clean): a reply that would raise a
//! state a full table does not hold is withheld, `flow_unrecorded`,
//! unless the shared store records it.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use warden_config::access::{DenialStyle, ServerCatalog};
use warden_config::flows::{Decide, Flows, OnViolation, Track};

use crate::chain::filter::{
    Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes, Word,
};
use crate::engines::flow::{
    bounded_name, unix_secs, CallLabels, FlowNote, FlowState, FlowTables, Loaded,
};
use crate::engines::policy::ApprovalAsk;
use crate::protocol::error::{codes, JsonRpcError};

mod reach;
mod reply;

pub use reply::FlowReplyFilter;

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

/// Who a flow key belongs to, for the flows table's per-principal cap:
/// the principal (one person however the credential spells the name), and
/// an anonymous caller's address (anonymous callers share one principal).
pub fn flow_owner(ex: &Exchange<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    let address = match ex.principal.auth {
        crate::engines::identity::AuthMethod::Anonymous => {
            ex.source_ip.map(|ip| ip.to_string()).unwrap_or_default()
        }
        _ => String::new(),
    };
    for part in ["flow-owner", ex.principal.owner(), address.as_str()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// The labels of a call of `server` to `target` (a tool, or a resource URI
/// for `resources/read`); `reaches`: the message names a place outside
/// ([`reach`]).
pub fn call_labels(
    flows: &Flows,
    catalog: Option<&ServerCatalog>,
    server: &str,
    method: &str,
    target: &str,
    reaches: bool,
) -> CallLabels {
    let (what, own, tool) = match method {
        "prompts/get" | "completion/complete" => (
            format!("{server} ({method} {target})"),
            warden_config::flows::Labels::default(),
            None,
        ),
        "resources/read" => (
            format!("{server}:{target}"),
            catalog
                .map(|c| resource_labels(c, target))
                .unwrap_or_default(),
            None,
        ),
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
                tool,
            )
        }
    };
    let server_labels = catalog.map(|c| c.labels.clone()).unwrap_or_default();
    // Unlabelled: the bundle's default roles. Labelled or not, a call
    // that can reach out (URL arguments, an egress allowance, a place
    // named in its params) is a sink too: a fetch with the data in its
    // query sends it out. It stays what else it is: a sink's reply
    // raises the flow by its labels, and reading it needs clearance.
    let mut roles = own
        .roles
        .or(server_labels.roles)
        .unwrap_or(flows.unlabelled);
    roles.sink |= reaches
        || tool.is_some_and(|t| !t.url_arguments.is_empty() || !t.egress_allow.is_empty())
        || catalog.is_some_and(|c| !c.egress_allow.is_empty());
    let level = own
        .classification
        .or(server_labels.classification)
        .unwrap_or(if roles.private { flows.dlp_level } else { 0 });
    CallLabels {
        what: bounded_name(what),
        level,
        roles,
    }
}

/// The labels of what `server` itself says (`what`: the message): its
/// `initialize` result, its lists, its notifications, its requests to the
/// client — the server's own labels, `flows.unlabelled` when it has none.
pub fn server_labels(
    flows: &Flows,
    catalog: Option<&ServerCatalog>,
    server: &str,
    what: &str,
) -> CallLabels {
    let l = catalog.map(|c| c.labels.clone()).unwrap_or_default();
    let roles = l.roles.unwrap_or(flows.unlabelled);
    CallLabels {
        what: bounded_name(format!("{server} ({what})")),
        level: l
            .classification
            .unwrap_or(if roles.private { flows.dlp_level } else { 0 }),
        roles,
    }
}

/// The labels of a reply the gateway cannot match to its call (another
/// replica forwarded it): the most it could be — the highest level of the
/// server, its tools and its resource patterns — and untrusted.
pub fn unmatched_labels(
    flows: &Flows,
    catalog: Option<&ServerCatalog>,
    server: &str,
) -> CallLabels {
    let own = server_labels(flows, catalog, server, "an unmatched reply");
    let level_of = |l: &warden_config::flows::Labels| {
        let private = l
            .roles
            .or(catalog.and_then(|c| c.labels.roles))
            .is_some_and(|r| r.private);
        l.classification
            .unwrap_or(if private { flows.dlp_level } else { 0 })
    };
    let level = catalog.map_or(own.level, |c| {
        c.tools
            .values()
            .map(|t| level_of(&t.labels))
            .chain(c.resources.iter().map(|(_, l)| level_of(l)))
            .fold(own.level, u8::max)
    });
    CallLabels {
        level,
        roles: warden_config::flows::Roles {
            untrusted: true,
            ..own.roles
        },
        ..own
    }
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
    // Read as the loosest server reads it (case, escapes, compatibility
    // forms: `ſecret` is `secret` to a case-folding reader).
    let lax = crate::protocol::resource_uri::loose(uri);
    let ambiguous = uri.contains("/.")
        || uri.contains('%')
        || uri.contains('\\')
        || c.resources.iter().any(|(p, _)| {
            uri_matches(&crate::protocol::resource_uri::loose(p), &lax) && !uri_matches(p, uri)
        });
    // Another spelling of the same resource (`Reports 2024` for a pattern
    // on `Reports%202024`) takes the labels of the pattern it matches too.
    let readings = crate::protocol::resource_uri::readings(uri);
    if !ambiguous && readings.is_empty() {
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
    if !ambiguous {
        for r in &readings {
            if let Some((_, l)) = c.resources.iter().find(|(p, _)| uri_matches(p, r)) {
                raise(l);
            }
        }
        return out;
    }
    raise(&c.labels);
    for (_, l) in &c.resources {
        raise(l);
    }
    out
}

/// A principal's clearance: its `clearance` attribute, else the default.
/// An attribute naming no level clears nothing above the lowest.
pub fn clearance(flows: &Flows, ex: &Exchange<'_>) -> u8 {
    match ex
        .principal
        .attributes
        .get(warden_config::flows::CLEARANCE_ATTRIBUTE)
    {
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

    /// Keeps what the gateway read of this exchange's flow in the shared
    /// store in this process's table, and returns what the flow holds as
    /// this replica knows it (`FlowTables::keep`), and its key; `None` for
    /// the state at the table's bound (sinks are then refused).
    pub fn keep_read(&self, ex: &Exchange<'_>, read: &FlowState) -> ([u8; 32], Option<FlowState>) {
        let key = flow_key(&self.flows, ex);
        let kept = self
            .tables
            .keep(&key, &flow_owner(ex), read, unix_secs(ex.now));
        (key, kept)
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

    fn labels(&self, ex: &Exchange<'_>, method: &str, target: &str, reaches: bool) -> CallLabels {
        call_labels(
            &self.flows,
            self.catalog.get(ex.server),
            ex.server,
            method,
            target,
            reaches,
        )
    }

    /// The state of this exchange's flow key: what the gateway read for it
    /// (the shared store), else this process's table.
    /// The state, and whether the fleet's view could be read (when it
    /// could not, this process's own view is all there is).
    fn state(&self, ex: &Exchange<'_>) -> (FlowState, bool) {
        let local = self
            .tables
            .get(&flow_key(&self.flows, ex), unix_secs(ex.now));
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

/// The methods whose replies bring data to the client: the flow guard
/// judges their requests as reads (clearance) and raises the flow by their
/// replies as their calls' labels say.
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

/// Whether a client message names a place outside anywhere in its params
/// or its id ([`reach`]). Params the gateway cannot read as a value count
/// as reaching out (judged, never skipped).
pub fn reaches_out(msg: &Message<'_>) -> bool {
    if let Some(crate::protocol::id::Id::Str(id)) = &msg.envelope.id {
        if reach::reaches_out(id) {
            return true;
        }
    }
    if msg.params_raw().is_none() {
        return false;
    }
    match msg.value().and_then(|v| v.get("params")) {
        Some(p) => reach::params_reach_out(msg.envelope.method.as_deref(), p),
        None => true,
    }
}

static INPUT_RESPONSES: Word = Word::new("inputResponses");

/// Whether a client request (or notification) carries the client's
/// answers to a server's requests: `inputResponses` (2026-07-28) on a
/// retry of any request, or on `tasks/update`. They reach the server as a
/// JSON-RPC response would, and are judged as one. A message the gateway
/// cannot read as a value counts as carrying them (judged, never
/// skipped).
pub fn carries_answers(msg: &Message<'_>) -> bool {
    if msg.envelope.kind == crate::protocol::jsonrpc::Kind::Response
        || !msg.may_hold(&INPUT_RESPONSES)
    {
        return false;
    }
    let Some(v) = msg.value() else {
        return true;
    };
    v.get("params")
        .and_then(|p| p.get("inputResponses"))
        .is_some_and(|r| match r {
            serde_json::Value::Null => false,
            serde_json::Value::Object(o) => !o.is_empty(),
            serde_json::Value::Array(a) => !a.is_empty(),
            _ => true,
        })
}

/// Whether a message's payload (`result`, `error` or `params`) holds
/// nothing a model (or a peer) could read.
pub(crate) fn empty(raw: Option<&str>) -> bool {
    raw.is_none_or(|r| matches!(r.trim(), "{}" | "[]" | "null"))
}

/// Whether a server is a sink as a whole: its roles (the bundle's
/// `flows.unlabelled` when the catalog gives it none) say so, or it has an
/// egress allowance. Every client message to it (and every GET stream or
/// DELETE) is judged as a sink of its level: what it is sent — params, an
/// id, headers, a query, a path — it may send on.
pub fn sink_server(flows: &Flows, catalog: Option<&ServerCatalog>) -> bool {
    catalog
        .and_then(|c| c.labels.roles)
        .unwrap_or(flows.unlabelled)
        .sink
        || catalog.is_some_and(|c| !c.egress_allow.is_empty())
}

/// Whether the flow guard judges a client message to `server` (its
/// catalog entry) against its flow's state: a read, a client's answer to
/// a server (a response, or `inputResponses` in a request), any message
/// that reaches out, and any message to a server that is a sink
/// ([`sink_server`]). The gateway reads the fleet's state (the shared
/// store) before the chain for each of them.
pub fn judges(flows: &Flows, catalog: Option<&ServerCatalog>, msg: &Message<'_>) -> bool {
    msg.envelope.kind == crate::protocol::jsonrpc::Kind::Response
        || sink_server(flows, catalog)
        || carries_answers(msg)
        || msg
            .envelope
            .method
            .as_deref()
            .is_some_and(|m| FLOWING.contains(&m) || crate::guards::task_binding::names_task(m))
        || reaches_out(msg)
}

impl McpFilter for FlowFilter {
    fn name(&self) -> &'static str {
        "flow"
    }

    fn judges_again(&self) -> bool {
        true
    }

    /// Requests: before the policy (which reads what this notes). The
    /// replies are [`FlowReplyFilter`]'s, after DLP has looked at them.
    fn acts_on(&self) -> Acts {
        // Every client message: any may reach out, and a client's answer
        // to a server's request has no method (`client_reply`).
        Acts {
            requests: Methods::All,
            responses: Methods::None,
        }
    }

    fn on_request(&self, msg: &Message<'_>, ex: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind == crate::protocol::jsonrpc::Kind::Response {
            return self.client_reply(ex, "response");
        }
        let method = env.method.as_deref().unwrap_or("request");
        // Answers to the server's input requests, carried in a request:
        // judged as any answer, whatever else the request is.
        if carries_answers(msg) {
            if let d @ Decision::Reject(_) = self.client_reply(ex, method) {
                return d;
            }
        }
        let reaches = reaches_out(msg);
        // A task's requests are its creating tool's call (the task filter
        // opened its id): its result is that tool's output, a read; and
        // `tasks/update` hands that tool input, as the call's arguments
        // did, so it is that tool's sink too. A task whose tool is not
        // known, given input, is a sink of its server's level.
        let task_tool = crate::guards::task_binding::names_task(method)
            .then(|| notes.task.as_ref().and_then(|t| t.tool.clone()))
            .flatten();
        let gives_input = method == "tasks/update" && !empty(msg.params_raw());
        let read = target_of(msg).or(task_tool.as_deref().map(|t| ("tools/call", t)));
        let call = match read {
            Some((_, target)) if task_tool.is_some() => {
                let mut c = self.labels(ex, "tools/call", target, reaches);
                // Any request to a server that is a sink as a whole is sent
                // on, as any message is.
                c.roles.sink &=
                    gives_input || reaches || sink_server(&self.flows, self.catalog.get(ex.server));
                c
            }
            Some((method, target)) => self.labels(ex, method, target, reaches),
            None if gives_input => {
                let mut c =
                    server_labels(&self.flows, self.catalog.get(ex.server), ex.server, method);
                c.roles.sink = true;
                c
            }
            // Any other message that reaches out is a sink of its server's
            // level (a cancellation's reason, a subscription's URI, …), and
            // so is any message to a server that is a sink (a cursor, a
            // reason, an id, the headers it travels with: it sends them on).
            None if reaches || sink_server(&self.flows, self.catalog.get(ex.server)) => {
                let mut c =
                    server_labels(&self.flows, self.catalog.get(ex.server), ex.server, method);
                c.roles.sink = true;
                c
            }
            None => return Decision::Pass,
        };
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
        // A read above clearance is refused, whatever else the call is (a
        // sink too, say: being one never lets a read through).
        if read.is_some() && call.level > clear {
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
        if !(call.roles.sink && state.level > call.level && state.untrusted) {
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
            // Only a tool call can be held: the approval guard holds
            // `tools/call` requests alone, so an approval asked for any
            // other message would let it through unheld.
            OnViolation::Approval
                if env.kind == crate::protocol::jsonrpc::Kind::Request
                    && method == "tools/call" =>
            {
                let ask = ApprovalAsk::new(
                    f.approvers,
                    format!("{text}: a human must release this flow").into(),
                );
                notes.approval_asked = Some(match notes.approval_asked.take() {
                    Some(a) => a.stricter(ask),
                    None => ask,
                });
                Decision::Pass
            }
            // Anything else (a notification, a resource read, a list with
            // a cursor, …) cannot wait for an approval: refused.
            OnViolation::Approval => Decision::Reject(self.denial(
                method,
                "flow_blocked",
                format!("Refused: {text} (flow_blocked)."),
            )),
        }
    }
}

impl FlowFilter {
    /// A client's answer to a server's request (a sampling result, an
    /// elicitation's content, its roots) goes to that server: it is judged
    /// as a sink of the server's level. A refused answer is dropped (the
    /// server's request goes unanswered), never passed. The gateway's rule
    /// judges it with `decide: policy` too: the policy never sees an
    /// answer (it has no method; `PolicyFilter` judged the server's
    /// request when it went by), so nothing else would. `method`: the
    /// request that carries the answers (`inputResponses`), or `response`.
    fn client_reply(&self, ex: &Exchange<'_>, method: &str) -> Decision {
        let level = self
            .catalog
            .get(ex.server)
            .and_then(|c| c.labels.classification)
            .unwrap_or(0);
        let what = format!("{} (an answer to its request)", ex.server);
        self.sink_without_policy(ex, method, &what, level)
    }

    /// A GET stream or a DELETE to a server that is a sink as a whole
    /// ([`sink_server`]) carries no message, but its headers, its query
    /// and its path reach the server: it is judged as a sink of the
    /// server's level, by the gateway whatever decides (the policy sees no
    /// message). `Pass` for any other server.
    pub fn judge_stream(&self, ex: &Exchange<'_>, method: &str) -> Decision {
        let catalog = self.catalog.get(ex.server);
        if !sink_server(&self.flows, catalog) {
            return Decision::Pass;
        }
        let call = server_labels(&self.flows, catalog, ex.server, method);
        self.sink_without_policy(ex, method, &call.what, call.level)
    }

    /// The gateway's own sink rule for what the policy never judges: `what`
    /// (named in the refusal) goes to `ex.server`, which may receive data
    /// up to `level`.
    fn sink_without_policy(
        &self,
        ex: &Exchange<'_>,
        method: &str,
        what: &str,
        level: u8,
    ) -> Decision {
        let (state, readable) = self.state(ex);
        let f = &self.flows;
        if !readable {
            return Decision::Reject(self.denial(
                method,
                "flow_state_unavailable",
                format!("Refused: what this session has read cannot be checked now, so `{what}` is not sent (flow_state_unavailable)."),
            ));
        }
        if !(state.level > level && state.untrusted) {
            return Decision::Pass;
        }
        let (high, untrusted) = state.culprits();
        Decision::Reject(self.denial(
            method,
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

#[cfg(test)]
mod tests;
