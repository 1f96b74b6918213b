use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::snapshot::{Source, ValueRef};
use std::time::Instant;

fn state() -> State {
    let keys = Arc::new(crate::schema::Schema::auto_discover())
        .bind("/app")
        .unwrap();
    State::new(keys, Entries::default())
}

fn kv(key: &str, value: &str, mod_revision: i64) -> Kv {
    Kv {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
        mod_revision,
    }
}

/// A put as etcd's watch reports it, without the key's previous value (its fingerprint
/// is unknown: see `put_over` for one with it).
fn put(key: &str, value: &str, mod_revision: i64, prev: Option<i64>) -> Event {
    Event {
        key: Arc::from(key),
        value: Some(value.as_bytes().to_vec()),
        mod_revision,
        prev_mod_revision: prev,
        prev_fingerprint: None,
        created: prev.is_none(),
    }
}

/// A put over the key's previous `(value, mod revision)`, or a creation.
fn put_over(key: &str, value: &str, mod_revision: i64, prev: Option<(&str, i64)>) -> Event {
    Event {
        prev_fingerprint: prev
            .map(|(value, revision)| fingerprint(key.as_bytes(), value.as_bytes(), revision)),
        ..put(key, value, mod_revision, prev.map(|(_, revision)| revision))
    }
}

fn del(key: &str, mod_revision: i64, prev: i64) -> Event {
    Event {
        key: Arc::from(key),
        value: None,
        mod_revision,
        prev_mod_revision: Some(prev),
        prev_fingerprint: None,
        created: false,
    }
}

/// A delete of the key's previous `(value, mod revision)`.
fn del_of(key: &str, mod_revision: i64, prev: (&str, i64)) -> Event {
    Event {
        prev_fingerprint: Some(fingerprint(key.as_bytes(), prev.0.as_bytes(), prev.1)),
        ..del(key, mod_revision, prev.1)
    }
}

/// The cluster every test etcd is.
const CLUSTER: u64 = 1;

fn header(revision: i64) -> Header {
    Header {
        cluster: CLUSTER,
        revision,
    }
}

/// A complete list at `revision`, holding as many keys as listed.
fn listed_at(kvs: Vec<Kv>, revision: i64) -> Input {
    let count = i64::try_from(kvs.len()).unwrap();
    Input::Listed {
        kvs,
        header: header(revision),
        count,
        at: Instant::now(),
    }
}

/// A watch response whose header is at its last event.
fn watched(events: Vec<Event>) -> Input {
    let head = events.iter().map(|event| event.mod_revision).max();
    Input::Watched {
        events,
        header: header(head.unwrap_or(1_000_000)),
        uncounted: 0,
    }
}

fn progress(revision: i64) -> Input {
    Input::Progress {
        header: header(revision),
        at: Instant::now(),
        trusted: false,
    }
}

fn confirmations(outputs: &[Output]) -> Vec<i64> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Confirmed { revision, .. } => Some(*revision),
            _ => None,
        })
        .collect()
}

fn published(outputs: &[Output]) -> Option<Arc<Snapshot>> {
    outputs.iter().rev().find_map(|output| match output {
        Output::Publish(snapshot) => Some(snapshot.clone()),
        _ => None,
    })
}

fn notifications(outputs: &[Output]) -> Vec<ConfigChange> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Notify(change) => Some(change.clone()),
            _ => None,
        })
        .collect()
}

fn control(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter(|output| matches!(output, Output::List(_) | Output::Watch { .. }))
        .map(|output| format!("{output:?}"))
        .collect()
}

fn values(snapshot: &Snapshot) -> BTreeMap<String, String> {
    snapshot
        .to_map()
        .into_iter()
        .map(|(name, value)| (name, value.to_string()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn change(name: &str, old: Option<&str>, new: Option<&str>) -> ValueChange {
    ValueChange {
        name: Arc::from(name),
        old: old.map(Value::from),
        new: new.map(Value::from),
        secret: false,
    }
}

/// A state that listed `/app/LogLevel=INFO` and `/app/Db/Name=5432` at revision 10.
fn listed() -> State {
    let mut state = state();
    state.step(listed_at(
        vec![
            kv("/app/LogLevel", "INFO", 7),
            kv("/app/Db/Name", "5432", 9),
        ],
        10,
    ));
    state
}

#[test]
fn first_list_publishes_and_watches_from_the_next_revision() {
    let mut state = state();
    let outputs = state.step(listed_at(
        vec![
            kv("/app/LogLevel", "INFO", 7),
            kv("/app/Db/Name", "5432", 9),
            kv("/app/Empty//Segment", "x", 3),
        ],
        10,
    ));
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.revision(), 10);
    assert_eq!(
        values(&snapshot),
        map(&[("db.name", "5432"), ("log_level", "INFO")])
    );
    assert_eq!(
        snapshot.entry("db.name").unwrap().source(),
        Source::Etcd {
            key: Arc::from("/app/Db/Name"),
            mod_revision: 9
        }
    );
    assert!(
        notifications(&outputs).is_empty(),
        "no change on first load"
    );
    assert_eq!(control(&outputs), ["Watch { from_revision: 11 }"]);
}

#[test]
fn watch_before_list_is_ignored_and_a_broken_start_lists_again() {
    let mut state = state();
    assert!(
        state
            .step(watched(vec![put("/app/A", "1", 5, None)]))
            .is_empty()
    );
    assert_eq!(
        control(&state.step(Input::Broken)),
        ["List(Initial)"],
        "nothing listed yet: list"
    );
}

#[test]
fn puts_and_deletes_publish_with_old_and_new_values() {
    let mut state = listed();
    let outputs = state.step(watched(vec![put("/app/LogLevel", "DEBUG", 11, Some(7))]));
    assert_eq!(published(&outputs).unwrap().revision(), 11);
    assert_eq!(
        notifications(&outputs),
        [ConfigChange {
            revision: 11,
            changes: vec![change("log_level", Some("INFO"), Some("DEBUG"))]
        }]
    );

    let outputs = state.step(watched(vec![
        put("/app/NewName", "fresh", 12, None),
        del("/app/Db/Name", 13, 9),
    ]));
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.revision(), 13);
    assert_eq!(
        values(&snapshot),
        map(&[("log_level", "DEBUG"), ("new_name", "fresh")])
    );
    assert_eq!(
        notifications(&outputs),
        [
            ConfigChange {
                revision: 12,
                changes: vec![change("new_name", None, Some("fresh"))]
            },
            ConfigChange {
                revision: 13,
                changes: vec![change("db.name", Some("5432"), None)]
            },
        ],
        "one notification per revision, in order"
    );
    assert!(control(&outputs).is_empty(), "keep watching");
}

#[test]
fn a_transaction_is_one_change_and_one_snapshot() {
    let mut state = listed();
    let outputs = state.step(watched(vec![
        put("/app/LogLevel", "WARN", 11, Some(7)),
        put("/app/Db/Name", "6432", 11, Some(9)),
        put("/app/Db/Host", "db", 11, None),
    ]));
    let snapshots: Vec<_> = outputs
        .iter()
        .filter(|output| matches!(output, Output::Publish(_)))
        .collect();
    assert_eq!(snapshots.len(), 1);
    let changes = notifications(&outputs);
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes[0].changes,
        [
            change("db.host", None, Some("db")),
            change("db.name", Some("5432"), Some("6432")),
            change("log_level", Some("INFO"), Some("WARN")),
        ]
    );
}

#[test]
fn unchanged_values_and_repeated_revisions_notify_nothing() {
    let mut state = listed();
    let outputs = state.step(watched(vec![put("/app/LogLevel", "INFO", 11, Some(7))]));
    assert!(notifications(&outputs).is_empty());
    assert_eq!(published(&outputs).unwrap().revision(), 11);

    let outputs = state.step(watched(vec![put("/app/LogLevel", "stale", 11, Some(7))]));
    assert!(outputs.is_empty(), "revision 11 is already applied");
}

#[test]
fn keys_outside_the_prefix_directory_are_ignored() {
    let mut state = listed();
    let outputs = state.step(watched(vec![put("/application/X", "1", 11, None)]));
    assert!(notifications(&outputs).is_empty());
    assert_eq!(values(&published(&outputs).unwrap()).len(), 2);
}

#[test]
fn broken_stream_resumes_from_the_next_revision() {
    let mut state = listed();
    state.step(watched(vec![put("/app/LogLevel", "DEBUG", 15, Some(7))]));
    assert_eq!(
        control(&state.step(Input::Broken)),
        ["Watch { from_revision: 16 }"]
    );
}

#[test]
fn a_progress_answer_ahead_of_queued_events_skips_nothing_and_publishes_nothing() {
    // etcd issue 15220: progress at 40 arrives while events 11 and 12 are still queued.
    let mut state = listed();
    let outputs = state.step(progress(40));
    assert!(published(&outputs).is_none(), "a watermark is not data");
    assert!(confirmations(&outputs).is_empty(), "40 is not reached yet");
    assert_eq!(state.revision(), 10);
    assert_eq!(
        control(&state.step(Input::Broken)),
        ["Watch { from_revision: 11 }"],
        "a resumed watch starts after the last applied event, not after the watermark"
    );
    let outputs = state.step(watched(vec![put("/app/LogLevel", "DEBUG", 11, Some(7))]));
    assert_eq!(
        published(&outputs).unwrap().revision(),
        11,
        "applied, not skipped"
    );
    assert!(confirmations(&outputs).is_empty());
    let outputs = state.step(watched(vec![put("/app/LogLevel", "WARN", 41, Some(11))]));
    assert_eq!(values(&published(&outputs).unwrap())["log_level"], "WARN");
    assert_eq!(
        confirmations(&outputs),
        [40],
        "reaching the watermark confirms the state as of the progress answer"
    );
}

#[test]
fn each_reported_head_confirms_when_the_events_reach_it_exactly() {
    let mut state = listed(); // at 10
    assert!(confirmations(&state.step(progress(12))).is_empty());
    assert!(confirmations(&state.step(progress(14))).is_empty());
    // Reaching 12 exactly confirms 12, not yet 14.
    let outputs = state.step(watched(vec![put("/app/LogLevel", "A", 12, Some(7))]));
    assert_eq!(confirmations(&outputs), [12]);
    let outputs = state.step(watched(vec![put("/app/LogLevel", "B", 13, Some(12))]));
    assert!(confirmations(&outputs).is_empty());
    let outputs = state.step(watched(vec![put("/app/LogLevel", "C", 14, Some(13))]));
    assert_eq!(confirmations(&outputs), [14]);
}

#[test]
fn a_trusted_progress_answer_confirms_at_once() {
    // etcd 3.4.25+ / 3.5.8+ send a progress notification only after every event up to it.
    let mut state = listed();
    let outputs = state.step(Input::Progress {
        header: header(40),
        at: Instant::now(),
        trusted: true,
    });
    assert_eq!(confirmations(&outputs), [40]);
    assert!(published(&outputs).is_none(), "still a watermark, not data");
    assert_eq!(state.revision(), 10);
    assert_eq!(
        control(&state.step(Input::Broken)),
        ["Watch { from_revision: 11 }"]
    );
}

#[test]
fn a_progress_answer_at_the_applied_revision_confirms_at_once() {
    let mut state = listed();
    let outputs = state.step(progress(10));
    assert_eq!(confirmations(&outputs), [10]);
    assert!(published(&outputs).is_none());
}

#[test]
fn a_head_read_confirms_only_when_nothing_changed_and_no_key_went() {
    let mut state = listed(); // 2 keys at revision 10
    let head = |count, changed| Input::Head {
        header: header(50),
        count,
        changed,
        at: Instant::now(),
    };
    assert!(
        confirmations(&state.step(head(2, true))).is_empty(),
        "a key changed"
    );
    assert!(
        confirmations(&state.step(head(1, false))).is_empty(),
        "a key went"
    );
    assert_eq!(confirmations(&state.step(head(2, false))), [50]);
    // A created key counts; a deleted one no more.
    state.step(watched(vec![put("/app/New", "1", 51, None)]));
    assert_eq!(
        confirmations(&state.step(head(2, false))),
        Vec::<i64>::new()
    );
    state.step(watched(vec![del("/app/New", 52, 51)]));
    let at_52 = Input::Head {
        header: header(52),
        count: 2,
        changed: false,
        at: Instant::now(),
    };
    assert_eq!(confirmations(&state.step(at_52)), [52]);
}

#[test]
fn keys_that_name_nothing_still_count() {
    let keys = Arc::new(
        crate::schema::Schema::builder()
            .key("LogLevel", "log_level")
            .build()
            .unwrap(),
    )
    .bind("/app")
    .unwrap();
    let mut state = State::new(keys, Entries::default());
    state.step(listed_at(
        vec![kv("/app/LogLevel", "INFO", 2), kv("/app/Other", "x", 3)],
        3,
    ));
    state.step(watched(vec![put("/app/Another", "y", 4, None)]));
    // A key outside the prefix directory (as `/application` is for `/app`) counts not.
    state.step(watched(vec![put("/application/X", "z", 5, None)]));
    let outputs = state.step(Input::Watched {
        events: Vec::new(),
        header: header(5),
        uncounted: 1, // a key that is not UTF-8
    });
    assert!(outputs.is_empty());
    let head = Input::Head {
        header: header(5),
        count: 4,
        changed: false,
        at: Instant::now(),
    };
    assert_eq!(confirmations(&state.step(head)), [5]);
}

/// What a probe finds where etcd holds `kvs` (key, value, mod revision).
fn found(kvs: &[(&str, &str, i64)]) -> Probe {
    Probe::Found {
        head: header(20),
        count: i64::try_from(kvs.len()).unwrap(),
        digest: kvs.iter().fold(0u64, |sum, (key, value, revision)| {
            sum.wrapping_add(fingerprint(key.as_bytes(), value.as_bytes(), *revision))
        }),
    }
}

#[test]
fn a_probe_of_another_history_with_as_many_revisions_relists() {
    let mut state = listed(); // LogLevel=INFO @7, Db/Name=5432 @9, at 10
    let probed = |found: Probe| Input::Probed {
        revision: 10,
        found,
    };
    let same = [("/app/Db/Name", "5432", 9), ("/app/LogLevel", "INFO", 7)];
    assert!(
        state.step(probed(found(&same))).is_empty(),
        "the same history"
    );
    assert!(
        state.step(probed(Probe::Compacted)).is_empty(),
        "compacted: the watch will say so"
    );
    let others: [&[(&str, &str, i64)]; 5] = [
        &[
            ("/app/Db/Name", "5432", 9),
            ("/app/LogLevel", "INFO", 7),
            ("/app/New", "x", 8),
        ],
        &[("/app/Db/Name", "5432", 8), ("/app/LogLevel", "INFO", 7)],
        &[("/app/Db/Name", "5432", 9)],
        // The same keys at the same revisions, another value.
        &[("/app/Db/Name", "5433", 9), ("/app/LogLevel", "INFO", 7)],
        // A key that names nothing is etcd's too.
        &[
            ("/app/Db/Name", "5432", 9),
            ("/app/LogLevel", "INFO", 7),
            ("/app/Empty//Segment", "x", 8),
        ],
    ];
    for kvs in others {
        assert_eq!(
            control(&state.step(probed(found(kvs)))),
            ["List(HistoryDiffers { revision: 10 })"],
            "{kvs:?}"
        );
    }
    // etcd has not reached the applied revision: its head went back, or it went back and
    // moved past again since.
    let future = |cluster, revision| Probe::Future {
        head: Header { cluster, revision },
    };
    let cases = [
        (
            future(CLUSTER, 4),
            "List(RevisionWentBack { applied: 10, reported: 4 })",
        ),
        (future(CLUSTER, 12), "List(HistoryDiffers { revision: 10 })"),
        (
            future(CLUSTER + 1, 4),
            "List(ClusterChanged { from: 1, to: 2 })",
        ),
    ];
    for (probe, expected) in cases {
        assert_eq!(control(&state.step(probed(probe))), [expected]);
    }
    // The same prefix from another cluster.
    let Probe::Found { count, digest, .. } = found(&same) else {
        unreachable!()
    };
    let other_cluster = Probe::Found {
        count,
        digest,
        head: Header {
            cluster: CLUSTER + 1,
            revision: 20,
        },
    };
    assert_eq!(
        control(&state.step(probed(other_cluster))),
        ["List(ClusterChanged { from: 1, to: 2 })"]
    );
    // A probe of an earlier revision is stale and says nothing.
    let stale = Input::Probed {
        revision: 9,
        found: found(&[]),
    };
    assert!(state.step(stale).is_empty());
}

#[test]
fn the_probe_compares_what_the_events_made_of_the_prefix() {
    let mut state = listed(); // LogLevel=INFO @7, Db/Name=5432 @9, at 10
    // A rejected value is etcd's value all the same; a key that names nothing too.
    state.step(watched(vec![
        Event {
            key: Arc::from("/app/LogLevel"),
            value: Some(vec![0xff]),
            mod_revision: 11,
            prev_mod_revision: Some(7),
            prev_fingerprint: Some(fingerprint(b"/app/LogLevel", b"INFO", 7)),
            created: false,
        },
        put_over("/app/Empty//Segment", "x", 11, None),
    ]));
    state.step(watched(vec![
        del_of("/app/Db/Name", 12, ("5432", 9)),
        put_over("/app/New", "n", 12, None),
    ]));
    state.step(watched(vec![put_over(
        "/app/New",
        "m",
        13,
        Some(("n", 12)),
    )]));
    let mut etcd = vec![
        (b"/app/Empty//Segment".to_vec(), b"x".to_vec(), 11),
        (b"/app/LogLevel".to_vec(), vec![0xff], 11),
        (b"/app/New".to_vec(), b"m".to_vec(), 13),
    ];
    let probe = |etcd: &[(Vec<u8>, Vec<u8>, i64)]| Input::Probed {
        revision: 13,
        found: Probe::Found {
            head: header(20),
            count: i64::try_from(etcd.len()).unwrap(),
            digest: etcd.iter().fold(0u64, |sum, (key, value, revision)| {
                sum.wrapping_add(fingerprint(key, value, *revision))
            }),
        },
    };
    assert!(state.step(probe(&etcd)).is_empty(), "the same history");
    etcd[2].1 = b"o".to_vec();
    assert_eq!(
        control(&state.step(probe(&etcd))),
        ["List(HistoryDiffers { revision: 13 })"]
    );
    // An event without the key's previous value: nothing to compare with.
    state.step(watched(vec![put("/app/New", "p", 14, Some(13))]));
    assert_eq!(
        control(&state.step(Input::Probed {
            revision: 14,
            found: found(&[]),
        })),
        ["List(Unverifiable { revision: 14 })"]
    );
}

#[test]
fn only_another_etcd_is_reported_as_one() {
    assert!(ListReason::ClusterChanged { from: 1, to: 2 }.is_another_etcd());
    assert!(ListReason::HistoryDiffers { revision: 3 }.is_another_etcd());
    assert!(
        ListReason::RevisionWentBack {
            applied: 9,
            reported: 3
        }
        .is_another_etcd()
    );
    for reason in [
        ListReason::Initial,
        ListReason::Compacted {
            compact_revision: 5,
        },
        ListReason::Diverged { key_revision: 5 },
    ] {
        assert!(!reason.is_another_etcd(), "{reason:?}");
    }
}

#[test]
fn another_cluster_or_a_head_below_the_applied_revision_relists_and_publishes_the_difference() {
    let mut state = listed(); // cluster 1, revision 10
    let other = Header {
        cluster: 2,
        revision: 3,
    };
    let outputs = state.step(Input::Progress {
        header: other,
        at: Instant::now(),
        trusted: false,
    });
    assert_eq!(
        control(&outputs),
        ["List(ClusterChanged { from: 1, to: 2 })"]
    );
    // Events from the other cluster are not applied on top of this one's state.
    let outputs = state.step(Input::Watched {
        events: vec![put("/app/LogLevel", "OTHER", 3, None)],
        header: other,
        uncounted: 0,
    });
    assert_eq!(
        control(&outputs),
        ["List(ClusterChanged { from: 1, to: 2 })"]
    );
    assert!(published(&outputs).is_none());
    // The same cluster restored from an older backup.
    for input in [
        Input::Progress {
            header: header(4),
            at: Instant::now(),
            trusted: true,
        },
        Input::Created {
            header: header(4),
            at: Instant::now(),
        },
        Input::Head {
            header: header(4),
            count: 2,
            changed: false,
            at: Instant::now(),
        },
        watched(vec![put("/app/LogLevel", "OLD", 4, None)]),
    ] {
        assert_eq!(
            control(&state.step(input)),
            ["List(RevisionWentBack { applied: 10, reported: 4 })"]
        );
    }
    // The re-list at the lower revision is the truth, and its difference is published.
    let outputs = state.step(Input::Listed {
        kvs: vec![kv("/app/LogLevel", "RESTORED", 2)],
        header: other,
        count: 1,
        at: Instant::now(),
    });
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.revision(), 3);
    assert_eq!(values(&snapshot), map(&[("log_level", "RESTORED")]));
    assert_eq!(
        notifications(&outputs)[0].changes,
        vec![
            change("db.name", Some("5432"), None),
            change("log_level", Some("INFO"), Some("RESTORED")),
        ]
    );
    assert_eq!(confirmations(&outputs), [3]);
    let outputs = state.step(Input::Progress {
        header: other,
        at: Instant::now(),
        trusted: false,
    });
    assert_eq!(
        confirmations(&outputs),
        [3],
        "the new cluster is the one now"
    );
}

#[test]
fn a_progress_answer_a_revision_behind_the_last_event_is_etcds_race_not_another_etcd() {
    // etcd 3.4.23 and 3.5.1 answered a progress request with revision 352 after the
    // event of 353 on the same stream (seen in CI): they read their head while the
    // write they had just sent events of was still finishing.
    let mut state = listed(); // cluster 1, revision 10
    let outputs = state.step(progress(9));
    assert!(control(&outputs).is_empty(), "{outputs:?}");
    assert_eq!(confirmations(&outputs), [9], "it holds what etcd had then");
    assert!(published(&outputs).is_none());
    assert_eq!(state.revision(), 10);
    // The stream goes on from where it was.
    let outputs = state.step(watched(vec![put_over(
        "/app/LogLevel",
        "DEBUG",
        11,
        Some(("INFO", 7)),
    )]));
    assert!(control(&outputs).is_empty(), "{outputs:?}");
    assert_eq!(published(&outputs).unwrap().revision(), 11);
    // Another cluster is told by the same answer all the same.
    let outputs = state.step(Input::Progress {
        header: Header {
            cluster: 2,
            revision: 9,
        },
        at: Instant::now(),
        trusted: false,
    });
    assert_eq!(
        control(&outputs),
        ["List(ClusterChanged { from: 1, to: 2 })"]
    );
}

#[test]
fn compaction_relists_and_publishes_the_difference() {
    let mut state = listed();
    assert_eq!(
        control(&state.step(Input::Compacted {
            compact_revision: 50
        })),
        ["List(Compacted { compact_revision: 50 })"]
    );
    // Meanwhile Db/Port was deleted, LogLevel changed, Feature created.
    let outputs = state.step(listed_at(
        vec![
            kv("/app/LogLevel", "ERROR", 44),
            kv("/app/Feature", "on", 45),
        ],
        60,
    ));
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.revision(), 60);
    assert_eq!(
        values(&snapshot),
        map(&[("feature", "on"), ("log_level", "ERROR")])
    );
    assert_eq!(
        notifications(&outputs),
        [ConfigChange {
            revision: 60,
            changes: vec![
                change("db.name", Some("5432"), None),
                change("feature", None, Some("on")),
                change("log_level", Some("INFO"), Some("ERROR")),
            ]
        }]
    );
    assert_eq!(control(&outputs), ["Watch { from_revision: 61 }"]);
}

#[test]
fn a_contradicting_event_relists_without_publishing_half_a_transaction() {
    let mut state = listed();
    // prev_kv says Db/Port was last written at 8, the cache holds 9: something was missed.
    let outputs = state.step(watched(vec![
        put("/app/LogLevel", "DEBUG", 11, Some(7)),
        put("/app/Db/Name", "1", 11, Some(8)),
    ]));
    assert!(
        published(&outputs).is_none(),
        "nothing of revision 11 is published"
    );
    assert_eq!(control(&outputs), ["List(Diverged { key_revision: 11 })"]);
    assert_eq!(state.revision(), 10);
    // The half-applied revision was rolled back: a re-list finding the published state
    // again reports no change.
    let outputs = state.step(listed_at(
        vec![
            kv("/app/LogLevel", "INFO", 7),
            kv("/app/Db/Name", "5432", 9),
        ],
        12,
    ));
    assert!(notifications(&outputs).is_empty(), "{outputs:?}");

    // A key etcd already knew (prev_kv present) that the cache never saw.
    let mut state = listed();
    let outputs = state.step(watched(vec![put("/app/Unknown", "1", 11, Some(3))]));
    assert_eq!(control(&outputs), ["List(Diverged { key_revision: 11 })"]);
}

#[test]
fn earlier_revisions_of_a_batch_stay_published_when_a_later_one_diverges() {
    let mut state = listed();
    let outputs = state.step(watched(vec![
        put("/app/LogLevel", "DEBUG", 11, Some(7)),
        put("/app/Db/Name", "1", 12, Some(8)),
    ]));
    assert_eq!(published(&outputs).unwrap().revision(), 11);
    assert_eq!(notifications(&outputs).len(), 1);
    assert_eq!(control(&outputs), ["List(Diverged { key_revision: 12 })"]);
}

#[test]
fn a_value_that_is_not_text_is_rejected_and_the_last_good_one_stays() {
    let mut state = listed();
    let outputs = state.step(watched(vec![Event {
        key: Arc::from("/app/LogLevel"),
        value: Some(vec![0xff, 0xfe]),
        mod_revision: 11,
        prev_mod_revision: Some(7),
        prev_fingerprint: None,
        created: false,
    }]));
    let rejection = outputs
        .iter()
        .find_map(|output| match output {
            Output::Reject(rejection) => Some(rejection.clone()),
            _ => None,
        })
        .expect("a rejection");
    assert_eq!(&*rejection.name, "log_level");
    assert_eq!(
        rejection.source,
        Source::Etcd {
            key: Arc::from("/app/LogLevel"),
            mod_revision: 11
        }
    );
    assert!(
        rejection.reason.contains("not UTF-8"),
        "{}",
        rejection.reason
    );
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.revision(), 11);
    assert_eq!(snapshot.get("log_level"), Some(ValueRef::String("INFO")));
    assert!(notifications(&outputs).is_empty());
    assert_eq!(state.rejections().count(), 1);

    // The next event's prev_kv is the rejected write: no divergence.
    let outputs = state.step(watched(vec![put("/app/LogLevel", "WARN", 12, Some(11))]));
    assert_eq!(
        notifications(&outputs)[0].changes,
        [change("log_level", Some("INFO"), Some("WARN"))]
    );
    assert_eq!(state.rejections().count(), 0);
}

#[test]
fn a_rejected_value_keeps_the_last_good_one_across_a_relist() {
    let mut state = listed();
    let outputs = state.step(listed_at(
        vec![
            Kv {
                key: "/app/LogLevel".to_owned(),
                value: vec![0xff],
                mod_revision: 20,
            },
            kv("/app/Db/Name", "5432", 9),
        ],
        21,
    ));
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.get("log_level"), Some(ValueRef::String("INFO")));
    assert!(notifications(&outputs).is_empty());
}

#[test]
fn colliding_keys_report_and_the_first_key_wins_until_it_goes() {
    let mut state = state();
    let outputs = state.step(listed_at(
        vec![
            kv("/app/log_level", "lower", 5),
            kv("/app/LogLevel", "upper", 6),
        ],
        6,
    ));
    assert!(
        outputs
            .iter()
            .any(|output| matches!(output, Output::Collide { name, .. } if &**name == "log_level"))
    );
    // "/app/LogLevel" sorts before "/app/log_level".
    assert_eq!(
        published(&outputs).unwrap().get("log_level"),
        Some(ValueRef::String("upper"))
    );
    assert_eq!(
        state.collisions(),
        [(
            Arc::from("log_level"),
            vec![Arc::from("/app/LogLevel"), Arc::from("/app/log_level")]
        )]
    );

    // Writes to the losing key change nothing visible.
    let outputs = state.step(watched(vec![put("/app/log_level", "lower2", 7, Some(5))]));
    assert!(notifications(&outputs).is_empty());

    // The winner goes: the other key takes over in the same revision.
    let outputs = state.step(watched(vec![del("/app/LogLevel", 8, 6)]));
    assert_eq!(
        notifications(&outputs)[0].changes,
        [change("log_level", Some("upper"), Some("lower2"))]
    );
    assert!(state.collisions().is_empty());
}

/// A state over a declared schema: a pool with a check, a required token (secret), and
/// a level with a default and an env var.
fn declared_state() -> State {
    use crate::schema::{Check, Name, Schema};
    let schema = Schema::builder()
        .discover(true)
        .name(Name::new("token").secret().required())
        .name(Name::new("level").default("INFO"))
        .check(Check::compare("min_pool", "<=", "max_pool").unwrap())
        .build()
        .unwrap();
    let schema = Arc::new(schema);
    let (fallback, _) = schema.fallback(&|var| (var == "LEVEL").then(|| "WARN".to_owned()));
    State::new(schema.bind("/app").unwrap(), fallback)
}

fn revision_rejections(outputs: &[Output]) -> Vec<RevisionRejection> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::RejectRevision(rejection) => Some(rejection.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn names_etcd_lacks_take_their_env_var_or_default_and_return_to_it_on_delete() {
    let mut state = declared_state();
    let outputs = state.step(listed_at(
        vec![kv("/app/Token", "t", 2), kv("/app/Level", "DEBUG", 3)],
        3,
    ));
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.get("level"), Some(ValueRef::String("DEBUG")));

    let outputs = state.step(watched(vec![del("/app/Level", 4, 3)]));
    let snapshot = published(&outputs).unwrap();
    assert_eq!(
        snapshot.get("level"),
        Some(ValueRef::String("WARN")),
        "the env var"
    );
    assert_eq!(
        snapshot.entry("level").unwrap().source(),
        Source::Env {
            var: Arc::from("LEVEL")
        }
    );
    assert_eq!(
        notifications(&outputs)[0].changes,
        [change("level", Some("DEBUG"), Some("WARN"))]
    );
}

#[test]
fn a_revision_breaking_a_check_is_held_back_until_a_valid_one() {
    let mut state = declared_state();
    state.step(listed_at(
        vec![
            kv("/app/Token", "t", 2),
            kv("/app/MinPool", "1", 3),
            kv("/app/MaxPool", "5", 4),
        ],
        4,
    ));
    // min_pool = 9 > max_pool = 5: rejected as a whole.
    let outputs = state.step(watched(vec![put("/app/MinPool", "9", 5, Some(3))]));
    assert!(published(&outputs).is_none());
    assert!(notifications(&outputs).is_empty());
    assert_eq!(
        revision_rejections(&outputs),
        [RevisionRejection {
            revision: 5,
            reasons: vec!["min_pool <= max_pool does not hold".into()]
        }]
    );
    assert!(state.rejected_revision().is_some());
    assert!(state.step(progress(9)).is_empty(), "held back");

    // The fix arrives: both changes are published together, relative to what was.
    let outputs = state.step(watched(vec![put("/app/MaxPool", "10", 10, Some(4))]));
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.revision(), 10);
    // `min_pool` is text by the naming rules (`*_min_*` needs a word before it); the
    // check reads numbers from text.
    assert_eq!(snapshot.get("min_pool"), Some(ValueRef::String("9")));
    let changes = &notifications(&outputs)[0].changes;
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].name.as_ref(), "max_pool");
    assert_eq!(changes[0].old, Some(Value::from("5")));
    assert_eq!(changes[1].name.as_ref(), "min_pool");
    assert_eq!(changes[1].old, Some(Value::from("1")));
    assert!(state.rejected_revision().is_none());
}

#[test]
fn deleting_a_required_name_is_rejected_and_secret_changes_are_marked() {
    let mut state = declared_state();
    state.step(listed_at(vec![kv("/app/Token", "t1", 2)], 2));
    let outputs = state.step(watched(vec![put("/app/Token", "t2", 3, Some(2))]));
    let change = &notifications(&outputs)[0].changes[0];
    assert!(change.secret, "the token is secret");
    let outputs = state.step(watched(vec![del("/app/Token", 4, 3)]));
    assert!(published(&outputs).is_none());
    assert_eq!(
        revision_rejections(&outputs)[0].reasons,
        ["required name token has no value"]
    );
}

#[test]
fn an_initial_list_that_breaks_a_check_publishes_nothing() {
    let mut state = declared_state();
    let outputs = state.step(listed_at(vec![kv("/app/Level", "DEBUG", 2)], 2));
    assert!(published(&outputs).is_none());
    assert_eq!(state.rejected_revision().unwrap().revision, 2);
}

// --- start-up ---

/// A start that falls back at its deadline.
const FALLING_BACK: Start = Start {
    fail_fast: false,
    resumed: None,
};

/// What the state answered `start()`, if it did.
fn answer(outputs: &[Output]) -> Option<Result<StartReport, StartFailure>> {
    outputs.iter().find_map(|output| match output {
        Output::Started(report) => Some(Ok(report.clone())),
        Output::StartFailed(failure) => Some(Err(failure.clone())),
        _ => None,
    })
}

fn started(outputs: &[Output]) -> StartReport {
    match answer(outputs) {
        Some(Ok(report)) => report,
        other => panic!("expected a start, got {other:?} in {outputs:?}"),
    }
}

fn created(revision: i64) -> Input {
    Input::Created {
        header: header(revision),
        at: Instant::now(),
    }
}

/// A cache file holding `pairs` at `revision`, plus one value the schema rejects.
fn cache_file(pairs: &[(&str, &str)], revision: i64) -> CacheRead {
    let source = |name: &str| Source::Cache {
        key: Arc::from(format!("/app/{name}")),
        mod_revision: revision,
    };
    let mut entries = Entries::default();
    for (name, value) in pairs {
        entries.insert(name, ValueRef::String(value), &source(name), false);
    }
    CacheRead::Loaded(crate::cache::Loaded {
        entries,
        revision,
        rejected: vec![Rejection {
            name: Arc::from("broken"),
            source: source("Broken"),
            reason: "not text".to_owned(),
        }],
    })
}

fn expired(cache: Option<CacheRead>) -> Input {
    Input::StartExpired { cache }
}

#[test]
fn start_is_answered_from_etcd_once_the_watch_is_registered() {
    let mut state = declared_state().starting(FALLING_BACK);
    let outputs = state.step(listed_at(vec![kv("/app/Token", "t", 2)], 7));
    assert!(published(&outputs).is_some());
    assert_eq!(answer(&outputs), None, "not before the watch is registered");

    let report = started(&state.step(created(7)));
    assert_eq!((report.source, report.revision), (StartSource::Etcd, 7));
    assert_eq!((report.loaded, report.cache_error.as_deref()), (2, None));
    assert!(report.missing.is_empty(), "{report:?}");
    // Answered once: a later registration or deadline says nothing.
    assert_eq!(answer(&state.step(created(8))), None);
    assert!(state.step(expired(None)).is_empty());
}

#[test]
fn at_the_deadline_the_cache_file_wins_over_env_vars_and_defaults() {
    let mut state = declared_state().starting(FALLING_BACK);
    let cache = cache_file(&[("token", "cached"), ("max_pool", "4")], 41);
    let outputs = state.step(expired(Some(cache)));
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.revision(), 41);
    assert_eq!(
        values(&snapshot),
        map(&[("token", "cached"), ("max_pool", "4"), ("level", "WARN")]),
        "the cache file, then the env var, then the default"
    );
    let report = started(&outputs);
    assert_eq!(
        (report.source, report.revision),
        (StartSource::CacheFile, 41)
    );
    assert_eq!(
        report.rejected.len(),
        1,
        "the cached value the schema rejects"
    );
    assert_eq!(&*report.rejected[0].name, "broken");

    // etcd answers later: its values replace the cache file's, and listeners hear the
    // difference to what was served.
    let outputs = state.step(listed_at(
        vec![kv("/app/Token", "fresh", 50), kv("/app/MaxPool", "4", 9)],
        50,
    ));
    assert_eq!(answer(&outputs), None, "start was answered already");
    assert_eq!(
        notifications(&outputs)[0].changes,
        [ValueChange {
            secret: true,
            ..change("token", Some("cached"), Some("fresh"))
        }]
    );
}

#[test]
fn without_a_usable_cache_file_env_vars_and_defaults_serve() {
    for (cache, cache_error) in [
        (None, None),
        (Some(CacheRead::Absent), None),
        (
            Some(CacheRead::Unusable("foreign format".to_owned())),
            Some("foreign format"),
        ),
    ] {
        // Without a required name in the fallbacks, the schema check fails.
        let mut state = declared_state().starting(FALLING_BACK);
        let outputs = state.step(expired(cache.clone()));
        assert!(published(&outputs).is_none());
        assert_eq!(
            answer(&outputs),
            Some(Err(StartFailure::InvalidFallback(vec![
                "required name token has no value".to_owned()
            ]))),
            "{cache:?}"
        );

        let mut state = self::state().starting(FALLING_BACK);
        let outputs = state.step(expired(cache.clone()));
        assert_eq!(published(&outputs).unwrap().revision(), 0);
        let report = started(&outputs);
        assert_eq!(report.source, StartSource::Fallback, "{cache:?}");
        assert_eq!(report.cache_error.as_deref(), cache_error);
    }
}

#[test]
fn fail_fast_fails_at_the_deadline_and_publishes_nothing() {
    let mut state = declared_state().starting(Start {
        fail_fast: true,
        resumed: None,
    });
    let outputs = state.step(expired(Some(cache_file(&[("token", "t")], 3))));
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert_eq!(answer(&outputs), Some(Err(StartFailure::Timeout)));
}

#[test]
fn a_restart_keeps_serving_what_the_last_run_served() {
    let mut state = declared_state().starting(Start {
        fail_fast: false,
        resumed: Some((StartSource::Etcd, 30)),
    });
    let outputs = state.step(expired(Some(cache_file(&[("token", "old")], 3))));
    assert!(published(&outputs).is_none(), "the cache file is older");
    let report = started(&outputs);
    assert_eq!((report.source, report.revision), (StartSource::Etcd, 30));
}

#[test]
fn a_deadline_after_the_list_answers_with_etcd_values() {
    let mut state = declared_state().starting(Start {
        fail_fast: true,
        resumed: None,
    });
    state.step(listed_at(vec![kv("/app/Token", "t", 2)], 5));
    let outputs = state.step(expired(Some(cache_file(&[("token", "c")], 3))));
    assert!(published(&outputs).is_none());
    let report = started(&outputs);
    assert_eq!((report.source, report.revision), (StartSource::Etcd, 5));
}

#[test]
fn a_first_list_that_breaks_a_check_fails_the_start() {
    let mut state = declared_state().starting(FALLING_BACK);
    let outputs = state.step(listed_at(vec![kv("/app/Level", "DEBUG", 2)], 2));
    assert!(published(&outputs).is_none());
    assert_eq!(
        answer(&outputs),
        Some(Err(StartFailure::InvalidEtcd(vec![
            "required name token has no value".to_owned()
        ])))
    );
    // Without a start to answer, the same list keeps the last good snapshot instead.
    let mut state = declared_state();
    let outputs = state.step(listed_at(vec![kv("/app/Level", "DEBUG", 2)], 2));
    assert_eq!(answer(&outputs), None);
    assert!(
        outputs
            .iter()
            .any(|output| matches!(output, Output::Watch { from_revision: 3 })),
        "{outputs:?}"
    );
}

// --- property: the snapshot always equals a replay of the events ---

/// Keys the generated histories write, two of which collide on `log_level`.
const KEYS: [&str; 7] = [
    "/app/LogLevel",
    "/app/log_level",
    "/app/Db/Host",
    "/app/Db/Name",
    "/app/Feature",
    "/app/Deep/Nested/Key",
    "/elsewhere/Key",
];

#[derive(Debug, Clone)]
enum Step {
    /// One transaction: (key index, Some(value) to put, None to delete).
    Txn(Vec<(usize, Option<u8>)>),
    /// Deliver the pending events, split after this many revisions.
    Deliver(usize),
    /// The stream breaks: pending events are lost, the watch resumes.
    Break,
    /// The history is compacted while disconnected: the resumed watch is refused.
    Compact,
    /// A progress answer at etcd's head, whether or not events are still queued (etcd
    /// issue 15220).
    Progress,
    /// A progress answer a revision below the last event applied: etcd before 3.4.25 /
    /// 3.5.8 reads its head for it while the write it sent events of is finishing.
    LateProgress,
    /// A head read: the key count and whether a key changed after the applied revision.
    Head,
    /// A history probe, as before a resumed watch: etcd's keys at the applied revision.
    Probe,
    /// etcd is wiped and started again empty, under another cluster id (`true`) or the
    /// same one (it derives from the same flags). The library reconnects at the next
    /// step that is not a write: first its history probe, then the watch.
    Wipe(bool),
    /// etcd is restored from an older backup (same cluster id) at this share of its
    /// history.
    Restore(u8),
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => prop::collection::vec((0..KEYS.len(), prop::option::of(0u8..4)), 1..4).prop_map(Step::Txn),
        4 => (1usize..4).prop_map(Step::Deliver),
        1 => Just(Step::Break),
        1 => Just(Step::Compact),
        2 => Just(Step::Progress),
        1 => Just(Step::LateProgress),
        2 => Just(Step::Head),
        2 => Just(Step::Probe),
        1 => any::<bool>().prop_map(Step::Wipe),
        1 => (0u8..100).prop_map(Step::Restore),
    ]
}

/// etcd as a plain model: key → (value, mod revision), its event history, and the
/// histories of the etcds it replaced.
struct Model {
    cluster: u64,
    revision: i64,
    kvs: BTreeMap<&'static str, (String, i64)>,
    history: Vec<Event>,
    /// Earlier histories, by epoch; the current one is `epoch`.
    past: Vec<Vec<Event>>,
}

impl Model {
    fn new() -> Self {
        Self {
            cluster: CLUSTER,
            revision: 1,
            kvs: BTreeMap::new(),
            history: Vec::new(),
            past: Vec::new(),
        }
    }

    fn epoch(&self) -> usize {
        self.past.len()
    }

    fn header(&self) -> Header {
        Header {
            cluster: self.cluster,
            revision: self.revision,
        }
    }

    fn txn(&mut self, ops: &[(usize, Option<u8>)]) {
        let revision = self.revision + 1;
        let mut wrote = false;
        let mut seen = std::collections::HashSet::new();
        for &(index, value) in ops {
            let key = KEYS[index];
            if !seen.insert(key) {
                continue; // etcd refuses a transaction that writes one key twice
            }
            let prev = self.kvs.get(key).cloned();
            let prev = prev.as_ref().map(|(value, rev)| (value.as_str(), *rev));
            match value {
                Some(value) => {
                    let value = format!("v{value}");
                    self.history.push(put_over(key, &value, revision, prev));
                    self.kvs.insert(key, (value, revision));
                    wrote = true;
                }
                None => {
                    if let Some(prev) = prev {
                        self.history.push(del_of(key, revision, prev));
                        self.kvs.remove(key);
                        wrote = true;
                    }
                }
            }
        }
        if wrote {
            self.revision = revision;
        }
    }

    fn wipe(&mut self, new_cluster: bool) {
        self.past.push(std::mem::take(&mut self.history));
        self.kvs.clear();
        self.revision = 1;
        if new_cluster {
            self.cluster += 1;
        }
    }

    /// What the library's history probe finds at `revision`.
    fn probe(&self, revision: i64, compacted: bool) -> Probe {
        if revision > self.revision {
            return Probe::Future {
                head: self.header(),
            };
        }
        if compacted && revision < self.revision {
            return Probe::Compacted;
        }
        let under: Vec<_> = replay(&self.history, revision)
            .into_iter()
            .filter(|(key, _)| key.starts_with("/app/"))
            .collect();
        Probe::Found {
            head: self.header(),
            count: i64::try_from(under.len()).unwrap(),
            digest: under.iter().fold(0u64, |sum, (key, (value, revision))| {
                sum.wrapping_add(fingerprint(key.as_bytes(), value.as_bytes(), *revision))
            }),
        }
    }

    fn restore(&mut self, share: u8) {
        let to = self.revision * i64::from(share) / 100;
        let kept: Vec<Event> = self
            .history
            .iter()
            .filter(|event| event.mod_revision <= to)
            .cloned()
            .collect();
        self.past.push(std::mem::replace(&mut self.history, kept));
        self.kvs = replay(&self.history, to);
        self.revision = to.max(1);
    }

    /// The history of an epoch.
    fn history_of(&self, epoch: usize) -> &[Event] {
        self.past.get(epoch).unwrap_or(&self.history)
    }

    fn list(&self) -> Input {
        let kvs: Vec<Kv> = self
            .kvs
            .iter()
            .filter(|(key, _)| key.starts_with("/app/"))
            .map(|(key, (value, rev))| kv(key, value, *rev))
            .collect();
        Input::Listed {
            count: i64::try_from(kvs.len()).unwrap(),
            kvs,
            header: self.header(),
            at: Instant::now(),
        }
    }

    fn head(&self, applied: i64) -> Input {
        let under: Vec<_> = self
            .kvs
            .iter()
            .filter(|(key, _)| key.starts_with("/app/"))
            .collect();
        Input::Head {
            header: self.header(),
            count: i64::try_from(under.len()).unwrap(),
            changed: under.iter().any(|(_, (_, rev))| *rev > applied),
            at: Instant::now(),
        }
    }
}

/// Key → (value, mod revision) after the events of `history` up to `revision`.
fn replay(history: &[Event], revision: i64) -> BTreeMap<&'static str, (String, i64)> {
    let mut kvs = BTreeMap::new();
    for event in history.iter().filter(|e| e.mod_revision <= revision) {
        let key = KEYS.iter().find(|k| **k == &*event.key).unwrap();
        match &event.value {
            Some(value) => {
                kvs.insert(
                    *key,
                    (
                        String::from_utf8(value.clone()).unwrap(),
                        event.mod_revision,
                    ),
                );
            }
            None => {
                kvs.remove(*key);
            }
        }
    }
    kvs
}

/// Names → values: the first key in order wins a name.
fn expected(kvs: &BTreeMap<&'static str, (String, i64)>) -> BTreeMap<String, String> {
    let mut expected = BTreeMap::new();
    for (key, (value, _)) in kvs {
        if let Some(relative) = key.strip_prefix("/app/") {
            let name = crate::schema::naming::name_from_path(relative).unwrap();
            expected.entry(name).or_insert_with(|| value.clone());
        }
    }
    expected
}

fn apply_changes(
    mut view: BTreeMap<String, String>,
    change: &ConfigChange,
) -> BTreeMap<String, String> {
    for value_change in &change.changes {
        let name = value_change.name.to_string();
        assert_eq!(
            view.get(&name).map(String::as_str),
            value_change.old.as_ref().map(Value::to_string).as_deref(),
            "old value of {name} at revision {}",
            change.revision
        );
        match &value_change.new {
            Some(value) => view.insert(name, value.to_string()),
            None => view.remove(&name),
        };
    }
    view
}

/// A watch on the model, as the I/O loop holds it.
struct Stream {
    /// Events of the current history already handed over (or skipped).
    delivered: usize,
    from_revision: i64,
}

impl Stream {
    fn resume(model: &Model, from_revision: i64) -> Self {
        Self {
            delivered: model
                .history
                .iter()
                .take_while(|e| e.mod_revision < from_revision)
                .count(),
            from_revision,
        }
    }

    /// Whole revisions from the watch start, up to `revisions` of them.
    fn take(&mut self, model: &Model, revisions: usize) -> Vec<Event> {
        let pending: Vec<Event> = model.history[self.delivered..]
            .iter()
            .filter(|event| event.mod_revision >= self.from_revision)
            .cloned()
            .collect();
        let batch_end: usize = pending
            .chunk_by(|a, b| a.mod_revision == b.mod_revision)
            .take(revisions)
            .map(<[Event]>::len)
            .sum();
        self.delivered = model.history.len() - (pending.len() - batch_end);
        if let Some(last) = pending[..batch_end].last() {
            self.from_revision = last.mod_revision + 1;
        }
        pending[..batch_end]
            .iter()
            .filter(|event| event.key.starts_with("/app/"))
            .cloned()
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Whatever the order of events, progress answers, head reads, breaks, compactions,
    /// wipes and restores: every published snapshot equals etcd's prefix at its
    /// revision, every confirmation is true, nothing is skipped, and a listener's
    /// history is consistent.
    #[test]
    fn snapshots_and_confirmations_match_etcd_whatever_the_order(
        steps in prop::collection::vec(step_strategy(), 1..80)
    ) {
        let mut model = Model::new();
        model.txn(&[(0, Some(0)), (2, Some(1))]);
        let mut state = state();
        let first = state.step(model.list());
        let mut snapshot = published(&first).unwrap();
        let mut snapshot_epoch = 0;
        let mut state_epoch = 0;
        let mut stream = Stream::resume(&model, model.revision + 1);
        let mut compacted = false;
        // What a listener sees: the first snapshot plus every change in order.
        let mut listener_view = values(&snapshot);

        // After a wipe or restore: the revision the watch resumes from once reconnected.
        let mut disconnected: Option<i64> = None;
        let mut outage = false;

        // A last step reconnects a library still disconnected.
        for step in steps.into_iter().chain([Step::Progress]) {
            let reconnect = match step {
                Step::Txn(_) => None,
                _ => disconnected.take(),
            };
            let mut outputs = if let Some(from_revision) = reconnect {
                // As the I/O loop does after an outage: the history probe, then the watch,
                // whose creation answer shows etcd's header.
                let revision = state.revision();
                let found = model.probe(revision, compacted);
                let mut outputs = state.step(Input::Probed { revision, found: found.clone() });
                if outputs.is_empty() {
                    if matches!(found, Probe::Found { .. }) {
                        // etcd's prefix at the applied revision is the state's: the
                        // state (and a snapshot at its revision) is of this etcd too.
                        if snapshot.revision() == revision {
                            snapshot_epoch = model.epoch();
                        }
                        state_epoch = model.epoch();
                    }
                    outage = false;
                    outputs = state.step(Input::Created { header: model.header(), at: Instant::now() });
                    outputs.push(Output::Watch { from_revision });
                }
                outputs
            } else {
                match step {
                Step::Txn(ops) => {
                    model.txn(&ops);
                    Vec::new()
                }
                Step::Deliver(revisions) => {
                    let events = stream.take(&model, revisions);
                    state.step(Input::Watched { events, header: model.header(), uncounted: 0 })
                }
                Step::Break => state.step(Input::Broken),
                Step::Compact => {
                    compacted = true;
                    state.step(Input::Broken)
                }
                Step::Progress => state.step(Input::Progress { header: model.header(), at: Instant::now(), trusted: false }),
                Step::LateProgress => {
                    let header = Header { revision: state.revision() - 1, ..model.header() };
                    state.step(Input::Progress { header, at: Instant::now(), trusted: false })
                }
                Step::Head => state.step(model.head(state.revision())),
                Step::Probe => {
                    let revision = state.revision();
                    state.step(Input::Probed { revision, found: model.probe(revision, compacted) })
                }
                Step::Wipe(_) | Step::Restore(_) => {
                    match step {
                        Step::Wipe(new_cluster) => model.wipe(new_cluster),
                        Step::Restore(share) => model.restore(share),
                        _ => unreachable!(),
                    }
                    // etcd restarts: the stream breaks; etcd may be written to before the
                    // library reconnects.
                    outage = true;
                    state.step(Input::Broken)
                }
                }
            };
            // Carry out what the state asked for, as the I/O loop does.
            loop {
                let asked = outputs.iter().rev().find_map(|output| match output {
                    Output::List(_) | Output::Watch { .. } => Some(output.clone()),
                    _ => None,
                });
                let more = match asked {
                    Some(Output::List(reason)) => {
                        prop_assert!(!matches!(reason, ListReason::Unverifiable { .. }),
                            "every event came with the key's previous value");
                        if state_epoch == model.epoch() {
                            prop_assert!(
                                !matches!(reason, ListReason::Diverged { .. }
                                    | ListReason::ClusterChanged { .. }
                                    | ListReason::RevisionWentBack { .. }
                                    | ListReason::HistoryDiffers { .. }),
                                "a consistent history never asks for a re-list: {:?}", reason
                            );
                        }
                        outage = false;
                        state_epoch = model.epoch();
                        compacted = false;
                        let listed = state.step(model.list());
                        stream = Stream::resume(&model, model.revision + 1);
                        Some(listed)
                    }
                    Some(Output::Watch { from_revision }) if outage => {
                        disconnected = Some(from_revision);
                        None
                    }
                    Some(Output::Watch { from_revision }) => {
                        if compacted && from_revision <= model.revision {
                            compacted = false;
                            Some(state.step(Input::Compacted { compact_revision: model.revision }))
                        } else {
                            stream = Stream::resume(&model, from_revision);
                            None
                        }
                    }
                    _ => None,
                };
                // Check this batch before the next one replaces it.
                for change in notifications(&outputs) {
                    listener_view = apply_changes(listener_view, &change);
                }
                if let Some(next) = published(&outputs) {
                    if snapshot_epoch == state_epoch {
                        prop_assert!(next.revision() >= snapshot.revision(), "revisions only grow within one etcd");
                    }
                    snapshot = next;
                    snapshot_epoch = state_epoch;
                }
                for confirmed in confirmations(&outputs) {
                    let history = model.history_of(state_epoch);
                    prop_assert!(confirmed <= model.revision || state_epoch < model.epoch(),
                        "confirmed {} beyond etcd's head {}", confirmed, model.revision);
                    if state.revision() < confirmed {
                        prop_assert_eq!(
                            values(&state.unchecked_snapshot()),
                            expected(&replay(history, confirmed)),
                            "confirmed at {} while applied {}", confirmed, state.revision()
                        );
                    }
                }
                match more {
                    Some(next) => outputs = next,
                    None => break,
                }
            }
            // The published snapshot equals etcd's state at the snapshot's revision.
            let history = model.history_of(snapshot_epoch);
            prop_assert_eq!(values(&snapshot), expected(&replay(history, snapshot.revision())));
            prop_assert_eq!(&listener_view, &values(&snapshot));
        }

        // Deliver everything: the snapshot catches up with etcd.
        let mut outputs = state.step(Input::Progress { header: model.header(), at: Instant::now(), trusted: false });
        if outputs.iter().any(|o| matches!(o, Output::List(_))) {
            outputs = state.step(model.list());
        } else {
            let rest = stream.take(&model, usize::MAX);
            outputs.extend(state.step(Input::Watched { events: rest, header: model.header(), uncounted: 0 }));
        }
        if let Some(next) = published(&outputs) {
            snapshot = next;
        }
        for change in notifications(&outputs) {
            listener_view = apply_changes(listener_view, &change);
        }
        prop_assert_eq!(values(&snapshot), expected(&model.kvs));
        prop_assert_eq!(&listener_view, &values(&snapshot));
        let outputs = state.step(model.head(state.revision()));
        prop_assert_eq!(confirmations(&outputs), vec![model.revision], "caught up: confirmed");
    }
}

// --- behaviours the mutation run found unpinned ---

#[test]
fn a_confirmation_drops_only_the_heads_it_reaches() {
    let mut state = listed(); // LogLevel @7, Db/Name @9, at 10; two keys
    // etcd's head at 12 and at 15, neither reached yet.
    state.step(progress(12));
    state.step(progress(15));
    state.step(watched(vec![put("/app/A", "1", 11, None)]));
    state.step(watched(vec![put("/app/B", "1", 12, None)]));
    // Reaching 12 confirms it; 15 stays a target.
    let at_12 = Input::Head {
        header: header(12),
        count: 4,
        changed: false,
        at: Instant::now(),
    };
    assert_eq!(confirmations(&state.step(at_12)), [12]);
    // A later event does not confirm 12 again (with its older moment).
    let outputs = state.step(watched(vec![put("/app/C", "1", 13, None)]));
    assert_eq!(confirmations(&outputs), Vec::<i64>::new());
    // Reaching 15 confirms 15: the confirmation at 12 kept the higher target.
    state.step(watched(vec![put("/app/D", "1", 14, None)]));
    let outputs = state.step(watched(vec![put("/app/E", "1", 15, None)]));
    assert_eq!(confirmations(&outputs), [15]);
    // A head read that confirms etcd's head 20 (written elsewhere) drops target 20 too:
    // reaching a later revision does not confirm 20 again with its older moment.
    state.step(progress(20));
    let at_20 = Input::Head {
        header: header(20),
        count: 7,
        changed: false,
        at: Instant::now(),
    };
    assert_eq!(confirmations(&state.step(at_20)), [20]);
    let outputs = state.step(watched(vec![put("/app/F", "1", 21, None)]));
    assert_eq!(confirmations(&outputs), Vec::<i64>::new());
}

#[test]
fn a_list_that_etcd_did_not_sort_is_named_in_key_order() {
    // `/app/LogLevel` sorts before `/app/log_level`: it owns `log_level`, whatever the
    // order the list came in.
    for kvs in [
        vec![
            kv("/app/log_level", "lower", 3),
            kv("/app/LogLevel", "upper", 2),
        ],
        vec![
            kv("/app/LogLevel", "upper", 2),
            kv("/app/log_level", "lower", 3),
        ],
    ] {
        let mut state = state();
        let outputs = state.step(listed_at(kvs, 3));
        let snapshot = published(&outputs).unwrap();
        assert_eq!(values(&snapshot), map(&[("log_level", "upper")]));
    }
}

#[test]
fn a_rejected_owner_keeps_its_name_against_a_later_colliding_key() {
    use crate::schema::{Name, Schema};
    let schema = Schema::builder()
        .discover(true)
        .name(Name::new("log_level").one_of(["INFO", "DEBUG"]))
        .build()
        .unwrap();
    let mut state = State::new(Arc::new(schema).bind("/app").unwrap(), Entries::default());
    state.step(listed_at(vec![kv("/app/LogLevel", "INFO", 2)], 2));
    // The owner's new value is rejected: the name keeps INFO, and the key still owns it.
    state.step(watched(vec![put("/app/LogLevel", "LOUD", 3, Some(2))]));
    // A key that sorts after the owner names the same name: it waits in the shadows.
    let outputs = state.step(watched(vec![put("/app/log_level", "DEBUG", 4, None)]));
    assert!(notifications(&outputs).is_empty(), "no value changed");
    assert_eq!(
        values(&state.unchecked_snapshot()),
        map(&[("log_level", "INFO")])
    );
    // The owner goes: the shadowed key takes the name.
    let outputs = state.step(watched(vec![del("/app/LogLevel", 5, 3)]));
    assert_eq!(
        values(&published(&outputs).unwrap()),
        map(&[("log_level", "DEBUG")])
    );
}

#[test]
fn a_revision_that_contradicts_the_cache_changes_nothing_before_the_re_list() {
    let mut state = listed(); // LogLevel=INFO @7, Db/Name=5432 @9, at 10
    let before = values(&state.unchecked_snapshot());
    // The first event applies, the second contradicts the cache: the whole revision is
    // undone, and a re-list asked for.
    let outputs = state.step(watched(vec![
        put_over("/app/LogLevel", "DEBUG", 11, Some(("INFO", 7))),
        put("/app/Db/Name", "1", 11, Some(8)),
    ]));
    assert_eq!(control(&outputs), ["List(Diverged { key_revision: 11 })"]);
    assert!(published(&outputs).is_none());
    assert_eq!(values(&state.unchecked_snapshot()), before);
    assert_eq!(state.revision(), 10);
    // Its key count and digest are back too: etcd's prefix at 10 still holds.
    let probe = Input::Probed {
        revision: 10,
        found: found(&[("/app/Db/Name", "5432", 9), ("/app/LogLevel", "INFO", 7)]),
    };
    assert!(state.step(probe).is_empty());
}

#[test]
fn the_engine_reads_whether_a_list_was_applied_and_the_schema_of_the_prefix() {
    let mut state = declared_state();
    assert!(!state.is_listed(), "an attempt dropped now lists again");
    state.step(listed_at(vec![kv("/app/Token", "t", 2)], 2));
    assert!(state.is_listed(), "an attempt dropped now watches on");
    // The cache file is read through the prefix's own schema (its declared names).
    assert!(
        state
            .schema()
            .declared("token")
            .is_some_and(|name| name.is_secret())
    );
    assert!(state.schema().declared("level").is_some());
}

/// The rollout document at `/app/_rollout/<name>`.
fn rollout_doc(
    percent: u8,
    labels: &[(&str, &str)],
    put: &[(&str, &str)],
    delete: &[&str],
) -> String {
    serde_json::json!({
        "percent": percent,
        "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        "put": put.iter().cloned().collect::<BTreeMap<_, _>>(),
        "delete": delete,
    })
    .to_string()
}

/// `state()` for the instance `pod-1` in zone `eu`.
fn member_state() -> State {
    state().member(Some(Announce::new("pod-1").label("zone", "eu")))
}

fn rollout_rejections(outputs: &[Output]) -> Vec<RolloutRejection> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::RejectRollout(rejection) => Some(rejection.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_targeted_instance_serves_base_and_rollout_at_one_revision_and_hears_the_change() {
    let doc = rollout_doc(100, &[("zone", "eu")], &[("/app/LogLevel", "DEBUG")], &[]);
    let base = vec![
        kv("/app/LogLevel", "INFO", 7),
        kv("/app/Db/Name", "5432", 9),
    ];
    let mut targeted = member_state();
    let mut outsider = state().member(Some(Announce::new("pod-2").label("zone", "us")));
    let mut anonymous = state();
    for state in [&mut targeted, &mut outsider, &mut anonymous] {
        state.step(listed_at(base.clone(), 10));
    }
    let start = watched(vec![put("/app/_rollout/canary", &doc, 11, None)]);

    let outputs = targeted.step(start.clone());
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.revision(), 11);
    assert_eq!(
        values(&snapshot),
        map(&[("log_level", "DEBUG"), ("db.name", "5432")]),
        "no name for the rollout key itself"
    );
    assert_eq!(snapshot.rollouts(), [Arc::from("canary")]);
    assert_eq!(
        snapshot.entry("log_level").unwrap().source().to_string(),
        "rollout canary of etcd key /app/LogLevel @ rev 11"
    );
    assert_eq!(
        notifications(&outputs)[0],
        ConfigChange {
            revision: 11,
            changes: vec![change("log_level", Some("INFO"), Some("DEBUG"))]
        }
    );

    for other in [&mut outsider, &mut anonymous] {
        let outputs = other.step(start.clone());
        let snapshot = published(&outputs).unwrap();
        assert_eq!(snapshot.revision(), 11);
        assert_eq!(
            values(&snapshot),
            map(&[("log_level", "INFO"), ("db.name", "5432")])
        );
        assert!(snapshot.rollouts().is_empty());
        assert!(notifications(&outputs).is_empty());
        assert!(rollout_rejections(&outputs).is_empty());
    }

    // The base moves on under the rollout: the rolled-out name keeps the rollout's
    // value, the others follow, and only they are notified.
    let outputs = targeted.step(watched(vec![
        put("/app/LogLevel", "WARN", 12, Some(7)),
        put("/app/Db/Name", "6000", 12, Some(9)),
    ]));
    let snapshot = published(&outputs).unwrap();
    assert_eq!(
        values(&snapshot),
        map(&[("log_level", "DEBUG"), ("db.name", "6000")])
    );
    assert_eq!(
        notifications(&outputs)[0].changes,
        [change("db.name", Some("5432"), Some("6000"))]
    );

    // Aborted: back to the base as it is now.
    let outputs = targeted.step(watched(vec![del("/app/_rollout/canary", 13, 11)]));
    let snapshot = published(&outputs).unwrap();
    assert_eq!(
        values(&snapshot),
        map(&[("log_level", "WARN"), ("db.name", "6000")])
    );
    assert!(snapshot.rollouts().is_empty());
    assert_eq!(
        notifications(&outputs)[0].changes,
        [change("log_level", Some("DEBUG"), Some("WARN"))]
    );
}

#[test]
fn promotion_in_one_revision_changes_nothing_the_targeted_instance_serves() {
    let doc = rollout_doc(100, &[], &[("/app/LogLevel", "DEBUG")], &["/app/Db/Name"]);
    let base = vec![
        kv("/app/LogLevel", "INFO", 7),
        kv("/app/Db/Name", "5432", 9),
        kv("/app/_rollout/canary", &doc, 10),
    ];
    let mut targeted = member_state();
    let mut anonymous = state();
    let first = published(&targeted.step(listed_at(base.clone(), 10))).unwrap();
    assert_eq!(
        values(&first),
        map(&[("log_level", "DEBUG")]),
        "the delete too"
    );
    published(&anonymous.step(listed_at(base, 10))).unwrap();

    let promote = watched(vec![
        put("/app/LogLevel", "DEBUG", 11, Some(7)),
        del("/app/Db/Name", 11, 9),
        del("/app/_rollout/canary", 11, 10),
    ]);
    let outputs = targeted.step(promote.clone());
    let snapshot = published(&outputs).unwrap();
    assert_eq!(values(&snapshot), values(&first));
    assert_eq!(snapshot.revision(), 11);
    assert!(snapshot.rollouts().is_empty());
    assert!(
        notifications(&outputs).is_empty(),
        "{:?}",
        notifications(&outputs)
    );

    let outputs = anonymous.step(promote);
    assert_eq!(values(&published(&outputs).unwrap()), values(&first));
    assert_eq!(
        notifications(&outputs)[0].changes,
        [
            change("db.name", Some("5432"), None),
            change("log_level", Some("INFO"), Some("DEBUG")),
        ]
    );
}

#[test]
fn widening_brings_the_instance_in_at_its_bucket() {
    let bucket = crate::rollout::bucket("canary", "pod-1");
    let at = |percent: u8| rollout_doc(percent, &[], &[("/app/LogLevel", "DEBUG")], &[]);
    let mut state = member_state();
    let outputs = state.step(listed_at(
        vec![
            kv("/app/LogLevel", "INFO", 7),
            kv("/app/_rollout/canary", &at(bucket), 8),
        ],
        8,
    ));
    assert_eq!(
        values(&published(&outputs).unwrap()),
        map(&[("log_level", "INFO")])
    );
    let outputs = state.step(watched(vec![put(
        "/app/_rollout/canary",
        &at(bucket + 1),
        9,
        Some(8),
    )]));
    let snapshot = published(&outputs).unwrap();
    assert_eq!(values(&snapshot), map(&[("log_level", "DEBUG")]));
    assert_eq!(snapshot.rollouts(), [Arc::from("canary")]);
}

#[test]
fn a_rollout_the_instance_cannot_serve_is_rejected_once_and_the_base_serves() {
    let mut state = declared_state().member(Some(Announce::new("pod-1")));
    state.step(listed_at(
        vec![
            kv("/app/Token", "t", 2),
            kv("/app/MinPool", "1", 3),
            kv("/app/MaxPool", "5", 4),
        ],
        4,
    ));
    let cases = [
        ("{", "not a rollout document"),
        (
            &*rollout_doc(100, &[], &[("/app/MinPool", "9")], &[]),
            "min_pool <= max_pool does not hold",
        ),
        (
            &*rollout_doc(100, &[], &[], &["/app/Token"]),
            "required name token has no value",
        ),
        (
            &*rollout_doc(100, &[], &[("/other/Key", "1")], &[]),
            "/other/Key names no value",
        ),
    ];
    let mut revision = 4;
    let mut prev = None;
    for (doc, why) in cases {
        revision += 1;
        let outputs = state.step(watched(vec![put("/app/_rollout/bad", doc, revision, prev)]));
        prev = Some(revision);
        let snapshot = published(&outputs).unwrap();
        assert_eq!(
            snapshot.get("min_pool"),
            Some(ValueRef::String("1")),
            "{why}"
        );
        assert!(snapshot.rollouts().is_empty());
        assert!(notifications(&outputs).is_empty());
        let rejected = rollout_rejections(&outputs);
        assert_eq!(rejected.len(), 1, "{why}: {outputs:?}");
        assert_eq!(&*rejected[0].rollout, "bad");
        assert!(rejected[0].reason.contains(why), "{}", rejected[0].reason);
        assert_eq!(state.rollout_rejections(), rejected);
    }
    // Said once: the next revision keeps it rejected without saying it again.
    let outputs = state.step(watched(vec![put("/app/MaxPool", "6", 20, Some(4))]));
    assert!(rollout_rejections(&outputs).is_empty());
    assert_eq!(state.rollout_rejections().len(), 1);
    // Gone: nothing is rejected.
    state.step(watched(vec![del("/app/_rollout/bad", 21, prev.unwrap())]));
    assert!(state.rollout_rejections().is_empty());
}

#[test]
fn rollouts_survive_a_relist_and_a_contradicting_rollout_event_relists() {
    let doc = rollout_doc(100, &[], &[("/app/LogLevel", "DEBUG")], &[]);
    let mut state = member_state();
    state.step(listed_at(
        vec![
            kv("/app/LogLevel", "INFO", 7),
            kv("/app/_rollout/canary", &doc, 8),
        ],
        8,
    ));
    // etcd says the rollout key was at revision 5 before: this cache never saw that.
    let outputs = state.step(watched(vec![put("/app/_rollout/canary", &doc, 9, Some(5))]));
    assert_eq!(control(&outputs), ["List(Diverged { key_revision: 9 })"]);
    let outputs = state.step(listed_at(
        vec![
            kv("/app/LogLevel", "INFO", 7),
            kv("/app/_rollout/canary", &doc, 9),
        ],
        9,
    ));
    let snapshot = published(&outputs).unwrap();
    assert_eq!(values(&snapshot), map(&[("log_level", "DEBUG")]));
    assert_eq!(
        snapshot.entry("log_level").unwrap().source().to_string(),
        "rollout canary of etcd key /app/LogLevel @ rev 9"
    );
    assert!(
        notifications(&outputs).is_empty(),
        "it served DEBUG already"
    );
}

#[test]
fn a_pending_that_ignores_keeps_nothing_and_one_that_records_keeps_each_name_once() {
    // A fresh list computes its difference whole; what it applies is not kept twice.
    let name: Arc<str> = Arc::from("a");
    let mut ignored = Pending::ignoring();
    ignored.record(&name, None, Some(Value::from("1")));
    assert!(ignored.0.is_none());
    let mut kept = Pending::default();
    kept.record(&name, None, Some(Value::from("1")));
    kept.record(&name, Some(Value::from("1")), Some(Value::from("2")));
    let changes = kept.0.unwrap();
    assert_eq!(changes.len(), 1);
    let (old, new) = &changes[&name];
    assert!(old.is_none());
    assert_eq!(new.as_ref().map(ToString::to_string).as_deref(), Some("2"));
}

/// `log_level` declared one of INFO and DEBUG, everything else discovered.
fn one_of_log_level() -> State {
    use crate::schema::{Name, Schema};
    let schema = Schema::builder()
        .discover(true)
        .name(Name::new("log_level").one_of(["INFO", "DEBUG"]))
        .build()
        .unwrap();
    State::new(Arc::new(schema).bind("/app").unwrap(), Entries::default())
}

#[test]
fn a_listing_in_any_order_is_applied_as_etcd_orders_it() {
    // `/app/LogLevel` sorts before `/app/log_level`: it owns the name, and the other's
    // bad value is shadowed, never reported as the name's rejection.
    let kvs = vec![
        kv("/app/LogLevel", "INFO", 2),
        kv("/app/Other", "x", 4),
        kv("/app/log_level", "LOUD", 3),
    ];
    let outputs_of = |kvs: Vec<Kv>| {
        let mut state = one_of_log_level();
        let outputs = state.step(listed_at(kvs, 4));
        let shown: Vec<String> = outputs
            .iter()
            .filter(|output| !matches!(output, Output::Confirmed { .. }))
            .map(|output| format!("{output:?}"))
            .collect();
        (shown, values(&state.unchecked_snapshot()))
    };
    let (sorted, served) = outputs_of(kvs.clone());
    assert!(
        !sorted.iter().any(|output| output.starts_with("Reject(")),
        "{sorted:?}"
    );
    assert_eq!(served, map(&[("log_level", "INFO"), ("other", "x")]));
    // Backwards, and shuffled.
    let mut reversed = kvs.clone();
    reversed.reverse();
    assert_eq!(outputs_of(reversed), (sorted.clone(), served.clone()));
    let shuffled = vec![kvs[1].clone(), kvs[2].clone(), kvs[0].clone()];
    assert_eq!(outputs_of(shuffled), (sorted, served));
}

#[test]
fn an_event_for_a_key_the_cache_never_saw_diverges_even_beside_a_rejected_owner() {
    let mut state = one_of_log_level();
    // The owner's value is rejected: the name has no value, but the key owns it at 5.
    state.step(listed_at(vec![kv("/app/LogLevel", "LOUD", 5)], 5));
    // etcd says /app/log_level held something at revision 5 (the same transaction):
    // the cache never saw that key, so it is not the cache etcd has.
    let outputs = state.step(watched(vec![put("/app/log_level", "DEBUG", 7, Some(5))]));
    assert_eq!(control(&outputs), ["List(Diverged { key_revision: 7 })"]);
}

#[test]
fn a_large_listing_taken_in_on_two_threads_equals_one_taken_in_on_one() {
    use crate::schema::{Name, Schema};
    // Enough keys to be split, with what each part must hand over in key order: names
    // two keys collide on (the winner before the split and the loser after, or both on
    // one side), values a check or UTF-8 rejects, rollouts and keys outside the prefix.
    let schema = Schema::builder()
        .discover(true)
        .name(Name::new("k00007").one_of(["ok"]))
        .name(Name::new("k11000").one_of(["ok"]))
        .build()
        .unwrap();
    let keys = Arc::new(schema).bind("/app").unwrap();
    let count = 3 * SPLIT_FROM;
    let mut kvs: Vec<Kv> = (0..count)
        .map(|i| kv(&format!("/app/K{i:05}"), &format!("v{i}"), 2 + i as i64))
        .collect();
    for i in [
        3,
        SPLIT_FROM - 1,
        SPLIT_FROM,
        SPLIT_FROM + 1,
        2 * SPLIT_FROM,
        count - 1,
    ] {
        kvs.push(kv(&format!("/app/k{i:05}"), "lower", 1));
    }
    // A check rejects "v7" before the split and passes "ok" after it; UTF-8 rejects
    // one value after it.
    for kv in &mut kvs {
        match kv.key.as_str() {
            "/app/K11000" => kv.value = b"ok".to_vec(),
            "/app/K20001" => kv.value = vec![0xff, 0xfe],
            _ => {}
        }
    }
    kvs.push(kv(
        "/app/_rollout/canary",
        &rollout_doc(50, &[("zone", "eu")], &[("/app/K00001", "x")], &[]),
        3,
    ));
    kvs.push(kv("/application/X", "outside", 4));
    kvs.push(kv("/app", "the prefix itself", 5));
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    let head = i64::try_from(count).unwrap() + 10;

    let take_in = |split_from: usize| {
        let mut state = State::new(keys.clone(), Entries::default());
        state.split_from = split_from;
        let outputs = state.step(listed_at(kvs.clone(), head));
        (state, outputs)
    };
    let (split, split_outputs) = take_in(SPLIT_FROM);
    let (whole, whole_outputs) = take_in(usize::MAX);
    assert!(split_listing(kvs.len(), SPLIT_FROM, || 2) < kvs.len() / 2);
    assert_eq!(split_listing(kvs.len(), usize::MAX, || 2), kvs.len());

    let snapshot = published(&split_outputs).expect("the listing is published");
    assert_eq!(
        values(&snapshot),
        values(&published(&whole_outputs).unwrap())
    );
    assert_eq!(snapshot.len(), count - 2, "k00007 and k20001 are rejected");
    assert_eq!(snapshot.get("k00003"), Some(ValueRef::String("v3")));
    assert_eq!(
        snapshot.get(&format!("k{:05}", SPLIT_FROM)),
        Some(ValueRef::String(&format!("v{SPLIT_FROM}")))
    );
    assert_eq!(split.collisions(), whole.collisions());
    assert_eq!(split.collisions().len(), 6);
    let rejected =
        |state: &State| -> Vec<String> { state.rejections().map(|r| r.name.to_string()).collect() };
    assert_eq!(rejected(&split), ["k00007", "k20001"]);
    assert_eq!(rejected(&split), rejected(&whole));
    assert_eq!(split.rollouts.len(), 1);
    assert_eq!(split.rollouts.len(), whole.rollouts.len());
    assert_eq!(split.digest, whole.digest);
    assert_ne!(split.digest, Some(0));
    assert_eq!(split.key_count, whole.key_count);
    let collided = |outputs: &[Output]| -> Vec<String> {
        outputs
            .iter()
            .filter_map(|output| match output {
                Output::Collide { name, keys } => Some(format!("{name} {keys:?}")),
                _ => None,
            })
            .collect()
    };
    assert_eq!(collided(&split_outputs), collided(&whole_outputs));
    assert_eq!(confirmations(&split_outputs), [head]);
    assert_eq!(confirmations(&whole_outputs), [head]);
}

#[test]
fn a_large_listing_takes_each_key_in_once_whatever_breaks_a_run_of_packed_values() {
    use crate::schema::{Name, Schema};
    use std::sync::Mutex;
    // Values are packed where they are classified and taken in in runs. A run breaks at
    // a name an env var holds, at a second key of a name, at a list (shared, not
    // packed) and at a rollout's key, before the split and after it.
    let coerced: Arc<Mutex<BTreeMap<(String, String), usize>>> = Arc::default();
    let schema = {
        let coerced = coerced.clone();
        Schema::builder()
            .discover(true)
            .name(Name::new("k00003"))
            .name(Name::new("k25000"))
            .name(Name::new("from_env"))
            .coerce(move |name, text| {
                let mut coerced = coerced.lock().unwrap();
                *coerced
                    .entry((name.to_owned(), text.to_owned()))
                    .or_default() += 1;
                None
            })
            .build()
            .unwrap()
    };
    let schema = Arc::new(schema);
    let env = |var: &str| matches!(var, "K00003" | "K25000" | "FROM_ENV").then(|| "env".to_owned());
    let (fallback, _) = schema.fallback(&env);
    coerced.lock().unwrap().clear();
    let count = 3 * SPLIT_FROM;
    let mut kvs: Vec<Kv> = (0..count)
        .map(|i| kv(&format!("/app/K{i:05}"), &format!("v{i}"), 10 + i as i64))
        .collect();
    kvs.push(kv("/app/k00002", "lower", 2));
    kvs.push(kv("/app/k20000", "lower", 3));
    kvs.push(kv("/app/K00005/items", "a,b", 4));
    kvs.push(kv("/app/K20005/items", "c,d", 5));
    kvs.push(kv(
        "/app/_rollout/canary",
        &rollout_doc(50, &[("zone", "eu")], &[("/app/K00001", "x")], &[]),
        6,
    ));
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    let digest = kvs.iter().fold(0u64, |sum, kv| {
        sum.wrapping_add(fingerprint(kv.key.as_bytes(), &kv.value, kv.mod_revision))
    });
    let head = i64::try_from(count).unwrap() + 10;
    let mut state = State::new(schema.bind("/app").unwrap(), fallback);
    let outputs = state.step(listed_at(kvs.clone(), head));
    let snapshot = published(&outputs).expect("the listing is published");

    let mut expected: BTreeMap<String, String> = (0..count)
        .map(|i| (format!("k{i:05}"), format!("v{i}")))
        .collect();
    expected.insert("k00005.items".into(), "a,b".into());
    expected.insert("k20005.items".into(), "c,d".into());
    expected.insert("from_env".into(), "env".into());
    let got = values(&snapshot);
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(name, value)| got.get(*name) != Some(value))
        .collect();
    assert!(wrong.is_empty(), "{wrong:?}");
    assert_eq!(got.len(), expected.len());
    assert!(matches!(
        snapshot.get("k20005.items"),
        Some(ValueRef::List(items)) if items.len() == 2
    ));
    for (name, key, mod_revision) in [
        ("k00003", "/app/K00003", 13),
        ("k25000", "/app/K25000", 25_010),
        ("k20000", "/app/K20000", 20_010),
        ("k00005.items", "/app/K00005/items", 4),
    ] {
        let source = snapshot.entry(name).unwrap().source();
        let key = Arc::from(key);
        assert_eq!(source, Source::Etcd { key, mod_revision }, "{name}");
    }
    assert_eq!(
        snapshot.entry("from_env").unwrap().source(),
        Source::Env {
            var: Arc::from("FROM_ENV")
        }
    );
    let collisions: Vec<String> = state
        .collisions()
        .iter()
        .map(|(name, keys)| format!("{name} {keys:?}"))
        .collect();
    assert_eq!(
        collisions,
        [
            r#"k00002 ["/app/K00002", "/app/k00002"]"#,
            r#"k20000 ["/app/K20000", "/app/k20000"]"#
        ]
    );
    assert_eq!(state.rollouts.len(), 1);
    assert_eq!(state.digest, Some(digest));
    // Each key's value coerced once, wherever its run broke.
    let coerced = coerced.lock().unwrap();
    assert_eq!(coerced.len(), count + 4, "each (name, text) once");
    assert!(coerced.values().all(|times| *times == 1), "{coerced:?}");
}

#[test]
fn a_listing_over_hundreds_of_defaults_keeps_every_value_when_its_map_is_merged_midway() {
    use crate::schema::{Name, Schema};
    // The first 600 keys each replace a default in place; past a sixteenth of the names
    // the map is merged into a new one while the listing is taken in, and what was
    // appended to the old one must not go into the new one.
    let count = 2 * SPLIT_FROM;
    let declared: Vec<String> = (0..600).map(|i| format!("k{i:05}")).collect();
    let mut schema = Schema::builder().discover(true);
    for name in &declared {
        schema = schema.name(Name::new(name).default("default"));
    }
    let schema = Arc::new(schema.build().unwrap());
    let (fallback, _) = schema.fallback(&|_| None);
    assert_eq!(fallback.len(), declared.len());
    let kvs: Vec<Kv> = (0..count)
        .map(|i| kv(&format!("/app/K{i:05}"), &format!("v{i}"), 10 + i as i64))
        .collect();
    let mut state = State::new(schema.bind("/app").unwrap(), fallback);
    let outputs = state.step(listed_at(kvs, i64::try_from(count).unwrap() + 10));
    let snapshot = published(&outputs).expect("the listing is published");

    assert_eq!(snapshot.len(), count);
    for i in 0..count {
        let name = format!("k{i:05}");
        let entry = snapshot.entry(&name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(entry.value(), ValueRef::String(&format!("v{i}")), "{name}");
        let key = Arc::from(format!("/app/K{i:05}"));
        let mod_revision = 10 + i as i64;
        assert_eq!(entry.source(), Source::Etcd { key, mod_revision }, "{name}");
    }
}

#[test]
fn a_listing_from_split_from_keys_on_has_its_last_three_quarters_coerced_on_a_second_thread() {
    use crate::schema::Schema;
    use std::sync::Mutex;
    // Each name the hook coerces, with the thread it was coerced on.
    let seen: Arc<Mutex<BTreeMap<String, Option<String>>>> = Arc::default();
    let schema = {
        let seen = seen.clone();
        Schema::builder()
            .discover(true)
            .coerce(move |name, _| {
                let thread = std::thread::current().name().map(str::to_owned);
                seen.lock().unwrap().insert(name.to_owned(), thread);
                None
            })
            .build()
            .unwrap()
    };
    let keys = Arc::new(schema).bind("/app").unwrap();
    let two_cores = std::thread::available_parallelism().map_or(1, usize::from) > 1;
    for len in [SPLIT_FROM - 1, SPLIT_FROM, 3 * SPLIT_FROM + 2] {
        seen.lock().unwrap().clear();
        let kvs: Vec<Kv> = (0..len)
            .map(|i| kv(&format!("/app/k{i:05}"), "v", 2 + i as i64))
            .collect();
        let mut state = State::new(keys.clone(), Entries::default());
        let outputs = state.step(listed_at(kvs, i64::try_from(len).unwrap() + 2));
        assert_eq!(published(&outputs).expect("published").len(), len);

        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), len, "every name is coerced once");
        let on_helper: Vec<usize> = (0..len)
            .filter(|i| seen[&format!("k{i:05}")].as_deref() == Some("etcd-config-list"))
            .collect();
        // Below `SPLIT_FROM`, or on one core, all on this thread; else from a quarter on.
        let first = if len < SPLIT_FROM || !two_cores {
            len
        } else {
            len / 4
        };
        assert_eq!(on_helper, (first..len).collect::<Vec<_>>(), "{len} keys");
    }
}

#[test]
fn a_part_is_prepared_with_its_values_packed_and_every_other_key_classified() {
    use crate::schema::{Name, Schema};
    let schema = Schema::builder()
        .discover(true)
        .name(Name::new("checked").one_of(["ok"]))
        .build()
        .unwrap();
    let keys = Arc::new(schema).bind("/app").unwrap();
    let rollout = rollout_doc(50, &[("zone", "eu")], &[("/app/Level", "x")], &[]);
    let kvs = vec![
        kv("/app/Checked", "bad", 2),
        kv("/app/Level", "INFO", 3),
        kv("/app/Tags/items", "a,b", 4),
        kv("/app/_rollout/canary", &rollout, 5),
        kv("/app/Pool/max_size", "8", 6),
    ];
    let prepared = Prepared::of(&keys, &kvs);

    let packed: Vec<bool> = prepared.keys.iter().map(Option::is_some).collect();
    assert_eq!(packed, [false, true, false, false, true]);
    let entry = |i: usize| prepared.packed.entry(prepared.keys[i].unwrap());
    assert_eq!(entry(1).name(), "level");
    assert_eq!(entry(1).value(), ValueRef::String("INFO"));
    assert_eq!(entry(4).value(), ValueRef::Integer(8));
    let others: Vec<(&str, &str)> = prepared
        .others
        .iter()
        .map(|(listed, name)| {
            let kind = match listed {
                Listed::Value { value: Err(_), .. } => "rejected",
                Listed::Value { value: Ok(_), .. } => "value",
                Listed::Rollout => "rollout",
                Listed::Unloaded => "unloaded",
            };
            (kind, &prepared.names[name.clone()])
        })
        .collect();
    assert_eq!(
        others,
        [
            ("rejected", "checked"),
            ("value", "tags.items"),
            ("rollout", "")
        ]
    );
    let digest = kvs.iter().fold(0u64, |sum, kv| {
        sum.wrapping_add(fingerprint(kv.key.as_bytes(), &kv.value, kv.mod_revision))
    });
    assert_eq!(prepared.digest, digest);
}

#[test]
fn a_listing_is_split_at_a_quarter_from_split_from_keys_on_and_only_where_there_are_two_cores() {
    for cores in [2, 3, 16] {
        let cores = || cores;
        assert_eq!(split_listing(SPLIT_FROM, SPLIT_FROM, cores), SPLIT_FROM / 4);
        assert_eq!(split_listing(30_003, SPLIT_FROM, cores), 7_500);
    }
    for cores in [0, 1] {
        assert_eq!(split_listing(30_001, SPLIT_FROM, || cores), 30_001);
    }
    // Below the threshold the core count is not asked for.
    let unasked = || -> usize { panic!("the core count was asked for") };
    assert_eq!(split_listing(0, SPLIT_FROM, unasked), 0);
    assert_eq!(
        split_listing(SPLIT_FROM - 1, SPLIT_FROM, unasked),
        SPLIT_FROM - 1
    );
    assert_eq!(split_listing(30_001, usize::MAX, unasked), 30_001);
}

/// What `hand_over` gave `take`, call by call: the items, and what was prepared of them
/// (the items again, and the thread they were prepared on) or `None`.
type Taken = Vec<(Vec<usize>, Option<(Vec<usize>, Option<String>)>)>;

/// `hand_over` of `head` and `tail` in parts of `part_len`, each prepared by `prepare`.
fn handed_over(
    head: &[usize],
    tail: &[usize],
    part_len: usize,
    prepare: impl Fn(&[usize]) + Send + Sync,
) -> Taken {
    let mut taken = Vec::new();
    let prepare = |part: &[usize]| {
        prepare(part);
        let thread = std::thread::current().name().map(str::to_owned);
        (part.to_vec(), thread)
    };
    hand_over(head, tail, part_len, prepare, |part, prepared| {
        taken.push((part.to_vec(), prepared));
    });
    taken
}

#[test]
fn hand_over_gives_the_head_then_each_part_of_the_tail_in_order_prepared_on_a_second_thread() {
    let items: Vec<usize> = (0..1_000).collect();
    let (head, tail) = items.split_at(100);
    let taken = handed_over(head, tail, 64, |_| {});

    assert_eq!(
        taken[0],
        (head.to_vec(), None),
        "the head first, all of it here"
    );
    let parts = &taken[1..];
    assert_eq!(parts.len(), 900_usize.div_ceil(64));
    for (at, (part, prepared)) in parts.iter().enumerate() {
        let start = 100 + 64 * at;
        let expected: Vec<usize> = (start..1_000.min(start + 64)).collect();
        assert_eq!(*part, expected);
        let (prepared, thread) = prepared.as_ref().expect("prepared on the second thread");
        assert_eq!(*prepared, expected, "each part with what was made of it");
        assert_eq!(thread.as_deref(), Some("etcd-config-list"));
    }
}

#[test]
fn hand_over_without_a_tail_gives_the_head_alone_and_prepares_nothing() {
    let items: Vec<usize> = (0..10).collect();
    let taken = handed_over(&items, &[], 4, |_| panic!("nothing to prepare"));
    assert_eq!(taken, [(items, None)]);
}

#[test]
fn a_second_thread_that_panics_leaves_what_it_did_not_hand_over_to_this_thread() {
    let items: Vec<usize> = (0..1_000).collect();
    let (head, tail) = items.split_at(100);
    // The fourth part panics: three are handed over.
    let taken = handed_over(head, tail, 64, |part| {
        assert!(part[0] < 100 + 3 * 64, "a preparation panicked");
    });

    assert_eq!(taken.len(), 1 + 3 + 1);
    assert_eq!(taken[0], (head.to_vec(), None));
    assert!(taken[1..4].iter().all(|(_, prepared)| prepared.is_some()));
    let (rest, prepared) = &taken[4];
    assert_eq!(*rest, (100 + 3 * 64..1_000).collect::<Vec<_>>());
    assert_eq!(*prepared, None, "the rest is left to this thread");
    let all: Vec<usize> = taken.into_iter().flat_map(|(part, _)| part).collect();
    assert_eq!(all, items, "every item once, in order");
}

#[test]
fn a_second_thread_prepares_at_most_handover_ahead_parts_ahead_of_this_one() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let items: Vec<usize> = (0..40).collect();
    let prepared = AtomicUsize::new(0);
    let mut ahead = Vec::new();
    let mut taken = 0;
    let prepare = |_: &[usize]| prepared.fetch_add(1, Ordering::SeqCst);
    hand_over(&[], &items, 2, prepare, |_, part| {
        if part.is_some() {
            // Time for the second thread to run as far ahead as it may.
            std::thread::sleep(std::time::Duration::from_millis(5));
            taken += 1;
            ahead.push(prepared.load(Ordering::SeqCst) - taken);
        }
    });

    assert_eq!(taken, 20);
    // A part waiting in the queue, or prepared and waiting to be put in it.
    let most = ahead.iter().max().copied();
    assert_eq!(most, Some(HANDOVER_AHEAD + 1), "{ahead:?}");
}

#[test]
fn a_listing_from_ten_thousand_keys_on_is_freed_on_a_thread_of_its_own() {
    let listing = |len: usize| -> Vec<Kv> {
        (0..len)
            .map(|i| kv(&format!("/app/k{i:05}"), "v", 2))
            .collect()
    };
    assert!(!free_aside(Vec::new()));
    assert!(!free_aside(listing(9_999)));
    assert!(free_aside(listing(10_000)));
    assert!(free_aside(listing(10_001)));
}

#[test]
fn a_listings_entries_fit_the_room_reserved_for_them_which_is_less_than_twice_theirs() {
    // Names as long as their keys but for the prefix, and values of a few kinds.
    for value in ["v", "a value of twenty-two", "12345", "true"] {
        let kvs: Vec<Kv> = (0..1_000)
            .map(|i| kv(&format!("/app/service.k{i:05}"), value, 2 + i))
            .collect();
        let room = listing_room(&kvs);
        let mut state = state();
        state.step(listed_at(kvs, 1_010));
        assert_eq!(state.entries.len(), 1_000);
        // After the listing the map gives back the room it did not use; had it grown,
        // what it holds would exceed the room.
        let [held, _] = state.entries.heap();
        assert!(
            held <= room,
            "{value:?}: {held} bytes held in {room} reserved"
        );
        assert!(
            room < 2 * held,
            "{value:?}: {room} reserved for {held} bytes"
        );
    }
}
