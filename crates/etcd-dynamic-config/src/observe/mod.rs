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
//! | `announced` | debug | `key`, `revision` (the instance record was written) |
//! | `announce_failed` | warn | `key`, `error.type`, `error.message` |
//! | `instance_record_ignored` | warn | `key`, `error.message` (`EtcdClient::fleet`) |
//! | `rollout_rejected` | warn | `rollout`, `reason` (a rollout that targets the instance is not served) |
//! | `config_problem` | warn | `problem` (`EtcdClient::get_config`: a rejected value, colliding keys, a broken check) |

#[cfg(feature = "ecs")]
pub mod ecs;
pub(crate) mod events;
pub mod health;
pub(crate) mod metrics;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// The library's sources, without their test modules, which log events of their own.
    fn sources() -> Vec<(PathBuf, String)> {
        let mut sources = Vec::new();
        let mut paths = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(path) = paths.pop() {
            if path.is_dir() {
                paths.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code = code
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            sources.push((path, code));
        }
        sources
    }

    /// `(constant, event name)` for each entry of the catalogue.
    fn catalogue() -> Vec<(String, String)> {
        let text = include_str!("events.rs");
        text.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("pub(crate) const ")?;
                let (constant, rest) = rest.split_once(": &str = \"")?;
                Some((constant.to_owned(), rest.strip_suffix("\";")?.to_owned()))
            })
            .collect()
    }

    /// Every event is emitted through the catalogue, every catalogued event is emitted,
    /// and the documented table lists exactly the catalogue.
    #[test]
    fn the_catalogue_the_code_and_the_table_agree() {
        let catalogue = catalogue();
        assert!(catalogue.len() >= 20, "{catalogue:?}");
        let sources = sources();
        for (path, code) in &sources {
            assert!(
                !code.contains("event = \""),
                "{}: an event named outside the catalogue (use observe::events)",
                path.display()
            );
        }
        for (constant, name) in &catalogue {
            let used = sources.iter().any(|(path, code)| {
                !path.ends_with("events.rs") && code.contains(&format!("events::{constant}"))
            });
            assert!(used, "{name} is catalogued but never emitted");
        }
        let table = include_str!("mod.rs");
        let documented: BTreeSet<&str> = table
            .lines()
            .filter(|line| line.starts_with("//! | `"))
            .flat_map(|line| line.split('|').nth(1).unwrap_or_default().split('/'))
            .map(|cell| cell.trim().trim_matches('`'))
            .collect();
        let catalogued: BTreeSet<&str> = catalogue.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(documented, catalogued, "the table in observe/mod.rs");
    }
}
