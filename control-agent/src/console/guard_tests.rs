//! How the console and the API guard their tokens, through a real
//! listener: failed tokens limited per address however many are sent at
//! once, the API's bearer tokens counted with the console's logins,
//! cross-site login forms refused without locking the operator out, and
//! tokens shorter than the minimum never looked up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::session::MAX_FAILURES;
use crate::approvals::{Approvals, Approver};
use crate::server::{Api, Tokens};

const ADMIN: &str = "admin-token-0123456789";
const FLEET: &str = "fleet-token-0123456789";
/// The fixture's approver's token (`tok("frank")` there).
const FRANK: &str = "tok-frank-0123456789";

/// The status of the answer on `s` (its first line).
async fn status_of(s: &mut tokio::net::TcpStream) -> u16 {
    let mut got = Vec::new();
    let mut b = [0u8; 512];
    while !got.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut b).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&got)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_logins_at_once_from_one_address_get_ten_guesses() {
    let (_d, _api, _state, url) = crate::api::tests::serve_fixture().await;
    let addr = url.trim_start_matches("http://").to_owned();
    // Each login sends its headers and all of its form but the last byte,
    // so that the agent has taken every one in before any token is read;
    // then the forms are finished. A check made before the form is read
    // and a failure counted after it would let all forty guess.
    let body = "token=wrong-guess-0123456789";
    let mut conns = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /console/login HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{}",
            body.len(),
            &body[..body.len() - 1]
        );
        s.write_all(head.as_bytes()).await.unwrap();
        conns.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for s in &mut conns {
        // An attempt refused already may find the connection closed.
        let _ = s.write_all(&body.as_bytes()[body.len() - 1..]).await;
    }
    let mut seen = BTreeMap::new();
    for s in &mut conns {
        *seen.entry(status_of(s).await).or_insert(0u32) += 1;
    }
    assert_eq!(seen.get(&401), Some(&MAX_FAILURES), "{seen:?}");
    assert_eq!(seen.get(&429), Some(&(40 - MAX_FAILURES)), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bearer_tokens_are_limited_per_address_as_logins_are() {
    let (_d, _api, _state, url) = crate::api::tests::serve_fixture().await;
    let http = reqwest::Client::new();
    let get = |token: String| {
        let http = http.clone();
        let url = format!("{url}/v1/approvals");
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            (r.status().as_u16(), retry)
        }
    };
    assert_eq!(get(FRANK.into()).await.0, 200);
    let mut statuses = Vec::new();
    for i in 0..200 {
        statuses.push(get(format!("wrong-guess-{i:012}")).await);
    }
    assert!(statuses[..MAX_FAILURES as usize].iter().all(|s| s.0 == 401));
    for (status, retry) in &statuses[MAX_FAILURES as usize..] {
        assert_eq!(*status, 429);
        assert!(retry.is_some_and(|s| (1..=300).contains(&s)), "{retry:?}");
    }
    // Past the allowance a right token waits too (else the answers would
    // tell which guess was right), and so does a console login; but a
    // token proven right from this address before the guesses (a gateway
    // or an approver behind the guesser's NAT) is not locked out.
    assert_eq!(get(ADMIN.into()).await.0, 429);
    assert_eq!(get(FRANK.into()).await.0, 200);
    assert_eq!(get(format!("wrong-guess-{:012}", 999)).await.0, 429);
    // The table of proven tokens has its gauge.
    let metrics = http
        .get(format!("{url}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("warden_agent_proven_tokens 1"),
        "{metrics}"
    );
    let r = http
        .post(format!("{url}/console/login"))
        .form(&[("token", FRANK)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // No token at all is no guess: told to bring one.
    assert_eq!(
        http.get(format!("{url}/v1/approvals"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_login_forms_are_refused_without_locking_the_operator_out() {
    let (_d, _api, state, url) = crate::api::tests::serve_fixture().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A page the operator opens posts the login form fifty times.
    for _ in 0..50 {
        let r = http
            .post(format!("{url}/console/login"))
            .header("origin", "https://evil.example")
            .form(&[("token", "wrong-guess-0123456789")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    let r = http
        .post(format!("{url}/console/login"))
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the operator still logs in");
    // Recorded as refusals, within a bound.
    let changes = std::fs::read_to_string(state.join("changes.jsonl")).unwrap();
    let noted = changes
        .lines()
        .filter(|l| l.contains("cross-site login"))
        .count();
    assert!(
        noted >= 1 && noted <= MAX_FAILURES as usize + 1,
        "{noted} written"
    );
    assert!(changes
        .lines()
        .filter(|l| l.contains("cross-site login"))
        .all(|l| l.contains("\"console.refused\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_shorter_than_sixteen_characters_is_never_taken() {
    let (d, api, _state, _url) = crate::api::tests::serve_fixture().await;
    // The files hold digests: a short token can be configured, and must
    // then fail wherever it is presented.
    let short = "short-tok-15chr";
    assert_eq!(short.len(), 15);
    let digest = |t: &str| -> [u8; 32] { Sha256::digest(t.as_bytes()).into() };
    let approvers = BTreeMap::from([
        (
            "sam".to_owned(),
            Approver {
                token: digest(short),
                principals: vec![],
                tenants: vec![],
            },
        ),
        (
            "sixteen".to_owned(),
            Approver {
                token: digest("sixteen-chars-ok"),
                principals: vec![],
                tenants: vec![],
            },
        ),
    ]);
    let state = d.path().join("short-state");
    let api = Arc::new(Api {
        store: api.store.clone(),
        tokens: Tokens::new(ADMIN, FLEET),
        approvals: Arc::new(Approvals::open(&state, approvers).unwrap()),
        metrics: Default::default(),
        audit: api.audit.clone(),
        console: Default::default(),
        admins: BTreeMap::new(),
        connect: None,
    });
    assert!(api.console_user(short).is_none());
    assert!(api.console_user("sixteen-chars-ok").is_some());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(crate::server::serve(listener, api, None));
    let http = reqwest::Client::new();
    let status = |t: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(format!("{url}/v1/approvals"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(short).await, 401);
    assert_eq!(status("sixteen-chars-ok").await, 200);
}
