//! The flow table's journal: what has flowed to each client outlives the
//! process. Sessions, event ids and task handles stay valid across a
//! restart and a binary upgrade (they are sealed with the install's
//! secret), so a state that lived only in memory would come back clean
//! for a session that had read secrets: a restart would launder it.
//!
//! Each process of an install writes its own file, `<state
//! dir>/flows/<random>.jsonl` (0600), and holds an exclusive lock on it
//! while it runs. Each change of a state (a level or `untrusted` it did
//! not have) is appended as one line, the state whole, before the reply
//! that raised it leaves; a line that cannot be written fails closed, as a
//! full table does (the reply is withheld). A state read is written again
//! at most once an hour, so that one in use is never taken for idle.
//!
//! At start a process reads every file there into its table (states idle
//! for a day are left out), writes the union to its own file, and deletes
//! the files whose writers have exited (their lock is free): nothing is
//! deleted before its states are written and synced elsewhere. A file
//! whose writer still runs (the other half of a binary upgrade) is read
//! again once a second ([`Journal::follow`]) and, once that writer exits,
//! folded into this process's file and deleted. A process's own file is
//! rewritten with one line per state when it grows past [`COMPACT_AT`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::FlowState;

/// A journal this large is rewritten with one line per state.
const COMPACT_AT: u64 = 64 << 20;
/// A line longer than this is no state (one a state could be is a few KB):
/// dropped, so a file without line ends cannot grow memory.
const MAX_LINE: usize = 1 << 20;
/// How often a state in use is written again, so that a restart does not
/// take it for idle (see [`super::FlowTables::get`]).
pub(super) const TOUCH_SECS: u64 = 3600;

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

/// Another process's file, read from where this one stopped.
struct Followed {
    path: PathBuf,
    file: File,
    ino: u64,
    at: u64,
    /// The start of a line not yet ended.
    partial: Vec<u8>,
}

pub(crate) struct Journal {
    dir: PathBuf,
    own: PathBuf,
    out: Mutex<Out>,
    followed: Mutex<Vec<Followed>>,
    /// Appends that failed; lines read that were no state (a line a crash
    /// cut).
    pub(super) failed: AtomicU64,
    pub(super) skipped: AtomicU64,
}

struct Out {
    file: File,
    bytes: u64,
}

/// A new file of this process's, 0600, never an existing one (nor
/// through a link someone left at its name).
fn create(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// A name no other process of any host sharing the directory draws.
fn random_name() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 12];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system randomness");
    hex::encode(b)
}

impl Journal {
    /// Reads the journal in `state_dir` (each line to `apply`), writes the
    /// union (`states`, called after every line was applied) to this
    /// process's own file, and deletes the files of processes that exited.
    pub(super) fn open(
        state_dir: &Path,
        mut apply: impl FnMut(Line),
        states: impl FnOnce() -> Vec<Line>,
        unroomed: &AtomicU64,
    ) -> std::io::Result<Journal> {
        let dir = state_dir.join("flows");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        // What a process that crashed while compacting left: its lock is
        // free (a live one holds its own).
        for e in std::fs::read_dir(&dir)?.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "new")
                && File::open(&p).is_ok_and(|f| f.try_lock().is_ok())
            {
                let _ = std::fs::remove_file(&p);
            }
        }
        // Locked before it has the name readers look for: no other
        // process can take it for an exited one's.
        let name = random_name();
        let own = dir.join(format!("{name}.jsonl"));
        let fresh = dir.join(format!("{name}.jsonl.new"));
        let file = create(&fresh)?;
        file.try_lock().map_err(std::io::Error::other)?;
        std::fs::rename(&fresh, &own)?;
        let j = Journal {
            dir,
            own,
            out: Mutex::new(Out { file, bytes: 0 }),
            followed: Mutex::new(Vec::new()),
            failed: 0.into(),
            skipped: 0.into(),
        };
        let before = unroomed.load(Ordering::Relaxed);
        let dead = j.scan(&mut apply)?;
        j.compact(states)?;
        j.bury(dead, unroomed, before);
        Ok(j)
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
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        written.is_some()
    }

    /// Reads what other processes of this install appended since the last
    /// call (each line to `apply`); folds the files of those that exited
    /// into this one's, and rewrites this one's when it has grown past
    /// [`COMPACT_AT`] (with `states`, called after every line was applied).
    pub(super) fn follow(
        &self,
        mut apply: impl FnMut(Line),
        states: impl FnOnce() -> Vec<Line>,
        unroomed: &AtomicU64,
    ) -> std::io::Result<()> {
        let before = unroomed.load(Ordering::Relaxed);
        let dead = self.scan(&mut apply)?;
        let big = self
            .out
            .lock()
            .map(|o| o.bytes > COMPACT_AT)
            .unwrap_or(false);
        if big || !dead.is_empty() {
            self.compact(states)?;
            self.bury(dead, unroomed, before);
        }
        Ok(())
    }

    /// Reads every other file of the directory to its end: a new one from
    /// its start (also one a writer rewrote), a known one from where this
    /// process stopped. Returns the files whose writers have exited, read
    /// whole, for [`Self::bury`] once their states are written here.
    fn scan(&self, apply: &mut impl FnMut(Line)) -> std::io::Result<Vec<Followed>> {
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path == self.own || path.extension().is_none_or(|e| e != "jsonl") {
                continue;
            }
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !m.is_file() {
                continue;
            }
            match followed.iter_mut().find(|f| f.path == path) {
                Some(f) if f.ino == m.ino() => {}
                // Rewritten by its writer: read again from its start.
                Some(f) => {
                    if let Ok(file) = File::open(&path) {
                        *f = Followed::new(path, file, m.ino());
                    }
                }
                None => {
                    if let Ok(file) = File::open(&path) {
                        followed.push(Followed::new(path, file, m.ino()));
                    }
                }
            }
        }
        let mut dead = Vec::new();
        let mut live = Vec::new();
        for mut f in followed.drain(..) {
            // Gone (its writer folded it into another): nothing more to read.
            if !f.path.exists() {
                continue;
            }
            // Exited: its lock is free, and the file at its path is still
            // the one locked (a writer that rewrote its file released the
            // old one's lock; the path now names the new one, read again
            // from its start at the next scan).
            let exited = f.file.try_lock().is_ok()
                && std::fs::symlink_metadata(&f.path).map(|m| m.ino()).ok()
                    == f.file.metadata().map(|m| m.ino()).ok();
            let skipped = f.read_new(apply)?;
            self.skipped.fetch_add(skipped, Ordering::Relaxed);
            if exited {
                dead.push(f);
            } else {
                live.push(f);
            }
        }
        *followed = live;
        Ok(dead)
    }

    /// Rewrites this process's own file with `states`, one line each,
    /// holding the lock appends take throughout: a change made while it
    /// runs is appended to the new file.
    ///
    /// The states are read before that lock (an append is made under a
    /// state's own lock, so reading them under this one could wait on a
    /// raise that waits on it): what was appended from the moment the
    /// reading began is carried into the new file as it was written.
    fn compact(&self, states: impl FnOnce() -> Vec<Line>) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let from = self.out.lock().map(|o| o.bytes).unwrap_or(0);
        let states = states();
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = Vec::new();
        for s in &states {
            serde_json::to_writer(&mut text, s).map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        let mut since = vec![0u8; out.bytes.saturating_sub(from) as usize];
        out.file.read_exact_at(&mut since, from)?;
        text.extend_from_slice(&since);
        let fresh = self.own.with_extension("jsonl.new");
        let _ = std::fs::remove_file(&fresh);
        let mut file = create(&fresh)?;
        file.try_lock().map_err(std::io::Error::other)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&fresh, &self.own)?;
        out.file = file;
        out.bytes = text.len() as u64;
        Ok(())
    }

    /// Deletes the files of processes that exited, once their states are
    /// in this process's file: unless a state read since `before` found
    /// no room in the table (it is in no file but theirs), in which case
    /// they stay for a process with more room.
    fn bury(&self, dead: Vec<Followed>, unroomed: &AtomicU64, before: u64) {
        if unroomed.load(Ordering::Relaxed) != before {
            return;
        }
        for f in dead {
            let _ = std::fs::remove_file(&f.path);
        }
    }
}

impl Followed {
    fn new(path: PathBuf, file: File, ino: u64) -> Followed {
        Followed {
            path,
            file,
            ino,
            at: 0,
            partial: Vec::new(),
        }
    }

    /// Reads the lines appended since the last call, to the file's end;
    /// how many were no state.
    fn read_new(&mut self, apply: &mut impl FnMut(Line)) -> std::io::Result<u64> {
        self.file.seek(SeekFrom::Start(self.at))?;
        let mut skipped = 0;
        loop {
            let mut buf = Vec::new();
            let n = (&mut self.file).take(4 << 20).read_to_end(&mut buf)?;
            if n == 0 {
                return Ok(skipped);
            }
            self.at += n as u64;
            self.partial.extend_from_slice(&buf);
            if let Some(end) = memchr::memrchr(b'\n', &self.partial) {
                for l in self.partial[..end].split(|b| *b == b'\n') {
                    if l.is_empty() {
                        continue;
                    }
                    match serde_json::from_slice::<Line>(l) {
                        Ok(line) if l.len() <= MAX_LINE => apply(line),
                        // A line cut by a crash (its reply never left), or
                        // anything else that is no state.
                        _ => skipped += 1,
                    }
                }
                self.partial.drain(..=end);
            }
            if self.partial.len() > MAX_LINE {
                self.partial.clear();
                skipped += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FlowTables, Source, IDLE_SECS};

    fn src(id: &str, level: u8, untrusted: bool) -> Source {
        Source {
            id: id.into(),
            what: "hr/get_employee".into(),
            level,
            untrusted,
        }
    }

    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("flows")).map_or(0, |d| d.count())
    }

    /// What flowed to a session outlives the process: a new process of
    /// the install reads it back (a restart does not launder a session),
    /// the two halves of an upgrade read each other's changes, and once
    /// the old half exits its file is folded into the new one's.
    #[test]
    fn states_outlive_the_process_and_cross_an_upgrade() {
        let dir = tempfile::tempdir().expect("tmp");
        let now = 1_800_000_000;
        let (k1, k2, k3, owner) = ([1u8; 32], [2u8; 32], [3u8; 32], [9u8; 32]);
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
        // The new half of an upgrade starts with it.
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
            new.raise(&k3, &owner, &src("fl_5", 1, false), None, now),
            Some(true)
        );
        new.follow(now + 6).expect("follow");
        old.follow(now + 6).expect("follow");
        assert_eq!(new.get(&k2, now + 6).level, 2);
        assert_eq!(old.get(&k3, now + 6).level, 1);
        assert_eq!(files(dir.path()), 2);
        // The old half exits: its file is folded into the new one's.
        drop(old);
        new.follow(now + 7).expect("follow");
        assert_eq!(files(dir.path()), 1);
        drop(new);
        let later = FlowTables::new(100);
        later.keep_in(dir.path(), now + 8).expect("keep");
        for (k, level) in [(k1, 3), (k2, 2), (k3, 1)] {
            assert_eq!(later.get(&k, now + 8).level, level, "{k:?}");
        }
        assert_eq!(
            files(dir.path()),
            1,
            "the exited process's file was folded in"
        );
        assert_eq!(later.journal_problems(), [0, 0, 0]);
        // Its own file is for its owner only.
        use std::os::unix::fs::PermissionsExt;
        for f in std::fs::read_dir(dir.path().join("flows")).expect("dir") {
            let mode = f
                .expect("entry")
                .metadata()
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// A process that starts and fails (a port in use, a bad bundle)
    /// takes no running process's states with it: nothing is deleted
    /// while its writer runs, and a line a crash cut is skipped.
    #[test]
    fn a_start_that_fails_orphans_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let now = 1_800_000_000;
        let owner = [9u8; 32];
        let running = FlowTables::new(100);
        running.keep_in(dir.path(), now).expect("keep");
        let failed = FlowTables::new(100);
        failed.keep_in(dir.path(), now).expect("keep");
        drop(failed);
        assert_eq!(
            running.raise(&[1; 32], &owner, &src("fl_1", 3, false), None, now),
            Some(true)
        );
        // A crash cut its own last line.
        use std::io::Write;
        for f in std::fs::read_dir(dir.path().join("flows")).expect("dir") {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(f.expect("entry").path())
                .expect("open");
            f.write_all(b"{\"k\":\"01\",\"o").expect("write");
        }
        let next = FlowTables::new(100);
        next.keep_in(dir.path(), now + 1).expect("keep");
        assert_eq!(next.get(&[1; 32], now + 1).level, 3);
    }

    /// A state in use is never taken for idle at a restart: read within
    /// the day, it is written again (at most hourly); one left alone for
    /// a day is not read back.
    #[test]
    fn a_state_in_use_is_not_taken_for_idle() {
        let dir = tempfile::tempdir().expect("tmp");
        let t0 = 1_800_000_000;
        let owner = [9u8; 32];
        let t = FlowTables::new(100);
        t.keep_in(dir.path(), t0).expect("keep");
        t.raise(&[1; 32], &owner, &src("fl_1", 3, false), None, t0);
        t.raise(&[2; 32], &owner, &src("fl_2", 3, false), None, t0);
        // Read at hour 20 (the second left alone).
        assert_eq!(t.get(&[1; 32], t0 + 20 * 3600).level, 3);
        drop(t);
        let after = FlowTables::new(100);
        after.keep_in(dir.path(), t0 + 30 * 3600).expect("keep");
        assert_eq!(after.get(&[1; 32], t0 + 30 * 3600).level, 3, "in use");
        assert_eq!(
            after.get(&[2; 32], t0 + 30 * 3600).level,
            0,
            "idle for more than a day"
        );
        let _ = IDLE_SECS;
    }

    /// Compaction loses nothing: a change made while the states are read
    /// for the new file is carried into it; a reader never takes a live
    /// writer that rewrote its file for an exited one; and a file whose
    /// states found no room in a smaller table is kept, not deleted.
    #[test]
    fn compaction_and_folding_lose_no_state() {
        let dir = tempfile::tempdir().expect("tmp");
        let now = 1_800_000_000;
        let owner = [9u8; 32];
        let a = FlowTables::new(100);
        a.keep_in(dir.path(), now).expect("keep");
        let b = FlowTables::new(100);
        b.keep_in(dir.path(), now).expect("keep");
        a.raise(&[1; 32], &owner, &src("fl_1", 1, false), None, now);
        // A raise lands after the states were read for the new file.
        let j = a.journal.get().expect("journal");
        j.compact(|| {
            let snapshot = a.lines();
            a.raise(&[2; 32], &owner, &src("fl_2", 3, false), None, now);
            snapshot
        })
        .expect("compact");
        // B sees the rewritten file as A's, live, and reads it again.
        b.follow(now + 1).expect("follow");
        assert_eq!(files(dir.path()), 2, "a live writer's file was deleted");
        assert_eq!(b.get(&[2; 32], now + 1).level, 3);
        a.raise(&[3; 32], &owner, &src("fl_3", 2, false), None, now);
        b.follow(now + 2).expect("follow");
        assert_eq!(b.get(&[3; 32], now + 2).level, 2);
        drop((a, b));
        // A table too small for them keeps the files it could not take.
        let small = FlowTables::new(1);
        small.keep_in(dir.path(), now + 3).expect("keep");
        assert!(small.journal_problems()[2] > 0);
        assert!(files(dir.path()) >= 3, "{}", files(dir.path()));
        drop(small);
        let big = FlowTables::new(100);
        big.keep_in(dir.path(), now + 4).expect("keep");
        for (k, level) in [([1u8; 32], 1), ([2; 32], 3), ([3; 32], 2)] {
            assert_eq!(big.get(&k, now + 4).level, level, "{k:?}");
        }
        assert_eq!(files(dir.path()), 1);
    }

    /// A change that cannot be recorded is as one the table cannot hold:
    /// `None`, and the reply that would make it is withheld.
    #[test]
    fn a_change_that_cannot_be_recorded_fails_closed() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = FlowTables::new(100);
        t.keep_in(dir.path(), 1).expect("keep");
        if let Some(j) = t.journal.get() {
            let ro = std::fs::File::open(&j.own).expect("open");
            j.out.lock().expect("lock").file = ro;
        }
        assert_eq!(
            t.raise(&[1; 32], &[2; 32], &src("fl_1", 3, false), None, 1),
            None
        );
        assert_eq!(t.journal_problems()[0], 1);
    }
}
