//! A hostile tenant admin's requests: what the routes must refuse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};

use crate::store::layer_tests::{layer, rego};
use crate::store::CanaryState;

/// A layer's tar.gz whose gzip stream goes on with `zeros` bytes after the
/// tar's end (gzip packs them about a thousand to one).
fn bomb(zeros: usize) -> Vec<u8> {
    let packed =
        warden_config::archive::pack(&layer("finance", &rego("finance", "decision := {}")));
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&packed[..])
        .read_to_end(&mut tar)
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(chunk.len());
        gz.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    gz.finish().unwrap()
}

/// The body of a layer publish is bounded unpacked, not only packed.
#[test]
fn a_layer_whose_gzip_unpacks_past_the_bound_is_refused() {
    let small = bomb(0);
    assert!(crate::api::tenants::unpack_layer(&small).is_ok());
    let b = bomb(64 << 20);
    assert!(b.len() < 1 << 20, "{} bytes of gzip", b.len());
    let err = crate::api::tenants::unpack_layer(&b).expect_err("64 MiB of zeros after the tar");
    assert!(err.contains("unpacks to more than"), "{err}");
}

/// A tenant admin's promote (or roll back) of their layer's canary ends
/// that canary or nothing: an org canary started between the request's
/// look at the rollout and its end (here: right after the route reads
/// the rollout) is neither promoted nor rolled back by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_never_ends_a_canary_that_is_not_their_layers() {
    use std::sync::{Arc, Mutex};
    let h = super::tests::start().await;
    let store = h.api.store.clone();
    let current = store.current().unwrap().revision.clone();
    let report = serde_json::json!({"id": "gw1", "revision": current, "healthy": true});
    assert_eq!(h.post("fleet", "/v1/fleet/report", report).await.0, 200);
    let plan = || -> crate::store::CanaryPlan {
        serde_json::from_value(serde_json::json!({"share": 1.0, "watch_secs": 600})).unwrap()
    };
    let s = store.clone();
    let fin = tokio::task::spawn_blocking(move || {
        let l = crate::store::layer_tests::yaml_layer(crate::store::layer_tests::FIN_LEDGER);
        s.publish_layer(
            "admin:fiona",
            "finance",
            l,
            Some((crate::rollout::Selector::default(), plan())),
        )
        .unwrap()
        .revision
    })
    .await
    .unwrap();
    assert_eq!(
        store
            .rollout_view()
            .canary()
            .and_then(|c| c.rollout.layer.as_ref())
            .map(|l| l.tenant.clone()),
        Some("finance".to_owned())
    );
    // In the gap: finance's canary is rolled back and the org's starts.
    let org = Arc::new(Mutex::new(String::new()));
    let o = org.clone();
    *store.after_rollout_read.lock().unwrap() = Some(Box::new(move |s| {
        let _ = s.roll_back_canary("admin", None);
        let p = s
            .publish_canary("admin", crate::rollout::Selector::default(), plan())
            .unwrap();
        *o.lock().unwrap() = p.revision.clone();
    }));
    let (st, v) = h
        .post(
            "fiona",
            "/v1/tenants/finance/canary/promote",
            serde_json::json!({"revision": fin}),
        )
        .await;
    assert!(store.after_rollout_read.lock().unwrap().is_none());
    let org = org.lock().unwrap().clone();
    let ro = store.rollout_view();
    assert_eq!(
        (ro.state(), ro.canary().map(|c| c.rollout.revision.as_str())),
        (Some(CanaryState::Watching), Some(org.as_str())),
        "fiona's promote ({st} {v}) ended the org's canary"
    );
    assert!(
        ro.canary().is_some_and(|c| c.rollout.layer.is_none()),
        "{ro:?}"
    );
    // The org's canary watched: finance's admins (and hr's) end nothing.
    for (who, path) in [
        ("fiona", "/v1/tenants/finance/canary/promote"),
        ("felix", "/v1/tenants/finance/canary/rollback"),
        ("harry", "/v1/tenants/hr/canary/promote"),
    ] {
        let (st, v) = h.post(who, path, serde_json::json!({})).await;
        assert_eq!(st, 409, "{who} {path}: {v}");
        let now = store.rollout_view();
        assert_eq!(
            (
                now.state(),
                now.canary().map(|c| c.rollout.revision.as_str())
            ),
            (Some(CanaryState::Watching), Some(org.as_str())),
            "{who} {path}"
        );
    }
    assert_eq!(
        store.layer_history_view("finance").current.as_deref(),
        Some(fin.as_str())
    );
}

/// The fleet has one canary slot: a watch without end (a tenant admin's
/// `watch=18446744073709551615`) would hold it from every other owner's
/// rollout. A watch longer than a day is refused, for layers and the org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_cannot_be_watched_for_longer_than_a_day() {
    let h = super::tests::start().await;
    let store = h.api.store.clone();
    let plan = |watch: u64| -> crate::store::CanaryPlan {
        serde_json::from_value(serde_json::json!({"share": 0.5, "watch_secs": watch})).unwrap()
    };
    let s = store.clone();
    let refused = tokio::task::spawn_blocking(move || {
        let org = s
            .publish_canary("admin", crate::rollout::Selector::default(), plan(u64::MAX))
            .is_err();
        let l = crate::store::layer_tests::yaml_layer(crate::store::layer_tests::FIN_LEDGER);
        let layer = s
            .publish_layer(
                "admin:fiona",
                "finance",
                l,
                Some((crate::rollout::Selector::default(), plan(86_401))),
            )
            .is_err();
        (org, layer)
    })
    .await
    .unwrap();
    assert_eq!(refused, (true, true));
    assert!(
        store.rollout_view().state() != Some(CanaryState::Watching),
        "{:?}",
        store.rollout_view()
    );
}
