//! The load engine: MCP sessions, an open-loop scheduler that measures from
//! the intended send time, and a closed-loop saturation search.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::Rng;
use serde_json::Value;

use super::report::{Aggregator, Report, SaturationReport, SaturationStep};
use super::scenario::{Expect, OpKind, Scenario};
// `Load`, `Sample` and `fmt_us` live in leaf modules the report reads too;
// re-exported here, where they have always been.
pub use super::sample::{fmt_us, Outcome, Sample};
pub use super::target::Load;
use super::target::{Op, Session};
use super::wire::{Line, Wire};

fn header_map(h: &BTreeMap<String, String>) -> anyhow::Result<HeaderMap> {
    let mut m = HeaderMap::new();
    for (k, v) in h {
        m.insert(
            HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("header name {k:?}"))?,
            HeaderValue::from_str(v).with_context(|| format!("header value for {k}"))?,
        );
    }
    Ok(m)
}

impl Load {
    /// Builds the client and opens the scenario's sessions (initialize +
    /// notifications/initialized), as a real MCP client would.
    pub async fn connect(scenario: Scenario, url: String) -> anyhow::Result<Arc<Load>> {
        let timeout = scenario.timeout.unwrap_or(Duration::from_secs(10));
        let wire = Wire::new(&url, scenario.connections)?;
        let mut base = header_map(&scenario.headers)?;
        base.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        base.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        base.insert(
            "mcp-protocol-version",
            HeaderValue::from_str(&scenario.protocol_version)?,
        );
        let principals = if scenario.principals.is_empty() {
            vec![HeaderMap::new()]
        } else {
            scenario
                .principals
                .iter()
                .map(header_map)
                .collect::<anyhow::Result<_>>()?
        };
        let ops = scenario
            .mix
            .iter()
            .map(|o| Op {
                label: o.label(),
                method: o.method(),
                params: o.params().to_string(),
                kind: o.op,
                expect: o.expect,
            })
            .collect();
        let weights: Vec<u32> = scenario.mix.iter().map(|o| o.weight).collect();
        let mut load = Load {
            url,
            wire,
            timeout,
            base,
            ops,
            total_weight: weights.iter().sum(),
            weights,
            sessions: Vec::new(),
            reinitialised: AtomicU64::new(0),
            principals,
            next_id: AtomicU64::new(1),
            scenario,
        };
        let mut opened = Vec::new();
        for i in 0..load.scenario.sessions {
            let principal = load.principals[i % load.principals.len()].clone();
            let mut line = load.wire.line().await;
            let (id, outcome) =
                match tokio::time::timeout(timeout, load.initialize(&mut line, &principal)).await {
                    Ok(r) => r,
                    Err(_) => (None, Outcome::Error("timeout".into())),
                };
            match outcome {
                Outcome::Ok => opened.push(Session {
                    id: std::sync::Mutex::new(id),
                    principal,
                }),
                Outcome::Denied(k) | Outcome::Error(k) => {
                    bail!(
                        "initialize for session {i} against {} failed: {k}",
                        load.url
                    )
                }
            }
        }
        load.sessions = opened;
        Ok(Arc::new(load))
    }

    fn body(&self, op: &Op) -> (u64, String) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let params = if op.kind == OpKind::Initialize {
            format!(
                r#"{{"protocolVersion":"{}","capabilities":{{}},"clientInfo":{{"name":"warden-load","version":"0.1.0"}}}}"#,
                self.scenario.protocol_version
            )
        } else {
            op.params.clone()
        };
        (
            id,
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"{}","params":{params}}}"#,
                op.method
            ),
        )
    }

    async fn post(
        &self,
        line: &mut Line,
        method: Method,
        session: Option<&HeaderValue>,
        principal: &HeaderMap,
        body: String,
    ) -> Result<Response<Incoming>, Outcome> {
        line.send(self.request(method, session, principal, body))
            .await
    }

    fn request(
        &self,
        method: Method,
        session: Option<&HeaderValue>,
        principal: &HeaderMap,
        body: String,
    ) -> http::Request<http_body_util::Full<Bytes>> {
        let mut headers = self.base.clone();
        for (k, v) in principal {
            headers.insert(k.clone(), v.clone());
        }
        if let Some(s) = session {
            headers.insert("mcp-session-id", s.clone());
        }
        self.wire.request(method, headers, Bytes::from(body))
    }

    async fn initialize(
        &self,
        line: &mut Line,
        principal: &HeaderMap,
    ) -> (Option<HeaderValue>, Outcome) {
        let op = Op {
            label: String::new(),
            method: "initialize",
            params: String::new(),
            kind: OpKind::Initialize,
            expect: Expect::Ok,
        };
        let (id, body) = self.body(&op);
        let resp = match self.post(line, Method::POST, None, principal, body).await {
            Ok(r) => r,
            Err(o) => return (None, o),
        };
        let sid = resp.headers().get("mcp-session-id").cloned();
        let outcome = read_reply(resp, id, line).await;
        if outcome == Outcome::Ok {
            let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned();
            match self
                .post(line, Method::POST, sid.as_ref(), principal, note)
                .await
            {
                Ok(r) => {
                    let status = r.status();
                    if let Err(o) = drain(r, line).await {
                        return (sid, o);
                    }
                    if !status.is_success() {
                        return (
                            sid,
                            Outcome::Error(format!("initialized_{}", status.as_u16())),
                        );
                    }
                }
                Err(o) => return (sid, o),
            }
        }
        (sid, outcome)
    }

    fn pick(&self) -> usize {
        let mut r = rand::rng().random_range(0..self.total_weight);
        for (i, w) in self.weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        self.weights.len() - 1
    }

    /// Sends one operation on a random session over `line` and classifies
    /// the reply; past the scenario's timeout it is a `timeout` error.
    async fn one(&self, line: &mut Line, op_index: usize) -> Outcome {
        tokio::time::timeout(self.timeout, self.exchange(line, op_index))
            .await
            .unwrap_or_else(|_| Outcome::Error("timeout".into()))
    }

    async fn exchange(&self, line: &mut Line, op_index: usize) -> Outcome {
        let op = &self.ops[op_index];
        let session = &self.sessions[rand::rng().random_range(0..self.sessions.len())];
        if op.kind == OpKind::Initialize {
            let (sid, outcome) = self.initialize(line, &session.principal).await;
            if let Some(sid) = sid {
                // Close the throwaway session off the measured path, on a
                // line of the set when one is free.
                let req = self.request(
                    Method::DELETE,
                    Some(&sid),
                    &session.principal,
                    String::new(),
                );
                let wire = Arc::clone(&self.wire);
                let timeout = self.timeout;
                tokio::spawn(async move {
                    let mut line = wire.line().await;
                    let _ = tokio::time::timeout(timeout, async {
                        if let Ok(r) = line.send(req).await {
                            let _ = drain(r, &mut line).await;
                        }
                    })
                    .await;
                });
            }
            return outcome;
        }
        let (id, body) = self.body(op);
        let sid = session.id.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match self
            .post(
                line,
                Method::POST,
                sid.as_ref(),
                &session.principal,
                body.clone(),
            )
            .await
        {
            // The session is gone (a restart, an upgrade of a stateful
            // server): a real client starts a new one and sends again.
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND && sid.is_some() => {
                if let Err(o) = drain(resp, line).await {
                    return o;
                }
                let (fresh, outcome) = self.initialize(line, &session.principal).await;
                if outcome != Outcome::Ok {
                    return outcome;
                }
                self.reinitialised.fetch_add(1, Ordering::Relaxed);
                {
                    let mut cur = session.id.lock().unwrap_or_else(|p| p.into_inner());
                    // Another task may have renewed it first: keep theirs.
                    if *cur == sid {
                        cur.clone_from(&fresh);
                    }
                }
                match self
                    .post(line, Method::POST, fresh.as_ref(), &session.principal, body)
                    .await
                {
                    Ok(resp) => read_reply(resp, id, line).await,
                    Err(o) => o,
                }
            }
            Ok(resp) => read_reply(resp, id, line).await,
            Err(o) => o,
        }
    }

    fn judge(&self, op: usize, outcome: Outcome) -> (Option<String>, bool) {
        match (self.ops[op].expect, outcome) {
            (_, Outcome::Error(k)) => (Some(k), false),
            (Expect::Ok, Outcome::Denied(k)) => (Some(format!("denied_{k}")), true),
            (Expect::Denied, Outcome::Ok) => (Some("not_denied".into()), false),
            (_, Outcome::Denied(_)) => (None, true),
            (_, Outcome::Ok) => (None, false),
        }
    }

    pub fn labels(&self) -> Vec<String> {
        self.ops.iter().map(|o| o.label.clone()).collect()
    }

    /// Open loop: arrivals follow the scenario's rate; each request's latency
    /// runs from the moment it was due, so a stalled server shows up as
    /// queueing instead of fewer, faster samples.
    pub async fn open_loop(self: &Arc<Self>, progress: bool) -> Report {
        let warmup = self.scenario.warmup.unwrap_or_default().as_secs_f64();
        let length = self.scenario.run_length().as_secs_f64();
        let max_inflight = self.scenario.max_inflight;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
        let labels = self.labels();
        let agg = tokio::spawn(async move {
            let mut agg = Aggregator::new(labels);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    s = rx.recv() => match s {
                        Some(s) => agg.record(s),
                        None => break,
                    },
                    _ = tick.tick(), if progress => agg.progress_line(),
                }
            }
            agg
        });
        // The schedule is a task on the runtime's own thread: arrivals are
        // spawned where they run (no cross-thread wake-up per request, which
        // on a shared core costs more than the request), and it waits on a
        // timerfd (nanosecond precision) instead of tokio's 1 ms timer wheel,
        // which would add up to a millisecond of our own lateness to every
        // latency.
        let me = Arc::clone(self);
        let ended =
            tokio::spawn(
                async move { me.schedule(tx, warmup, warmup + length, max_inflight).await },
            )
            .await
            .ok();
        // A run told to stop early reports over what it ran.
        let length = match &ended {
            Some((_, due)) if stopped() => (due - warmup).clamp(0.0, length),
            _ => length,
        };
        drop(ended);
        let agg = agg.await.unwrap_or_else(|_| Aggregator::new(self.labels()));
        agg.report(self, "open", length)
    }

    /// Dispatches every arrival at its due time until `total` seconds;
    /// each request task measures from its due time. Returns the sender so
    /// the caller decides when the aggregator may finish (after in-flight
    /// tasks).
    async fn schedule(
        self: Arc<Self>,
        tx: tokio::sync::mpsc::UnboundedSender<Sample>,
        warmup: f64,
        total: f64,
        max_inflight: usize,
    ) -> (tokio::sync::mpsc::UnboundedSender<Sample>, f64) {
        let alarm = match Alarm::new() {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("warden-load: no timerfd ({e}); arrivals use tokio's 1 ms timer");
                None
            }
        };
        let inflight = Arc::new(AtomicUsize::new(0));
        let start = Instant::now() + Duration::from_millis(20);
        let mut due = 0.0f64;
        while due < total && !stopped() {
            let intended = start + Duration::from_secs_f64(due);
            let wait = intended.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                match &alarm {
                    Some(a) if a.sleep(wait).await.is_ok() => {}
                    _ => tokio::time::sleep_until(intended.into()).await,
                }
            }
            let op = self.pick();
            let measured = due >= warmup;
            let at = due - warmup;
            if inflight.load(Ordering::Relaxed) >= max_inflight {
                let _ = tx.send(Sample {
                    op,
                    at,
                    latency_us: 0,
                    lag_us: intended.elapsed().as_micros() as u64,
                    error: Some("client_overload".into()),
                    denied: false,
                    measured,
                });
            } else {
                inflight.fetch_add(1, Ordering::Relaxed);
                let me = Arc::clone(&self);
                let tx = tx.clone();
                let inflight = Arc::clone(&inflight);
                tokio::spawn(async move {
                    let lag_us = intended.elapsed().as_micros() as u64;
                    // Waiting for a free connection is the target's
                    // queueing: it counts in the latency, not in the lag.
                    let mut line = me.wire.line().await;
                    let outcome = me.one(&mut line, op).await;
                    drop(line);
                    let latency_us = intended.elapsed().as_micros() as u64;
                    let (error, denied) = me.judge(op, outcome);
                    let _ = tx.send(Sample {
                        op,
                        at,
                        latency_us,
                        lag_us,
                        error,
                        denied,
                        measured,
                    });
                    inflight.fetch_sub(1, Ordering::Relaxed);
                });
            }
            let rate = self.scenario.rate_at((due - warmup).max(0.0)).max(1e-3);
            due += 1.0 / rate;
        }
        (tx, due)
    }

    /// Closed loop: `workers` clients each send the next request as soon as
    /// the previous one is answered, for `length`.
    pub async fn closed_loop(self: &Arc<Self>, workers: usize, length: Duration) -> Report {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
        let start = Instant::now();
        let end = start + length;
        // One line of the set per client.
        self.wire.grow(workers);
        for _ in 0..workers {
            let me = Arc::clone(self);
            let tx = tx.clone();
            tokio::spawn(async move {
                while Instant::now() < end {
                    let op = me.pick();
                    let t0 = Instant::now();
                    let mut line = me.wire.line().await;
                    let outcome = me.one(&mut line, op).await;
                    drop(line);
                    let (error, denied) = me.judge(op, outcome);
                    let _ = tx.send(Sample {
                        op,
                        at: t0.duration_since(start).as_secs_f64(),
                        latency_us: t0.elapsed().as_micros() as u64,
                        lag_us: 0,
                        error,
                        denied,
                        measured: true,
                    });
                }
            });
        }
        drop(tx);
        let mut agg = Aggregator::new(self.labels());
        while let Some(s) = rx.recv().await {
            agg.record(s);
        }
        agg.report(self, "closed", length.as_secs_f64())
    }

    /// Doubles the number of closed-loop clients until p99 passes `bound`,
    /// errors pass 1 %, or throughput stops growing; the best step within
    /// the bound is the maximum sustainable rate.
    pub async fn saturate(
        self: &Arc<Self>,
        bound: Duration,
        step: Duration,
        max_workers: usize,
        progress: bool,
    ) -> SaturationReport {
        let mut steps = Vec::new();
        let mut workers = 1usize;
        let mut flat = 0;
        let mut best_rps = 0.0f64;
        loop {
            let r = self.closed_loop(workers, step).await;
            let ok = r.latency_us.p99 <= bound.as_micros() as u64 && r.error_rate() <= 0.01;
            if progress {
                eprintln!(
                    "saturate: {workers:>4} clients  {:>9.0} rps  p50 {:>8}  p99 {:>8}  errors {:.2}%  {}",
                    r.throughput,
                    fmt_us(r.latency_us.p50),
                    fmt_us(r.latency_us.p99),
                    r.error_rate() * 100.0,
                    if ok { "within bound" } else { "over bound" }
                );
            }
            let rps = r.throughput;
            steps.push(SaturationStep {
                workers,
                within_bound: ok,
                report: r,
            });
            if !ok || workers >= max_workers {
                break;
            }
            if rps < best_rps * 1.05 {
                flat += 1;
                if flat >= 2 {
                    break;
                }
            } else {
                flat = 0;
            }
            best_rps = best_rps.max(rps);
            workers *= 2;
        }
        SaturationReport::new(self, bound, steps)
    }
}

/// A one-shot timer on the runtime's reactor with the kernel's precision
/// (a timerfd takes no timer slack), for arrivals due within microseconds.
struct Alarm(tokio::io::unix::AsyncFd<TimerHandle>);

struct TimerHandle(nix::sys::timerfd::TimerFd);

impl std::os::fd::AsRawFd for TimerHandle {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl Alarm {
    fn new() -> std::io::Result<Alarm> {
        use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
        let t = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // `new` is deprecated because an `AsRawFd` need not own its
        // descriptor; `TimerHandle` owns it (the `OwnedFd` inside `TimerFd`),
        // so it outlives the registration. (`register` is the same, unsafe.)
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::new(TimerHandle(t))?;
        Ok(Alarm(fd))
    }

    /// Returns once `d` has passed.
    async fn sleep(&self, d: Duration) -> std::io::Result<()> {
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        self.0.get_ref().0.set(
            Expiration::OneShot(TimeSpec::from_duration(d)),
            TimerSetTimeFlags::empty(),
        )?;
        loop {
            let mut ready = self.0.readable().await?;
            // Before expiry the read would block, which clears readiness.
            // After it, readiness is cleared by hand: the next arming then
            // waits in epoll without a read that must fail first.
            if let Ok(r) = ready.try_io(|t| t.get_ref().0.wait().map_err(std::io::Error::from)) {
                ready.clear_ready();
                return r;
            }
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

/// Ends an open-loop run early (SIGINT or SIGTERM): no new arrivals, the
/// calls in flight are awaited, and the report covers what ran.
pub fn stop() {
    STOP.store(true, Ordering::Relaxed);
}

fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Reads a reply to its end; the line may then carry the next request.
async fn drain(resp: Response<Incoming>, line: &mut Line) -> Result<Bytes, Outcome> {
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|_| Outcome::Error("body".into()))?
        .to_bytes();
    line.finished();
    Ok(body)
}

/// Reads a reply (JSON or SSE) until the response to `id` and classifies it.
async fn read_reply(resp: Response<Incoming>, id: u64, line: &mut Line) -> Outcome {
    let status = resp.status();
    let sse = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !sse || !status.is_success() {
        let body = match drain(resp, line).await {
            Ok(b) => b,
            Err(o) => return o,
        };
        if status.is_server_error() {
            return Outcome::Error(format!("http_{}", status.as_u16()));
        }
        if status.is_client_error() {
            return Outcome::Denied(format!("http_{}", status.as_u16()));
        }
        return classify(&body);
    }
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let chunk = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Err(_) => return Outcome::Error("body".into()),
        };
        buf.extend_from_slice(&chunk);
        while let Some((end, skip)) = event_end(&buf) {
            let event = buf.split_to(end + skip).freeze();
            if let Some(data) = event_data(&event[..end]) {
                if let Ok(v) = serde_json::from_slice::<Value>(&data) {
                    if v.get("id").and_then(Value::as_u64) == Some(id)
                        && (v.get("result").is_some() || v.get("error").is_some())
                    {
                        // A stream that ends with its reply leaves the
                        // connection usable; one kept open costs it.
                        if matches!(body.frame().now_or_never(), Some(None)) {
                            line.finished();
                        }
                        return classify_value(&v);
                    }
                }
            }
        }
    }
    line.finished();
    Outcome::Error("sse_ended_without_reply".into())
}

fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = memchr_pair(buf, b"\n\n").map(|i| (i, 2));
    let crlf = memchr_pair(buf, b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn memchr_pair(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn event_data(event: &[u8]) -> Option<Bytes> {
    let mut out = Vec::new();
    let mut any = false;
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            if any {
                out.push(b'\n');
            }
            out.extend_from_slice(rest.strip_prefix(b" ").unwrap_or(rest));
            any = true;
        }
    }
    any.then(|| Bytes::from(out))
}

fn classify(body: &[u8]) -> Outcome {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => classify_value(&v),
        Err(_) => Outcome::Error("malformed_reply".into()),
    }
}

fn classify_value(v: &Value) -> Outcome {
    if let Some(e) = v.get("error") {
        let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
        return Outcome::Denied(format!("rpc_{code}"));
    }
    match v.get("result") {
        Some(r) if r.get("isError").and_then(Value::as_bool) == Some(true) => {
            Outcome::Denied("tool_error".into())
        }
        Some(_) => Outcome::Ok,
        None => Outcome::Error("malformed_reply".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alarm never fires early, armed again and again on one timerfd
    /// (a readiness left over from the last expiry must not end a sleep).
    #[test]
    fn the_alarm_waits_at_least_as_long_as_asked() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let alarm = Alarm::new().expect("timerfd");
            for us in [300u64, 50, 1000, 1, 300, 300] {
                let d = Duration::from_micros(us);
                let t0 = Instant::now();
                alarm.sleep(d).await.expect("sleep");
                assert!(t0.elapsed() >= d, "woke after {:?} of {d:?}", t0.elapsed());
            }
        });
    }

    #[test]
    fn sse_events_split_on_any_line_ending() {
        let raw = b"event: message\r\ndata: {\"a\":1}\r\n\r\ndata: x\n\n";
        let (end, skip) = event_end(raw).expect("first");
        assert_eq!(event_data(&raw[..end]).as_deref(), Some(&b"{\"a\":1}"[..]));
        let rest = &raw[end + skip..];
        let (end, _) = event_end(rest).expect("second");
        assert_eq!(event_data(&rest[..end]).as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn replies_are_classified() {
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Outcome::Ok
        );
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32003,"message":"x"}}"#),
            Outcome::Denied("rpc_-32003".into())
        );
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"content":[]}}"#),
            Outcome::Denied("tool_error".into())
        );
        assert_eq!(classify(b"nope"), Outcome::Error("malformed_reply".into()));
    }
}
