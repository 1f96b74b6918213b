//! The metrics: the Prometheus endpoint of the example scraped after real updates, and
//! the counters of rarer events (re-lists, rejected revisions, re-authentication) read
//! from the same recorder while those events are made to happen.

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/prometheus.rs"]
mod prometheus;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{etcd_state, pool_config, put, values, wait_for_revision};
use etcd_client::{Client, ConnectOptions, RoleRevokePermissionOptions};
use etcd_dynamic_config::schema::{Check, Name};
use etcd_dynamic_config::{EtcdConfig, EtcdSettings, Schema};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::Value as Json;
use testkit::{EtcdMember, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(address: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The process's one recorder, installed by the first test that asks (each test uses a
/// prefix of its own).
fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .unwrap()
        })
        .clone()
}

/// The value of `metric` with the `prefix="/metered/"` label in a Prometheus scrape.
fn sample(scrape: &str, metric: &str) -> Option<f64> {
    sample_of(scrape, "/metered/", metric)
}

/// The value of `metric` with the label `prefix="{prefix}"` in a Prometheus scrape.
fn sample_of(scrape: &str, prefix: &str, metric: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|line| line.starts_with(&format!("{metric}{{prefix=\"{prefix}\"}}")))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The counter `metric` of `prefix` now (0 before it first moves).
fn counter(prefix: &str, metric: &str) -> f64 {
    sample_of(&recorder().render(), prefix, metric).unwrap_or(0.0)
}

/// Waits up to 10 s for `metric` of `prefix` to reach `value`; its last value.
async fn counter_reaches(prefix: &str, metric: &str, value: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = counter(prefix, metric);
        if now >= value || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_example_exports_counters_that_move() {
    let handle = recorder();
    let mut etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/metered/PoolSize", "10").await;
    let config = Arc::new(pool_config(&etcd.endpoint(), "/metered"));
    config.start().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(prometheus::serve(config.clone(), handle, listener));

    let (_, before) = get(address, "/metrics").await;
    let applied_before = sample(&before, "etcd_config_updates_applied_total").unwrap_or(0.0);
    for size in ["11", "12", "13"] {
        put(&mut client, "/metered/PoolSize", size).await;
    }
    let last = put(&mut client, "/metered/PoolSize", "many").await;
    wait_for_revision(&config, last).await;
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.restart().await;
    let mut client = etcd.client().await;
    let last = put(&mut client, "/metered/Other", "x").await;
    wait_for_revision(&config, last).await;

    // The gauges are refreshed every second; counters at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let (status, scrape) = get(address, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        if sample(&scrape, "etcd_config_connected") == Some(1.0) || Instant::now() > deadline {
            break scrape;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let applied = sample(&scrape, "etcd_config_updates_applied_total").unwrap();
    assert!(applied >= applied_before + 4.0, "{scrape}");
    assert_eq!(
        sample(&scrape, "etcd_config_updates_rejected_total").unwrap(),
        1.0
    );
    assert!(sample(&scrape, "etcd_config_reconnects_total").unwrap() >= 1.0);
    assert_eq!(
        sample(&scrape, "etcd_config_revision").unwrap(),
        config.snapshot().revision() as f64
    );
    assert_eq!(sample(&scrape, "etcd_config_keys").unwrap(), 2.0);
    assert_eq!(sample(&scrape, "etcd_config_connected").unwrap(), 1.0);
    assert!(sample(&scrape, "etcd_config_seconds_since_sync").unwrap() < 5.0);

    let (status, health) = get(address, "/health").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let health: Json = serde_json::from_str(&health).unwrap();
    assert_eq!(health["state"], "synced");
    assert_eq!(health["invalid"][0]["name"], "pool_size");
    println!(
        "scrape:\n{}",
        scrape
            .lines()
            .filter(|l| l.starts_with("etcd_config"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("health: {health}");
    server.abort();
    config.stop().await;
}

/// `min_pool <= max_pool` over auto-discovered names under `prefix`, through `settings`.
fn checked_config(settings: EtcdSettings) -> EtcdConfig {
    let schema = Schema::builder()
        .discover(true)
        .name(Name::new("min_pool"))
        .name(Name::new("max_pool"))
        .check(Check::compare("min_pool", "<=", "max_pool").unwrap())
        .build()
        .unwrap();
    EtcdConfig::builder()
        .settings(settings)
        .schema(schema)
        .env(|_: &str| None)
        .build()
        .unwrap()
}

/// A member holding `MinPool` 1 and `MaxPool` 5 under `root`, a client of it, and a
/// checked configuration of `root` started through a proxy.
async fn started_through_a_proxy(root: &str) -> (EtcdMember, Client, FaultProxy, EtcdConfig) {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, &format!("{root}/MinPool"), "1").await;
    put(&mut client, &format!("{root}/MaxPool"), "5").await;
    let proxy = FaultProxy::start(etcd.client_port()).await;
    let settings = EtcdSettings::builder()
        .endpoints(proxy.endpoint())
        .root_key(root)
        .build()
        .unwrap();
    let config = checked_config(settings);
    config.start().await.unwrap();
    (etcd, client, proxy, config)
}

/// Cuts the link until `config` notices, restores it, and waits (up to 10 s) for etcd's
/// refusal to show in its health.
async fn reconnect_until_refused(config: &EtcdConfig, proxy: &FaultProxy) {
    proxy.cut();
    let deadline = Instant::now() + Duration::from_secs(10);
    while config.health().connected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!config.health().connected, "the cut is noticed");
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    while config.health().last_error_kind.as_deref() != Some("Refused") && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = config.health();
    assert_eq!(
        health.last_error_kind.as_deref(),
        Some("Refused"),
        "{health:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relists_and_rejected_revisions_are_counted_when_they_happen_and_only_then() {
    const PREFIX: &str = "/counted/";
    recorder();
    let (_etcd, mut client, proxy, config) = started_through_a_proxy("/counted").await;
    // The first read of the prefix is not a re-list.
    assert_eq!(counter(PREFIX, "etcd_config_relists_total"), 0.0);
    assert_eq!(counter(PREFIX, "etcd_config_revisions_rejected_total"), 0.0);

    // A revision that breaks the check: counted once, the last good snapshot serves.
    put(&mut client, "/counted/MinPool", "9").await;
    assert_eq!(
        counter_reaches(PREFIX, "etcd_config_revisions_rejected_total", 1.0).await,
        1.0
    );
    assert!(config.health().rejected_revision.is_some());
    assert_eq!(config.snapshot().get("min_pool").unwrap().to_string(), "1");
    let healed = put(&mut client, "/counted/MinPool", "2").await;
    wait_for_revision(&config, healed).await;
    assert_eq!(counter(PREFIX, "etcd_config_revisions_rejected_total"), 1.0);
    assert_eq!(counter(PREFIX, "etcd_config_relists_total"), 0.0);

    // Cut off while etcd compacts past the applied revision: one re-list.
    proxy.cut();
    put(&mut client, "/counted/MaxPool", "7").await;
    let compacted = put(&mut client, "/counted/Extra", "x").await;
    testkit::compact(&mut client, compacted).await;
    proxy.restore();
    let snapshot = wait_for_revision(&config, compacted).await;
    assert_eq!(
        values(&snapshot),
        etcd_state(&mut client, "/counted", snapshot.revision()).await
    );
    assert_eq!(
        counter_reaches(PREFIX, "etcd_config_relists_total", 1.0).await,
        1.0
    );
    assert_eq!(counter(PREFIX, "etcd_config_revisions_rejected_total"), 1.0);
    assert_eq!(counter(PREFIX, "etcd_config_token_refreshes_total"), 0.0);
    config.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_start_authenticates_again_once_then_waits_serving_the_last_values() {
    const PREFIX: &str = "/guarded/";
    recorder();
    let etcd = EtcdMember::start().await;
    let mut setup = etcd.client().await;
    put(&mut setup, "/guarded/MinPool", "1").await;
    put(&mut setup, "/guarded/MaxPool", "5").await;
    testkit::add_reader(&mut setup, "app", "app-password", PREFIX).await;
    testkit::enable_auth(&mut setup, "root-password").await;
    let mut root = Client::connect(
        [etcd.endpoint()],
        Some(ConnectOptions::new().with_user("root", "root-password")),
    )
    .await
    .unwrap();
    let proxy = FaultProxy::start(etcd.client_port()).await;
    let settings = EtcdSettings::builder()
        .endpoints(proxy.endpoint())
        .root_key("/guarded")
        .user("app", "app-password")
        .build()
        .unwrap();
    let config = checked_config(settings);
    config.start().await.unwrap();
    let served = config.snapshot();
    assert_eq!(counter(PREFIX, "etcd_config_token_refreshes_total"), 0.0);

    // The reader loses its permission; the next connection is refused.
    root.role_revoke_permission(
        "app-reader",
        PREFIX,
        Some(RoleRevokePermissionOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    reconnect_until_refused(&config, &proxy).await;
    assert_eq!(
        counter_reaches(PREFIX, "etcd_config_token_refreshes_total", 1.0).await,
        1.0,
        "one re-authentication before the refusal counts"
    );
    assert_eq!(config.health().token_refreshes, 1);
    // Refused after authenticating again: it waits (30 s) instead of authenticating in a
    // loop, and the last good values keep serving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counter(PREFIX, "etcd_config_token_refreshes_total"), 1.0);
    assert_eq!(values(&config.snapshot()), values(&served));
    config.stop().await;
}

#[tokio::test]
async fn a_refusal_after_start_without_credentials_is_not_met_by_authenticating_again() {
    const PREFIX: &str = "/open/";
    recorder();
    let (_etcd, mut setup, proxy, config) = started_through_a_proxy("/open").await;
    let served = config.snapshot();

    // etcd turns authentication on: a client without credentials is refused from now
    // on, and there is nothing to authenticate with.
    testkit::enable_auth(&mut setup, "root-password").await;
    reconnect_until_refused(&config, &proxy).await;
    // Health says `Refused` as the engine decides what to do about it; a
    // re-authentication would follow within microseconds (then the next try, at once).
    // A half second cannot make this fail; it gives a wrong re-authentication time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = config.health();
    assert_eq!(health.token_refreshes, 0, "{health:?}");
    assert_eq!(counter(PREFIX, "etcd_config_token_refreshes_total"), 0.0);
    assert_eq!(values(&config.snapshot()), values(&served));
    config.stop().await;
}
