//! The TOML schema file: the builder's declarations as data, for programs and the CLI.
//!
//! ```toml
//! prefix = "/myapp/production"   # optional: EtcdSettings__RootKey otherwise
//! discover = false               # optional: load only the keys named below
//!
//! [names.db_port]
//! key = "Database/Port"          # relative to the prefix, or absolute
//! env = "MYAPP_DB_PORT"          # default: DB_PORT
//! kind = "integer"               # string bool integer float list json duration
//! default = 5432
//! min = 1
//! max = 65535
//! description = "Database port"
//!
//! [names.api_secret]
//! key = "API/SecretKey"
//! secret = true
//! required = true
//!
//! [names.log_level]
//! one_of = ["DEBUG", "INFO", "WARNING", "ERROR"]
//!
//! [[checks]]                     # over the whole configuration
//! left = "min_pool"
//! op = "<="
//! right = "max_pool"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Check, Kind, Name, Schema};
use crate::error::{Error, Result};
use crate::value::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    prefix: Option<String>,
    discover: Option<bool>,
    #[serde(default)]
    names: BTreeMap<String, NameFile>,
    #[serde(default)]
    checks: Vec<CheckFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameFile {
    key: Option<String>,
    env: Option<String>,
    kind: Option<Kind>,
    default: Option<toml::Value>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
    description: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    one_of: Option<Vec<String>>,
    pattern: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckFile {
    left: String,
    op: String,
    right: String,
}

impl Schema {
    /// Reads a schema from TOML text (see the module docs of `schema::file` for the
    /// format).
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] with the TOML parser's message (line and column) or the
    /// declaration that is inconsistent.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        Self::parse_toml(text, "schema")
    }

    /// Reads a schema from a TOML file.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] naming the file: unreadable, not TOML, or inconsistent.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let what = format!("schema file {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|error| Error::Schema {
            what: what.clone(),
            reason: error.to_string(),
        })?;
        Self::parse_toml(&text, &what)
    }

    fn parse_toml(text: &str, what: &str) -> Result<Self> {
        let invalid = |reason: String| Error::Schema {
            what: what.to_owned(),
            reason,
        };
        let file: File = toml::from_str(text).map_err(|error| invalid(error.to_string()))?;
        let mut builder = Self::builder();
        if let Some(prefix) = file.prefix {
            builder = builder.prefix(prefix);
        }
        if let Some(discover) = file.discover {
            builder = builder.discover(discover);
        }
        for (name, spec) in file.names {
            builder = builder.name(
                name_from_file(&name, spec)
                    .map_err(|reason| invalid(format!("names.{name}: {reason}")))?,
            );
        }
        for check in file.checks {
            builder = builder.check(
                Check::compare(&check.left, &check.op, &check.right)
                    .map_err(|reason| invalid(format!("checks: {reason}")))?,
            );
        }
        builder.build()
    }
}

fn name_from_file(name: &str, spec: NameFile) -> Result<Name, String> {
    let mut out = Name::new(name);
    if let Some(key) = spec.key {
        out = out.key(key);
    }
    if let Some(env) = spec.env {
        out = out.env(env);
    }
    let kind = spec.kind.unwrap_or_else(|| Kind::infer(name));
    if let Some(kind) = spec.kind {
        out = out.kind(kind);
    }
    if let Some(default) = spec.default {
        out = out.default(default_value(kind, default)?);
    }
    if spec.required {
        out = out.required();
    }
    if spec.secret {
        out = out.secret();
    }
    if let Some(description) = spec.description {
        out = out.describe(description);
    }
    match (spec.min, spec.max) {
        (Some(min), Some(max)) => out = out.range(min, max),
        (Some(min), None) => out = out.min(min),
        (None, Some(max)) => out = out.max(max),
        (None, None) => {}
    }
    if let Some(allowed) = spec.one_of {
        out = out.one_of(allowed);
    }
    if let Some(pattern) = spec.pattern {
        out = out.pattern(pattern);
    }
    Ok(out)
}

/// A TOML default as a value of `kind`: JSON takes any TOML value; the other kinds read
/// its text the way they read etcd's.
fn default_value(kind: Kind, default: toml::Value) -> Result<Value, String> {
    if kind == Kind::Json {
        return serde_json::to_value(&default)
            .map(Value::from)
            .map_err(|error| format!("default: {error}"));
    }
    let text = match default {
        toml::Value::String(text) => text,
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    kind.parse(&text)
        .map_err(|reason| format!("default: {reason}"))
}
