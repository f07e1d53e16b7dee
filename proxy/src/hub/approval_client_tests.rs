//! The list of just-in-time grants as a gateway takes it from one agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn client() -> ApprovalClient {
    let agents = Agents::new("approvals", &["http://127.0.0.1:9".to_owned()]).expect("agents");
    ApprovalClient::new(agents, None, "gw-1", None).expect("client")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn list(issued_at: u64) -> Vec<u8> {
    serde_json::json!({"grants": [{"id": "ap_1", "tenant": "acme", "principal": "alice",
        "kind": "tool", "name": "deploy", "expires_at": u64::MAX}], "issued_at": issued_at})
    .to_string()
    .into_bytes()
}

/// A list is taken while it is recent; one too old, or issued ahead of
/// this gateway's clock by more than the age a list may have (its age
/// cannot be judged: a replay of it would hold for as long), is not, nor
/// one whose `issued_at` is so large its age would wrap round.
#[test]
fn a_list_of_grants_is_taken_while_recent_only() {
    let c = client();
    let t = now();
    assert_eq!(c.grants_of(&list(t)).expect("recent").len(), 1);
    assert!(c.grants_of(&list(t - 30)).is_ok());
    assert!(c.grants_of(&list(t + 5)).is_ok(), "a clock a little ahead");
    let old = c.grants_of(&list(t - 120)).expect_err("old");
    assert!(old.contains("too old"), "{old}");
    let ahead = c.grants_of(&list(t + 3600)).expect_err("ahead");
    assert!(ahead.contains("ahead"), "{ahead}");
    for huge in [u64::MAX, u64::MAX - 30] {
        assert!(c.grants_of(&list(huge)).is_err(), "{huge}");
    }
    assert!(c.grants_of(b"not json").is_err());
}
