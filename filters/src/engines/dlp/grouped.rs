//! Text written in groups: a key set out in blocks (`AKIA IOSF ODNN 7EXA
//! MPLE`), a hex dump (`41 4b 49 41 …`, `41:4b:…`, `\x41\x4b…`, `0x41,
//! 0x4b, …`), base64 wrapped in lines shorter than a run or set apart in
//! groups by spaces. A reader (or the model) reads the groups as one word,
//! so the scanner reads them joined: a run of at least [`MIN_GROUPS`]
//! groups of one length (the last may be shorter), at least two characters
//! each, each set apart from the next by as many (one to [`MAX_GAP`])
//! separators, joined at least [`MIN_JOINED`] characters long, with a
//! letter next to a digit somewhere (prose has none). The joined text is
//! scanned as it is and for the encodings it may be (hex, base64).

use super::normalise::View;

/// The fewest groups in a run.
pub(crate) const MIN_GROUPS: usize = 3;

/// The most separators between two groups (`41 4b`, `41, 4b`, `41 , 4b`).
pub(crate) const MAX_GAP: usize = 3;

/// The least length of a run's groups joined (a key's shortest form).
pub(crate) const MIN_JOINED: usize = 12;

/// A byte of a group: letters, digits and base64's `+/=`.
fn group_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

/// A byte between groups.
fn separator(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\n' | b'\r' | b':' | b',' | b'.' | b'-' | b'_' | b'|' | b';' | b'\\'
    )
}

/// The length of a hex group's prefix (`x41` after a backslash, `0x41`).
fn hex_prefix(g: &[u8]) -> usize {
    let digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_hexdigit);
    match g {
        [b'0', b'x' | b'X', d @ ..] if digits(d) => 2,
        [b'x' | b'X', d @ ..] if digits(d) => 1,
        _ => 0,
    }
}

/// The groups of `b`: `(start, end)` of each maximal run of group bytes.
/// With `json`, `b` is raw JSON: the byte after a backslash is an escape's
/// letter, no part of a group, and the pair is one separator.
fn groups(b: &[u8], json: bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if json && b[i] == b'\\' {
            i += if b.get(i + 1) == Some(&b'u') { 6 } else { 2 };
            continue;
        }
        if !group_byte(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && group_byte(b[i]) {
            i += 1;
        }
        out.push((start, i));
    }
    out
}

/// The gap from the end of one group to the start of the next, when it is
/// one to [`MAX_GAP`] separators (an escape pair of raw JSON counting as
/// one).
fn gap(b: &[u8], from: usize, to: usize, json: bool) -> Option<&[u8]> {
    let g = &b[from..to];
    let mut n = 0;
    let mut i = 0;
    while i < g.len() {
        if json && g[i] == b'\\' {
            i += 2;
        } else if separator(g[i]) {
            i += 1;
        } else {
            return None;
        }
        n += 1;
    }
    (1..=MAX_GAP).contains(&n).then_some(g)
}

/// The byte offsets of `b` a joined reading leaves out: the separators
/// between the groups of each run and the prefixes of hex groups.
fn drops(b: &[u8], json: bool) -> Vec<usize> {
    let gs = groups(b, json);
    let mut drop = Vec::new();
    let mut i = 0;
    while i + 1 < gs.len() {
        let (s0, e0) = gs[i];
        let len = e0 - s0;
        let pairs = |&(s, e): &(usize, usize)| {
            let g = &b[s + hex_prefix(&b[s..e])..e];
            g.len().is_multiple_of(2) && g.iter().all(u8::is_ascii_hexdigit)
        };
        let Some(sep) = gap(b, e0, gs[i + 1].0, json).filter(|_| len >= 2) else {
            i += 1;
            continue;
        };
        // Groups of `len` set apart by gaps as long as `sep` (`AKIA-IOSF
        // ODNN-…`, a period the prefilter sees); the last may be shorter.
        let mut j = i + 1;
        loop {
            let (s, e) = gs[j];
            if e - s > len {
                j -= 1;
                break;
            }
            let next = gs
                .get(j + 1)
                .filter(|_| e - s == len)
                .and_then(|&(s1, _)| gap(b, e, s1, json));
            if next.map(<[u8]>::len) != Some(sep.len()) {
                break;
            }
            j += 1;
        }
        // A word before or after a hex dump (`is 41 4b …`, `… 4c 45 x`)
        // is no part of it: where a run holds a dump, the dump is the run.
        let mut run = &gs[i..=j];
        let mut best = (0, 0);
        let mut from = 0;
        for (k, g) in run.iter().enumerate() {
            if !pairs(g) {
                from = k + 1;
            } else if k + 1 - from > best.1 - best.0 {
                best = (from, k + 1);
            }
        }
        if best.1 - best.0 >= MIN_GROUPS {
            run = &run[best.0..best.1];
        }
        let hex = run.iter().all(|&(s, e)| hex_prefix(&b[s..e]) > 0);
        let prefix = |s: usize, e: usize| if hex { hex_prefix(&b[s..e]) } else { 0 };
        let joined: usize = run.iter().map(|&(s, e)| e - s - prefix(s, e)).sum();
        let marked = run.iter().any(|&(s, e)| {
            b[s..e].windows(2).any(|w| {
                (w[0].is_ascii_digit() && w[1].is_ascii_alphabetic())
                    || (w[0].is_ascii_alphabetic() && w[1].is_ascii_digit())
            })
        });
        if run.len() >= MIN_GROUPS && joined >= MIN_JOINED && marked {
            for (k, &(s, e)) in run.iter().enumerate() {
                drop.extend(s..s + prefix(s, e));
                if let Some(&(next, _)) = run.get(k + 1) {
                    drop.extend(e..next);
                }
            }
            i = j + 1;
        } else {
            // A run starting inside this one is part of it, and no more
            // of a run: the next may start at its last group, which may
            // be of another length. (Linear in the groups, whatever the
            // text.)
            i = j.max(i + 1);
        }
    }
    drop
}

/// The view of `s` with the groups of each run joined (`AKIA IOSF ODNN
/// 7EXA MPLE` reads as `AKIAIOSFODNN7EXAMPLE`, `\x41\x4b…` as `414b…`).
/// `None` when `s` holds no run.
pub(crate) fn view(s: &str) -> Option<View> {
    let drop = drops(s.as_bytes(), false);
    if drop.is_empty() {
        return None;
    }
    Some(View::without(s, &drop))
}

/// Whether `b` may hold a run of groups (see [`view`]).
pub(crate) fn may_be_grouped(b: &[u8]) -> bool {
    !drops(b, false).is_empty()
}

/// [`may_be_grouped`] of a raw JSON message, whose escapes (`\n`, `\\`)
/// are separators.
pub(crate) fn may_be_grouped_json(b: &[u8]) -> bool {
    !drops(b, true).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(s: &str) -> Option<String> {
        view(s).map(|v| v.text)
    }

    #[test]
    fn runs_of_groups_are_read_joined() {
        for (s, want) in [
            (
                "key AKIA IOSF ODNN 7EXA MPLE, end",
                "key AKIAIOSFODNN7EXAMPLE, end",
            ),
            // A last group no longer than the others is one of them.
            (
                "key AKIA IOSF ODNN 7EXA MPLE end",
                "key AKIAIOSFODNN7EXAMPLEend",
            ),
            ("41 4b 49 41 49 4f 53 46", "414b4941494f5346"),
            ("41:4b:49:41:49:4f", "414b4941494f"),
            ("\\x41\\x4b\\x49\\x41\\x49\\x4f", "\\414b4941494f"),
            ("0x41, 0x4b, 0x49, 0x41, 0x49, 0x4f", "414b4941494f"),
            ("AKIA-IOSF ODNN-7EXA MPLE", "AKIAIOSFODNN7EXAMPLE"),
            (
                "QUtJQUlP\nU0ZPRE5O\nN0VYQU1Q\nTEU=",
                "QUtJQUlPU0ZPRE5ON0VYQU1QTEU=",
            ),
        ] {
            assert_eq!(joined(s).as_deref(), Some(want), "{s:?}");
        }
    }

    #[test]
    fn prose_dates_and_ids_are_not_runs() {
        for s in [
            "the cat sat on the mat",
            "and the cat was here",
            "2024-01-15 12:30:45",
            "call 555 123 4567",
            "A B C D E F G H I J K L M",
            "one two six ten",
        ] {
            assert_eq!(joined(s), None, "{s:?}");
        }
    }

    /// Hundreds of thousands of groups that are no run (no letter beside
    /// a digit) or one long run: each group is looked at a bounded number
    /// of times (this took minutes when every group started a new look).
    #[test]
    fn long_texts_of_groups_are_read_in_one_pass() {
        let plain = "ab ".repeat(200_000);
        assert!(!may_be_grouped(plain.as_bytes()));
        let marked = format!("{plain}a1");
        assert!(may_be_grouped(marked.as_bytes()));
        let hex = "4b ".repeat(200_000);
        assert_eq!(view(&hex).map(|v| v.text.len()), Some(400_000 + 1));
    }

    #[test]
    fn json_escapes_are_separators() {
        assert!(may_be_grouped_json(br#""QUtJQUlP\nU0ZPRE5O\nN0VYQU1Q""#));
        assert!(!may_be_grouped(br#""QUtJQUlP\nU0ZPRE5O\nN0VYQU1Q""#));
    }
}
