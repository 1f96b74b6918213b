//! Configuration kept in etcd, served in-process.
//!
//! Every key under one prefix is loaded with one ranged read at one revision, kept
//! current by a watch that resumes from the last applied revision (and re-lists after a
//! compaction), and read lock-free from any thread through immutable snapshots.
//!
//! ```no_run
//! use etcd_dynamic_config::{EtcdConfig, EtcdSettings, Schema};
//!
//! # async fn run() -> etcd_dynamic_config::Result<()> {
//! let settings = EtcdSettings::builder()
//!     .endpoints("http://127.0.0.1:2379")
//!     .root_key("/apps/myapp")
//!     .build()?;
//! let config = EtcdConfig::builder()
//!     .settings(settings)
//!     .schema(Schema::auto_discover())
//!     .build()?;
//! let report = config.start().await?;
//! println!("{} names at revision {}", report.loaded, report.revision);
//!
//! let snapshot = config.snapshot(); // one atomic load; use it for the whole request
//! let port: u16 = snapshot.get_as("database.port")?;
//! // Until `listener` is dropped:
//! let listener =
//!     config.on_change(|change| println!("revision {}: {:?}", change.revision, change.changes));
//! config.stop().await;
//! drop(listener);
//! # Ok(()) }
//! ```
//!
//! Names come from key paths: `/apps/myapp/Database/Port` → `database.port`
//! (see [`schema::naming`]). Snapshots can be used without a server:
//!
//! ```
//! use etcd_dynamic_config::schema::naming::name_from_path;
//!
//! assert_eq!(name_from_path("AIHttpTimeout").as_deref(), Some("ai_http_timeout"));
//! assert_eq!(name_from_path("Database/MaxPool").as_deref(), Some("database.max_pool"));
//! ```

#![deny(missing_docs)]

pub mod announce;
pub mod audit;
#[doc(hidden)]
pub mod bench_support;
mod binding;
pub mod blocking;
mod cache;
mod client;
mod config;
mod connection;
mod engine;
mod error;
pub mod observe;
mod report;
pub mod rollout;
pub mod schema;
pub mod settings;
mod snapshot;
mod store;
mod value;

/// The README's examples compile.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

pub use binding::{Binding, BindingGuard, CachedBinding};
pub use client::{
    EtcdClient, Fleet, History, HistoryEntry, Loaded, Rollback, RolloutStatus, Standing,
};
pub use config::{EnvLookup, EtcdConfig, EtcdConfigBuilder, etcd_config};
pub use error::{Error, Result};
pub use observe::health::{Health, HealthState, SYNC_BOUND};
pub use report::{Rejection, RevisionRejection, StartReport, StartSource};
pub use schema::Schema;
pub use settings::{DEFAULT_START_TIMEOUT, EtcdSettings, EtcdSettingsBuilder};
pub use snapshot::{ConfigChange, Entry, Snapshot, Source, Value, ValueChange, ValueRef};
pub use store::{CachedSnapshot, Changes, Listener, MAILBOX_VALUES, Snapshots, Subscription};

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every file under `dir` whose name ends with one of `extensions`.
    fn files(dir: &Path, extensions: &[&str], found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() && !name.starts_with('.') && name != "target" {
                files(&path, extensions, found);
            } else if extensions.iter().any(|ext| name.ends_with(ext)) {
                found.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }

    #[test]
    fn the_guarantees_table_names_tests_that_exist() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let start = readme
            .find("## Guarantees")
            .expect("the guarantees section");
        let table = &readme[start..];
        let table = &table[..table[3..].find("\n## ").map_or(table.len(), |end| end + 3)];
        let mut sources = Vec::new();
        files(&root.join("crates"), &[".rs"], &mut sources);
        files(&root.join("python/tests"), &[".py"], &mut sources);
        let names: Vec<&str> = table
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|word| {
                word.len() >= 12
                    && word.contains('_')
                    && word
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
            .collect();
        assert!(names.len() > 50, "{names:?}");
        for name in names {
            let defined = sources.iter().any(|source| {
                source.contains(&format!("fn {name}(")) || source.contains(&format!("def {name}("))
            });
            assert!(
                defined,
                "the README's guarantees table names {name}, which no test defines"
            );
        }
    }
}
