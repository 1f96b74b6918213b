//! The randomized fault soak and its oracle, shared by `tests/soak.rs` (about a minute)
//! and `examples/soak.rs` (as long as asked).
//!
//! A seeded driver mixes puts, multi-key transactions, deletes, `delete --prefix`, writes
//! elsewhere and compactions with faults: kill/restart, freeze/thaw, a proxy that cuts,
//! stalls or slows the library's connection, compaction while cut off, wipe-and-restart
//! (same or new cluster id), a restore from an older backup, and, on a 3-member cluster,
//! kills, freezes and a member removed. The oracle:
//! - every snapshot the library published (as a subscriber sees them) equals etcd's
//!   range of the prefix at the snapshot's revision, read before any compaction, wipe or
//!   restore could hide it;
//! - the final snapshot equals etcd's head;
//! - a listener's history is consistent (each change's `old` is the `new` it saw before)
//!   and ends at the final snapshot;
//! - health never said `synced` while a write acknowledged more than the sync bound (plus
//!   one second) earlier was missing from the snapshot served, or while an etcd replaced
//!   that long ago was still being served.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, DeleteOptions, GetOptions, Txn, TxnOp, TxnOpResponse};
use etcd_dynamic_config::schema::naming::name_from_path;
use etcd_dynamic_config::{
    ConfigChange, EtcdConfig, EtcdSettings, HealthState, Listener, SYNC_BOUND, Snapshot, Value,
};
use testkit::{Backup, EtcdCluster, EtcdMember, FaultProxy};

#[path = "../common/mod.rs"]
mod common;
use common::values;

const PREFIX: &str = "/soak";

/// With `SOAK_TRACE=1` the driver prints what it does (operations with their revisions,
/// faults) and the library's own log, in one time line: for finding what led to a
/// violation.
fn tracing_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var_os("SOAK_TRACE").is_some_and(|v| v != "0");
        if on {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("etcd_dynamic_config=debug")
                .with_writer(std::io::stderr)
                .try_init();
        }
        on
    })
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing_on() {
            tracing::info!(target: "etcd_dynamic_config::soak", $($arg)*);
        }
    };
}
/// How long one operation may take before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(1);

/// How long and with which seed.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub seed: u64,
    pub duration: Duration,
}

/// What a soak did and found.
#[derive(Debug, Default)]
pub struct Figures {
    pub operations: BTreeMap<&'static str, u64>,
    pub failed_operations: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub snapshots_checked: usize,
    pub health_samples: usize,
    pub synced_samples: usize,
    pub changes_heard: usize,
    pub violations: Vec<String>,
}

impl Figures {
    /// The figures as lines of text.
    pub fn report(&self, options: &Options) -> String {
        let total: u64 = self.operations.values().sum();
        let faults: u64 = self.faults.values().sum();
        let mut out = format!(
            "SOAK seed={} duration={}s etcd={}\n",
            options.seed,
            options.duration.as_secs(),
            testkit::etcd_binary().display()
        );
        out += &format!(
            "SOAK operations={total} ({:?}) failed_during_faults={}\n",
            self.operations, self.failed_operations
        );
        out += &format!("SOAK faults={faults} ({:?})\n", self.faults);
        out += &format!(
            "SOAK snapshots_checked={} health_samples={} synced_samples={} changes_heard={}\n",
            self.snapshots_checked, self.health_samples, self.synced_samples, self.changes_heard
        );
        out += &format!("SOAK violations={}\n", self.violations.len());
        for violation in self.violations.iter().take(20) {
            out += &format!("SOAK violation: {violation}\n");
        }
        out
    }

    fn op(&mut self, kind: &'static str) {
        *self.operations.entry(kind).or_default() += 1;
    }

    fn fault(&mut self, kind: &'static str) {
        trace!("fault {kind}");
        *self.faults.entry(kind).or_default() += 1;
    }
}

/// splitmix64: a seeded stream of numbers, enough for choosing operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

/// Runs the soak: two thirds on one member behind a fault proxy, one third on a
/// 3-member cluster.
pub async fn run(options: Options) -> Figures {
    let mut figures = Figures::default();
    let single = options.duration * 2 / 3;
    single_member(options.seed, single, &mut figures).await;
    cluster(
        options.seed ^ 0x5eed,
        options.duration.saturating_sub(single),
        &mut figures,
    )
    .await;
    figures
}

// --- what the library showed ---

/// A snapshot the library published, and the etcd history it was found true in.
struct Recorded {
    snapshot: Arc<Snapshot>,
    epoch: Option<usize>,
}

struct Sample {
    at: Instant,
    synced: bool,
    snapshot: usize,
}

#[derive(Default)]
struct Observed {
    snapshots: Vec<Recorded>,
    samples: Vec<Sample>,
    view: BTreeMap<String, String>,
    history_violations: Vec<String>,
    changes: usize,
}

impl Observed {
    /// Records `snapshot` unless it is the last one recorded; returns its index.
    fn record(&mut self, snapshot: Arc<Snapshot>) -> usize {
        let new = self
            .snapshots
            .last()
            .is_none_or(|last| !Arc::ptr_eq(&last.snapshot, &snapshot));
        if new {
            self.snapshots.push(Recorded {
                snapshot,
                epoch: None,
            });
        }
        self.snapshots.len() - 1
    }
}

/// Records every snapshot a subscriber sees, health every 25 ms, and a listener's view.
struct Observer {
    config: EtcdConfig,
    observed: Arc<Mutex<Observed>>,
    task: tokio::task::JoinHandle<()>,
    _listener: Listener,
}

impl Observer {
    fn start(config: &EtcdConfig) -> Self {
        let observed = Arc::new(Mutex::new(Observed {
            view: values(&config.snapshot()),
            ..Observed::default()
        }));
        let sink = observed.clone();
        let listener = config.on_change(move |change: &ConfigChange| {
            let mut observed = sink.lock().unwrap();
            observed.changes += 1;
            for item in &change.changes {
                let name = item.name.to_string();
                let old = item.old.as_ref().map(Value::to_string);
                if observed.view.get(&name) != old.as_ref() {
                    let seen = observed.view.get(&name).cloned();
                    observed.history_violations.push(format!(
                        "listener: {name} at {} has old {old:?}, but it last saw {seen:?}",
                        change.revision
                    ));
                }
                match &item.new {
                    Some(new) => observed.view.insert(name, new.to_string()),
                    None => observed.view.remove(&name),
                };
            }
        });
        let sink = observed.clone();
        let watched = config.clone();
        let task = tokio::spawn(async move {
            let mut subscription = watched.subscribe();
            loop {
                tokio::select! {
                    changed = subscription.changed() => if changed.is_none() { return },
                    () = tokio::time::sleep(Duration::from_millis(25)) => {}
                }
                // Read and record under the lock: a check holding it has seen every
                // snapshot published before it.
                let mut observed = sink.lock().unwrap();
                let snapshot = watched.snapshot();
                let health = watched.health();
                if health.revision != snapshot.revision() {
                    continue; // a publish between the two reads
                }
                let index = observed.record(snapshot);
                observed.samples.push(Sample {
                    at: Instant::now(),
                    synced: health.state == HealthState::Synced,
                    snapshot: index,
                });
            }
        });
        Self {
            config: config.clone(),
            observed,
            task,
            _listener: listener,
        }
    }
}

// --- what etcd acknowledged ---

/// Writes etcd acknowledged under the prefix, and the starts of new etcd histories.
#[derive(Default)]
struct Ledger {
    /// (when, epoch, revision), in time order.
    acks: Vec<(Instant, usize, i64)>,
    epoch: usize,
}

impl Ledger {
    fn ack(&mut self, revision: i64) {
        self.acks.push((Instant::now(), self.epoch, revision));
    }

    /// A new etcd history begins (wipe, restore): as if written now at revision 0.
    fn new_epoch(&mut self) {
        self.epoch += 1;
        self.acks.push((Instant::now(), self.epoch, 0));
    }
}

// --- the oracle ---

/// The names and values etcd holds under the prefix at `revision`, as auto-discovery
/// maps them. `Err` with etcd's words when it cannot say.
async fn etcd_state(
    client: &mut Client,
    revision: i64,
) -> Result<BTreeMap<String, String>, String> {
    let dir = format!("{PREFIX}/");
    let mut options = GetOptions::new().with_prefix();
    if revision > 0 {
        options = options.with_revision(revision);
    }
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        client.get(dir.as_str(), Some(options)),
    );
    let response = match read.await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => return Err("timed out".to_owned()),
    };
    let mut state = BTreeMap::new();
    for kv in response.kvs() {
        let key = kv.key_str().map_err(|e| e.to_string())?;
        if let Some(name) = name_from_path(&key[dir.len()..]) {
            state
                .entry(name)
                .or_insert_with(|| kv.value_str().unwrap_or_default().to_owned());
        }
    }
    Ok(state)
}

async fn head(client: &mut Client) -> Option<i64> {
    let read = tokio::time::timeout(
        OP_TIMEOUT * 3,
        client.get("/", Some(GetOptions::new().with_count_only())),
    );
    match read.await {
        Ok(Ok(response)) => response.header().map(|header| header.revision()),
        _ => None,
    }
}

fn difference(served: &BTreeMap<String, String>, etcd: &BTreeMap<String, String>) -> Vec<String> {
    let mut names: Vec<&String> = served.keys().chain(etcd.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| served.get(*name) != etcd.get(*name))
        .map(|name| {
            format!(
                "{name}: served {:?}, etcd {:?}",
                served.get(name),
                etcd.get(name)
            )
        })
        .collect()
}

/// Checks every snapshot recorded and not yet checked against etcd's range at its
/// revision in the current history. Returns false when etcd could not answer (try
/// again later); a wrong or unverifiable snapshot is a violation.
async fn check_pending(
    observer: &Observer,
    client: &mut Client,
    epoch: usize,
    figures: &mut Figures,
) -> bool {
    let pending: Vec<(usize, Arc<Snapshot>)> = {
        let mut observed = observer.observed.lock().unwrap();
        // What is served now, in case the observer has not seen it yet.
        observed.record(observer.config.snapshot());
        observed
            .snapshots
            .iter()
            .enumerate()
            .filter(|(_, recorded)| recorded.epoch.is_none())
            .map(|(index, recorded)| (index, recorded.snapshot.clone()))
            .collect()
    };
    for (index, snapshot) in pending {
        let revision = snapshot.revision();
        match etcd_state(client, revision).await {
            Ok(etcd) => {
                let differ = difference(&values(&snapshot), &etcd);
                if !differ.is_empty() {
                    figures.violations.push(format!(
                        "snapshot at revision {revision} is not etcd's prefix there: {differ:?}"
                    ));
                }
                figures.snapshots_checked += 1;
                observer.observed.lock().unwrap().snapshots[index].epoch = Some(epoch);
            }
            Err(reason) if reason.contains("compacted") || reason.contains("future revision") => {
                figures.violations.push(format!(
                    "snapshot at revision {revision} cannot be checked: {reason}"
                ));
                observer.observed.lock().unwrap().snapshots[index].epoch = Some(epoch);
            }
            Err(_) => return false,
        }
    }
    true
}

/// Health said `synced` only while nothing acknowledged more than the bound earlier was
/// missing: compares every synced sample with the writes (and new histories) before it.
fn check_health(observer: &Observer, ledger: &Ledger, figures: &mut Figures) {
    let bound = SYNC_BOUND + Duration::from_secs(1);
    let mut observed = observer.observed.lock().unwrap();
    // Checked samples are let go: a restore re-tags snapshots for the new history.
    let samples = std::mem::take(&mut observed.samples);
    figures.health_samples += samples.len();
    let mut acks = ledger.acks.iter().peekable();
    let mut newest = (0usize, 0i64);
    for sample in &samples {
        while let Some((at, epoch, revision)) = acks.peek() {
            if *at + bound >= sample.at {
                break;
            }
            newest = newest.max((*epoch, *revision));
            acks.next();
        }
        if !sample.synced {
            continue;
        }
        figures.synced_samples += 1;
        let recorded = &observed.snapshots[sample.snapshot];
        let Some(epoch) = recorded.epoch else {
            continue; // never checked: reported by check_pending
        };
        let served = (epoch, recorded.snapshot.revision());
        if served < newest {
            figures.violations.push(format!(
                "health said synced serving (history {}, revision {}) while (history {}, revision {}) was acknowledged over {bound:?} earlier",
                served.0, served.1, newest.0, newest.1
            ));
        }
    }
}

/// Ends a phase: waits until the snapshot equals etcd's head, checks every snapshot, the
/// listener's view, health, and stops.
async fn finish(
    config: &EtcdConfig,
    observer: Observer,
    client: &mut Client,
    ledger: &Ledger,
    figures: &mut Figures,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let converged = loop {
        let served = values(&config.snapshot());
        if let Ok(etcd) = etcd_state(client, 0).await
            && served == etcd
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if !converged {
        figures.violations.push(format!(
            "the snapshot did not reach etcd's head within 60 s: {:?}",
            config.health()
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !config.health().is_synced() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !config.health().is_synced() {
        figures
            .violations
            .push(format!("not synced at the end: {:?}", config.health()));
    }
    // Let the observer and the listener see the end.
    tokio::time::sleep(Duration::from_millis(200)).await;
    observer.task.abort();
    for _ in 0..20 {
        if check_pending(&observer, client, ledger.epoch, figures).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    check_health(&observer, ledger, figures);
    {
        let observed = observer.observed.lock().unwrap();
        figures.changes_heard += observed.changes;
        figures
            .violations
            .extend(observed.history_violations.iter().cloned());
        let final_view = values(&config.snapshot());
        if observed.view != final_view {
            figures.violations.push(format!(
                "the listener's view is not the final snapshot: {:?}",
                difference(&observed.view, &final_view)
            ));
        }
    }
    config.stop().await;
}

// --- operations ---

fn key(rng: &mut Rng) -> String {
    if rng.chance(20) {
        format!("{PREFIX}/Dir/K{}", rng.below(10))
    } else {
        format!("{PREFIX}/K{}", rng.below(40))
    }
}

/// One random operation through `client`; acknowledged writes under the prefix go to
/// the ledger.
async fn operate(rng: &mut Rng, client: &mut Client, ledger: &mut Ledger, figures: &mut Figures) {
    let roll = rng.below(100);
    let value = format!("v{}", rng.below(1_000_000));
    let (kind, what, result): (&'static str, String, Result<Option<i64>, ()>) = match roll {
        0..45 => {
            let key = key(rng);
            let what = format!("{key}={value}");
            let write = client.put(key, value, None);
            (
                "put",
                what,
                done(write, |r| r.header().map(|h| h.revision())).await,
            )
        }
        45..65 => {
            let mut keys: Vec<String> = (0..2 + rng.below(3)).map(|_| key(rng)).collect();
            keys.sort();
            keys.dedup();
            let mut what = String::new();
            let operations: Vec<TxnOp> = keys
                .into_iter()
                .map(|key| {
                    if rng.chance(25) {
                        what += &format!("{key}=(deleted) ");
                        TxnOp::delete(key, None)
                    } else {
                        let value = format!("t{}", rng.below(1_000_000));
                        what += &format!("{key}={value} ");
                        TxnOp::put(key, value, None)
                    }
                })
                .collect();
            let txn = Txn::new().and_then(operations);
            ("txn", what, done(client.txn(txn), txn_wrote_at).await)
        }
        65..80 => {
            let key = key(rng);
            let what = format!("{key}=(deleted)");
            let delete = client.delete(key, None);
            ("delete", what, done(delete, deleted_at).await)
        }
        80..84 => {
            let delete = client.delete(
                format!("{PREFIX}/Dir/"),
                Some(DeleteOptions::new().with_prefix()),
            );
            let what = format!("{PREFIX}/Dir/*=(deleted)");
            ("delete_prefix", what, done(delete, deleted_at).await)
        }
        _ => {
            let write = client.put(format!("/elsewhere/K{}", rng.below(5)), value, None);
            let done = done(write, |r| r.header().map(|h| h.revision())).await;
            ("elsewhere", String::new(), done.map(|_| None))
        }
    };
    trace!("{kind} {what}-> {result:?} (history {})", ledger.epoch);
    match result {
        Ok(revision) => {
            figures.op(kind);
            if let Some(revision) = revision {
                ledger.ack(revision);
            }
        }
        Err(()) => figures.failed_operations += 1,
    }
}

/// The revision of a delete that removed something. A delete of nothing writes nothing:
/// its header carries etcd's head, which writes elsewhere move.
fn deleted_at(response: &etcd_client::DeleteResponse) -> Option<i64> {
    (response.deleted() > 0)
        .then(|| response.header().map(|h| h.revision()))
        .flatten()
}

/// The revision of a transaction that wrote something under the prefix.
fn txn_wrote_at(response: &etcd_client::TxnResponse) -> Option<i64> {
    let wrote = response.op_responses().iter().any(|op| match op {
        TxnOpResponse::Put(_) => true,
        TxnOpResponse::Delete(delete) => delete.deleted() > 0,
        _ => false,
    });
    wrote
        .then(|| response.header().map(|h| h.revision()))
        .flatten()
}

async fn done<T, E>(
    request: impl std::future::Future<Output = Result<T, E>>,
    revision: impl FnOnce(&T) -> Option<i64>,
) -> Result<Option<i64>, ()> {
    match tokio::time::timeout(OP_TIMEOUT, request).await {
        Ok(Ok(response)) => Ok(revision(&response)),
        _ => Err(()),
    }
}

/// Compacts etcd's history up to the revision served now, once every snapshot so far is
/// checked: nothing the library may still publish lies below it.
async fn compact(
    config: &EtcdConfig,
    observer: &Observer,
    client: &mut Client,
    epoch: usize,
    figures: &mut Figures,
) {
    let served = config.snapshot().revision();
    if served > 1 && check_pending(observer, client, epoch, figures).await {
        match done(client.compact(served, None), |_| None).await {
            Ok(_) => figures.op("compact"),
            Err(()) => figures.failed_operations += 1,
        }
    }
}

fn settings(endpoints: &[String]) -> EtcdSettings {
    EtcdSettings::builder()
        .endpoints(endpoints.join(","))
        .root_key(PREFIX)
        .build()
        .expect("valid settings")
}

fn new_config(endpoints: &[String]) -> EtcdConfig {
    EtcdConfig::builder()
        .settings(settings(endpoints))
        .env(|_: &str| None)
        .build()
        .expect("valid configuration")
}

// --- phase 1: one member behind a fault proxy ---

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Frozen,
    Cut,
    Stalled,
    Slow,
}

async fn single_member(seed: u64, duration: Duration, figures: &mut Figures) {
    let mut rng = Rng(seed);
    let mut etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    let mut ledger = Ledger::default();
    for i in 0..20 {
        if let Ok(response) = client.put(format!("{PREFIX}/K{i}"), "start", None).await {
            ledger.ack(response.header().map_or(0, |h| h.revision()));
        }
    }
    let proxy = FaultProxy::start(etcd.client_port()).await;
    let config = new_config(&[proxy.endpoint()]);
    config.start().await.expect("start");
    let observer = Observer::start(&config);
    // A copy of the data directory and the revision it holds.
    let mut backup: Option<(Backup, i64)> = None;
    let mut active: Option<(Fault, Instant)> = None;
    let deadline = Instant::now() + duration;

    while Instant::now() < deadline {
        if let Some((fault, until)) = active {
            if Instant::now() >= until {
                match fault {
                    Fault::Frozen => etcd.thaw(),
                    Fault::Cut | Fault::Stalled | Fault::Slow => proxy.restore(),
                }
                active = None;
            }
        } else if rng.chance(4) {
            match rng.below(9) {
                0 => {
                    figures.fault("kill_restart");
                    etcd.kill();
                    tokio::time::sleep(rng.millis(100, 1500)).await;
                    etcd.restart().await;
                    client = etcd.client().await;
                }
                1 => {
                    figures.fault("freeze");
                    etcd.freeze();
                    active = Some((Fault::Frozen, Instant::now() + rng.millis(500, 5000)));
                }
                2 => {
                    figures.fault("proxy_cut");
                    proxy.cut();
                    active = Some((Fault::Cut, Instant::now() + rng.millis(200, 2000)));
                }
                3 => {
                    figures.fault("proxy_stall");
                    proxy.stall();
                    active = Some((Fault::Stalled, Instant::now() + rng.millis(500, 6000)));
                }
                4 => {
                    figures.fault("proxy_slow");
                    proxy.slow(rng.millis(5, 100));
                    active = Some((Fault::Slow, Instant::now() + rng.millis(1000, 4000)));
                }
                5 => {
                    // Cut off, history moves on and is compacted: the library must re-list.
                    figures.fault("compact_while_cut");
                    proxy.cut();
                    // What was on its way to the library before the cut arrives first.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    for _ in 0..5 + rng.below(20) {
                        operate(&mut rng, &mut client, &mut ledger, figures).await;
                    }
                    if check_pending(&observer, &mut client, ledger.epoch, figures).await
                        && let Some(head) = head(&mut client).await
                    {
                        let _ = client.compact(head, None).await;
                    }
                    tokio::time::sleep(rng.millis(100, 1000)).await;
                    proxy.restore();
                }
                6 | 7 => {
                    // A new history: settle, check everything so far, then replace etcd.
                    if !settle(&config, &observer, &mut client, &ledger, figures).await {
                        continue;
                    }
                    if rng.chance(50) || backup.is_none() {
                        let new_cluster = rng.chance(50);
                        figures.fault(if new_cluster {
                            "wipe_new_cluster"
                        } else {
                            "wipe"
                        });
                        etcd.wipe(new_cluster).await;
                        ledger.new_epoch();
                        backup = None;
                    } else {
                        figures.fault("restore_backup");
                        let restore_from = backup.take().expect("a backup");
                        etcd.restore(&restore_from.0).await;
                        // Health so far is judged in the old history; snapshots at or
                        // below the backup's revision hold in both.
                        check_health(&observer, &ledger, figures);
                        ledger.new_epoch();
                        for recorded in &mut observer.observed.lock().unwrap().snapshots {
                            if recorded.snapshot.revision() <= restore_from.1 {
                                recorded.epoch = Some(ledger.epoch);
                            }
                        }
                    }
                    client = etcd.client().await;
                }
                _ => {
                    if backup.is_none() {
                        figures.fault("backup");
                        let revision = head(&mut client).await.unwrap_or(0);
                        let copy = etcd.backup();
                        etcd.restart().await;
                        client = etcd.client().await;
                        backup = Some((copy, revision));
                    }
                }
            }
            continue;
        }
        if rng.chance(2) && active.is_none() {
            compact(&config, &observer, &mut client, ledger.epoch, figures).await;
        }
        operate(&mut rng, &mut client, &mut ledger, figures).await;
        tokio::time::sleep(Duration::from_millis(rng.below(8))).await;
    }
    if let Some((fault, _)) = active {
        match fault {
            Fault::Frozen => etcd.thaw(),
            _ => proxy.restore(),
        }
    }
    finish(&config, observer, &mut client, &ledger, figures).await;
}

/// Waits until no fault is pending, the snapshot equals etcd's head and every snapshot is
/// checked: the moment to replace etcd. False when that does not happen in 30 s.
async fn settle(
    config: &EtcdConfig,
    observer: &Observer,
    client: &mut Client,
    ledger: &Ledger,
    figures: &mut Figures,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(etcd) = etcd_state(client, 0).await
            && values(&config.snapshot()) == etcd
        {
            // Let the observer record what was published.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return check_pending(observer, client, ledger.epoch, figures).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

// --- phase 2: a 3-member cluster ---

async fn cluster(seed: u64, duration: Duration, figures: &mut Figures) {
    let mut rng = Rng(seed);
    let mut cluster = EtcdCluster::start(3).await;
    let mut client = cluster.client().await;
    let mut ledger = Ledger::default();
    let config = new_config(&cluster.endpoints());
    config.start().await.expect("start");
    let observer = Observer::start(&config);
    let mut frozen: Option<(usize, Instant)> = None;
    let mut removed = false;
    let started = Instant::now();
    let deadline = started + duration;

    while Instant::now() < deadline {
        if let Some((member, until)) = frozen {
            if Instant::now() >= until {
                cluster.member(member).thaw();
                frozen = None;
            }
        } else if !removed && started.elapsed() > duration * 2 / 3 {
            figures.fault("member_removed");
            let member = rng.below(3) as usize;
            cluster.remove_member(member).await;
            removed = true;
            continue;
        } else if !removed && rng.chance(3) {
            let member = rng.below(3) as usize;
            if rng.chance(50) {
                figures.fault("cluster_kill_restart");
                cluster.member(member).kill();
                for _ in 0..10 + rng.below(40) {
                    operate(&mut rng, &mut client, &mut ledger, figures).await;
                }
                cluster.member(member).restart().await;
            } else {
                figures.fault("cluster_freeze");
                cluster.member(member).freeze();
                frozen = Some((member, Instant::now() + rng.millis(500, 5000)));
            }
            continue;
        }
        if rng.chance(2) && frozen.is_none() {
            compact(&config, &observer, &mut client, ledger.epoch, figures).await;
        }
        operate(&mut rng, &mut client, &mut ledger, figures).await;
        tokio::time::sleep(Duration::from_millis(rng.below(8))).await;
    }
    if let Some((member, _)) = frozen {
        cluster.member(member).thaw();
    }
    finish(&config, observer, &mut client, &ledger, figures).await;
}
