//! Cost of a global quota check on the hot path, against a real Redis
//! (started here on a free loopback port): the leased path Warden uses (a
//! local decrement; a background refill every half block) beside the naive
//! scheme of one Redis round trip per call (a lease of one unit).
//! Needs `redis-server` (scripts/setup.sh installs it).

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use warden_config::guards::{Redis, StoreFailure};
use warden_filters::guards::quota::{GlobalDemand, GlobalVerdict};
use warden_proxy::hub::quota_store::QuotaStore;

fn bench(c: &mut Criterion) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let store = |lease: u64| {
        let s = QuotaStore::new(Redis {
            url: format!("redis://127.0.0.1:{port}"),
            lease: Some(lease),
            timeout: Duration::from_millis(500),
            prefix: format!("bench{lease}:"),
        })
        .expect("store");
        rt.block_on(s.probe());
        assert!(s.is_up());
        s
    };
    let demand = GlobalDemand {
        quota: "bench".into(),
        key: b"definition-digest-32-bytes......acme\0".to_vec(),
        limit: u32::MAX as u64,
        window: Duration::from_secs(86_400),
        cost: 1,
        on_failure: StoreFailure::Local,
    };
    let now = SystemTime::now();
    let leased = store(1000);
    let per_call = store(1);
    let mut g = c.benchmark_group("global_quota");
    for (name, store) in [
        ("leased_check", &leased),
        ("naive_redis_round_trip_per_call", &per_call),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = std::time::Instant::now();
                    for _ in 0..iters {
                        let v = store.reserve(black_box(&demand), now).await;
                        assert_eq!(v, GlobalVerdict::Granted);
                    }
                    t.elapsed()
                })
            })
        });
    }
    g.finish();
    let _ = redis.kill();
    let _ = redis.wait();
}

criterion_group!(benches, bench);
criterion_main!(benches);
