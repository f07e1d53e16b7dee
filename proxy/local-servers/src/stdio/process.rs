//! The child process: started (one per session or shared, as the bundle
//! says), each message written to stdin as exactly one line, stdout read and
//! routed to the session and request it answers, stderr logged at a bounded
//! rate, its exit noticed.

use super::*;

/// A message as exactly one line of the stdio transport. Members are kept
/// as the text they arrived as, and JSON allows raw CR and LF between
/// tokens: written as is, one judged message would reach the process as
/// several lines, each read as a message of its own (the Python SDK splits
/// on CR too). CR and LF are turned into spaces (valid JSON has them only
/// between tokens: a string cannot hold them raw), and the characters some
/// line readers also break at (U+0085, U+2028, U+2029, only ever inside
/// strings) into their `\u` escapes: the same JSON value, on one line.
pub(super) fn one_line(line: Vec<u8>) -> Vec<u8> {
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

impl Shared {
    /// Starts a process (see the module docs).
    pub(super) fn spawn(self: &Arc<Self>) -> Result<Arc<Child>, String> {
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
    pub(super) fn exited(&self, child: &Arc<Child>, status: String) {
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

    pub(super) fn release_owner(&self, owner: &str) {
        let mut o = lock(&self.owners);
        if let Some(n) = o.get_mut(owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                o.remove(owner);
            }
        }
    }

    /// The shared process, started (again) when needed and allowed.
    pub(super) fn common(self: &Arc<Self>) -> Result<Arc<Child>, String> {
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

    pub(super) async fn read_stdout(
        self: Arc<Self>,
        child: Arc<Child>,
        stdout: tokio::process::ChildStdout,
    ) {
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
    pub(super) async fn read_message<R: tokio::io::AsyncBufRead + Unpin>(
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
    pub(super) fn route(&self, child: &Arc<Child>, mut v: Value) {
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
    pub(super) fn stream_of(
        &self,
        child: &Arc<Child>,
        session: &str,
    ) -> Option<mpsc::Sender<Value>> {
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
}

/// The process's one writer: lines in order, each whole.
pub(super) async fn write_lines(
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

pub(super) async fn log_stderr(shared: Arc<Shared>, pid: u32, stderr: tokio::process::ChildStderr) {
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
