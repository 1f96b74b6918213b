//! Staged rollouts: a named set of changes (puts and deletes) that some instances serve
//! before all of them do.
//!
//! A rollout is one etcd key under the configuration's prefix, `<prefix>_rollout/<name>`,
//! holding a JSON [`Rollout`]: its target (a percentage and label selector) and its
//! changes (etcd keys to put or delete). Because it lives inside the prefix, the one
//! watch every instance already has delivers it, at a revision of the same history as
//! the base: an instance serves base and rollout as of one revision, never one from
//! here and the other from there. The names never include `_rollout/`: readers of the
//! prefix see no configuration there.
//!
//! Only instances that [announce](crate::announce) themselves take part: the target is
//! chosen by their instance id and labels. One is targeted when every label of the
//! selector matches its labels and [`bucket`]`(rollout, id) < percent`. The bucket of
//! an instance does not depend on the percentage, so widening a rollout keeps every
//! instance it already reached. Others serve the base alone.
//!
//! A targeted instance lays the rollouts over the base in name order (a later one wins
//! on a key both change). It rejects a rollout whose document does not read, whose
//! value the schema rejects, or with which the configuration breaks a check: it serves
//! the base without it and says why in its [health](crate::Health) and instance record.
//!
//! [`EtcdClient`](crate::EtcdClient) starts, widens, promotes (the base takes the changes
//! and the rollout goes, in one transaction) and aborts rollouts; the CLI's `rollout`
//! commands call it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The folder, under the prefix, of the rollout keys.
pub const DIR: &str = "_rollout/";

/// A rollout: its target and its changes, as etcd holds it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Rollout {
    /// Its name (from its key).
    #[serde(skip)]
    pub name: String,
    /// The revision that last wrote it (from its key).
    #[serde(skip)]
    pub mod_revision: i64,
    /// The share of matching instances it reaches, 0 to 100.
    pub percent: u8,
    /// Only instances with all these labels take part.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// etcd key → the value targeted instances read there.
    #[serde(default)]
    pub put: BTreeMap<String, String>,
    /// etcd keys targeted instances read as deleted.
    #[serde(default)]
    pub delete: BTreeSet<String>,
}

/// Values are left out: the schema decides which are secret, and a rollout does not
/// know it.
impl std::fmt::Debug for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollout")
            .field("name", &self.name)
            .field("mod_revision", &self.mod_revision)
            .field("percent", &self.percent)
            .field("labels", &self.labels)
            .field("put", &self.put.keys().collect::<Vec<_>>())
            .field("delete", &self.delete)
            .finish()
    }
}

impl Rollout {
    /// Reads the document etcd holds at a rollout key.
    ///
    /// # Errors
    ///
    /// Why it is not a rollout, in words.
    pub(crate) fn parse(name: &str, mod_revision: i64, bytes: &[u8]) -> Result<Self, String> {
        let mut rollout: Self = serde_json::from_slice(bytes)
            .map_err(|error| format!("not a rollout document: {error}"))?;
        if rollout.percent > 100 {
            return Err(format!("percent {} is above 100", rollout.percent));
        }
        if let Some(key) = rollout.put.keys().find(|key| rollout.delete.contains(*key)) {
            return Err(format!("{key} is both put and deleted"));
        }
        rollout.name = name.to_owned();
        rollout.mod_revision = mod_revision;
        Ok(rollout)
    }

    /// Whether an instance with this id and these labels serves the rollout.
    pub fn targets(&self, id: &str, labels: &BTreeMap<String, String>) -> bool {
        self.labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && bucket(&self.name, id) < self.percent
    }

    /// The keys it changes.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.put.keys().chain(&self.delete)
    }
}

/// Where an instance stands in a rollout, 0 to 99: the CRC-32 (IEEE) of
/// `rollout + "/" + id`, modulo 100. An instance is in a rollout of `percent` when
/// its bucket is below it.
pub fn bucket(rollout: &str, id: &str) -> u8 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(rollout.as_bytes());
    hasher.update(b"/");
    hasher.update(id.as_bytes());
    (hasher.finalize() % 100) as u8
}

/// Whether `name` can name a rollout: 1 to 128 letters, digits, `-`, `_` or `.`.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let fits = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a rollout name: 1 to 128 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// A rollout an instance does not serve although it is targeted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRejection {
    /// The rollout.
    pub rollout: Arc<str>,
    /// Why (never a value).
    pub reason: String,
}

impl std::fmt::Display for RolloutRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rollout {}: {}", self.rollout, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(percent: u8, labels: &[(&str, &str)]) -> Rollout {
        let text = serde_json::json!({
            "percent": percent,
            "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            "put": {"/app/Level": "DEBUG"},
        });
        Rollout::parse("canary", 7, text.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_bucket_is_the_documented_crc() {
        // Python's zlib.crc32(b"canary/pod-1") is 0xf4b71a0e, and so on.
        assert_eq!(bucket("canary", "pod-1"), (0xf4b7_1a0e_u32 % 100) as u8);
        assert_eq!(bucket("canary", "pod-2"), (0x6dbe_4bb4_u32 % 100) as u8);
        assert_eq!(bucket("rollout", "x"), (0x5a0e_1587_u32 % 100) as u8);
    }

    #[test]
    fn widening_keeps_every_instance_already_in() {
        let ids: Vec<String> = (0..500).map(|i| format!("pod-{i}")).collect();
        let mut earlier = BTreeSet::new();
        for percent in [0, 5, 25, 50, 99, 100] {
            let canary = rollout(percent, &[]);
            let now: BTreeSet<&String> = ids
                .iter()
                .filter(|id| canary.targets(id, &BTreeMap::new()))
                .collect();
            assert!(earlier.is_subset(&now), "{percent}%");
            // About the share asked for (500 ids: within 8 points).
            let share = now.len() * 100 / ids.len();
            assert!(
                share.abs_diff(usize::from(percent)) <= 8,
                "{percent}%: {share}%"
            );
            earlier = now;
        }
        assert_eq!(earlier.len(), ids.len());
    }

    #[test]
    fn labels_select_before_the_percentage() {
        let eu: BTreeMap<String, String> = [("zone".into(), "eu".into())].into();
        let us: BTreeMap<String, String> = [("zone".into(), "us".into())].into();
        let canary = rollout(100, &[("zone", "eu")]);
        assert!(canary.targets("pod-1", &eu));
        assert!(!canary.targets("pod-1", &us));
        assert!(!canary.targets("pod-1", &BTreeMap::new()));
        assert!(!rollout(0, &[("zone", "eu")]).targets("pod-1", &eu));
    }

    #[test]
    fn documents_that_do_not_read_say_why() {
        let cases: [(&str, &str); 4] = [
            ("{", "not a rollout document"),
            (r#"{"percent": 101}"#, "above 100"),
            (r#"{"percent": 5, "colour": 1}"#, "unknown field `colour`"),
            (
                r#"{"percent": 5, "put": {"/a/K": "1"}, "delete": ["/a/K"]}"#,
                "/a/K is both put and deleted",
            ),
        ];
        for (text, says) in cases {
            let error = Rollout::parse("r", 1, text.as_bytes()).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        assert!(check_name("canary-2.b_1").is_ok());
        for bad in ["", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_those_put_then_those_deleted_and_rejections_read_as_words() {
        let text = r#"{"percent": 5, "put": {"/a/B": "1"}, "delete": ["/a/A"]}"#;
        let rollout = Rollout::parse("r", 1, text.as_bytes()).unwrap();
        assert_eq!(rollout.keys().collect::<Vec<_>>(), ["/a/B", "/a/A"]);
        let rejection = RolloutRejection {
            rollout: Arc::from("r"),
            reason: "level: not one of DEBUG, INFO".to_owned(),
        };
        assert_eq!(
            rejection.to_string(),
            "rollout r: level: not one of DEBUG, INFO"
        );
    }

    #[test]
    fn debug_shows_no_value() {
        let shown = format!("{:?}", rollout(5, &[]));
        assert!(shown.contains("/app/Level"), "{shown}");
        assert!(!shown.contains("DEBUG"), "{shown}");
    }
}
