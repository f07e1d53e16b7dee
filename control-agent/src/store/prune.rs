//! The org revisions' bound. Every org publish, layer publish, rollback,
//! kill switch and registry step builds a new org revision, each stored
//! whole (its built bundle and its source, `revisions/<seq>.tar.gz` and
//! `.src.tar.gz`) with a line in `history.jsonl`; tenants drive most of
//! them, so without a bound they filled the agent's disk. The newest
//! [`MAX_ORG_REVISIONS`] are kept, and beside them every revision served
//! (for everyone, a selector, a canary) and the one the rollout names;
//! older ones lose their files and their history line (`history.jsonl` is
//! rewritten whole, atomically, before any file goes, so a restart never
//! finds a line without its files).

use std::collections::BTreeSet;

use super::error::RevisionError;
use super::publish::RESIGN_REASON;
use super::types::HistoryEntry;
use super::{Inner, Store};

/// Org revisions kept (see the module's documentation).
pub const MAX_ORG_REVISIONS: usize = 500;

impl Store {
    /// Drops the org revisions past the bound (`org_revisions`) that
    /// nothing serves or names.
    pub(super) fn prune_revisions(&self, inner: &mut Inner) {
        let newest = inner
            .history
            .len()
            .saturating_sub(self.org_revisions.max(1));
        if newest == 0 {
            return;
        }
        let mut keep = Self::in_use(inner);
        keep.extend(inner.history[newest..].iter().map(|h| h.seq));
        self.drop_revisions(inner, |h| !keep.contains(&h.seq));
    }

    /// The revisions served or named by the rollout.
    fn in_use(inner: &Inner) -> BTreeSet<u64> {
        let mut keep: BTreeSet<u64> = inner.served.iter().map(|p| p.seq).collect();
        keep.extend(inner.rollout.as_ref().map(|r| r.seq));
        keep
    }

    /// Forgets the re-signs nothing serves any more: each re-sign is the
    /// same content as the revision it re-signed (kept, and the one to roll
    /// back to), so re-signs never push real revisions out of the bound.
    pub(super) fn forget_resigns(&self, inner: &mut Inner) {
        let keep = Self::in_use(inner);
        self.drop_revisions(inner, |h| {
            h.reason.starts_with(RESIGN_REASON) && !keep.contains(&h.seq)
        });
    }

    /// Drops the history lines `dropped` picks, and their files.
    fn drop_revisions(&self, inner: &mut Inner, dropped: impl Fn(&HistoryEntry) -> bool) {
        let (dropped, kept): (Vec<HistoryEntry>, Vec<HistoryEntry>) =
            inner.history.iter().cloned().partition(|h| dropped(h));
        if dropped.is_empty() {
            return;
        }
        if let Err(e) = self.backend.rewrite_history(&kept) {
            tracing::error!(error = %e, "cannot write the history: nothing pruned");
            return;
        }
        inner.history = kept;
        for h in &dropped {
            self.backend.remove_revision(h.seq);
        }
        tracing::info!(
            pruned = dropped.len(),
            oldest_kept = inner.history.first().map_or(0, |h| h.seq),
            "org revisions pruned"
        );
    }

    /// Why `revision` is not in the history: pruned (a revision name whose
    /// number is below the newest one's: numbers run without gaps) or
    /// never published.
    pub(super) fn no_revision(inner: &Inner, revision: &str) -> RevisionError {
        let seq = revision
            .strip_prefix('r')
            .and_then(|r| r.split_once('-'))
            .and_then(|(n, _)| n.parse::<u64>().ok());
        let newest = inner.history.last().map_or(0, |h| h.seq);
        RevisionError::NoRevision {
            revision: revision.to_owned(),
            pruned: seq.is_some_and(|seq| seq >= 1 && seq < newest),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::rollout::Selector;
    use crate::store::layer_tests::org_store;

    fn select(l: &str) -> Selector {
        Selector(crate::rollout::labels_of(l).unwrap())
    }

    fn seqs(s: &Store) -> Vec<u64> {
        s.history().iter().map(|h| h.seq).collect()
    }

    /// Org revisions past the bound lose their files and history lines,
    /// except the newest, the served ones and the rollout's; a rollback to
    /// one answers that it was pruned; a restart finds what was kept.
    #[test]
    fn org_revisions_are_bounded() {
        let (d, mut s) = org_store();
        s.org_revisions = 3;
        let r1 = s.current().unwrap().revision.clone();
        // r2 served to env=prod, then r3..r7 to env=dev (each replacing
        // the one before): r1, r2 and r7 are served.
        let r2 = s
            .publish_source_to("test", true, select("env=prod"))
            .unwrap()
            .unwrap()
            .revision
            .clone();
        let mut dev = Vec::new();
        for _ in 0..5 {
            let p = s
                .publish_source_to("test", true, select("env=dev"))
                .unwrap()
                .unwrap();
            dev.push(p.revision.clone());
        }
        assert_eq!(seqs(&s), [1, 2, 5, 6, 7]);
        let state = d.path().join("state");
        let lines = std::fs::read_to_string(state.join("history.jsonl")).unwrap();
        let on_disk: Vec<u64> = lines
            .lines()
            .map(|l| serde_json::from_str::<HistoryEntry>(l).unwrap().seq)
            .collect();
        assert_eq!(on_disk, [1, 2, 5, 6, 7]);
        for seq in 1..=7u64 {
            let kept = [1, 2, 5, 6, 7].contains(&seq);
            for what in ["tar.gz", "src.tar.gz"] {
                let f = state.join("revisions").join(format!("{seq:08}.{what}"));
                assert_eq!(f.exists(), kept, "{}", f.display());
            }
        }
        // A rollback to a pruned revision says so; to an unknown one, not.
        let e = s.rollback("test", &dev[0]).unwrap_err().to_string();
        assert!(e.contains("no such revision (pruned)"), "{e}");
        assert!(s
            .revision_files(&dev[1])
            .unwrap_err()
            .to_string()
            .contains("pruned"));
        let e = s.rollback("test", "r99-deadbeef").unwrap_err().to_string();
        assert!(!e.contains("pruned") && e.contains("no revision"), "{e}");
        // A restart finds the kept revisions, serves the same ones and
        // rolls back to a kept one.
        let src = d.path().join("source");
        drop(s);
        let mut s = Store::open(&state, &src, None).unwrap();
        s.org_revisions = 3;
        assert_eq!(seqs(&s), [1, 2, 5, 6, 7]);
        let labels = |l: &str| crate::rollout::labels_of(l).unwrap();
        assert_eq!(
            s.for_gateway("a", &labels("env=prod")).unwrap().revision,
            r2
        );
        assert_eq!(
            s.for_gateway("b", &labels("env=dev")).unwrap().revision,
            dev[4]
        );
        assert_eq!(s.for_gateway("c", &labels("env=x")).unwrap().revision, r1);
        let p = s.rollback("test", &dev[2]).unwrap();
        assert_eq!(p.seq, 8);
        // A rollback for everyone serves only r8 (r1, r2 were still served
        // when it was built): they go at the next build.
        assert_eq!(seqs(&s), [1, 2, 6, 7, 8]);
        s.publish_source("test", true).unwrap();
        assert_eq!(seqs(&s), [7, 8, 9]);
    }
}
