//! Harness for Warden's integration tests: real processes on real sockets.
//!
//! Every process a test starts is owned by a guard that kills it by its id
//! and waits for it on drop; every file lives in a temporary directory that
//! is removed with its guard. Ports come from the OS (port 0): peers that can
//! report their bound port do so; for the gateway and third-party servers a
//! port is taken from the OS, released, and handed over, and a process counts
//! as up only once it holds that port itself (with a retry should another
//! process grab it first).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub mod hostile;
pub mod postgres;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of a binary built from this workspace (same profile as the test).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    dir.join(name)
}

/// A free TCP port on loopback, as the OS hands it out.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Whether process `pid` (or a process it started) holds a socket listening
/// on `port`. A connection that succeeds proves less: it may reach another
/// process that took the port between its hand-out and the bind.
pub fn listens(pid: u32, port: u16) -> bool {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let bound = local
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if *state == "0A" && bound == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let mut pids = vec![pid];
    while let Some(p) = pids.pop() {
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) {
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path()) {
                    if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                        return true;
                    }
                }
            }
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                pids.extend(
                    kids.split_whitespace()
                        .filter_map(|k| k.parse::<u32>().ok()),
                );
            }
        }
    }
    false
}

/// Waits until `proc` listens on every one of `ports` (see [`listens`]).
/// Errs when it exits first or `timeout` passes.
pub fn wait_listening(proc: &mut Proc, ports: &[u16], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if !proc.is_running() {
            bail!("{} exited before listening on {ports:?}", proc.name);
        }
        if ports.iter().all(|&p| listens(proc.pid(), p)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not listen on {ports:?} within {timeout:?}",
                proc.name
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (by its id) and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Sends SIGTERM (graceful shutdown) without waiting.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// Waits up to `timeout` for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real `redis-server` on loopback (no persistence), killed on drop.
pub struct Redis {
    pub proc: Proc,
    pub port: u16,
}

impl Redis {
    pub fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh installs it)");
        let mut proc = Proc {
            child,
            name: "redis-server".into(),
        };
        if let Err(e) = wait_listening(&mut proc, &[port], Duration::from_secs(10)) {
            panic!("redis did not start: {e}");
        }
        Redis { proc, port }
    }

    /// `redis-cli -p PORT ARGS…` → stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let (ok, out, err) = run_with_timeout(
            Command::new("redis-cli")
                .args(["-p", &self.port.to_string()])
                .args(args),
            Duration::from_secs(10),
        )
        .expect("redis-cli");
        assert!(ok, "{err}");
        out
    }
}

/// The fast mock MCP server.
pub struct Mock {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Mock {
    pub fn start(extra: &[&str]) -> Result<Mock> {
        let mut child = Command::new(bin("warden-mock"))
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting warden-mock (run `cargo build --workspace --bins` first)")?;
        let stdout = child.stdout.take().context("mock stdout")?;
        let proc = Proc {
            child,
            name: "warden-mock".into(),
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .context("mock did not report its address")?
            .parse()?;
        Ok(Mock { proc, addr })
    }

    pub async fn stats(&self) -> Result<serde_json::Value> {
        let (s, _, b) = request(
            &format!("http://{}/__mock/stats", self.addr),
            "GET",
            &[],
            Bytes::new(),
            false,
        )
        .await?;
        if s != 200 {
            bail!("stats: {s}");
        }
        Ok(serde_json::from_slice(&b)?)
    }

    /// The tools the mock lists (`tools/list` asked directly), as it lists them.
    pub async fn tools(&self) -> Vec<serde_json::Value> {
        let (_, _, b) = post_json(
            &format!("http://{}/mcp", self.addr),
            serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}).to_string(),
            &[],
        )
        .await
        .expect("mock list");
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        v["result"]["tools"].as_array().cloned().expect("tools")
    }

    /// Adds a tool, or replaces one by name (`POST /__mock/tools`): a rug pull.
    pub async fn set_tool(&self, def: serde_json::Value) {
        let (s, _, _) = request(
            &format!("http://{}/__mock/tools", self.addr),
            "POST",
            &[("content-type", "application/json")],
            def.to_string().into(),
            false,
        )
        .await
        .expect("mock tools hook");
        assert_eq!(s, 200);
    }

    pub async fn posts(&self) -> u64 {
        self.stats()
            .await
            .ok()
            .and_then(|v| v["posts"].as_u64())
            .unwrap_or(u64::MAX)
    }
}

/// An Ed25519 key pair from `warden-agent keygen`: `<name>.key`, `<name>.pub`.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (private, public) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    let (ok, _, err) = run_with_timeout(
        Command::new(bin("warden-agent"))
            .arg("keygen")
            .arg("--private")
            .arg(&private)
            .arg("--public")
            .arg(&public),
        Duration::from_secs(20),
    )
    .expect("keygen");
    assert!(ok, "{err}");
    (private, public)
}

/// A running control agent (`warden-agent serve`) on a port of its choosing.
pub struct Agent {
    pub proc: Proc,
    pub url: String,
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const FLEET_TOKEN: &str = "test-fleet-token-0123456789";

impl Agent {
    /// Serves `source`, keeping state in `state`, signing with `key` (PEM).
    pub fn start(source: &Path, state: &Path, key: Option<&Path>) -> Result<Agent> {
        Self::start_with(source, state, key, &[])
    }

    /// As [`Agent::start`], with extra `serve` arguments (a
    /// `--watch-interval` among them replaces the default 100 ms).
    pub fn start_with(
        source: &Path,
        state: &Path,
        key: Option<&Path>,
        extra: &[&std::ffi::OsStr],
    ) -> Result<Agent> {
        let mut cmd = Command::new(bin("warden-agent"));
        cmd.arg("serve")
            .arg("--source")
            .arg(source)
            .arg("--state")
            .arg(state)
            .env("WARDEN_AGENT_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("WARDEN_AGENT_FLEET_TOKEN", FLEET_TOKEN)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("WARDEN_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if let Some(k) = key {
            cmd.arg("--signing-key").arg(k);
        }
        if !extra.iter().any(|a| *a == "--watch-interval") {
            cmd.args(["--watch-interval", "100ms"]);
        }
        // A test that must know the address first (a provider's redirect
        // URL names it) gives its own.
        if !extra.iter().any(|a| *a == "--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().context("starting warden-agent")?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let proc = Proc {
            child,
            name: "warden-agent".into(),
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("agent did not report its address: {line:?}"))?;
        Ok(Agent {
            proc,
            url: format!("http://{addr}"),
        })
    }

    /// An admin API call; returns (status, JSON body).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value)> {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let mut h = vec![("authorization", auth.as_str())];
        if body.is_some() {
            h.push(("content-type", "application/json"));
        }
        let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let (s, _, b) = request(&format!("{}{path}", self.url), method, &h, payload, false).await?;
        Ok((
            s,
            serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
        ))
    }
}

/// A running `warden` with a bundle written to a temporary directory.
pub struct Gateway {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    /// The gateway's `--state-dir` (its install key among others), unless
    /// the test gave one.
    pub state: tempfile::TempDir,
    /// Every line the gateway wrote to stderr so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Gateway {
    /// The gateway's stderr so far, one entry per line.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Starts warden on `warden_yaml` (listeners are overridden). Waits until
    /// `/healthz` answers, and, when `wait_ready`, until every upstream is healthy.
    pub fn start(warden_yaml: &str, wait_ready: bool) -> Result<Gateway> {
        Self::start_with(warden_yaml, wait_ready, &[], &[], None)
    }

    /// As [`Gateway::start`], with extra bundle files and arguments. With
    /// `bundle_listener`, the bundle's own listener (at that address) is used.
    pub fn start_with(
        warden_yaml: &str,
        wait_ready: bool,
        files: &[(&str, &[u8])],
        extra_args: &[&str],
        bundle_listener: Option<SocketAddr>,
    ) -> Result<Gateway> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("warden.yaml"), warden_yaml)?;
        for (name, data) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, data)?;
        }
        let state = tempfile::tempdir()?;
        for attempt in 0..5 {
            let port = free_port();
            let admin_port = free_port();
            let addr: SocketAddr = match bundle_listener {
                Some(a) => a,
                None => format!("127.0.0.1:{port}").parse()?,
            };
            let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse()?;
            let mut cmd = Command::new(bin("warden"));
            cmd.arg("run");
            // A remote bundle source replaces the local bundle directory.
            if !extra_args
                .iter()
                .any(|a| *a == "--agent" || *a == "--bundle-url" || *a == "--bundle")
            {
                cmd.arg("--bundle").arg(dir.path());
            }
            cmd.args(["--admin", &admin.to_string(), "--threads", "2"]);
            if bundle_listener.is_none() {
                cmd.args(["--listen", &addr.to_string()]);
            }
            cmd.args(extra_args);
            if !extra_args.contains(&"--state-dir") {
                cmd.arg("--state-dir").arg(state.path());
            }
            if !extra_args.contains(&"--audit") {
                cmd.arg("--audit").arg(dir.path().join("audit.jsonl"));
            }
            let child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting warden")?;
            let mut proc = Proc {
                child,
                name: "warden".into(),
            };
            // Both ports held by this process: a connection alone may reach
            // another process that took a port meanwhile.
            let up = wait_listening(
                &mut proc,
                &[addr.port(), admin.port()],
                Duration::from_secs(20),
            )
            .is_ok();
            if !up {
                let mut err = String::new();
                if let Some(mut e) = proc.child.stderr.take() {
                    use std::io::Read;
                    let _ = proc.child.kill();
                    let _ = e.read_to_string(&mut err);
                }
                if attempt < 4 && err.contains("Address already in use") {
                    continue;
                }
                bail!("warden did not start: {err}");
            }
            // Drain stderr in the background so the pipe never fills.
            let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            if let Some(e) = proc.child.stderr.take() {
                let log = log.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(e).lines().map_while(Result::ok) {
                        if std::env::var_os("WARDEN_TEST_LOG").is_some() {
                            eprintln!("[warden] {line}");
                        }
                        if let Ok(mut l) = log.lock() {
                            l.push(line);
                        }
                    }
                });
            }
            let gw = Gateway {
                proc,
                addr,
                admin,
                dir,
                state,
                log,
            };
            if wait_ready {
                gw.wait_ready()?;
            }
            return Ok(gw);
        }
        bail!("could not find a free port for warden")
    }

    /// A gateway whose bundles come from the agent at `agent_url`, verified
    /// with `public`, kept in `state`, reporting as `id`.
    pub fn on_agent(agent_url: &str, public: &Path, state: &Path, id: &str) -> Result<Gateway> {
        Self::on_agent_with(agent_url, public, state, id, &[])
    }

    /// As [`Gateway::on_agent`], with more `warden run` arguments
    /// (`--report-interval`, `--label`…).
    pub fn on_agent_with(
        agent_url: &str,
        public: &Path,
        state: &Path,
        id: &str,
        extra: &[&str],
    ) -> Result<Gateway> {
        let mut args = vec![
            "--agent",
            agent_url,
            "--agent-token",
            FLEET_TOKEN,
            "--bundle-public-key",
            public.to_str().context("utf8 path")?,
            "--state-dir",
            state.to_str().context("utf8 path")?,
            "--gateway-id",
            id,
        ];
        args.extend_from_slice(extra);
        Self::start_with("", false, &[], &args, None)
    }

    /// `/status` of the admin endpoint.
    pub async fn status(&self) -> serde_json::Value {
        request(
            &format!("http://{}/status", self.admin),
            "GET",
            &[],
            Bytes::new(),
            false,
        )
        .await
        .ok()
        .and_then(|(_, _, b)| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
    }

    pub fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if sync_get_status(self.admin, "/readyz") == Some(200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("warden never became ready")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The audit records once `done` holds for them (the writer flushes off
    /// the request path, within milliseconds); gives up after five seconds.
    pub fn audit_when(
        &self,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let recs = self.audit();
            if done(&recs) || Instant::now() > deadline {
                return recs;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The metrics once `done` holds for them: counters a call's records
    /// add are counted after its reply is sent (Pingora's logging phase),
    /// so a scrape right after the reply can precede them. Gives up after
    /// five seconds and returns the last scrape.
    pub async fn metrics_when(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = self.metrics().await;
            if done(&m) || Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        request(
            &format!("http://{}/metrics", self.admin),
            "GET",
            &[],
            Bytes::new(),
            false,
        )
        .await
        .map(|(_, _, b)| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
    }
}

/// A blocking GET returning the status, usable outside any async runtime.
pub fn sync_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split(' ').nth(1)?.parse().ok()
}

pub type Headers = Vec<(String, String)>;

/// One HTTP request with hyper (HTTP/1.1, or HTTP/2 with prior knowledge).
pub async fn request(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    h2: bool,
) -> Result<(u16, Headers, Bytes)> {
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(h2);
    let client: Client<_, Full<Bytes>> = b.build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body))?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .context("request timed out")??;
    let status = resp.status().as_u16();
    let hs = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
        .await
        .context("body timed out")??
        .to_bytes();
    Ok((status, hs, body))
}

/// An open response body read as it arrives (an SSE stream).
pub struct Streaming {
    body: hyper::body::Incoming,
    /// Everything read so far.
    pub text: String,
}

impl Streaming {
    /// GETs `url` and returns the status and the open body.
    pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<(u16, Streaming)> {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut req = http::Request::builder().method("GET").uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(30),
            client.request(req.body(Full::new(Bytes::new()))?),
        )
        .await
        .context("request timed out")??;
        let status = resp.status().as_u16();
        Ok((
            status,
            Streaming {
                body: resp.into_body(),
                text: String::new(),
            },
        ))
    }

    /// Reads until the text holds `needle` (true), the body ends or
    /// `within` passes (false).
    pub async fn until(&mut self, needle: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.text.contains(needle) {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        self.text.push_str(&String::from_utf8_lossy(&d));
                    }
                }
                _ => return false,
            }
        }
        true
    }

    /// Reads to the end of the body (or for at most `within`).
    pub async fn rest(mut self, within: Duration) -> String {
        self.until("\u{0}never", within).await;
        self.text
    }
}

/// POSTs a JSON body to an MCP endpoint the way SDK clients do.
pub async fn post_json(
    url: &str,
    body: impl Into<Bytes>,
    extra: &[(&str, &str)],
) -> Result<(u16, Headers, Bytes)> {
    let mut h = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    h.extend_from_slice(extra);
    request(url, "POST", &h, body.into(), false).await
}

pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A bundle with one server `mock` (one or more upstreams) routed at `/mock`.
/// An `identity:` section with two API-key principals of one tenant:
/// `agent-dev` (`wk_demo_dev_7Qm2`) and `alice-ops` (`wk_demo_ops_Z8r5`).
pub const TWO_KEYS: &str = "identity:\n  resource: http://127.0.0.1/mock/mcp\n  api_keys:\n    - {id: agent-dev, tenant: acme, hash: \"sha256:d0abfb21f2a5d2fc66a2e0c5f9b369c4:995c0dc437d925d6baad52296a0ef3c5be924b056ab931cd5a2284bf8ba3bc0a\"}\n    - {id: alice-ops, tenant: acme, hash: \"sha256:8771d3578b7a4dc4b3526100880cca03:c349f1202007a966b733cae64bd8e2f2642c7d8ca75e5b66d779624e436cb92b\"}\n";

pub fn mock_bundle(upstreams: &[SocketAddr], extra: &str) -> String {
    let ups: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "version: 1\n{extra}\nservice_groups:\n  - name: tools\n    servers:\n      - name: mock\n        upstreams: [{}]\n        health_check: {{interval: 1s}}\nroutes:\n  - prefix: /mock\n    server: mock\n",
        ups.join(", ")
    )
}

/// Runs a command with a deadline; returns (status ok, stdout, stderr).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<(bool, String, String)> {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut proc = Proc {
        child,
        name: "cmd".into(),
    };
    let out = proc.child.stdout.take();
    let err = proc.child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut o) = out {
            use std::io::Read;
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut o) = err {
            use std::io::Read;
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let code = proc.wait_exit(timeout);
    if code.is_none() {
        let _ = proc.child.kill();
    }
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    Ok((code == Some(0), stdout, stderr))
}

/// Runs `openssl` with `args` in `dir`; fails the test on error.
pub fn openssl(dir: &Path, args: &[&str]) {
    let (ok, _, err) = run_with_timeout(
        Command::new("openssl").current_dir(dir).args(args),
        Duration::from_secs(60),
    )
    .expect("openssl runs");
    assert!(ok, "openssl {args:?}: {err}");
}

/// A self-signed server certificate for `localhost` / 127.0.0.1, written to
/// `dir/cert.pem` and `dir/key.pem`; returns (cert, key) PEM.
pub fn self_signed(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    );
    (
        std::fs::read(dir.join("cert.pem")).expect("cert"),
        std::fs::read(dir.join("key.pem")).expect("key"),
    )
}

/// The example bundle (`config/examples/sidecar`) with its upstream pointed at
/// `upstream`: warden.yaml (after `edit`), data.json, .manifest and policies.
pub fn example_bundle(
    upstream: SocketAddr,
    edit: impl Fn(String) -> String,
) -> (String, Vec<(String, Vec<u8>)>) {
    let dir = root().join("config/examples/sidecar");
    let yaml = std::fs::read_to_string(dir.join("warden.yaml"))
        .expect("example warden.yaml")
        .replace("127.0.0.1:8931", &upstream.to_string());
    let mut files = Vec::new();
    for name in ["data.json", ".manifest"] {
        files.push((
            name.to_owned(),
            std::fs::read(dir.join(name)).expect("example file"),
        ));
    }
    for e in std::fs::read_dir(dir.join("policies")).expect("policies") {
        let e = e.expect("entry");
        let name = format!("policies/{}", e.file_name().to_string_lossy());
        files.push((name, std::fs::read(e.path()).expect("rego")));
    }
    (edit(yaml), files)
}

/// [`post_json`] to `gw`'s `path`, for tests that read the reply as text.
pub async fn post_text(
    gw: &Gateway,
    path: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> (u16, Headers, String) {
    let (s, h, b) = post_json(&gw.url(path), body.to_owned(), extra)
        .await
        .expect("post");
    (s, h, String::from_utf8_lossy(&b).into_owned())
}

/// The JSON-RPC messages of a JSON or SSE reply body (any of SSE's line
/// ends; an event's data lines joined; an unparseable event is `null`).
pub fn rpc_messages(text: &str) -> Vec<serde_json::Value> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        return match v {
            serde_json::Value::Array(a) => a,
            v => vec![v],
        };
    }
    let mut out = Vec::new();
    let norm = text.replace("\r\n", "\n").replace('\r', "\n");
    for ev in norm.split("\n\n") {
        let data: Vec<&str> = ev
            .split('\n')
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() || data.iter().all(|d| d.is_empty()) {
            continue;
        }
        out.push(serde_json::from_str(&data.join("\n")).unwrap_or(serde_json::Value::Null));
    }
    out
}

#[cfg(test)]
mod harness_tests {
    use super::*;

    #[test]
    fn a_port_counts_as_listened_on_only_by_its_holder() {
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        assert!(listens(std::process::id(), port));
        // Another process (a child of ours here) does not hold it.
        let mut sleeper = Proc {
            child: Command::new("sleep").arg("30").spawn().expect("sleep"),
            name: "sleep".into(),
        };
        assert!(!listens(sleeper.pid(), port));
        let err = wait_listening(&mut sleeper, &[port], Duration::from_millis(200))
            .expect_err("sleep never listens");
        assert!(err.to_string().contains("did not listen"), "{err}");
        drop(held);
        assert!(!listens(std::process::id(), port));
    }
}
