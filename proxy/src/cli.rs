//! Offline commands for policy authors and auditors: `warden policy eval`,
//! `warden policy test`, `warden audit verify`, `warden apikey hash`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use warden_config::Bundle;
use warden_filters::policy::PolicyEngine;

fn engine(bundle: &Bundle) -> anyhow::Result<PolicyEngine> {
    if bundle.policies.is_empty() {
        bail!("the bundle has no *.rego files: every message would be allowed");
    }
    let p = &bundle.config.policy;
    PolicyEngine::compile(
        &bundle.policies,
        &bundle.data,
        &p.entrypoint,
        &p.timezone,
        0,
    )
    .map_err(|e| anyhow::anyhow!("{}: {}", e.file, e.message))
}

/// Evaluates the bundle's entry point for one input document. Returns whether
/// it allowed. `now` (RFC 3339) replaces the input's clock fields with what
/// the gateway would compute at that instant in the policy's time zone.
pub fn policy_eval(bundle_dir: &Path, input: &Path, now: Option<&str>) -> anyhow::Result<bool> {
    let bundle = Bundle::load(bundle_dir)?.with_content_revision();
    let engine = engine(&bundle)?;
    let text =
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    let mut doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", input.display()))?;
    if let Some(now) = now {
        let ts: jiff::Timestamp = now.parse().map_err(|e| {
            anyhow::anyhow!("--now {now}: not an RFC 3339 instant (2026-11-22T15:00:00+01:00): {e}")
        })?;
        let at = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(ts.as_second().max(0) as u64);
        let m = engine.clock().moment(at);
        let Some(doc) = doc.as_object_mut() else {
            bail!(
                "{}: the input document must be a JSON object",
                input.display()
            );
        };
        let ctx = doc
            .entry("context")
            .or_insert_with(|| serde_json::json!({}));
        let Some(ctx) = ctx.as_object_mut() else {
            bail!("{}: `context` must be an object", input.display());
        };
        ctx.insert("time".into(), ts.to_string().into());
        ctx.insert("hour".into(), m.hour.into());
        ctx.insert("weekday".into(), m.weekday.into());
    }
    let value = regorus::Value::from(doc);
    let d = engine.evaluate_value(value);
    let mut out = serde_json::json!({"allow": d.allow, "reason": &*d.reason});
    if let Some(s) = &d.scopes {
        out["scopes"] = serde_json::json!(s);
    }
    if let Some(a) = &d.approval {
        out["require_approval"] =
            serde_json::json!({"approvers": a.approvers, "reason": &*a.reason});
    }
    out["revision"] = bundle.revision.clone().into();
    println!("{out}");
    Ok(d.allow)
}

/// `test_*` rules of each package, in file order.
fn test_rules(bundle: &Bundle) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for text in bundle.policies.values() {
        let mut pkg = None;
        let mut seen = BTreeSet::new();
        for line in text.lines() {
            if let Some(p) = line.strip_prefix("package ") {
                pkg = Some(p.trim().to_owned());
            }
            if let (Some(p), Some(rest)) = (&pkg, line.strip_prefix("test_")) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let rule = format!("test_{name}");
                if seen.insert(rule.clone()) {
                    out.push((p.clone(), rule));
                }
            }
        }
    }
    out
}

/// Runs every `test_` rule; prints one line each. Returns (passed, failed).
pub fn policy_test(bundle_dir: &Path) -> anyhow::Result<(usize, usize)> {
    let bundle = Bundle::load(bundle_dir)?;
    engine(&bundle)?;
    let mut e = regorus::Engine::new();
    e.add_data(regorus::Value::from(bundle.data.clone()))
        .map_err(|e| anyhow::anyhow!("data.json: {e}"))?;
    for (path, text) in &bundle.policies {
        e.add_policy(path.clone(), text.clone())
            .map_err(|err| anyhow::anyhow!("{path}: {err}"))?;
    }
    let tests = test_rules(&bundle);
    if tests.is_empty() {
        bail!("no test_ rules found in the bundle's *.rego files");
    }
    let (mut pass, mut fail) = (0, 0);
    for (pkg, rule) in tests {
        let q = format!("data.{pkg}.{rule}");
        match e.eval_rule(q.clone()) {
            Ok(regorus::Value::Bool(true)) => {
                pass += 1;
                println!("PASS {q}");
            }
            Ok(v) => {
                fail += 1;
                let shown = if matches!(v, regorus::Value::Undefined) {
                    "undefined".to_owned()
                } else {
                    v.to_json_str().unwrap_or_default()
                };
                println!("FAIL {q}: {shown}");
            }
            Err(err) => {
                fail += 1;
                println!("FAIL {q}: error: {err}");
            }
        }
    }
    println!("{pass} passed, {fail} failed");
    Ok((pass, fail))
}

/// One file named: it plus the rotated files beside it (`<file>.<12
/// digits>`, as the writer names them). Several named: exactly those (to
/// check a chosen set, or show that one is missing).
fn with_rotated(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = files.to_vec();
    if files.len() != 1 {
        return out;
    }
    for f in files {
        let (Some(dir), Some(name)) = (f.parent(), f.file_name().and_then(|n| n.to_str())) else {
            continue;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let n = e.file_name();
            let Some(n) = n.to_str() else { continue };
            let rotated = n
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|d| d.len() == 12 && d.bytes().all(|b| b.is_ascii_digit()));
            let path = dir.join(n);
            if rotated && !out.iter().any(|o| same_file(o, &path)) {
                out.push(path);
            }
        }
    }
    out
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

pub fn audit_verify(files: &[PathBuf]) -> anyhow::Result<()> {
    let files = with_rotated(files);
    let v = crate::audit::verify(&files).map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "ok: {} record(s), seq {}..{}, head {}, {} file(s)",
        v.records,
        v.first_seq,
        v.first_seq + v.records - 1,
        v.head,
        files.len()
    );
    Ok(())
}

/// Prints a new API key (or hashes the given one) and the line for the bundle.
/// Prints a key (new, or `key`) once, and the `identity.api_keys` entry that
/// accepts it, ready to paste into `warden.yaml`.
pub fn apikey_hash(key: Option<String>, id: &str, tenant: &str, roles: &[String]) {
    let key = key.unwrap_or_else(|| format!("wk_{}", hex::encode(rand::random::<[u8; 24]>())));
    let salt: [u8; 16] = rand::random();
    let hash = warden_config::access::hash_api_key(&key, &salt);
    let entry = serde_json::json!({"id": id, "tenant": tenant, "roles": roles, "hash": hash});
    println!("# The key, shown once: the client sends it as `x-api-key: <key>` or");
    println!("# `Authorization: Bearer <key>`. Only its salted hash goes in the bundle.");
    println!("# key: {key}");
    println!("# Add under identity.api_keys in warden.yaml:");
    // JSON is YAML: one flow-style entry, quoted where it must be.
    println!("- {entry}");
}

/// One JSON-RPC exchange with a live MCP server (JSON or SSE reply).
async fn rpc(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    session: &mut Option<String>,
    body: serde_json::Value,
) -> anyhow::Result<Option<serde_json::Value>> {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if let Some(s) = session.as_deref() {
        req = req.header("mcp-session-id", s);
    }
    let id = body.get("id").cloned();
    let resp = req.json(&body).send().await?;
    if let Some(s) = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        *session = Some(s.to_owned());
    }
    let status = resp.status();
    let sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("{url}: HTTP {status}: {text}");
    }
    let Some(id) = id else { return Ok(None) };
    let mut messages = Vec::new();
    if sse {
        for line in text.lines() {
            if let Some(d) = line.strip_prefix("data:") {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(d.trim()) {
                    messages.push(v);
                }
            }
        }
    } else if !text.trim().is_empty() {
        messages.push(serde_json::from_str(&text)?);
    }
    Ok(messages.into_iter().find(|m| m.get("id") == Some(&id)))
}

/// Prints `name<TAB>fingerprint` for every tool a live server lists, for
/// approval in the bundle's catalog (`fingerprints:`).
pub fn tools_fingerprint(url: &str, headers: &[String]) -> anyhow::Result<()> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| anyhow::anyhow!("header `{h}` is not `name: value`"))
        })
        .collect::<anyhow::Result<_>>()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tools = rt.block_on(list_tools(url, &headers))?;
    let mut lines: Vec<String> = tools
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap_or_default();
            let mark = if warden_filters::tools::valid_name(name) {
                ""
            } else {
                "\t(name refused)"
            };
            format!(
                "{}\t{}{mark}",
                name.escape_default(),
                warden_filters::tools::fingerprint(t)
            )
        })
        .collect();
    lines.sort();
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// Every tool definition a live server lists (initialize, then every page
/// of `tools/list`), as a client would see them.
pub async fn list_tools(
    url: &str,
    headers: &[(String, String)],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut session = None;
    let init = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"warden","version":env!("CARGO_PKG_VERSION")}}});
    rpc(&client, url, headers, &mut session, init)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no answer to initialize"))?;
    rpc(
        &client,
        url,
        headers,
        &mut session,
        serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    )
    .await?;
    let mut cursor: Option<String> = None;
    let mut tools = Vec::new();
    for page in 2..1000 {
        let params = match &cursor {
            Some(c) => serde_json::json!({ "cursor": c }),
            None => serde_json::json!({}),
        };
        let r = rpc(
            &client,
            url,
            headers,
            &mut session,
            serde_json::json!({"jsonrpc":"2.0","id":page,"method":"tools/list","params":params}),
        )
        .await?
        .ok_or_else(|| anyhow::anyhow!("no answer to tools/list"))?;
        if let Some(e) = r.get("error") {
            bail!("tools/list: {e}");
        }
        tools.extend(
            r["result"]["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .cloned(),
        );
        match r["result"]["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    Ok(tools)
}

/// Prints the DLP findings (detector, JSON path, the rule that applies) for
/// sample files: JSON messages, or plain text scanned as one string.
pub fn dlp_scan(bundle_dir: &Path, files: &[PathBuf]) -> anyhow::Result<usize> {
    let bundle = Bundle::load(bundle_dir)?;
    let dlp = bundle.config.dlp.clone().unwrap_or_default();
    let scanner = warden_filters::dlp::Scanner::new(&dlp.custom).map_err(|e| anyhow::anyhow!(e))?;
    let mut total = 0;
    for f in files {
        let raw = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let findings: Vec<(String, warden_filters::dlp::Hit, String)> =
            if serde_json::from_slice::<serde_json::Value>(&raw).is_ok() {
                scanner
                    .scan_json(&raw)
                    .map_err(|_| {
                        anyhow::anyhow!("{}: JSON nests too deep to inspect", f.display())
                    })?
                    .into_iter()
                    .map(|(p, h)| (p, h, String::new()))
                    .collect()
            } else {
                let text = String::from_utf8_lossy(&raw).into_owned();
                let mut hits = Vec::new();
                scanner.scan_str(&text, &mut hits);
                hits.into_iter()
                    .map(|h| ("(text)".to_owned(), h, String::new()))
                    .collect()
            };
        for (path, h, _) in &findings {
            let d = &scanner.detectors[h.detector];
            let rule = |dir| {
                dlp.rule_for(
                    &d.name,
                    d.category.as_str(),
                    dir,
                    warden_config::access::Risk::Medium,
                )
                .map(|r| format!("{} ({})", r.name, r.action.as_str()))
                .unwrap_or_else(|| "no rule".into())
            };
            println!(
                "{}\t{}\t{}\tbytes {}..{}\trequest: {}\tresponse: {}",
                f.display(),
                d.name,
                if path.is_empty() { "$" } else { path },
                h.start,
                h.end,
                rule(warden_config::guards::DlpDirection::Request),
                rule(warden_config::guards::DlpDirection::Response),
            );
        }
        total += findings.len();
    }
    println!("{total} finding(s)");
    Ok(total)
}
