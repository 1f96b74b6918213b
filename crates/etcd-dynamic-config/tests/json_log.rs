//! The ECS JSON log of a real start, a live update, a rejected value and an etcd
//! restart. Logs go to this thread's subscriber, so the test has a binary of its own:
//! no other test's threads touch the callsites meanwhile.

mod common;

use std::time::Duration;

use common::{Captured, pool_config, put, wait_for_revision};
use etcd_dynamic_config::observe::ecs::{EcsFormat, ecs_subscriber};
use serde_json::Value as Json;
use testkit::EtcdMember;

// Current-thread runtime: the engine's tasks log under this thread's subscriber.
#[tokio::test]
async fn the_json_log_of_start_update_rejection_and_restart_has_the_events_and_fields() {
    let buffer = Captured::default();
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
    let config = pool_config(&etcd.endpoint(), "/app");
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
    // A wiped etcd on the same address: noticed, logged, and its data served.
    etcd.wipe(false).await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/PoolSize", "30").await;
    let mut subscription = config.subscribe();
    tokio::time::timeout(
        Duration::from_secs(20),
        subscription.wait_for(|snapshot| snapshot.get_as::<i64>("pool_size").ok() == Some(30)),
    )
    .await
    .expect("the wiped etcd's value is served");
    config.stop().await;

    let lines = buffer.json_lines();
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
    let replaced = &buffer.events("etcd_replaced")[0];
    assert_eq!(replaced["log.level"], "warn");
    assert!(
        replaced["reason"]
            .as_str()
            .unwrap()
            .contains("RevisionWentBack"),
        "{replaced}"
    );
    assert_eq!(replaced["revision"], after);
    println!("{} JSON lines; a few of them:", lines.len());
    for line in [started, first, rejection, broken, resumed, replaced] {
        println!("{line}");
    }
}
