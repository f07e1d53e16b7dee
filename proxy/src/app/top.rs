//! `warden top`: a running gateway seen from a terminal, refreshed in place,
//! without setting up Prometheus. It polls the admin listener (`/metrics`,
//! `/status`, `/top`) and shows the rates between two polls beside the
//! totals since start: calls per second, decisions by outcome, top tools and
//! principals, p50/p99 latency, upstream health and the bundle revision.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One metric sample: labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// The subset of the Prometheus text format the gateway writes:
/// `name{a="b",…} value` lines; `#` lines skipped.
pub fn parse_metrics(text: &str) -> BTreeMap<String, Vec<Sample>> {
    let mut out: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}').unwrap_or(rest))),
            None => (head, BTreeMap::new()),
        };
        out.entry(name.to_owned())
            .or_default()
            .push((labels, value));
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        // Values escape `"` and `\` with a backslash.
        let mut v = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        v.push(match n {
                            'n' => '\n',
                            o => o,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                o => v.push(o),
            }
        }
        out.insert(k.trim_start_matches(',').trim().to_owned(), v);
        rest = &after[end..];
    }
    out
}

/// What one poll of the admin listener saw.
#[derive(Default, Clone)]
pub struct Poll {
    pub at: Option<Instant>,
    /// Request-direction MCP messages: (tool, outcome) → count.
    pub calls: BTreeMap<(String, String), f64>,
    /// Latency histogram over every server and method: upper bound → count.
    pub buckets: Vec<(f64, f64)>,
    pub inflight: f64,
    pub revision: String,
    pub upstreams: Vec<(String, String, bool)>,
    pub principals: BTreeMap<String, f64>,
}

impl Poll {
    pub fn from_parts(metrics: &str, status: &serde_json::Value, top: &serde_json::Value) -> Poll {
        let m = parse_metrics(metrics);
        let mut p = Poll {
            at: Some(Instant::now()),
            ..Poll::default()
        };
        for (l, v) in m.get("warden_mcp_messages_total").into_iter().flatten() {
            if l.get("direction").map(String::as_str) != Some("request") {
                continue;
            }
            let tool = l.get("tool").cloned().unwrap_or_default();
            let tool = if tool == "-" {
                l.get("method").cloned().unwrap_or_default()
            } else {
                tool
            };
            *p.calls
                .entry((tool, l.get("outcome").cloned().unwrap_or_default()))
                .or_default() += v;
        }
        let mut b: BTreeMap<u64, f64> = BTreeMap::new();
        for (l, v) in m
            .get("warden_request_duration_seconds_bucket")
            .into_iter()
            .flatten()
        {
            let le = match l.get("le").map(String::as_str) {
                Some("+Inf") => f64::INFINITY,
                Some(x) => x.parse().unwrap_or(f64::INFINITY),
                None => continue,
            };
            *b.entry(le.to_bits()).or_default() += v;
        }
        p.buckets = b.into_iter().map(|(k, v)| (f64::from_bits(k), v)).collect();
        p.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        p.inflight = m
            .get("warden_inflight_requests")
            .and_then(|v| v.first())
            .map_or(0.0, |s| s.1);
        p.revision = status["bundle"]["revision"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        for s in status["servers"].as_array().into_iter().flatten() {
            for u in s["upstreams"].as_array().into_iter().flatten() {
                p.upstreams.push((
                    s["server"].as_str().unwrap_or("?").to_owned(),
                    u["address"].as_str().unwrap_or("?").to_owned(),
                    u["healthy"].as_bool().unwrap_or(false),
                ));
            }
        }
        for e in top["principals"].as_array().into_iter().flatten() {
            if let (Some(id), Some(n)) = (e["principal"].as_str(), e["requests"].as_f64()) {
                p.principals.insert(id.to_owned(), n);
            }
        }
        p
    }

    fn total(&self) -> f64 {
        self.calls.values().sum()
    }
}

/// The value below which `q` of the observations fall, from cumulative
/// buckets (upper bound of the bucket that holds it).
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let want = q * total;
    buckets.iter().find(|(_, c)| *c >= want).map(|(le, _)| *le)
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.is_infinite() => "> max".into(),
        Some(x) if x < 0.001 => format!("{:.0} µs", x * 1e6),
        Some(x) => format!("{:.1} ms", x * 1e3),
    }
}

/// Invisible characters that reorder or hide text (bidi controls,
/// zero-width marks): a name must not pass for another.
fn is_format(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Names come from clients and servers: nothing that moves the cursor or
/// changes colours reaches the terminal, and nothing overlong.
pub fn clean(s: &str, width: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_control() || is_format(c) {
                '?'
            } else {
                c
            }
        })
        .take(width)
        .collect();
    if s.chars().count() > width {
        out.pop();
        out.push('…');
    }
    out
}

/// One screen. `prev` gives the rates; without it only totals show.
pub fn render(admin: &str, prev: Option<&Poll>, cur: &Poll) -> String {
    let dt = prev
        .and_then(|p| Some(cur.at?.duration_since(p.at?).as_secs_f64()))
        .filter(|d| *d > 0.0);
    let rate =
        |now: f64, before: Option<f64>| -> Option<f64> { Some((now - before?).max(0.0) / dt?) };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "warden top — {admin} — {}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    let _ = writeln!(o, "revision {}", clean(&cur.revision, 100));
    let total = cur.total();
    let per_s = rate(total, prev.map(Poll::total));
    let window: Vec<(f64, f64)> = match prev {
        Some(p) if p.buckets.len() == cur.buckets.len() => cur
            .buckets
            .iter()
            .zip(&p.buckets)
            .map(|(c, p)| (c.0, (c.1 - p.1).max(0.0)))
            .collect(),
        _ => Vec::new(),
    };
    let _ = writeln!(
        o,
        "calls/s {:>9}   calls {:>10}   in flight {:>4}",
        per_s.map_or("-".into(), |r| format!("{r:.1}")),
        total as u64,
        cur.inflight as i64
    );
    let _ = writeln!(
        o,
        "latency  last interval p50 {} p99 {}   since start p50 {} p99 {}",
        ms(quantile(&window, 0.5)),
        ms(quantile(&window, 0.99)),
        ms(quantile(&cur.buckets, 0.5)),
        ms(quantile(&cur.buckets, 0.99)),
    );
    let mut outcomes: BTreeMap<&str, f64> = BTreeMap::new();
    for ((_, outcome), v) in &cur.calls {
        *outcomes.entry(outcome.as_str()).or_default() += v;
    }
    let mut line = String::from("decisions");
    for (k, v) in &outcomes {
        let _ = write!(line, "   {} {}", clean(k, 20), *v as u64);
    }
    let _ = writeln!(o, "{line}");
    let _ = writeln!(o);

    // Tools: calls and denials since start, rate over the last interval.
    let mut tools: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
    for ((tool, outcome), v) in &cur.calls {
        let e = tools.entry(tool.as_str()).or_default();
        e.0 += v;
        // Forwarded as is or after a change (redaction): not refused.
        if outcome != "forwarded" && outcome != "mutated" {
            e.1 += v;
        }
        let before = prev.and_then(|p| p.calls.get(&(tool.clone(), outcome.clone())).copied());
        e.2 += rate(*v, before.or(prev.map(|_| 0.0))).unwrap_or(0.0);
    }
    let mut tools: Vec<_> = tools.into_iter().collect();
    tools.sort_by(|a, b| b.1 .2.total_cmp(&a.1 .2).then(b.1 .0.total_cmp(&a.1 .0)));
    let _ = writeln!(
        o,
        "{:<32} {:>10} {:>10} {:>10}",
        "TOOL / METHOD", "calls", "refused", "per s"
    );
    for (t, (n, d, r)) in tools.iter().take(10) {
        let _ = writeln!(
            o,
            "{:<32} {:>10} {:>10} {:>10.1}",
            clean(t, 32),
            *n as u64,
            *d as u64,
            r
        );
    }
    let _ = writeln!(o);
    let mut principals: Vec<(&String, f64, f64)> = cur
        .principals
        .iter()
        .map(|(k, v)| {
            let before = prev.map(|p| p.principals.get(k).copied().unwrap_or(0.0));
            (k, *v, rate(*v, before).unwrap_or(0.0))
        })
        .collect();
    principals.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.1.total_cmp(&a.1)));
    let _ = writeln!(o, "{:<32} {:>10} {:>10}", "PRINCIPAL", "requests", "per s");
    for (p, n, r) in principals.iter().take(10) {
        let _ = writeln!(o, "{:<32} {:>10} {:>10.1}", clean(p, 32), *n as u64, r);
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<20} {:<28} HEALTH", "SERVER", "UPSTREAM");
    for (s, a, ok) in &cur.upstreams {
        let _ = writeln!(
            o,
            "{:<20} {:<28} {}",
            clean(s, 20),
            clean(a, 28),
            if *ok { "healthy" } else { "DOWN" }
        );
    }
    o
}

async fn poll(client: &reqwest::Client, base: &str) -> Result<Poll, String> {
    let get = |path: &'static str| {
        let url = format!("{base}{path}");
        async move {
            let r = client
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !r.status().is_success() {
                return Err(format!("{url}: HTTP {}", r.status()));
            }
            r.text().await.map_err(|e| format!("{url}: {e}"))
        }
    };
    let metrics = get("/metrics").await?;
    let status: serde_json::Value =
        serde_json::from_str(&get("/status").await?).map_err(|e| format!("/status: {e}"))?;
    // An older gateway has no /top: no principals then.
    let top = get("/top")
        .await
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok(Poll::from_parts(&metrics, &status, &top))
}

/// Runs until interrupted; `frames` stops after that many screens (0: never).
pub fn run(admin: &str, interval: Duration, frames: u64) -> anyhow::Result<()> {
    let base = if admin.starts_with("http://") || admin.starts_with("https://") {
        admin.trim_end_matches('/').to_owned()
    } else {
        format!("http://{admin}")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let mut prev: Option<Poll> = None;
        let mut shown = 0u64;
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        loop {
            let frame = match poll(&client, &base).await {
                Ok(cur) => {
                    let f = render(&base, prev.as_ref(), &cur);
                    prev = Some(cur);
                    f
                }
                Err(e) => {
                    if frames > 0 {
                        anyhow::bail!("cannot read the admin listener: {e}");
                    }
                    format!("warden top — {base}\n\ncannot read the admin listener: {e}\n(retrying every {interval:?}; is the gateway running with --admin {admin}?)\n")
                }
            };
            shown += 1;
            // In place on a terminal; one frame after another otherwise.
            if tty && frames == 0 {
                print!("\x1b[H\x1b[2J{frame}");
            } else {
                println!("{frame}");
            }
            use std::io::Write;
            let _ = std::io::stdout().flush();
            if frames > 0 && shown >= frames {
                return Ok(());
            }
            tokio::time::sleep(interval).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP x
warden_mcp_messages_total{direction="request",method="tools/call",outcome="forwarded",server="mock",tool="echo"} 30
warden_mcp_messages_total{direction="request",method="tools/call",outcome="denied",server="mock",tool="deploy"} 2
warden_mcp_messages_total{direction="request",method="tools/list",outcome="mutated",server="mock",tool="-"} 1
warden_mcp_messages_total{direction="response",method="tools/call",outcome="forwarded",server="mock",tool="echo"} 30
warden_request_duration_seconds_bucket{method="POST",server="mock",le="0.001"} 10
warden_request_duration_seconds_bucket{method="POST",server="mock",le="0.002"} 30
warden_request_duration_seconds_bucket{method="POST",server="mock",le="+Inf"} 33
warden_inflight_requests 2
"#;

    #[test]
    fn a_screen_from_the_admin_listener() {
        let status = serde_json::json!({"bundle": {"revision": "r1+abc"}, "servers": [{"server": "mock", "upstreams": [{"address": "127.0.0.1:1", "healthy": true}]}]});
        let top =
            serde_json::json!({"principals": [{"principal": "dev\u{1b}[2J", "requests": 33}]});
        let p = Poll::from_parts(METRICS, &status, &top);
        assert_eq!(p.total(), 33.0);
        let screen = render("http://a", None, &p);
        assert!(screen.contains("revision r1+abc"), "{screen}");
        assert!(
            screen.contains("calls         33   in flight    2"),
            "{screen}"
        );
        assert!(
            screen.contains("forwarded 30")
                && screen.contains("mutated 1")
                && screen.contains("denied 2"),
            "{screen}"
        );
        assert!(
            screen.contains("deploy                                    2          2"),
            "{screen}"
        );
        assert!(
            screen.contains("echo                                     30          0"),
            "{screen}"
        );
        assert!(
            screen.contains("since start p50 2.0 ms p99 > max"),
            "{screen}"
        );
        assert!(
            screen.contains("dev?[2J"),
            "control characters never reach the terminal: {screen}"
        );
        assert!(!screen.contains('\u{1b}'));
        assert_eq!(clean("ad\u{202E}nim\u{200B}", 20), "ad?nim?");
        assert!(screen.contains("127.0.0.1:1") && screen.contains("healthy"));
    }

    #[test]
    fn rates_come_from_two_polls() {
        let status = serde_json::json!({});
        let mut a = Poll::from_parts(METRICS, &status, &serde_json::Value::Null);
        let mut b = Poll::from_parts(
            &METRICS.replacen("tool=\"echo\"} 30", "tool=\"echo\"} 40", 1),
            &status,
            &serde_json::Value::Null,
        );
        let t = Instant::now();
        a.at = Some(t);
        b.at = Some(t + Duration::from_secs(2));
        let screen = render("http://a", Some(&a), &b);
        assert!(screen.contains("calls/s       5.0"), "{screen}");
    }

    #[test]
    fn quantiles_from_cumulative_buckets() {
        let b = [(0.001, 50.0), (0.01, 99.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(&b, 0.5), Some(0.001));
        assert_eq!(quantile(&b, 0.99), Some(0.01));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
