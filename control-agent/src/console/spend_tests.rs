//! Spend through a real listener: `GET /v1/spend` (JSON, CSV, a tenant
//! admin's scope, precise refusals) and the console's spend page (its
//! rows' links to the audit page, totals, the CSV download, the
//! navigation), each row checked against the records its link lists.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use crate::audit::cost::{cost_in, micros_of};
use crate::audit::spend_tests::{cells, records_of, Period};
use crate::server::Api;

const ADMIN: &str = "admin-token-0123456789";

fn tok(name: &str) -> String {
    format!("tok-{name}-0123456789")
}

struct H {
    _d: tempfile::TempDir,
    url: String,
    api: Arc<Api>,
    http: reqwest::Client,
    p: Period,
}

/// The fixture's agent holding the spend test's records of `finance`
/// (two spellings) and `hr`.
async fn start() -> H {
    let (d, api, _state, url) = crate::api::tests::serve_fixture().await;
    let p = Period::recent();
    let t = records_of(&p, ["finance", "FINANCE", "hr"]);
    let audit = api.audit.clone();
    let done = tokio::task::spawn_blocking(move || audit.ingest("gw-1", &t.body(0, t.lines.len())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((done.accepted, done.unreadable_costs), (13, 1));
    H {
        _d: d,
        url,
        api,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        p,
    }
}

impl H {
    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        let r = self.get(token, path).await;
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The calls and millionths of every record `/v1/audit?…` lists.
    async fn listed(&self, token: &str, link: &str) -> (u64, i128) {
        let mut sum = (0u64, 0i128);
        let mut next = link.to_owned();
        loop {
            let (s, page) = self.json(token, &format!("{next}&limit=500")).await;
            assert_eq!(s, 200, "{link}: {page}");
            for r in page["rows"].as_array().unwrap() {
                let id = r["id"].as_i64().unwrap();
                let audit = self.api.audit.clone();
                let raw = tokio::task::spawn_blocking(move || audit.get(id, &[]))
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap()
                    .raw
                    .unwrap();
                sum.0 += 1;
                sum.1 += i128::from(cost_in(&raw).priced.unwrap().0);
            }
            match page["next_before"].as_i64() {
                Some(b) => next = format!("{link}&before={b}"),
                None => return sum,
            }
        }
    }

    fn period(&self) -> String {
        format!("from={}&to={}", self.p.from, self.p.to)
    }

    async fn login(&self, token: &str) -> String {
        let r = self
            .http
            .post(format!("{}/console/login", self.url))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    }

    async fn page(&self, cookie: &str, path: &str) -> (u16, String, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        let kind = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (r.status().as_u16(), kind, r.text().await.unwrap())
    }
}

fn micros(v: &serde_json::Value) -> i128 {
    i128::from(micros_of(v.as_str().unwrap()).unwrap())
}

/// Every row's and total's amount and calls equal what its link lists.
async fn check_rows(h: &H, token: &str, report: &serde_json::Value) {
    for r in report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .chain(report["totals"].as_array().unwrap())
    {
        let link = r["records"].as_str().unwrap();
        assert!(
            link.starts_with("/v1/audit?") && link.contains("priced=1"),
            "{link}"
        );
        assert_eq!(
            h.listed(token, link).await,
            (r["calls"].as_u64().unwrap(), micros(&r["amount"])),
            "{r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reports_spend_with_each_rows_records() {
    let h = start().await;
    let alice = tok("alice");
    let (s, all) = h
        .json(&alice, &format!("/v1/spend?{}&by=tenant,team", h.period()))
        .await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(all["by"], serde_json::json!(["tenant", "team"]));
    assert_eq!(all["truncated"], false);
    let totals = all["totals"].as_array().unwrap();
    assert_eq!(totals.len(), 2);
    assert_eq!(
        (
            &totals[0]["currency"],
            &totals[0]["amount"],
            &totals[0]["calls"]
        ),
        (&"EUR".into(), &"4.332001".into(), &7.into())
    );
    // A group without a team is `null`.
    assert!(all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["team"].is_null() && r["amount"] == "1.800000"));
    check_rows(&h, &alice, &all).await;

    // A tenant admin: their tenant's spend, whatever they ask.
    let fiona = tok("fiona");
    let (s, own) = h
        .json(
            &fiona,
            &format!("/v1/spend?{}&by=principal,tool", h.period()),
        )
        .await;
    assert_eq!(s, 200, "{own}");
    let eur = &own["totals"][0];
    assert_eq!(
        (&eur["amount"], &eur["calls"]),
        (&"1.832001".into(), &5.into())
    );
    assert!(own.to_string().contains("carol") && !own.to_string().contains("mallory"));
    check_rows(&h, &fiona, &own).await;
    let (s, refused) = h
        .json(&fiona, &format!("/v1/spend?{}&tenant=hr", h.period()))
        .await;
    assert_eq!(s, 403, "{refused}");
    let (s, harry) = h
        .json(&tok("harry"), &format!("/v1/spend?{}", h.period()))
        .await;
    assert_eq!(s, 200);
    assert_eq!(harry["totals"][0]["amount"], "2.500000");
    check_rows(&h, &tok("harry"), &harry).await;

    // Precise refusals.
    for (q, says) in [
        ("by=tenant,nope", "by `nope`"),
        ("from=soon", "from: `soon`"),
        ("from=2026-05-02&to=2026-05-01", "the period is empty"),
        ("format=xlsx", "format `xlsx`"),
        ("limit=5000", "limit `5000`"),
        ("color=red", "unknown parameter `color`"),
        ("by=team&by=tool", "`by` is given twice"),
    ] {
        let (s, e) = h.json(ADMIN, &format!("/v1/spend?{q}")).await;
        assert_eq!(s, 400, "{q}");
        assert!(e["error"].as_str().unwrap().contains(says), "{q}: {e}");
    }

    // CSV: a header, a line a group, a line a currency's total.
    let r = h
        .get(
            &alice,
            &format!("/v1/spend?{}&by=team,tool&format=csv", h.period()),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = r.text().await.unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "row,team,tool,calls,amount,currency");
    assert!(
        lines.contains(&"group,\"'=evil,\"\"x\"\"\",'+cmd,1,0.500000,EUR"),
        "{text}"
    );
    assert!(lines.contains(&"total,,,7,4.332001,EUR"), "{text}");
    assert!(lines.iter().all(|l| cells(l).len() == 6), "{text}");
}

/// An attribute's text as a browser reads it.
fn unescaped(s: &str) -> String {
    [
        ("&#38;", "&"),
        ("&#34;", "\""),
        ("&#39;", "'"),
        ("&#60;", "<"),
        ("&#62;", ">"),
        ("&quot;", "\""),
        ("&#x27;", "'"),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&amp;", "&"),
    ]
    .iter()
    .fold(s.to_owned(), |s, (from, to)| s.replace(from, to))
}

/// The `href`s of the elements of class `class` on a page, unescaped.
fn links(page: &str, class: &str) -> Vec<String> {
    page.split("<a href=\"")
        .skip(1)
        .filter_map(|a| {
            let (href, rest) = a.split_once('"')?;
            rest.starts_with(&format!(" class=\"{class}\""))
                .then(|| unescaped(href))
        })
        .collect()
}

fn total_of(page: &str) -> u64 {
    page.split("<span id=\"total\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .and_then(|n| n.parse().ok())
        .expect("the audit page's count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_page_links_each_row_to_its_records() {
    let h = start().await;
    let cookie = h.login(ADMIN).await;
    let (s, _, page) = h
        .page(
            &cookie,
            &format!("/console/spend?{}&by=tenant,server", h.period()),
        )
        .await;
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("id=\"nav-spend\""), "in the navigation");
    assert!(
        page.contains("<td class=\"amount\">4.332001</td>"),
        "{page}"
    );
    assert!(page.contains("(none)"), "a group without a server");
    let rows = links(&page, "records-link");
    assert_eq!(rows.len(), page.matches("<tr class=\"group\">").count());
    assert!(rows.len() >= 5, "{page}");
    // Each row's link: the audit page of exactly its records.
    let calls: Vec<u64> = page
        .split("<td class=\"calls\">")
        .skip(1)
        .map(|r| r.split('<').next().unwrap().parse().unwrap())
        .collect();
    for (link, want) in rows.iter().chain(&links(&page, "total-link")).zip(&calls) {
        assert!(link.starts_with("/console/audit?"), "{link}");
        let (s, _, audit) = h.page(&cookie, link).await;
        assert_eq!(s, 200, "{link}: {audit}");
        assert_eq!(total_of(&audit), *want, "{link}");
        // The same search through the API adds up to the same.
        let api = link.replacen("/console/audit?", "/v1/audit?", 1);
        assert_eq!(h.listed(ADMIN, &api).await.0, *want);
    }
    // The CSV download.
    let csv = page
        .split("id=\"csv\"")
        .next()
        .and_then(|b| b.rsplit("<a href=\"").next())
        .and_then(|l| l.split('"').next())
        .map(unescaped)
        .unwrap();
    assert!(csv.ends_with("&format=csv"), "{csv}");
    let (s, kind, text) = h.page(&cookie, &csv).await;
    assert_eq!((s, kind.as_str()), (200, "text/csv; charset=utf-8"));
    assert!(
        text.starts_with("row,tenant,server,calls,amount,currency\r\n"),
        "{text}"
    );

    // A tenant admin sees their tenant's spend alone.
    let fiona = h.login(&tok("fiona")).await;
    let (s, _, page) = h
        .page(
            &fiona,
            &format!("/console/spend?{}&by=principal", h.period()),
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        page.contains("carol") && !page.contains("mallory"),
        "{page}"
    );
    assert!(
        page.contains("<td class=\"amount\">1.832001</td>"),
        "{page}"
    );

    // This month by default; a bad period is a 400 saying why.
    let (s, _, page) = h.page(&cookie, "/console/spend").await;
    assert_eq!(s, 200);
    let (first, _) = crate::audit::spend::month_of(jiff::Timestamp::now().as_microsecond());
    let day = jiff::Timestamp::from_microsecond(first)
        .unwrap()
        .to_string();
    assert!(
        page.contains(&format!("value=\"{}\"", &day[..10])),
        "{page}"
    );
    let (s, _, page) = h.page(&cookie, "/console/spend?by=colour").await;
    assert_eq!(s, 400);
    assert!(page.contains("id=\"error\""), "{page}");
}
