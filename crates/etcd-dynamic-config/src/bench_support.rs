//! Entry points for the crate's own benchmarks: the engine's state machine and a
//! configuration without a server. Not part of the public API; may change at any time.

use std::sync::Arc;

use crate::config::EtcdConfig;
use crate::engine::state::{Event, Header, Input, Kv, Output, State};
use crate::schema::Schema;
use crate::settings::EtcdSettings;
use crate::snapshot::Snapshot;

/// What a snapshot's flat map holds, in bytes: its packed entries (names, string
/// values, keys, and their kinds, lengths and numbers) and its hash table; an overlay of
/// later changes is not counted.
pub fn heap_parts(snapshot: &Snapshot) -> [usize; 2] {
    snapshot.entries().heap()
}

/// The state machine behind one prefix.
#[derive(Debug)]
pub struct Engine {
    state: State,
}

impl Engine {
    /// A state that listed `pairs` (absolute keys) at `revision`.
    pub fn listed(prefix: &str, pairs: Vec<(String, String)>, revision: i64) -> Self {
        let keys = Arc::new(Schema::auto_discover())
            .bind(prefix)
            .expect("auto-discovery binds to any prefix");
        let mut state = State::new(keys, Default::default());
        let kvs: Vec<Kv> = pairs
            .into_iter()
            .map(|(key, value)| Kv {
                key,
                value: value.into_bytes(),
                mod_revision: 1,
            })
            .collect();
        let count = i64::try_from(kvs.len()).expect("fewer than 2^63 keys");
        state.step(Input::Listed {
            kvs,
            header: header(revision),
            count,
            at: std::time::Instant::now(),
        });
        Self { state }
    }

    /// Applies one revision writing `pairs` and returns the published snapshot.
    pub fn apply(&mut self, pairs: &[(&str, &str)], revision: i64) -> Option<Arc<Snapshot>> {
        let events = pairs
            .iter()
            .map(|(key, value)| Event {
                key: Arc::from(*key),
                value: Some(value.as_bytes().to_vec()),
                mod_revision: revision,
                prev_mod_revision: None,
                prev_fingerprint: None,
                created: false,
            })
            .collect();
        self.state
            .step(Input::Watched {
                events,
                header: header(revision),
                uncounted: 0,
            })
            .into_iter()
            .find_map(|output| match output {
                Output::Publish(snapshot) => Some(snapshot),
                _ => None,
            })
    }
}

fn header(revision: i64) -> Header {
    Header {
        cluster: 1,
        revision,
    }
}

/// A configuration serving `snapshot`, never connected.
///
/// # Panics
///
/// Never with the default settings.
pub fn config_with(snapshot: Arc<Snapshot>) -> EtcdConfig {
    let settings = EtcdSettings::builder().build().expect("default settings");
    let config = EtcdConfig::builder()
        .settings(settings)
        .build()
        .expect("default configuration");
    config.store().begin_run().publish(snapshot);
    config
}
