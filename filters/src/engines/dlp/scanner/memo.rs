//! Short strings a scanner already found clean, remembered so that the
//! same text is not scanned again: the values that come back on every call
//! (a session id written into each audit record, `MCP-Protocol-Version:
//! 2025-06-18` among the headers, a method or tool name) cost a full scan
//! each time otherwise — a UUID-like id is read as base64, base32 and hex
//! from several offsets, about 1.8 µs.
//!
//! What is remembered is only "this exact text, scanned this way, found
//! nothing": a scan is a pure function of the scanner (one bundle's
//! detectors, built once and never changed) and the text, so the memo
//! lives and dies with its scanner and a new bundle starts empty. A text
//! is known by its 128-bit SipHash-2-4 under a key of 16 random bytes
//! drawn from the system when the scanner is built: telling a text that
//! holds a secret for a remembered clean one would take a collision of a
//! keyed hash whose values never leave the process. Its size is fixed
//! ([`SLOTS`] slots of 16 bytes, 16 KiB per scanner); a newer text
//! overwrites an older one in its slot; only texts up to [`MAX_LEN`] bytes
//! are remembered.
//!
//! What a client can learn from it: whether a short text was scanned
//! clean lately (a remembered one is answered about 1.7 µs sooner). The
//! first probe of a text also remembers it, so each guess can be timed
//! once, against the network's jitter of tens of microseconds.

use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};

use siphasher::sip128::{Hasher128, SipHasher24};

/// Slots of the memo (a power of two).
const SLOTS: usize = 1024;

/// The longest text remembered: ids, header lines, names. Longer text is
/// rarely repeated exactly and costs a scan in proportion anyway.
const MAX_LEN: usize = 128;

/// Which scan found the text clean: each is remembered on its own.
#[derive(Clone, Copy)]
pub(super) enum Scan {
    /// [`super::Scanner::scan_str`].
    Resolved = 1,
    /// [`super::Scanner::scan_str_all`].
    All = 2,
}

pub(super) struct Memo {
    key: [u8; 16],
    /// Each slot: the two halves of a fingerprint, written in that order.
    /// Writers that race may leave a slot with one half of each of two
    /// texts; it then matches neither (a third text would need both
    /// halves of its keyed hash to collide), so such a slot only misses.
    slots: Box<[[AtomicU64; 2]]>,
}

impl Memo {
    pub(super) fn new() -> Memo {
        let mut key = [0u8; 16];
        // Without the system's randomness no text is ever remembered
        // (every slot stays empty and every text is scanned).
        let usable =
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).is_ok();
        let slots = if usable { SLOTS } else { 0 };
        Memo {
            key,
            slots: (0..slots)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
        }
    }

    /// The fingerprint of `s` scanned as `scan`; `None` when too long.
    pub(super) fn key(&self, s: &str, scan: Scan) -> Option<(u64, u64)> {
        if s.len() > MAX_LEN || self.slots.is_empty() {
            return None;
        }
        let mut h = SipHasher24::new_with_key(&self.key);
        h.write_u8(scan as u8);
        h.write(s.as_bytes());
        let f = h.finish128();
        // Never 0, which an empty slot holds.
        Some((f.h1 | 1, f.h2 | 1))
    }

    fn slot(&self, key: (u64, u64)) -> &[AtomicU64; 2] {
        &self.slots[(key.1 >> 1) as usize & (self.slots.len() - 1)]
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
    fn each_memo_draws_its_own_key() {
        let (a, b) = (Memo::new(), Memo::new());
        assert_ne!(a.key, b.key);
        assert_ne!(a.key("x", Scan::All), b.key("x", Scan::All));
    }
}
