//! The log level follows etcd at run time: debug events appear and disappear as
//! `LogLevel` changes, and a value that is no level is rejected. This test owns the
//! process-wide subscriber, so it lives in a test binary of its own.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::put;
use etcd_dynamic_config::observe::ecs::{EcsFormat, ecs_subscriber};
use etcd_dynamic_config::{EtcdConfig, EtcdSettings};
use testkit::EtcdMember;

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
    fn contains(&self, needle: &str) -> bool {
        String::from_utf8_lossy(&self.0.lock().unwrap()).contains(needle)
    }

    /// Whether a line has `event` and `probe`.
    fn has(&self, event: &str, probe: &str) -> bool {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .any(|line| line["event"] == event && line["probe"] == probe)
    }
}

/// Emits a warn probe (always shown) and a debug probe with the same number until the
/// warn probe shows; returns whether the debug probe showed with it.
fn debug_shows(buffer: &Buffer, round: &mut u32) -> bool {
    *round += 1;
    let probe = format!("probe-{round}");
    tracing::debug!(event = "debug_probe", probe = %probe);
    tracing::warn!(event = "warn_probe", probe = %probe);
    assert!(
        buffer.has("warn_probe", &probe),
        "the warn probe always shows"
    );
    buffer.has("debug_probe", &probe)
}

/// Polls until debug events show (or stop showing), for up to ten seconds.
fn wait_debug(buffer: &Buffer, round: &mut u32, shown: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while debug_shows(buffer, round) != shown {
        assert!(
            Instant::now() < deadline,
            "debug events never became shown={shown}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_follows_etcd_and_rejects_what_is_no_level() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let (subscriber, logging) =
        ecs_subscriber(EcsFormat::from_lookup(|_| None), "info", move || {
            writer.clone()
        })
        .unwrap();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/LogLevel", "INFO").await;
    let config = EtcdConfig::builder()
        .settings(
            EtcdSettings::builder()
                .endpoints(etcd.endpoint())
                .root_key("/app")
                .build()
                .unwrap(),
        )
        .env(|_: &str| None)
        .build()
        .unwrap();
    config.start().await.unwrap();
    logging.follow(&config, "log_level");

    let mut round = 0;
    assert!(!debug_shows(&buffer, &mut round), "INFO hides debug events");

    put(&mut client, "/app/LogLevel", "DEBUG").await;
    wait_debug(&buffer, &mut round, true);
    assert!(buffer.contains("\"event\":\"log_level_changed\""));

    put(&mut client, "/app/LogLevel", "LOUD").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !buffer.contains("\"event\":\"log_level_rejected\"") {
        assert!(Instant::now() < deadline, "LOUD is rejected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(buffer.contains("\\\"LOUD\\\" is not a log level"));
    assert!(debug_shows(&buffer, &mut round), "the level stays DEBUG");

    put(&mut client, "/app/LogLevel", "warning").await;
    wait_debug(&buffer, &mut round, false);
    config.stop().await;
    println!("the level followed etcd over {round} probes");
}
