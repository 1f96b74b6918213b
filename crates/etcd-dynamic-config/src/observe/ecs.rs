//! ECS JSON logs, as the Python original writes them, with a log level that follows
//! etcd.
//!
//! Each event is one JSON line: `@timestamp`, `log.level`, `log.logger`, `message`,
//! `ecs.version`, `service.name`, `service.version`, `environment` (from
//! `APPLICATION_NAME`, `APPLICATION_VERSION`, `ENVIRONMENT`), the fields of the event and
//! of its spans (`event`, `prefix`, `revision`, …, `error.type`, `error.message`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use etcd_dynamic_config::EtcdConfig;
//! use etcd_dynamic_config::observe::ecs;
//!
//! let logging = ecs::setup_logging("info")?; // ECS JSON on stdout, level INFO
//! let config = EtcdConfig::builder().build()?;
//! config.start().await?;
//! // /APPS/ControlUnit/LogLevel now sets the level, as long as `_follow` lives
//! let _follow = logging.follow(&config, "log_level");
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::SystemTime;

use serde_json::{Map, Value as Json};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::reload;

use super::events;
use crate::config::EtcdConfig;
use crate::error::{Error, Result};
use crate::snapshot::{Value, ValueRef};

/// The ECS version the field names follow.
const ECS_VERSION: &str = "1.6.0";

/// Formats events as ECS JSON lines; use with `tracing_subscriber::fmt()
/// .event_format(EcsFormat::from_env()).fmt_fields(JsonFields::new())`.
#[derive(Debug, Clone)]
pub struct EcsFormat {
    service_name: String,
    service_version: String,
    environment: Option<String>,
}

impl EcsFormat {
    /// Service name, version and environment from `APPLICATION_NAME`,
    /// `APPLICATION_VERSION` and `ENVIRONMENT`, as the Python original reads them.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            service_name: lookup("APPLICATION_NAME").unwrap_or_else(|| "unknown".to_owned()),
            service_version: lookup("APPLICATION_VERSION").unwrap_or_else(|| "unknown".to_owned()),
            environment: lookup("ENVIRONMENT"),
        }
    }
}

impl<S, N> FormatEvent<S, N> for EcsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "@timestamp".into(),
            humantime::format_rfc3339_millis(SystemTime::now())
                .to_string()
                .into(),
        );
        line.insert(
            "log.level".into(),
            metadata.level().as_str().to_lowercase().into(),
        );
        line.insert("log.logger".into(), metadata.target().into());
        line.insert("ecs.version".into(), ECS_VERSION.into());
        line.insert("service.name".into(), self.service_name.clone().into());
        line.insert(
            "service.version".into(),
            self.service_version.clone().into(),
        );
        if let Some(environment) = &self.environment {
            line.insert("environment".into(), environment.clone().into());
        }
        // Span fields, outermost first, as JsonFields recorded them.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Json::Object(fields)) = serde_json::from_str::<Json>(fields) {
                    line.extend(fields);
                }
            }
        }
        let mut visitor = FieldVisitor(Map::new());
        event.record(&mut visitor);
        for (name, value) in visitor.0 {
            let name = match name.as_str() {
                "error" => "error.message".to_owned(),
                _ => name,
            };
            line.insert(name, value);
        }
        line.entry("message").or_insert_with(|| "".into());
        let mut text = Json::Object(line).to_string();
        text.push('\n');
        writer.write_str(&text)
    }
}

/// Collects an event's fields as JSON values.
struct FieldVisitor(Map<String, Json>);

impl Visit for FieldVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

/// Changes the log filter at run time.
#[derive(Debug, Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
}

impl LogControl {
    /// Sets the level of every target: `trace`, `debug`, `info`, `warning`/`warn`,
    /// `error`, `critical` (read as `error`), case-insensitive, or any `EnvFilter`
    /// directive (`info,etcd_dynamic_config=debug`).
    ///
    /// # Errors
    ///
    /// [`Error::Setting`]-like [`Error::Invalid`] naming the text when it is no level.
    pub fn set_level(&self, level: &str) -> Result<()> {
        let filter = parse_level(level)?;
        self.handle.reload(filter).map_err(|error| Error::Invalid {
            reasons: vec![format!("the log filter cannot be changed: {error}")],
        })
    }

    /// Makes the log level follow `name` in `config`: set now when it has a value, and
    /// on every change, until the returned listener is dropped. An invalid level is
    /// rejected (`log_level_rejected`) and the current level stays.
    pub fn follow(&self, config: &EtcdConfig, name: &str) -> crate::Listener {
        let apply = {
            let control = self.clone();
            let name = name.to_owned();
            move |value: Option<ValueRef<'_>>| {
                let Some(value) = value else { return };
                let level = value.to_string();
                match control.set_level(&level) {
                    Ok(()) => tracing::info!(
                        event = events::LOG_LEVEL_CHANGED,
                        name = %name,
                        level = %level,
                        "log level changed from etcd"
                    ),
                    Err(error) => tracing::warn!(
                        event = events::LOG_LEVEL_REJECTED,
                        name = %name,
                        reason = %error,
                        "the log level in etcd is not a level; the current one stays"
                    ),
                }
            }
        };
        apply(config.snapshot().get(name));
        let name = name.to_owned();
        config.on_change(move |change| {
            for item in change.changes.iter().filter(|item| *item.name == *name) {
                apply(item.new.as_ref().map(Value::view));
            }
        })
    }
}

/// A level name, or an `EnvFilter` directive, as a filter.
fn parse_level(text: &str) -> Result<EnvFilter> {
    let invalid = || Error::Invalid {
        reasons: vec![format!(
            "{text:?} is not a log level (trace, debug, info, warning, error, critical)"
        )],
    };
    let level = match text.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" | "fatal" => "error",
        "off" => "off",
        other if other.contains('=') || other.contains(',') => {
            return EnvFilter::try_new(other).map_err(|_| invalid());
        }
        _ => return Err(invalid()),
    };
    Ok(EnvFilter::new(level))
}

/// Builds a subscriber that writes ECS JSON lines to `writer` at `level`, and the
/// control that changes its level: install it with `tracing::subscriber::set_global_default`
/// (or `set_default` in tests).
///
/// # Errors
///
/// [`Error::Invalid`] when `level` is not a level.
pub fn ecs_subscriber<W>(
    format: EcsFormat,
    level: &str,
    writer: W,
) -> Result<(impl Subscriber + Send + Sync + 'static, LogControl)>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(parse_level(level)?);
    let subscriber = tracing_subscriber::registry().with(filter).with(
        tracing_subscriber::fmt::layer()
            .event_format(format)
            .fmt_fields(JsonFields::new())
            .with_writer(writer),
    );
    Ok((subscriber, LogControl { handle }))
}

/// Installs ECS JSON logs on stdout at `level` as the global subscriber (the Python
/// `setup_logging`), with service fields from the environment.
///
/// # Errors
///
/// [`Error::Invalid`] when `level` is not a level or a global subscriber is already set.
pub fn setup_logging(level: &str) -> Result<LogControl> {
    let (subscriber, control) = ecs_subscriber(EcsFormat::from_env(), level, std::io::stdout)?;
    tracing::subscriber::set_global_default(subscriber).map_err(|error| Error::Invalid {
        reasons: vec![format!("logging is already set up: {error}")],
    })?;
    Ok(control)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(buffer: &Buffer) -> Vec<Json> {
        String::from_utf8(buffer.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).expect("every line is JSON"))
            .collect()
    }

    #[test]
    fn events_are_ecs_json_lines_with_span_fields() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let format = EcsFormat::from_lookup(|name| match name {
            "APPLICATION_NAME" => Some("billing".into()),
            "APPLICATION_VERSION" => Some("1.2.3".into()),
            "ENVIRONMENT" => Some("staging".into()),
            _ => None,
        });
        let (subscriber, control) = ecs_subscriber(format, "info", move || writer.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::error_span!("etcd_config", prefix = "/app/");
            let _entered = span.enter();
            tracing::info!(
                event = "update_applied",
                revision = 7_i64,
                changed = 3_u64,
                seconds = 0.25_f64,
                synced = true,
                keys = ?["a", "b"],
                "configuration updated"
            );
            tracing::debug!(event = "hidden", "not at info");
            tracing::warn!(
                event = "watch_broken",
                error.type = "Unavailable",
                error = %"etcd unavailable",
                "the watch stream broke"
            );
            control.set_level("DEBUG").unwrap();
            tracing::debug!(event = "shown", "now at debug");
            assert!(control.set_level("loud").is_err());
            control.set_level("critical").unwrap();
            tracing::warn!(event = "hidden_warning", "below error");
        });
        let lines = lines(&buffer);
        let events: Vec<&str> = lines
            .iter()
            .map(|line| line["event"].as_str().unwrap())
            .collect();
        assert_eq!(events, ["update_applied", "watch_broken", "shown"]);
        let first = &lines[0];
        assert_eq!(first["log.level"], "info");
        assert_eq!(first["message"], "configuration updated");
        assert_eq!(first["service.name"], "billing");
        assert_eq!(first["service.version"], "1.2.3");
        assert_eq!(first["environment"], "staging");
        assert_eq!(first["prefix"], "/app/");
        // Each kind of field as its JSON kind.
        assert_eq!(first["revision"], 7);
        assert_eq!(first["changed"], 3);
        assert_eq!(first["seconds"], 0.25);
        assert_eq!(first["synced"], true);
        assert_eq!(first["keys"], r#"["a", "b"]"#);
        assert!(first["@timestamp"].as_str().unwrap().ends_with('Z'));
        let broken = &lines[1];
        assert_eq!(broken["error.type"], "Unavailable");
        assert_eq!(broken["error.message"], "etcd unavailable");
    }
}
