//! The demo: a throwaway etcd, a configuration loaded from it, live updates arriving,
//! and the configuration still serving after etcd stops.
//!
//! Run it with `scripts/demo.sh` (installs etcd when missing) or
//! `cargo run -p etcd-dynamic-config --example demo`. `RUST_LOG=info` shows the
//! library's own log events. `tests/demo.rs` runs [`run`] and checks what it writes.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Txn, TxnOp};
use etcd_dynamic_config::{EtcdConfig, EtcdSettings, Snapshot};
use testkit::EtcdMember;

const PREFIX: &str = "/apps/demo";

/// Where the demo writes its lines: stdout, or a buffer in its test. Shared with the
/// listener, which writes from its own thread.
#[derive(Clone)]
pub struct Out(Arc<Mutex<dyn Write + Send>>);

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Out")
    }
}

impl Out {
    /// Lines to stdout, as `scripts/demo.sh` shows them.
    pub fn stdout() -> Self {
        Self(Arc::new(Mutex::new(std::io::stdout())))
    }

    /// Lines into a buffer, returned beside.
    pub fn buffer() -> (Self, Arc<Mutex<Vec<u8>>>) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        (Self(Arc::new(Mutex::new(Shared(buffer.clone())))), buffer)
    }

    fn line(&self, line: std::fmt::Arguments<'_>) {
        let mut out = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = writeln!(out, "{line}");
    }
}

/// A buffer written through a shared handle.
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

macro_rules! say {
    ($out:expr, $($arg:tt)*) => { $out.line(format_args!($($arg)*)) };
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    run(&Out::stdout()).await
}

/// The whole demo, written to `out`.
pub async fn run(out: &Out) -> Result<(), Box<dyn std::error::Error>> {
    step(out, "Starting a throwaway etcd on a free loopback port");
    let mut etcd = EtcdMember::start().await;
    say!(out, "  etcd is up at {}", etcd.endpoint());
    let mut client = etcd.client().await;

    step(out, &format!("Seeding configuration keys under {PREFIX}"));
    for (key, value) in [
        ("LogLevel", "INFO"),
        ("Database/Host", "db.internal"),
        ("Database/Port", "5432"),
        ("AiHttpTimeoutSeconds", "30"),
        ("Features/NewCheckout", "false"),
    ] {
        client.put(format!("{PREFIX}/{key}"), value, None).await?;
        say!(out, "  put {PREFIX}/{key} = {value}");
    }

    step(
        out,
        "Starting the library: one ranged read, then a watch from the next revision",
    );
    let settings = EtcdSettings::builder()
        .endpoints(etcd.endpoint())
        .root_key(PREFIX)
        .build()?;
    let config = EtcdConfig::builder().settings(settings).build()?;
    let report = config.start().await?;
    say!(
        out,
        "  loaded {} names at revision {}",
        report.loaded,
        report.revision
    );
    print_snapshot(out, &config.snapshot());
    let port: u16 = config.snapshot().get_as("database.port")?;
    say!(out, "  typed read: database.port as u16 = {port}");

    let heard = out.clone();
    let _listener = config.on_change(move |change| {
        for item in &change.changes {
            let show = |value: &Option<etcd_dynamic_config::Value>| {
                value
                    .as_ref()
                    .map_or_else(|| "(absent)".to_owned(), |v| format!("{v:?}"))
            };
            say!(
                heard,
                "  [on_change] rev {}: {} {} -> {}",
                change.revision,
                item.name,
                show(&item.old),
                show(&item.new)
            );
        }
    });

    step(out, "Writing new values while the application runs");
    let revision = put(out, &mut client, "LogLevel", "DEBUG").await?;
    wait_and_show(out, &config, revision, &["log_level"]).await;

    step(
        out,
        "Moving the database in one transaction: host and port change together",
    );
    let txn = Txn::new().and_then(vec![
        TxnOp::put(format!("{PREFIX}/Database/Host"), "db2.internal", None),
        TxnOp::put(format!("{PREFIX}/Database/Port"), "6432", None),
    ]);
    let revision = client.txn(txn).await?.header().map_or(0, |h| h.revision());
    wait_and_show(out, &config, revision, &["database.host", "database.port"]).await;

    step(
        out,
        "Writing a value that does not parse: rejected, the last good value keeps serving",
    );
    let revision = put(out, &mut client, "AiHttpTimeoutSeconds", "abc").await?;
    wait_and_show(out, &config, revision, &["ai_http_timeout_seconds"]).await;
    for rejection in config.rejections() {
        say!(out, "  rejected: {rejection}");
    }

    step(out, "Adding a key after start, then deleting one");
    let revision = put(out, &mut client, "Features/FastSearch", "true").await?;
    wait_and_show(out, &config, revision, &["features.fast_search"]).await;
    let revision = client
        .delete(format!("{PREFIX}/Features/NewCheckout"), None)
        .await?
        .header()
        .map_or(0, |h| h.revision());
    wait_and_show(out, &config, revision, &["features.new_checkout"]).await;

    step(
        out,
        "Stopping etcd: the application keeps serving the last good configuration",
    );
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let snapshot = config.snapshot();
    say!(
        out,
        "  etcd is down; reads still answer from memory (revision {}):",
        snapshot.revision()
    );
    print_snapshot(out, &snapshot);
    let health = config.health();
    say!(
        out,
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

    step(
        out,
        "Restarting etcd: the watch resumes from the last applied revision + 1",
    );
    etcd.restart().await;
    let mut client = etcd.client().await;
    let revision = put(out, &mut client, "LogLevel", "WARN").await?;
    wait_and_show(out, &config, revision, &["log_level"]).await;
    let health = config.health();
    say!(
        out,
        "  health: {:?}, revision {}, confirmed to hold etcd's head (revision {}) {:.1} s ago",
        health.state,
        health.revision,
        health.confirmed_revision.unwrap_or_default(),
        health.seconds_since_confirmed.unwrap_or_default()
    );

    config.stop().await;
    step(out, "Done");
    Ok(())
}

fn step(out: &Out, title: &str) {
    say!(out, "\n== {title}");
}

async fn put(
    out: &Out,
    client: &mut Client,
    key: &str,
    value: &str,
) -> Result<i64, etcd_client::Error> {
    say!(out, "  put {PREFIX}/{key} = {value}");
    let response = client.put(format!("{PREFIX}/{key}"), value, None).await?;
    Ok(response.header().map_or(0, |header| header.revision()))
}

async fn wait_and_show(out: &Out, config: &EtcdConfig, revision: i64, names: &[&str]) {
    let started = std::time::Instant::now();
    let mut subscription = config.subscribe();
    let waited = tokio::time::timeout(
        Duration::from_secs(10),
        subscription.wait_for(|snapshot| snapshot.revision() >= revision),
    )
    .await;
    let Ok(Some(snapshot)) = waited else {
        say!(out, "  revision {revision} did not arrive within 10 s");
        return;
    };
    let latency = started.elapsed();
    // Let the callback thread print first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    say!(
        out,
        "  snapshot at revision {}, {:.2} ms after the write returned:",
        snapshot.revision(),
        latency.as_secs_f64() * 1000.0
    );
    for name in names {
        let value = snapshot
            .get(name)
            .map_or_else(|| "(absent)".to_owned(), |v| format!("{v:?}"));
        say!(out, "    {name} = {value}");
    }
}

fn print_snapshot(out: &Out, snapshot: &Snapshot) {
    for (name, value) in snapshot.to_map() {
        let source = snapshot
            .entry(&name)
            .map(|entry| entry.source().to_string())
            .unwrap_or_default();
        say!(out, "    {name:<24} {:<16} {source}", format!("{value:?}"));
    }
}
