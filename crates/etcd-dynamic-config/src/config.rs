//! [`EtcdConfig`]: the configuration of one prefix, loaded from etcd and kept current.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::binding::Binding;
use crate::connection::Connection;
use crate::engine::Engine;
use crate::engine::state::{Rejection, RevisionRejection, State};
use crate::error::{Error, Result};
use crate::schema::{KeyMap, Schema};
use crate::settings::{EtcdSettings, parse_root_key};
use crate::snapshot::{ConfigChange, Snapshot, Value};
use crate::store::{Status, Store, Subscription, Writer};

/// How long [`EtcdConfig::start`] waits for etcd by default.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads an environment variable: the process environment, or one a test supplies.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The configuration of one etcd prefix, served in-process.
///
/// Cheap to clone: clones share one engine and one snapshot. Reads never touch the
/// network and never take a lock.
///
/// # Consistency
///
/// A [`Snapshot`] always equals the state of the prefix at one etcd revision (after
/// coercion): keys written in one transaction appear together. Load one snapshot and use
/// it for a whole request to read values that belong together.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    inner: Arc<Inner>,
}

struct Inner {
    settings: EtcdSettings,
    keys: KeyMap,
    start_timeout: Duration,
    env: EnvLookup,
    store: Arc<Store>,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("prefix", &self.keys.prefix_dir())
            .field("settings", &self.settings)
            .field("start_timeout", &self.start_timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Running {
    stop: watch::Sender<bool>,
    /// The engine; `None` in local mode, which has nothing to run.
    task: Option<JoinHandle<()>>,
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

/// Where the configuration at start came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StartSource {
    /// etcd, over env vars and defaults for names etcd does not hold.
    Etcd,
    /// Env vars and defaults only (`USE_LOCAL_CONFIG=true`); etcd is never contacted.
    Local,
}

/// What [`EtcdConfig::start`] loaded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StartReport {
    /// Where the values came from.
    pub source: StartSource,
    /// The etcd revision of the first snapshot (0 in local mode).
    pub revision: i64,
    /// How many names have a value.
    pub loaded: usize,
    /// Declared names that no source gave a value.
    pub missing: Vec<String>,
    /// Values that were rejected (their names hold their env var, default, or nothing).
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

    /// The prefix this configuration owns, with a trailing `/`.
    pub fn prefix(&self) -> &str {
        self.inner.keys.prefix_dir()
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        self.inner.keys.schema()
    }

    /// Loads the prefix with one ranged read at one revision, then keeps it current with a
    /// watch from the next revision, in the background on the current tokio runtime.
    /// Names etcd does not hold take their env var, else their default.
    ///
    /// With `USE_LOCAL_CONFIG=true` the values come from env vars and defaults only, with
    /// the same coercion and validation, and etcd is never contacted.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyStarted`]; [`Error::StartTimeout`] when etcd does not answer within
    /// the start timeout; [`Error::Unavailable`] or [`Error::Refused`] from etcd;
    /// [`Error::Invalid`] when a required name has no value or a check fails.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime; use [`crate::blocking::EtcdConfig`] there.
    pub async fn start(&self) -> Result<StartReport> {
        let inner = &self.inner;
        if inner.lock_running().is_some() {
            return Err(Error::AlreadyStarted);
        }
        // At error level so every event the engine emits carries the prefix, whatever the
        // filter.
        let span = tracing::error_span!("etcd_config", prefix = %inner.keys.prefix_dir());
        let schema = inner.keys.schema();
        let (fallback, rejected) = schema.fallback(&*inner.env);

        let (report, engine) = if inner.settings.use_local_config() {
            let snapshot = Arc::new(Snapshot::new(0, fallback));
            schema
                .validate(&snapshot)
                .map_err(|reasons| Error::Invalid { reasons })?;
            let writer = Writer::new(inner.store.clone());
            writer.publish(snapshot);
            writer.set_status(Status {
                rejected: rejected.clone(),
                rejected_revision: None,
            });
            let report = self.report(StartSource::Local, 0, rejected, Vec::new());
            (report, None)
        } else {
            let load = async {
                let connection = Connection::connect(&inner.settings).await?;
                let state =
                    State::new(inner.keys.clone(), fallback).with_fallback_rejections(rejected);
                let mut engine = Engine::new(connection, state, Writer::new(inner.store.clone()));
                let next = engine.load().await?;
                Ok::<_, Error>((engine, next))
            };
            let (engine, next) = tokio::time::timeout(inner.start_timeout, load)
                .instrument(span.clone())
                .await
                .map_err(|_| Error::StartTimeout(inner.start_timeout))??;
            let state = engine.state();
            if let Some(rejection) = state.rejected_revision() {
                return Err(Error::Invalid {
                    reasons: rejection.reasons.clone(),
                });
            }
            let rejected = state.rejections().cloned().collect();
            let collisions = state
                .collisions()
                .into_iter()
                .map(|(name, keys)| {
                    (
                        name.to_string(),
                        keys.iter().map(|k| k.to_string()).collect(),
                    )
                })
                .collect();
            let report = self.report(StartSource::Etcd, state.revision(), rejected, collisions);
            (report, Some((engine, next)))
        };

        span.in_scope(|| {
            for rejection in &report.rejected {
                tracing::warn!(
                    event = "update_rejected",
                    name = %rejection.name,
                    source = %rejection.source,
                    reason = %rejection.reason,
                    "a value was rejected at start"
                );
            }
            tracing::info!(
                event = "started",
                source = ?report.source,
                revision = report.revision,
                loaded = report.loaded,
                missing = report.missing.len(),
                rejected = report.rejected.len(),
                "configuration loaded"
            );
        });

        let (stop, stop_receiver) = watch::channel(false);
        let task = engine
            .map(|(engine, next)| tokio::spawn(engine.run(next, stop_receiver).instrument(span)));
        let mut running = inner.lock_running();
        if running.is_some() {
            // Another start won the race; this engine goes away.
            stop.send_replace(true);
            return Err(Error::AlreadyStarted);
        }
        *running = Some(Running { stop, task });
        Ok(report)
    }

    fn report(
        &self,
        source: StartSource,
        revision: i64,
        rejected: Vec<Rejection>,
        collisions: Vec<(String, Vec<String>)>,
    ) -> StartReport {
        let snapshot = self.snapshot();
        StartReport {
            source,
            revision,
            loaded: snapshot.len(),
            missing: self
                .schema()
                .names()
                .filter(|spec| snapshot.get(spec.name()).is_none())
                .map(|spec| spec.name().to_owned())
                .collect(),
            rejected,
            collisions,
        }
    }

    /// Stops watching etcd. The last snapshot keeps serving; [`start`](Self::start) may
    /// be called again.
    pub async fn stop(&self) {
        let running = self.inner.lock_running().take();
        if let Some(running) = running {
            running.stop.send_replace(true);
            if let Some(task) = running.task {
                let _ = task.await;
            }
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

    /// The configuration read as `T` (names split at `.` into nested structs), rebuilt on
    /// every applied revision; [`Binding::load`] is one atomic load.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] when the current snapshot does not read as `T` (call it after
    /// [`start`](Self::start), or give `T` defaults).
    pub fn bind<T: DeserializeOwned + Send + Sync + 'static>(&self) -> Result<Binding<T>> {
        let binding = Binding::new(self.snapshot().deserialize::<T>()?);
        let target = binding.clone();
        self.inner
            .store
            .on_publish(Box::new(move |snapshot| target.rebuild(snapshot)));
        // A revision published between the first read and the registration is not missed.
        binding.rebuild(&self.snapshot());
        Ok(binding)
    }

    /// The values rejected now, each with its name, source and reason (the names hold
    /// their last good value, env var or default).
    pub fn rejections(&self) -> Vec<Rejection> {
        self.inner.store.status().rejected
    }

    /// The latest revision that broke a check over the whole configuration, while no
    /// valid revision followed it (the last good snapshot is serving).
    pub fn rejected_revision(&self) -> Option<RevisionRejection> {
        self.inner.store.status().rejected_revision
    }

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
#[derive(Default)]
pub struct EtcdConfigBuilder {
    settings: Option<EtcdSettings>,
    schema: Option<Schema>,
    prefix: Option<String>,
    start_timeout: Option<Duration>,
    env: Option<EnvLookup>,
}

impl std::fmt::Debug for EtcdConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfigBuilder")
            .field("settings", &self.settings)
            .field("schema", &self.schema)
            .field("prefix", &self.prefix)
            .field("start_timeout", &self.start_timeout)
            .field("custom_env", &self.env.is_some())
            .finish()
    }
}

impl EtcdConfigBuilder {
    /// Connection settings (default: read from the environment).
    #[must_use]
    pub fn settings(mut self, settings: EtcdSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// How keys map to names and values (default: [`Schema::auto_discover`]).
    #[must_use]
    pub fn schema(mut self, schema: Schema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// The prefix to load, overriding the schema's and the settings' root key.
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

    /// Where env vars are read (default: the process environment): for the settings when
    /// none are given, for env var fallbacks and for local mode.
    #[must_use]
    pub fn env(mut self, lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        self.env = Some(Arc::new(lookup));
        self
    }

    /// Checks the settings and schema and builds the configuration (nothing is contacted
    /// yet).
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] for malformed settings or prefix; [`Error::Schema`] for an
    /// explicit key outside the prefix.
    pub fn build(self) -> Result<EtcdConfig> {
        let env: EnvLookup = self
            .env
            .unwrap_or_else(|| Arc::new(|name: &str| std::env::var(name).ok()));
        let settings = match self.settings {
            Some(settings) => settings,
            None => EtcdSettings::from_lookup(&*env)?,
        };
        let schema = Arc::new(self.schema.unwrap_or_else(Schema::auto_discover));
        let prefix = match self.prefix.as_deref().or(schema.prefix()) {
            Some(prefix) => parse_root_key(prefix)?,
            None => settings.prefix(),
        };
        let keys = schema.bind(&prefix)?;
        Ok(EtcdConfig {
            inner: Arc::new(Inner {
                settings,
                keys,
                start_timeout: self.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT),
                env,
                store: Store::new(),
                running: Mutex::new(None),
            }),
        })
    }
}

/// The process-wide ControlUnit configuration built from the environment, like the
/// Python `etcd_config`: [`Schema::control_unit`] under `EtcdSettings__RootKey`.
///
/// # Errors
///
/// The settings error, when the environment is malformed (the same one on every call).
pub fn etcd_config() -> std::result::Result<&'static EtcdConfig, &'static Error> {
    static DEFAULT: LazyLock<Result<EtcdConfig>> =
        LazyLock::new(|| EtcdConfig::builder().schema(Schema::control_unit()).build());
    DEFAULT.as_ref()
}
