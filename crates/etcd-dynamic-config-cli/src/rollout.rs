//! `rollout start|widen|status|promote|abort`: staged rollouts, through the library's
//! `EtcdClient` rollout calls.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use etcd_dynamic_config::rollout::Rollout;
use etcd_dynamic_config::{EtcdClient, Standing};

use crate::{Context, Format, exit, output};

#[derive(Debug, Subcommand)]
pub(crate) enum Action {
    /// Start a rollout of the values in FILE (.env, or JSON where null deletes the name);
    /// print the revision it was written at
    Start {
        /// Its name: letters, digits, '-', '_', '.'
        name: String,
        /// The changes: NAME=value lines, or a JSON object of names to values
        file: PathBuf,
        /// The share of the matching instances that serve it, chosen by a stable hash of
        /// their instance id (widening keeps them in)
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
        /// Only instances with these labels take part, e.g. zone=eu-1,tier=web
        #[arg(long, value_name = "K=V,...", value_parser = parse_labels)]
        labels: Option<BTreeMap<String, String>>,
        /// Show the changes and the live instances it would reach, and write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Widen a rollout to a larger share (every instance already in stays in)
    Widen {
        /// The rollout
        name: String,
        /// The new share, at least the current one
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
    },
    /// Where each live instance stands: serving, pending, rejecting it (and why) or
    /// outside; exit 1 when one rejects it. Without a name, every rollout
    Status {
        /// The rollout
        name: Option<String>,
        /// table or json
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Make the rollout's changes the base and remove it, in one transaction
    Promote {
        /// The rollout
        name: String,
    },
    /// Remove the rollout: the instances it reached go back to the base
    Abort {
        /// The rollout
        name: String,
    },
}

/// `k=v,k=v`.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(format!("{pair:?} is not key=value")),
        })
        .collect()
}

pub(crate) async fn run(context: &Context, action: Action) -> Result<u8> {
    let client = context.client()?;
    match action {
        Action::Start {
            name,
            file,
            percent,
            labels,
            dry_run,
        } => start(context, &client, &name, &file, percent, labels, dry_run).await,
        Action::Widen { name, percent } => {
            let revision = client.widen_rollout(&name, percent).await?;
            outln!("rollout {name} widened to {percent}% at revision {revision}");
            Ok(0)
        }
        Action::Status { name: None, format } => list(context, &client, format).await,
        Action::Status {
            name: Some(name),
            format,
        } => status(context, &client, &name, format).await,
        Action::Promote { name } => {
            let revision = client.promote_rollout(&name).await?;
            outln!("rollout {name} promoted at revision {revision}: every instance serves it");
            Ok(0)
        }
        Action::Abort { name } => {
            let revision = client.abort_rollout(&name).await?;
            outln!("rollout {name} aborted at revision {revision}: every instance serves the base");
            Ok(0)
        }
    }
}

async fn start(
    context: &Context,
    client: &EtcdClient,
    name: &str,
    file: &std::path::Path,
    percent: u8,
    labels: Option<BTreeMap<String, String>>,
    dry_run: bool,
) -> Result<u8> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let changes = crate::parse_changes(context, file, &text)?;
    let (puts, deletes): (Vec<_>, Vec<_>) = changes.into_iter().partition(|(_, v)| v.is_some());
    let puts: Vec<(String, String)> = puts
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect();
    let deletes: Vec<String> = deletes.into_iter().map(|(name, _)| name).collect();
    crate::refuse_masked(&puts)?;
    let plan = client
        .plan_rollout(name, percent, labels.unwrap_or_default(), &puts, &deletes)
        .await?;
    let base = client.load().await?.snapshot;
    for (name, value) in &puts {
        let old = base.entry(name).map(|entry| context.masking.text(&entry));
        let old = crate::shown(context, name, old.as_deref());
        let new = crate::shown(context, name, Some(value));
        outln!("{} {name}: {old} -> {new}", context.style.changed("~"));
    }
    for name in &deletes {
        outln!("{} {name}", context.style.error("-"));
    }
    let fleet = client.fleet().await?;
    let reached: Vec<&str> = fleet
        .instances
        .iter()
        .filter(|record| plan.targets(&record.id, &record.labels))
        .map(|record| record.id.as_str())
        .collect();
    outln!(
        "{} of {} live instance(s) in the target ({}): {}",
        reached.len(),
        fleet.instances.len(),
        target(&plan),
        output::printable(&reached.join(", "))
    );
    if dry_run {
        outln!("dry run: nothing written");
        return Ok(0);
    }
    let revision = client.start_rollout(&plan).await?;
    outln!("rollout {name} started at revision {revision}");
    Ok(0)
}

/// `25% of zone=eu` / `25% of every instance`.
fn target(rollout: &Rollout) -> String {
    if rollout.labels.is_empty() {
        return format!("{}% of every instance", rollout.percent);
    }
    let labels: Vec<String> = rollout
        .labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    format!("{}% of {}", rollout.percent, labels.join(","))
}

/// The names a rollout changes: `+name` put, `-name` deleted.
fn changes(client: &EtcdClient, rollout: &Rollout) -> String {
    let named = |key: &String| client.name_of_key(key).unwrap_or_else(|| key.clone());
    let puts = rollout.put.keys().map(|key| format!("+{}", named(key)));
    let deletes = rollout.delete.iter().map(|key| format!("-{}", named(key)));
    output::printable(&puts.chain(deletes).collect::<Vec<_>>().join(",")).into_owned()
}

/// A rollout as JSON: its name, revision, target and the keys it changes (never a
/// value).
fn described(rollout: &Rollout) -> serde_json::Value {
    serde_json::json!({
        "name": rollout.name,
        "revision": rollout.mod_revision,
        "percent": rollout.percent,
        "labels": rollout.labels,
        "put": rollout.put.keys().collect::<Vec<_>>(),
        "delete": rollout.delete,
    })
}

async fn list(context: &Context, client: &EtcdClient, format: Format) -> Result<u8> {
    let rollouts = client.rollouts().await?;
    if format == Format::Json {
        let document: Vec<serde_json::Value> = rollouts.iter().map(described).collect();
        outln!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(0);
    }
    if rollouts.is_empty() {
        outln!("no rollout under {}", client.prefix());
        return Ok(0);
    }
    let rows: Vec<[String; 4]> = rollouts
        .iter()
        .map(|rollout| {
            [
                rollout.name.clone(),
                target(rollout),
                changes(client, rollout),
                rollout.mod_revision.to_string(),
            ]
        })
        .collect();
    out!(
        "{}",
        context
            .style
            .table(&["rollout", "target", "changes", "revision"], &rows)
    );
    Ok(0)
}

async fn status(context: &Context, client: &EtcdClient, name: &str, format: Format) -> Result<u8> {
    let status = client.rollout_status(name).await?;
    let rollout = &status.rollout;
    let rejecting = status.count(|s| matches!(s, Standing::Rejected(_)));
    if format == Format::Json {
        let instances: Vec<serde_json::Value> = status
            .instances
            .iter()
            .map(|(record, standing)| {
                let mut value = serde_json::json!({
                    "id": record.id,
                    "labels": record.labels,
                    "revision": record.holds(),
                });
                if let serde_json::Value::Object(fields) =
                    serde_json::to_value(standing).expect("a standing serializes")
                {
                    value.as_object_mut().expect("an object").extend(fields);
                }
                value
            })
            .collect();
        let mut document = described(rollout);
        document["instances"] = instances.into();
        outln!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        outln!(
            "rollout {name}: {}, changes {}, written at revision {}",
            target(rollout),
            changes(client, rollout),
            rollout.mod_revision
        );
        let rows: Vec<[String; 4]> = status
            .instances
            .iter()
            .map(|(record, standing)| {
                let (word, why) = match standing {
                    Standing::Serving => ("serving", String::new()),
                    Standing::Pending => ("pending", String::new()),
                    Standing::Outside => ("outside", String::new()),
                    Standing::Rejected(reason) => ("rejected", reason.clone()),
                    _ => ("unknown", String::new()),
                };
                [
                    output::printable(&record.id).into_owned(),
                    record.holds().to_string(),
                    word.to_owned(),
                    output::printable(&why).into_owned(),
                ]
            })
            .collect();
        if !rows.is_empty() {
            out!(
                "{}",
                context
                    .style
                    .table(&["instance", "revision", "standing", "reason"], &rows)
            );
        }
        outln!(
            "{} serving, {} pending, {rejecting} rejecting, {} outside",
            status.count(|s| *s == Standing::Serving),
            status.count(|s| *s == Standing::Pending),
            status.count(|s| *s == Standing::Outside),
        );
    }
    Ok(if rejecting > 0 { exit::PROBLEMS } else { 0 })
}
