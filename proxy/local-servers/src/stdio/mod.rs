//! stdio upstreams: a local MCP server process behind the gateway.
//!
//! A server with `stdio:` is reached through a bridge the gateway runs for
//! it: a Streamable HTTP endpoint on a loopback port of its own (on its own
//! thread), which the request path forwards to like any upstream — so every
//! message to and from the process is framed, parsed and judged by the same
//! guards as an HTTP server's. The bridge answers only requests carrying its
//! random secret (which the gateway adds, see `Rewrite` in the gateway's `upstreams::upstream`),
//! so other local processes cannot reach the server through it.
//!
//! - **Processes.** `initialize` starts a process for the new MCP session
//!   (`mode: session`, the default), or joins the one process a stateless
//!   server runs for everyone (`mode: shared`; restarted with backoff when
//!   it dies). The environment is exactly the bundle's (`env_clear`); the
//!   command is an absolute path. rlimits bound CPU time, address space and
//!   open files (set by util-linux `prlimit`); the process dies with the
//!   gateway (a parent-death signal, set by `setpriv --pdeathsig`), and its
//!   process group when its session ends (DELETE), goes idle
//!   (`idle_timeout`) or it exits. At most `max_processes` run at once, and
//!   `max_per_principal` for one principal.
//! - **Who it runs as.** Without `run_as`, the process runs as the gateway's
//!   user: it does not inherit the gateway's environment, but it can read
//!   what that user can read (the bundle, `/proc/<gateway>/environ`). With
//!   `run_as: {uid, gid}` (the gateway must be root) it runs as that user
//!   with no supplementary groups. Always: no new privileges, no
//!   inheritable capabilities.
//! - **Framing.** One JSON-RPC message per line each way. Request ids (and
//!   progress tokens) are renumbered per process and restored on the way
//!   back, so sessions sharing a process never see each other's messages; a
//!   line that is not JSON, or longer than 8 MiB, is never passed on (the
//!   latter ends the process). Lines to a process are written by its one
//!   writer task, so a client that goes away mid-write never leaves half a
//!   line; a process that stops reading its input is ended.
//! - **Streams.** A POST with requests is answered as an SSE stream of what
//!   the process says about them (progress, server→client requests in
//!   session mode, the responses), ending with the last response; other
//!   messages of a session go to its GET stream. A stream that falls
//!   `STREAM_DEPTH` messages behind is cut rather than stall the process;
//!   a request whose client went away, or that it cancelled, stops being
//!   waited for. A shared process's server→client requests are refused to
//!   it and its notifications other than `list_changed` are dropped: they
//!   cannot be attributed to one session.
//! - **stderr** goes to the gateway's log with the server's name and the
//!   process id, at most 50 lines a second per process (the rest counted),
//!   each cut at 4 KiB.
//! - A dead process fails its pending requests (-32603) and ends its
//!   session (the client's next request gets 404 and initialises again).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use warden_config::model::{Server, Stdio};

use crate::loopback::{lock, member, session_not_found as not_found, Body, Members};

mod endpoint;
mod process;
#[cfg(test)]
mod tests;

use endpoint::*;
use process::*;

/// The header carrying a bridge's secret.
pub const SECRET_HEADER: &str = "x-warden-bridge";
/// The header naming (a digest of) the principal a request is for.
pub const OWNER_HEADER: &str = "x-warden-bridge-owner";
/// The longest line a process may write (or a client may send it).
const MAX_LINE: usize = 8 << 20;
/// The longest stderr line logged (the rest of it is skipped).
const MAX_STDERR_LINE: usize = 4096;
/// stderr lines logged per process per second.
const STDERR_PER_SEC: u32 = 50;
/// Messages a client stream may have waiting before it is cut.
const STREAM_DEPTH: usize = 256;

/// The bridges of this process, by server name.
struct Registry {
    by_server: Mutex<HashMap<String, Arc<BridgeHandle>>>,
    /// Bridges of an earlier setup: they serve their sessions until those
    /// end, take no new ones, and keep their secret.
    retired: Mutex<Vec<Arc<BridgeHandle>>>,
    /// Processes per server, across setups.
    counts: Mutex<HashMap<String, Arc<AtomicU32>>>,
}

struct BridgeHandle {
    addr: SocketAddr,
    secret: String,
    fingerprint: String,
    shared: Arc<Shared>,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        by_server: Mutex::new(HashMap::new()),
        retired: Mutex::new(Vec::new()),
        counts: Mutex::new(HashMap::new()),
    })
}

/// The loopback address of `server`'s bridge, started on first use and kept
/// while the server's process setup is unchanged.
pub fn bridge_for(
    server: &Server,
    redactor: &Arc<warden_filters::engines::dlp::Scanner>,
) -> std::io::Result<SocketAddr> {
    let Some(cfg) = &server.stdio else {
        return Err(std::io::Error::other("not a stdio server"));
    };
    let fp = cfg.fingerprint();
    let r = registry();
    let mut map = lock(&r.by_server);
    if let Some(b) = map.get(&server.name) {
        if b.fingerprint == fp {
            // The newest bundle's DLP judges what the process logs.
            b.shared.redactor.store(redactor.clone());
            return Ok(b.addr);
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let secret = hex::encode(rand::random::<[u8; 24]>());
    let processes = lock(&r.counts)
        .entry(server.name.clone())
        .or_default()
        .clone();
    let shared = Arc::new(Shared {
        server: server.name.clone(),
        read: server.timeouts.read,
        redactor: arc_swap::ArcSwap::new(redactor.clone()),
        cfg: cfg.clone(),
        secret: secret.clone(),
        sessions: Mutex::new(HashMap::new()),
        common: Mutex::new(None),
        processes,
        restart: Mutex::new((Duration::ZERO, None)),
        retired: AtomicBool::new(false),
        owners: Mutex::new(HashMap::new()),
    });
    let run = shared.clone();
    // One thread, one runtime, for the gateway's lifetime: the parent-death
    // signal is tied to the thread that started the process.
    crate::loopback::spawn(
        format!("stdio-{}", server.name),
        "stdio bridge",
        listener,
        move |l| serve(l, run),
    )?;
    if let Some(old) = map.insert(
        server.name.clone(),
        Arc::new(BridgeHandle {
            addr,
            secret,
            fingerprint: fp,
            shared,
        }),
    ) {
        // The old setup takes no new sessions; its processes end with their
        // sessions or when idle.
        old.shared.retired.store(true, Ordering::Relaxed);
        lock(&r.retired).push(old);
    }
    Ok(addr)
}

/// The secret of the bridge at `addr`, if it is one.
pub fn secret_for(addr: SocketAddr) -> Option<String> {
    let r = registry();
    crate::loopback::find_endpoint(&r.by_server, &r.retired, |b| b.addr == addr)
        .map(|b| b.secret.clone())
}

struct Shared {
    server: String,
    /// How long a request waits for the process's next message before it
    /// is answered with an error (the server's `timeouts.read`).
    read: Duration,
    /// Redacts the process's stderr before it is logged (the bundle's DLP
    /// detectors, or the built-in ones).
    redactor: arc_swap::ArcSwap<warden_filters::engines::dlp::Scanner>,
    cfg: Stdio,
    secret: String,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// The one process of a `shared` server.
    common: Mutex<Option<Arc<Child>>>,
    processes: Arc<AtomicU32>,
    /// Shared mode: the next backoff, and when a new process may start.
    restart: Mutex<(Duration, Option<Instant>)>,
    /// A later setup replaced this one: no new sessions.
    retired: AtomicBool,
    /// Sessions per principal (session mode).
    owners: Mutex<HashMap<String, u32>>,
}

struct Session {
    child: Arc<Child>,
    /// The session's GET stream, when open.
    get: Mutex<Option<mpsc::Sender<Value>>>,
    /// Who opened it (a digest from the gateway).
    owner: String,
    last_used: Mutex<Instant>,
}

/// A request sent to the process, awaiting its response.
struct Pending {
    session: String,
    id: Value,
    progress: Option<Value>,
    tx: mpsc::Sender<Value>,
}

struct Child {
    pid: u32,
    /// Lines for the process, written in order by its one writer task.
    stdin: mpsc::Sender<Vec<u8>>,
    started: Instant,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Server→client requests, by the id the client sees: (session, the
    /// process's own id).
    asked: Mutex<HashMap<u64, (String, Value)>>,
    alive: AtomicBool,
    kill: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Child {
    fn end(&self) {
        if let Some(k) = lock(&self.kill).take() {
            let _ = k.send(());
        }
    }

    /// Queues one message for the process; a process that does not read
    /// its input is ended rather than waited for.
    fn send(&self, v: &Value) {
        self.send_line(v.to_string());
    }

    fn send_line(&self, line: String) {
        let mut line = one_line(line.into_bytes());
        line.push(b'\n');
        if self.stdin.try_send(line).is_err() {
            self.end();
        }
    }
}
