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

pub use binding::Binding;
pub use client::{
    EtcdClient, Fleet, History, HistoryEntry, Loaded, Rollback, RolloutStatus, Standing,
};
pub use config::{EnvLookup, EtcdConfig, EtcdConfigBuilder, etcd_config};
pub use error::{Error, Result};
pub use observe::health::{Health, HealthState, SYNC_BOUND};
pub use report::{Rejection, RevisionRejection, StartReport, StartSource};
pub use schema::Schema;
pub use settings::{DEFAULT_START_TIMEOUT, EtcdSettings, EtcdSettingsBuilder};
pub use snapshot::{ConfigChange, Entry, Snapshot, Source, Value, ValueChange};
pub use store::{Changes, Listener, MAILBOX_VALUES, Snapshots, Subscription};
