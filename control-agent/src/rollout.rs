//! Which published revision each gateway gets: revisions published to a
//! label selector, and canaries that reach a share of the gateways until
//! their error rate, denial rate and p99 have been compared with the rest
//! (promoted when healthy for the whole watch, rolled back as soon as they
//! are not).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Labels a gateway reports (`env=prod`, `region=eu`, …).
pub type Labels = BTreeMap<String, String>;

/// Why a gateway's labels, a canary's share or thresholds, or a report's
/// counters were refused: always the request's fault (400), with the text
/// the API answers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("label `{0}` is not key=value")]
    NotKeyValue(String),
    #[error("label `{0}` given twice")]
    LabelTwice(String),
    #[error("label `{key}={value}`: keys and values are 1-63 letters, digits or -._/")]
    BadLabel { key: String, value: String },
    #[error("at most 64 latency buckets")]
    TooManyBuckets,
    #[error("latency buckets must have finite, increasing bounds and counts")]
    BadBuckets,
    #[error("more denials than calls")]
    MoreDenials,
    #[error("more replies withheld than replies")]
    MoreWithheld,
    #[error(
        "canary thresholds must be non-negative numbers (p99 ratio at least 1, min_calls at least 1)"
    )]
    BadThresholds,
    #[error("canary share `{0}` is not a percentage")]
    ShareNotNumber(String),
    #[error("canary share `{0}` must be above 0 and at most 100%")]
    ShareOutOfRange(String),
}

impl InputError {
    /// The HTTP status the API answers with: the request is malformed.
    pub fn status(&self) -> u16 {
        400
    }
}

/// Parses `k=v,k2=v2` (keys and values of letters, digits and `-._/`, at
/// most 63 bytes each). An empty text is no labels.
pub fn labels_of(s: &str) -> Result<Labels, InputError> {
    let mut out = Labels::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(InputError::NotKeyValue(part.to_owned()));
        };
        let (k, v) = (k.trim(), v.trim());
        check_label(k, v)?;
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(InputError::LabelTwice(k.to_owned()));
        }
    }
    Ok(out)
}

fn check_label(k: &str, v: &str) -> Result<(), InputError> {
    for t in [k, v] {
        if t.is_empty()
            || t.len() > 63
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
        {
            return Err(InputError::BadLabel {
                key: k.to_owned(),
                value: v.to_owned(),
            });
        }
    }
    Ok(())
}

/// Labels a revision is published to: a gateway must carry every one
/// (none: every gateway).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Selector(pub Labels);

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    /// Every key and value as [`labels_of`] accepts them.
    pub fn validate(&self) -> Result<(), InputError> {
        self.0.iter().try_for_each(|(k, v)| check_label(k, v))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("all");
        }
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// Who a published revision is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// Every gateway the selector matches.
    Select { labels: Selector },
    /// A canary: only these gateways (which the selector matched when it
    /// was published), until it is promoted or rolled back.
    Canary {
        labels: Selector,
        members: BTreeSet<String>,
    },
}

impl Default for Target {
    fn default() -> Self {
        Target::all()
    }
}

impl Target {
    pub fn all() -> Target {
        Target::Select {
            labels: Selector::default(),
        }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Target::Select { labels } if labels.is_all())
    }

    pub fn reaches(&self, id: &str, labels: &Labels) -> bool {
        match self {
            Target::Select { labels: s } => s.matches(labels),
            Target::Canary { labels: s, members } => members.contains(id) && s.matches(labels),
        }
    }

    /// Why a gateway this target reaches runs its revision.
    pub fn why(&self) -> String {
        match self {
            Target::Select { labels } if labels.is_all() => "published to all".into(),
            Target::Select { labels } => format!("published to {labels}"),
            Target::Canary { labels, members } => format!(
                "canary on {} gateway{} of {labels}",
                members.len(),
                if members.len() == 1 { "" } else { "s" }
            ),
        }
    }
}

/// A gateway's counters since it started, as it reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Client requests judged (MCP messages from clients).
    #[serde(default)]
    pub calls: u64,
    /// Of those, refused by a guard.
    #[serde(default)]
    pub denied: u64,
    /// HTTP answers of status 5xx.
    #[serde(default)]
    pub errors: u64,
    /// Request latency, cumulative: (upper bound in seconds, count).
    #[serde(default)]
    pub latency: Vec<(f64, u64)>,
    /// Messages from servers judged (replies, their notifications and
    /// requests). A gateway from before these were reported sends none.
    #[serde(default)]
    pub replies: u64,
    /// Of those, withheld by a guard: a bundle that answers every call
    /// with a refusal of its reply denies as surely as one that refuses
    /// the call.
    #[serde(default)]
    pub withheld: u64,
}

impl Stats {
    /// What happened between `earlier` and `self` (a gateway that restarted
    /// in between counts from zero again).
    pub fn since(&self, earlier: &Stats) -> Stats {
        if self.went_back(earlier) {
            return self.clone();
        }
        let latency = if self.latency.len() == earlier.latency.len() {
            self.latency
                .iter()
                .zip(&earlier.latency)
                .map(|(&(le, n), &(_, m))| (le, n.saturating_sub(m)))
                .collect()
        } else {
            self.latency.clone()
        };
        Stats {
            calls: self.calls - earlier.calls,
            denied: self.denied.saturating_sub(earlier.denied),
            errors: self.errors - earlier.errors,
            latency,
            replies: self.replies - earlier.replies,
            withheld: self.withheld.saturating_sub(earlier.withheld),
        }
    }

    /// Whether these counters are lower than `earlier`'s: they began
    /// again (the gateway restarted), or are another process's.
    pub fn went_back(&self, earlier: &Stats) -> bool {
        self.calls < earlier.calls
            || self.errors < earlier.errors
            || self.replies < earlier.replies
            || self.denied < earlier.denied
            || self.withheld < earlier.withheld
    }

    pub fn add(&mut self, other: &Stats) {
        self.calls = self.calls.saturating_add(other.calls);
        self.denied = self.denied.saturating_add(other.denied);
        self.errors = self.errors.saturating_add(other.errors);
        self.replies = self.replies.saturating_add(other.replies);
        self.withheld = self.withheld.saturating_add(other.withheld);
        if self.latency.is_empty() {
            self.latency = other.latency.clone();
        } else if self.latency.len() == other.latency.len() {
            for (a, b) in self.latency.iter_mut().zip(&other.latency) {
                a.1 = a.1.saturating_add(b.1);
            }
        }
    }

    /// What a gateway may report: at most 64 latency buckets, bounds
    /// finite, positive and increasing, counts never decreasing, and no
    /// more denials than calls.
    pub fn check(&self) -> Result<(), InputError> {
        if self.latency.len() > 64 {
            return Err(InputError::TooManyBuckets);
        }
        let ordered = self
            .latency
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        if !ordered
            || self
                .latency
                .iter()
                .any(|(le, _)| !le.is_finite() || *le <= 0.0)
        {
            return Err(InputError::BadBuckets);
        }
        if self.denied > self.calls {
            return Err(InputError::MoreDenials);
        }
        if self.withheld > self.replies {
            return Err(InputError::MoreWithheld);
        }
        Ok(())
    }

    fn rate(n: u64, of: u64) -> f64 {
        if of == 0 {
            0.0
        } else {
            n as f64 / of as f64
        }
    }

    pub fn denial_rate(&self) -> f64 {
        Self::rate(self.denied, self.calls)
    }

    pub fn error_rate(&self) -> f64 {
        Self::rate(self.errors, self.calls)
    }

    /// The share of servers' messages withheld.
    pub fn withheld_rate(&self) -> f64 {
        Self::rate(self.withheld, self.replies)
    }

    /// The 99th percentile latency in seconds: the upper bound of the
    /// bucket it falls in (`None` without observations).
    pub fn p99(&self) -> Option<f64> {
        let total = self.latency.last()?.1;
        if total == 0 {
            return None;
        }
        let want = (total as f64 * 0.99).ceil() as u64;
        self.latency
            .iter()
            .find(|(_, n)| *n >= want)
            .map(|(le, _)| *le)
    }
}

/// When a canary is rolled back, compared with the gateways that do not
/// run it (or with nothing at all when they saw too few calls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Guard {
    /// Denied share of calls above the rest's (0.05: five points).
    pub max_denial_increase: f64,
    /// 5xx share of calls above the rest's.
    pub max_error_increase: f64,
    /// p99 above the rest's times this, plus `p99_slack_ms`.
    pub max_p99_ratio: f64,
    pub p99_slack_ms: f64,
    /// Calls the canary must see before it is judged; a watch that ends
    /// with fewer rolls it back (nothing shows it is healthy).
    pub min_calls: u64,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            max_denial_increase: 0.05,
            max_error_increase: 0.05,
            max_p99_ratio: 2.0,
            p99_slack_ms: 50.0,
            min_calls: 20,
        }
    }
}

impl Guard {
    pub fn check(&self) -> Result<(), InputError> {
        let finite = [
            self.max_denial_increase,
            self.max_error_increase,
            self.max_p99_ratio,
            self.p99_slack_ms,
        ]
        .iter()
        .all(|x| x.is_finite() && *x >= 0.0);
        if !finite || self.max_p99_ratio < 1.0 || self.min_calls == 0 {
            return Err(InputError::BadThresholds);
        }
        Ok(())
    }
}

/// What a canary's numbers say.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Wait,
    Promote(String),
    RollBack(String),
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Gateways of the rest that must each have seen `min_calls` calls for
/// the rest to be a baseline; with fewer, a canary is judged on absolute
/// figures (no denial, no error is excused, and its p99 is not compared).
pub const MIN_BASELINE_GATEWAYS: usize = 2;

/// The most calls (and ten times as many server messages) one gateway is
/// taken to judge in a second: a report whose counters rose faster since
/// the last one is no gateway's (see `Store::report`).
pub const MAX_CALLS_PER_SEC: u64 = 50_000;

/// What the gateways outside a canary show, one vote per gateway: what a
/// canary may do without being held to blame.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// Gateways that voted (each saw at least `min_calls` calls).
    pub gateways: usize,
    pub denial: f64,
    pub error: f64,
    /// `None`: too few voters saw `min_calls` server messages.
    pub withheld: Option<f64>,
    pub p99: Option<f64>,
    /// The voters disagree by more than the guard's margin: the baseline
    /// is held near the one that shows least.
    pub disputed: bool,
    /// Why there is none (`gateways` below [`MIN_BASELINE_GATEWAYS`]).
    pub absent: Option<String>,
}

impl Baseline {
    /// No baseline: absolute figures, `why`.
    pub fn absent(why: String, gateways: usize) -> Baseline {
        Baseline {
            gateways,
            denial: 0.0,
            error: 0.0,
            withheld: None,
            p99: None,
            disputed: false,
            absent: Some(why),
        }
    }

    /// The baseline `voters` (each one gateway's window, every one with
    /// at least `min_calls` calls) give. Each rate is their lower median,
    /// held within the guard's margin of the lowest voter: a reporter is
    /// one vote however loud, so it moves the baseline only by being more
    /// than half of the voters, and even then by no more than the margin
    /// above the gateway that shows least. Fewer than
    /// [`MIN_BASELINE_GATEWAYS`] voters are no baseline.
    pub fn of(voters: &[Stats], guard: &Guard) -> Baseline {
        if voters.len() < MIN_BASELINE_GATEWAYS {
            return Baseline::absent(
                format!(
                    "{} gateway{} of the rest with {} calls, {MIN_BASELINE_GATEWAYS} needed to compare: absolute",
                    voters.len(),
                    if voters.len() == 1 { "" } else { "s" },
                    guard.min_calls
                ),
                voters.len(),
            );
        }
        let mut disputed = false;
        let mut held = |mut v: Vec<f64>, margin: &dyn Fn(f64) -> f64| -> f64 {
            v.sort_by(f64::total_cmp);
            let (low, high) = (v[0], v[v.len() - 1]);
            disputed |= high > margin(low);
            v[(v.len() - 1) / 2].min(margin(low))
        };
        let rates = |f: fn(&Stats) -> f64| voters.iter().map(f).collect::<Vec<f64>>();
        let denial = held(rates(Stats::denial_rate), &|x| {
            x + guard.max_denial_increase
        });
        let error = held(rates(Stats::error_rate), &|x| x + guard.max_error_increase);
        let replied: Vec<f64> = voters
            .iter()
            .filter(|v| v.replies >= guard.min_calls)
            .map(Stats::withheld_rate)
            .collect();
        let withheld = (replied.len() >= MIN_BASELINE_GATEWAYS)
            .then(|| held(replied, &|x| x + guard.max_denial_increase));
        let p99s: Vec<f64> = voters.iter().filter_map(Stats::p99).collect();
        let p99 = (p99s.len() >= MIN_BASELINE_GATEWAYS).then(|| {
            held(p99s, &|x| {
                x * guard.max_p99_ratio + guard.p99_slack_ms / 1000.0
            })
        });
        Baseline {
            gateways: voters.len(),
            denial,
            error,
            withheld,
            p99,
            disputed,
            absent: None,
        }
    }

    fn against(&self) -> String {
        match &self.absent {
            Some(why) => why.clone(),
            None => format!(
                "the rest's {} gateways{}",
                self.gateways,
                if self.disputed {
                    ", which disagree: held near the lowest"
                } else {
                    ""
                }
            ),
        }
    }
}

/// Judges a canary gateway by gateway: each member with at least
/// `min_calls` calls alone, those with fewer together, then all of them
/// (the figure shown, which needs `min_calls` by the end of the watch).
/// One member's figures never hide another's.
pub fn judge_members(
    members: &[(String, Stats)],
    all: &Stats,
    base: &Baseline,
    guard: &Guard,
    watch_over: bool,
) -> Verdict {
    let mut small = Stats::default();
    for (id, m) in members {
        if m.calls < guard.min_calls {
            small.add(m);
            continue;
        }
        if let Verdict::RollBack(why) = judge(m, base, guard, false) {
            return Verdict::RollBack(format!("{why}, on canary member `{id}`"));
        }
    }
    if let Verdict::RollBack(why) = judge(&small, base, guard, false) {
        return Verdict::RollBack(format!("{why}, on the canary's quieter members together"));
    }
    judge(all, base, guard, watch_over)
}

/// Judges a canary's calls against the baseline. It is rolled back as soon
/// as one threshold is crossed (with at least `min_calls` seen), and
/// promoted only once the watch is over.
pub fn judge(canary: &Stats, base: &Baseline, guard: &Guard, watch_over: bool) -> Verdict {
    let (bd, be, bp) = (base.denial, base.error, base.p99);
    let against = base.against();
    if canary.calls >= guard.min_calls {
        let (cd, ce) = (canary.denial_rate(), canary.error_rate());
        if cd > bd + guard.max_denial_increase {
            return Verdict::RollBack(format!(
                "denial rate {} over {} calls against {} ({against})",
                pct(cd),
                canary.calls,
                pct(bd)
            ));
        }
        if ce > be + guard.max_error_increase {
            return Verdict::RollBack(format!(
                "error rate {} over {} calls against {} ({against})",
                pct(ce),
                canary.calls,
                pct(be)
            ));
        }
        // Replies a guard withheld count as denials: a bundle that lets
        // every call through and withholds every answer refuses as much.
        let bw = base.withheld.unwrap_or(0.0);
        let cw = canary.withheld_rate();
        if canary.replies >= guard.min_calls && cw > bw + guard.max_denial_increase {
            return Verdict::RollBack(format!(
                "withheld replies {} over {} server messages against {} ({against})",
                pct(cw),
                canary.replies,
                pct(bw)
            ));
        }
        if let (Some(cp), Some(bp)) = (canary.p99(), bp) {
            if cp > bp * guard.max_p99_ratio + guard.p99_slack_ms / 1000.0 {
                return Verdict::RollBack(format!(
                    "p99 {:.1} ms against {:.1} ms ({against})",
                    cp * 1000.0,
                    bp * 1000.0
                ));
            }
        }
    }
    if !watch_over {
        return Verdict::Wait;
    }
    if canary.calls < guard.min_calls {
        return Verdict::RollBack(format!(
            "only {} calls reached the canary during the watch; {} are needed to judge it",
            canary.calls, guard.min_calls
        ));
    }
    Verdict::Promote(format!(
        "healthy over {} calls: denial {} (rest {}), withheld replies {}, errors {} (rest {}), p99 {} ({against})",
        canary.calls,
        pct(canary.denial_rate()),
        pct(bd),
        pct(canary.withheld_rate()),
        pct(canary.error_rate()),
        pct(be),
        canary
            .p99()
            .map_or("-".into(), |p| format!("{:.1} ms", p * 1000.0)),
    ))
}

/// The gateways a canary reaches: `share` of `candidates` (at least one),
/// spread by a hash of the revision so that successive canaries do not
/// always land on the same gateways.
pub fn pick(candidates: &[String], share: f64, revision: &str) -> BTreeSet<String> {
    let n = ((candidates.len() as f64) * share).ceil().max(1.0) as usize;
    let mut ranked: Vec<(Vec<u8>, &String)> = candidates
        .iter()
        .map(|id| {
            let mut h = Sha256::new();
            h.update(revision.as_bytes());
            h.update([0]);
            h.update(id.as_bytes());
            (h.finalize().to_vec(), id)
        })
        .collect();
    ranked.sort();
    ranked
        .into_iter()
        .take(n.min(candidates.len()))
        .map(|(_, id)| id.clone())
        .collect()
}

/// Parses `10%` or `0.1` into a share in (0, 1].
pub fn share_of(s: &str) -> Result<f64, InputError> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| InputError::ShareNotNumber(s.to_owned()))?;
    if !(v > 0.0 && v <= 1.0) {
        return Err(InputError::ShareOutOfRange(s.to_owned()));
    }
    Ok(v)
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
