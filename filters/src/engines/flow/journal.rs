//! The flow table's journal: what has flowed to each client outlives the
//! process. Sessions, event ids and task handles stay valid across a
//! restart and a binary upgrade (they are sealed with the install's
//! secret), so a state that lived only in memory would come back clean
//! for a session that had read secrets: a restart would launder it.
//!
//! Each change of a state (a level or `untrusted` it did not have) is
//! appended to `<state dir>/flows.jsonl` as one line, the state whole,
//! before the reply that raised it leaves; a line that cannot be written
//! fails closed, as a full table does (the reply is withheld). At start
//! the file is read into the table (states idle for a day are left out)
//! and rewritten with one line per state. During a binary upgrade two
//! processes serve one install: each appends to its own file and reads,
//! once a second, what the other appends to its ([`Journal::follow`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::FlowState;

/// A journal this large is rewritten with one line per state.
const COMPACT_AT: u64 = 64 << 20;

/// One line: a state, its key and owner (hex), and when it was last used
/// (seconds).
#[derive(Serialize, Deserialize)]
pub(super) struct Line {
    pub k: String,
    pub o: String,
    pub t: u64,
    pub s: FlowState,
}

impl Line {
    pub(super) fn new(key: &[u8; 32], owner: &[u8; 32], used: u64, state: &FlowState) -> Line {
        Line {
            k: hex::encode(key),
            o: hex::encode(owner),
            t: used,
            s: state.clone(),
        }
    }

    pub(super) fn parts(&self) -> Option<([u8; 32], [u8; 32])> {
        let mut k = [0u8; 32];
        let mut o = [0u8; 32];
        hex::decode_to_slice(&self.k, &mut k).ok()?;
        hex::decode_to_slice(&self.o, &mut o).ok()?;
        Some((k, o))
    }
}

/// A file another process appends to, read from where this one stopped.
struct Followed {
    file: File,
    ino: (u64, u64),
    at: u64,
    /// The start of a line not yet ended.
    partial: Vec<u8>,
}

pub(crate) struct Journal {
    path: PathBuf,
    out: Mutex<Out>,
    followed: Mutex<Vec<Followed>>,
    /// Appends that failed, and lines read that were no state (a line a
    /// crash cut): what the gateway reports (see `FlowTables::follow`).
    pub(super) failed: std::sync::atomic::AtomicU64,
    pub(super) skipped: std::sync::atomic::AtomicU64,
}

struct Out {
    file: File,
    ino: (u64, u64),
    bytes: u64,
}

fn ino(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

impl Journal {
    /// Reads the journal in `dir` (each line to `apply`), and starts this
    /// process's own with `states` (one line each, as `apply` left them).
    pub(super) fn open(
        dir: &Path,
        mut apply: impl FnMut(Line),
        states: impl FnOnce() -> Vec<Line>,
    ) -> std::io::Result<Journal> {
        let path = dir.join("flows.jsonl");
        let mut followed = Vec::new();
        let mut skipped = 0;
        match File::open(&path) {
            Ok(file) => {
                let m = file.metadata()?;
                let mut f = Followed {
                    ino: ino(&m),
                    file,
                    at: 0,
                    partial: Vec::new(),
                };
                skipped += f.read_new(&mut apply)?;
                followed.push(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let out = write_compacted(&path, states())?;
        Ok(Journal {
            path,
            out: Mutex::new(out),
            followed: Mutex::new(followed),
            failed: 0.into(),
            skipped: skipped.into(),
        })
    }

    /// Appends `line`; `false` when it could not be written whole.
    pub(super) fn append(&self, line: &Line) -> bool {
        let written = serde_json::to_vec(line).ok().and_then(|mut text| {
            text.push(b'\n');
            let mut out = self.out.lock().ok()?;
            out.file.write_all(&text).ok()?;
            out.bytes += text.len() as u64;
            Some(())
        });
        if written.is_none() {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        written.is_some()
    }

    /// Reads what other processes of this install appended since the last
    /// call (each line to `apply`); rewrites this process's own file when
    /// it has grown past [`COMPACT_AT`] (with `states`).
    pub(super) fn follow(
        &self,
        mut apply: impl FnMut(Line),
        states: impl FnOnce() -> Vec<Line>,
    ) -> std::io::Result<()> {
        let own = self.out.lock().map(|o| o.ino).unwrap_or_default();
        {
            let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
            // Another process's file now at the path (one started after this one).
            if let Ok(file) = File::open(&self.path) {
                let m = file.metadata()?;
                let i = ino(&m);
                if i != own && !followed.iter().any(|f| f.ino == i) {
                    followed.push(Followed {
                        file,
                        ino: i,
                        at: 0,
                        partial: Vec::new(),
                    });
                    // The two newest: an upgrade has two processes.
                    if followed.len() > 2 {
                        followed.remove(0);
                    }
                }
            }
            for f in followed.iter_mut() {
                let n = f.read_new(&mut apply)?;
                self.skipped
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let big = self
            .out
            .lock()
            .map(|o| o.bytes > COMPACT_AT)
            .unwrap_or(false);
        if big {
            let out = write_compacted(&self.path, states())?;
            if let Ok(mut o) = self.out.lock() {
                *o = out;
            }
        }
        Ok(())
    }
}

impl Followed {
    /// Reads the lines appended since the last call; how many were no state.
    fn read_new(&mut self, apply: &mut impl FnMut(Line)) -> std::io::Result<u64> {
        self.file.seek(SeekFrom::Start(self.at))?;
        let mut buf = Vec::new();
        let n = (&mut self.file).take(16 << 20).read_to_end(&mut buf)?;
        self.at += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = memchr::memrchr(b'\n', &self.partial) else {
            return Ok(0);
        };
        let mut skipped = 0;
        for l in self.partial[..end].split(|b| *b == b'\n') {
            if l.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Line>(l) {
                Ok(line) => apply(line),
                // A line cut by a crash (its reply never left) or garbage.
                Err(_) => skipped += 1,
            }
        }
        self.partial.drain(..=end);
        Ok(skipped)
    }
}

/// Writes `states` to a new file and puts it at `path`: open for appends.
fn write_compacted(path: &Path, states: Vec<Line>) -> std::io::Result<Out> {
    let tmp = path.with_extension(format!("jsonl.{}", std::process::id()));
    let mut text = Vec::new();
    for s in &states {
        serde_json::to_writer(&mut text, s).map_err(std::io::Error::other)?;
        text.push(b'\n');
    }
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let file = std::fs::OpenOptions::new().append(true).open(path)?;
    let m = file.metadata()?;
    Ok(Out {
        ino: ino(&m),
        bytes: m.len(),
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{FlowTables, Source};

    fn src(id: &str, level: u8, untrusted: bool) -> Source {
        Source {
            id: id.into(),
            what: "hr/get_employee".into(),
            level,
            untrusted,
        }
    }

    /// What flowed to a session outlives the process: a new process of
    /// the install reads it back (a restart does not launder a session),
    /// and the two halves of an upgrade read each other's changes.
    #[test]
    fn states_outlive_the_process_and_cross_an_upgrade() {
        let dir = tempfile::tempdir().expect("tmp");
        let now = 1_800_000_000;
        let (k1, k2, owner) = ([1u8; 32], [2u8; 32], [9u8; 32]);
        let old = FlowTables::new(100);
        old.keep_in(dir.path(), now).expect("keep");
        assert_eq!(
            old.raise(&k1, &owner, &src("fl_1", 3, false), None, now),
            Some(true)
        );
        assert_eq!(
            old.raise(&k1, &owner, &src("fl_2", 0, true), None, now),
            Some(true)
        );
        // A restart (or the new half of an upgrade) starts with it.
        let new = FlowTables::new(100);
        new.keep_in(dir.path(), now + 5).expect("keep");
        let s = new.get(&k1, now + 5);
        assert_eq!((s.level, s.untrusted, s.sources.len()), (3, true, 2));
        // The old half keeps serving: what it raises reaches the new one,
        // and what the new one raises reaches the old one.
        assert_eq!(
            old.raise(&k2, &owner, &src("fl_3", 2, false), None, now),
            Some(true)
        );
        assert_eq!(
            new.raise(&k1, &owner, &src("fl_4", 3, false), None, now),
            Some(false)
        );
        let k3 = [3u8; 32];
        assert_eq!(
            new.raise(&k3, &owner, &src("fl_5", 1, false), None, now),
            Some(true)
        );
        new.follow(now + 6).expect("follow");
        old.follow(now + 6).expect("follow");
        assert_eq!(new.get(&k2, now + 6).level, 2);
        assert_eq!(old.get(&k3, now + 6).level, 1);
        // A line a crash cut is skipped; the rest is read; a state idle
        // for a day is not.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("flows.jsonl"))
            .expect("open");
        f.write_all(b"{\"k\":\"01\",\"o\n").expect("write");
        drop(f);
        let later = FlowTables::new(100);
        later.keep_in(dir.path(), now + 7).expect("keep");
        assert_eq!(later.get(&k3, now + 7).level, 1);
        assert_eq!(later.get(&k1, now + 7).level, 3);
        assert_eq!(later.journal_problems(), (0, 1), "the cut line, counted");
        let much_later = FlowTables::new(100);
        much_later
            .keep_in(dir.path(), now + super::super::IDLE_SECS + 100)
            .expect("keep");
        assert!(much_later.is_empty());
    }

    /// A change that cannot be recorded is as one the table cannot hold:
    /// `None`, and the reply that would make it is withheld.
    #[test]
    fn a_change_that_cannot_be_recorded_fails_closed() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = FlowTables::new(100);
        t.keep_in(dir.path(), 1).expect("keep");
        // The journal's file, read-only from now on.
        if let Some(j) = t.journal.get() {
            let ro = std::fs::File::open(dir.path().join("flows.jsonl")).expect("open");
            j.out.lock().expect("lock").file = ro;
        }
        assert_eq!(
            t.raise(&[1; 32], &[2; 32], &src("fl_1", 3, false), None, 1),
            None
        );
        assert_eq!(t.journal_problems().0, 1);
    }
}
