//! [`Health`]: what a readiness or liveness endpoint reports.

use serde::Serialize;

use crate::config::StartSource;
use crate::engine::state::{Rejection, RevisionRejection};

/// Where the configuration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthState {
    /// `start` has not finished (or was never called).
    Starting,
    /// Values come from etcd and the watch is up.
    Synced,
    /// Serving, but not current: etcd does not answer (the last good values, a cache
    /// file or fallbacks are served), or a revision broke a check.
    Degraded,
    /// Local mode: env vars and defaults, by design.
    Local,
    /// Stopped: the last snapshot is served, nothing updates it.
    Stopped,
}

/// A value that is rejected now, without the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidName {
    /// The name.
    pub name: String,
    /// Where the rejected value came from.
    pub source: String,
    /// Why it was rejected.
    pub reason: String,
}

impl From<&Rejection> for InvalidName {
    fn from(rejection: &Rejection) -> Self {
        Self {
            name: rejection.name.to_string(),
            source: rejection.source.to_string(),
            reason: rejection.reason.clone(),
        }
    }
}

/// A revision held back because it broke a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedRevision {
    /// The revision.
    pub revision: i64,
    /// Every check it broke.
    pub reasons: Vec<String>,
}

impl From<&RevisionRejection> for RejectedRevision {
    fn from(rejection: &RevisionRejection) -> Self {
        Self {
            revision: rejection.revision,
            reasons: rejection.reasons.clone(),
        }
    }
}

/// A health report: serialize it (e.g. with `serde_json`) for a readiness endpoint.
///
/// It never holds a value, so secrets cannot leak through it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// Where the configuration stands.
    pub state: HealthState,
    /// Where the values being served come from.
    pub source: Option<StartSource>,
    /// The prefix.
    pub prefix: String,
    /// The revision of the snapshot being served.
    pub revision: i64,
    /// Seconds since etcd last answered (none: never).
    pub seconds_since_sync: Option<f64>,
    /// Whether the last request to etcd succeeded.
    pub connected: bool,
    /// The endpoint in use.
    pub endpoint: Option<String>,
    /// How many times the connection was dropped and made again.
    pub reconnects: u64,
    /// How many times the engine authenticated again after etcd refused a watch.
    pub token_refreshes: u64,
    /// Values rejected now.
    pub invalid: Vec<InvalidName>,
    /// A revision held back because it broke a check.
    pub rejected_revision: Option<RejectedRevision>,
    /// The last failure talking to etcd, with its causes.
    pub last_error: Option<String>,
}

impl Health {
    /// Ready to serve requests: values are loaded (current or not).
    pub fn is_ready(&self) -> bool {
        matches!(
            self.state,
            HealthState::Synced | HealthState::Degraded | HealthState::Local
        )
    }

    /// Current: etcd answers and every revision is applied.
    pub fn is_synced(&self) -> bool {
        self.state == HealthState::Synced
    }
}
