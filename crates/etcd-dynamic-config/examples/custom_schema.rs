//! The Python README's custom schema: MyApp keys mapped to names, env vars, kinds,
//! defaults and validation, declared with the builder; prints the configuration and the
//! documentation table the Python README asks users to write by hand.
//!
//! ```sh
//! export EtcdSettings__HostName=http://127.0.0.1:2379
//! cargo run -p etcd-dynamic-config --example custom_schema
//! ```

use std::sync::Arc;

use etcd_dynamic_config::schema::{Kind, Name, Schema};
use etcd_dynamic_config::{Error, EtcdConfig};

/// The MyApp schema under `/myapp/production`.
pub fn my_app_schema() -> Schema {
    Schema::builder()
        .prefix("/myapp/production")
        .name(
            Name::new("db_host")
                .key("Database/Host")
                .env("MYAPP_DB_HOST")
                .default("localhost")
                .describe("Database host"),
        )
        .name(
            Name::new("db_port")
                .key("Database/Port")
                .env("MYAPP_DB_PORT")
                .kind(Kind::Integer)
                .default(5432)
                .range(1, 65535)
                .describe("Database port"),
        )
        .name(
            Name::new("db_name")
                .key("Database/Name")
                .env("MYAPP_DB_NAME")
                .describe("Database name"),
        )
        .name(
            Name::new("redis_url")
                .key("Cache/RedisUrl")
                .env("MYAPP_REDIS_URL")
                .describe("Redis connection URL"),
        )
        .name(
            Name::new("api_secret")
                .key("API/SecretKey")
                .env("MYAPP_API_SECRET")
                .secret()
                .required()
                .describe("API signing secret"),
        )
        .name(
            Name::new("enable_cache")
                .key("Features/EnableCache")
                .env("MYAPP_ENABLE_CACHE")
                .kind(Kind::Bool)
                .default(false)
                .describe("Enable caching"),
        )
        .name(
            Name::new("log_level")
                .key("Monitoring/LogLevel")
                .env("MYAPP_LOG_LEVEL")
                .default("INFO")
                .one_of(["DEBUG", "INFO", "WARNING", "ERROR"])
                .describe("Application log level"),
        )
        .build()
        .expect("the MyApp schema is valid")
}

/// The typed view of the MyApp configuration.
#[derive(Debug, serde::Deserialize)]
pub struct MyApp {
    /// Database host.
    pub db_host: String,
    /// Database port.
    pub db_port: u16,
    /// Whether the cache is on.
    pub enable_cache: bool,
    /// Log level.
    pub log_level: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = EtcdConfig::builder().schema(my_app_schema()).build()?;
    run(&config).await?;
    config.stop().await;
    Ok(())
}

/// Starts the configuration, prints it, and returns its typed view.
pub async fn run(config: &EtcdConfig) -> Result<Arc<MyApp>, Error> {
    config.start().await?;
    let snapshot = config.snapshot();
    for (name, value) in config.get_all_configs() {
        let secret = snapshot.entry(&name).is_some_and(|entry| entry.is_secret());
        let shown = if secret {
            "********".to_owned()
        } else {
            value.to_string()
        };
        let source = snapshot
            .entry(&name)
            .map(|entry| entry.source().to_string());
        println!("{name:<14} {shown:<22} {}", source.unwrap_or_default());
    }
    let app = config.bind::<MyApp>()?.load_full();
    println!("typed: {app:?}");
    println!("\n{}", config.schema().markdown_table("/myapp/production"));
    Ok(app)
}
