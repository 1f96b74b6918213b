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
//! | `watch_started` | debug | `endpoint`, `from_revision` |
//! | `relist` | info | `reason` (`Compacted { … }`, `Diverged { … }`, …) |
//! | `etcd_replaced` | warn | `reason` (`ClusterChanged { from, to }`, `RevisionWentBack { applied, reported }`, `HistoryDiffers { revision }`), `revision` |
//! | `engine_failed` | error | `failure` |
//! | `key_ignored` | warn | `key` (an etcd key that is not UTF-8, shown lossily) |
//! | `endpoint_switched` | warn | `from`, `to`, `error.type`, `error.message` |
//! | `token_refreshed` | info | `endpoint` |
//! | `etcd_refused` | error | `endpoint`, `error.type`, `error.message` |
//! | `etcd_retry` | debug | `endpoint`, `error.type`, `error.message`, `delay_ms` |
//! | `cache_written` | debug | `path`, `revision`, `names` |
//! | `cache_ignored` | warn | `path`, `reason` |
//! | `cache_write_failed` | warn | `path`, `error.message` |
//! | `bind_rejected` | warn | `revision`, `target`, `error.message` |
//! | `log_level_changed` / `log_level_rejected` | info / warn | `name`, `level` / `reason` |
//! | `callback_panicked` | error | `revision`, `panic` |
//! | `audit_record_ignored` | warn | `key`, `error.message` (`EtcdClient::audit_trail`) |

#[cfg(feature = "ecs")]
pub mod ecs;
pub mod health;
pub(crate) mod metrics;

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `event = "…"` emitted under `src/` is in the table above.
    #[test]
    fn every_event_emitted_is_documented() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let table = std::fs::read_to_string(src.join("observe/mod.rs")).unwrap();
        let mut missing = Vec::new();
        let mut files = vec![src];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Test modules log events of their own.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let lines = code
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"));
            for line in lines {
                for (start, _) in line.match_indices("event = \"") {
                    let rest = &line[start + 9..];
                    let name = &rest[..rest.find('"').unwrap()];
                    if !table.contains(&format!("`{name}`")) {
                        missing.push(format!("{name} ({})", path.display()));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "not in the event table: {missing:?}");
    }
}
