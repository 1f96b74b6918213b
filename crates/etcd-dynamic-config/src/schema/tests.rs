use std::collections::HashMap;

use super::*;
use crate::snapshot::tests::snapshot_of;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| vars.get(name).cloned()
}

fn schema_error(result: Result<Schema>) -> (String, String) {
    match result {
        Err(Error::Schema { what, reason }) => (what, reason),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

/// The MyApp schema of the Python README, declared with the builder.
fn my_app() -> Schema {
    Schema::builder()
        .prefix("/myapp/production")
        .name(
            Name::new("db_host")
                .key("Database/Host")
                .env("MYAPP_DB_HOST")
                .default("localhost"),
        )
        .name(
            Name::new("db_port")
                .key("Database/Port")
                .env("MYAPP_DB_PORT")
                .default(5432)
                .range(1, 65535),
        )
        .name(
            Name::new("redis_url")
                .key("Cache/RedisUrl")
                .env("MYAPP_REDIS_URL"),
        )
        .name(
            Name::new("api_secret")
                .key("API/SecretKey")
                .secret()
                .required(),
        )
        .name(
            Name::new("enable_cache")
                .key("Features/EnableCache")
                .kind(Kind::Bool)
                .default(false),
        )
        .name(
            Name::new("log_level")
                .key("Monitoring/LogLevel")
                .default("INFO")
                .one_of(["DEBUG", "INFO", "WARNING", "ERROR"]),
        )
        .build()
        .unwrap()
}

#[test]
fn coercion_uses_the_declared_or_inferred_kind_and_the_validators() {
    let schema = my_app();
    assert_eq!(
        schema.coerce("db_port", b"6432").unwrap(),
        Value::Integer(6432)
    );
    assert_eq!(
        schema.coerce("db_port", b"70000").unwrap_err(),
        "out of range: must be between 1 and 65535"
    );
    assert!(
        schema
            .coerce("db_port", b"ten")
            .unwrap_err()
            .contains("expected an integer")
    );
    assert_eq!(
        schema.coerce("enable_cache", b"on").unwrap(),
        Value::Bool(true)
    );
    assert!(
        schema
            .coerce("log_level", b"LOUD")
            .unwrap_err()
            .contains("one of")
    );
    // Undeclared names follow the naming rules.
    assert_eq!(
        schema.coerce("ai_http_timeout_seconds", b"2.5").unwrap(),
        Value::Float(2.5)
    );
    assert!(
        schema
            .coerce("ai_http_timeout_seconds", b"abc")
            .unwrap_err()
            .contains("expected a number")
    );
    assert!(
        schema
            .coerce("x", &[0xff])
            .unwrap_err()
            .contains("not UTF-8")
    );
}

#[test]
fn fallbacks_come_from_env_vars_then_defaults() {
    let schema = my_app();
    let (entries, rejected) = schema.fallback(&env(&[
        ("MYAPP_DB_HOST", "db.env"),
        ("MYAPP_DB_PORT", "not-a-port"),
        ("API_SECRET", "s3cret"),
    ]));
    let value = |name: &str| entries.get(name).map(|entry| entry.value().to_value());
    assert_eq!(value("db_host"), Some(Value::from("db.env")));
    assert_eq!(
        entries.get("db_host").unwrap().source(),
        Source::Env {
            var: Arc::from("MYAPP_DB_HOST")
        }
    );
    assert_eq!(
        value("db_port"),
        Some(Value::Integer(5432)),
        "a bad env var falls to the default"
    );
    assert_eq!(entries.get("db_port").unwrap().source(), Source::Default);
    assert_eq!(value("api_secret"), Some(Value::from("s3cret")));
    assert!(entries.get("api_secret").unwrap().is_secret());
    assert_eq!(value("redis_url"), None);
    assert_eq!(rejected.len(), 1);
    assert_eq!(&*rejected[0].name, "db_port");
    assert!(!rejected[0].reason.contains("not-a-port"));
}

#[test]
fn env_vars_default_to_the_upper_cased_name() {
    let schema = Schema::auto_discover();
    assert_eq!(
        schema.env_var("categorization_api_url"),
        "CATEGORIZATION_API_URL"
    );
    assert_eq!(schema.env_var("database.max_pool"), "DATABASE__MAX_POOL");
    assert_eq!(my_app().env_var("db_host"), "MYAPP_DB_HOST");
}

#[test]
fn explicit_keys_load_only_those_keys() {
    let schema = Arc::new(my_app());
    let keys = schema.bind("/myapp/production").unwrap();
    assert_eq!(
        keys.name_for("/myapp/production/Database/Port").as_deref(),
        Some("db_port")
    );
    assert_eq!(keys.name_for("/myapp/production/Other/Key"), None);

    let discovering = Arc::new(
        Schema::builder()
            .key("Db/Url", "database_url")
            .discover(true)
            .build()
            .unwrap(),
    );
    let keys = discovering.bind("/app").unwrap();
    assert_eq!(
        keys.name_for("/app/Db/Url").as_deref(),
        Some("database_url")
    );
    assert_eq!(
        keys.name_for("/app/Other/Key").as_deref(),
        Some("other.key")
    );
    // A list names every key in one buffer: what a key before left there never shows.
    let mut scratch = String::from("left.over.from.before");
    for (key, name) in [
        ("/app/Other/Key", Some("other.key")),
        ("/app/A", Some("a")),
        ("/app/Db/Url", Some("database_url")),
        ("/app/Bad//Path", None),
        ("/app/X/YZ", Some("x.yz")),
        ("/elsewhere/A", None),
    ] {
        let named = keys.name_into(key, &mut scratch);
        assert_eq!(named.then_some(scratch.as_str()), name, "{key}");
        assert_eq!(keys.name_for(key).as_deref(), name, "{key}");
    }

    let outside = Arc::new(
        Schema::builder()
            .key("/elsewhere/Key", "x")
            .build()
            .unwrap(),
    );
    let (what, reason) = match outside.bind("/app") {
        Err(Error::Schema { what, reason }) => (what, reason),
        other => panic!("{other:?}"),
    };
    assert_eq!(what, "key /elsewhere/Key");
    assert!(reason.contains("outside the prefix /app/"), "{reason}");
}

#[test]
fn keys_of_names_are_explicit_or_derived_from_the_name() {
    let schema = my_app();
    assert_eq!(
        schema.key_for("/myapp/production", "db_port").as_deref(),
        Some("/myapp/production/Database/Port")
    );
    assert_eq!(schema.key_for("/myapp/production", "undeclared"), None);
    let discovered = Schema::auto_discover();
    assert_eq!(
        discovered.key_for("/app/", "database.max_pool").as_deref(),
        Some("/app/Database/MaxPool")
    );
}

#[test]
fn inconsistent_declarations_are_schema_errors() {
    let cases: Vec<(Result<Schema>, &str, &str)> = vec![
        (
            Schema::builder()
                .name(Name::new("db_port").default("ten"))
                .build(),
            "default of db_port",
            "expected an integer",
        ),
        (
            Schema::builder()
                .name(Name::new("port").kind(Kind::Integer).default(true))
                .build(),
            "default of port",
            "the default is a bool, the name is a integer",
        ),
        (
            Schema::builder()
                .name(Name::new("db_port").default(0).range(1, 10))
                .build(),
            "default of db_port",
            "out of range",
        ),
        (
            Schema::builder()
                .name(Name::new("a"))
                .name(Name::new("a"))
                .build(),
            "name a",
            "declared twice",
        ),
        (
            Schema::builder().name(Name::new("a..b")).build(),
            "name a..b",
            "between the dots",
        ),
        (
            Schema::builder().name(Name::new("a").pattern("(")).build(),
            "name a",
            "bad pattern",
        ),
        (
            Schema::builder().key("K", "a").key("K", "b").build(),
            "key K",
            "mapped to two names",
        ),
        (
            Schema::builder().key("K1", "a").key("K2", "a").build(),
            "name a",
            "mapped from two keys",
        ),
    ];
    for (result, what, reason) in cases {
        let (got_what, got_reason) = schema_error(result);
        assert_eq!(got_what, what);
        assert!(got_reason.contains(reason), "{got_what}: {got_reason}");
    }
}

#[test]
fn required_names_and_checks_validate_a_snapshot() {
    let schema = Schema::builder()
        .name(Name::new("token").required())
        .check(Check::compare("min_pool", "<=", "max_pool").unwrap())
        .build()
        .unwrap();
    let good = snapshot_of(&[
        ("token", Value::from("t")),
        ("min_pool", Value::Integer(1)),
        ("max_pool", Value::Integer(5)),
    ]);
    assert!(schema.validate(&good).is_ok());
    let bad = snapshot_of(&[
        ("min_pool", Value::Integer(9)),
        ("max_pool", Value::Integer(5)),
    ]);
    assert_eq!(
        schema.validate(&bad).unwrap_err(),
        [
            "required name token has no value",
            "min_pool <= max_pool does not hold"
        ]
    );
}

#[test]
fn a_trait_schema_is_the_python_subclass() {
    struct MyService;
    impl ConfigSchema for MyService {
        fn config_prefix(&self) -> Option<String> {
            Some("/services/my-service".into())
        }
        fn etcd_key_map(&self) -> BTreeMap<String, String> {
            [
                ("/services/my-service/DatabaseUrl", "database_url"),
                ("/services/my-service/MaxWorkers", "max_workers"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        }
        fn env_var_map(&self) -> BTreeMap<String, String> {
            [
                ("database_url", "MYAPP_DATABASE_URL"),
                ("max_workers", "MYAPP_MAX_WORKERS"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        }
        fn coerce(&self, name: &str, text: &str) -> Option<Result<Value, String>> {
            (name == "max_workers").then(|| {
                if text.is_empty() {
                    Ok(Value::Integer(4))
                } else {
                    text.parse()
                        .map(Value::Integer)
                        .map_err(|_| "not a worker count".into())
                }
            })
        }
    }
    let schema = Arc::new(Schema::from_trait(MyService).build().unwrap());
    assert_eq!(schema.prefix(), Some("/services/my-service"));
    assert_eq!(schema.env_var("max_workers"), "MYAPP_MAX_WORKERS");
    assert_eq!(
        schema.coerce("max_workers", b"").unwrap(),
        Value::Integer(4)
    );
    assert_eq!(
        schema.coerce("max_workers", b"8").unwrap(),
        Value::Integer(8)
    );
    assert_eq!(
        schema.coerce("max_workers", b"x").unwrap_err(),
        "not a worker count"
    );
    // Other names keep the default coercion.
    assert_eq!(
        schema.coerce("database_url", b"pg://x").unwrap(),
        Value::from("pg://x")
    );
    let keys = schema.bind("/services/my-service").unwrap();
    assert_eq!(
        keys.name_for("/services/my-service/Unmapped"),
        None,
        "only mapped keys"
    );
}

#[cfg(feature = "toml")]
#[test]
fn a_toml_file_declares_the_same_schema() {
    let schema = Schema::from_toml_str(
        r#"
        prefix = "/myapp/production"

        [names.db_host]
        key = "Database/Host"
        env = "MYAPP_DB_HOST"
        default = "localhost"
        description = "Database host"

        [names.db_port]
        key = "Database/Port"
        kind = "integer"
        default = 5432
        min = 1
        max = 65535

        [names.api_secret]
        key = "API/SecretKey"
        secret = true
        required = true

        [names.allowed_statuses]
        key = "Statuses"
        default = ["new", "done"]

        [names.limits]
        key = "Limits"
        kind = "json"
        default = { max = 3 }

        [names.log_level]
        key = "Monitoring/LogLevel"
        one_of = ["DEBUG", "INFO"]
        pattern = "^[A-Z]+$"

        [[checks]]
        left = "db_port"
        op = ">"
        right = "min_port"
        "#,
    )
    .unwrap();
    assert_eq!(schema.prefix(), Some("/myapp/production"));
    assert_eq!(schema.env_var("db_host"), "MYAPP_DB_HOST");
    let spec = schema.declared("db_port").unwrap();
    assert_eq!(spec.default_value(), Some(&Value::Integer(5432)));
    assert!(schema.coerce("db_port", b"0").is_err());
    assert!(schema.declared("api_secret").unwrap().is_secret());
    assert_eq!(
        schema.declared("allowed_statuses").unwrap().default_value(),
        Some(&Value::from(vec!["new", "done"]))
    );
    assert_eq!(
        schema.declared("limits").unwrap().default_value(),
        Some(&Value::from(serde_json::json!({"max": 3})))
    );
    assert!(schema.coerce("log_level", b"INFO").is_ok());
    assert!(schema.coerce("log_level", b"info").is_err());
    assert_eq!(schema.checks()[0].label(), "db_port > min_port");

    let (what, reason) = schema_error(Schema::from_toml_str("[names.x]\nkinds = \"integer\"\n"));
    assert_eq!(what, "schema");
    assert!(reason.contains("unknown field `kinds`"), "{reason}");
    let (_, reason) = schema_error(Schema::from_toml_str("[names.x]\nkind = \"number\"\n"));
    assert!(reason.contains("unknown variant `number`"), "{reason}");
    let (_, reason) = schema_error(Schema::from_toml_str(
        "[[checks]]\nleft = \"a\"\nop = \"=<\"\nright = \"b\"\n",
    ));
    assert!(reason.contains("unknown operator"), "{reason}");
    let (what, _) = schema_error(Schema::from_toml_file("/nonexistent/schema.toml"));
    assert_eq!(what, "schema file /nonexistent/schema.toml");
}

#[test]
fn the_docs_table_lists_every_declared_name() {
    let table = my_app().markdown_table("/myapp/production");
    let expected = "\
| Etcd Key                                 | Environment Variable | Kind                     | Default   | Description |
| ---------------------------------------- | -------------------- | ------------------------ | --------- | ----------- |
| `/myapp/production/API/SecretKey`        | `API_SECRET`         | string, secret, required | -         | -           |
| `/myapp/production/Database/Host`        | `MYAPP_DB_HOST`      | string                   | localhost | -           |
| `/myapp/production/Database/Port`        | `MYAPP_DB_PORT`      | integer                  | 5432      | -           |
| `/myapp/production/Features/EnableCache` | `ENABLE_CACHE`       | bool                     | false     | -           |
| `/myapp/production/Monitoring/LogLevel`  | `LOG_LEVEL`          | string                   | INFO      | -           |
| `/myapp/production/Cache/RedisUrl`       | `MYAPP_REDIS_URL`    | string                   | -         | -           |
";
    assert_eq!(table, expected);

    let secret_default = Schema::builder()
        .name(Name::new("token").secret().default("hunter2"))
        .build()
        .unwrap()
        .markdown_table("/app");
    assert!(!secret_default.contains("hunter2"), "{secret_default}");
    assert!(secret_default.contains("(hidden)"));
}

#[test]
fn the_control_unit_schema_declares_the_documented_names() {
    let schema = Schema::control_unit();
    assert!(schema.is_secret("postgres_dsn"));
    assert!(schema.is_secret("categorization_api_token"));
    assert_eq!(schema.kind_of("ai_http_timeout_seconds"), Kind::Float);
    assert_eq!(schema.kind_of("ai_http_max_connections"), Kind::Integer);
    let keys = Arc::new(schema).bind("/APPS/ControlUnit").unwrap();
    assert_eq!(
        keys.name_for("/APPS/ControlUnit/CategorizationApiUrl")
            .as_deref(),
        Some("categorization_api_url")
    );
    assert_eq!(
        keys.name_for("/APPS/ControlUnit/SomethingNew").as_deref(),
        Some("something_new"),
        "and discovers the rest"
    );
}

#[test]
fn the_control_unit_log_level_is_read_in_any_case_and_served_upper_cased() {
    let schema = Schema::control_unit();
    for text in ["debug", "Debug", " DEBUG "] {
        assert_eq!(
            schema
                .coerce("log_level", text.as_bytes())
                .unwrap()
                .to_string(),
            "DEBUG"
        );
    }
    assert!(schema.coerce("log_level", b"loud").is_err());
    // Other names are untouched by the hook.
    assert_eq!(
        schema
            .coerce("something_new", b"debug")
            .unwrap()
            .to_string(),
        "debug"
    );
}

#[test]
fn a_config_schema_that_overrides_nothing_keeps_every_default() {
    struct Defaults;
    impl ConfigSchema for Defaults {}
    let schema = Arc::new(Schema::from_trait(Defaults).build().unwrap());
    assert_eq!(schema.prefix(), None, "the prefix comes from the settings");
    assert_eq!(schema.names().count(), 0, "nothing declared");
    assert_eq!(
        schema.env_var("db.host"),
        "DB__HOST",
        "the default env rule"
    );
    let keys = schema.bind("/app").unwrap();
    assert_eq!(
        keys.name_for("/app/Database/Host").as_deref(),
        Some("database.host"),
        "every key under the prefix, named by its path"
    );
    assert_eq!(
        schema.coerce("db.port", b"5432").unwrap(),
        Value::Integer(5432)
    );
}

#[test]
fn a_name_keeps_its_description_and_a_schema_shows_what_it_holds() {
    let name = Name::new("db_port").describe("the database's port");
    assert_eq!(name.description(), Some("the database's port"));
    assert_eq!(Name::new("db_port").description(), None);
    let shown = format!("{:?}", my_app());
    for part in [
        "Schema",
        "prefix: Some(\"/myapp/production\")",
        "discover: false",
        "db_host",
        "custom_coercion: false",
    ] {
        assert!(shown.contains(part), "{part} in {shown}");
    }
    let builder = Schema::builder()
        .prefix("/app")
        .key("Database/Host", "db_host");
    let shown = format!("{builder:?}");
    for part in [
        "SchemaBuilder",
        "\"/app\"",
        "\"Database/Host\"",
        "\"db_host\"",
    ] {
        assert!(shown.contains(part), "{part} in {shown}");
    }
}
