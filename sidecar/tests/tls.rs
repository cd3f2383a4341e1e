//! Mutual TLS on the gRPC and REST listeners, for real: rustls on both ends,
//! certificates from the development PKI. Who is refused and how, who is
//! allowed per model, identities forwarded by trusted proxies, per-identity
//! rate limits, and rotation of the server certificate and the CA under
//! load.

mod common;

use common::{input, mlp_request, standard_repo, write_model, TestServer};
use meridian_pki::{Authority, Issued, Validity, Workload};
use meridian_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use meridian_proto::inference::ModelInferRequest;
use meridian_sidecar::models;
use meridian_sidecar::server::TlsConfig;
use meridian_sidecar::tls::identity::IdentityPattern;
use meridian_sidecar::tls::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

const WEB: &str = "spiffe://td/ns/web/sa/web-eu";
const APP: &str = "spiffe://td/ns/app/sa/app-us";
const GATEWAY: &str = "spiffe://td/ns/meridian/sa/gateway-eu-west";

/// The server's files in a temporary folder.
struct ServerFiles {
    dir: tempfile::TempDir,
}

impl ServerFiles {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tmp") }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn tls_files(&self) -> TlsFiles {
        TlsFiles { cert: self.path("cert.pem"), key: self.path("key.pem"), client_ca: Some(self.path("ca.pem")) }
    }
    /// The key first, then the certificate (a reader between the two sees a
    /// mismatch and keeps the old pair).
    fn write_server(&self, issued: &Issued) {
        meridian_pki::write_atomically(&self.path("key.pem"), issued.key_pem.as_bytes(), true).expect("key");
        meridian_pki::write_atomically(&self.path("cert.pem"), issued.cert_pem.as_bytes(), false).expect("cert");
    }
    fn write_bundle(&self, cas: &[&Authority]) {
        let bundle: String = cas.iter().map(|ca| ca.cert_pem()).collect();
        meridian_pki::write_atomically(&self.path("ca.pem"), bundle.as_bytes(), false).expect("bundle");
    }
}

fn server_cert(ca: &Authority) -> Issued {
    ca.issue(&Workload::spiffe("spiffe://td/ns/models/sa/sidecar").expect("workload")).expect("server cert")
}

fn client_cert(ca: &Authority, id: &str) -> Issued {
    ca.issue(&Workload::spiffe(id).expect("workload")).expect("client cert")
}

fn client_tls(roots: &[&Authority], client: Option<&Issued>) -> ClientTlsConfig {
    let bundle: String = roots.iter().map(|ca| ca.cert_pem()).collect();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(bundle)).domain_name("localhost");
    match client {
        Some(c) => tls.identity(Identity::from_pem(&c.cert_pem, &c.key_pem)),
        None => tls,
    }
}

async fn channel(server: &TestServer, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("https://{}", server.bound.grpc)).expect("endpoint").tls_config(tls)?.connect().await
}

fn tls_config(files: &ServerFiles, trusted: &[&str]) -> TlsConfig {
    TlsConfig {
        metrics: false,
        files: files.tls_files(),
        poll_interval: Duration::from_millis(20),
        trusted_proxies: trusted.iter().map(|p| IdentityPattern::parse(p).expect("pattern")).collect(),
    }
}

/// mlp admits the web namespace; scorer (the same network) admits the app.
fn authorised_repo(repo: &Path) {
    write_model(
        repo,
        "mlp",
        1,
        &models::mlp(&common::DIMS, common::SEED),
        "max_batch_size: 8\ndynamic_batching: {max_queue_delay_us: 200}\n\
         allowed_identities: ['spiffe://td/ns/web/*']\n\
         rate_limit: {per_caller_requests_per_second: 1000, burst: 1000}\n",
    );
    write_model(
        repo,
        "scorer",
        1,
        &models::mlp(&common::DIMS, common::SEED),
        "max_batch_size: 8\nallowed_identities: [spiffe://td/ns/app/sa/app-us]\n",
    );
}

fn scorer_request() -> ModelInferRequest {
    ModelInferRequest { model_name: "scorer".into(), ..mlp_request(1, &input(1, 0.75)) }
}

async fn mlp_call(client: &mut GrpcInferenceServiceClient<Channel>) -> Result<(), tonic::Status> {
    client.model_infer(mlp_request(1, &input(1, 0.5))).await.map(|_| ())
}

/// A raw rustls client connection to the server, trusting `roots`, with
/// `client`'s certificate if any.
async fn tls_connect(
    addr: std::net::SocketAddr,
    roots: &[&Authority],
    client: Option<&Issued>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    for ca in roots {
        store.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("ca pem")).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store);
    let mut config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).expect("key"),
            )
            .expect("client config"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// The serial of the certificate a new connection is served, as
/// x509-parser prints it.
async fn served_serial(server: &TestServer, roots: &[&Authority], client: &Issued) -> String {
    let tls = tls_connect(server.bound.grpc, roots, Some(client)).await.expect("handshake");
    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).expect("server certificate").clone();
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("x509");
    cert.raw_serial_as_string()
}

/// A TLS handshake as a raw rustls client (with `client`'s certificate, if
/// any), then a read: the server's verdict arrives as an alert — during
/// the handshake (TLS 1.2) or as the first record after it (TLS 1.3).
async fn handshake(server: &TestServer, ca: &Authority, client: Option<&Issued>) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let mut tls = tls_connect(server.bound.grpc, &[ca], client).await.map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    match tls.read(&mut byte).await {
        Ok(0) => Err("closed without an alert".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Waits until `series` reaches `at_least` (the server counts a failed
/// handshake just after sending its alert).
async fn wait_metric(server: &TestServer, series: &str, at_least: f64) {
    for _ in 0..500 {
        if metric(server, series).await >= Some(at_least) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{series}never reached {at_least}:\n{}", server.http_get("/metrics").await);
}

async fn metric(server: &TestServer, series: &str) -> Option<f64> {
    let text = server.http_get("/metrics").await;
    text.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_callers_each_get_their_error() {
    let ca = Authority::generate("mesh CA", Validity::days(1)).expect("ca");
    let other = Authority::generate("another CA", Validity::days(1)).expect("other ca");
    let files = ServerFiles::new();
    files.write_server(&server_cert(&ca));
    files.write_bundle(&[&ca]);
    let web = client_cert(&ca, WEB);
    let server = TestServer::start_tls(authorised_repo, tls_config(&files, &[]), client_tls(&[&ca], Some(&web))).await;

    // A plaintext client: the server expects a TLS ClientHello and answers
    // the HTTP/2 preface with a TLS alert and closes, which the client sees
    // as a transport error (an h2 protocol error, or the connection closed)
    // — no gRPC status from the server.
    let mut plain = GrpcInferenceServiceClient::connect(format!("http://{}", server.bound.grpc)).await.expect("tcp");
    let err = mlp_call(&mut plain).await.expect_err("plaintext refused");
    assert!(std::error::Error::source(&err).is_some(), "a transport error, not a server's answer: {err:?}");

    wait_metric(&server, "meridian_tls_handshake_failures_total{reason=\"not_tls\"} ", 1.0).await;

    // TLS without a client certificate; with one from another CA; an
    // expired one: the server's alert, as the client reads it, and the
    // reason the server counts.
    let expired = ca.issue(&Workload::spiffe(WEB).expect("w").valid(Validity::expired())).expect("expired");
    let foreign = client_cert(&other, WEB);
    for (what, client, alert, reason) in [
        ("no certificate", None, "CertificateRequired", "no_client_certificate"),
        ("another CA", Some(&foreign), "UnknownCA", "unknown_issuer"),
        ("expired", Some(&expired), "CertificateExpired", "expired"),
    ] {
        let err = handshake(&server, &ca, client).await.expect_err(what);
        assert!(err.contains(alert), "{what}: {err}");
        let series = format!("meridian_tls_handshake_failures_total{{reason=\"{reason}\"}} ");
        wait_metric(&server, &series, 1.0).await;
        // A gRPC client gets no answer either.
        let tls = client_tls(&[&ca], client);
        let outcome = match channel(&server, tls).await {
            Err(e) => Err(format!("{e:?}")),
            Ok(ch) => mlp_call(&mut GrpcInferenceServiceClient::new(ch)).await.map_err(|s| format!("{s:?}")),
        };
        assert!(outcome.is_err(), "{what}: a gRPC call went through");
    }

    // A valid certificate whose identity the model does not admit; another
    // model it is allowed for works on the same connection.
    let app = client_cert(&ca, APP);
    let mut as_app =
        GrpcInferenceServiceClient::new(channel(&server, client_tls(&[&ca], Some(&app))).await.expect("app"));
    let denied = mlp_call(&mut as_app).await.expect_err("app may not call mlp");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), format!("identity '{APP}' is not allowed to call model 'mlp' (allowed_identities)"));
    as_app.model_infer(scorer_request()).await.expect("app may call scorer on the same connection");
    let mut as_web = server.client().await;
    mlp_call(&mut as_web).await.expect("web may call mlp");
    let denied = as_web.model_infer(scorer_request()).await.expect_err("web may not call scorer");
    assert!(denied.message().contains(WEB) && denied.message().contains("scorer"), "{denied:?}");
    let counted =
        metric(&server, "meridian_inference_requests_total{model=\"mlp\",status=\"PERMISSION_DENIED\",version=\"\"} ")
            .await
            .expect("denials counted");
    assert_eq!(counted, 1.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_identities_count_only_from_trusted_proxies() {
    let ca = Authority::generate("mesh CA", Validity::days(1)).expect("ca");
    let files = ServerFiles::new();
    files.write_server(&server_cert(&ca));
    files.write_bundle(&[&ca]);
    let gateway = client_cert(&ca, GATEWAY);
    let trusted = ["spiffe://td/ns/meridian/sa/gateway-*"];
    let server =
        TestServer::start_tls(authorised_repo, tls_config(&files, &trusted), client_tls(&[&ca], Some(&gateway))).await;
    let forwarded = |xfcc: &str| {
        let mut r = tonic::Request::new(mlp_request(1, &input(1, 0.25)));
        r.metadata_mut().insert("x-forwarded-client-cert", xfcc.parse().expect("header"));
        r
    };
    // The gateway forwards the web caller it verified: admitted.
    let mut via_gateway = server.client().await;
    via_gateway.model_infer(forwarded(&format!("Hash=ab;URI={WEB}"))).await.expect("forwarded web identity");
    // The gateway calling on its own behalf is not in mlp's list.
    let own = mlp_call(&mut via_gateway).await.expect_err("the gateway itself");
    assert!(own.message().contains(GATEWAY), "{own:?}");
    // The app forging the header stays the app.
    let app = client_cert(&ca, APP);
    let mut as_app =
        GrpcInferenceServiceClient::new(channel(&server, client_tls(&[&ca], Some(&app))).await.expect("app"));
    let forged = as_app.model_infer(forwarded(&format!("URI={WEB}"))).await.expect_err("forged header");
    assert_eq!(forged.code(), Code::PermissionDenied);
    assert!(forged.message().contains(APP), "{forged:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_caller_rate_limits_key_on_the_verified_identity() {
    let ca = Authority::generate("mesh CA", Validity::days(1)).expect("ca");
    let files = ServerFiles::new();
    files.write_server(&server_cert(&ca));
    files.write_bundle(&[&ca]);
    let limited = |repo: &Path| {
        write_model(
            repo,
            "mlp",
            1,
            &models::mlp(&common::DIMS, common::SEED),
            "max_batch_size: 8\nrate_limit: {per_caller_requests_per_second: 1, burst: 1}\n",
        )
    };
    let web = client_cert(&ca, WEB);
    let server = TestServer::start_tls(limited, tls_config(&files, &[]), client_tls(&[&ca], Some(&web))).await;
    let as_caller = |name: &str| {
        let mut r = tonic::Request::new(mlp_request(1, &input(1, 0.5)));
        r.metadata_mut().insert("x-meridian-caller", name.parse().expect("header"));
        r
    };
    let mut client = server.client().await;
    client.model_infer(as_caller("a")).await.expect("the identity's one token");
    // Another caller header does not buy another bucket under mTLS.
    let limited = client.model_infer(as_caller("b")).await.expect_err("same identity, same bucket");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(limited.message().contains(&format!("caller '{WEB}'")), "{limited:?}");
    // Another identity has its own bucket.
    let app = client_cert(&ca, APP);
    let mut as_app =
        GrpcInferenceServiceClient::new(channel(&server, client_tls(&[&ca], Some(&app))).await.expect("app"));
    as_app.model_infer(as_caller("a")).await.expect("another identity, another bucket");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_new_material_is_refused_and_the_old_stays() {
    let ca = Authority::generate("mesh CA", Validity::days(1)).expect("ca");
    let files = ServerFiles::new();
    let first = server_cert(&ca);
    files.write_server(&first);
    files.write_bundle(&[&ca]);
    let web = client_cert(&ca, WEB);
    let server = TestServer::start_tls(standard_repo, tls_config(&files, &[]), client_tls(&[&ca], Some(&web))).await;
    let not_after = {
        let (_, pem) = x509_parser::pem::parse_x509_pem(first.cert_pem.as_bytes()).expect("pem");
        pem.parse_x509().expect("x509").validity().not_after.timestamp() as f64
    };
    let expiry = "meridian_tls_certificate_expiry_timestamp_seconds{certificate=\"server\"} ";
    assert_eq!(metric(&server, expiry).await, Some(not_after));

    let refused = "meridian_tls_reloads_total{result=\"refused\"} ";
    let wait_refused = |n: f64| {
        let server = &server;
        async move {
            for _ in 0..1000 {
                if metric(server, refused).await >= Some(n) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("no refused reload #{n}");
        }
    };
    // A key that is not the certificate's.
    let other = server_cert(&ca);
    meridian_pki::write_atomically(&files.path("key.pem"), other.key_pem.as_bytes(), true).expect("key");
    wait_refused(1.0).await;
    assert_eq!(served_serial(&server, &[&ca], &web).await, first.serial, "the old pair stays in force");
    // An expired certificate (with its own key).
    let expired = ca
        .issue(&Workload::spiffe("spiffe://td/ns/models/sa/sidecar").expect("w").valid(Validity::expired()))
        .expect("expired");
    files.write_server(&expired);
    wait_refused(2.0).await;
    // An unreadable file.
    std::fs::remove_file(files.path("cert.pem")).expect("remove");
    wait_refused(3.0).await;
    assert_eq!(served_serial(&server, &[&ca], &web).await, first.serial);
    mlp_call(&mut server.client().await).await.expect("still serving");
    assert_eq!(metric(&server, expiry).await, Some(not_after));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_certificate_and_ca_twice_under_load_fails_no_call() {
    let cas: Vec<Authority> =
        (1..=3).map(|n| Authority::generate(&format!("mesh CA {n}"), Validity::days(1)).expect("ca")).collect();
    let every_ca: Vec<&Authority> = cas.iter().collect();
    let files = ServerFiles::new();
    let first = server_cert(&cas[0]);
    files.write_server(&first);
    files.write_bundle(&[&cas[0]]);
    let identity = Arc::new(RwLock::new(client_cert(&cas[0], WEB)));
    let initial = identity.read().expect("identity").clone();
    let server =
        TestServer::start_tls(standard_repo, tls_config(&files, &[]), client_tls(&every_ca, Some(&initial))).await;
    let server = Arc::new(server);

    // 8 callers: four open a new connection every 25 calls, with the client
    // certificate current then, so handshakes run across rotations; four
    // keep the connection they opened first, through both rotations (the
    // second drops their CA from the bundle).
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let roots: String = cas.iter().map(|ca| ca.cert_pem()).collect();
    let callers: Vec<_> = (0..8)
        .map(|i| {
            let calls_per_connection = if i < 4 { 25 } else { usize::MAX };
            let (server, stop, ok, failed, identity, roots) =
                (server.clone(), stop.clone(), ok.clone(), failed.clone(), identity.clone(), roots.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let current = identity.read().expect("identity").clone();
                    let tls = ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(&roots))
                        .domain_name("localhost")
                        .identity(Identity::from_pem(&current.cert_pem, &current.key_pem));
                    let mut client = match channel(&server, tls).await {
                        Ok(ch) => GrpcInferenceServiceClient::new(ch),
                        Err(e) => {
                            eprintln!("connect failed: {e:?}");
                            failed.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                    };
                    for _ in 0..calls_per_connection {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        match mlp_call(&mut client).await {
                            Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(e) => {
                                eprintln!("call failed: {e:?}");
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                }
            })
        })
        .collect();
    let wait_calls = |n: usize| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::SeqCst) + n;
            while ok.load(Ordering::SeqCst) < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_calls(200).await;
    let probe = |serial: String| {
        let (server, identity, every_ca) = (server.clone(), identity.clone(), &every_ca);
        async move {
            for _ in 0..500 {
                let current = identity.read().expect("identity").clone();
                if served_serial(&server, every_ca, &current).await == serial {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("new connections never saw serial {serial}");
        }
    };
    let mut serials = vec![first.serial.clone()];
    for step in 1..3 {
        // The bundle takes the new CA beside the current one, the server
        // takes a certificate from the new CA, then callers move to
        // certificates from it; the next step drops the older CA.
        files.write_bundle(&[&cas[step - 1], &cas[step]]);
        let next = server_cert(&cas[step]);
        files.write_server(&next);
        probe(next.serial.clone()).await;
        *identity.write().expect("identity") = client_cert(&cas[step], WEB);
        serials.push(next.serial);
        wait_calls(200).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in callers {
        c.await.expect("caller");
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed calls or connections during rotation");
    assert!(ok.load(Ordering::SeqCst) >= 600);
    assert_eq!(serials.iter().collect::<std::collections::BTreeSet<_>>().len(), 3);
    let applied = metric(&server, "meridian_tls_reloads_total{result=\"applied\"} ").await.expect("reloads");
    assert!(applied >= 2.0, "{applied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_can_run_behind_the_same_mutual_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Authority::generate("mesh CA", Validity::days(1)).expect("ca");
    let files = ServerFiles::new();
    files.write_server(&server_cert(&ca));
    files.write_bundle(&[&ca]);
    let scraper = client_cert(&ca, "spiffe://td/ns/monitoring/sa/prometheus");
    let config = TlsConfig { metrics: true, ..tls_config(&files, &[]) };
    let server = TestServer::start_tls(standard_repo, config, client_tls(&[&ca], Some(&scraper))).await;
    let get = |mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>| async move {
        tls.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
        let mut out = String::new();
        tls.read_to_string(&mut out).await?;
        std::io::Result::Ok(out)
    };
    let with_cert = tls_connect(server.bound.metrics, &[&ca], Some(&scraper)).await.expect("handshake");
    assert_eq!(with_cert.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let page = get(with_cert).await.expect("scrape");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("meridian_tls_certificate_expiry_timestamp_seconds{certificate=\"server\"}"), "{page}");
    // No client certificate: the alert, no page.
    let without = match tls_connect(server.bound.metrics, &[&ca], None).await {
        Ok(tls) => get(tls).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(without.as_ref().is_err_and(|e| e.contains("CertificateRequired")), "{without:?}");
    // Plaintext HTTP: no page either (a TLS alert, or a reset).
    let mut plain = tokio::net::TcpStream::connect(server.bound.metrics).await.expect("connect");
    plain.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_listener_runs_behind_the_same_tls_and_checks_identities() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Authority::generate("mesh CA", Validity::days(1)).expect("ca");
    let files = ServerFiles::new();
    files.write_server(&server_cert(&ca));
    files.write_bundle(&[&ca]);
    let web = client_cert(&ca, WEB);
    let server = TestServer::start_tls(authorised_repo, tls_config(&files, &[]), client_tls(&[&ca], Some(&web))).await;
    let body = serde_json::json!({
        "inputs": [{ "name": "input", "shape": [1, common::DIMS[0]], "datatype": "FP32", "data": input(1, 0.5) }],
    })
    .to_string();
    let post = |client: Issued, model: &'static str| {
        let (addr, ca, body) = (server.bound.http, &ca, body.clone());
        async move {
            let mut tls = tls_connect(addr, &[ca], Some(&client)).await.expect("handshake");
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
            let head = format!(
                "POST /v2/models/{model}/infer HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            tls.write_all(head.as_bytes()).await.expect("write");
            tls.write_all(body.as_bytes()).await.expect("write body");
            let mut out = String::new();
            let _ = tls.read_to_string(&mut out).await;
            out
        }
    };
    // The web namespace may call mlp, not scorer; the app may call scorer.
    let admitted = post(web.clone(), "mlp").await;
    assert!(admitted.starts_with("HTTP/1.1 200"), "{admitted}");
    let refused = post(web, "scorer").await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains(&format!("identity '{WEB}' is not allowed to call model 'scorer'")), "{refused}");
    let app = post(client_cert(&ca, APP), "scorer").await;
    assert!(app.starts_with("HTTP/1.1 200"), "{app}");
    // No client certificate: no handshake.
    let without = tls_connect(server.bound.http, &[&ca], None).await;
    let failed = match without {
        Err(e) => e.to_string(),
        Ok(mut tls) => {
            let _ = tls.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n").await;
            let mut out = String::new();
            tls.read_to_string(&mut out).await.map_err(|e| e.to_string()).err().unwrap_or(out)
        }
    };
    assert!(failed.contains("CertificateRequired"), "{failed}");
}
