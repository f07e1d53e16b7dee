//! SIEM export: the audit trail sent, as it is written and at least once,
//! to a syslog receiver (`syslog`: RFC 5424 over TCP or TLS), to an HTTP
//! receiver (`http`: OCSF API Activity events, or Splunk HEC) and to the
//! control agent the gateway runs on (`agent`: the raw lines, for the
//! agent's audit store).
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
//!   (`sent`, `resent`, `dropped`, `unreadable`, and `stubbed` for the
//!   agent: records sent as a stub), `warden_audit_export_lag_bytes`,
//!   `warden_audit_export_connected`, `warden_audit_export_pending_bytes`.
//! - **One exporter per cursor**: a lock on `export-<name>.lock`, so during
//!   a binary upgrade the new process's exporter starts where the old one
//!   stopped.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};

mod agent;
mod http;
mod syslog;

pub use agent::AgentTarget;

/// Where an exporter delivers records. `stop` is asked between attempts
/// while a receiver is down (whether the exporter is stopping); each ask
/// also refreshes the exporter's lag figure, which grows meanwhile.
trait Sink: Send {
    /// Sends (or queues) one record; `resent`: it may have been delivered
    /// before (it is marked so). `false`: the exporter is stopping.
    fn deliver(&mut self, seq: u64, line: &[u8], resent: bool, stop: &dyn Fn() -> bool) -> bool;
    /// Nothing more to read for now: whatever is queued is delivered.
    /// `false`: the exporter is stopping.
    fn idle(&mut self, stop: &dyn Fn() -> bool) -> bool;
    /// The oldest record sent or queued that is not known delivered (the
    /// cursor resumes there after a restart, marking what it sends again).
    fn pending_from(&self) -> Option<u64>;
}

struct ExportMetrics {
    records: IntCounterVec,
    lag: IntGaugeVec,
    connected: IntGaugeVec,
    /// Bytes held in memory to be sent (again): the syslog window, the
    /// HTTP batch (each bounded by a constant of its sink).
    pending: IntGaugeVec,
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
        pending: register_int_gauge_vec!(
            "warden_audit_export_pending_bytes",
            "Bytes of records an exporter holds in memory until they are known delivered",
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

    /// Ships the raw lines of the trail at `audit` to the control agent.
    pub fn agent(
        target: AgentTarget,
        audit: PathBuf,
        state_dir: &Path,
    ) -> std::io::Result<Exporter> {
        let sink = agent::Agent::new(target)?;
        Exporter::start("agent", Box::new(sink), 1 << 30, audit, state_dir)
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
        let run = Run {
            name,
            cursor_path: state_dir.join(format!("export-{name}.seq")),
            next: 0,
            audit,
            max_lag,
            sink,
            stop: stop.clone(),
            ahead: 0,
            resent_upto: 0,
        };
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
    /// What the saved cursor says may have been sent (exclusive): nothing
    /// at or past it is sent before the cursor is saved again.
    ahead: u64,
    /// Up to where what is sent may be a duplicate (from the cursor read
    /// at start): kept in every cursor saved until it is passed, so that a
    /// second crash still marks it.
    resent_upto: u64,
}

/// Records the exporter may send past its saved cursor before it saves
/// again: after a crash, those are sent again marked (some perhaps never
/// sent before: a mark says "may be a duplicate").
const RESERVE: u64 = 4096;

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
    /// The cursor: where to resume, and up to where what is sent again may
    /// be a duplicate (`<resend from> <next> [<sent before>]`: the last, when
    /// present, bounds what a process that crashed may have sent past
    /// `next`; an older file holds `<next>`).
    fn load_cursor(&self) -> (u64, u64) {
        let text = match std::fs::read_to_string(&self.cursor_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (0, 0),
            Err(e) => {
                tracing::error!(cursor = %self.cursor_path.display(), "audit export: {e}; exporting the trail again from its start, marked resent");
                return (0, u64::MAX);
            }
        };
        let nums: Vec<Option<u64>> = text.split_whitespace().map(|w| w.parse().ok()).collect();
        match nums.as_slice() {
            [Some(next)] => (*next, *next),
            [Some(from), Some(next)] if from <= next => (*from, *next),
            [Some(from), Some(next), Some(ahead)] if from <= next && next <= ahead => {
                (*from, *ahead)
            }
            _ => {
                tracing::error!(cursor = %self.cursor_path.display(), "audit export: the cursor is unreadable; exporting the trail again from its start, marked resent");
                (0, u64::MAX)
            }
        }
    }

    /// Saves where to resume: the oldest record not known delivered (the
    /// sink's pending ones are sent again, marked, after a restart), and,
    /// with `reserve`, how far past it the exporter may send before it
    /// saves again ([`RESERVE`]): after a crash every record up to there
    /// is sent again marked. A stop saves without a reservation.
    fn save_cursor(&mut self, reserve: bool) {
        let from = self.sink.pending_from().unwrap_or(self.next).min(self.next);
        let ahead = if reserve {
            self.next.saturating_add(RESERVE)
        } else {
            self.next
        }
        .max(self.resent_upto);
        // Set even when the save fails (said below): the exporter goes on
        // rather than retrying the disk on every record.
        self.ahead = ahead;
        let text = if ahead == self.next {
            format!("{from} {}\n", self.next)
        } else {
            format!("{from} {} {ahead}\n", self.next)
        };
        let tmp = self
            .cursor_path
            .with_extension(format!("seq.{}.tmp", std::process::id()));
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            std::io::Write::write_all(&mut f, text.as_bytes())?;
            f.sync_all()
        });
        if written.is_ok() && std::fs::rename(&tmp, &self.cursor_path).is_ok() {
            if let Some(dir) = self.cursor_path.parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
        } else {
            let _ = std::fs::remove_file(&tmp);
            tracing::error!(cursor = %self.cursor_path.display(), "audit export: cannot save the cursor; after a crash, records may be sent again unmarked");
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Waits for the cursor's lock: during a binary upgrade the old
    /// process's exporter finishes first. `false`: stopping.
    fn lock(&self) -> Option<std::fs::File> {
        let path = self.cursor_path.with_extension("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ok()?;
        loop {
            match f.try_lock() {
                Ok(()) => return Some(f),
                Err(std::fs::TryLockError::WouldBlock) if !self.stopping() => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                _ => return None,
            }
        }
    }

    fn run(mut self) {
        let Some(_lock) = self.lock() else {
            return;
        };
        self.export();
        // Stopped, not crashed: nothing was sent past the cursor saved now
        // (a crash leaves the reservation, and what it covers is marked).
        self.save_cursor(false);
    }

    fn export(&mut self) {
        let (from, resent_upto) = self.load_cursor();
        self.next = from;
        self.resent_upto = resent_upto;
        let m = metrics();
        let mut saved = (from, resent_upto);
        let mut last_save = Instant::now();
        // Measured here, and between a sink's attempts (`Waiting`).
        let lag = RefCell::new(Lag::default());
        // A gap in the trail is looked for once before it is counted lost.
        let mut gap_rescanned = false;
        'files: loop {
            // The file that holds the next record to send.
            let Some((limit, path)) = trail(&self.audit)
                .into_iter()
                .find(|(after, _)| *after > self.next)
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
            let opened = file_id(&f);
            let mut r = BufReader::with_capacity(256 * 1024, f);
            let mut offset = 0u64;
            let mut line = Vec::new();
            // The seqs this pass over the file read (a trail that starts
            // again lower than the cursor is found by them).
            let mut seen: Option<(u64, u64)> = None;
            let mut draining = false;
            loop {
                line.clear();
                let n = match r.read_until(b'\n', &mut line) {
                    Ok(n) => n,
                    Err(e) => {
                        // Read again from the last whole line.
                        tracing::warn!("audit export: reading {}: {e}", path.display());
                        if r.seek(SeekFrom::Start(offset)).is_err() || self.stopping() {
                            continue 'files;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                };
                if n == 0 || line.last() != Some(&b'\n') {
                    // The end of what is written: a partial line is read
                    // again whole.
                    if n > 0 && r.seek(SeekFrom::Start(offset)).is_err() {
                        continue 'files;
                    }
                    // What was read is delivered before the cursor moves.
                    if !self.idle(&lag, &path, offset) {
                        return;
                    }
                    let now = (self.sink.pending_from().unwrap_or(self.next), self.next);
                    if saved != now
                        && (last_save.elapsed() >= Duration::from_millis(200) || self.stopping())
                    {
                        self.save_cursor(true);
                        saved = now;
                        last_save = Instant::now();
                    }
                    if limit != u64::MAX {
                        // A rotated file read to its end: on to the next.
                        self.next = self.next.max(limit);
                        continue 'files;
                    }
                    m.lag
                        .with_label_values(&[self.name])
                        .set(lag.borrow_mut().get(&self.audit, &path, offset, true) as i64);
                    // Rotated: the file open is no longer the trail's
                    // current one. Read it to its end once more (the
                    // writer flushed before it renamed), then move on.
                    let current = std::fs::metadata(&self.audit).ok().map(|md| id_of(&md));
                    if current.is_some() && current != opened {
                        if draining {
                            continue 'files;
                        }
                        draining = true;
                        continue;
                    }
                    // The trail starts again below the cursor (a new file,
                    // one moved aside): what it holds now is exported.
                    if let Some((first, last)) = seen {
                        if last + 1 < self.next {
                            tracing::warn!(
                                cursor = self.next,
                                trail_ends_at = last,
                                "audit export: the trail restarted below the cursor; exporting it from seq {first}"
                            );
                            self.next = first;
                            continue 'files;
                        }
                    }
                    if self.stopping() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                offset += n as u64;
                let Some(seq) = seq_of(&line) else {
                    m.records
                        .with_label_values(&[self.name, "unreadable"])
                        .inc();
                    continue;
                };
                seen = Some(seen.map_or((seq, seq), |(f, l)| (f.min(seq), l.max(seq))));
                if seq < self.next {
                    continue;
                }
                if seq > self.next {
                    // Records missing between: the writer may have rotated
                    // between the listing and the open; look once more, then
                    // count what is really gone.
                    if !gap_rescanned {
                        gap_rescanned = true;
                        continue 'files;
                    }
                    tracing::warn!(
                        from = self.next,
                        to = seq - 1,
                        "audit export: records missing from the trail"
                    );
                    m.records
                        .with_label_values(&[self.name, "dropped"])
                        .inc_by(seq - self.next);
                }
                gap_rescanned = false;
                let behind = lag.borrow_mut().get(&self.audit, &path, offset, false);
                m.lag.with_label_values(&[self.name]).set(behind as i64);
                if behind > self.max_lag {
                    // Too far behind: the oldest are skipped, counted.
                    m.records.with_label_values(&[self.name, "dropped"]).inc();
                    self.next = seq.saturating_add(1);
                    continue;
                }
                line.pop();
                // Past what the saved cursor says may have been sent: saved
                // again first, so that a crash never leaves a sent record
                // beyond it (it would be sent again unmarked).
                if seq >= self.ahead {
                    self.save_cursor(true);
                    saved = (self.sink.pending_from().unwrap_or(self.next), self.next);
                    last_save = Instant::now();
                }
                let waiting = Waiting {
                    name: self.name,
                    audit: &self.audit,
                    stop: &self.stop,
                    lag: &lag,
                    path: &path,
                    offset,
                };
                if !self
                    .sink
                    .deliver(seq, &line, seq < resent_upto, &|| waiting.ask())
                {
                    return;
                }
                self.next = seq.saturating_add(1);
                // During a long catch-up too, the cursor follows, and a stop
                // is heard.
                if last_save.elapsed() >= Duration::from_secs(1) || self.stopping() {
                    if !self.idle(&lag, &path, offset) {
                        return;
                    }
                    self.save_cursor(true);
                    saved = (self.sink.pending_from().unwrap_or(self.next), self.next);
                    last_save = Instant::now();
                    if self.stopping() {
                        return;
                    }
                }
            }
        }
    }

    /// Lets the sink deliver what it holds; the reader is at `offset` of
    /// `path`. `false`: stopping.
    fn idle(&mut self, lag: &RefCell<Lag>, path: &Path, offset: u64) -> bool {
        let waiting = Waiting {
            name: self.name,
            audit: &self.audit,
            stop: &self.stop,
            lag,
            path,
            offset,
        };
        self.sink.idle(&|| waiting.ask())
    }
}

/// What a sink asks between its attempts to reach a receiver: whether
/// the exporter is stopping. Each ask also measures the lag again (at
/// most once a second), so that `warden_audit_export_lag_bytes` grows
/// while the receiver is down rather than keeping the figure of the last
/// record read.
struct Waiting<'a> {
    name: &'static str,
    audit: &'a Path,
    stop: &'a AtomicBool,
    lag: &'a RefCell<Lag>,
    /// Where the reader is: what follows is not exported yet.
    path: &'a Path,
    offset: u64,
}

impl Waiting<'_> {
    fn ask(&self) -> bool {
        if let Ok(mut lag) = self.lag.try_borrow_mut() {
            let behind = lag.get(self.audit, self.path, self.offset, false);
            metrics()
                .lag
                .with_label_values(&[self.name])
                .set(behind as i64);
        }
        self.stop.load(Ordering::Relaxed)
    }
}

/// How far behind the export is, in bytes of the trail after the reader,
/// measured at most once a second (it lists the trail's files). Between
/// two measures, what the reader went past since the last is taken off:
/// a catch-up that skips the oldest records stops skipping once what is
/// left is within `max_lag`, not a second later, so the newest records
/// are sent.
#[derive(Default)]
struct Lag {
    /// When it was measured, with the reader in which file, at which offset.
    at: Option<(Instant, PathBuf, u64)>,
    bytes: u64,
}

impl Lag {
    fn get(&mut self, audit: &Path, path: &Path, offset: u64, now: bool) -> u64 {
        if let Some((t, p, o)) = &self.at {
            if !now && t.elapsed() < Duration::from_secs(1) && p.as_path() == path && offset >= *o {
                return self.bytes.saturating_sub(offset - o);
            }
        }
        let mut behind = 0;
        let mut after = false;
        for (_, p) in trail(audit) {
            let len = std::fs::metadata(&p).map_or(0, |m| m.len());
            if p == path {
                behind += len.saturating_sub(offset);
                after = true;
            } else if after {
                behind += len;
            }
        }
        self.bytes = behind;
        self.at = Some((Instant::now(), path.to_owned(), offset));
        self.bytes
    }
}

/// A file's identity (device and inode).
fn id_of(md: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (md.dev(), md.ino())
}

fn file_id(f: &std::fs::File) -> Option<(u64, u64)> {
    f.metadata().ok().map(|md| id_of(&md))
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
