//! Offline commands for policy authors and auditors: `warden policy eval`,
//! `warden policy test`, `warden audit verify`, `warden apikey hash`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use warden_config::Bundle;
use warden_filters::engines::policy::PolicyEngine;

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

pub fn audit_verify(files: &[PathBuf], from: u64) -> anyhow::Result<()> {
    let files = with_rotated(files);
    let v = crate::observability::audit::verify(&files, from).map_err(|e| anyhow::anyhow!(e))?;
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
            let mark = if warden_filters::guards::tools::valid_name(name) {
                ""
            } else {
                "\t(name refused)"
            };
            format!(
                "{}\t{}{mark}",
                name.escape_default(),
                warden_filters::guards::tools::fingerprint(t)
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
    let scanner =
        warden_filters::engines::dlp::Scanner::new(&dlp.custom).map_err(|e| anyhow::anyhow!(e))?;
    let mut total = 0;
    for f in files {
        let raw = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let findings: Vec<(String, warden_filters::engines::dlp::Hit, String)> =
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
            let d = &scanner.detectors()[h.detector];
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

/// Filters that run before the policy: a request one of them refused was
/// never judged by it.
const BEFORE_POLICY: &[&str] = &[
    "task_binding",
    "kill_switch",
    "input_state",
    "cursor",
    "scopes",
    "quota",
    "runaway",
];

/// Filters that run after the policy: a request one of them refused was
/// allowed by it.
const AFTER_POLICY: &[&str] = &[
    "tool_pinning",
    "mirrored_headers",
    "schema",
    "egress",
    "dlp",
    "approval",
];

/// One recorded client request judged again.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replayed {
    pub ts: String,
    pub request_id: Option<u64>,
    pub trace_id: Option<String>,
    pub principal: String,
    pub server: String,
    pub method: String,
    pub target: Option<String>,
    pub before: Verdict,
    pub after: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub allow: bool,
    /// The recorded reason (the policy's reason when it denied; `allowed`
    /// otherwise: an allowing decision's reason is not recorded).
    pub reason: String,
}

/// What `warden policy replay` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReplayReport {
    pub revision: String,
    pub records: u64,
    pub replayed: u64,
    pub unchanged: u64,
    pub newly_denied: Vec<Replayed>,
    pub newly_allowed: Vec<Replayed>,
    /// Still denied, for another reason.
    pub reason_changed: Vec<Replayed>,
    /// Requests the trail cannot replay, counted by why.
    pub not_replayed: std::collections::BTreeMap<String, u64>,
}

/// The policy input of a recorded client request, in the shape the
/// gateway builds (`docs/policy.md`), or why it cannot be rebuilt.
fn replay_input(
    rec: &serde_json::Value,
    bundle: &Bundle,
    engine: &PolicyEngine,
) -> Result<serde_json::Value, &'static str> {
    use serde_json::{json, Value};
    let text = |k: &str| rec.get(k).and_then(Value::as_str);
    let detail = rec
        .get("principal_detail")
        .ok_or("no principal detail (recorded before it was audited)")?;
    let method = text("method").ok_or("no method")?;
    let target = text("tool");
    let (tool, prompt, uri) = match method {
        "tools/call" => (target, None, None),
        m if warden_filters::guards::task_binding::names_task(m) => (target, None, None),
        "prompts/get" => (None, target, None),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => (None, None, target),
        _ => (None, None, None),
    };
    let server = text("server").unwrap_or_default();
    // The risk tier and group as the candidate bundle defines them.
    let risk = tool.map(|t| {
        bundle
            .config
            .catalog
            .get(server)
            .map_or(
                warden_config::access::ServerCatalog::default().default_risk,
                |c| c.risk(t),
            )
            .as_str()
    });
    let group = bundle
        .config
        .servers
        .iter()
        .find(|s| s.name == server)
        .map(|s| s.group.clone())
        .or_else(|| text("group").map(str::to_owned))
        .unwrap_or_default();
    let carries_arguments = matches!(method, "tools/call" | "prompts/get");
    let arguments = match rec.get("arguments") {
        Some(a) => a.clone(),
        None if carries_arguments
            && rec.get("args_digest").is_some()
            && engine.reads_arguments() =>
        {
            return Err("arguments not in the trail (their risk tier is not logged in full)")
        }
        None => json!({}),
    };
    let ts = text("ts").ok_or("no timestamp")?;
    let written: jiff::Timestamp = ts.parse().map_err(|_| "unreadable timestamp")?;
    // The record is written when the exchange ends; the policy judged it
    // `latency_us` earlier.
    let latency = rec.get("latency_us").and_then(Value::as_u64).unwrap_or(0);
    let at = written
        .checked_sub(jiff::SignedDuration::from_micros(latency as i64))
        .map_err(|_| "unreadable timestamp")?;
    let at_sys = std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(at.as_second().max(0) as u64);
    let m = engine.clock().moment(at_sys);
    let time = jiff::Timestamp::from_second(at.as_second())
        .map_err(|_| "unreadable timestamp")?
        .to_string();
    Ok(json!({
        "principal": {
            "id": text("principal").unwrap_or_default(),
            "tenant": text("tenant").unwrap_or_default(),
            "roles": detail.get("roles").cloned().unwrap_or(json!([])),
            "kind": detail.get("kind").cloned().unwrap_or(json!("agent")),
            "auth": text("auth").unwrap_or_default(),
            "attributes": detail.get("attributes").cloned().unwrap_or(json!({})),
        },
        "server": {"name": server, "group": group, "via": rec.get("via").cloned().unwrap_or(Value::Null)},
        "request": {
            "method": method,
            "tool": tool,
            "prompt": prompt,
            "resource_uri": uri,
            "arguments": arguments,
            "risk": risk,
            "listing": false,
        },
        "context": {
            "time": time,
            "hour": m.hour,
            "weekday": m.weekday,
            "source_ip": rec.get("source_ip").cloned().unwrap_or(Value::Null),
            "justification": rec.get("justification").cloned().unwrap_or(Value::Null),
            "session_id": rec.get("session_id").cloned().unwrap_or(Value::Null),
        },
    }))
}

/// Judges every client request of audit `files` with `bundle_dir`'s
/// policy and compares with what the trail recorded.
pub fn policy_replay(bundle_dir: &Path, files: &[PathBuf]) -> anyhow::Result<ReplayReport> {
    use std::io::BufRead;
    let bundle = Bundle::load(bundle_dir)?.with_content_revision();
    let engine = engine(&bundle)?;
    let mut report = ReplayReport {
        revision: bundle.revision.clone(),
        ..ReplayReport::default()
    };
    let mut not_replayed: std::collections::BTreeMap<String, u64> = Default::default();
    let mut skip = |why: &str| *not_replayed.entry(why.to_owned()).or_default() += 1;
    let mut judged = Vec::new();
    for f in files {
        let file = std::fs::File::open(f).with_context(|| format!("reading {}", f.display()))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("{}:{}", f.display(), n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let rec: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not an audit record", f.display(), n + 1))?;
            judged.push(rec);
        }
    }
    for rec in &judged {
        // Audit records only: the chain's anchors and seals are skipped.
        if rec.get("direction").and_then(|d| d.as_str()) != Some("request") {
            continue;
        }
        report.records += 1;
        let text = |k: &str| rec.get(k).and_then(|v| v.as_str());
        if text("method").is_none() {
            skip("a client's reply (its request was judged)");
            continue;
        }
        let before = match (text("outcome"), text("decided_by")) {
            // Refusals the policy filter makes beyond its rule's decision.
            (_, Some("policy"))
                if matches!(
                    text("reason"),
                    Some("argument_near_name" | "resource_hidden")
                ) =>
            {
                skip("refused by the policy filter for a reason the rule did not give");
                continue;
            }
            (_, Some("policy")) => Verdict {
                allow: false,
                reason: text("reason").unwrap_or_default().to_owned(),
            },
            (_, Some(f)) if BEFORE_POLICY.contains(&f) => {
                skip(&format!("refused by {f} before the policy"));
                continue;
            }
            (Some("forwarded" | "mutated"), _) => Verdict {
                allow: true,
                reason: "allowed".into(),
            },
            (Some("denied" | "invalid"), Some(f)) if AFTER_POLICY.contains(&f) => Verdict {
                allow: true,
                reason: "allowed".into(),
            },
            _ => {
                skip("refused before any filter (not judged by the policy)");
                continue;
            }
        };
        let input = match replay_input(rec, &bundle, &engine) {
            Ok(i) => i,
            Err(why) => {
                skip(why);
                continue;
            }
        };
        let d = engine.evaluate_value(regorus::Value::from(input));
        let after = Verdict {
            allow: d.allow,
            reason: if d.allow {
                "allowed".into()
            } else {
                d.reason.to_string()
            },
        };
        report.replayed += 1;
        let entry = || Replayed {
            ts: text("ts").unwrap_or_default().to_owned(),
            request_id: rec.get("request_id").and_then(|v| v.as_u64()),
            trace_id: text("trace_id").map(str::to_owned),
            principal: format!(
                "{}/{}",
                text("tenant").unwrap_or_default(),
                text("principal").unwrap_or_default()
            ),
            server: text("server").unwrap_or_default().to_owned(),
            method: text("method").unwrap_or_default().to_owned(),
            target: text("tool").map(str::to_owned),
            before: before.clone(),
            after: after.clone(),
        };
        match (before.allow, after.allow) {
            (true, false) => report.newly_denied.push(entry()),
            (false, true) => report.newly_allowed.push(entry()),
            (false, false) if before.reason != after.reason => report.reason_changed.push(entry()),
            _ => report.unchanged += 1,
        }
    }
    report.not_replayed = not_replayed;
    Ok(report)
}

/// The report as an operator reads it: counts, then the flipped calls by
/// tool, principal and reason.
pub fn print_replay(r: &ReplayReport) {
    println!(
        "bundle {}: {} client requests in the trail, {} judged again: {} newly denied, {} newly allowed, {} denied for another reason, {} unchanged",
        r.revision,
        r.records,
        r.replayed,
        r.newly_denied.len(),
        r.newly_allowed.len(),
        r.reason_changed.len(),
        r.unchanged
    );
    for (title, rows) in [
        ("newly denied", &r.newly_denied),
        ("newly allowed", &r.newly_allowed),
        ("denied for another reason", &r.reason_changed),
    ] {
        if rows.is_empty() {
            continue;
        }
        println!("\n{title}:");
        let by = |name: &str, key: &dyn Fn(&Replayed) -> String| {
            let mut m: std::collections::BTreeMap<String, u64> = Default::default();
            for x in rows.iter() {
                *m.entry(key(x)).or_default() += 1;
            }
            let mut v: Vec<_> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let parts: Vec<String> = v.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!("  by {name:<10} {}", parts.join(", "));
        };
        by("tool", &|x| {
            format!("{}/{}", x.server, x.target.as_deref().unwrap_or(&x.method))
        });
        by("principal", &|x| x.principal.clone());
        by("reason", &|x| {
            if x.after.allow {
                x.before.reason.clone()
            } else {
                x.after.reason.clone()
            }
        });
    }
    if !r.not_replayed.is_empty() {
        println!("\nnot replayed:");
        for (why, n) in &r.not_replayed {
            println!("  {n:>6}  {why}");
        }
    }
}
