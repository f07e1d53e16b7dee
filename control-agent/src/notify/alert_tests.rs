#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Budget alerts from ingest to a real webhook receiver on a local port:
//! the agent's API takes a batch whose record carries an alert (twice),
//! and its notifier sends the alert once to each webhook that hears of
//! budget alerts in the record's tenant (signed generic JSON, Slack,
//! Teams), tries again the one that answered 500, and sends nothing to a
//! webhook of another tenant or of held calls alone. On SQLite, and on
//! PostgreSQL with a second agent's store taking the same batch.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::config::{Event, Kind, NotifyConfig, Webhook};
use crate::audit::tests::Trail;
use crate::audit::AuditStore;
use crate::pg::Lease;
use crate::server::{Api, Tokens};

const ADMIN: &str = "admin-token-0123456789";
const FLEET: &str = "fleet-token-0123456789";
const SECRET: &[u8] = b"hook-secret-0123456789-abcdef";

/// What the receiver took: (path, headers, body).
type Taken = Arc<Mutex<Vec<(String, BTreeMap<String, String>, Vec<u8>)>>>;

/// A webhook receiver on a port of its own: records every request it
/// answers 204; the first request of each path in `fail_first` is
/// answered 500 (and not recorded). Its URL.
async fn receiver(taken: Taken, fail_first: Vec<String>) -> String {
    let fail = Arc::new(Mutex::new(fail_first));
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (taken, fail) = (taken.clone(), fail.clone());
        async move {
            let path = req.uri().path().to_owned();
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            let failed = {
                let mut f = fail.lock().unwrap();
                let hit = f.iter().position(|p| *p == path);
                hit.map(|i| f.remove(i)).is_some()
            };
            if failed {
                return http::StatusCode::INTERNAL_SERVER_ERROR;
            }
            taken.lock().unwrap().push((path, headers, body));
            http::StatusCode::NO_CONTENT
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

fn hook(name: &str, kind: Kind, url: &str, tenants: &[&str], events: &[Event]) -> Webhook {
    Webhook {
        name: name.into(),
        kind,
        url: url::Url::parse(&format!("{url}/{name}")).unwrap(),
        secret: (kind == Kind::Generic).then(|| SECRET.to_vec()),
        tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        risks: vec![],
        events: events.to_vec(),
    }
}

/// An agent's API on a real listener over `audit`: its directory, API,
/// state directory and URL.
async fn agent(audit: AuditStore) -> (tempfile::TempDir, Arc<Api>, PathBuf, String) {
    let (d, store) = tokio::task::spawn_blocking(crate::store::layer_tests::org_store)
        .await
        .unwrap();
    let state = d.path().join("state");
    let api = Arc::new(Api {
        store: Arc::new(store),
        tokens: Tokens::new(ADMIN, FLEET),
        approvals: Arc::new(crate::approvals::Approvals::open(&state, BTreeMap::new()).unwrap()),
        metrics: Default::default(),
        audit: Arc::new(audit),
        console: Default::default(),
        admins: BTreeMap::new(),
        connect: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(crate::server::serve_with(
        listener,
        api.clone(),
        Default::default(),
        None,
    ));
    (d, api, state, url)
}

/// A gateway's batch: one call of acme's whose charge crossed 80 % of
/// its monthly budget.
fn batch() -> Vec<u8> {
    let mut t = Trail::new();
    let ts = jiff::Timestamp::now().to_string();
    t.push(json!({
        "ts": ts, "principal": "agent-7", "tenant": "acme", "server": "llm",
        "direction": "request", "method": "tools/call", "tool": "chat",
        "outcome": "forwarded", "trace_id": "trace-alert-1", "gateway": "gw-1",
        "budget": {"alerts": [{"budget": "acme-month", "per": "tenant", "holder": "acme",
            "threshold": "0.8", "spent": "8.100000", "limit": "10.000000", "currency": "EUR",
            "period": "2026-11", "resets_at": "2026-12-01T00:00:00+01:00"}]},
    }));
    t.body(0, t.lines.len())
}

async fn ingest(http: &reqwest::Client, url: &str, body: &[u8]) -> Value {
    let r = http
        .post(format!("{url}/v1/audit/ingest"))
        .bearer_auth(FLEET)
        .header("x-warden-gateway", "gw-1")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The requests taken, by path.
fn by_path(taken: &Taken) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for (path, _, _) in taken.lock().unwrap().iter() {
        *n.entry(path.clone()).or_insert(0) += 1;
    }
    n
}

/// The whole flow over `audit` (and, when given, a second agent's store
/// on the same database taking the same batch).
async fn one_alert_once(audit: AuditStore, other: Option<AuditStore>) {
    audit.queue_alerts(crate::audit::alerts::MAX_QUEUED);
    let (_d, api, state, url) = agent(audit).await;
    let taken: Taken = Arc::default();
    let hooks = receiver(taken.clone(), vec!["/teams".into()]).await;
    let alerts = [Event::BudgetAlerts];
    let cfg = NotifyConfig {
        console_url: "https://warden.example".into(),
        webhooks: vec![
            hook(
                "ops",
                Kind::Generic,
                &hooks,
                &[],
                &[Event::HeldCalls, Event::BudgetAlerts],
            ),
            hook("chat", Kind::Slack, &hooks, &["ACME"], &alerts),
            hook("teams", Kind::Teams, &hooks, &["acme"], &alerts),
            hook("globex", Kind::Generic, &hooks, &["globex"], &alerts),
            hook("approvers", Kind::Slack, &hooks, &[], &[Event::HeldCalls]),
        ],
    };
    let _notifier = super::start(api.clone(), cfg, Arc::new(Lease::alone("jobs"))).unwrap();

    // The same batch twice (a gateway's timeout, resent): one record, one
    // alert queued.
    let http = reqwest::Client::new();
    let body = batch();
    let first = ingest(&http, &url, &body).await;
    assert_eq!(first["accepted"], 1, "{first}");
    let again = ingest(&http, &url, &body).await;
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    if let Some(other) = other {
        let body = body.clone();
        let done = tokio::task::spawn_blocking(move || {
            other.queue_alerts(crate::audit::alerts::MAX_QUEUED);
            other.ingest("gw-1", &body).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(
            (done.accepted, done.duplicates, done.alerts_queued),
            (0, 1, 0)
        );
    }

    let want = BTreeMap::from([
        ("/chat".to_owned(), 1),
        ("/ops".to_owned(), 1),
        ("/teams".to_owned(), 1),
    ]);
    let deadline = Instant::now() + Duration::from_secs(40);
    while by_path(&taken) != want {
        assert!(Instant::now() < deadline, "{:?}", by_path(&taken));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing more, to anyone, however long the notifier keeps looking.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(by_path(&taken), want);

    for (path, h, body) in taken.lock().unwrap().iter() {
        assert_eq!(h["x-warden-event"], "budget.alert", "{path}");
        let text = String::from_utf8_lossy(body);
        assert!(
            text.contains("acme-month") && text.contains("8.100000"),
            "{path}: {text}"
        );
        assert!(
            text.contains("https://warden.example/console/audit?trace_id=trace%2Dalert%2D1"),
            "{path}: {text}"
        );
        if path != "/ops" {
            continue;
        }
        let ts: u64 = h["x-warden-timestamp"].parse().unwrap();
        assert_eq!(h["x-warden-signature"], super::signature(SECRET, ts, body));
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["type"], "budget.alert");
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["threshold"], "0.8");
        assert_eq!(v["resets_at"], "2026-12-01T00:00:00+01:00");
        assert_eq!(
            h["x-warden-delivery"],
            format!("{}/ops", v["id"].as_str().unwrap())
        );
    }

    // Done: nothing waits in the queue.
    let audit = api.audit.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = audit.clone();
        let left = tokio::task::spawn_blocking(move || a.pending_alerts(10).unwrap())
            .await
            .unwrap();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every attempt counted and recorded: the 500, then the 2xx.
    let m = api.metrics_text();
    assert!(
        m.contains("warden_agent_budget_alerts_queued_total 1"),
        "{m}"
    );
    assert!(
        m.contains("warden_agent_budget_alerts_dropped_total 0"),
        "{m}"
    );
    for (hook, outcome, n) in [
        ("ops", "sent", 1),
        ("teams", "failed", 1),
        ("teams", "sent", 1),
    ] {
        let line = format!(
            "warden_agent_budget_alert_notifications_total{{outcome=\"{outcome}\",webhook=\"{hook}\"}} {n}"
        );
        assert!(m.contains(&line), "{line}: {m}");
    }
    assert!(!m.contains("webhook=\"globex\""), "{m}");
    let changes = std::fs::read_to_string(state.join("changes.jsonl")).unwrap();
    let notes: Vec<&str> = changes
        .lines()
        .filter(|l| l.contains("budget_alert.notify"))
        .collect();
    assert!(
        notes.iter().any(|l| l.contains("teams: answered 500")),
        "{notes:?}"
    );
    assert_eq!(
        notes.iter().filter(|l| l.contains(": sent (204)")).count(),
        3,
        "{notes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_alert_reaches_each_webhook_that_asked_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite3");
    let audit = tokio::task::spawn_blocking(move || {
        AuditStore::open(&path, crate::audit::Limits::default()).unwrap()
    })
    .await
    .unwrap();
    one_alert_once(audit, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_alert_reaches_each_webhook_once_from_agents_on_postgres() {
    let (pg, a, b) = tokio::task::spawn_blocking(|| {
        let pg = crate::pg::testing::PgServer::start();
        let limits = crate::audit::Limits::default();
        let a = AuditStore::on_database(&pg.database("alerts"), limits.clone()).unwrap();
        let b = AuditStore::on_database(&pg.url("alerts"), limits).unwrap();
        (pg, a, b)
    })
    .await
    .unwrap();
    one_alert_once(a, Some(b)).await;
    let n = pg
        .psql("alerts", "SELECT count(*) FROM warden_budget_alerts")
        .unwrap();
    assert_eq!(n, "1");
}
