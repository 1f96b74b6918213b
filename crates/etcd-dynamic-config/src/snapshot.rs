//! Immutable snapshots of the configuration and the changes between them.
//!
//! A [`Snapshot`] is a persistent map (structure shared between revisions), so producing
//! the next snapshot after one change costs O(log n), never a copy of the whole map.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeOwned, IntoDeserializer};

use crate::error::{Error, Result};
use crate::settings::parse_bool;

/// A configuration value.
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Value {
    /// Text, as stored in etcd.
    String(Arc<str>),
}

impl Value {
    /// The value as text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::String(text) => text,
        }
    }

    /// Reads the value as `T` through serde: numbers and booleans are parsed from the
    /// text, sequences are comma-separated, enums match unit variants by name.
    ///
    /// # Errors
    ///
    /// A serde error saying why the text does not fit `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, de::value::Error> {
        T::deserialize(TextDeserializer(self.as_str()))
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(text) => fmt::Debug::fmt(&**text, f),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self::String(Arc::from(text))
    }
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// An etcd key, as of the revision that last modified it.
    Etcd {
        /// The absolute etcd key.
        key: Arc<str>,
        /// The revision that last wrote the key.
        mod_revision: i64,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Etcd { key, mod_revision } => write!(f, "etcd key {key} @ rev {mod_revision}"),
        }
    }
}

/// One name's value with its provenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    value: Value,
    source: Source,
}

impl Entry {
    pub(crate) fn from_etcd(key: Arc<str>, mod_revision: i64, value: Value) -> Self {
        Self {
            value,
            source: Source::Etcd { key, mod_revision },
        }
    }

    /// The value.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Where the value came from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    pub(crate) fn etcd_key(&self) -> &Arc<str> {
        match &self.source {
            Source::Etcd { key, .. } => key,
        }
    }

    pub(crate) fn mod_revision(&self) -> i64 {
        match &self.source {
            Source::Etcd { mod_revision, .. } => *mod_revision,
        }
    }
}

/// Name → entry: a persistent hash map (an update copies O(log n) nodes, not the map),
/// hashed with foldhash, several times faster than SipHash on short names.
pub(crate) type Entries = imbl::GenericHashMap<
    Arc<str>,
    Entry,
    foldhash::fast::RandomState,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// The whole configuration as of one etcd revision; immutable.
///
/// Load it once and use it for a whole request: every value in it comes from the same
/// revision.
#[derive(Clone, Default)]
pub struct Snapshot {
    revision: i64,
    entries: Entries,
}

impl Snapshot {
    pub(crate) fn new(revision: i64, entries: Entries) -> Self {
        Self { revision, entries }
    }

    /// The etcd revision this snapshot reflects (0 before anything was loaded).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.entries.get(name).map(Entry::value)
    }

    /// The value of `name` with its provenance.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// The value of `name` read as `T` (see [`Value::deserialize`]).
    ///
    /// # Errors
    ///
    /// [`Error::Missing`] when the name is absent, [`Error::Value`] naming the name, the
    /// reason and the value's origin when it does not fit `T`. The value itself is never
    /// part of the error.
    pub fn get_as<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| Error::Missing(name.to_owned()))?;
        entry.value.deserialize().map_err(|error| Error::Value {
            name: name.to_owned(),
            reason: error.to_string(),
            origin: entry.source.to_string(),
        })
    }

    /// How many names the snapshot holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the snapshot holds no names.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every name with its entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(name, entry)| (&**name, entry))
    }

    /// Every name with its value, sorted by name: the Python `get_all_configs()`.
    pub fn to_map(&self) -> BTreeMap<String, Value> {
        self.entries
            .iter()
            .map(|(name, entry)| (name.to_string(), entry.value.clone()))
            .collect()
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("revision", &self.revision)
            .field("len", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// One name's change within a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueChange {
    /// The configuration name.
    pub name: Arc<str>,
    /// The value before (`None`: the name was absent).
    pub old: Option<Value>,
    /// The value after (`None`: the name was removed).
    pub new: Option<Value>,
}

/// Everything one applied revision changed, in name order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigChange {
    /// The etcd revision after which these changes hold.
    pub revision: i64,
    /// The names whose values changed.
    pub changes: Vec<ValueChange>,
}

/// Reads text as any serde type: the way values are parsed on demand.
struct TextDeserializer<'a>(&'a str);

macro_rules! parse_number {
    ($($method:ident => $visit:ident : $ty:ty),* $(,)?) => {$(
        fn $method<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            let text = self.0.trim();
            match text.parse::<$ty>() {
                Ok(number) => visitor.$visit(number),
                Err(error) => Err(de::Error::custom(format_args!(
                    "expected {}, found text that does not parse as one ({error})",
                    stringify!($ty)
                ))),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for TextDeserializer<'de> {
    type Error = de::value::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_bool<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match parse_bool(self.0) {
            Some(flag) => visitor.visit_bool(flag),
            None => Err(de::Error::custom(
                "expected a boolean (1 true yes y on / 0 false no n off)",
            )),
        }
    }

    parse_number! {
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
        deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
        deserialize_char => visit_char: char,
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let items = self
            .0
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(TextDeserializer);
        visitor.visit_seq(de::value::SeqDeserializer::new(items))
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self.0.trim().into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        str string bytes byte_buf unit unit_struct tuple tuple_struct map struct identifier
        ignored_any
    }
}

impl<'de> IntoDeserializer<'de, de::value::Error> for TextDeserializer<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn snapshot_with(name: &str, text: &str) -> Snapshot {
        let mut entries = Entries::default();
        entries.insert(
            Arc::from(name),
            Entry::from_etcd(Arc::from("/app/Key"), 812, Value::from(text)),
        );
        Snapshot::new(812, entries)
    }

    #[test]
    fn get_as_parses_text_into_the_asked_type() {
        assert_eq!(
            snapshot_with("p", " 5432 ").get_as::<u16>("p").unwrap(),
            5432
        );
        assert_eq!(snapshot_with("t", "2.5").get_as::<f64>("t").unwrap(), 2.5);
        assert!(snapshot_with("b", "Yes").get_as::<bool>("b").unwrap());
        assert!(!snapshot_with("b", "off").get_as::<bool>("b").unwrap());
        assert_eq!(
            snapshot_with("s", "a, b,,c")
                .get_as::<Vec<String>>("s")
                .unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(
            snapshot_with("o", "7").get_as::<Option<i32>>("o").unwrap(),
            Some(7)
        );
        assert_eq!(
            snapshot_with("u", "http://x")
                .get_as::<String>("u")
                .unwrap(),
            "http://x"
        );

        #[derive(serde::Deserialize, Debug, PartialEq)]
        enum Level {
            Info,
            Debug,
        }
        assert_eq!(
            snapshot_with("l", "Debug").get_as::<Level>("l").unwrap(),
            Level::Debug
        );
        assert!(snapshot_with("l", "Info").get_as::<Level>("l").is_ok());
    }

    #[test]
    fn errors_name_the_name_and_origin_but_not_the_value() {
        let error = snapshot_with("db_port", "ten-secret")
            .get_as::<u16>("db_port")
            .unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("db_port: expected u16"), "{text}");
        assert!(text.contains("(etcd key /app/Key @ rev 812)"), "{text}");
        assert!(!text.contains("ten-secret"), "{text}");

        let error = snapshot_with("flag", "maybe")
            .get_as::<bool>("flag")
            .unwrap_err();
        assert!(error.to_string().contains("expected a boolean"), "{error}");

        let error = snapshot_with("x", "1").get_as::<u16>("y").unwrap_err();
        assert!(matches!(error, Error::Missing(name) if name == "y"));

        let error = snapshot_with("x", "1").get_as::<Duration>("x").unwrap_err();
        assert!(matches!(error, Error::Value { .. }), "{error}");
    }

    #[test]
    fn to_map_is_sorted_by_name() {
        let mut entries = Entries::default();
        for name in ["b", "a", "c"] {
            entries.insert(
                Arc::from(name),
                Entry::from_etcd(Arc::from(name), 1, Value::from(name)),
            );
        }
        let map = Snapshot::new(1, entries).to_map();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
