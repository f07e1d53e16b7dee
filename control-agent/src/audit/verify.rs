//! Verifying the hash chain of what a query matches, per gateway.

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
    /// ([`super::lines::line_hash`]) and is counted in `elided`.
    pub fn verify(&self, q: &Query) -> anyhow::Result<Verification> {
        self.verify_within(q, VERIFY_BUDGET)
    }

    /// [`AuditStore::verify`] stopped after `budget`: SQLite is interrupted
    /// at the deadline (a query that sorts many rows before the first),
    /// and what was verified by then is reported, `truncated`.
    pub(super) fn verify_within(
        &self,
        q: &Query,
        budget: std::time::Duration,
    ) -> anyhow::Result<Verification> {
        let conn = self.inner.reader();
        let deadline = Instant::now() + budget;
        conn.progress_handler(10_000, Some(move || Instant::now() >= deadline));
        let mut out = Verification {
            ok: true,
            records: 0,
            chains: Vec::new(),
            truncated: false,
            stopped: None,
        };
        let mut chain: Option<Chain> = None;
        let res = self.verify_rows(&conn, q, deadline, &mut out, &mut chain);
        conn.progress_handler(0, None::<fn() -> bool>);
        let interrupted = |e: &anyhow::Error| {
            e.downcast_ref::<OutOfTime>().is_some()
                || matches!(
                    e.downcast_ref::<rusqlite::Error>(),
                    Some(rusqlite::Error::SqliteFailure(f, _))
                        if f.code == rusqlite::ErrorCode::OperationInterrupted
                )
        };
        match res {
            Ok(()) => {}
            Err(e) if interrupted(&e) && out.records > 0 => {
                out.truncated = true;
                out.stopped = Some(format!(
                    "the time budget ({} s) ran out after {} records",
                    budget.as_secs(),
                    out.records
                ));
            }
            Err(e) if interrupted(&e) => {
                anyhow::bail!(
                    "{SEARCH_TOO_BROAD} to verify (over {} s): narrow it with a time window (from=, to=) or a gateway",
                    budget.as_secs()
                )
            }
            Err(e) => return Err(e),
        }
        if let Some(c) = chain.take() {
            out.chains.push(c.finish());
        }
        out.ok = out.chains.iter().all(|c| c.ok);
        Ok(out)
    }

    fn verify_rows(
        &self,
        conn: &Connection,
        q: &Query,
        deadline: Instant,
        out: &mut Verification,
        chain: &mut Option<Chain>,
    ) -> anyhow::Result<()> {
        let (w, mut v) = conditions(q, false);
        // `limit` (when set) caps the records read, as MAX_VERIFY does.
        let cap = if q.limit > 0 {
            q.limit.min(MAX_VERIFY)
        } else {
            MAX_VERIFY
        };
        v.push(Sql::Integer(cap as i64 + 1));
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT r.gateway, r.seq, r.prev, r.hash, l.raw FROM records r JOIN lines l ON l.id = r.id \
             WHERE {w} ORDER BY r.gateway, r.seq, r.id LIMIT ?"
        ))?;
        let mut rows = stmt.query(rusqlite::params_from_iter(v))?;
        while let Some(r) = rows.next()? {
            if out.records as usize == cap {
                out.truncated = true;
                out.stopped = Some(format!("more than {cap} records matched"));
                break;
            }
            // Hashing is not SQLite's work: its handler does not see it.
            if Instant::now() >= deadline {
                out.truncated = true;
                out.stopped = Some(format!(
                    "the time budget ran out after {} records",
                    out.records
                ));
                break;
            }
            out.records += 1;
            let gateway: String = r.get(0)?;
            let seq = r.get::<_, i64>(1)?.max(0) as u64;
            let prev: Vec<u8> = r.get(2)?;
            let stored: Vec<u8> = r.get(3)?;
            let raw: String = r.get(4)?;
            let hash = line_hash(&raw);
            if chain.as_ref().is_none_or(|c| c.check.gateway != gateway) {
                if let Some(c) = chain.take() {
                    out.chains.push(c.finish());
                }
                *chain = Some(Chain::new(gateway, seq));
            }
            let Some(c) = chain.as_mut() else { continue };
            c.check.records += 1;
            c.check.last_seq = seq;
            if raw.starts_with(STUB) {
                c.check.elided += 1;
            }
            if stored[..] != hash[..] {
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
                continue;
            }
            // The lines of the seq before: the previous row when it is
            // that seq, else looked up in the store.
            let before: Option<Vec<[u8; 32]>> = if c.seq.is_some() && c.seq == seq.checked_sub(1) {
                Some(std::mem::take(&mut c.hashes))
            } else if seq == 0 {
                None
            } else {
                let (found, more) =
                    self.inner
                        .lines_of(conn, &c.check.gateway, seq - 1, deadline)?;
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
                    let below: Option<i64> = conn
                        .prepare_cached(
                            "SELECT max(seq) FROM records WHERE gateway = ?1 AND seq < ?2",
                        )?
                        .query_row(params![c.check.gateway, (seq - 1) as i64], |r| r.get(0))?;
                    if let Some(b) = below {
                        let from = b as u64 + 1;
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
        }
        Ok(())
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
