//! What the gateway tells operators: Prometheus metrics, the hash-chained
//! audit trail, OpenTelemetry spans and live traffic by principal.

pub mod audit;
pub mod live;
pub mod metrics;
pub mod otel;
pub mod siem;
