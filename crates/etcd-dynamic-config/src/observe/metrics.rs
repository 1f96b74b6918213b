//! Metrics through the `metrics` facade; any recorder (e.g. Prometheus) picks them up.
//!
//! | metric | kind | meaning |
//! | --- | --- | --- |
//! | `etcd_config_updates_applied_total` | counter | revisions that changed values |
//! | `etcd_config_updates_rejected_total` | counter | values rejected by coercion or validators |
//! | `etcd_config_revisions_rejected_total` | counter | revisions rejected by checks |
//! | `etcd_config_reconnects_total` | counter | connections dropped and made again |
//! | `etcd_config_relists_total` | counter | full re-reads of the prefix after start |
//! | `etcd_config_token_refreshes_total` | counter | re-authentications after a refusal |
//! | `etcd_config_revision` | gauge | revision of the snapshot served |
//! | `etcd_config_keys` | gauge | names in the snapshot served |
//! | `etcd_config_seconds_since_sync` | gauge | seconds since etcd last answered |
//! | `etcd_config_connected` | gauge | 1 while the last request to etcd succeeded |
//!
//! Every metric has the label `prefix`.

use std::sync::Arc;

/// The metric handles of one configuration, labelled with its prefix.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) updates_applied: metrics::Counter,
    pub(crate) updates_rejected: metrics::Counter,
    pub(crate) revisions_rejected: metrics::Counter,
    pub(crate) reconnects: metrics::Counter,
    pub(crate) relists: metrics::Counter,
    pub(crate) token_refreshes: metrics::Counter,
    pub(crate) revision: metrics::Gauge,
    pub(crate) keys: metrics::Gauge,
    pub(crate) seconds_since_sync: metrics::Gauge,
    pub(crate) connected: metrics::Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Registers the metrics of `prefix` with the installed recorder (no-ops without one).
    pub(crate) fn new(prefix: &str) -> Arc<Self> {
        let prefix = prefix.to_owned();
        let label = [("prefix", prefix)];
        Arc::new(Self {
            updates_applied: metrics::counter!("etcd_config_updates_applied_total", &label),
            updates_rejected: metrics::counter!("etcd_config_updates_rejected_total", &label),
            revisions_rejected: metrics::counter!("etcd_config_revisions_rejected_total", &label),
            reconnects: metrics::counter!("etcd_config_reconnects_total", &label),
            relists: metrics::counter!("etcd_config_relists_total", &label),
            token_refreshes: metrics::counter!("etcd_config_token_refreshes_total", &label),
            revision: metrics::gauge!("etcd_config_revision", &label),
            keys: metrics::gauge!("etcd_config_keys", &label),
            seconds_since_sync: metrics::gauge!("etcd_config_seconds_since_sync", &label),
            connected: metrics::gauge!("etcd_config_connected", &label),
        })
    }
}
