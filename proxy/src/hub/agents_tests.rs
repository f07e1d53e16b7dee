#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn urls(v: &[&str]) -> Result<Vec<String>, String> {
    parse_urls(
        "--agent",
        &v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
    )
}

#[test]
fn a_list_of_agents_is_commas_or_the_flag_repeated() {
    assert_eq!(
        urls(&["http://a:7070,https://b.example/agent/"]).unwrap(),
        ["http://a:7070", "https://b.example/agent"]
    );
    assert_eq!(
        urls(&["http://a:7070", "http://10.0.0.2:7070, http://[::1]:7070"]).unwrap(),
        ["http://a:7070", "http://10.0.0.2:7070", "http://[::1]:7070"]
    );
}

#[test]
fn junk_in_a_list_of_agents_is_refused_at_start() {
    for (bad, says) in [
        ("", "an empty entry"),
        ("http://a:7070,", "an empty entry"),
        (",http://a:7070", "an empty entry"),
        ("http://a:7070,,http://b:7070", "an empty entry"),
        ("http://a:7070, ,http://b:7070", "an empty entry"),
        ("ftp://a:7070", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("unix:/run/agent.sock", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("a:7070", "http:// or https://"),
        ("127.0.0.1:7070", "not a URL"),
        ("agent-1", "not a URL"),
        ("http:agent", "not a base URL"),
        ("http://", "empty host"),
        ("http://user:pw@a:7070", "credentials"),
        ("http://tok@a:7070", "credentials"),
        ("http://a:7070/?x=1", "no query"),
        ("http://a:7070/#x", "no query or fragment"),
        ("http://a :7070", "no space"),
        ("http://a:7070,http://a:7070/", "given twice"),
        ("http://a:99999", "invalid port"),
    ] {
        let err = urls(&[bad]).expect_err(bad);
        assert!(err.contains(says), "{bad:?}: {err}");
        assert!(err.starts_with("--agent"), "{bad:?}: {err}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("http://10.0.0.{i}:7070")).collect();
    let err = parse_urls("--agent", &[many.join(",")]).expect_err("too many");
    assert!(err.contains("at most 16"), "{err}");
}

fn names(v: &[Endpoint]) -> Vec<&str> {
    v.iter().map(|e| e.base.as_str()).collect()
}

#[tokio::test]
async fn the_agent_that_answered_last_is_asked_first_and_one_that_failed_last() {
    let a = Agents::new(
        "agent",
        &[
            "http://127.0.0.1:1".into(),
            "http://127.0.0.2:1".into(),
            "http://127.0.0.3:1".into(),
        ],
    )
    .unwrap();
    let c = a.candidates().await;
    assert_eq!(
        names(&c),
        [
            "http://127.0.0.1:1",
            "http://127.0.0.2:1",
            "http://127.0.0.3:1"
        ]
    );
    // The first fails: the others before it, in their order.
    a.failed(&c[0], Use::Bundles, "connection refused");
    let next = a.candidates().await;
    assert_eq!(
        names(&next),
        [
            "http://127.0.0.2:1",
            "http://127.0.0.3:1",
            "http://127.0.0.1:1"
        ]
    );
    // The third answers: it stays first while it answers.
    a.answered(&c[2]);
    assert_eq!(names(&a.candidates().await)[0], "http://127.0.0.3:1");
    assert_eq!(a.base_in_use(), "http://127.0.0.3:1");
    // It fails too: the second (never failed) goes first, then the two
    // that failed, the one that failed first (free soonest) before.
    a.failed(&c[2], Use::Audit, "status 503");
    assert_eq!(
        names(&a.candidates().await),
        [
            "http://127.0.0.2:1",
            "http://127.0.0.1:1",
            "http://127.0.0.3:1"
        ]
    );
    // After their pause (one second at first) both are asked again, the
    // one that answered last first (no other answered since).
    tokio::time::sleep(FIRST_PAUSE + Duration::from_millis(50)).await;
    assert_eq!(
        names(&a.candidates().await),
        [
            "http://127.0.0.3:1",
            "http://127.0.0.1:1",
            "http://127.0.0.2:1"
        ]
    );
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap();
    assert!(
        text.contains(
            "warden_control_agent_in_use{address=\"\",agent=\"http://127.0.0.3:1\",role=\"agent\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "warden_control_agent_failovers_total{address=\"\",agent=\"http://127.0.0.3:1\",role=\"agent\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "warden_control_agent_failures_total{address=\"\",agent=\"http://127.0.0.3:1\",role=\"agent\",use=\"audit\"} 1"
        ),
        "{text}"
    );
}

/// A name is one agent per address, each pinned: the request reaches that
/// address while `Host` (and TLS) keep the name.
#[tokio::test]
async fn a_name_with_several_addresses_is_several_agents_that_keep_the_name() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Agents::new("agent", &["http://localhost:7070".into()]).unwrap();
    let c = a.candidates().await;
    assert!(!c.is_empty());
    assert!(
        c.iter()
            .all(|e| e.base == "http://localhost:7070"
                && e.addr.is_some_and(|a| a.ip().is_loopback())),
        "{c:?}"
    );
    // A name pinned to the address of a listener here.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = conn.read(&mut buf).await.unwrap();
        let _ = conn
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
        String::from_utf8_lossy(&buf[..n]).to_lowercase()
    });
    let e = Endpoint {
        base: format!("http://agents.warden.invalid:{port}"),
        host: "agents.warden.invalid".into(),
        addr: Some(format!("127.0.0.1:{port}").parse().unwrap()),
    };
    let clients = Clients::new(reqwest::Client::builder);
    let r = clients
        .get(&e)
        .unwrap()
        .get(e.url("/v1/bundles/current"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let head = served.await.unwrap();
    assert!(
        head.contains(&format!("host: agents.warden.invalid:{port}")),
        "{head}"
    );
    assert_eq!(
        e.name(),
        format!("http://agents.warden.invalid:{port} (127.0.0.1:{port})")
    );
}
