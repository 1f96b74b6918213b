//! Schemas against real etcd: the Python README's examples (compiled in from
//! `examples/`), coercion errors, fallbacks, local mode, checks and typed bindings.

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/control_unit.rs"]
mod control_unit;
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/custom_coercion.rs"]
mod custom_coercion;
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/custom_schema.rs"]
mod custom_schema;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env, put, wait_for_revision};
use etcd_client::{Client, Txn, TxnOp};
use etcd_dynamic_config::schema::{Check, Kind, Name, Schema};
use etcd_dynamic_config::{
    Error, EtcdClient, EtcdConfig, EtcdSettings, Source, StartSource, Value, ValueRef,
};
use testkit::EtcdMember;

fn settings(endpoint: &str) -> EtcdSettings {
    EtcdSettings::builder().endpoints(endpoint).build().unwrap()
}

fn config(endpoint: &str, schema: Schema, vars: &[(&str, &str)]) -> EtcdConfig {
    EtcdConfig::builder()
        .settings(settings(endpoint))
        .schema(schema)
        .env(env(vars))
        .build()
        .unwrap()
}

/// A loopback URL nothing listens on: proof that local mode never connects.
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// Polls `condition` for up to ten seconds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn seed(client: &mut Client, prefix: &str, pairs: &[(&str, &str)]) -> i64 {
    let mut revision = 0;
    for (key, value) in pairs {
        revision = put(client, &format!("{prefix}/{key}"), value).await;
    }
    revision
}

#[tokio::test]
async fn the_control_unit_example_reads_etcd_and_masks_secrets() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    seed(
        &mut client,
        "/APPS/ControlUnit",
        &[
            ("CategorizationApiUrl", "http://categorize:8000"),
            ("PostgresDsn", "postgresql://user:pa55@db:5432/app"),
            ("LogLevel", "INFO"),
            ("AiHttpTimeoutSeconds", "30"),
            ("AiHttpMaxConnections", "10"),
        ],
    )
    .await;
    let config = config(&etcd.endpoint(), Schema::control_unit(), &[]);
    let shown = control_unit::quick_start(&config).await.unwrap();
    assert_eq!(shown["categorization_api_url"], "http://categorize:8000");
    assert_eq!(shown["postgres_dsn"], "********");
    assert_eq!(shown["ai_http_timeout_seconds"], "30.0");
    assert_eq!(
        config.snapshot().get("ai_http_max_connections"),
        Some(ValueRef::Integer(10))
    );
    assert!(config.snapshot().entry("postgres_dsn").unwrap().is_secret());

    let low_level = EtcdClient::with_env(
        settings(&etcd.endpoint()),
        Schema::control_unit(),
        Arc::new(env(&[])),
    )
    .unwrap();
    assert_eq!(
        control_unit::low_level(&low_level)
            .await
            .unwrap()
            .as_deref(),
        Some("INFO")
    );
    assert_eq!(
        low_level
            .key_map()
            .get("/APPS/ControlUnit/PostgresDsn")
            .map(String::as_str),
        Some("postgres_dsn")
    );
}

/// The Python original turns `AiHttpTimeoutSeconds = "abc"` into 60.0 without a word.
/// Here the value is rejected and reported with its key, revision and reason, and the
/// name keeps its last good value.
#[tokio::test]
async fn a_value_that_does_not_parse_is_rejected_not_replaced_by_a_made_up_number() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    let bad_revision = seed(
        &mut client,
        "/APPS/ControlUnit",
        &[("AiHttpTimeoutSeconds", "abc")],
    )
    .await;
    let config = config(&etcd.endpoint(), Schema::control_unit(), &[]);
    let report = config.start().await.unwrap();

    assert_eq!(report.rejected.len(), 1);
    let rejection = &report.rejected[0];
    assert_eq!(&*rejection.name, "ai_http_timeout_seconds");
    assert_eq!(
        rejection.source,
        Source::Etcd {
            key: Arc::from("/APPS/ControlUnit/AiHttpTimeoutSeconds"),
            mod_revision: bad_revision
        }
    );
    assert!(
        rejection.reason.contains("expected a number"),
        "{}",
        rejection.reason
    );
    assert_eq!(
        rejection.to_string(),
        format!(
            "ai_http_timeout_seconds: {} (etcd key /APPS/ControlUnit/AiHttpTimeoutSeconds @ rev {bad_revision})",
            rejection.reason
        )
    );
    assert_eq!(
        config.snapshot().get("ai_http_timeout_seconds"),
        None,
        "no 60.0 out of thin air"
    );
    assert!(
        report
            .missing
            .contains(&"ai_http_timeout_seconds".to_owned())
    );
    assert_eq!(config.rejections(), report.rejected);

    // A good value is applied, a bad one rejected while the good one keeps serving, and a
    // later good one applied again.
    let key = "/APPS/ControlUnit/AiHttpTimeoutSeconds";
    let revision = put(&mut client, key, "45").await;
    let snapshot = wait_for_revision(&config, revision).await;
    assert_eq!(
        snapshot.get("ai_http_timeout_seconds"),
        Some(ValueRef::Float(45.0))
    );
    assert!(config.rejections().is_empty());

    let revision = put(&mut client, key, "forty").await;
    let snapshot = wait_for_revision(&config, revision).await;
    assert_eq!(
        snapshot.get("ai_http_timeout_seconds"),
        Some(ValueRef::Float(45.0))
    );
    let rejections = config.rejections();
    assert_eq!(rejections.len(), 1);
    assert!(matches!(
        &rejections[0].source,
        Source::Etcd { mod_revision, .. } if *mod_revision == revision
    ));

    let revision = put(&mut client, key, "50").await;
    let snapshot = wait_for_revision(&config, revision).await;
    assert_eq!(
        snapshot.get("ai_http_timeout_seconds"),
        Some(ValueRef::Float(50.0))
    );
    assert!(config.rejections().is_empty());
    config.stop().await;
}

#[tokio::test]
async fn local_mode_reads_env_vars_only_and_never_connects() {
    let settings = EtcdSettings::from_lookup(env(&[
        ("USE_LOCAL_CONFIG", "true"),
        ("EtcdSettings__HostName", &dead_endpoint()),
    ]))
    .unwrap();
    let config = EtcdConfig::builder()
        .settings(settings)
        .schema(Schema::control_unit())
        .env(env(&[
            ("CATEGORIZATION_API_URL", "http://localhost:8000"),
            ("POSTGRES_DSN", "postgresql://user:pass@localhost:5432/db"),
            ("LOG_LEVEL", "DEBUG"),
            ("AI_HTTP_TIMEOUT_SECONDS", "abc"),
        ]))
        .build()
        .unwrap();
    let started = Instant::now();
    let shown = control_unit::quick_start(&config).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no connection attempt"
    );
    assert_eq!(shown["categorization_api_url"], "http://localhost:8000");
    assert_eq!(shown["log_level"], "DEBUG");
    assert_eq!(shown["postgres_dsn"], "********");
    assert!(!shown.contains_key("ai_http_timeout_seconds"));
    let rejections = config.rejections();
    assert_eq!(rejections.len(), 1);
    assert_eq!(
        rejections[0].source,
        Source::Env {
            var: Arc::from("AI_HTTP_TIMEOUT_SECONDS")
        }
    );
    let snapshot = config.snapshot();
    let entry = snapshot.entry("log_level").unwrap();
    assert_eq!(
        entry.source(),
        Source::Env {
            var: Arc::from("LOG_LEVEL")
        }
    );
}

#[tokio::test]
async fn the_custom_schema_example_maps_keys_env_vars_and_defaults() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    seed(
        &mut client,
        "/myapp/production",
        &[
            ("Database/Host", "db.internal"),
            ("Database/Port", "6432"),
            ("API/SecretKey", "s3cr3t"),
            ("Features/EnableCache", "yes"),
            ("Unmapped/Key", "ignored"),
        ],
    )
    .await;
    let config = config(
        &etcd.endpoint(),
        custom_schema::my_app_schema(),
        &[
            ("MYAPP_REDIS_URL", "redis://cache:6379"),
            ("MYAPP_DB_HOST", "db.env"),
        ],
    );
    let app = custom_schema::run(&config).await.unwrap();
    assert_eq!(app.db_host, "db.internal");
    assert_eq!(app.db_port, 6432);
    assert!(app.enable_cache);
    assert_eq!(app.log_level, "INFO", "the default");
    let snapshot = config.snapshot();
    assert_eq!(
        snapshot.get("redis_url"),
        Some(ValueRef::String("redis://cache:6379"))
    );
    assert_eq!(snapshot.get("unmapped.key"), None, "only mapped keys load");
    assert_eq!(snapshot.get("db_name"), None);

    // A deleted key falls back to its env var, then a new value arrives.
    let revision = client
        .delete("/myapp/production/Database/Host", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let snapshot = wait_for_revision(&config, revision).await;
    let entry = snapshot.entry("db_host").unwrap();
    assert_eq!(entry.value(), ValueRef::String("db.env"));
    assert_eq!(
        entry.source(),
        Source::Env {
            var: Arc::from("MYAPP_DB_HOST")
        }
    );
    config.stop().await;
}

#[tokio::test]
async fn a_required_name_missing_everywhere_fails_start() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    seed(&mut client, "/myapp/production", &[("Database/Host", "db")]).await;
    let config = config(&etcd.endpoint(), custom_schema::my_app_schema(), &[]);
    let error = config.start().await.unwrap_err();
    assert!(
        matches!(&error, Error::Invalid { reasons } if reasons == &["required name api_secret has no value"]),
        "{error}"
    );
    // The env var is a source too.
    let config = self::config(
        &etcd.endpoint(),
        custom_schema::my_app_schema(),
        &[("MYAPP_API_SECRET", "from-env")],
    );
    let report = config.start().await.unwrap();
    assert_eq!(report.source, StartSource::Etcd);
    config.stop().await;
}

#[tokio::test]
async fn the_custom_coercion_example_in_local_mode_and_against_etcd() {
    let local = EtcdSettings::builder()
        .endpoints(dead_endpoint())
        .use_local_config(true)
        .build()
        .unwrap();
    let client = EtcdClient::with_env(
        local,
        custom_coercion::schema(),
        Arc::new(env(&[
            ("MYAPP_DATABASE_URL", "postgres://localhost/app"),
            ("MYAPP_MAX_WORKERS", ""),
        ])),
    )
    .unwrap();
    let config = custom_coercion::run(&client).await.unwrap();
    assert_eq!(
        config["database_url"],
        Value::from("postgres://localhost/app")
    );
    assert_eq!(
        config["max_workers"],
        Value::Integer(4),
        "empty means 4, as in Python"
    );

    let etcd = EtcdMember::start().await;
    let mut etcd_client = etcd.client().await;
    seed(
        &mut etcd_client,
        "/services/my-service",
        &[("MaxWorkers", "8"), ("ApiKey", "k3y")],
    )
    .await;
    let client = EtcdClient::with_env(
        settings(&etcd.endpoint()),
        custom_coercion::schema(),
        Arc::new(env(&[])),
    )
    .unwrap();
    let config = custom_coercion::run(&client).await.unwrap();
    assert_eq!(config["max_workers"], Value::Integer(8));
    assert_eq!(config["api_key"], Value::from("k3y"));

    put(&mut etcd_client, "/services/my-service/MaxWorkers", "many").await;
    let config = client
        .get_config([("max_workers".to_owned(), Value::Integer(2))])
        .await
        .unwrap();
    assert_eq!(
        config["max_workers"],
        Value::Integer(2),
        "the rejected value is not used; the caller's default is"
    );
}

#[tokio::test]
async fn a_check_rejects_a_transaction_as_a_whole_then_accepts_the_fix() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    seed(&mut client, "/pool", &[("MinPool", "1"), ("MaxPool", "5")]).await;
    let schema = Schema::builder()
        .name(Name::new("min_pool").kind(Kind::Integer))
        .name(Name::new("max_pool").kind(Kind::Integer))
        .check(Check::compare("min_pool", "<=", "max_pool").unwrap())
        .discover(true)
        .build()
        .unwrap();
    let config = EtcdConfig::builder()
        .settings(settings(&etcd.endpoint()))
        .schema(schema)
        .prefix("/pool")
        .env(env(&[]))
        .build()
        .unwrap();
    config.start().await.unwrap();
    let good = config.snapshot();

    let both = |min: &str, max: &str| {
        Txn::new().and_then(vec![
            TxnOp::put("/pool/MinPool", min, None),
            TxnOp::put("/pool/MaxPool", max, None),
        ])
    };
    let bad_revision = client
        .txn(both("9", "6"))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    eventually("the bad revision to be rejected", || {
        config
            .rejected_revision()
            .is_some_and(|r| r.revision == bad_revision)
    })
    .await;
    let rejection = config.rejected_revision().unwrap();
    assert_eq!(rejection.reasons, ["min_pool <= max_pool does not hold"]);
    let serving = config.snapshot();
    assert_eq!(
        serving.revision(),
        good.revision(),
        "the last good snapshot serves"
    );
    assert_eq!(serving.get("min_pool"), Some(ValueRef::Integer(1)));
    assert_eq!(serving.get("max_pool"), Some(ValueRef::Integer(5)));

    let fixed = client
        .txn(both("2", "6"))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let snapshot = wait_for_revision(&config, fixed).await;
    assert_eq!(snapshot.get("min_pool"), Some(ValueRef::Integer(2)));
    assert_eq!(snapshot.get("max_pool"), Some(ValueRef::Integer(6)));
    assert!(config.rejected_revision().is_none());
    config.stop().await;
}

#[derive(Debug, serde::Deserialize, PartialEq)]
enum Level {
    #[serde(rename = "DEBUG")]
    Debug,
    #[serde(rename = "INFO")]
    Info,
}

#[derive(Debug, serde::Deserialize)]
struct Database {
    host: String,
    port: u16,
}

#[derive(Debug, serde::Deserialize)]
struct Service {
    log_level: Level,
    database: Database,
    request_timeout: Duration,
}

#[tokio::test]
async fn a_typed_binding_follows_revisions_and_keeps_the_last_that_reads() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    seed(
        &mut client,
        "/svc",
        &[
            ("LogLevel", "INFO"),
            ("Database/Host", "db"),
            ("Database/Port", "5432"),
            ("RequestTimeout", "1m 30s"),
        ],
    )
    .await;
    let schema = Schema::builder()
        .name(Name::new("request_timeout").kind(Kind::Duration))
        .discover(true)
        .build()
        .unwrap();
    let config = EtcdConfig::builder()
        .settings(settings(&etcd.endpoint()))
        .schema(schema)
        .prefix("/svc")
        .env(env(&[]))
        .build()
        .unwrap();
    config.start().await.unwrap();
    let binding = config.bind::<Service>().unwrap();
    let service = binding.load();
    assert_eq!(service.log_level, Level::Info);
    assert_eq!(service.database.host, "db");
    assert_eq!(service.database.port, 5432);
    assert_eq!(service.request_timeout, Duration::from_secs(90));

    let revision = put(&mut client, "/svc/Database/Port", "6432").await;
    wait_for_revision(&config, revision).await;
    eventually("the binding to follow", || {
        binding.load().database.port == 6432
    })
    .await;

    // WARNING is fine for the schema, not for the type: the binding keeps what it had.
    let revision = put(&mut client, "/svc/LogLevel", "WARNING").await;
    wait_for_revision(&config, revision).await;
    eventually("the bind error", || binding.last_error().is_some()).await;
    assert_eq!(binding.load().log_level, Level::Info);
    assert!(binding.last_error().unwrap().contains("unknown variant"));

    let revision = put(&mut client, "/svc/LogLevel", "DEBUG").await;
    wait_for_revision(&config, revision).await;
    eventually("the binding to recover", || {
        binding.load().log_level == Level::Debug
    })
    .await;
    assert!(binding.last_error().is_none());
    config.stop().await;
}

#[test]
fn the_process_wide_instance_is_the_control_unit_configuration() {
    let config = etcd_dynamic_config::etcd_config().expect("the test environment is valid");
    assert_eq!(config.prefix(), "/APPS/ControlUnit/");
    assert!(config.schema().is_secret("postgres_dsn"));
    // The ControlUnit schema itself, not a name that merely looks secret.
    let declared = config.schema().declared("postgres_dsn").expect("declared");
    assert!(declared.is_secret());
    assert_eq!(
        config.schema().names().count(),
        etcd_dynamic_config::Schema::control_unit().names().count()
    );
    assert!(
        std::ptr::eq(config, etcd_dynamic_config::etcd_config().unwrap()),
        "one instance"
    );
}
