//! Scenario files: what `warden-load` sends, at what rate, as whom.
//!
//! ```yaml
//! name: mixed
//! target: http://127.0.0.1:8080/mock/mcp
//! rate: 200                 # arrivals per second (open loop), or:
//! # stages: [{rate: 100, duration: 10s}, {rate: 400, duration: 20s, ramp: true}]
//! # diurnal: {total: 100000}  # a day's calls spread over `duration` on a daily curve
//! duration: 30s
//! warmup: 2s                # sent but not recorded
//! timeout: 10s
//! sessions: 8               # MCP sessions opened before the run
//! principals:               # cycled over sessions; each is a set of headers
//!   - {x-api-key: wk_demo_dev_7Qm2}
//! mix:
//!   - {weight: 70, op: call, tool: echo, payload_bytes: 1024}
//!   - {weight: 10, op: call, tool: echo, payload_bytes: 1024, pii: true}
//!   - {weight: 5, op: call, tool: purge, arguments: {table: users}, expect: denied}
//!   - {weight: 5, op: call, tool: progress, arguments: {steps: 3}}
//!   - {weight: 8, op: list}
//!   - {weight: 2, op: initialize}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim()).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub name: String,
    /// MCP endpoint URL; `--target` overrides it.
    #[serde(default)]
    pub target: Option<String>,
    /// Constant arrival rate (per second).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Scripted arrival rates, one after the other.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// A day of traffic compressed into `duration`.
    #[serde(default)]
    pub diurnal: Option<Diurnal>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub duration: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub warmup: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// Header sets, one per principal; sessions cycle over them.
    #[serde(default)]
    pub principals: Vec<BTreeMap<String, String>>,
    /// Headers sent on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_version")]
    pub protocol_version: String,
    /// Requests in flight beyond this are counted as `client_overload`
    /// instead of being sent late (the schedule is never stretched).
    #[serde(default = "default_inflight")]
    pub max_inflight: usize,
    /// Open loop: at most this many requests are on the wire at once, so
    /// at most this many connections are open (wrk2's model). An arrival
    /// that finds them all busy waits for one, and the wait counts in its
    /// latency; without the bound, a stall of a few milliseconds made the
    /// client open a connection per waiting request.
    #[serde(default = "default_connections")]
    pub connections: usize,
    pub mix: Vec<OpSpec>,
}

fn default_sessions() -> usize {
    8
}
fn default_version() -> String {
    "2025-06-18".into()
}
fn default_inflight() -> usize {
    4096
}
fn default_connections() -> usize {
    64
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub rate: f64,
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// Ramp linearly from the previous stage's rate instead of stepping.
    #[serde(default)]
    pub ramp: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diurnal {
    /// Calls in the whole (compressed) day.
    pub total: u64,
    /// Relative load for each of the 24 hours; a working-day curve by default.
    #[serde(default)]
    pub hourly: Option<Vec<f64>>,
}

/// A typical working day: quiet night, morning ramp, lunch dip, afternoon
/// peak, evening tail (relative weights, hour 0 … 23).
pub const WORKDAY: [f64; 24] = [
    0.15, 0.1, 0.1, 0.1, 0.15, 0.25, 0.5, 0.9, 1.5, 1.9, 2.0, 1.9, 1.4, 1.7, 2.0, 2.1, 1.9, 1.5,
    1.0, 0.7, 0.5, 0.4, 0.3, 0.2,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Initialize,
    List,
    Call,
    Ping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// A result; denials count as errors.
    #[default]
    Ok,
    /// A denial (HTTP 4xx, JSON-RPC error or a tool error); a result is an error.
    Denied,
    Any,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpSpec {
    #[serde(default = "one")]
    pub weight: u32,
    /// Label in the report; derived from op and tool by default.
    #[serde(default)]
    pub name: Option<String>,
    pub op: OpKind,
    #[serde(default)]
    pub tool: Option<String>,
    #[serde(default)]
    pub arguments: Option<Map<String, Value>>,
    /// Pad the `payload_field` argument with text so the body is about this size.
    #[serde(default)]
    pub payload_bytes: Option<usize>,
    #[serde(default = "text_field")]
    pub payload_field: String,
    /// Put personal data (an e-mail address and a card number) in the payload.
    #[serde(default)]
    pub pii: bool,
    /// Put a secret (an AWS key pair) in the payload.
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub expect: Expect,
}

fn one() -> u32 {
    1
}
fn text_field() -> String {
    "text".into()
}

impl OpSpec {
    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match (self.op, &self.tool) {
            (OpKind::Call, Some(t)) => {
                let mut s = format!("call:{t}");
                if let Some(n) = self.payload_bytes {
                    s.push_str(&format!(":{n}B"));
                }
                if self.pii {
                    s.push_str(":pii");
                }
                if self.secret {
                    s.push_str(":secret");
                }
                s
            }
            (k, _) => format!("{k:?}").to_lowercase(),
        }
    }

    /// The `params` of this operation (without id or envelope). The payload
    /// text is built once per scenario, so the hot loop only splices ids.
    pub fn params(&self) -> Value {
        match self.op {
            OpKind::Call => {
                let mut args = self.arguments.clone().unwrap_or_default();
                if self.payload_bytes.is_some() || self.pii || self.secret {
                    let mut text = String::new();
                    if self.pii {
                        text.push_str("Contact jane.doe@example.com, card 4111 1111 1111 1111. ");
                    }
                    if self.secret {
                        text.push_str("aws_access_key_id=AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ");
                    }
                    let want = self.payload_bytes.unwrap_or(0);
                    const FILLER: &str = "deploy the billing service to eu-west-1 with three replicas and a canary; ";
                    while text.len() + 100 < want {
                        text.push_str(FILLER);
                    }
                    args.insert(self.payload_field.clone(), Value::String(text));
                }
                json!({"name": self.tool.clone().unwrap_or_default(), "arguments": args})
            }
            OpKind::List => json!({}),
            OpKind::Ping => json!({}),
            OpKind::Initialize => Value::Null,
        }
    }

    pub fn method(&self) -> &'static str {
        match self.op {
            OpKind::Initialize => "initialize",
            OpKind::List => "tools/list",
            OpKind::Call => "tools/call",
            OpKind::Ping => "ping",
        }
    }
}

impl Scenario {
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let s: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("{path}: {}", e.into_inner())
        })?;
        s.validate()?;
        Ok(s)
    }

    pub fn load(spec: &str) -> anyhow::Result<Scenario> {
        if let Some(name) = spec.strip_prefix("builtin:") {
            return builtin(name);
        }
        let text = std::fs::read_to_string(spec).with_context(|| format!("reading {spec}"))?;
        Scenario::parse(&text).with_context(|| format!("scenario {spec}"))
    }

    fn validate(&self) -> anyhow::Result<()> {
        let shapes = usize::from(self.rate.is_some())
            + usize::from(!self.stages.is_empty())
            + usize::from(self.diurnal.is_some());
        if shapes > 1 {
            bail!("give one of rate, stages or diurnal");
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                bail!("rate: must be a positive number");
            }
        }
        for (i, s) in self.stages.iter().enumerate() {
            if s.rate.is_nan() || s.rate < 0.0 || s.rate.is_infinite() {
                bail!("stages[{i}].rate: must be zero or positive");
            }
        }
        if let Some(d) = &self.diurnal {
            if let Some(h) = &d.hourly {
                if h.len() != 24
                    || h.iter().any(|w| w.is_nan() || *w < 0.0)
                    || h.iter().sum::<f64>() <= 0.0
                {
                    bail!("diurnal.hourly: 24 non-negative weights, not all zero");
                }
            }
        }
        if self.mix.is_empty() || self.mix.iter().all(|o| o.weight == 0) {
            bail!("mix: at least one operation with a weight");
        }
        for (i, o) in self.mix.iter().enumerate() {
            if o.op == OpKind::Call && o.tool.is_none() {
                bail!("mix[{i}].tool: a call needs a tool");
            }
        }
        if self.sessions == 0 {
            bail!("sessions: at least one");
        }
        Ok(())
    }

    /// Length of the measured run (stages add up; default 30 s).
    pub fn run_length(&self) -> Duration {
        if !self.stages.is_empty() {
            return self.stages.iter().map(|s| s.duration).sum();
        }
        self.duration.unwrap_or(Duration::from_secs(30))
    }

    /// Arrival rate (per second) at `t` seconds into the run.
    pub fn rate_at(&self, t: f64) -> f64 {
        if let Some(r) = self.rate {
            return r;
        }
        if !self.stages.is_empty() {
            let mut start = 0.0;
            let mut prev = 0.0;
            for s in &self.stages {
                let len = s.duration.as_secs_f64();
                if t < start + len {
                    return if s.ramp && len > 0.0 {
                        prev + (s.rate - prev) * (t - start) / len
                    } else {
                        s.rate
                    };
                }
                start += len;
                prev = s.rate;
            }
            return prev;
        }
        if let Some(d) = &self.diurnal {
            let hourly = d.hourly.as_deref().unwrap_or(&WORKDAY);
            let len = self.run_length().as_secs_f64().max(1e-3);
            let hour_len = len / 24.0;
            let h = ((t / hour_len) as usize).min(23);
            let sum: f64 = hourly.iter().sum();
            // Calls in hour h, spread evenly over that (compressed) hour.
            return d.total as f64 * hourly[h] / sum / hour_len;
        }
        100.0
    }
}

/// Built-in scenarios: `builtin:day100k` (100 000 calls on a working-day curve,
/// compressed into `--duration`, 120 s unless given) and `builtin:echo1k`
/// (constant-rate 1 KB echo calls).
pub fn builtin(name: &str) -> anyhow::Result<Scenario> {
    let text = match name {
        "day100k" => DAY100K,
        "echo1k" => ECHO1K,
        other => bail!("unknown built-in scenario {other:?} (day100k, echo1k)"),
    };
    Scenario::parse(text)
}

const DAY100K: &str = r#"
name: day100k
diurnal: {total: 100000}
duration: 120s
sessions: 16
mix:
  - {weight: 60, op: call, tool: echo, payload_bytes: 1024}
  - {weight: 5, op: call, tool: echo, payload_bytes: 16384}
  - {weight: 5, op: call, tool: echo, payload_bytes: 1024, pii: true, expect: any}
  - {weight: 1, op: call, tool: echo, payload_bytes: 1024, secret: true, expect: any}
  - {weight: 10, op: call, tool: add, arguments: {a: 2, b: 3}}
  - {weight: 4, op: call, tool: progress, arguments: {steps: 3}}
  - {weight: 10, op: list}
  - {weight: 3, op: ping}
  - {weight: 2, op: initialize}
"#;

const ECHO1K: &str = r#"
name: echo1k
rate: 1000
duration: 20s
sessions: 8
mix:
  - {weight: 1, op: call, tool: echo, payload_bytes: 1024}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for n in ["day100k", "echo1k"] {
            builtin(n).expect(n);
        }
        assert!(builtin("nope").is_err());
    }

    #[test]
    fn diurnal_rate_integrates_to_total() {
        let s = builtin("day100k").expect("day100k");
        let len = s.run_length().as_secs_f64();
        let step = 0.001;
        let mut t = 0.0;
        let mut sum = 0.0;
        while t < len {
            sum += s.rate_at(t) * step;
            t += step;
        }
        assert!((sum - 100_000.0).abs() < 100.0, "integrated {sum}");
        // Night is quieter than the afternoon peak.
        assert!(s.rate_at(len * 2.5 / 24.0) * 10.0 < s.rate_at(len * 15.5 / 24.0));
    }

    #[test]
    fn stages_step_and_ramp() {
        let s = Scenario::parse(
            "stages: [{rate: 10, duration: 10s}, {rate: 110, duration: 10s, ramp: true}]\nmix: [{op: ping}]",
        )
        .expect("parse");
        assert_eq!(s.rate_at(5.0), 10.0);
        assert!((s.rate_at(15.0) - 60.0).abs() < 1e-9);
        assert_eq!(s.run_length(), Duration::from_secs(20));
    }

    #[test]
    fn errors_name_the_field() {
        let e = Scenario::parse("rate: 10\nmix: [{op: call, tool: echo, bogus: 1}]")
            .expect_err("unknown field");
        assert!(e.to_string().contains("mix[0]"), "{e}");
        let e = Scenario::parse("rate: 10\nmix: [{op: call}]").expect_err("no tool");
        assert!(e.to_string().contains("mix[0].tool"), "{e}");
        assert!(Scenario::parse("rate: 10\ndiurnal: {total: 5}\nmix: [{op: ping}]").is_err());
    }

    #[test]
    fn payload_has_requested_size_and_markers() {
        let o: OpSpec = serde_yaml_ng::from_str(
            "{op: call, tool: echo, payload_bytes: 16384, pii: true, secret: true}",
        )
        .expect("op");
        let p = o.params();
        let text = p["arguments"]["text"].as_str().expect("text");
        assert!(text.len() > 16_000 && text.len() < 16_384, "{}", text.len());
        assert!(text.contains("@example.com") && text.contains("AKIA"));
        assert_eq!(o.label(), "call:echo:16384B:pii:secret");
    }
}
