//! Staged rollouts against a real etcd, with 20 announcing instances and one that does
//! not announce itself: each instance's snapshot must equal what etcd's range at the
//! snapshot's revision says it should serve, worked out here apart from the library
//! (the base, then each rollout whose labels match and whose CRC-32 bucket is below its
//! percentage).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fleet_until, put, values, wait_for_revision};
use etcd_client::{Client, GetOptions};
use etcd_dynamic_config::announce::Announce;
use etcd_dynamic_config::schema::naming::name_from_path;
use etcd_dynamic_config::{
    ConfigChange, Error, EtcdClient, EtcdConfig, EtcdSettings, Schema, Standing,
};
use testkit::EtcdMember;

const PREFIX: &str = "/roll";

fn zone(i: usize) -> &'static str {
    if i.is_multiple_of(2) { "a" } else { "b" }
}

fn instance(endpoint: &str, id: Option<&str>, zone: &str) -> EtcdConfig {
    let mut settings = EtcdSettings::builder().endpoints(endpoint).root_key(PREFIX);
    if let Some(id) = id {
        settings = settings.announce(
            Announce::new(id)
                .label("zone", zone)
                .ttl(Duration::from_secs(3)),
        );
    }
    EtcdConfig::builder()
        .settings(settings.build().expect("valid settings"))
        .schema(Schema::auto_discover())
        .env(|_: &str| None)
        .build()
        .expect("valid configuration")
}

fn client(endpoint: &str) -> EtcdClient {
    let settings = EtcdSettings::builder()
        .endpoints(endpoint)
        .root_key(PREFIX)
        .build()
        .unwrap();
    EtcdClient::new(settings, Schema::auto_discover()).unwrap()
}

/// CRC-32 (IEEE, reflected), bit by bit: the README's bucket formula, written apart
/// from the library's.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn in_target(document: &serde_json::Value, rollout: &str, id: &str, zone: &str) -> bool {
    let labels_match = document["labels"]
        .as_object()
        .is_none_or(|labels| labels.iter().all(|(k, v)| k == "zone" && v == zone));
    let percent = document["percent"].as_u64().unwrap();
    labels_match && u64::from(crc32(format!("{rollout}/{id}").as_bytes()) % 100) < percent
}

/// What an instance (`id` in `zone`, or one that does not announce itself) must serve
/// at `revision`, from etcd's range at that revision.
async fn expected(
    etcd: &mut Client,
    revision: i64,
    member: Option<(&str, &str)>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let dir = format!("{PREFIX}/");
    let response = etcd
        .get(
            dir.as_str(),
            Some(GetOptions::new().with_prefix().with_revision(revision)),
        )
        .await
        .unwrap();
    let mut by_key = BTreeMap::new();
    let mut rollouts = Vec::new();
    for kv in response.kvs() {
        let key = kv.key_str().unwrap().to_owned();
        match key.strip_prefix(&format!("{dir}_rollout/")) {
            Some(name) => {
                let document: serde_json::Value = serde_json::from_slice(kv.value()).unwrap();
                rollouts.push((name.to_owned(), document));
            }
            None => {
                by_key.insert(key, kv.value_str().unwrap().to_owned());
            }
        }
    }
    let mut served = Vec::new();
    if let Some((id, zone)) = member {
        for (name, document) in &rollouts {
            // A rollout with a key outside the prefix is served by nobody.
            let keys = document["put"].as_object().unwrap().keys();
            let outside = keys.into_iter().any(|key| !key.starts_with(&dir));
            if outside || !in_target(document, name, id, zone) {
                continue;
            }
            for (key, value) in document["put"].as_object().unwrap() {
                by_key.insert(key.clone(), value.as_str().unwrap().to_owned());
            }
            for key in document["delete"].as_array().unwrap() {
                by_key.remove(key.as_str().unwrap());
            }
            served.push(name.clone());
        }
    }
    let values = by_key
        .into_iter()
        .map(|(key, value)| (name_from_path(&key[dir.len()..]).unwrap(), value))
        .collect();
    (values, served)
}

struct Fleet {
    etcd: Client,
    /// 20 announcing instances, then one that does not.
    configs: Vec<EtcdConfig>,
    heard: Vec<Arc<Mutex<Vec<ConfigChange>>>>,
    _listeners: Vec<etcd_dynamic_config::Listener>,
}

impl Fleet {
    fn member(i: usize) -> Option<(String, &'static str)> {
        (i < 20).then(|| (format!("pod-{i:02}"), zone(i)))
    }

    /// Every instance serves exactly what etcd says at `revision`, at `revision`.
    async fn all_serve(&mut self, revision: i64) -> Vec<BTreeSet<String>> {
        let mut serving: Vec<BTreeSet<String>> = Vec::new();
        for (i, config) in self.configs.iter().enumerate() {
            let snapshot = wait_for_revision(config, revision).await;
            assert_eq!(snapshot.revision(), revision, "instance {i}");
            let member = Self::member(i);
            let member = member.as_ref().map(|(id, zone)| (id.as_str(), *zone));
            let (values_then, served) = expected(&mut self.etcd, revision, member).await;
            assert_eq!(values(&snapshot), values_then, "instance {i} at {revision}");
            let rollouts: Vec<String> = snapshot.rollouts().iter().map(|r| r.to_string()).collect();
            assert_eq!(rollouts, served, "instance {i} at {revision}");
            assert_eq!(config.health().rollouts, served, "instance {i}");
            serving.push(served.into_iter().collect());
        }
        serving
    }

    /// The ids that serve `rollout`.
    fn serving(serving: &[BTreeSet<String>], rollout: &str) -> BTreeSet<String> {
        serving
            .iter()
            .enumerate()
            .filter(|(_, names)| names.contains(rollout))
            .map(|(i, _)| Self::member(i).expect("a member").0)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_reach_the_hashed_set_widen_promote_and_abort_at_one_revision() {
    let etcd = EtcdMember::start().await;
    let mut etcd_client = etcd.client().await;
    put(&mut etcd_client, "/roll/LogLevel", "INFO").await;
    put(&mut etcd_client, "/roll/ServerPort", "8080").await;
    put(&mut etcd_client, "/roll/Legacy", "on").await;
    put(&mut etcd_client, "/roll/Feature", "off").await;

    let mut configs = Vec::new();
    let mut heard = Vec::new();
    let mut listeners = Vec::new();
    for i in 0..21 {
        let member = Fleet::member(i);
        let config = instance(
            &etcd.endpoint(),
            member.as_ref().map(|(id, _)| id.as_str()),
            zone(i),
        );
        config.start().await.expect("start");
        let changes = Arc::new(Mutex::new(Vec::new()));
        let sink = changes.clone();
        listeners.push(config.on_change(move |change| sink.lock().unwrap().push(change.clone())));
        heard.push(changes);
        configs.push(config);
    }
    let mut fleet = Fleet {
        etcd: etcd_client,
        configs,
        heard,
        _listeners: listeners,
    };
    let operator = client(&etcd.endpoint());
    fleet_until(&operator, "20 records", |records| records.len() == 20).await;

    // A 25 % rollout that puts two values and deletes one.
    let plan = operator
        .plan_rollout(
            "canary",
            25,
            BTreeMap::new(),
            &[
                ("log_level".into(), "DEBUG".into()),
                ("server_port".into(), "9090".into()),
            ],
            &["legacy".into()],
        )
        .await
        .expect("plan");
    let started = Instant::now();
    let first = operator.start_rollout(&plan).await.expect("start");
    let serving = fleet.all_serve(first).await;
    let reached_in = started.elapsed();
    let canary = Fleet::serving(&serving, "canary");
    let hashed: BTreeSet<String> = (0..20)
        .map(|i| format!("pod-{i:02}"))
        .filter(|id| crc32(format!("canary/{id}").as_bytes()) % 100 < 25)
        .collect();
    assert_eq!(canary, hashed, "exactly the hashed set");
    assert!(!canary.is_empty() && canary.len() < 20, "{canary:?}");
    println!(
        "rollout start -> all {} targeted instances serving it: {reached_in:?}",
        canary.len()
    );
    // Entering is an ordinary change, at the rollout's revision, for those in it only.
    for (i, heard) in fleet.heard.iter().enumerate() {
        let heard = heard.lock().unwrap();
        let at_first: Vec<&ConfigChange> = heard.iter().filter(|c| c.revision == first).collect();
        let in_it = Fleet::member(i).is_some_and(|(id, _)| canary.contains(&id));
        if in_it {
            let names: Vec<&str> = at_first[0].changes.iter().map(|c| &*c.name).collect();
            assert_eq!(
                names,
                ["legacy", "log_level", "server_port"],
                "instance {i}"
            );
            assert_eq!(at_first[0].changes[0].new, None, "deleted");
        } else {
            assert!(at_first.is_empty(), "instance {i}: {at_first:?}");
        }
    }

    // The records and the status say who serves it.
    fleet_until(&operator, "the canary in the records", |records| {
        records
            .iter()
            .all(|r| r.rollouts.contains(&"canary".to_owned()) == canary.contains(&r.id))
    })
    .await;
    let status = operator.rollout_status("canary").await.unwrap();
    assert_eq!(status.count(|s| *s == Standing::Serving), canary.len());
    assert_eq!(status.count(|s| *s == Standing::Outside), 20 - canary.len());

    // Another rollout may not change what the canary changes.
    let overlapping = operator
        .plan_rollout(
            "other",
            5,
            BTreeMap::new(),
            &[("log_level".into(), "WARN".into())],
            &[],
        )
        .await
        .unwrap();
    let error = operator.start_rollout(&overlapping).await.unwrap_err();
    assert!(
        matches!(&error, Error::Rollout { name, reason } if name == "other" && reason.contains("canary")),
        "{error}"
    );
    // Nor may it be started twice, or narrowed.
    assert!(matches!(
        operator.start_rollout(&plan).await,
        Err(Error::Rollout { .. })
    ));
    assert!(matches!(
        operator.widen_rollout("canary", 10).await,
        Err(Error::Rollout { .. })
    ));

    // Widening keeps every instance already in.
    let second = operator.widen_rollout("canary", 60).await.unwrap();
    let serving = fleet.all_serve(second).await;
    let widened = Fleet::serving(&serving, "canary");
    assert!(
        canary.is_subset(&widened) && widened.len() > canary.len(),
        "{widened:?}"
    );

    // A rollout by label, beside it, on another key.
    let zone_b = operator
        .plan_rollout(
            "zone-b",
            100,
            [("zone".to_owned(), "b".to_owned())].into(),
            &[("feature".into(), "on".into())],
            &[],
        )
        .await
        .unwrap();
    let third = operator.start_rollout(&zone_b).await.unwrap();
    let serving = fleet.all_serve(third).await;
    let expected_b: BTreeSet<String> = (1..20).step_by(2).map(|i| format!("pod-{i:02}")).collect();
    assert_eq!(Fleet::serving(&serving, "zone-b"), expected_b);

    // A rollout the instances cannot serve (written by hand, past the client's checks):
    // each member rejects it, says why, and serves the base.
    let bad = put(
        &mut fleet.etcd,
        "/roll/_rollout/bad",
        r#"{"percent": 100, "put": {"/roll/Feature": "x", "/other/Key": "1"}}"#,
    )
    .await;
    fleet.all_serve(bad).await;
    let records = fleet_until(&operator, "the bad rollout rejected", |records| {
        records
            .iter()
            .all(|r| r.rejected_rollouts.iter().any(|x| &*x.rollout == "bad"))
    })
    .await;
    assert!(
        records[0].rejected_rollouts[0]
            .reason
            .contains("names no value")
    );
    let status = operator.rollout_status("bad").await.unwrap();
    assert_eq!(status.count(|s| matches!(s, Standing::Rejected(_))), 20);
    assert!(
        fleet.configs[20].health().rejected_rollouts.is_empty(),
        "not a member"
    );
    let fourth = operator.abort_rollout("bad").await.unwrap();
    fleet.all_serve(fourth).await;
    assert!(fleet.configs[0].health().rejected_rollouts.is_empty());

    // Promoted: the base takes the canary's changes in one revision; nobody in it hears
    // a change, everybody else hears it.
    let fifth = operator.promote_rollout("canary").await.unwrap();
    let serving = fleet.all_serve(fifth).await;
    assert!(Fleet::serving(&serving, "canary").is_empty());
    for (i, config) in fleet.configs.iter().enumerate() {
        let snapshot = config.snapshot();
        assert_eq!(snapshot.get("log_level").unwrap().to_string(), "DEBUG");
        assert!(snapshot.get("legacy").is_none(), "instance {i}");
        let heard = fleet.heard[i].lock().unwrap();
        let at_fifth = heard.iter().any(|c| c.revision == fifth);
        let was_in = Fleet::member(i).is_some_and(|(id, _)| widened.contains(&id));
        assert_eq!(at_fifth, !was_in, "instance {i}: {heard:?}");
    }
    assert!(matches!(
        operator.rollout("canary").await,
        Err(Error::Rollout { .. })
    ));

    // Aborted: zone b goes back to the base.
    let sixth = operator.abort_rollout("zone-b").await.unwrap();
    let serving = fleet.all_serve(sixth).await;
    assert!(serving.iter().all(BTreeSet::is_empty));
    assert!(operator.rollouts().await.unwrap().is_empty());
    // Leaving is an ordinary change too, for those that were in.
    for (i, heard) in fleet.heard.iter().enumerate() {
        let heard = heard.lock().unwrap();
        let at_sixth: Vec<String> = heard
            .iter()
            .filter(|c| c.revision == sixth)
            .flat_map(|c| c.changes.iter().map(|v| format!("{v:?}")))
            .collect();
        if i < 20 && zone(i) == "b" {
            assert_eq!(at_sixth.len(), 1, "instance {i}: {at_sixth:?}");
            assert!(at_sixth[0].contains("feature"), "{at_sixth:?}");
        } else {
            assert!(at_sixth.is_empty(), "instance {i}: {at_sixth:?}");
        }
    }
    for config in &fleet.configs {
        assert_eq!(config.snapshot().get("feature").unwrap().to_string(), "off");
        config.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollouts_are_refused_before_anything_is_written() {
    let etcd = EtcdMember::start().await;
    let mut etcd_client = etcd.client().await;
    let before = put(&mut etcd_client, "/roll/ServerPort", "8080").await;
    let operator = client(&etcd.endpoint());
    let value = |name: &str, text: &str| vec![(name.to_owned(), text.to_owned())];
    type Case<'a> = (&'a str, u8, Vec<(String, String)>, Vec<String>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "a/b",
            5,
            value("log_level", "DEBUG"),
            vec![],
            "not a rollout name",
        ),
        ("ok", 101, value("log_level", "DEBUG"), vec![], "above 100"),
        ("ok", 5, vec![], vec![], "changes nothing"),
        (
            "ok",
            5,
            value("server_port", "eighty"),
            vec![],
            "server_port",
        ),
        (
            "ok",
            5,
            value("log_level", "DEBUG"),
            vec!["log_level".into()],
            "both put and deleted",
        ),
    ];
    for (name, percent, puts, deletes, says) in cases {
        let error = operator
            .plan_rollout(name, percent, BTreeMap::new(), &puts, &deletes)
            .await
            .unwrap_err();
        assert!(error.to_string().contains(says), "{name}: {error}");
    }
    for missing in ["promote", "abort", "widen"] {
        let error = match missing {
            "promote" => operator.promote_rollout("nope").await,
            "abort" => operator.abort_rollout("nope").await,
            _ => operator.widen_rollout("nope", 50).await,
        }
        .unwrap_err();
        assert_eq!(error.to_string(), "rollout nope: there is no such rollout");
    }
    let head = put(&mut etcd_client, "/elsewhere", "x").await;
    assert_eq!(head, before + 1, "nothing was written under the prefix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_instance_is_pending_then_catches_up_after_a_compaction() {
    let etcd = EtcdMember::start().await;
    let mut etcd_client = etcd.client().await;
    put(&mut etcd_client, "/roll/LogLevel", "INFO").await;
    let proxy = testkit::FaultProxy::start(etcd.client_port()).await;
    let config = instance(&proxy.endpoint(), Some("pod-x"), "a");
    config.start().await.expect("start");
    let operator = client(&etcd.endpoint());
    fleet_until(&operator, "pod-x's record", |records| records.len() == 1).await;

    proxy.stall();
    let plan = operator
        .plan_rollout(
            "all",
            100,
            BTreeMap::new(),
            &[("log_level".into(), "DEBUG".into())],
            &[],
        )
        .await
        .unwrap();
    let started = operator.start_rollout(&plan).await.unwrap();
    let status = operator.rollout_status("all").await.unwrap();
    assert_eq!(
        status.instances.len(),
        1,
        "the record outlives a short stall"
    );
    assert_eq!(status.instances[0].1, Standing::Pending);
    assert_eq!(
        config.snapshot().get("log_level").unwrap().to_string(),
        "INFO"
    );

    // While it is away, the base moves on and etcd compacts: it lists again on return.
    let head = put(&mut etcd_client, "/roll/Feature", "on").await;
    etcd_client.compact(head, None).await.unwrap();
    proxy.restore();
    let snapshot = wait_for_revision(&config, head).await;
    let (expected_values, served) = expected(&mut etcd_client, head, Some(("pod-x", "a"))).await;
    assert_eq!(values(&snapshot), expected_values);
    assert_eq!(served, ["all"]);
    assert_eq!(snapshot.rollouts(), [Arc::from("all")]);
    assert!(started < head);
    fleet_until(&operator, "pod-x serving", |records| {
        records.iter().all(|r| r.rollouts == ["all"])
    })
    .await;
    config.stop().await;
}
