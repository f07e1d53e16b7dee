//! Quota invariants: concurrent callers never push a window past its limit
//! (and an exact quota never refuses below it), and memory stays bounded
//! with millions of distinct keys.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use warden_filters::guards::quota::QuotaTables;

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn no_window_admits_more_than_its_limit(
        limit in 1u64..200,
        threads in 2usize..8,
        attempts in 1usize..80,
        costs in prop::collection::vec(1u64..4, 1..8),
        window in 1u64..5,
        // Calls spread over a few consecutive windows.
        seconds in prop::collection::vec(0u64..12, 1..8),
    ) {
        let tables = Arc::new(QuotaTables::new(10_000));
        let admitted: Arc<Vec<AtomicU64>> = Arc::new((0..16).map(|_| AtomicU64::new(0)).collect());
        let base = 1_700_000_000u64 / window * window;
        std::thread::scope(|s| {
            for t in 0..threads {
                let (tables, admitted, costs, seconds) = (tables.clone(), admitted.clone(), costs.clone(), seconds.clone());
                s.spawn(move || {
                    for i in 0..attempts {
                        let cost = costs[(t + i) % costs.len()];
                        let sec = seconds[(t * 7 + i) % seconds.len()];
                        let now = UNIX_EPOCH + Duration::from_secs(base + sec);
                        if let Ok(charged) = tables.take_window(b"key", limit, Duration::from_secs(window), cost, now) {
                            admitted[(charged - base / window) as usize].fetch_add(cost, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        for (w, a) in admitted.iter().enumerate() {
            let used = a.load(Ordering::Relaxed);
            prop_assert!(used <= limit, "window {} admitted {} > {}", w, used, limit);
        }
    }

    #[test]
    fn unit_calls_are_admitted_up_to_the_limit_exactly(limit in 1u64..300, threads in 2usize..8, per_thread in 1usize..100) {
        let tables = Arc::new(QuotaTables::new(10_000));
        let ok = AtomicU64::new(0);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..per_thread {
                        if tables.take_window(b"k", limit, Duration::from_secs(60), 1, now).is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        prop_assert_eq!(ok.load(Ordering::Relaxed), limit.min((threads * per_thread) as u64));
    }

    #[test]
    fn concurrency_slots_never_exceed_the_cap(max in 1u64..16, threads in 2usize..10) {
        let tables = Arc::new(QuotaTables::new(10_000));
        let inside = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..200 {
                        if let Some(slot) = tables.take_slot(b"c", max) {
                            let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            std::hint::spin_loop();
                            inside.fetch_sub(1, Ordering::SeqCst);
                            drop(slot);
                        }
                    }
                });
            }
        });
        prop_assert!(peak.load(Ordering::SeqCst) <= max);
        // Every slot came back.
        let all: Vec<_> = (0..max).filter_map(|_| tables.take_slot(b"c", max)).collect();
        prop_assert_eq!(all.len() as u64, max);
    }
}

#[test]
fn memory_stays_bounded_with_millions_of_principals() {
    let cap = 50_000;
    let tables = QuotaTables::new(cap);
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for i in 0..2_000_000u64 {
        let key = format!("tenant\0principal-{i}\0");
        let _ = tables.take_window(key.as_bytes(), 100, Duration::from_secs(3600), 1, now);
    }
    let live = tables.len();
    assert!(live <= cap, "{live} counters live, cap {cap}");
}
