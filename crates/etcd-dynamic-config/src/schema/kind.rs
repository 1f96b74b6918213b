//! Value kinds, the Python naming rules that infer them, and parsing text into them.

use std::fmt;
use std::sync::Arc;

use crate::value::parse_bool;
use crate::value::{Value, parse_duration};

/// What kind of value a name holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Text, as stored.
    String,
    /// `1 true yes y on` / `0 false no n off`, case-insensitive.
    Bool,
    /// A 64-bit signed integer.
    Integer,
    /// A finite 64-bit float.
    Float,
    /// Comma-separated strings, trimmed, empty items dropped.
    List,
    /// A JSON document.
    Json,
    /// `30s`, `1m 30s`, `250ms`, or a bare number of seconds.
    Duration,
}

impl Kind {
    /// The kind the Python original gives an undeclared name (SPEC section 4):
    /// `use_*`, `is_*`, `has_*`, `*_enabled`, `*_debug`, `*_echo`, `*_start` → bool;
    /// `*_statuses`, `*_list`, `*_items` → list; `*_timeout*`, `*_seconds`,
    /// `*_interval`, `*_duration` → float; `*_count`, `*_max_*`, `*_min_*`, `*_limit`,
    /// `*_port`, `*_connections`, `*_size` → integer; anything else → string.
    ///
    /// Nested names are matched with `.` read as `_`, so `database.port` is an integer.
    pub fn infer(name: &str) -> Self {
        // Called for every key of a list: `.` is read as `_` in place, not in a copy.
        // Each prefix and suffix is one word and a separator, so the first and the last
        // word are compared whole; the parts looked for inside start with a separator,
        // so only where the name holds one are they tried, all in one pass.
        let name = name.as_bytes();
        let separator = |b: &u8| *b == b'_' || *b == b'.';
        let Some(last_at) = name.iter().rposition(separator) else {
            return Self::String; // one word: every rule needs a separator
        };
        let first = &name[..name.iter().position(separator).unwrap_or(last_at)];
        let by_last = match &name[last_at + 1..] {
            b"enabled" | b"debug" | b"echo" | b"start" => Self::Bool,
            b"statuses" | b"list" | b"items" => Self::List,
            b"seconds" | b"interval" | b"duration" => Self::Float,
            b"count" | b"limit" | b"port" | b"connections" | b"size" => Self::Integer,
            _ => Self::String,
        };
        if matches!(first, b"use" | b"is" | b"has") || by_last == Self::Bool {
            return Self::Bool;
        }
        if by_last == Self::List {
            return Self::List;
        }
        let (mut timeout, mut max_min) = (false, false);
        for (at, _) in name.iter().enumerate().filter(|(_, b)| separator(b)) {
            let word = &name[at + 1..];
            timeout |= word.starts_with(b"timeout");
            max_min |= (word.starts_with(b"max") || word.starts_with(b"min"))
                && word.get(3).is_some_and(separator);
        }
        if timeout || by_last == Self::Float {
            Self::Float
        } else if max_min || by_last == Self::Integer {
            Self::Integer
        } else {
            Self::String
        }
    }

    /// Parses `text` as this kind.
    ///
    /// # Errors
    ///
    /// Why the text is not of this kind; the message never quotes the text.
    pub fn parse(self, text: &str) -> Result<Value, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() && !matches!(self, Self::String | Self::List) {
            return Err(format!("expected {}, found empty text", self.describe()));
        }
        match self {
            Self::String => Ok(Value::String(Arc::from(text))),
            Self::Bool => parse_bool(trimmed).map(Value::Bool).ok_or_else(|| {
                "expected a boolean (1 true yes y on / 0 false no n off)".to_owned()
            }),
            Self::Integer => trimmed
                .parse::<i64>()
                .map(Value::Integer)
                .map_err(|error| format!("expected an integer ({error})")),
            Self::Float => match trimmed.parse::<f64>() {
                Ok(number) if number.is_finite() => Ok(Value::Float(number)),
                Ok(_) => Err("expected a finite number".to_owned()),
                Err(error) => Err(format!("expected a number ({error})")),
            },
            Self::List => Ok(Value::List(
                trimmed
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(Arc::from)
                    .collect(),
            )),
            Self::Json => serde_json::from_str::<serde_json::Value>(trimmed)
                .map(Value::from)
                .map_err(|error| format!("expected JSON ({error})")),
            Self::Duration => parse_duration(trimmed).map(Value::Duration),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::String => "text",
            Self::Bool => "a boolean",
            Self::Integer => "an integer",
            Self::Float => "a number",
            Self::List => "a list",
            Self::Json => "JSON",
            Self::Duration => "a duration",
        }
    }

    /// Whether `value` is of this kind.
    pub(crate) fn holds(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (Self::String, Value::String(_))
                | (Self::Bool, Value::Bool(_))
                | (Self::Integer, Value::Integer(_))
                | (Self::Float, Value::Float(_))
                | (Self::List, Value::List(_))
                | (Self::Json, Value::Json(_))
                | (Self::Duration, Value::Duration(_))
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::String => "string",
            Self::Bool => "bool",
            Self::Integer => "integer",
            Self::Float => "float",
            Self::List => "list",
            Self::Json => "json",
            Self::Duration => "duration",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn kinds_follow_the_python_naming_rules() {
        let cases = [
            ("use_cache", Kind::Bool),
            ("is_active", Kind::Bool),
            ("has_feature", Kind::Bool),
            ("cache_enabled", Kind::Bool),
            ("sql_debug", Kind::Bool),
            ("db_echo", Kind::Bool),
            ("worker_start", Kind::Bool),
            ("allowed_statuses", Kind::List),
            ("host_list", Kind::List),
            ("queue_items", Kind::List),
            ("ai_http_timeout", Kind::Float),
            ("ai_http_timeout_seconds", Kind::Float),
            ("request_timeout_ms", Kind::Float),
            ("poll_interval", Kind::Float),
            ("retry_duration", Kind::Float),
            ("retry_count", Kind::Integer),
            ("ai_http_max_connections", Kind::Integer),
            ("pool_min_size", Kind::Integer),
            ("rate_limit", Kind::Integer),
            ("db_port", Kind::Integer),
            ("database.port", Kind::Integer),
            ("batch_size", Kind::Integer),
            ("categorization_api_url", Kind::String),
            ("log_level", Kind::String),
            ("postgres_dsn", Kind::String),
            ("timeout", Kind::String),
            ("maximum", Kind::String),
        ];
        for (name, kind) in cases {
            assert_eq!(Kind::infer(name), kind, "for {name}");
            // Nested: `.` reads as `_` wherever it stands.
            let nested = name.replace('_', ".");
            assert_eq!(Kind::infer(&nested), kind, "for {nested}");
        }
        // Only `.` stands for `_`, no other byte.
        assert_eq!(Kind::infer("use.cache"), Kind::Bool);
        assert_eq!(Kind::infer("retry-count"), Kind::String);
        assert_eq!(Kind::infer("a_max.b"), Kind::Integer);
        assert_eq!(Kind::infer("port"), Kind::String);
    }

    proptest::proptest! {
        /// The rules as written (`.` made `_` in a copy, then `starts_with`, `ends_with`,
        /// `contains`) give the kind [`Kind::infer`] gives without the copy.
        #[test]
        fn inferred_kinds_are_the_plain_rules(
            words in proptest::collection::vec(
                "(use|is|has|enabled|debug|echo|start|statuses|list|items|timeout|seconds|\
                 interval|duration|max|min|count|limit|port|connections|size|x|_|\\.)",
                0..6,
            ),
            separators in proptest::collection::vec("[._]?", 6),
        ) {
            let mut name = String::new();
            for (word, separator) in words.iter().zip(&separators) {
                name.push_str(word);
                name.push_str(separator);
            }
            let plain = name.replace('.', "_");
            let starts = |p: &[&str]| p.iter().any(|p| plain.starts_with(p));
            let ends = |p: &[&str]| p.iter().any(|p| plain.ends_with(p));
            let contains = |p: &[&str]| p.iter().any(|p| plain.contains(p));
            let expected = if starts(&["use_", "is_", "has_"])
                || ends(&["_enabled", "_debug", "_echo", "_start"])
            {
                Kind::Bool
            } else if ends(&["_statuses", "_list", "_items"]) {
                Kind::List
            } else if contains(&["_timeout"]) || ends(&["_seconds", "_interval", "_duration"]) {
                Kind::Float
            } else if contains(&["_max_", "_min_"])
                || ends(&["_count", "_limit", "_port", "_connections", "_size"])
            {
                Kind::Integer
            } else {
                Kind::String
            };
            proptest::prop_assert_eq!(Kind::infer(&name), expected, "{}", name);
        }
    }

    #[test]
    fn every_kind_accepts_its_text() {
        let cases: &[(Kind, &str, Value)] = &[
            (Kind::String, " as is ", Value::from(" as is ")),
            (Kind::String, "", Value::from("")),
            (Kind::Bool, "YES", Value::Bool(true)),
            (Kind::Bool, " n ", Value::Bool(false)),
            (Kind::Bool, "1", Value::Bool(true)),
            (Kind::Bool, "Off", Value::Bool(false)),
            (Kind::Integer, " -42 ", Value::Integer(-42)),
            (Kind::Float, "60", Value::Float(60.0)),
            (Kind::Float, "2.5e1", Value::Float(25.0)),
            (Kind::List, "a, b,,c ", Value::from(vec!["a", "b", "c"])),
            (Kind::List, "", Value::from(Vec::<&str>::new())),
            (
                Kind::Json,
                r#"{"a": [1, 2]}"#,
                Value::from(serde_json::json!({"a": [1, 2]})),
            ),
            (
                Kind::Duration,
                "1m 30s",
                Value::Duration(Duration::from_secs(90)),
            ),
            (
                Kind::Duration,
                "0.25",
                Value::Duration(Duration::from_millis(250)),
            ),
        ];
        for (kind, text, expected) in cases {
            assert_eq!(&kind.parse(text).unwrap(), expected, "{kind} from {text:?}");
        }
    }

    #[test]
    fn every_kind_rejects_what_is_not_of_it() {
        let cases: &[(Kind, &str, &str)] = &[
            (Kind::Bool, "maybe", "expected a boolean"),
            (Kind::Bool, "", "expected a boolean, found empty text"),
            (Kind::Integer, "ten", "expected an integer"),
            (Kind::Integer, "1.5", "expected an integer"),
            (Kind::Integer, "99999999999999999999", "expected an integer"),
            (Kind::Float, "abc", "expected a number"),
            (Kind::Float, "NaN", "expected a finite number"),
            (Kind::Float, "inf", "expected a finite number"),
            (Kind::Float, "  ", "expected a number, found empty text"),
            (Kind::Integer, "", "expected an integer, found empty text"),
            (Kind::Duration, " ", "expected a duration, found empty text"),
            (Kind::Json, "", "expected JSON, found empty text"),
            (Kind::Json, "{not json", "expected JSON"),
            (Kind::Duration, "soon", "expected a duration"),
            (Kind::Duration, "-3", "non-negative"),
        ];
        for (kind, text, reason) in cases {
            let error = kind.parse(text).unwrap_err();
            assert!(error.contains(reason), "{kind} from {text:?}: {error}");
            if text.len() > 2 {
                assert!(
                    !error.contains(text),
                    "the reason quotes the value: {error}"
                );
            }
        }
    }
}
