//! Local MCP servers spoken to over stdio (`stdio:`): the process, its
//! environment and its limits.

use std::time::Duration;

use crate::error::Problems;
use crate::fields::duration;
use crate::raw;
use crate::secret::{secret_ref, Secret};

/// A local MCP server process (see the gateway's `stdio`).
#[derive(Debug, Clone)]
pub struct Stdio {
    pub command: String,
    pub args: Vec<String>,
    /// The whole environment (secrets resolved).
    pub env: Vec<(String, Secret)>,
    pub cwd: Option<String>,
    /// One process for every session (a stateless server).
    pub shared: bool,
    pub max_processes: u32,
    pub max_per_principal: u32,
    /// (uid, gid) to run as.
    pub run_as: Option<(u32, u32)>,
    pub idle_timeout: Duration,
    pub cpu: Duration,
    pub memory_mb: u64,
    pub open_files: u64,
}

impl Stdio {
    /// What identifies a process's setup: a changed bundle that keeps it
    /// keeps the processes.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [&self.command, self.cwd.as_deref().unwrap_or("")]
            .into_iter()
            .chain(self.args.iter().map(String::as_str))
        {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        for (k, v) in &self.env {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
            h.update(Sha256::digest(v.expose().as_bytes()));
        }
        h.update([u8::from(self.shared)]);
        h.update(self.max_processes.to_be_bytes());
        h.update(self.max_per_principal.to_be_bytes());
        if let Some((u, g)) = self.run_as {
            h.update(u.to_be_bytes());
            h.update(g.to_be_bytes());
        }
        h.update(self.idle_timeout.as_millis().to_be_bytes());
        h.update(self.cpu.as_secs().to_be_bytes());
        h.update(self.memory_mb.to_be_bytes());
        h.update(self.open_files.to_be_bytes());
        hex::encode(h.finalize())
    }
}

pub(super) fn stdio(
    raw: &raw::StdioConfig,
    root: &std::path::Path,
    base: &str,
    p: &mut Problems,
) -> Option<Stdio> {
    if !raw.command.starts_with('/') {
        p.push(
            format!("{base}.command"),
            "must be an absolute path (no PATH is searched: the process gets only the bundle's environment)",
        );
        return None;
    }
    let mut env = Vec::new();
    for (k, v) in &raw.env {
        if k.is_empty() || k.contains('=') || k.bytes().any(|b| b == 0) {
            p.push(
                format!("{base}.env.{k}"),
                "is not an environment variable name",
            );
            continue;
        }
        let value = match v {
            raw::EnvValueConfig::Text(t) => Secret::new(t.clone()),
            raw::EnvValueConfig::Secret(r) => match secret_ref(
                r.env.as_deref(),
                r.file.as_deref(),
                root,
                &format!("{base}.env.{k}"),
                p,
            ) {
                Some(s) => s,
                None => continue,
            },
        };
        if value.expose().bytes().any(|b| b == 0) {
            p.push(format!("{base}.env.{k}"), "must not contain NUL");
            continue;
        }
        env.push((k.clone(), value));
    }
    let shared = match raw.mode.as_deref() {
        None | Some("session") => false,
        Some("shared") => true,
        Some(m) => {
            p.push(
                format!("{base}.mode"),
                format!("`{m}` is not `session` or `shared`"),
            );
            false
        }
    };
    let limits = raw.limits.clone().unwrap_or_default();
    let max_processes = raw.max_processes.unwrap_or(16);
    if max_processes == 0 || max_processes > 4096 {
        p.push(
            format!("{base}.max_processes"),
            "must be between 1 and 4096",
        );
    }
    let max_per_principal = raw.max_per_principal.unwrap_or(4);
    if max_per_principal == 0 {
        p.push(
            format!("{base}.max_per_principal"),
            "must be greater than zero",
        );
    }
    let memory_mb = limits.memory_mb.unwrap_or(2048);
    if !(16..=1 << 20).contains(&memory_mb) {
        p.push(
            format!("{base}.limits.memory_mb"),
            "must be between 16 and 1048576",
        );
    }
    Some(Stdio {
        command: raw.command.clone(),
        args: raw.args.clone(),
        env,
        cwd: raw.cwd.clone(),
        shared,
        max_processes: max_processes.clamp(1, 4096),
        max_per_principal: max_per_principal.max(1),
        run_as: raw.run_as.map(|r| (r.uid, r.gid)),
        idle_timeout: duration(
            p,
            &format!("{base}.idle_timeout"),
            &raw.idle_timeout,
            Duration::from_secs(600),
        ),
        cpu: duration(
            p,
            &format!("{base}.limits.cpu"),
            &limits.cpu,
            Duration::from_secs(3600),
        ),
        memory_mb: memory_mb.clamp(16, 1 << 20),
        open_files: limits.open_files.unwrap_or(256).max(16),
    })
}
