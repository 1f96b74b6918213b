//! TLS with a CA bundle and username/password authentication against real members.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{put, wait_for_revision};
use etcd_client::{Client, ConnectOptions};
use etcd_dynamic_config::{Error, EtcdConfig, EtcdSettings};
use testkit::{EtcdMember, MemberOptions, TestCerts};

/// A start that loads answers as soon as it has; one that is refused answers at once
/// (each such test checks that it did, within 10 s). The timeout only bounds a start
/// that would otherwise wait, long enough not to fail on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn config(settings: EtcdSettings) -> EtcdConfig {
    EtcdConfig::builder()
        .settings(settings)
        .start_timeout(START_TIMEOUT)
        .build()
        .expect("valid configuration")
}

#[tokio::test]
async fn tls_with_the_right_ca_loads_and_watches() {
    let certs = Arc::new(TestCerts::generate());
    let etcd = EtcdMember::start_with(MemberOptions::default().tls(certs.clone())).await;
    assert!(etcd.endpoint().starts_with("https://"));
    let mut client = etcd.client().await;
    put(&mut client, "/app/LogLevel", "INFO").await;

    let settings = EtcdSettings::builder()
        .endpoints(etcd.endpoint())
        .root_key("/app")
        .ca_cert_path(certs.ca())
        .build()
        .unwrap();
    let config = config(settings);
    config.start().await.expect("start over TLS");
    assert_eq!(
        config.snapshot().get("log_level").unwrap().as_str(),
        Some("INFO")
    );
    let revision = put(&mut client, "/app/LogLevel", "DEBUG").await;
    let snapshot = wait_for_revision(&config, revision).await;
    assert_eq!(snapshot.get("log_level").unwrap().as_str(), Some("DEBUG"));
    config.stop().await;
}

#[tokio::test]
async fn tls_with_a_ca_that_did_not_sign_the_server_is_refused() {
    let certs = Arc::new(TestCerts::generate());
    let etcd = EtcdMember::start_with(MemberOptions::default().tls(certs.clone())).await;
    let settings = EtcdSettings::builder()
        .endpoints(etcd.endpoint())
        .root_key("/app")
        .ca_cert_path(certs.other_ca())
        .build()
        .unwrap();
    let started = Instant::now();
    let error = config(settings).start().await.expect_err("wrong CA");
    println!("wrong CA: {error}");
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    assert!(matches!(error, Error::Refused { .. }), "{error:?}");
    assert!(error.to_string().contains("certificate"), "{error}");
}

async fn member_with_auth() -> (EtcdMember, Client) {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/LogLevel", "INFO").await;
    put(&mut client, "/other/Secret", "not for app").await;
    testkit::add_reader(&mut client, "app", "app-password", "/app/").await;
    testkit::enable_auth(&mut client, "root-password").await;
    let root = Client::connect(
        [etcd.endpoint()],
        Some(ConnectOptions::new().with_user("root", "root-password")),
    )
    .await
    .expect("root client");
    (etcd, root)
}

#[tokio::test]
async fn a_read_only_user_on_the_prefix_loads_and_watches() {
    let (etcd, mut root) = member_with_auth().await;
    let settings = EtcdSettings::builder()
        .endpoints(etcd.endpoint())
        .root_key("/app")
        .user("app", "app-password")
        .build()
        .unwrap();
    let config = config(settings);
    config.start().await.expect("start with a read-only user");
    assert_eq!(
        config.snapshot().get("log_level").unwrap().as_str(),
        Some("INFO")
    );
    let revision = put(&mut root, "/app/LogLevel", "WARN").await;
    let snapshot = wait_for_revision(&config, revision).await;
    assert_eq!(snapshot.get("log_level").unwrap().as_str(), Some("WARN"));
    config.stop().await;

    // The low-level reads (a read-only transaction, a range) need nothing more either.
    let settings = EtcdSettings::builder()
        .endpoints(etcd.endpoint())
        .root_key("/app")
        .user("app", "app-password")
        .build()
        .unwrap();
    let client = etcd_dynamic_config::EtcdClient::with_env(
        settings,
        etcd_dynamic_config::Schema::auto_discover(),
        Arc::new(|_: &str| None),
    )
    .unwrap();
    let values = client.get_values_by_keys(&["/app/LogLevel"]).await.unwrap();
    assert_eq!(values["/app/LogLevel"], "WARN");
    let all = client.get_config([]).await.unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn wrong_password_is_a_final_error_without_retries() {
    let (etcd, _root) = member_with_auth().await;
    let settings = EtcdSettings::builder()
        .endpoints(etcd.endpoint())
        .root_key("/app")
        .user("app", "wrong-password")
        .start_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = config(settings).start().await.expect_err("wrong password");
    println!("wrong password: {error}");
    // Retried, it would have waited for the start deadline.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "answered at once, not at the 60 s deadline: {:?}",
        started.elapsed()
    );
    assert!(!error.is_retryable(), "{error:?}");
    assert!(
        error.to_string().contains("authentication failed"),
        "{error}"
    );
    assert!(!format!("{error:?}").contains("wrong-password"));
}

#[tokio::test]
async fn permission_denied_outside_the_prefix_is_final() {
    let (etcd, _root) = member_with_auth().await;
    let settings = EtcdSettings::builder()
        .endpoints(etcd.endpoint())
        .root_key("/other")
        .user("app", "app-password")
        .build()
        .unwrap();
    let error = config(settings).start().await.expect_err("no permission");
    println!("permission denied: {error}");
    assert!(!error.is_retryable(), "{error:?}");
    assert!(error.to_string().contains("permission denied"), "{error}");
    assert!(
        error.to_string().contains("/other/"),
        "names the prefix: {error}"
    );
}

async fn mtls_member() -> (EtcdMember, Arc<TestCerts>) {
    let certs = Arc::new(TestCerts::generate());
    let etcd =
        EtcdMember::start_with(MemberOptions::default().client_cert_auth(certs.clone())).await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/LogLevel", "INFO").await;
    (etcd, certs)
}

fn mtls_settings(etcd: &EtcdMember, certs: &TestCerts) -> etcd_dynamic_config::EtcdSettingsBuilder {
    EtcdSettings::builder()
        .endpoints(etcd.endpoint())
        .root_key("/app")
        .ca_cert_path(certs.ca())
        .start_timeout(START_TIMEOUT)
        .fail_fast(true)
}

#[tokio::test]
async fn mtls_with_a_client_certificate_loads() {
    let (etcd, certs) = mtls_member().await;
    let settings = mtls_settings(&etcd, &certs)
        .client_identity(certs.client_cert(), certs.client_key())
        .build()
        .unwrap();
    let config = config(settings);
    config
        .start()
        .await
        .expect("start with a client certificate");
    assert_eq!(
        config.snapshot().get("log_level").unwrap().as_str(),
        Some("INFO")
    );
    config.stop().await;
}

#[tokio::test]
async fn mtls_without_or_with_a_wrong_client_certificate_is_refused_in_plain_words() {
    let (etcd, certs) = mtls_member().await;
    let cases = [
        (
            "no client certificate",
            mtls_settings(&etcd, &certs).build().unwrap(),
            "requires a client certificate; set EtcdSettings__ClientCertPath",
        ),
        (
            "a client certificate from another CA",
            mtls_settings(&etcd, &certs)
                .client_identity(certs.foreign_client_cert(), certs.foreign_client_key())
                .build()
                .unwrap(),
            "rejected the client certificate",
        ),
        (
            "a certificate with another certificate's key",
            mtls_settings(&etcd, &certs)
                .client_identity(certs.client_cert(), certs.foreign_client_key())
                .build()
                .unwrap(),
            "do not belong together",
        ),
    ];
    for (case, settings, expected) in cases {
        let started = Instant::now();
        let error = config(settings).start().await.expect_err(case);
        println!("{case}: {error}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{case}: no hang"
        );
        assert!(error.to_string().contains(expected), "{case}: {error}");
        assert!(!error.is_retryable(), "{case}: final, {error:?}");
    }
}
