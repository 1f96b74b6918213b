//! The crate's error type.

use std::time::Duration;

/// Boxed error used as a `source()` without naming another crate's types in the API.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong, with what it concerns and why.
///
/// Network failures are [retryable](Error::is_retryable); wrong settings, wrong
/// credentials and permission errors are final.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A connection setting is malformed (bad URL, unreadable file, not a boolean).
    #[error("invalid setting {setting}: {reason}")]
    Setting {
        /// The setting, by its environment variable name, e.g. `EtcdSettings__HostName`.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// etcd could not be reached or stopped answering; worth retrying.
    #[error("etcd unavailable at {endpoints}")]
    Unavailable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The transport or gRPC failure.
        #[source]
        source: BoxError,
    },

    /// etcd refused the request for good: wrong credentials, missing permission,
    /// a certificate it does not accept. Retrying does not help.
    #[error("etcd refused the request: {reason}")]
    Refused {
        /// What etcd said, e.g. `authentication failed, invalid user ID or password`.
        reason: String,
        /// The failure as the transport or etcd reported it.
        #[source]
        source: Option<BoxError>,
    },

    /// etcd did not answer before the start deadline (with `fail_fast`, or when no
    /// fallback could serve).
    #[error("etcd did not answer within the start deadline of {} ms", timeout.as_millis())]
    StartTimeout {
        /// The deadline.
        timeout: Duration,
        /// The last failure seen, if any.
        #[source]
        cause: Option<Box<Error>>,
    },

    /// A value could not be read as the type asked for.
    #[error("{name}: {reason} ({origin})")]
    Value {
        /// The configuration name.
        name: String,
        /// Why the value does not fit (never the value itself).
        reason: String,
        /// Where the value came from, e.g. `etcd key /app/Port @ rev 812`.
        origin: crate::value::Source,
    },

    /// A schema declaration is inconsistent (a default of the wrong kind, a bad pattern,
    /// a key outside the prefix, a TOML file that does not parse).
    #[error("invalid schema: {what}: {reason}")]
    Schema {
        /// What is wrong: a name, a key, a file.
        what: String,
        /// Why.
        reason: String,
    },

    /// The configuration does not read as the asked type.
    #[error(
        "the configuration does not read as {target}: {}",
        bind_text(.name.as_deref(), .origin.as_ref(), .reason)
    )]
    Bind {
        /// The type asked for.
        target: &'static str,
        /// The dotted name whose value did not read, when serde got that far (e.g.
        /// `database.port`).
        name: Option<String>,
        /// Where that name's value came from (etcd key and revision, env var, default).
        origin: Option<crate::value::Source>,
        /// serde's reason, e.g. ``invalid value: integer `70000`, expected u16``.
        reason: String,
    },

    /// The configuration breaks the schema: a required name has no value, or a check
    /// over the whole configuration fails.
    #[error("the configuration is not valid: {}", reasons.join("; "))]
    Invalid {
        /// Every problem found.
        reasons: Vec<String>,
    },

    /// A name is not in the configuration.
    #[error("{0}: no such name in the configuration")]
    Missing(String),

    /// `start` was called on a configuration that is already running.
    #[error("the configuration is already started")]
    AlreadyStarted,

    /// `stop` was called while `start` was still waiting for etcd: nothing was started.
    #[error("the configuration was stopped while it started")]
    Stopped,

    /// A write does not fit in one etcd transaction: too many operations (etcd's
    /// `--max-txn-ops`, 128 by default) or too many bytes (`--max-request-bytes`, 1.5 MiB
    /// by default). Nothing was written.
    #[error(
        "{operations} writes ({bytes} bytes) do not fit in one etcd transaction: {limit}; nothing was written"
    )]
    TooLarge {
        /// Puts and deletes in the transaction.
        operations: usize,
        /// Bytes of keys and values in it.
        bytes: usize,
        /// etcd's limit, in its words and ours.
        limit: String,
    },

    /// A guarded write was refused because etcd changed since the writer looked
    /// (`--expect-rev`, a rollback whose keys were written meanwhile). Nothing was
    /// written.
    #[error("etcd changed since it was read: {reason}; nothing was written")]
    Conflict {
        /// What changed.
        reason: String,
    },

    /// A staged rollout cannot be read, started or changed so (see [`crate::rollout`]).
    #[error("rollout {name}: {reason}")]
    Rollout {
        /// The rollout.
        name: String,
        /// Why, e.g. `there is no such rollout`.
        reason: String,
    },

    /// The configuration cannot run here (e.g. the blocking facade could not create its
    /// runtime).
    #[error("the configuration cannot run here: its runtime could not be created")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// The variant's name, for logs (`error.type`): `Unavailable`, `Refused`, …
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Setting { .. } => "Setting",
            Self::Unavailable { .. } => "Unavailable",
            Self::Refused { .. } => "Refused",
            Self::StartTimeout { .. } => "StartTimeout",
            Self::Value { .. } => "Value",
            Self::Schema { .. } => "Schema",
            Self::Bind { .. } => "Bind",
            Self::Invalid { .. } => "Invalid",
            Self::Missing(_) => "Missing",
            Self::AlreadyStarted => "AlreadyStarted",
            Self::Stopped => "Stopped",
            Self::TooLarge { .. } => "TooLarge",
            Self::Conflict { .. } => "Conflict",
            Self::Rollout { .. } => "Rollout",
            Self::Runtime(_) => "Runtime",
        }
    }

    /// Whether trying again later may succeed (etcd down or unreachable), as opposed to a
    /// final error (bad setting, wrong credentials, permission denied).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::StartTimeout { .. })
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Displays an error with its chain of causes, `top: cause: root cause`, for log events.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The message a panic carried, for reports: its `&str` or `String` payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// `name: reason (origin)`, with what is known.
fn bind_text(name: Option<&str>, origin: Option<&crate::value::Source>, reason: &str) -> String {
    match (name, origin) {
        (Some(name), Some(origin)) => format!("{name}: {reason} ({origin})"),
        (Some(name), None) => format!("{name}: {reason}"),
        _ => reason.to_owned(),
    }
}
