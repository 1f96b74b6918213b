//! The engine serves what etcd holds, and health says so only when it is true: progress
//! answers ahead of queued events, wiped and restored etcds, panicking user code,
//! listeners across stop/start, freeing on drop, stop during start, quiet prefixes on a
//! busy etcd, and the history and audit trail `EtcdClient` reads and writes. Every check
//! compares with etcd's own answer.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{etcd_state, put, values, wait_for_revision};
use etcd_client::{Client, GetOptions};
use etcd_dynamic_config::audit::{Audit, AuditChange, MASK};
use etcd_dynamic_config::schema::{Check, Schema};
use etcd_dynamic_config::{
    ConfigChange, Error, EtcdClient, EtcdConfig, EtcdSettings, HealthState, Listener, Snapshot,
    Value, ValueRef,
};
use testkit::{EtcdMember, FaultProxy};

fn settings(endpoint: &str, prefix: &str) -> EtcdSettings {
    EtcdSettings::builder()
        .endpoints(endpoint)
        .root_key(prefix)
        .build()
        .expect("valid settings")
}

fn config(endpoint: &str, prefix: &str) -> EtcdConfig {
    config_with(endpoint, prefix, Schema::auto_discover())
}

fn config_with(endpoint: &str, prefix: &str, schema: Schema) -> EtcdConfig {
    EtcdConfig::builder()
        .settings(settings(endpoint, prefix))
        .schema(schema)
        .env(|_: &str| None)
        .build()
        .expect("valid configuration")
}

/// A listener's view: the snapshot it started from plus every change it heard, with each
/// change's `old` checked against what it saw before.
struct History {
    view: Arc<Mutex<BTreeMap<String, String>>>,
    violations: Arc<Mutex<Vec<String>>>,
    changes: Arc<AtomicUsize>,
    _listener: Listener,
}

impl History {
    fn follow(config: &EtcdConfig) -> Self {
        let view = Arc::new(Mutex::new(values(&config.snapshot())));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let changes = Arc::new(AtomicUsize::new(0));
        let (sink, bad, count) = (view.clone(), violations.clone(), changes.clone());
        let listener = config.on_change(move |change: &ConfigChange| {
            count.fetch_add(1, Ordering::SeqCst);
            let mut view = sink.lock().unwrap();
            for item in &change.changes {
                let name = item.name.to_string();
                let old = item.old.as_ref().map(Value::to_string);
                if view.get(&name) != old.as_ref() {
                    bad.lock().unwrap().push(format!(
                        "{name} at {}: old {old:?}, but the listener last saw {:?}",
                        change.revision,
                        view.get(&name)
                    ));
                }
                match &item.new {
                    Some(new) => view.insert(name, new.to_string()),
                    None => view.remove(&name),
                };
            }
        });
        Self {
            view,
            violations,
            changes,
            _listener: listener,
        }
    }

    /// Waits until the listener's view equals `expected`; panics with the difference.
    async fn reaches(&self, expected: &BTreeMap<String, String>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while *self.view.lock().unwrap() != *expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(*self.view.lock().unwrap(), *expected, "the listener's view");
        let violations = self.violations.lock().unwrap();
        assert!(
            violations.is_empty(),
            "inconsistent history: {violations:?}"
        );
    }
}

/// Every snapshot the configuration publishes (a subscriber may skip some under load).
struct Published {
    snapshots: Arc<Mutex<Vec<Arc<Snapshot>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Published {
    fn record(config: &EtcdConfig) -> Self {
        let snapshots = Arc::new(Mutex::new(Vec::new()));
        let sink = snapshots.clone();
        let mut subscription = config.subscribe();
        let task = tokio::spawn(async move {
            while let Some(snapshot) = subscription.changed().await {
                sink.lock().unwrap().push(snapshot);
            }
        });
        Self { snapshots, task }
    }

    /// Compares every recorded snapshot with etcd's prefix at its revision; returns how
    /// many were checked.
    async fn check(self, client: &mut Client, prefix: &str) -> usize {
        self.task.abort();
        let snapshots = self.snapshots.lock().unwrap().clone();
        for snapshot in &snapshots {
            let etcd = etcd_state(client, prefix, snapshot.revision()).await;
            let served = values(snapshot);
            let differ: Vec<_> = served
                .iter()
                .filter(|(name, value)| etcd.get(*name) != Some(*value))
                .chain(etcd.iter().filter(|(name, _)| !served.contains_key(*name)))
                .map(|(name, _)| (name, served.get(name), etcd.get(name)))
                .collect();
            assert!(
                differ.is_empty(),
                "the snapshot published at revision {} is not etcd's prefix at that revision \
                 (name, served, etcd): {differ:?}",
                snapshot.revision()
            );
        }
        snapshots.len()
    }
}

/// Waits until the snapshot equals etcd's prefix at etcd's head, and returns it.
async fn converges(config: &EtcdConfig, client: &mut Client, prefix: &str) -> Arc<Snapshot> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let head = testkit::current_revision(client).await;
        let snapshot = config.snapshot();
        let expected = etcd_state(client, prefix, head).await;
        if values(&snapshot) == expected {
            return snapshot;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: served {:?} at {}, etcd holds {expected:?} at {head}; health {:?}",
            values(&snapshot),
            snapshot.revision(),
            config.health()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until health says `synced`.
async fn synced(config: &EtcdConfig) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !config.health().is_synced() {
        assert!(
            Instant::now() < deadline,
            "not synced: {:?}",
            config.health()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_through_a_slow_stalling_link_loses_nothing_and_health_never_lies() {
    let etcd = EtcdMember::start().await;
    let client = etcd.client().await;
    let proxy = FaultProxy::start(etcd.client_port()).await;
    let config = config(&proxy.endpoint(), "/flood");
    config.start().await.expect("start");
    let history = History::follow(&config);
    let published = Published::record(&config);

    // 16 writers, 6,000 puts over 300 keys; each acknowledgement is kept with its time.
    let acknowledged = Arc::new(Mutex::new(Vec::<(Instant, i64)>::new()));
    let mut writers = Vec::new();
    for writer in 0..16 {
        let mut client = client.clone();
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..375 {
                let key = format!("/flood/Key{}", (writer * 375 + i) % 300);
                let revision = put(&mut client, &key, &format!("{writer}.{i}")).await;
                acknowledged
                    .lock()
                    .unwrap()
                    .push((Instant::now(), revision));
            }
        }));
    }
    // Meanwhile the link is slow, and stalls twice for 3 s: the engine asks for progress
    // while etcd still holds events for it (etcd issue 15220 on 3.4.23 and 3.5.1).
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (config, samples) = (config.clone(), samples.clone());
        tokio::spawn(async move {
            for _ in 0..2000 {
                let health = config.health();
                samples
                    .lock()
                    .unwrap()
                    .push((Instant::now(), health.state, health.revision));
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    // And it is cut twice: the resumed watch's creation answer carries etcd's head ahead
    // of the events since the cut, every time.
    for _ in 0..2 {
        proxy.slow(Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        proxy.stall();
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    proxy.slow(Duration::from_millis(20));
    for writer in writers {
        writer.await.expect("writer");
    }
    proxy.restore();
    let mut client = client;
    let last = acknowledged.lock().unwrap().iter().map(|(_, r)| *r).max();
    let snapshot = wait_for_revision(&config, last.unwrap()).await;
    assert_eq!(
        values(&snapshot),
        etcd_state(&mut client, "/flood", snapshot.revision()).await,
        "the final snapshot is etcd's prefix at its revision"
    );
    history.reaches(&values(&snapshot)).await;
    sampler.abort();
    let checked = published.check(&mut client, "/flood").await;
    assert!(checked > 10, "only {checked} snapshots were seen");
    println!("TRUTH flood: {checked} published snapshots equal etcd at their revision");

    // Whenever health said synced, nothing acknowledged more than the bound (plus the
    // sampling period) before was missing from the snapshot.
    let bound = etcd_dynamic_config::SYNC_BOUND + Duration::from_secs(1);
    let acknowledged = acknowledged.lock().unwrap().clone();
    let samples = samples.lock().unwrap().clone();
    for (at, state, revision) in &samples {
        if *state != HealthState::Synced {
            continue;
        }
        let missing = acknowledged
            .iter()
            .filter(|(acked, written)| *acked + bound < *at && written > revision)
            .count();
        assert_eq!(
            missing, 0,
            "synced at revision {revision} while {missing} writes acknowledged over {bound:?} earlier were missing"
        );
    }
    config.stop().await;
}

/// Loads three names, then replaces etcd by `replace`, writes two keys to the new etcd,
/// and checks that the new data is served, the listener heard the difference, and
/// health comes back to synced.
async fn a_replaced_etcd_is_noticed(replace: impl AsyncFnOnce(&mut EtcdMember)) {
    let mut etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    for (key, value) in [("A", "1"), ("B", "2"), ("C", "3")] {
        put(&mut client, &format!("/app/{key}"), value).await;
    }
    let config = config(&etcd.endpoint(), "/app");
    config.start().await.expect("start");
    let history = History::follow(&config);
    synced(&config).await;
    let before = config.snapshot().revision();

    replace(&mut etcd).await;
    let started = Instant::now();
    let mut client = etcd.client().await;
    put(&mut client, "/app/B", "new").await;
    put(&mut client, "/app/D", "4").await;
    let head = testkit::current_revision(&mut client).await;
    assert!(head < before, "the new etcd is behind: {head} < {before}");

    let snapshot = converges(&config, &mut client, "/app").await;
    println!(
        "TRUTH replaced etcd noticed and served {} ms after it was back",
        started.elapsed().as_millis()
    );
    assert_eq!(
        snapshot.revision(),
        head,
        "the new etcd's revision is served"
    );
    history.reaches(&values(&snapshot)).await;
    synced(&config).await;
    config.stop().await;
}

#[tokio::test]
async fn a_wiped_etcd_restarted_empty_is_noticed() {
    a_replaced_etcd_is_noticed(async |etcd| etcd.wipe(false).await).await;
}

#[tokio::test]
async fn a_new_cluster_on_the_same_address_is_noticed() {
    a_replaced_etcd_is_noticed(async |etcd| etcd.wipe(true).await).await;
}

#[tokio::test]
async fn a_wiped_etcd_written_past_the_applied_revision_while_cut_off_is_noticed() {
    // Neither the cluster id (same flags) nor the head (written past what was applied)
    // tells: etcd's prefix at the applied revision does.
    let mut etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    for (key, value) in [("A", "1"), ("B", "2"), ("C", "3")] {
        put(&mut client, &format!("/app/{key}"), value).await;
    }
    let proxy = FaultProxy::start(etcd.client_port()).await;
    let config = config(&proxy.endpoint(), "/app");
    config.start().await.expect("start");
    let history = History::follow(&config);
    synced(&config).await;
    let applied = config.snapshot().revision();
    proxy.cut();
    etcd.wipe(false).await;
    let mut client = etcd.client().await;
    // Nothing the new history sends under the prefix contradicts the old state: writes
    // elsewhere, then one key created.
    for i in 0..applied + 5 {
        put(&mut client, "/elsewhere/Key", &i.to_string()).await;
    }
    put(&mut client, "/app/D", "4").await;
    assert!(testkit::current_revision(&mut client).await > applied);
    proxy.restore();
    let snapshot = converges(&config, &mut client, "/app").await;
    assert!(
        !values(&snapshot).contains_key("a"),
        "the old history's keys are gone"
    );
    history.reaches(&values(&snapshot)).await;
    synced(&config).await;
    config.stop().await;
}

#[tokio::test]
async fn a_wiped_etcd_rewritten_with_the_same_keys_at_the_same_revisions_is_noticed() {
    // Cluster id, head, keys and their revisions are all the same: only the values tell.
    let mut etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    let keys = ["/app/A", "/app/B", "/app/C"];
    for (key, value) in keys.iter().zip(["1", "2", "3"]) {
        put(&mut client, key, value).await;
    }
    let old_revisions = mod_revisions(&mut client, "/app/").await;
    let proxy = FaultProxy::start(etcd.client_port()).await;
    let config = config(&proxy.endpoint(), "/app");
    config.start().await.expect("start");
    let history = History::follow(&config);
    synced(&config).await;
    proxy.cut();
    etcd.wipe(false).await;
    let mut client = etcd.client().await;
    for (key, value) in keys.iter().zip(["x", "y", "z"]) {
        put(&mut client, key, value).await;
    }
    assert_eq!(
        mod_revisions(&mut client, "/app/").await,
        old_revisions,
        "the new history has the same keys at the same revisions"
    );
    proxy.restore();
    let snapshot = converges(&config, &mut client, "/app").await;
    assert_eq!(values(&snapshot)["a"], "x");
    history.reaches(&values(&snapshot)).await;
    synced(&config).await;
    config.stop().await;
}

/// Every key under `dir` with its mod revision, and etcd's head.
async fn mod_revisions(client: &mut Client, dir: &str) -> (Vec<(String, i64)>, i64) {
    let response = client
        .get(dir, Some(GetOptions::new().with_prefix()))
        .await
        .expect("read the prefix");
    let keys = response
        .kvs()
        .iter()
        .map(|kv| (kv.key_str().unwrap().to_owned(), kv.mod_revision()))
        .collect();
    (keys, response.header().unwrap().revision())
}

#[tokio::test]
async fn an_etcd_restored_from_an_older_backup_is_noticed_even_when_nobody_writes() {
    let mut etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    for (key, value) in [("A", "1"), ("B", "2"), ("C", "3")] {
        put(&mut client, &format!("/app/{key}"), value).await;
    }
    let backup = etcd.backup();
    etcd.restart().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/D", "4").await;
    put(&mut client, "/app/E", "5").await;
    client.delete("/app/A", None).await.expect("delete");
    for i in 0..20 {
        put(&mut client, "/elsewhere/Key", &i.to_string()).await;
    }
    let config = config(&etcd.endpoint(), "/app");
    config.start().await.expect("start");
    let history = History::follow(&config);
    synced(&config).await;
    assert_eq!(
        values(&config.snapshot()).keys().collect::<Vec<_>>(),
        ["b", "c", "d", "e"]
    );

    etcd.restore(&backup).await;
    let started = Instant::now();
    let mut client = etcd.client().await;
    let snapshot = converges(&config, &mut client, "/app").await;
    println!(
        "TRUTH restore noticed and served {} ms after etcd was back",
        started.elapsed().as_millis()
    );
    assert_eq!(
        values(&snapshot).keys().collect::<Vec<_>>(),
        ["a", "b", "c"],
        "keys deleted after the backup are back, keys created after it are gone"
    );
    history.reaches(&values(&snapshot)).await;
    synced(&config).await;
    assert_eq!(
        config.health().revision,
        testkit::current_revision(&mut client).await
    );
    config.stop().await;
}

/// Reads as a number, and panics on `bind-boom`.
#[derive(Debug)]
struct Touchy(String);

impl<'de> serde::Deserialize<'de> for Touchy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        assert!(text != "bind-boom", "a deserializer that panics");
        Ok(Self(text))
    }
}

#[derive(Debug, serde::Deserialize)]
struct Bound {
    touchy: Touchy,
}

#[tokio::test]
async fn panicking_checks_hooks_and_deserializers_neither_stop_nor_stall_the_engine() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/Touchy", "fine").await;
    let schema = Schema::builder()
        .discover(true)
        .check(Check::new("no check-boom", |snapshot| {
            let value = snapshot.get("touchy").and_then(ValueRef::as_str);
            assert!(value != Some("check-boom"), "a check that panics");
            Ok(())
        }))
        .coerce(|name, text| {
            assert!(text != "hook-boom", "a coercion hook that panics on {name}");
            None
        })
        .build()
        .unwrap();
    let config = config_with(&etcd.endpoint(), "/app", schema);
    config.start().await.expect("start");
    let binding = config.bind::<Bound>().expect("binds");

    // A panicking coercion hook: the value is rejected, the name keeps its last good one.
    let revision = put(&mut client, "/app/Touchy", "hook-boom").await;
    wait_for_revision(&config, revision).await;
    let rejections = config.rejections();
    assert!(
        rejections[0].reason.contains("the coercion hook panicked"),
        "{rejections:?}"
    );
    assert_eq!(
        config.snapshot().get("touchy").unwrap().as_str(),
        Some("fine")
    );

    // A panicking check: the revision is rejected, the last good snapshot serves.
    let revision = put(&mut client, "/app/Touchy", "check-boom").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while config.rejected_revision().map(|r| r.revision) != Some(revision) {
        assert!(Instant::now() < deadline, "{:?}", config.health());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rejected = config.rejected_revision().unwrap();
    assert!(
        rejected.reasons[0].contains("check no check-boom panicked"),
        "{rejected:?}"
    );
    assert_eq!(
        config.snapshot().get("touchy").unwrap().as_str(),
        Some("fine")
    );

    // A panicking deserializer: the binding keeps its value and says why.
    let revision = put(&mut client, "/app/Touchy", "bind-boom").await;
    wait_for_revision(&config, revision).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while binding.last_error().is_none() {
        assert!(Instant::now() < deadline, "the binding never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        binding
            .last_error()
            .unwrap()
            .contains("the deserializer panicked"),
        "{:?}",
        binding.last_error()
    );
    assert_eq!(binding.load().touchy.0, "fine");

    // The engine goes on: a good value arrives everywhere, and health is synced.
    let revision = put(&mut client, "/app/Touchy", "good").await;
    wait_for_revision(&config, revision).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while binding.load().touchy.0 != "good" {
        assert!(Instant::now() < deadline, "the binding did not follow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    synced(&config).await;
    assert!(config.rejected_revision().is_none());
    config.stop().await;
}

#[tokio::test]
async fn listeners_hear_what_changed_while_stopped() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/LogLevel", "INFO").await;
    put(&mut client, "/app/Gone", "soon").await;
    let config = config(&etcd.endpoint(), "/app");
    config.start().await.expect("start");
    let history = History::follow(&config);

    config.stop().await;
    put(&mut client, "/app/LogLevel", "DEBUG").await;
    client.delete("/app/Gone", None).await.unwrap();
    let last = put(&mut client, "/app/New", "here").await;
    config.start().await.expect("start again");
    let snapshot = wait_for_revision(&config, last).await;
    history.reaches(&values(&snapshot)).await;
    assert_eq!(history.changes.load(Ordering::SeqCst), 1, "one net change");
    config.stop().await;
}

/// etcd's own count of watchers, from its metrics.
async fn etcd_watchers(etcd: &EtcdMember) -> u64 {
    let metrics = common::http_get(etcd.client_port(), "/metrics").await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|count| count.trim().parse::<f64>().ok())
        .map(|count| count as u64)
        .unwrap_or_else(|| panic!("no watcher count in etcd's metrics:\n{metrics}"))
}

fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_s_cached_handles_serve_what_etcd_holds_at_each_revision() {
    #[derive(serde::Deserialize)]
    struct App {
        log_level: String,
        workers: String,
    }
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/LogLevel", "INFO").await;
    put(&mut client, "/app/Workers", "w0").await;
    let config = config(&etcd.endpoint(), "/app");
    config.start().await.expect("start");
    let binding = config.bind::<App>().unwrap();
    // A reader thread with its own handles, asked for what it serves at each revision.
    let (ask, asked) = std::sync::mpsc::channel::<i64>();
    let (answer, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn({
        let (mut snapshot, mut typed) = (config.cached(), binding.cached());
        move || {
            for revision in asked {
                let deadline = Instant::now() + Duration::from_secs(10);
                while snapshot.load().revision() < revision && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let served = snapshot.load().clone();
                let app = typed.load();
                let pair = (app.log_level.clone(), app.workers.clone());
                answer.send((served, pair)).expect("the test listens");
            }
        }
    });
    for round in 0..20 {
        let key = if round % 2 == 0 {
            "LogLevel"
        } else {
            "Workers"
        };
        let revision = put(&mut client, &format!("/app/{key}"), &format!("v{round}")).await;
        ask.send(revision).unwrap();
        let (served, (log_level, workers)) = answers.recv().await.expect("an answer");
        assert_eq!(served.revision(), revision, "round {round}");
        let expected = etcd_state(&mut client, "/app", revision).await;
        assert_eq!(values(&served), expected, "round {round}");
        assert_eq!(Some(&log_level), expected.get("log_level"), "round {round}");
        assert_eq!(Some(&workers), expected.get("workers"), "round {round}");
    }
    drop(ask);
    reader.join().expect("reader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_frees_the_engine_its_watch_and_its_threads() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/LogLevel", "INFO").await;
    let threads_before = threads_named("etcd-config");

    #[derive(serde::Deserialize)]
    struct App {
        #[allow(dead_code)]
        log_level: String,
    }
    for _ in 0..20 {
        let config = config(&etcd.endpoint(), "/app");
        config.start().await.expect("start");
        // A listener that keeps a handle of its own configuration, and a binding.
        let own = config.clone();
        let listener = config.on_change(move |_| {
            let _ = own.snapshot();
        });
        let binding = config.bind::<App>().unwrap();
        let cached = (config.cached(), binding.cached());
        let revision = put(&mut client, "/app/LogLevel", "DEBUG").await;
        wait_for_revision(&config, revision).await;
        drop((listener, binding, config, cached));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (watchers, threads) = (etcd_watchers(&etcd).await, threads_named("etcd-config"));
        if watchers == 0 && threads <= threads_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 20 configurations were dropped: {watchers} watchers in etcd, \
             {threads} etcd-config threads (before: {threads_before})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stop_during_start_stops_for_good() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/LogLevel", "INFO").await;
    let proxy = FaultProxy::start(etcd.client_port()).await;
    for attempt in 0..10 {
        proxy.stall();
        let config = config(&proxy.endpoint(), "/app");
        let starting = tokio::spawn({
            let config = config.clone();
            async move { config.start().await }
        });
        tokio::time::sleep(Duration::from_millis(50 + 30 * attempt)).await;
        config.stop().await;
        let started = tokio::time::timeout(Duration::from_secs(2), starting)
            .await
            .expect("start returns at once after stop")
            .expect("start task");
        assert!(
            matches!(started, Err(Error::Stopped)),
            "attempt {attempt}: {started:?}"
        );
        proxy.restore();
        let revision = put(&mut client, "/app/LogLevel", &format!("L{attempt}")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(config.snapshot().revision() < revision, "nothing runs");
        assert_ne!(config.health().state, HealthState::Synced);
        // And it can be started for real afterwards.
        if attempt == 9 {
            config.start().await.expect("start after an aborted start");
            wait_for_revision(&config, revision).await;
            config.stop().await;
        }
    }
    // etcd drops a watcher when the stream's cancellation reaches it, through the proxy:
    // a moment after `stop` returns. A watcher left behind stays.
    let deadline = Instant::now() + Duration::from_secs(5);
    while etcd_watchers(&etcd).await > 0 {
        assert!(Instant::now() < deadline, "an engine was left behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_elsewhere_neither_wake_subscribers_nor_rebuild_bindings_and_health_stays_synced() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/quiet/LogLevel", "INFO").await;
    let config = config(&etcd.endpoint(), "/quiet");
    config.start().await.expect("start");
    synced(&config).await;
    let mut subscription = config.subscribe();
    subscription.latest();
    let wakeups = Arc::new(AtomicUsize::new(0));
    let counter = wakeups.clone();
    let waiter = tokio::spawn(async move {
        while subscription.changed().await.is_some() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });

    // 8 s of writes elsewhere: etcd's head moves far past the prefix's revision.
    let started = Instant::now();
    let mut not_synced = 0;
    while started.elapsed() < Duration::from_secs(8) {
        put(&mut client, "/busy/Key", "x").await;
        if !config.health().is_synced() {
            not_synced += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let health = config.health();
    assert_eq!(
        wakeups.load(Ordering::SeqCst),
        0,
        "no snapshot was published"
    );
    assert_eq!(not_synced, 0, "health stayed synced: {health:?}");
    let head = testkit::current_revision(&mut client).await;
    assert!(
        health.confirmed_revision.unwrap() > head - 200,
        "confirmed at a recent head: {health:?}, head {head}"
    );
    assert!(health.revision < health.confirmed_revision.unwrap());
    let listed = client
        .get("/quiet/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(listed.kvs().len(), 1);
    waiter.abort();
    config.stop().await;
}

// The blocking facade runs the engine on a runtime of its own: the blocked check holds
// that runtime's worker, not the test's (on a shared runtime, a task that a blocked
// worker holds in its slot for the next task waits with it).
#[test]
fn a_check_that_blocks_is_reported_by_health_and_updates_resume_when_it_returns() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let etcd = runtime.block_on(EtcdMember::start());
    let mut client = runtime.block_on(etcd.client());
    runtime.block_on(put(&mut client, "/app/Mode", "normal"));
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = release.clone();
    let schema = Schema::builder()
        .discover(true)
        .check(Check::new("blocks on wait", move |snapshot| {
            // Bounded: gives up after 60 s.
            let started = Instant::now();
            while snapshot.get("mode").and_then(ValueRef::as_str) == Some("wait")
                && !gate.load(Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        }))
        .build()
        .unwrap();
    let config = etcd_dynamic_config::blocking::EtcdConfig::new(config_with(
        &etcd.endpoint(),
        "/app",
        schema,
    ))
    .unwrap();
    config.start().expect("start");
    let until = |what: &str, condition: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(Instant::now() < deadline, "{what}: {:?}", config.health());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until("synced", &|| config.health().is_synced());

    runtime.block_on(put(&mut client, "/app/Mode", "wait"));
    until("degraded", &|| {
        config.health().state == HealthState::Degraded
    });
    let health = config.health();
    assert!(
        health
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("a check or coercion hook has run for")),
        "{health:?}"
    );
    release.store(true, Ordering::SeqCst);
    let revision = runtime.block_on(put(&mut client, "/app/Mode", "normal-again"));
    until("the next value", &|| {
        config.snapshot().revision() >= revision
    });
    assert_eq!(
        config.snapshot().get("mode").unwrap().as_str(),
        Some("normal-again")
    );
    until("synced again", &|| config.health().is_synced());
    config.stop();
}

/// `EtcdClient::history` of one name, as `(revision, value)` pairs, newest first; bounded,
/// so that a history that never ends fails here.
async fn history_of(
    client: &EtcdClient,
    name: &str,
    limit: usize,
) -> (Vec<(i64, Option<String>)>, Option<i64>) {
    let history = tokio::time::timeout(Duration::from_secs(30), client.history(name, limit))
        .await
        .expect("the history answers within 30 s")
        .expect("history");
    let changes = history
        .changes
        .iter()
        .map(|change| (change.revision, change.value.clone()))
        .collect();
    (changes, history.kept_from)
}

#[tokio::test]
async fn history_is_etcds_own_record_of_a_key_as_far_back_as_etcd_keeps_it() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    // Each write of the key as etcd answered it, oldest first; another key written
    // between them, so the key's revisions are not etcd's every revision.
    let mut written: Vec<(i64, Option<String>)> = Vec::new();
    for value in ["a", "b", "c"] {
        written.push((
            put(&mut client, "/hist/Mode", value).await,
            Some(value.into()),
        ));
        put(&mut client, "/hist/Other", value).await;
    }
    let deleted = client.delete("/hist/Mode", None).await.expect("delete");
    written.push((deleted.header().expect("header").revision(), None));
    written.push((put(&mut client, "/hist/Mode", "d").await, Some("d".into())));
    let newest_first = |from: usize| written[from..].iter().rev().cloned().collect::<Vec<_>>();

    let reader = EtcdClient::new(settings(&etcd.endpoint(), "/hist"), Schema::auto_discover())
        .expect("client");
    assert_eq!(
        history_of(&reader, "mode", 10).await,
        (newest_first(0), None)
    );
    assert_eq!(history_of(&reader, "mode", 2).await.0, newest_first(0)[..2]);

    // Compacted at the key's third write: etcd keeps that write and the later ones.
    let third = written[2].0;
    client.compact(third, None).await.expect("compact");
    assert_eq!(
        history_of(&reader, "mode", 10).await,
        (newest_first(2), Some(third))
    );

    // Compacted at the key's last write: etcd keeps that one.
    let last = written[4].0;
    client.compact(last, None).await.expect("compact");
    assert_eq!(
        history_of(&reader, "mode", 10).await,
        (newest_first(4), Some(last))
    );

    // Compacted past the key's last write: etcd replays none of its writes, and the
    // history ends there (it must not wait for one), with the value etcd's range still
    // holds, at the revision that wrote it.
    let head = put(&mut client, "/hist/Other", "e").await;
    client.compact(head, None).await.expect("compact");
    assert_eq!(
        history_of(&reader, "mode", 10).await,
        (newest_first(4), Some(head))
    );
    // A name whose key etcd no longer holds, compacted past its delete: the same.
    client.delete("/hist/Mode", None).await.expect("delete");
    let head = put(&mut client, "/hist/Other", "f").await;
    client.compact(head, None).await.expect("compact");
    assert_eq!(
        history_of(&reader, "mode", 10).await,
        (Vec::new(), Some(head))
    );
}

#[tokio::test]
async fn an_audited_write_and_its_record_are_one_transaction_with_secrets_masked() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/aud/Mode", "a").await;
    put(&mut client, "/aud/DbPassword", "old-secret").await;
    put(&mut client, "/aud/Extra", "x").await;
    let settings = || settings(&etcd.endpoint(), "/aud");
    let audited = EtcdClient::new(settings(), Schema::auto_discover())
        .expect("client")
        .with_audit(Audit {
            author: "ops".into(),
            reason: Some("ticket 7".into()),
        });
    let revision = audited
        .put_values(
            &[
                ("mode".into(), "b".into()),
                ("db_password".into(), "new-secret".into()),
            ],
            // Deleting a name etcd does not hold changes nothing, and is not recorded.
            &["extra".into(), "never_written".into()],
        )
        .await
        .expect("write");

    // etcd's own answer: the record is a key of the audit prefix written at the values'
    // revision, in their transaction.
    let audit_prefix = audited.audit_prefix();
    // Outside the configuration's prefix, where its readers never look.
    assert_eq!(audit_prefix, "/_audit/aud/");
    let mut held = client
        .get(audit_prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    let records = held.take_kvs();
    assert_eq!(records.len(), 1, "one record under {audit_prefix}");
    assert_eq!(records[0].mod_revision(), revision);
    let stored = records[0].value_str().expect("text");
    assert!(
        !stored.contains("secret"),
        "a secret in the record: {stored}"
    );

    let trail = audited.audit_trail().await.expect("trail");
    assert_eq!(trail.len(), 1, "{trail:?}");
    let record = &trail[0];
    assert_eq!(record.revision, revision);
    assert_eq!(
        (
            record.author.as_str(),
            record.reason.as_deref(),
            record.action.as_str()
        ),
        ("ops", Some("ticket 7"), "put")
    );
    let mut changes: Vec<(&str, Option<&str>, Option<&str>)> = record
        .changes
        .iter()
        .map(|change: &AuditChange| {
            (
                change.key.as_str(),
                change.old.as_deref(),
                change.new.as_deref(),
            )
        })
        .collect();
    changes.sort_unstable();
    assert_eq!(
        changes,
        [
            ("/aud/DbPassword", Some(MASK), Some(MASK)),
            ("/aud/Extra", Some("x"), None),
            ("/aud/Mode", Some("a"), Some("b")),
        ]
    );

    // A client without an audit writes no record.
    let plain = EtcdClient::new(settings(), Schema::auto_discover()).expect("client");
    plain
        .put_values(&[("mode".into(), "c".into())], &[])
        .await
        .expect("write");
    assert_eq!(plain.audit_trail().await.expect("trail").len(), 1);
}

#[tokio::test]
async fn a_client_given_a_prefix_reads_and_writes_under_it_not_under_the_settings_one() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/one/Mode", "one").await;
    put(&mut client, "/two/Mode", "two").await;
    let given = EtcdClient::new(settings(&etcd.endpoint(), "/one"), Schema::auto_discover())
        .expect("client")
        .with_prefix("/two")
        .expect("a valid prefix");
    assert_eq!(given.prefix(), "/two/");
    let loaded = given.load().await.expect("load");
    assert_eq!(
        loaded.snapshot.get("mode").and_then(|value| value.as_str()),
        Some("two")
    );
    let revision = given
        .put_values(&[("mode".into(), "2".into())], &[])
        .await
        .expect("write");
    // etcd's own answer: the given prefix's key was written, the settings' one was not.
    for (key, value, mod_revision) in [("/two/Mode", "2", revision), ("/one/Mode", "one", 2)] {
        let held = client.get(key, None).await.expect("get");
        let kv = &held.kvs()[0];
        assert_eq!(
            (kv.value_str().expect("text"), kv.mod_revision()),
            (value, mod_revision),
            "{key}"
        );
    }
}

#[tokio::test]
async fn a_write_expecting_a_revision_is_refused_after_a_put_or_delete_since_and_lands_otherwise() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/Mode", "one").await;
    put(&mut client, "/app/Gone", "here").await;
    let writer = EtcdClient::new(settings(&etcd.endpoint(), "/app"), Schema::auto_discover())
        .expect("client");
    let seen = put(&mut client, "/app/Other", "x").await;
    // Each change since `seen`: a delete (which no key's mod revision shows), then a put.
    for change in ["delete", "put"] {
        let expected = match change {
            "delete" => {
                client.delete("/app/Gone", None).await.expect("delete");
                seen
            }
            _ => {
                let now = put(&mut client, "/app/Fresh", "new").await;
                put(&mut client, "/app/Other", "y").await;
                now
            }
        };
        let refused = writer
            .put_values_expecting(&[("mode".into(), "two".into())], &[], expected)
            .await;
        assert!(
            matches!(refused, Err(Error::Conflict { .. })),
            "{change}: {refused:?}"
        );
        let held = client.get("/app/Mode", None).await.expect("get");
        assert_eq!(held.kvs()[0].value_str().expect("text"), "one", "{change}");
    }
    // Nothing written since: the write lands, at the revision it says.
    let now = put(&mut client, "/app/Other", "z").await;
    let revision = writer
        .put_values_expecting(&[("mode".into(), "two".into())], &[], now)
        .await
        .expect("a write over nothing new");
    let held = client.get("/app/Mode", None).await.expect("get");
    let kv = &held.kvs()[0];
    assert_eq!(
        (kv.value_str().expect("text"), kv.mod_revision()),
        ("two", revision)
    );
}

#[tokio::test]
async fn a_load_at_a_past_revision_is_etcds_range_then_and_one_etcd_lacks_is_refused_at_once() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    let first = put(&mut client, "/app/Mode", "one").await;
    let middle = put(&mut client, "/app/Extra", "x").await;
    let head = put(&mut client, "/app/Mode", "two").await;
    let reader = EtcdClient::new(settings(&etcd.endpoint(), "/app"), Schema::auto_discover())
        .expect("client");
    let then = reader.load_at(middle).await.expect("a revision etcd holds");
    assert_eq!(then.revision, middle);
    assert_eq!(
        values(&then.snapshot),
        etcd_state(&mut client, "/app", middle).await
    );
    assert_eq!(values(&then.snapshot)["mode"], "one");

    // A revision past the head, and one compacted away: refused, naming it, at once
    // (not retried as if the answer were too large).
    client.compact(head, None).await.expect("compact");
    for (revision, says) in [
        (head + 100, "beyond etcd's head"),
        (first, "no longer in etcd's history"),
    ] {
        let answer = tokio::time::timeout(Duration::from_secs(20), reader.load_at(revision))
            .await
            .expect("an answer within 20 s");
        match answer {
            Err(Error::Refused { reason, .. }) => {
                assert!(reason.contains(says), "{revision}: {reason}");
                assert!(reason.contains(&revision.to_string()), "{reason}");
            }
            other => panic!("{revision}: {:?}", other.map(|loaded| loaded.revision)),
        }
    }
}
