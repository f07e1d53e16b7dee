//! HDR-histogram aggregation, the JSON report and report comparison.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::sample::{fmt_us, Sample};
use super::target::Load;

/// 1 µs … 10 min at three significant digits.
fn histogram() -> Histogram<u64> {
    #[allow(clippy::unwrap_used)] // constant, valid bounds
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OpReport {
    pub ok: u64,
    pub denied: u64,
    pub errors: BTreeMap<String, u64>,
    /// Microseconds.
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Second {
    pub t: u64,
    pub done: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub scenario: String,
    pub target: String,
    /// `open` (latency from the intended send time) or `closed`.
    pub mode: String,
    pub duration_s: f64,
    /// Requests due in the measured part of the run (open loop).
    pub scheduled: u64,
    pub completed: u64,
    /// Completed requests per second of the measured run.
    pub throughput: f64,
    pub ok: u64,
    pub denied: u64,
    pub errors: BTreeMap<String, u64>,
    /// Microseconds, over every measured request including errors.
    pub latency_us: Percentiles,
    /// Open loop: how late the generator started requests, from their due
    /// time (microseconds). When its p99 is not small beside the latencies
    /// being compared, the run measured the generator, not the target.
    #[serde(default)]
    pub send_lag_us: Percentiles,
    pub ops: BTreeMap<String, OpReport>,
    pub timeline: Vec<Second>,
    /// Sessions started anew because the target answered 404 for one (a
    /// restart or upgrade that lost it), as MCP clients do.
    #[serde(default)]
    pub reinitialised: u64,
    /// Connections opened to the target over the run (sessions' setup
    /// included): the connection set, plus one for each connection the
    /// target closed or a reply left unread.
    #[serde(default)]
    pub connections_opened: u64,
}

impl Report {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn error_rate(&self) -> f64 {
        if self.scheduled == 0 {
            return 0.0;
        }
        self.error_count() as f64 / self.scheduled as f64
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "warden-load {} → {} ({} loop, {:.1}s)",
            self.scenario, self.target, self.mode, self.duration_s
        );
        let _ = writeln!(
            s,
            "  requests {}  completed {}  throughput {:.1}/s  ok {}  denied {}  errors {}",
            self.scheduled,
            self.completed,
            self.throughput,
            self.ok,
            self.denied,
            self.error_count()
        );
        let _ = writeln!(
            s,
            "  connections opened: {} (a set kept open, and one for each the target closed)",
            self.connections_opened
        );
        if self.reinitialised > 0 {
            let _ = writeln!(
                s,
                "  sessions started anew after a 404 (a restart or upgrade lost them): {}",
                self.reinitialised
            );
        }
        // The per-operation figures first: they are the story. An operation
        // slow by design (the mock's `progress` tool waits between events)
        // is marked, so the all-operations tail below is read for what it is.
        let slow = |name: &str| name.contains("progress") || name.contains("slow");
        let _ = writeln!(
            s,
            "  {:<34} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9}",
            "operation", "count", "denied", "errors", "p50", "p99", "max"
        );
        let mut any_slow = false;
        for (name, o) in &self.ops {
            let mark = if slow(name) {
                any_slow = true;
                " *"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  {:<34} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9}{mark}",
                name,
                o.latency_us.count,
                o.denied,
                o.errors.values().sum::<u64>(),
                fmt_us(o.latency_us.p50),
                fmt_us(o.latency_us.p99),
                fmt_us(o.latency_us.max)
            );
        }
        if any_slow {
            let _ = writeln!(
                s,
                "  * slow by design: the tool waits between its progress events"
            );
        }
        let _ = writeln!(
            s,
            "  all operations{}: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
            if any_slow { " (incl. *)" } else { "" },
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.max),
            fmt_us(l.mean as u64)
        );
        if self.mode == "open" {
            let g = &self.send_lag_us;
            let _ = writeln!(
                s,
                "  send lag p50 {}  p99 {}  max {}  (the generator's own lateness)",
                fmt_us(g.p50),
                fmt_us(g.p99),
                fmt_us(g.max)
            );
        }
        if !self.errors.is_empty() {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "  errors   {}", kinds.join(" "));
        }
        s
    }
}

pub struct Aggregator {
    labels: Vec<String>,
    total: Histogram<u64>,
    lag: Histogram<u64>,
    per_op: Vec<(Histogram<u64>, OpReport)>,
    seconds: BTreeMap<u64, (Histogram<u64>, u64)>,
    scheduled: u64,
    ok: u64,
    denied: u64,
    errors: BTreeMap<String, u64>,
    // Live progress.
    started: Instant,
    window: Histogram<u64>,
    window_done: u64,
    window_errors: u64,
}

impl Aggregator {
    pub fn new(labels: Vec<String>) -> Aggregator {
        Aggregator {
            per_op: labels
                .iter()
                .map(|_| (histogram(), OpReport::default()))
                .collect(),
            labels,
            total: histogram(),
            lag: histogram(),
            seconds: BTreeMap::new(),
            scheduled: 0,
            ok: 0,
            denied: 0,
            errors: BTreeMap::new(),
            started: Instant::now(),
            window: histogram(),
            window_done: 0,
            window_errors: 0,
        }
    }

    pub fn record(&mut self, s: Sample) {
        let lat = s.latency_us.max(1);
        let _ = self.window.record(lat);
        self.window_done += 1;
        if s.error.is_some() {
            self.window_errors += 1;
        }
        if !s.measured {
            return;
        }
        let _ = self.lag.record(s.lag_us.max(1));
        self.scheduled += 1;
        let (h, op) = &mut self.per_op[s.op];
        match &s.error {
            Some(kind) => {
                *self.errors.entry(kind.clone()).or_default() += 1;
                *op.errors.entry(kind.clone()).or_default() += 1;
            }
            None if s.denied => {
                self.denied += 1;
                op.denied += 1;
            }
            None => {
                self.ok += 1;
                op.ok += 1;
            }
        }
        // An overloaded client never sent the request: no latency to record.
        if s.error.as_deref() == Some("client_overload") {
            return;
        }
        let _ = h.record(lat);
        let _ = self.total.record(lat);
        let sec = self
            .seconds
            .entry(s.at.max(0.0) as u64)
            .or_insert_with(|| (histogram(), 0));
        let _ = sec.0.record(lat);
        if s.error.is_some() {
            sec.1 += 1;
        }
    }

    /// One line per second on stderr: what completed in the last second.
    pub fn progress_line(&mut self) {
        let w = &self.window;
        eprintln!(
            "[{:>5.0}s] done {:>7}/s  p50 {:>8}  p99 {:>8}  max {:>8}  errors {}  (total {})",
            self.started.elapsed().as_secs_f64(),
            self.window_done,
            fmt_us(if w.is_empty() {
                0
            } else {
                w.value_at_quantile(0.5)
            }),
            fmt_us(if w.is_empty() {
                0
            } else {
                w.value_at_quantile(0.99)
            }),
            fmt_us(if w.is_empty() { 0 } else { w.max() }),
            self.window_errors,
            self.scheduled,
        );
        self.window.reset();
        self.window_done = 0;
        self.window_errors = 0;
    }

    pub fn report(self, load: &Load, mode: &str, duration_s: f64) -> Report {
        let ops = self
            .labels
            .iter()
            .zip(self.per_op)
            .map(|(l, (h, mut o))| {
                o.latency_us = Percentiles::of(&h);
                (l.clone(), o)
            })
            .fold(
                BTreeMap::new(),
                |mut m: BTreeMap<String, OpReport>, (l, o)| {
                    // Two mix entries may share a label: merge their counts.
                    let e = m.entry(l).or_default();
                    if e.latency_us.count == 0 {
                        *e = o;
                    } else {
                        e.ok += o.ok;
                        e.denied += o.denied;
                        for (k, v) in o.errors {
                            *e.errors.entry(k).or_default() += v;
                        }
                    }
                    m
                },
            );
        let completed = self.total.len();
        Report {
            tool: "warden-load".into(),
            scenario: load.scenario.name.clone(),
            target: load.url().to_owned(),
            mode: mode.into(),
            duration_s,
            scheduled: self.scheduled,
            completed,
            throughput: completed as f64 / duration_s.max(1e-9),
            ok: self.ok,
            denied: self.denied,
            errors: self.errors,
            latency_us: Percentiles::of(&self.total),
            send_lag_us: Percentiles::of(&self.lag),
            reinitialised: load
                .reinitialised
                .load(std::sync::atomic::Ordering::Relaxed),
            connections_opened: load.connections_opened(),
            ops,
            timeline: self
                .seconds
                .into_iter()
                .map(|(t, (h, errors))| Second {
                    t,
                    done: h.len(),
                    errors,
                    p50_us: h.value_at_quantile(0.5),
                    p99_us: h.value_at_quantile(0.99),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SaturationStep {
    pub workers: usize,
    pub within_bound: bool,
    pub report: Report,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SaturationReport {
    pub tool: String,
    pub target: String,
    pub p99_bound_us: u64,
    /// Highest throughput of a step whose p99 and error rate were in bound.
    pub max_sustainable_rps: f64,
    pub best_workers: usize,
    pub steps: Vec<SaturationStep>,
}

impl SaturationReport {
    pub fn new(load: &Load, bound: Duration, steps: Vec<SaturationStep>) -> SaturationReport {
        let best = steps
            .iter()
            .filter(|s| s.within_bound)
            .max_by(|a, b| a.report.throughput.total_cmp(&b.report.throughput));
        SaturationReport {
            tool: "warden-load".into(),
            target: load.url().to_owned(),
            p99_bound_us: bound.as_micros() as u64,
            max_sustainable_rps: best.map_or(0.0, |s| s.report.throughput),
            best_workers: best.map_or(0, |s| s.workers),
            steps,
        }
    }
}

/// Side-by-side comparison of two open- or closed-loop reports.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "A: {} → {} ({})", a.scenario, a.target, a.mode);
    let _ = writeln!(s, "B: {} → {} ({})", b.scenario, b.target, b.mode);
    let _ = writeln!(s, "{:<16} {:>12} {:>12} {:>8}", "", "A", "B", "B/A");
    let row = |s: &mut String, name: &str, x: f64, y: f64, fmt: &dyn Fn(f64) -> String| {
        let ratio = if x > 0.0 {
            format!("{:.2}", y / x)
        } else {
            "-".into()
        };
        let _ = writeln!(s, "{:<16} {:>12} {:>12} {:>8}", name, fmt(x), fmt(y), ratio);
    };
    let num = |v: f64| format!("{v:.1}");
    let lat = |v: f64| fmt_us(v as u64);
    row(&mut s, "throughput/s", a.throughput, b.throughput, &num);
    row(
        &mut s,
        "requests",
        a.scheduled as f64,
        b.scheduled as f64,
        &num,
    );
    row(
        &mut s,
        "error rate %",
        a.error_rate() * 100.0,
        b.error_rate() * 100.0,
        &|v| format!("{v:.3}"),
    );
    let (la, lb) = (&a.latency_us, &b.latency_us);
    for (name, x, y) in [
        ("p50", la.p50, lb.p50),
        ("p90", la.p90, lb.p90),
        ("p99", la.p99, lb.p99),
        ("p99.9", la.p999, lb.p999),
        ("max", la.max, lb.max),
    ] {
        row(&mut s, name, x as f64, y as f64, &lat);
    }
    for (name, oa) in &a.ops {
        if let Some(ob) = b.ops.get(name) {
            row(
                &mut s,
                &format!("{name} p99"),
                oa.latency_us.p99 as f64,
                ob.latency_us.p99 as f64,
                &lat,
            );
        }
    }
    s
}
