//! Observability: the log events, an ECS JSON log format with a run-time log level,
//! metrics, and health.
//!
//! # Log events
//!
//! Every event carries `event = "<name>"` and runs in a span `etcd_config{prefix=…}`.
//!
//! | event | level | fields |
//! | --- | --- | --- |
//! | `started` | info | `source`, `revision`, `loaded`, `missing`, `rejected` |
//! | `fallback` | warn | `source`, `revision`, `error.type`, `error.message` |
//! | `update_applied` | info | `revision`, `names` (comma-separated; never values) |
//! | `update_rejected` | warn | `name`, `source` (key and revision), `reason` |
//! | `revision_rejected` | warn | `revision`, `reasons` |
//! | `name_collision` | warn | `name`, `keys` |
//! | `watch_broken` | warn | `endpoint`, `resume_from`, `error.type`, `error.message` |
//! | `watch_resumed` | info | `endpoint`, `from_revision`, `outage_ms` |
//! | `relist` | info | `reason` (`Compacted { … }`, `Diverged { … }`) |
//! | `endpoint_switched` | warn | `from`, `to`, `error.type`, `error.message` |
//! | `token_refreshed` | info | `endpoint` |
//! | `etcd_refused` | error | `endpoint`, `error.type`, `error.message` |
//! | `etcd_retry` | debug | `endpoint`, `error.type`, `error.message`, `delay_ms` |
//! | `cache_written` | debug | `path`, `revision`, `names` |
//! | `cache_ignored` | warn | `path`, `reason` |
//! | `cache_write_failed` | warn | `path`, `error.message` |
//! | `bind_rejected` | warn | `revision`, `target`, `error.message` |
//! | `log_level_changed` / `log_level_rejected` | info / warn | `name`, `level` / `reason` |
//! | `callback_panicked` | error | `revision` |

pub mod ecs;
pub mod health;
pub(crate) mod metrics;
