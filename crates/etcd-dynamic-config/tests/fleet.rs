//! The fleet view against a real etcd: instances that announce themselves keep one
//! lease-backed record each, outside the prefix, saying what they serve; the records
//! follow publishes and rejections, go at `stop`, and expire when an instance can no
//! longer reach etcd.

mod common;

use std::time::{Duration, Instant};

use common::{fleet_until, put, wait_for_revision};
use etcd_dynamic_config::announce::Announce;
use etcd_dynamic_config::{EtcdClient, EtcdConfig, EtcdSettings, HealthState, Schema};
use testkit::{EtcdCluster, EtcdMember, FaultProxy};

const TTL: Duration = Duration::from_secs(3);

fn instance(endpoint: &str, id: &str, zone: &str) -> EtcdConfig {
    let settings = EtcdSettings::builder()
        .endpoints(endpoint)
        .root_key("/fleet")
        .announce(
            Announce::new(id)
                .label("zone", zone)
                .ttl(TTL)
                .app("billing", Some("1.4.2".into())),
        )
        .build()
        .expect("valid settings");
    EtcdConfig::builder()
        .settings(settings)
        .schema(Schema::auto_discover())
        .env(|_: &str| None)
        .build()
        .expect("valid configuration")
}

fn client(endpoint: &str) -> EtcdClient {
    let settings = EtcdSettings::builder()
        .endpoints(endpoint)
        .root_key("/fleet")
        .build()
        .unwrap();
    EtcdClient::new(settings, Schema::auto_discover()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_instances_announce_what_they_serve_and_leave_no_record_behind() {
    let etcd = EtcdMember::start().await;
    let mut etcd_client = etcd.client().await;
    put(&mut etcd_client, "/fleet/ServerPort", "8080").await;
    let first = put(&mut etcd_client, "/fleet/LogLevel", "INFO").await;
    let proxy = FaultProxy::start(etcd.client_port()).await;

    // Nineteen direct instances and one behind a proxy, to be frozen.
    let fleet = client(&etcd.endpoint());
    let mut instances = Vec::new();
    for i in 0..20 {
        let endpoint = if i == 19 {
            proxy.endpoint()
        } else {
            etcd.endpoint()
        };
        let zone = if i % 2 == 0 { "a" } else { "b" };
        let config = instance(&endpoint, &format!("pod-{i:02}"), zone);
        config.start().await.expect("start");
        // Started from etcd, an instance is in the fleet when start returns.
        let listed = fleet.fleet().await.expect("fleet").instances;
        assert_eq!(
            listed.len(),
            i + 1,
            "pod-{i:02} right after start: {listed:#?}"
        );
        instances.push(config);
    }
    // Each serves etcd's state at its own revision (the records are writes too), all at
    // or after the first.
    let records = fleet_until(&fleet, "20 records from the first revision", |records| {
        records.len() == 20 && records.iter().all(|r| r.revision >= first)
    })
    .await;
    assert_eq!(records[3].id, "pod-03");
    assert_eq!(records[3].labels["zone"], "b");
    assert_eq!(records[3].app.as_deref(), Some("billing"));
    assert_eq!(records[3].pid, std::process::id());
    assert!(
        records
            .iter()
            .all(|r| r.values_hash == records[0].values_hash)
    );
    // The records are outside the prefix: no reader sees them.
    assert_eq!(instances[0].snapshot().len(), 2);
    fleet_until(&fleet, "every instance synced", |records| {
        records.iter().all(|r| r.state == HealthState::Synced)
    })
    .await;

    // A write reaches every record; a value the schema rejects is named, never shown.
    let second = put(&mut etcd_client, "/fleet/ServerPort", "eighty").await;
    for config in &instances {
        wait_for_revision(config, second).await;
    }
    let records = fleet_until(&fleet, "the rejection announced", |records| {
        records
            .iter()
            .all(|r| r.rejected == ["server_port"] && r.holds() >= second)
    })
    .await;
    let raw = serde_json::to_string(&records).unwrap();
    assert!(!raw.contains("eighty"), "never a value: {raw}");

    // stop removes the record at once (well within the TTL).
    let stopped = Instant::now();
    instances[0].stop().await;
    fleet_until(&fleet, "pod-00's record gone", |records| {
        records.iter().all(|r| r.id != "pod-00")
    })
    .await;
    assert!(stopped.elapsed() < TTL, "{:?}", stopped.elapsed());

    // An instance that cannot reach etcd keeps serving; its record expires with its lease.
    proxy.stall();
    let third = put(&mut etcd_client, "/fleet/LogLevel", "DEBUG").await;
    let records = fleet_until(&fleet, "the others at the third revision", |records| {
        records
            .iter()
            .filter(|r| r.id != "pod-19")
            .all(|r| r.holds() >= third)
    })
    .await;
    let frozen = records
        .iter()
        .find(|r| r.id == "pod-19")
        .expect("still listed");
    assert!(frozen.holds() < third, "{frozen:?}");
    let frozen_at = Instant::now();
    fleet_until(&fleet, "pod-19's record expired", |records| {
        records.iter().all(|r| r.id != "pod-19")
    })
    .await;
    assert!(
        frozen_at.elapsed() <= TTL + Duration::from_secs(2),
        "gone within its TTL: {:?}",
        frozen_at.elapsed()
    );
    // Back, it announces itself again.
    proxy.restore();
    fleet_until(&fleet, "pod-19 back at the third revision", |records| {
        records
            .iter()
            .any(|r| r.id == "pod-19" && r.holds() >= third)
    })
    .await;

    for config in &instances {
        config.stop().await;
    }
    fleet_until(&fleet, "no record left", |records| records.is_empty()).await;
}

/// A record kept by keep-alives alone: present all along, never rewritten while what it
/// says stays the same (writes elsewhere in etcd move the confirmed head, not the record),
/// and kept through a freeze of the member the instance talks to, by another member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_record_lives_on_keep_alives_and_outlives_a_frozen_member() {
    let cluster = EtcdCluster::start(3).await;
    let mut etcd_client = cluster.client().await;
    put(&mut etcd_client, "/fleet/LogLevel", "INFO").await;
    let proxy = FaultProxy::start(cluster.members()[0].client_port()).await;
    let endpoints = cluster.endpoints();
    let config = instance(
        &format!("{},{},{}", proxy.endpoint(), endpoints[1], endpoints[2]),
        "pod-idle",
        "a",
    );
    config.start().await.expect("start");
    let fleet = client(&endpoints[1]);
    let record = |records: &[etcd_dynamic_config::announce::InstanceRecord]| {
        records.iter().find(|r| r.id == "pod-idle").cloned()
    };
    let first = fleet_until(&fleet, "pod-idle synced", |records| {
        record(records).is_some_and(|r| r.state == HealthState::Synced)
    })
    .await;
    let first = record(&first).expect("listed");

    // etcd's head moves elsewhere until the instance has confirmed a new head twice and
    // had two renewal periods since; more than a TTL in all, so a lease not kept alive
    // would be gone meanwhile.
    let began = Instant::now();
    let deadline = began + Duration::from_secs(20);
    let (mut confirmed, mut moves, mut moved_at) = (config.health().confirmed_revision, 0, began);
    let mut writes = 0;
    while moves < 2 || moved_at.elapsed() < TTL * 2 / 3 || began.elapsed() < TTL * 2 {
        assert!(
            Instant::now() < deadline,
            "the confirmed head moved {moves} time(s) in 20 s"
        );
        put(&mut etcd_client, "/elsewhere/tick", &writes.to_string()).await;
        writes += 1;
        let now = record(&fleet.fleet().await.expect("fleet").instances);
        let now = now.expect("the record is there all along");
        assert_eq!(now.updated_ms, first.updated_ms, "rewritten: {now:?}");
        let head = config.health().confirmed_revision;
        if head != confirmed {
            (confirmed, moves, moved_at) = (head, moves + 1, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The member behind the proxy stops answering; the record is renewed through
    // another one before its lease runs out.
    proxy.stall();
    let until = Instant::now() + TTL * 3;
    while Instant::now() < until {
        let now = fleet.fleet().await.expect("fleet").instances;
        assert!(record(&now).is_some(), "gone while a member was frozen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.restore();
    config.stop().await;
}

#[test]
fn instance_settings_come_from_the_environment() {
    let env = |name: &str| {
        match name {
            "EtcdSettings__Instance" => Some("pod-1"),
            "EtcdSettings__InstanceLabels" => Some("zone=a,tier=web"),
            "EtcdSettings__InstanceTtl" => Some("10s"),
            _ => None,
        }
        .map(str::to_owned)
    };
    let settings = EtcdSettings::from_lookup(env).unwrap();
    let announce = settings.announce().expect("announces");
    assert_eq!(announce.id(), "pod-1");
    assert_eq!(announce.labels()["tier"], "web");
    let bad = |name: &str| (name == "EtcdSettings__Instance").then(|| "has space".to_owned());
    let error = EtcdSettings::from_lookup(bad).unwrap_err();
    assert!(
        error.to_string().contains("EtcdSettings__Instance"),
        "{error}"
    );
}
