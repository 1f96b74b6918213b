//! Where snapshots are published: one [`Writer`] (the engine), any number of readers.
//!
//! Readers load the current snapshot with one atomic operation (`arc-swap`), wait for the
//! next one through a [`Subscription`], or get every change through a callback run on a
//! dedicated thread, so a slow or panicking callback never stalls the engine.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use crate::engine::state::{Rejection, RevisionRejection};
use crate::observe::metrics::Metrics;
use crate::snapshot::{ConfigChange, Snapshot};

/// What the engine knows about its own state: the basis of health reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    /// Values rejected now (the names hold their last good value or fallback).
    pub(crate) rejected: Vec<Rejection>,
    /// The latest revision that broke a check, while no valid one followed.
    pub(crate) rejected_revision: Option<RevisionRejection>,
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
    /// Where the served values come from; `None` before `start`.
    pub(crate) source: Option<crate::config::StartSource>,
    /// Whether the engine runs (false before `start` and after `stop`).
    pub(crate) running: bool,
}

type Callback = Arc<dyn Fn(&ConfigChange) + Send + Sync + 'static>;
type Rebuild = Box<dyn Fn(&Snapshot) + Send + Sync + 'static>;

/// The published state, shared by the engine and every handle.
pub(crate) struct Store {
    current: ArcSwap<Snapshot>,
    latest: watch::Sender<Arc<Snapshot>>,
    callbacks: Arc<Mutex<Vec<Callback>>>,
    status: Mutex<Status>,
    /// The metric handles, from `start` on (they bind to the recorder installed then).
    metrics: ArcSwapOption<Metrics>,
    /// Typed bindings, rebuilt on every publish.
    bindings: Mutex<Vec<Rebuild>>,
    /// Started with the first callback; changes are queued only when someone listens.
    dispatch: OnceLock<mpsc::Sender<ConfigChange>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) fn new() -> Arc<Self> {
        let empty = Arc::new(Snapshot::default());
        Arc::new(Self {
            current: ArcSwap::new(empty.clone()),
            latest: watch::Sender::new(empty),
            callbacks: Arc::default(),
            bindings: Mutex::default(),
            status: Mutex::default(),
            metrics: ArcSwapOption::empty(),
            dispatch: OnceLock::new(),
        })
    }

    /// The current snapshot: one atomic load, no lock.
    pub(crate) fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Calls `f` with the current snapshot without touching its reference count.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.current.load())
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

    /// Runs `rebuild` on every snapshot published from now on.
    pub(crate) fn on_publish(&self, rebuild: Rebuild) {
        self.bindings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(rebuild);
    }

    pub(crate) fn on_change(&self, callback: Callback) {
        self.callbacks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(callback);
        self.dispatch.get_or_init(|| {
            let (sender, receiver) = mpsc::channel();
            let callbacks = self.callbacks.clone();
            std::thread::Builder::new()
                .name("etcd-config-callbacks".into())
                .spawn(move || run_callbacks(&receiver, &callbacks))
                .expect("spawn the callback thread");
            sender
        });
    }
}

fn run_callbacks(receiver: &mpsc::Receiver<ConfigChange>, callbacks: &Mutex<Vec<Callback>>) {
    while let Ok(change) = receiver.recv() {
        let current = callbacks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for callback in current {
            if catch_unwind(AssertUnwindSafe(|| callback(&change))).is_err() {
                tracing::error!(
                    event = "callback_panicked",
                    revision = change.revision,
                    "an on_change callback panicked; the engine goes on"
                );
            }
        }
    }
}

/// The engine's handle on the store: the only one that publishes. Not `Clone`.
#[derive(Debug)]
pub(crate) struct Writer {
    store: Arc<Store>,
}

impl Writer {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// The metric handles, once started.
    pub(crate) fn metrics(&self) -> Option<Arc<Metrics>> {
        self.store.metrics.load_full()
    }

    pub(crate) fn publish(&self, snapshot: Arc<Snapshot>) {
        if let Some(metrics) = self.store.metrics.load().as_ref() {
            metrics.revision.set(snapshot.revision() as f64);
            metrics.keys.set(snapshot.len() as f64);
        }
        self.store.current.store(snapshot.clone());
        for rebuild in self
            .store
            .bindings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            rebuild(&snapshot);
        }
        self.store.latest.send_replace(snapshot);
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

    pub(crate) fn notify(&self, change: ConfigChange) {
        if let Some(dispatch) = self.store.dispatch.get() {
            // The thread only stops when the store is dropped, and this writer holds it.
            let _ = dispatch.send(change);
        }
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
