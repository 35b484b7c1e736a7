//! Building the OTLP exporter over clients the ledger owns, and counting what it delivers.
//!
//! Both transports dial through [`counting_connector`] and spawn through an
//! [`OwnerExecutor`], so the collector connection and the client's tasks belong to the
//! `telemetry` owner: a client that outlives its owner is a leak verdict, not a mystery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::settings::{Protocol, TraceSettings};
use super::stats::TraceStats;
use crate::ledger::conn::{counting_connector, OwnerExecutor};
use crate::ledger::Owner;

/// The exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
pub struct ExporterError {
    endpoint: String,
    reason: String,
}

/// The exporter for `settings`, its clients owned by `owner`.
pub fn build(
    settings: &TraceSettings,
    owner: &Owner,
    abandon: CancellationToken,
    stats: Arc<TraceStats>,
) -> Result<CountingExporter, ExporterError> {
    let fail = |reason: String| ExporterError {
        endpoint: settings.endpoint.to_string(),
        reason,
    };
    let exporter = match settings.protocol {
        Protocol::Grpc => {
            let channel = Endpoint::from(settings.endpoint.clone())
                .connect_timeout(settings.timeout)
                .timeout(settings.timeout)
                .tcp_nodelay(true)
                .executor(OwnerExecutor::new(owner.clone(), "otlp-channel"))
                .connect_with_connector_lazy(counting_connector(owner.clone()));
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_channel(channel)
                .with_timeout(settings.timeout)
                .build()
        }
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OwnedHttpClient::new(owner.clone()))
            .with_endpoint(settings.endpoint.to_string())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(settings.timeout)
            .build(),
    }
    .map_err(|e| fail(e.to_string()))?;
    Ok(CountingExporter {
        inner: exporter,
        timeout: settings.timeout,
        abandon,
        failing: AtomicBool::new(false),
        stats,
    })
}

/// Counts exported and failed spans, bounds each export by the configured timeout (so that a
/// collector that never answers is counted as failing, not silently awaited), and logs once
/// when export starts failing and once when it recovers, rather than once per batch.
#[derive(Debug)]
pub struct CountingExporter {
    inner: opentelemetry_otlp::SpanExporter,
    timeout: Duration,
    /// Cancelled when shutdown's flush budget is spent: the export in flight gives up.
    abandon: CancellationToken,
    failing: AtomicBool,
    stats: Arc<TraceStats>,
}

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = tokio::select! {
            r = tokio::time::timeout(self.timeout, self.inner.export(batch)) => match r {
                Ok(r) => r,
                Err(_) => Err(OTelSdkError::Timeout(self.timeout)),
            },
            _ = self.abandon.cancelled() => {
                Err(OTelSdkError::InternalFailure("abandoned at shutdown".into()))
            }
        };
        match &result {
            Ok(()) => {
                self.stats.exported.inc_by(n);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("trace export recovered");
                }
            }
            Err(e) => {
                self.stats.dropped_export_failed.inc_by(n);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "trace export failed; spans are dropped (and counted) until the collector answers"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The http/protobuf transport's client: hyper's pooled HTTP/1 client, dialling through the
/// ledger. (The SDK's bundled clients spawn on tokio directly or start their own thread.)
#[derive(Clone)]
pub struct OwnedHttpClient<C> {
    client: Client<C, Full<Bytes>>,
}

impl OwnedHttpClient<()> {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(
        owner: Owner,
    ) -> OwnedHttpClient<
        impl hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    > {
        let client = Client::builder(OwnerExecutor::new(owner.clone(), "otlp-http"))
            .pool_idle_timeout(Duration::from_secs(30))
            .build(counting_connector(owner));
        OwnedHttpClient { client }
    }
}

impl<C> std::fmt::Debug for OwnedHttpClient<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnedHttpClient")
    }
}

#[async_trait::async_trait]
impl<C> HttpClient for OwnedHttpClient<C>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let response = self
            .client
            .request(Request::from_parts(parts, Full::new(body)))
            .await?;
        let (parts, body) = response.into_parts();
        // A collector's answer is a small protobuf; cap it so a confused endpoint cannot make
        // the node buffer without bound.
        let body = http_body_util::Limited::new(body, 4 << 20)
            .collect()
            .await?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}
