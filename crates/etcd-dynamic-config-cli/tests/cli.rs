//! The binary against a real etcd, command by command.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use etcd_client::Client;
use predicates::prelude::*;
use testkit::EtcdMember;

const SCHEMA: &str = r#"
prefix = "/app"
discover = true

[names.log_level]
key = "LogLevel"
one_of = ["DEBUG", "INFO", "WARNING", "ERROR"]
description = "Application log level"

[names.pool_size]
key = "Database/PoolSize"
kind = "integer"
min = 1
max = 100
default = 10
description = "Connection pool size"

[names.db_password]
key = "Database/Password"
env = "APP_DB_PASSWORD"
secret = true
required = true
description = "Database password"
"#;

/// What a command that succeeds prints.
fn stdout(command: &mut Command) -> String {
    let output = command.assert().success().get_output().stdout.clone();
    String::from_utf8(output).unwrap()
}

struct Setup {
    etcd: EtcdMember,
    client: Client,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl Setup {
    fn new(pairs: &[(&str, &str)]) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let etcd = runtime.block_on(EtcdMember::start());
        let mut client = runtime.block_on(etcd.client());
        for (key, value) in pairs {
            runtime
                .block_on(client.put(format!("/app/{key}"), *value, None))
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("schema.toml"), SCHEMA).unwrap();
        Self {
            etcd,
            client,
            dir,
            runtime,
        }
    }

    fn good() -> Self {
        Self::new(&[
            ("LogLevel", "INFO"),
            ("Database/PoolSize", "20"),
            ("Database/Password", "hunter2-secret"),
            ("Feature/NewCheckout", "on"),
        ])
    }

    fn schema(&self) -> String {
        self.dir.path().join("schema.toml").display().to_string()
    }

    /// The binary with this member's connection and schema, and nothing else from the
    /// environment.
    fn cli(&self) -> Command {
        let mut command = Command::cargo_bin("etcd-dynamic-config").unwrap();
        command
            .env_clear()
            .env("EtcdSettings__HostName", self.etcd.endpoint())
            .env("NO_COLOR", "1")
            .args(["--schema", &self.schema()]);
        command
    }

    fn etcd_value(&mut self, key: &str) -> Option<(String, i64)> {
        let response = self.runtime.block_on(self.client.get(key, None)).unwrap();
        response
            .kvs()
            .first()
            .map(|kv| (kv.value_str().unwrap().to_owned(), kv.mod_revision()))
    }

    fn write(&mut self, key: &str, value: &str) {
        self.runtime
            .block_on(self.client.put(key, value, None))
            .unwrap();
    }
}

#[test]
fn get_prints_one_value_and_fails_for_a_missing_name() {
    let setup = Setup::good();
    setup
        .cli()
        .args(["get", "pool_size"])
        .assert()
        .success()
        .stdout("20\n");
    setup
        .cli()
        .args(["get", "feature.new_checkout"])
        .assert()
        .success()
        .stdout("on\n");
    setup
        .cli()
        .args(["get", "db_password"])
        .assert()
        .success()
        .stdout("********\n");
    setup
        .cli()
        .args(["get", "db_password", "--show-secrets"])
        .assert()
        .success()
        .stdout("hunter2-secret\n");
    setup
        .cli()
        .args(["get", "nothing_here"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "nothing_here has no value under /app",
        ));
}

#[test]
fn dump_shows_a_table_json_or_env_with_secrets_masked() {
    let setup = Setup::good();
    let table = setup
        .cli()
        .arg("dump")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8(table).unwrap();
    println!("{table}");
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.contains("db_password           ********"), "{table}");
    assert!(
        table.contains("etcd key /app/Database/PoolSize @ rev"),
        "{table}"
    );
    assert!(!table.contains("hunter2"), "{table}");
    assert!(!table.contains('\x1b'), "no colour off a terminal");

    let json = setup
        .cli()
        .args(["dump", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["prefix"], "/app");
    assert_eq!(json["values"]["pool_size"]["value"], 20);
    assert_eq!(json["values"]["db_password"]["value"], "********");
    assert_eq!(json["values"]["db_password"]["secret"], true);
    assert_eq!(json["problems"], serde_json::json!([]));

    setup
        .cli()
        .args(["dump", "--format", "env"])
        .assert()
        .success()
        .stdout(predicate::str::contains("APP_DB_PASSWORD=\"********\""))
        .stdout(predicate::str::contains("POOL_SIZE=20"))
        .stdout(predicate::str::contains("FEATURE__NEW_CHECKOUT=on"));
}

#[test]
fn put_checks_the_value_against_the_schema_before_writing() {
    let mut setup = Setup::good();
    setup
        .cli()
        .args(["put", "pool_size", "30"])
        .assert()
        .success()
        .stdout(predicate::str::contains("wrote 1 value(s) at revision"));
    assert_eq!(setup.etcd_value("/app/Database/PoolSize").unwrap().0, "30");

    setup
        .cli()
        .args(["put", "pool_size", "500"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains(
            "pool_size: out of range: must be between 1 and 100",
        ));
    setup
        .cli()
        .args(["put", "log_level", "LOUD"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("log_level: not allowed"));
    assert_eq!(setup.etcd_value("/app/Database/PoolSize").unwrap().0, "30");
    assert_eq!(setup.etcd_value("/app/LogLevel").unwrap().0, "INFO");
}

#[test]
fn import_shows_a_dry_run_then_writes_in_one_transaction() {
    let mut setup = Setup::good();
    let file = setup.dir.path().join("new.env");
    std::fs::write(
        &file,
        "# from staging\nLOG_LEVEL=DEBUG\nPOOL_SIZE=20\nAPP_DB_PASSWORD='new secret'\nfeature.fast_search=yes\n",
    )
    .unwrap();
    let file = file.display().to_string();

    let dry = setup
        .cli()
        .args(["import", &file, "--dry-run"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let dry = String::from_utf8(dry).unwrap();
    println!("{dry}");
    assert!(dry.contains("~ log_level: INFO -> DEBUG"), "{dry}");
    assert!(dry.contains("~ db_password: ******** -> ********"), "{dry}");
    assert!(dry.contains("+ feature.fast_search = yes"), "{dry}");
    assert!(dry.contains("3 to change, 1 unchanged"), "{dry}");
    assert!(dry.contains("dry run: nothing written"), "{dry}");
    assert!(!dry.contains("new secret"), "{dry}");
    assert_eq!(setup.etcd_value("/app/LogLevel").unwrap().0, "INFO");

    setup.cli().args(["import", &file]).assert().success();
    let (level, level_revision) = setup.etcd_value("/app/LogLevel").unwrap();
    let (password, password_revision) = setup.etcd_value("/app/Database/Password").unwrap();
    let (_, feature_revision) = setup.etcd_value("/app/Feature/FastSearch").unwrap();
    assert_eq!(level, "DEBUG");
    assert_eq!(password, "new secret");
    assert_eq!(level_revision, password_revision, "one transaction");
    assert_eq!(level_revision, feature_revision, "one transaction");

    // A bad value anywhere: nothing is written.
    let bad = setup.dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"log_level": "ERROR", "pool_size": "many"}"#).unwrap();
    setup
        .cli()
        .args(["import", &bad.display().to_string()])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("pool_size: expected an integer"));
    assert_eq!(setup.etcd_value("/app/LogLevel").unwrap().0, "DEBUG");
}

#[test]
fn export_reads_back_with_import() {
    let mut setup = Setup::good();
    let exported = setup
        .cli()
        .args(["export", "--format", "json", "--show-secrets"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let file = setup.dir.path().join("export.json");
    std::fs::write(&file, &exported).unwrap();
    setup.write("/app/LogLevel", "ERROR");
    setup
        .cli()
        .args(["import", &file.display().to_string()])
        .assert()
        .success()
        .stdout(predicate::str::contains("~ log_level: ERROR -> INFO"));
    assert_eq!(setup.etcd_value("/app/LogLevel").unwrap().0, "INFO");

    // A masked export cannot be imported by mistake.
    let masked = setup
        .cli()
        .args(["export", "--format", "env"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let file = setup.dir.path().join("masked.env");
    std::fs::write(&file, &masked).unwrap();
    setup.write("/app/Database/Password", "changed-secret");
    setup
        .cli()
        .args(["import", &file.display().to_string()])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("the secret mask"));
    assert_eq!(
        setup.etcd_value("/app/Database/Password").unwrap().0,
        "changed-secret"
    );
}

#[test]
fn an_env_export_of_awkward_values_imports_back_exactly() {
    let awkward = [
        ("Notes/Multi", "line 1\nline 2\r\n  indented"),
        ("Notes/Quotes", "it's \"quoted\" \\ and 'single'"),
        ("Notes/Dollar", "$HOME ${PATH} $(date)"),
        ("Notes/Hash", "value # not a comment"),
        ("Notes/Control", "bell\u{7} escape\u{1b}[31m tab\t"),
        ("Notes/Empty", ""),
    ];
    let mut setup = Setup::good();
    for (key, value) in awkward {
        setup.write(&format!("/app/{key}"), value);
    }
    let exported = setup
        .cli()
        .args(["export", "--format", "env", "--show-secrets"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let file = setup.dir.path().join("export.env");
    std::fs::write(&file, &exported).unwrap();
    for (key, _) in awkward {
        setup.write(&format!("/app/{key}"), "overwritten");
    }
    setup
        .cli()
        .args(["import", &file.display().to_string()])
        .assert()
        .success();
    for (key, value) in awkward {
        assert_eq!(
            setup.etcd_value(&format!("/app/{key}")).unwrap().0,
            value,
            "{key}"
        );
    }
    // A hand-written file: `export`, comments, an unquoted value with a comment after it.
    let file = setup.dir.path().join("hand.env");
    std::fs::write(
        &file,
        "# pool\nexport POOL_SIZE=42 # was 20\nLOG_LEVEL='DEBUG'\n",
    )
    .unwrap();
    setup
        .cli()
        .args(["import", &file.display().to_string()])
        .assert()
        .success();
    assert_eq!(setup.etcd_value("/app/Database/PoolSize").unwrap().0, "42");
    assert_eq!(setup.etcd_value("/app/LogLevel").unwrap().0, "DEBUG");
}

#[test]
fn check_passes_or_lists_every_problem() {
    let setup = Setup::good();
    setup
        .cli()
        .arg("check")
        .assert()
        .success()
        .stdout(predicate::str::contains("are valid"));

    let broken = Setup::new(&[
        ("LogLevel", "LOUD"),
        ("Database/PoolSize", "500"),
        ("Feature/X", "1"),
    ]);
    let output = broken
        .cli()
        .arg("check")
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let output = String::from_utf8(output).unwrap();
    println!("{output}");
    assert!(
        output.contains("problem log_level: not allowed"),
        "{output}"
    );
    assert!(
        output.contains("problem pool_size: out of range"),
        "{output}"
    );
    assert!(
        output.contains("problem required name db_password has no value"),
        "{output}"
    );
    assert!(output.contains("3 problem(s)"), "{output}");
}

#[test]
fn doc_prints_the_markdown_table() {
    let setup = Setup::good();
    setup
        .cli()
        .arg("doc")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "| `/app/Database/Password` | `APP_DB_PASSWORD`    | string, secret, required | -       | Database password     |",
        ));
}

#[test]
fn health_reports_synced_or_exits_3_without_etcd() {
    let setup = Setup::good();
    setup
        .cli()
        .arg("health")
        .assert()
        .success()
        .stdout(predicate::str::contains("state          synced"));
    let json = setup
        .cli()
        .args(["health", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["state"], "synced");

    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    drop(setup);
    Command::cargo_bin("etcd-dynamic-config")
        .unwrap()
        .env_clear()
        .args([
            "--endpoints",
            &format!("http://{dead}"),
            "--timeout",
            "1",
            "health",
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "etcd did not answer within the start deadline",
        ));
}

#[test]
fn watch_prints_changes_until_it_has_seen_enough() {
    let mut setup = Setup::good();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("etcd-dynamic-config"))
        .env_clear()
        .env("EtcdSettings__HostName", setup.etcd.endpoint())
        .args(["--schema", &setup.schema(), "watch", "--max-changes", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Lines arrive through a channel, so that a watch that hangs fails at the deadline
    // instead of blocking the test.
    let (sender, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if sender.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let next = |what: &str| {
        let left = deadline.saturating_duration_since(Instant::now());
        lines
            .recv_timeout(left)
            .unwrap_or_else(|error| panic!("{what}: no line within the deadline ({error})"))
    };
    let first = next("the first line");
    assert!(first.starts_with("watching /app/ from revision"), "{first}");
    setup.write("/app/LogLevel", "WARNING");
    setup.write("/app/Database/Password", "rotated-secret");
    let seen = vec![next("the first change"), next("the second change")];
    // With two changes seen, the command ends by itself.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "watch did not end after 2 changes"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(lines.try_recv().is_err(), "nothing after the second change");
    println!("{}", seen.join("\n"));
    assert!(status.success());
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].ends_with("log_level  INFO -> WARNING"), "{seen:?}");
    assert!(
        seen[1].ends_with("db_password  ******** -> ********"),
        "{seen:?}"
    );
}

#[test]
fn every_command_follows_the_one_prefix_rule() {
    // The schema names /app; the flag, then EtcdSettings__RootKey, win over it.
    let mut setup = Setup::good();
    for (key, value) in [
        ("/staging/Database/PoolSize", "5"),
        ("/staging/Database/Password", "staging-secret"),
        ("/staging/LogLevel", "DEBUG"),
    ] {
        setup.write(key, value);
    }
    let staging = ["--prefix", "/staging"];
    assert_eq!(
        stdout(setup.cli().args(staging).args(["get", "pool_size"])),
        "5\n"
    );
    setup
        .cli()
        .args(staging)
        .args(["put", "pool_size", "99"])
        .assert()
        .success();
    assert_eq!(
        setup.etcd_value("/staging/Database/PoolSize").unwrap().0,
        "99"
    );
    assert_eq!(setup.etcd_value("/app/Database/PoolSize").unwrap().0, "20");
    let json = stdout(setup.cli().args(staging).args(["dump", "--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["prefix"], "/staging");
    assert_eq!(json["values"]["pool_size"]["value"], 99);
    let json = stdout(
        setup
            .cli()
            .args(staging)
            .args(["health", "--format", "json"]),
    );
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["prefix"], "/staging/");
    assert!(stdout(setup.cli().args(staging).arg("check")).contains("under /staging at"));
    assert!(stdout(setup.cli().args(staging).arg("export")).contains("99"));

    // EtcdSettings__RootKey wins over the schema, the flag over both.
    let from_env = |setup: &Setup| {
        let mut command = setup.cli();
        command.env("EtcdSettings__RootKey", "/staging");
        command
    };
    assert_eq!(stdout(from_env(&setup).args(["get", "pool_size"])), "99\n");
    assert_eq!(
        stdout(from_env(&setup).args(["--prefix", "/app", "get", "pool_size"])),
        "20\n"
    );
    // EtcdSettings__Dev puts /dev in front of all but the flag.
    from_env(&setup)
        .env("EtcdSettings__Dev", "true")
        .args(["get", "log_level"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("under /dev/staging"));
    assert_eq!(
        stdout(from_env(&setup).env("EtcdSettings__Dev", "true").args([
            "--prefix",
            "/staging",
            "get",
            "pool_size"
        ])),
        "99\n"
    );
}

#[test]
fn a_timeout_that_is_not_a_sensible_number_of_seconds_is_refused() {
    for bad in ["inf", "1e20", "-5", "0", "NaN", "five"] {
        let output = Command::cargo_bin("etcd-dynamic-config")
            .unwrap()
            .env_clear()
            .args([&format!("--timeout={bad}"), "doc"])
            .assert()
            .code(2)
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--timeout"), "{bad}: {stderr}");
        assert!(!stderr.contains("panicked"), "{bad}: {stderr}");
    }
    Command::cargo_bin("etcd-dynamic-config")
        .unwrap()
        .env_clear()
        .args(["--timeout", "0.5", "doc"])
        .assert()
        .success();
}

#[test]
fn watch_into_a_pipe_that_closes_ends_quietly() {
    // `watch | head -1`: the reader goes away after the first line.
    let mut setup = Setup::good();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("etcd-dynamic-config"))
        .env_clear()
        .env("EtcdSettings__HostName", setup.etcd.endpoint())
        .args(["--schema", &setup.schema(), "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("watching /app/"), "{first}");
    drop(lines);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        setup.write("/app/LogLevel", "WARNING");
        setup.write("/app/LogLevel", "ERROR");
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "watch did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn values_cannot_forge_output_with_control_characters() {
    let forged = "INFO\nfeature.admin  on  etcd key /app/Feature/Admin @ rev 1\u{1b}[2K\r";
    let mut setup = Setup::good();
    setup.write("/app/Feature/Note", forged);
    let table = stdout(setup.cli().arg("dump"));
    assert!(
        !table.lines().any(|line| line.starts_with("feature.admin")),
        "no forged row: {table}"
    );
    assert!(
        !table.contains('\u{1b}') && !table.contains('\r'),
        "{table:?}"
    );
    assert!(table.contains("INFO\\nfeature.admin"), "{table}");
    let got = stdout(setup.cli().args(["get", "feature.note"]));
    assert_eq!(got.lines().count(), 1, "{got:?}");
    assert!(got.contains("\\u{1b}[2K\\r"), "{got:?}");
    // Machine formats keep the exact text.
    let json = stdout(setup.cli().args(["dump", "--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["values"]["feature.note"]["value"], forged);
}

#[test]
fn an_import_too_large_for_one_transaction_writes_nothing_unless_batched() {
    let mut setup = Setup::good();
    let file = setup.dir.path().join("many.env");
    let lines: String = (0..200).map(|i| format!("BULK__K{i}=v{i}\n")).collect();
    std::fs::write(&file, lines).unwrap();
    let path = file.display().to_string();
    setup
        .cli()
        .args(["import", &path])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("200 writes"))
        .stderr(predicate::str::contains("--max-txn-ops"))
        .stderr(predicate::str::contains("nothing was written"))
        .stderr(predicate::str::contains("--batch"));
    assert_eq!(setup.etcd_value("/app/Bulk/K0"), None);
    setup
        .cli()
        .args(["import", &path, "--batch", "120"])
        .assert()
        .success()
        .stdout(predicate::str::contains("wrote batch 2/2: 80 value(s)"))
        .stdout(predicate::str::contains(
            "wrote 200 value(s) in 2 transaction(s)",
        ));
    assert_eq!(setup.etcd_value("/app/Bulk/K199").unwrap().0, "v199");

    // Too many bytes: etcd's request limit, in plain words.
    let big = setup.dir.path().join("big.env");
    std::fs::write(&big, format!("BIG=\"{}\"\n", "x".repeat(3 << 20))).unwrap();
    setup
        .cli()
        .args(["import", &big.display().to_string()])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("--max-request-bytes"))
        .stderr(predicate::str::contains("nothing was written"));
    assert_eq!(setup.etcd_value("/app/Big"), None);

    // A batched import that stops midway says what it wrote and what it did not.
    let mixed = setup.dir.path().join("mixed.env");
    std::fs::write(
        &mixed,
        format!("A_FIRST=1\nB_SECOND=2\nZ_BIG=\"{}\"\n", "x".repeat(3 << 20)),
    )
    .unwrap();
    setup
        .cli()
        .args(["import", &mixed.display().to_string(), "--batch", "2"])
        .assert()
        .code(4)
        .stdout(predicate::str::contains("wrote batch 1/2: 2 value(s)"))
        .stderr(predicate::str::contains(
            "stopped at batch 2/2: 2 value(s) written before it, 1 not written: z_big",
        ));
    assert_eq!(setup.etcd_value("/app/AFirst").unwrap().0, "1");
    assert_eq!(setup.etcd_value("/app/ZBig"), None);

    // A value the schema rejects, in the last batch: nothing is written at all.
    let late = setup.dir.path().join("late.env");
    std::fs::write(&late, "A_LATE=1\nB_LATE=2\nPOOL_SIZE=500\n").unwrap();
    setup
        .cli()
        .args(["import", &late.display().to_string(), "--batch", "1"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("pool_size: out of range"));
    assert_eq!(setup.etcd_value("/app/ALate"), None);

    // One that stops before a thousand names lists ten and counts the rest.
    let many = setup.dir.path().join("many.env");
    let lines: String = (0..1000).map(|i| format!("MANY_{i:04}=v\n")).collect();
    std::fs::write(&many, lines).unwrap();
    let output = setup
        .cli()
        .args(["import", &many.display().to_string(), "--batch", "1000"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("1000 not written: many_0000, many_0001,")
            && stderr.contains("many_0009, and 990 more:"),
        "{stderr}"
    );
    assert!(stderr.len() < 2_000, "{stderr}");
}

#[test]
fn put_refuses_a_name_no_reader_would_see() {
    let mut setup = Setup::good();
    for name in ["../x", "a..b", "/abs", "x/../../y", "a//b", ".", ""] {
        setup
            .cli()
            .args(["put", name, "1"])
            .assert()
            .code(4)
            .stderr(
                predicate::str::contains("to be written to etcd key")
                    .or(predicate::str::contains("no such name")),
            );
    }
    let (keys, _) = {
        let response = setup
            .runtime
            .block_on(
                setup
                    .client
                    .get("/", Some(etcd_client::GetOptions::new().with_prefix())),
            )
            .unwrap();
        let keys: Vec<String> = response
            .kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap().to_owned())
            .collect();
        (keys, ())
    };
    assert_eq!(keys.len(), 4, "nothing new written: {keys:?}");
    setup
        .cli()
        .args(["put", "feature.dark_mode", "on"])
        .assert()
        .success();
    assert_eq!(setup.etcd_value("/app/Feature/DarkMode").unwrap().0, "on");
}

#[test]
fn without_a_schema_secrets_are_masked_all_the_same() {
    let mut setup = Setup::good();
    for (key, value) in [
        (
            "/APPS/ControlUnit/PostgresDsn",
            "postgres://app:pg-secret@db/app",
        ),
        ("/APPS/ControlUnit/LogLevel", "INFO"),
        ("/other/Db/Password", "other-secret"),
        ("/other/ApiKey", "key-secret"),
        ("/other/LogLevel", "DEBUG"),
    ] {
        setup.write(key, value);
    }
    let bare = |args: &[&str]| {
        let mut command = Command::cargo_bin("etcd-dynamic-config").unwrap();
        command
            .env_clear()
            .env("EtcdSettings__HostName", setup.etcd.endpoint())
            .env("NO_COLOR", "1")
            .args(args);
        let output = command.assert().success().get_output().stdout.clone();
        String::from_utf8(output).unwrap()
    };
    // The default prefix: the ControlUnit schema.
    let dump = bare(&["dump"]);
    assert!(!dump.contains("pg-secret"), "{dump}");
    assert!(
        dump.contains("postgres_dsn") && dump.contains("********"),
        "{dump}"
    );
    assert!(dump.contains("INFO"), "{dump}");
    // Elsewhere: every key, names that look secret masked.
    for args in [
        &["--prefix", "/other", "dump"][..],
        &["--prefix", "/other", "dump", "--format", "json"],
        &["--prefix", "/other", "export"],
        &["--prefix", "/other", "get", "db.password"],
    ] {
        let out = bare(args);
        assert!(
            !out.contains("other-secret") && !out.contains("key-secret"),
            "{args:?}: {out}"
        );
    }
    assert!(bare(&["--prefix", "/other", "dump"]).contains("DEBUG"));
    assert!(
        bare(&["--prefix", "/other", "--show-secrets", "get", "api_key"]).contains("key-secret")
    );
}

#[test]
fn one_shot_commands_fail_over_and_keep_to_the_timeout() {
    let setup = Setup::good();
    // Port 1 refuses; a listener that never accepts answers nothing, like a frozen member.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", black_hole.local_addr().unwrap());
    let live = setup.etcd.endpoint();
    for first in ["http://127.0.0.1:1", silent.as_str()] {
        let endpoints = format!("{first},{live}");
        for args in [
            &["get", "log_level"][..],
            &["dump"],
            &["check"],
            &["export"],
            &["put", "pool_size", "21"],
        ] {
            setup
                .cli()
                .args(["--endpoints", &endpoints, "--timeout", "3"])
                .args(args)
                .assert()
                .success();
        }
    }
    for args in [&["dump"][..], &["put", "pool_size", "22"]] {
        let started = Instant::now();
        setup
            .cli()
            .args(["--endpoints", &silent, "--timeout", "1"])
            .args(args)
            .assert()
            .code(3)
            .stderr(predicate::str::contains("within"));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{args:?} took {:?} with --timeout 1",
            started.elapsed()
        );
    }
}

/// The raw keys and values under `/app/` at `revision` (0: now).
fn raw_prefix(setup: &mut Setup, revision: i64) -> BTreeMap<String, String> {
    let mut options = etcd_client::GetOptions::new().with_prefix();
    if revision > 0 {
        options = options.with_revision(revision);
    }
    let response = setup
        .runtime
        .block_on(setup.client.get("/app/", Some(options)))
        .unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_owned(),
                kv.value_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn revision_of(setup: &mut Setup) -> i64 {
    let response = setup.runtime.block_on(setup.client.get("/", None)).unwrap();
    response.header().unwrap().revision()
}

#[test]
fn history_diff_and_rollback_read_etcds_own_revisions() {
    let mut setup = Setup::good(); // LogLevel=INFO at 2, …, NewCheckout at 5
    let start = revision_of(&mut setup);
    setup.write("/app/LogLevel", "WARNING");
    let warning = revision_of(&mut setup);
    setup
        .runtime
        .block_on(setup.client.delete("/app/LogLevel", None))
        .unwrap();
    setup.write("/app/LogLevel", "ERROR");
    setup.write("/app/Database/Password", "rotated-secret");
    setup.write("/app/Feature/Extra", "new");
    let head = revision_of(&mut setup);

    let history = stdout(setup.cli().args(["history", "log_level"]));
    let lines: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            format!("rev {:<8} ERROR", warning + 2),
            format!("rev {:<8} (deleted)", warning + 1),
            format!("rev {warning:<8} WARNING"),
            format!("rev {:<8} INFO", 2),
        ],
        "{history}"
    );
    let secret = stdout(setup.cli().args(["history", "db_password"]));
    assert!(!secret.contains("secret"), "{secret}");
    assert!(
        stdout(setup.cli().args(["history", "log_level", "--limit", "1"]))
            .lines()
            .count()
            == 2
    );

    let diff = stdout(setup.cli().args(["diff", "--from-rev", &start.to_string()]));
    assert!(diff.contains("~ log_level: INFO -> ERROR"), "{diff}");
    assert!(
        diff.contains("~ db_password: ******** -> ********"),
        "{diff}"
    );
    assert!(diff.contains("+ feature.extra = new"), "{diff}");
    assert!(!diff.contains("pool_size"), "{diff}");
    let diff = stdout(setup.cli().args([
        "diff",
        "--from-rev",
        &warning.to_string(),
        "--to-rev",
        &(warning + 1).to_string(),
    ]));
    assert!(diff.contains("- log_level (was WARNING)"), "{diff}");

    // A dry run writes nothing; the rollback makes the prefix etcd's range at `start`.
    let plan = stdout(
        setup
            .cli()
            .args(["rollback", "--to-rev", &start.to_string(), "--dry-run"]),
    );
    assert!(plan.contains("2 to put back, 1 to delete"), "{plan}");
    assert!(!plan.contains("hunter2"), "{plan}");
    assert_eq!(revision_of(&mut setup), head);
    let done = stdout(
        setup
            .cli()
            .args(["rollback", "--to-rev", &start.to_string()]),
    );
    assert!(
        done.contains(&format!("wrote revision {}", head + 1)),
        "{done}"
    );
    assert_eq!(raw_prefix(&mut setup, 0), raw_prefix(&mut setup, start));
    // A name etcd no longer holds: its history ends with the delete.
    let gone = stdout(setup.cli().args(["history", "feature.extra"]));
    let lines: Vec<&str> = gone.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            format!("rev {:<8} (deleted)", head + 1),
            format!("rev {head:<8} new"),
        ],
        "{gone}"
    );

    // The history survives in etcd until it compacts; then history says where it stops.
    setup
        .runtime
        .block_on(setup.client.compact(warning, None))
        .unwrap();
    let history = stdout(setup.cli().args(["history", "log_level"]));
    assert!(
        history.contains(&format!("etcd keeps history from revision {warning}")),
        "{history}"
    );
    assert!(
        !history.lines().any(|line| line.starts_with("rev 2 ")),
        "the write at revision 2 was compacted away: {history}"
    );
    // A name last written before the compaction: etcd still holds its value now.
    let kept = stdout(setup.cli().args(["history", "feature.new_checkout"]));
    assert_eq!(
        kept.lines().nth(1),
        Some("rev 5        on (the value now)"),
        "{kept}"
    );
    setup
        .cli()
        .args(["rollback", "--to-rev", &start.to_string()])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("no longer in etcd's history"));
}

#[test]
fn expect_rev_refuses_a_write_over_changes_made_since() {
    let mut setup = Setup::good();
    let seen = revision_of(&mut setup).to_string();
    setup
        .cli()
        .args(["put", "pool_size", "30", "--expect-rev", &seen])
        .assert()
        .success()
        .stdout(predicate::str::contains("at revision"));
    // Another operator's write since `seen` (this one's own, here): refused.
    for change in ["put", "delete"] {
        let before = revision_of(&mut setup).to_string();
        match change {
            "put" => setup.write("/app/LogLevel", "DEBUG"),
            _ => {
                setup
                    .runtime
                    .block_on(setup.client.delete("/app/Feature/NewCheckout", None))
                    .unwrap();
            }
        }
        setup
            .cli()
            .args(["put", "pool_size", "40", "--expect-rev", &before])
            .assert()
            .code(5)
            .stderr(predicate::str::contains("nothing was written"));
        assert_eq!(
            setup.etcd_value("/app/Database/PoolSize").unwrap().0,
            "30",
            "{change}"
        );
    }
    let file = setup.dir.path().join("one.env");
    std::fs::write(&file, "POOL_SIZE=50\n").unwrap();
    setup
        .cli()
        .args(["import", &file.display().to_string(), "--expect-rev", &seen])
        .assert()
        .code(5);
    let now = revision_of(&mut setup).to_string();
    setup
        .cli()
        .args(["import", &file.display().to_string(), "--expect-rev", &now])
        .assert()
        .success();
    assert_eq!(setup.etcd_value("/app/Database/PoolSize").unwrap().0, "50");
}

#[test]
fn a_rollback_is_refused_when_a_key_it_touches_changed_after_the_plan() {
    let mut setup = Setup::good();
    let start = revision_of(&mut setup);
    setup.write("/app/LogLevel", "ERROR");
    let settings = etcd_dynamic_config::EtcdSettings::builder()
        .endpoints(setup.etcd.endpoint())
        .root_key("/app")
        .build()
        .unwrap();
    let client = etcd_dynamic_config::EtcdClient::new(
        settings,
        etcd_dynamic_config::Schema::auto_discover(),
    )
    .unwrap();
    let plan = setup.runtime.block_on(client.plan_rollback(start)).unwrap();
    assert_eq!(plan.puts, [("/app/LogLevel".to_owned(), "INFO".to_owned())]);
    setup.write("/app/LogLevel", "DEBUG"); // after the operator looked
    let refused = setup.runtime.block_on(client.rollback(&plan, None));
    assert!(
        matches!(refused, Err(etcd_dynamic_config::Error::Conflict { .. })),
        "{refused:?}"
    );
    assert_eq!(setup.etcd_value("/app/LogLevel").unwrap().0, "DEBUG");
}

#[test]
fn the_audit_trail_records_who_why_and_what_and_outlives_compaction() {
    let mut setup = Setup::good();
    let start = revision_of(&mut setup).to_string();
    let audited = |setup: &Setup| {
        let mut command = setup.cli();
        command.args(["--audit", "--author", "alice", "--reason", "incident 42"]);
        command
    };
    // The setting is true or false, like every EtcdSettings__* flag.
    setup
        .cli()
        .env("EtcdSettings__Audit", "1")
        .args(["put", "log_level", "ERROR"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("expected true or false"));
    audited(&setup)
        .args(["put", "log_level", "ERROR"])
        .assert()
        .success();
    audited(&setup)
        .args(["put", "db_password", "new-secret-value"])
        .assert()
        .success();
    audited(&setup)
        .args(["rollback", "--to-rev", &start])
        .assert()
        .success();
    // Not audited: no record.
    setup
        .cli()
        .args(["put", "pool_size", "33"])
        .assert()
        .success();

    // Readers of the configuration never see the trail; it holds no secret.
    let dump = stdout(setup.cli().args(["dump"]));
    assert!(!dump.contains("audit") && !dump.contains("alice"), "{dump}");
    let response = setup
        .runtime
        .block_on(setup.client.get(
            "/_audit/app/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        ))
        .unwrap();
    assert_eq!(response.kvs().len(), 3, "one record per audited write");
    for kv in response.kvs() {
        let record = kv.value_str().unwrap();
        assert!(
            !record.contains("new-secret-value") && !record.contains("hunter2"),
            "{record}"
        );
        assert!(record.contains("\"author\":\"alice\""), "{record}");
    }

    // Compacted: the values' history is gone, the trail is not.
    let head = revision_of(&mut setup);
    setup
        .runtime
        .block_on(setup.client.compact(head, None))
        .unwrap();
    let history = stdout(setup.cli().args(["history", "log_level"]));
    assert!(history.contains("audit trail, newest first:"), "{history}");
    let trail: Vec<&str> = history
        .lines()
        .skip_while(|line| !line.starts_with("audit trail"))
        .skip(1)
        .collect();
    assert_eq!(trail.len(), 2, "{history}");
    assert!(trail[0].contains("ERROR -> INFO  by alice"), "{history}");
    assert!(trail[0].contains("(rollback to revision"), "{history}");
    assert!(trail[1].contains("INFO -> ERROR  by alice"), "{history}");
    assert!(trail[1].contains("(put): incident 42"), "{history}");
}

#[test]
fn status_lists_the_instances_and_waits_for_the_fleet_to_reach_a_revision() {
    use etcd_dynamic_config::announce::Announce;
    use etcd_dynamic_config::{EtcdConfig, EtcdSettings};

    let mut setup = Setup::good();
    let proxy = setup
        .runtime
        .block_on(testkit::FaultProxy::start(setup.etcd.client_port()));
    let instances: Vec<EtcdConfig> = (0..3)
        .map(|i| {
            // pod-2 reaches etcd through a proxy, to be frozen.
            let endpoint = if i == 2 {
                proxy.endpoint()
            } else {
                setup.etcd.endpoint()
            };
            let settings = EtcdSettings::builder()
                .endpoints(endpoint)
                .root_key("/app")
                .announce(Announce::new(format!("pod-{i}")).label("zone", "eu-1"))
                .build()
                .unwrap();
            let config = EtcdConfig::builder()
                .settings(settings)
                .env(|_: &str| None)
                .build()
                .unwrap();
            setup.runtime.block_on(config.start()).unwrap();
            config
        })
        .collect();

    // Each instance is in the fleet when its start returns.
    let listed = stdout(setup.cli().arg("status"));
    assert!(
        (0..3).all(|i| listed.contains(&format!("pod-{i}"))),
        "{listed}"
    );

    // A deploy: put, then wait for the fleet to hold the put's revision.
    setup.write("/app/Feature/NewCheckout", "off");
    let revision = setup.etcd_value("/app/Feature/NewCheckout").unwrap().1;
    let waited = stdout(setup.cli().args([
        "status",
        "--wait-rev",
        &revision.to_string(),
        "--timeout",
        "10",
    ]));
    assert!(waited.contains("3 instance(s) hold revision"), "{waited}");
    let table = stdout(setup.cli().arg("status"));
    println!("{table}");
    for i in 0..3 {
        assert!(table.contains(&format!("pod-{i}")), "{table}");
    }
    assert!(
        table.contains("zone=eu-1") && table.contains("synced"),
        "{table}"
    );

    // A value the schema rejects: every instance names it, and status says so (exit 1).
    setup.write("/app/Database/PoolSize", "many");
    let deadline = Instant::now() + Duration::from_secs(10);
    let document: serde_json::Value = loop {
        let output = setup
            .cli()
            .args(["status", "--format", "json"])
            .output()
            .unwrap();
        let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let all = document["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|record| record["rejected"] == serde_json::json!(["database.pool_size"]));
        if all {
            assert_eq!(output.status.code(), Some(1));
            break document;
        }
        assert!(Instant::now() < deadline, "{document:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!document.to_string().contains("many"), "never a value");
    let troubled = setup.cli().arg("status").output().unwrap();
    assert_eq!(troubled.status.code(), Some(1));
    println!("{}", String::from_utf8_lossy(&troubled.stdout));
    setup.write("/app/Database/PoolSize", "30");

    // pod-2 cannot reach etcd: waiting for a new revision fails, naming it.
    proxy.stall();
    setup.write("/app/LogLevel", "DEBUG");
    let revision = setup.etcd_value("/app/LogLevel").unwrap().1;
    setup
        .cli()
        .args([
            "status",
            "--wait-rev",
            &revision.to_string(),
            "--timeout",
            "2",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "1 of 3 instance(s) do not hold revision",
        ))
        .stderr(predicate::str::contains("pod-2 (at"));
    proxy.restore();
    for config in &instances {
        setup.runtime.block_on(config.stop());
    }
    // The CLI's own configuration (here a running watch) is never an instance, whatever
    // EtcdSettings__Instance says.
    let mut watching =
        std::process::Command::new(assert_cmd::cargo::cargo_bin("etcd-dynamic-config"))
            .env_clear()
            .env("EtcdSettings__HostName", setup.etcd.endpoint())
            .env("EtcdSettings__Instance", "the-cli")
            .args(["--schema", &setup.schema(), "watch", "--max-changes", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let mut first = String::new();
    BufReader::new(watching.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("watching /app/"), "{first}");
    std::thread::sleep(Duration::from_millis(500)); // a record would be written within ms
    let empty = stdout(setup.cli().arg("status"));
    setup.write("/app/LogLevel", "ERROR");
    assert!(watching.wait().unwrap().success());
    assert!(
        empty.contains("no instance announces itself on /app/"),
        "{empty}"
    );
}

#[test]
fn rollouts_start_show_widen_promote_and_abort_from_the_command_line() {
    use etcd_dynamic_config::announce::Announce;
    use etcd_dynamic_config::{EtcdConfig, EtcdSettings};

    let mut setup = Setup::good();
    let instances: Vec<EtcdConfig> = (0..4)
        .map(|i| {
            let zone = if i % 2 == 0 { "eu-1" } else { "eu-2" };
            let settings = EtcdSettings::builder()
                .endpoints(setup.etcd.endpoint())
                .root_key("/app")
                .announce(Announce::new(format!("pod-{i}")).label("zone", zone))
                .build()
                .unwrap();
            let config = EtcdConfig::builder()
                .settings(settings)
                .schema(etcd_dynamic_config::Schema::from_toml_str(SCHEMA).unwrap())
                .env(|_: &str| None)
                .build()
                .unwrap();
            setup.runtime.block_on(config.start()).unwrap();
            config
        })
        .collect();
    let file = setup.dir.path().join("canary.json");
    std::fs::write(
        &file,
        r#"{"log_level": "DEBUG", "db_password": "rolled-secret", "feature.new_checkout": null}"#,
    )
    .unwrap();
    let file = file.display().to_string();
    let start = |extra: &[&str]| {
        let mut command = setup.cli();
        command.args(["rollout", "start", "canary", &file, "--percent", "100"]);
        command.args(["--labels", "zone=eu-1"]).args(extra);
        command
    };

    // A dry run shows the changes (secrets masked) and whom they would reach.
    let dry = stdout(start(&["--dry-run"]).arg("--timeout").arg("5"));
    println!("{dry}");
    assert!(dry.contains("~ log_level: INFO -> DEBUG"), "{dry}");
    assert!(dry.contains("~ db_password: ******** -> ********"), "{dry}");
    assert!(dry.contains("- feature.new_checkout"), "{dry}");
    assert!(
        dry.contains("2 of 4 live instance(s) in the target (100% of zone=eu-1): pod-0, pod-2"),
        "{dry}"
    );
    assert!(dry.ends_with("dry run: nothing written\n"), "{dry}");
    assert!(
        !dry.contains("rolled-secret") && !dry.contains("hunter2"),
        "{dry}"
    );
    assert_eq!(
        stdout(setup.cli().args(["rollout", "status"])),
        "no rollout under /app/\n"
    );

    let started = stdout(&mut start(&[]));
    let revision: i64 = started
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("{started}"));
    setup
        .cli()
        .args([
            "status",
            "--wait-rev",
            &revision.to_string(),
            "--timeout",
            "10",
        ])
        .assert()
        .success();
    for (i, config) in instances.iter().enumerate() {
        let level = config.snapshot().get("log_level").unwrap().to_string();
        assert_eq!(level, if i % 2 == 0 { "DEBUG" } else { "INFO" }, "pod-{i}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let table = loop {
        let table = stdout(setup.cli().args(["rollout", "status", "canary"]));
        if table.contains("2 serving, 0 pending, 0 rejecting, 2 outside") {
            break table;
        }
        assert!(Instant::now() < deadline, "{table}");
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("{table}");
    assert!(
        table.starts_with(
            "rollout canary: 100% of zone=eu-1, changes +db_password,+log_level,-feature.new_checkout"
        ),
        "{table}"
    );
    let document: serde_json::Value = serde_json::from_str(&stdout(
        setup
            .cli()
            .args(["rollout", "status", "canary", "--format", "json"]),
    ))
    .unwrap();
    assert_eq!(document["instances"][0]["id"], "pod-0");
    assert_eq!(document["instances"][0]["state"], "serving");
    assert_eq!(document["instances"][1]["state"], "outside");
    assert!(
        !document.to_string().contains("rolled-secret"),
        "{document}"
    );
    let list = stdout(setup.cli().args(["rollout", "status"]));
    assert!(
        list.contains("canary") && list.contains("100% of zone=eu-1"),
        "{list}"
    );

    // Refused, writing nothing: narrowing, a second start, a value the schema rejects.
    setup
        .cli()
        .args(["rollout", "widen", "canary", "--percent", "10"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("never narrows"));
    start(&[])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("running already"));
    let bad = setup.dir.path().join("bad.env");
    std::fs::write(&bad, "POOL_SIZE=500\n").unwrap();
    setup
        .cli()
        .args(["rollout", "start", "big-pool"])
        .arg(&bad)
        .args(["--percent", "5"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("pool_size"));

    // A rollout written by hand that instances cannot serve: status names the reason
    // (never the value) and exits 1.
    setup.write(
        "/app/_rollout/by-hand",
        r#"{"percent": 100, "put": {"/app/Database/PoolSize": "500"}}"#,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = setup
            .cli()
            .args(["rollout", "status", "by-hand"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if text.contains("0 serving, 0 pending, 4 rejecting") {
            println!("{text}");
            assert_eq!(output.status.code(), Some(1));
            assert!(text.contains("rejected  pool_size:"), "{text}");
            assert!(!text.contains("500"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stdout(setup.cli().args(["rollout", "abort", "by-hand"]));

    // Promoted: every instance serves the changes, and the rollout is gone.
    let promoted = stdout(setup.cli().args(["rollout", "promote", "canary"]));
    assert!(
        promoted.starts_with("rollout canary promoted at revision"),
        "{promoted}"
    );
    assert_eq!(stdout(setup.cli().args(["get", "log_level"])), "DEBUG\n");
    assert_eq!(
        setup.etcd_value("/app/Database/Password").unwrap().0,
        "rolled-secret"
    );
    assert!(setup.etcd_value("/app/Feature/NewCheckout").is_none());
    assert!(setup.etcd_value("/app/_rollout/canary").is_none());
    assert_eq!(
        stdout(setup.cli().args(["rollout", "status"])),
        "no rollout under /app/\n"
    );
    // A rollback that would bring the rollout back shows no value of its document.
    let back = stdout(setup.cli().args([
        "rollback",
        "--to-rev",
        &revision.to_string(),
        "--dry-run",
        "--show-secrets",
    ]));
    assert!(
        back.contains("/app/_rollout/canary) = (a rollout document)"),
        "{back}"
    );
    assert!(!back.contains("rolled-secret\""), "{back}");

    // Aborted: back to the base.
    std::fs::write(setup.dir.path().join("quiet.env"), "LOG_LEVEL=ERROR\n").unwrap();
    stdout(
        setup
            .cli()
            .args(["rollout", "start", "quiet"])
            .arg(setup.dir.path().join("quiet.env"))
            .args(["--percent", "100"]),
    );
    let aborted = stdout(setup.cli().args(["rollout", "abort", "quiet"]));
    let revision: i64 = aborted
        .split_whitespace()
        .nth(5)
        .and_then(|word| word.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("{aborted}"));
    setup
        .cli()
        .args([
            "status",
            "--wait-rev",
            &revision.to_string(),
            "--timeout",
            "10",
        ])
        .assert()
        .success();
    for config in &instances {
        assert_eq!(
            config.snapshot().get("log_level").unwrap().to_string(),
            "DEBUG"
        );
        setup.runtime.block_on(config.stop());
    }
    setup
        .cli()
        .args(["rollout", "abort", "quiet"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains(
            "rollout quiet: there is no such rollout",
        ));
}
