//! The SIMD half of the prefilter: one 64-byte block (plus 8 bytes of
//! look-ahead) classified into bit masks — word bytes, digits, dots,
//! escapes, separators — and the bit tricks the prefilter asks of them.

use wide::u8x32 as V;

/// The masks every block needs.
pub(super) struct Masks {
    pub(super) alpha: u64,
    pub(super) digit: u64,
    /// Letters, digits and `-._=`: what an anchor's first three bytes are.
    pub(super) word: u64,
    pub(super) dot: u64,
    /// Bytes with a look-around check (backslash included).
    pub(super) special: u64,
    /// Bytes outside ASCII (the high bits themselves).
    pub(super) high: u64,
    /// `+/=`: group bytes besides letters and digits (see `grouped`).
    pub(super) extra: u64,
}

/// `lo <= x <= hi` per byte: subtract, then an unsigned min (SSE2 `pminub`).
#[inline(always)]
pub(super) fn range(x: V, lo: u8, hi: u8) -> V {
    let d = x - V::splat(lo);
    d.min(V::splat(hi - lo)).simd_eq(d)
}

/// `x >= lo` per byte (SSE2 `pmaxub`).
#[inline(always)]
pub(super) fn at_or_above(x: V, lo: u8) -> V {
    x.max(V::splat(lo)).simd_eq(x)
}

#[inline(always)]
pub(super) fn eq(x: V, b: u8) -> V {
    x.simd_eq(V::splat(b))
}

/// One mask per 32-byte lane of the block (AVX2 where the build targets
/// it, two SSE2 halves otherwise), joined into 64 bits.
#[inline(always)]
pub(super) fn lanes<const N: usize>(c: &[u8; 72], f: impl Fn(V) -> [V; N]) -> [u64; N] {
    let mut m = [0u64; N];
    for (k, part) in c[..64].chunks_exact(32).enumerate() {
        let mut lane = [0u8; 32];
        lane.copy_from_slice(part);
        for (acc, v) in m.iter_mut().zip(f(V::new(lane))) {
            *acc |= (v.to_bitmask() as u64) << (32 * k);
        }
    }
    m
}

#[inline(always)]
pub(super) fn masks(c: &[u8; 72]) -> Masks {
    let [alpha, digit, word, dot, special, high, extra] = lanes(c, |x| {
        // `:;<=>?@` in one range (`;>?` are let through and ignored).
        // The lead bytes of the characters `specials` reads (zero-width
        // spaces and joiners, the byte-order mark, tag characters) and
        // no other: CJK text's lead bytes (0xE3–0xE9) are a third of it.
        let special = range(x, b':', b'@')
            | eq(x, b'!')
            | eq(x, b'#')
            | eq(x, b'+')
            | eq(x, b'\\')
            | eq(x, 0xE2)
            | eq(x, 0xEF)
            | eq(x, 0xF3);
        let alpha = range(x | V::splat(0x20), b'a', b'z');
        let digit = range(x, b'0', b'9');
        let dot = eq(x, b'.');
        let word = alpha | digit | range(x, b'-', b'.') | eq(x, b'_') | eq(x, b'=');
        let extra = eq(x, b'+') | eq(x, b'/') | eq(x, b'=');
        [alpha, digit, word, dot, special, x, extra]
    });
    Masks {
        alpha,
        digit,
        word,
        dot,
        special,
        high,
        extra,
    }
}

/// Backslashes (only looked for where special bytes are).
pub(super) fn backslashes(c: &[u8; 72]) -> u64 {
    let [b] = lanes(c, |x| [eq(x, b'\\')]);
    b
}

/// Digit-run separators (only for blocks with digits to measure): what a
/// card or a percent-encoded number may put between its digits.
pub(super) fn separators(c: &[u8; 72]) -> u64 {
    let [sep] = lanes(c, |x| {
        [eq(x, b' ')
            | range(x, 0x09, 0x0D)
            | range(x, b'(', b')')
            | range(x, b'-', b'/')
            | eq(x, b'_')
            | eq(x, b'|')
            | eq(x, b'%')
            | eq(x, b'\\')
            | at_or_above(x, 0x80)]
    });
    sep
}

/// Whether `x` holds `n` (1..=64) consecutive set bits.
#[inline(always)]
pub(super) fn has_run(x: u64, n: u32) -> bool {
    run_starts(x, n) != 0
}

/// The bits of `x` that begin `n` (1..=64) consecutive set bits: after
/// each step, bit `i` says bits `i..i + have` are all set.
#[inline(always)]
pub(super) fn run_starts(mut x: u64, n: u32) -> u64 {
    let mut have = 1;
    while have < n {
        let s = (n - have).min(have);
        x &= x >> s;
        have += s;
    }
    x
}

/// Whether `n` or more bits are set (without a popcount instruction).
#[inline(always)]
pub(super) fn at_least(mut x: u64, n: usize) -> bool {
    for _ in 1..n {
        x &= x.wrapping_sub(1);
    }
    x != 0
}

/// Bits `lo..hi` set.
#[inline(always)]
pub(super) fn span_mask(lo: u32, hi: u32) -> u64 {
    let upper = if hi >= 64 { u64::MAX } else { (1u64 << hi) - 1 };
    upper & !((1u64 << lo) - 1)
}

/// Whether `single` holds six set bits in a row, each two to seven bits
/// after the last. Most blocks hold fewer than six such bits.
#[inline(always)]
pub(super) fn spaced_chain(single: u64) -> bool {
    if single.count_ones() < 6 {
        return false;
    }
    let mut chain = single;
    for _ in 1..6 {
        // Shifted by two to seven: by two, then spread over the next
        // five bits.
        let a = chain >> 2;
        let b = a | (a >> 1);
        let c = b | (b >> 2);
        chain = single & (c | (b >> 4));
    }
    chain != 0
}

/// The longest period of a run of groups the gate sees: a group of 15
/// (one more is a long run) and three separators, each an escape pair
/// of raw JSON (`\r\n\t`).
const MAX_PERIOD: u32 = 21;

/// Whether `cont` (letters and digits of two blocks, the earlier in the
/// low bits) holds three groups of two or more bytes starting at one
/// period of three to [`MAX_PERIOD`] bytes, and three ending at it too
/// (a run's last group may be shorter, so a run of three groups is seen
/// only when its last is whole; a longer run shows three whole ones):
/// maybe a run of groups (`AKIA IOSF ODNN …`, `41 4b 49 …`, see
/// `grouped`). Three such groups span at most 44 bits, so a window of
/// two blocks, looked at for each block, sees each of them whole. Prose
/// with three words of one length in a row passes; the scanner's reading
/// looks closer.
#[inline(always)]
pub(super) fn periodic(cont: u128) -> bool {
    let starts = cont & !(cont << 1) & (cont >> 1);
    if starts.count_ones() < 3 {
        return false;
    }
    let ends = cont & !(cont >> 1) & (cont << 1);
    for p in 3..=MAX_PERIOD {
        let a = starts & (starts >> p);
        if a & (a >> p) != 0 {
            let e = ends & (ends >> p);
            if e & (e >> p) != 0 {
                return true;
            }
        }
    }
    false
}

/// Bytes a run of groups may hold (see `grouped`): group bytes (letters,
/// digits, `+/=`), separators (`:,.-_|;`, spaces and line breaks, the
/// backslash of an escape) and, as they may read as either once
/// normalised, bytes outside ASCII. Any other byte (`"`, a bracket, `{`)
/// ends a run: no run reaches across it.
pub(super) fn joinable(c: &[u8; 72]) -> u64 {
    let [j] = lanes(c, |x| {
        [range(x | V::splat(0x20), b'a', b'z')
            | range(x, b'0', b'9')
            | range(x, b'+', b'/')
            | range(x, b':', b';')
            | eq(x, b'=')
            | eq(x, b'_')
            | eq(x, b'|')
            | eq(x, b'\\')
            | eq(x, b' ')
            | range(x, 0x09, 0x0D)
            | at_or_above(x, 0x80)]
    });
    j
}

/// Where groups are looked for (see [`periodic`]): letters touching a
/// digit, and letters up to seven bytes from two digits in a row (`AKIA
/// 2345`) either way, with only bytes of `pass` between (see
/// [`joinable`]: a number after a key, `"id":12345`, is no part of a run
/// with it), in a block (`alpha`, `digit`) after the block `prev_alpha`,
/// `prev_digit`, whose bytes all pass. Prose with single digits
/// (`eu-west-1 with 3 replicas`) has none; a run whose last group is one
/// digit is [`lone_tail`]'s.
#[inline(always)]
pub(super) fn mixed_through(
    alpha: u64,
    digit: u64,
    prev_alpha: u64,
    prev_digit: u64,
    pass: u64,
) -> u64 {
    let pairs = digit & (digit >> 1);
    let prev_pairs = prev_digit & ((prev_digit >> 1) | (digit & 1) << 63);
    (alpha & (digit << 1 | digit >> 1))
        | (alpha & near_through(pairs, prev_pairs, pass))
        | (pairs & near_through(alpha, prev_alpha, pass))
}

/// Whether a digit at bit `q` of `groups` (group bytes of two blocks, the
/// earlier in the low bits; `q` in the later) may end a run whose last
/// group is that one digit (`AI za Sy … Ef 5`): before it, past a gap of
/// one to six bytes, a group of two or more bytes, and before that, past
/// another such gap, a group as long. Such a run may hold no letter next
/// to a digit but across its last gap, and no two digits in a row for
/// [`mixed_through`] to see. Where the window ends first it may, unless
/// the text starts there (`whole`). A few bit scans, whatever the text,
/// on the window's two halves (`lo`, `hi`): the same scans on one
/// `u128` cost about twice the instructions (a shift by a variable
/// count and a leading-zero count each take both halves and a select),
/// and a block of prose holds a lone digit every 25 bytes or so.
#[inline]
pub(super) fn lone_tail(lo: u64, hi: u64, q: u32, whole: bool) -> bool {
    // The group before bit `at` past a gap of one to six bytes, as
    // `(start, length)`: `Err(true)` where the window ends first (it
    // may), `Err(false)` where there is none.
    let before = |at: u32| -> Result<(u32, u32), bool> {
        let end = top_below(lo, hi, at).ok_or(!whole)?;
        if !(1..=6).contains(&(at - 1 - end)) {
            return Err(false);
        }
        let start = match top_below(!lo, !hi, end) {
            Some(z) => z + 1,
            None if whole => 0,
            None => return Err(true),
        };
        Ok((start, end - start + 1))
    };
    match before(q) {
        Ok((start, len)) if len >= 2 => match before(start) {
            Ok((_, prev)) => prev == len,
            Err(may) => may,
        },
        Ok(_) => false,
        Err(may) => may,
    }
}

/// The highest set bit below bit `at` (`at <= 128`) of the 128 bits
/// `hi:lo`. Shifting the bits at and above `at` out the top leaves the
/// highest one below it as the leading one.
#[inline(always)]
fn top_below(lo: u64, hi: u64, at: u32) -> Option<u32> {
    if at > 64 {
        let h = hi << (128 - at);
        if h != 0 {
            return Some(at - 1 - h.leading_zeros());
        }
        (lo != 0).then(|| 63 - lo.leading_zeros())
    } else if at == 0 {
        None
    } else {
        let l = lo << (64 - at);
        (l != 0).then(|| at - 1 - l.leading_zeros())
    }
}

/// [`mixed_through`] with every byte passing: a cheap first look (most
/// blocks of prose with single digits show nothing to it).
#[inline(always)]
pub(super) fn mixed(alpha: u64, digit: u64, prev_alpha: u64, prev_digit: u64) -> u64 {
    let pairs = digit & (digit >> 1);
    let prev_pairs = prev_digit & ((prev_digit >> 1) | (digit & 1) << 63);
    (alpha & (digit << 1 | digit >> 1))
        | (alpha & near(pairs, prev_pairs))
        | (pairs & near(alpha, prev_alpha))
}

/// The bits of `x` (a block's mask; `prev`, the block's before) and the
/// seven after each: what lies up to seven bytes after a byte of `x`.
#[inline(always)]
fn near(x: u64, prev: u64) -> u64 {
    let w = ((x as u128) << 64) | prev as u128;
    let a = w | (w << 1);
    let b = a | (a << 2);
    ((b | (b << 4)) >> 64) as u64
}

/// [`near`] through bytes of `pass` only: what lies up to seven bytes
/// after a byte of `x` with no byte outside `pass` between.
#[inline(always)]
fn near_through(x: u64, prev: u64, pass: u64) -> u64 {
    let pass = ((pass as u128) << 64) | u128::from(u64::MAX);
    let mut w = ((x as u128) << 64) | prev as u128;
    for _ in 0..7 {
        w |= (w << 1) & pass;
    }
    (w >> 64) as u64
}

/// The bytes [`every`] looks at in one go.
pub(super) const CHUNK: usize = 32;

/// Whether `f` holds for every byte of `b`, read without an early exit
/// (which the compiler reads many bytes at a time).
pub(super) fn every(b: &[u8], f: impl Fn(&u8) -> bool) -> bool {
    b.iter().fold(true, |all, c| all & f(c))
}

/// Whether every byte of `b` is a hex digit, [`CHUNK`] bytes at a time.
pub(super) fn all_hex(b: &[u8]) -> bool {
    b.chunks(CHUNK).all(|c| every(c, u8::is_ascii_hexdigit))
}
