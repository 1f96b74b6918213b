//! Where snapshots are published: one [`Writer`] (the engine), any number of readers.
//!
//! Readers load the current snapshot with one atomic operation (`arc-swap`), wait for the
//! next one through a [`Subscription`] or the [`Snapshots`] stream, or get every change
//! through a [`Listener`] (a callback on a thread of its own) or the [`Changes`] stream,
//! each behind a bounded mailbox, so a slow or panicking reader never stalls the engine.
//! Typed bindings read the latest snapshot when they are loaded after a publish, on the
//! reader's thread: a publish costs them one counter increment.
//!
//! # Bounds
//!
//! A listener's mailbox holds at most [`MAILBOX_VALUES`] value changes beyond one folded
//! difference; past that, everything queued is folded into one net difference (each
//! name's first old value and last new value), which holds at most one entry per name.
//! Every change holds at least one value change, so the queue's length is bounded too. A slow listener so gets the net
//! difference it missed, and every change's `old` is the `new` it saw before.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;

use crate::observe::events;
use crate::observe::metrics::Metrics;
use crate::report::{Rejection, RevisionRejection, StartSource};
use crate::snapshot::{ConfigChange, Snapshot};

/// What the engine knows about its own state: the basis of health reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    /// Values rejected now (the names hold their last good value or fallback).
    pub(crate) rejected: Vec<Rejection>,
    /// The latest revision that broke a check, while no valid one followed.
    pub(crate) rejected_revision: Option<RevisionRejection>,
    /// The rollouts that target the instance and are not served, and why.
    pub(crate) rejected_rollouts: Vec<crate::rollout::RolloutRejection>,
    /// Whether the last request to etcd succeeded.
    pub(crate) connected: bool,
    /// The endpoint in use.
    pub(crate) endpoint: Option<String>,
    /// How many times the connection was dropped and made again.
    pub(crate) reconnects: u64,
    /// How many times the engine authenticated again after a refusal.
    pub(crate) token_refreshes: u64,
    /// When etcd last answered.
    pub(crate) last_sync: Option<std::time::Instant>,
    /// The last failure, with its causes.
    pub(crate) last_error: Option<String>,
    /// The kind of that failure (`Error::kind_name`).
    pub(crate) last_error_kind: Option<&'static str>,
    /// Where the served values come from; `None` before `start`.
    pub(crate) source: Option<StartSource>,
    /// Whether the engine runs (false before `start` and after `stop`).
    pub(crate) running: bool,
    /// The latest head revision etcd reported.
    pub(crate) head_revision: Option<i64>,
    /// The latest etcd head the state was confirmed to equal, and when etcd said so.
    pub(crate) confirmed: Option<(i64, std::time::Instant)>,
    /// Why the prefix is being read again, while another etcd answers.
    pub(crate) relisting: Option<String>,
    /// Why the engine task ended without being stopped.
    pub(crate) failure: Option<String>,
    /// When the step running now began (checks and coercion hooks run in it).
    pub(crate) busy_since: Option<std::time::Instant>,
}

/// Most value changes a listener's mailbox queues beyond one folded difference, before
/// it folds everything queued into one: room for the bursts of a resumed watch (etcd
/// batches up to about a thousand revisions in one response), so only a listener that
/// is really behind misses revisions.
pub const MAILBOX_VALUES: usize = 4096;

/// The published state, shared by the engine and every handle.
pub(crate) struct Store {
    current: Arc<Current>,
    latest: watch::Sender<Arc<Snapshot>>,
    /// The listeners' mailboxes; a dropped [`Listener`] closes its own.
    listeners: Mutex<Vec<Weak<Mailbox>>>,
    status: Mutex<Status>,
    /// The metric handles, from `start` on (they bind to the recorder installed then).
    metrics: ArcSwapOption<Metrics>,
}

/// The snapshot being served, and how many publishes have begun and ended: what a typed
/// binding needs of the store (it holds this, not the store, so that dropping the
/// configuration still ends its streams).
///
/// A publish counts itself begun, stores the snapshot, then counts itself ended. So a
/// reader that has seen a snapshot finds every publish up to it begun, and a reader that
/// finds `n` ended and then loads the snapshot loads the `n`th or a newer one.
#[derive(Debug)]
pub(crate) struct Current {
    snapshot: ArcSwap<Snapshot>,
    begun: AtomicU64,
    ended: AtomicU64,
}

impl Current {
    /// The current snapshot: one atomic load.
    pub(crate) fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// How many publishes have begun: every snapshot a reader has seen, and maybe one
    /// being stored.
    pub(crate) fn begun(&self) -> u64 {
        self.begun.load(Ordering::Acquire)
    }

    /// How many publishes have ended; read before [`load`](Self::load), it counts the
    /// snapshot loaded or an older one.
    pub(crate) fn ended(&self) -> u64 {
        self.ended.load(Ordering::Acquire)
    }

    fn publish(&self, snapshot: Arc<Snapshot>) {
        self.begin_publish();
        self.store_published(snapshot);
        self.end_publish();
    }

    /// The first step of a publish (a test can take the steps one at a time).
    pub(crate) fn begin_publish(&self) {
        self.begun.fetch_add(1, Ordering::Release);
    }

    /// The second step of a publish.
    pub(crate) fn store_published(&self, snapshot: Arc<Snapshot>) {
        self.snapshot.store(snapshot);
    }

    /// The last step of a publish.
    pub(crate) fn end_publish(&self) {
        self.ended.fetch_add(1, Ordering::Release);
    }
}

/// The current snapshot, held by one thread that reads it often, such as a worker's
/// loop: each [`load`](Self::load) checks that the snapshot it keeps is still the current
/// one (one atomic load, no atomic write) and lends it, where
/// [`EtcdConfig::snapshot`](crate::EtcdConfig::snapshot) hands out an `Arc`, an atomic
/// write to take it and one to let it go. Made by
/// [`EtcdConfig::cached`](crate::EtcdConfig::cached); loading needs `&mut`, so each
/// thread keeps its own.
///
/// It keeps its snapshot in memory until its next `load`, even after newer ones are
/// published: drop it when its thread stops reading.
pub struct CachedSnapshot {
    cache: arc_swap::Cache<Served, Arc<Snapshot>>,
}

/// The snapshot being served, for [`arc_swap::Cache`], which reads it through `Deref`.
struct Served(Arc<Current>);

impl std::ops::Deref for Served {
    type Target = ArcSwap<Snapshot>;

    fn deref(&self) -> &ArcSwap<Snapshot> {
        &self.0.snapshot
    }
}

impl CachedSnapshot {
    pub(crate) fn new(current: Arc<Current>) -> Self {
        Self {
            cache: arc_swap::Cache::new(Served(current)),
        }
    }

    /// The current snapshot, lent until the next `load`.
    pub fn load(&mut self) -> &Arc<Snapshot> {
        self.cache.load()
    }
}

impl std::fmt::Debug for CachedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedSnapshot").finish_non_exhaustive()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for mailbox in lock(&self.listeners).iter().filter_map(Weak::upgrade) {
            mailbox.close();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("current", &self.current.snapshot.load())
            .finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) fn new() -> Arc<Self> {
        let empty = Arc::new(Snapshot::default());
        Arc::new(Self {
            current: Arc::new(Current {
                snapshot: ArcSwap::new(empty.clone()),
                begun: AtomicU64::new(0),
                ended: AtomicU64::new(0),
            }),
            latest: watch::Sender::new(empty),
            listeners: Mutex::default(),
            status: Mutex::default(),
            metrics: ArcSwapOption::empty(),
        })
    }

    /// The current snapshot: one atomic load, no lock.
    pub(crate) fn load(&self) -> Arc<Snapshot> {
        self.current.load()
    }

    /// Calls `f` with the current snapshot without touching its reference count.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.current.snapshot.load())
    }

    pub(crate) fn subscribe(&self) -> Subscription {
        Subscription {
            receiver: self.latest.subscribe(),
        }
    }

    pub(crate) fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Forgets what the last run found out about etcd, as a new run begins, and gives
    /// the run its writer: the only way to make one.
    pub(crate) fn begin_run(self: &Arc<Self>) -> Writer {
        let mut status = lock(&self.status);
        status.failure = None;
        status.relisting = None;
        status.confirmed = None;
        status.head_revision = None;
        Writer {
            store: self.clone(),
        }
    }

    /// Records that the engine ended without being stopped.
    pub(crate) fn record_failure(&self, failure: String) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        status.failure = Some(failure);
        status.connected = false;
    }

    /// Registers the metrics (again: a recorder may have been installed since).
    pub(crate) fn start_metrics(&self, prefix: &str) {
        self.metrics.store(Some(Metrics::new(prefix)));
    }

    /// Sets the gauges that change with time.
    pub(crate) fn refresh_gauges(&self) {
        if let Some(metrics) = self.metrics.load().as_ref() {
            let status = self.status();
            if let Some(at) = status.last_sync {
                metrics.seconds_since_sync.set(at.elapsed().as_secs_f64());
            }
            metrics
                .connected
                .set(if status.connected { 1.0 } else { 0.0 });
        }
    }

    /// The current snapshot and its publishes, for a typed binding.
    pub(crate) fn current(&self) -> Arc<Current> {
        self.current.clone()
    }

    /// A stream of changes, fed by a bounded mailbox.
    pub(crate) fn changes(&self) -> Changes {
        let mailbox = Arc::new(Mailbox::default());
        lock(&self.listeners).push(Arc::downgrade(&mailbox));
        Changes { mailbox }
    }

    /// The latest snapshot, then each newer one.
    pub(crate) fn snapshots(&self) -> Snapshots {
        Snapshots(WatchStream::new(self.subscribe().receiver))
    }

    /// Starts `callback` on a thread of its own, fed by a bounded mailbox.
    pub(crate) fn on_change(&self, callback: impl Fn(&ConfigChange) + Send + 'static) -> Listener {
        let mailbox = Arc::new(Mailbox::default());
        lock(&self.listeners).push(Arc::downgrade(&mailbox));
        let queue = mailbox.clone();
        std::thread::Builder::new()
            .name("etcd-config-listener".into())
            .spawn(move || {
                while let Some(change) = queue.pop() {
                    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| callback(&change))) {
                        tracing::error!(
                            event = events::CALLBACK_PANICKED,
                            revision = change.revision,
                            panic = %crate::error::panic_message(&*panic),
                            "an on_change callback panicked; it goes on with the next change"
                        );
                    }
                }
            })
            .expect("spawn a listener thread");
        Listener { mailbox }
    }
}

/// The changes of a configuration as a [`Stream`], from
/// [`changes`](crate::EtcdConfig::changes): what an [`on_change`](crate::EtcdConfig::on_change)
/// callback would be called with, behind the same bounded mailbox. Dropping it
/// unsubscribes; it ends when the configuration is dropped.
#[must_use = "a stream does nothing unless polled"]
#[derive(Debug)]
pub struct Changes {
    mailbox: Arc<Mailbox>,
}

impl Stream for Changes {
    type Item = ConfigChange;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ConfigChange>> {
        self.mailbox.poll_pop(cx.waker())
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        self.mailbox.close();
    }
}

/// The latest snapshot as a [`Stream`], from [`snapshots`](crate::EtcdConfig::snapshots):
/// the current one first, then each newer one; a slow reader skips to the latest. It
/// ends when the configuration is dropped.
#[must_use = "a stream does nothing unless polled"]
pub struct Snapshots(WatchStream<Arc<Snapshot>>);

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots").finish_non_exhaustive()
    }
}

impl Stream for Snapshots {
    type Item = Arc<Snapshot>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Arc<Snapshot>>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

/// A change listener registered with [`on_change`](crate::EtcdConfig::on_change).
/// Dropping it unsubscribes: the callback is not called again once the call running
/// now returns.
#[must_use = "dropping a Listener unsubscribes its callback at once"]
#[derive(Debug)]
pub struct Listener {
    mailbox: Arc<Mailbox>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.mailbox.close();
    }
}

/// One listener's bounded queue of changes.
#[derive(Debug, Default)]
struct Mailbox {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    changes: VecDeque<ConfigChange>,
    /// Value changes queued, in all.
    values: usize,
    /// Value changes in the folded difference at the front, if there is one.
    folded: usize,
    closed: bool,
    /// The task polling a [`Changes`] stream, to wake when a change arrives.
    waker: Option<Waker>,
}

impl Mailbox {
    /// Queues `change`; `false` once the listener is gone.
    fn push(&self, change: ConfigChange) -> bool {
        let mut queue = lock(&self.queue);
        if queue.closed {
            return false;
        }
        queue.values += change.changes.len();
        queue.changes.push_back(change);
        if queue.values - queue.folded > MAILBOX_VALUES {
            let folded = ConfigChange::fold(queue.changes.drain(..));
            let folded = folded.filter(|change| !change.changes.is_empty());
            queue.folded = folded.as_ref().map_or(0, |change| change.changes.len());
            queue.values = queue.folded;
            queue.changes.extend(folded);
        }
        let waker = queue.waker.take();
        drop(queue);
        self.ready.notify_one();
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// The next change; `None` once closed.
    fn pop(&self) -> Option<ConfigChange> {
        let mut queue = lock(&self.queue);
        loop {
            if queue.closed {
                return None;
            }
            if let Some(change) = queue.changes.pop_front() {
                queue.values -= change.changes.len();
                queue.folded = 0;
                return Some(change);
            }
            queue = self
                .ready
                .wait(queue)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// The next change, or `Pending` with `waker` registered; `None` once closed.
    fn poll_pop(&self, waker: &Waker) -> Poll<Option<ConfigChange>> {
        let mut queue = lock(&self.queue);
        if queue.closed {
            return Poll::Ready(None);
        }
        match queue.changes.pop_front() {
            Some(change) => {
                queue.values -= change.changes.len();
                queue.folded = 0;
                Poll::Ready(Some(change))
            }
            None => {
                queue.waker = Some(waker.clone());
                Poll::Pending
            }
        }
    }

    fn close(&self) {
        let mut queue = lock(&self.queue);
        queue.closed = true;
        queue.changes.clear();
        let waker = queue.waker.take();
        drop(queue);
        self.ready.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The engine's handle on the store: the only one that publishes. Not `Clone`.
#[derive(Debug)]
pub(crate) struct Writer {
    store: Arc<Store>,
}

impl Writer {
    /// The metric handles, once started.
    pub(crate) fn metrics(&self) -> Option<Arc<Metrics>> {
        self.store.metrics.load_full()
    }

    pub(crate) fn publish(&self, snapshot: Arc<Snapshot>) {
        if let Some(metrics) = self.store.metrics.load().as_ref() {
            metrics.revision.set(snapshot.revision() as f64);
            metrics.keys.set(snapshot.len() as f64);
        }
        self.store.current.publish(snapshot.clone());
        self.store.latest.send_replace(snapshot);
    }

    /// Reads the status without copying it.
    pub(crate) fn status<R>(&self, read: impl FnOnce(&Status) -> R) -> R {
        read(
            &self
                .store
                .status
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    pub(crate) fn update_status(&self, update: impl FnOnce(&mut Status)) {
        update(
            &mut self
                .store
                .status
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    }

    /// Queues `change` for every listener; forgets the ones that are gone.
    pub(crate) fn notify(&self, change: ConfigChange) {
        lock(&self.store.listeners).retain(|mailbox| {
            mailbox
                .upgrade()
                .is_some_and(|mailbox| mailbox.push(change.clone()))
        });
    }
}

/// Receives the latest snapshot whenever a new one is published.
///
/// Slow receivers skip intermediate snapshots: they always see the latest one.
#[derive(Debug, Clone)]
pub struct Subscription {
    receiver: watch::Receiver<Arc<Snapshot>>,
}

impl Subscription {
    /// The latest snapshot, marking it seen.
    pub fn latest(&mut self) -> Arc<Snapshot> {
        self.receiver.borrow_and_update().clone()
    }

    /// Waits for a snapshot newer than the last one seen.
    ///
    /// `None` once the configuration is dropped.
    pub async fn changed(&mut self) -> Option<Arc<Snapshot>> {
        self.receiver.changed().await.ok()?;
        Some(self.latest())
    }

    /// Waits until a snapshot satisfies `condition` (checked on the current one first).
    ///
    /// `None` once the configuration is dropped.
    pub async fn wait_for(
        &mut self,
        mut condition: impl FnMut(&Snapshot) -> bool,
    ) -> Option<Arc<Snapshot>> {
        let snapshot = self
            .receiver
            .wait_for(|snapshot| condition(snapshot))
            .await
            .ok()?;
        Some(snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::snapshot::ValueChange;
    use crate::value::Value;

    #[test]
    fn a_cached_snapshot_is_the_current_one_at_each_load_and_lets_the_old_go_then() {
        let store = Store::new();
        let writer = store.begin_run();
        let mut cached = CachedSnapshot::new(store.current());
        assert_eq!(format!("{cached:?}"), "CachedSnapshot { .. }");
        assert_eq!(cached.load().revision(), 0);
        let publish = |revision| {
            let snapshot = Snapshot::new(revision, crate::snapshot::Entries::default());
            writer.publish(Arc::new(snapshot));
        };
        publish(5);
        assert_eq!(cached.load().revision(), 5);
        assert!(Arc::ptr_eq(cached.load(), &store.load()));
        let held = Arc::downgrade(cached.load());
        publish(6);
        assert!(held.upgrade().is_some(), "kept until the next load");
        assert_eq!(cached.load().revision(), 6);
        assert!(held.upgrade().is_none(), "let go at the next load");
        let moved = std::thread::spawn(move || cached.load().revision());
        assert_eq!(moved.join().unwrap(), 6);
    }

    /// Revision `revision` sets name `n{revision % names}` to the revision, from what it
    /// held before.
    fn change(revision: i64, names: i64, last: &mut BTreeMap<String, i64>) -> ConfigChange {
        let name = format!("n{}", revision % names);
        let old = last.insert(name.clone(), revision);
        ConfigChange {
            revision,
            changes: vec![ValueChange {
                name: Arc::from(name),
                old: old.map(Value::Integer),
                new: Some(Value::Integer(revision)),
                secret: false,
            }],
        }
    }

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_mailbox_folds_only_past_its_bound_of_unfolded_values_and_pops_give_room_back() {
        let mailbox = Mailbox::default();
        let mut last = BTreeMap::new();
        let bound = i64::try_from(MAILBOX_VALUES).unwrap();
        let queued = |mailbox: &Mailbox| lock(&mailbox.queue).changes.len();
        // Each change sets one name of its own: the bound is reached, not passed.
        for revision in 1..=bound {
            assert!(mailbox.push(change(revision, 1_000_000, &mut last)));
        }
        assert_eq!(queued(&mailbox), MAILBOX_VALUES);
        // Emptied, it has room for as many again.
        for _ in 0..MAILBOX_VALUES {
            assert!(mailbox.pop().is_some());
        }
        for revision in bound + 1..=2 * bound {
            assert!(mailbox.push(change(revision, 1_000_000, &mut last)));
        }
        assert_eq!(queued(&mailbox), MAILBOX_VALUES);
        // One more folds everything queued into one difference.
        assert!(mailbox.push(change(2 * bound + 1, 1_000_000, &mut last)));
        assert_eq!(queued(&mailbox), 1);
        // The folded values do not count against the bound: as many again queue unfolded.
        for revision in 2 * bound + 2..=3 * bound + 1 {
            assert!(mailbox.push(change(revision, 1_000_000, &mut last)));
        }
        assert_eq!(queued(&mailbox), MAILBOX_VALUES + 1);
        let folded = mailbox.pop().unwrap();
        assert_eq!(folded.revision, 2 * bound + 1);
        assert_eq!(folded.changes.len(), MAILBOX_VALUES + 1);
    }

    #[test]
    fn a_blocked_listener_gets_the_net_difference_in_bounded_memory() {
        let store = Store::new();
        let writer = store.begin_run();
        let gate = Arc::new(Mutex::new(()));
        let blocked = gate.lock().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (sink, door) = (seen.clone(), gate.clone());
        let listener = store.on_change(move |change| {
            drop(door.lock().unwrap());
            sink.lock().unwrap().push(change.clone());
        });
        let mut last = BTreeMap::new();
        writer.notify(change(1, 1000, &mut last));
        wait_until("the listener to take the first change", || {
            lock(&listener.mailbox.queue).changes.is_empty()
        });
        let mut largest = (0, 0);
        for revision in 2..=50_000 {
            writer.notify(change(revision, 1000, &mut last));
            let queue = lock(&listener.mailbox.queue);
            largest.0 = largest.0.max(queue.changes.len());
            largest.1 = largest.1.max(queue.values);
        }
        assert!(largest.0 <= MAILBOX_VALUES + 1, "{largest:?}");
        assert!(
            largest.1 <= MAILBOX_VALUES + 1000,
            "at most one folded entry per name beyond the bound: {largest:?}"
        );
        drop(blocked);
        wait_until("the last change", || {
            seen.lock().unwrap().last().map(|c| c.revision) == Some(50_000)
        });
        // The history the listener saw is consistent and ends where the store is.
        let mut view: BTreeMap<String, i64> = BTreeMap::new();
        let seen = seen.lock().unwrap();
        assert!(seen.len() < 50_000, "some changes were folded");
        for change in seen.iter() {
            for item in &change.changes {
                let old = view.get(&*item.name).copied().map(Value::Integer);
                assert_eq!(old, item.old, "{} at {}", item.name, change.revision);
                match &item.new {
                    Some(Value::Integer(new)) => view.insert(item.name.to_string(), *new),
                    other => panic!("unexpected {other:?}"),
                };
            }
        }
        assert_eq!(view, last);
    }

    #[test]
    fn a_dropped_listener_is_called_no_more_and_forgotten() {
        let store = Store::new();
        let writer = store.begin_run();
        let calls = Arc::new(Mutex::new(0));
        let sink = calls.clone();
        let listener = store.on_change(move |_| *sink.lock().unwrap() += 1);
        let mut last = BTreeMap::new();
        writer.notify(change(1, 1, &mut last));
        wait_until("the first call", || *calls.lock().unwrap() == 1);
        let mailbox = Arc::downgrade(&listener.mailbox);
        drop(listener);
        writer.notify(change(2, 1, &mut last));
        wait_until("the listener thread to end", || mailbox.upgrade().is_none());
        assert_eq!(*calls.lock().unwrap(), 1);
        assert!(lock(&store.listeners).is_empty(), "the store forgot it");
    }

    #[test]
    fn a_panicking_listener_is_called_again_for_the_next_change() {
        let store = Store::new();
        let writer = store.begin_run();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let sink = calls.clone();
        let _listener = store.on_change(move |change| {
            sink.lock().unwrap().push(change.revision);
            assert!(change.revision != 1, "a broken callback");
        });
        let mut last = BTreeMap::new();
        writer.notify(change(1, 1, &mut last));
        writer.notify(change(2, 1, &mut last));
        wait_until("both calls", || calls.lock().unwrap().len() == 2);
    }
}
