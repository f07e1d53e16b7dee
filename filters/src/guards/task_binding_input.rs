//! A task's input bound to what its server asked (the tasks extension,
//! SEP-2663, with SEP-2322's input loop): `tasks/update` answers only the
//! requests the gateway let through, for that task and principal, for a
//! while.
//!
//! A task waiting for input carries its server→client requests in an
//! `inputRequests` map (`{key: {method, params}}`) wherever its status
//! reaches the client: a `tasks/get` reply, `notifications/tasks` and
//! `notifications/tasks/status`, a `tasks/list` entry, or deeper. The
//! client answers with `tasks/update {taskId, inputResponses: {key: …}}`.
//! Nothing in that request ties an answer to an ask: a client could
//! answer a key the server never asked, an ask the policy refused (the
//! client got -31010 for the status, yet the server still waits), or
//! answer before any ask, and another principal's keys are as good as its
//! own.
//!
//! **Design: the keys are sealed.** Every `inputRequests` map of a task
//! that passes the gateway reaches the client with each key replaced by
//! `wk1.<base64url(nonce ‖ ChaCha20-Poly1305({the server's key, a time
//! window}))>`, the task's server id, the principal (`tasks::holder`), the
//! server and the MCP session authenticated as associated data. The client
//! answers under the key it was shown, as the protocol has it answer any
//! key; on `tasks/update` the gateway opens each key for the task the
//! (opened) `taskId` names and this caller, and forwards the answer under
//! the server's key. An answer whose key does not open — never asked,
//! asked in a message the policy refused (a refused message never reaches
//! the client, so none of its keys does), asked of another task, principal,
//! server or session, forged, expired — is dropped before the request goes
//! on, as `input_state` drops unsolicited keys; a `tasks/update` with
//! `inputResponses` of which none opens (input nobody was asked for, or an
//! `inputResponses` that is no object) is refused (-32602,
//! `task_input_unasked`) and never forwarded. The same holds on every
//! task request that names a task (`tasks/get`, `tasks/cancel`,
//! `tasks/result`).
//!
//! Why sealed keys rather than a table of what was asked: the request
//! answering a status may reach another replica than the one that passed
//! the status, and with sealed keys any replica holding the fleet's
//! `sessions` secret checks it, with no table to bound, share or lose.
//! The revision's own per-task token (a `Task`'s `requestState`, echoed by
//! a client of the final SEP-2663 on `tasks/update`) is not echoed by
//! clients written to its earlier drafts, and is whatever came last on
//! any stream; the keys of `inputRequests` are echoed by every client, and
//! name each ask.
//!
//! Keys are deterministic within a window of [`STATE_TTL`] (a synthetic
//! nonce, as task ids have): a client that polls sees the same key for the
//! same ask, on any replica, and does not answer it twice. A key opens
//! until the end of the window after the one it was sealed in: at least
//! [`STATE_TTL`] after the ask last passed the gateway, at most twice that.
//! A client still waiting on its user when the window turns sees the ask
//! again under the next window's key; answering either reaches the server
//! once under its own key (servers ignore a key already answered).
//!
//! Which task a map belongs to: the nearest object around it (itself
//! first) that names a task id (`taskId`, in any spelling a peer reads),
//! where that id is this caller's sealed task (`tasks` has sealed it by
//! then). A map under an id that is not (another's, a raw id in a tool's
//! payload), under two different ids, or under none, or an
//! `InputRequiredResult`'s own map (bound by its `requestState`, see
//! `input_state`), keeps its keys: no `tasks/update` can answer them.

use std::time::SystemTime;

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::chain::filter::Denial;
use crate::engines::token::{TokenKey, NONCE_LEN};
use crate::guards::input_state::STATE_TTL;
use crate::protocol::error::{codes, JsonRpcError};

const PREFIX: &str = "wk1.";
const AAD: &[u8] = b"warden task input v1\0";

/// What a sealed key is bound to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Binding<'a> {
    /// The server's task id.
    pub(super) task: &'a str,
    /// The task's holder (`tasks::holder`).
    pub(super) holder: &'a str,
    pub(super) server: &'a str,
    pub(super) session: Option<&'a str>,
}

impl<'a> Binding<'a> {
    /// The binding of `task`'s asks to `holder` in exchange `ex`.
    pub(super) fn of(
        task: &'a str,
        holder: &'a str,
        ex: &crate::chain::filter::Exchange<'a>,
    ) -> Self {
        Binding {
            task,
            holder,
            server: ex.server,
            session: ex.session_id,
        }
    }

    fn aad(&self) -> Vec<u8> {
        let mut out = AAD.to_vec();
        let session = match self.session {
            Some(s) => [b"s:", s.as_bytes()].concat(),
            None => b"-".to_vec(),
        };
        for part in [
            self.task.as_bytes(),
            self.holder.as_bytes(),
            self.server.as_bytes(),
            &session,
        ] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Sealed {
    /// The server's key.
    k: String,
    /// The window it was sealed in ([`window`]).
    w: u64,
}

/// Seals and opens the keys of a task's input requests.
pub(super) struct InputKeys {
    key: TokenKey,
    nonce_key: [u8; 32],
}

/// The window of [`STATE_TTL`] `now` falls in.
fn window(now: SystemTime) -> u64 {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs / STATE_TTL.as_secs()
}

impl InputKeys {
    /// Keys derived from the fleet's `secret` (the task ids' own).
    pub(super) fn new(secret: &[u8]) -> InputKeys {
        let key: [u8; 32] = Sha256::new()
            .chain_update(b"warden task input key v1\0")
            .chain_update(secret)
            .finalize()
            .into();
        let nonce_key: [u8; 32] = Sha256::new()
            .chain_update(b"warden task input nonce key v1\0")
            .chain_update(key)
            .finalize()
            .into();
        InputKeys {
            key: TokenKey::new(&key),
            nonce_key,
        }
    }

    /// The server's `key` sealed for `b`, for the window of `now`.
    pub(super) fn seal(&self, key: &str, b: &Binding<'_>, now: SystemTime) -> Option<String> {
        let aad = b.aad();
        let plain = serde_json::to_vec(&Sealed {
            k: key.to_owned(),
            w: window(now),
        })
        .ok()?;
        // Synthetic nonce: the same ask, shown again in the window, keeps
        // its key; distinct plaintexts (or bindings) get distinct nonces.
        let digest = Sha256::new()
            .chain_update(self.nonce_key)
            .chain_update((aad.len() as u64).to_be_bytes())
            .chain_update(&aad)
            .chain_update(&plain)
            .finalize();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&digest[..NONCE_LEN]);
        self.key.seal(PREFIX, &aad, nonce, plain)
    }

    /// The server's key `token` seals, when it was sealed for `b` and has
    /// not expired at `now`.
    pub(super) fn open(&self, token: &str, b: &Binding<'_>, now: SystemTime) -> Option<String> {
        let plain = self.key.open(PREFIX, &b.aad(), token, 16 * 1024)?;
        let s: Sealed = serde_json::from_slice(&plain).ok()?;
        let w = window(now);
        // This window or the one before; the next, from a replica whose
        // clock runs a little ahead.
        (s.w + 1 >= w && s.w <= w + 1).then_some(s.k)
    }

    /// Binds the `inputResponses` of a task request's `params` to `b`:
    /// each answer whose key opens goes on under the server's key, the
    /// others are dropped. `Err` (never forwarded): `inputResponses` that
    /// is no object, of which no key opens, or that answers one request
    /// twice with different answers.
    pub(super) fn bind(
        &self,
        params: &mut Map<String, Json>,
        b: &Binding<'_>,
        now: SystemTime,
    ) -> Result<(), Denial> {
        let r = match params.get_mut("inputResponses") {
            None => return Ok(()),
            Some(Json::Object(r)) => r,
            Some(_) => return Err(unasked("inputResponses is not an object")),
        };
        for (k, x) in std::mem::take(r) {
            let Some(key) = self.open(&k, b, now) else {
                // Nothing the gateway let through asked for it.
                continue;
            };
            match r.get(&key) {
                Some(earlier) if *earlier != x => {
                    return Err(unasked("two answers to one input request"));
                }
                Some(_) => {}
                None => {
                    r.insert(key, x);
                }
            }
        }
        if r.is_empty() {
            return Err(unasked(
                "no input request of this task, asked of this caller and still open, is answered",
            ));
        }
        Ok(())
    }
}

fn unasked(why: &str) -> Denial {
    Denial::error(
        JsonRpcError::new(
            codes::INVALID_PARAMS,
            format!("Invalid inputResponses: {why}"),
        ),
        "task_input_unasked",
    )
}

/// Whether object `o` is an `InputRequiredResult` (its `inputRequests`
/// are bound by its `requestState`, not to a task).
pub(super) fn input_required_result(o: &Map<String, Json>) -> bool {
    o.get("resultType").and_then(Json::as_str) == Some("input_required")
}

/// Seals the keys of every task's `inputRequests` map under `part` (a
/// server message's result or params): `task_of(id)` is the server's id
/// of a task id as the message names it (sealed by then), when it is this
/// caller's; `seal(binding task, key)` the sealed key. Whether any map
/// was rewritten.
pub(super) fn seal_keys(
    part: &mut Json,
    task_of: &mut dyn FnMut(&str) -> Option<String>,
    seal: &mut dyn FnMut(&str, &str) -> Option<String>,
) -> bool {
    let mut changed = false;
    crate::protocol::embedded::maps_mut(
        part,
        &None,
        &mut |o, parent: &Option<String>| {
            let mut task: Option<Option<String>> = None;
            for (k, x) in o {
                if !super::walk::named(k, "taskId") {
                    continue;
                }
                let t = x.as_str().and_then(&mut *task_of);
                task = match task {
                    // The first id, or a second naming the same task.
                    None => Some(t),
                    Some(earlier) if earlier == t => Some(earlier),
                    // Two tasks: the map is neither's.
                    Some(_) => Some(None),
                };
            }
            if input_required_result(o) {
                return None;
            }
            match task {
                Some(t) => t,
                None => parent.clone(),
            }
        },
        &mut |task, map| {
            let Some(task) = task else { return };
            for (k, x) in std::mem::take(map) {
                // A key that cannot be sealed stays as it is: no answer
                // to it opens.
                let k = seal(task, &k).unwrap_or(k);
                map.insert(k, x);
            }
            changed = true;
        },
    );
    changed
}
