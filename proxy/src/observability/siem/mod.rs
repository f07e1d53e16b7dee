//! SIEM export: the audit trail sent, as it is written and at least once,
//! to a syslog receiver (`syslog`: RFC 5424 over TCP or TLS) and to an HTTP
//! receiver (`http`: OCSF API Activity events, or Splunk HEC).
//!
//! - **The trail is the spool.** Each exporter reads the audit files the
//!   writer writes (the current one and those rotated aside, which are
//!   named by the sequence number that follows them), so a receiver that is
//!   down costs no memory and no second copy on disk. The `seq` of the next
//!   record to send is kept in `<state dir>/export-<name>.seq`, and the
//!   export resumes there when the gateway restarts or is upgraded; it
//!   moves only once what was read is delivered.
//! - **Bounded.** When the unsent part of the trail grows past `max_lag`
//!   bytes, the oldest records are skipped and counted
//!   (`warden_audit_export_records_total{result="dropped"}`), so an outage
//!   of days is not replayed.
//! - **At least once, duplicates marked.** What may have been lost is sent
//!   again, marked (see each sink); the `seq` of each record lets a
//!   receiver drop what it already has.
//! - **Metrics**, by exporter: `warden_audit_export_records_total{result}`
//!   (`sent`, `resent`, `dropped`), `warden_audit_export_lag_bytes`,
//!   `warden_audit_export_connected`.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};

mod http;
mod syslog;

/// Where an exporter delivers records.
trait Sink: Send {
    /// Sends (or queues) one record. `false`: the exporter is stopping.
    fn deliver(&mut self, seq: u64, line: &[u8], stop: &dyn Fn() -> bool) -> bool;
    /// Nothing more to read for now: whatever is queued is delivered.
    /// `false`: the exporter is stopping.
    fn idle(&mut self, stop: &dyn Fn() -> bool) -> bool;
}

struct ExportMetrics {
    records: IntCounterVec,
    lag: IntGaugeVec,
    connected: IntGaugeVec,
}

#[allow(clippy::expect_used)]
fn metrics() -> &'static ExportMetrics {
    static M: OnceLock<ExportMetrics> = OnceLock::new();
    M.get_or_init(|| ExportMetrics {
        records: register_int_counter_vec!(
            "warden_audit_export_records_total",
            "Audit records exported to a SIEM, by exporter and result (sent, resent, dropped)",
            &["exporter", "result"]
        )
        .expect("registers once"),
        lag: register_int_gauge_vec!(
            "warden_audit_export_lag_bytes",
            "Bytes of the audit trail written but not yet exported, by exporter",
            &["exporter"]
        )
        .expect("registers once"),
        connected: register_int_gauge_vec!(
            "warden_audit_export_connected",
            "1 while the exporter's last delivery to its receiver succeeded",
            &["exporter"]
        )
        .expect("registers once"),
    })
}

/// A running exporter.
pub struct Exporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Exports the trail at `audit` (its current file) to a syslog receiver.
    pub fn syslog(
        cfg: warden_config::model::SyslogExport,
        audit: PathBuf,
        state_dir: &Path,
        hostname: String,
    ) -> std::io::Result<Exporter> {
        let max_lag = cfg.max_lag;
        let sink = syslog::Syslog::new(cfg, hostname)?;
        Exporter::start("syslog", Box::new(sink), max_lag, audit, state_dir)
    }

    /// Exports the trail at `audit` to an HTTP receiver (OCSF or HEC).
    pub fn http(
        cfg: warden_config::model::HttpExport,
        audit: PathBuf,
        state_dir: &Path,
        hostname: String,
    ) -> std::io::Result<Exporter> {
        let max_lag = cfg.max_lag;
        let sink = http::Http::new(cfg, hostname)?;
        Exporter::start("http", Box::new(sink), max_lag, audit, state_dir)
    }

    fn start(
        name: &'static str,
        sink: Box<dyn Sink>,
        max_lag: u64,
        audit: PathBuf,
        state_dir: &Path,
    ) -> std::io::Result<Exporter> {
        std::fs::create_dir_all(state_dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut run = Run {
            name,
            cursor_path: state_dir.join(format!("export-{name}.seq")),
            next: 0,
            audit,
            max_lag,
            sink,
            stop: stop.clone(),
        };
        run.next = run.load_cursor();
        metrics();
        let thread = std::thread::Builder::new()
            .name(format!("audit-export-{name}"))
            .spawn(move || run.run())?;
        Ok(Exporter {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the exporter once what it has read is delivered (or it gives up).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Run {
    name: &'static str,
    cursor_path: PathBuf,
    /// The `seq` of the next record to send (records are numbered from 0).
    next: u64,
    audit: PathBuf,
    max_lag: u64,
    sink: Box<dyn Sink>,
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
                    // What was read is delivered before the cursor moves.
                    let stop = self.stop.clone();
                    if !self.sink.idle(&|| stop.load(Ordering::Relaxed)) {
                        return;
                    }
                    if saved != self.next
                        && (last_save.elapsed() >= Duration::from_millis(200) || self.stopping())
                    {
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
                    m.lag
                        .with_label_values(&[self.name])
                        .set(self.lag(&path, offset) as i64);
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
                m.lag.with_label_values(&[self.name]).set(lag as i64);
                if lag > self.max_lag {
                    // Too far behind: the oldest are skipped, counted.
                    m.records.with_label_values(&[self.name, "dropped"]).inc();
                    self.next = seq + 1;
                    continue;
                }
                line.pop();
                let stop = self.stop.clone();
                if !self
                    .sink
                    .deliver(seq, &line, &|| stop.load(Ordering::Relaxed))
                {
                    return;
                }
                self.next = seq + 1;
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
