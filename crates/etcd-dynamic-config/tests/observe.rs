//! The Prometheus endpoint of the example, scraped after real updates.

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/prometheus.rs"]
mod prometheus;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pool_config, put, wait_for_revision};
use serde_json::Value as Json;
use testkit::EtcdMember;
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

/// The value of `metric` with the `prefix="/metered/"` label in a Prometheus scrape
/// (a prefix of its own: the recorder is shared by the whole test process).
fn sample(scrape: &str, metric: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|line| line.starts_with(&format!("{metric}{{prefix=\"/metered/\"}}")))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_example_exports_counters_that_move() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
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
