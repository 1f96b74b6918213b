//! Staged rollouts from the operator's side: plan, start, widen, promote, abort, and
//! where the fleet stands in one (see [`crate::rollout`]).

use std::collections::BTreeMap;

use super::EtcdClient;
use crate::announce::InstanceRecord;
use crate::engine::state::Kv;
use crate::error::{Error, Result};
use crate::rollout::{self, Rollout};

/// Where an instance stands in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
#[non_exhaustive]
pub enum Standing {
    /// It serves the rollout.
    Serving,
    /// It is targeted and does not serve it, for this reason.
    Rejected(String),
    /// It is targeted and has not applied the rollout's revision yet.
    Pending,
    /// It is not targeted: it serves the base.
    Outside,
}

/// What [`EtcdClient::rollout_status`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RolloutStatus {
    /// The rollout.
    pub rollout: Rollout,
    /// Every live instance of the prefix, by id, with where it stands.
    pub instances: Vec<(InstanceRecord, Standing)>,
}

impl RolloutStatus {
    /// The instances that stand so.
    pub fn count(&self, standing: fn(&Standing) -> bool) -> usize {
        self.instances.iter().filter(|(_, s)| standing(s)).count()
    }
}

impl EtcdClient {
    /// The key of the rollout `name`.
    fn rollout_key(&self, name: &str) -> String {
        format!("{}{}{name}", self.prefix(), rollout::DIR)
    }

    /// Every rollout etcd holds under the prefix, by name.
    ///
    /// # Errors
    ///
    /// [`Error::Rollout`] naming one whose document does not read (abort it); etcd's
    /// errors.
    pub async fn rollouts(&self) -> Result<Vec<Rollout>> {
        let dir = format!("{}{}", self.prefix(), rollout::DIR);
        let listing = self
            .with_failover(async |connection| connection.list(&dir).await)
            .await?;
        listing
            .kvs
            .iter()
            .map(|kv| {
                let name = &kv.key[dir.len()..];
                Rollout::parse(name, kv.mod_revision, &kv.value).map_err(|reason| Error::Rollout {
                    name: name.to_owned(),
                    reason,
                })
            })
            .collect()
    }

    /// The rollout `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Rollout`] when there is none, or its document does not read.
    pub async fn rollout(&self, name: &str) -> Result<Rollout> {
        let kv = self.rollout_kv(name).await?;
        Rollout::parse(name, kv.mod_revision, &kv.value)
            .map_err(|reason| rollout_error(name, reason))
    }

    /// What etcd holds at the key of the rollout `name`.
    async fn rollout_kv(&self, name: &str) -> Result<Kv> {
        rollout::check_name(name).map_err(|reason| rollout_error(name, reason))?;
        let key = self.rollout_key(name);
        let listing = self
            .with_failover(async |connection| connection.list(&key).await)
            .await?;
        listing
            .kvs
            .into_iter()
            .find(|kv| *kv.key == *key)
            .ok_or_else(|| rollout_error(name, "there is no such rollout".to_owned()))
    }

    /// A rollout of the given changes (names to values, names to delete), checked
    /// against the schema and placed at the keys a write would use; not started.
    ///
    /// # Errors
    ///
    /// [`Error::Rollout`] for a bad name, a percentage above 100 or no change;
    /// [`Error::Value`] or [`Error::Missing`] as [`put_values`](Self::put_values).
    pub async fn plan_rollout(
        &self,
        name: &str,
        percent: u8,
        labels: BTreeMap<String, String>,
        puts: &[(String, String)],
        deletes: &[String],
    ) -> Result<Rollout> {
        rollout::check_name(name).map_err(|reason| rollout_error(name, reason))?;
        if percent > 100 {
            return Err(rollout_error(name, format!("{percent}% is above 100%")));
        }
        if puts.is_empty() && deletes.is_empty() {
            return Err(rollout_error(name, "it changes nothing".to_owned()));
        }
        let current = self.load().await?.snapshot;
        let mut put = BTreeMap::new();
        for (value_name, text) in puts {
            put.insert(self.checked_key(&current, value_name, text)?, text.clone());
        }
        let mut delete = std::collections::BTreeSet::new();
        for value_name in deletes {
            let key = self.key_of(&current, value_name)?;
            if put.contains_key(&key) {
                return Err(rollout_error(
                    name,
                    format!("{value_name} is both put and deleted"),
                ));
            }
            delete.insert(key);
        }
        Ok(Rollout {
            name: name.to_owned(),
            mod_revision: 0,
            percent,
            labels,
            put,
            delete,
        })
    }

    /// Starts `rollout` (from [`plan_rollout`](Self::plan_rollout)): the instances it
    /// targets serve it from the returned revision on.
    ///
    /// # Errors
    ///
    /// [`Error::Rollout`] when a rollout of that name runs, or another running rollout
    /// changes one of its keys; [`Error::Conflict`] when either happened while it was
    /// being written; etcd's errors.
    pub async fn start_rollout(&self, rollout: &Rollout) -> Result<i64> {
        let running = self.rollouts().await?;
        if running.iter().any(|other| other.name == rollout.name) {
            return Err(rollout_error(
                &rollout.name,
                "it is running already: widen, promote or abort it".to_owned(),
            ));
        }
        for other in &running {
            if let Some(key) = rollout.keys().find(|key| other.keys().any(|k| k == *key)) {
                return Err(rollout_error(
                    &rollout.name,
                    format!(
                        "{key} is changed by the running rollout {} too: promote or abort it first",
                        other.name
                    ),
                ));
            }
        }
        let key = self.rollout_key(&rollout.name);
        let mut guards: Vec<(String, i64)> = running
            .iter()
            .map(|other| (self.rollout_key(&other.name), other.mod_revision))
            .collect();
        guards.push((key.clone(), 0));
        let action = format!("rollout {} started at {}%", rollout.name, rollout.percent);
        self.write_rollout(&key, rollout, &guards, action).await
    }

    /// Widens the rollout `name` to `percent`: every instance it reached stays in.
    ///
    /// # Errors
    ///
    /// [`Error::Rollout`] when there is no such rollout or `percent` is below what it
    /// reaches now (abort it instead) or above 100; [`Error::Conflict`] when it changed
    /// while being written.
    pub async fn widen_rollout(&self, name: &str, percent: u8) -> Result<i64> {
        let mut rollout = self.rollout(name).await?;
        if percent < rollout.percent || percent > 100 {
            return Err(rollout_error(
                name,
                format!(
                    "it reaches {}% now; it widens up to 100%, and never narrows (abort it instead)",
                    rollout.percent
                ),
            ));
        }
        let key = self.rollout_key(name);
        let guards = [(key.clone(), rollout.mod_revision)];
        let action = format!(
            "rollout {name} widened from {}% to {percent}%",
            rollout.percent
        );
        rollout.percent = percent;
        self.write_rollout(&key, &rollout, &guards, action).await
    }

    /// Writes the rollout document, with an audit record when the client keeps them.
    async fn write_rollout(
        &self,
        key: &str,
        rollout: &Rollout,
        guards: &[(String, i64)],
        action: String,
    ) -> Result<i64> {
        let text = serde_json::to_string(rollout).expect("a rollout serializes");
        let mut puts = vec![(key.to_owned(), text)];
        puts.extend(self.audit_put(action, Vec::new));
        self.with_failover(async |connection| {
            connection.write_guarded(&puts, &[], guards, None).await
        })
        .await
    }

    /// Promotes the rollout `name`: in one transaction, the base takes its changes and
    /// the rollout goes, so every instance serves them from the returned revision on.
    ///
    /// # Errors
    ///
    /// [`Error::Rollout`] when there is no such rollout; [`Error::Value`] when the
    /// schema rejects one of its values now; [`Error::Conflict`] when it changed while
    /// being promoted; etcd's errors.
    pub async fn promote_rollout(&self, name: &str) -> Result<i64> {
        let rollout = self.rollout(name).await?;
        let current = self.load().await?.snapshot;
        for (key, text) in &rollout.put {
            let value_name = self.name_of_key(key).ok_or_else(|| {
                rollout_error(name, format!("{key} names no value of the configuration"))
            })?;
            self.checked_key(&current, &value_name, text)?;
        }
        let held = |key: &str| {
            let value_name = self.name_of_key(key)?;
            let entry = current.entry(&value_name)?;
            matches!(entry.source(), crate::Source::Etcd { key: at, .. } if *at == *key)
                .then(|| entry.value().to_string())
        };
        let changes = || {
            rollout
                .put
                .iter()
                .map(|(key, text)| self.audit_change(key, held(key), Some(text.clone())))
                .chain(
                    rollout
                        .delete
                        .iter()
                        .map(|key| self.audit_change(key, held(key), None)),
                )
                .collect()
        };
        let mut puts: Vec<(String, String)> = rollout
            .put
            .iter()
            .map(|(key, text)| (key.clone(), text.clone()))
            .collect();
        puts.extend(self.audit_put(format!("rollout {name} promoted"), changes));
        let key = self.rollout_key(name);
        let mut deletes: Vec<String> = rollout.delete.iter().cloned().collect();
        deletes.push(key.clone());
        let guards = [(key, rollout.mod_revision)];
        self.with_failover(async |connection| {
            connection
                .write_guarded(&puts, &deletes, &guards, None)
                .await
        })
        .await
    }

    /// Aborts the rollout `name`: the instances it targets go back to the base at the
    /// returned revision. A rollout whose document does not read can be aborted.
    ///
    /// # Errors
    ///
    /// [`Error::Rollout`] when there is no such rollout; [`Error::Conflict`] when it
    /// changed while being aborted; etcd's errors.
    pub async fn abort_rollout(&self, name: &str) -> Result<i64> {
        let mod_revision = self.rollout_kv(name).await?.mod_revision;
        let key = self.rollout_key(name);
        let mut puts = Vec::new();
        puts.extend(self.audit_put(format!("rollout {name} aborted"), Vec::new));
        let guards = [(key.clone(), mod_revision)];
        self.with_failover(async |connection| {
            connection
                .write_guarded(&puts, std::slice::from_ref(&key), &guards, None)
                .await
        })
        .await
    }

    /// Where every live instance of the prefix stands in the rollout `name`, from their
    /// [records](crate::announce).
    ///
    /// # Errors
    ///
    /// As [`rollout`](Self::rollout) and [`fleet`](Self::fleet).
    pub async fn rollout_status(&self, name: &str) -> Result<RolloutStatus> {
        let rollout = self.rollout(name).await?;
        let fleet = self.fleet().await?;
        let instances = fleet
            .instances
            .into_iter()
            .map(|record| {
                let standing = standing(&rollout, &record);
                (record, standing)
            })
            .collect();
        Ok(RolloutStatus { rollout, instances })
    }
}

/// Where the instance of `record` stands in `rollout`.
fn standing(rollout: &Rollout, record: &InstanceRecord) -> Standing {
    if record.rollouts.contains(&rollout.name) {
        return Standing::Serving;
    }
    if let Some(rejection) = record
        .rejected_rollouts
        .iter()
        .find(|rejection| *rejection.rollout == *rollout.name)
    {
        return Standing::Rejected(rejection.reason.clone());
    }
    if rollout.targets(&record.id, &record.labels) {
        Standing::Pending
    } else {
        Standing::Outside
    }
}

fn rollout_error(name: &str, reason: String) -> Error {
    Error::Rollout {
        name: name.to_owned(),
        reason,
    }
}
