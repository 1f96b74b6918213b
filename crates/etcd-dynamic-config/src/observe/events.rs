//! The event catalogue: the `event` field of every log event the library emits, one
//! constant per event. The table in [`crate::observe`] documents each one's level and
//! fields; a test keeps the two and the code in step.

pub(crate) const STARTED: &str = "started";
pub(crate) const FALLBACK: &str = "fallback";
pub(crate) const UPDATE_APPLIED: &str = "update_applied";
pub(crate) const UPDATE_REJECTED: &str = "update_rejected";
pub(crate) const REVISION_REJECTED: &str = "revision_rejected";
pub(crate) const NAME_COLLISION: &str = "name_collision";
pub(crate) const WATCH_BROKEN: &str = "watch_broken";
pub(crate) const WATCH_RESUMED: &str = "watch_resumed";
pub(crate) const WATCH_STARTED: &str = "watch_started";
pub(crate) const RELIST: &str = "relist";
pub(crate) const ETCD_REPLACED: &str = "etcd_replaced";
pub(crate) const ENGINE_FAILED: &str = "engine_failed";
pub(crate) const KEY_IGNORED: &str = "key_ignored";
pub(crate) const ENDPOINT_SWITCHED: &str = "endpoint_switched";
pub(crate) const TOKEN_REFRESHED: &str = "token_refreshed";
pub(crate) const ETCD_REFUSED: &str = "etcd_refused";
pub(crate) const ETCD_RETRY: &str = "etcd_retry";
pub(crate) const CACHE_WRITTEN: &str = "cache_written";
pub(crate) const CACHE_IGNORED: &str = "cache_ignored";
pub(crate) const CACHE_WRITE_FAILED: &str = "cache_write_failed";
pub(crate) const BIND_REJECTED: &str = "bind_rejected";
// The log level follows etcd only with the `ecs` feature's subscriber.
#[cfg(feature = "ecs")]
pub(crate) const LOG_LEVEL_CHANGED: &str = "log_level_changed";
#[cfg(feature = "ecs")]
pub(crate) const LOG_LEVEL_REJECTED: &str = "log_level_rejected";
pub(crate) const CALLBACK_PANICKED: &str = "callback_panicked";
pub(crate) const AUDIT_RECORD_IGNORED: &str = "audit_record_ignored";
pub(crate) const CONFIG_PROBLEM: &str = "config_problem";
pub(crate) const ANNOUNCED: &str = "announced";
pub(crate) const ANNOUNCE_FAILED: &str = "announce_failed";
pub(crate) const INSTANCE_RECORD_IGNORED: &str = "instance_record_ignored";
pub(crate) const ROLLOUT_REJECTED: &str = "rollout_rejected";
