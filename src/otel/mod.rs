//! OpenTelemetry traces: W3C context propagation (always), and, with the `otlp` feature, the
//! export pipeline and its place in the ledger.
//!
//! Spans come from `tracing` (the `raftnode` target only, through tracing-opentelemetry, in the
//! subscriber the program installs), go through the SDK's batch processor into a bounded queue,
//! and leave over OTLP (gRPC or http/protobuf). The pipeline never holds up the node: a full
//! queue drops and counts, each export is bounded by a timeout, and shutdown abandons whatever
//! the collector has not taken within its flush budget. Its task, client tasks and collector
//! connection belong to a `telemetry` owner, which is judged at stop like every other.

#[cfg(feature = "otlp")]
mod export;
pub mod propagation;
#[cfg(feature = "otlp")]
mod runtime;
#[cfg(feature = "otlp")]
pub mod settings;
#[cfg(feature = "otlp")]
mod stats;

#[cfg(feature = "otlp")]
pub use pipeline::*;

#[cfg(feature = "otlp")]
mod pipeline {
    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry::trace::TracerProvider;
    use opentelemetry::KeyValue;
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
    use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider};
    use opentelemetry_sdk::Resource;
    use tokio_util::sync::CancellationToken;

    pub use super::export::ExporterError;
    pub use super::settings::{Protocol, SamplerChoice, SamplerKind, TraceSettings};
    pub use super::stats::TraceStats;
    use super::{export, runtime};

    use crate::ids::NodeId;
    use crate::ledger::Owner;

    /// The running export pipeline. Stop it with [`Tracing::shutdown`] after the node's other
    /// owners, so that the shutdown's own spans are flushed too.
    pub struct Tracing {
        provider: SdkTracerProvider,
        owner: Owner,
        /// Cancelled when the shutdown flush budget runs out, or the flush is done: exports in
        /// flight give up and the batching task ends.
        abandon: CancellationToken,
        /// Where spans go.
        pub endpoint: String,
        /// How.
        pub protocol: Protocol,
    }

    impl Tracing {
        /// Builds the pipeline; the tracer goes to the `tracing` subscriber's OpenTelemetry layer.
        /// Must run inside the tokio runtime, where the batching task is spawned.
        pub fn start(
            settings: &TraceSettings,
            node_id: NodeId,
            owner: Owner,
            stats: Arc<TraceStats>,
        ) -> Result<(Tracing, SdkTracer), ExporterError> {
            let abandon = CancellationToken::new();
            let exporter = export::build(settings, &owner, abandon.clone(), stats.clone())?;
            let batch = BatchConfigBuilder::default()
                .with_max_queue_size(settings.queue_size)
                .with_max_export_batch_size(settings.queue_size.min(512))
                .with_scheduled_delay(settings.batch_delay)
                // The exporter enforces the configured timeout itself (and counts it); this outer
                // bound only backs it up.
                .with_max_export_timeout(settings.timeout + Duration::from_secs(1))
                .build();
            let processor = BatchSpanProcessor::builder(
                exporter,
                runtime::OwnedRuntime::new(owner.clone(), abandon.clone(), stats),
            )
            .with_batch_config(batch)
            .build();
            let mut attributes: Vec<KeyValue> = settings
                .resource_attributes
                .iter()
                .filter(|(k, _)| k != "service.name")
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect();
            attributes.push(KeyValue::new("raftnode.node_id", node_id as i64));
            attributes.push(KeyValue::new(
                "service.instance.id",
                format!("node-{node_id}"),
            ));
            let resource = Resource::builder_empty()
                .with_service_name(settings.service_name.clone())
                .with_attributes(attributes)
                .build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_sampler(sampler(settings.sampler))
                .with_resource(resource)
                .build();
            let tracer = provider.tracer("raftnode");
            Ok((
                Tracing {
                    provider,
                    owner,
                    abandon,
                    endpoint: settings.endpoint.to_string(),
                    protocol: settings.protocol,
                },
                tracer,
            ))
        }

        /// Flushes queued spans for at most `budget`, stops the exporter, and holds the
        /// `telemetry` owner to zero within `leak_deadline`.
        pub async fn shutdown(self, budget: Duration, leak_deadline: Duration) {
            let abandon = self.abandon.clone();
            let timer = self.owner.spawn("otel-flush-budget", async move {
                tokio::time::sleep(budget).await;
                abandon.cancel();
            });
            let provider = self.provider.clone();
            // The SDK's shutdown blocks its caller until the batching task answers; on a worker
            // thread that could stall the runtime, so it gets a blocking-pool thread of its own.
            let flush = self.owner.spawn_blocking("otel-shutdown", move || {
                provider.shutdown_with_timeout(budget)
            });
            match tokio::time::timeout(budget + Duration::from_secs(1), flush).await {
                Ok(Ok(Ok(()))) => tracing::info!("trace export flushed and stopped"),
                Ok(Ok(Err(e))) => {
                    tracing::warn!(error = %e, "trace export stopped without a full flush")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "trace export shutdown failed"),
                Err(_) => {
                    tracing::warn!(?budget, "trace export did not stop within its flush budget")
                }
            }
            // Whatever happened above (a full queue refuses even the shutdown message), this ends
            // the batching task, which drops the exporter and its client.
            self.abandon.cancel();
            timer.abort();
            self.owner.stop(leak_deadline).await;
        }
    }

    fn sampler(choice: SamplerChoice) -> Sampler {
        let root = match choice.root {
            SamplerKind::AlwaysOn => Sampler::AlwaysOn,
            SamplerKind::AlwaysOff => Sampler::AlwaysOff,
            SamplerKind::Ratio(r) => Sampler::TraceIdRatioBased(r),
        };
        if choice.parent_based {
            Sampler::ParentBased(Box::new(root))
        } else {
            root
        }
    }
}
