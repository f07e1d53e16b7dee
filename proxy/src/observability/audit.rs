//! The audit trail: one hash-chained JSON line per MCP message and decision,
//! written off the request path.
//!
//! Each line starts with `"seq"` (0, 1, 2 … across files and restarts) and
//! `"prev"` (hex SHA-256 of the previous line's bytes, 64 zeros for the first
//! record ever), so `warden audit verify` detects an edited, deleted, inserted
//! or reordered record. Rotation renames the current file to
//! `<path>.<seq of the next record, 12 digits>` and the chain continues into
//! the new file; on start-up the chain resumes from the file's last line.
//!
//! Backpressure: the request path hands records to a bounded queue. When it is
//! full, `audit.fail_mode` decides: `closed` refuses new calls
//! ([`AuditSink::admit`]) while records of calls already admitted wait for
//! room; `open` keeps serving and counts every lost record in
//! `warden_audit_records_dropped_total` (and logs it). A write error is retried
//! until it succeeds — the writer stalls (gauge `warden_audit_writer_stalled`)
//! rather than skip a record, so the queue fills and the fail mode applies.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use warden_config::model::AuditFailMode;
use warden_filters::{codes, JsonRpcError, Refusal};

use crate::observability::metrics::metrics;

#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// When the record was made; formatted (RFC 3339) by the writer thread.
    #[serde(serialize_with = "rfc3339")]
    pub ts: std::time::SystemTime,
    #[serde(serialize_with = "shared_str")]
    pub revision: Arc<str>,
    /// The tenant layers whose rules applied beside the org's (`revision`),
    /// as `<tenant>@<layer revision>`: the caller's tenant and the owner of
    /// the server called. Absent when none did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    pub request_id: u64,
    pub trace_id: crate::pipeline::headers::TraceHex,
    #[serde(serialize_with = "shared_str")]
    pub principal: Arc<str>,
    #[serde(serialize_with = "shared_str")]
    pub tenant: Arc<str>,
    /// The person behind `tenant` and `principal`, in the canonical form
    /// the approval rules and per-principal bounds compare
    /// (`warden_config::person`): `ALICE` and `alice` of one tenant are one
    /// `person`. Worked out by the writer thread, not on the request path.
    pub person: AuditPerson,
    /// The rest of the principal as the policy read it (roles, kind,
    /// attributes), on client requests: what `warden policy replay` needs
    /// to judge the call again. Written by the writer thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_detail: Option<AuditPrincipal>,
    pub auth: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<std::net::IpAddr>,
    #[serde(serialize_with = "shared_str")]
    pub server: Arc<str>,
    #[serde(serialize_with = "shared_str")]
    pub group: Arc<str>,
    /// The virtual server the call came through, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub http_method: &'static str,
    #[serde(serialize_with = "shared_str")]
    pub path: Arc<str>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "shared_opt_str"
    )]
    pub session_id: Option<Arc<str>>,
    pub direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jsonrpc_id: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<&'static str>,
    /// Links every record about one task (`tasks/*` requests, status
    /// notifications) to the `tools/call` whose reply created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// What the bundle's shadow rule (`policy.shadow`) would have decided,
    /// when it disagreed with the enforced one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowDecision>,
    /// Information flow (`flows`): on a call, the flow's state, the call's
    /// labels and the `lineage` (ids of the earlier calls whose labels it
    /// carries); on a reply that added to the flow, `out` (its id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<serde_json::Value>,
    /// A notice about the call (`server `x` is deprecated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// The behaviour signals the call raised against its principal's
    /// baseline (`anomaly`), when any: `{"learning", "signals"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<serde_json::Value>,
    /// `forwarded`, `mutated`, `denied`, `invalid`, or the reason of a refusal.
    pub outcome: &'static str,
    /// Which check decided (`policy`, `kill_switch` …) when one refused or rewrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The caller's `x-warden-justification` (request messages that carry
    /// one), with what DLP finds redacted, at most 1,024 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// `sha256:<hex>` of the raw `params.arguments` text as the client sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_digest: Option<String>,
    /// The arguments: raw with `audit.include_arguments`; DLP-redacted
    /// for calls of a risk tier `audit.log_io` names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Box<serde_json::value::RawValue>>,
    /// The tool's result as the client got it, DLP-redacted (`audit.log_io`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<serde_json::value::RawValue>>,
    /// Human approval: on a call that needed one, its id, the agent's
    /// answer, the approvers needed and those who approved; on an
    /// `approval` record, one approver's decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<serde_json::Value>,
    /// The credential from the vault this call went up with, by reference
    /// (`vault:<connection id>`, `vault-secret:<name>@<version>`), or the
    /// consent it waits for (`consent:<link id>`): never the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// What a tool call cost by the catalog's price, on the call's record
    /// (its reply's, when that came on another stream or is recorded for
    /// another reason): `{"amount": "0.002300", "currency": "USD", "units": 23}`
    /// (a tool without a price gets no record of its own: it is counted in
    /// `warden_unpriced_calls_total`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<serde_json::Value>,
    /// Money budgets (`budgets:`): the alerts this call's charge raised,
    /// `{"alerts": [{"budget", "per", "holder", "threshold", "spent",
    /// "limit", "currency", "period", "resets_at"}]}`, once per threshold
    /// and period across the fleet for a global budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<serde_json::Value>,
    /// What DLP found: detector, rule, JSON path and action — never the text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dlp: Vec<DlpFinding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<std::net::SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    pub status: u16,
    pub latency_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DlpFinding {
    pub detector: String,
    pub rule: String,
    pub path: String,
    pub action: &'static str,
}

enum AuditMsg {
    Record(Box<AuditRecord>),
    /// Everything queued before this is written; then the writer stops.
    Stop,
}

#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditMsg>,
    mode: AuditFailMode,
    stalled: Arc<AtomicBool>,
}

pub struct AuditWriter {
    handle: Option<JoinHandle<()>>,
}

/// Where records go and when files rotate.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// `None`: stdout (never rotated).
    pub path: Option<PathBuf>,
    pub queue: usize,
    pub mode: AuditFailMode,
    pub rotate_size: Option<u64>,
    pub rotate_interval: Option<Duration>,
}

pub const GENESIS: [u8; 32] = [0; 32];

impl AuditSink {
    /// Opens the log (resuming its chain) and starts the writer thread.
    pub fn start(opts: AuditOptions) -> std::io::Result<(AuditSink, AuditWriter)> {
        // One writer per file: an exclusive lock on `<path>.lock`. During a
        // binary upgrade the old process still holds it while it drains; the
        // new one queues its records and takes over the file (resuming the
        // chain after the old process's last record) once the lock is free.
        let lock = match &opts.path {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(format!("{}.lock", p.display()))?,
            ),
            None => None,
        };
        let ready = match &lock {
            None => true,
            Some(f) => match f.try_lock() {
                Ok(()) => true,
                Err(std::fs::TryLockError::WouldBlock) => false,
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            },
        };
        // Open now when we can, so a bad path fails at start.
        let out = if ready {
            Some(Output::open(&opts, lock)?)
        } else {
            tracing::info!("audit file locked by another Warden (upgrade in progress); records queue until it exits");
            None
        };
        let (tx, rx) = mpsc::channel(opts.queue);
        let stalled = Arc::new(AtomicBool::new(false));
        let s2 = stalled.clone();
        let o2 = opts.clone();
        let handle = std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || {
                let out = match out {
                    Some(o) => o,
                    None => match o2
                        .path
                        .as_ref()
                        .map(|p| format!("{}.lock", p.display()))
                        .ok_or_else(|| std::io::Error::other("no audit path"))
                        .and_then(|l| std::fs::OpenOptions::new().write(true).open(l))
                        .and_then(|f| f.lock().map(|()| f))
                        .and_then(|f| Output::open(&o2, Some(f)))
                    {
                        Ok(o) => o,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot open the audit file after the previous writer exited");
                            s2.store(true, Ordering::Relaxed);
                            return;
                        }
                    },
                };
                write_loop(rx, out, s2)
            })?;
        Ok((
            AuditSink {
                tx,
                mode: opts.mode,
                stalled,
            },
            AuditWriter {
                handle: Some(handle),
            },
        ))
    }

    /// Called before a request is judged: in fail-closed mode, refuses it while
    /// the queue is full or the writer is stalled.
    pub fn admit(&self) -> Result<(), Refusal> {
        if self.mode == AuditFailMode::Closed
            && (self.tx.capacity() == 0 || self.stalled.load(Ordering::Relaxed))
        {
            metrics().audit_refused.inc();
            return Err(Refusal::new(
                503,
                "audit_unavailable",
                JsonRpcError::new(
                    codes::AUDIT_UNAVAILABLE,
                    "The audit trail cannot keep up; calls are paused (fail closed)",
                ),
            )
            .with_header("retry-after", "1"));
        }
        Ok(())
    }

    /// Queues a record. Fail-closed: waits for room (the call was admitted, its
    /// record must not be lost). Fail-open: drops it when the queue is full,
    /// counted and logged.
    pub async fn record(&self, rec: AuditRecord) {
        let m = metrics();
        m.audit_queue.inc();
        let msg = AuditMsg::Record(Box::new(rec));
        let res = match self.mode {
            AuditFailMode::Closed => self.tx.send(msg).await.map_err(|_| "writer gone"),
            AuditFailMode::Open => self.tx.try_send(msg).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => "queue full",
                mpsc::error::TrySendError::Closed(_) => "writer gone",
            }),
        };
        if let Err(why) = res {
            m.audit_queue.dec();
            m.audit_dropped.inc();
            tracing::error!(why, "audit record lost (fail-open)");
        }
    }

    /// From outside any runtime: writes everything queued so far and stops the writer.
    pub fn stop_blocking(&self) {
        let _ = self.tx.blocking_send(AuditMsg::Stop);
    }
}

impl AuditWriter {
    /// Waits until the writer has stopped (after [`AuditSink::stop_blocking`]).
    pub fn join(mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The chain state carried from line to line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub next_seq: u64,
    pub prev: [u8; 32],
}

/// The longest last line the chain resumes from.
const MAX_RESUMED_LINE: u64 = 256 << 20;

/// Reads the last line of `path` to resume its chain.
fn resume(path: &Path) -> std::io::Result<ChainHead> {
    // A pipe or device has no past to resume (and opening a FIFO to read would block).
    if !std::fs::metadata(path)
        .map(|m| m.is_file())
        .unwrap_or(false)
    {
        return Ok(ChainHead {
            next_seq: 0,
            prev: GENESIS,
        });
    }
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ChainHead {
                next_seq: 0,
                prev: GENESIS,
            })
        }
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    // The last line ends before the file's final newline.
    let mut end = len;
    if len > 0 {
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut b)?;
        if b[0] == b'\n' {
            end -= 1;
        }
    }
    // Back from there a window at a time to the newline before it (or the
    // file's start): a record may be far longer than one window (a call's
    // arguments logged in full). One window in memory at a time.
    let mut start = end;
    let mut window = vec![0u8; 1 << 20];
    let line_start = loop {
        if start == 0 {
            break 0;
        }
        let n = start.min(window.len() as u64);
        start -= n;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut window[..n as usize])?;
        if let Some(i) = memchr::memrchr(b'\n', &window[..n as usize]) {
            break start + i as u64 + 1;
        }
    };
    // Longer than any record the gateway writes (a body is at most a few
    // MiB): not one.
    if end - line_start > MAX_RESUMED_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the audit log's last line is {} bytes, longer than any record; move the file aside",
                end - line_start
            ),
        ));
    }
    let mut tail = vec![0u8; (end - line_start) as usize];
    f.seek(SeekFrom::Start(line_start))?;
    f.read_exact(&mut tail)?;
    let last = &tail[..];
    if last.is_empty() {
        return Ok(ChainHead {
            next_seq: 0,
            prev: GENESIS,
        });
    }
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    let seq = serde_json::from_slice::<Seq>(last).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the audit log's last line is not a record ({e}); move the file aside"),
        )
    })?;
    Ok(ChainHead {
        next_seq: seq.seq + 1,
        prev: Sha256::digest(last).into(),
    })
}

struct Output {
    /// Held while this process writes the file (released when it exits).
    _lock: Option<std::fs::File>,
    opts: AuditOptions,
    w: std::io::BufWriter<Box<dyn Write + Send>>,
    head: ChainHead,
    bytes: u64,
    opened: Instant,
}

impl Output {
    fn open(opts: &AuditOptions, lock: Option<std::fs::File>) -> std::io::Result<Output> {
        let (w, head, bytes): (Box<dyn Write + Send>, ChainHead, u64) = match &opts.path {
            Some(p) => {
                let head = resume(p)?;
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?;
                let bytes = f.metadata()?.len();
                (Box::new(f), head, bytes)
            }
            None => (
                Box::new(std::io::stdout()),
                ChainHead {
                    next_seq: 0,
                    prev: GENESIS,
                },
                0,
            ),
        };
        Ok(Output {
            _lock: lock,
            opts: opts.clone(),
            w: std::io::BufWriter::with_capacity(256 * 1024, w),
            head,
            bytes,
            opened: Instant::now(),
        })
    }

    fn due(&self) -> bool {
        self.opts.path.is_some()
            && self.bytes > 0
            && (self.opts.rotate_size.is_some_and(|n| self.bytes >= n)
                || self
                    .opts
                    .rotate_interval
                    .is_some_and(|d| self.opened.elapsed() >= d))
    }

    /// Renames the current file aside and starts a new one; the chain goes on.
    fn rotate(&mut self) -> std::io::Result<()> {
        let Some(path) = self.opts.path.clone() else {
            return Ok(());
        };
        self.w.flush()?;
        let aside = PathBuf::from(format!("{}.{:012}", path.display(), self.head.next_seq));
        std::fs::rename(&path, &aside)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        self.w = std::io::BufWriter::with_capacity(256 * 1024, Box::new(f));
        self.bytes = 0;
        self.opened = Instant::now();
        Ok(())
    }
}

/// Serialises `rec` as one chained line (without the newline) into `line`.
pub fn chain_line(
    line: &mut Vec<u8>,
    head: &ChainHead,
    rec: &AuditRecord,
) -> serde_json::Result<()> {
    line.clear();
    let mut prev = [0u8; 64];
    hex::encode_to_slice(head.prev, &mut prev).expect("64 hex digits for 32 bytes");
    line.extend_from_slice(b"{\"seq\":");
    line.extend_from_slice(itoa::Buffer::new().format(head.next_seq).as_bytes());
    line.extend_from_slice(b",\"prev\":\"");
    line.extend_from_slice(&prev);
    line.push(b'"');
    let start = line.len();
    serde_json::to_writer(&mut *line, rec)?;
    // The record's own opening brace becomes the comma after `prev`: its
    // fields continue the object (a record always has fields).
    debug_assert_eq!(line.get(start), Some(&b'{'));
    line[start] = b',';
    // One record, one line: the record's raw JSON members (a call's
    // arguments, a result, as the client wrote them) may hold JSON
    // whitespace — newlines, returns, tabs — which would split the line
    // and let a caller write a line of its own into the trail (and every
    // export). Inside a JSON string those are always escaped, so each such
    // byte is whitespace between tokens: dropped, the JSON unchanged.
    if memchr::memchr3(b'\n', b'\r', b'\t', &line[start..]).is_some() {
        line.retain(|b| !matches!(b, b'\n' | b'\r' | b'\t'));
    }
    Ok(())
}

/// How long the writer sleeps when its queue is empty. Polling instead of
/// parking keeps the request path from paying a cross-thread wake-up per record;
/// a record reaches the file within about this long.
const IDLE_POLL: Duration = Duration::from_millis(2);
/// Pause between attempts when the disk refuses a write.
const RETRY: Duration = Duration::from_millis(100);

fn write_loop(mut rx: mpsc::Receiver<AuditMsg>, mut out: Output, stalled: Arc<AtomicBool>) {
    let m = metrics();
    let mut line = Vec::with_capacity(1024);
    let mut dirty = false;
    loop {
        match rx.try_recv() {
            Ok(AuditMsg::Record(rec)) => {
                m.audit_queue.dec();
                if chain_line(&mut line, &out.head, &rec).is_err() {
                    // Serialising owned strings and numbers does not fail; if it
                    // ever does, say so loudly rather than break the chain.
                    m.audit_failed.inc();
                    tracing::error!(request_id = rec.request_id, "audit record not serialisable");
                    continue;
                }
                line.push(b'\n');
                // Retry until the line is written: a record is never skipped.
                loop {
                    if out.due() {
                        if let Err(e) = out.rotate() {
                            tracing::error!(error = %e, "audit log rotation failed; continuing in the current file");
                            out.opened = Instant::now();
                        }
                    }
                    match out.w.write_all(&line) {
                        Ok(()) => break,
                        Err(e) => {
                            m.audit_failed.inc();
                            if !stalled.swap(true, Ordering::Relaxed) {
                                m.audit_stalled.set(1);
                                tracing::error!(error = %e, "audit write failed; retrying");
                            }
                            std::thread::sleep(RETRY);
                        }
                    }
                }
                if stalled.swap(false, Ordering::Relaxed) {
                    m.audit_stalled.set(0);
                    tracing::info!("audit writer recovered");
                }
                out.head = ChainHead {
                    next_seq: out.head.next_seq + 1,
                    prev: Sha256::digest(&line[..line.len() - 1]).into(),
                };
                out.bytes += line.len() as u64;
                m.audit_written.inc();
                dirty = true;
            }
            Ok(AuditMsg::Stop) | Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                if dirty {
                    if let Err(e) = out.w.flush() {
                        m.audit_failed.inc();
                        tracing::error!(error = %e, "audit log flush failed; retrying");
                        std::thread::sleep(RETRY);
                        continue;
                    }
                    dirty = false;
                }
                std::thread::sleep(IDLE_POLL);
            }
        }
    }
    if out.w.flush().is_err() {
        m.audit_failed.inc();
        tracing::error!("audit log flush failed at shutdown");
    }
}

/// Names shared by every record of a request (and the runtime) are `Arc<str>`:
/// a record per message clones pointers, not strings.
/// The shadow rule's decision beside the enforced one.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowDecision {
    pub allow: bool,
    pub reason: String,
    pub enforced_allow: bool,
    pub enforced_reason: String,
}

/// Who a record is about, written as `tenant/id` in canonical form; a
/// name that has none (an invisible character) is written marked, never
/// merged with another.
#[derive(Debug, Clone)]
pub struct AuditPerson(pub Arc<warden_filters::Principal>);

impl Serialize for AuditPerson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The owner key (`tenant\0id`, canonical), worked out once per principal.
        match self.0.person().split_once('\0') {
            Some((tenant, id)) => s.collect_str(&format_args!("{tenant}/{id}")),
            None => s.serialize_str(self.0.person()),
        }
    }
}

/// A principal's roles, kind and attributes.
#[derive(Debug, Clone)]
pub struct AuditPrincipal(pub Arc<warden_filters::Principal>);

impl Serialize for AuditPrincipal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let p = &self.0;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("roles", &p.roles)?;
        m.serialize_entry("kind", p.kind.as_str())?;
        m.serialize_entry("attributes", &p.attributes)?;
        m.end()
    }
}

fn shared_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

fn shared_opt_str<S: serde::Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(v),
        None => s.serialize_none(),
    }
}

fn rfc3339<S: serde::Serializer>(t: &std::time::SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(*t))
}

/// What `warden audit verify` found.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub first_seq: u64,
    pub head: String,
}

/// Checks the chain across `files` (any order: they are sorted by the `seq`
/// of their first record), from record `from`: the trail must begin there
/// (`0`: the whole chain, from its genesis), so a trail whose head was cut
/// off fails; a caller who rotated older files away names where the rest
/// begins. Everything after must link up exactly.
pub fn verify(files: &[PathBuf], from: u64) -> Result<Verified, String> {
    #[derive(serde::Deserialize)]
    struct Link {
        seq: u64,
        prev: String,
    }
    let mut loaded = Vec::new();
    for f in files {
        let text = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let first = text
            .split(|&b| b == b'\n')
            .next()
            .and_then(|l| serde_json::from_slice::<Link>(l).ok())
            .map(|l| l.seq);
        loaded.push((first.unwrap_or(u64::MAX), f.clone(), text));
    }
    loaded.sort_by_key(|(seq, _, _)| *seq);
    let mut expect: Option<(u64, [u8; 32])> = None;
    let mut records = 0;
    let mut first_seq = None;
    for (_, path, text) in &loaded {
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        if body.is_empty() {
            continue;
        }
        for (n, l) in body.split(|&b| b == b'\n').enumerate() {
            let at = format!("{}:{}", path.display(), n + 1);
            let link: Link = serde_json::from_slice(l)
                .map_err(|e| format!("{at}: not an audit record ({e})"))?;
            let prev = hex::decode(&link.prev)
                .ok()
                .and_then(|p| <[u8; 32]>::try_from(p).ok())
                .ok_or_else(|| format!("{at}: `prev` is not a SHA-256"))?;
            match expect {
                None => {
                    if link.seq == 0 && prev != GENESIS {
                        return Err(format!("{at}: the first record does not start the chain"));
                    }
                }
                Some((seq, want)) => {
                    if link.seq != seq {
                        return Err(format!(
                            "{at}: expected record {seq}, found {} (records deleted, inserted or reordered)",
                            link.seq
                        ));
                    }
                    if prev != want {
                        return Err(format!(
                            "{at}: chain broken — the previous record was altered (or this one was moved)"
                        ));
                    }
                }
            }
            first_seq.get_or_insert(link.seq);
            expect = Some((link.seq + 1, Sha256::digest(l).into()));
            records += 1;
        }
    }
    let (_, head) = expect.ok_or("no audit records found")?;
    let first = first_seq.unwrap_or(0);
    if first != from {
        return Err(format!(
            "the trail begins at record {first}, not {from}: records {from}..{} are missing (deleted, or in older files rotated away; if they were, check from where it begins with --from {first})",
            first.saturating_sub(1)
        ));
    }
    Ok(Verified {
        records,
        first_seq: first_seq.unwrap_or(0),
        head: hex::encode(head),
    })
}

#[cfg(test)]
mod resume_tests {
    use super::*;

    /// The chain resumes from the last line however long it is: a record
    /// logging a call's arguments in full may be many windows long.
    #[test]
    fn the_chain_resumes_after_a_record_longer_than_a_window() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        for big in [10usize, (1 << 20) - 20, 1 << 20, (5 << 20) / 2] {
            let last = format!(r#"{{"seq":7,"arguments":"{}"}}"#, "a".repeat(big));
            let text = format!("{{\"seq\":5}}\n{{\"seq\":6}}\n{last}\n");
            std::fs::write(&path, &text).expect("write");
            let head = resume(&path).expect("resume");
            assert_eq!(head.next_seq, 8, "{big}");
            assert_eq!(head.prev, <[u8; 32]>::from(Sha256::digest(last.as_bytes())));
            // The only line of its file.
            std::fs::write(&path, format!("{last}\n")).expect("write");
            assert_eq!(resume(&path).expect("resume").next_seq, 8, "{big}");
        }
    }
}
