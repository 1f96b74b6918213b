//! `etcd_dynamic_config._native`: the engine, seen from Python.
//!
//! The Python package (`python/etcd_dynamic_config`) builds the original's API on these
//! few types. Every call that waits (start, stop, reads from etcd) releases the GIL. A
//! Python callback runs on its listener's own thread, never on the engine's, so a slow
//! or raising callback delays only itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use etcd_dynamic_config::schema::Name;
use etcd_dynamic_config::settings::{DEV, ROOT_KEY};
use etcd_dynamic_config::{
    ConfigChange, EtcdClient, EtcdConfig, EtcdSettings, Listener, Schema, Snapshot, Source, Value,
    ValueRef, blocking,
};
use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

pyo3::create_exception!(
    _native,
    EtcdConfigError,
    PyException,
    "A failure of etcd_dynamic_config, in plain words."
);
pyo3::create_exception!(
    _native,
    SettingError,
    EtcdConfigError,
    "A malformed setting (an EtcdSettings__* variable or a constructor argument)."
);
pyo3::create_exception!(
    _native,
    UnavailableError,
    EtcdConfigError,
    "etcd could not be reached in time; worth retrying."
);
pyo3::create_exception!(
    _native,
    RefusedError,
    EtcdConfigError,
    "etcd refused the request for good: credentials, permissions, certificates."
);
pyo3::create_exception!(
    _native,
    InvalidError,
    EtcdConfigError,
    "The configuration breaks the schema, or a value does not read as asked."
);

/// The runtime of one-off client calls.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("etcd-config-client")
        .enable_all()
        .build()
        .expect("a tokio runtime for the client")
});

/// The error as the Python exception of its kind, with its causes in the message.
fn to_py(error: etcd_dynamic_config::Error) -> PyErr {
    use etcd_dynamic_config::Error;
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    match error {
        Error::Setting { .. } | Error::Schema { .. } => SettingError::new_err(message),
        Error::Unavailable { .. } | Error::StartTimeout { .. } => {
            UnavailableError::new_err(message)
        }
        Error::Refused { .. } => RefusedError::new_err(message),
        Error::Invalid { .. } | Error::Value { .. } | Error::Bind { .. } => {
            InvalidError::new_err(message)
        }
        _ => EtcdConfigError::new_err(message),
    }
}

/// A value as the Python type the original gives it: `str`, `bool`, `int`, `float`, a
/// `tuple` of `str` for lists; JSON as dicts and lists; a duration in seconds.
fn value_to_py<'py>(py: Python<'py>, value: ValueRef<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        ValueRef::String(text) => PyString::new(py, text).into_any(),
        ValueRef::Bool(flag) => flag.into_pyobject(py)?.to_owned().into_any(),
        ValueRef::Integer(number) => number.into_pyobject(py)?.into_any(),
        ValueRef::Float(number) => number.into_pyobject(py)?.into_any(),
        ValueRef::List(items) => PyTuple::new(py, items.iter().map(|item| &**item))?.into_any(),
        ValueRef::Json(json) => json_to_py(py, json)?,
        ValueRef::Duration(duration) => duration.as_secs_f64().into_pyobject(py)?.into_any(),
        other => PyString::new(py, &other.to_string()).into_any(),
    })
}

fn json_to_py<'py>(py: Python<'py>, json: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as Json;
    Ok(match json {
        Json::Null => py.None().into_bound(py),
        Json::Bool(flag) => flag.into_pyobject(py)?.to_owned().into_any(),
        Json::Number(number) => match (number.as_i64(), number.as_f64()) {
            (Some(integer), _) => integer.into_pyobject(py)?.into_any(),
            (None, Some(float)) => float.into_pyobject(py)?.into_any(),
            (None, None) => PyString::new(py, &number.to_string()).into_any(),
        },
        Json::String(text) => PyString::new(py, text).into_any(),
        Json::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Json::Object(fields) => {
            let dict = PyDict::new(py);
            for (key, item) in fields {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

fn snapshot_to_py<'py>(py: Python<'py>, snapshot: &Snapshot) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, entry) in snapshot.iter() {
        dict.set_item(name, value_to_py(py, entry.value())?)?;
    }
    Ok(dict)
}

/// Reads a variable from `overrides` first (`None` there: unset), then the process
/// environment.
type Overrides = Arc<HashMap<String, Option<String>>>;

fn lookup(overrides: &Overrides, name: &str) -> Option<String> {
    match overrides.get(name) {
        Some(value) => value.clone(),
        None => std::env::var(name).ok(),
    }
}

/// The schema of a Python client.
///
/// `keys` (absolute etcd key → name) loads those keys only; without it every key under
/// the prefix is discovered. `env_vars` names each name's environment variable. With
/// `raw`, values stay text: the Python client's own coercion hook reads them.
fn schema(
    keys: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    raw: bool,
    control_unit: bool,
) -> PyResult<Schema> {
    if control_unit && keys.is_none() && env_vars.is_none() && !raw {
        return Ok(Schema::control_unit());
    }
    let mut builder = Schema::builder().discover(keys.is_none());
    for (key, name) in keys.into_iter().flatten() {
        builder = builder.key(key, name);
    }
    for (name, var) in env_vars.into_iter().flatten() {
        builder = builder.name(Name::new(name).env(var));
    }
    if raw {
        builder = builder.coerce(|_, text| Some(Ok(Value::String(Arc::from(text)))));
    }
    builder.build().map_err(to_py)
}

/// What the Python client says of itself (`BaseEtcdClient._native_args()`): its prefix,
/// keys (absolute key → name; `None`: discover), env vars (name → variable), whether its
/// own hook reads text, whether it is the ControlUnit client, and its settings'
/// variables (`None`: unset).
#[derive(Debug, FromPyObject)]
#[pyo3(from_item_all)]
struct Options {
    prefix: Option<String>,
    keys: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    raw: bool,
    control_unit: bool,
    settings: Option<HashMap<String, Option<String>>>,
}

/// Settings and schema of a Python client.
struct Parts {
    settings: EtcdSettings,
    schema: Schema,
    overrides: Overrides,
}

fn parts(options: Options) -> PyResult<Parts> {
    let Options {
        prefix,
        keys,
        env_vars,
        raw,
        control_unit,
        settings,
    } = options;
    let mut settings = settings.unwrap_or_default();
    if let Some(prefix) = prefix {
        // The client's prefix is final (`/dev` included when it wants it): it is the root
        // key, as if set by the environment.
        settings.insert(ROOT_KEY.to_owned(), Some(prefix));
        settings.insert(DEV.to_owned(), Some("false".to_owned()));
    }
    let overrides: Overrides = Arc::new(settings);
    let settings = EtcdSettings::from_lookup(|name| lookup(&overrides, name)).map_err(to_py)?;
    Ok(Parts {
        settings,
        schema: schema(keys, env_vars, raw, control_unit)?,
        overrides,
    })
}

/// A configuration kept current by the engine.
#[pyclass(frozen, module = "etcd_dynamic_config._native")]
struct Config {
    config: blocking::EtcdConfig,
    /// The snapshot last handed to Python, to tell whether another one is served.
    handed: Mutex<Option<Arc<Snapshot>>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("prefix", &self.config.as_async().prefix())
            .finish_non_exhaustive()
    }
}

#[pymethods]
impl Config {
    #[new]
    fn new(options: Options) -> PyResult<Self> {
        let parts = parts(options)?;
        let overrides = parts.overrides;
        let config = EtcdConfig::builder()
            .settings(parts.settings)
            .schema(parts.schema)
            .env(move |name: &str| lookup(&overrides, name))
            .build()
            .map_err(to_py)?;
        let config = blocking::EtcdConfig::new(config).map_err(to_py)?;
        Ok(Self {
            config,
            handed: Mutex::new(None),
        })
    }

    /// Loads the prefix and starts the watch; the start report as JSON.
    fn start(&self, py: Python<'_>) -> PyResult<String> {
        let report = py.detach(|| self.config.start()).map_err(to_py)?;
        serde_json::to_string(&report).map_err(|error| PyRuntimeError::new_err(error.to_string()))
    }

    /// Stops the watch; the last snapshot keeps serving.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| self.config.stop());
    }

    /// `(revision, {name: value})` of the snapshot served now, or `None` when it is the
    /// one this call returned last time.
    fn values_if_changed<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<(i64, Bound<'py, PyDict>)>> {
        let snapshot = self.config.snapshot();
        {
            let mut handed = self.handed.lock().unwrap_or_else(|e| e.into_inner());
            if handed
                .as_ref()
                .is_some_and(|last| Arc::ptr_eq(last, &snapshot))
            {
                return Ok(None);
            }
            *handed = Some(snapshot.clone());
        }
        Ok(Some((snapshot.revision(), snapshot_to_py(py, &snapshot)?)))
    }

    /// The health report as JSON.
    fn health(&self) -> PyResult<String> {
        serde_json::to_string(&self.config.health())
            .map_err(|error| PyRuntimeError::new_err(error.to_string()))
    }

    /// The values rejected now as JSON: name, source and reason, never the value.
    fn rejections(&self) -> PyResult<String> {
        serde_json::to_string(&self.config.rejections())
            .map_err(|error| PyRuntimeError::new_err(error.to_string()))
    }

    /// Calls `callback(revision, [(name, old, new), ...])` after every applied revision
    /// that changed a value, on a thread of its own, until the subscription is
    /// cancelled. An exception in the callback is reported as unraisable; the next
    /// change calls it again.
    fn on_change(&self, callback: Py<PyAny>) -> Subscription {
        let listener = self.config.on_change(move |change: &ConfigChange| {
            let Some(_call) = Callbacks::enter() else {
                return; // the interpreter is shutting down
            };
            Python::try_attach(|py| {
                let called = changes_to_py(py, change)
                    .and_then(|changes| callback.call1(py, (change.revision, changes)));
                if let Err(error) = called {
                    error.write_unraisable(py, Some(callback.bind(py)));
                }
            });
        });
        Subscription {
            listener: Mutex::new(Some(listener)),
        }
    }
}

/// The Python callbacks running on listener threads, and whether the interpreter is
/// shutting down: a thread must not enter Python once it finalizes.
struct Callbacks;

static CLOSING: AtomicBool = AtomicBool::new(false);
static RUNNING: Mutex<usize> = Mutex::new(0);
static DONE: Condvar = Condvar::new();

impl Callbacks {
    /// Counts a callback in, unless the interpreter is shutting down.
    fn enter() -> Option<Callbacks> {
        *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        if CLOSING.load(Ordering::SeqCst) {
            drop(Callbacks);
            return None;
        }
        Some(Callbacks)
    }
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        if *running == 0 {
            DONE.notify_all();
        }
    }
}

/// Called at interpreter exit (`atexit`): no callback starts any more, and those running
/// finish first (for at most `timeout` seconds), so none enters a finalizing interpreter.
#[pyfunction]
fn shutdown(py: Python<'_>, timeout: f64) {
    CLOSING.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
    py.detach(|| {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            running = DONE
                .wait_timeout(running, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    });
}

fn changes_to_py<'py>(py: Python<'py>, change: &ConfigChange) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for value in &change.changes {
        let old = value
            .old
            .as_ref()
            .map(|v| value_to_py(py, v.view()))
            .transpose()?;
        let new = value
            .new
            .as_ref()
            .map(|v| value_to_py(py, v.view()))
            .transpose()?;
        list.append((&*value.name, old, new))?;
    }
    Ok(list)
}

/// A registered change callback; `cancel()` (or dropping it) unsubscribes.
#[pyclass(frozen, module = "etcd_dynamic_config._native")]
#[derive(Debug)]
struct Subscription {
    listener: Mutex<Option<Listener>>,
}

#[pymethods]
impl Subscription {
    /// Stops the callback; changes already queued for it are dropped.
    fn cancel(&self, py: Python<'_>) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // The listener's thread may be waiting for the GIL to call back.
        py.detach(|| drop(listener));
    }
}

/// What `Client.load` returns: values, problems, validity, and etcd key → name.
type LoadedPy<'py> = (
    Bound<'py, PyDict>,
    Vec<String>,
    bool,
    BTreeMap<String, String>,
);

/// One-off reads through a schema: no watch, no cache.
#[pyclass(frozen, module = "etcd_dynamic_config._native")]
#[derive(Debug)]
struct Client {
    client: EtcdClient,
}

#[pymethods]
impl Client {
    #[new]
    fn new(options: Options) -> PyResult<Self> {
        let parts = parts(options)?;
        let overrides = parts.overrides;
        let env = Arc::new(move |name: &str| lookup(&overrides, name));
        let client = EtcdClient::with_env(parts.settings, parts.schema, env).map_err(to_py)?;
        Ok(Self { client })
    }

    /// `({name: value}, problems, valid, {etcd key: name})`: the configuration read
    /// once, with every problem in plain words (rejected values are left out).
    fn load<'py>(&self, py: Python<'py>) -> PyResult<LoadedPy<'py>> {
        let loaded = py
            .detach(|| RUNTIME.block_on(self.client.load()))
            .map_err(to_py)?;
        let keys = loaded
            .snapshot
            .iter()
            .filter_map(|(name, entry)| match entry.source() {
                Source::Etcd { key, .. } => Some((key.to_string(), name.to_owned())),
                _ => None,
            })
            .collect();
        Ok((
            snapshot_to_py(py, &loaded.snapshot)?,
            loaded.problems,
            loaded.valid,
            keys,
        ))
    }

    /// `{key: text}` for the keys etcd holds (absent keys are left out).
    fn get_values_by_keys(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
    ) -> PyResult<BTreeMap<String, String>> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        py.detach(|| RUNTIME.block_on(self.client.get_values_by_keys(&keys)))
            .map_err(to_py)
    }
}

/// The value of `text` under the built-in naming rules for `name` (a `*_port` is an
/// integer, a `use_*` a boolean, ...).
///
/// Raises `ValueError` naming what was expected when the text does not read as that.
#[pyfunction]
fn coerce<'py>(py: Python<'py>, name: &str, text: &str) -> PyResult<Bound<'py, PyAny>> {
    let value = Schema::auto_discover()
        .coerce(name, text.as_bytes())
        .map_err(|reason| pyo3::exceptions::PyValueError::new_err(format!("{name}: {reason}")))?;
    value_to_py(py, value.view())
}

/// The prefix the settings name when nothing else does: `EtcdSettings__RootKey` (a
/// leading `/` added) or `/APPS/ControlUnit`, with `/dev` in front when
/// `EtcdSettings__Dev=true`.
#[pyfunction]
#[pyo3(signature = (settings=None))]
fn default_prefix(settings: Option<HashMap<String, Option<String>>>) -> PyResult<String> {
    let overrides: Overrides = Arc::new(settings.unwrap_or_default());
    let settings = EtcdSettings::from_lookup(|name| lookup(&overrides, name)).map_err(to_py)?;
    settings.resolve_prefix(None, None).map_err(to_py)
}

/// The kind the naming rules give `name`: `string`, `bool`, `integer`, `float`, `list`,
/// `json` or `duration`.
#[pyfunction]
fn kind(name: &str) -> String {
    format!("{:?}", etcd_dynamic_config::schema::Kind::infer(name)).to_lowercase()
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add_class::<Config>()?;
    module.add_class::<Client>()?;
    module.add_class::<Subscription>()?;
    module.add("EtcdConfigError", py.get_type::<EtcdConfigError>())?;
    module.add("SettingError", py.get_type::<SettingError>())?;
    module.add("UnavailableError", py.get_type::<UnavailableError>())?;
    module.add("RefusedError", py.get_type::<RefusedError>())?;
    module.add("InvalidError", py.get_type::<InvalidError>())?;
    module.add_function(wrap_pyfunction!(coerce, module)?)?;
    module.add_function(wrap_pyfunction!(default_prefix, module)?)?;
    module.add_function(wrap_pyfunction!(kind, module)?)?;
    module.add_function(wrap_pyfunction!(shutdown, module)?)?;
    Ok(())
}
