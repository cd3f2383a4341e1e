//! The local mesh with mutual TLS on every hop behind the caller-side proxy:
//! real Envoys with certificates from files (SDS), real sidecars with
//! rustls, identities checked per model. A call through the mesh succeeds
//! over TLS on each hop; a caller that forges the identity header, or has
//! no certificate, gets nothing; rotating every certificate while calls run
//! fails none.

use meridian_integration::load::{CallSpec, Load};
use meridian_integration::mesh::{Mesh, MeshSpec, MODEL};
use meridian_mesh_config::certs::{self, Workload};
use meridian_pki::{Authority, Workload as Spiffe};
use meridian_proto::headers;
use meridian_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use meridian_proto::inference::model_infer_request::InferInputTensor;
use meridian_proto::inference::{InferTensorContents, ModelInferRequest};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const INTRUDER: &str = "spiffe://cluster.local/ns/intruder/sa/intruder";

fn request(metadata: &[(&'static str, &str)]) -> tonic::Request<ModelInferRequest> {
    let mut request = tonic::Request::new(ModelInferRequest {
        model_name: MODEL.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 16],
            contents: Some(InferTensorContents { fp32_contents: vec![0.5; 16], ..Default::default() }),
            ..Default::default()
        }],
        ..Default::default()
    });
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse().expect("metadata"));
    }
    request
}

async fn tls_channel(addr: std::net::SocketAddr, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("https://{addr}")).expect("endpoint").tls_config(tls)?.connect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hop_runs_mutual_tls_and_a_forged_identity_gets_nothing() -> anyhow::Result<()> {
    let mut spec = MeshSpec::three_regions()?;
    spec.mtls = true;
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;

    // Calls through the mesh succeed.
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 4, Duration::ZERO).await?;
    while load.count() < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let records = load.stop().await;
    let failed: Vec<_> = records.iter().filter(|r| r.code != 0).collect();
    assert!(failed.is_empty(), "{} of {} failed, first: {:?}", failed.len(), records.len(), failed.first());
    assert!(records.iter().all(|r| r.region.as_deref() == Some("eu-west")));

    // Each hop made TLS handshakes: caller proxy → gateway, gateway → sidecar
    // (Envoy counts them per cluster), and the gateway's listener.
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let caller = mesh.caller().stat_sum("cluster.meridian~eu-west.", "ssl.handshake")?;
        let gateway = mesh.gateway("eu-west")?;
        let to_sidecar = gateway.stat_sum("cluster.sidecars~v1.", "ssl.handshake")?;
        let listener = gateway.stat_sum("listener.", "ssl.handshake")?;
        assert!(caller >= 1 && to_sidecar >= 1 && listener >= 1, "handshakes: {caller} {to_sidecar} {listener}");
        // Nothing went in plaintext: no TLS errors, no connections without a certificate.
        assert_eq!(gateway.stat_sum("listener.", "ssl.fail_verify_no_cert")?, 0);
        Ok(())
    })?;

    let root = &mesh.certs().expect("the mesh runs mTLS").root;
    let ca = Authority::load(root)?;
    let ca_pem = std::fs::read_to_string(root.join("ca.pem"))?;
    let gateway = mesh.gateway_addr("eu-west").expect("eu-west");
    let policy =
        meridian_mesh_config::policy::Policy::from_spec(mesh.policy().clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let caller_proxy = certs::identity(&policy, &Workload::CallerProxy);

    // A certificate of the mesh's own CA for an identity no model admits,
    // straight to a gateway, forging the caller proxy's identity in the
    // forwarded-certificate header and a known caller in x-meridian-caller:
    // the gateway appends the identity it verified, the sidecar believes
    // the gateway alone, and refuses.
    let intruder = ca.issue(&Spiffe::spiffe(INTRUDER)?)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .domain_name("localhost")
        .identity(Identity::from_pem(&intruder.cert_pem, &intruder.key_pem));
    let mut client = GrpcInferenceServiceClient::new(tls_channel(gateway, tls).await?);
    let forged = format!("URI={caller_proxy}");
    let refused = client
        .model_infer(request(&[
            ("x-forwarded-client-cert", forged.as_str()),
            (headers::CALLER, "web-eu"),
            (headers::MODEL, MODEL),
        ]))
        .await
        .expect_err("a forged identity is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        refused.message(),
        format!("identity '{INTRUDER}' is not allowed to call model '{MODEL}' (allowed_identities)")
    );

    // Without a client certificate the gateway takes no call; nor in plaintext.
    let no_cert = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)).domain_name("localhost");
    let outcome = match tls_channel(gateway, no_cert).await {
        Err(e) => Err(format!("{e:?}")),
        Ok(ch) => GrpcInferenceServiceClient::new(ch)
            .model_infer(request(&[]))
            .await
            .map(|_| ())
            .map_err(|s| format!("{s:?}")),
    };
    assert!(outcome.is_err(), "a call without a client certificate went through");
    let mut plain =
        GrpcInferenceServiceClient::new(Channel::from_shared(format!("http://{gateway}"))?.connect().await?);
    let plaintext = plain.model_infer(request(&[])).await.expect_err("plaintext to the gateway is refused");
    assert_ne!(plaintext.code(), tonic::Code::Ok);

    // The caller proxy drops a forwarded-certificate header its caller sends
    // (the model servers believe what the mesh's proxies forward, so a
    // header passed on would make the call the intruder's): the call is the
    // caller proxy's own, and admitted.
    let mut through_mesh =
        GrpcInferenceServiceClient::new(Channel::from_shared(format!("http://{}", mesh.listener()))?.connect().await?);
    let forged_intruder = format!("URI={INTRUDER}");
    through_mesh
        .model_infer(request(&[("x-forwarded-client-cert", forged_intruder.as_str()), (headers::MODEL, MODEL)]))
        .await
        .expect("the caller proxy sanitises the header; the call is its own");

    // Rotation in the running mesh (`meridianctl certs` again, the same CA)
    // under load: every Envoy takes its new certificate from its watched
    // folder, every sidecar from its polled files; no call fails.
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 4, Duration::from_millis(2)).await?;
    let rotated = certs::issue(&policy, root, 30, false)?;
    let serial_of =
        |w: &Workload| rotated.iter().find(|i| &i.workload == w).map(|i| i.serial.replace(':', "")).expect("issued");
    let envoys = [
        (mesh.caller().admin(), serial_of(&Workload::CallerProxy)),
        (mesh.gateway("eu-west")?.admin(), serial_of(&Workload::Gateway("eu-west".into()))),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for (admin, serial) in &envoys {
        // Envoy's admin lists the certificates in force, serials in hex.
        while !meridian_integration::http::get(*admin, "/certs")?.body.contains(serial.as_str()) {
            anyhow::ensure!(std::time::Instant::now() < deadline, "{admin} never took certificate {serial}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let before = load.count();
    while load.count() < before + 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let records = load.stop().await;
    let failed: Vec<_> = records.iter().filter(|r| r.code != 0).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed across the rotation: {:?}",
        failed.len(),
        records.len(),
        failed.first()
    );
    Ok(())
}
