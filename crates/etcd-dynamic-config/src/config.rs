//! [`EtcdConfig`]: the configuration of one prefix, loaded from etcd and kept current.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::connection::Connection;
use crate::engine::Engine;
use crate::engine::state::{Rejection, State};
use crate::error::{Error, Result};
use crate::schema::Schema;
use crate::settings::{EtcdSettings, parse_root_key};
use crate::snapshot::{ConfigChange, Snapshot, Value};
use crate::store::{Store, Subscription, Writer};

/// How long [`EtcdConfig::start`] waits for etcd by default.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(5);

/// The configuration of one etcd prefix, served in-process.
///
/// Cheap to clone: clones share one engine and one snapshot. Reads never touch the
/// network and never take a lock.
///
/// # Consistency
///
/// A [`Snapshot`] always equals the state of the prefix at one etcd revision: keys
/// written in one transaction appear together. Load one snapshot and use it for a whole
/// request to read values that belong together.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: EtcdSettings,
    schema: Arc<Schema>,
    prefix: String,
    start_timeout: Duration,
    store: Arc<Store>,
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(running) = self
            .running
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            running.stop.send_replace(true);
        }
    }
}

/// What [`EtcdConfig::start`] loaded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StartReport {
    /// The etcd revision of the first snapshot.
    pub revision: i64,
    /// How many names were loaded.
    pub loaded: usize,
    /// Values that were rejected (their names are absent or at their defaults).
    pub rejected: Vec<Rejection>,
    /// Names that several keys map to, with the keys (the first one wins).
    pub collisions: Vec<(String, Vec<String>)>,
}

impl EtcdConfig {
    /// A builder; without [`settings`](EtcdConfigBuilder::settings) it reads the
    /// environment.
    #[must_use]
    pub fn builder() -> EtcdConfigBuilder {
        EtcdConfigBuilder::default()
    }

    /// The prefix this configuration owns.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Loads the prefix with one ranged read at one revision, then keeps it current with a
    /// watch from the next revision, in the background on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyStarted`]; [`Error::StartTimeout`] when etcd does not answer within
    /// the start timeout; [`Error::Unavailable`] or [`Error::Refused`] from etcd;
    /// [`Error::Setting`] for `USE_LOCAL_CONFIG=true`, which this version cannot serve
    /// yet (it needs a schema that names the values to read from env vars).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime; use [`crate::blocking::EtcdConfig`] there.
    pub async fn start(&self) -> Result<StartReport> {
        let inner = &self.inner;
        if inner.settings.use_local_config() {
            return Err(Error::Setting {
                setting: crate::settings::USE_LOCAL_CONFIG,
                reason: "local mode (values from env vars only, no etcd) is not available yet: \
                         it needs a schema that names the values; unset USE_LOCAL_CONFIG to \
                         read from etcd"
                    .to_owned(),
            });
        }
        if inner.lock_running().is_some() {
            return Err(Error::AlreadyStarted);
        }
        // At error level so every event the engine emits carries the prefix, whatever the filter.
        let span = tracing::error_span!("etcd_config", prefix = %inner.prefix);
        let load = async {
            let connection = Connection::connect(&inner.settings).await?;
            let state = State::new(inner.schema.clone(), &inner.prefix);
            let mut engine = Engine::new(connection, state, Writer::new(inner.store.clone()));
            let next = engine.load().await?;
            Ok::<_, Error>((engine, next))
        };
        let (engine, next) = tokio::time::timeout(inner.start_timeout, load)
            .instrument(span.clone())
            .await
            .map_err(|_| Error::StartTimeout(inner.start_timeout))??;

        let report = StartReport {
            revision: engine.state().revision(),
            loaded: inner.store.with(Snapshot::len),
            rejected: engine.state().rejections().cloned().collect(),
            collisions: engine
                .state()
                .collisions()
                .into_iter()
                .map(|(name, keys)| {
                    (
                        name.to_string(),
                        keys.iter().map(|k| k.to_string()).collect(),
                    )
                })
                .collect(),
        };
        span.in_scope(|| {
            tracing::info!(
                event = "started",
                source = "etcd",
                revision = report.revision,
                loaded = report.loaded,
                rejected = report.rejected.len(),
                "configuration loaded"
            );
        });

        let (stop, stop_receiver) = watch::channel(false);
        let task = tokio::spawn(engine.run(next, stop_receiver).instrument(span));
        let mut running = inner.lock_running();
        if running.is_some() {
            // Another start won the race; this engine goes away.
            stop.send_replace(true);
            return Err(Error::AlreadyStarted);
        }
        *running = Some(Running { stop, task });
        Ok(report)
    }

    /// Stops watching etcd. The last snapshot keeps serving; [`start`](Self::start) may
    /// be called again.
    pub async fn stop(&self) {
        let running = self.inner.lock_running().take();
        if let Some(running) = running {
            running.stop.send_replace(true);
            let _ = running.task.await;
        }
    }

    /// Every name with its current value, sorted by name (the Python method).
    pub fn get_all_configs(&self) -> BTreeMap<String, Value> {
        self.inner.store.with(Snapshot::to_map)
    }

    /// The current snapshot: one atomic load, no lock, no network.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.store.load()
    }

    /// A receiver of the latest snapshot.
    pub fn subscribe(&self) -> Subscription {
        self.inner.store.subscribe()
    }

    /// Calls `callback` after every applied revision that changed a value, in revision
    /// order, with each changed name's old and new value.
    ///
    /// Callbacks run one after another on a dedicated thread: a slow callback delays the
    /// next callbacks, never the engine; a panicking one is logged and skipped.
    pub fn on_change(&self, callback: impl Fn(&ConfigChange) + Send + Sync + 'static) {
        self.inner.store.on_change(Arc::new(callback));
    }
}

impl EtcdConfig {
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }
}

impl Inner {
    fn lock_running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Builds an [`EtcdConfig`].
#[derive(Debug, Default)]
pub struct EtcdConfigBuilder {
    settings: Option<EtcdSettings>,
    schema: Option<Schema>,
    prefix: Option<String>,
    start_timeout: Option<Duration>,
}

impl EtcdConfigBuilder {
    /// Connection settings (default: [`EtcdSettings::from_env`]).
    #[must_use]
    pub fn settings(mut self, settings: EtcdSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// How keys map to names (default: [`Schema::auto_discover`]).
    #[must_use]
    pub fn schema(mut self, schema: Schema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// The prefix to load, overriding the settings' root key.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// How long [`EtcdConfig::start`] waits for etcd (default 5 seconds).
    #[must_use]
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = Some(timeout);
        self
    }

    /// Checks the settings and builds the configuration (nothing is contacted yet).
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] for malformed settings or prefix.
    pub fn build(self) -> Result<EtcdConfig> {
        let settings = match self.settings {
            Some(settings) => settings,
            None => EtcdSettings::from_env()?,
        };
        let prefix = match self.prefix {
            Some(prefix) => parse_root_key(&prefix)?,
            None => settings.prefix(),
        };
        Ok(EtcdConfig {
            inner: Arc::new(Inner {
                settings,
                schema: Arc::new(self.schema.unwrap_or_default()),
                prefix,
                start_timeout: self.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT),
                store: Store::new(),
                running: Mutex::new(None),
            }),
        })
    }
}
