//! The credential a gateway asks for, against a provider on loopback that
//! rotates its refresh tokens (a spent one is refused, as RFC 9700 has
//! it): one refresh however many asks arrive at once, and the gateway an
//! ask names is the one whose token asks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;

use super::config::{Connections, Provider};
use super::{conn_key, Answer, Ask, Connect};
use crate::oidc::now_secs;
use crate::vault::file::VaultFile;
use crate::vault::{MasterKeys, SealedConn, Tokens, Vault};

/// The provider: the refresh token it takes now, and how many refreshes
/// it was asked for.
#[derive(Default)]
struct Saas {
    current: Mutex<String>,
    issued: AtomicU32,
    asked: AtomicU32,
}

async fn token_endpoint(
    State(saas): State<Arc<Saas>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    saas.asked.fetch_add(1, Ordering::SeqCst);
    let spent = {
        let mut current = saas.current.lock().unwrap();
        if form.get("refresh_token") == Some(&*current) {
            let n = saas.issued.fetch_add(1, Ordering::SeqCst) + 1;
            *current = format!("rt-{n}");
            None
        } else {
            Some(())
        }
    };
    // An answer that takes a while, as a provider's does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let json = |status: u16, v: serde_json::Value| {
        let mut r = v.to_string().into_response();
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    };
    match spent {
        Some(()) => json(400, serde_json::json!({"error": "invalid_grant"})),
        None => {
            let n = saas.issued.load(Ordering::SeqCst);
            json(
                200,
                serde_json::json!({
                    "access_token": format!("at-{n}"),
                    "refresh_token": format!("rt-{n}"),
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "scope": "read",
                }),
            )
        }
    }
}

/// The provider on loopback and its URL.
async fn saas() -> (Arc<Saas>, String) {
    let saas = Arc::new(Saas {
        current: Mutex::new("rt-0".into()),
        ..Default::default()
    });
    let app = axum::Router::new()
        .route("/token", axum::routing::post(token_endpoint))
        .with_state(saas.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (saas, url)
}

struct Fixture {
    _d: tempfile::TempDir,
    connect: Arc<Connect>,
    saas: Arc<Saas>,
}

/// A `Connect` on a file vault, its provider `saas` on loopback.
async fn fixture() -> Fixture {
    let (saas, url) = saas().await;
    let (d, store) = tokio::task::spawn_blocking(crate::store::layer_tests::org_store)
        .await
        .unwrap();
    let provider = Provider {
        name: "saas".into(),
        authorization_endpoint: format!("{url}/auth").parse().unwrap(),
        token_endpoint: format!("{url}/token").parse().unwrap(),
        revocation_endpoint: None,
        client_id: "warden".into(),
        client_secret: Some("shh".into()),
        redirect_url: "https://agent.example/console/connect/callback"
            .parse()
            .unwrap(),
        resource: None,
        timeout: Duration::from_secs(5),
    };
    let config = Connections {
        providers: BTreeMap::from([("saas".to_owned(), provider)]),
        ..Connections::none()
    };
    let keys = MasterKeys::parse(&format!(
        "k1:{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32])
    ))
    .unwrap();
    let vault = Vault::new(
        Box::new(VaultFile::open(&d.path().join("state")).unwrap()),
        Arc::new(keys),
    )
    .unwrap();
    let connect = Connect::new(
        config,
        Arc::new(vault),
        "https://agent.example/".parse().unwrap(),
        Arc::new(store),
    )
    .unwrap();
    Fixture {
        _d: d,
        connect: Arc::new(connect),
        saas,
    }
}

fn ask(gateway: &str) -> Ask {
    Ask {
        tenant: "acme".into(),
        principal: "alice".into(),
        server: "saas".into(),
        provider: "saas".into(),
        scopes: vec!["read".into()],
        gateway: gateway.into(),
    }
}

/// Alice's connection, its access token `at-0` ending in `ends_in`
/// seconds, refreshed with `rt-0`.
fn connected(c: &Connect, ends_in: u64) {
    let now = now_secs();
    let meta = SealedConn {
        key: conn_key("acme", "alice", "saas"),
        id: "c1".into(),
        provider: "saas".into(),
        scopes: vec!["read".into()],
        person: "oidc:alice".into(),
        created: now,
        refreshed: now,
        expires_at: now + ends_in,
        dek_version: 0,
        tokens: Vec::new(),
        version: 0,
        refreshing: None,
    };
    let tokens = Tokens {
        access: "at-0".into(),
        refresh: Some("rt-0".into()),
    };
    assert!(c.vault.store(meta, &tokens, None).unwrap());
}

fn token_of(a: &Answer) -> Option<&str> {
    match a {
        Answer::Ready { token, .. } => Some(token),
        Answer::Consent { .. } => None,
    }
}

/// Two asks of one agent for a token due for refresh, at once (two
/// gateways whose caches ended together): the provider is asked once. The
/// second ask takes the still-valid token, or waits, as it would behind
/// another agent's refresh; were both to refresh, the second would spend
/// the rotated refresh token, the provider would refuse it (and may end
/// the whole grant), and the person's connection would be removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_refreshes_a_connection_once_however_many_ask_at_once() {
    let f = fixture().await;
    connected(&f.connect, 10);
    let a = ask("gw");
    let (one, two) = tokio::join!(f.connect.token(&a), f.connect.token(&a));
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(f.saas.asked.load(Ordering::SeqCst), 1, "one refresh");
    for answer in [&one, &two] {
        assert!(
            matches!(token_of(answer), Some("at-0" | "at-1")),
            "a token, not a consent link"
        );
    }
    assert!(
        [&one, &two].iter().any(|a| token_of(a) == Some("at-1")),
        "one of them refreshed"
    );
    // The connection is kept, refreshed.
    let again = f.connect.token(&a).await.unwrap();
    assert_eq!(token_of(&again), Some("at-1"));
    assert_eq!(f.saas.asked.load(Ordering::SeqCst), 1);
}

/// A gateway with a token of its own names its own id in what it asks
/// (the consent page shows it to the person); the shared fleet token
/// speaks for no gateway that has its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_names_the_gateway_whose_token_asks() {
    use crate::caller::Caller;
    use crate::server::extract::JsonBody;
    let f = fixture().await;
    let (_dirs, api) = api_with(f.connect.clone()).await;
    let status = |r: crate::server::error::ApiResult| match r {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.into_response().status().as_u16(),
    };
    let asked = |caller: Caller, gateway: &str| {
        let api = api.clone();
        let a = ask(gateway);
        async move { crate::api::vault::token(State(api), caller, JsonBody(a)).await }
    };
    let own = || Caller::Gateway(Some("edge-own".into()));
    assert_eq!(status(asked(own(), "edge-1").await), 403);
    assert_eq!(status(asked(Caller::Gateway(None), "edge-own").await), 403);
    assert_eq!(status(asked(own(), "edge-own").await), 200);
    assert_eq!(status(asked(Caller::Gateway(None), "edge-1").await), 200);
}

/// An agent's API around `connect`, `edge-own` a gateway with a token of
/// its own.
async fn api_with(connect: Arc<Connect>) -> ([tempfile::TempDir; 2], Arc<crate::server::Api>) {
    use sha2::Digest;
    let d = tempfile::tempdir().unwrap();
    let state = d.path().to_path_buf();
    let (d2, store) = tokio::task::spawn_blocking(crate::store::layer_tests::org_store)
        .await
        .unwrap();
    let api = crate::server::Api {
        store: Arc::new(store),
        tokens: crate::server::Tokens::new("admin-token-0123456789", "fleet-token-0123456789")
            .with_gateways([(
                "edge-own".to_owned(),
                sha2::Sha256::digest(b"gateway-edge-own-0123456789").into(),
            )]),
        approvals: Arc::new(crate::approvals::Approvals::open(&state, BTreeMap::new()).unwrap()),
        metrics: Default::default(),
        audit: Arc::new(
            crate::audit::AuditStore::open(&state.join("audit.sqlite3"), Default::default())
                .unwrap(),
        ),
        console: Default::default(),
        admins: Default::default(),
        connect: Some(connect),
    };
    ([d, d2], Arc::new(api))
}
