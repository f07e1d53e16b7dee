//! SIEM export: the audit trail sent to a syslog receiver as it is written
//! (RFC 5424 messages, RFC 6587 octet counting over TCP, or TLS as RFC 5425
//! has it), at least once.
//!
//! - **The trail is the spool.** The exporter reads the audit files the
//!   writer writes (the current one and those rotated aside, which are
//!   named by the sequence number that follows them), so a receiver that is
//!   down costs no memory and no second copy on disk. The `seq` of the
//!   next record to send is kept in `<state dir>/export-syslog.seq`, and the
//!   export resumes there when the gateway restarts or is upgraded.
//! - **Bounded.** When the unsent part of the trail grows past `max_lag`
//!   bytes, the oldest records are skipped and counted
//!   (`warden_audit_export_records_total{result="dropped"}`), so an outage
//!   of days is not replayed.
//! - **At least once.** TCP accepts bytes the receiver never reads when it
//!   dies; so the records of the last seconds on a connection are kept, and
//!   sent again on the next one, marked (`resent="1"` in the `warden`
//!   structured data). The `seq` of each record lets a receiver drop what
//!   it already has.
//! - **Metrics.** `warden_audit_export_records_total{result}` (`sent`,
//!   `resent`, `dropped`), `warden_audit_export_lag_bytes`,
//!   `warden_audit_export_connected`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{register_int_counter_vec, register_int_gauge, IntCounterVec, IntGauge};
use warden_config::model::SyslogExport;

/// How long records stay ready to be sent again after a connection fails.
const RESEND_WINDOW: Duration = Duration::from_secs(5);
/// The most records kept ready to be sent again.
const RESEND_MAX: usize = 10_000;
/// The structured data's id: the documentation enterprise number of
/// RFC 5612 (Warden has none of its own).
const SD_ID: &str = "warden@32473";

struct ExportMetrics {
    records: IntCounterVec,
    lag: IntGauge,
    connected: IntGauge,
}

#[allow(clippy::expect_used)]
fn metrics() -> &'static ExportMetrics {
    static M: OnceLock<ExportMetrics> = OnceLock::new();
    M.get_or_init(|| ExportMetrics {
        records: register_int_counter_vec!(
            "warden_audit_export_records_total",
            "Audit records exported to the SIEM, by result (sent, resent, dropped)",
            &["result"]
        )
        .expect("registers once"),
        lag: register_int_gauge!(
            "warden_audit_export_lag_bytes",
            "Bytes of the audit trail written but not yet exported"
        )
        .expect("registers once"),
        connected: register_int_gauge!(
            "warden_audit_export_connected",
            "1 while the exporter holds a connection to the SIEM receiver"
        )
        .expect("registers once"),
    })
}

/// A running exporter; stops (after a last attempt to send) when dropped
/// through [`Exporter::stop`].
pub struct Exporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Starts exporting the trail at `audit` (its current file) to `cfg`'s
    /// receiver; the cursor is kept under `state_dir`.
    pub fn start(
        cfg: SyslogExport,
        audit: PathBuf,
        state_dir: &Path,
        hostname: String,
    ) -> std::io::Result<Exporter> {
        std::fs::create_dir_all(state_dir)?;
        let tls = match &cfg.tls {
            Some(t) => Some(tls_config(&t.ca_file)?),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut run = Run {
            cursor_path: state_dir.join("export-syslog.seq"),
            next: 0,
            audit,
            cfg,
            tls,
            hostname,
            conn: None,
            window: VecDeque::new(),
            stop: stop.clone(),
        };
        run.next = run.load_cursor();
        metrics();
        let thread = std::thread::Builder::new()
            .name("audit-export".into())
            .spawn(move || run.run())?;
        Ok(Exporter {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the exporter after what it has read is sent (or it gives up).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tls_config(ca_file: &Path) -> std::io::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let bad =
        |e: &dyn std::fmt::Display| std::io::Error::other(format!("{}: {e}", ca_file.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(std::io::Error::other(format!(
            "{}: no certificate",
            ca_file.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A connection to the receiver.
enum Conn {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Tcp(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(b),
            Conn::Tls(s) => s.write_all(b),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }

    /// Whether the receiver closed its side: it never sends, so anything
    /// readable (an end of stream, an alert) means the connection is over.
    fn closed(&self) -> bool {
        let s = self.tcp();
        if s.set_nonblocking(true).is_err() {
            return true;
        }
        let mut b = [0u8; 1];
        let gone = match s.peek(&mut b) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        gone || s.set_nonblocking(false).is_err()
    }
}

/// A record sent on the current connection, kept to be sent again.
struct Sent {
    at: Instant,
    seq: u64,
    line: Vec<u8>,
}

struct Run {
    cursor_path: PathBuf,
    /// The `seq` of the next record to send (records are numbered from 0).
    next: u64,
    audit: PathBuf,
    cfg: SyslogExport,
    tls: Option<Arc<rustls::ClientConfig>>,
    hostname: String,
    conn: Option<Conn>,
    window: VecDeque<Sent>,
    stop: Arc<AtomicBool>,
}

/// The trail's files in order: those rotated aside (`<path>.<next seq>`,
/// by that number), then the current one.
fn trail(audit: &Path) -> Vec<(u64, PathBuf)> {
    let dir = audit
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(name) = audit.file_name().and_then(|n| n.to_str()) else {
        return vec![(u64::MAX, audit.to_owned())];
    };
    let prefix = format!("{name}.");
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let digits = n.strip_prefix(&prefix)?;
            (digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| Some((digits.parse().ok()?, e.path())))
                .flatten()
        })
        .collect();
    files.sort();
    files.push((u64::MAX, audit.to_owned()));
    files
}

/// The `seq` a chained audit line starts with (`{"seq":N,…`).
fn seq_of(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

impl Run {
    fn load_cursor(&self) -> u64 {
        std::fs::read_to_string(&self.cursor_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn save_cursor(&self) {
        let tmp = self.cursor_path.with_extension("seq.tmp");
        if std::fs::write(&tmp, format!("{}\n", self.next)).is_ok() {
            let _ = std::fs::rename(&tmp, &self.cursor_path);
        }
    }

    fn run(mut self) {
        let m = metrics();
        let mut saved = self.next;
        let mut last_save = Instant::now();
        'files: loop {
            // The file that holds the next record to send.
            let files = trail(&self.audit);
            let Some((limit, path)) = files.into_iter().find(|(after, _)| *after > self.next)
            else {
                return;
            };
            let Ok(f) = std::fs::File::open(&path) else {
                if self.stopping() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            let mut r = BufReader::with_capacity(256 * 1024, f);
            let mut offset = 0u64;
            let mut line = Vec::new();
            loop {
                line.clear();
                let n: usize = r.read_until(b'\n', &mut line).unwrap_or_default();
                if n == 0 || line.last() != Some(&b'\n') {
                    // The end of what is written: a partial line is read
                    // again whole.
                    if n > 0 && r.seek(SeekFrom::Start(offset)).is_err() {
                        continue 'files;
                    }
                    if saved != self.next
                        && (last_save.elapsed() >= Duration::from_millis(200) || self.stopping())
                    {
                        if let Some(c) = self.conn.as_mut() {
                            let _ = c.flush();
                        }
                        self.save_cursor();
                        saved = self.next;
                        last_save = Instant::now();
                    }
                    if limit != u64::MAX {
                        // A rotated file read to its end: on to the next.
                        self.next = self.next.max(limit);
                        continue 'files;
                    }
                    let rotated = trail(&self.audit)
                        .iter()
                        .any(|(after, _)| *after != u64::MAX && *after > self.next);
                    m.lag.set(self.lag(&path, offset) as i64);
                    if rotated {
                        continue 'files;
                    }
                    if self.stopping() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                offset += n as u64;
                let Some(seq) = seq_of(&line) else {
                    continue;
                };
                if seq < self.next {
                    continue;
                }
                let lag = self.lag(&path, offset);
                m.lag.set(lag as i64);
                if lag > self.cfg.max_lag {
                    // Too far behind: the oldest are skipped, counted.
                    m.records.with_label_values(&["dropped"]).inc();
                    self.next = seq + 1;
                    continue;
                }
                line.pop();
                if !self.deliver(seq, &line) {
                    return;
                }
                self.next = seq + 1;
                m.records.with_label_values(&["sent"]).inc();
            }
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Bytes of the trail after `offset` in `path` (and in any later file).
    fn lag(&self, path: &Path, offset: u64) -> u64 {
        let mut behind = 0;
        let mut after = false;
        for (_, p) in trail(&self.audit) {
            let len = std::fs::metadata(&p).map_or(0, |m| m.len());
            if p == path {
                behind += len.saturating_sub(offset);
                after = true;
            } else if after {
                behind += len;
            }
        }
        behind
    }

    /// Sends one record, reconnecting (and sending the recent ones again)
    /// until it leaves. `false`: the exporter is stopping.
    fn deliver(&mut self, seq: u64, line: &[u8]) -> bool {
        let m = metrics();
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.conn.as_ref().is_some_and(Conn::closed) {
                self.conn = None;
                m.connected.set(0);
            }
            if self.conn.is_none() {
                match self.connect() {
                    Ok(mut c) => {
                        // What the last connection may have lost.
                        let mut ok = true;
                        for s in &self.window {
                            if c.write_all(&self.frame(s.seq, &s.line, true)).is_err() {
                                ok = false;
                                break;
                            }
                            m.records.with_label_values(&["resent"]).inc();
                        }
                        if ok {
                            self.conn = Some(c);
                            m.connected.set(1);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(receiver = %self.cfg.address, "audit export: {e}");
                    }
                }
            }
            let framed = self.frame(seq, line, false);
            if let Some(c) = self.conn.as_mut() {
                if c.write_all(&framed).is_ok() {
                    let now = Instant::now();
                    self.window.push_back(Sent {
                        at: now,
                        seq,
                        line: line.to_vec(),
                    });
                    while self.window.len() > RESEND_MAX
                        || self
                            .window
                            .front()
                            .is_some_and(|s| now - s.at > RESEND_WINDOW)
                    {
                        self.window.pop_front();
                    }
                    return true;
                }
                self.conn = None;
                m.connected.set(0);
            }
            if self.stopping() {
                return false;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn connect(&self) -> std::io::Result<Conn> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&self.cfg.address)?
            .next()
            .ok_or_else(|| std::io::Error::other("the address names no host"))?;
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        match (&self.tls, &self.cfg.tls) {
            (Some(cfg), Some(t)) => {
                let name = rustls::pki_types::ServerName::try_from(t.server_name.clone())
                    .map_err(std::io::Error::other)?;
                let conn = rustls::ClientConnection::new(cfg.clone(), name)
                    .map_err(std::io::Error::other)?;
                let mut tls = rustls::StreamOwned::new(conn, s);
                // The handshake now, so a bad certificate is an error here.
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock)?;
                }
                Ok(Conn::Tls(Box::new(tls)))
            }
            _ => Ok(Conn::Tcp(s)),
        }
    }

    /// One record as an RFC 5424 message, octet-counted (RFC 6587).
    fn frame(&self, seq: u64, line: &[u8], resent: bool) -> Vec<u8> {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            ts: Option<&'a str>,
            #[serde(borrow)]
            outcome: Option<&'a str>,
            #[serde(borrow)]
            direction: Option<&'a str>,
        }
        let head: Option<Head<'_>> = serde_json::from_slice(line).ok();
        let outcome = head.as_ref().and_then(|h| h.outcome).unwrap_or("-");
        // Severity (RFC 5424 6.2.1) from the decision.
        let severity = match outcome {
            "failed" => 3,
            "forwarded" | "mutated" => 6,
            _ if head.as_ref().and_then(|h| h.direction) == Some("approval") => 5,
            _ => 4,
        };
        let pri = u32::from(self.cfg.facility) * 8 + severity;
        let ts = head
            .as_ref()
            .and_then(|h| h.ts)
            .filter(|t| t.len() <= 64 && t.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or("-");
        let sd_outcome: String = outcome
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        let msg = format!(
            "<{pri}>1 {ts} {} {} {} audit [{SD_ID} seq=\"{seq}\" outcome=\"{sd_outcome}\"{}] ",
            self.hostname,
            self.cfg.app_name,
            std::process::id(),
            if resent { " resent=\"1\"" } else { "" },
        );
        let mut out = Vec::with_capacity(msg.len() + line.len() + 12);
        out.extend_from_slice((msg.len() + line.len()).to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(msg.as_bytes());
        out.extend_from_slice(line);
        out
    }
}

/// The hostname field: the host's name as RFC 5424 allows it (printable
/// ASCII, at most 255), else `-`.
pub fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| {
            let mut s = String::new();
            std::fs::File::open("/etc/hostname")
                .ok()?
                .read_to_string(&mut s)
                .ok()?;
            Some(s)
        })
        .unwrap_or_default();
    let name = name.trim();
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        "-".into()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::seq_of;

    #[test]
    fn the_seq_is_read_from_the_start_of_a_chained_line() {
        assert_eq!(seq_of(b"{\"seq\":42,\"prev\":\"00\"}"), Some(42));
        assert_eq!(seq_of(b"{\"prev\":\"00\",\"seq\":42}"), None);
        assert_eq!(seq_of(b"{\"seq\":x}"), None);
    }
}
