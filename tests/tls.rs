//! Mutual TLS between peers and TLS for clients, with certificates from `scripts/dev-certs`:
//! a secured cluster elects, forwards and serves; a plain-text client, a client with a
//! certificate of another CA, a caller without a peer certificate and a peer whose certificate
//! names another node are all refused (and counted) while the cluster keeps serving; new
//! certificates take effect on SIGHUP without dropping the cluster; and clients reach HTTPS
//! and gRPC with TLS, with a client certificate when the node asks for one.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn dev_certs(dir: &Path, nodes: u64) {
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dev-certs"))
        .arg(dir)
        .arg(nodes.to_string())
        .output()
        .expect("run scripts/dev-certs");
    assert!(out.status.success(), "dev-certs: {out:?}");
}

fn peer_flags(certs: &Path, id: u64) -> Vec<String> {
    raftnode::harness::process::ServeArgs::peer_tls_flags(certs, id)
}

#[allow(deprecated)]
fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// A gRPC channel over TLS to `addr`, dialled under `sni`.
async fn tls_channel(
    addr: &str,
    config: rustls::ClientConfig,
    sni: &str,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let config = Arc::new(config);
    let (addr, sni) = (
        addr.to_string(),
        ServerName::try_from(sni.to_string()).unwrap(),
    );
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_uri| {
            let (config, addr, sni) = (config.clone(), addr.clone(), sni.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(sni, tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
}

/// A node-to-node call from node `from` whose message is larger than any node accepts
/// (256 MiB, sized for snapshots); returns its status code.
async fn oversized_call(channel: tonic::transport::Channel, from: u64) -> tonic::Code {
    let mut raft = pb::raft_service_client::RaftServiceClient::new(channel)
        .max_encoding_message_size(usize::MAX);
    let mut req = tonic::Request::new(pb::RaftRequest {
        group_id: 1,
        payload: vec![0; 257 << 20],
        method: 1,
        traceparent: String::new(),
    });
    req.metadata_mut()
        .insert("x-raftnode-from", from.to_string().parse().unwrap());
    match raft.call(req).await {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

#[test]
fn a_mutual_tls_cluster_serves_and_refuses_strangers() {
    let tmp = tempfile::tempdir().unwrap();
    let (certs, other) = (tmp.path().join("certs"), tmp.path().join("other"));
    dev_certs(&certs, 3);
    dev_certs(&other, 3);
    let mut cluster = Cluster::new(3, &[1, 2], Tuning::default());
    for node in &mut cluster.nodes {
        node.extra_args = peer_flags(&certs, node.id);
    }
    for node in &cluster.nodes {
        node.start();
    }
    for node in &cluster.nodes {
        node.wait_ready(READY_TIMEOUT);
    }
    // Elections, replication and forwarding all run over mutual TLS.
    let leader = cluster.leader_of(1);
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.node(follower).put_ok(1, "over", "tls");
    for id in cluster.ids() {
        assert_eq!(
            cluster.node(id).get_retry(1, "over", "linearizable").text(),
            "tls"
        );
    }
    let log = cluster.node(1).run_stderr() + &cluster.node(1).run_stdout();
    assert!(
        !log.contains("no peer TLS"),
        "a secured node warned of plain text"
    );

    let target = cluster.node(1);
    let addr = target.grpc_addr();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Plain text on a TLS port: no call gets through.
        let plain = async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await?;
            Ok::<_, tonic::transport::Error>(raft_call(channel, 2, None).await)
        };
        if let Ok(Ok(code)) = tokio::time::timeout(Duration::from_secs(10), plain).await {
            assert_ne!(code, tonic::Code::Ok, "a plain-text call got through");
        }

        // A node certificate of another CA: the handshake fails.
        let stranger = client_config(
            &certs.join("ca.pem"),
            Some((&other.join("node-2.pem"), &other.join("node-2-key.pem"))),
        );
        let r = match tls_channel(&addr, stranger, "raftnode-node-1").await {
            Ok(ch) => raft_call(ch, 2, None).await,
            Err(_) => tonic::Code::Unavailable,
        };
        assert_ne!(
            r,
            tonic::Code::Ok,
            "a certificate of another CA got a call through"
        );

        // Our CA, but node 3's certificate claiming to be node 2: refused.
        let liar = client_config(
            &certs.join("ca.pem"),
            Some((&certs.join("node-3.pem"), &certs.join("node-3-key.pem"))),
        );
        let ch = tls_channel(&addr, liar, "raftnode-node-1").await.unwrap();
        assert_eq!(raft_call(ch, 2, None).await, tonic::Code::PermissionDenied);

        // A client without a certificate (a token client) cannot speak for a peer.
        let anonymous = client_config(&certs.join("ca.pem"), None);
        let ch = tls_channel(&addr, anonymous, "raftnode-node-1")
            .await
            .unwrap();
        assert_eq!(raft_call(ch, 2, None).await, tonic::Code::PermissionDenied);
        // The check reads no body: a message past the node-to-node size limit is refused for
        // the certificate, before the decoder would have buffered it.
        let anonymous = client_config(&certs.join("ca.pem"), None);
        let ch = tls_channel(&addr, anonymous, "raftnode-node-1")
            .await
            .unwrap();
        assert_eq!(oversized_call(ch, 2).await, tonic::Code::PermissionDenied);

        // Node 3's certificate, as node 3: past the certificate check (the call itself is junk,
        // and the oversized one meets the decoder's limit).
        let honest = client_config(
            &certs.join("ca.pem"),
            Some((&certs.join("node-3.pem"), &certs.join("node-3-key.pem"))),
        );
        let ch = tls_channel(&addr, honest.clone(), "raftnode-node-1")
            .await
            .unwrap();
        assert_ne!(raft_call(ch, 3, None).await, tonic::Code::PermissionDenied);
        let ch = tls_channel(&addr, honest, "raftnode-node-1").await.unwrap();
        assert_eq!(oversized_call(ch, 3).await, tonic::Code::OutOfRange);
    });
    assert!(auth_failures(target, "peer_certificate") >= 2.0);
    assert!(auth_failures(target, "tls_handshake") >= 1.0);
    cluster.node(follower).put_ok(2, "still", "serving");

    // Rotation: a new CA and new certificates everywhere, then SIGHUP. Established connections
    // keep the cluster running; new ones use the new certificates.
    let rotated = tmp.path().join("rotated");
    dev_certs(&rotated, 3);
    for name in std::fs::read_dir(&rotated).unwrap() {
        let name = name.unwrap().file_name();
        std::fs::copy(rotated.join(&name), certs.join(&name)).unwrap();
    }
    for id in cluster.ids() {
        signal(cluster.node(id).pid().unwrap(), libc::SIGHUP);
    }
    for id in cluster.ids() {
        let node = cluster.node(id);
        assert!(
            wait_until(Duration::from_secs(10), || {
                node.scrape()
                    .sum("raftnode_security_reloads_total", &[("result", "ok")])
                    >= 1.0
            }),
            "node {id} did not reload its certificates"
        );
    }
    let new_ca = rotated.join("ca.pem");
    rt.block_on(async {
        let fresh = client_config(
            &new_ca,
            Some((&rotated.join("node-3.pem"), &rotated.join("node-3-key.pem"))),
        );
        let ch = tls_channel(&addr, fresh, "raftnode-node-1").await;
        assert!(ch.is_ok(), "the rotated CA is not in force: {:?}", ch.err());
    });
    // Force new peer connections: node 2 restarts its RPC server; its peers dial it again
    // with the new certificates, and the cluster serves.
    let r = cluster.node(2).request(
        reqwest::Method::POST,
        "/v1/admin/rpc-server/restart",
        None,
        None,
    );
    assert_eq!(r.status, 200, "{r}");
    for g in [1, 2] {
        let leader = cluster.leader_of(g);
        cluster.node(leader).put_ok(g, "after-rotation", "ok");
        for id in cluster.ids() {
            assert_eq!(
                cluster
                    .node(id)
                    .get_retry(g, "after-rotation", "linearizable")
                    .text(),
                "ok",
                "group {g} on node {id}"
            );
        }
    }
}

fn https_client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap());
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

#[test]
fn clients_reach_https_and_grpc_over_tls_with_their_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    dev_certs(&certs, 1);
    let c = |n: &str| certs.join(n).display().to_string();
    let mut args = peer_flags(&certs, 1);
    args.extend(
        [
            "--client-cert-file",
            &c("server.pem"),
            "--client-key-file",
            &c("server-key.pem"),
            "--client-ca-file",
            &c("ca.pem"),
        ]
        .map(String::from),
    );
    let node = lone_node(tmp.path(), args);
    node.start();
    let ca = certs.join("ca.pem");
    let (cert, key) = (certs.join("client.pem"), certs.join("client-key.pem"));
    let good = https_client(&ca, Some((&cert, &key)));
    let base = format!("https://localhost:{}", node.http_port);
    assert!(
        wait_until(READY_TIMEOUT, || good
            .get(format!("{base}/readyz"))
            .send()
            .is_ok_and(|r| r.status() == 200)),
        "the node never answered /readyz over HTTPS"
    );
    let put = retry(Duration::from_secs(20), || {
        match good.put(format!("{base}/v1/kv/1/k")).body("v").send() {
            Ok(r) => Resp {
                status: r.status().as_u16(),
                body: r.bytes().map(|b| b.to_vec()).unwrap_or_default(),
            },
            Err(_) => Resp {
                status: 0,
                body: Vec::new(),
            },
        }
    });
    assert_eq!(put.status, 200, "{put}");
    // Without a client certificate, or in plain text: no answer.
    let anonymous = https_client(&ca, None);
    assert!(anonymous.get(format!("{base}/healthz")).send().is_err());
    let plain = bare_http_client(Duration::from_secs(5))
        .get(format!("http://127.0.0.1:{}/healthz", node.http_port))
        .send();
    assert!(
        !plain.is_ok_and(|r| r.status() == 200),
        "plain HTTP was served"
    );

    // The CLI, with its CA and certificate.
    let addr = format!("localhost:{}", node.http_port);
    let run = run_to_exit(
        &[
            "kv",
            "get",
            "1",
            "k",
            "--http-addr",
            &addr,
            "--ca-file",
            &c("ca.pem"),
            "--cert-file",
            &c("client.pem"),
            "--key-file",
            &c("client-key.pem"),
        ]
        .map(String::from),
        &[],
        tmp.path(),
        Duration::from_secs(30),
    );
    assert!(run.status.success() && run.stdout.contains('v'), "{run:?}");

    // gRPC clients see the client certificate (dialled as localhost) and present theirs.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = client_config(&ca, Some((&cert, &key)));
        let ch = tls_channel(&node.grpc_addr(), config, "localhost")
            .await
            .unwrap();
        let mut kv = pb::kv_service_client::KvServiceClient::new(ch);
        let got = kv
            .get(pb::GetRequest {
                group_id: 1,
                key: "k".into(),
                read_mode: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(got.found && got.value == b"v");
    });
    let _: PathBuf = certs;
}
