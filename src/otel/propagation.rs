//! W3C trace context across process boundaries: `traceparent` (and `tracestate`) in gRPC
//! metadata between nodes, in HTTP headers from clients, and in log entries, so that the
//! replication and apply work a write causes on every node joins the write's trace.
//!
//! Each function is a no-op unless the program's `tracing` subscriber has an OpenTelemetry
//! layer and the span is sampled: raftnode keeps no switch of its own for it.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

struct MetadataMut<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// One `traceparent` string, as carried in a log entry.
struct Single<'a>(&'a str);

impl Extractor for Single<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

#[derive(Default)]
struct Capture(Option<String>);

impl Injector for Capture {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

fn adopt(span: &tracing::Span, cx: Context) {
    if cx.span().span_context().is_valid() {
        // Fails only when the span is disabled or already started; either way it simply
        // stays a root, which is the right fallback.
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of the caller's context carried in gRPC metadata, if any.
pub fn adopt_from_metadata(span: &tracing::Span, md: &tonic::metadata::MetadataMap) {
    adopt(span, TraceContextPropagator::new().extract(&Metadata(md)));
}

/// Makes `span` a child of an incoming HTTP request's `traceparent`, if any.
pub fn adopt_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    adopt(
        span,
        TraceContextPropagator::new().extract(&Headers(headers)),
    );
}

/// Makes `span` a child of a `traceparent` string, such as one stored in a log entry.
pub fn adopt_traceparent(span: &tracing::Span, traceparent: &str) {
    adopt(
        span,
        TraceContextPropagator::new().extract(&Single(traceparent)),
    );
}

/// Adds `traceparent` as an extra link of `span`, for work done on behalf of several traces.
pub fn link_traceparent(span: &tracing::Span, traceparent: &str) {
    let cx = TraceContextPropagator::new().extract(&Single(traceparent));
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.add_link(sc);
    }
}

/// Puts `span`'s context into outgoing gRPC metadata.
pub fn inject_metadata(span: &tracing::Span, md: &mut tonic::metadata::MetadataMap) {
    let cx = span.context();
    if cx.span().span_context().is_sampled() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataMut(md));
    }
}

/// The `traceparent` of the current span when it is being recorded, to store with a proposal.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The `traceparent` of `span` when it is being recorded.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_sampled() {
        return None;
    }
    let mut capture = Capture::default();
    TraceContextPropagator::new().inject_context(&cx, &mut capture);
    capture.0
}
