//! A blocking facade for programs without an async runtime.
//!
//! It owns a small tokio runtime (one worker thread) on which the engine runs; every
//! method can be called from any thread.
//!
//! ```no_run
//! use etcd_dynamic_config::{EtcdConfig, blocking};
//!
//! let config = blocking::EtcdConfig::new(EtcdConfig::builder().build()?)?;
//! let report = config.start()?;
//! println!("loaded {} names at revision {}", report.loaded, report.revision);
//! let level = config.snapshot().get("log_level").map(|v| v.to_string());
//! config.stop();
//! # Ok::<(), etcd_dynamic_config::Error>(())
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::runtime::{Handle, Runtime};

use crate::error::{Error, Result};
use crate::report::StartReport;
use crate::snapshot::{ConfigChange, Snapshot, Value};

/// [`crate::EtcdConfig`] for synchronous code.
#[derive(Debug)]
pub struct EtcdConfig {
    config: crate::EtcdConfig,
    runtime: Runtime,
}

impl EtcdConfig {
    /// Wraps `config` with its own runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Runtime`] when the runtime cannot be created.
    pub fn new(config: crate::EtcdConfig) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-config")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        Ok(Self { config, runtime })
    }

    /// See [`crate::EtcdConfig::start`].
    ///
    /// # Errors
    ///
    /// As [`crate::EtcdConfig::start`].
    pub fn start(&self) -> Result<StartReport> {
        self.runtime.block_on(self.config.start())
    }

    /// See [`crate::EtcdConfig::stop`].
    pub fn stop(&self) {
        self.runtime.block_on(self.config.stop());
    }

    /// See [`crate::EtcdConfig::get_all_configs`].
    pub fn get_all_configs(&self) -> BTreeMap<String, Value> {
        self.config.get_all_configs()
    }

    /// See [`crate::EtcdConfig::snapshot`].
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.config.snapshot()
    }

    /// See [`crate::EtcdConfig::cached`].
    pub fn cached(&self) -> crate::CachedSnapshot {
        self.config.cached()
    }

    /// See [`crate::EtcdConfig::on_change`].
    pub fn on_change(&self, callback: impl Fn(&ConfigChange) + Send + 'static) -> crate::Listener {
        self.config.on_change(callback)
    }

    /// See [`crate::EtcdConfig::health`].
    pub fn health(&self) -> crate::Health {
        self.config.health()
    }

    /// See [`crate::EtcdConfig::rejections`].
    pub fn rejections(&self) -> Vec<crate::Rejection> {
        self.config.rejections()
    }

    /// See [`crate::EtcdConfig::bind`].
    ///
    /// # Errors
    ///
    /// As [`crate::EtcdConfig::bind`].
    pub fn bind<T: serde::de::DeserializeOwned + Send + Sync + 'static>(
        &self,
    ) -> Result<crate::Binding<T>> {
        self.config.bind()
    }

    /// A receiver of the latest snapshot that blocks the calling thread.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            inner: self.config.subscribe(),
            handle: self.runtime.handle().clone(),
        }
    }

    /// The async configuration inside.
    pub fn as_async(&self) -> &crate::EtcdConfig {
        &self.config
    }
}

/// [`crate::Subscription`] for synchronous code.
#[derive(Debug)]
pub struct Subscription {
    inner: crate::Subscription,
    handle: Handle,
}

impl Subscription {
    /// The latest snapshot, marking it seen.
    pub fn latest(&mut self) -> Arc<Snapshot> {
        self.inner.latest()
    }

    /// Blocks until a snapshot newer than the last one seen is published, or until
    /// `timeout` passes (`None`).
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime.
    pub fn changed_timeout(&mut self, timeout: std::time::Duration) -> Option<Arc<Snapshot>> {
        let inner = &mut self.inner;
        self.handle.block_on(async {
            tokio::time::timeout(timeout, inner.changed())
                .await
                .ok()
                .flatten()
        })
    }
}
