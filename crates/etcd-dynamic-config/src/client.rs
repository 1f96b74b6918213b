//! [`EtcdClient`]: the low-level client of the Python original: connect (auth, TLS),
//! read keys, read the prefix, read a typed configuration once.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::config::EnvLookup;
use crate::connection::Connection;
use crate::engine::state::{Input, Output, State};
use crate::error::{Error, Result};
use crate::schema::{KeyMap, Schema};
use crate::settings::EtcdSettings;
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
        let prefix = match schema.prefix() {
            Some(prefix) => crate::settings::parse_root_key(prefix)?,
            None => settings.prefix(),
        };
        let keys = schema.bind(&prefix)?;
        Ok(Self {
            connection: Mutex::new(Connection::new(&settings)),
            settings,
            keys,
            env,
        })
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
        let found = self.connection.lock().await.get_keys(keys).await?;
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
        let schema = self.keys.schema();
        let (fallback, rejected) = schema.fallback(&*self.env);
        let mut state = State::new(self.keys.clone(), fallback);
        let kvs_revision = if self.settings.use_local_config() {
            (Vec::new(), 0)
        } else {
            self.connection.lock().await.list(self.prefix()).await?
        };
        let (kvs, revision) = kvs_revision;
        let outputs = state.step(Input::Listed { kvs, revision });
        for rejection in rejected.iter().chain(state.rejections()) {
            tracing::warn!(
                event = "update_rejected",
                name = %rejection.name,
                source = %rejection.source,
                reason = %rejection.reason,
                "a value was rejected"
            );
        }
        if let Some(rejection) = state.rejected_revision() {
            return Err(Error::Invalid {
                reasons: rejection.reasons.clone(),
            });
        }
        let mut config = outputs
            .into_iter()
            .find_map(|output| match output {
                Output::Publish(snapshot) => Some(snapshot.to_map()),
                _ => None,
            })
            .unwrap_or_default();
        for (name, value) in defaults {
            config.entry(name).or_insert(value);
        }
        Ok(config)
    }
}
