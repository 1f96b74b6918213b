use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::snapshot::Source;

fn state() -> State {
    let keys = Arc::new(crate::schema::Schema::auto_discover())
        .bind("/app")
        .unwrap();
    State::new(keys, Entries::default())
}

fn kv(key: &str, value: &str, mod_revision: i64) -> Kv {
    Kv {
        key: Arc::from(key),
        value: value.as_bytes().to_vec(),
        mod_revision,
    }
}

fn put(key: &str, value: &str, mod_revision: i64, prev: Option<i64>) -> Event {
    Event {
        key: Arc::from(key),
        value: Some(value.as_bytes().to_vec()),
        mod_revision,
        prev_mod_revision: prev,
    }
}

fn del(key: &str, mod_revision: i64, prev: i64) -> Event {
    Event {
        key: Arc::from(key),
        value: None,
        mod_revision,
        prev_mod_revision: Some(prev),
    }
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
    state.step(Input::Listed {
        kvs: vec![
            kv("/app/LogLevel", "INFO", 7),
            kv("/app/Db/Name", "5432", 9),
        ],
        revision: 10,
    });
    state
}

#[test]
fn first_list_publishes_and_watches_from_the_next_revision() {
    let mut state = state();
    let outputs = state.step(Input::Listed {
        kvs: vec![
            kv("/app/LogLevel", "INFO", 7),
            kv("/app/Db/Name", "5432", 9),
            kv("/app/Empty//Segment", "x", 3),
        ],
        revision: 10,
    });
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.revision(), 10);
    assert_eq!(
        values(&snapshot),
        map(&[("db.name", "5432"), ("log_level", "INFO")])
    );
    assert_eq!(
        snapshot.entry("db.name").unwrap().source(),
        &Source::Etcd {
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
            .step(Input::Watched {
                events: vec![put("/app/A", "1", 5, None)]
            })
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
    let outputs = state.step(Input::Watched {
        events: vec![put("/app/LogLevel", "DEBUG", 11, Some(7))],
    });
    assert_eq!(published(&outputs).unwrap().revision(), 11);
    assert_eq!(
        notifications(&outputs),
        [ConfigChange {
            revision: 11,
            changes: vec![change("log_level", Some("INFO"), Some("DEBUG"))]
        }]
    );

    let outputs = state.step(Input::Watched {
        events: vec![
            put("/app/NewKey", "fresh", 12, None),
            del("/app/Db/Name", 13, 9),
        ],
    });
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.revision(), 13);
    assert_eq!(
        values(&snapshot),
        map(&[("log_level", "DEBUG"), ("new_key", "fresh")])
    );
    assert_eq!(
        notifications(&outputs),
        [
            ConfigChange {
                revision: 12,
                changes: vec![change("new_key", None, Some("fresh"))]
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
    let outputs = state.step(Input::Watched {
        events: vec![
            put("/app/LogLevel", "WARN", 11, Some(7)),
            put("/app/Db/Name", "6432", 11, Some(9)),
            put("/app/Db/Host", "db", 11, None),
        ],
    });
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
    let outputs = state.step(Input::Watched {
        events: vec![put("/app/LogLevel", "INFO", 11, Some(7))],
    });
    assert!(notifications(&outputs).is_empty());
    assert_eq!(published(&outputs).unwrap().revision(), 11);

    let outputs = state.step(Input::Watched {
        events: vec![put("/app/LogLevel", "stale", 11, Some(7))],
    });
    assert!(outputs.is_empty(), "revision 11 is already applied");
}

#[test]
fn keys_outside_the_prefix_directory_are_ignored() {
    let mut state = listed();
    let outputs = state.step(Input::Watched {
        events: vec![put("/application/X", "1", 11, None)],
    });
    assert!(notifications(&outputs).is_empty());
    assert_eq!(values(&published(&outputs).unwrap()).len(), 2);
}

#[test]
fn broken_stream_resumes_from_the_next_revision() {
    let mut state = listed();
    state.step(Input::Watched {
        events: vec![put("/app/LogLevel", "DEBUG", 15, Some(7))],
    });
    assert_eq!(
        control(&state.step(Input::Broken)),
        ["Watch { from_revision: 16 }"]
    );
}

#[test]
fn progress_advances_the_revision() {
    let mut state = listed();
    let outputs = state.step(Input::Progress { revision: 40 });
    assert_eq!(published(&outputs).unwrap().revision(), 40);
    assert!(state.step(Input::Progress { revision: 30 }).is_empty());
    assert_eq!(
        control(&state.step(Input::Broken)),
        ["Watch { from_revision: 41 }"]
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
    let outputs = state.step(Input::Listed {
        kvs: vec![
            kv("/app/LogLevel", "ERROR", 44),
            kv("/app/Feature", "on", 45),
        ],
        revision: 60,
    });
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
    let outputs = state.step(Input::Watched {
        events: vec![
            put("/app/LogLevel", "DEBUG", 11, Some(7)),
            put("/app/Db/Name", "1", 11, Some(8)),
        ],
    });
    assert!(
        published(&outputs).is_none(),
        "nothing of revision 11 is published"
    );
    assert_eq!(control(&outputs), ["List(Diverged { key_revision: 11 })"]);
    assert_eq!(state.revision(), 10);
    // The half-applied revision was rolled back: a re-list finding the published state
    // again reports no change.
    let outputs = state.step(Input::Listed {
        kvs: vec![
            kv("/app/LogLevel", "INFO", 7),
            kv("/app/Db/Name", "5432", 9),
        ],
        revision: 12,
    });
    assert!(notifications(&outputs).is_empty(), "{outputs:?}");

    // A key etcd already knew (prev_kv present) that the cache never saw.
    let mut state = listed();
    let outputs = state.step(Input::Watched {
        events: vec![put("/app/Unknown", "1", 11, Some(3))],
    });
    assert_eq!(control(&outputs), ["List(Diverged { key_revision: 11 })"]);
}

#[test]
fn earlier_revisions_of_a_batch_stay_published_when_a_later_one_diverges() {
    let mut state = listed();
    let outputs = state.step(Input::Watched {
        events: vec![
            put("/app/LogLevel", "DEBUG", 11, Some(7)),
            put("/app/Db/Name", "1", 12, Some(8)),
        ],
    });
    assert_eq!(published(&outputs).unwrap().revision(), 11);
    assert_eq!(notifications(&outputs).len(), 1);
    assert_eq!(control(&outputs), ["List(Diverged { key_revision: 12 })"]);
}

#[test]
fn a_value_that_is_not_text_is_rejected_and_the_last_good_one_stays() {
    let mut state = listed();
    let outputs = state.step(Input::Watched {
        events: vec![Event {
            key: Arc::from("/app/LogLevel"),
            value: Some(vec![0xff, 0xfe]),
            mod_revision: 11,
            prev_mod_revision: Some(7),
        }],
    });
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
    assert_eq!(snapshot.get("log_level"), Some(&Value::from("INFO")));
    assert!(notifications(&outputs).is_empty());
    assert_eq!(state.rejections().count(), 1);

    // The next event's prev_kv is the rejected write: no divergence.
    let outputs = state.step(Input::Watched {
        events: vec![put("/app/LogLevel", "WARN", 12, Some(11))],
    });
    assert_eq!(
        notifications(&outputs)[0].changes,
        [change("log_level", Some("INFO"), Some("WARN"))]
    );
    assert_eq!(state.rejections().count(), 0);
}

#[test]
fn a_rejected_value_keeps_the_last_good_one_across_a_relist() {
    let mut state = listed();
    let outputs = state.step(Input::Listed {
        kvs: vec![
            Kv {
                key: Arc::from("/app/LogLevel"),
                value: vec![0xff],
                mod_revision: 20,
            },
            kv("/app/Db/Name", "5432", 9),
        ],
        revision: 21,
    });
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.get("log_level"), Some(&Value::from("INFO")));
    assert!(notifications(&outputs).is_empty());
}

#[test]
fn colliding_keys_report_and_the_first_key_wins_until_it_goes() {
    let mut state = state();
    let outputs = state.step(Input::Listed {
        kvs: vec![
            kv("/app/log_level", "lower", 5),
            kv("/app/LogLevel", "upper", 6),
        ],
        revision: 6,
    });
    assert!(
        outputs
            .iter()
            .any(|output| matches!(output, Output::Collide { name, .. } if &**name == "log_level"))
    );
    // "/app/LogLevel" sorts before "/app/log_level".
    assert_eq!(
        published(&outputs).unwrap().get("log_level"),
        Some(&Value::from("upper"))
    );
    assert_eq!(
        state.collisions(),
        [(
            Arc::from("log_level"),
            vec![Arc::from("/app/LogLevel"), Arc::from("/app/log_level")]
        )]
    );

    // Writes to the losing key change nothing visible.
    let outputs = state.step(Input::Watched {
        events: vec![put("/app/log_level", "lower2", 7, Some(5))],
    });
    assert!(notifications(&outputs).is_empty());

    // The winner goes: the other key takes over in the same revision.
    let outputs = state.step(Input::Watched {
        events: vec![del("/app/LogLevel", 8, 6)],
    });
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
    let outputs = state.step(Input::Listed {
        kvs: vec![kv("/app/Token", "t", 2), kv("/app/Level", "DEBUG", 3)],
        revision: 3,
    });
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.get("level"), Some(&Value::from("DEBUG")));

    let outputs = state.step(Input::Watched {
        events: vec![del("/app/Level", 4, 3)],
    });
    let snapshot = published(&outputs).unwrap();
    assert_eq!(
        snapshot.get("level"),
        Some(&Value::from("WARN")),
        "the env var"
    );
    assert_eq!(
        snapshot.entry("level").unwrap().source(),
        &Source::Env {
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
    state.step(Input::Listed {
        kvs: vec![
            kv("/app/Token", "t", 2),
            kv("/app/MinPool", "1", 3),
            kv("/app/MaxPool", "5", 4),
        ],
        revision: 4,
    });
    // min_pool = 9 > max_pool = 5: rejected as a whole.
    let outputs = state.step(Input::Watched {
        events: vec![put("/app/MinPool", "9", 5, Some(3))],
    });
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
    assert!(
        state.step(Input::Progress { revision: 9 }).is_empty(),
        "held back"
    );

    // The fix arrives: both changes are published together, relative to what was.
    let outputs = state.step(Input::Watched {
        events: vec![put("/app/MaxPool", "10", 10, Some(4))],
    });
    let snapshot = published(&outputs).unwrap();
    assert_eq!(snapshot.revision(), 10);
    // `min_pool` is text by the naming rules (`*_min_*` needs a word before it); the
    // check reads numbers from text.
    assert_eq!(snapshot.get("min_pool"), Some(&Value::from("9")));
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
    state.step(Input::Listed {
        kvs: vec![kv("/app/Token", "t1", 2)],
        revision: 2,
    });
    let outputs = state.step(Input::Watched {
        events: vec![put("/app/Token", "t2", 3, Some(2))],
    });
    let change = &notifications(&outputs)[0].changes[0];
    assert!(change.secret, "the token is secret");
    let outputs = state.step(Input::Watched {
        events: vec![del("/app/Token", 4, 3)],
    });
    assert!(published(&outputs).is_none());
    assert_eq!(
        revision_rejections(&outputs)[0].reasons,
        ["required name token has no value"]
    );
}

#[test]
fn an_initial_list_that_breaks_a_check_publishes_nothing() {
    let mut state = declared_state();
    let outputs = state.step(Input::Listed {
        kvs: vec![kv("/app/Level", "DEBUG", 2)],
        revision: 2,
    });
    assert!(published(&outputs).is_none());
    assert_eq!(state.rejected_revision().unwrap().revision, 2);
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
    /// The history is compacted while disconnected: a re-list follows.
    CompactAndRelist,
    /// Nothing happened under the prefix up to the latest revision.
    Progress,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::collection::vec((0..KEYS.len(), prop::option::of(0u8..4)), 1..4).prop_map(Step::Txn),
        3 => (1usize..4).prop_map(Step::Deliver),
        1 => Just(Step::Break),
        1 => Just(Step::CompactAndRelist),
        1 => Just(Step::Progress),
    ]
}

/// etcd as a plain model: key → (value, mod revision), plus its event history.
#[derive(Default)]
struct Model {
    revision: i64,
    kvs: BTreeMap<&'static str, (String, i64)>,
    history: Vec<Event>,
}

impl Model {
    fn txn(&mut self, ops: &[(usize, Option<u8>)]) {
        let revision = self.revision + 1;
        let mut wrote = false;
        let mut seen = std::collections::HashSet::new();
        for &(index, value) in ops {
            let key = KEYS[index];
            if !seen.insert(key) {
                continue; // etcd refuses a transaction that writes one key twice
            }
            let prev = self.kvs.get(key).map(|(_, rev)| *rev);
            match value {
                Some(value) => {
                    let value = format!("v{value}");
                    self.kvs.insert(key, (value.clone(), revision));
                    self.history.push(put(key, &value, revision, prev));
                    wrote = true;
                }
                None => {
                    if let Some(prev) = prev {
                        self.kvs.remove(key);
                        self.history.push(del(key, revision, prev));
                        wrote = true;
                    }
                }
            }
        }
        if wrote {
            self.revision = revision;
        }
    }

    /// Names → values as of now: the first key in order wins a name.
    fn expected(&self) -> BTreeMap<String, String> {
        let mut expected = BTreeMap::new();
        for (key, (value, _)) in &self.kvs {
            if let Some(relative) = key.strip_prefix("/app/") {
                let name = crate::schema::naming::name_from_path(relative).unwrap();
                expected.entry(name).or_insert_with(|| value.clone());
            }
        }
        expected
    }

    fn list(&self) -> Input {
        Input::Listed {
            kvs: self
                .kvs
                .iter()
                .filter(|(key, _)| key.starts_with("/app/"))
                .map(|(key, (value, rev))| kv(key, value, *rev))
                .collect(),
            revision: self.revision,
        }
    }
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn snapshot_equals_a_replay_of_the_events(steps in prop::collection::vec(step_strategy(), 1..60)) {
        let mut model = Model::default();
        model.txn(&[(0, Some(0)), (2, Some(1))]);
        let mut state = state();
        let first = state.step(model.list());
        let mut snapshot = published(&first).unwrap();
        let mut delivered = model.history.len();
        let mut from_revision = model.revision + 1;
        // What a listener sees: the first snapshot plus every change in order.
        let mut listener_view = values(&snapshot);
        let mut last_change_revision = snapshot.revision();

        for step in steps {
            let outputs = match step {
                Step::Txn(ops) => {
                    model.txn(&ops);
                    Vec::new()
                }
                Step::Deliver(revisions) => {
                    // The watch resumes at `from_revision`; deliver whole revisions.
                    let pending: Vec<Event> = model.history[delivered..]
                        .iter()
                        .filter(|event| event.mod_revision >= from_revision)
                        .cloned()
                        .collect();
                    let batch_end: usize = pending
                        .chunk_by(|a, b| a.mod_revision == b.mod_revision)
                        .take(revisions)
                        .map(<[Event]>::len)
                        .sum();
                    let batch: Vec<Event> = pending[..batch_end]
                        .iter()
                        .filter(|event| event.key.starts_with("/app/"))
                        .cloned()
                        .collect();
                    delivered = model.history.len() - (pending.len() - batch_end);
                    if let Some(last) = pending[..batch_end].last() {
                        from_revision = last.mod_revision + 1;
                    }
                    state.step(Input::Watched { events: batch })
                }
                Step::Break => {
                    let outputs = state.step(Input::Broken);
                    prop_assert_eq!(
                        control(&outputs),
                        vec![format!("Watch {{ from_revision: {} }}", state.revision() + 1)]
                    );
                    from_revision = state.revision() + 1;
                    delivered = model.history.iter().take_while(|e| e.mod_revision < from_revision).count();
                    outputs
                }
                Step::CompactAndRelist => {
                    let mut outputs = state.step(Input::Compacted { compact_revision: model.revision });
                    prop_assert_eq!(control(&outputs).len(), 1);
                    outputs.extend(state.step(model.list()));
                    delivered = model.history.len();
                    from_revision = model.revision + 1;
                    outputs
                }
                Step::Progress => {
                    if delivered == model.history.len() {
                        state.step(Input::Progress { revision: model.revision })
                    } else {
                        Vec::new()
                    }
                }
            };
            prop_assert!(
                !outputs.iter().any(|o| matches!(o, Output::List(ListReason::Diverged { .. }))),
                "a consistent history never diverges"
            );
            for change in notifications(&outputs) {
                prop_assert!(change.revision > last_change_revision, "changes arrive in revision order");
                last_change_revision = change.revision;
                listener_view = apply_changes(listener_view, &change);
            }
            if let Some(next) = published(&outputs) {
                prop_assert!(next.revision() >= snapshot.revision());
                snapshot = next;
            }
            // The published snapshot equals etcd's state at the snapshot's revision.
            let mut at_revision = Model::default();
            for event in model.history.iter().filter(|e| e.mod_revision <= snapshot.revision()) {
                match &event.value {
                    Some(value) => {
                        let key = KEYS.iter().find(|k| **k == &*event.key).unwrap();
                        at_revision.kvs.insert(key, (String::from_utf8(value.clone()).unwrap(), event.mod_revision));
                    }
                    None => {
                        at_revision.kvs.remove(&*event.key);
                    }
                }
            }
            prop_assert_eq!(values(&snapshot), at_revision.expected());
            prop_assert_eq!(&listener_view, &values(&snapshot));
        }

        // Deliver everything: the snapshot catches up with etcd.
        let rest: Vec<Event> = model.history[delivered..]
            .iter()
            .filter(|event| event.mod_revision >= from_revision && event.key.starts_with("/app/"))
            .cloned()
            .collect();
        let outputs = state.step(Input::Watched { events: rest });
        if let Some(next) = published(&outputs) {
            snapshot = next;
        }
        prop_assert_eq!(values(&snapshot), model.expected());
    }
}
