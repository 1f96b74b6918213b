//! The demo that `scripts/demo.sh` runs: its `run` (everything its `main` does but set
//! up logging), with its lines checked in order: the values it loads, the live updates,
//! the rejection, the configuration served while etcd is down, and the watch resuming
//! after etcd restarts.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/demo.rs"]
mod demo;

/// Each of `expected` is found in `text` after the one before it.
fn in_order(text: &str, expected: &[&str]) {
    let mut rest = text;
    for line in expected {
        match rest.find(line) {
            Some(at) => rest = &rest[at + line.len()..],
            None => panic!("the demo did not write {line:?} where expected:\n{text}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_loads_follows_updates_and_keeps_serving_while_etcd_is_down() {
    let (out, buffer) = demo::Out::buffer();
    tokio::time::timeout(std::time::Duration::from_secs(120), demo::run(&out))
        .await
        .expect("the demo ends within 120 s")
        .expect("the demo succeeds");
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    // The listener writes from its own thread: its lines are in order among themselves.
    let (heard, said): (Vec<&str>, Vec<&str>) = text
        .lines()
        .partition(|line| line.starts_with("  [on_change]"));
    in_order(
        &said.join("\n"),
        &[
            "loaded 5 names at revision 6",
            r#"log_level                "INFO""#,
            "typed read: database.port as u16 = 5432",
            r#"log_level = "DEBUG""#,
            r#"database.host = "db2.internal""#,
            "database.port = 6432",
            "ai_http_timeout_seconds = 30.0",
            "rejected: ai_http_timeout_seconds: expected a number",
            r#"features.fast_search = "true""#,
            "features.new_checkout = (absent)",
            "etcd is down; reads still answer from memory (revision 11)",
            r#"log_level                "DEBUG""#,
            r#""ready":true"#,
            r#"log_level = "WARN""#,
            "health: Synced, revision 12",
            "== Done",
        ],
    );
    in_order(
        &heard.join("\n"),
        &[
            r#"[on_change] rev 7: log_level "INFO" -> "DEBUG""#,
            r#"[on_change] rev 8: database.host "db.internal" -> "db2.internal""#,
            "[on_change] rev 8: database.port 5432 -> 6432",
            r#"[on_change] rev 10: features.fast_search (absent) -> "true""#,
            r#"[on_change] rev 11: features.new_checkout "false" -> (absent)"#,
            r#"[on_change] rev 12: log_level "DEBUG" -> "WARN""#,
        ],
    );
    assert_eq!(heard.len(), 6, "one line per change: {heard:?}");
    assert!(!text.contains("did not arrive"), "{text}");
    assert!(text.contains(r#""state":"degraded""#), "{text}");
}
