//! Judging a whole POST body (one message or a batch) and planning what the
//! upstream receives and what the gateway answers itself.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use crate::chain::filter::{Exchange, FilterChain, Message, Notes, Verdict};
use crate::chain::notes::{ApprovalNeed, FindingNote, ShadowNote};
use crate::protocol::jsonrpc::{ElementError, Envelope, Id, Kind, Parsed};

/// One message's fate, for audit and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    pub id: Option<Id>,
    pub kind: Option<Kind>,
    pub method: Option<String>,
    /// Tool, prompt or resource named by the message.
    pub target: Option<String>,
    pub outcome: Outcome,
    /// `sha256:<hex>` of the raw `params.arguments` (tools/call, prompts/get).
    pub args_digest: Option<String>,
    /// The raw arguments, when the context asks to keep them for audit.
    pub arguments: Option<String>,
    /// The tool's result as the client got it, DLP-redacted (replies to
    /// calls whose risk tier `audit.log_io` names).
    pub result: Option<String>,
    /// What DLP found (rule, path, action — never the text).
    pub findings: Vec<FindingNote>,
    /// Links the records of one task to the call that created it.
    pub task: Option<String>,
    /// The human approval this call needed (held calls and the calls
    /// an approval let through).
    pub approval: Option<ApprovalNeed>,
    /// The shadow rule's disagreement with the enforced one, if any.
    pub shadow: Option<ShadowNote>,
    /// The flow (`flows`): on a request, the session's state and the
    /// call's labels with the lineage; on a reply, what it added (`out`).
    pub flow: Option<serde_json::Value>,
    /// The call's behaviour signals (`anomaly`), with what its baseline
    /// learns once it is forwarded.
    pub anomaly: Option<crate::engines::anomaly::AnomalyNote>,
    /// A notice the guards left (a deprecated server's call).
    pub notice: Option<String>,
    /// A completion of a resource template's argument, as the ledger keeps
    /// it in place of a target (see [`crate::chain::notes::Completing`]).
    pub completing: Option<String>,
    /// What a `tools/call` cost (the catalog's `price`): set on its reply's
    /// record, or on the call's own when the reply came on its POST.
    pub cost: Option<Cost>,
    /// Money budgets' alerts this call's charge raised (`budgets:`), as the
    /// audit record's `budget`.
    pub budget: Option<serde_json::Value>,
}

/// What one call cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    /// Millionths of the currency's unit.
    pub micros: u64,
    /// `None`: the tool has no price (the call costs nothing, and says so).
    pub currency: Option<String>,
    /// The units the result held at the price's pointer.
    pub units: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Forwarded,
    Mutated {
        filter: &'static str,
    },
    Denied {
        filter: &'static str,
        reason: String,
    },
    Invalid {
        reason: String,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Mutated { .. } => "mutated",
            Outcome::Denied { .. } => "denied",
            Outcome::Invalid { .. } => "invalid",
        }
    }
}

/// What to send upstream, if anything.
#[derive(Debug, Clone, PartialEq)]
pub enum Forward {
    /// The body exactly as received.
    Original,
    /// A rewritten body (redactions, or a batch with refused elements
    /// removed) and, for a single message, the envelope the chain parsed the
    /// rewrite as (what reads the forwarded body after the chain reads this,
    /// never a parse of its own).
    Rewritten(Vec<u8>, Option<Box<Envelope>>),
    /// Nothing reaches the upstream; the gateway answers alone.
    Nothing,
}

/// The plan for one POST body.
#[derive(Debug)]
pub struct RequestPlan {
    pub forward: Forward,
    /// JSON-RPC error responses the gateway adds for refused requests.
    pub answers: Vec<serde_json::Value>,
    /// Whether the body was a batch (answers must then be an array).
    pub batch: bool,
    /// Whether any forwarded message is a request (expects a response).
    pub forwards_request: bool,
    pub records: Vec<MessageRecord>,
    /// Held until the exchange ends (concurrency slots of the forwarded calls).
    pub holds: Vec<crate::chain::filter::Hold>,
    /// A single request refused for lack of OAuth scopes: the scopes it
    /// needs (answered 403 `insufficient_scope`, not 200). Never for a batch.
    pub step_up: Option<Vec<String>>,
    /// A single call that passed every guard but needs human approval: not
    /// forwarded (`forward` is `Nothing`, and `answers` says approval is
    /// required) until the gateway claims an approval for it and forwards
    /// `Held::forward` instead.
    pub held: Option<Held>,
}

/// A call held for approval: what it needs and what would be forwarded.
#[derive(Debug)]
pub struct Held {
    pub need: ApprovalNeed,
    pub forward: Forward,
    /// What the guards made of the call (forwarded, or mutated by one).
    pub outcome: Outcome,
}

impl RequestPlan {
    /// An approval was claimed for the held call: forward what the guards passed.
    pub fn release_held(&mut self) {
        if let Some(h) = self.held.take() {
            self.forward = h.forward;
            self.answers.clear();
            self.forwards_request = true;
            if let Some(r) = self.records.last_mut() {
                r.outcome = h.outcome;
            }
        }
    }
}

fn target(env: &Envelope) -> Option<String> {
    crate::protocol::mcp::judged_target(env).map(str::to_owned)
}

/// The messages of one request body, each built once: what the gateway
/// reads before the chain (the mirrored headers' arguments, `initialize`'s
/// capabilities), the chain, and the audit record all read the same
/// [`Message`], so each is parsed into a value at most once.
// One value per request body, never stored in bulk: a single message
// inline is cheaper than its box.
#[allow(clippy::large_enum_variant)]
pub enum RequestMessages<'a> {
    Single(Message<'a>),
    /// A batch's elements in order: a message, or why the element is none.
    Batch(Vec<Result<Message<'a>, &'a ElementError>>),
}

impl<'a> RequestMessages<'a> {
    pub fn new(body: &'a [u8], parsed: &'a Parsed) -> Self {
        match parsed {
            Parsed::Single(env) => RequestMessages::Single(Message::new(env, body)),
            Parsed::Batch(items) => RequestMessages::Batch(
                items
                    .iter()
                    .map(|item| {
                        item.as_ref()
                            .map(|env| Message::new(env, &body[env.span.clone()]))
                    })
                    .collect(),
            ),
        }
    }

    /// The body's one message, when it is not a batch.
    pub fn single(&self) -> Option<&Message<'a>> {
        match self {
            RequestMessages::Single(m) => Some(m),
            RequestMessages::Batch(_) => None,
        }
    }
}

/// Runs the chain over every message of a parsed body.
pub fn plan_request(
    messages: &RequestMessages<'_>,
    chain: &FilterChain,
    ctx: &Exchange<'_>,
) -> RequestPlan {
    match messages {
        RequestMessages::Single(msg) => {
            let env = msg.envelope;
            let mut notes = Notes::default();
            let verdict = chain.run(msg, ctx, &mut notes);
            let mut plan = RequestPlan {
                forward: Forward::Original,
                answers: Vec::new(),
                batch: false,
                forwards_request: false,
                records: Vec::new(),
                holds: notes.take_holds(),
                step_up: None,
                held: None,
            };
            let held = notes.approval.clone().filter(|_| {
                env.kind == Kind::Request && !matches!(verdict, Verdict::Reject { .. })
            });
            let mut outcome = apply(&mut plan, env, verdict);
            if let Some(need) = held {
                // Held, never forwarded here: the gateway forwards only
                // once it claims an approval (`release_held`).
                let denial = approval_required(false);
                plan.answers.push(denial.to_response(env.id.as_ref()));
                let judged = std::mem::replace(
                    &mut outcome,
                    Outcome::Denied {
                        filter: "approval",
                        reason: denial.reason,
                    },
                );
                plan.held = Some(Held {
                    need,
                    forward: std::mem::replace(&mut plan.forward, Forward::Nothing),
                    outcome: judged,
                });
            }
            let mut rec = MessageRecord::with_arguments(msg, outcome, ctx.keep_arguments);
            rec.noted(notes);
            plan.records.push(rec);
            plan.forwards_request = env.kind == Kind::Request && plan.forward != Forward::Nothing;
            plan
        }
        RequestMessages::Batch(items) => {
            let mut plan = RequestPlan {
                forward: Forward::Original,
                answers: Vec::new(),
                batch: true,
                forwards_request: false,
                records: Vec::new(),
                holds: Vec::new(),
                step_up: None,
                held: None,
            };
            // Elements stay slices of the body unless a filter rewrote them.
            let mut kept: Vec<Cow<'_, [u8]>> = Vec::with_capacity(items.len());
            let mut changed = false;
            // The request ids of this batch, as text: replies are matched
            // to requests by id, so two requests sharing one (or ids a
            // peer may read as one, `1` and `"1"`) would let a reply be
            // judged as the answer to the other.
            let mut ids: Vec<Cow<'_, str>> = Vec::new();
            for item in items {
                match item {
                    Ok(msg) => {
                        let (env, bytes) = (msg.envelope, msg.bytes);
                        let mut notes = Notes::default();
                        let reused = match (&env.kind, &env.id) {
                            (Kind::Request, Some(id)) => {
                                let text = id_text(id);
                                let seen = ids.contains(&text);
                                if !seen {
                                    ids.push(text);
                                }
                                seen
                            }
                            _ => false,
                        };
                        let mut verdict = if reused {
                            Verdict::Reject {
                                filter: "gateway",
                                denial: duplicate_id(),
                            }
                        } else {
                            chain.run(msg, ctx, &mut notes)
                        };
                        if notes.approval.is_some() && !matches!(verdict, Verdict::Reject { .. }) {
                            // Approval is asked for a call sent alone.
                            verdict = Verdict::Reject {
                                filter: "approval",
                                denial: approval_required(true),
                            };
                            notes.take_holds();
                        }
                        plan.holds.extend(notes.take_holds());
                        let mut single = RequestPlan {
                            forward: Forward::Original,
                            answers: Vec::new(),
                            batch: false,
                            forwards_request: false,
                            records: Vec::new(),
                            holds: Vec::new(),
                            step_up: None,
                            held: None,
                        };
                        let outcome = apply(&mut single, env, verdict);
                        match single.forward {
                            Forward::Original => kept.push(Cow::Borrowed(bytes)),
                            Forward::Rewritten(b, _) => {
                                changed = true;
                                kept.push(Cow::Owned(b))
                            }
                            Forward::Nothing => changed = true,
                        }
                        if env.kind == Kind::Request && !matches!(outcome, Outcome::Denied { .. }) {
                            plan.forwards_request = true;
                        }
                        plan.answers.extend(single.answers);
                        let mut rec =
                            MessageRecord::with_arguments(msg, outcome, ctx.keep_arguments);
                        rec.noted(notes);
                        plan.records.push(rec);
                    }
                    Err(e) => {
                        changed = true;
                        plan.answers.push(e.error.to_response(e.id.as_ref()));
                        plan.records.push(MessageRecord::invalid(e));
                    }
                }
            }
            plan.forward = if kept.is_empty() {
                Forward::Nothing
            } else if !changed {
                Forward::Original
            } else {
                Forward::Rewritten(json_array(&kept), None)
            };
            plan
        }
    }
}

/// An id as a peer may read it: `1` and `"1"` are one id to a client that
/// looks replies up by `Number(id)` or `String(id)`.
fn id_text(id: &crate::protocol::id::Id) -> Cow<'_, str> {
    match id {
        crate::protocol::id::Id::Num(n) => Cow::Owned(n.to_string()),
        crate::protocol::id::Id::Str(s) => Cow::Borrowed(s),
    }
}

/// The answer to a batch element whose id an earlier request of the batch
/// already uses.
fn duplicate_id() -> crate::chain::filter::Denial {
    crate::chain::filter::Denial::error(
        crate::protocol::error::JsonRpcError::new(
            crate::protocol::error::codes::INVALID_REQUEST,
            "Invalid Request: another request of this batch has the same id",
        )
        .with_data(serde_json::json!({"reason": "duplicate_request_id"})),
        "duplicate_request_id",
    )
}

/// The answer to a call that needs approval, before (or without) the
/// control agent: a batch element is refused outright.
fn approval_required(in_batch: bool) -> crate::chain::filter::Denial {
    let (reason, message) = if in_batch {
        (
            "approval_required_in_batch",
            "This call needs human approval; send it on its own, not in a batch",
        )
    } else {
        ("approval_required", "This call needs human approval")
    };
    crate::chain::filter::Denial::error(
        crate::protocol::error::JsonRpcError::new(
            crate::protocol::error::codes::APPROVAL_REQUIRED,
            message,
        )
        .with_data(serde_json::json!({"reason": reason})),
        reason,
    )
}

fn apply(plan: &mut RequestPlan, env: &Envelope, verdict: Verdict) -> Outcome {
    match verdict {
        Verdict::Forward => Outcome::Forwarded,
        Verdict::ForwardMutated(b, rewritten) => {
            plan.forward = Forward::Rewritten(b, (!plan.batch).then_some(rewritten));
            Outcome::Mutated { filter: "chain" }
        }
        Verdict::Reject { filter, denial } => {
            plan.forward = Forward::Nothing;
            if env.kind == Kind::Request && !plan.batch {
                plan.step_up = denial.step_up.clone();
            }
            // Only requests are answered; a refused notification or response is dropped.
            if env.kind == Kind::Request {
                plan.answers.push(denial.to_response(env.id.as_ref()));
            }
            Outcome::Denied {
                filter,
                reason: denial.reason,
            }
        }
    }
}

/// `sha256:<hex>` of a request's raw arguments, as its audit record has it.
pub fn args_digest(raw: &str) -> String {
    let mut hex = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(raw.as_bytes()), &mut hex)
        .expect("64 hex digits for 32 bytes");
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    // Hex digits are ASCII.
    out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    out
}

impl MessageRecord {
    /// The record of a message that could not be parsed as JSON-RPC.
    pub fn invalid(e: &ElementError) -> Self {
        MessageRecord {
            id: e.id.clone(),
            kind: None,
            // What was read before the fault, as far as it was read.
            method: e.read.method.clone(),
            target: e.read.target().map(str::to_owned),
            outcome: Outcome::Invalid {
                reason: e.error.message.clone(),
            },
            args_digest: None,
            arguments: None,
            result: None,
            findings: Vec::new(),
            task: None,
            approval: None,
            shadow: None,
            flow: None,
            anomaly: None,
            notice: None,
            completing: None,
            cost: None,
            budget: None,
        }
    }

    /// The record of one parsed message and what became of it.
    pub fn of(env: &Envelope, outcome: Outcome) -> Self {
        MessageRecord {
            id: env.id.clone(),
            kind: Some(env.kind),
            method: env.method.clone(),
            target: target(env),
            outcome,
            args_digest: None,
            arguments: None,
            result: None,
            findings: Vec::new(),
            task: None,
            approval: None,
            shadow: None,
            flow: None,
            anomaly: None,
            notice: None,
            completing: None,
            cost: None,
            budget: None,
        }
    }

    /// Takes what the filters noted: findings, and the task the message
    /// names (whose creating tool becomes the record's target, so the reply
    /// is judged, and the record labelled, by that tool).
    pub fn noted(&mut self, notes: Notes) {
        self.findings = notes.findings;
        self.approval = notes.approval;
        self.shadow = notes.shadow;
        self.notice = notes.notice;
        self.anomaly = notes.anomaly;
        self.completing = notes.completing;
        self.flow = match (notes.flow, notes.flow_out) {
            (_, Some(out)) => Some(serde_json::json!({"out": {
                "id": out.source.id,
                "what": out.source.what,
                "level": out.level_name,
                "untrusted": out.source.untrusted,
            }})),
            (Some(n), None) => {
                let mut v = n.to_json();
                v["lineage"] = n.state.sources.iter().map(|s| s.id.clone()).collect();
                Some(v)
            }
            (None, None) => None,
        };
        if let Some(t) = notes.task {
            // A task's messages are judged as its creating tool's, whatever
            // else the message names.
            self.task = Some(t.link);
            self.target = t.tool;
        }
    }

    /// As [`MessageRecord::of`], with the digest (and, if `keep`, the text)
    /// of the message's arguments.
    pub fn with_arguments(msg: &Message<'_>, outcome: Outcome, keep: bool) -> Self {
        let mut r = Self::of(msg.envelope, outcome);
        if matches!(
            msg.envelope.method.as_deref(),
            Some("tools/call" | "prompts/get")
        ) {
            if let Some(args) = msg.arguments_raw() {
                r.args_digest = Some(args_digest(args));
                if keep {
                    r.arguments = Some(args.to_owned());
                }
            }
        }
        r
    }
}

/// Joins already-serialised JSON values into one JSON array, byte for byte.
pub fn json_array<P: AsRef<[u8]>>(parts: &[P]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.as_ref().len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(p.as_ref());
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::filter::{Decision, Denial, McpFilter, Principal};
    use crate::protocol::error::JsonRpcError;
    use crate::protocol::jsonrpc::{parse, ParseLimits};
    use std::sync::Arc;

    /// Refuses calls to the tool `forbidden` and rewrites the tool `shout`'s text.
    struct TestFilter;
    impl McpFilter for TestFilter {
        fn name(&self) -> &'static str {
            "test"
        }
        fn on_request(&self, msg: &Message<'_>, _: &Exchange<'_>, _: &mut Notes) -> Decision {
            match msg.envelope.name.as_deref() {
                Some("forbidden") => Decision::Reject(Denial::error(
                    JsonRpcError::new(-31010, "no"),
                    "test_denied",
                )),
                Some("shout") => Decision::Mutated(
                    String::from_utf8_lossy(msg.bytes)
                        .replace("hi", "HI")
                        .into_bytes(),
                ),
                Some("hijack") => Decision::Mutated(
                    br#"{"jsonrpc":"2.0","id":999,"method":"tools/call"}"#.to_vec(),
                ),
                _ => Decision::Pass,
            }
        }
    }

    fn run(body: &str) -> RequestPlan {
        let chain = FilterChain::new(vec![Arc::new(TestFilter)], ParseLimits::default());
        let p = Principal::anonymous();
        let ctx = Exchange::new(&p, "s");
        let parsed = parse(body.as_bytes(), ParseLimits::default()).expect("parse");
        plan_request(
            &RequestMessages::new(body.as_bytes(), &parsed),
            &chain,
            &ctx,
        )
    }

    fn call(id: u32, tool: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"t":"hi"}}}}}}"#
        )
    }

    #[test]
    fn single_pass_deny_mutate() {
        assert_eq!(run(&call(1, "ok")).forward, Forward::Original);
        let denied = run(&call(2, "forbidden"));
        assert_eq!(denied.forward, Forward::Nothing);
        assert_eq!(denied.answers[0]["id"], 2);
        assert_eq!(denied.answers[0]["error"]["code"], -31010);
        let m = run(&call(3, "shout"));
        assert!(
            matches!(&m.forward, Forward::Rewritten(b, _) if String::from_utf8_lossy(b).contains("HI"))
        );
        // A rewrite that changes the id is refused, never forwarded.
        let h = run(&call(4, "hijack"));
        assert_eq!(h.forward, Forward::Nothing);
        assert_eq!(h.answers[0]["error"]["code"], -32603);
    }

    #[test]
    fn batch_judged_per_element() {
        let body = format!(
            "[{},{},{},{{\"jsonrpc\":\"2.0\",\"id\":9}}]",
            call(1, "ok"),
            call(2, "forbidden"),
            call(3, "shout")
        );
        let plan = run(&body);
        assert!(plan.batch);
        let Forward::Rewritten(fwd, _) = &plan.forward else {
            panic!("{:?}", plan.forward)
        };
        let v: serde_json::Value = serde_json::from_slice(fwd).expect("json");
        let ids: Vec<_> = v
            .as_array()
            .expect("arr")
            .iter()
            .map(|m| m["id"].clone())
            .collect();
        assert_eq!(ids, vec![serde_json::json!(1), serde_json::json!(3)]);
        let answered: Vec<_> = plan.answers.iter().map(|a| a["id"].clone()).collect();
        assert_eq!(answered, vec![serde_json::json!(2), serde_json::json!(9)]);
        assert_eq!(plan.records.len(), 4);
        // An all-clean batch is forwarded byte for byte.
        let clean = format!("[{}, {}]", call(1, "a"), call(2, "b"));
        assert_eq!(run(&clean).forward, Forward::Original);
    }
}
