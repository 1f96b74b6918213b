//! The engine against real etcd members: load, live updates, transactions, outages,
//! compaction and scale.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{config, etcd_state, put, values, wait_for_revision};
use etcd_client::{Txn, TxnOp};
use etcd_dynamic_config::{ConfigChange, Error, Value, ValueChange, ValueRef};
use testkit::{EtcdMember, FaultProxy};

fn text_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// Records every change a configuration reports, while the listener lives.
fn record_changes(
    config: &etcd_dynamic_config::EtcdConfig,
) -> (Arc<Mutex<Vec<ConfigChange>>>, etcd_dynamic_config::Listener) {
    let changes = Arc::new(Mutex::new(Vec::new()));
    let sink = changes.clone();
    let listener = config.on_change(move |change| sink.lock().unwrap().push(change.clone()));
    (changes, listener)
}

#[tokio::test]
async fn initial_load_reads_the_prefix_at_one_revision() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/apps/myapp/LogLevel", "INFO").await;
    put(&mut client, "/apps/myapp/Database/Host", "db.local").await;
    put(&mut client, "/apps/myapp/Database/Port", "5432").await;
    put(&mut client, "/apps/myapp/AIHttpTimeout", "30").await;
    put(&mut client, "/apps/myapp2/NotMine", "x").await;
    put(&mut client, "/apps/myappendix", "x").await;
    let revision = put(&mut client, "/apps/other/Key", "x").await;

    let config = config(&[etcd.endpoint()], "/apps/myapp");
    let report = config.start().await.expect("start");

    assert_eq!(
        report.revision, revision,
        "loaded at the revision of the read"
    );
    assert_eq!(report.loaded, 4);
    assert!(report.rejected.is_empty() && report.collisions.is_empty());
    let snapshot = config.snapshot();
    assert_eq!(snapshot.revision(), revision);
    assert_eq!(
        values(&snapshot),
        text_map(&[
            ("ai_http_timeout", "30.0"),
            ("database.host", "db.local"),
            ("database.port", "5432"),
            ("log_level", "INFO"),
        ])
    );
    assert_eq!(snapshot.get_as::<u16>("database.port").unwrap(), 5432);
    assert_eq!(config.get_all_configs(), snapshot.to_map());
    config.stop().await;
}

#[tokio::test]
async fn live_puts_deletes_and_new_keys_arrive_with_changes_in_order() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/LogLevel", "INFO").await;
    put(&mut client, "/app/Gone", "soon").await;
    let config = config(&[etcd.endpoint()], "/app");
    config.start().await.expect("start");
    let (changes, _listener) = record_changes(&config);

    let r1 = put(&mut client, "/app/LogLevel", "DEBUG").await;
    let r2 = put(&mut client, "/app/Created/AfterLaunch", "new").await;
    let r3 = client
        .delete("/app/Gone", None)
        .await
        .expect("delete")
        .header()
        .unwrap()
        .revision();

    let snapshot = wait_for_revision(&config, r3).await;
    assert_eq!(
        values(&snapshot),
        text_map(&[("created.after_launch", "new"), ("log_level", "DEBUG")])
    );
    // The watch's own answers move etcd's head in `health()`, not only the first read.
    let head = config.health().head_revision;
    assert!(head.is_some_and(|head| head >= r3), "{head:?} < {r3}");
    let entry = snapshot.entry("log_level").unwrap();
    assert_eq!(
        entry.source().to_string(),
        format!("etcd key /app/LogLevel @ rev {r1}")
    );

    // Callbacks run on their own thread: give it a moment to drain.
    let deadline = Instant::now() + Duration::from_secs(10);
    while changes.lock().unwrap().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let change = |name: &str, old: Option<&str>, new: Option<&str>| ValueChange {
        name: Arc::from(name),
        old: old.map(Value::from),
        new: new.map(Value::from),
        secret: false,
    };
    assert_eq!(
        *changes.lock().unwrap(),
        [
            ConfigChange {
                revision: r1,
                changes: vec![change("log_level", Some("INFO"), Some("DEBUG"))]
            },
            ConfigChange {
                revision: r2,
                changes: vec![change("created.after_launch", None, Some("new"))]
            },
            ConfigChange {
                revision: r3,
                changes: vec![change("gone", Some("soon"), None)]
            },
        ]
    );
    config.stop().await;
}

#[tokio::test]
async fn a_panicking_or_slow_callback_never_stalls_the_engine_or_other_listeners() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    let config = config(&[etcd.endpoint()], "/app");
    config.start().await.expect("start");
    let _broken = config.on_change(|_| panic!("a broken callback"));
    let slow_seen = Arc::new(Mutex::new(Vec::new()));
    let sink = slow_seen.clone();
    let _slow = config.on_change(move |change| {
        std::thread::sleep(Duration::from_millis(200));
        sink.lock().unwrap().push(change.clone());
    });
    let (fast_seen, _fast) = record_changes(&config);

    let mut last = 0;
    for i in 0..20 {
        last = put(&mut client, "/app/Counter", &i.to_string()).await;
    }
    // The snapshot is current long before the slow callback has seen every change.
    let snapshot = wait_for_revision(&config, last).await;
    assert_eq!(snapshot.get("counter").unwrap().as_str(), Some("19"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while fast_seen.lock().unwrap().len() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fast_seen.lock().unwrap().len(),
        20,
        "the fast listener has every change"
    );
    assert!(
        slow_seen.lock().unwrap().len() < 20,
        "the slow listener is still behind, and delays nobody else"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while slow_seen.lock().unwrap().len() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for seen in [&slow_seen, &fast_seen] {
        let seen = seen.lock().unwrap();
        let values: Vec<String> = seen
            .iter()
            .map(|change| change.changes[0].new.as_ref().unwrap().to_string())
            .collect();
        let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert_eq!(
            values, expected,
            "every change, in order, to every listener"
        );
    }
    config.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_observed_whole() {
    const KEYS: usize = 10;
    const WRITERS: usize = 4;
    const TXNS_PER_WRITER: usize = 500;

    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    let write_all = |value: String| {
        Txn::new().and_then(
            (0..KEYS)
                .map(|k| TxnOp::put(format!("/app/Txn/K{k}"), value.clone(), None))
                .collect::<Vec<_>>(),
        )
    };
    client.txn(write_all("seed".into())).await.expect("seed");
    let config = config(&[etcd.endpoint()], "/app");
    config.start().await.expect("start");

    // Readers check on every snapshot they load that all ten keys agree.
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let config = config.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let (mut checked, mut torn) = (0u64, 0u64);
                let mut revisions = BTreeSet::new();
                while !done.load(Ordering::Relaxed) {
                    let snapshot = config.snapshot();
                    let first = snapshot.get("txn.k0").expect("txn.k0");
                    if (1..KEYS).any(|k| snapshot.get(&format!("txn.k{k}")) != Some(first)) {
                        torn += 1;
                    }
                    revisions.insert(snapshot.revision());
                    checked += 1;
                }
                (checked, torn, revisions.len())
            })
        })
        .collect();

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut last = 0;
                for i in 0..TXNS_PER_WRITER {
                    let response = client
                        .txn(write_all(format!("w{w}-{i}")))
                        .await
                        .expect("txn");
                    last = response.header().unwrap().revision();
                }
                last
            })
        })
        .collect();
    let mut last = 0;
    for writer in writers {
        last = last.max(writer.await.expect("writer"));
    }
    let snapshot = wait_for_revision(&config, last).await;
    done.store(true, Ordering::Relaxed);
    let (mut checked, mut torn, mut distinct) = (0, 0, 0);
    for reader in readers {
        let (c, t, d) = reader.join().expect("reader");
        checked += c;
        torn += t;
        distinct += d;
    }
    println!(
        "{} transactions, {checked} snapshot checks over {distinct} distinct revisions, {torn} torn",
        WRITERS * TXNS_PER_WRITER
    );
    assert_eq!(torn, 0, "a reader saw part of a transaction");
    assert!(distinct > 10, "the readers watched the updates happen");
    assert_eq!(
        values(&snapshot),
        etcd_state(&mut client, "/app", snapshot.revision()).await
    );
    config.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_kill_and_restart_without_losing_an_update() {
    const WRITES: usize = 600;
    let mut etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/Counter0", "start").await;
    let config = config(&[etcd.endpoint()], "/app");
    config.start().await.expect("start");
    let (changes, _listener) = record_changes(&config);

    // A writer that retries through the outages and records each acknowledged revision.
    let writer = {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..WRITES {
                let deadline = Instant::now() + Duration::from_secs(60);
                for attempt in 0.. {
                    // A timed-out attempt may still have been applied: every attempt writes
                    // a value of its own, so every applied write is a change.
                    let attempt = tokio::time::timeout(
                        Duration::from_secs(2),
                        client.put(
                            format!("/app/Counter{}", i % 25),
                            format!("{i}.{attempt}"),
                            None,
                        ),
                    )
                    .await;
                    if let Ok(Ok(response)) = attempt {
                        acknowledged.push(response.header().unwrap().revision());
                        break;
                    }
                    assert!(Instant::now() < deadline, "etcd never came back");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            acknowledged
        })
    };

    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        etcd.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        etcd.restart().await;
    }
    let acknowledged = writer.await.expect("writer");
    let last = *acknowledged.last().unwrap();
    let snapshot = wait_for_revision(&config, last).await;
    assert_eq!(
        values(&snapshot),
        etcd_state(&mut client, "/app", snapshot.revision()).await,
        "the snapshot equals etcd's state at the same revision"
    );

    // Every acknowledged write reached the listeners, in order.
    let deadline = Instant::now() + Duration::from_secs(10);
    while changes.lock().unwrap().last().map(|c| c.revision) < Some(last)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen: Vec<i64> = changes.lock().unwrap().iter().map(|c| c.revision).collect();
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "in order");
    let seen: BTreeSet<i64> = seen.into_iter().collect();
    let lost: Vec<_> = acknowledged.iter().filter(|r| !seen.contains(r)).collect();
    println!(
        "{} writes across 3 kill/restart cycles, {} lost",
        acknowledged.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "updates lost: {lost:?}");
    config.stop().await;
}

#[tokio::test]
async fn compaction_while_cut_off_relists_and_drops_deleted_keys() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/Keep", "1").await;
    put(&mut client, "/app/Change", "old").await;
    put(&mut client, "/app/Delete/Me", "bye").await;
    let proxy = FaultProxy::start(etcd.client_port()).await;
    let config = config(&[proxy.endpoint()], "/app");
    config.start().await.expect("start");
    let (changes, _listener) = record_changes(&config);
    let before = config.snapshot().revision();

    proxy.cut();
    client.delete("/app/Delete/Me", None).await.expect("delete");
    put(&mut client, "/app/Change", "new").await;
    for i in 0..5 {
        put(&mut client, "/app/Churn", &i.to_string()).await;
    }
    client.delete("/app/Churn", None).await.expect("delete");
    let revision = put(&mut client, "/app/Added", "yes").await;
    testkit::compact(&mut client, revision).await;
    proxy.restore();

    let snapshot = wait_for_revision(&config, revision).await;
    assert_eq!(
        values(&snapshot),
        text_map(&[("added", "yes"), ("change", "new"), ("keep", "1")])
    );
    assert_eq!(
        values(&snapshot),
        etcd_state(&mut client, "/app", snapshot.revision()).await
    );
    assert!(snapshot.revision() > before);

    // Listeners get the difference as one change.
    let deadline = Instant::now() + Duration::from_secs(10);
    while changes.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = changes.lock().unwrap()[0].clone();
    let names: Vec<_> = first.changes.iter().map(|c| &*c.name).collect();
    assert_eq!(names, ["added", "change", "delete.me"]);
    assert_eq!(first.changes[2].new, None);
    config.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_watches_and_updates_100_000_keys() {
    const KEYS: usize = 100_000;
    const OPS_PER_TXN: usize = 128; // etcd's default --max-txn-ops
    let etcd = EtcdMember::start().await;
    let client = etcd.client().await;
    let batches: Vec<_> = (0..KEYS)
        .collect::<Vec<_>>()
        .chunks(OPS_PER_TXN)
        .map(<[usize]>::to_vec)
        .collect();
    let mut tasks = Vec::new();
    for lane in 0..8 {
        let mut client = client.clone();
        let batches: Vec<_> = batches.iter().skip(lane).step_by(8).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for batch in batches {
                let ops: Vec<_> = batch
                    .iter()
                    .map(|i| {
                        TxnOp::put(
                            format!("/big/Service{:03}/Key{i:06}", i % 500),
                            format!("value-{i}"),
                            None,
                        )
                    })
                    .collect();
                client
                    .txn(Txn::new().and_then(ops))
                    .await
                    .expect("seed txn");
            }
        }));
    }
    for task in tasks {
        task.await.expect("seeding");
    }

    let config = config(&[etcd.endpoint()], "/big");
    let started = Instant::now();
    let report = config.start().await.expect("start");
    println!("loaded {} keys in {:?}", report.loaded, started.elapsed());
    assert_eq!(report.loaded, KEYS);
    let snapshot = config.snapshot();
    assert_eq!(
        snapshot
            .get("service042.key099542")
            .and_then(ValueRef::as_str),
        Some("value-99542")
    );

    let mut client = client.clone();
    let revision = put(&mut client, "/big/Service001/Key000001", "updated").await;
    let snapshot = wait_for_revision(&config, revision).await;
    assert_eq!(snapshot.len(), KEYS);
    assert_eq!(
        snapshot
            .get("service001.key000001")
            .and_then(ValueRef::as_str),
        Some("updated")
    );
    config.stop().await;
}

#[tokio::test]
async fn start_against_a_dead_endpoint_with_fail_fast_fails_within_its_deadline() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let settings = etcd_dynamic_config::EtcdSettings::builder()
        .endpoints(format!("http://127.0.0.1:{port}"))
        .root_key("/app")
        .start_timeout(Duration::from_secs(2))
        .fail_fast(true)
        .build()
        .unwrap();
    let config = etcd_dynamic_config::EtcdConfig::builder()
        .settings(settings)
        .build()
        .unwrap();
    let started = Instant::now();
    let error = config.start().await.expect_err("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    assert!(error.is_retryable(), "{error}");
    assert!(matches!(error, Error::StartTimeout { .. }), "{error}");
    let cause = std::error::Error::source(&error)
        .expect("the last failure")
        .to_string();
    assert!(cause.contains(&format!("127.0.0.1:{port}")), "{cause}");
}

#[tokio::test]
async fn stop_keeps_the_last_snapshot_and_start_again_catches_up() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/Mode", "a").await;
    let config = config(&[etcd.endpoint()], "/app");
    let heard = Arc::new(Mutex::new(Vec::new()));
    let _listener = config.on_change({
        let heard = heard.clone();
        move |change| heard.lock().unwrap().push(change.clone())
    });
    config.start().await.expect("start");
    assert!(matches!(config.start().await, Err(Error::AlreadyStarted)));
    config.stop().await;

    let written = put(&mut client, "/app/Mode", "b").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(config.snapshot().get("mode").unwrap().as_str(), Some("a"));
    assert!(
        heard.lock().unwrap().is_empty(),
        "nothing heard while stopped"
    );

    let report = config.start().await.expect("start again");
    assert_eq!(config.snapshot().get("mode").unwrap().as_str(), Some("b"));
    assert_eq!(report.loaded, 1);
    // What changed while stopped is told as one change, old to new, at the new revision.
    let deadline = Instant::now() + Duration::from_secs(10);
    while heard.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the listener heard nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(heard[0].revision >= written);
    let change = &heard[0].changes[0];
    assert_eq!(&*change.name, "mode");
    assert_eq!(change.old.as_ref().and_then(Value::as_str), Some("a"));
    assert_eq!(change.new.as_ref().and_then(Value::as_str), Some("b"));
    config.stop().await;
}

#[test]
fn the_blocking_facade_needs_no_runtime() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let etcd = runtime.block_on(EtcdMember::start());
    let mut client = runtime.block_on(etcd.client());
    runtime.block_on(put(&mut client, "/app/LogLevel", "INFO"));

    let config =
        etcd_dynamic_config::blocking::EtcdConfig::new(config(&[etcd.endpoint()], "/app")).unwrap();
    let report = config.start().unwrap();
    assert_eq!(report.loaded, 1);
    assert_eq!(
        config
            .get_all_configs()
            .get("log_level")
            .and_then(Value::as_str),
        Some("INFO")
    );
    let mut subscription = config.subscribe();
    subscription.latest();
    runtime.block_on(put(&mut client, "/app/LogLevel", "DEBUG"));
    let snapshot = subscription
        .changed_timeout(Duration::from_secs(20))
        .expect("a new snapshot");
    assert_eq!(snapshot.get("log_level").unwrap().as_str(), Some("DEBUG"));
    assert!(config.health().is_synced());
    assert!(config.rejections().is_empty());

    #[derive(serde::Deserialize)]
    struct App {
        log_level: String,
    }
    let app = config.bind::<App>().unwrap();
    assert_eq!(app.load().log_level, "DEBUG");
    config.stop();
}

#[tokio::test]
async fn loads_from_a_three_member_cluster_and_follows_writes_to_any_member() {
    let cluster = testkit::EtcdCluster::start(3).await;
    let mut first = cluster.members()[0].client().await;
    put(&mut first, "/app/LogLevel", "INFO").await;
    let config = config(&cluster.endpoints(), "/app");
    config.start().await.expect("start");
    assert_eq!(
        config.snapshot().get("log_level").unwrap().as_str(),
        Some("INFO")
    );

    let mut last = 0;
    for (i, member) in cluster.members().iter().enumerate() {
        let mut client = member.client().await;
        last = put(&mut client, &format!("/app/Member{i}"), "wrote").await;
    }
    let snapshot = wait_for_revision(&config, last).await;
    assert_eq!(
        values(&snapshot),
        etcd_state(&mut first, "/app", snapshot.revision()).await
    );
    assert_eq!(snapshot.len(), 4);
    config.stop().await;
}
