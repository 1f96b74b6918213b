//! How etcd keys become configuration names and typed values.
//!
//! Three ways to declare a schema, all with the same expressiveness where it makes
//! sense:
//!
//! - [`Schema::builder`], the declarative builder;
//! - [`ConfigSchema`], a trait with default methods, for what the Python original does by
//!   subclassing `BaseEtcdClient` (prefix, key map, env var map, custom coercion);
//! - [`Schema::from_toml_str`] / [`Schema::from_toml_file`], a TOML file (the same file
//!   drives the CLI's `check` and `doc`).
//!
//! ```
//! use etcd_dynamic_config::schema::{Kind, Name, Schema};
//!
//! let schema = Schema::builder()
//!     .prefix("/myapp/production")
//!     .name(Name::new("db_host").key("Database/Host").default("localhost"))
//!     .name(Name::new("db_port").key("Database/Port").kind(Kind::Integer).default(5432).range(1, 65535))
//!     .name(Name::new("api_secret").key("API/SecretKey").secret().required())
//!     .build()?;
//! assert_eq!(schema.env_var("db_port"), "DB_PORT");
//! # Ok::<(), etcd_dynamic_config::Error>(())
//! ```

mod doc;
#[cfg(feature = "toml")]
mod file;
pub mod kind;
pub mod naming;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

pub use kind::Kind;
pub use validate::{Check, Validator};

use crate::error::{Error, Result};
use crate::snapshot::{Entries, Source};
use crate::value::{Value, ValueRef};

type CoerceFn = dyn Fn(&str, &str) -> Option<Result<Value, String>> + Send + Sync;

/// How etcd keys under the prefix map to names, each name's kind, default, env var,
/// validators and secrecy, and checks over the whole configuration.
#[derive(Clone, Default)]
pub struct Schema {
    prefix: Option<String>,
    discover: bool,
    /// Explicit keys (relative to the prefix, or absolute) → names.
    keys: Vec<(String, Arc<str>)>,
    names: BTreeMap<Arc<str>, Name>,
    checks: Vec<Check>,
    coerce: Option<Arc<CoerceFn>>,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("prefix", &self.prefix)
            .field("discover", &self.discover)
            .field("keys", &self.keys)
            .field("names", &self.names.values().collect::<Vec<_>>())
            .field("checks", &self.checks)
            .field("custom_coercion", &self.coerce.is_some())
            .finish()
    }
}

/// One declared name.
#[derive(Clone, Debug)]
pub struct Name {
    name: Arc<str>,
    key: Option<String>,
    env: Option<String>,
    kind: Option<Kind>,
    default: Option<Value>,
    required: bool,
    secret: bool,
    description: Option<String>,
    validators: Vec<Validator>,
    pattern: Option<String>,
}

impl Name {
    /// Declares `name`, e.g. `db_port` or `database.port`.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: Arc::from(name.into()),
            key: None,
            env: None,
            kind: None,
            default: None,
            required: false,
            secret: false,
            description: None,
            validators: Vec::new(),
            pattern: None,
        }
    }

    /// The etcd key, relative to the prefix (`Database/Port`) or absolute.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The env var that supplies the value when etcd does not (default: the name
    /// upper-cased with `.` → `__`).
    #[must_use]
    pub fn env(mut self, env: impl Into<String>) -> Self {
        self.env = Some(env.into());
        self
    }

    /// The kind (default: inferred from the name by the Python naming rules).
    #[must_use]
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// The value when neither etcd nor the env var has one. Text is parsed as the kind.
    #[must_use]
    pub fn default(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }

    /// `start` fails when no source has a value; a revision that removes it is rejected.
    #[must_use]
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// The value is never printed: not in `Debug`, logs, reports or the docs table.
    #[must_use]
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// A description for the docs table.
    #[must_use]
    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// The value (a number, or a duration in seconds) must lie in `min..=max`.
    #[must_use]
    pub fn range(mut self, min: impl Into<f64>, max: impl Into<f64>) -> Self {
        self.validators.push(Validator::Range {
            min: Some(min.into()),
            max: Some(max.into()),
        });
        self
    }

    /// The value must be at least `min`.
    #[must_use]
    pub fn min(mut self, min: impl Into<f64>) -> Self {
        self.validators.push(Validator::Range {
            min: Some(min.into()),
            max: None,
        });
        self
    }

    /// The value must be at most `max`.
    #[must_use]
    pub fn max(mut self, max: impl Into<f64>) -> Self {
        self.validators.push(Validator::Range {
            min: None,
            max: Some(max.into()),
        });
        self
    }

    /// The value's text must be one of `allowed`.
    #[must_use]
    pub fn one_of<S: Into<String>>(mut self, allowed: impl IntoIterator<Item = S>) -> Self {
        let allowed: Vec<String> = allowed.into_iter().map(Into::into).collect();
        self.validators.push(Validator::OneOf(Arc::from(allowed)));
        self
    }

    /// The value's text must match this regular expression (checked at build).
    #[must_use]
    pub fn pattern(mut self, regex: impl Into<String>) -> Self {
        self.pattern = Some(regex.into());
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the name is secret.
    pub fn is_secret(&self) -> bool {
        self.secret
    }

    /// Whether the name is required.
    pub fn is_required(&self) -> bool {
        self.required
    }

    /// The description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The default, if any (already of the name's kind).
    pub fn default_value(&self) -> Option<&Value> {
        self.default.as_ref()
    }
}

/// What the Python original does by subclassing `BaseEtcdClient`: override what differs,
/// keep the defaults for the rest, and turn it into a schema with [`Schema::from_trait`].
///
/// ```
/// use std::collections::BTreeMap;
/// use etcd_dynamic_config::{Value, schema::{ConfigSchema, Schema}};
///
/// struct MyApp;
///
/// impl ConfigSchema for MyApp {
///     fn config_prefix(&self) -> Option<String> {
///         Some("/apps/myapp/prod".into())
///     }
///     fn etcd_key_map(&self) -> BTreeMap<String, String> {
///         [("DatabaseUrl", "database_url"), ("MaxWorkers", "max_workers")]
///             .into_iter()
///             .map(|(key, name)| (key.to_owned(), name.to_owned()))
///             .collect()
///     }
///     fn coerce(&self, name: &str, text: &str) -> Option<Result<Value, String>> {
///         // An empty max_workers means 4; everything else uses the default coercion.
///         (name == "max_workers" && text.is_empty()).then(|| Ok(Value::Integer(4)))
///     }
/// }
///
/// let schema = Schema::from_trait(MyApp).build()?;
/// assert_eq!(schema.prefix(), Some("/apps/myapp/prod"));
/// # Ok::<(), etcd_dynamic_config::Error>(())
/// ```
pub trait ConfigSchema: Send + Sync + 'static {
    /// The prefix (Python `get_config_prefix`); `None` uses `EtcdSettings__RootKey`.
    fn config_prefix(&self) -> Option<String> {
        None
    }

    /// etcd key (relative to the prefix, or absolute) → name (Python
    /// `_build_etcd_key_map`). Empty: every key under the prefix, named by its path.
    fn etcd_key_map(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Name → env var (Python `_build_env_var_map`). Names left out use the default
    /// rule: upper-cased, `.` → `__`.
    fn env_var_map(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Custom coercion (Python `_coerce_config_value`): `Some` decides the value (or the
    /// rejection), `None` falls back to the name's kind.
    fn coerce(&self, _name: &str, _text: &str) -> Option<Result<Value, String>> {
        None
    }
}

impl Schema {
    /// Every key under the prefix is a configuration value named by its path (see
    /// [`naming::name_from_path`]); kinds follow the naming rules ([`Kind::infer`]).
    #[must_use]
    pub fn auto_discover() -> Self {
        Self {
            discover: true,
            ..Self::default()
        }
    }

    /// The built-in ControlUnit schema: auto-discovery (under `EtcdSettings__RootKey`, or
    /// `/APPS/ControlUnit`, with `/dev` in front when `EtcdSettings__Dev=true`), with the
    /// names the Python original documents declared so that local mode and env
    /// fallbacks know them. Tokens and DSNs are secret.
    pub fn control_unit() -> Self {
        let names = [
            Name::new("categorization_api_url")
                .key("CategorizationApiUrl")
                .describe("Categorization API base URL"),
            Name::new("categorization_api_token")
                .key("CategorizationApiToken")
                .secret()
                .describe("Categorization API token"),
            Name::new("postgres_dsn")
                .key("PostgresDsn")
                .secret()
                .describe("PostgreSQL connection string"),
            Name::new("log_level")
                .key("LogLevel")
                .one_of([
                    "CRITICAL", "ERROR", "WARNING", "WARN", "INFO", "DEBUG", "TRACE",
                ])
                .describe("Application log level"),
            Name::new("ai_http_timeout_seconds")
                .key("AiHttpTimeoutSeconds")
                .min(0)
                .describe("Timeout of AI HTTP calls, in seconds"),
            Name::new("ai_http_max_connections")
                .key("AiHttpMaxConnections")
                .min(1)
                .describe("Connection pool size of AI HTTP calls"),
        ];
        // Log levels in any case, served upper-cased, as the Python original serves them.
        let mut builder = Self::builder().discover(true).coerce(|name, text| {
            (name == "log_level")
                .then(|| Ok(Value::String(Arc::from(text.trim().to_ascii_uppercase()))))
        });
        for name in names {
            builder = builder.name(name);
        }
        builder.build().expect("the ControlUnit schema is valid")
    }

    /// A builder for a declared schema.
    #[must_use]
    pub fn builder() -> SchemaBuilder {
        SchemaBuilder::default()
    }

    /// A builder pre-filled from a [`ConfigSchema`] implementation.
    #[must_use]
    pub fn from_trait(schema: impl ConfigSchema) -> SchemaBuilder {
        let mut builder = Self::builder();
        if let Some(prefix) = schema.config_prefix() {
            builder = builder.prefix(prefix);
        }
        for (key, name) in schema.etcd_key_map() {
            builder = builder.key(key, name);
        }
        builder.env_vars.extend(schema.env_var_map());
        let schema = Arc::new(schema);
        builder.coerce(move |name, text| schema.coerce(name, text))
    }

    /// The schema's own prefix, if it names one.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The declared names, in name order.
    pub fn names(&self) -> impl Iterator<Item = &Name> {
        self.names.values()
    }

    /// One declared name.
    pub fn declared(&self, name: &str) -> Option<&Name> {
        self.names.get(name)
    }

    /// The checks over the whole configuration.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// The env var for `name`: declared, or the name upper-cased with `.` → `__`.
    pub fn env_var(&self, name: &str) -> String {
        match self.names.get(name).and_then(|spec| spec.env.clone()) {
            Some(env) => env,
            None => name.to_uppercase().replace('.', "__"),
        }
    }

    /// The kind of `name`: declared, or inferred by the naming rules.
    pub fn kind_of(&self, name: &str) -> Kind {
        self.names
            .get(name)
            .and_then(|spec| spec.kind)
            .unwrap_or_else(|| Kind::infer(name))
    }

    /// Whether `name` is secret: as declared, or for a name the schema does not declare,
    /// whether it looks secret ([`naming::looks_secret`]: `password`, `token`, `dsn`,
    /// `*_key`, …).
    pub fn is_secret(&self, name: &str) -> bool {
        match self.names.get(name) {
            Some(spec) => spec.secret,
            None => naming::looks_secret(name),
        }
    }

    /// The etcd key of `name` under `prefix`: the explicit key, or for auto-discovery the
    /// path whose name is `name` (`database.max_pool` → `Database/MaxPool`).
    pub fn key_for(&self, prefix: &str, name: &str) -> Option<String> {
        let prefix = prefix.trim_end_matches('/');
        if let Some((key, _)) = self.keys.iter().find(|(_, mapped)| &**mapped == name) {
            return Some(absolute(prefix, key));
        }
        self.discover.then(|| {
            let path: Vec<String> = name.split('.').map(naming::pascal_case).collect();
            format!("{prefix}/{}", path.join("/"))
        })
    }

    /// Checks a whole snapshot: every required name has a value and every check passes.
    ///
    /// # Errors
    ///
    /// Every problem found.
    pub fn validate(&self, snapshot: &crate::Snapshot) -> Result<(), Vec<String>> {
        let mut reasons: Vec<String> = self
            .names()
            .filter(|spec| spec.required && snapshot.get(&spec.name).is_none())
            .map(|spec| format!("required name {} has no value", spec.name))
            .collect();
        // A panicking check rejects the revision instead of taking the engine down.
        reasons.extend(self.checks.iter().filter_map(|check| {
            catch_unwind(AssertUnwindSafe(|| (check.check)(snapshot)))
                .unwrap_or_else(|panic| {
                    Err(format!(
                        "check {} panicked: {}",
                        check.label,
                        crate::error::panic_message(&*panic)
                    ))
                })
                .err()
        }));
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// Parses raw bytes stored for `name` into its value and runs its validators.
    ///
    /// # Errors
    ///
    /// Why the value is rejected (never the value itself).
    pub fn coerce(&self, name: &str, raw: &[u8]) -> Result<Value, String> {
        let text = std::str::from_utf8(raw)
            .map_err(|error| format!("the value is not UTF-8 text ({error})"))?;
        self.coerce_text(name, text)
    }

    /// [`coerce`](Self::coerce), borrowing the text of a string no hook or validator
    /// looks at: a list coerces every key, and most are such strings.
    pub(crate) fn coerce_in<'t>(&self, name: &str, raw: &'t [u8]) -> Result<Coerced<'t>, String> {
        let text = std::str::from_utf8(raw)
            .map_err(|error| format!("the value is not UTF-8 text ({error})"))?;
        let spec = self.names.get(name);
        let checked = spec.is_some_and(|spec| !spec.validators.is_empty());
        if self.coerce.is_none() && !checked {
            let kind = spec.and_then(|spec| spec.kind);
            if kind.unwrap_or_else(|| Kind::infer(name)) == Kind::String {
                return Ok(Coerced::Text(text));
            }
        }
        self.coerce_text(name, text).map(Coerced::Value)
    }

    fn coerce_text(&self, name: &str, text: &str) -> Result<Value, String> {
        let coerced = (|| {
            // A panicking hook rejects the value instead of taking the engine down.
            let custom = match &self.coerce {
                Some(hook) => {
                    catch_unwind(AssertUnwindSafe(|| hook(name, text))).unwrap_or_else(|panic| {
                        Some(Err(format!(
                            "the coercion hook panicked: {}",
                            crate::error::panic_message(&*panic)
                        )))
                    })
                }
                None => None,
            };
            let value = match custom {
                Some(result) => result?,
                None => self.kind_of(name).parse(text)?,
            };
            if let Some(spec) = self.names.get(name) {
                for validator in &spec.validators {
                    validator.check(&value)?;
                }
            }
            Ok(value)
        })();
        // A custom hook's reason may quote the value: never for a secret.
        coerced.map_err(|reason| {
            if self.is_secret(name) {
                crate::snapshot::scrub(reason, text.trim())
            } else {
                reason
            }
        })
    }

    /// The values that apply when etcd has none: each declared name's env var (read
    /// through `env`), else its default. Env values go through the same coercion and
    /// validation as etcd values; a rejected one falls back to the default and is
    /// reported.
    pub(crate) fn fallback(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (Entries, Vec<crate::report::Rejection>) {
        let mut entries = Entries::default();
        let mut rejected = Vec::new();
        for (name, spec) in &self.names {
            let var = self.env_var(name);
            let from_env = env(&var).map(|text| (self.coerce_text(name, &text), var));
            let entry = match from_env {
                Some((Ok(value), var)) => Some((
                    value,
                    Source::Env {
                        var: Arc::from(var),
                    },
                )),
                Some((Err(reason), var)) => {
                    rejected.push(crate::report::Rejection {
                        name: name.clone(),
                        source: Source::Env {
                            var: Arc::from(var),
                        },
                        reason,
                    });
                    None
                }
                None => None,
            };
            let entry = entry.or_else(|| Some((spec.default.clone()?, Source::Default)));
            if let Some((value, source)) = entry {
                entries.insert(name, value.view(), &source, spec.secret);
            }
        }
        (entries, rejected)
    }

    /// Resolves the key map against `prefix`.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] for an explicit key outside the prefix, or among its rollouts.
    pub(crate) fn bind(self: &Arc<Self>, prefix: &str) -> Result<KeyMap> {
        let prefix_dir: Arc<str> = Arc::from(format!("{}/", prefix.trim_end_matches('/')));
        let mut by_key = HashMap::default();
        for (key, name) in &self.keys {
            let key = absolute(prefix.trim_end_matches('/'), key);
            if !key.starts_with(&*prefix_dir) {
                return Err(Error::Schema {
                    what: format!("key {key}"),
                    reason: format!(
                        "it is outside the prefix {prefix_dir}, which is all that is read"
                    ),
                });
            }
            if key[prefix_dir.len()..].starts_with(crate::rollout::DIR) {
                return Err(Error::Schema {
                    what: format!("key {key}"),
                    reason: format!(
                        "{prefix_dir}{} holds rollouts, not values",
                        crate::rollout::DIR
                    ),
                });
            }
            by_key.insert(Arc::<str>::from(key), name.clone());
        }
        Ok(KeyMap {
            schema: self.clone(),
            prefix_dir,
            by_key,
        })
    }
}

fn absolute(prefix: &str, key: &str) -> String {
    if key.starts_with('/') {
        key.to_owned()
    } else {
        format!("{prefix}/{key}")
    }
}

/// A schema bound to a prefix: what the engine asks for each key.
#[derive(Debug, Clone)]
pub(crate) struct KeyMap {
    schema: Arc<Schema>,
    prefix_dir: Arc<str>,
    /// foldhash: read once per listed key, where SipHash cost more than the lookup.
    by_key: HashMap<Arc<str>, Arc<str>, foldhash::fast::RandomState>,
}

impl KeyMap {
    /// The prefix with a trailing `/`.
    pub(crate) fn prefix_dir(&self) -> &Arc<str> {
        &self.prefix_dir
    }

    /// The rollout `key` holds (its name), if it is a rollout key.
    pub(crate) fn rollout_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&*self.prefix_dir)?
            .strip_prefix(crate::rollout::DIR)
    }

    pub(crate) fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The same schema bound to another prefix.
    pub(crate) fn rebind(&self, prefix: &str) -> Result<Self> {
        self.schema.bind(prefix)
    }

    /// The name `key` holds, or `None` when the schema does not load it.
    pub(crate) fn name_for(&self, key: &str) -> Option<Arc<str>> {
        if let Some(name) = self.by_key.get(key) {
            return Some(name.clone());
        }
        let mut name = String::new();
        if !self.name_into(key, &mut name) {
            return None;
        }
        // A declared name keeps its one Arc; others get their own.
        match self.schema.names.get_key_value(name.as_str()) {
            Some((declared, _)) => Some(declared.clone()),
            None => Some(Arc::from(name)),
        }
    }

    /// Writes the name `key` holds in `name` (cleared first); `false` when the schema does
    /// not load the key. A list passes the same buffer for every key, and borrows the
    /// name from it: no allocation per key.
    pub(crate) fn name_into(&self, key: &str, name: &mut String) -> bool {
        name.clear();
        if let Some(declared) = self.by_key.get(key) {
            name.push_str(declared);
            return true;
        }
        if !self.schema.discover {
            return false;
        }
        let Some(relative) = key.strip_prefix(&*self.prefix_dir) else {
            return false;
        };
        if relative.starts_with(crate::rollout::DIR) {
            return false; // a rollout, not a value
        }
        name.reserve(relative.len() + 4);
        naming::push_name_from_path(relative, name)
    }
}

/// A coerced value: the stored text itself, borrowed, where it is a string as it is.
#[derive(Debug)]
pub(crate) enum Coerced<'t> {
    Text(&'t str),
    Value(Value),
}

impl Coerced<'_> {
    pub(crate) fn view(&self) -> ValueRef<'_> {
        match self {
            Self::Text(text) => ValueRef::String(text),
            Self::Value(value) => value.view(),
        }
    }

    pub(crate) fn into_value(self) -> Value {
        match self {
            Self::Text(text) => Value::String(Arc::from(text)),
            Self::Value(value) => value,
        }
    }
}

/// Builds a [`Schema`]; everything is checked in [`build`](Self::build).
#[derive(Default)]
pub struct SchemaBuilder {
    prefix: Option<String>,
    discover: Option<bool>,
    keys: Vec<(String, String)>,
    names: Vec<Name>,
    /// Name → env var, from a trait's `env_var_map`: merged into declarations at build.
    env_vars: BTreeMap<String, String>,
    checks: Vec<Check>,
    coerce: Option<Arc<CoerceFn>>,
}

impl fmt::Debug for SchemaBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaBuilder")
            .field("prefix", &self.prefix)
            .field("discover", &self.discover)
            .field("keys", &self.keys)
            .field("names", &self.names)
            .field("checks", &self.checks)
            .finish_non_exhaustive()
    }
}

impl SchemaBuilder {
    /// The prefix this schema owns (default: `EtcdSettings__RootKey`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Maps an etcd key (relative to the prefix, or absolute) to a name. Once a key is
    /// mapped, only mapped keys are loaded unless [`discover`](Self::discover) is set.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>, name: impl Into<String>) -> Self {
        self.keys.push((key.into(), name.into()));
        self
    }

    /// Declares a name: its kind, default, env var, validators, secrecy.
    #[must_use]
    pub fn name(mut self, name: Name) -> Self {
        self.names.push(name);
        self
    }

    /// Whether keys without an explicit mapping are loaded too, named by their path
    /// (default: yes when no key is mapped, no otherwise).
    #[must_use]
    pub fn discover(mut self, discover: bool) -> Self {
        self.discover = Some(discover);
        self
    }

    /// Adds a check over the whole configuration.
    #[must_use]
    pub fn check(mut self, check: Check) -> Self {
        self.checks.push(check);
        self
    }

    /// Custom coercion: `Some` decides a name's value (or rejection), `None` falls back
    /// to the name's kind.
    #[must_use]
    pub fn coerce(
        mut self,
        coerce: impl Fn(&str, &str) -> Option<Result<Value, String>> + Send + Sync + 'static,
    ) -> Self {
        self.coerce = Some(Arc::new(coerce));
        self
    }

    /// Checks the declarations and builds the schema.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] naming the problem: a name declared twice, two keys for one
    /// name or one key for two names, an empty name, a default that is not of the
    /// name's kind or breaks its validators, a pattern that is not a regular expression.
    pub fn build(self) -> Result<Schema> {
        let invalid = |what: &str, reason: String| Error::Schema {
            what: what.to_owned(),
            reason,
        };
        let mut schema = Schema {
            prefix: self.prefix,
            discover: self.discover.unwrap_or(true),
            keys: Vec::new(),
            names: BTreeMap::new(),
            checks: self.checks,
            coerce: self.coerce,
        };
        let mut explicit = !self.keys.is_empty();
        let mut keys = self.keys;
        let mut names = self.names;
        for (name, env) in self.env_vars {
            match names.iter_mut().find(|declared| *declared.name == *name) {
                Some(declared) => {
                    declared.env.get_or_insert(env);
                }
                None => names.push(Name::new(name).env(env)),
            }
        }
        for mut name in names {
            let label = format!("name {}", name.name);
            if name.name.is_empty() || name.name.split('.').any(str::is_empty) {
                return Err(invalid(&label, "names need text between the dots".into()));
            }
            if let Some(pattern) = name.pattern.take() {
                let regex = regex::Regex::new(&pattern)
                    .map_err(|error| invalid(&label, format!("bad pattern: {error}")))?;
                name.validators.push(Validator::Pattern(regex));
            }
            if let Some(key) = &name.key {
                keys.push((key.clone(), name.name.to_string()));
                explicit = true;
            }
            if schema.names.contains_key(&name.name) {
                return Err(invalid(&label, "declared twice".into()));
            }
            schema.names.insert(name.name.clone(), name);
        }
        schema.discover = self.discover.unwrap_or(!explicit);
        for (key, name) in keys {
            if schema.keys.iter().any(|(k, n)| *k == key && **n != *name) {
                return Err(invalid(&format!("key {key}"), "mapped to two names".into()));
            }
            if schema.keys.iter().any(|(k, n)| **n == *name && *k != key) {
                return Err(invalid(
                    &format!("name {name}"),
                    "mapped from two keys".into(),
                ));
            }
            if !schema.keys.iter().any(|(k, _)| *k == key) {
                let name = match schema.names.get_key_value(name.as_str()) {
                    Some((declared, _)) => declared.clone(),
                    None => Arc::from(name),
                };
                schema.keys.push((key, name));
            }
        }
        // Defaults are values of the name's kind that pass its validators.
        let defaults: Vec<(Arc<str>, Value)> = schema
            .names
            .values()
            .filter_map(|spec| spec.default.clone().map(|value| (spec.name.clone(), value)))
            .collect();
        for (name, default) in defaults {
            let kind = schema.kind_of(&name);
            let value = match &default {
                Value::String(text) if kind != Kind::String => kind.parse(text),
                other if kind.holds(other) => Ok(other.clone()),
                other => Err(format!(
                    "the default is a {}, the name is a {kind}",
                    other.kind_name()
                )),
            }
            .and_then(|value| {
                let spec = &schema.names[&name];
                spec.validators
                    .iter()
                    .try_for_each(|validator| validator.check(&value))
                    .map(|()| value)
            })
            .map_err(|reason| invalid(&format!("default of {name}"), reason))?;
            if let Some(spec) = schema.names.get_mut(&name) {
                spec.default = Some(value);
            }
        }
        Ok(schema)
    }
}

#[cfg(test)]
mod tests;
