//! Typed configuration values and reading them as any serde type.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, IntoDeserializer};

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
    /// An environment variable.
    Env {
        /// Its name.
        var: Arc<str>,
    },
    /// The last-known-good cache file, holding what an etcd key had.
    Cache {
        /// The etcd key the value came from.
        key: Arc<str>,
        /// The revision that wrote it.
        mod_revision: i64,
    },
    /// The schema's default.
    Default,
    /// A value given to be written to this etcd key (in the errors of a write).
    Write {
        /// The absolute etcd key.
        key: Arc<str>,
    },
    /// A staged rollout this instance is in (see [`crate::rollout`]), in place of what
    /// the base holds at the key.
    Rollout {
        /// The rollout's name.
        rollout: Arc<str>,
        /// The etcd key the rollout changes.
        key: Arc<str>,
        /// The revision that last wrote the rollout.
        mod_revision: i64,
    },
}

/// Serialized as its text, e.g. `"etcd key /app/Port @ rev 812"`.
impl serde::Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Etcd { key, mod_revision } => write!(f, "etcd key {key} @ rev {mod_revision}"),
            Self::Env { var } => write!(f, "env var {var}"),
            Self::Cache { key, mod_revision } => {
                write!(f, "cache file (etcd key {key} @ rev {mod_revision})")
            }
            Self::Default => f.write_str("default"),
            Self::Write { key } => write!(f, "to be written to etcd key {key}"),
            Self::Rollout {
                rollout,
                key,
                mod_revision,
            } => write!(
                f,
                "rollout {rollout} of etcd key {key} @ rev {mod_revision}"
            ),
        }
    }
}

/// `1 true yes y on` / `0 false no n off`, case-insensitive.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "y" | "on" => Some(true),
        "0" | "false" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// A configuration value, already coerced to its [kind](crate::schema::Kind).
#[derive(Clone)]
#[non_exhaustive]
pub enum Value {
    /// Text.
    String(Arc<str>),
    /// `1 true yes y on` / `0 false no n off`.
    Bool(bool),
    /// A 64-bit signed integer.
    Integer(i64),
    /// A finite 64-bit float.
    Float(f64),
    /// A comma-separated list of strings.
    List(Arc<[Arc<str>]>),
    /// Any JSON document.
    Json(Arc<serde_json::Value>),
    /// A duration: `30s`, `1m 30s`, `250ms`, or a bare number of seconds.
    Duration(Duration),
}

impl Value {
    /// The value borrowed, as a snapshot lends it.
    pub fn view(&self) -> ValueRef<'_> {
        match self {
            Self::String(text) => ValueRef::String(text),
            Self::Bool(flag) => ValueRef::Bool(*flag),
            Self::Integer(number) => ValueRef::Integer(*number),
            Self::Float(number) => ValueRef::Float(*number),
            Self::List(items) => ValueRef::List(items),
            Self::Json(json) => ValueRef::Json(json),
            Self::Duration(duration) => ValueRef::Duration(*duration),
        }
    }

    /// The text of a string value; `None` for the other kinds (see `Display` for their
    /// canonical text).
    pub fn as_str(&self) -> Option<&str> {
        self.view().as_str()
    }

    /// The kind name: `string`, `bool`, `integer`, `float`, `list`, `json`, `duration`.
    pub fn kind_name(&self) -> &'static str {
        self.view().kind_name()
    }

    /// Reads the value as `T` through serde (see [`ValueRef::deserialize`]).
    ///
    /// # Errors
    ///
    /// A serde error saying why the value does not fit `T`; it never contains the value.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, de::value::Error> {
        self.view().deserialize()
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.view() == other.view()
    }
}

impl Eq for Value {}

impl PartialEq<ValueRef<'_>> for Value {
    fn eq(&self, other: &ValueRef<'_>) -> bool {
        self.view() == *other
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.view(), f)
    }
}

/// The canonical text: what `Kind::parse` reads back to the same value.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.view(), f)
    }
}

/// A configuration value lent by a snapshot: [`Value`] with its text borrowed, so that
/// reading one costs no allocation and no reference count. [`ValueRef::to_value`] makes
/// it one's own.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum ValueRef<'a> {
    /// Text.
    String(&'a str),
    /// `1 true yes y on` / `0 false no n off`.
    Bool(bool),
    /// A 64-bit signed integer.
    Integer(i64),
    /// A finite 64-bit float.
    Float(f64),
    /// A comma-separated list of strings.
    List(&'a Arc<[Arc<str>]>),
    /// Any JSON document.
    Json(&'a Arc<serde_json::Value>),
    /// A duration: `30s`, `1m 30s`, `250ms`, or a bare number of seconds.
    Duration(Duration),
}

impl<'a> ValueRef<'a> {
    /// The value as one's own: text is copied, lists and JSON documents shared.
    pub fn to_value(self) -> Value {
        match self {
            Self::String(text) => Value::String(Arc::from(text)),
            Self::Bool(flag) => Value::Bool(flag),
            Self::Integer(number) => Value::Integer(number),
            Self::Float(number) => Value::Float(number),
            Self::List(items) => Value::List(items.clone()),
            Self::Json(json) => Value::Json(json.clone()),
            Self::Duration(duration) => Value::Duration(duration),
        }
    }

    /// The text of a string value; `None` for the other kinds (see `Display` for their
    /// canonical text).
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Self::String(text) => Some(text),
            _ => None,
        }
    }

    /// The kind name: `string`, `bool`, `integer`, `float`, `list`, `json`, `duration`.
    pub fn kind_name(self) -> &'static str {
        match self {
            Self::String(_) => "string",
            Self::Bool(_) => "bool",
            Self::Integer(_) => "integer",
            Self::Float(_) => "float",
            Self::List(_) => "list",
            Self::Json(_) => "json",
            Self::Duration(_) => "duration",
        }
    }

    /// Reads the value as `T` through serde. Text is parsed on demand (numbers, booleans,
    /// comma-separated sequences and tuples, `host, 5432` into `(String, u16)`, enum
    /// variants by name); typed values convert where serde allows (an integer into any
    /// integer type that holds it, a duration into `std::time::Duration` or into seconds
    /// as a float).
    ///
    /// # Errors
    ///
    /// A serde error saying why the value does not fit `T`; it never contains the value.
    pub fn deserialize<T: DeserializeOwned>(self) -> Result<T, de::value::Error> {
        T::deserialize(ValueDeserializer(self))
    }
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(value: &'a Value) -> Self {
        value.view()
    }
}

impl PartialEq for ValueRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::String(a), Self::String(b)) => a == b,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Integer(a), Self::Integer(b)) => a == b,
            (Self::Float(a), Self::Float(b)) => a.to_bits() == b.to_bits(),
            (Self::List(a), Self::List(b)) => a == b,
            (Self::Json(a), Self::Json(b)) => a == b,
            (Self::Duration(a), Self::Duration(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for ValueRef<'_> {}

impl PartialEq<Value> for ValueRef<'_> {
    fn eq(&self, other: &Value) -> bool {
        *self == other.view()
    }
}

impl fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(text) => fmt::Debug::fmt(text, f),
            Self::List(items) => f.debug_list().entries(items.iter()).finish(),
            other => fmt::Display::fmt(other, f),
        }
    }
}

/// The canonical text: what `Kind::parse` reads back to the same value.
impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(text) => f.write_str(text),
            Self::Bool(flag) => write!(f, "{flag}"),
            Self::Integer(number) => write!(f, "{number}"),
            Self::Float(number) => write!(f, "{number:?}"),
            Self::List(items) => f.write_str(&items.join(",")),
            Self::Json(json) => write!(f, "{json}"),
            Self::Duration(duration) => write!(f, "{}", humantime::format_duration(*duration)),
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self::String(Arc::from(text))
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Self::String(Arc::from(text))
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Self::Bool(flag)
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Self::Integer(number)
    }
}

impl From<i32> for Value {
    fn from(number: i32) -> Self {
        Self::Integer(number.into())
    }
}

impl From<f64> for Value {
    fn from(number: f64) -> Self {
        Self::Float(number)
    }
}

impl From<Duration> for Value {
    fn from(duration: Duration) -> Self {
        Self::Duration(duration)
    }
}

impl From<Vec<&str>> for Value {
    fn from(items: Vec<&str>) -> Self {
        Self::List(items.into_iter().map(Arc::from).collect())
    }
}

impl From<serde_json::Value> for Value {
    fn from(json: serde_json::Value) -> Self {
        Self::Json(Arc::new(json))
    }
}

fn custom(error: impl fmt::Display) -> de::value::Error {
    de::Error::custom(error)
}

/// Reads a [`Value`] as any serde type.
pub(crate) struct ValueDeserializer<'a>(pub(crate) ValueRef<'a>);

/// Sends a method to the text deserializer for strings, to serde_json for JSON, and to
/// `deserialize_any` for the other kinds.
macro_rules! by_kind {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            match self.0 {
                ValueRef::String(text) => TextDeserializer(text).$method(visitor),
                ValueRef::Json(json) => de::Deserializer::$method(&**json, visitor).map_err(custom),
                _ => self.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'de> {
    type Error = de::value::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            ValueRef::String(text) => visitor.visit_borrowed_str(text),
            ValueRef::Bool(flag) => visitor.visit_bool(flag),
            ValueRef::Integer(number) => visitor.visit_i64(number),
            ValueRef::Float(number) => visitor.visit_f64(number),
            ValueRef::List(items) => visitor.visit_seq(de::value::SeqDeserializer::new(
                items.iter().map(|item| TextDeserializer(item)),
            )),
            ValueRef::Json(json) => {
                de::Deserializer::deserialize_any(&**json, visitor).map_err(custom)
            }
            ValueRef::Duration(duration) => visitor.visit_f64(duration.as_secs_f64()),
        }
    }

    by_kind! {
        deserialize_bool, deserialize_i8, deserialize_i16, deserialize_i32, deserialize_i64,
        deserialize_i128, deserialize_u8, deserialize_u16, deserialize_u32, deserialize_u64,
        deserialize_u128, deserialize_f32, deserialize_f64, deserialize_char, deserialize_seq,
        deserialize_bytes, deserialize_byte_buf, deserialize_unit, deserialize_map,
        deserialize_identifier, deserialize_ignored_any,
    }

    fn deserialize_str<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            ValueRef::String(text) => visitor.visit_borrowed_str(text),
            other => visitor.visit_string(other.to_string()),
        }
    }

    fn deserialize_string<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            ValueRef::Json(json) if json.is_null() => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            ValueRef::Json(json) => {
                de::Deserializer::deserialize_unit_struct(&**json, name, visitor).map_err(custom)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: de::Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            ValueRef::String(text) => TextDeserializer(text).deserialize_tuple(len, visitor),
            ValueRef::Json(json) => {
                de::Deserializer::deserialize_tuple(&**json, len, visitor).map_err(custom)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple_struct<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            ValueRef::Json(json) => {
                de::Deserializer::deserialize_tuple_struct(&**json, name, len, visitor)
                    .map_err(custom)
            }
            _ => self.deserialize_tuple(len, visitor),
        }
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            // `std::time::Duration` reads itself as `{ secs, nanos }`.
            ValueRef::Duration(duration) if name == "Duration" => visit_duration(duration, visitor),
            ValueRef::String(text) if name == "Duration" => {
                visit_duration(parse_duration(text).map_err(custom)?, visitor)
            }
            ValueRef::Json(json) => {
                de::Deserializer::deserialize_struct(&**json, name, fields, visitor).map_err(custom)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            ValueRef::Json(json) => {
                de::Deserializer::deserialize_enum(&**json, name, variants, visitor).map_err(custom)
            }
            ValueRef::String(text) => {
                TextDeserializer(text).deserialize_enum(name, variants, visitor)
            }
            _ => self.deserialize_any(visitor),
        }
    }
}

/// Hands a duration to `std::time::Duration`'s visitor, which reads `(secs, nanos)`.
fn visit_duration<'de, V: de::Visitor<'de>>(
    duration: Duration,
    visitor: V,
) -> Result<V::Value, de::value::Error> {
    let parts = [duration.as_secs(), u64::from(duration.subsec_nanos())];
    visitor.visit_seq(de::value::SeqDeserializer::new(parts.into_iter()))
}

/// A duration in text: `humantime` syntax (`30s`, `1m 30s`, `250ms`, `2h`) or a bare,
/// non-negative number of seconds (`30`, `1.5`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| {
            "expected a duration (30s, 1m 30s, 250ms) or a non-negative number of seconds"
                .to_owned()
        });
    }
    humantime::parse_duration(text)
        .map_err(|error| format!("expected a duration (30s, 1m 30s, 250ms): {error}"))
}

/// Reads text as any serde type: the way string values are parsed on demand.
pub(crate) struct TextDeserializer<'a>(pub(crate) &'a str);

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
        let mut items = de::value::SeqDeserializer::new(items);
        let read = visitor.visit_seq(&mut items)?;
        // A tuple reads as many items as it has: one more is an error, not dropped.
        items.end()?;
        Ok(read)
    }

    fn deserialize_tuple<V: de::Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if name == "Duration" {
            visit_duration(parse_duration(self.0).map_err(custom)?, visitor)
        } else {
            self.deserialize_any(visitor)
        }
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
        str string bytes byte_buf unit unit_struct tuple_struct map identifier ignored_any
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
    use super::*;

    #[test]
    fn json_text_and_durations_read_into_options_tuples_enums_and_structs() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        enum Level {
            Info,
            Debug,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Pair {
            secs: u64,
            nanos: u32,
        }
        let json = |value: serde_json::Value| Value::Json(Arc::new(value));
        // JSON null is no value; any other JSON is one.
        assert_eq!(
            json(serde_json::json!(null))
                .deserialize::<Option<u8>>()
                .unwrap(),
            None
        );
        assert_eq!(
            json(serde_json::json!(5))
                .deserialize::<Option<u8>>()
                .unwrap(),
            Some(5)
        );
        assert_eq!(
            json(serde_json::json!("Debug"))
                .deserialize::<Level>()
                .unwrap(),
            Level::Debug
        );
        // Text: a tuple is read from its comma-separated items, and so is a list of
        // durations.
        assert_eq!(
            Value::from("1, 2").deserialize::<(u8, u8)>().unwrap(),
            (1, 2)
        );
        let extra = Value::from("1, 2, 3")
            .deserialize::<(u8, u8)>()
            .unwrap_err();
        assert!(extra.to_string().contains("invalid length 3"), "{extra}");
        assert!(Value::from("1").deserialize::<(u8, u8)>().is_err());
        assert_eq!(
            Value::from("1s, 250ms")
                .deserialize::<Vec<Duration>>()
                .unwrap(),
            [Duration::from_secs(1), Duration::from_millis(250)]
        );
        // Only `Duration` reads a duration as seconds and nanoseconds.
        assert!(
            Value::Duration(Duration::from_secs(1))
                .deserialize::<Pair>()
                .is_err()
        );
        assert!(Value::from("1s").deserialize::<Pair>().is_err());
    }

    #[test]
    fn as_str_lends_the_text_of_a_string_value_only() {
        assert_eq!(Value::from("db-1").as_str(), Some("db-1"));
        assert_eq!(Value::from("").as_str(), Some(""));
        assert_eq!(Value::Integer(5).as_str(), None);
        assert_eq!(Value::Bool(true).as_str(), None);
    }

    #[test]
    fn text_parses_into_the_asked_type() {
        let text = |t: &str| Value::from(t);
        assert_eq!(text(" 5432 ").deserialize::<u16>().unwrap(), 5432);
        assert_eq!(text("2.5").deserialize::<f64>().unwrap(), 2.5);
        assert!(text("Yes").deserialize::<bool>().unwrap());
        assert!(!text("off").deserialize::<bool>().unwrap());
        assert_eq!(
            text("a, b,,c").deserialize::<Vec<String>>().unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(text("7").deserialize::<Option<i32>>().unwrap(), Some(7));
        assert_eq!(
            text("1m 30s").deserialize::<Duration>().unwrap(),
            Duration::from_secs(90)
        );
        #[derive(serde::Deserialize, Debug, PartialEq)]
        enum Level {
            Info,
            Debug,
        }
        assert_eq!(text("Debug").deserialize::<Level>().unwrap(), Level::Debug);
        assert!(text("Info").deserialize::<Level>().is_ok());
        assert!(text("70000").deserialize::<u16>().is_err());
    }

    #[test]
    fn typed_values_convert_where_serde_allows() {
        assert_eq!(Value::Integer(443).deserialize::<u16>().unwrap(), 443);
        assert!(Value::Integer(-1).deserialize::<u16>().is_err());
        assert_eq!(Value::Integer(3).deserialize::<String>().unwrap(), "3");
        assert!(Value::Bool(true).deserialize::<bool>().unwrap());
        assert_eq!(Value::Float(0.5).deserialize::<f64>().unwrap(), 0.5);
        let ninety = Value::Duration(Duration::from_millis(90_500));
        assert_eq!(
            ninety.deserialize::<Duration>().unwrap(),
            Duration::from_millis(90_500)
        );
        assert_eq!(ninety.deserialize::<f64>().unwrap(), 90.5);
        assert_eq!(
            Value::from(vec!["a", "b"])
                .deserialize::<Vec<String>>()
                .unwrap(),
            ["a", "b"]
        );
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Limits {
            max: u32,
            tags: Vec<String>,
        }
        let json = Value::from(serde_json::json!({"max": 3, "tags": ["x"]}));
        assert_eq!(
            json.deserialize::<Limits>().unwrap(),
            Limits {
                max: 3,
                tags: vec!["x".into()]
            }
        );
    }

    #[test]
    fn display_is_the_canonical_text() {
        assert_eq!(Value::Float(60.0).to_string(), "60.0");
        assert_eq!(Value::from(vec!["a", "b"]).to_string(), "a,b");
        assert_eq!(
            Value::Duration(Duration::from_secs(90)).to_string(),
            "1m 30s"
        );
        assert_eq!(Value::Bool(false).to_string(), "false");
    }

    #[test]
    fn durations_accept_units_or_seconds() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
