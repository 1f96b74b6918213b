//! Observability against real etcd: the ECS JSON log of a start, a live update, a
//! rejected value and an etcd restart; and the Prometheus endpoint of the example.

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/prometheus.rs"]
mod prometheus;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{put, wait_for_revision};
use etcd_dynamic_config::observe::ecs::{EcsFormat, ecs_subscriber};
use etcd_dynamic_config::schema::{Kind, Name, Schema};
use etcd_dynamic_config::{EtcdConfig, EtcdSettings};
use serde_json::Value as Json;
use testkit::EtcdMember;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn lines(&self) -> Vec<Json> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    fn events(&self, name: &str) -> Vec<Json> {
        self.lines()
            .into_iter()
            .filter(|line| line["event"] == name)
            .collect()
    }
}

fn schema() -> Schema {
    Schema::builder()
        .discover(true)
        .name(Name::new("pool_size").kind(Kind::Integer))
        .build()
        .unwrap()
}

fn config(endpoint: &str, prefix: &str) -> EtcdConfig {
    EtcdConfig::builder()
        .settings(
            EtcdSettings::builder()
                .endpoints(endpoint)
                .root_key(prefix)
                .build()
                .unwrap(),
        )
        .schema(schema())
        .env(|_: &str| None)
        .build()
        .unwrap()
}

// Current-thread runtime: the engine's tasks log under this thread's subscriber.
#[tokio::test]
async fn the_json_log_of_start_update_rejection_and_restart_has_the_events_and_fields() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let format = EcsFormat::from_lookup(|name| match name {
        "APPLICATION_NAME" => Some("billing".into()),
        "APPLICATION_VERSION" => Some("2.0.1".into()),
        "ENVIRONMENT" => Some("test".into()),
        _ => None,
    });
    let (subscriber, _control) = ecs_subscriber(format, "info", move || writer.clone()).unwrap();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/PoolSize", "10").await;
    let config = config(&etcd.endpoint(), "/app");
    config.start().await.unwrap();
    let updated = put(&mut client, "/app/PoolSize", "20").await;
    wait_for_revision(&config, updated).await;
    let rejected = put(&mut client, "/app/PoolSize", "lots").await;
    wait_for_revision(&config, rejected).await;
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.restart().await;
    let mut client = etcd.client().await;
    let after = put(&mut client, "/app/Other", "x").await;
    wait_for_revision(&config, after).await;
    config.stop().await;

    let lines = buffer.lines();
    for line in &lines {
        assert!(line["@timestamp"].is_string(), "{line}");
        assert!(line["log.level"].is_string(), "{line}");
        assert!(line["message"].is_string(), "{line}");
        assert_eq!(line["service.name"], "billing");
        assert_eq!(line["service.version"], "2.0.1");
        assert_eq!(line["environment"], "test");
    }
    let ours: Vec<&Json> = lines
        .iter()
        .filter(|line| {
            line["log.logger"]
                .as_str()
                .unwrap_or("")
                .starts_with("etcd_dynamic_config")
        })
        .collect();
    assert!(
        ours.iter().all(|line| line["prefix"] == "/app/"),
        "every event of the library carries the prefix"
    );

    let started = &buffer.events("started")[0];
    assert_eq!(started["log.level"], "info");
    assert_eq!(started["source"], "Etcd");
    assert_eq!(started["loaded"], 1);

    let applied = buffer.events("update_applied");
    let first = applied
        .iter()
        .find(|line| line["revision"] == updated)
        .expect("the update");
    assert_eq!(first["names"], "pool_size");

    let rejection = &buffer.events("update_rejected")[0];
    assert_eq!(rejection["log.level"], "warn");
    assert_eq!(rejection["name"], "pool_size");
    assert_eq!(
        rejection["source"],
        format!("etcd key /app/PoolSize @ rev {rejected}")
    );
    assert!(
        rejection["reason"]
            .as_str()
            .unwrap()
            .contains("expected an integer")
    );
    assert!(!rejection.to_string().contains("lots"), "never the value");

    let broken = &buffer.events("watch_broken")[0];
    assert_eq!(broken["log.level"], "warn");
    assert_eq!(broken["error.type"], "Unavailable");
    assert!(
        broken["error.message"]
            .as_str()
            .unwrap()
            .contains("etcd unavailable")
    );
    assert_eq!(broken["resume_from"], rejected + 1);

    let resumed = &buffer.events("watch_resumed")[0];
    assert_eq!(resumed["log.level"], "info");
    assert_eq!(resumed["from_revision"], rejected + 1);
    assert!(resumed["outage_ms"].as_u64().unwrap() > 0);
    assert!(
        buffer.events("etcd_retry").is_empty(),
        "retries are at debug"
    );
    println!("{} JSON lines; a few of them:", lines.len());
    for line in [started, first, rejection, broken, resumed] {
        println!("{line}");
    }
}

async fn get(address: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
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
    let config = Arc::new(config(&etcd.endpoint(), "/metered"));
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
