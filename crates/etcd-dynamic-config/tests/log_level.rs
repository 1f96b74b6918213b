//! The log level follows etcd at run time: debug events appear and disappear as
//! `LogLevel` changes, and a value that is no level is rejected. This test owns the
//! process-wide subscriber, so it lives in a test binary of its own.

mod common;

use std::time::{Duration, Instant};

use common::{Captured, put};
use etcd_dynamic_config::observe::ecs::{EcsFormat, ecs_subscriber};
use etcd_dynamic_config::{EtcdConfig, EtcdSettings};
use testkit::EtcdMember;

/// Whether a line has `event` and `probe`.
fn has(buffer: &Captured, event: &str, probe: &str) -> bool {
    buffer
        .text()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .any(|line| line["event"] == event && line["probe"] == probe)
}

/// Emits a warn probe (always shown) and a debug probe with the same number until the
/// warn probe shows; returns whether the debug probe showed with it.
fn debug_shows(buffer: &Captured, round: &mut u32) -> bool {
    *round += 1;
    let probe = format!("probe-{round}");
    tracing::debug!(event = "debug_probe", probe = %probe);
    tracing::warn!(event = "warn_probe", probe = %probe);
    assert!(
        has(buffer, "warn_probe", &probe),
        "the warn probe always shows"
    );
    has(buffer, "debug_probe", &probe)
}

/// Polls until debug events show (or stop showing), for up to ten seconds.
fn wait_debug(buffer: &Captured, round: &mut u32, shown: bool) {
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
    let buffer = Captured::default();
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
    let _follow = logging.follow(&config, "log_level");

    let mut round = 0;
    assert!(!debug_shows(&buffer, &mut round), "INFO hides debug events");

    put(&mut client, "/app/LogLevel", "DEBUG").await;
    wait_debug(&buffer, &mut round, true);
    assert!(buffer.text().contains("\"event\":\"log_level_changed\""));

    put(&mut client, "/app/LogLevel", "LOUD").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !buffer.text().contains("\"event\":\"log_level_rejected\"") {
        assert!(Instant::now() < deadline, "LOUD is rejected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(buffer.text().contains("\\\"LOUD\\\" is not a log level"));
    assert!(debug_shows(&buffer, &mut round), "the level stays DEBUG");

    put(&mut client, "/app/LogLevel", "warning").await;
    wait_debug(&buffer, &mut round, false);
    config.stop().await;
    println!("the level followed etcd over {round} probes");
}
