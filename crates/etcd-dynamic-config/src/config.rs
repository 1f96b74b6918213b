//! [`EtcdConfig`]: the configuration of one prefix, loaded from etcd and kept current.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::binding::Binding;
use crate::cache::CacheFile;
use crate::connection::Connection;
use crate::engine::state::{Start, State};
use crate::engine::{Engine, Starting};
use crate::error::{Error, Result};
use crate::observe::events;
use crate::observe::health::{Health, HealthState, SYNC_BOUND};
use crate::report::{Rejection, RevisionRejection, StartReport, StartSource};
use crate::schema::{KeyMap, Schema};
use crate::settings::EtcdSettings;
use crate::snapshot::{ConfigChange, Snapshot, Value};
use crate::store::{CachedSnapshot, Changes, Listener, Snapshots, Store, Subscription};

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
    env: EnvLookup,
    store: Arc<Store>,
    running: Mutex<Option<Running>>,
    generations: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("prefix", &self.keys.prefix_dir())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Running {
    /// Which `start` this is: a `stop` between two starts is told apart.
    generation: u64,
    /// Ends the engine and the tasks beside it.
    cancel: CancellationToken,
    /// The engine, its watcher, the gauge ticker and the cache file writer.
    tasks: TaskTracker,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(running) = self
            .running
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            running.cancel.cancel();
        }
    }
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
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let generation = {
            let mut running = inner.lock_running();
            if running.is_some() {
                return Err(Error::AlreadyStarted);
            }
            let generation = inner
                .generations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Registered before etcd is asked, so that `stop` meanwhile is heard.
            *running = Some(Running {
                generation,
                cancel: cancel.clone(),
                tasks: tasks.clone(),
            });
            generation
        };
        let started = self.start_run(&cancel, &tasks).await;
        if started.is_err() {
            cancel.cancel();
            let mut running = inner.lock_running();
            if running.as_ref().map(|r| r.generation) == Some(generation) {
                *running = None;
            }
        }
        started
    }

    async fn start_run(
        &self,
        cancel: &CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<StartReport> {
        let inner = &self.inner;
        // What an earlier run served: listeners hear the difference to it, and it keeps
        // serving when etcd is away now.
        let previous = inner
            .store
            .status()
            .source
            .map(|source| (source, inner.store.load()));
        let writer = inner.store.begin_run();
        // At error level so every event the engine emits carries the prefix, whatever the
        // filter.
        let span = tracing::error_span!("etcd_config", prefix = %inner.keys.prefix_dir());
        let schema = inner.keys.schema();
        inner.store.start_metrics(inner.keys.prefix_dir());
        let (fallback, rejected) = schema.fallback(&*inner.env);

        if inner.settings.use_local_config() {
            let snapshot = Arc::new(Snapshot::new(0, fallback));
            schema
                .validate(&snapshot)
                .map_err(|reasons| Error::Invalid { reasons })?;
            writer.publish(snapshot);
            writer.update_status(|status| {
                status.rejected.clone_from(&rejected);
                status.source = Some(StartSource::Local);
            });
            let report = self.local_report(rejected);
            span.in_scope(|| report.log());
            return Ok(report);
        }

        let mut state = State::new(inner.keys.clone(), fallback)
            .with_fallback_rejections(rejected)
            .member(inner.settings.announce().cloned())
            .starting(Start {
                fail_fast: inner.settings.fail_fast(),
                resumed: previous
                    .as_ref()
                    .map(|(source, snapshot)| (*source, snapshot.revision())),
            });
        if let Some((_, previous)) = &previous {
            state = state.serving(previous.entries().clone());
        }
        let engine = Engine::new(Connection::new(&inner.settings), state, writer);
        let cache = inner.cache_file();
        let (reply, replied) = oneshot::channel();
        let starting = Starting {
            timeout: inner.settings.start_timeout(),
            cache: cache.clone(),
            reply,
        };
        let run = tasks.spawn(
            Box::new(engine)
                .run(starting, cancel.clone())
                .instrument(span.clone()),
        );
        self.watch_engine(run, tasks, span.clone());
        let store = inner.store.clone();
        let ticks_cancel = cancel.clone();
        tasks.spawn(async move {
            // Gauges that change with time alone.
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = ticks_cancel.cancelled() => return,
                    _ = ticks.tick() => store.refresh_gauges(),
                }
            }
        });
        let report = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(Error::Stopped),
            replied = replied => replied.unwrap_or_else(|_| {
                Err(Error::Stopped)
            })?,
        };
        if let Some(cache) = cache {
            // A snapshot from etcd is written, not one the cache file or a fallback gave.
            let written = if report.source == StartSource::Etcd {
                0
            } else {
                report.revision
            };
            let writer =
                crate::cache::keep_written(cache, self.subscribe(), written, cancel.clone());
            tasks.spawn(writer.instrument(span.clone()));
        }
        if let Some(announce) = inner.settings.announce() {
            // Weak: the record must not keep a dropped configuration alive.
            let weak = Arc::downgrade(&self.inner);
            let observe: crate::announce::Observe = Arc::new(move || {
                let config = EtcdConfig {
                    inner: weak.upgrade()?,
                };
                Some((config.health(), config.snapshot()))
            });
            let (first, announced) = oneshot::channel();
            let announcer = crate::announce::keep_announced(
                announce.clone(),
                inner.settings.clone(),
                inner.keys.prefix_dir().to_string(),
                observe,
                self.subscribe(),
                first,
                cancel.clone(),
            );
            tasks.spawn(announcer.instrument(span));
            // Started from etcd, the instance is in the fleet when start returns: an
            // operator's `status` or a rollout right after sees it. The wait is bounded
            // by the first write's own timeout (a third of the TTL); from a fallback etcd
            // is away, and the record follows when it is back.
            if report.source == StartSource::Etcd {
                tokio::select! {
                    () = cancel.cancelled() => return Err(Error::Stopped),
                    _ = announced => {}
                }
            }
        }
        Ok(report)
    }

    /// Records an engine that ends without being stopped: a defect must not look like a
    /// quiet, synced configuration.
    fn watch_engine(&self, run: JoinHandle<()>, tasks: &TaskTracker, span: tracing::Span) {
        let store = self.inner.store.clone();
        tasks.spawn(async move {
            if let Err(error) = run.await {
                let failure = if error.is_panic() {
                    format!(
                        "it panicked: {}",
                        crate::error::panic_message(&*error.into_panic())
                    )
                } else {
                    "it was cancelled".to_owned()
                };
                span.in_scope(|| {
                    tracing::error!(
                        event = events::ENGINE_FAILED,
                        failure = %failure,
                        "the engine ended without being stopped; nothing updates the configuration"
                    );
                });
                store.record_failure(failure);
            }
        });
    }

    /// What a local start loaded: env vars and defaults.
    fn local_report(&self, rejected: Vec<Rejection>) -> StartReport {
        let snapshot = self.snapshot();
        StartReport {
            source: StartSource::Local,
            revision: 0,
            loaded: snapshot.len(),
            missing: self
                .schema()
                .names()
                .filter(|spec| snapshot.get(spec.name()).is_none())
                .map(|spec| spec.name().to_owned())
                .collect(),
            rejected,
            collisions: Vec::new(),
            etcd_error: None,
            cache_error: None,
        }
    }

    /// Stops watching etcd. The last snapshot keeps serving; [`start`](Self::start) may
    /// be called again.
    pub async fn stop(&self) {
        let running = self.inner.lock_running().take();
        if let Some(running) = running {
            running.cancel.cancel();
            running.tasks.close();
            // The engine has ended and the last snapshot is written before stop returns.
            running.tasks.wait().await;
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

    /// The current snapshot for one thread that reads it often: see [`CachedSnapshot`].
    pub fn cached(&self) -> CachedSnapshot {
        CachedSnapshot::new(self.inner.store.current())
    }

    /// A receiver of the latest snapshot.
    pub fn subscribe(&self) -> Subscription {
        self.inner.store.subscribe()
    }

    /// Calls `callback` after every applied revision that changed a value, in revision
    /// order, with each changed name's old and new value, until the returned
    /// [`Listener`] is dropped.
    ///
    /// Each listener runs on a thread of its own behind a bounded mailbox: a slow
    /// callback delays only itself, never the engine or other listeners, and when it
    /// falls behind it gets the net difference it missed in one change (see
    /// [`MAILBOX_VALUES`](crate::MAILBOX_VALUES)). Every change's `old` is the
    /// `new` the listener saw before, across outages, re-lists and `stop`/`start`. A
    /// panicking callback is logged (`callback_panicked`) and called again for the next
    /// change.
    pub fn on_change(&self, callback: impl Fn(&ConfigChange) + Send + 'static) -> Listener {
        self.inner.store.on_change(callback)
    }

    /// Every change from now on as a [`Stream`](tokio_stream::Stream): the changes an
    /// [`on_change`](Self::on_change) callback would get, with the same guarantees
    /// (revision order, `old` is the previous `new`, a reader that falls behind gets
    /// the net difference within [`MAILBOX_VALUES`](crate::MAILBOX_VALUES)). Dropping
    /// the stream unsubscribes; it ends when the configuration is dropped.
    ///
    /// ```no_run
    /// # async fn demo(config: etcd_dynamic_config::EtcdConfig) {
    /// use tokio_stream::StreamExt as _;
    /// let mut changes = config.changes();
    /// while let Some(change) = changes.next().await {
    ///     println!("revision {}: {} value(s) changed", change.revision, change.changes.len());
    /// }
    /// # }
    /// ```
    pub fn changes(&self) -> Changes {
        self.inner.store.changes()
    }

    /// The current snapshot, then each newer one, as a
    /// [`Stream`](tokio_stream::Stream); a slow reader skips to the latest. It ends when
    /// the configuration is dropped.
    pub fn snapshots(&self) -> Snapshots {
        self.inner.store.snapshots()
    }

    /// The configuration read as `T` (names split at `.` into nested structs), read again
    /// on the first [`Binding::load`] after each applied revision; two atomic loads in
    /// between.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] when the current snapshot does not read as `T` (call it after
    /// [`start`](Self::start), or give `T` defaults).
    pub fn bind<T: DeserializeOwned + Send + Sync + 'static>(&self) -> Result<Binding<T>> {
        Binding::new(self.inner.store.current())
    }

    /// A health report for readiness and liveness endpoints (never holds a value).
    ///
    /// `synced` only when the engine confirmed within [`SYNC_BOUND`] that it holds
    /// etcd's head for the prefix; otherwise `reason` says why not, and
    /// `head_revision`, `confirmed_revision` and `lag` how far behind it may be.
    pub fn health(&self) -> Health {
        let status = self.inner.store.status();
        let started = self.inner.lock_running().is_some();
        let (revision, rollouts) = self.inner.store.with(|snapshot| {
            let rollouts = snapshot.rollouts().iter().map(|r| r.to_string()).collect();
            (snapshot.revision(), rollouts)
        });
        let since_confirmed = status.confirmed.map(|(_, at)| at.elapsed());
        let (state, reason) = match status.source {
            Some(StartSource::Local) => (HealthState::Local, None),
            None => (HealthState::Starting, Some("not started".to_owned())),
            Some(_) if !started => (
                HealthState::Stopped,
                Some("stopped: nothing updates the snapshot".to_owned()),
            ),
            Some(_) if status.failure.is_some() => (
                HealthState::Failed,
                status
                    .failure
                    .as_ref()
                    .map(|failure| format!("the engine ended: {failure}")),
            ),
            Some(source) => match degraded(&status, source, revision, since_confirmed) {
                Some(reason) => (HealthState::Degraded, Some(reason)),
                None => (HealthState::Synced, None),
            },
        };
        Health {
            state,
            source: status.source,
            prefix: self.prefix().to_owned(),
            revision,
            head_revision: status.head_revision,
            confirmed_revision: status.confirmed.map(|(revision, _)| revision),
            seconds_since_confirmed: since_confirmed.map(|since| since.as_secs_f64()),
            lag: status
                .head_revision
                .zip(status.confirmed)
                .map(|(head, (confirmed, _))| (head - confirmed).max(0)),
            reason,
            seconds_since_sync: status.last_sync.map(|at| at.elapsed().as_secs_f64()),
            connected: status.connected,
            endpoint: status.endpoint.clone(),
            reconnects: status.reconnects,
            token_refreshes: status.token_refreshes,
            invalid: status.rejected.clone(),
            rejected_revision: status.rejected_revision.clone(),
            rollouts,
            rejected_rollouts: status.rejected_rollouts.clone(),
            last_error: status.last_error,
            last_error_kind: status.last_error_kind.map(str::to_owned),
        }
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

/// Why a running engine is not synced, or `None` when it is.
fn degraded(
    status: &crate::store::Status,
    source: StartSource,
    revision: i64,
    since_confirmed: Option<Duration>,
) -> Option<String> {
    if source != StartSource::Etcd {
        let served = match source {
            StartSource::CacheFile => "the cache file",
            _ => "env vars and defaults",
        };
        return Some(format!(
            "etcd has not answered since start; serving {served}"
        ));
    }
    if let Some(since) = status.busy_since
        && since.elapsed() > crate::engine::USER_CODE_BUDGET
    {
        return Some(format!(
            "a check or coercion hook has run for {} s; updates wait for it",
            since.elapsed().as_secs()
        ));
    }
    if !status.connected {
        let error = status.last_error.as_deref().unwrap_or("no answer");
        return Some(format!(
            "etcd does not answer ({error}); serving revision {revision}"
        ));
    }
    if let Some(relisting) = &status.relisting {
        return Some(relisting.clone());
    }
    if let Some(rejected) = &status.rejected_revision {
        return Some(format!(
            "revision {} breaks a check; revision {revision} is served",
            rejected.revision
        ));
    }
    match since_confirmed {
        None => Some("not yet confirmed to hold etcd's head".to_owned()),
        Some(since) if since > SYNC_BOUND => Some(format!(
            "not confirmed to hold etcd's head for {} s (bound: {} s)",
            since.as_secs(),
            SYNC_BOUND.as_secs()
        )),
        Some(_) => None,
    }
}

impl Inner {
    fn cache_file(&self) -> Option<CacheFile> {
        self.settings
            .cache_file()
            .map(|path| CacheFile::new(path, self.keys.prefix_dir(), self.settings.cache_secrets()))
    }

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

    /// The prefix to load, taken as given: it wins over the settings' root key and the
    /// schema's prefix (see [`EtcdSettings::resolve_prefix`]).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// How long [`EtcdConfig::start`] waits for etcd (default: the settings',
    /// `EtcdSettings__StartTimeout`, 5 seconds).
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
        let prefix = settings.resolve_prefix(self.prefix.as_deref(), schema.prefix())?;
        let keys = schema.bind(&prefix)?;
        let settings = match self.start_timeout {
            Some(timeout) => settings.with_start_timeout(timeout),
            None => settings,
        };
        Ok(EtcdConfig {
            inner: Arc::new(Inner {
                settings,
                keys,
                env,
                store: Store::new(),
                running: Mutex::new(None),
                generations: std::sync::atomic::AtomicU64::new(0),
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A configuration that looks started from etcd, with `status` set by `update`.
    fn running(update: impl FnOnce(&mut crate::store::Status)) -> EtcdConfig {
        let config = EtcdConfig::builder()
            .settings(EtcdSettings::builder().build().unwrap())
            .env(|_: &str| None)
            .build()
            .unwrap();
        *config.inner.lock_running() = Some(Running {
            generation: 0,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        config.store().begin_run().update_status(|status| {
            status.source = Some(StartSource::Etcd);
            status.connected = true;
            status.running = true;
            status.confirmed = Some((7, Instant::now()));
            status.head_revision = Some(9);
            update(status);
        });
        config
    }

    #[test]
    fn synced_only_with_a_recent_confirmation() {
        let health = running(|_| {}).health();
        assert_eq!(health.state, HealthState::Synced, "{health:?}");
        assert_eq!((health.confirmed_revision, health.lag), (Some(7), Some(2)));
        assert_eq!(health.reason, None);

        let stale = Instant::now().checked_sub(SYNC_BOUND + Duration::from_secs(1));
        let health = running(|status| status.confirmed = Some((7, stale.unwrap()))).health();
        assert_eq!(health.state, HealthState::Degraded);
        assert!(health.reason.unwrap().contains("not confirmed"));

        let health = running(|status| status.confirmed = None).health();
        assert_eq!(health.state, HealthState::Degraded);
    }

    #[test]
    fn every_reason_not_to_be_synced_is_named() {
        type Case = (&'static str, fn(&mut crate::store::Status));
        let cases: [Case; 4] = [
            ("does not answer", |status| status.connected = false),
            ("cluster id changed", |status| {
                status.relisting = Some("cluster id changed from 1 to 2".into());
            }),
            ("breaks a check", |status| {
                status.rejected_revision = Some(RevisionRejection {
                    revision: 8,
                    reasons: vec!["x".into()],
                });
            }),
            ("has run for", |status| {
                status.busy_since = Instant::now().checked_sub(Duration::from_secs(6));
            }),
        ];
        for (reason, update) in cases {
            let health = running(update).health();
            assert_eq!(health.state, HealthState::Degraded, "{reason}");
            assert!(
                health.reason.as_deref().unwrap().contains(reason),
                "{reason}: {health:?}"
            );
        }
    }

    #[test]
    fn an_engine_that_ended_unstopped_is_failed_never_synced() {
        let config = running(|_| {});
        config
            .store()
            .record_failure("it panicked: a defect".to_owned());
        let health = config.health();
        assert_eq!(health.state, HealthState::Failed);
        assert!(!health.is_synced() && !health.connected);
        assert!(health.reason.unwrap().contains("it panicked: a defect"));
    }
}
