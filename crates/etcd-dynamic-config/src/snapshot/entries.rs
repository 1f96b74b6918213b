//! A snapshot's names and entries: a flat hash map built once per full read of the
//! prefix, under a persistent map of what changed since.
//!
//! A full read (the first, or a re-list) fills the flat map in place: one hash insert per
//! key, with no persistent nodes to allocate. It is then shared by every snapshot until
//! the next merge. A change after that goes into the overlay, a persistent map, so the
//! next snapshot shares all but O(log changes) nodes with the one before.
//!
//! When the overlay holds more than a sixteenth of the flat map's names, both are merged
//! into a new flat map. That costs O(n) once per n/16 changes: O(1) per change,
//! amortized. The bound also keeps reads fast, because a lookup that misses a small
//! overlay costs little.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::Entry;

type Hasher = foldhash::fast::RandomState;

/// Name → entry, as of the last full read or merge.
type Flat = HashMap<Arc<str>, Entry, Hasher>;

/// Name → what changed since the flat map: `Some` a put, `None` a name of the flat map
/// since deleted.
type Overlay =
    imbl::GenericHashMap<Arc<str>, Option<Entry>, Hasher, imbl::shared_ptr::DefaultSharedPtr>;

/// Name → entry; cloning it costs a reference count and the overlay's root.
#[derive(Clone, Default)]
pub(crate) struct Entries {
    flat: Arc<Flat>,
    overlay: Overlay,
    /// How many names resolve to an entry.
    len: usize,
}

impl Entries {
    /// An empty map with room for `capacity` names before it grows.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            flat: Arc::new(Flat::with_capacity_and_hasher(capacity, Hasher::default())),
            ..Self::default()
        }
    }

    /// The entry of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        if !self.overlay.is_empty()
            && let Some(change) = self.overlay.get(name)
        {
            return change.as_ref();
        }
        self.flat.get(name)
    }

    /// Whether `name` has an entry.
    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// How many names have an entry.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether no name has an entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the entry of `name`; returns the one it replaces.
    pub(crate) fn insert(&mut self, name: Arc<str>, entry: Entry) -> Option<Entry> {
        let old = if let Some(flat) = Arc::get_mut(&mut self.flat) {
            // No snapshot shares the flat map (a full read is filling it): write in place.
            let overlaid = if self.overlay.is_empty() {
                None
            } else {
                self.overlay.remove(&name)
            };
            let replaced = flat.insert(name, entry);
            overlaid.unwrap_or(replaced)
        } else {
            let old = self.get(&name).cloned();
            self.overlay.insert(name, Some(entry));
            old
        };
        if old.is_none() {
            self.len += 1;
        }
        self.settle();
        old
    }

    /// Removes the entry of `name`; returns it.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Entry> {
        let old = self.get(name).cloned()?;
        self.len -= 1;
        if let Some(flat) = Arc::get_mut(&mut self.flat) {
            flat.remove(name);
            if !self.overlay.is_empty() {
                self.overlay.remove(name);
            }
        } else if let Some((name, _)) = self.flat.get_key_value(name) {
            self.overlay.insert(name.clone(), None);
        } else {
            self.overlay.remove(name);
        }
        self.settle();
        Some(old)
    }

    /// Every name with its entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Entry)> {
        let overlay = &self.overlay;
        let flat = self
            .flat
            .iter()
            .filter(move |(name, _)| overlay.is_empty() || !overlay.contains_key(&***name));
        let overlaid = overlay
            .iter()
            .filter_map(|(name, change)| Some((name, change.as_ref()?)));
        flat.chain(overlaid)
    }

    /// Every entry, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Entry> {
        self.iter().map(|(_, entry)| entry)
    }

    /// Merges the overlay into a new flat map once it holds more than a sixteenth of
    /// the names (see the module's docs).
    fn settle(&mut self) {
        if self.overlay.len() <= self.flat.len() / 16 + 64 {
            return;
        }
        let overlay = std::mem::take(&mut self.overlay);
        let flat = Arc::make_mut(&mut self.flat);
        for (name, change) in overlay {
            match change {
                Some(entry) => flat.insert(name, entry),
                None => flat.remove(&name),
            };
        }
    }
}

impl std::ops::Index<&str> for Entries {
    type Output = Entry;

    /// # Panics
    ///
    /// When `name` has no entry.
    fn index(&self, name: &str) -> &Entry {
        self.get(name).expect("a name with an entry")
    }
}

impl Extend<(Arc<str>, Entry)> for Entries {
    fn extend<I: IntoIterator<Item = (Arc<str>, Entry)>>(&mut self, pairs: I) {
        for (name, entry) in pairs {
            self.insert(name, entry);
        }
    }
}

/// Another map's names and entries, cloned (a reference count each).
impl<'a> Extend<(&'a Arc<str>, &'a Entry)> for Entries {
    fn extend<I: IntoIterator<Item = (&'a Arc<str>, &'a Entry)>>(&mut self, pairs: I) {
        self.extend(
            pairs
                .into_iter()
                .map(|(name, entry)| (name.clone(), entry.clone())),
        );
    }
}

impl FromIterator<(Arc<str>, Entry)> for Entries {
    fn from_iter<I: IntoIterator<Item = (Arc<str>, Entry)>>(pairs: I) -> Self {
        let mut entries = Self::default();
        entries.extend(pairs);
        entries
    }
}

impl PartialEq for Entries {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .iter()
                .all(|(name, entry)| other.get(name) == Some(entry))
    }
}

impl Eq for Entries {}

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Entry`'s own `Debug` hides secret values.
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::snapshot::{Source, Value};

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16),
        Remove(u8),
        /// Keep a clone, as a published snapshot does.
        Keep,
        /// Drop the kept clones, as readers let go of old snapshots.
        Forget,
    }

    /// Names `n0`..`n127`: more than the 64 changes an overlay holds before a merge.
    const NAMES: u8 = 128;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..NAMES, any::<u16>()).prop_map(|(name, value)| Op::Insert(name, value)),
            3 => (0..NAMES).prop_map(Op::Remove),
            1 => Just(Op::Keep),
            1 => Just(Op::Forget),
        ]
    }

    fn entry(value: u16) -> Entry {
        Entry::new(Value::Integer(value.into()), Source::Default, false)
    }

    fn contents(entries: &Entries) -> BTreeMap<String, Entry> {
        let listed: BTreeMap<String, Entry> = entries
            .iter()
            .map(|(name, entry)| (name.to_string(), entry.clone()))
            .collect();
        assert_eq!(listed.len(), entries.len(), "iter() yields each name once");
        listed
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// The map agrees with a plain map after every step, whether the flat map is
        /// shared or not and across merges; a clone kept earlier never changes.
        #[test]
        fn agrees_with_a_plain_map_and_clones_never_change(
            capacity in 0usize..300,
            ops in prop::collection::vec(op(), 0..1000),
        ) {
            let mut entries = Entries::with_capacity(capacity);
            let mut model: BTreeMap<String, Entry> = BTreeMap::new();
            let mut kept: Vec<(Entries, BTreeMap<String, Entry>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(name, value) => {
                        let name = format!("n{name}");
                        let old = entries.insert(Arc::from(name.as_str()), entry(value));
                        prop_assert_eq!(old, model.insert(name, entry(value)));
                    }
                    Op::Remove(name) => {
                        let name = format!("n{name}");
                        prop_assert_eq!(entries.remove(&name), model.remove(&name));
                    }
                    Op::Keep => kept.push((entries.clone(), model.clone())),
                    Op::Forget => kept.clear(),
                }
                prop_assert_eq!(entries.len(), model.len());
                prop_assert_eq!(entries.is_empty(), model.is_empty());
                for name in 0..NAMES {
                    let name = format!("n{name}");
                    prop_assert_eq!(entries.get(&name), model.get(&name));
                    prop_assert_eq!(entries.contains_key(&name), model.contains_key(&name));
                }
            }
            prop_assert_eq!(contents(&entries), model.clone());
            for (clone, then) in kept {
                prop_assert_eq!(contents(&clone), then);
            }
        }
    }

    #[test]
    fn changes_after_a_share_go_to_the_overlay_until_it_outgrows_a_sixteenth() {
        let mut entries = Entries::with_capacity(2000);
        for i in 0..2000 {
            entries.insert(Arc::from(format!("n{i}")), entry(0));
        }
        assert!(entries.overlay.is_empty(), "unshared: filled in place");
        let published = entries.clone();
        // 2000 / 16 + 64 = 189 changes fit in the overlay.
        for i in 0..189 {
            entries.insert(Arc::from(format!("n{i}")), entry(1));
        }
        assert_eq!(entries.overlay.len(), 189);
        assert!(Arc::ptr_eq(&entries.flat, &published.flat), "still shared");
        entries.remove("n1999");
        assert!(entries.overlay.is_empty(), "merged at the 190th change");
        assert!(!Arc::ptr_eq(&entries.flat, &published.flat));
        assert_eq!(entries.len(), 1999);
        assert_eq!(entries.get("n5"), Some(&entry(1)));
        assert_eq!(entries.get("n1999"), None);
        assert_eq!(published.get("n5"), Some(&entry(0)));
        assert_eq!(published.get("n1999"), Some(&entry(0)));
        assert_eq!(
            entries,
            entries
                .iter()
                .map(|(n, e)| (n.clone(), e.clone()))
                .collect()
        );
        assert_ne!(entries, published);
        let mut fewer = published.clone();
        fewer.remove("n0");
        assert_ne!(
            fewer, published,
            "a map is not equal to one with a name more"
        );
        assert_ne!(published, fewer);
        let values: Vec<&Entry> = entries.values().collect();
        assert_eq!(values.len(), 1999);
        assert_eq!(values.iter().filter(|e| ***e == entry(1)).count(), 189);
    }

    #[test]
    fn debug_shows_each_name_and_hides_secret_values() {
        let mut entries = Entries::default();
        let secret = Entry::new(Value::String(Arc::from("hunter2")), Source::Default, true);
        entries.insert(Arc::from("db.password"), secret);
        entries.insert(Arc::from("db.port"), entry(5432));
        let shown = format!("{entries:?}");
        assert!(shown.contains("\"db.password\""), "{shown}");
        assert!(shown.contains("5432"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
