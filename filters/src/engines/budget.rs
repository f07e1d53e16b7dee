//! Money budgets' counting, apart from any message: the period a call
//! falls in, the holders' counters in this replica, the alerts a charge
//! crosses and the verdicts a reservation leaves for the chain's guard
//! (`crate::guards::budget`, which decides from them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use warden_config::budgets::{BudgetScope, Period};

use crate::protocol::jsonrpc::Id;

/// The period a call falls in: its number, its name and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodSpan {
    /// `yyyymmdd` or `yyyymm`.
    pub index: u32,
    /// `2026-11-30` or `2026-11`.
    pub label: Arc<str>,
    /// RFC 3339, in the bundle's time zone.
    pub resets_at: Arc<str>,
    /// Unix second the period ends.
    pub ends: u64,
}

/// The bundle's time zone, and the period that holds `now` (worked out
/// once a second per kind of period: every priced call asks).
#[derive(Debug)]
pub struct BudgetClock {
    tz: jiff::tz::TimeZone,
    /// The last span of a day and of a month, and the second it was for.
    last: [arc_swap::ArcSwapOption<(u64, PeriodSpan)>; 2],
}

impl Clone for BudgetClock {
    fn clone(&self) -> Self {
        BudgetClock {
            tz: self.tz.clone(),
            last: Default::default(),
        }
    }
}

impl BudgetClock {
    /// UTC when the name is unknown (the bundle's validation refuses it).
    pub fn new(timezone: &str) -> Self {
        BudgetClock {
            tz: jiff::tz::TimeZone::get(timezone).unwrap_or(jiff::tz::TimeZone::UTC),
            last: Default::default(),
        }
    }

    pub fn span(&self, period: Period, now: SystemTime) -> PeriodSpan {
        let sec = unix(now);
        let slot = &self.last[match period {
            Period::Day => 0,
            Period::Month => 1,
        }];
        if let Some(last) = slot.load().as_ref() {
            if last.0 == sec {
                return last.1.clone();
            }
        }
        let span = self.compute(period, now);
        slot.store(Some(Arc::new((sec, span.clone()))));
        span
    }

    fn compute(&self, period: Period, now: SystemTime) -> PeriodSpan {
        let ts = jiff::Timestamp::try_from(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let date = ts.to_zoned(self.tz.clone()).date();
        let (index, label, next) = match period {
            Period::Day => (
                date.year() as u32 * 10_000 + date.month() as u32 * 100 + date.day() as u32,
                date.to_string(),
                date.tomorrow().ok(),
            ),
            Period::Month => {
                let first = date.first_of_month();
                (
                    date.year() as u32 * 100 + date.month() as u32,
                    format!("{:04}-{:02}", date.year(), date.month()),
                    first.checked_add(jiff::Span::new().months(1)).ok(),
                )
            }
        };
        let end = next
            .and_then(|d| d.to_zoned(self.tz.clone()).ok())
            .unwrap_or_else(|| jiff::Timestamp::MAX.to_zoned(self.tz.clone()));
        PeriodSpan {
            index,
            label: label.into(),
            // RFC 3339 with the zone's own offset (`2026-12-01T00:00:00+01:00`).
            resets_at: end.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string().into(),
            ends: end.timestamp().as_second().max(0) as u64,
        }
    }
}

/// One budget a call spends: the holder's counter in this period.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetDemand {
    /// Index into `budgets.limits`.
    pub budget: usize,
    pub name: String,
    pub per: BudgetScope,
    /// Counter key: the budget's definition, then the holder's keys.
    pub key: Vec<u8>,
    /// Who the budget is of, for people: `acme`, `acme/payments`, `acme/alice`.
    pub holder: String,
    pub limit: u64,
    pub alerts: Vec<u64>,
    pub period: PeriodSpan,
    /// `Some`: held in the shared store; what to do when it is down.
    pub global: Option<warden_config::guards::StoreFailure>,
}

/// Millionths as a decimal with six places.
pub fn amount(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// An alert threshold a charge crossed.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetAlert {
    pub budget: String,
    pub per: BudgetScope,
    pub holder: String,
    /// Millionths of the limit.
    pub threshold: u64,
    pub spent: u64,
    pub limit: u64,
    pub period: Arc<str>,
    pub resets_at: Arc<str>,
}

impl BudgetAlert {
    /// The thresholds of `d` a charge from `old` to `new` crossed.
    pub fn crossed(d: &BudgetDemand, old: u64, new: u64) -> Vec<BudgetAlert> {
        d.alerts
            .iter()
            .filter(|t| {
                let at = (u128::from(d.limit) * u128::from(**t) / 1_000_000) as u64;
                old < at && at <= new
            })
            .map(|t| BudgetAlert {
                budget: d.name.clone(),
                per: d.per,
                holder: d.holder.clone(),
                threshold: *t,
                spent: new,
                limit: d.limit,
                period: d.period.label.clone(),
                resets_at: d.period.resets_at.clone(),
            })
            .collect()
    }

    /// Whether the holder's spend `spent` is still at or past this
    /// alert's threshold (a charge given back may take it below again).
    pub fn holds_at(&self, spent: u64) -> bool {
        let at = (u128::from(self.limit) * u128::from(self.threshold) / 1_000_000) as u64;
        at <= spent
    }

    pub fn to_json(&self, currency: &str) -> serde_json::Value {
        serde_json::json!({
            "budget": self.budget,
            "per": self.per.as_str(),
            "holder": self.holder,
            "threshold": format!("{}", self.threshold as f64 / 1_000_000.0),
            "spent": amount(self.spent),
            "limit": amount(self.limit),
            "currency": currency,
            "period": self.period,
            "resets_at": self.resets_at,
        })
    }
}

/// What one holder spent in one period, in this replica.
struct Spend {
    period: u32,
    micros: u64,
    /// Unix second the period ends (the counter may go after it).
    ends: u64,
}

/// What a charge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charged {
    /// Spend went from the first to the second.
    Taken(u64, u64),
    /// The charge would pass the limit; spend so far.
    Over(u64),
    /// The table is full of live counters and does not hold this one.
    Full,
}

/// This replica's spend per budget holder and period, shared by all
/// snapshots of a gateway. Bounded by its share of `limits.memory`: when
/// full, counters of periods that are over and counters that hold nothing
/// (every call given back) go first; a counter holding a spend of this
/// period is never dropped (its holder would spend its budget again), so
/// while the table is still full a holder it does not hold is refused
/// (fails closed).
pub struct BudgetTables {
    map: dashmap::DashMap<Vec<u8>, Arc<Mutex<Spend>>, foldhash::fast::RandomState>,
    max_keys: usize,
    swept: AtomicU64,
}

pub(crate) fn unix(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl BudgetTables {
    pub fn new(max_keys: u64) -> Self {
        BudgetTables {
            map: dashmap::DashMap::with_hasher(foldhash::fast::RandomState::default()),
            max_keys: max_keys.max(1) as usize,
            swept: AtomicU64::new(0),
        }
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn counter(&self, d: &BudgetDemand, now: u64) -> Option<Arc<Mutex<Spend>>> {
        if let Some(c) = self.map.get(&d.key) {
            return Some(c.clone());
        }
        if self.map.len() >= self.max_keys {
            let last = self.swept.load(Ordering::Relaxed);
            if last < now
                && self
                    .swept
                    .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                // A counter not in use goes when its period is over, or
                // when it holds nothing (its calls were given back, or
                // cost nothing per call): dropping it loses no spend.
                self.map.retain(|_, c| {
                    c.lock().map_or(true, |s| s.ends > now && s.micros > 0)
                        || Arc::strong_count(c) > 1
                });
            }
            if self.map.len() >= self.max_keys {
                return None;
            }
        }
        Some(
            self.map
                .entry(d.key.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Spend {
                        period: d.period.index,
                        micros: 0,
                        ends: d.period.ends,
                    }))
                })
                .clone(),
        )
    }

    /// Takes `cost` from `d`'s holder when `need` more still fits under the
    /// limit. A counter of an older period starts over; one of a newer
    /// period (a call stamped just before a boundary, racing a later one)
    /// is charged as it is: periods never move back.
    pub fn charge(&self, d: &BudgetDemand, cost: u64, need: u64, now: SystemTime) -> Charged {
        let Some(c) = self.counter(d, unix(now)) else {
            return Charged::Full;
        };
        let Ok(mut s) = c.lock() else {
            return Charged::Full;
        };
        if s.period < d.period.index {
            *s = Spend {
                period: d.period.index,
                micros: 0,
                ends: d.period.ends,
            };
        }
        if s.micros.saturating_add(need) > d.limit {
            return Charged::Over(s.micros);
        }
        let old = s.micros;
        s.micros = s.micros.saturating_add(cost);
        Charged::Taken(old, s.micros)
    }

    /// Adds `micros` (a price per unit, known once the reply came) whatever
    /// the limit; `None` when the table cannot hold the holder.
    pub fn add(&self, d: &BudgetDemand, micros: u64, now: SystemTime) -> Option<(u64, u64)> {
        match self.charge(d, micros, 0, now) {
            Charged::Taken(a, b) => Some((a, b)),
            // Already over: still counted.
            Charged::Over(_) => {
                let c = self.counter(d, unix(now))?;
                let mut s = c.lock().ok()?;
                let old = s.micros;
                s.micros = s.micros.saturating_add(micros);
                Some((old, s.micros))
            }
            Charged::Full => None,
        }
    }

    /// Gives back a reservation whose call was not made; the holder's
    /// spend after (`None`: this replica holds no counter of its period).
    pub fn refund(&self, d: &BudgetDemand, micros: u64) -> Option<u64> {
        let c = self.map.get(&d.key)?;
        let mut s = c.lock().ok()?;
        (s.period == d.period.index).then(|| {
            s.micros = s.micros.saturating_sub(micros);
            s.micros
        })
    }

    /// What `d`'s holder spent this period in this replica.
    pub fn spent(&self, d: &BudgetDemand) -> u64 {
        self.map
            .get(&d.key)
            .and_then(|c| {
                c.lock().ok().map(|s| {
                    if s.period == d.period.index {
                        s.micros
                    } else {
                        0
                    }
                })
            })
            .unwrap_or(0)
    }
}

/// What the reservation decided for one call.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetVerdict {
    /// Reserved under every budget on its path.
    Admitted,
    /// This budget would be exceeded.
    Over(BudgetDemand),
    /// A global budget's store is down and the budget fails closed, or the
    /// table cannot hold the holder.
    Unavailable(BudgetDemand),
}

/// The verdicts of one request's priced calls, by JSON-RPC id.
#[derive(Debug, Default)]
pub struct BudgetVerdicts(pub HashMap<Id, BudgetVerdict>);
