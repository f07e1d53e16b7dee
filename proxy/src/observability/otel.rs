//! OpenTelemetry: one span per MCP message, exported over OTLP/HTTP, and the
//! W3C `traceparent` propagated upstream so the server's spans nest under
//! Warden's.
//!
//! Enabled by `--otlp-endpoint URL` (or `OTEL_EXPORTER_OTLP_ENDPOINT`):
//! spans go to `URL/v1/traces` (OTLP/HTTP, JSON encoding), batched on a
//! thread of their own (never on the request path). A span continues the
//! caller's trace (`traceparent` in → same trace id, the caller's span as
//! parent); Warden sends the upstream `traceparent` with its own span id.
//! Attributes: `mcp.method`, `mcp.tool`, `mcp.server`, `mcp.session_id`,
//! `enduser.id`, `warden.tenant`, `warden.outcome`, `warden.decided_by`,
//! `warden.reason`, `http.response.status_code`, `warden.request_id`.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};

pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
}

/// The trace a request belongs to and Warden's span in it.
#[derive(Debug, Clone, Copy)]
pub struct TraceIds {
    pub trace: [u8; 16],
    pub span: [u8; 8],
    /// The caller's span, when it sent a valid `traceparent`.
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
}

impl TraceIds {
    /// From the caller's `traceparent` (version 00), or a new trace.
    pub fn from_header(tp: Option<&str>) -> TraceIds {
        let mut span = [0u8; 8];
        while span == [0u8; 8] {
            span = rand::random();
        }
        if let Some(tp) = tp {
            let p: Vec<&str> = tp.trim().split('-').collect();
            if p.len() >= 4 && p[0].len() == 2 && p[0] != "ff" {
                let mut trace = [0u8; 16];
                let mut parent = [0u8; 8];
                let mut flags = [0u8; 1];
                if hex::decode_to_slice(p[1], &mut trace).is_ok()
                    && hex::decode_to_slice(p[2], &mut parent).is_ok()
                    && hex::decode_to_slice(p[3], &mut flags).is_ok()
                    && trace != [0u8; 16]
                    && parent != [0u8; 8]
                {
                    return TraceIds {
                        trace,
                        span,
                        parent: Some(parent),
                        sampled: flags[0] & 1 == 1,
                    };
                }
            }
        }
        let mut trace = [0u8; 16];
        while trace == [0u8; 16] {
            trace = rand::random();
        }
        TraceIds {
            trace,
            span,
            parent: None,
            sampled: true,
        }
    }

    pub fn trace_hex(&self) -> String {
        hex::encode(self.trace)
    }

    /// The `traceparent` Warden sends upstream: same trace, its own span.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex::encode(self.trace),
            hex::encode(self.span),
            u8::from(self.sampled)
        )
    }
}

/// One finished MCP message, as a span.
pub struct MessageSpan<'a> {
    pub name: String,
    pub ids: TraceIds,
    /// The first message of a request uses the propagated span id; others get their own.
    pub own_span: bool,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
    pub status: u16,
    pub error: Option<&'a str>,
}

impl Telemetry {
    pub fn new(endpoint: &str, gateway_id: &str) -> Result<Telemetry, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("OTLP exporter: {e}"))?;
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(500))
                    .with_max_queue_size(65_536)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("warden")
                    .with_attribute(KeyValue::new("service.instance.id", gateway_id.to_owned()))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("warden");
        Ok(Telemetry { provider, tracer })
    }

    pub fn record(&self, m: MessageSpan<'_>) {
        if !m.ids.sampled {
            return;
        }
        let parent = match m.ids.parent {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(m.ids.trace),
                SpanId::from_bytes(p),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let mut b = SpanBuilder::from_name(m.name)
            .with_kind(SpanKind::Server)
            .with_trace_id(TraceId::from_bytes(m.ids.trace))
            .with_start_time(m.start)
            .with_attributes(
                m.attributes
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v))
                    .chain(std::iter::once(KeyValue::new(
                        "http.response.status_code",
                        i64::from(m.status),
                    ))),
            );
        if m.own_span {
            b = b.with_span_id(SpanId::from_bytes(m.ids.span));
        }
        let mut span = self.tracer.build_with_context(b, &parent);
        if let Some(e) = m.error {
            span.set_status(Status::error(e.to_owned()));
        }
        span.end_with_timestamp(m.end);
    }

    /// Exports what is queued (at shutdown).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_or_started() {
        let t = TraceIds::from_header(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(t.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        let tp = t.traceparent();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(
            !tp.contains("00f067aa0ba902b7"),
            "Warden's own span goes upstream"
        );
        assert!(tp.ends_with("-01"));
        // Invalid ones start a new trace.
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let t = TraceIds::from_header(Some(bad));
            assert!(t.parent.is_none(), "{bad}");
            assert_ne!(t.trace, [0u8; 16]);
        }
    }
}
