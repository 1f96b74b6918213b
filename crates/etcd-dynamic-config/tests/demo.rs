//! The demo that `scripts/demo.sh` runs, run as it is (the example binary `cargo test`
//! builds beside the tests), its output checked line by line: the values it loads, the
//! live updates, the rejection, the configuration served while etcd is down, and the
//! watch resuming after etcd restarts.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The demo example, built by `cargo test` (all targets) into `target/<profile>/examples`.
fn demo_binary() -> PathBuf {
    let test = std::env::current_exe().expect("this test's path");
    let profile = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let binary = profile.join("examples").join("demo");
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --all-targets` (scripts/test.sh \
         does), which builds the examples",
        binary.display()
    );
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/demo.rs");
    let modified = |path: &PathBuf| path.metadata().and_then(|m| m.modified()).ok();
    assert!(
        modified(&binary) >= modified(&source),
        "{} is older than its source: run the tests with `cargo test --all-targets`",
        binary.display()
    );
    binary
}

#[test]
fn the_demo_loads_follows_updates_and_keeps_serving_while_etcd_is_down() {
    let mut child = Command::new(demo_binary())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("the demo's status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "the demo failed: {status}\n{out}\n{err}");

    // Each line is expected after the one before it.
    let expected = [
        "loaded 5 names at revision 6",
        r#"log_level                "INFO""#,
        "typed read: database.port as u16 = 5432",
        r#"[on_change] rev 7: log_level "INFO" -> "DEBUG""#,
        r#"[on_change] rev 8: database.host "db.internal" -> "db2.internal""#,
        "[on_change] rev 8: database.port 5432 -> 6432",
        "ai_http_timeout_seconds = 30.0",
        "rejected: ai_http_timeout_seconds: expected a number",
        r#"[on_change] rev 10: features.fast_search (absent) -> "true""#,
        r#"[on_change] rev 11: features.new_checkout "false" -> (absent)"#,
        "etcd is down; reads still answer from memory (revision 11)",
        r#"log_level                "DEBUG""#,
        r#""ready":true"#,
        r#"[on_change] rev 12: log_level "DEBUG" -> "WARN""#,
        "health: Synced, revision 12",
        "== Done",
    ];
    let mut rest = out.as_str();
    for line in expected {
        match rest.find(line) {
            Some(at) => rest = &rest[at + line.len()..],
            None => panic!("the demo did not print {line:?} where expected:\n{out}"),
        }
    }
    assert!(!out.contains("did not arrive"), "{out}");
    assert!(out.contains(r#""state":"degraded""#), "{out}");
}
