//! Unit tests of the prefilter: digit runs, word starts, long runs.

use super::*;

fn digits_only(min: usize) -> Prefilter {
    let mut p = Prefilter::new();
    p.add(0, &Trigger::Digits(min)).unwrap_or_default();
    assert_eq!(p.digit_counts(), [(0, min)]);
    p.add(1, &Trigger::DottedQuad).unwrap_or_default();
    p.add(2, &Trigger::ConsecutiveDigits(8)).unwrap_or_default();
    p.finish().unwrap_or_default();
    p
}

fn cands(p: &Prefilter, s: &[u8]) -> Vec<Cand> {
    let mut out = Vec::new();
    p.run(s, &mut out);
    out
}

/// Review: a backslash ending the text took the padding after it for its
/// escape's letter, and a run of digits before it ended past the text.
#[test]
fn a_run_ends_inside_the_text() {
    let p = digits_only(9);
    for pad in 0..70 {
        for tail in ["\\", "\\\\", " \\", "-\\"] {
            let s = format!("{}0123456789{tail}", "x".repeat(pad));
            for c in cands(&p, s.as_bytes()) {
                assert!(c.end <= s.len(), "{s:?}: {c:?}");
            }
        }
    }
}

#[test]
fn digit_runs_cross_blocks_and_escapes() {
    let p = digits_only(9);
    // Runs at every offset around the 64-byte block edge.
    for pad in 50..70 {
        let mut s = vec![b'x'; pad];
        s.extend_from_slice(b" 4111 1111-1111.1111 ");
        let c = cands(&p, &s);
        let run = c.iter().find(|c| c.det == DIGIT_GROUP).expect("run found");
        // The leading space belongs to the run unless it ends a block.
        assert!((pad..=pad + 1).contains(&run.start), "pad {pad}: {run:?}");
        assert_eq!(run.end, pad + 21, "pad {pad}");
    }
    // A JSON `\n` joins digits as whitespace would.
    assert!(cands(&p, br#"(555)\n123-4567"#)
        .iter()
        .any(|c| c.det == DIGIT_GROUP));
    // Dates and versions are not runs of nine.
    assert!(cands(&p, b"on 2026-11-02 covered 1.8.3 ships").is_empty());
    assert!(cands(&p, b"host 10.0.0.1 up").iter().any(|c| c.det == 1));
    // The shortest dotted quad, seven bytes, at every place of a block.
    for pad in 0..70 {
        let s = format!("{}ip=1.2.3.4;up", "x".repeat(pad));
        assert!(cands(&p, s.as_bytes()).iter().any(|c| c.det == 1), "{s}");
    }
    assert!(cands(&p, b"id 12345678A").iter().any(|c| c.det == 2));
    assert!(!cands(&p, b"id 1234567A").iter().any(|c| c.det == 2));
    // Digits a match cannot join (no pattern lets eight separators sit
    // between its digits) are not counted together …
    let mut s = b"1234".to_vec();
    s.extend(std::iter::repeat_n(b' ', 130));
    s.extend_from_slice(b"56789");
    assert!(!cands(&p, &s).iter().any(|c| c.det == DIGIT_GROUP));
    // … but a match straddling two blocks is, whatever its separators.
    for sep in [&b"\\n"[..], b")\\t", b"\xc2\xa0", b" "] {
        for pad in 52..64 {
            let mut s = vec![b'x'; pad];
            s.extend_from_slice(b"(555");
            s.extend_from_slice(sep);
            s.extend_from_slice(b"123-4567 and more text");
            assert!(
                cands(&p, &s).iter().any(|c| c.det == DIGIT_GROUP),
                "pad {pad} sep {sep:?}"
            );
        }
    }
}

/// Text of digits, digit-run separators and other bytes in the given
/// proportions.
fn numbers_text(
    digits: u32,
    separators: u32,
    others: u32,
) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        proptest::prop_oneof![
            digits => proptest::sample::select(b"0123456789".to_vec()),
            separators => proptest::sample::select(b" -./_()\\n|%".to_vec()),
            others => proptest::sample::select(b"abcXYZ+=:\"".to_vec()),
        ],
        0..400,
    )
}

/// The candidates of `b` with numbers read only where they can count
/// are those of reading every number.
fn only_counting_numbers_read(
    b: &[u8],
    min: usize,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let p = digits_only(min);
    let fast = cands(&p, b);
    FULL_RUNS.with(|r| r.set(true));
    let full = cands(&p, b);
    FULL_RUNS.with(|r| r.set(false));
    proptest::prop_assert_eq!(fast, full);
    Ok(())
}

proptest::proptest! {
    /// Reading a block's numbers only inside spans of `ds` bytes long
    /// enough to give a candidate, and at the block's edges, finds exactly
    /// the candidates a look at every number finds: text dense in digits,
    /// separators and letters, across block edges, for every count.
    #[test]
    fn numbers_at_the_edges_are_all_that_can_count(b in numbers_text(6, 3, 4), min in 1usize..12) {
        only_counting_numbers_read(&b, min)?;
    }

    /// The same where digits are few (base64, tokens, prose with ids):
    /// most numbers are passed over there.
    #[test]
    fn numbers_at_the_edges_are_all_that_can_count_in_sparse_text(
        b in numbers_text(2, 1, 12),
        min in 1usize..12,
    ) {
        only_counting_numbers_read(&b, min)?;
    }
}

#[test]
fn word_starts_and_escapes() {
    let mut p = Prefilter::new();
    p.add(0, &Trigger::Word(&["secret_access"]))
        .unwrap_or_default();
    p.add(1, &Trigger::WordExact(&["SK"], After::LowerHex(4)))
        .unwrap_or_default();
    p.add(2, &Trigger::Word(&["[inst]"])).unwrap_or_default();
    p.finish().unwrap_or_default();
    let hit = |s: &[u8], det| cands(&p, s).iter().any(|c| c.det == det);
    assert!(hit(b"x SECRET_ACCESS_KEY", 0));
    assert!(hit(br#"a\nsecret_access"#, 0), "after a JSON escape");
    assert!(!hit(b"mysecret_access", 0), "inside a word");
    assert!(hit(b"SKabcd", 1));
    assert!(!hit(b"skabcd", 1), "exact case");
    assert!(!hit(b"SKabcX", 1));
    assert!(hit(b"[INST] do", 2));
    let mut out = Vec::new();
    assert!(p.run(br#"x\u0041"#, &mut out).escaped);
    assert!(p.run(br#"https:\/\/x"#, &mut out).escaped);
    assert!(!p.run(br#"a\"b\\c\n"#, &mut out).escaped);
    // Non-ASCII bytes anywhere, the padded tail included.
    for pad in [0, 1, 63, 64, 65, 130] {
        let mut s = vec![b'x'; pad];
        assert!(!p.run(&s, &mut out).non_ascii, "{pad}");
        s.extend_from_slice("\u{a0}".as_bytes());
        s.extend_from_slice(&vec![b'y'; pad]);
        assert!(p.run(&s, &mut out).non_ascii, "{pad}");
    }
}

#[test]
fn long_runs_of_word_bytes_anywhere() {
    assert!(has_run(0xFFFF, 16) && !has_run(0x7FFF, 16) && has_run(u64::MAX, 64));
    assert!(has_run(0b1011_0111, 3) && !has_run(0b1011_0110, 3));
    let mut p = Prefilter::new();
    p.finish().unwrap_or_default();
    let mut out = Vec::new();
    assert!(!p.run(&[b'a'; 200], &mut out).long_run, "not watched");
    for n in [16, 40, 64, 100] {
        p.watch_runs(n);
        let n = n.min(64);
        // A run of n (letters, digits, `-._=`) at every offset, so that
        // it starts, ends and straddles blocks; one byte less is none.
        for pad in 0..150 {
            for (len, long) in [(n, true), (n - 1, false)] {
                let mut s: Vec<u8> = b"a b ".iter().copied().cycle().take(pad).collect();
                s.push(b' ');
                s.extend(b"Az09-._=".iter().copied().cycle().take(len));
                s.extend_from_slice(b"/x y");
                assert_eq!(
                    p.run(&s, &mut out).long_run,
                    long,
                    "n {n} len {len} pad {pad}"
                );
            }
        }
    }
}

/// The chain as it was first written: each step shifts by two to seven.
fn spaced_chain_loop(single: u64) -> bool {
    let mut chain = single;
    for _ in 1..6 {
        let mut next = 0;
        for k in 2..=7 {
            next |= chain >> k;
        }
        chain = single & next;
    }
    chain != 0
}

proptest::proptest! {
    /// Review: the shift-spreading formula (and its six-bit gate) is the
    /// loop, on dense, sparse and very sparse masks alike.
    #[test]
    fn spaced_chain_is_the_shift_loop(a: u64, b: u64, c: u64, d: u64) {
        for single in [a, a & b, a & b & c, a & b & c & d, a & !(a << 1) & !(a >> 1)] {
            proptest::prop_assert_eq!(spaced_chain(single), spaced_chain_loop(single), "{:#066b}", single);
        }
    }
}

/// Review: every mask of six bits whose gaps are one to eight (the
/// edges of the two-to-seven window) agrees with the loop.
#[test]
fn spaced_chain_edges() {
    for gaps in 0..8u32.pow(5) {
        let mut single = 1u64;
        let mut at = 0;
        let mut g = gaps;
        for _ in 0..5 {
            at += 1 + g % 8;
            g /= 8;
            single |= 1 << at;
        }
        for shift in [0, 63 - at] {
            let s = single << shift;
            assert_eq!(spaced_chain(s), spaced_chain_loop(s), "{s:#066b}");
        }
    }
}

/// What `lone_tail` answers, read byte by byte down from the lone digit
/// (bit `i` of `g` set: a group byte), as its documentation states it.
fn lone_tail_spec(g: u128, q: u32, whole: bool) -> bool {
    let set = |i: i64| i >= 0 && (g >> i) & 1 == 1;
    // The group before `at` past a gap of one to six bytes; `Err(may)`
    // where there is none (`may`: the window ends first, and the text
    // does not start there).
    let group_before = |at: i64| -> Result<(i64, i64), bool> {
        let mut i = at - 1;
        while i >= 0 && !set(i) {
            i -= 1;
        }
        if i < 0 {
            return Err(!whole);
        }
        if !(1..=6).contains(&(at - 1 - i)) {
            return Err(false);
        }
        let end = i;
        while set(i) {
            i -= 1;
        }
        if i < 0 && !whole {
            return Err(true);
        }
        Ok((i + 1, end - i))
    };
    let (start, len) = match group_before(q as i64) {
        Ok(found) => found,
        Err(may) => return may,
    };
    if len < 2 {
        return false;
    }
    group_before(start).map_or_else(|may| may, |(_, prev)| prev == len)
}

proptest::proptest! {
    /// Review: the two-halves scans answer as the byte-by-byte reading,
    /// for every lone digit position, on dense and sparse windows, whole
    /// or not.
    #[test]
    fn lone_tail_halves_are_the_byte_reading(a: u128, b: u128, c: u128) {
        for groups in [a, a & b, a | b, a & b & c, a & !(a << 1), !0, 0] {
            for q in 64..128 {
                for whole in [false, true] {
                    proptest::prop_assert_eq!(
                        lone_tail(groups as u64, (groups >> 64) as u64, q, whole),
                        lone_tail_spec(groups, q, whole),
                        "{:#0130b} q={} whole={}", groups, q, whole
                    );
                }
            }
        }
    }
}

/// Review: runs of groups of every length (1–9) and gap (1–7) ending
/// before a lone digit at every position agree with the byte-by-byte
/// reading;
/// first groups of 30, 50 and 70 bytes reach the window's first bit and
/// run past it (cut off there).
#[test]
fn lone_tail_runs_agree() {
    for len_a in (1..=9u32).chain([30, 50, 70]) {
        for len_b in 1..=9u32 {
            for gap_a in 1..=7u32 {
                for gap_b in 1..=7u32 {
                    for q in 64..128u32 {
                        let mut g = 0u128;
                        let end_b = q as i64 - gap_b as i64 - 1;
                        let start_b = end_b - len_b as i64 + 1;
                        let end_a = start_b - gap_a as i64 - 1;
                        let start_a = end_a - len_a as i64 + 1;
                        for i in start_a.max(0)..=end_b {
                            if i >= 0 && (i <= end_a || i >= start_b) {
                                g |= 1u128 << i;
                            }
                        }
                        g |= 1u128 << q;
                        for whole in [false, true] {
                            assert_eq!(
                                lone_tail(g as u64, (g >> 64) as u64, q, whole),
                                lone_tail_spec(g, q, whole),
                                "{g:#0130b} q={q} whole={whole}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The scalar separator is the block's: the windows count runs as the
/// prefilter does.
#[test]
fn the_digit_separator_is_the_blocks() {
    for b in 0..=255u8 {
        let block = [b; 72];
        let marked = separators(&block) & 1 == 1;
        assert_eq!(digit_separator(b), marked, "{b:#04x}");
    }
    assert_eq!(most_digits_in_a_run(b"ab 123-45-6789 x 12"), 9);
    assert_eq!(most_digits_in_a_run(b"(555) 123-4567"), 10);
    assert_eq!(most_digits_in_a_run(b"4111\n1111 1111 1111"), 16);
    assert_eq!(most_digits_in_a_run(b"c884917631e"), 9);
    assert_eq!(most_digits_in_a_run(b"12a34"), 2);
}
