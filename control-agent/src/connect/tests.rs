//! What the agent answers a gateway's ask, against a real vault on files
//! (no provider is reached: none of these asks needs a refresh).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::*;
use crate::vault::{MasterKeys, Vault};

struct Fixture {
    _dir: tempfile::TempDir,
    connect: Connect,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let src = dir.path().join("source");
    std::fs::create_dir_all(&src).expect("source");
    std::fs::write(src.join("warden.yaml"), crate::store::layer_tests::ORG).expect("yaml");
    let store = Arc::new(crate::store::Store::open(&state, &src, None).expect("store"));
    let keys =
        MasterKeys::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").expect("keys");
    let vault = Vault::new(
        Box::new(crate::vault::file::VaultFile::open(&state).expect("vault file")),
        Arc::new(keys),
    )
    .expect("vault");
    let config = config::parse(
        "providers:\n  saas:\n    authorization_endpoint: http://127.0.0.1:9/auth\n    token_endpoint: http://127.0.0.1:9/token\n    client_id: c\n    redirect_url: http://127.0.0.1:7/console/connect/callback\n",
        |_| None,
        |_| None,
    )
    .expect("connections");
    let origin = url::Url::parse("https://warden.example/").expect("url");
    Fixture {
        connect: Connect::new(config, Arc::new(vault), origin, store).expect("connect"),
        _dir: dir,
    }
}

fn ask(principal: &str, scopes: &[&str]) -> Ask {
    Ask {
        tenant: "acme".into(),
        principal: principal.into(),
        server: "saas".into(),
        provider: "saas".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        gateway: "gw-1".into(),
    }
}

/// Keeps a connection of `principal` granted `scopes`, ending at `expires_at`.
fn keep(f: &Fixture, principal: &str, scopes: &[&str], expires_at: u64, refresh: Option<&str>) {
    let meta = SealedConn {
        key: conn_key("acme", principal, "saas"),
        id: format!("c-{principal}"),
        provider: "saas".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        person: format!("oidc:{principal}"),
        created: 1,
        refreshed: 1,
        expires_at,
        dek_version: 0,
        tokens: Vec::new(),
        version: 0,
        refreshing: None,
    };
    let tokens = Tokens {
        access: format!("access-of-{principal}"),
        refresh: refresh.map(str::to_owned),
    };
    assert!(f.connect.vault.store(meta, &tokens, None).expect("store"));
}

fn token_of(a: &Answer) -> Option<&str> {
    match a {
        Answer::Ready { token, .. } => Some(token),
        Answer::Consent { .. } => None,
    }
}

#[tokio::test]
async fn a_connection_serves_its_principal_and_scopes_only() {
    let f = fixture();
    let later = now_secs() + 3600;
    keep(&f, "alice", &["files.read", "openid"], later, Some("r"));
    // Her own, with the scopes granted or fewer.
    for scopes in [&["files.read", "openid"][..], &["openid"], &[]] {
        let a = f
            .connect
            .token(&ask("alice", scopes))
            .await
            .expect("answer");
        assert_eq!(token_of(&a), Some("access-of-alice"), "{scopes:?}");
    }
    // Another spelling the gateway keeps apart is another principal.
    for other in ["bob", "ａｌｉｃｅ", "alicé"] {
        let a = f
            .connect
            .token(&ask(other, &["openid"]))
            .await
            .expect("answer");
        assert!(token_of(&a).is_none(), "{other} got alice's token");
    }
    // Widening the scopes asks again; so does another provider's server.
    let wider = f
        .connect
        .token(&ask("alice", &["files.read", "files.write"]))
        .await
        .expect("answer");
    let Answer::Consent { url, .. } = wider else {
        panic!("a wider scope set was served");
    };
    assert!(
        url.starts_with("https://warden.example/console/connect?link="),
        "{url}"
    );
    let mut elsewhere = ask("alice", &["openid"]);
    elsewhere.provider = "other".into();
    assert!(matches!(
        f.connect.token(&elsewhere).await,
        Err(Failed::NoProvider(_))
    ));
    // The link names what asked, MACed.
    let sealed = url.split("link=").nth(1).expect("link");
    let link: seal::Link =
        seal::open(&f.connect.keys(), seal::Kind::Link, sealed, now_secs()).expect("opens");
    assert_eq!(
        (link.principal.as_str(), link.scopes.clone()),
        (
            "alice",
            vec!["files.read".to_owned(), "files.write".to_owned()]
        )
    );
}

#[tokio::test]
async fn an_ended_token_without_a_refresh_token_asks_again_and_anonymous_callers_have_none() {
    let f = fixture();
    keep(&f, "carol", &["openid"], now_secs() - 1, None);
    let a = f
        .connect
        .token(&ask("carol", &["openid"]))
        .await
        .expect("answer");
    assert!(token_of(&a).is_none());
    assert!(f
        .connect
        .vault
        .connection(&conn_key("acme", "carol", "saas"))
        .expect("read")
        .is_none());
    // Still valid, with no refresh token: served until it ends.
    keep(&f, "dave", &["openid"], now_secs() + 30, None);
    let a = f
        .connect
        .token(&ask("dave", &["openid"]))
        .await
        .expect("answer");
    assert_eq!(token_of(&a), Some("access-of-dave"));
    assert!(matches!(
        f.connect.token(&ask("", &[])).await,
        Err(Failed::Refused(_))
    ));
    let mut ctl = ask("eve\u{0}", &[]);
    ctl.tenant = "acme".into();
    assert!(matches!(
        f.connect.token(&ctl).await,
        Err(Failed::Refused(_))
    ));
}

/// A provider that cannot be reached to refresh leaves the token in use
/// until it ends (the mark let go, so the next ask tries again), then the
/// call is refused as unreachable; the connection stays.
#[tokio::test]
async fn an_unreachable_provider_leaves_the_token_in_use_until_it_ends() {
    let f = fixture();
    // Within refresh_before (60 s) of its end: a refresh is due; the
    // provider (127.0.0.1:9) refuses connections.
    keep(&f, "frank", &["openid"], now_secs() + 30, Some("r-frank"));
    for _ in 0..2 {
        let a = f
            .connect
            .token(&ask("frank", &["openid"]))
            .await
            .expect("answer");
        assert_eq!(token_of(&a), Some("access-of-frank"));
    }
    let key = conn_key("acme", "frank", "saas");
    let (kept, _) = f
        .connect
        .vault
        .connection(&key)
        .expect("read")
        .expect("kept");
    assert!(kept.refreshing.is_none_or(|(_, until)| until <= now_secs()));
    // Ended: refused, kept for when the provider is back.
    keep(&f, "gina", &["openid"], now_secs() - 1, Some("r-gina"));
    assert!(matches!(
        f.connect.token(&ask("gina", &["openid"])).await,
        Err(Failed::Provider(..))
    ));
    assert!(f
        .connect
        .vault
        .connection(&conn_key("acme", "gina", "saas"))
        .expect("read")
        .is_some());
}
