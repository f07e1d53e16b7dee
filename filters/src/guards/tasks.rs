//! Task ids bound to the principal that created them (the 2025-11-25 tasks
//! utility and the 2026-07-28 tasks extension, SEP-2663).
//!
//! A task id is a bearer handle: whoever presents it polls the result or
//! cancels the work. Servers are not required to scope tasks to a caller, so
//! the gateway does it. Every task id a server hands out (a `tools/call` task
//! handle, `tasks/get` and `tasks/list` results, `notifications/tasks/status`,
//! related-task metadata) reaches the client sealed: `wt1.<base64url(nonce ‖
//! ChaCha20-Poly1305({task, owner, server, tool}))>`. On `tasks/get`, `tasks/update`,
//! `tasks/cancel` and `tasks/result` the gateway opens the id (any replica can,
//! with the fleet's `sessions` secret) and forwards the server's own id. An id
//! that does not open, or that was sealed for another principal or server, is
//! answered exactly as a server answers an unknown task (`tasks/get` and
//! `tasks/result`: -32602; `tasks/update` and `tasks/cancel` under the
//! extension: the empty acknowledgement) and never reaches the server.
//! `tasks/list` results keep only the tasks this principal created through
//! this gateway.
//!
//! The token also names the tool whose call created the task, so a task's
//! result meets exactly the checks the tool's direct result meets (its output
//! schema, its pin: a quarantined tool's results are refused), and policy
//! sees the tool on every `tasks/*` request. Opening a token leaves a
//! [`TaskNote`] for the later filters and the audit record: the tool, and a
//! link (a keyed digest of server, owner and the server's id) that the
//! originating call's record carries too.

use std::sync::Arc;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::engines::token::{TokenKey, NONCE_LEN};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;

pub use crate::chain::notes::TaskNote;

const PREFIX: &str = "wt1.";
const AAD: &[u8] = b"warden task v1";
const RELATED: &str = "io.modelcontextprotocol/related-task";

/// The methods that name a task by `params.taskId`.
pub fn names_task(method: &str) -> bool {
    TASK_METHODS.contains(&method)
}

/// The methods whose `params.taskId` names a task.
pub const TASK_METHODS: &[&str] = &["tasks/get", "tasks/update", "tasks/cancel", "tasks/result"];

/// Seals and opens task ids.
pub struct TaskSealer {
    key: TokenKey,
    /// Keys the nonce: one id sealed for one principal always gives the same
    /// token, so a client comparing ids across polls sees the one it holds.
    nonce_key: [u8; 32],
}

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Sealed {
    t: String,
    o: String,
    v: String,
    /// The tool whose call created the task, when the sealing replica knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<String>,
}

/// What opening a task id tells: the server's own id, and the tool whose
/// call created it (when known).
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub task: String,
    pub tool: Option<String>,
}

impl TaskSealer {
    /// A sealer keyed by `secret` (the fleet's, so every replica opens what
    /// another sealed).
    pub fn new(secret: &[u8]) -> TaskSealer {
        let mut h = Sha256::new();
        h.update(b"warden task seal key v1\0");
        h.update(secret);
        let key: [u8; 32] = h.finalize().into();
        let nonce_key: [u8; 32] = Sha256::new()
            .chain_update(b"warden task nonce key v1\0")
            .chain_update(key)
            .finalize()
            .into();
        TaskSealer {
            key: TokenKey::new(&key),
            nonce_key,
        }
    }

    /// A sealer with a random key (one replica; ids end with the process).
    pub fn random() -> TaskSealer {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).expect("system randomness");
        TaskSealer::new(&k)
    }

    pub fn seal(
        &self,
        task: &str,
        holder: &str,
        server: &str,
        tool: Option<&str>,
    ) -> Option<String> {
        let buf = serde_json::to_vec(&Sealed {
            t: task.to_owned(),
            o: holder.to_owned(),
            v: server.to_owned(),
            n: tool.map(str::to_owned),
        })
        .ok()?;
        // Synthetic nonce (keyed digest of the plaintext): deterministic, and
        // distinct for distinct plaintexts.
        let digest = Sha256::new()
            .chain_update(self.nonce_key)
            .chain_update(&buf)
            .finalize();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&digest[..NONCE_LEN]);
        self.key.seal(PREFIX, AAD, nonce, buf)
    }

    /// The server's task id (and the tool), when `token` was sealed for
    /// this holder ([`holder`]) and server.
    pub fn open(&self, token: &str, holder: &str, server: &str) -> Option<Opened> {
        let plain = self.key.open(PREFIX, AAD, token, 4096)?;
        let s: Sealed = serde_json::from_slice(&plain).ok()?;
        (s.o == holder && s.v == server).then_some(Opened {
            task: s.t,
            tool: s.n,
        })
    }

    /// The audit link of one task: the same for the call that created it and
    /// every later request naming it, whichever token spelled it.
    pub fn link(&self, task: &str, holder: &str, server: &str) -> String {
        let d = Sha256::new()
            .chain_update(self.nonce_key)
            .chain_update(b"link\0")
            .chain_update(server.as_bytes())
            .chain_update(b"\0")
            .chain_update(holder.as_bytes())
            .chain_update(b"\0")
            .chain_update(task.as_bytes())
            .finalize();
        format!("tk_{}", hex::encode(&d[..8]))
    }
}

/// Whom a task is bound to: the principal's owner key; for the anonymous
/// principal, which every unauthenticated client shares, also the session
/// (a client without one shares its tasks with every other such client).
pub fn holder<'a>(ctx: &Exchange<'a>) -> std::borrow::Cow<'a, str> {
    let owner = ctx.principal.owner();
    if ctx.principal.auth == crate::engines::identity::AuthMethod::Anonymous {
        std::borrow::Cow::Owned(format!("{owner}\0{}", ctx.session_id.unwrap_or("")))
    } else {
        std::borrow::Cow::Borrowed(owner)
    }
}

/// Which principal created each task, and with which tool (server, task id
/// → owner, tool), to filter `tasks/list` and name the tool where a message
/// does not. Per process; a list only shows tasks created through it.
pub struct TaskOwners {
    map: moka::sync::Cache<(String, String), (String, Option<String>)>,
}

impl Default for TaskOwners {
    fn default() -> Self {
        TaskOwners::new(1_000_000)
    }
}

impl TaskOwners {
    /// At most `capacity` tasks remembered (the least recently used go).
    pub fn new(capacity: u64) -> Self {
        TaskOwners {
            map: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
        }
    }

    /// Tasks remembered now.
    pub fn len(&self) -> u64 {
        self.map.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Binds task ids to their creator (see the module documentation).
pub struct TaskFilter {
    sealer: Arc<TaskSealer>,
    owners: Arc<TaskOwners>,
}

impl TaskFilter {
    pub fn new(sealer: Arc<TaskSealer>, owners: Arc<TaskOwners>) -> Self {
        TaskFilter { sealer, owners }
    }

    /// Seals the server's id at `v` for this principal, when it is this
    /// principal's task (see [`Seen`]); `Err` when it is not. `tool` is the
    /// creating tool when the message tells it; otherwise this replica's
    /// memory of the task does.
    fn seal_at(
        &self,
        v: &mut Json,
        ctx: &Exchange<'_>,
        tool: Option<&str>,
        seen: Seen<'_>,
        notes: &mut Notes,
    ) -> Result<bool, NotOurs> {
        let Some(id) = v.as_str() else {
            return Ok(false);
        };
        let key = (ctx.server.to_owned(), id.to_owned());
        let me = holder(ctx).into_owned();
        let known = self.owners.map.get(&key);
        if known.as_ref().is_some_and(|(o, _)| *o != me) {
            // The server handed this id to another principal first.
            return Err(NotOurs);
        }
        // Remembered here, and (checked above) as this principal's.
        let mine = known.is_some();
        let link = self.sealer.link(id, &me, ctx.server);
        let remembered = known.and_then(|(_, t)| t);
        let tool = match seen {
            Seen::Created => {
                self.owners
                    .map
                    .insert(key, (me.clone(), tool.map(str::to_owned)));
                notes.task = Some(TaskNote {
                    link,
                    tool: tool.map(str::to_owned),
                });
                tool
            }
            Seen::Answer(asked) if mine || asked == Some(link.as_str()) => {
                tool.or(remembered.as_deref())
            }
            Seen::Mentioned if mine => tool.or(remembered.as_deref()),
            _ => return Err(NotOurs),
        };
        match self.sealer.seal(id, &me, ctx.server, tool) {
            Some(t) => {
                *v = Json::String(t);
                Ok(true)
            }
            None => Err(NotOurs),
        }
    }

    /// A related-task id in `_meta`: sealed when it is this principal's
    /// task, removed otherwise.
    fn seal_related(
        &self,
        meta: Option<&mut Json>,
        ctx: &Exchange<'_>,
        seen: Seen<'_>,
        notes: &mut Notes,
    ) -> bool {
        let Some(meta) = meta.and_then(Json::as_object_mut) else {
            return false;
        };
        let Some(id) = meta.get_mut(RELATED).and_then(|r| r.get_mut("taskId")) else {
            return false;
        };
        match self.seal_at(id, ctx, None, seen, notes) {
            Ok(changed) => changed,
            Err(NotOurs) => {
                meta.remove(RELATED);
                true
            }
        }
    }
}

/// How a server message came to name a task id.
#[derive(Clone, Copy)]
enum Seen<'a> {
    /// A `tools/call` handle: a new task, this principal's (unless the
    /// server already gave the id to someone else).
    Created,
    /// The reply to a request naming a task: the same task (its audit link
    /// is the request's), or one this replica knows as this principal's.
    Answer(Option<&'a str>),
    /// Anything else (status notifications, related-task metadata): only a
    /// task this replica knows as this principal's.
    Mentioned,
}

/// A task id that is not this principal's.
struct NotOurs;

fn not_ours() -> Decision {
    Decision::Reject(Denial::error(
        JsonRpcError::new(
            codes::UPSTREAM_PROTOCOL,
            "The MCP server named a task that is not this caller's; the reply was withheld",
        ),
        "task_not_owned",
    ))
}

impl std::fmt::Debug for TaskFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskFilter")
    }
}

/// Whether a message may carry a task id the gateway must seal: its
/// decoded text may hold `task` (an escape such as `\u0074ask` spells it
/// too, so any `\u` escape makes the message read).
static TASK: crate::chain::filter::Word = crate::chain::filter::Word::new("task");

impl McpFilter for TaskFilter {
    fn name(&self) -> &'static str {
        "task_binding"
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::Only(TASK_METHODS),
            responses: Methods::All,
        }
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Request && env.kind != Kind::Notification {
            return Decision::Pass;
        }
        let Some(method) = env.method.as_deref().filter(|m| names_task(m)) else {
            return Decision::Pass;
        };
        let modern = crate::protocol::version::ProtocolVersion::at_least(
            ctx.protocol_version,
            crate::protocol::version::ProtocolVersion::V2026_07_28,
        );
        if modern && method == "tasks/result" {
            // The tasks extension has no `tasks/result` (SEP-2663): answered
            // as a server of the revision answers it, never forwarded with
            // an id the gateway did not seal.
            return Decision::Reject(Denial::error(
                JsonRpcError::new(codes::METHOD_NOT_FOUND, "Method not found: tasks/result"),
                "method_not_found",
            ));
        }
        let me = holder(ctx);
        let opened = env
            .task_id
            .as_deref()
            .and_then(|t| self.sealer.open(t, &me, ctx.server));
        let Some(opened) = opened else {
            // Exactly what a server says about a task it does not know.
            let ack = modern && matches!(method, "tasks/update" | "tasks/cancel");
            let mut d = Denial::error(
                JsonRpcError::new(codes::INVALID_PARAMS, "Task not found"),
                "task_unknown",
            );
            if ack {
                d.result = Some(serde_json::json!({"resultType": "complete"}));
            }
            return Decision::Reject(d);
        };
        // Later filters (policy, pin, schema) and the audit record see the
        // tool whose call created the task.
        notes.task = Some(TaskNote {
            link: self.sealer.link(&opened.task, &me, ctx.server),
            tool: opened.tool,
        });
        let Some(mut v) = msg.value().cloned() else {
            return Decision::Pass;
        };
        if let Some(t) = v.get_mut("params").and_then(|p| p.get_mut("taskId")) {
            *t = Json::String(opened.task);
        }
        Decision::rewrite(&v)
    }

    fn on_response(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.is_error || !msg.may_hold(&TASK) {
            return Decision::Pass;
        }
        let Some(mut v) = msg.value().cloned() else {
            return Decision::Pass;
        };
        let mut changed = false;
        match env.kind {
            Kind::Response => {
                let method = msg.request_method.unwrap_or("");
                let Some(r) = v.get_mut("result").filter(|r| r.is_object()) else {
                    return Decision::Pass;
                };
                // Related-task metadata in a task request's reply names that task.
                let mut related = Seen::Mentioned;
                if method == "tools/call" {
                    // A task handle instead of the tool's result: 2026-07-28
                    // (`resultType: "task"`, the task inline) or 2025-11-25
                    // (`task: {taskId, …}`).
                    let tool = msg.request_target;
                    let handle = if r.get("resultType").and_then(Json::as_str) == Some("task") {
                        r.get_mut("taskId")
                    } else {
                        r.get_mut("task").and_then(|t| t.get_mut("taskId"))
                    };
                    if let Some(id) = handle {
                        match self.seal_at(id, ctx, tool, Seen::Created, notes) {
                            Ok(c) => changed |= c,
                            Err(NotOurs) => return not_ours(),
                        }
                    }
                } else if names_task(method) {
                    // The request's token named the task and its tool.
                    related = Seen::Answer(msg.request_task);
                    if let Some(id) = r.get_mut("taskId") {
                        match self.seal_at(id, ctx, msg.request_target, related, notes) {
                            Ok(c) => changed |= c,
                            Err(NotOurs) => return not_ours(),
                        }
                    }
                } else if method == "tasks/list" {
                    if let Some(tasks) = r.get_mut("tasks").and_then(Json::as_array_mut) {
                        tasks.retain_mut(|t| match t.get_mut("taskId") {
                            Some(id) => self
                                .seal_at(id, ctx, None, Seen::Mentioned, notes)
                                .is_ok_and(|c| c),
                            None => false,
                        });
                        changed = true;
                    }
                }
                changed |= self.seal_related(r.get_mut("_meta"), ctx, related, notes);
            }
            Kind::Notification | Kind::Request => {
                let notif = env.method.as_deref() == Some("notifications/tasks/status");
                let Some(p) = v.get_mut("params").filter(|p| p.is_object()) else {
                    return Decision::Pass;
                };
                if notif {
                    if let Some(id) = p.get_mut("taskId") {
                        match self.seal_at(id, ctx, None, Seen::Mentioned, notes) {
                            Ok(c) => changed |= c,
                            // Another principal's task: not passed on.
                            Err(NotOurs) => return not_ours(),
                        }
                    }
                }
                changed |= self.seal_related(p.get_mut("_meta"), ctx, Seen::Mentioned, notes);
            }
        }
        if !changed {
            return Decision::Pass;
        }
        Decision::rewrite(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::identity::Principal;

    fn who(id: &str) -> Principal {
        Principal {
            id: id.into(),
            ..Principal::anonymous()
        }
    }

    /// At 2026-07-28 `tasks/result` is no method (the extension removed
    /// it): -32601, whatever id it names, sealed or not; earlier revisions
    /// still open it.
    #[test]
    fn the_removed_tasks_result_is_no_method_at_2026_07_28() {
        use crate::chain::filter::{Decision, McpFilter, Message, Notes};
        use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};
        let sealer = Arc::new(TaskSealer::new(b"fleet secret"));
        let f = TaskFilter::new(sealer.clone(), Arc::new(TaskOwners::new(100)));
        let alice = who("alice");
        let sealed = sealer
            .seal(
                "task-1",
                &holder(&Exchange::new(&alice, "jira")),
                "jira",
                None,
            )
            .expect("seal");
        for id in [sealed.as_str(), "raw-server-id"] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tasks/result","params":{{"taskId":"{id}"}}}}"#
            );
            let Ok(Parsed::Single(env)) = parse(body.as_bytes(), ParseLimits::default()) else {
                panic!("parse")
            };
            let msg = Message::new(&env, body.as_bytes());
            let modern = Exchange {
                protocol_version: Some("2026-07-28"),
                ..Exchange::new(&alice, "jira")
            };
            assert!(matches!(
                f.on_request(&msg, &modern, &mut Notes::default()),
                Decision::Reject(d) if d.error.code == -32601
            ));
            let older = Exchange {
                protocol_version: Some("2025-11-25"),
                ..Exchange::new(&alice, "jira")
            };
            let d = f.on_request(&msg, &older, &mut Notes::default());
            // Opened and forwarded with the server's id; an unsealed one is unknown.
            assert_eq!(!matches!(d, Decision::Reject(_)), id == sealed, "{id}");
        }
    }

    /// A server that spells `task` with escapes gets its ids sealed and
    /// judged as one that writes it plainly.
    #[test]
    fn escaped_task_members_are_sealed_and_judged() {
        use crate::chain::filter::{Decision, McpFilter, Message, Notes};
        let sealer = Arc::new(TaskSealer::new(b"fleet secret"));
        let f = TaskFilter::new(sealer, Arc::new(TaskOwners::new(100)));
        let bob = who("bob");
        let ex = Exchange::new(&bob, "jira");
        for raw in [
            r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"T-esc","status":"working","createdAt":"2026-01-01T00:00:00Z"}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"T-alice","status":"completed","createdAt":"2026-01-01T00:00:00Z"}}"#,
        ] {
            let env = crate::protocol::jsonrpc::single(raw);
            let msg = Message::from_server(&env, raw.as_bytes(), Some("tools/call"), Some("t"));
            let d = f.on_response(&msg, &ex, &mut Notes::default());
            assert!(!matches!(d, Decision::Pass), "{raw} passed unsealed");
        }
    }

    /// Every unauthenticated client is the one anonymous principal: its
    /// tasks are bound to its session too, so another such client neither
    /// opens nor lists them. An authenticated principal's follow it across
    /// sessions.
    #[test]
    fn anonymous_tasks_are_bound_to_their_session() {
        let s = TaskSealer::new(b"fleet secret");
        let anon = Principal::anonymous();
        let at = |p: &Principal, sid: &'static str| -> String {
            let ex = Exchange {
                session_id: Some(sid),
                ..Exchange::new(p, "jira")
            };
            holder(&ex).into_owned()
        };
        let t = s
            .seal("task-1", &at(&anon, "sA"), "jira", None)
            .expect("seal");
        assert!(s.open(&t, &at(&anon, "sA"), "jira").is_some());
        assert_eq!(s.open(&t, &at(&anon, "sB"), "jira"), None);
        let alice = Principal {
            id: "alice".into(),
            auth: crate::engines::identity::AuthMethod::ApiKey,
            ..Principal::anonymous()
        };
        let t = s
            .seal("task-2", &at(&alice, "s1"), "jira", None)
            .expect("seal");
        assert!(s.open(&t, &at(&alice, "s2"), "jira").is_some());
    }

    #[test]
    fn sealed_for_one_principal_and_server() {
        let s = TaskSealer::new(b"fleet secret");
        let t = s
            .seal("task-1", who("alice").owner(), "jira", None)
            .expect("seal");
        assert!(t.starts_with(PREFIX));
        let id = |o: Option<Opened>| o.map(|o| o.task);
        assert_eq!(
            id(s.open(&t, who("alice").owner(), "jira")).as_deref(),
            Some("task-1")
        );
        assert_eq!(s.open(&t, who("bob").owner(), "jira"), None);
        // Spellings merged into one person for rules own no handles.
        for other in ["alic\u{e9}", "\u{ff41}lice", " alice\u{301}"] {
            assert_eq!(s.open(&t, who(other).owner(), "jira"), None, "{other}");
        }
        assert!(s.open(&t, who("ALICE").owner(), "jira").is_some());
        assert_eq!(s.open(&t, who("alice").owner(), "gmail"), None);
        assert_eq!(s.open("task-1", who("alice").owner(), "jira"), None);
        let other = TaskSealer::new(b"another fleet");
        assert_eq!(other.open(&t, who("alice").owner(), "jira"), None);
        assert_eq!(
            s.seal("task-1", who("alice").owner(), "jira", None)
                .as_deref(),
            Some(t.as_str())
        );
        assert_ne!(
            s.seal("task-2", who("alice").owner(), "jira", None)
                .as_deref(),
            Some(t.as_str())
        );
        // Another replica with the same secret opens it.
        let twin = TaskSealer::new(b"fleet secret");
        assert_eq!(
            id(twin.open(&t, who("alice").owner(), "jira")).as_deref(),
            Some("task-1")
        );
        // The creating tool travels sealed; the link names the task, not the token.
        let with_tool = s
            .seal("task-1", who("alice").owner(), "jira", Some("export"))
            .expect("seal");
        let o = s
            .open(&with_tool, who("alice").owner(), "jira")
            .expect("opens");
        assert_eq!(o.tool.as_deref(), Some("export"));
        assert_eq!(
            s.link("task-1", who("alice").owner(), "jira"),
            s.link(&o.task, who("alice").owner(), "jira")
        );
        assert_ne!(
            s.link("task-1", who("alice").owner(), "jira"),
            s.link("task-1", who("bob").owner(), "jira")
        );
    }
}
