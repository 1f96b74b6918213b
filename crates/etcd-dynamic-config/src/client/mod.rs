//! [`EtcdClient`]: the low-level client of the Python original: connect (auth, TLS),
//! read keys, read the prefix, read a typed configuration once.

use std::collections::BTreeMap;
use std::sync::Arc;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use tokio::sync::Mutex;

use crate::audit::{self, Audit, AuditChange, AuditRecord};
use crate::config::EnvLookup;
use crate::connection::{Connection, Listing};
use crate::engine::state::{Header, Input, Kv, Output, State};
use crate::error::{Error, Result};
use crate::observe::events;
use crate::schema::{KeyMap, Schema};
use crate::settings::EtcdSettings;
use crate::snapshot::{Snapshot, Source};
use crate::value::Value;

mod rollout;
pub use rollout::{RolloutStatus, Standing};

/// One-off reads from etcd with a schema's names and coercion; no watch, no cache.
///
/// `EtcdClient::control_unit()` is the Python `EtcdClient()`. For configuration that
/// stays current, use [`crate::EtcdConfig`].
pub struct EtcdClient {
    settings: EtcdSettings,
    keys: KeyMap,
    env: EnvLookup,
    connection: Mutex<Connection>,
    audit: Option<Audit>,
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
            audit: None,
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
                event = events::ETCD_RETRY,
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

    /// The same client, recording each write it makes in the audit trail (who, why,
    /// when, what changed), in the same transaction: see [`crate::audit`].
    #[must_use]
    pub fn with_audit(self, audit: Audit) -> Self {
        Self {
            audit: Some(audit),
            ..self
        }
    }

    /// Where this client's audit records live: `/_audit` + the prefix.
    pub fn audit_prefix(&self) -> String {
        audit::prefix_for(self.prefix())
    }

    /// Every audit record of this prefix, oldest first. A record that does not read as
    /// one is left out and logged (`audit_record_ignored`).
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub async fn audit_trail(&self) -> Result<Vec<AuditRecord>> {
        let audit_prefix = self.audit_prefix();
        let listing = self
            .with_failover(async |connection| connection.list(&audit_prefix).await)
            .await?;
        let mut records = Vec::with_capacity(listing.kvs.len());
        for kv in listing.kvs {
            match serde_json::from_slice::<AuditRecord>(&kv.value) {
                Ok(mut record) => {
                    record.revision = kv.mod_revision;
                    records.push(record);
                }
                Err(error) => tracing::warn!(
                    event = events::AUDIT_RECORD_IGNORED,
                    key = %kv.key,
                    error.message = %error,
                    "an audit record does not read as one; it is left out"
                ),
            }
        }
        records.sort_by_key(|record| record.revision);
        Ok(records)
    }

    /// The fleet: every instance of this prefix that announces itself (see
    /// [`crate::announce`]), by id, with etcd's head and the latest revision that wrote
    /// a key of the prefix.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub async fn fleet(&self) -> Result<Fleet> {
        let status_dir = crate::announce::status_dir(self.prefix());
        let prefix = self.prefix();
        let (records, values) = self
            .with_failover(async |connection| {
                Ok((
                    connection.list(&status_dir).await?,
                    connection.list(prefix).await?,
                ))
            })
            .await?;
        let mut instances = Vec::with_capacity(records.kvs.len());
        for kv in records.kvs {
            match serde_json::from_slice::<crate::announce::InstanceRecord>(&kv.value) {
                Ok(record) => instances.push(record),
                Err(error) => tracing::warn!(
                    event = events::INSTANCE_RECORD_IGNORED,
                    key = %kv.key,
                    error.message = %error,
                    "an instance record does not read as one; it is left out"
                ),
            }
        }
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Fleet {
            head: values.header.revision,
            last_write: values
                .kvs
                .iter()
                .map(|kv| kv.mod_revision)
                .max()
                .unwrap_or(0),
            instances,
        })
    }

    /// The audit record of a write, as the extra put of its transaction.
    fn audit_put(
        &self,
        action: String,
        changes: impl FnOnce() -> Vec<AuditChange>,
    ) -> Option<(String, String)> {
        let audit = self.audit.as_ref()?;
        let mut changes = changes();
        // A delete of a key etcd does not hold changes nothing.
        changes.retain(|change| change.old.is_some() || change.new.is_some());
        let record = AuditRecord {
            revision: 0,
            at: audit::now(),
            author: audit.author.clone(),
            reason: audit.reason.clone(),
            action,
            changes,
        };
        let key = audit::record_key(&self.audit_prefix(), &record.at);
        let value = serde_json::to_string(&record).expect("an audit record serializes");
        Some((key, value))
    }

    /// What a write of `key` from `old` to `new` records: secrets masked.
    fn audit_change(&self, key: &str, old: Option<String>, new: Option<String>) -> AuditChange {
        let name = self.name_of_key(key);
        let secret = name
            .as_deref()
            .is_some_and(|name| self.keys.schema().is_secret(name));
        let mask = |value: Option<String>| {
            if secret {
                value.map(|_| audit::MASK.to_owned())
            } else {
                value
            }
        };
        AuditChange {
            key: key.to_owned(),
            name,
            old: mask(old),
            new: mask(new),
        }
    }

    /// The name an etcd key holds under this client's schema, if it names one.
    pub fn name_of_key(&self, key: &str) -> Option<String> {
        self.keys.name_for(key).map(|name| name.to_string())
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
                Ok(text) => Ok((kv.key, text)),
                Err(error) => Err(Error::Value {
                    name: kv.key.clone(),
                    reason: format!("the value is not UTF-8 text ({})", error.utf8_error()),
                    origin: Source::Etcd {
                        mod_revision: kv.mod_revision,
                        key: Arc::from(kv.key),
                    },
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
        self.loaded_from(listing)
    }

    /// The configuration a listing holds, through the schema, with the problems found.
    fn loaded_from(&self, listing: Listing) -> Result<Loaded> {
        let schema = self.keys.schema();
        let (fallback, rejected) = schema.fallback(&*self.env);
        let mut state =
            State::new(self.keys.clone(), fallback.clone()).with_fallback_rejections(rejected);
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
            tracing::warn!(event = events::CONFIG_PROBLEM, problem = %problem, "a value was rejected, keys collide or a check fails");
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
        self.put_values_guarded(puts, deletes, None).await
    }

    /// As [`put_values`](Self::put_values), refused unless the prefix is unchanged since
    /// `expect_revision`: no key under it created, changed or deleted after that
    /// revision (the lost-update guard between two writers). Up to 100 keys are guarded
    /// inside the transaction itself; in a larger prefix a key deleted between the check
    /// and the transaction (a few milliseconds) is not seen.
    ///
    /// # Errors
    ///
    /// As [`put_values`](Self::put_values); [`Error::Conflict`] when the prefix changed,
    /// [`Error::Refused`] when the revision is no longer in etcd's history.
    pub async fn put_values_expecting(
        &self,
        puts: &[(String, String)],
        deletes: &[String],
        expect_revision: i64,
    ) -> Result<i64> {
        self.put_values_guarded(puts, deletes, Some(expect_revision))
            .await
    }

    async fn put_values_guarded(
        &self,
        puts: &[(String, String)],
        deletes: &[String],
        expect_revision: Option<i64>,
    ) -> Result<i64> {
        let current = self.load().await?.snapshot;
        let (writes, deletes) = self.prepared(&current, puts, deletes)?;
        let Some(expected) = expect_revision else {
            // Writing the same values again after a write that may have landed leaves the
            // same values: a retry on the next endpoint is safe.
            return self
                .with_failover(async |connection| connection.write(&writes, &deletes).await)
                .await;
        };
        let guards = self.unchanged_since(expected).await?;
        let prefix = self.prefix();
        self.with_failover(async |connection| {
            connection
                .write_guarded(&writes, &deletes, &guards, Some((prefix, expected)))
                .await
        })
        .await
    }

    /// As [`put_values`](Self::put_values), in transactions of at most `batch` values,
    /// for imports larger than etcd takes at once: not atomic. Every value is checked
    /// first, against one read of the prefix, and nothing is written if one is
    /// rejected; then `written(values, revision)` is called after each transaction.
    ///
    /// # Errors
    ///
    /// As [`put_values`](Self::put_values); a failed transaction stops the import (the
    /// ones before it stay written).
    pub async fn put_values_batched(
        &self,
        puts: &[(String, String)],
        batch: usize,
        mut written: impl FnMut(usize, i64),
    ) -> Result<()> {
        let current = self.load().await?.snapshot;
        self.prepared(&current, puts, &[])?;
        for chunk in puts.chunks(batch.max(1)) {
            let (writes, _) = self.prepared(&current, chunk, &[])?;
            let revision = self
                .with_failover(async |connection| connection.write(&writes, &[]).await)
                .await?;
            written(chunk.len(), revision);
        }
        Ok(())
    }

    /// The keys and values a write of `puts` and `deletes` makes, checked against the
    /// schema and placed as `current` holds them, with its audit record when the client
    /// keeps them.
    fn prepared(
        &self,
        current: &Snapshot,
        puts: &[(String, String)],
        deletes: &[String],
    ) -> Result<(Puts, Vec<String>)> {
        let mut writes = Vec::with_capacity(puts.len() + 1);
        for (name, text) in puts {
            writes.push((self.checked_key(current, name, text)?, text.clone()));
        }
        let delete_keys = deletes
            .iter()
            .map(|name| self.key_of(current, name))
            .collect::<Result<Vec<_>>>()?;
        // What etcd holds for a name now: its entry, when it came from etcd (at the key
        // `key_of` gave).
        let held = |name: &str| {
            current
                .entry(name)
                .filter(|entry| matches!(entry.source(), crate::snapshot::Source::Etcd { .. }))
                .map(|entry| entry.value().to_string())
        };
        let record = self.audit_put("put".to_owned(), || {
            puts.iter()
                .zip(&writes)
                .map(|((name, text), (key, _))| {
                    self.audit_change(key, held(name), Some(text.clone()))
                })
                .chain(
                    deletes
                        .iter()
                        .zip(&delete_keys)
                        .map(|(name, key)| self.audit_change(key, held(name), None)),
                )
                .collect()
        });
        writes.extend(record);
        Ok((writes, delete_keys))
    }

    /// The key to write `text` to for `name`, once the schema accepts it there.
    fn checked_key(&self, current: &Snapshot, name: &str, text: &str) -> Result<String> {
        let key = self.key_of(current, name)?;
        let refused = |reason| Error::Value {
            name: name.to_owned(),
            reason,
            origin: Source::Write {
                key: Arc::from(key.as_str()),
            },
        };
        // A name that would not read back as itself is refused: no reader would see it.
        let reads_as = self.keys.name_for(&key);
        if reads_as.as_deref() != Some(name) {
            return Err(refused(match reads_as {
                Some(other) => format!("would read back as {other}, not as itself"),
                None => "names no value a reader would see".to_owned(),
            }));
        }
        self.keys
            .schema()
            .coerce(name, text.as_bytes())
            .map_err(refused)?;
        Ok(key)
    }

    /// Checks that the prefix now holds the keys it held at `revision`, at the same mod
    /// revisions: `Err(Conflict)` naming the first difference. Returns them as guards
    /// for the transaction when there are few enough (etcd's default `--max-txn-ops` is
    /// 128 compares).
    async fn unchanged_since(&self, revision: i64) -> Result<Vec<(String, i64)>> {
        let (then, now) = self.then_and_now(revision).await?;
        let keys = |listing: &Listing| -> BTreeMap<String, i64> {
            listing
                .kvs
                .iter()
                .map(|kv| (kv.key.to_string(), kv.mod_revision))
                .collect()
        };
        let (then, now_keys) = (keys(&then), keys(&now));
        if let Some((key, _)) = now_keys.iter().find(|(key, m)| then.get(*key) != Some(m)) {
            return Err(Error::Conflict {
                reason: format!("{key} was written after revision {revision}"),
            });
        }
        if let Some(key) = then.keys().find(|key| !now_keys.contains_key(*key)) {
            return Err(Error::Conflict {
                reason: format!("{key} was deleted after revision {revision}"),
            });
        }
        Ok(if then.len() <= GUARDED_KEYS {
            then.into_iter().collect()
        } else {
            Vec::new()
        })
    }

    /// The prefix as it was at `revision`, and as it is now.
    async fn then_and_now(&self, revision: i64) -> Result<(Listing, Listing)> {
        let prefix = self.prefix();
        let then = self
            .with_failover(async |connection| connection.list_at(prefix, revision).await)
            .await?;
        let now = self
            .with_failover(async |connection| connection.list(prefix).await)
            .await?;
        Ok((then, now))
    }

    /// The etcd key of `name`: the key `current` holds it at, or where the schema puts it.
    fn key_of(&self, current: &Snapshot, name: &str) -> Result<String> {
        let held = current.entry(name).and_then(|entry| match entry.source() {
            crate::snapshot::Source::Etcd { key, .. } => Some(key.to_string()),
            _ => None,
        });
        held.or_else(|| self.keys.schema().key_for(self.prefix(), name))
            .ok_or_else(|| Error::Missing(name.to_owned()))
    }

    /// The configuration as it was at `revision`, through the schema (as [`load`](Self::load)).
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load); [`Error::Refused`] when etcd no longer holds the
    /// revision (compacted) or has not reached it.
    pub async fn load_at(&self, revision: i64) -> Result<Loaded> {
        let prefix = self.prefix();
        let listing = self
            .with_failover(async |connection| connection.list_at(prefix, revision).await)
            .await?;
        self.loaded_from(listing)
    }

    /// The values `name` had, newest first (at most `limit`), from etcd's own revisions:
    /// as far back as etcd keeps them.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load); [`Error::Missing`] for a name the schema cannot place.
    pub async fn history(&self, name: &str, limit: usize) -> Result<History> {
        let current = self.load().await?.snapshot;
        let key = self.key_of(&current, name)?;
        let found = self
            .with_failover(async |connection| connection.key_history(&key).await)
            .await?;
        let changes = found
            .writes
            .into_iter()
            .rev()
            .take(limit)
            .map(|(revision, value)| HistoryEntry {
                revision,
                value: value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
            })
            .collect();
        Ok(History {
            name: name.to_owned(),
            secret: self.keys.schema().is_secret(name),
            key,
            head: found.head,
            kept_from: found.kept_from,
            changes,
        })
    }

    /// What [`rollback`](Self::rollback) to `revision` would write: every key under the
    /// prefix whose value now differs from the one it had then (put back, or deleted if
    /// it did not exist then), with the mod revision each has now.
    ///
    /// # Errors
    ///
    /// As [`load_at`](Self::load_at).
    pub async fn plan_rollback(&self, revision: i64) -> Result<Rollback> {
        let (then, now) = self.then_and_now(revision).await?;
        let then: BTreeMap<&str, &Kv> = then.kvs.iter().map(|kv| (&*kv.key, kv)).collect();
        let now_by_key: BTreeMap<&str, &Kv> = now.kvs.iter().map(|kv| (&*kv.key, kv)).collect();
        let mut plan = Rollback {
            to: revision,
            read_at: now.header.revision,
            puts: Vec::new(),
            deletes: Vec::new(),
            guards: Vec::new(),
            previous: BTreeMap::new(),
        };
        for (key, old) in &then {
            let current = now_by_key.get(key);
            if current.is_some_and(|kv| kv.value == old.value) {
                continue;
            }
            plan.puts.push((
                (*key).to_owned(),
                String::from_utf8_lossy(&old.value).into_owned(),
            ));
            plan.guards
                .push(((*key).to_owned(), current.map_or(0, |kv| kv.mod_revision)));
            if let Some(kv) = current {
                plan.previous.insert(
                    (*key).to_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                );
            }
        }
        for (key, kv) in &now_by_key {
            if !then.contains_key(key) {
                plan.deletes.push((*key).to_owned());
                plan.guards.push(((*key).to_owned(), kv.mod_revision));
                plan.previous.insert(
                    (*key).to_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                );
            }
        }
        Ok(plan)
    }

    /// Carries out `plan` in one transaction, refused if any key it touches was written
    /// after the plan was made, or, with `expect_revision`, if anything under the prefix
    /// was written after that revision.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when a guard does not hold (nothing is written); etcd's errors.
    pub async fn rollback(&self, plan: &Rollback, expect_revision: Option<i64>) -> Result<i64> {
        let prefix = self.prefix();
        let unchanged_since = expect_revision.map(|revision| (prefix, revision));
        let previous = |key: &str| plan.previous.get(key).cloned();
        let changes = || {
            plan.puts
                .iter()
                .map(|(key, value)| self.audit_change(key, previous(key), Some(value.clone())))
                .chain(
                    plan.deletes
                        .iter()
                        .map(|key| self.audit_change(key, previous(key), None)),
                )
                .collect()
        };
        let mut puts = plan.puts.clone();
        puts.extend(self.audit_put(format!("rollback to revision {}", plan.to), changes));
        self.with_failover(async |connection| {
            connection
                .write_guarded(&puts, &plan.deletes, &plan.guards, unchanged_since)
                .await
        })
        .await
    }
}

/// Keys and the values to put there.
type Puts = Vec<(String, String)>;

/// How many keys a guarded write checks inside its transaction (etcd's default limit is
/// 128 compares).
const GUARDED_KEYS: usize = 100;

/// One write of a name's key: its value from then on, or `None` when it was deleted.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The revision of the write.
    pub revision: i64,
    /// The value written (as text), or `None` for a delete.
    pub value: Option<String>,
}

impl std::fmt::Debug for HistoryEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secret: never shown.
        f.debug_struct("HistoryEntry")
            .field("revision", &self.revision)
            .field("deleted", &self.value.is_none())
            .finish()
    }
}

/// The values a name had, from etcd's revisions.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct History {
    /// The name.
    pub name: String,
    /// Whether its values are secret.
    pub secret: bool,
    /// Its etcd key.
    pub key: String,
    /// etcd's head when the history was read.
    pub head: i64,
    /// The oldest revision etcd keeps, when it compacted the ones before: earlier
    /// values are gone, but for the value now, which etcd holds whenever it was written.
    pub kept_from: Option<i64>,
    /// Newest first. The value now is the newest, even when the revision that wrote it
    /// is older than `kept_from`.
    pub changes: Vec<HistoryEntry>,
}

/// What a rollback writes.
#[derive(Clone)]
#[non_exhaustive]
pub struct Rollback {
    /// The revision rolled back to.
    pub to: i64,
    /// The revision the plan was made at.
    pub read_at: i64,
    /// Keys put back to their value then.
    pub puts: Vec<(String, String)>,
    /// Keys that did not exist then.
    pub deletes: Vec<String>,
    guards: Vec<(String, i64)>,
    /// The values the touched keys hold now, for the audit trail.
    previous: BTreeMap<String, String>,
}

impl std::fmt::Debug for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.puts.iter().map(|(key, _)| key.as_str()).collect();
        f.debug_struct("Rollback")
            .field("to", &self.to)
            .field("read_at", &self.read_at)
            .field("puts", &keys)
            .field("deletes", &self.deletes)
            .finish_non_exhaustive()
    }
}

impl Rollback {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
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

/// What [`EtcdClient::fleet`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Fleet {
    /// etcd's head revision when read.
    pub head: i64,
    /// The latest revision that wrote a key of the prefix (a deletion since is not
    /// counted: instances confirm etcd's head within seconds, which covers it).
    pub last_write: i64,
    /// The instances, by id.
    pub instances: Vec<crate::announce::InstanceRecord>,
}
