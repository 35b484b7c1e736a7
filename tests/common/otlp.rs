//! OTLP trace collectors for tests, on loopback ports: one speaks gRPC (a tonic
//! `TraceService` from opentelemetry-proto's generated types), one speaks http/protobuf
//! (`POST /v1/traces`), and a black hole accepts connections and never answers. Each real
//! collector records every span with the node id from its resource.

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

#[derive(Clone, Debug)]
pub struct CollectedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// `raftnode.node_id` of the exporting process.
    pub node: Option<i64>,
    pub service: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub links: usize,
}

type Store = Arc<Mutex<Vec<CollectedSpan>>>;
/// Values of the `x-collector-key` header (gRPC metadata) of each export, to check that
/// `OTEL_EXPORTER_OTLP_HEADERS` reaches the collector.
type Keys = Arc<Mutex<Vec<String>>>;

const KEY_HEADER: &str = "x-collector-key";

fn remember(keys: &Keys, value: Option<&str>) {
    if let Some(v) = value {
        keys.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(v.to_string());
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn value(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn record(store: &Store, req: ExportTraceServiceRequest) {
    let mut spans = store.lock().unwrap_or_else(|e| e.into_inner());
    for rs in req.resource_spans {
        let attrs: BTreeMap<String, String> = rs
            .resource
            .map(|r| {
                r.attributes
                    .iter()
                    .filter_map(|kv| Some((kv.key.clone(), value(kv)?)))
                    .collect()
            })
            .unwrap_or_default();
        let node = attrs.get("raftnode.node_id").and_then(|v| v.parse().ok());
        let service = attrs.get("service.name").cloned();
        for ss in rs.scope_spans {
            for s in ss.spans {
                spans.push(CollectedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name,
                    node,
                    service: service.clone(),
                    attributes: s
                        .attributes
                        .iter()
                        .filter_map(|kv| Some((kv.key.clone(), value(kv)?)))
                        .collect(),
                    links: s.links.len(),
                });
            }
        }
    }
}

struct Grpc(Store, Keys);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        remember(
            &self.1,
            req.metadata().get(KEY_HEADER).and_then(|v| v.to_str().ok()),
        );
        record(&self.0, req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

pub struct Collector {
    /// What to pass as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    pub protocol: &'static str,
    spans: Store,
    keys: Keys,
    _rt: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("collector runtime")
}

fn listener() -> (tokio::net::TcpListener, u16, tokio::runtime::Runtime) {
    let rt = runtime();
    let std = StdListener::bind("127.0.0.1:0").expect("bind collector");
    std.set_nonblocking(true).expect("nonblocking");
    let port = std.local_addr().expect("addr").port();
    let l = {
        let _g = rt.enter();
        tokio::net::TcpListener::from_std(std).expect("tokio listener")
    };
    (l, port, rt)
}

impl Collector {
    /// A collector for `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    pub fn grpc() -> Collector {
        let (l, port, rt) = listener();
        let spans: Store = Arc::default();
        let keys: Keys = Arc::default();
        let svc = TraceServiceServer::new(Grpc(spans.clone(), keys.clone()));
        rt.spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        Collector {
            endpoint: format!("http://127.0.0.1:{port}"),
            protocol: "grpc",
            spans,
            keys,
            _rt: rt,
        }
    }

    /// A collector for `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`.
    pub fn http() -> Collector {
        let (l, port, rt) = listener();
        let spans: Store = Arc::default();
        let keys: Keys = Arc::default();
        let (store, seen) = (spans.clone(), keys.clone());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let store = store.clone();
                    remember(&seen, headers.get(KEY_HEADER).and_then(|v| v.to_str().ok()));
                    async move {
                        match ExportTraceServiceRequest::decode(body) {
                            Ok(req) => {
                                record(&store, req);
                                let reply = ExportTraceServiceResponse {
                                    partial_success: None,
                                };
                                (
                                    axum::http::StatusCode::OK,
                                    [("content-type", "application/x-protobuf")],
                                    reply.encode_to_vec(),
                                )
                            }
                            Err(_) => (
                                axum::http::StatusCode::BAD_REQUEST,
                                [("content-type", "text/plain")],
                                b"bad protobuf".to_vec(),
                            ),
                        }
                    }
                },
            ),
        );
        rt.spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Collector {
            endpoint: format!("http://127.0.0.1:{port}"),
            protocol: "http/protobuf",
            spans,
            keys,
            _rt: rt,
        }
    }

    /// Environment for a node that exports here, with a short batch delay so tests need not
    /// wait five seconds for each batch.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), self.endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), self.protocol.into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
        ]
    }

    /// The `x-collector-key` values the exports carried.
    pub fn keys(&self) -> Vec<String> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn trace(&self, trace_id: &str) -> Vec<CollectedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

/// A collector that accepts connections and never answers, like one that hangs.
pub struct BlackHole {
    pub endpoint: String,
    _rt: tokio::runtime::Runtime,
}

impl BlackHole {
    pub fn new() -> BlackHole {
        let (l, port, rt) = listener();
        rt.spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        BlackHole {
            endpoint: format!("http://127.0.0.1:{port}"),
            _rt: rt,
        }
    }
}

/// A port with nothing listening on it, like a collector that is down.
pub fn closed_endpoint() -> String {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    std::thread::sleep(Duration::from_millis(10));
    format!("http://127.0.0.1:{port}")
}
