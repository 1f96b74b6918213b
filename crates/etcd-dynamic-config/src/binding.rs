//! Typed bindings: the configuration read into a serde struct, read again on the first
//! load after each publish, loaded lock-free in between.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use serde::de::DeserializeOwned;

use crate::observe::events;
use crate::snapshot::Snapshot;
use crate::store::Current;

/// The configuration as a `T`, as of the latest applied revision.
///
/// A publish costs a binding nothing but a counter increment: the first
/// [`load`](Self::load) after it reads the new snapshot as `T` on the caller's thread
/// (the others wait for that read, then share it); until the next publish, `load` is
/// two atomic loads and a borrow of the value that leaves its reference count alone.
/// So updates cost O(1) however large the configuration, and a binding no one loads
/// costs nothing.
///
/// A revision that does not read as `T` keeps the previous value; the failure is logged
/// (`bind_rejected`) and kept in [`last_error`](Self::last_error) until a revision reads
/// again.
pub struct Binding<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    store: Arc<Current>,
    value: ArcSwap<T>,
    /// How many publishes had ended when the snapshot last read was loaded: that
    /// snapshot or an older one's count. While as many have begun, it is the latest.
    read_at: AtomicU64,
    /// The last read; held while a reader reads again.
    read: Mutex<Read>,
}

/// What a binding read last.
struct Read {
    /// The snapshot, to tell it from a newer one (held weakly: its entries are not kept
    /// alive, and its address is not reused while this is held).
    from: Weak<Snapshot>,
    /// Why it did not read as `T`.
    error: Option<String>,
}

impl<T> Clone for Binding<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for Binding<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last_error = self
            .shared
            .read
            .try_lock()
            .map(|read| read.error.clone())
            .unwrap_or_default();
        f.debug_struct("Binding")
            .field("type", &std::any::type_name::<T>())
            .field("last_error", &last_error)
            .finish_non_exhaustive()
    }
}

/// A borrowed [`Binding`] value: derefs to `T`.
pub struct BindingGuard<T>(arc_swap::Guard<Arc<T>>);

impl<T> BindingGuard<T> {
    /// The value as an `Arc` to keep.
    pub fn into_arc(self) -> Arc<T> {
        arc_swap::Guard::into_inner(self.0)
    }
}

impl<T> std::ops::Deref for BindingGuard<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for BindingGuard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        T::fmt(self, f)
    }
}

/// A [`Binding`] held by one thread, which keeps the value it loaded last: each
/// [`load`](Self::load) checks that it is still the latest (three atomic loads, no atomic
/// write) and lends it, where [`Binding::load`] takes a guard from `arc-swap` and gives
/// it back, an atomic write each way. Made by [`Binding::cached`]; loading needs `&mut`,
/// so each thread keeps its own. The first `load` after a publish reads the snapshot
/// as [`Binding::load`] does, once for the binding and all its handles.
///
/// It keeps its value in memory until its next `load`, even after newer ones are
/// published: drop it when its thread stops loading.
pub struct CachedBinding<T> {
    binding: Binding<T>,
    cache: arc_swap::Cache<Values<T>, Arc<T>>,
}

/// A binding's value, for [`arc_swap::Cache`], which reads it through `Deref`.
struct Values<T>(Arc<Shared<T>>);

impl<T> std::ops::Deref for Values<T> {
    type Target = ArcSwap<T>;

    fn deref(&self) -> &ArcSwap<T> {
        &self.0.value
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> CachedBinding<T> {
    /// The latest value, as [`Binding::load`], lent until the next `load`.
    pub fn load(&mut self) -> &Arc<T> {
        self.binding.refresh();
        self.cache.load()
    }

    /// The binding this handle loads.
    pub fn binding(&self) -> &Binding<T> {
        &self.binding
    }
}

impl<T> fmt::Debug for CachedBinding<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedBinding")
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> Binding<T> {
    /// A binding of the store's snapshots, reading the current one now.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`](crate::Error::Bind) when the current snapshot does not read as `T`.
    pub(crate) fn new(store: Arc<Current>) -> crate::Result<Self> {
        let read_at = store.ended();
        let snapshot = store.load();
        let value = snapshot.deserialize::<T>()?;
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                value: ArcSwap::from_pointee(value),
                read_at: AtomicU64::new(read_at),
                read: Mutex::new(Read {
                    from: Arc::downgrade(&snapshot),
                    error: None,
                }),
            }),
        })
    }

    /// The latest value: the snapshot published last, read as `T` (see the type's docs
    /// for the cost). Use it and let it go, as a request would; a thread holding many
    /// at once makes each further load slower ([`load_full`](Self::load_full) keeps
    /// one).
    pub fn load(&self) -> BindingGuard<T> {
        self.refresh();
        BindingGuard(self.shared.value.load())
    }

    /// The latest value, as [`load`](Self::load), as an `Arc` to keep (one more
    /// reference count to change).
    pub fn load_full(&self) -> Arc<T> {
        self.refresh();
        self.shared.value.load_full()
    }

    /// A handle for one thread that loads the value often, such as a worker's loop:
    /// see [`CachedBinding`].
    pub fn cached(&self) -> CachedBinding<T> {
        self.refresh();
        CachedBinding {
            binding: self.clone(),
            cache: arc_swap::Cache::new(Values(self.shared.clone())),
        }
    }

    /// Why the latest revision did not read as `T`, while it does not.
    pub fn last_error(&self) -> Option<String> {
        self.refresh();
        self.lock_read().error.clone()
    }

    fn lock_read(&self) -> std::sync::MutexGuard<'_, Read> {
        self.shared
            .read
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the current snapshot as `T` if a publish has begun since the last read and
    /// stored a snapshot other than the one read; keeps the previous value when it does
    /// not read (or the deserializer panics).
    ///
    /// So a thread that has seen a snapshot (through `snapshot()`, a handle or a
    /// subscription) loads a value read from it or a newer one, and each snapshot is
    /// read at most once.
    fn refresh(&self) {
        let shared = &*self.shared;
        if shared.read_at.load(Ordering::Acquire) == shared.store.begun() {
            return;
        }
        let mut last = self.lock_read();
        // Another reader may have read it while this one waited.
        if shared.read_at.load(Ordering::Acquire) == shared.store.begun() {
            return;
        }
        let ended = shared.store.ended();
        let snapshot = shared.store.load();
        if std::ptr::eq(last.from.as_ptr(), Arc::as_ptr(&snapshot)) {
            // Read already: a publish has begun and not yet stored its snapshot, or had
            // not ended when it was read.
            shared.read_at.store(ended, Ordering::Release);
            return;
        }
        let read =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| snapshot.deserialize::<T>()))
                .unwrap_or_else(|panic| {
                    Err(crate::Error::Bind {
                        target: std::any::type_name::<T>(),
                        name: None,
                        origin: None,
                        reason: format!(
                            "the deserializer panicked: {}",
                            crate::error::panic_message(&*panic)
                        ),
                    })
                });
        match read {
            Ok(value) => {
                shared.value.store(Arc::new(value));
                last.error = None;
            }
            Err(error) => {
                tracing::warn!(
                    event = events::BIND_REJECTED,
                    revision = snapshot.revision(),
                    target = std::any::type_name::<T>(),
                    error.message = %error,
                    "a revision does not read as the bound type; the previous value stays"
                );
                last.error = Some(error.to_string());
            }
        }
        last.from = Arc::downgrade(&snapshot);
        shared.read_at.store(ended, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::snapshot::{Entries, Snapshot, Source};
    use crate::store::Store;
    use crate::value::ValueRef;

    /// How many times a `Counted<TEST>` was deserialized, by `TEST`: one count for each
    /// test that counts (the tests run at once).
    static READS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

    fn reads(test: usize) -> usize {
        READS[test].load(Ordering::SeqCst)
    }

    /// `{ level }`, counting its reads; `level = "boom"` panics.
    struct Counted<const TEST: usize> {
        level: String,
    }

    impl<'de, const TEST: usize> serde::Deserialize<'de> for Counted<TEST> {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            #[derive(serde::Deserialize)]
            struct Plain {
                level: String,
            }
            READS[TEST].fetch_add(1, Ordering::SeqCst);
            let plain = Plain::deserialize(deserializer)?;
            assert!(plain.level != "boom", "a deserializer that panics");
            Ok(Self { level: plain.level })
        }
    }

    fn snapshot(revision: i64, level: &str) -> Arc<Snapshot> {
        let mut entries = Entries::default();
        entries.insert("level", ValueRef::String(level), &Source::Default, false);
        Arc::new(Snapshot::new(revision, entries))
    }

    #[test]
    fn publishes_cost_nothing_until_a_load_reads_the_latest_once() {
        let store = Store::new();
        let writer = store.begin_run();
        writer.publish(snapshot(1, "INFO"));
        let binding = Binding::<Counted<0>>::new(store.current()).unwrap();
        assert_eq!(reads(0), 1);
        for revision in 2..=1000 {
            writer.publish(snapshot(revision, &format!("L{revision}")));
        }
        assert_eq!(reads(0), 1, "no read per publish");
        assert_eq!(binding.load().level, "L1000");
        assert_eq!(binding.clone().load_full().level, "L1000");
        let kept = binding.load().into_arc();
        assert_eq!(reads(0), 2, "one read for the latest");

        // A read that panics keeps the value and says why, once per publish.
        writer.publish(snapshot(1001, "boom"));
        assert_eq!(binding.load().level, "L1000");
        assert!(
            binding
                .last_error()
                .unwrap()
                .contains("the deserializer panicked")
        );
        assert!(format!("{binding:?}").contains("panicked"));
        assert_eq!(reads(0), 3);
        writer.publish(snapshot(1002, "DEBUG"));
        assert_eq!(binding.load().level, "DEBUG");
        assert_eq!(kept.level, "L1000", "a value kept stays as it was");
        assert_eq!(binding.last_error(), None);
        assert_eq!(reads(0), 4);

        // Readers racing a writer, half of them through cached handles: at most one
        // read per publish, and each reader sees the revisions in order.
        std::thread::scope(|scope| {
            for reader in 0..4 {
                let binding = binding.clone();
                scope.spawn(move || {
                    let mut cached = (reader % 2 == 1).then(|| binding.cached());
                    let mut last = 0;
                    for _ in 0..2_000 {
                        let level = match &mut cached {
                            Some(cached) => cached.load().level.clone(),
                            None => binding.load().level.clone(),
                        };
                        let revision = level.trim_start_matches('L').parse().unwrap_or(0);
                        assert!(revision >= last, "{revision} after {last}");
                        last = revision;
                    }
                });
            }
            for revision in 2000..2100 {
                writer.publish(snapshot(revision, &format!("L{revision}")));
            }
        });
        assert_eq!(binding.load().level, "L2099");
        assert!(reads(0) <= 4 + 100, "{} reads", reads(0));

        // A cached handle: the binding's values, from the binding's reads.
        let mut cached = binding.cached();
        assert!(format!("{cached:?}").starts_with("CachedBinding { binding: Binding {"));
        let before = reads(0);
        assert_eq!(cached.load().level, "L2099");
        writer.publish(snapshot(3000, "WARN"));
        assert_eq!(cached.load().level, "WARN");
        assert_eq!(binding.load().level, "WARN");
        assert_eq!(reads(0), before + 1, "one read for both");
        writer.publish(snapshot(3001, "boom"));
        assert_eq!(cached.load().level, "WARN", "a failed read keeps the value");
        assert!(cached.binding().last_error().unwrap().contains("panicked"));
        writer.publish(snapshot(3002, "ERROR"));
        let moved = std::thread::spawn(move || cached.load().level.clone());
        assert_eq!(moved.join().unwrap(), "ERROR");
        assert_eq!(reads(0), before + 3);
    }

    #[test]
    fn a_thread_that_saw_a_snapshot_loads_its_value_while_its_publish_ends() {
        let store = Store::new();
        let writer = store.begin_run();
        writer.publish(snapshot(1, "INFO"));
        let current = store.current();
        let binding = Binding::<Counted<1>>::new(current.clone()).unwrap();
        let mut cached = binding.cached();
        assert_eq!(reads(1), 1);

        // Begun, nothing stored yet: the value read stays, and is not read again.
        current.begin_publish();
        for _ in 0..3 {
            assert_eq!(binding.load().level, "INFO");
            assert_eq!(cached.load().level, "INFO");
        }
        assert_eq!(reads(1), 1, "no read of the same");

        // Stored, not yet ended: a thread that sees the snapshot loads its value.
        current.store_published(snapshot(2, "DEBUG"));
        assert_eq!(store.load().revision(), 2);
        assert_eq!(binding.load().level, "DEBUG");
        assert_eq!(cached.load().level, "DEBUG");
        current.end_publish();
        assert_eq!(binding.load().level, "DEBUG");
        assert_eq!(cached.load().level, "DEBUG");
        assert_eq!(reads(1), 2, "one read of revision 2");

        // Then publishes as usual, one read each.
        writer.publish(snapshot(3, "WARN"));
        assert_eq!(cached.load().level, "WARN");
        assert_eq!(binding.load().level, "WARN");
        assert_eq!(reads(1), 3);
    }

    #[test]
    fn a_load_between_publishes_takes_no_lock() {
        /// `{ level }`, read without counting (the other tests count theirs).
        #[derive(serde::Deserialize)]
        struct Uncounted {
            level: String,
        }
        let store = Store::new();
        let writer = store.begin_run();
        writer.publish(snapshot(1, "INFO"));
        let binding = Binding::<Uncounted>::new(store.current()).unwrap();
        for revision in 2..=3 {
            writer.publish(snapshot(revision, &format!("L{revision}")));
            assert_eq!(binding.load().level, format!("L{revision}"));
            // The lock a read after a publish takes, held here: a load of the value
            // already read, and a handle's, return without it.
            let held = binding.lock_read();
            let (done, finished) = std::sync::mpsc::channel();
            let reader = std::thread::spawn({
                let binding = binding.clone();
                move || {
                    let mut cached = binding.cached();
                    let levels = (binding.load().level.clone(), cached.load().level.clone());
                    done.send(levels).unwrap();
                }
            });
            let levels = finished.recv_timeout(std::time::Duration::from_secs(10));
            drop(held);
            reader.join().unwrap();
            let expected = format!("L{revision}");
            assert_eq!(
                levels,
                Ok((expected.clone(), expected)),
                "blocked on the lock"
            );
        }
    }
}
