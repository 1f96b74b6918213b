//! Per-name validators and whole-configuration checks.

use std::fmt;
use std::sync::Arc;

use regex::Regex;

use crate::snapshot::Snapshot;
use crate::value::{Value, ValueRef};

/// A rule one name's value must follow.
#[derive(Clone)]
#[non_exhaustive]
pub enum Validator {
    /// A number (integer, float, or a duration in seconds) within `min..=max`.
    Range {
        /// The smallest value allowed, if any.
        min: Option<f64>,
        /// The largest value allowed, if any.
        max: Option<f64>,
    },
    /// The text is one of these (case-sensitive).
    OneOf(Arc<[String]>),
    /// The text matches this regular expression.
    Pattern(Regex),
}

impl Validator {
    /// Checks `value`; `Err` says which rule it breaks, never quoting the value.
    pub(crate) fn check(&self, value: &Value) -> Result<(), String> {
        match self {
            Self::Range { min, max } => {
                let Some(number) = as_number(value.view()) else {
                    return Err(format!("expected a number for {self}"));
                };
                let below = min.is_some_and(|min| number < min);
                let above = max.is_some_and(|max| number > max);
                if below || above {
                    return Err(format!("out of range: must be {self}"));
                }
                Ok(())
            }
            Self::OneOf(allowed) => {
                let text = value.to_string();
                if allowed.contains(&text) {
                    Ok(())
                } else {
                    Err(format!("not allowed: must be {self}"))
                }
            }
            Self::Pattern(regex) => {
                if regex.is_match(&value.to_string()) {
                    Ok(())
                } else {
                    Err(format!("does not match the pattern {}", regex.as_str()))
                }
            }
        }
    }
}

impl fmt::Display for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Range { min, max } => match (min, max) {
                (Some(min), Some(max)) => write!(f, "between {min} and {max}"),
                (Some(min), None) => write!(f, "at least {min}"),
                (None, Some(max)) => write!(f, "at most {max}"),
                (None, None) => write!(f, "any number"),
            },
            Self::OneOf(allowed) => write!(f, "one of {}", allowed.join(", ")),
            Self::Pattern(regex) => write!(f, "matching {}", regex.as_str()),
        }
    }
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Validator({self})")
    }
}

/// The number a value stands for, for ranges and comparisons.
pub(crate) fn as_number(value: ValueRef<'_>) -> Option<f64> {
    match value {
        ValueRef::Integer(number) => Some(number as f64),
        ValueRef::Float(number) => Some(number),
        ValueRef::Duration(duration) => Some(duration.as_secs_f64()),
        ValueRef::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

type CheckFn = dyn Fn(&Snapshot) -> Result<(), String> + Send + Sync;

/// A rule over the whole configuration, e.g. `min_pool <= max_pool`. A revision that
/// breaks one is not published; the last good snapshot keeps serving.
#[derive(Clone)]
pub struct Check {
    pub(crate) label: Arc<str>,
    pub(crate) check: Arc<CheckFn>,
}

impl Check {
    /// A check named `label` (shown in reports) that passes when `check` returns `Ok`.
    pub fn new(
        label: impl Into<String>,
        check: impl Fn(&Snapshot) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            label: Arc::from(label.into()),
            check: Arc::new(check),
        }
    }

    /// `left op right` over two numeric names (`<`, `<=`, `==`, `!=`, `>=`, `>`); passes
    /// when either name is absent.
    ///
    /// # Errors
    ///
    /// An unknown operator.
    pub fn compare(left: &str, op: &str, right: &str) -> Result<Self, String> {
        let test: fn(f64, f64) -> bool = match op {
            "<" => |a, b| a < b,
            "<=" => |a, b| a <= b,
            "==" => |a, b| a == b,
            "!=" => |a, b| a != b,
            ">=" => |a, b| a >= b,
            ">" => |a, b| a > b,
            other => {
                return Err(format!(
                    "unknown operator {other:?}; use one of < <= == != >= >"
                ));
            }
        };
        let label = format!("{left} {op} {right}");
        let (left, right) = (left.to_owned(), right.to_owned());
        Ok(Self::new(label.clone(), move |snapshot| {
            let number = |name: &String| -> Result<Option<f64>, String> {
                match snapshot.get(name) {
                    None => Ok(None),
                    Some(value) => as_number(value)
                        .map(Some)
                        .ok_or_else(|| format!("{label}: {name} is not a number")),
                }
            };
            match (number(&left)?, number(&right)?) {
                (Some(a), Some(b)) if !test(a, b) => Err(format!("{label} does not hold")),
                _ => Ok(()),
            }
        }))
    }

    /// The check's label.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Check({})", self.label)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn validators_accept_and_reject() {
        let range = Validator::Range {
            min: Some(1.0),
            max: Some(65535.0),
        };
        assert!(range.check(&Value::Integer(5432)).is_ok());
        let error = range.check(&Value::Integer(0)).unwrap_err();
        assert_eq!(error, "out of range: must be between 1 and 65535");
        assert!(range.check(&Value::from("x")).is_err());

        let levels = Validator::OneOf(Arc::from(vec!["DEBUG".to_owned(), "INFO".to_owned()]));
        assert!(levels.check(&Value::from("INFO")).is_ok());
        assert_eq!(
            levels.check(&Value::from("LOUD")).unwrap_err(),
            "not allowed: must be one of DEBUG, INFO"
        );

        let url = Validator::Pattern(Regex::new("^https?://").unwrap());
        assert!(url.check(&Value::from("http://x")).is_ok());
        assert!(url.check(&Value::from("ftp://x")).is_err());
    }

    #[test]
    fn comparisons_check_two_names() {
        assert!(Check::compare("a", "=<", "b").is_err());
        let check = Check::compare("min_pool", "<=", "max_pool").unwrap();
        let snapshot = |min: i64, max: i64| {
            crate::snapshot::tests::snapshot_of(&[
                ("min_pool", Value::Integer(min)),
                ("max_pool", Value::Integer(max)),
            ])
        };
        assert!((check.check)(&snapshot(1, 5)).is_ok());
        assert_eq!(
            (check.check)(&snapshot(9, 5)).unwrap_err(),
            "min_pool <= max_pool does not hold"
        );
        let absent = crate::snapshot::tests::snapshot_of(&[("min_pool", Value::Integer(9))]);
        assert!((check.check)(&absent).is_ok());
        assert_eq!(format!("{check:?}"), "Check(min_pool <= max_pool)");
    }

    #[test]
    fn every_operator_compares_as_it_reads() {
        // Whether `a op b` holds for a below, equal to and above b.
        let table = [
            ("<", [true, false, false]),
            ("<=", [true, true, false]),
            ("==", [false, true, false]),
            ("!=", [true, false, true]),
            (">=", [false, true, true]),
            (">", [false, false, true]),
        ];
        for (op, holds) in table {
            let check = Check::compare("a", op, "b").unwrap();
            // Integers, floats, durations and numeric text all compare as numbers.
            let values = [
                (Value::Integer(1), Value::Float(2.0)),
                (Value::Duration(Duration::from_secs(2)), Value::from(" 2 ")),
                (Value::Float(2.5), Value::Duration(Duration::from_secs(2))),
            ];
            for ((a, b), holds) in values.into_iter().zip(holds) {
                let snapshot = crate::snapshot::tests::snapshot_of(&[("a", a), ("b", b)]);
                let result = (check.check)(&snapshot);
                assert_eq!(result.is_ok(), holds, "a {op} b: {result:?}");
            }
        }
    }

    #[test]
    fn a_range_includes_its_bounds() {
        let range = Validator::Range {
            min: Some(1.0),
            max: Some(2.0),
        };
        for (number, inside) in [(0.5, false), (1.0, true), (2.0, true), (2.5, false)] {
            let result = range.check(&Value::Float(number));
            assert_eq!(result.is_ok(), inside, "{number}: {result:?}");
        }
        assert_eq!(format!("{range:?}"), "Validator(between 1 and 2)");
    }
}
