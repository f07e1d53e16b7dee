//! `Load`: a scenario bound to its target (the URL, the HTTP client, the
//! op mix and the open MCP sessions). The engine builds and drives it; the
//! report reads the target and the scenario from it.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue};

use super::scenario::{Expect, OpKind, Scenario};
use super::wire::Wire;

pub(super) struct Op {
    pub(super) label: String,
    pub(super) method: &'static str,
    pub(super) params: String,
    pub(super) kind: OpKind,
    pub(super) expect: Expect,
}

pub(super) struct Session {
    /// The session's id; replaced when the server (or gateway) answers 404,
    /// as MCP asks a client to: start a new session.
    pub(super) id: std::sync::Mutex<Option<HeaderValue>>,
    pub(super) principal: HeaderMap,
}

pub struct Load {
    pub(super) url: String,
    /// The connection set every request goes through.
    pub(super) wire: Arc<Wire>,
    /// Per operation (its requests and replies together).
    pub(super) timeout: Duration,
    pub(super) base: HeaderMap,
    pub(super) ops: Vec<Op>,
    pub(super) weights: Vec<u32>,
    pub(super) total_weight: u32,
    pub(super) sessions: Vec<Session>,
    pub(super) principals: Vec<HeaderMap>,
    pub(super) next_id: AtomicU64,
    /// Sessions started anew after a 404 (see `one`).
    pub reinitialised: AtomicU64,
    pub scenario: Scenario,
}

impl Load {
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connections opened to the target so far.
    pub fn connections_opened(&self) -> u64 {
        self.wire.opened()
    }
}
