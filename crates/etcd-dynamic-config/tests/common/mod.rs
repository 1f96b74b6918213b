//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use etcd_dynamic_config::announce::InstanceRecord;
use etcd_dynamic_config::schema::naming::name_from_path;
use etcd_dynamic_config::{EtcdClient, EtcdConfig, EtcdSettings, Snapshot};

/// How long a test waits for the configuration to catch up before it fails.
pub const CATCH_UP: Duration = Duration::from_secs(30);

/// A configuration of `prefix` on `endpoints`, auto-discovering names.
pub fn config(endpoints: &[String], prefix: &str) -> EtcdConfig {
    let settings = EtcdSettings::builder()
        .endpoints(endpoints.join(","))
        .root_key(prefix)
        .build()
        .expect("valid settings");
    EtcdConfig::builder()
        .settings(settings)
        .build()
        .expect("valid configuration")
}

/// A configuration of `prefix` that discovers every key and reads `pool_size` as an
/// integer, with an empty environment.
pub fn pool_config(endpoint: &str, prefix: &str) -> EtcdConfig {
    let schema = etcd_dynamic_config::Schema::builder()
        .discover(true)
        .name(
            etcd_dynamic_config::schema::Name::new("pool_size")
                .kind(etcd_dynamic_config::schema::Kind::Integer),
        )
        .build()
        .expect("valid schema");
    EtcdConfig::builder()
        .settings(
            EtcdSettings::builder()
                .endpoints(endpoint)
                .root_key(prefix)
                .build()
                .expect("valid settings"),
        )
        .schema(schema)
        .env(|_: &str| None)
        .build()
        .expect("valid configuration")
}

/// Waits until the configuration's snapshot reaches `revision`.
///
/// # Panics
///
/// After [`CATCH_UP`], with the revision reached.
pub async fn wait_for_revision(config: &EtcdConfig, revision: i64) -> Arc<Snapshot> {
    let mut subscription = config.subscribe();
    tokio::time::timeout(
        CATCH_UP,
        subscription.wait_for(|snapshot| snapshot.revision() >= revision),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the snapshot did not reach revision {revision} within {CATCH_UP:?}; it is at {}",
            config.snapshot().revision()
        )
    })
    .expect("configuration alive")
}

/// The names and values etcd holds under `prefix` at `revision`, mapped like the
/// library's auto-discovery: the reference a snapshot is compared with.
pub async fn etcd_state(
    client: &mut Client,
    prefix: &str,
    revision: i64,
) -> BTreeMap<String, String> {
    let dir = format!("{prefix}/");
    let response = client
        .get(
            dir.as_str(),
            Some(GetOptions::new().with_prefix().with_revision(revision)),
        )
        .await
        .expect("range read");
    let mut state = BTreeMap::new();
    for kv in response.kvs() {
        let key = kv.key_str().expect("utf-8 key");
        if let Some(name) = name_from_path(&key[dir.len()..]) {
            state
                .entry(name)
                .or_insert_with(|| kv.value_str().expect("utf-8 value").to_owned());
        }
    }
    state
}

/// A snapshot's names and values as text.
pub fn values(snapshot: &Snapshot) -> BTreeMap<String, String> {
    snapshot
        .to_map()
        .into_iter()
        .map(|(name, value)| (name, value.to_string()))
        .collect()
}

/// Puts `key = value` and returns the revision of the write.
pub async fn put(client: &mut Client, key: &str, value: &str) -> i64 {
    client
        .put(key, value, None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision()
}

/// An environment holding only `vars`.
pub fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
    let vars: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    move |name| vars.get(name).cloned()
}

/// Collects what a log writer (or a test) writes, for searching afterwards.
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Appends `label: text` as a line.
    pub fn add(&self, label: &str, text: impl std::fmt::Display) {
        use std::io::Write as _;
        writeln!(self.0.lock().unwrap(), "{label}: {text}").unwrap();
    }

    /// Every line parsed as JSON.
    ///
    /// # Panics
    ///
    /// On a line that is not JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    /// The JSON lines whose `event` is `name`.
    pub fn events(&self, name: &str) -> Vec<serde_json::Value> {
        self.json_lines()
            .into_iter()
            .filter(|line| line["event"] == name)
            .collect()
    }
}

/// A plain HTTP/1.1 GET on the loopback port (etcd serves `/metrics` on its client port).
pub async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("etcd answers within 10 s")
    .expect("read");
    response
}

/// Polls the fleet's records until `done` holds of them.
///
/// # Panics
///
/// After 10 s, saying `what` it waited for, with the records.
pub async fn fleet_until(
    client: &EtcdClient,
    what: &str,
    done: impl Fn(&[InstanceRecord]) -> bool,
) -> Vec<InstanceRecord> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fleet = client.fleet().await.expect("fleet");
        if done(&fleet.instances) {
            return fleet.instances;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {:#?}",
            fleet.instances
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
