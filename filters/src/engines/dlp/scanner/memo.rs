//! Short strings a scanner already found clean, remembered so that the
//! same text is not scanned again: the values that come back on every call
//! (a session id written into each audit record, `MCP-Protocol-Version:
//! 2025-06-18` among the headers, a method or tool name) cost a full scan
//! each time otherwise — a UUID-like id is read as base64, base32 and hex
//! from several offsets, about a microsecond.
//!
//! What is remembered is only "this exact text, scanned this way, found
//! nothing": a scan is a pure function of the scanner (one bundle's
//! detectors, built once and never changed) and the text, so the memo
//! lives and dies with its scanner and a new bundle starts empty. A text
//! is known by a 128-bit fingerprint: two SipHash values of it (each with
//! its own leading byte) under a key drawn at random when the scanner is
//! built. Telling a text that holds a secret for a remembered clean one
//! would take a collision of a keyed hash the client never sees. Its size is fixed ([`SLOTS`] slots of 16 bytes, 16 KiB per
//! scanner) and a newer text overwrites an older one in its slot; only
//! texts up to [`MAX_LEN`] bytes are remembered.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots of the memo (a power of two).
pub(super) const SLOTS: usize = 1024;

/// The longest text remembered: ids, header lines, names. Longer text is
/// rarely repeated exactly and costs a scan in proportion anyway.
pub(super) const MAX_LEN: usize = 128;

/// Which scan found the text clean: each is remembered on its own.
#[derive(Clone, Copy)]
pub(super) enum Scan {
    /// [`super::Scanner::scan_str`].
    Resolved = 1,
    /// [`super::Scanner::scan_str_all`].
    All = 2,
}

pub(super) struct Memo {
    key: std::hash::RandomState,
    /// Each slot: the two halves of a fingerprint, written in that order.
    /// A read that races a write may see one half of each text; it then
    /// matches neither unless one 64-bit keyed half collides, so a torn
    /// slot is a miss.
    slots: Box<[[AtomicU64; 2]]>,
}

impl Memo {
    pub(super) fn new() -> Memo {
        Memo {
            key: std::hash::RandomState::new(),
            slots: (0..SLOTS)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
        }
    }

    /// The fingerprint of `s` scanned as `scan`; `None` when too long.
    pub(super) fn key(&self, s: &str, scan: Scan) -> Option<(u64, u64)> {
        if s.len() > MAX_LEN {
            return None;
        }
        let half = |which: u8| {
            let mut h = self.key.build_hasher();
            h.write_u8(which);
            h.write_u8(scan as u8);
            h.write(s.as_bytes());
            // Never 0, which an empty slot holds.
            h.finish() | 1
        };
        Some((half(1), half(2)))
    }

    fn slot(&self, key: (u64, u64)) -> &[AtomicU64; 2] {
        &self.slots[(key.1 >> 1) as usize & (SLOTS - 1)]
    }

    /// Whether the text of `key` was found clean.
    pub(super) fn clean(&self, key: (u64, u64)) -> bool {
        let [a, b] = self.slot(key);
        a.load(Ordering::Relaxed) == key.0 && b.load(Ordering::Relaxed) == key.1
    }

    /// Remembers the text of `key` as clean.
    pub(super) fn remember(&self, key: (u64, u64)) {
        let [a, b] = self.slot(key);
        a.store(key.0, Ordering::Relaxed);
        b.store(key.1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_remembered_for_its_own_scan_only() {
        let m = Memo::new();
        let k = m
            .key("mcp-session-id: 3f2a9c1e", Scan::Resolved)
            .expect("short");
        assert!(!m.clean(k));
        m.remember(k);
        assert!(m.clean(k));
        let all = m.key("mcp-session-id: 3f2a9c1e", Scan::All).expect("short");
        assert!(!m.clean(all), "the other scan has not seen it");
        let other = m
            .key("mcp-session-id: 3f2a9c1f", Scan::Resolved)
            .expect("short");
        assert!(!m.clean(other));
        assert!(m.key(&"a".repeat(MAX_LEN + 1), Scan::Resolved).is_none());
    }

    #[test]
    fn two_memos_fingerprint_differently() {
        let (a, b) = (Memo::new(), Memo::new());
        assert_ne!(
            a.key("x", Scan::All),
            b.key("x", Scan::All),
            "keys are drawn per scanner"
        );
    }
}
