//! The fleet view: each running configuration that is asked to (`EtcdSettings__Instance`,
//! or [`EtcdSettingsBuilder::announce`](crate::EtcdSettingsBuilder::announce)) keeps one
//! record of itself in etcd, and operators read them all
//! ([`EtcdClient::fleet`](crate::EtcdClient::fleet), `etcd-dynamic-config status`).
//!
//! A record lives under `/_status` followed by the configuration's prefix (`/app` →
//! `/_status/app/<instance id>`): outside the prefix, so readers of the configuration never
//! see it. It is written with a lease of the instance's TTL (15 s by default), renewed
//! every third of it: when the process dies, or cannot reach etcd, the record disappears
//! by itself within the TTL; `stop` removes it at once. It says which revision the
//! instance serves and what it rejects, never a value: the values' hash leaves secret
//! values out (it covers where they came from instead). Renewals are lease keep-alives,
//! not writes; the record is written again only when what it says changes (the
//! confirmed revision alone, which moves with every write anywhere in etcd, is not a
//! change worth a write).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::connection::Connection;
use crate::error::{Chain, Error, Result};
use crate::observe::events;
use crate::observe::health::{Health, HealthState};
use crate::settings::EtcdSettings;
use crate::snapshot::Snapshot;

/// How long a record outlives its last renewal, unless set.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// What an instance says of itself: its id, labels and application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    id: String,
    labels: BTreeMap<String, String>,
    ttl: Duration,
    app: Option<String>,
    app_version: Option<String>,
}

impl Announce {
    /// An instance named `id` (unique in the fleet: a pod name, a host name with a
    /// port); checked when the settings are built.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            labels: BTreeMap::new(),
            ttl: DEFAULT_TTL,
            app: None,
            app_version: None,
        }
    }

    /// Adds a label (`zone=eu-1`), for operators to select instances by.
    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// How long the record outlives the instance (2 s to 1 h; default 15 s).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The application's name and, if known, version.
    #[must_use]
    pub fn app(mut self, name: impl Into<String>, version: Option<String>) -> Self {
        self.app = Some(name.into());
        self.app_version = version;
        self
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Reads `EtcdSettings__Instance`, `__InstanceLabels` (`k=v,k=v`), `__InstanceTtl`
    /// and `__InstanceApp` (`name` or `name version`).
    pub(crate) fn from_settings(
        id: Option<String>,
        labels: Option<&str>,
        ttl: Option<Duration>,
        app: Option<&str>,
    ) -> Result<Option<Self>> {
        use crate::settings::{INSTANCE, INSTANCE_LABELS};
        let Some(id) = id else {
            if labels.is_some() || ttl.is_some() || app.is_some() {
                return Err(setting(
                    INSTANCE,
                    "instance settings are given but no instance id: set it to announce",
                ));
            }
            return Ok(None);
        };
        let mut announce = Self::new(id.trim());
        for pair in labels.unwrap_or_default().split(',') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let Some((key, value)) = pair.split_once('=') else {
                return Err(setting(
                    INSTANCE_LABELS,
                    format!("{pair:?} is not key=value"),
                ));
            };
            announce = announce.label(key.trim(), value.trim());
        }
        if let Some(ttl) = ttl {
            announce = announce.ttl(ttl);
        }
        if let Some(app) = app {
            let mut words = app.split_whitespace();
            if let Some(name) = words.next() {
                announce = announce.app(name, words.next().map(str::to_owned));
            }
        }
        Ok(Some(announce))
    }

    /// Checks the id, labels and TTL.
    pub(crate) fn validate(&self) -> Result<()> {
        use crate::settings::{INSTANCE, INSTANCE_LABELS, INSTANCE_TTL};
        let word = |text: &str| {
            !text.is_empty()
                && text.len() <= 128
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        };
        if !word(&self.id) {
            return Err(setting(
                INSTANCE,
                format!(
                    "{:?} is not an instance id: 1 to 128 letters, digits, '-', '_', '.' or ':'",
                    self.id
                ),
            ));
        }
        for (key, value) in &self.labels {
            if !word(key) || !(value.is_empty() || word(value)) {
                return Err(setting(
                    INSTANCE_LABELS,
                    format!(
                        "{key}={value}: keys and values are letters, digits, '-', '_', '.' or ':'"
                    ),
                ));
            }
        }
        if !(Duration::from_secs(2)..=Duration::from_secs(3600)).contains(&self.ttl) {
            return Err(setting(INSTANCE_TTL, "must be between 2 s and 1 h"));
        }
        Ok(())
    }
}

fn setting(setting: &'static str, reason: impl Into<String>) -> Error {
    Error::Setting {
        setting,
        reason: reason.into(),
    }
}

/// One instance's record, as written to etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceRecord {
    /// The instance id.
    pub id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// This library and its version.
    pub library: String,
    /// The application, when it said.
    pub app: Option<String>,
    /// The application's version, when it said.
    pub app_version: Option<String>,
    /// The configuration's prefix (with a trailing `/`).
    pub prefix: String,
    /// The revision of the snapshot it serves.
    pub revision: i64,
    /// The latest etcd head at which it confirmed holding the prefix as etcd does.
    pub confirmed_revision: Option<i64>,
    /// A hash of the values it serves (secret values left out), to compare instances.
    pub values_hash: String,
    /// Its health state.
    pub state: HealthState,
    /// The names whose values it rejects now (never the values).
    pub rejected: Vec<String>,
    /// The kind of its last failure talking to etcd (`Unavailable`, `Refused`, ...).
    pub last_error: Option<String>,
    /// The [rollouts](crate::rollout) it serves.
    #[serde(default)]
    pub rollouts: Vec<String>,
    /// The rollouts that target it and that it does not serve, and why.
    #[serde(default)]
    pub rejected_rollouts: Vec<crate::rollout::RolloutRejection>,
    /// When the record was written, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

impl InstanceRecord {
    /// The revision up to which the instance is known to hold etcd's values: the
    /// snapshot's, or a later head it confirmed.
    pub fn holds(&self) -> i64 {
        self.revision.max(self.confirmed_revision.unwrap_or(0))
    }
}

/// Where the records of `prefix_dir`'s instances live.
pub fn status_dir(prefix_dir: &str) -> String {
    format!("/_status{prefix_dir}")
}

/// The hash of `snapshot`'s values: each name with its value's text, or for a secret,
/// where it came from.
pub(crate) fn values_hash(snapshot: &Snapshot) -> String {
    let mut hasher = crc32fast::Hasher::new();
    let mut names: Vec<(&str, crate::snapshot::Entry<'_>)> = snapshot.iter().collect();
    names.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (name, entry) in names {
        hasher.update(name.as_bytes());
        hasher.update(b"\0");
        if entry.is_secret() {
            hasher.update(entry.source().to_string().as_bytes());
        } else {
            hasher.update(entry.value().to_string().as_bytes());
        }
        hasher.update(b"\n");
    }
    format!("{:08x}", hasher.finalize())
}

/// What the announcer needs of the configuration: its health and snapshot, while it
/// exists.
pub(crate) type Observe = Arc<dyn Fn() -> Option<(Health, Arc<Snapshot>)> + Send + Sync>;

/// The host name, as the kernel knows it.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn record(
    announce: &Announce,
    host: &str,
    prefix_dir: &str,
    health: &Health,
    snapshot: &Snapshot,
) -> InstanceRecord {
    InstanceRecord {
        id: announce.id.clone(),
        labels: announce.labels.clone(),
        host: host.to_owned(),
        pid: std::process::id(),
        library: concat!("etcd-dynamic-config ", env!("CARGO_PKG_VERSION")).to_owned(),
        app: announce.app.clone(),
        app_version: announce.app_version.clone(),
        prefix: prefix_dir.to_owned(),
        revision: snapshot.revision(),
        confirmed_revision: health.confirmed_revision,
        values_hash: values_hash(snapshot),
        state: health.state,
        rejected: health.invalid.iter().map(|r| r.name.to_string()).collect(),
        last_error: health.last_error_kind.clone(),
        rollouts: snapshot.rollouts().iter().map(|r| r.to_string()).collect(),
        rejected_rollouts: health.rejected_rollouts.clone(),
        updated_ms: 0,
    }
}

/// Keeps the instance's record in etcd until `cancel`, then removes it. `first` is told
/// when the first write has been tried (written or failed, within a third of the TTL).
pub(crate) async fn keep_announced(
    announce: Announce,
    settings: EtcdSettings,
    prefix_dir: String,
    observe: Observe,
    mut subscription: crate::store::Subscription,
    first: tokio::sync::oneshot::Sender<()>,
    cancel: CancellationToken,
) {
    let mut first = Some(first);
    let key = format!("{}{}", status_dir(&prefix_dir), announce.id);
    let host = host();
    let mut connection = Connection::new(&settings);
    let mut lease: Option<i64> = None;
    let mut written: Option<InstanceRecord> = None;
    let mut failing = false;
    let mut renewals = tokio::time::interval(announce.ttl / 3);
    renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let renew = tokio::select! {
            () = cancel.cancelled() => break,
            _ = renewals.tick() => true,
            changed = subscription.changed() => {
                if changed.is_none() {
                    break;
                }
                // A burst of revisions is written once.
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(DEBOUNCE) => {}
                }
                false
            }
        };
        let Some((health, snapshot)) = observe() else {
            break;
        };
        let mut current = record(&announce, &host, &prefix_dir, &health, &snapshot);
        let attempt = async {
            if renew
                && let Some(id) = lease
                && connection.lease_renew(id).await? <= 0
            {
                lease = None; // it expired: etcd dropped the record with it
            }
            let id = match lease {
                Some(id) => id,
                None => {
                    written = None;
                    let id = connection.lease_grant(announce.ttl).await?;
                    lease = Some(id);
                    id
                }
            };
            // The confirmed revision moves with every write anywhere in etcd (the records
            // included): alone, it is no reason to write.
            let unconfirmed = |record: &InstanceRecord| InstanceRecord {
                confirmed_revision: None,
                ..record.clone()
            };
            let stale = written
                .as_ref()
                .is_none_or(|last| unconfirmed(last) != unconfirmed(&current));
            if stale {
                let changed = current.clone();
                current.updated_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis() as u64);
                let text = serde_json::to_string(&current).expect("a record serializes");
                if connection.put_leased(&key, &text, id).await?.is_none() {
                    lease = None; // expired meanwhile: granted again at the next tick
                    return Ok(());
                }
                written = Some(changed);
                tracing::debug!(
                    event = events::ANNOUNCED,
                    key = %key,
                    revision = current.revision,
                    "instance record written"
                );
            }
            Ok::<(), Error>(())
        };
        // A frozen etcd must not hold the announcer past the record's lifetime.
        let result = tokio::time::timeout(announce.ttl / 3, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unavailable {
                    endpoints: connection.endpoint().to_owned(),
                    source: format!("no answer within {:?}", announce.ttl / 3).into(),
                })
            });
        if let Some(first) = first.take() {
            let _ = first.send(()); // start() may have stopped waiting
        }
        match result {
            Ok(()) => failing = false,
            Err(error) => {
                if !failing {
                    tracing::warn!(
                        event = events::ANNOUNCE_FAILED,
                        key = %key,
                        error.type = error.kind_name(),
                        error.message = %Chain(&error),
                        "the instance record could not be kept in etcd; trying again"
                    );
                }
                failing = true;
                if error.is_retryable() {
                    connection.rotate();
                }
            }
        }
    }
    if let Some(id) = lease {
        // Gone at once, not at the end of the TTL.
        let _ = tokio::time::timeout(Duration::from_secs(2), connection.lease_revoke(id)).await;
    }
}

/// How long the record waits after a publish for the next one.
const DEBOUNCE: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_settings_are_read_and_checked() {
        let announce = Announce::from_settings(
            Some("pod-7".into()),
            Some("zone=eu-1, tier=web"),
            Some(Duration::from_secs(9)),
            Some("billing 1.4.2"),
        )
        .unwrap()
        .unwrap();
        announce.validate().unwrap();
        assert_eq!(announce.labels()["zone"], "eu-1");
        assert_eq!(announce.ttl, Duration::from_secs(9));
        assert_eq!(
            (announce.app.as_deref(), announce.app_version.as_deref()),
            (Some("billing"), Some("1.4.2"))
        );
        assert_eq!(
            Announce::from_settings(None, None, None, None).unwrap(),
            None
        );
        let cases = [
            (Some("a/b"), None, None, "EtcdSettings__Instance"),
            (
                Some("pod"),
                Some("zone"),
                None,
                "EtcdSettings__InstanceLabels",
            ),
            (
                Some("pod"),
                Some("zone=a b"),
                None,
                "EtcdSettings__InstanceLabels",
            ),
            (
                Some("pod"),
                None,
                Some(Duration::from_secs(1)),
                "EtcdSettings__InstanceTtl",
            ),
            (None, Some("zone=a"), None, "EtcdSettings__Instance"),
        ];
        for (id, labels, ttl, named) in cases {
            let error = Announce::from_settings(id.map(str::to_owned), labels, ttl, None)
                .and_then(|announce| announce.map_or(Ok(()), |a| a.validate()))
                .unwrap_err();
            assert!(
                error.to_string().contains(named),
                "{id:?} {labels:?}: {error}"
            );
        }
        // Any one instance setting without an id is an error, not silently no record.
        let ttl = Some(Duration::from_secs(9));
        for (labels, ttl, app) in [
            (Some("zone=a"), None, None),
            (None, ttl, None),
            (None, None, Some("billing")),
        ] {
            let error = Announce::from_settings(None, labels, ttl, app).unwrap_err();
            assert!(
                error.to_string().contains("no instance id"),
                "{labels:?} {ttl:?} {app:?}: {error}"
            );
        }
    }

    #[test]
    fn records_live_beside_the_prefix_and_name_the_kernels_host() {
        assert_eq!(status_dir("/app/"), "/_status/app/");
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert!(!kernel.trim().is_empty());
        assert_eq!(host(), kernel.trim());
    }

    #[test]
    fn the_values_hash_changes_with_values_but_never_shows_a_secret() {
        use crate::snapshot::{Entries, Source};
        use crate::value::Value;
        let snapshot = |level: &str, token: &str, revision: i64| {
            let mut entries = Entries::default();
            entries.insert("level", Value::from(level).view(), &Source::Default, false);
            let source = Source::Etcd {
                key: Arc::from("/app/Token"),
                mod_revision: revision,
            };
            entries.insert("token", Value::from(token).view(), &source, true);
            Snapshot::new(revision, entries)
        };
        let a = values_hash(&snapshot("INFO", "s3cret", 4));
        assert_eq!(a, values_hash(&snapshot("INFO", "s3cret", 4)));
        assert_ne!(a, values_hash(&snapshot("DEBUG", "s3cret", 4)));
        // A secret's value is not hashed (it could be guessed back); where it came from is.
        assert_eq!(a, values_hash(&snapshot("INFO", "other", 4)));
        assert_ne!(a, values_hash(&snapshot("INFO", "s3cret", 5)));
    }
}
