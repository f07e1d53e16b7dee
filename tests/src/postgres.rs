//! A real PostgreSQL server for tests: Debian's `postgresql` binaries, a
//! cluster made in a temporary directory, on loopback, stopped and removed
//! on drop. PostgreSQL refuses to run as root: run as root, the server runs
//! as the unprivileged user `scripts/setup.sh` creates (`warden-pg`).
//!
//! Standard library only: the control agent's unit tests include this file
//! too (`#[path]`).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged user the server runs as when the tests run as root.
pub const PG_USER: &str = "warden-pg";

/// One server; every test makes its own databases in it.
pub struct PgServer {
    child: Option<Child>,
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    run_as: Option<(u32, u32)>,
    started_once: bool,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("postgres").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("PostgreSQL's server is missing: run scripts/setup.sh (Debian package postgresql)")
}

fn id_of(user: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, user]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn is_root() -> bool {
    id_of(&std::env::var("USER").unwrap_or_default(), "-u") == Some(0)
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgServer {
    /// Makes a cluster and starts it (a few seconds).
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let run_as = if is_root() {
            let uid = id_of(PG_USER, "-u").unwrap_or_else(|| {
                panic!("user {PG_USER} is missing: run scripts/setup.sh (PostgreSQL refuses root)")
            });
            let gid = id_of(PG_USER, "-g").expect("its group");
            Some((uid, gid))
        } else {
            None
        };
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = std::env::temp_dir().join(format!(
            "warden-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("temporary directory");
        let dir = base.join("data");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&base, Some(uid), Some(gid)).expect("chown");
        }
        let mut s = PgServer {
            child: None,
            dir: base,
            bin,
            port: free_port(),
            run_as,
            started_once: false,
        };
        let out = s
            .command("initdb")
            .arg("-D")
            .arg(&dir)
            .args(["-U", "warden", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.run();
        s
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            c.uid(uid).gid(gid);
        }
        c.current_dir(&self.dir);
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log (its stderr), kept in the cluster's directory.
    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The end of the server's log, for a failure's message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Starts the server (again) on its port and waits until it answers.
    /// A first start whose port was taken meanwhile (another process may
    /// bind the port between our look and the server's) moves to a fresh
    /// one; a restart keeps its port (its clients know it) and tries again
    /// for a while.
    pub fn run(&mut self) {
        let first = self.child.is_none() && !self.started_once;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_run(deadline) {
                Ok(()) => {
                    self.started_once = true;
                    return;
                }
                Err(why) => {
                    let port_taken = why.contains("could not bind")
                        || why.contains("Address already in use")
                        || why.contains("could not create any TCP/IP sockets");
                    // A first start tries again on any failure (the log
                    // of the last one is shown); a restart only when its
                    // port is busy.
                    if tries >= 5 || Instant::now() >= deadline || !(port_taken || first) {
                        panic!("postgres did not start (try {tries}): {why}");
                    }
                    if first {
                        self.port = free_port();
                    } else {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            }
        }
    }

    fn try_run(&mut self, deadline: Instant) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("its log: {e}"))?;
        if let Some((uid, gid)) = self.run_as {
            let _ = std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid));
        }
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        self.child = Some(child);
        loop {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "postgres exited at start on port {}: {status}; its log:\n{}",
                        self.port,
                        self.log_tail()
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "postgres did not answer in 30 s; its log:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown: sessions ended, then the server).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Makes database `name` (empty) and gives its URL.
    pub fn database(&self, name: &str) -> String {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
            "a plain database name"
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        self.url(name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://warden@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` in database `db` with psql; its output (unaligned, no
    /// headers).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "warden",
            ])
            .args([
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The directory of the server's socket and data (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's binaries (`pg_dump`, `psql`, …).
    pub fn bin(&self, program: &str) -> PathBuf {
        self.bin.join(program)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
