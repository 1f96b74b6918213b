//! [`EtcdClient`]: the low-level client of the Python original: connect (auth, TLS),
//! read keys, read the prefix, read a typed configuration once.

use std::collections::BTreeMap;
use std::sync::Arc;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use tokio::sync::Mutex;

use crate::config::EnvLookup;
use crate::connection::{Connection, Listing};
use crate::engine::state::{Header, Input, Output, State};
use crate::error::{Error, Result};
use crate::schema::{KeyMap, Schema};
use crate::settings::EtcdSettings;
use crate::snapshot::Snapshot;
use crate::value::Value;

/// One-off reads from etcd with a schema's names and coercion; no watch, no cache.
///
/// `EtcdClient::control_unit()` is the Python `EtcdClient()`. For configuration that
/// stays current, use [`crate::EtcdConfig`].
pub struct EtcdClient {
    settings: EtcdSettings,
    keys: KeyMap,
    env: EnvLookup,
    connection: Mutex<Connection>,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("prefix", self.keys.prefix_dir())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl EtcdClient {
    /// The ControlUnit client from the process environment.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] for a malformed environment.
    pub fn control_unit() -> Result<Self> {
        Self::new(EtcdSettings::from_env()?, Schema::control_unit())
    }

    /// A client for `schema` (its prefix, or the settings' root key).
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] for a malformed prefix, [`Error::Schema`] for a key outside it.
    pub fn new(settings: EtcdSettings, schema: Schema) -> Result<Self> {
        Self::with_env(
            settings,
            schema,
            Arc::new(|name: &str| std::env::var(name).ok()),
        )
    }

    /// As [`new`](Self::new), reading env vars through `env`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_env(settings: EtcdSettings, schema: Schema, env: EnvLookup) -> Result<Self> {
        let schema = Arc::new(schema);
        let prefix = settings.resolve_prefix(None, schema.prefix())?;
        let keys = schema.bind(&prefix)?;
        Ok(Self {
            connection: Mutex::new(Connection::new(&settings)),
            settings,
            keys,
            env,
        })
    }

    /// The same client for `prefix`, given explicitly: it wins over the settings' and
    /// the schema's (see [`EtcdSettings::resolve_prefix`]).
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] for a malformed prefix, [`Error::Schema`] for a key outside it.
    pub fn with_prefix(self, prefix: &str) -> Result<Self> {
        let prefix = self.settings.resolve_prefix(Some(prefix), None)?;
        let keys = self.keys.rebind(&prefix)?;
        Ok(Self { keys, ..self })
    }

    /// Runs `request`, moving to the next endpoint after a failure that may pass (an
    /// endpoint down, frozen or without a leader), as the engine does, until it succeeds,
    /// fails for good, or the settings' start timeout has passed: then
    /// [`Error::StartTimeout`] with the last failure.
    async fn with_failover<T>(
        &self,
        mut request: impl AsyncFnMut(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let timeout = self.settings.start_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut connection = self.connection.lock().await;
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(50))
            .with_max_delay(std::time::Duration::from_secs(1))
            .with_jitter()
            .without_max_times()
            .build();
        // A frozen endpoint must not take the whole deadline: each gets a share of it.
        let endpoints = u32::try_from(self.settings.endpoints().len()).unwrap_or(u32::MAX);
        let per_attempt = (timeout / endpoints.max(1)).max(std::time::Duration::from_secs(1));
        let mut last = None;
        loop {
            let now = tokio::time::Instant::now();
            let until = deadline.min(now + per_attempt);
            let error = match tokio::time::timeout_at(until, request(&mut connection)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) if !error.is_retryable() => return Err(error),
                Ok(Err(error)) => error,
                Err(_) if until < deadline => Error::Unavailable {
                    endpoints: connection.endpoint().to_owned(),
                    source: format!("no answer within {per_attempt:?}").into(),
                },
                Err(_) => {
                    return Err(Error::StartTimeout {
                        timeout,
                        cause: last.map(Box::new),
                    });
                }
            };
            let delay = delays.next().unwrap_or_default();
            tracing::debug!(
                event = "etcd_retry",
                endpoint = connection.endpoint(),
                error.type = error.kind_name(),
                error.message = %crate::error::Chain(&error),
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "etcd request failed; trying the next endpoint"
            );
            connection.rotate();
            last = Some(error);
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(Error::StartTimeout {
                    timeout,
                    cause: last.map(Box::new),
                });
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// The prefix, with a trailing `/`.
    pub fn prefix(&self) -> &str {
        self.keys.prefix_dir()
    }

    /// etcd key → name for every declared name with a key (the Python
    /// `get_control_unit_key_map`).
    pub fn key_map(&self) -> BTreeMap<String, String> {
        let schema = self.keys.schema();
        schema
            .names()
            .filter_map(|spec| {
                schema
                    .key_for(self.prefix(), spec.name())
                    .map(|key| (key, spec.name().to_owned()))
            })
            .collect()
    }

    /// The values of `keys` (absolute), as text; absent keys are left out. Up to 128
    /// keys are read in one round trip at one revision.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] or [`Error::Refused`] from etcd; [`Error::Value`] for a
    /// value that is not UTF-8 text.
    pub async fn get_values_by_keys(&self, keys: &[&str]) -> Result<BTreeMap<String, String>> {
        let found = self
            .with_failover(async |connection| connection.get_keys(keys).await)
            .await?;
        found
            .into_iter()
            .map(|kv| match String::from_utf8(kv.value) {
                Ok(text) => Ok((kv.key.to_string(), text)),
                Err(error) => Err(Error::Value {
                    name: kv.key.to_string(),
                    reason: format!("the value is not UTF-8 text ({})", error.utf8_error()),
                    origin: format!("etcd key {} @ rev {}", kv.key, kv.mod_revision),
                }),
            })
            .collect()
    }

    /// The configuration once, through the schema: etcd values (or, with
    /// `USE_LOCAL_CONFIG=true`, none), env vars and schema defaults, with provenance, and
    /// the problems found.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] or [`Error::Refused`] from etcd (never in local mode).
    pub async fn load(&self) -> Result<Loaded> {
        let schema = self.keys.schema();
        let (fallback, rejected) = schema.fallback(&*self.env);
        let mut state =
            State::new(self.keys.clone(), fallback.clone()).with_fallback_rejections(rejected);
        let listing = if self.settings.use_local_config() {
            Listing {
                kvs: Vec::new(),
                header: Header {
                    cluster: 0,
                    revision: 0,
                },
                count: 0,
            }
        } else {
            let prefix = self.prefix();
            self.with_failover(async |connection| connection.list(prefix).await)
                .await?
        };
        let revision = listing.header.revision;
        let outputs = state.step(Input::Listed {
            kvs: listing.kvs,
            header: listing.header,
            count: listing.count,
            at: std::time::Instant::now(),
        });
        let published = outputs.into_iter().find_map(|output| match output {
            Output::Publish(snapshot) => Some(snapshot),
            _ => None,
        });
        let mut problems: Vec<String> = state.rejections().map(ToString::to_string).collect();
        for (name, keys) in state.collisions() {
            let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
            problems.push(format!(
                "{name}: several keys map to it: {}",
                keys.join(", ")
            ));
        }
        let invalid = state
            .rejected_revision()
            .map(|rejection| rejection.reasons.clone());
        problems.extend(invalid.iter().flatten().cloned());
        Ok(Loaded {
            // A revision that breaks a check is still shown: the problems say why.
            snapshot: published.unwrap_or_else(|| Arc::new(state.unchecked_snapshot())),
            revision,
            problems,
            valid: invalid.is_none(),
        })
    }

    /// The configuration once, through the schema: etcd values (or, with
    /// `USE_LOCAL_CONFIG=true`, none), env vars and schema defaults, then `defaults` for
    /// names still missing. Rejected values are logged and left out.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] or [`Error::Refused`] from etcd (never in local mode);
    /// [`Error::Invalid`] when a required name has no value or a check fails.
    pub async fn get_config(
        &self,
        defaults: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<BTreeMap<String, Value>> {
        let loaded = self.load().await?;
        for problem in &loaded.problems {
            tracing::warn!(event = "update_rejected", problem = %problem, "a value was rejected");
        }
        if !loaded.valid {
            return Err(Error::Invalid {
                reasons: loaded.problems,
            });
        }
        let mut config = loaded.snapshot.to_map();
        for (name, value) in defaults {
            config.entry(name).or_insert(value);
        }
        Ok(config)
    }

    /// Writes `puts` (name → text) and deletes `deletes` (names) in one etcd
    /// transaction, after checking every value against the schema; returns the revision.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] naming the first value the schema rejects (nothing is written),
    /// [`Error::Missing`] for a name the schema cannot place under the prefix, and etcd's
    /// errors (a user without write permission gets [`Error::Refused`]).
    pub async fn put_values(&self, puts: &[(String, String)], deletes: &[String]) -> Result<i64> {
        let schema = self.keys.schema();
        // A name etcd already holds is written where it is; a new one where the schema
        // puts it.
        let current = self.load().await?.snapshot;
        let key_of = |name: &str| {
            let held = current.entry(name).and_then(|entry| match entry.source() {
                crate::snapshot::Source::Etcd { key, .. } => Some(key.to_string()),
                _ => None,
            });
            held.or_else(|| schema.key_for(self.prefix(), name))
                .ok_or_else(|| Error::Missing(name.to_owned()))
        };
        let mut writes = Vec::with_capacity(puts.len());
        for (name, text) in puts {
            let key = key_of(name)?;
            // A name that would not read back as itself is refused: no reader would see it.
            let reads_as = self.keys.name_for(&key);
            if reads_as.as_deref() != Some(name.as_str()) {
                return Err(Error::Value {
                    name: name.clone(),
                    reason: match reads_as {
                        Some(other) => format!("would read back as {other}, not as itself"),
                        None => "names no value a reader would see".to_owned(),
                    },
                    origin: format!("to be written to etcd key {key}"),
                });
            }
            schema
                .coerce(name, text.as_bytes())
                .map_err(|reason| Error::Value {
                    name: name.clone(),
                    reason,
                    origin: format!("to be written to etcd key {key}"),
                })?;
            writes.push((key, text.clone()));
        }
        let deletes = deletes
            .iter()
            .map(|name| key_of(name))
            .collect::<Result<Vec<_>>>()?;
        // Writing the same values again after a write that may have landed leaves the same
        // values: a retry on the next endpoint is safe.
        self.with_failover(async |connection| connection.write(&writes, &deletes).await)
            .await
    }
}

/// One read of the configuration, with what is wrong with it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Loaded {
    /// The values, with provenance.
    pub snapshot: Arc<Snapshot>,
    /// The etcd revision read (0 in local mode).
    pub revision: i64,
    /// Every problem: rejected values, colliding keys, broken checks, missing required
    /// names.
    pub problems: Vec<String>,
    /// Whether the required names and checks hold (rejected values aside).
    pub valid: bool,
}
