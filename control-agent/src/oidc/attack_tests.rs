#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A reviewer's attacks on the sign-in through the provider, each a test
//! that failed while the hole it names was open: a provider of its own
//! (discovery, keys, token and userinfo endpoints on a real listener)
//! answers the agent as a real one would, with tokens signed by a real
//! Ed25519 key, and the agent's own listener takes what an attacker sends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair;
use serde_json::{json, Value};

use super::pending::{self, Mode};
use super::{config, now_secs, roles, verify, Failed, Finished, Oidc};
use crate::console::user::{SignedIn, User};

/// What the test's provider answers.
#[derive(Default)]
struct Answers {
    id_token: String,
    userinfo: Value,
    token_calls: usize,
}

/// A provider on a real listener: its issuer, its key and what it answers.
struct Idp {
    issuer: String,
    key: EncodingKey,
    answers: Arc<Mutex<Answers>>,
}

fn json_answer(v: String) -> ([(http::HeaderName, &'static str); 1], String) {
    ([(http::header::CONTENT_TYPE, "application/json")], v)
}

async fn idp() -> Idp {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "use": "sig",
        "alg": "EdDSA", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())}]})
    .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let meta = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "end_session_endpoint": format!("{issuer}/logout"),
        "code_challenge_methods_supported": ["S256"],
    })
    .to_string();
    let answers = Arc::new(Mutex::new(Answers::default()));
    let (a1, a2) = (answers.clone(), answers.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let m = meta.clone();
                async move { json_answer(m) }
            }),
        )
        .route(
            "/jwks",
            get(move || {
                let j = jwks.clone();
                async move { json_answer(j) }
            }),
        )
        .route(
            "/token",
            post(move || {
                let a = a1.clone();
                async move {
                    let mut a = a.lock().unwrap();
                    a.token_calls += 1;
                    json_answer(
                        json!({"id_token": a.id_token, "access_token": "at-1",
                               "token_type": "Bearer"})
                        .to_string(),
                    )
                }
            }),
        )
        .route(
            "/userinfo",
            get(move || {
                let a = a2.clone();
                async move { json_answer(a.lock().unwrap().userinfo.to_string()) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Idp {
        issuer,
        key: EncodingKey::from_ed_der(pkcs8.as_ref()),
        answers,
    }
}

/// The provider file of the agent that trusts `issuer`.
fn provider_file(issuer: &str) -> config::OidcConfig {
    config::parse(
        &format!(
            "issuer: {issuer}\nclient_id: warden\nclient_secret_env: S\n\
             redirect_url: http://127.0.0.1:1/console/oidc/callback\n\
             roles:\n  - {{claim: groups, value: approvers, role: approver}}\n\
             principal_claims: [sub, employee_id]\nrecheck: 5m\n\
             critical: {{max_age: 5m}}\n"
        ),
        |_| Some("s3cret".into()),
        |_| None,
    )
    .unwrap()
}

/// The value of the pending sign-in's cookie in a `Set-Cookie`.
fn cookie_value(set_cookie: &str) -> String {
    let first = set_cookie.split(';').next().unwrap();
    first.split_once('=').unwrap().1.to_owned()
}

/// A query parameter of `url`.
fn param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

impl Idp {
    /// A whole sign-in of `mode`: started by the agent, answered by the
    /// provider with an ID token of `claims` (the nonce the agent asked
    /// for added), finished by the agent.
    async fn sign_in(
        &self,
        oidc: &Oidc,
        mode: Mode,
        mut claims: Value,
    ) -> Result<Finished, Failed> {
        let started = oidc.start(mode, "/console/approvals").await.unwrap();
        let (state, nonce) = (
            param(&started.location, "state"),
            param(&started.location, "nonce"),
        );
        claims["nonce"] = json!(nonce);
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("k1".into());
        {
            let mut a = self.answers.lock().unwrap();
            a.id_token = jsonwebtoken::encode(&h, &claims, &self.key).unwrap();
            if a.userinfo.is_null() {
                a.userinfo = json!({"sub": claims["sub"]});
            }
        }
        let q = BTreeMap::from([
            ("code".to_owned(), "code-1".to_owned()),
            ("state".to_owned(), state),
        ]);
        oidc.finish(&q, Some(&cookie_value(&started.set_cookie)))
            .await
    }

    fn claims(&self, now: u64) -> Value {
        json!({"iss": self.issuer, "aud": "warden", "sub": "ann", "iat": now, "exp": now + 300,
               "groups": ["approvers"]})
    }
}

fn signed_in(f: &Finished) -> &SignedIn {
    f.user.as_ref().unwrap().oidc.as_ref().unwrap()
}

/// A provider names `auth_time` only when asked (`max_age`, a claims
/// request): an ID token of a login or a recheck (`prompt=none`, the
/// provider's session of days ago) without it says nothing of when the
/// person authenticated. Taken as "now", every recheck made the session
/// look freshly authenticated, and a CRITICAL approval asked no fresh
/// sign-in of a session whose provider login was days old.
#[tokio::test]
async fn a_sign_in_that_names_no_auth_time_is_no_fresh_one() {
    let idp = idp().await;
    let oidc = Oidc::new(provider_file(&idp.issuer)).unwrap();
    for mode in [Mode::Login, Mode::Refresh] {
        let now = now_secs();
        let done = idp.sign_in(&oidc, mode, idp.claims(now)).await.unwrap();
        let at = signed_in(&done).auth_time;
        assert!(
            now.saturating_sub(at) > 300,
            "{mode:?}: a sign-in of unknown time is taken as one at {at} (now {now})"
        );
    }
    // A fresh sign-in must name it (the provider was asked `max_age`).
    let now = now_secs();
    assert!(matches!(
        idp.sign_in(&oidc, Mode::Fresh, idp.claims(now)).await,
        Err(Failed::Token(verify::Refused::Stale(_)))
    ));
    let mut c = idp.claims(now);
    c["auth_time"] = json!(now - 5);
    let done = idp.sign_in(&oidc, Mode::Fresh, c).await.unwrap();
    assert_eq!(signed_in(&done).auth_time, now - 5);
}

/// An `auth_time` in the future (a provider's clock far ahead, a bug)
/// does not keep a login "fresh" until then: at most now, and one past
/// the skew is no time at all.
#[tokio::test]
async fn an_auth_time_in_the_future_is_no_fresher_than_now() {
    let idp = idp().await;
    let oidc = Oidc::new(provider_file(&idp.issuer)).unwrap();
    let now = now_secs();
    let mut c = idp.claims(now);
    c["auth_time"] = json!(now + 3_600);
    let done = idp.sign_in(&oidc, Mode::Login, c).await.unwrap();
    let at = signed_in(&done).auth_time;
    assert!(at <= now_secs(), "auth_time kept as {at}");
    assert!(
        now_secs().saturating_sub(at) > 300,
        "auth_time kept as {at}"
    );
    let mut c = idp.claims(now);
    c["auth_time"] = json!(now + 20);
    let done = idp.sign_in(&oidc, Mode::Login, c).await.unwrap();
    assert!(signed_in(&done).auth_time <= now_secs());
}

/// The userinfo endpoint speaks of the token's subject or of nobody:
/// another `sub`, or none, refuses the sign-in (its groups are not the
/// person's).
#[tokio::test]
async fn userinfo_of_another_subject_is_refused() {
    let idp = idp().await;
    let oidc = Oidc::new(provider_file(&idp.issuer)).unwrap();
    for info in [
        json!({"sub": "mallory", "groups": ["approvers"]}),
        json!({"groups": ["approvers"]}),
        json!({"sub": "ANN", "groups": ["approvers"]}),
    ] {
        idp.answers.lock().unwrap().userinfo = info.clone();
        let r = idp
            .sign_in(&oidc, Mode::Login, idp.claims(now_secs()))
            .await;
        assert!(matches!(r, Err(Failed::Refused(_))), "{info}: {r:?}");
    }
}

/// A callback carries the `state` of this browser's sign-in, with its
/// cookie, or nothing is exchanged: a code of another browser's sign-in
/// (login CSRF) never reaches the token endpoint.
#[tokio::test]
async fn a_callback_of_another_sign_in_exchanges_nothing() {
    let idp = idp().await;
    let oidc = Oidc::new(provider_file(&idp.issuer)).unwrap();
    let mine = oidc.start(Mode::Login, "/console").await.unwrap();
    let theirs = oidc.start(Mode::Login, "/console").await.unwrap();
    let q = |state: String| {
        BTreeMap::from([
            ("code".to_owned(), "attackers-code".to_owned()),
            ("state".to_owned(), state),
        ])
    };
    let cookie = cookie_value(&mine.set_cookie);
    for (query, cookie) in [
        (q(param(&theirs.location, "state")), Some(cookie.as_str())),
        (q(param(&mine.location, "state")), None),
        (q(String::new()), Some(cookie.as_str())),
    ] {
        assert!(matches!(
            oidc.finish(&query, cookie).await,
            Err(Failed::Refused(_))
        ));
    }
    assert_eq!(idp.answers.lock().unwrap().token_calls, 0);
}

/// A principal claim that is a number (an employee number the gateway
/// knows the person by) still names that principal: dropped, the person
/// could approve their own calls.
#[test]
fn a_numeric_principal_claim_still_names_the_principal() {
    let cfg = provider_file("https://idp.example");
    let claims = json!({"groups": "approvers", "employee_id": 4711});
    let user = roles::user_of(
        &cfg,
        &roles::Signed {
            sub: "ann",
            claims: claims.as_object().unwrap(),
            auth_time: Some(100),
            acr: None,
            now: 100,
        },
    )
    .unwrap();
    let o = user.oidc.unwrap();
    assert!(
        o.principals.contains(&"4711".to_owned()),
        "{:?}",
        o.principals
    );
    // In an array too, nested or not.
    let claims = json!({"groups": "approvers", "employee_id": [4711, ["e-9"]]});
    let user = roles::user_of(
        &cfg,
        &roles::Signed {
            sub: "ann",
            claims: claims.as_object().unwrap(),
            auth_time: Some(100),
            acr: None,
            now: 100,
        },
    )
    .unwrap();
    let p = user.oidc.unwrap().principals;
    assert!(p.contains(&"4711".to_owned()) && p.contains(&"e-9".to_owned()));
}

/// What the console shows of a person is theirs to choose at many
/// providers (`preferred_username`, `name`): no bidi control or
/// invisible character of it reorders what the console writes around it.
#[test]
fn the_name_shown_holds_no_invisible_characters() {
    let cfg = provider_file("https://idp.example");
    let claims = json!({"groups": "approvers", "preferred_username": "ann\u{202e}nimda\u{200b}"});
    let user = roles::user_of(
        &cfg,
        &roles::Signed {
            sub: "ann",
            claims: claims.as_object().unwrap(),
            auth_time: Some(100),
            acr: None,
            now: 100,
        },
    )
    .unwrap();
    assert_eq!(user.oidc.unwrap().shown, "annnimda");
}

/// A subject is read as one bare id, as a caller's principal of that
/// name is: `a℅b` is `ac/ob` to a reader (NFKC), which the approvals read
/// as tenant `ac`'s `ob` while the gateway's caller `a℅b` is the id
/// `ac/ob` — so the person would not be refused their own calls.
#[test]
fn a_subject_with_a_slash_in_compatibility_form_is_refused() {
    for sub in [
        "a\u{2105}b",
        "\u{2100}lice",
        "x\u{2101}",
        "y\u{2106}",
        "a\u{ff0f}b",
    ] {
        assert!(verify::subject(sub).is_err(), "{sub}");
    }
    verify::subject("alice").unwrap();
    verify::subject("Ölaf").unwrap();
}

/// An `exp` the provider writes as far in the future as a number goes
/// is read without overflowing (a panic in the callback's task).
#[test]
fn an_exp_at_the_end_of_time_does_not_overflow() {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let jwks: JwkSet = serde_json::from_value(json!({"keys": [{"kty": "OKP", "crv": "Ed25519",
        "kid": "k1", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())}]}))
    .unwrap();
    let now = 1_800_000_000u64;
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("k1".into());
    let t = jsonwebtoken::encode(
        &h,
        &json!({"iss": "https://idp.example", "aud": "warden", "sub": "ann", "iat": now,
                "exp": u64::MAX, "nonce": "n", "auth_time": u64::MAX}),
        &EncodingKey::from_ed_der(pkcs8.as_ref()),
    )
    .unwrap();
    let key = verify::key_for(&jwks, Some("k1"), Algorithm::EdDSA).unwrap();
    let want = |max_age| verify::Expect {
        issuer: "https://idp.example",
        client_id: "warden",
        nonce: "n",
        max_age,
        skew: Duration::from_secs(60),
        now,
    };
    let r = std::panic::catch_unwind(|| verify::verify(&t, &key, Algorithm::EdDSA, &want(None)));
    assert!(r.is_ok_and(|r| r.is_ok()), "an exp at u64::MAX panics");
    let r = std::panic::catch_unwind(|| {
        verify::verify(
            &t,
            &key,
            Algorithm::EdDSA,
            &want(Some(Duration::from_secs(60))),
        )
    });
    assert!(r.is_ok_and(|r| r.is_err()), "an auth_time at u64::MAX");
}

/// A key the provider publishes for one algorithm (`alg`) verifies no
/// token of another: an RSA key named RS256 does not take a PS256
/// signature (RFC 7517 4.4; one key, one algorithm).
#[test]
fn a_key_named_for_one_algorithm_verifies_no_other() {
    let rsa: JwkSet = serde_json::from_value(json!({"keys": [{"kty": "RSA", "kid": "r1",
        "alg": "RS256", "use": "sig", "e": "AQAB",
        "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"}]}))
    .unwrap();
    assert!(verify::key_for(&rsa, Some("r1"), Algorithm::RS256).is_ok());
    for alg in [Algorithm::PS256, Algorithm::RS512, Algorithm::PS512] {
        assert!(
            verify::key_for(&rsa, Some("r1"), alg).is_err(),
            "{alg:?} with an RS256 key"
        );
    }
    // A key that names no algorithm: any of its family.
    let mut any = rsa.clone();
    any.keys[0].common.key_algorithm = None;
    assert!(verify::key_for(&any, Some("r1"), Algorithm::PS256).is_ok());
}

/// After the sign-in the browser goes under `/console`, also as a
/// browser resolves the path: percent-encoded dot segments and a tab or
/// other control inside `..` (dropped by the URL parser) do not climb out.
#[test]
fn the_page_after_a_sign_in_stays_under_the_console_as_a_browser_reads_it() {
    for asked in [
        "/console/%2e%2e/v1/kill",
        "/console/%2E%2E/v1/kill",
        "/console/.%2e/v1/kill",
        "/console/%2e./v1/kill",
        "/console/.\t./v1/kill",
        "/console/.\u{0}./v1",
        "/console/..\t/v1",
        "/console/approvals/%2e%2e/%2e%2e/metrics",
    ] {
        assert_eq!(pending::safe_next(asked), "/console", "{asked:?}");
    }
    for kept in [
        "/console/approvals/a-1",
        "/console/audit?q=%2e%2e",
        "/console?tenant=acme",
    ] {
        assert_eq!(pending::safe_next(kept), kept);
    }
}

/// `principal_claims: []` would make a person no principal at all: an
/// approver who is also a caller would approve their own held calls.
#[test]
fn a_provider_file_without_principal_claims_is_refused() {
    let e = config::parse(
        "issuer: https://idp.example\nclient_id: w\nredirect_url: https://w.example/console/oidc/callback\n\
         roles:\n  - {claim: g, value: v, role: approver}\nprincipal_claims: []\n",
        |_| None,
        |_| None,
    )
    .unwrap_err();
    assert!(e.contains("principal_claims"), "{e}");
}

/// An agent whose console holds the identity provider of `issuer`, on a
/// real listener.
async fn console_with(
    issuer: &str,
) -> (
    tempfile::TempDir,
    Arc<crate::server::Api>,
    std::path::PathBuf,
    String,
) {
    let mut cfg = provider_file(issuer);
    cfg.token_login = false;
    let mut console = crate::console::state::Console::default();
    console.oidc = Some(Arc::new(Oidc::new(cfg).unwrap()));
    crate::api::tests::serve_fixture_console(Default::default(), console).await
}

/// Anyone may send the callback, the start and the closed token form;
/// each refusal is recorded, but within a bound per address, as failed
/// token logins are: else a loop of requests without any cookie writes
/// the change record until it is moved aside, taking the record of what
/// operators did with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sign_ins_cannot_flood_the_change_record() {
    use crate::console::session::MAX_FAILURES;
    // A provider that is not there: the start fails too.
    let (_d, _api, state, url) = console_with("http://127.0.0.1:9").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for i in 0..40 {
        let r = http
            .get(format!("{url}/console/oidc/callback?code=c{i}&state=s{i}"))
            .send()
            .await
            .unwrap();
        // A callback with a code is a guess until it signs someone in: past
        // the address's allowance it is refused before any exchange.
        let want = if i < MAX_FAILURES { 400 } else { 429 };
        assert_eq!(r.status(), want, "callback {i}");
        let r = http
            .get(format!("{url}/console/oidc/start"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
        let r = http
            .post(format!("{url}/console/login"))
            .form(&[("token", "admin-token-0123456789")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    let changes = std::fs::read_to_string(state.join("changes.jsonl")).unwrap_or_default();
    let written = changes
        .lines()
        .filter(|l| l.contains("\"console.login\""))
        .count();
    assert!(
        written <= MAX_FAILURES as usize + 1,
        "{written} refusals written for 120 requests"
    );
    assert!(written >= 1, "no refusal written");
}

/// A session the provider made is read again from the provider every
/// `recheck`; an agent of the fleet that holds no provider (its sessions
/// shared through the database, or `--oidc` dropped at a restart) cannot
/// read it again, so the session ends there instead of living on with
/// roles nobody rechecks and CRITICAL approvals that ask no fresh
/// sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_session_on_an_agent_without_the_provider_ends() {
    let (_d, api, _state, url) = crate::api::tests::serve_fixture().await;
    // As the database keeps it (the fields a session of any kind has).
    let user: User = serde_json::from_value(json!({
        "name": "oidc:ann", "role": "Approver", "tenants": [], "actor": null,
        "oidc": {"sub": "ann", "shown": "ann", "principals": ["ann"],
                 "auth_time": now_secs(), "acr": null, "recheck_at": now_secs() - 60},
    }))
    .unwrap();
    let (sid, _) = api.console.sessions.open(user).unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(format!("{url}/console/approvals"))
        .header(
            "cookie",
            format!("{}={sid}", crate::console::session::COOKIE),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the session was served");
    assert_eq!(
        r.headers().get("location").unwrap().to_str().unwrap(),
        "/console/login"
    );
    assert!(api.console.sessions.get(&sid).is_none());
}
