//! The Python README's Quick Start with the built-in ControlUnit configuration.
//!
//! ```sh
//! export EtcdSettings__HostName=http://127.0.0.1:2379
//! export EtcdSettings__RootKey=/APPS/ControlUnit      # the default
//! cargo run -p etcd-dynamic-config --example control_unit
//! ```
//!
//! With `USE_LOCAL_CONFIG=true` the values come from env vars (`CATEGORIZATION_API_URL`,
//! `POSTGRES_DSN`, `LOG_LEVEL`, ...) and etcd is never contacted.

use std::collections::BTreeMap;

use etcd_dynamic_config::{Error, EtcdClient, EtcdConfig, etcd_config};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The process-wide instance, like the Python `etcd_config`.
    let config = etcd_config()?;
    quick_start(config).await?;
    if !config.snapshot().is_empty() && std::env::var("USE_LOCAL_CONFIG").as_deref() != Ok("true") {
        low_level(&EtcdClient::control_unit()?).await?;
    }
    Ok(())
}

/// Starts the configuration, prints two values as the Python example does, and returns
/// every value as printable text (secrets masked).
pub async fn quick_start(config: &EtcdConfig) -> Result<BTreeMap<String, String>, Error> {
    let report = config.start().await?;
    println!(
        "loaded {} names from {:?} at revision {}",
        report.loaded, report.source, report.revision
    );
    for rejection in &report.rejected {
        println!("rejected {rejection}");
    }
    let snapshot = config.snapshot();
    let shown: BTreeMap<String, String> = snapshot
        .iter()
        .map(|(name, entry)| {
            let text = if entry.is_secret() {
                "********".to_owned()
            } else {
                entry.value().to_string()
            };
            (name.to_owned(), text)
        })
        .collect();
    let show = |name: &str| shown.get(name).map_or("(not set)", String::as_str);
    println!("Database URL: {}", show("postgres_dsn"));
    println!("API URL: {}", show("categorization_api_url"));
    config.stop().await;
    Ok(shown)
}

/// The low-level client: the key map and a direct read of one key.
pub async fn low_level(client: &EtcdClient) -> Result<Option<String>, Error> {
    let key_map = client.key_map();
    println!(
        "Available config names: {:?}",
        key_map.values().collect::<Vec<_>>()
    );
    let key = format!("{}LogLevel", client.prefix());
    let values = client.get_values_by_keys(&[key.as_str()]).await?;
    let level = values.get(&key).cloned();
    println!("Log level: {}", level.as_deref().unwrap_or("(not set)"));
    Ok(level)
}
