//! HTTPS served directly by `ant-server` (rustls), HTTP/1.1 and HTTP/2 by ALPN, verified
//! against a test CA as a self-hosting user would set it up.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::json;

use crate::harness::{Backend, Harness, ServerOptions, sse_events};

/// A CA certificate (PEM) and a leaf for `localhost` and `127.0.0.1` signed by it (cert and
/// key, PEM).
fn test_ca() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Aniate test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let options = ServerOptions::default()
        .env("ANIATE_TLS_CERT", cert_path.to_str().unwrap())
        .env("ANIATE_TLS_KEY", key_path.to_str().unwrap());
    let mut h = Harness::start_with(Backend::Sqlite, options).await.unwrap();
    assert!(h.base.starts_with("https://127.0.0.1:"), "{}", h.base);
    let ca = reqwest::Certificate::from_pem(ca.as_bytes()).unwrap();
    h.http = reqwest::Client::builder().add_root_certificate(ca.clone()).build().unwrap();
    let token = h.signup("tls@example.test").await;

    for (label, builder, expected) in [
        ("h2 by ALPN", reqwest::Client::builder(), reqwest::Version::HTTP_2),
        ("http/1.1", reqwest::Client::builder().http1_only(), reqwest::Version::HTTP_11),
    ] {
        let client = builder
            .add_root_certificate(ca.clone())
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let response = client.get(h.url("/tools")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{label}");
        assert_eq!(response.version(), expected, "{label}");
        // A streamed run works over both.
        let run = client
            .post(h.url("/tool/what"))
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .json(&json!({"instructions": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(run.version(), expected, "{label}");
        let events = sse_events(run).await;
        assert_eq!(events.last().unwrap().clone().to_sse().lines().next(), Some("event: done"), "{label}");
    }

    // A client that does not trust the CA is refused by its own TLS check.
    let untrusting = reqwest::Client::builder().tls_built_in_root_certs(false).build().unwrap();
    assert!(untrusting.get(h.url("/tools")).send().await.is_err());
}

#[test]
fn a_missing_certificate_is_a_clear_start_error() {
    let output = std::process::Command::new(crate::harness::SERVER_BIN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .env("ANIATE_DATABASE_URL", "sqlite::memory:")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot load TLS certificate /nonexistent/cert.pem"), "{stderr}");
}
