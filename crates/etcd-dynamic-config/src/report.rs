//! What the configuration reports about itself: where its values came from at start,
//! and the values and revisions it rejected. The bottom layer, beside values and
//! snapshots: the engine, the store, health, the cache file and the client use these
//! types; they use none of those.

use std::sync::Arc;

use crate::observe::events;
use crate::snapshot::Source;

/// A value that failed coercion or a validator; the name keeps its last good value (or
/// its env var or default). The one rejection type of start reports, health and the
/// client; it serializes as `{"name", "source", "reason"}`, without the value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// The configuration name.
    pub name: Arc<str>,
    /// Where the rejected value came from (for etcd: the key and the revision that
    /// wrote it).
    pub source: Source,
    /// Why it was rejected (never the value itself).
    pub reason: String,
}

impl Rejection {
    /// Emits the `update_rejected` event.
    pub(crate) fn log(&self) {
        tracing::warn!(
            event = events::UPDATE_REJECTED,
            name = %self.name,
            source = %self.source,
            reason = %self.reason,
            "a value was rejected; the name keeps its last good value, env var or default"
        );
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.name, self.reason, self.source)
    }
}

/// A revision that broke a check over the whole configuration (or removed a required
/// name): it was not published, and the last good snapshot keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RevisionRejection {
    /// The etcd revision.
    pub revision: i64,
    /// Every check it breaks.
    pub reasons: Vec<String>,
}

impl std::fmt::Display for RevisionRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "revision {}: {}", self.revision, self.reasons.join("; "))
    }
}

/// Where the configuration at start came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StartSource {
    /// etcd, over env vars and defaults for names etcd does not hold.
    Etcd,
    /// etcd did not answer in time: the last-known-good cache file, over env vars and
    /// defaults; etcd's values replace them as soon as it answers.
    CacheFile,
    /// etcd did not answer in time and there was no usable cache file: env vars and
    /// defaults; etcd's values replace them as soon as it answers.
    Fallback,
    /// Env vars and defaults only (`USE_LOCAL_CONFIG=true`); etcd is never contacted.
    Local,
}

/// What [`EtcdConfig::start`](crate::EtcdConfig::start) loaded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct StartReport {
    /// Where the values came from.
    pub source: StartSource,
    /// The etcd revision of the first snapshot (0 in local mode).
    pub revision: i64,
    /// How many names have a value.
    pub loaded: usize,
    /// Declared names that no source gave a value.
    pub missing: Vec<String>,
    /// Values that were rejected (their names hold their env var, default, or nothing).
    pub rejected: Vec<Rejection>,
    /// Names that several keys map to, with the keys (the first one wins).
    pub collisions: Vec<(String, Vec<String>)>,
    /// Why etcd was not used, when the values came from a fallback.
    pub etcd_error: Option<String>,
    /// Why the cache file was not used, when it exists but is not trusted.
    pub cache_error: Option<String>,
}

impl StartReport {
    /// Emits the rejections and the `started` event.
    pub(crate) fn log(&self) {
        for rejection in &self.rejected {
            rejection.log();
        }
        tracing::info!(
            event = events::STARTED,
            source = ?self.source,
            revision = self.revision,
            loaded = self.loaded,
            missing = self.missing.len(),
            rejected = self.rejected.len(),
            "configuration loaded"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_read_as_name_reason_and_source() {
        let rejection = Rejection {
            name: Arc::from("db_port"),
            source: Source::Etcd {
                key: Arc::from("/app/Db/Port"),
                mod_revision: 812,
            },
            reason: "expected an integer".to_owned(),
        };
        assert_eq!(
            rejection.to_string(),
            "db_port: expected an integer (etcd key /app/Db/Port @ rev 812)"
        );
        let revision = RevisionRejection {
            revision: 9,
            reasons: vec!["a".to_owned(), "b".to_owned()],
        };
        assert_eq!(revision.to_string(), "revision 9: a; b");
    }
}
