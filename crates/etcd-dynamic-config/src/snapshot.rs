//! Immutable snapshots of the configuration and the changes between them.
//!
//! A [`Snapshot`] shares its structure with the one before it, so producing the next
//! snapshot after one change costs O(log changes); the whole map is copied only once per
//! n/16 changes, when they are merged into it (see `Entries`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeOwned, IntoDeserializer};

use crate::error::{Error, Result};
use crate::value::ValueDeserializer;
pub use crate::value::{Source, Value, ValueRef};

mod entries;
pub use entries::Entry;
pub(crate) use entries::{Entries, Packed};

/// What `Debug` shows instead of a secret value.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// `message` with every occurrence of `secret` replaced: for messages built by code that
/// does not know what is secret (serde, custom coercion hooks).
pub(crate) fn scrub(message: String, secret: &str) -> String {
    if secret.is_empty() || !message.contains(secret) {
        message
    } else {
        message.replace(secret, REDACTED)
    }
}

/// The whole configuration as of one etcd revision; immutable.
///
/// Load it once and use it for a whole request: every value in it comes from the same
/// revision.
#[derive(Clone, Default)]
pub struct Snapshot {
    revision: i64,
    entries: Entries,
    rollouts: Arc<[Arc<str>]>,
}

impl Snapshot {
    pub(crate) fn new(revision: i64, entries: Entries) -> Self {
        Self {
            revision,
            entries,
            rollouts: Arc::new([]),
        }
    }

    /// The same snapshot, serving these rollouts.
    pub(crate) fn with_rollouts(mut self, rollouts: Vec<Arc<str>>) -> Self {
        self.rollouts = rollouts.into();
        self
    }

    /// The [rollouts](crate::rollout) laid over the base in this snapshot, in name order.
    pub fn rollouts(&self) -> &[Arc<str>] {
        &self.rollouts
    }

    /// The etcd revision this snapshot reflects (0 when nothing came from etcd).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The entries, for a state that goes on from this snapshot.
    pub(crate) fn entries(&self) -> &Entries {
        &self.entries
    }

    /// The value of `name`, borrowed from the snapshot.
    #[inline]
    pub fn get(&self, name: &str) -> Option<ValueRef<'_>> {
        self.entries.get(name).map(|entry| entry.value())
    }

    /// The value of `name` with its provenance.
    pub fn entry(&self, name: &str) -> Option<Entry<'_>> {
        self.entries.get(name)
    }

    /// The value of `name` read as `T` (see [`Value::deserialize`]).
    ///
    /// # Errors
    ///
    /// [`Error::Missing`] when the name is absent, [`Error::Value`] naming the name, the
    /// reason and the value's origin when it does not fit `T`. The value itself is never
    /// part of the error.
    pub fn get_as<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| Error::Missing(name.to_owned()))?;
        entry.value().deserialize().map_err(|error| {
            let mut reason = error.to_string();
            if entry.is_secret() {
                reason = scrub(reason, &entry.value().to_string());
            }
            Error::Value {
                name: name.to_owned(),
                reason,
                origin: entry.source(),
            }
        })
    }

    /// The whole snapshot read as `T`: names split at `.` into nested structs
    /// (`database.host` → field `host` of field `database`).
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] with serde's reason (a missing field, a value of the wrong type).
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T> {
        let names = tree_order(self).map_err(|reason| bind_error::<T>(None, reason))?;
        let tree = Node::Branch(Group {
            names: &names,
            depth: 0,
        });
        // Tracking the path costs a string per name: only a failed read pays it, again.
        if let Ok(value) = T::deserialize(tree) {
            return Ok(value);
        }
        serde_path_to_error::deserialize(tree).map_err(|error| {
            // serde quotes values it cannot place (`unknown variant \`x\``): hide secrets.
            let reason = self
                .entries
                .iter()
                .filter(|entry| entry.is_secret())
                .fold(error.inner().to_string(), |reason, entry| {
                    scrub(reason, &entry.value().to_string())
                });
            let path = error.path().to_string();
            let name = (path != ".").then_some(path);
            let at = name.map(|name| {
                let entry = self.entries.get(name.as_str());
                (name, entry)
            });
            bind_error::<T>(at, reason)
        })
    }

    /// How many names the snapshot holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the snapshot holds no names.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every name with its entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Entry<'_>)> {
        self.entries.iter().map(|entry| (entry.name(), entry))
    }

    /// Every name with its value, sorted by name: the Python `get_all_configs()`.
    pub fn to_map(&self) -> BTreeMap<String, Value> {
        self.entries
            .iter()
            .map(|entry| (entry.name().to_owned(), entry.value().to_value()))
            .collect()
    }
}

/// A `Bind` error; `at`: the dotted name that did not read, with its entry if it has one
/// (a missing field has none).
fn bind_error<T>(at: Option<(String, Option<Entry<'_>>)>, reason: String) -> Error {
    let (name, origin) = match at {
        Some((name, entry)) => (Some(name), entry.map(|entry| entry.source())),
        None => (None, None),
    };
    Error::Bind {
        target: std::any::type_name::<T>(),
        name,
        origin,
        reason,
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("revision", &self.revision)
            .field("len", &self.entries.len())
            .field("rollouts", &self.rollouts)
            .finish_non_exhaustive()
    }
}

/// One name's change within a revision. `Debug` hides the values of a secret name.
#[derive(Clone, PartialEq, Eq)]
pub struct ValueChange {
    /// The configuration name.
    pub name: Arc<str>,
    /// The value before (`None`: the name was absent).
    pub old: Option<Value>,
    /// The value after (`None`: the name was removed).
    pub new: Option<Value>,
    /// Whether the schema marks the name secret: never print `old` or `new` then.
    pub secret: bool,
}

impl fmt::Debug for ValueChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("ValueChange");
        out.field("name", &self.name);
        if self.secret {
            let hide = |value: &Option<Value>| value.as_ref().map(|_| REDACTED);
            out.field("old", &hide(&self.old))
                .field("new", &hide(&self.new));
        } else {
            out.field("old", &self.old).field("new", &self.new);
        }
        out.finish()
    }
}

/// Everything one applied revision changed, in name order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigChange {
    /// The etcd revision after which these changes hold.
    pub revision: i64,
    /// The names whose values changed.
    pub changes: Vec<ValueChange>,
}

impl ConfigChange {
    /// The net difference of `changes` in order: each name's first old value and last
    /// new value, at the last revision; names that came back to where they were are
    /// left out. `None` when there is nothing to fold.
    pub(crate) fn fold(changes: impl IntoIterator<Item = ConfigChange>) -> Option<ConfigChange> {
        let mut by_name: BTreeMap<Arc<str>, ValueChange> = BTreeMap::new();
        let mut revision = None;
        for change in changes {
            revision = Some(change.revision);
            for item in change.changes {
                match by_name.get_mut(&item.name) {
                    Some(earlier) => {
                        earlier.new = item.new;
                        earlier.secret |= item.secret;
                    }
                    None => {
                        by_name.insert(item.name.clone(), item);
                    }
                }
            }
        }
        Some(ConfigChange {
            revision: revision?,
            changes: by_name
                .into_values()
                .filter(|change| change.old != change.new)
                .collect(),
        })
    }
}

/// The snapshot's names and values in the order of a walk of their tree: segment by
/// segment (`.` sorts before any other character: [`tree_cmp`](entries::tree_cmp)), so
/// that the names below each group (`database.*`) are one run. A name that is also a
/// group is an error.
fn tree_order(snapshot: &Snapshot) -> Result<Vec<(&str, ValueRef<'_>)>, String> {
    let names: Vec<(&str, ValueRef<'_>)> = snapshot
        .entries
        .in_tree_order()
        .map(|entry| (entry.name(), entry.value()))
        .collect();
    // A group sorts right after the value of the same name.
    for pair in names.windows(2) {
        let (value, below) = (pair[0].0, pair[1].0);
        if below
            .strip_prefix(value)
            .is_some_and(|rest| rest.starts_with('.'))
        {
            return Err(format!("{below} is below {value}, which is a value"));
        }
    }
    Ok(names)
}

/// The snapshot as a tree of names, for reading it into nested structs: a value, or a
/// group of names read as a map.
#[derive(Clone, Copy)]
enum Node<'a> {
    Leaf(ValueRef<'a>),
    Branch(Group<'a>),
}

/// The names of one group, in [`tree_order`]; each has its segments at this depth from
/// byte `depth` on.
#[derive(Clone, Copy)]
struct Group<'a> {
    names: &'a [(&'a str, ValueRef<'a>)],
    depth: usize,
}

/// A group read as a map: each segment once, with its value or the group below it.
struct GroupAccess<'a> {
    rest: &'a [(&'a str, ValueRef<'a>)],
    depth: usize,
    next: Option<Node<'a>>,
}

impl<'de> de::MapAccess<'de> for GroupAccess<'de> {
    type Error = de::value::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some(&(name, value)) = self.rest.first() else {
            return Ok(None);
        };
        let here = &name[self.depth..];
        let segment = here.split('.').next().unwrap_or(here);
        let (node, taken) = if segment.len() == here.len() {
            (Node::Leaf(value), 1)
        } else {
            let below = |&(name, _): &(&str, ValueRef<'_>)| {
                name[self.depth..]
                    .strip_prefix(segment)
                    .is_some_and(|rest| rest.starts_with('.'))
            };
            let taken = self.rest.iter().take_while(|pair| below(pair)).count();
            let group = Group {
                names: &self.rest[..taken],
                depth: self.depth + segment.len() + 1,
            };
            (Node::Branch(group), taken)
        };
        self.rest = &self.rest[taken..];
        self.next = Some(node);
        seed.deserialize(segment.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let node = self
            .next
            .take()
            .ok_or_else(|| de::Error::custom("a value asked for before its name"))?;
        seed.deserialize(node)
    }
}

impl<'de> IntoDeserializer<'de, de::value::Error> for Node<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// Parses a leaf as the type asked for (text is parsed on demand); a branch is a map.
macro_rules! leaf_or_map {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            match self {
                Node::Leaf(value) => ValueDeserializer(value).$method(visitor),
                branch => branch.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Node<'de> {
    type Error = de::value::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self {
            Node::Leaf(value) => ValueDeserializer(value).deserialize_any(visitor),
            Node::Branch(group) => visitor.visit_map(GroupAccess {
                rest: group.names,
                depth: group.depth,
                next: None,
            }),
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self {
            Node::Leaf(value) => ValueDeserializer(value).deserialize_option(visitor),
            branch => visitor.visit_some(branch),
        }
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self {
            Node::Leaf(value) => ValueDeserializer(value).deserialize_struct(name, fields, visitor),
            branch => branch.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self {
            Node::Leaf(value) => ValueDeserializer(value).deserialize_enum(name, variants, visitor),
            branch => branch.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        tuple tuple_struct map identifier ignored_any unit unit_struct bytes byte_buf seq
        string str char
    }

    leaf_or_map! {
        deserialize_bool, deserialize_i8, deserialize_i16, deserialize_i32, deserialize_i64,
        deserialize_u8, deserialize_u16, deserialize_u32, deserialize_u64, deserialize_f32,
        deserialize_f64,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A snapshot at revision 1 holding `pairs`, each from a made-up etcd key.
    pub(crate) fn snapshot_of(pairs: &[(&str, Value)]) -> Snapshot {
        let mut entries = Entries::default();
        for (name, value) in pairs {
            let source = Source::Etcd {
                key: Arc::from(format!("/app/{name}")),
                mod_revision: 1,
            };
            entries.insert(name, value.view(), &source, false);
        }
        Snapshot::new(1, entries)
    }

    fn snapshot_with(name: &str, text: &str) -> Snapshot {
        let mut entries = Entries::default();
        let source = Source::Etcd {
            key: Arc::from("/app/Key"),
            mod_revision: 812,
        };
        entries.insert(name, ValueRef::String(text), &source, false);
        Snapshot::new(812, entries)
    }

    #[test]
    fn a_bind_error_names_the_name_and_where_its_value_came_from() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Database {
            host: String,
            port: u16,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct App {
            database: Database,
        }
        let snapshot = snapshot_of(&[
            ("database.host", Value::from("db")),
            ("database.port", Value::Integer(70_000)),
        ]);
        let error = snapshot.deserialize::<App>().unwrap_err();
        let Error::Bind { name, origin, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(name.as_deref(), Some("database.port"));
        assert_eq!(
            origin.as_ref().map(ToString::to_string).as_deref(),
            Some("etcd key /app/database.port @ rev 1")
        );
        let text = error.to_string();
        assert!(
            text.contains("database.port: invalid value: integer `70000`, expected u16 (etcd key /app/database.port @ rev 1)"),
            "{text}"
        );
        // A missing field has a name but no value, so no origin.
        let missing = snapshot_of(&[("database.port", Value::Integer(1))])
            .deserialize::<App>()
            .unwrap_err();
        assert!(
            missing.to_string().contains("missing field `host`"),
            "{missing}"
        );
    }

    #[test]
    fn a_snapshot_changed_since_its_full_read_reads_as_its_names_are_now() {
        type Tree = BTreeMap<String, BTreeMap<String, String>>;
        let source = Source::Etcd {
            key: Arc::from("/app/Key"),
            mod_revision: 1,
        };
        let mut entries = Entries::default();
        let set = |entries: &mut Entries, name: &str, text: &str| {
            entries.insert(name, ValueRef::String(text), &source, false);
        };
        for name in ["a.x", "a-b.y", "b.z"] {
            set(&mut entries, name, name);
        }
        let tree = |pairs: &[(&str, &str, &str)]| -> Tree {
            let mut tree = Tree::new();
            for &(group, name, text) in pairs {
                let group = tree.entry(group.to_owned()).or_default();
                group.insert(name.to_owned(), text.to_owned());
            }
            tree
        };
        // Shared by a snapshot, the flat map stays as read; changes go over it.
        let first = Snapshot::new(1, entries.clone());
        let as_read = tree(&[("a", "x", "a.x"), ("a-b", "y", "a-b.y"), ("b", "z", "b.z")]);
        assert_eq!(first.deserialize::<Tree>().unwrap(), as_read);
        set(&mut entries, "a.w", "new");
        set(&mut entries, "a-b.y", "changed");
        assert!(entries.remove("b.z"));
        let second = Snapshot::new(2, entries.clone());
        let changed = tree(&[
            ("a", "w", "new"),
            ("a", "x", "a.x"),
            ("a-b", "y", "changed"),
        ]);
        assert_eq!(second.deserialize::<Tree>().unwrap(), changed);
        // A value put where a group is: an error, until it is deleted again.
        set(&mut entries, "a", "value");
        let error = Snapshot::new(3, entries.clone())
            .deserialize::<Tree>()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("a.w is below a, which is a value"),
            "{error}"
        );
        assert!(entries.remove("a"));
        assert_eq!(
            Snapshot::new(4, entries).deserialize::<Tree>().unwrap(),
            changed
        );
        assert_eq!(first.deserialize::<Tree>().unwrap(), as_read);
    }

    #[test]
    fn get_as_reads_the_asked_type() {
        assert_eq!(
            snapshot_with("p", " 5432 ").get_as::<u16>("p").unwrap(),
            5432
        );
        let typed = snapshot_of(&[("n", Value::Integer(7))]);
        assert_eq!(typed.get_as::<u8>("n").unwrap(), 7);
    }

    #[test]
    fn errors_name_the_name_and_origin_but_not_the_value() {
        let error = snapshot_with("db_port", "ten-secret")
            .get_as::<u16>("db_port")
            .unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("db_port: expected u16"), "{text}");
        assert!(text.contains("(etcd key /app/Key @ rev 812)"), "{text}");
        assert!(!text.contains("ten-secret"), "{text}");

        let error = snapshot_with("x", "1").get_as::<u16>("y").unwrap_err();
        assert!(matches!(error, Error::Missing(name) if name == "y"));
    }

    #[test]
    fn to_map_is_sorted_by_name() {
        let snapshot = snapshot_of(&[
            ("b", Value::from("2")),
            ("a", Value::from("1")),
            ("c", Value::from("3")),
        ]);
        let map = snapshot.to_map();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn the_whole_snapshot_reads_into_nested_structs() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Database {
            host: String,
            port: u16,
            replicas: Option<Vec<String>>,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct App {
            log_level: String,
            use_cache: bool,
            timeout: std::time::Duration,
            database: Database,
            missing: Option<u32>,
        }
        let snapshot = snapshot_of(&[
            ("log_level", Value::from("INFO")),
            ("use_cache", Value::Bool(true)),
            ("timeout", Value::from("1m")),
            ("database.host", Value::from("db")),
            ("database.port", Value::from("5432")),
            ("unrelated.extra", Value::from("ignored")),
        ]);
        assert_eq!(
            snapshot.deserialize::<App>().unwrap(),
            App {
                log_level: "INFO".into(),
                use_cache: true,
                timeout: std::time::Duration::from_secs(60),
                database: Database {
                    host: "db".into(),
                    port: 5432,
                    replicas: None,
                },
                missing: None,
            }
        );

        let broken = snapshot_of(&[("database.host", Value::from("db"))]);
        let error = broken.deserialize::<Database>().unwrap_err().to_string();
        assert!(error.contains("missing field `host`"), "{error}");

        let clash = snapshot_of(&[("a", Value::from("1")), ("a.b", Value::from("2"))]);
        let error = clash.deserialize::<App>().unwrap_err().to_string();
        assert!(
            error.contains("a.b is below a, which is a value"),
            "{error}"
        );
    }

    #[test]
    fn debug_hides_secret_values() {
        let mut entries = Entries::default();
        entries.insert(
            "password",
            ValueRef::String("hunter2"),
            &Source::Default,
            true,
        );
        let entry = entries.get("password").unwrap();
        assert!(!format!("{entry:?}").contains("hunter2"));
        let change = ValueChange {
            name: Arc::from("password"),
            old: Some(Value::from("hunter2")),
            new: Some(Value::from("hunter3")),
            secret: true,
        };
        let text = format!("{change:?}");
        assert!(!text.contains("hunter"), "{text}");
        assert!(text.contains("REDACTED"), "{text}");
    }

    #[test]
    fn scrub_replaces_every_occurrence_of_the_secret_and_nothing_else() {
        assert_eq!(
            scrub("was hunter2, is hunter2".to_owned(), "hunter2"),
            format!("was {REDACTED}, is {REDACTED}")
        );
        assert_eq!(scrub("nothing here".to_owned(), "hunter2"), "nothing here");
        // An empty secret is in every message, and hides nothing.
        assert_eq!(scrub("nothing here".to_owned(), ""), "nothing here");
    }

    #[test]
    fn len_is_empty_and_debug_describe_the_snapshot_without_values() {
        let empty = snapshot_of(&[]);
        assert_eq!((empty.len(), empty.is_empty()), (0, true));
        let two = snapshot_of(&[("a", Value::from("hunter2")), ("b", Value::from("2"))]);
        assert_eq!((two.len(), two.is_empty()), (2, false));
        let text = format!("{two:?}");
        assert!(text.starts_with("Snapshot { revision: 1, len: 2"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_fold_keeps_a_name_secret_once_any_of_its_changes_was() {
        let change = |revision, old: &str, new: &str, secret| ConfigChange {
            revision,
            changes: vec![ValueChange {
                name: Arc::from("password"),
                old: Some(Value::from(old)),
                new: Some(Value::from(new)),
                secret,
            }],
        };
        let folded = ConfigChange::fold([change(2, "a", "b", true), change(3, "b", "c", false)])
            .expect("two changes");
        assert_eq!(folded.revision, 3);
        assert_eq!(folded.changes.len(), 1);
        assert!(folded.changes[0].secret);
        assert_eq!(folded.changes[0].old, Some(Value::from("a")));
        assert_eq!(folded.changes[0].new, Some(Value::from("c")));
    }

    /// A tree read in the order its maps are visited.
    #[derive(Debug, PartialEq)]
    enum Visited {
        Value(String),
        Map(Vec<(String, Visited)>),
    }

    impl<'de> serde::Deserialize<'de> for Visited {
        fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> de::Visitor<'de> for Visitor {
                type Value = Visited;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a value or a map")
                }
                fn visit_str<E>(self, text: &str) -> Result<Visited, E> {
                    Ok(Visited::Value(text.to_owned()))
                }
                fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Visited, A::Error> {
                    let mut entries = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        entries.push(entry);
                    }
                    Ok(Visited::Map(entries))
                }
            }
            deserializer.deserialize_any(Visitor)
        }
    }

    /// The tree of `names` as a map per group, segments in byte order; `None` when a
    /// name is also a group.
    fn expected_tree(names: &BTreeMap<String, String>) -> Option<Visited> {
        enum Node {
            Leaf(String),
            Branch(BTreeMap<String, Node>),
        }
        fn visited(node: Node) -> Visited {
            match node {
                Node::Leaf(value) => Visited::Value(value),
                Node::Branch(children) => Visited::Map(
                    children
                        .into_iter()
                        .map(|(segment, node)| (segment, visited(node)))
                        .collect(),
                ),
            }
        }
        let mut root = BTreeMap::new();
        for (name, value) in names {
            let segments: Vec<&str> = name.split('.').collect();
            let (last, groups) = segments.split_last()?;
            let mut branch = &mut root;
            for segment in groups {
                let node = branch
                    .entry((*segment).to_owned())
                    .or_insert_with(|| Node::Branch(BTreeMap::new()));
                branch = match node {
                    Node::Branch(children) => children,
                    Node::Leaf(_) => return None,
                };
            }
            if branch
                .insert((*last).to_owned(), Node::Leaf(value.clone()))
                .is_some()
            {
                return None;
            }
        }
        Some(visited(Node::Branch(root)))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Whatever the names (`.` beside characters that sort before and after it,
        /// the lowest bytes, empty segments): every group is one map, visited in the order of its
        /// segments, and a name that is also a group is an error.
        #[test]
        fn the_tree_read_is_the_tree_of_the_names(
            names in proptest::collection::btree_map("[ab.+/\\x00\\x01]{0,5}", "[xy]{1,2}", 0..12)
        ) {
            let pairs: Vec<(&str, Value)> = names
                .iter()
                .map(|(name, value)| (name.as_str(), Value::from(value.as_str())))
                .collect();
            let read = snapshot_of(&pairs).deserialize::<Visited>();
            match expected_tree(&names) {
                Some(tree) => proptest::prop_assert_eq!(read.unwrap(), tree),
                None => proptest::prop_assert!(read.is_err()),
            }
        }
    }
}
