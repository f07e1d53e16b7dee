//! Local calendar facts for the configured time zone: the `now` the input
//! document holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use regorus::Value;

/// Ids of engines and clocks, which key what a thread keeps for one (its
/// Rego VM, its current moment).
pub(super) static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

/// Local calendar facts for the configured time zone.
#[derive(Debug, Clone)]
pub struct Clock {
    tz: jiff::tz::TimeZone,
    id: u64,
}

pub(super) const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// What the input document says about "now" (second precision).
#[derive(Debug, Clone)]
pub struct Moment {
    pub hour: u8,
    pub weekday: &'static str,
    /// RFC 3339 UTC, as a Rego string.
    pub time: Value,
}

thread_local! {
    /// The last moment computed on this thread: `(clock id, unix second, moment)`.
    static MOMENT: std::cell::RefCell<Option<(u64, i64, Moment)>> =
        const { std::cell::RefCell::new(None) };
}

impl Clock {
    pub fn new(tz: &str) -> Result<Self, String> {
        jiff::tz::TimeZone::get(tz)
            .map(|tz| Clock {
                tz,
                id: NEXT_ENGINE.fetch_add(1, Ordering::Relaxed),
            })
            .map_err(|e| format!("unknown time zone `{tz}`: {e}"))
    }

    fn secs(now: SystemTime) -> i64 {
        match now.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }

    /// Hour, weekday and timestamp at `now`; computed once per second per thread.
    pub fn moment(&self, now: SystemTime) -> Moment {
        let secs = Self::secs(now);
        MOMENT.with(|cell| {
            if let Some((id, at, m)) = &*cell.borrow() {
                if *id == self.id && *at == secs {
                    return m.clone();
                }
            }
            let ts = jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let z = ts.to_zoned(self.tz.clone());
            let wd = z.weekday().to_monday_zero_offset() as usize;
            let m = Moment {
                hour: z.hour() as u8,
                weekday: WEEKDAYS[wd.min(6)],
                time: Value::from(ts.to_string()),
            };
            *cell.borrow_mut() = Some((self.id, secs, m.clone()));
            m
        })
    }

    /// `(hour 0-23, weekday name)` at `now` in the zone.
    pub fn local(&self, now: SystemTime) -> (u8, &'static str) {
        let m = self.moment(now);
        (m.hour, m.weekday)
    }
}
