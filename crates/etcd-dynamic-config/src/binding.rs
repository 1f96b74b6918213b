//! Typed bindings: the configuration read into a serde struct, rebuilt on every
//! published snapshot, loaded lock-free.

use std::fmt;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::de::DeserializeOwned;

use crate::observe::events;
use crate::snapshot::Snapshot;

/// The configuration as a `T`, rebuilt on each applied revision.
///
/// A revision that does not read as `T` keeps the previous value; the failure is logged
/// (`bind_rejected`) and kept in [`last_error`](Self::last_error) until a revision reads
/// again.
pub struct Binding<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    current: ArcSwap<T>,
    last_error: Mutex<Option<String>>,
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
        f.debug_struct("Binding")
            .field("type", &std::any::type_name::<T>())
            .field("last_error", &self.last_error())
            .finish()
    }
}

impl<T> Binding<T> {
    /// Why the latest revision did not read as `T`, while it does not.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> Binding<T> {
    pub(crate) fn new(initial: T) -> Self {
        Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(initial),
                last_error: Mutex::new(None),
            }),
        }
    }

    /// The latest value: one atomic load, no lock.
    pub fn load(&self) -> Arc<T> {
        self.shared.current.load_full()
    }

    /// What rebuilds this binding on each publish: holds it weakly, and says `false`
    /// once every handle is dropped, so the store forgets it.
    pub(crate) fn rebuilder(&self) -> crate::store::Rebuild {
        let shared = Arc::downgrade(&self.shared);
        Box::new(move |snapshot| match shared.upgrade() {
            Some(shared) => {
                Binding { shared }.rebuild(snapshot);
                true
            }
            None => false,
        })
    }

    /// Reads `snapshot` as `T`; keeps the previous value when it does not read (or the
    /// deserializer panics).
    pub(crate) fn rebuild(&self, snapshot: &Snapshot) {
        let mut last_error = self
            .shared
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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
                self.shared.current.store(Arc::new(value));
                *last_error = None;
            }
            Err(error) => {
                tracing::warn!(
                    event = events::BIND_REJECTED,
                    revision = snapshot.revision(),
                    target = std::any::type_name::<T>(),
                    error.message = %error,
                    "a revision does not read as the bound type; the previous value stays"
                );
                *last_error = Some(error.to_string());
            }
        }
    }
}
