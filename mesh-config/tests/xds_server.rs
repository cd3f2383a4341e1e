//! The xDS server's protocol, spoken to by a test client over real gRPC
//! (no Envoy): what a proxy is served for its node, ACK and NACK tracking
//! per type, stale nonces ignored, a node the policy does not know refused,
//! a change that only moves the filter's configuration pushes ECDS alone,
//! and clusters a change drops stay until the proxy acknowledged the rest
//! (make before break). Real Envoy against the same server:
//! `integration/tests/xds_live.rs`.

use meridian_mesh_config::xds::{serve, ServerOptions, CLUSTER, EXTENSION_CONFIG, LISTENER, ROUTE};
use meridian_proto::xds::envoy::config::core::v3::Node;
use meridian_proto::xds::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meridian_proto::xds::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use meridian_proto::xds::google::rpc::Status as RpcStatus;
use meridian_proto::xds::meridian::xds::v1::mesh_status_client::MeshStatusClient;
use meridian_proto::xds::meridian::xds::v1::{StatusRequest, StatusResponse};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example policy without its OCI module URL (the server serves the
/// `--wasm` path to plain Envoy).
fn example() -> String {
    std::fs::read_to_string(root().join("examples/policy.yaml"))
        .expect("example")
        .replace("  url: oci://ghcr.io/meridian-mesh/meridian-filters:0.1.0\n", "")
}

fn node(role: &str, region: &str) -> Node {
    let field = |s: &str| prost_types::Value { kind: Some(prost_types::value::Kind::StringValue(s.into())) };
    Node {
        id: format!("test-{role}-{region}"),
        metadata: Some(prost_types::Struct {
            fields: [("meridian.role".to_string(), field(role)), ("meridian.region".to_string(), field(region))]
                .into_iter()
                .collect(),
        }),
        ..Node::default()
    }
}

struct Client {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}")).await.expect("connects");
        let (tx, requests) = mpsc::channel(16);
        let rx = ads.stream_aggregated_resources(ReceiverStream::new(requests)).await.expect("a stream").into_inner();
        Self { tx, rx }
    }

    async fn send(&self, request: DiscoveryRequest) {
        self.tx.send(request).await.expect("send");
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a response within 10 s")
            .expect("no stream error")
            .expect("the stream is open")
    }

    /// No response within `wait`.
    async fn quiet(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.rx.message()).await.is_err()
    }

    async fn ack(&self, r: &DiscoveryResponse, names: &[&str]) {
        self.send(request(&r.type_url, &r.version_info, &r.nonce, names, None)).await;
    }
}

fn request(type_url: &str, version: &str, nonce: &str, names: &[&str], node: Option<Node>) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        node,
        ..DiscoveryRequest::default()
    }
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    let codec = meridian_mesh_config::xds::codec::Codec::new().expect("codec");
    let mut names: Vec<String> = r
        .resources
        .iter()
        .map(|any| codec.to_json(any).expect("decodes")["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

async fn status(addr: std::net::SocketAddr) -> StatusResponse {
    let mut client = MeshStatusClient::connect(format!("http://{addr}")).await.expect("status connects");
    client.get(StatusRequest {}).await.expect("status").into_inner()
}

async fn start(policy: &Path) -> meridian_mesh_config::xds::Running {
    let options = ServerOptions {
        policy_file: policy.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        wasm: PathBuf::from("/opt/meridian/meridian_filters.wasm"),
        poll: Duration::from_millis(20),
        certs: None,
    };
    serve(options).await.expect("the server starts")
}

/// Subscribes a caller proxy of eu-west to every type, ACKing each; returns
/// the responses by type.
async fn subscribe_caller(client: &mut Client) -> Vec<DiscoveryResponse> {
    client.send(request(CLUSTER, "", "", &[], Some(node("caller-proxy", "eu-west")))).await;
    let cds = client.recv().await;
    client.ack(&cds, &[]).await;
    client.send(request(LISTENER, "", "", &[], None)).await;
    let lds = client.recv().await;
    client.ack(&lds, &[]).await;
    client.send(request(ROUTE, "", "", &["meridian_routes"], None)).await;
    let rds = client.recv().await;
    client.ack(&rds, &["meridian_routes"]).await;
    client.send(request(EXTENSION_CONFIG, "", "", &["meridian"], None)).await;
    let ecds = client.recv().await;
    client.ack(&ecds, &["meridian"]).await;
    vec![cds, lds, rds, ecds]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_is_served_its_node_and_acks_nacks_and_stale_nonces_are_told_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, example()).expect("write");
    let server = start(&file).await;
    let mut client = Client::connect(server.local_addr()).await;
    let [cds, lds, rds, ecds]: [DiscoveryResponse; 4] = subscribe_caller(&mut client).await.try_into().expect("four");
    assert_eq!(cds.version_info, "1");
    assert_eq!(names(&cds).len(), 3 + 6 + 6, "a cluster per region and per failover order: {:?}", names(&cds));
    assert_eq!(names(&lds), ["meridian_ingress"]);
    assert_eq!(names(&rds), ["meridian_routes"]);
    assert_eq!(names(&ecds), ["meridian"]);

    let s = status(server.local_addr()).await;
    assert_eq!(s.policy_version, 1);
    let proxy = &s.proxies[0];
    assert_eq!(
        (proxy.node_id.as_str(), proxy.role.as_str(), proxy.region.as_str()),
        ("test-caller-proxy-eu-west", "caller-proxy", "eu-west")
    );
    assert!(proxy.in_sync, "{proxy:#?}");

    // A NACK: the same nonce with Envoy's reason; the old version stays.
    let change = example().replace("weight: 20, allowOverride", "weight: 30, allowOverride");
    std::fs::write(&file, change).expect("write");
    let ecds2 = client.recv().await;
    assert_eq!((ecds2.type_url.as_str(), ecds2.version_info.as_str()), (EXTENSION_CONFIG, "2"), "only ECDS moves");
    let nack = DiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: "Unable to create Wasm plugin meridian".into(),
            ..RpcStatus::default()
        }),
        ..request(EXTENSION_CONFIG, "1", &ecds2.nonce, &["meridian"], None)
    };
    client.send(nack).await;
    // A stale answer (an older nonce) changes nothing.
    client.send(request(EXTENSION_CONFIG, "2", &ecds.nonce, &["meridian"], None)).await;
    assert!(client.quiet(Duration::from_millis(300)).await, "no response to a NACK or a stale nonce");
    let s = status(server.local_addr()).await;
    let r = s.proxies[0].resources.iter().find(|r| r.type_url == EXTENSION_CONFIG).expect("ECDS");
    assert_eq!((r.current_version.as_str(), r.acked_version.as_str(), r.nacked_version.as_str()), ("2", "1", "2"));
    assert_eq!(r.nack_error, "Unable to create Wasm plugin meridian");
    assert!(!s.proxies[0].in_sync);
    let others: Vec<(&str, &str)> = s.proxies[0]
        .resources
        .iter()
        .filter(|r| r.type_url != EXTENSION_CONFIG)
        .map(|r| (r.current_version.as_str(), r.acked_version.as_str()))
        .collect();
    assert_eq!(others, [("1", "1"), ("1", "1"), ("1", "1")], "a weight change moves no listener, route or cluster");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_clusters_stay_until_the_proxy_has_acknowledged_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, example()).expect("write");
    let server = start(&file).await;
    let mut client = Client::connect(server.local_addr()).await;
    let first = subscribe_caller(&mut client).await;
    let before = names(&first[0]);

    // us-east leaves the mesh (its region, caller and endpoints removed).
    let text = example();
    let start_us = text.find("  - name: us-east").expect("us-east");
    let end_us = text[start_us..].find("\nmodels:").map(|i| start_us + i).expect("models");
    let without = format!("{}{}", &text[..start_us], &text[end_us + 1..])
        .replace("  app-us:\n    identity: spiffe://cluster.local/ns/app/sa/app-us\n    region: us-east\n", "");
    std::fs::write(&file, without).expect("write");

    // Clusters first, keeping the dropped ones…
    let held = client.recv().await;
    assert_eq!((held.type_url.as_str(), held.version_info.as_str()), (CLUSTER, "2+held"));
    assert_eq!(names(&held), before, "the new set plus every dropped cluster");
    client.ack(&held, &[]).await;
    // …then what names clusters: the filter's configuration (the listener
    // and routes do not depend on the regions, and stay at 1)…
    let ecds = client.recv().await;
    assert_eq!((ecds.type_url.as_str(), ecds.version_info.as_str()), (EXTENSION_CONFIG, "2"));
    let s = status(server.local_addr()).await;
    let cds = s.proxies[0].resources.iter().find(|r| r.type_url == CLUSTER).expect("CDS");
    assert_eq!(cds.acked_version, "1", "the held set is not the version in force");
    assert!(
        client.quiet(Duration::from_millis(300)).await,
        "nothing more until the filter's configuration is acknowledged"
    );
    client.ack(&ecds, &["meridian"]).await;
    // …and once that is acknowledged, the final cluster set.
    let fin = client.recv().await;
    assert_eq!((fin.type_url.as_str(), fin.version_info.as_str()), (CLUSTER, "2"));
    let after = names(&fin);
    assert_eq!(after.len(), 2 + 2, "two regions: two single and two ordered pairs: {after:?}");
    assert!(after.iter().all(|n| !n.contains("us-east")));
    client.ack(&fin, &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(status(server.local_addr()).await.proxies[0].in_sync);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_the_policy_does_not_know_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, example()).expect("write");
    let server = start(&file).await;
    for (node, needle) in [
        (node("caller-proxy", "mars"), "the policy has no caller-proxy in region mars"),
        (node("sidecar", "eu-west"), "metadata `meridian.role` is not caller-proxy or region-gateway"),
        (Node { id: "bare".into(), ..Node::default() }, "metadata `meridian.role`"),
    ] {
        let mut client = Client::connect(server.local_addr()).await;
        client.send(request(CLUSTER, "", "", &[], Some(node))).await;
        let status = tokio::time::timeout(Duration::from_secs(5), client.rx.message())
            .await
            .expect("an answer")
            .expect_err("refused");
        assert!(status.message().contains(needle), "{}", status.message());
    }
    assert!(status(server.local_addr()).await.proxies.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_does_not_start_on_an_invalid_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, example().replace("maxAttempts: 3", "maxAttempts: 9")).expect("write");
    let options = ServerOptions {
        policy_file: file,
        listen: "127.0.0.1:0".parse().expect("addr"),
        wasm: PathBuf::from("/opt/meridian/meridian_filters.wasm"),
        poll: Duration::from_millis(20),
        certs: None,
    };
    let err = serve(options).await.expect_err("invalid").to_string();
    assert!(err.contains("resilience.retry.maxAttempts: 9 is above 5"), "{err}");
}
