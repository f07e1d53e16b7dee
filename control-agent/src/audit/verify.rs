//! Verifying the hash chain of what a query matches, per gateway. The walk
//! along the chains ([`Walk`]) is the same on both stores: each reads the
//! matching records in chain order (gateway, seq, id) and looks up what a
//! record links to through a [`Lookup`].

use super::lines::{line_hash, STUB};
use super::search::conditions;
use super::*;

impl AuditStore {
    /// Verifies the hash chain of every record `q` matches (ignoring
    /// paging), per gateway, in seq order: each record's `prev` must be the
    /// SHA-256 of the stored line of the seq before (looked up when the
    /// query did not match it); a seq missing between stored ones is a
    /// gap; a line that no longer hashes to what was ingested was altered.
    /// A stub stands for the line it names by its declared SHA-256
    /// (`lines::line_hash`) and is counted in `elided`.
    pub fn verify(&self, q: &Query) -> anyhow::Result<Verification> {
        self.verify_within(q, VERIFY_BUDGET)
    }

    /// [`AuditStore::verify`] stopped after `budget`: the database is
    /// interrupted at the deadline (a query that sorts many rows before the
    /// first), and what was verified by then is reported, `truncated`.
    pub(super) fn verify_within(
        &self,
        q: &Query,
        budget: std::time::Duration,
    ) -> anyhow::Result<Verification> {
        match &*self.inner {
            Backend::Sqlite(s) => s.verify_within(q, budget),
            Backend::Postgres(p) => p.verify_within(q, budget),
        }
    }
}

/// What a verification looks up besides the records it reads.
pub(super) trait Lookup {
    /// The hashes of the stored lines of `gateway`'s `seq` (at most
    /// [`MAX_SIBLINGS`]; `true`: more hold it), read by `deadline`.
    fn lines_of(
        &mut self,
        gateway: &str,
        seq: u64,
        deadline: Instant,
    ) -> anyhow::Result<(Vec<[u8; 32]>, bool)>;

    /// The highest seq of `gateway` stored below `seq`.
    fn max_below(&mut self, gateway: &str, seq: u64) -> anyhow::Result<Option<u64>>;
}

/// A verification under way: the records read so far, chain by chain.
pub(super) struct Walk {
    out: Verification,
    chain: Option<Chain>,
    cap: usize,
    deadline: Instant,
    budget: std::time::Duration,
}

impl Walk {
    /// A walk over what `q` matches, stopping at `deadline`.
    pub(super) fn new(q: &Query, budget: std::time::Duration) -> Walk {
        // `limit` (when set) caps the records read, as MAX_VERIFY does.
        let cap = if q.limit > 0 {
            q.limit.min(MAX_VERIFY)
        } else {
            MAX_VERIFY
        };
        Walk {
            out: Verification {
                ok: true,
                records: 0,
                chains: Vec::new(),
                truncated: false,
                stopped: None,
            },
            chain: None,
            cap,
            deadline: Instant::now() + budget,
            budget,
        }
    }

    /// The records the query reads at most: one more than the cap, so that
    /// a query matching more says so.
    pub(super) fn read_at_most(&self) -> i64 {
        self.cap as i64 + 1
    }

    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// One record, in (gateway, seq, id) order. `Ok(false)`: stop reading
    /// (the cap or the time budget reached; said in the result).
    pub(super) fn row(
        &mut self,
        gateway: &str,
        seq: u64,
        prev: &[u8],
        stored: &[u8],
        raw: &str,
        look: &mut dyn Lookup,
    ) -> anyhow::Result<bool> {
        let out = &mut self.out;
        if out.records as usize == self.cap {
            out.truncated = true;
            out.stopped = Some(format!("more than {} records matched", self.cap));
            return Ok(false);
        }
        // Hashing is not the database's work: its interruption does not
        // see it.
        if Instant::now() >= self.deadline {
            out.truncated = true;
            out.stopped = Some(format!(
                "the time budget ran out after {} records",
                out.records
            ));
            return Ok(false);
        }
        out.records += 1;
        let hash = line_hash(raw);
        if self
            .chain
            .as_ref()
            .is_none_or(|c| c.check.gateway != gateway)
        {
            if let Some(c) = self.chain.take() {
                out.chains.push(c.finish());
            }
            self.chain = Some(Chain::new(gateway.to_owned(), seq));
        }
        let Some(c) = self.chain.as_mut() else {
            return Ok(true);
        };
        c.check.records += 1;
        c.check.last_seq = seq;
        if raw.starts_with(STUB) {
            c.check.elided += 1;
        }
        if stored != &hash[..] {
            c.problem(format!(
                "seq {seq}: the stored line no longer hashes to the line that was ingested (altered in the store)"
            ));
        }
        if c.seq == Some(seq) {
            // The same seq twice: two different lines (a trail that
            // started again, or one of them forged).
            if !c.doubled {
                c.doubled = true;
                c.problem(format!(
                    "seq {seq}: more than one record holds it (the gateway's trail started again, or two gateway processes shipped under one id?)"
                ));
            }
            if c.hashes.len() < MAX_SIBLINGS {
                c.hashes.push(hash);
            }
            // Linked to the seq before as its sibling is.
            if let Some(before) = &c.before {
                if !before.iter().any(|h| h[..] == prev[..]) {
                    c.problem(format!(
                        "seq {seq}: break: `prev` is not the SHA-256 of the line of seq {}",
                        seq.wrapping_sub(1)
                    ));
                }
            }
            return Ok(true);
        }
        // The lines of the seq before: the previous row when it is that
        // seq, else looked up in the store.
        let before: Option<Vec<[u8; 32]>> = if c.seq.is_some() && c.seq == seq.checked_sub(1) {
            Some(std::mem::take(&mut c.hashes))
        } else if seq == 0 {
            None
        } else {
            let (found, more) = look.lines_of(&c.check.gateway, seq - 1, self.deadline)?;
            if more {
                c.problem(format!(
                    "seq {}: more than {MAX_SIBLINGS} records hold it; only the first {MAX_SIBLINGS} were compared",
                    seq - 1
                ));
            }
            (!found.is_empty()).then_some(found)
        };
        c.doubled = false;
        match &before {
            Some(hs) => {
                if !hs.iter().any(|h| h[..] == prev[..]) {
                    c.problem(format!(
                        "seq {seq}: break: `prev` is not the SHA-256 of the line of seq {} (a line was altered, removed or inserted)",
                        seq - 1
                    ));
                }
            }
            None if seq == 0 => {
                if prev.iter().any(|b| *b != 0) {
                    c.problem("seq 0: `prev` is not 64 zeros (the start of a chain)".into());
                }
            }
            None => {
                // Missing, or older than what the store keeps.
                if let Some(b) = look.max_below(&c.check.gateway, seq - 1)? {
                    let from = b + 1;
                    c.problem(if from == seq - 1 {
                        format!("gap: seq {from} is missing")
                    } else {
                        format!("gap: seqs {from} to {} are missing", seq - 1)
                    });
                }
            }
        }
        c.before = before;
        c.seq = Some(seq);
        c.hashes = vec![hash];
        Ok(true)
    }

    /// The verification, once the reading ended with `res`; `interrupted`
    /// tells the database's interruption at the deadline from a failure.
    pub(super) fn finish(
        mut self,
        res: anyhow::Result<()>,
        interrupted: impl Fn(&anyhow::Error) -> bool,
    ) -> anyhow::Result<Verification> {
        let out = &mut self.out;
        match res {
            Ok(()) => {}
            Err(e) if interrupted(&e) && out.records > 0 => {
                out.truncated = true;
                out.stopped = Some(format!(
                    "the time budget ({} s) ran out after {} records",
                    self.budget.as_secs(),
                    out.records
                ));
            }
            Err(e) if interrupted(&e) => {
                anyhow::bail!(
                    "{SEARCH_TOO_BROAD} to verify (over {} s): narrow it with a time window (from=, to=) or a gateway",
                    self.budget.as_secs()
                )
            }
            Err(e) => return Err(e),
        }
        if let Some(c) = self.chain.take() {
            out.chains.push(c.finish());
        }
        out.ok = out.chains.iter().all(|c| c.ok);
        Ok(self.out)
    }
}

/// A verification's time budget ran out outside the database.
pub(super) fn out_of_time(e: &anyhow::Error) -> bool {
    e.downcast_ref::<OutOfTime>().is_some()
}

impl Inner {
    /// [`AuditStore::verify_within`] on SQLite: interrupted at the
    /// deadline by its progress handler.
    fn verify_within(
        &self,
        q: &Query,
        budget: std::time::Duration,
    ) -> anyhow::Result<Verification> {
        let conn = self.reader();
        let mut walk = Walk::new(q, budget);
        let deadline = walk.deadline();
        conn.progress_handler(10_000, Some(move || Instant::now() >= deadline));
        let res = self.verify_rows(&conn, q, &mut walk);
        conn.progress_handler(0, None::<fn() -> bool>);
        walk.finish(res, |e| {
            out_of_time(e)
                || matches!(
                    e.downcast_ref::<rusqlite::Error>(),
                    Some(rusqlite::Error::SqliteFailure(f, _))
                        if f.code == rusqlite::ErrorCode::OperationInterrupted
                )
        })
    }

    fn verify_rows(&self, conn: &Connection, q: &Query, walk: &mut Walk) -> anyhow::Result<()> {
        let (w, mut v) = conditions(q, false);
        v.push(Sql::Integer(walk.read_at_most()));
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT r.gateway, r.seq, r.prev, r.hash, l.raw FROM records r JOIN lines l ON l.id = r.id \
             WHERE {w} ORDER BY r.gateway, r.seq, r.id LIMIT ?"
        ))?;
        let mut rows = stmt.query(rusqlite::params_from_iter(v))?;
        let mut look = SqliteLookup { inner: self, conn };
        while let Some(r) = rows.next()? {
            let gateway: String = r.get(0)?;
            let seq = r.get::<_, i64>(1)?.max(0) as u64;
            let prev: Vec<u8> = r.get(2)?;
            let stored: Vec<u8> = r.get(3)?;
            let raw: String = r.get(4)?;
            if !walk.row(&gateway, seq, &prev, &stored, &raw, &mut look)? {
                break;
            }
        }
        Ok(())
    }
}

/// SQLite's lookups, on the connection the records are read on.
struct SqliteLookup<'a> {
    inner: &'a Inner,
    conn: &'a Connection,
}

impl Lookup for SqliteLookup<'_> {
    fn lines_of(
        &mut self,
        gateway: &str,
        seq: u64,
        deadline: Instant,
    ) -> anyhow::Result<(Vec<[u8; 32]>, bool)> {
        self.inner.lines_of(self.conn, gateway, seq, deadline)
    }

    fn max_below(&mut self, gateway: &str, seq: u64) -> anyhow::Result<Option<u64>> {
        let below: Option<i64> = self
            .conn
            .prepare_cached("SELECT max(seq) FROM records WHERE gateway = ?1 AND seq < ?2")?
            .query_row(params![gateway, seq as i64], |r| r.get(0))?;
        Ok(below.map(|b| b.max(0) as u64))
    }
}

/// One gateway's chain while it is verified.
struct Chain {
    check: ChainCheck,
    /// The seq of the previous row, and the hashes of its lines.
    seq: Option<u64>,
    hashes: Vec<[u8; 32]>,
    /// The hashes of the lines of the seq before the previous row's.
    before: Option<Vec<[u8; 32]>>,
    doubled: bool,
    more: usize,
}

impl Chain {
    fn new(gateway: String, first: u64) -> Chain {
        Chain {
            check: ChainCheck {
                gateway,
                records: 0,
                first_seq: first,
                last_seq: first,
                ok: true,
                elided: 0,
                problems: Vec::new(),
            },
            seq: None,
            hashes: Vec::new(),
            before: None,
            doubled: false,
            more: 0,
        }
    }

    fn problem(&mut self, p: String) {
        self.check.ok = false;
        if self.check.problems.len() < MAX_PROBLEMS {
            self.check.problems.push(p);
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> ChainCheck {
        if self.more > 0 {
            self.check
                .problems
                .push(format!("… and {} more problems", self.more));
        }
        self.check
    }
}
