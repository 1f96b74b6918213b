//! The demo: a throwaway etcd, a configuration loaded from it, live updates arriving,
//! and the configuration still serving after etcd stops.
//!
//! Run it with `scripts/demo.sh` (installs etcd when missing) or
//! `cargo run -p etcd-dynamic-config --example demo`. `RUST_LOG=info` shows the
//! library's own log events.

use std::time::Duration;

use etcd_client::{Client, Txn, TxnOp};
use etcd_dynamic_config::{EtcdConfig, EtcdSettings, Snapshot};
use testkit::EtcdMember;

const PREFIX: &str = "/apps/demo";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    step("Starting a throwaway etcd on a free loopback port");
    let mut etcd = EtcdMember::start().await;
    println!("  etcd is up at {}", etcd.endpoint());
    let mut client = etcd.client().await;

    step(&format!("Seeding configuration keys under {PREFIX}"));
    for (key, value) in [
        ("LogLevel", "INFO"),
        ("Database/Host", "db.internal"),
        ("Database/Port", "5432"),
        ("AiHttpTimeoutSeconds", "30"),
        ("Features/NewCheckout", "false"),
    ] {
        client.put(format!("{PREFIX}/{key}"), value, None).await?;
        println!("  put {PREFIX}/{key} = {value}");
    }

    step("Starting the library: one ranged read, then a watch from the next revision");
    let settings = EtcdSettings::builder()
        .endpoints(etcd.endpoint())
        .root_key(PREFIX)
        .build()?;
    let config = EtcdConfig::builder().settings(settings).build()?;
    let report = config.start().await?;
    println!(
        "  loaded {} names at revision {}",
        report.loaded, report.revision
    );
    print_snapshot(&config.snapshot());
    let port: u16 = config.snapshot().get_as("database.port")?;
    println!("  typed read: database.port as u16 = {port}");

    let _listener = config.on_change(|change| {
        for item in &change.changes {
            let show = |value: &Option<etcd_dynamic_config::Value>| {
                value
                    .as_ref()
                    .map_or_else(|| "(absent)".to_owned(), |v| format!("{v:?}"))
            };
            println!(
                "  [on_change] rev {}: {} {} -> {}",
                change.revision,
                item.name,
                show(&item.old),
                show(&item.new)
            );
        }
    });

    step("Writing new values while the application runs");
    let revision = put(&mut client, "LogLevel", "DEBUG").await?;
    wait_and_show(&config, revision, &["log_level"]).await;

    step("Moving the database in one transaction: host and port change together");
    let txn = Txn::new().and_then(vec![
        TxnOp::put(format!("{PREFIX}/Database/Host"), "db2.internal", None),
        TxnOp::put(format!("{PREFIX}/Database/Port"), "6432", None),
    ]);
    let revision = client.txn(txn).await?.header().map_or(0, |h| h.revision());
    wait_and_show(&config, revision, &["database.host", "database.port"]).await;

    step("Writing a value that does not parse: rejected, the last good value keeps serving");
    let revision = put(&mut client, "AiHttpTimeoutSeconds", "abc").await?;
    wait_and_show(&config, revision, &["ai_http_timeout_seconds"]).await;
    for rejection in config.rejections() {
        println!("  rejected: {rejection}");
    }

    step("Adding a key after start, then deleting one");
    let revision = put(&mut client, "Features/FastSearch", "true").await?;
    wait_and_show(&config, revision, &["features.fast_search"]).await;
    let revision = client
        .delete(format!("{PREFIX}/Features/NewCheckout"), None)
        .await?
        .header()
        .map_or(0, |h| h.revision());
    wait_and_show(&config, revision, &["features.new_checkout"]).await;

    step("Stopping etcd: the application keeps serving the last good configuration");
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let snapshot = config.snapshot();
    println!(
        "  etcd is down; reads still answer from memory (revision {}):",
        snapshot.revision()
    );
    print_snapshot(&snapshot);
    let health = config.health();
    println!(
        "  health: {}",
        serde_json::to_string(&serde_json::json!({
            "state": health.state,
            "ready": health.is_ready(),
            "revision": health.revision,
            "connected": health.connected,
            "reconnects": health.reconnects,
            "reason": health.reason,
        }))?
    );

    step("Restarting etcd: the watch resumes from the last applied revision + 1");
    etcd.restart().await;
    let mut client = etcd.client().await;
    let revision = put(&mut client, "LogLevel", "WARN").await?;
    wait_and_show(&config, revision, &["log_level"]).await;
    let health = config.health();
    println!(
        "  health: {:?}, revision {}, confirmed to hold etcd's head (revision {}) {:.1} s ago",
        health.state,
        health.revision,
        health.confirmed_revision.unwrap_or_default(),
        health.seconds_since_confirmed.unwrap_or_default()
    );

    config.stop().await;
    step("Done");
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
}

async fn put(client: &mut Client, key: &str, value: &str) -> Result<i64, etcd_client::Error> {
    println!("  put {PREFIX}/{key} = {value}");
    let response = client.put(format!("{PREFIX}/{key}"), value, None).await?;
    Ok(response.header().map_or(0, |header| header.revision()))
}

async fn wait_and_show(config: &EtcdConfig, revision: i64, names: &[&str]) {
    let started = std::time::Instant::now();
    let mut subscription = config.subscribe();
    let waited = tokio::time::timeout(
        Duration::from_secs(10),
        subscription.wait_for(|snapshot| snapshot.revision() >= revision),
    )
    .await;
    let Ok(Some(snapshot)) = waited else {
        println!("  revision {revision} did not arrive within 10 s");
        return;
    };
    let latency = started.elapsed();
    // Let the callback thread print first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!(
        "  snapshot at revision {}, {:.2} ms after the write returned:",
        snapshot.revision(),
        latency.as_secs_f64() * 1000.0
    );
    for name in names {
        let value = snapshot
            .get(name)
            .map_or_else(|| "(absent)".to_owned(), |v| format!("{v:?}"));
        println!("    {name} = {value}");
    }
}

fn print_snapshot(snapshot: &Snapshot) {
    for (name, value) in snapshot.to_map() {
        let source = snapshot
            .entry(&name)
            .map(|entry| entry.source().to_string())
            .unwrap_or_default();
        println!("    {name:<24} {:<16} {source}", format!("{value:?}"));
    }
}
