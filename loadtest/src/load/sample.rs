//! What one request leaves behind for the aggregator (`Sample`), how it
//! ended (`Outcome`), and how a latency is printed (`fmt_us`). A leaf: the
//! engine makes samples, the connection set and the report read them.

/// One completed (or abandoned) request as the aggregator sees it.
pub struct Sample {
    pub op: usize,
    /// Seconds since the run started, at the intended send time.
    pub at: f64,
    pub latency_us: u64,
    /// How late the generator itself started the request (open loop): from
    /// its due time to the moment its task ran. Large values mean the
    /// generator, not the target, fell behind.
    pub lag_us: u64,
    /// `None`: as expected. `Some(kind)`: an error of that kind.
    pub error: Option<String>,
    pub denied: bool,
    pub measured: bool,
}

pub fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else if us >= 1000 {
        format!("{:.2}ms", us as f64 / 1000.0)
    } else {
        format!("{us}µs")
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Refused by the gateway or the server (HTTP 4xx, JSON-RPC error, tool error).
    Denied(String),
    /// Failed: transport, timeout, 5xx, a malformed reply.
    Error(String),
}
