//! Unit tests of the store: the change record's bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::backend::SEQUENCE_FILE;
use super::publish::RESIGN_REASON;
use super::*;
use crate::rollout::Selector;

fn open() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("state"), &d.path().join("source"), None).unwrap();
    (d, s)
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Whatever a user sends (a query string of 100,000 characters), each
/// value the record keeps is cut, and a line stays small.
#[test]
fn the_change_record_cuts_what_it_is_given() {
    let (d, s) = open();
    let long = "x".repeat(100_000);
    s.record(&long, &long, Some(&long), false, &long);
    s.record("console:ann", "console.audit.search", None, true, "ok");
    let path = d.path().join("state").join(changes::FILE);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 4 * 1024, "{size} bytes");
    let all = lines(&path);
    assert_eq!(all.len(), 2);
    for k in ["actor", "action", "revision", "detail"] {
        let v = all[0][k].as_str().unwrap();
        assert_eq!(v.chars().count(), changes::MAX_VALUE + 1, "{k}");
        assert!(v.starts_with("xxx") && v.ends_with('…'), "{k}");
    }
    // Short values are kept whole; characters, not bytes, are counted.
    assert_eq!(all[1]["detail"], "ok");
    let wide = "é".repeat(changes::MAX_VALUE);
    assert_eq!(changes::cut(&wide), wide);
}

/// Past its limit the record is moved aside once (the one before is
/// replaced): the two files stay bounded, and the newest entries are
/// still read, across the move.
#[test]
fn the_change_record_is_bounded_on_disk() {
    let (d, mut s) = open();
    assert_eq!(s.changes_limit, changes::MAX_FILE);
    s.changes_limit = 4096;
    for i in 0..300 {
        s.record(
            "console:vic",
            "console.audit.view",
            None,
            true,
            &format!("{i} {}", "y".repeat(400)),
        );
    }
    let state = d.path().join("state");
    let current = std::fs::metadata(state.join(changes::FILE)).unwrap().len();
    let previous = std::fs::metadata(state.join(changes::PREVIOUS))
        .unwrap()
        .len();
    // Each file holds at most the limit and one line more.
    assert!(current < 4096 + 1024, "{current}");
    assert!((4096..4096 + 1024).contains(&previous), "{previous}");
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("changes"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // The newest first, without a hole where the file was moved.
    let in_current = lines(&state.join(changes::FILE)).len();
    let n = in_current + 3;
    let recent = s.recent_changes(n);
    assert_eq!(recent.len(), n);
    for (k, c) in recent.iter().enumerate() {
        let detail = c["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("{} ", 299 - k)),
            "{k}: {detail}"
        );
    }
}

/// Each build is newer than every one the store published before, even
/// when the clock now says otherwise (it ran ahead before a restart): the
/// store keeps the highest sequence and builds above it.
#[test]
fn builds_stay_newer_than_the_store_published_whatever_the_clock() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let src = d.path().join("source");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("warden.yaml"), crate::store::layer_tests::ORG).unwrap();
    // A clock that ran a day ahead when the last bundle was built.
    let ahead = build::next_sequence() + 86_400_000;
    std::fs::write(state.join(SEQUENCE_FILE), ahead.to_string()).unwrap();
    let s = Store::open(&state, &src, None).unwrap();
    let p = s.publish_source("test", true).unwrap().expect("published");
    let files = archive::unpack(&p.archive).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&files[".manifest"]).unwrap();
    let seq = manifest["sequence"].as_u64().expect("a sequence");
    assert!(seq > ahead, "{seq} <= {ahead}");
    let kept: u64 = std::fs::read_to_string(state.join(SEQUENCE_FILE))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // At least this build's (other stores in this test process build too).
    assert!(kept >= seq, "{kept} < {seq}");
}

use crate::store::layer_tests::signer_for;

fn manifest_of(p: &Published) -> serde_json::Value {
    let files = archive::unpack(&p.archive).unwrap();
    serde_json::from_slice(&files[".manifest"]).unwrap()
}

/// Every served revision (for everyone and for a selector) carries a
/// signed expiry and is re-signed once less than half of its validity is
/// left: the same content under a newer sequence and a later expiry,
/// under a new revision name (gateways fetch by it). A store opened again
/// knows the expiry of what it serves and does not re-sign early.
#[test]
fn what_is_served_is_re_signed_before_it_expires() {
    let hour = Duration::from_secs(3600);
    let (signer, verifier) = signer_for(hour);
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let src = d.path().join("source");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("warden.yaml"), crate::store::layer_tests::ORG).unwrap();
    let s = Store::open(&state, &src, Some(signer)).unwrap();
    let all = s.publish_source("test", true).unwrap().expect("published");
    let labels = Selector(
        [("env".to_owned(), "prod".to_owned())]
            .into_iter()
            .collect(),
    );
    let some = s
        .publish_source_to("test", true, labels.clone())
        .unwrap()
        .expect("published");
    let now = SystemTime::now();
    for p in [&all, &some] {
        let at = p.expires.expect("an expiry");
        assert!(
            at > now + hour - Duration::from_secs(5) && at <= now + hour,
            "{at:?}"
        );
        let m = manifest_of(p);
        assert_eq!(
            humantime::parse_rfc3339(m["expires"].as_str().unwrap()).unwrap(),
            at
        );
        verifier
            .verify(&archive::unpack(&p.archive).unwrap())
            .unwrap();
    }
    assert!(s.refresh(now).unwrap().is_none(), "nothing due yet");
    assert!(
        s.refresh(now + hour / 3).unwrap().is_none(),
        "two thirds left"
    );
    let newest = s
        .refresh(now + hour / 2 + Duration::from_secs(10))
        .unwrap()
        .expect("re-signed");
    let served = s.lock().served.clone();
    assert_eq!(served.len(), 2, "both targets still served");
    for p in &served {
        assert!(p.seq > some.seq, "rebuilt: {}", p.revision);
        assert_ne!(p.revision, all.revision);
        assert!(p.expires.unwrap() >= all.expires.unwrap());
        assert!(manifest_of(p)["sequence"].as_u64() > manifest_of(&some)["sequence"].as_u64());
        let files = archive::unpack(&p.archive).unwrap();
        verifier.verify(&files).unwrap();
        assert_eq!(
            files["warden.yaml"],
            archive::unpack(&all.archive).unwrap()["warden.yaml"],
            "the same content"
        );
    }
    assert!(served.iter().any(|p| p.target == some.target));
    assert!(served.iter().any(|p| p.target.is_all()));
    assert_eq!(newest.seq, served.iter().map(|p| p.seq).max().unwrap());
    let history = s.history();
    assert!(history.last().unwrap().reason.contains("re-signed"));
    // Re-signed again: the re-signs nothing serves are forgotten (files
    // too), the originals stay (rollback names them), so re-signs never
    // push real revisions out of the history's bound.
    let first: Vec<u64> = served.iter().map(|p| p.seq).collect();
    let later = served.iter().filter_map(|p| p.expires).min().unwrap();
    s.refresh(later - hour / 2 + Duration::from_secs(10))
        .unwrap()
        .expect("re-signed again");
    let history = s.history();
    for seq in &first {
        assert!(history.iter().all(|h| h.seq != *seq), "{seq} kept");
        let built = state.join("revisions").join(format!("{seq:08}.tar.gz"));
        assert!(!built.exists());
    }
    for original in [&all, &some] {
        assert!(history.iter().any(|h| h.seq == original.seq));
    }
    assert_eq!(
        history
            .iter()
            .filter(|h| h.reason.starts_with(RESIGN_REASON))
            .count(),
        2,
        "only the re-signs served"
    );
    s.rollback("test", &all.revision)
        .expect("the original rolls back");
    drop(s);
    // Opened again: the expiry is read back, nothing is due.
    let (signer, _) = signer_for(hour);
    let s = Store::open(&state, &src, Some(signer)).unwrap();
    assert!(s.lock().served.iter().all(|p| p.expires.is_some()));
    assert!(s.refresh(SystemTime::now()).unwrap().is_none());
    // Signed never to expire: nothing is re-signed.
    let d2 = tempfile::tempdir().unwrap();
    let (mut never, _) = signer_for(hour);
    never.valid_for = None;
    let s = Store::open(&d2.path().join("state"), &src, Some(never)).unwrap();
    let p = s.publish_source("test", true).unwrap().expect("published");
    assert!(p.expires.is_none() && manifest_of(&p).get("expires").is_none());
    assert!(s.refresh(now + hour * 1000).unwrap().is_none());
}

/// During a canary's watch what is served is re-signed only once a
/// quarter of the validity is left (not at half): its members report the
/// revision they run, and a new name mid-watch would judge them on
/// nothing.
#[test]
fn a_canary_watch_defers_the_re_sign() {
    use crate::store::fleet_tests::{plan, report, stats};
    let hour = Duration::from_secs(3600);
    let (signer, _) = signer_for(hour);
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("source");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("warden.yaml"), crate::store::layer_tests::ORG).unwrap();
    let s = Store::open(&d.path().join("state"), &src, Some(signer)).unwrap();
    let base = s.publish_source("test", true).unwrap().expect("published");
    report(&s, "edge-1", Some("a"), &base.revision, stats(1));
    report(&s, "edge-2", Some("b"), &base.revision, stats(1));
    let canary = s
        .publish_canary("admin", Selector::default(), plan(0.5))
        .expect("canary");
    assert_eq!(s.rollout_view().state(), Some(CanaryState::Watching));
    let at = canary.expires.unwrap().min(base.expires.unwrap());
    // Less than half left, more than a quarter: not during the watch.
    assert!(s.refresh(at - hour * 2 / 5).unwrap().is_none());
    let revision = |s: &Store| {
        s.rollout_view()
            .canary()
            .map(|c| c.rollout.revision.clone())
    };
    assert_eq!(revision(&s), Some(canary.revision.clone()));
    // Less than a quarter: re-signed, the watch following its revision.
    let p = s.refresh(at - hour / 5).unwrap().expect("re-signed");
    assert_eq!(s.rollout_view().state(), Some(CanaryState::Watching));
    assert_ne!(revision(&s), Some(canary.revision.clone()));
    assert!(s.lock().served.iter().any(|q| q.seq == p.seq));
}
