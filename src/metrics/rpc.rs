//! Network figures observed where the calls happen (the Raft network adapter and the shared
//! server), registered once per node.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

/// Round trips to peers, and requests served by the shared server.
pub struct RpcMetrics {
    /// `raftnode_peer_round_trip_time_seconds{peer}`.
    pub peer_rtt: HistogramVec,
    /// `raftnode_peer_batch_messages{peer}`.
    pub peer_batch: HistogramVec,
    /// `raftnode_rpc_requests_total{service,method,code}`.
    pub requests: IntCounterVec,
    /// `raftnode_limit_refusals_total{limit}`: what an input limit turned away.
    pub refusals: IntCounterVec,
    /// `raftnode_auth_failures_total{reason}`: requests refused for their credentials.
    pub auth_failures: IntCounterVec,
    /// `raftnode_security_reloads_total{result}`: re-reads of the token file and certificates.
    pub security_reloads: IntCounterVec,
}

impl RpcMetrics {
    /// The families, not yet registered.
    pub fn new() -> Result<RpcMetrics, prometheus::Error> {
        Ok(RpcMetrics {
            peer_rtt: HistogramVec::new(
                HistogramOpts::new(
                    "raftnode_peer_round_trip_time_seconds",
                    "Round trip of Raft RPCs to a peer, per peer node id.",
                )
                .buckets(vec![
                    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
                &["peer"],
            )?,
            peer_batch: HistogramVec::new(
                HistogramOpts::new(
                    "raftnode_peer_batch_messages",
                    "Raft messages per batch sent to a peer, per peer node id.",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ]),
                &["peer"],
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "raftnode_rpc_requests_total",
                    "gRPC requests served by the shared server, by service, method and status code.",
                ),
                &["service", "method", "code"],
            )?,
            refusals: IntCounterVec::new(
                Opts::new(
                    "raftnode_limit_refusals_total",
                    "Connections and requests an input limit refused, by limit: grpc_connections, \
                     http_connections, node_proposals, group_proposals.",
                ),
                &["limit"],
            )?,
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "raftnode_auth_failures_total",
                    "Requests refused for their credentials, by reason: missing, malformed, \
                     unknown_token, forbidden, peer_certificate, cluster_id.",
                ),
                &["reason"],
            )?,
            security_reloads: IntCounterVec::new(
                Opts::new(
                    "raftnode_security_reloads_total",
                    "Re-reads of the token file and certificates, by result: ok, error.",
                ),
                &["result"],
            )?,
        })
    }

    /// The counter of refusals by `limit`.
    pub fn refused(&self, limit: &str) -> prometheus::IntCounter {
        self.refusals.with_label_values(&[limit])
    }

    /// Counts one served request with its outcome's gRPC code.
    pub fn served<T>(&self, service: &str, method: &str, r: &Result<T, tonic::Status>) {
        let code = match r {
            Ok(_) => "OK".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        self.requests
            .with_label_values(&[service, method, &code])
            .inc();
    }
}
