//! Diagnostics: the edit distance near names are found by, and the few
//! evaluation errors shown on stderr.

use std::sync::atomic::{AtomicU64, Ordering};

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Evaluation errors are policy bugs; they deny, and the first few details go
/// to stderr (filters have no logging dependency; the audit has the reason).
pub(super) fn tracing_free_log(msg: &str) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 32 {
        eprintln!("warden: policy evaluation error (denied): {msg}");
    }
}
