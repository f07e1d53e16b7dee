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
//! Errors name tasks too: every member a peer reads as `taskId` (any case
//! a case-insensitive peer folds, any escape) at any depth of a server's
//! error, and of a failed task's inline error, and every related-task
//! entry wherever it sits (a result's or params' own `_meta`, a content
//! block's, a listed task's, structured content), is sealed when it is
//! this principal's task and removed otherwise. A handle that is no
//! string (a number, an object) cannot be sealed: the reply is refused.
//! The other way, a client's related-task metadata (at any depth of its
//! params or result) and the task ids in an error it answers with reach
//! the server only as the server's ids, opened from this caller's tokens:
//! a request naming one that does not open is answered as an unknown
//! task; from a notification or a response (which nobody answers) the
//! member is removed. (Where each walk looks: `task_binding_walk`.)
//!
//! The token also names the tool whose call created the task, so a task's
//! result meets exactly the checks the tool's direct result meets (its output
//! schema, its pin: a quarantined tool's results are refused), and policy
//! sees the tool on every `tasks/*` request. Opening a token leaves a
//! [`TaskNote`] for the later filters and the audit record: the tool, and a
//! link (a keyed digest of server, owner and the server's id) that the
//! originating call's record carries too.
//!
//! A task waiting for input names its requests' keys (`inputRequests`,
//! wherever its status is told): they reach the client sealed to the
//! task, this principal, the server, the session and a time window, and
//! the `inputResponses` of `tasks/update` (of any task request) reach the
//! server only for keys that open so, under the server's own keys; input
//! nobody asked is refused (-32602). (How and why: `task_binding_input`.)

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

#[path = "task_binding_walk.rs"]
mod walk;
use walk::{has_related, names_task_id, related, task_ids, Reach};

#[path = "task_binding_input.rs"]
mod input;

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
    /// Seals the keys of a task's input requests (see `task_binding_input`).
    input: input::InputKeys,
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
            input: input::InputKeys::new(secret),
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

    /// What a holder claims of a new task in the fleet's shared store
    /// (see [`crate::chain::notes::TaskClaim`]): unkeyed digests, so that
    /// replicas agree whatever secret they seal with.
    pub fn claim(
        task: &str,
        holder: &str,
        server: &str,
        kind: crate::chain::notes::ClaimKind,
    ) -> crate::chain::notes::TaskClaim {
        let digest = |what: &[u8], parts: &[&str]| {
            let mut h = Sha256::new();
            h.update(what);
            for p in parts {
                h.update((p.len() as u64).to_be_bytes());
                h.update(p.as_bytes());
            }
            hex::encode(h.finalize())
        };
        crate::chain::notes::TaskClaim {
            kind,
            task: digest(b"warden task claim v1\0", &[server, task]),
            holder: digest(b"warden task holder v1\0", &[server, holder]),
            local: (server.to_owned(), task.to_owned(), holder.to_owned()),
        }
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
/// principal, which every unauthenticated client shares, also the session,
/// or without one the client's address (see
/// [`crate::guards::cursor::owner_of`]).
pub fn holder<'a>(ctx: &Exchange<'a>) -> std::borrow::Cow<'a, str> {
    let owner = crate::guards::cursor::owner_of(ctx.principal, ctx.session_id, ctx.source_ip);
    if ctx.principal.auth == crate::engines::identity::AuthMethod::Anonymous {
        std::borrow::Cow::Owned(format!("{owner}\0{}", ctx.session_id.unwrap_or("")))
    } else {
        owner
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

    /// Burns the task of `claim` in this replica's memory: the fleet's
    /// store said another holder has it, or that it was burnt, so no
    /// holder's handle opens it here any more (see [`ClaimKind::Burn`]).
    ///
    /// [`ClaimKind::Burn`]: crate::chain::notes::ClaimKind::Burn
    pub fn burn(&self, claim: &crate::chain::notes::TaskClaim) {
        let (server, task, _) = &claim.local;
        self.burn_id(server, task);
    }

    fn burn_id(&self, server: &str, task: &str) {
        self.map.insert(
            (server.to_owned(), task.to_owned()),
            (BURNT.to_owned(), None),
        );
    }
}

/// The owner a burnt task id is remembered under: no holder's key (those
/// start with a tenant name), so every holder's handle is refused.
const BURNT: &str = "\0\0burnt";

/// Binds task ids to their creator (see the module documentation).
pub struct TaskFilter {
    sealer: Arc<TaskSealer>,
    owners: Arc<TaskOwners>,
}

impl TaskFilter {
    pub fn new(sealer: Arc<TaskSealer>, owners: Arc<TaskOwners>) -> Self {
        TaskFilter { sealer, owners }
    }

    /// `token` opened for `holder` on `server`, unless this replica knows
    /// the server's id as another holder's task or as burnt: wherever a
    /// client's handle is opened (a task request, a `taskId` in any
    /// request, related-task metadata), a burnt id opens nothing.
    fn opens(&self, token: &str, holder: &str, server: &str) -> Option<Opened> {
        let opened = self.sealer.open(token, holder, server)?;
        let key = (server.to_owned(), opened.task.clone());
        match self.owners.map.get(&key) {
            Some((o, _)) if o != holder => None,
            _ => Some(opened),
        }
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
            // An id that is no string cannot be sealed, and a peer may
            // read it (a number, an object holding another's id) all the
            // same: never passed on.
            return Err(NotOurs::NoString);
        };
        let key = (ctx.server.to_owned(), id.to_owned());
        let me = holder(ctx).into_owned();
        let known = self.owners.map.get(&key);
        if known.as_ref().is_some_and(|(o, _)| *o != me) {
            // The server handed this id to another principal first. Handed
            // out again as new, the id is reused (or one task is handed to
            // two): the gateway cannot tell which task it names now, so it
            // names none — the first holder's handle would otherwise reach
            // the new holder's task. Burnt here and in the fleet's store.
            if matches!(seen, Seen::Created) {
                self.owners.burn_id(ctx.server, id);
                notes.task_burns.push(TaskSealer::claim(
                    id,
                    &me,
                    ctx.server,
                    crate::chain::notes::ClaimKind::Burn,
                ));
            }
            return Err(NotOurs::Another);
        }
        // Remembered here, and (checked above) as this principal's.
        let mine = known.is_some();
        let link = self.sealer.link(id, &me, ctx.server);
        let remembered = known.and_then(|(_, t)| t);
        let tool = match seen {
            Seen::Created => {
                // This replica's memory holds the first holder; the fleet's
                // store (when there is one) is asked before the reply leaves.
                notes.task_claims.push(TaskSealer::claim(
                    id,
                    &me,
                    ctx.server,
                    crate::chain::notes::ClaimKind::New,
                ));
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
                // The holder's own request about its task renews the
                // fleet's claim, so that a task that runs longer than a
                // claim's life stays its holder's on every replica (and
                // one whose claim another holder took is withheld).
                notes.task_claims.push(TaskSealer::claim(
                    id,
                    &me,
                    ctx.server,
                    crate::chain::notes::ClaimKind::Renew,
                ));
                tool.or(remembered.as_deref())
            }
            Seen::Mentioned if mine => tool.or(remembered.as_deref()),
            _ => return Err(NotOurs::Another),
        };
        match self.sealer.seal(id, &me, ctx.server, tool) {
            Some(t) => {
                *v = Json::String(t);
                Ok(true)
            }
            None => Err(NotOurs::Another),
        }
    }

    /// The task handles of a reply (`v` its result): `taskId` (2026-07-28,
    /// and a task request's reply) and `task.taskId` (2025-11-25). A reply
    /// carrying both shapes is read by a client of either revision: both
    /// sealed (see [`TaskFilter::seal_at`]). A `task` that is no object
    /// holds a handle the gateway cannot seal: refused.
    fn seal_handles(
        &self,
        r: &mut Json,
        ctx: &Exchange<'_>,
        tool: Option<&str>,
        seen: Seen<'_>,
        notes: &mut Notes,
    ) -> Result<bool, NotOurs> {
        let mut changed = false;
        for nested in [false, true] {
            let handle = if nested {
                match r.get_mut("task") {
                    None | Some(Json::Null) => None,
                    Some(Json::Object(t)) => t.get_mut("taskId"),
                    Some(_) => return Err(NotOurs::NoString),
                }
            } else {
                r.get_mut("taskId")
            };
            if let Some(id) = handle {
                changed |= self.seal_at(id, ctx, tool, seen, notes)?;
            }
        }
        Ok(changed)
    }

    /// The server's id `id` sealed for this principal when it is this
    /// principal's task (see [`Seen`]); `None` when it is not.
    fn sealed(
        &self,
        id: &str,
        ctx: &Exchange<'_>,
        seen: Seen<'_>,
        notes: &mut Notes,
    ) -> Option<String> {
        let mut v = Json::String(id.to_owned());
        self.seal_at(&mut v, ctx, None, seen, notes).ok()?;
        match v {
            Json::String(t) => Some(t),
            _ => None,
        }
    }

    /// Related-task metadata anywhere in `parent` (a server's params or
    /// result: its own `_meta`, a content block's, a listed task's, inside
    /// structured content): each id sealed when it is this principal's
    /// task, the entry removed otherwise.
    fn seal_related(
        &self,
        parent: &mut Json,
        ctx: &Exchange<'_>,
        seen: Seen<'_>,
        notes: &mut Notes,
    ) -> bool {
        related(parent, &mut |id| self.sealed(id, ctx, seen, notes)).changed
    }

    /// The task ids a task object's inline `error` names (outside
    /// related-task entries, which the related walk of the enclosing value
    /// judges): sealed or removed as an error's are.
    fn seal_inline(
        &self,
        task: &mut Json,
        ctx: &Exchange<'_>,
        seen: Seen<'_>,
        notes: &mut Notes,
    ) -> bool {
        let Some(o) = task.as_object_mut() else {
            return false;
        };
        let mut changed = false;
        for (k, x) in o.iter_mut() {
            if walk::named(k, "error") {
                let f = &mut |id: &str| self.sealed(id, ctx, seen, notes);
                changed |= walk::walk(x, f, Reach::Ids).changed;
            }
        }
        changed
    }

    /// Every task id an error names (see [`task_ids`]): sealed when it is
    /// this principal's task, removed otherwise.
    fn seal_error(
        &self,
        error: &mut Json,
        ctx: &Exchange<'_>,
        seen: Seen<'_>,
        notes: &mut Notes,
    ) -> bool {
        task_ids(error, &mut |id| self.sealed(id, ctx, seen, notes)).changed
    }

    /// Seals the keys of every task's `inputRequests` in a server message
    /// `v` (its result or params, the task ids in it sealed by now) for
    /// this caller (see `task_binding_input`). Whether any was sealed.
    fn seal_input_keys(&self, v: &mut Json, ctx: &Exchange<'_>) -> bool {
        let me = holder(ctx);
        let mut changed = false;
        for part in ["result", "params"] {
            let Some(x) = v.get_mut(part) else { continue };
            changed |= input::seal_keys(
                x,
                &mut |t| self.opens(t, &me, ctx.server).map(|o| o.task),
                &mut |task, key| {
                    let b = input::Binding::of(task, &me, ctx);
                    self.sealer.input.seal(key, &b, ctx.now)
                },
            );
        }
        changed
    }

    /// The task ids a client message names outside `params.taskId`, which
    /// the client holds sealed and the server knows raw: related-task
    /// metadata in `params._meta` or `result._meta`, and any task id in an
    /// error the client answers with. Each token that opens for this
    /// principal and server becomes the server's id. One that does not (a
    /// raw id, another principal's or another server's token) refuses a
    /// request as an unknown task; from a notification or a response,
    /// which cannot be answered, its member is removed.
    fn open_client(&self, msg: &Message<'_>, ctx: &Exchange<'_>) -> Decision {
        let env = msg.envelope;
        let Some(v) = msg.value() else {
            // Unread is never passed: whatever it names stays unjudged.
            return task_unknown(false);
        };
        let slot = match env.kind {
            Kind::Response if env.is_error => "error",
            Kind::Response => "result",
            Kind::Request | Kind::Notification => "params",
        };
        let Some(part) = v.get(slot) else {
            return Decision::Pass;
        };
        let named = if env.is_error {
            names_task_id(part)
        } else {
            has_related(part)
        };
        if !named {
            return Decision::Pass;
        }
        let mut v = v.clone();
        let Some(part) = v.get_mut(slot) else {
            return Decision::Pass;
        };
        let me = holder(ctx);
        let mut open = |t: &str| self.opens(t, &me, ctx.server).map(|o| o.task);
        let walk = if env.is_error {
            task_ids(part, &mut open)
        } else {
            related(part, &mut open)
        };
        if walk.removed && env.kind == Kind::Request {
            return task_unknown(false);
        }
        if !walk.changed {
            return Decision::Pass;
        }
        Decision::rewrite(&v)
    }
}

/// What a server says about a task it does not know: -32602, or under the
/// tasks extension the empty acknowledgement of `tasks/update` and
/// `tasks/cancel` (`ack`).
fn task_unknown(ack: bool) -> Decision {
    let mut d = Denial::error(
        JsonRpcError::new(codes::INVALID_PARAMS, "Task not found"),
        "task_unknown",
    );
    if ack {
        d.result = Some(serde_json::json!({"resultType": "complete"}));
    }
    Decision::Reject(d)
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

/// Why a task id a server named is not passed on.
enum NotOurs {
    /// It is not this principal's.
    Another,
    /// It is no string (a number, an object, a list): nothing to seal.
    NoString,
}

fn not_ours(why: NotOurs) -> Decision {
    let (message, reason) = match why {
        NotOurs::Another => (
            "The MCP server named a task that is not this caller's; the reply was withheld",
            "task_not_owned",
        ),
        NotOurs::NoString => (
            "The MCP server named a task by an id that is not a string; the reply was withheld",
            "task_id_unreadable",
        ),
    };
    Decision::Reject(Denial::error(
        JsonRpcError::new(codes::UPSTREAM_PROTOCOL, message),
        reason,
    ))
}

impl std::fmt::Debug for TaskFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskFilter")
    }
}

static TASK: crate::chain::filter::Word = crate::chain::filter::Word::new("task");

/// Whether a message may carry a task id the gateway must seal or open:
/// its decoded text may hold a name some peer reads as `taskId` or as the
/// related-task key. An escape (`\u0074ask`) spells anything, so any `\u`
/// makes the message read; so does `task` in any ASCII case (`TASKID`,
/// `RELATED-TASK`), a DEL a decoder drops (`tas\x7fkId`), and any other
/// character than ASCII (`taſkId`, `tas\u{200b}kId` written raw).
/// Whether `v` holds, at any depth, a member some peer reads as the
/// related-task key (`io.modelcontextprotocol/related-task`).
pub(crate) fn names_related_task(v: &Json) -> bool {
    walk::has_related(v)
}

pub(crate) fn may_name_task(msg: &Message<'_>) -> bool {
    msg.task_named(|| msg.may_hold(&TASK) || msg.unplain() || task_any_case(msg.bytes))
}

/// Whether `b` holds `task` in any ASCII case, found by its rarer last
/// letter.
fn task_any_case(b: &[u8]) -> bool {
    memchr::memchr2_iter(b'k', b'K', b)
        .any(|i| i >= 3 && b[i - 3..=i].eq_ignore_ascii_case(b"task"))
}

impl McpFilter for TaskFilter {
    fn name(&self) -> &'static str {
        "task_binding"
    }

    fn acts_on(&self) -> Acts {
        // Every client message: any may carry related-task metadata, and a
        // client's answer to a server's request (no method) reaches only
        // the filters that act on every message. Those that cannot hold
        // `task` pass untouched (`may_hold`, no parse).
        Acts {
            requests: Methods::All,
            responses: Methods::All,
        }
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        let method = match env.kind {
            Kind::Request | Kind::Notification => env.method.as_deref().filter(|m| names_task(m)),
            Kind::Response => None,
        };
        // `params.taskId` on any other request (`tasks/list`, a later
        // draft's or a vendor's method): a server may read it there too, so
        // it is opened as on a task method, or the request is refused.
        let other = env.kind == Kind::Request && env.task_id.is_some();
        let Some(method) = method.or(other.then_some("")) else {
            if !may_name_task(msg) {
                return Decision::Pass;
            }
            return self.open_client(msg, ctx);
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
            .and_then(|t| self.opens(t, &me, ctx.server));
        // Exactly what a server says about a task it does not know.
        let ack = modern && matches!(method, "tasks/update" | "tasks/cancel");
        let Some(opened) = opened else {
            return task_unknown(ack);
        };
        // Later filters (policy, pin, schema) and the audit record see the
        // tool whose call created the task.
        notes.task = Some(TaskNote {
            link: self.sealer.link(&opened.task, &me, ctx.server),
            tool: opened.tool,
        });
        let Some(mut v) = msg.value().cloned() else {
            return task_unknown(ack);
        };
        if let Some(p) = v.get_mut("params") {
            // Input answers only what the gateway let the server ask of
            // this caller for this task (see `task_binding_input`).
            if let (true, Some(o)) = (names_task(method), p.as_object_mut()) {
                let b = input::Binding::of(&opened.task, &me, ctx);
                if let Err(d) = self.sealer.input.bind(o, &b, ctx.now) {
                    return Decision::Reject(d);
                }
            }
            if let Some(t) = p.get_mut("taskId") {
                *t = Json::String(opened.task);
            }
            // Related-task metadata beside it opens for this caller too.
            let mut open = |t: &str| self.opens(t, &me, ctx.server).map(|o| o.task);
            if related(p, &mut open).removed {
                return task_unknown(ack);
            }
        }
        Decision::rewrite(&v)
    }

    fn on_response(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if !may_name_task(msg) {
            return Decision::Pass;
        }
        let method = msg.request_method.unwrap_or("");
        if env.is_error {
            // An error names tasks wherever its server put them (`data`
            // at any depth, related-task metadata): sealed or removed. In
            // the reply to a task request the asked task is this caller's.
            let Some(mut v) = msg.value().cloned() else {
                return crate::chain::filter::unreadable_reply();
            };
            if !v.get("error").is_some_and(names_task_id) {
                return Decision::Pass;
            }
            let seen = if names_task(method) {
                Seen::Answer(msg.request_task)
            } else {
                Seen::Mentioned
            };
            let changed = v
                .get_mut("error")
                .is_some_and(|e| self.seal_error(e, ctx, seen, notes));
            return if changed {
                Decision::rewrite(&v)
            } else {
                Decision::Pass
            };
        }
        let Some(mut v) = msg.value().cloned() else {
            return crate::chain::filter::unreadable_reply();
        };
        let mut changed = false;
        match env.kind {
            Kind::Response => {
                let Some(r) = v.get_mut("result").filter(|r| r.is_object()) else {
                    return Decision::Pass;
                };
                // Related-task metadata in a task request's reply names that task.
                let mut related = Seen::Mentioned;
                if method == "tools/call" {
                    // A task handle instead of the tool's result: 2026-07-28
                    // (`resultType: "task"`, the task inline) or 2025-11-25
                    // (`task: {taskId, …}`).
                    // Matched through the ledger (a GET stream), the call
                    // may not be the one the server answers: a task of
                    // no known tool, judged and labelled as the most its
                    // server's could be.
                    let tool = msg.request_target.filter(|_| !msg.ledger_matched);
                    match self.seal_handles(r, ctx, tool, Seen::Created, notes) {
                        Ok(c) => changed |= c,
                        Err(why) => return not_ours(why),
                    }
                } else if names_task(method) {
                    // The request's token named the task and its tool. A
                    // server may answer in either revision's shape.
                    related = Seen::Answer(msg.request_task);
                    match self.seal_handles(r, ctx, msg.request_target, related, notes) {
                        Ok(c) => changed |= c,
                        Err(why) => return not_ours(why),
                    }
                    // The task inline (2026-07-28): a failed one's error
                    // (its result's related-task metadata is judged with
                    // the rest of the reply's, below).
                    changed |= self.seal_inline(r, ctx, related, notes);
                } else if method == "tasks/list" {
                    // A list that is no array (an object keyed by id, say)
                    // cannot be filtered: refused, never passed whole.
                    if r.get("tasks").is_some_and(|t| !t.is_array()) {
                        return crate::chain::filter::unreadable_reply();
                    }
                    if let Some(tasks) = r.get_mut("tasks").and_then(Json::as_array_mut) {
                        tasks.retain_mut(|t| match t.get_mut("taskId") {
                            Some(id) => self
                                .seal_at(id, ctx, None, Seen::Mentioned, notes)
                                .is_ok_and(|c| c),
                            None => false,
                        });
                        for t in tasks.iter_mut() {
                            self.seal_inline(t, ctx, Seen::Mentioned, notes);
                        }
                        changed = true;
                    }
                }
                changed |= self.seal_related(r, ctx, related, notes);
            }
            Kind::Notification | Kind::Request => {
                // The status notification: `notifications/tasks/status`
                // (2025-11-25), bare `notifications/tasks` in the tasks
                // extension (SEP-2663, 2026-07-28).
                let notif = matches!(
                    env.method.as_deref(),
                    Some("notifications/tasks/status" | "notifications/tasks")
                );
                let Some(p) = v.get_mut("params").filter(|p| p.is_object()) else {
                    return Decision::Pass;
                };
                if notif {
                    if let Some(id) = p.get_mut("taskId") {
                        match self.seal_at(id, ctx, None, Seen::Mentioned, notes) {
                            Ok(c) => changed |= c,
                            // Another principal's task: not passed on.
                            Err(why) => return not_ours(why),
                        }
                    }
                    // The task inline, as in a `tasks/get` reply.
                    changed |= self.seal_inline(p, ctx, Seen::Mentioned, notes);
                }
                changed |= self.seal_related(p, ctx, Seen::Mentioned, notes);
            }
        }
        // A task's input requests reach the client under sealed keys,
        // the only keys `tasks/update` answers (see `task_binding_input`).
        if msg.may_embed_requests() {
            changed |= self.seal_input_keys(&mut v, ctx);
        }
        if !changed {
            return Decision::Pass;
        }
        Decision::rewrite(&v)
    }
}

#[cfg(test)]
#[path = "task_binding_tests.rs"]
mod tests;
