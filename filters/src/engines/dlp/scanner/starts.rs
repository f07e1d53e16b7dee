//! Where a match of any digit detector can start in one text, found by
//! one search over all their patterns at once and remembered, so that the
//! detectors' own searches skip the windows where none of them matches.
//!
//! In logs and hex digests a run of digits long enough to wake the digit
//! detectors comes every line, so each of them searched most of the text
//! on its own and nearly always found nothing (about a third of a scan of
//! logs). One search over the set of them (leftmost-first, not
//! overlapping: it only has to say where the first match of any of them
//! begins) now answers "no" for all of them at once.
//!
//! Why a skipped window holds no match: the set's search from `x` returns
//! the match that starts first among every match of every pattern that
//! begins at or after `x` (leftmost-first semantics), so no pattern has a
//! match beginning in `[x, p)` when it returns `p`, and none at all past
//! `x` when it returns nothing. A detector's search in a window `[from,
//! w1)` finds a span that is also a match in the whole text (the search
//! sees the bytes around its range for `\b`), so it would begin at or
//! after the set's `p`: a window with no set match beginning in it has
//! none of its own, and its search may begin at `p`, where the
//! detector's leftmost match from `from` begins at the earliest.
//!
//! When `p` is far into the window (a glued number of another detector's
//! every line of hex digests), the detector is tried at `p` alone
//! (anchored): a match beginning there is the one its search from `from`
//! would return, and when none does the set is asked again from the next
//! place, rather than the detector reading the rest of the window.

use std::collections::BTreeMap;

use regex_automata::meta::Regex;
use regex_automata::Input;

/// The most spans learned in one text: past it the detectors search on
/// their own (each answer adds a span or two, so a hostile text of many
/// runs far apart would otherwise grow the map with its length).
const MOST_KNOWN: usize = 4096;

/// The starts of the digit detectors' matches in one text, learned as
/// the detectors ask.
pub(super) struct Starts<'a> {
    set: &'a Regex,
    hay: &'a [u8],
    /// The longest match of any pattern in the set.
    longest: usize,
    /// Learned so far, by `lo`, none overlapping: no match of the set
    /// starts in `[lo, hi)`; with `true`, one starts at `hi`. (A map:
    /// the detectors ask in turns, each from the text's start, so spans
    /// are learned out of order.)
    known: BTreeMap<usize, (usize, bool)>,
    /// Questions answered, and how many of the answers spared a search
    /// (no match in the window, or its first one far into it).
    asked: u32,
    spared: u32,
}

/// How far into a window the first match may begin for the answer to
/// count as sparing its search most of it.
pub(super) const FAR: usize = 64;

impl<'a> Starts<'a> {
    pub(super) fn new(set: &'a Regex, longest: usize, hay: &'a [u8]) -> Starts<'a> {
        Starts {
            set,
            hay,
            longest,
            known: BTreeMap::new(),
            asked: 0,
            spared: 0,
        }
    }

    /// Whether asking still pays in this text: in one dense in numbers
    /// (ids, order numbers and amounts in prose) a match of some digit
    /// detector begins near every window, so the answers spare nothing
    /// and each costs a search of the set. Once most of the answers
    /// have spared nothing, the detectors search on their own. (Either
    /// way each finds what it finds: this decides only the cost.)
    pub(super) fn worth_asking(&self) -> bool {
        self.known.len() < MOST_KNOWN && (self.asked < 4 || 2 * self.spared >= self.asked)
    }

    /// [`first`](Self::first), counted for [`worth_asking`](Self::worth_asking).
    pub(super) fn ask(&mut self, x: usize, end: usize) -> Option<usize> {
        let answer = self.first(x, end);
        self.asked += 1;
        if answer.is_none_or(|p| p >= x + FAR) {
            self.spared += 1;
        }
        answer
    }

    /// The first place in `[x, end)` where a match of some digit detector
    /// starts, if any.
    pub(super) fn first(&mut self, mut x: usize, end: usize) -> Option<usize> {
        let end = end.min(self.hay.len());
        while x < end {
            // The learned span at or just before `x`.
            if let Some((_, &(hi, starts))) = self.known.range(..=x).next_back() {
                if x < hi {
                    x = hi;
                    if starts {
                        return (hi < end).then_some(hi);
                    }
                    continue;
                }
                if x == hi && starts {
                    return Some(x);
                }
            }
            // Nothing learned at `x`: search up to the next learned span
            // (a match starting before it ends within `longest` of it).
            let next = self
                .known
                .range(x + 1..)
                .next()
                .map_or(end, |(&lo, _)| lo)
                .min(end);
            let reach = next.saturating_add(self.longest).min(self.hay.len());
            let input = Input::new(self.hay).range(x..reach);
            match self.set.search(&input).map(|m| m.start()) {
                Some(p) if p < next => {
                    self.known.insert(x, (p, true));
                    return Some(p);
                }
                _ => {
                    self.known.insert(x, (next, false));
                    x = next;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    /// The first start at or after `x` found by trying each pattern alone
    /// from every place (the reference).
    fn reference(pats: &[Regex], hay: &[u8], x: usize, end: usize) -> Option<usize> {
        (x..end.min(hay.len())).find(|&p| {
            pats.iter().any(|r| {
                r.search(
                    &Input::new(hay)
                        .range(p..)
                        .anchored(regex_automata::Anchored::Yes),
                )
                .is_some()
            })
        })
    }

    /// Review (denial of service): the spans learned were kept in a
    /// vector, and each detector's pass, wider than the one before, put
    /// its spans between the earlier ones, moving the rest each time: a
    /// text of many runs far apart made that quadratic. They are kept in
    /// a map, at most [`MOST_KNOWN`] of them; past that the set is not
    /// asked.
    #[test]
    fn questions_out_of_order_learn_a_bounded_map() {
        let hay = ["0000000000000000", &";".repeat(169)].concat().repeat(6000);
        let set = Regex::new_many(&[r"1[0-9]{9}", r"[2-9][0-9]{8}"]).unwrap();
        let mut starts = Starts::new(&set, 16, hay.as_bytes());
        // Two passes of windows around each run, the second wider.
        for reach in [4usize, 9] {
            for run in (0..hay.len()).step_by(185) {
                if starts.worth_asking() {
                    let (a, b) = (run.saturating_sub(reach), run + 16 + reach);
                    assert_eq!(starts.ask(a, b.min(hay.len())), None);
                }
            }
        }
        assert!(
            starts.known.len() <= MOST_KNOWN + 2,
            "{}",
            starts.known.len()
        );
        assert!(!starts.worth_asking());
    }

    proptest! {
        /// Whatever order the questions come in, each answer is the first
        /// place a pattern of the set matches from.
        #[test]
        fn every_answer_is_the_first_start(
            hay in "[0-9a-c \\-]{0,120}",
            asks in proptest::collection::vec((0usize..130, 0usize..130), 1..12),
        ) {
            let srcs = [r"\b[0-9]{3}-[0-9]{2}\b", r"[0-9]{4} ?[0-9]{4}", r"ab[0-9]+c?"];
            let pats: Vec<Regex> = srcs.iter().map(|p| Regex::new(p).unwrap()).collect();
            let set = Regex::new_many(&srcs).unwrap();
            let mut starts = Starts::new(&set, 64, hay.as_bytes());
            for (x, end) in asks {
                let want = reference(&pats, hay.as_bytes(), x, end);
                prop_assert_eq!(starts.first(x, end), want, "{:?} from {} to {}", hay, x, end);
            }
        }
    }
}
