//! Secrets never leak: every log line (all crates, TRACE), every `Debug` and `Display`
//! string, errors, health, reports, change notifications and the cache file produced
//! while loading and updating a configuration with a secret password and secret values
//! are searched for the secrets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Captured, put, wait_for_revision};
use etcd_client::{Client, ConnectOptions};
use etcd_dynamic_config::schema::{Kind, Name, Schema};
use etcd_dynamic_config::{EtcdClient, EtcdConfig, EtcdSettings};
use testkit::EtcdMember;

const SECRETS: [&str; 7] = [
    "pw-S3CRET-one",
    "db-S3CRET-two",
    "tok-S3CRET-three",
    "pin-S3CRET-four",
    "lvl-S3CRET-five",
    "db-S3CRET-six",
    "root-S3CRET-seven",
];

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
enum Level {
    Low,
    High,
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct App {
    secret_level: Level,
}

fn schema() -> Schema {
    Schema::builder()
        .discover(true)
        .name(Name::new("password").secret())
        .name(Name::new("api_token").secret())
        .name(Name::new("secret_pin").kind(Kind::Integer).secret())
        .name(Name::new("secret_level").secret())
        .build()
        .unwrap()
}

// The subscriber is the process's (this binary holds this one test): the engine's tasks
// on every worker, the listener threads and the blocking pool all log into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_debug_errors_health_reports_changes_or_the_cache() {
    let sink = Captured::default();
    let logs = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || logs.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let etcd = EtcdMember::start().await;
    let mut setup = etcd.client().await;
    for (key, value) in [
        ("Password", SECRETS[1]),
        ("ApiToken", SECRETS[2]),
        ("SecretPin", SECRETS[3]),
        ("SecretLevel", SECRETS[4]),
        ("LogLevel", "INFO"),
    ] {
        put(&mut setup, &format!("/app/{key}"), value).await;
    }
    testkit::add_reader(&mut setup, "app", SECRETS[0], "/app/").await;
    testkit::enable_auth(&mut setup, SECRETS[6]).await;
    let mut root = Client::connect(
        [etcd.endpoint()],
        Some(ConnectOptions::new().with_user("root", SECRETS[6])),
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.json");
    let settings = EtcdSettings::builder()
        .endpoints(etcd.endpoint())
        .root_key("/app")
        .user("app", SECRETS[0])
        .cache_file(&cache)
        .build()
        .unwrap();
    sink.add("settings", format!("{settings:?}"));
    let config = EtcdConfig::builder()
        .settings(settings.clone())
        .schema(schema())
        .env(|_: &str| None)
        .build()
        .unwrap();
    sink.add("config", format!("{config:?}"));
    let changes = sink.clone();
    let _listener = config.on_change(move |change| changes.add("change", format!("{change:?}")));

    let report = config.start().await.unwrap();
    sink.add("report", format!("{report:?}"));
    for rejection in &report.rejected {
        sink.add("rejection", rejection);
    }
    assert_eq!(report.rejected.len(), 1, "secret_pin does not parse");

    let snapshot = config.snapshot();
    sink.add("snapshot", format!("{snapshot:?}"));
    for (name, entry) in snapshot.iter() {
        sink.add(name, format!("{entry:?}"));
    }
    let error = snapshot.get_as::<u32>("password").unwrap_err();
    sink.add("get_as error", format!("{error} / {error:?}"));
    let error = config.bind::<App>().unwrap_err();
    sink.add("bind error", format!("{error} / {error:?}"));
    assert!(error.to_string().contains("unknown variant"), "{error}");

    let revision = put(&mut root, "/app/Password", SECRETS[5]).await;
    wait_for_revision(&config, revision).await;
    // The listener's thread has told of the change (and logged what it logs).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sink.text().contains(&format!("revision: {revision}")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener heard nothing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let health = config.health();
    sink.add("health", serde_json::to_string(&health).unwrap());
    sink.add("health debug", format!("{health:?}"));

    let wrong = EtcdSettings::builder()
        .endpoints(etcd.endpoint())
        .user("app", "wrong-password")
        .build()
        .unwrap();
    let error = EtcdConfig::builder()
        .settings(wrong)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    sink.add("wrong password", format!("{error} / {error:?}"));

    let client = EtcdClient::with_env(settings, schema(), Arc::new(|_: &str| None)).unwrap();
    sink.add("client", format!("{client:?}"));
    let values = client.get_config([]).await.unwrap();
    sink.add(
        "get_config keys",
        format!("{:?}", values.keys().collect::<Vec<_>>()),
    );

    config.stop().await;
    let cached = std::fs::read_to_string(&cache).expect("the cache file");
    sink.add("cache file", &cached);
    assert!(
        cached.contains("log_level"),
        "the cache holds the other names"
    );

    let everything = sink.text();
    assert!(
        everything.contains("update_applied"),
        "the logs were captured"
    );
    assert!(
        everything.contains("REDACTED"),
        "secrets are shown as redacted"
    );
    for secret in SECRETS {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{}",
            everything
                .lines()
                .filter(|line| line.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    println!(
        "searched {} lines ({} bytes) of logs and printed forms: no secret",
        everything.lines().count(),
        everything.len()
    );
}
