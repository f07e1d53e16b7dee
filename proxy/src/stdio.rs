//! stdio upstreams: a local MCP server process behind the gateway.
//!
//! A server with `stdio:` is reached through a bridge the gateway runs for
//! it: a Streamable HTTP endpoint on a loopback port of its own (on its own
//! thread), which the request path forwards to like any upstream — so every
//! message to and from the process is framed, parsed and judged by the same
//! guards as an HTTP server's. The bridge answers only requests carrying its
//! random secret (which the gateway adds, see `upstream::rewrite_request`),
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

use crate::loopback::Body;

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The loopback address of `server`'s bridge, started on first use and kept
/// while the server's process setup is unchanged.
pub fn bridge_for(
    server: &Server,
    redactor: &Arc<warden_filters::dlp::Scanner>,
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
    std::thread::Builder::new()
        .name(format!("stdio-{}", server.name))
        .spawn(move || {
            // One thread, one runtime, for the gateway's lifetime: the
            // parent-death signal is tied to the thread that started the
            // process.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("stdio bridge runtime: {e}");
                    return;
                }
            };
            rt.block_on(serve(listener, run));
        })?;
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
    redactor: arc_swap::ArcSwap<warden_filters::dlp::Scanner>,
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

/// A message as exactly one line of the stdio transport. Members are kept
/// as the text they arrived as, and JSON allows raw CR and LF between
/// tokens: written as is, one judged message would reach the process as
/// several lines, each read as a message of its own (the Python SDK splits
/// on CR too). CR and LF are turned into spaces (valid JSON has them only
/// between tokens: a string cannot hold them raw), and the characters some
/// line readers also break at (U+0085, U+2028, U+2029, only ever inside
/// strings) into their `\u` escapes: the same JSON value, on one line.
fn one_line(line: Vec<u8>) -> Vec<u8> {
    let breaks = |b: &u8| matches!(b, b'\n' | b'\r' | 0x85 | 0xa8 | 0xa9);
    if !line.iter().any(breaks) {
        return line;
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let escaped = if rest.starts_with(&[0xc2, 0x85]) {
            Some((2, &b"\\u0085"[..]))
        } else if rest.starts_with(&[0xe2, 0x80, 0xa8]) {
            Some((3, &b"\\u2028"[..]))
        } else if rest.starts_with(&[0xe2, 0x80, 0xa9]) {
            Some((3, &b"\\u2029"[..]))
        } else {
            None
        };
        match (escaped, line[i]) {
            (Some((n, esc)), _) => {
                out.extend_from_slice(esc);
                i += n;
            }
            (None, b'\n' | b'\r') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// One JSON-RPC message's members, each kept as the text it arrived as.
type Members = std::collections::BTreeMap<String, Box<RawValue>>;

/// Member `name` of `m`, read as a `T`.
fn member<T: serde::de::DeserializeOwned>(m: &Members, name: &str) -> Option<T> {
    serde_json::from_str(m.get(name)?.get()).ok()
}

fn set_member(m: &mut Members, name: &str, v: &Value) {
    if let Ok(r) = RawValue::from_string(v.to_string()) {
        m.insert(name.to_owned(), r);
    }
}

/// Replaces the value at `path` (objects only) with `bid`; returns what was
/// there. Everything else stays as written.
fn rewrite_nested(m: &mut Members, path: &[&str], bid: u64) -> Option<Value> {
    let (first, rest) = path.split_first()?;
    if rest.is_empty() {
        let old = member::<Value>(m, first)?;
        set_member(m, first, &json!(bid));
        return Some(old);
    }
    let mut inner: Members = member(m, first)?;
    let old = rewrite_nested(&mut inner, rest, bid)?;
    let text = serde_json::to_string(&inner).ok()?;
    m.insert((*first).to_owned(), RawValue::from_string(text).ok()?);
    Some(old)
}

/// A message to a client stream, never waited for: a stream that is full
/// (a client that does not read) loses the message and is cut.
fn deliver(tx: &mpsc::Sender<Value>, v: Value) {
    let _ = tx.try_send(v);
}

impl Shared {
    /// Starts a process (see the module docs).
    fn spawn(self: &Arc<Self>) -> Result<Arc<Child>, String> {
        if self.processes.load(Ordering::Relaxed) >= self.cfg.max_processes {
            return Err(format!(
                "`{}` already runs {} processes (stdio.max_processes)",
                self.server, self.cfg.max_processes
            ));
        }
        let c = &self.cfg;
        // rlimits and the parent-death signal are set by util-linux's
        // `setpriv` and `prlimit` (no unsafe code here), which then exec the
        // server; without them no process is started.
        let (setpriv, prlimit) = (
            std::path::Path::new("/usr/bin/setpriv"),
            std::path::Path::new("/usr/bin/prlimit"),
        );
        if !setpriv.exists() || !prlimit.exists() {
            return Err(
                "stdio servers need /usr/bin/setpriv and /usr/bin/prlimit (util-linux) for their limits"
                    .into(),
            );
        }
        let mut cmd = tokio::process::Command::new(setpriv);
        cmd.args(["--pdeathsig", "KILL", "--no-new-privs", "--inh-caps=-all"]);
        if let Some((uid, gid)) = c.run_as {
            cmd.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups");
        }
        cmd.arg("--")
            .arg(prlimit)
            .arg(format!("--cpu={}", c.cpu.as_secs().max(1)))
            .arg(format!("--as={}", c.memory_mb.saturating_mul(1 << 20)))
            .arg(format!("--nofile={}", c.open_files))
            .arg("--")
            .arg(&c.command)
            .args(&c.args)
            .env_clear()
            .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.expose())))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: ending it ends what it started.
            .process_group(0);
        if let Some(d) = &c.cwd {
            cmd.current_dir(d);
        }
        let mut proc = cmd
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", c.command))?;
        let pid = proc.id().unwrap_or_default();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (proc.stdin.take(), proc.stdout.take(), proc.stderr.take())
        else {
            return Err("the process has no stdio".into());
        };
        self.processes.fetch_add(1, Ordering::Relaxed);
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel();
        let (line_tx, line_rx) = mpsc::channel::<Vec<u8>>(1024);
        let child = Arc::new(Child {
            pid,
            stdin: line_tx,
            started: Instant::now(),
            next: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            asked: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            kill: Mutex::new(Some(kill_tx)),
        });
        tracing::info!(server = %self.server, pid, "stdio server started");
        tokio::spawn(log_stderr(self.clone(), pid, stderr));
        tokio::spawn(write_lines(child.clone(), stdin, line_rx));
        let me = self.clone();
        let ch = child.clone();
        tokio::spawn(async move {
            let reader = me.clone().read_stdout(ch.clone(), stdout);
            let status = tokio::select! {
                _ = reader => {
                    // stdout closed or broke the framing: end it.
                    let _ = proc.start_kill();
                    proc.wait().await
                }
                _ = kill_rx => {
                    let _ = proc.start_kill();
                    proc.wait().await
                }
                s = proc.wait() => s,
            };
            // What it started goes with it: its whole process group.
            if let Ok(pgid) = i32::try_from(pid) {
                if pgid > 0 {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            me.exited(&ch, status);
        });
        Ok(child)
    }

    /// A process is gone: its pending requests fail, its sessions end.
    fn exited(&self, child: &Arc<Child>, status: String) {
        child.alive.store(false, Ordering::Relaxed);
        self.processes.fetch_sub(1, Ordering::Relaxed);
        tracing::warn!(server = %self.server, pid = child.pid, %status, "stdio server exited");
        for (_, p) in lock(&child.pending).drain() {
            deliver(
                &p.tx,
                json!({
                    "jsonrpc": "2.0", "id": p.id,
                    "error": {"code": -32603, "message": format!("the `{}` server process exited", self.server)},
                }),
            );
        }
        let mut gone = Vec::new();
        lock(&self.sessions).retain(|_, s| {
            let keep = !Arc::ptr_eq(&s.child, child);
            if !keep {
                gone.push(s.owner.clone());
            }
            keep
        });
        for o in gone {
            self.release_owner(&o);
        }
        let mut common = lock(&self.common);
        if common.as_ref().is_some_and(|c| Arc::ptr_eq(c, child)) {
            *common = None;
            // Restart with backoff: 1 s, doubling to 30 s; a process that
            // ran a minute starts it anew.
            let mut r = lock(&self.restart);
            if child.started.elapsed() > Duration::from_secs(60) {
                r.0 = Duration::ZERO;
            }
            r.0 = (r.0 * 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
            r.1 = Some(Instant::now() + r.0);
        }
    }

    fn release_owner(&self, owner: &str) {
        let mut o = lock(&self.owners);
        if let Some(n) = o.get_mut(owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                o.remove(owner);
            }
        }
    }

    /// The shared process, started (again) when needed and allowed.
    fn common(self: &Arc<Self>) -> Result<Arc<Child>, String> {
        let mut common = lock(&self.common);
        if let Some(c) = common.as_ref().filter(|c| c.alive.load(Ordering::Relaxed)) {
            return Ok(c.clone());
        }
        if let Some(at) = lock(&self.restart).1 {
            if Instant::now() < at {
                return Err(format!("`{}` is restarting", self.server));
            }
        }
        let c = self.spawn()?;
        *common = Some(c.clone());
        Ok(c)
    }

    async fn read_stdout(self: Arc<Self>, child: Arc<Child>, stdout: tokio::process::ChildStdout) {
        let mut r = tokio::io::BufReader::new(stdout);
        let mut line = Vec::new();
        let mut junk = 0u64;
        loop {
            line.clear();
            let n = match Self::read_message(&mut r, &mut line, MAX_LINE + 1).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if n > MAX_LINE {
                tracing::warn!(server = %self.server, pid = child.pid, "stdio server wrote a line over 8 MiB: ended");
                return;
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Value>(text) {
                Ok(v) => self.route(&child, v),
                Err(_) => {
                    junk += 1;
                    if junk.is_power_of_two() {
                        tracing::warn!(
                            server = %self.server,
                            pid = child.pid,
                            "stdio server wrote a line that is not JSON: dropped ({junk} so far)"
                        );
                    }
                }
            }
        }
    }

    /// Reads one message line into `line`: up to LF, CR or CRLF (a process that
    /// ends its messages with CR alone is read as a line-oriented reader with
    /// universal newlines reads it), at most `max` bytes. 0 at the end.
    async fn read_message<R: tokio::io::AsyncBufRead + Unpin>(
        r: &mut R,
        line: &mut Vec<u8>,
        max: usize,
    ) -> std::io::Result<usize> {
        use tokio::io::AsyncBufReadExt;
        loop {
            let buf = r.fill_buf().await?;
            if buf.is_empty() {
                return Ok(line.len());
            }
            // A CR that ended the last message, and an LF after it (CRLF).
            if line.is_empty() && buf[0] == b'\n' {
                r.consume(1);
                continue;
            }
            match memchr::memchr2(b'\n', b'\r', buf) {
                Some(i) => {
                    line.extend_from_slice(&buf[..i]);
                    r.consume(i + 1);
                    if line.is_empty() {
                        continue;
                    }
                    return Ok(line.len());
                }
                None => {
                    let n = buf.len();
                    line.extend_from_slice(buf);
                    r.consume(n);
                    if line.len() >= max {
                        return Ok(line.len());
                    }
                }
            }
        }
    }

    /// Sends one message from the process where it belongs (never waiting).
    fn route(&self, child: &Arc<Child>, mut v: Value) {
        let is_response = v.get("result").is_some() || v.get("error").is_some();
        let method = v.get("method").and_then(Value::as_str).map(str::to_owned);
        if is_response {
            let Some(bid) = v.get("id").and_then(Value::as_u64) else {
                return;
            };
            let Some(p) = lock(&child.pending).remove(&bid) else {
                return;
            };
            v["id"] = p.id;
            deliver(&p.tx, v);
            return;
        }
        let Some(method) = method else {
            return;
        };
        if let Some(id) = v.get("id").cloned() {
            // A server→client request: the client sees an id of the bridge's.
            let session = if self.cfg.shared {
                None
            } else {
                lock(&self.sessions)
                    .iter()
                    .find(|(_, s)| Arc::ptr_eq(&s.child, child))
                    .map(|(k, _)| k.clone())
            };
            let target = session.as_ref().and_then(|s| self.stream_of(child, s));
            match (session, target) {
                (Some(s), Some(tx)) => {
                    let bid = child.next.fetch_add(1, Ordering::Relaxed);
                    lock(&child.asked).insert(bid, (s, id));
                    v["id"] = json!(bid);
                    deliver(&tx, v);
                }
                _ => child.send(&json!({"jsonrpc": "2.0", "id": id, "error": {
                    "code": -32601,
                    "message": format!("`{method}` cannot reach a client from here"),
                }})),
            }
            return;
        }
        // A notification: progress goes with its request.
        if method == "notifications/progress" {
            let token = v.pointer("/params/progressToken").and_then(Value::as_u64);
            let found = token.and_then(|t| {
                lock(&child.pending)
                    .get(&t)
                    .map(|p| (p.tx.clone(), p.progress.clone()))
            });
            if let Some((tx, Some(original))) = found {
                v["params"]["progressToken"] = original;
                deliver(&tx, v);
            }
            return;
        }
        // A shared process's other notifications cannot be attributed to
        // one session: only list changes (true for everyone) go on.
        if self.cfg.shared && !method.ends_with("/list_changed") {
            return;
        }
        let targets: Vec<mpsc::Sender<Value>> = lock(&self.sessions)
            .values()
            .filter(|s| Arc::ptr_eq(&s.child, child))
            .filter_map(|s| lock(&s.get).clone())
            .collect();
        for tx in targets {
            deliver(&tx, v.clone());
        }
    }

    /// Where a server→client request of this session goes: its newest
    /// pending request's stream, else its GET stream.
    fn stream_of(&self, child: &Arc<Child>, session: &str) -> Option<mpsc::Sender<Value>> {
        let newest = lock(&child.pending)
            .iter()
            .filter(|(_, p)| p.session == session)
            .max_by_key(|(k, _)| **k)
            .map(|(_, p)| p.tx.clone());
        newest.or_else(|| {
            lock(&self.sessions)
                .get(session)
                .and_then(|s| lock(&s.get).clone())
        })
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let authorised = req
            .headers()
            .get(SECRET_HEADER)
            .is_some_and(|v| crate::loopback::same(v.as_bytes(), self.secret.as_bytes()));
        if !authorised {
            return crate::loopback::plain(StatusCode::FORBIDDEN, "");
        }
        let sid = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match *req.method() {
            Method::POST => self.post(req, sid).await,
            Method::GET => self.get(sid),
            Method::DELETE => {
                let removed = sid.and_then(|s| lock(&self.sessions).remove(&s));
                match removed {
                    Some(s) => {
                        if !self.cfg.shared {
                            s.child.end();
                        }
                        self.release_owner(&s.owner);
                        crate::loopback::plain(StatusCode::OK, "")
                    }
                    None => not_found(),
                }
            }
            _ => crate::loopback::plain(StatusCode::METHOD_NOT_ALLOWED, ""),
        }
    }

    fn get(&self, sid: Option<String>) -> Response<Body> {
        let Some(session) = sid.and_then(|s| lock(&self.sessions).get(&s).cloned()) else {
            return not_found();
        };
        let (tx, rx) = mpsc::channel(STREAM_DEPTH);
        *lock(&session.get) = Some(tx);
        sse(rx, None, None)
    }

    async fn post(self: Arc<Self>, req: Request<Incoming>, sid: Option<String>) -> Response<Body> {
        let owner = req
            .headers()
            .get(OWNER_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = match http_body_util::Limited::new(req.into_body(), MAX_LINE)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return crate::loopback::plain(StatusCode::PAYLOAD_TOO_LARGE, ""),
        };
        // Members stay as the gateway judged them, byte for byte: only ids
        // and progress tokens are rewritten.
        let batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let raws: Vec<Box<RawValue>> = if batch {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return crate::loopback::plain(StatusCode::BAD_REQUEST, ""),
            }
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => vec![v],
                Err(_) => return crate::loopback::plain(StatusCode::BAD_REQUEST, ""),
            }
        };
        let mut messages: Vec<Members> = Vec::with_capacity(raws.len());
        for r in &raws {
            match serde_json::from_str::<Members>(r.get()) {
                Ok(m) => messages.push(m),
                Err(_) => return crate::loopback::plain(StatusCode::BAD_REQUEST, ""),
            }
        }
        let initialize = messages.len() == 1
            && member::<String>(&messages[0], "method").as_deref() == Some("initialize")
            && messages[0].contains_key("id");
        let (session_id, session) = if initialize {
            let id = member::<Value>(&messages[0], "id");
            match self.open_session(&owner) {
                Ok(x) => x,
                Err(why) => {
                    tracing::warn!(server = %self.server, "no process for a new session: {why}");
                    return json_error(StatusCode::TOO_MANY_REQUESTS, id, &why);
                }
            }
        } else {
            let found = sid.and_then(|s| lock(&self.sessions).get(&s).cloned().map(|x| (s, x)));
            match found {
                Some(x) => x,
                None => return not_found(),
            }
        };
        let child = session.child.clone();
        if !child.alive.load(Ordering::Relaxed) {
            return not_found();
        }
        *lock(&session.last_used) = Instant::now();
        let (tx, rx) = mpsc::channel(STREAM_DEPTH);
        let mut requests = 0usize;
        let mut asked: Vec<u64> = Vec::new();
        for m in messages.iter_mut() {
            let method = member::<String>(m, "method");
            let id = member::<Value>(m, "id");
            match (method.is_some(), id) {
                (true, Some(id)) => {
                    let bid = child.next.fetch_add(1, Ordering::Relaxed);
                    let progress = rewrite_nested(m, &["params", "_meta", "progressToken"], bid);
                    lock(&child.pending).insert(
                        bid,
                        Pending {
                            session: session_id.clone(),
                            id,
                            progress,
                            tx: tx.clone(),
                        },
                    );
                    set_member(m, "id", &json!(bid));
                    requests += 1;
                    asked.push(bid);
                }
                (false, Some(id)) => {
                    // The client's answer to a server→client request.
                    let own = id
                        .as_u64()
                        .and_then(|b| lock(&child.asked).remove(&b))
                        .filter(|(s, _)| *s == session_id);
                    match own {
                        Some((_, original)) => set_member(m, "id", &original),
                        None => continue,
                    }
                }
                (true, None) => {
                    // A cancellation names the request by the client's id;
                    // a cancelled request is answered by no one, so its
                    // stream ends here.
                    if method.as_deref() == Some("notifications/cancelled") {
                        let wanted = member::<Members>(m, "params")
                            .and_then(|p| member::<Value>(&p, "requestId"));
                        let bid = lock(&child.pending)
                            .iter()
                            .find(|(_, p)| {
                                p.session == session_id && Some(&p.id) == wanted.as_ref()
                            })
                            .map(|(k, _)| *k);
                        match bid {
                            Some(b) => {
                                rewrite_nested(m, &["params", "requestId"], b);
                                lock(&child.pending).remove(&b);
                            }
                            None => continue,
                        }
                    }
                }
                (false, None) => continue,
            }
            match serde_json::to_string(m) {
                Ok(line) => child.send_line(line),
                Err(_) => return crate::loopback::plain(StatusCode::BAD_REQUEST, ""),
            }
        }
        drop(tx);
        if requests == 0 {
            return crate::loopback::plain(StatusCode::ACCEPTED, "");
        }
        let deadline = Deadline {
            after: self.read,
            child: child.clone(),
            asked,
            server: self.server.clone(),
        };
        sse(
            rx,
            Some((requests, deadline)),
            initialize.then_some(session_id),
        )
    }

    /// A new session (and, in session mode, its process) for `owner`.
    fn open_session(self: &Arc<Self>, owner: &str) -> Result<(String, Arc<Session>), String> {
        if self.retired.load(Ordering::Relaxed) {
            return Err(format!(
                "the setup of `{}` changed: initialize again",
                self.server
            ));
        }
        let child = if self.cfg.shared {
            self.common()?
        } else {
            let held = lock(&self.owners).get(owner).copied().unwrap_or(0);
            if held >= self.cfg.max_per_principal {
                return Err(format!(
                    "this principal already holds {held} `{}` processes (stdio.max_per_principal)",
                    self.server
                ));
            }
            self.spawn()?
        };
        let id = hex::encode(rand::random::<[u8; 16]>());
        let s = Arc::new(Session {
            child,
            get: Mutex::new(None),
            owner: owner.to_owned(),
            last_used: Mutex::new(Instant::now()),
        });
        lock(&self.sessions).insert(id.clone(), s.clone());
        *lock(&self.owners).entry(owner.to_owned()).or_default() += 1;
        Ok((id, s))
    }
}

/// The process's one writer: lines in order, each whole.
async fn write_lines(
    child: Arc<Child>,
    mut stdin: tokio::process::ChildStdin,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(line) = rx.recv().await {
        let wrote = tokio::time::timeout(Duration::from_secs(30), async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        })
        .await;
        if !matches!(wrote, Ok(Ok(()))) {
            child.end();
            return;
        }
    }
}

async fn log_stderr(shared: Arc<Shared>, pid: u32, stderr: tokio::process::ChildStderr) {
    let server = shared.server.clone();
    let mut r = tokio::io::BufReader::new(stderr);
    let (mut window, mut shown, mut dropped) = (Instant::now(), 0u32, 0u64);
    let mut l = Vec::new();
    loop {
        l.clear();
        // A line is kept up to MAX_STDERR_LINE; the rest of it is skipped.
        match (&mut r)
            .take(MAX_STDERR_LINE as u64)
            .read_until(b'\n', &mut l)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if l.last() != Some(&b'\n') && l.len() >= MAX_STDERR_LINE {
            let mut skip = Vec::new();
            loop {
                skip.clear();
                match (&mut r).take(1 << 16).read_until(b'\n', &mut skip).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) if skip.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
        }
        if window.elapsed() >= Duration::from_secs(1) {
            if dropped > 0 {
                tracing::warn!(server = %server, pid, "stdio server stderr: {dropped} more lines not logged");
            }
            (window, shown, dropped) = (Instant::now(), 0, 0);
        }
        if shown >= STDERR_PER_SEC {
            dropped += 1;
            continue;
        }
        shown += 1;
        let text: String = String::from_utf8_lossy(&l)
            .chars()
            .take(1000)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        // What a process prints can hold what DLP keeps out of replies.
        let text = warden_filters::snapshot::redact_with(&shared.redactor.load(), &text, 1000);
        tracing::info!(server = %server, pid, "stdio server: {}", text.trim_end());
    }
    if dropped > 0 {
        tracing::warn!(server = %server, pid, "stdio server stderr: {dropped} more lines not logged");
    }
}

fn not_found() -> Response<Body> {
    json_error(StatusCode::NOT_FOUND, None, "Session not found")
}

fn json_error(status: StatusCode, id: Option<Value>, message: &str) -> Response<Body> {
    let v = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32001, "message": message}});
    crate::loopback::json(status, None, v.to_string())
}

/// When a POST's requests stop waiting for the process: after `after`
/// without a message from it (a process that stopped, or one whose
/// messages never end a line), each request still unanswered is answered
/// with an error that names the server, and forgotten.
struct Deadline {
    after: Duration,
    child: Arc<Child>,
    asked: Vec<u64>,
    server: String,
}

impl Deadline {
    /// The errors for the requests still waiting (their client ids).
    fn expire(&self) -> Vec<Value> {
        let mut pending = lock(&self.child.pending);
        self.asked
            .iter()
            .filter_map(|bid| pending.remove(bid))
            .map(|p| {
                json!({"jsonrpc": "2.0", "id": p.id, "error": {
                    "code": -32001,
                    "message": format!("MCP server `{}` did not answer in time", self.server),
                }})
            })
            .collect()
    }
}

/// An SSE response of what arrives on `rx`, ending after the POST's
/// responses (never, for a GET stream), or at its deadline.
fn sse(
    rx: mpsc::Receiver<Value>,
    responses: Option<(usize, Deadline)>,
    session: Option<String>,
) -> Response<Body> {
    let stream = futures_util::stream::unfold((rx, responses), |(mut rx, left)| async move {
        let v = match &left {
            Some((0, _)) => return None,
            Some((_, deadline)) => {
                match tokio::time::timeout(deadline.after, rx.recv()).await {
                    Ok(v) => v?,
                    Err(_) => {
                        // Every request still waiting is answered at once.
                        let errors = deadline.expire();
                        if errors.is_empty() {
                            return None;
                        }
                        let text: String = errors
                            .iter()
                            .map(|e| format!("event: message\ndata: {e}\n\n"))
                            .collect();
                        return Some((Bytes::from(text), (rx, left.map(|(_, d)| (0, d)))));
                    }
                }
            }
            None => rx.recv().await?,
        };
        let is_response = v.get("result").is_some() || v.get("error").is_some();
        let left = left.map(|(n, d)| (if is_response { n - 1 } else { n }, d));
        let event = Bytes::from(format!("event: message\ndata: {v}\n\n"));
        Some((event, (rx, left)))
    });
    crate::loopback::event_stream(stream, session.as_deref())
}

async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("stdio bridge: {e}");
            return;
        }
    };
    // Requests whose client went away stop being waited for; idle
    // sessions (and their processes) end.
    let reaper = shared.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let children: Vec<Arc<Child>> = lock(&reaper.sessions)
                .values()
                .map(|s| s.child.clone())
                .collect();
            for c in &children {
                lock(&c.pending).retain(|_, p| !p.tx.is_closed());
            }
            let idle = reaper.cfg.idle_timeout;
            let mut ended = Vec::new();
            lock(&reaper.sessions).retain(|_, s| {
                let quiet = lock(&s.last_used).elapsed() >= idle;
                if quiet {
                    ended.push(s.clone());
                }
                !quiet
            });
            for s in ended {
                reaper.release_owner(&s.owner);
                if !reaper.cfg.shared {
                    s.child.end();
                }
            }
        }
    });
    crate::loopback::serve(listener, 1024, move |req| {
        let s = shared.clone();
        async move { s.handle(req).await }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_message_reaches_the_process_as_one_line_with_the_same_value() {
        // One judged message (a ping whose unknown member holds an array)
        // whose whitespace would otherwise split it into three lines, the
        // second a tools/call nobody judged.
        let smuggled = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"z\":[\n{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\"}\r\n]\r}".to_vec();
        let text = "{\"t\":\"a\u{2028}b\u{2029}c\u{85}d\u{e9}\u{1F600}\"}";
        for line in [smuggled, text.as_bytes().to_vec()] {
            let out = one_line(line.clone());
            assert!(!out.iter().any(|b| matches!(b, b'\n' | b'\r')), "{out:?}");
            let out_text = String::from_utf8(out.clone()).expect("utf-8");
            for c in ['\u{85}', '\u{2028}', '\u{2029}'] {
                assert!(!out_text.contains(c), "{out_text}");
            }
            let before: serde_json::Value = serde_json::from_slice(&line).expect("json");
            let after: serde_json::Value = serde_json::from_slice(&out).expect("json");
            assert_eq!(before, after);
            // Python's universal-newline reader sees one line too.
            assert_eq!(out_text.lines().count(), 1);
        }
        let plain = b"{\"a\":1}".to_vec();
        assert_eq!(one_line(plain.clone()), plain);
    }
}
