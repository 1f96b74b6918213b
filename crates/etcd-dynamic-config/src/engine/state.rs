//! The list-then-watch cache as a pure, synchronous state machine.
//!
//! [`State::step`] takes one [`Input`] (what etcd said) and returns [`Output`]s (what to
//! publish, what to ask etcd next). It never awaits and never touches the network, so
//! every transition is unit-tested without a server; the I/O loop in `engine` executes
//! the outputs against etcd.
//!
//! ```text
//!   Empty --Listed--> Watching --Watched--> Watching
//!     ^                  |  \--Broken--> Watch { from: revision + 1 }
//!     |                  \--Compacted / diverged / another etcd--> List (re-list, diff, publish)
//!     \--Broken--> List
//! ```
//!
//! # Start-up
//!
//! A state made [`starting`](State::starting) answers `start()` once, with
//! [`Output::Started`] or [`Output::StartFailed`]:
//!
//! ```text
//!   Listed (valid) ---------> Created (the watch is registered) --> Started { Etcd }
//!   Listed (breaks a check) --> StartFailed { Invalid }
//!   StartExpired, listed ----------------------------------------> Started { Etcd }
//!   StartExpired, fail fast -------------------------------------> StartFailed { Timeout }
//!   StartExpired, restarted --> keep serving the last run's -----> Started { its source }
//!   StartExpired --> publish cache file > env var > default -----> Started { CacheFile | Fallback }
//!                    (breaks a check) ---------------------------> StartFailed { Invalid }
//! ```
//!
//! After a fallback start, the first list publishes etcd's values and notifies the
//! difference to what was served.
//!
//! # The applied revision and the watermark
//!
//! The applied revision moves only by applying etcd's events or a re-list. A progress
//! answer is a watermark, never data: etcd before 3.4.25 / 3.5.8 may send one ahead of
//! events still queued for this watcher (etcd issue 15220), so it neither skips events
//! nor publishes. It still says where etcd's head was: once the applied revision reaches
//! it, the state is *confirmed* to equal etcd's head as of that moment.
//!
//! A confirmation also comes from a list, from a progress answer at the applied revision
//! itself, and from a head read ([`Input::Head`]) that finds no key under the prefix
//! written after the applied revision and as many keys as the state holds: then the
//! prefix at etcd's head equals the prefix at the applied revision.
//!
//! Every answer carries etcd's cluster id and head revision: another cluster id, or a
//! head below the applied revision (etcd wiped, restored from a backup, replaced), asks
//! for a re-list, whose difference is published. The exception is the head of a
//! progress answer from etcd before 3.4.25 / 3.5.8, which can be a revision below the
//! last event on the same stream: only its cluster id counts. Neither cluster id nor
//! head tells an etcd replaced by one with the same cluster id whose history has reached
//! the applied revision again; the history probe ([`Input::Probed`]) before a watch
//! resumes does: etcd's key count and the sum of the [`fingerprint`]s of its keys at the
//! applied revision must be the state's, which events keep up to date from each key's
//! previous value.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use imbl::OrdMap;

use crate::announce::Announce;
use crate::cache::Loaded;
use crate::report::{Rejection, RevisionRejection, StartReport, StartSource};
use crate::rollout::{Rollout, RolloutRejection};
use crate::schema::{Coerced, KeyMap};
use crate::snapshot::{ConfigChange, Entries, Entry, Packed, Snapshot, Source, Value, ValueChange};
use crate::value::ValueRef;

/// A key-value pair from a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kv {
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) mod_revision: i64,
}

/// A watch event, taken from the watch payload itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) key: Arc<str>,
    /// `Some(bytes)` for a put, `None` for a delete.
    pub(crate) value: Option<Vec<u8>>,
    /// The revision of the write (for a delete: of the deletion).
    pub(crate) mod_revision: i64,
    /// The mod revision of the key before this event (`prev_kv`), when etcd sent it.
    pub(crate) prev_mod_revision: Option<i64>,
    /// The [`fingerprint`] of the key before this event, when etcd sent it.
    pub(crate) prev_fingerprint: Option<u64>,
    /// Whether this put created the key (a delete: `false`).
    pub(crate) created: bool,
}

/// What every etcd answer says about etcd itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The cluster that answered.
    pub(crate) cluster: u64,
    /// etcd's head revision when it answered.
    pub(crate) revision: i64,
}

/// What etcd said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// A complete range read of the prefix, every page at `header.revision`, holding
    /// `count` keys (some of which may name nothing), answered `at`.
    Listed {
        kvs: Vec<Kv>,
        header: Header,
        count: i64,
        at: Instant,
    },
    /// One watch response: events in revision order, whole revisions only.
    /// `uncounted` is the net number of keys created under the prefix by events left
    /// out of `events` (keys that are not UTF-8 text).
    Watched {
        events: Vec<Event>,
        header: Header,
        uncounted: i64,
    },
    /// A progress answer (or a watch's creation answer): etcd's head was at
    /// `header.revision` `at` this moment. Unless `trusted`, events at or below it may
    /// still be on their way (etcd issue 15220, and a creation answer always precedes
    /// the events it resumes). `trusted`: a progress notification from an etcd that
    /// sends one only after every event up to it (3.4.25+, 3.5.8+, 3.6+).
    Progress {
        header: Header,
        at: Instant,
        trusted: bool,
    },
    /// A head read, at `header.revision`, answered `at`: how many keys the prefix holds,
    /// and whether one of them was written after the applied revision.
    Head {
        header: Header,
        count: i64,
        changed: bool,
        at: Instant,
    },
    /// Before a watch resumes after an outage: what etcd holds under the prefix at the
    /// applied `revision`.
    Probed { revision: i64, found: Probe },
    /// The answer to a watch's creation: the watch is registered, and etcd's head was
    /// at `header.revision` `at` this moment (events at or below it may follow).
    Created { header: Header, at: Instant },
    /// The watch start revision was compacted away.
    Compacted { compact_revision: i64 },
    /// The watch stream ended or failed.
    Broken,
    /// The start deadline passed; `cache` is what the cache file held, when one is set.
    StartExpired { cache: Option<CacheRead> },
}

/// What reading the cache file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CacheRead {
    /// No file.
    Absent,
    /// A file that is not trusted, and why.
    Unusable(String),
    /// A valid file.
    Loaded(Loaded),
}

impl From<Result<Option<Loaded>, String>> for CacheRead {
    fn from(read: Result<Option<Loaded>, String>) -> Self {
        match read {
            Ok(Some(loaded)) => Self::Loaded(loaded),
            Ok(None) => Self::Absent,
            Err(reason) => Self::Unusable(reason),
        }
    }
}

/// Why `start()` fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartFailure {
    /// The deadline passed before etcd answered, and falling back is not allowed.
    Timeout,
    /// etcd's values break the schema's checks.
    InvalidEtcd(Vec<String>),
    /// etcd did not answer, and the fallback values break the schema's checks.
    InvalidFallback(Vec<String>),
}

/// How a state answers `start()`, until it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    /// Fail at the deadline instead of serving fallbacks.
    pub(crate) fail_fast: bool,
    /// What the last run served (its source and revision), when this is a restart: it
    /// keeps serving until etcd answers.
    pub(crate) resumed: Option<(StartSource, i64)>,
}

/// One key's content at one revision, in 64 bits. The wrapping sum over the prefix
/// tells two histories apart at a revision: another etcd whose history reached the
/// applied revision with other values there, even with the same keys and revisions.
/// foldhash's quality hasher with its fixed seed: the same in every instance and run.
/// It runs once per listed key at start, where SipHash (with the key map's lookups)
/// was about 9 % of a 100,000-key build in `perf`.
pub(crate) fn fingerprint(key: &[u8], value: &[u8], mod_revision: i64) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::default().hash_one((key, value, mod_revision))
}

/// What a history probe found at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// etcd's count of keys under the prefix, the sum of the [`fingerprint`]s of those
    /// that are UTF-8, and the header of etcd's answer.
    Found {
        count: i64,
        digest: u64,
        head: Header,
    },
    /// The revision was compacted: nothing to compare (the watch will say so).
    Compacted,
    /// etcd has not reached the revision: `head` is its header read right after.
    Future { head: Header },
}

/// Why a full re-list is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListReason {
    /// Nothing has been loaded yet.
    Initial,
    /// The revision to resume from was compacted.
    Compacted { compact_revision: i64 },
    /// A watch event disagreed with the cached state (`prev_kv` did not match).
    Diverged { key_revision: i64 },
    /// Another etcd cluster answered (a wiped member started again, a new cluster on
    /// the same address).
    ClusterChanged { from: u64, to: u64 },
    /// etcd reported a head below the applied revision (restored from a backup,
    /// replaced).
    RevisionWentBack { applied: i64, reported: i64 },
    /// etcd's prefix at the applied revision is not the state's: another history with
    /// as many revisions (wiped or restored, then written to, while disconnected).
    HistoryDiffers { revision: i64 },
    /// The state cannot be compared with etcd's prefix at the applied revision: an
    /// event came without the key's previous value.
    Unverifiable { revision: i64 },
}

impl ListReason {
    /// Whether the reason is that another etcd answered.
    pub(crate) fn is_another_etcd(self) -> bool {
        matches!(
            self,
            Self::ClusterChanged { .. }
                | Self::RevisionWentBack { .. }
                | Self::HistoryDiffers { .. }
        )
    }
}

/// What to do next.
#[derive(Debug, Clone)]
pub(crate) enum Output {
    /// Make this snapshot the current one.
    Publish(Arc<Snapshot>),
    /// Tell the change listeners (one per applied revision, in order).
    Notify(ConfigChange),
    /// A value was rejected.
    Reject(Rejection),
    /// A whole revision was rejected.
    RejectRevision(RevisionRejection),
    /// A rollout that targets this instance is not served (newly so).
    RejectRollout(RolloutRejection),
    /// Several keys map to one name; the first key (in key order) wins.
    Collide { name: Arc<str>, keys: Vec<Arc<str>> },
    /// The state equals etcd's prefix at its head `revision`, as etcd said `at` that
    /// moment.
    Confirmed { revision: i64, at: Instant },
    /// Read the whole prefix (again).
    List(ListReason),
    /// Watch the prefix from this revision on.
    Watch { from_revision: i64 },
    /// `start()` succeeds with this report.
    Started(StartReport),
    /// `start()` fails.
    StartFailed(StartFailure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Empty,
    Watching,
}

/// One key's write as the cache applies it: the value already coerced, the key and the
/// value's text borrowed from the listing or the event.
#[derive(Debug)]
struct Write<'a> {
    key: &'a str,
    mod_revision: i64,
    value: Result<Coerced<'a>, String>,
    /// Whether the schema keeps the name's value secret.
    secret: bool,
}

/// A key that lost a name collision: kept so it can take over if the winner goes.
#[derive(Debug, Clone)]
struct Shadowed {
    name: Arc<str>,
    mod_revision: i64,
    value: Result<Value, String>,
}

/// A rollout etcd holds under the prefix.
#[derive(Debug, Clone)]
struct Staged {
    mod_revision: i64,
    /// The rollout, or why its document does not read.
    rollout: Result<Arc<Rollout>, String>,
}

/// The base with the rollouts that target this instance laid over it.
struct Overlay {
    entries: Entries,
    /// The rollouts laid, in name order.
    served: Vec<Arc<str>>,
    /// The names they change.
    names: BTreeSet<Arc<str>>,
    /// The targeted rollouts left out, and why.
    rejected: Vec<RolloutRejection>,
}

/// The cache: the current entries plus what is needed to apply the next event.
#[derive(Debug)]
pub(crate) struct State {
    keys: KeyMap,
    /// What a name holds when etcd has nothing valid for it: env vars and defaults.
    fallback: Entries,
    phase: Phase,
    revision: i64,
    /// The prefix as etcd holds it (after coercion), at `revision`.
    entries: Entries,
    /// The entries of the last published snapshot: `entries` unless a revision broke a
    /// check.
    published: Entries,
    /// Whether `published` is being served: changes are reported relative to it.
    served: bool,
    /// Changes applied since the last published snapshot (while revisions are rejected).
    unpublished: Pending,
    /// The latest revision that broke a check, until a valid one follows.
    rejected_revision: Option<RevisionRejection>,
    /// Env var values rejected when the fallbacks were read.
    fallback_rejected: Vec<Rejection>,
    /// Name → the rejected current value of its owning key.
    rejected: OrdMap<Arc<str>, Rejection>,
    /// Key → the key's data, for keys that lost a name collision.
    shadowed: OrdMap<Arc<str>, Shadowed>,
    /// The cluster the state came from, once listed.
    cluster: Option<u64>,
    /// How many keys etcd holds under the prefix at `revision`, named or not.
    key_count: i64,
    /// The sum of the [`fingerprint`]s of the UTF-8 keys etcd holds under the prefix at
    /// `revision`; `None` since an event came without the key's previous value.
    digest: Option<u64>,
    /// Heads etcd reported above the applied revision, oldest first: reaching one
    /// confirms the state as of its moment.
    targets: VecDeque<(i64, Instant)>,
    /// How to answer `start()`, until it is answered.
    start: Option<Start>,
    /// Rollout key → the rollout etcd holds there, at `revision`.
    rollouts: OrdMap<Arc<str>, Staged>,
    /// Who this instance is, for the rollouts' targets; `None`: it is in none.
    member: Option<Announce>,
    /// The names the rollouts change in the published snapshot.
    overlaid: BTreeSet<Arc<str>>,
    /// The rollouts that target this instance and are not served, and why.
    rollout_rejections: Vec<RolloutRejection>,
    /// From how many keys a listing is taken in on two threads (see [`split_listing`]).
    split_from: usize,
}

/// How many unreached heads are remembered (the newest win).
const MAX_TARGETS: usize = 8;

/// The state before a revision is applied, to return to if it cannot be applied whole.
/// Persistent maps make taking one O(1).
struct Checkpoint {
    entries: Entries,
    rollouts: OrdMap<Arc<str>, Staged>,
    rejected: OrdMap<Arc<str>, Rejection>,
    shadowed: OrdMap<Arc<str>, Shadowed>,
    key_count: i64,
    digest: Option<u64>,
}

/// Changes merged per name: the first old value and the last new one. `None` records
/// nothing (building a fresh state from a list, where the difference is computed whole).
#[derive(Debug, Clone)]
struct Pending(Option<BTreeMap<Arc<str>, OldNew>>);

/// A name's value before and after.
type OldNew = (Option<Value>, Option<Value>);

impl Default for Pending {
    fn default() -> Self {
        Self(Some(BTreeMap::new()))
    }
}

impl Pending {
    fn ignoring() -> Self {
        Self(None)
    }

    /// Whether changes are recorded: values need not be cloned for one that ignores them.
    fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    fn record(&mut self, name: &str, old: Option<Value>, new: Option<Value>) {
        if let Some(changes) = &mut self.0 {
            match changes.get_mut(name) {
                Some((_, last)) => *last = new,
                None => {
                    changes.insert(Arc::from(name), (old, new));
                }
            }
        }
    }

    /// Each name changed, and each of `also`, from its value in `old` to its value in
    /// `new`: for names a rollout changes, whose base values are not the ones served.
    fn rebase<'a>(
        &mut self,
        also: impl IntoIterator<Item = &'a Arc<str>>,
        old: &Entries,
        new: &Entries,
    ) {
        let Some(changes) = &mut self.0 else {
            return;
        };
        let mut names: Vec<Arc<str>> = also.into_iter().cloned().collect();
        names.extend(changes.keys().cloned());
        let value = |entries: &Entries, name: &str| entries.get(name).map(|e| e.value().to_value());
        for name in names {
            let pair = (value(old, &name), value(new, &name));
            changes.insert(name, pair);
        }
    }

    fn merge(&mut self, later: Pending) {
        for (name, (old, new)) in later.0.into_iter().flatten() {
            self.record(&name, old, new);
        }
    }

    fn into_change(self, revision: i64, keys: &KeyMap) -> Option<ConfigChange> {
        let changes: Vec<ValueChange> = self
            .0
            .into_iter()
            .flatten()
            .filter(|(_, (old, new))| old != new)
            .map(|(name, (old, new))| ValueChange {
                secret: keys.schema().is_secret(&name),
                name,
                old,
                new,
            })
            .collect();
        (!changes.is_empty()).then_some(ConfigChange { revision, changes })
    }
}

impl State {
    /// An empty cache for the prefix of `keys`, with `fallback` values for names etcd
    /// does not hold.
    pub(crate) fn new(keys: KeyMap, fallback: Entries) -> Self {
        Self {
            keys,
            entries: fallback.clone(),
            published: fallback.clone(),
            fallback,
            phase: Phase::Empty,
            revision: 0,
            served: false,
            unpublished: Pending::default(),
            rejected_revision: None,
            fallback_rejected: Vec::new(),
            rejected: OrdMap::new(),
            shadowed: OrdMap::new(),
            cluster: None,
            key_count: 0,
            digest: Some(0),
            targets: VecDeque::new(),
            start: None,
            rollouts: OrdMap::new(),
            member: None,
            overlaid: BTreeSet::new(),
            rollout_rejections: Vec::new(),
            split_from: SPLIT_FROM,
        }
    }

    /// The same state, for an instance that takes part in rollouts as `member` says.
    pub(crate) fn member(mut self, member: Option<Announce>) -> Self {
        self.member = member;
        self
    }

    /// The rollouts that target this instance and are not served, and why.
    pub(crate) fn rollout_rejections(&self) -> &[RolloutRejection] {
        &self.rollout_rejections
    }

    /// The same state, answering `start()` as `start` says.
    pub(crate) fn starting(mut self, start: Start) -> Self {
        self.start = Some(start);
        self
    }

    /// Whether a list was applied.
    pub(crate) fn is_listed(&self) -> bool {
        self.phase == Phase::Watching
    }

    /// The schema of the prefix.
    pub(crate) fn schema(&self) -> &crate::schema::Schema {
        self.keys.schema()
    }

    /// The prefix with a trailing `/`, as ranged and watched.
    pub(crate) fn prefix_dir(&self) -> &str {
        self.keys.prefix_dir()
    }

    /// The current entries as a snapshot, whether or not they pass the checks: for
    /// one-off reads that report problems rather than hide the values.
    pub(crate) fn unchecked_snapshot(&self) -> Snapshot {
        Snapshot::new(self.revision, self.entries.clone())
    }

    /// The latest revision rejected by a check, while no valid one followed.
    pub(crate) fn rejected_revision(&self) -> Option<&RevisionRejection> {
        self.rejected_revision.as_ref()
    }

    /// Publishes the current entries if they pass the checks; otherwise keeps the last
    /// good snapshot and holds the changes back until a valid revision.
    fn offer(&mut self, changes: Pending, outputs: &mut Vec<Output>) -> Option<Arc<Snapshot>> {
        self.unpublished.merge(changes);
        let candidate = Arc::new(Snapshot::new(self.revision, self.entries.clone()));
        match self.keys.schema().validate(&candidate) {
            Ok(()) => {
                let mut changes = std::mem::take(&mut self.unpublished);
                let candidate = if self.rollouts.is_empty() && self.overlaid.is_empty() {
                    self.rollout_rejections.clear();
                    candidate
                } else {
                    let overlay = self.overlay();
                    for rejection in &overlay.rejected {
                        if !self.rollout_rejections.contains(rejection) {
                            outputs.push(Output::RejectRollout(rejection.clone()));
                        }
                    }
                    self.rollout_rejections = overlay.rejected;
                    if self.served {
                        let also = self.overlaid.iter().chain(&overlay.names);
                        changes.rebase(also, &self.published, &overlay.entries);
                    }
                    self.overlaid = overlay.names;
                    let snapshot = Snapshot::new(self.revision, overlay.entries);
                    Arc::new(snapshot.with_rollouts(overlay.served))
                };
                self.published = candidate.entries().clone();
                self.served = true;
                self.rejected_revision = None;
                if let Some(change) = changes.into_change(self.revision, &self.keys) {
                    outputs.push(Output::Notify(change));
                }
                Some(candidate)
            }
            Err(reasons) => {
                let rejection = RevisionRejection {
                    revision: self.revision,
                    reasons,
                };
                outputs.push(Output::RejectRevision(rejection.clone()));
                self.rejected_revision = Some(rejection);
                None
            }
        }
    }

    /// The base with every rollout that targets this instance laid over it, in name
    /// order; a rollout that cannot be laid is left out, with why.
    fn overlay(&self) -> Overlay {
        let mut overlay = Overlay {
            entries: self.entries.clone(),
            served: Vec::new(),
            names: BTreeSet::new(),
            rejected: Vec::new(),
        };
        let Some(member) = &self.member else {
            return overlay;
        };
        for (key, staged) in &self.rollouts {
            let name: Arc<str> = Arc::from(self.keys.rollout_of(key).unwrap_or_default());
            let laid = match &staged.rollout {
                Ok(rollout) if !rollout.targets(member.id(), member.labels()) => continue,
                Ok(rollout) => self.lay(rollout, &name, staged.mod_revision, &overlay.entries),
                // Whom it targets is unknown: every member says it cannot serve it.
                Err(reason) => Err(reason.clone()),
            };
            match laid {
                Ok((entries, names)) => {
                    overlay.entries = entries;
                    overlay.names.extend(names);
                    overlay.served.push(name);
                }
                Err(reason) => overlay.rejected.push(RolloutRejection {
                    rollout: name,
                    reason,
                }),
            }
        }
        overlay
    }

    /// `entries` with `rollout`'s changes, and the names they change, if every value
    /// passes the schema and the result its checks.
    fn lay(
        &self,
        rollout: &Rollout,
        name: &Arc<str>,
        mod_revision: i64,
        entries: &Entries,
    ) -> Result<(Entries, Vec<Arc<str>>), String> {
        let schema = self.keys.schema();
        let mut entries = entries.clone();
        let mut names = Vec::new();
        let named = |key: &str| {
            self.name_for(key)
                .ok_or_else(|| format!("{key} names no value of the configuration"))
        };
        for (key, text) in &rollout.put {
            let target = named(key)?;
            let value = schema
                .coerce(&target, text.as_bytes())
                .map_err(|reason| format!("{target}: {reason}"))?;
            let source = Source::Rollout {
                rollout: name.clone(),
                key: Arc::from(key.as_str()),
                mod_revision,
            };
            entries.insert(&target, value.view(), &source, schema.is_secret(&target));
            names.push(target);
        }
        for key in &rollout.delete {
            let target = named(key)?;
            match self.fallback.get(&target) {
                Some(fallback) => entries.copy(fallback),
                None => {
                    entries.remove(&target);
                }
            }
            names.push(target);
        }
        schema
            .validate(&Snapshot::new(self.revision, entries.clone()))
            .map_err(|reasons| reasons.join("; "))?;
        Ok((entries, names))
    }

    /// Records what etcd holds at a rollout key (`None`: nothing).
    fn stage(&mut self, key: &Arc<str>, mod_revision: i64, value: Option<&[u8]>) {
        let Some(bytes) = value else {
            self.rollouts.remove(key);
            return;
        };
        let name = self.keys.rollout_of(key).unwrap_or_default();
        let rollout = crate::rollout::check_name(name)
            .and_then(|()| Rollout::parse(name, mod_revision, bytes))
            .map(Arc::new);
        let staged = Staged {
            mod_revision,
            rollout,
        };
        self.rollouts.insert(key.clone(), staged);
    }

    /// The revision of the current snapshot.
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    /// Says what is being served before etcd answered (a cache file, env vars, defaults):
    /// the first list then reports its changes relative to it.
    pub(crate) fn serving(mut self, published: Entries) -> Self {
        self.published = published;
        self.served = true;
        self
    }

    /// Records the env var values rejected while reading the fallbacks, so that they
    /// are reported with the rest.
    pub(crate) fn with_fallback_rejections(mut self, rejected: Vec<Rejection>) -> Self {
        self.fallback_rejected = rejected;
        self
    }

    /// The values currently rejected: env vars first, then etcd values.
    pub(crate) fn rejections(&self) -> impl Iterator<Item = &Rejection> {
        self.fallback_rejected.iter().chain(self.rejected.values())
    }

    /// Names that several keys map to, with all their keys (winner first).
    pub(crate) fn collisions(&self) -> Vec<(Arc<str>, Vec<Arc<str>>)> {
        let mut by_name: BTreeMap<Arc<str>, Vec<Arc<str>>> = BTreeMap::new();
        for (key, shadowed) in &self.shadowed {
            by_name
                .entry(shadowed.name.clone())
                .or_default()
                .push(key.clone());
        }
        by_name
            .into_iter()
            .map(|(name, mut keys)| {
                if let Some(owner) = self.owner(&name) {
                    keys.insert(0, Arc::from(owner));
                }
                (name, keys)
            })
            .collect()
    }

    /// Applies one input and says what to do next.
    pub(crate) fn step(&mut self, input: Input) -> Vec<Output> {
        match (self.phase, input) {
            (
                _,
                Input::Listed {
                    kvs,
                    header,
                    count,
                    at,
                },
            ) => self.listed(kvs, header, count, at),
            (
                Phase::Watching,
                Input::Watched {
                    events,
                    header,
                    uncounted,
                },
            ) => {
                if let Some(reason) = self.another_etcd(header) {
                    return vec![Output::List(reason)];
                }
                self.key_count += uncounted;
                let mut outputs = self.watched(&events);
                self.reach_targets(&mut outputs);
                outputs
            }
            (
                Phase::Watching,
                Input::Progress {
                    header,
                    at,
                    trusted,
                },
            ) => {
                // etcd before 3.4.25 / 3.5.8 reads its head for the answer without
                // waiting for the write whose events it has just sent to finish: the
                // answer can be a revision below the last event. An etcd restored from
                // a backup breaks the stream, and the probe and the new stream's
                // creation answer tell; here only the cluster id can.
                let another = if trusted {
                    self.another_etcd(header)
                } else {
                    self.another_cluster(header)
                };
                if let Some(reason) = another {
                    return vec![Output::List(reason)];
                }
                if trusted {
                    // Every event up to the head was sent before this answer.
                    return vec![self.confirm(header.revision, at)];
                }
                let mut outputs = Vec::new();
                self.aim(header.revision, at, &mut outputs);
                outputs
            }
            (
                Phase::Watching,
                Input::Head {
                    header,
                    count,
                    changed,
                    at,
                },
            ) => {
                if let Some(reason) = self.another_etcd(header) {
                    return vec![Output::List(reason)];
                }
                if !changed && count == self.key_count {
                    // The prefix at the head equals the prefix at the applied revision.
                    return vec![self.confirm(header.revision, at)];
                }
                if header.revision == self.revision {
                    // At the applied revision itself etcd holds something else.
                    return vec![Output::List(ListReason::Diverged {
                        key_revision: header.revision,
                    })];
                }
                let mut outputs = Vec::new();
                self.aim(header.revision, at, &mut outputs);
                outputs
            }
            (Phase::Watching, Input::Probed { revision, found }) if revision == self.revision => {
                let reason = match found {
                    Probe::Found {
                        count,
                        digest,
                        head,
                    } => self.another_etcd(head).or(match self.digest {
                        None => Some(ListReason::Unverifiable { revision }),
                        Some(held) if held == digest && count == self.key_count => None,
                        Some(_) => Some(ListReason::HistoryDiffers { revision }),
                    }),
                    // Nothing to compare: the watch will say so.
                    Probe::Compacted => None,
                    // Within one history etcd's head never goes below a revision it had;
                    // when it has moved past it again since, its history still differs.
                    Probe::Future { head } => Some(
                        self.another_etcd(head)
                            .unwrap_or(ListReason::HistoryDiffers { revision }),
                    ),
                };
                reason.map(Output::List).into_iter().collect()
            }
            (Phase::Watching, Input::Created { header, at }) => {
                if let Some(reason) = self.another_etcd(header) {
                    return vec![Output::List(reason)];
                }
                let mut outputs = Vec::new();
                self.aim(header.revision, at, &mut outputs);
                if self.start.take().is_some() {
                    let report = self.start_report(StartSource::Etcd, self.revision, None);
                    outputs.push(Output::Started(report));
                }
                outputs
            }
            (_, Input::StartExpired { cache }) => self.start_expired(cache),
            (Phase::Watching, Input::Compacted { compact_revision }) => {
                vec![Output::List(ListReason::Compacted { compact_revision })]
            }
            (Phase::Watching, Input::Broken) => vec![Output::Watch {
                from_revision: self.revision + 1,
            }],
            (Phase::Empty, Input::Broken | Input::Compacted { .. }) => {
                vec![Output::List(ListReason::Initial)]
            }
            (
                _,
                Input::Watched { .. }
                | Input::Progress { .. }
                | Input::Head { .. }
                | Input::Created { .. }
                | Input::Probed { .. },
            ) => Vec::new(),
        }
    }

    /// Why the state no longer describes the etcd that answered, if it does not.
    fn another_etcd(&self, header: Header) -> Option<ListReason> {
        self.another_cluster(header).or_else(|| {
            (header.revision < self.revision).then_some(ListReason::RevisionWentBack {
                applied: self.revision,
                reported: header.revision,
            })
        })
    }

    /// Whether another cluster answered.
    fn another_cluster(&self, header: Header) -> Option<ListReason> {
        self.cluster
            .filter(|&cluster| cluster != header.cluster)
            .map(|from| ListReason::ClusterChanged {
                from,
                to: header.cluster,
            })
    }

    /// The state holds etcd's head `revision` as of `at`: heads up to it need no longer
    /// be reached.
    fn confirm(&mut self, revision: i64, at: Instant) -> Output {
        self.targets.retain(|&(target, _)| target > revision);
        Output::Confirmed { revision, at }
    }

    /// etcd's head was at `revision` at `at`: confirmed if the state is there, else a
    /// target to reach.
    fn aim(&mut self, revision: i64, at: Instant, outputs: &mut Vec<Output>) {
        if revision <= self.revision {
            outputs.push(Output::Confirmed { revision, at });
            return;
        }
        if self.targets.len() == MAX_TARGETS {
            self.targets.pop_front();
        }
        self.targets.push_back((revision, at));
    }

    /// Confirms the newest head the applied revision has reached. Events arrive in
    /// revision order, so every event up to a reached head has been applied.
    fn reach_targets(&mut self, outputs: &mut Vec<Output>) {
        let mut reached = None;
        while let Some(&(revision, at)) = self.targets.front() {
            if revision > self.revision {
                break;
            }
            reached = Some(Output::Confirmed { revision, at });
            self.targets.pop_front();
        }
        outputs.extend(reached);
    }

    fn name_for(&self, key: &str) -> Option<Arc<str>> {
        self.keys.name_for(key)
    }

    /// The key that currently owns `name` (its value may be rejected).
    fn owner(&self, name: &str) -> Option<&str> {
        match self.rejected.get(name) {
            Some(rejection) => match &rejection.source {
                Source::Etcd { key, .. } => Some(key),
                _ => None,
            },
            None => self
                .entries
                .get(name)
                .and_then(Entry::etcd)
                .map(|(key, _)| key),
        }
    }

    /// The mod revision this cache holds for `key`, if it tracks the key.
    fn tracked_revision(&self, name: &str, key: &str) -> Option<i64> {
        if let Some(shadowed) = self.shadowed.get(key) {
            return Some(shadowed.mod_revision);
        }
        if let Some(rejection) = self.rejected.get(name) {
            return match &rejection.source {
                Source::Etcd {
                    key: owner,
                    mod_revision,
                } if **owner == *key => Some(*mod_revision),
                _ => None,
            };
        }
        self.entries
            .get(name)
            .and_then(Entry::etcd)
            .filter(|(owner, _)| *owner == key)
            .map(|(_, mod_revision)| mod_revision)
    }

    fn listed(&mut self, mut kvs: Vec<Kv>, header: Header, count: i64, at: Instant) -> Vec<Output> {
        let revision = header.revision;
        self.cluster = Some(header.cluster);
        self.key_count = count;
        self.targets.clear();
        // A map of its own, filled in place (see `Entries`); what is left of its room is
        // given back below.
        let room = listing_room(&kvs);
        let mut entries = Entries::with_capacity(self.fallback.len() + kvs.len(), room);
        entries.extend(self.fallback.iter());
        let last_good = std::mem::replace(&mut self.entries, entries);
        self.rejected.clear();
        self.shadowed.clear();
        self.rollouts.clear();
        // etcd lists in key order; sort only what did not come from it.
        if !kvs.is_sorted_by(|a, b| a.key <= b.key) {
            kvs.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        }
        let mut outputs = Vec::new();
        let mut ignored = Pending::ignoring();
        // The table is filled in key order on this thread. The rest of a large listing is
        // named, coerced and packed meanwhile on another, and taken in here part by part
        // (see `split_listing` and `hand_over`).
        let cores = || std::thread::available_parallelism().map_or(1, usize::from);
        let (head, tail) = kvs.split_at(split_listing(kvs.len(), self.split_from, cores));
        let keys = self.keys.clone();
        let mut digest = 0u64;
        let prepare = |part| Prepared::of(&keys, part);
        hand_over(head, tail, HANDOVER, prepare, |part, prepared| {
            let mut take = |part, prepared: Prepared<'_>| {
                digest = digest.wrapping_add(prepared.digest);
                self.take_prepared(part, prepared, &mut ignored, &mut outputs);
            };
            match prepared {
                Some(prepared) => take(part, prepared),
                // This thread's share, prepared here a part at a time, taken in while the
                // part is in the cache.
                None => {
                    for part in part.chunks(HANDOVER) {
                        take(part, prepare(part));
                    }
                }
            }
        });
        free_aside(kvs);
        self.digest = Some(digest);
        // A rejected value leaves the name at its last good value.
        for name in self.rejected.keys() {
            if let Some(entry) = last_good.get(name) {
                self.entries.copy(entry);
            }
        }
        self.entries.shrink_to_fit();
        self.phase = Phase::Watching;
        self.revision = revision;
        // Everything since the last published snapshot is in the difference.
        self.unpublished = Pending::default();
        let changes = if self.served {
            diff(&self.published, &self.entries)
        } else {
            Pending::default()
        };
        let mut notifications = Vec::new();
        let published = self.offer(changes, &mut notifications);
        if published.is_none()
            && let Some(rejection) = &self.rejected_revision
            && self.start.take().is_some()
        {
            let reasons = rejection.reasons.clone();
            outputs.append(&mut notifications);
            outputs.push(Output::StartFailed(StartFailure::InvalidEtcd(reasons)));
            return outputs;
        }
        outputs.extend(published.map(Output::Publish));
        outputs.append(&mut notifications);
        outputs.push(Output::Confirmed { revision, at });
        outputs.push(Output::Watch {
            from_revision: revision + 1,
        });
        outputs
    }

    /// Takes in `kvs` as `prepared`: the values packed there in runs (see
    /// [`Entries::take_packed`]), any other key one by one, as a change would be.
    fn take_prepared(
        &mut self,
        kvs: &[Kv],
        prepared: Prepared<'_>,
        ignored: &mut Pending,
        outputs: &mut Vec<Output>,
    ) {
        let appended = self.entries.append_packed(&prepared.packed);
        let mut others = prepared.others.into_iter();
        let mut next = 0;
        loop {
            // As `put` takes a value in while none was rejected.
            if let Some(appended) = appended
                && self.rejected.is_empty()
            {
                next += self.entries.take_packed(appended, &prepared.keys[next..]);
            }
            let Some(kv) = kvs.get(next) else {
                break;
            };
            match prepared.keys[next] {
                // A value not taken in with its run (its name is held, or a value was
                // rejected before it): as packed.
                Some(at) => {
                    let entry = prepared.packed.entry(at);
                    let value = match entry.value() {
                        ValueRef::String(text) => Coerced::Text(text),
                        value => Coerced::Value(value.to_value()),
                    };
                    let listed = Listed::Value {
                        value: Ok(value),
                        secret: entry.is_secret(),
                    };
                    self.take_listed(kv, listed, entry.name(), ignored, outputs);
                }
                None => {
                    let (listed, name) = others.next().expect("each key not packed is listed");
                    self.take_listed(kv, listed, &prepared.names[name], ignored, outputs);
                }
            }
            next += 1;
        }
    }

    /// Takes one listed key into the table: `name` is the name `listed` found.
    fn take_listed(
        &mut self,
        kv: &Kv,
        listed: Listed<'_>,
        name: &str,
        ignored: &mut Pending,
        outputs: &mut Vec<Output>,
    ) {
        match listed {
            Listed::Rollout => {
                self.stage(
                    &Arc::from(kv.key.as_str()),
                    kv.mod_revision,
                    Some(&kv.value),
                );
            }
            Listed::Value { value, secret } => {
                let write = Write {
                    value,
                    key: &kv.key,
                    mod_revision: kv.mod_revision,
                    secret,
                };
                self.put(name, write, ignored, outputs);
            }
            Listed::Unloaded => {}
        }
    }

    /// The start deadline passed: `start()` gets its answer now.
    fn start_expired(&mut self, cache: Option<CacheRead>) -> Vec<Output> {
        let Some(start) = self.start.take() else {
            return Vec::new();
        };
        if self.phase == Phase::Watching {
            // etcd's values are served; only the watch's registration was not heard.
            let report = self.start_report(StartSource::Etcd, self.revision, None);
            return vec![Output::Started(report)];
        }
        if start.fail_fast {
            return vec![Output::StartFailed(StartFailure::Timeout)];
        }
        if let Some((source, revision)) = start.resumed {
            // What the last run served is newer than any cache file; it keeps serving.
            return vec![Output::Started(self.start_report(source, revision, None))];
        }
        let mut served = self.fallback.clone();
        let (source, revision, cache_error) = match cache {
            Some(CacheRead::Loaded(loaded)) => {
                served.extend(loaded.entries.iter());
                self.fallback_rejected.extend(loaded.rejected);
                self.fallback_rejected.sort_by(|a, b| a.name.cmp(&b.name));
                (StartSource::CacheFile, loaded.revision, None)
            }
            Some(CacheRead::Unusable(reason)) => (StartSource::Fallback, 0, Some(reason)),
            Some(CacheRead::Absent) | None => (StartSource::Fallback, 0, None),
        };
        let snapshot = Arc::new(Snapshot::new(revision, served.clone()));
        if let Err(reasons) = self.keys.schema().validate(&snapshot) {
            return vec![Output::StartFailed(StartFailure::InvalidFallback(reasons))];
        }
        self.published = served;
        self.served = true;
        let report = self.start_report(source, revision, cache_error);
        vec![Output::Publish(snapshot), Output::Started(report)]
    }

    /// What `start()` answers: the values served now, from `source` at `revision`.
    fn start_report(
        &self,
        source: StartSource,
        revision: i64,
        cache_error: Option<String>,
    ) -> StartReport {
        StartReport {
            source,
            revision,
            loaded: self.published.len(),
            missing: self
                .keys
                .schema()
                .names()
                .filter(|spec| !self.published.contains_key(spec.name()))
                .map(|spec| spec.name().to_owned())
                .collect(),
            rejected: self.rejections().cloned().collect(),
            collisions: self
                .collisions()
                .into_iter()
                .map(|(name, keys)| {
                    let keys = keys.iter().map(|key| key.to_string()).collect();
                    (name.to_string(), keys)
                })
                .collect(),
            etcd_error: None,
            cache_error,
        }
    }

    fn watched(&mut self, events: &[Event]) -> Vec<Output> {
        let mut outputs = Vec::new();
        let mut notifications = Vec::new();
        let mut latest = None;
        let mut relist = None;
        for group in events.chunk_by(|a, b| a.mod_revision == b.mod_revision) {
            let revision = group[0].mod_revision;
            if revision <= self.revision {
                continue; // already applied (a resumed watch may repeat a revision)
            }
            // One revision is one transaction: all of it, or none of it.
            let checkpoint = self.checkpoint();
            let mut pending = Pending::default();
            let mut group_outputs = Vec::new();
            let outcome = group
                .iter()
                .try_for_each(|event| self.apply(event, &mut pending, &mut group_outputs));
            if let Err(reason) = outcome {
                self.restore(checkpoint);
                relist = Some(reason);
                break;
            }
            self.revision = revision;
            outputs.append(&mut group_outputs);
            if let Some(snapshot) = self.offer(pending, &mut notifications) {
                latest = Some(snapshot);
            }
        }
        outputs.extend(latest.map(Output::Publish));
        outputs.append(&mut notifications);
        outputs.extend(relist.map(Output::List));
        outputs
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            entries: self.entries.clone(),
            rollouts: self.rollouts.clone(),
            rejected: self.rejected.clone(),
            shadowed: self.shadowed.clone(),
            key_count: self.key_count,
            digest: self.digest,
        }
    }

    fn restore(&mut self, checkpoint: Checkpoint) {
        self.entries = checkpoint.entries;
        self.rollouts = checkpoint.rollouts;
        self.rejected = checkpoint.rejected;
        self.shadowed = checkpoint.shadowed;
        self.key_count = checkpoint.key_count;
        self.digest = checkpoint.digest;
    }

    /// Applies one event; `Err` when it contradicts the cache.
    fn apply(
        &mut self,
        event: &Event,
        pending: &mut Pending,
        outputs: &mut Vec<Output>,
    ) -> Result<(), ListReason> {
        if event.key.starts_with(self.prefix_dir()) {
            match event.value {
                Some(_) if event.created => self.key_count += 1,
                Some(_) => {}
                None => self.key_count -= 1,
            }
            let added = event.value.as_ref().map_or(0, |value| {
                fingerprint(event.key.as_bytes(), value, event.mod_revision)
            });
            let removed = if event.created {
                Some(0)
            } else {
                event.prev_fingerprint
            };
            self.digest = self
                .digest
                .zip(removed)
                .map(|(sum, removed)| sum.wrapping_sub(removed).wrapping_add(added));
        }
        if self.keys.rollout_of(&event.key).is_some() {
            let tracked = self
                .rollouts
                .get(&event.key)
                .map(|staged| staged.mod_revision);
            if event
                .prev_mod_revision
                .is_some_and(|prev| Some(prev) != tracked)
            {
                return Err(ListReason::Diverged {
                    key_revision: event.mod_revision,
                });
            }
            self.stage(&event.key, event.mod_revision, event.value.as_deref());
            return Ok(());
        }
        let Some(name) = self.name_for(&event.key) else {
            return Ok(());
        };
        let tracked = self.tracked_revision(&name, &event.key);
        let consistent = match (event.prev_mod_revision, tracked) {
            (Some(prev), Some(tracked)) => prev == tracked,
            // etcd knew the key before this event, the cache never saw it.
            (Some(_), None) => false,
            _ => true,
        };
        if !consistent {
            return Err(ListReason::Diverged {
                key_revision: event.mod_revision,
            });
        }
        match &event.value {
            Some(raw) => {
                let write = Write {
                    key: &event.key,
                    mod_revision: event.mod_revision,
                    value: self.keys.schema().coerce_in(&name, raw),
                    secret: self.keys.schema().is_secret(&name),
                };
                self.put(&name, write, pending, outputs);
            }
            None => self.delete(&name, &event.key, pending, outputs),
        }
        Ok(())
    }

    fn put(
        &mut self,
        name: &str,
        write: Write<'_>,
        pending: &mut Pending,
        outputs: &mut Vec<Output>,
    ) {
        if !pending.is_recording()
            && self.rejected.is_empty()
            && let Ok(value) = &write.value
        {
            // A full read, where no value was rejected: the name's owner is found, or the
            // name taken, in one probe of the map; the rest is for a collision. (A key
            // comes once in a listing: it waits in no shadow yet.)
            let claimed = self.entries.claim_from_etcd(
                name,
                value.view(),
                write.key,
                write.mod_revision,
                write.secret,
            );
            if claimed.is_ok() {
                return;
            }
        }
        // Another key that names this value, if any (copied only then).
        let owner = self
            .owner(name)
            .filter(|owner| *owner != write.key)
            .map(Arc::<str>::from);
        if let Some(owner) = owner.clone().filter(|owner| **owner < *write.key) {
            // Another key already names this value: this one waits in the shadows.
            let shadowed = Shadowed {
                name: Arc::from(name),
                mod_revision: write.mod_revision,
                value: write.value.map(Coerced::into_value),
            };
            let key = Arc::<str>::from(write.key);
            if self.shadowed.insert(key.clone(), shadowed).is_none() {
                outputs.push(collision(name, owner, key));
            }
            return;
        }
        if let Some(owner) = owner {
            // This key sorts first: it takes the name over.
            let displaced = Shadowed {
                name: Arc::from(name),
                mod_revision: self.tracked_revision(name, &owner).unwrap_or(0),
                value: match self.rejected.get(name) {
                    Some(rejection) => Err(rejection.reason.clone()),
                    None => Ok(self
                        .entries
                        .get(name)
                        .expect("the owner's entry")
                        .value()
                        .to_value()),
                },
            };
            self.shadowed.insert(owner.clone(), displaced);
            outputs.push(collision(name, Arc::from(write.key), owner));
        }
        if !self.shadowed.is_empty() {
            self.shadowed.remove(write.key);
        }
        self.set_owner(name, write, pending, outputs);
    }

    /// Makes the written key the owner of `name`.
    fn set_owner(
        &mut self,
        name: &str,
        write: Write<'_>,
        pending: &mut Pending,
        outputs: &mut Vec<Output>,
    ) {
        match write.value {
            Ok(value) => {
                if !self.rejected.is_empty() {
                    self.rejected.remove(name);
                }
                // A full read does this once per key: nothing is cloned.
                let old = pending
                    .is_recording()
                    .then(|| self.entries.get(name).map(|entry| entry.value().to_value()));
                self.entries.insert_from_etcd(
                    name,
                    value.view(),
                    write.key,
                    write.mod_revision,
                    write.secret,
                );
                if let Some(old) = old {
                    pending.record(name, old, Some(value.into_value()));
                }
            }
            Err(reason) => {
                let name = Arc::<str>::from(name);
                let rejection = Rejection {
                    name: name.clone(),
                    source: Source::Etcd {
                        key: Arc::from(write.key),
                        mod_revision: write.mod_revision,
                    },
                    reason,
                };
                outputs.push(Output::Reject(rejection.clone()));
                self.rejected.insert(name, rejection);
            }
        }
    }

    fn delete(&mut self, name: &str, key: &str, pending: &mut Pending, outputs: &mut Vec<Output>) {
        if self.shadowed.remove(key).is_some() {
            return;
        }
        if self.owner(name) != Some(key) {
            return;
        }
        self.rejected.remove(name);
        let old = self.entries.get(name).map(|entry| entry.value().to_value());
        self.entries.remove(name);
        pending.record(name, old, None);
        // The next key in order that maps to the same name takes over.
        let heir = self
            .shadowed
            .iter()
            .find(|(_, shadowed)| *shadowed.name == *name)
            .map(|(key, _)| key.clone());
        if let Some(heir) = heir {
            let shadowed = self.shadowed.remove(&heir).expect("heir is shadowed");
            let write = Write {
                key: &heir,
                mod_revision: shadowed.mod_revision,
                value: shadowed.value.map(Coerced::Value),
                secret: self.keys.schema().is_secret(name),
            };
            self.set_owner(name, write, pending, outputs);
        }
        // No key left (or only a rejected one): the env var or default applies again.
        if !self.entries.contains_key(name)
            && let Some(fallback) = self.fallback.get(name)
        {
            pending.record(name, None, Some(fallback.value().to_value()));
            self.entries.copy(fallback);
        }
    }
}

fn collision(name: &str, winner: Arc<str>, loser: Arc<str>) -> Output {
    Output::Collide {
        name: Arc::from(name),
        keys: vec![winner, loser],
    }
}

/// The changes from `old` to `new`.
fn diff(old: &Entries, new: &Entries) -> Pending {
    let mut pending = Pending::default();
    for entry in new.iter() {
        let before = old.get(entry.name()).map(|entry| entry.value().to_value());
        let name = Arc::from(entry.name());
        pending.record(&name, before, Some(entry.value().to_value()));
    }
    for entry in old.iter() {
        if !new.contains_key(entry.name()) {
            let name = Arc::from(entry.name());
            pending.record(&name, Some(entry.value().to_value()), None);
        }
    }
    pending
}

/// What a listed key is to the schema, worked out apart from the state.
enum Listed<'kv> {
    /// A rollout's key.
    Rollout,
    /// A value of the name written beside it, coerced (or why not), and whether the
    /// schema keeps it secret.
    Value {
        value: Result<Coerced<'kv>, String>,
        secret: bool,
    },
    /// A key the schema does not load.
    Unloaded,
}

/// Classifies `kv`, writing the name of a value in `name`.
fn classify<'kv>(keys: &KeyMap, kv: &'kv Kv, name: &mut String) -> Listed<'kv> {
    if keys.rollout_of(&kv.key).is_some() {
        Listed::Rollout
    } else if keys.name_into(&kv.key, name) {
        Listed::Value {
            value: keys.schema().coerce_in(name, &kv.value),
            secret: keys.schema().is_secret(name),
        }
    } else {
        Listed::Unloaded
    }
}

/// `kv`'s share of the digest of the prefix: its fingerprint, or 0 outside the prefix.
fn summed(keys: &KeyMap, kv: &Kv) -> u64 {
    if kv.key.starts_with(&**keys.prefix_dir()) {
        fingerprint(kv.key.as_bytes(), &kv.value, kv.mod_revision)
    } else {
        0
    }
}

/// Part of a listing classified, and its values packed, apart from the state (on a
/// second thread, or ahead of taking them in): for each key its entry's offset in
/// `packed`, or `None` for a key whose classification is in `others`
/// (a rollout's key, one the schema does not load, a rejected value, a list or a JSON
/// document, which a map shares rather than packs), with its name's place in `names`;
/// and the part's share of the digest.
struct Prepared<'kv> {
    keys: Vec<Option<usize>>,
    packed: Packed,
    others: Vec<(Listed<'kv>, std::ops::Range<usize>)>,
    names: String,
    digest: u64,
}

impl<'kv> Prepared<'kv> {
    fn of(keys: &KeyMap, kvs: &'kv [Kv]) -> Self {
        let mut prepared = Self {
            keys: Vec::with_capacity(kvs.len()),
            packed: Packed::with_capacity(listing_room(kvs)),
            others: Vec::new(),
            names: String::new(),
            digest: 0,
        };
        let mut name = String::new();
        for kv in kvs {
            prepared.digest = prepared.digest.wrapping_add(summed(keys, kv));
            let listed = classify(keys, kv, &mut name);
            let packed = match &listed {
                Listed::Value {
                    value: Ok(value),
                    secret,
                } => prepared.packed.pack_from_etcd(
                    &name,
                    value.view(),
                    &kv.key,
                    kv.mod_revision,
                    *secret,
                ),
                _ => None,
            };
            if packed.is_none() {
                let start = prepared.names.len();
                if matches!(listed, Listed::Value { .. }) {
                    prepared.names.push_str(&name);
                }
                prepared.others.push((listed, start..prepared.names.len()));
            }
            prepared.keys.push(packed);
        }
        prepared
    }
}

/// Keys per part a second thread hands over (see [`hand_over`]): about a millisecond of
/// its work, against a few microseconds to hand a part over.
const HANDOVER: usize = 4096;

/// Parts a second thread prepares ahead of this one, at most (see [`hand_over`]). A part
/// holds about 400 KiB at 100 bytes a key: its entry packed, and where.
const HANDOVER_AHEAD: usize = 4;

/// Gives `take` the `head`, then `tail` in parts of `part_len`, in order: the head to do
/// all of on this thread (`None`), each part of the tail with what `prepare` made of it
/// meanwhile on a second thread, at most [`HANDOVER_AHEAD`] parts ahead. A part is taken
/// as soon as it is ready, while its items are still in the cache the two threads share,
/// not when the whole tail is. What the second thread did not prepare (it panicked, or
/// could not start) is given to `take` with `None` after the rest.
fn hand_over<'t, T: Sync, P: Send>(
    head: &'t [T],
    tail: &'t [T],
    part_len: usize,
    prepare: impl Fn(&'t [T]) -> P + Send,
    mut take: impl FnMut(&'t [T], Option<P>),
) {
    std::thread::scope(|scope| {
        let (parts, ready) = std::sync::mpsc::sync_channel(HANDOVER_AHEAD);
        let helper = (!tail.is_empty()).then(|| {
            std::thread::Builder::new()
                .name("etcd-config-list".into())
                .spawn_scoped(scope, move || {
                    for part in tail.chunks(part_len) {
                        // This thread stops taking parts only if it panics.
                        if parts.send(prepare(part)).is_err() {
                            break;
                        }
                    }
                })
        });
        take(head, None);
        let mut taken = 0;
        if let Some(Ok(helper)) = helper {
            // The parts end when the helper is done, or panicked.
            for prepared in ready {
                let part = &tail[taken..tail.len().min(taken + part_len)];
                take(part, Some(prepared));
                taken += part.len();
            }
            // Joined, so that a panic stays on its thread rather than ending the scope.
            let _ = helper.join();
        }
        if taken < tail.len() {
            take(&tail[taken..], None);
        }
    });
}

/// From how many keys a listing is taken in on two threads: below it, a thread's start
/// costs more than it saves.
const SPLIT_FROM: usize = 10_000;

/// Where a listing of `len` keys is split: the keys from there on are classified (named,
/// coerced, fingerprinted) and their values packed on a second thread, while this one does
/// the same for the keys before and takes them in; then they are taken in here in key
/// order, part by part as they are ready (see [`hand_over`]). Taking a packed value in is
/// one probe of the table, and this thread classifies its own share too, so it stays the
/// bottleneck and classifies a quarter. With values packed on the second thread, a half,
/// a third and an eighth built 1,000,000 keys in 351, 294 and 302 ms against 278 ms with a
/// quarter, and 100,000 keys in 24.9, 23.5 and 22.7 against 22.3 ms (medians of four runs
/// each). Packing there, against taking each classified key in and packing it here: 0.69×
/// the time at 1,000,000 keys (medians of six runs, 305 against 445 ms), 0.95× at 100,000
/// and the same at 10,000. In `perf` of the way before, a third of this thread's time at
/// 1,000,000 keys went to loading each key's classification, written on the other core,
/// and to `Arc::get_mut`'s atomic operation once per key (see [`Entries::take_packed`]).
/// Before values were packed there, a sixteenth (at least 2,048 keys) built in 0.94× the
/// time at 1,000,000 keys and 0.92× at 100,000, nothing at 10,000, where a sixteenth
/// without the floor was slower (4.45 against 3.8 ms, this thread waiting for the first
/// part); and handing the tail over in parts, against the last two thirds handed over
/// whole when prepared, built in 0.88× the time at 100,000 keys (medians of five runs,
/// 35.1 against 39.8 ms) and the same at 1,000,000. All timed outside the engine
/// (2026-11-28): throwaway harnesses over `bench_support::Engine::listed`, the ways
/// interleaved, each run timing builds back to back (5 at 1,000,000 keys, 21–30 at
/// 100,000, 100–200 at 10,000). From `split_from` keys (see [`SPLIT_FROM`]), and only
/// where there are two `cores` or more: asked only of a listing that large, since the
/// standard library reads the process's CPU quota from files for it (about 40 µs and 21
/// system calls per call here, `strace -c`).
fn split_listing(len: usize, split_from: usize, cores: impl FnOnce() -> usize) -> usize {
    if len < split_from || cores() < 2 {
        len
    } else {
        len / 4
    }
}

/// Frees a large listing on a thread of its own, not between building the snapshot and
/// `start()`'s answer: each key holds two allocations. Measured from the listing's
/// arrival to the published snapshot, over starts alternated with a listing freed in
/// place (medians of 7): 41 ms instead of 47 ms at 100,000 keys. At 1,000,000, in two
/// runs one after the other: 513–629 ms, against 662–926 ms freed in place. A small
/// listing, or one whose thread cannot be made, is freed here. Returns whether the
/// listing went to a thread of its own.
fn free_aside(kvs: Vec<Kv>) -> bool {
    const ASIDE_FROM: usize = 10_000;
    if kvs.len() < ASIDE_FROM {
        return false;
    }
    // On an error the closure, and the listing with it, is dropped here.
    std::thread::Builder::new()
        .name("etcd-config-free".into())
        .spawn(move || drop(kvs))
        .is_ok()
}

/// The room a listing's entries are packed into before the map grows: for each key its
/// name (about as long as its key), its value, the key itself, and a few bytes of kinds,
/// lengths and revision. A name much longer than its key (a mapping) makes it grow.
fn listing_room(kvs: &[Kv]) -> usize {
    kvs.iter()
        .map(|kv| 2 * kv.key.len() + kv.value.len() + 8)
        .sum()
}

#[cfg(test)]
mod tests;
