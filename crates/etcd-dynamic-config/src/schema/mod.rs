//! How etcd keys become configuration names and values.

pub mod naming;

use std::sync::Arc;

use crate::snapshot::Value;

/// How etcd keys under the prefix map to names, and how raw bytes become values.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    _private: (),
}

impl Schema {
    /// Every key under the prefix is a configuration value; its name is its path relative
    /// to the prefix, each segment in snake_case, joined with `.` (see
    /// [`naming::name_from_path`]). The ControlUnit default.
    #[must_use]
    pub fn auto_discover() -> Self {
        Self::default()
    }

    /// The name of `relative` (a key path relative to the prefix directory), or `None`
    /// when the key names nothing in this schema.
    pub(crate) fn name_for(&self, relative: &str) -> Option<Arc<str>> {
        naming::name_from_path(relative).map(Arc::from)
    }

    /// Turns raw bytes stored under a name into its value.
    pub(crate) fn coerce(&self, _name: &str, raw: &[u8]) -> Result<Value, String> {
        match std::str::from_utf8(raw) {
            Ok(text) => Ok(Value::from(text)),
            Err(error) => Err(format!("the value is not UTF-8 text ({error})")),
        }
    }
}
