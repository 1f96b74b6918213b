//! The Python README's custom client: a `BaseEtcdClient` subclass with its own prefix,
//! key map, env var map and coercion, as a Rust trait with default methods.
//!
//! ```sh
//! USE_LOCAL_CONFIG=true MYAPP_DATABASE_URL=postgres://localhost/app \
//!     cargo run -p etcd-dynamic-config --example custom_coercion
//! ```

use std::collections::BTreeMap;

use etcd_dynamic_config::schema::{ConfigSchema, Schema};
use etcd_dynamic_config::{Error, EtcdClient, EtcdSettings, Value};

/// `MyServiceClient(BaseEtcdClient)` of the Python README.
#[derive(Debug)]
pub struct MyService;

impl ConfigSchema for MyService {
    fn config_prefix(&self) -> Option<String> {
        Some("/services/my-service".into())
    }

    fn etcd_key_map(&self) -> BTreeMap<String, String> {
        let base = "/services/my-service";
        [
            ("DatabaseUrl", "database_url"),
            ("RedisUrl", "redis_url"),
            ("ApiKey", "api_key"),
            ("MaxWorkers", "max_workers"),
        ]
        .into_iter()
        .map(|(key, name)| (format!("{base}/{key}"), name.to_owned()))
        .collect()
    }

    fn env_var_map(&self) -> BTreeMap<String, String> {
        [
            ("database_url", "MYAPP_DATABASE_URL"),
            ("redis_url", "MYAPP_REDIS_URL"),
            ("api_key", "MYAPP_API_KEY"),
            ("max_workers", "MYAPP_MAX_WORKERS"),
        ]
        .into_iter()
        .map(|(name, env)| (name.to_owned(), env.to_owned()))
        .collect()
    }

    /// `int(value) if value else 4` for `max_workers`, without the Python original's
    /// silent fallback: text that is not a number is rejected.
    fn coerce(&self, name: &str, text: &str) -> Option<Result<Value, String>> {
        if name != "max_workers" {
            return None; // the default coercion for every other name
        }
        let text = text.trim();
        Some(if text.is_empty() {
            Ok(Value::Integer(4))
        } else {
            text.parse::<i64>()
                .map(Value::Integer)
                .map_err(|_| "max_workers must be a whole number of workers".to_owned())
        })
    }
}

/// The schema, with the api key kept secret.
pub fn schema() -> Schema {
    Schema::from_trait(MyService)
        .name(etcd_dynamic_config::schema::Name::new("api_key").secret())
        .build()
        .expect("the MyService schema is valid")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = EtcdClient::new(EtcdSettings::from_env()?, schema())?;
    run(&client).await?;
    Ok(())
}

/// Reads the configuration once, as `client.get_config()` does in Python.
pub async fn run(client: &EtcdClient) -> Result<BTreeMap<String, Value>, Error> {
    let config = client.get_config([]).await?;
    for (name, value) in &config {
        let shown = if name == "api_key" {
            "********".to_owned()
        } else {
            value.to_string()
        };
        println!("{name} = {shown}");
    }
    Ok(config)
}
