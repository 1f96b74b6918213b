//! [`Health`]: what a readiness or liveness endpoint reports.

use serde::Serialize;

use crate::report::{Rejection, RevisionRejection, StartSource};
use crate::rollout::RolloutRejection;

/// Where the configuration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthState {
    /// `start` has not finished (or was never called).
    Starting,
    /// Values come from etcd, the watch is up, and within the last
    /// [`SYNC_BOUND`] the engine confirmed that it holds etcd's head for the prefix.
    Synced,
    /// Serving, but not known to be current: etcd does not answer (the last good values,
    /// a cache file or fallbacks are served), a revision broke a check, another etcd
    /// answered and the prefix is read again, or no recent confirmation; `reason` says
    /// which.
    Degraded,
    /// The engine ended without being stopped (a defect): the last snapshot is served
    /// and nothing updates it.
    Failed,
    /// Local mode: env vars and defaults, by design.
    Local,
    /// Stopped: the last snapshot is served, nothing updates it.
    Stopped,
}

/// How recent a confirmation must be for [`HealthState::Synced`]. The engine confirms
/// about every 2–3 seconds while it is connected: with progress answers when nothing is
/// written, by applying events up to a head etcd reported, or with a head read.
pub const SYNC_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// The latest head revision etcd reported (of the whole store, so it may be above
    /// `revision` with nothing missing under the prefix).
    pub head_revision: Option<i64>,
    /// The latest etcd head revision at which the engine confirmed that it holds the
    /// prefix as etcd does.
    pub confirmed_revision: Option<i64>,
    /// Seconds since that confirmation (none: never confirmed).
    pub seconds_since_confirmed: Option<f64>,
    /// `head_revision - confirmed_revision`: revisions of etcd not yet confirmed to be
    /// applied (an upper bound of what may be missing).
    pub lag: Option<i64>,
    /// Why the state is not `synced`, in plain words.
    pub reason: Option<String>,
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
    /// Values rejected now (never the values).
    pub invalid: Vec<Rejection>,
    /// A revision held back because it broke a check.
    pub rejected_revision: Option<RevisionRejection>,
    /// The [rollouts](crate::rollout) laid over the base in the snapshot served.
    pub rollouts: Vec<String>,
    /// The rollouts that target this instance and are not served, and why.
    pub rejected_rollouts: Vec<RolloutRejection>,
    /// The last failure talking to etcd, with its causes.
    pub last_error: Option<String>,
    /// Its kind: `Unavailable`, `Refused`, `StartTimeout`, ...
    pub last_error_kind: Option<String>,
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
