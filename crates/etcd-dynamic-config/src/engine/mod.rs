//! The I/O loop: executes the state machine's outputs against etcd.
//!
//! Starts at once: lists the prefix at one revision, watches from the next one, and
//! answers `start()` when the watch is registered, or at the start deadline with what
//! the state machine falls back to. Then resumes after a broken stream from the last
//! applied revision + 1, and re-lists when that revision has been compacted. Retries
//! back off exponentially with jitter; there is no other retry loop.

pub(crate) mod state;

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::cache::CacheFile;
use crate::connection::Connection;
use crate::error::{Chain, Error};
use crate::observe::events;
use crate::report::{StartReport, StartSource};
use crate::store::Writer;
use state::{CacheRead, Input, ListReason, Output, StartFailure, State};

/// What to ask etcd next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    List(ListReason),
    Watch { from_revision: i64 },
}

/// How `start()` waits for the engine.
#[derive(Debug)]
pub(crate) struct Starting {
    /// How long etcd has to answer before the state machine falls back.
    pub(crate) timeout: Duration,
    /// The last-known-good cache file, read only when etcd does not answer in time.
    pub(crate) cache: Option<CacheFile>,
    /// Where the answer goes.
    pub(crate) reply: oneshot::Sender<Result<StartReport, Error>>,
}

/// A start not answered yet.
#[derive(Debug)]
struct Pending {
    deadline: tokio::time::Instant,
    /// Cancelled when `start()` is answered.
    answered: CancellationToken,
    starting: Starting,
    /// The last failure, for the answer when etcd does not answer in time.
    last_error: Option<Error>,
}

/// The engine: the state machine, its connection, and the store it publishes to.
#[derive(Debug)]
pub(crate) struct Engine {
    connection: Connection,
    state: State,
    writer: Writer,
    /// When the current outage began, until the watch is back.
    outage: Option<std::time::Instant>,
    /// The start, until it is answered.
    start: Option<Pending>,
    /// Whether the start failed: the engine ends.
    failed: bool,
}

/// The attempts to confirm that the state holds etcd's head, while no confirmation is
/// recent: a progress request first, then, if that did not confirm, a head read.
struct Confirming {
    last_attempt: Instant,
    /// Whether the last attempt was a progress request.
    asked_progress: bool,
}

impl Confirming {
    /// When to try next: once the last confirmation is [`CONFIRM_INTERVAL`] old, and
    /// not sooner than that after the last attempt.
    fn due(&self, confirmed_at: Option<Instant>) -> Instant {
        let stale_at = confirmed_at.map_or(self.last_attempt, |at| at + CONFIRM_INTERVAL);
        stale_at.max(self.last_attempt + CONFIRM_INTERVAL)
    }
}

/// How one attempt at an action ended.
struct Outcome {
    next: Action,
    error: Option<Error>,
    /// Whether etcd answered at all (resets the backoff).
    progressed: bool,
}

/// Waits until the start deadline, or forever when there is none or `start()` was
/// answered meanwhile (the wait is set up before the attempt that may answer it).
async fn until(deadline: Option<(tokio::time::Instant, CancellationToken)>) {
    if let Some((deadline, answered)) = deadline {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return,
            () = answered.cancelled() => {}
        }
    }
    std::future::pending().await
}

impl Engine {
    /// An engine over `state` (made [`starting`](State::starting)), publishing through
    /// `writer`, the run's only one.
    pub(crate) fn new(connection: Connection, state: State, writer: Writer) -> Self {
        Self {
            connection,
            state,
            writer,
            outage: None,
            start: None,
            failed: false,
        }
    }

    /// Lists the prefix once and applies the result.
    ///
    /// # Errors
    ///
    /// As [`Connection::list`].
    async fn load(&mut self) -> Result<Action, Error> {
        let listing = self.connection.list(self.state.prefix_dir()).await?;
        let at = std::time::Instant::now();
        let revision = listing.header.revision;
        if self.outage.is_none() {
            // The watch that follows is opened while the snapshot is built. After an
            // outage the watch first probes etcd, so it is not opened ahead.
            self.connection
                .watch_ahead(self.state.prefix_dir(), revision + 1);
            // Its task sends the request now, not when the build below is done: a task
            // spawned here runs next on this thread, where no other thread takes it.
            tokio::task::yield_now().await;
        }
        self.synced(Some(revision));
        self.writer.update_status(|status| {
            status.source = Some(StartSource::Etcd);
            status.relisting = None;
        });
        let outputs = self.step(Input::Listed {
            kvs: listing.kvs,
            header: listing.header,
            count: listing.count,
            at,
        });
        Ok(self.execute(outputs).unwrap_or(Action::Watch {
            from_revision: revision + 1,
        }))
    }

    /// Runs until `cancel`, answering `starting.reply` first: when the watch is
    /// registered, at the start deadline, or at a final error (then it ends).
    ///
    /// Boxed: a future that owns the engine by value holds it twice (as the argument
    /// and as the body's local), about 5 KiB more for as long as the engine runs.
    pub(crate) async fn run(mut self: Box<Self>, starting: Starting, cancel: CancellationToken) {
        self.start = Some(Pending {
            deadline: tokio::time::Instant::now() + starting.timeout,
            answered: CancellationToken::new(),
            starting,
            last_error: None,
        });
        let mut action = Action::List(ListReason::Initial);
        let mut backoff = new_backoff();
        let mut refused = false;
        let mut reauthenticated = false;
        loop {
            let deadline = self.deadline();
            let outcome = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = until(deadline) => {
                    // The attempt in flight is dropped between two steps: the state says
                    // where to go on.
                    self.start_expired();
                    action = self.resume_action();
                    if self.failed {
                        break;
                    }
                    continue;
                }
                outcome = self.perform(action) => outcome,
            };
            if self.failed {
                break;
            }
            action = outcome.next;
            if outcome.progressed {
                backoff = new_backoff();
                refused = false;
                reauthenticated = false;
            }
            let Some(error) = outcome.error else {
                continue;
            };
            self.outage.get_or_insert_with(std::time::Instant::now);
            self.count(|metrics| metrics.connected.set(0.0));
            self.writer.update_status(|status| {
                status.connected = false;
                status.last_error = Some(Chain(&error).to_string());
                status.last_error_kind = Some(error.kind_name());
            });
            let delay = if error.is_retryable() {
                let delay = backoff.next().unwrap_or(MAX_BACKOFF);
                tracing::debug!(
                    event = events::ETCD_RETRY,
                    endpoint = self.connection.endpoint(),
                    error.type = error.kind_name(),
                    error.message = %Chain(&error),
                    next = ?action,
                    delay_ms = delay.as_millis() as u64,
                    "etcd request failed; retrying"
                );
                self.reconnect(&error);
                delay
            } else if self.start.is_some() {
                // Wrong settings or credentials at start: `start()` says so at once.
                self.answer(Err(error));
                break;
            } else if !reauthenticated && self.connection.has_credentials() {
                // etcd cancels a watch whose token expired with "permission denied":
                // authenticate again once before believing it.
                reauthenticated = true;
                self.connection.reauthenticate();
                self.count(|metrics| metrics.token_refreshes.increment(1));
                self.writer
                    .update_status(|status| status.token_refreshes += 1);
                tracing::info!(
                    event = events::TOKEN_REFRESHED,
                    endpoint = self.connection.endpoint(),
                    error.type = error.kind_name(),
                    error.message = %Chain(&error),
                    "etcd refused a request; authenticating again"
                );
                Duration::ZERO
            } else {
                // Wrong credentials or a missing permission do not heal by retrying fast:
                // say so once, keep serving, and look again now and then.
                if !refused {
                    tracing::error!(
                        event = events::ETCD_REFUSED,
                        endpoint = self.connection.endpoint(),
                        error.type = error.kind_name(),
                        error.message = %Chain(&error),
                        retry_in_s = REFUSED_RETRY.as_secs(),
                        "etcd refused the request; the last good configuration keeps serving"
                    );
                }
                refused = true;
                REFUSED_RETRY
            };
            if let Some(start) = &mut self.start {
                start.last_error = Some(error);
            }
            let deadline = self.deadline();
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = until(deadline) => {
                    self.start_expired();
                    if self.failed {
                        break;
                    }
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
        self.writer.update_status(|status| {
            status.connected = false;
            status.running = false;
        });
    }

    /// The start deadline, while `start()` waits.
    fn deadline(&self) -> Option<(tokio::time::Instant, CancellationToken)> {
        self.start
            .as_ref()
            .map(|start| (start.deadline, start.answered.clone()))
    }

    /// Where to go on after an attempt was dropped at the start deadline.
    fn resume_action(&self) -> Action {
        if self.state.is_listed() {
            Action::Watch {
                from_revision: self.state.revision() + 1,
            }
        } else {
            Action::List(ListReason::Initial)
        }
    }

    /// The start deadline passed: the state machine answers `start()`, with the cache
    /// file's content when it falls back.
    fn start_expired(&mut self) {
        let cache = self
            .start
            .as_ref()
            .and_then(|start| start.starting.cache.as_ref())
            .map(|cache| CacheRead::from(cache.read(self.state.schema())));
        let outputs = self.step(Input::StartExpired { cache });
        self.execute(outputs);
    }

    /// Why etcd's values are not served: the deadline passed, with the last failure.
    fn timed_out(&mut self) -> Error {
        let start = self.start.as_mut();
        Error::StartTimeout {
            timeout: start
                .as_ref()
                .map_or(Duration::ZERO, |s| s.starting.timeout),
            cause: start.and_then(|s| s.last_error.take()).map(Box::new),
        }
    }

    /// The state machine's start failure, with what etcd said.
    fn start_failure(&mut self, failure: StartFailure) -> Error {
        match failure {
            StartFailure::Timeout => self.timed_out(),
            StartFailure::InvalidEtcd(reasons) => Error::Invalid { reasons },
            StartFailure::InvalidFallback(mut reasons) => {
                reasons.push(format!("etcd did not answer: {}", Chain(&self.timed_out())));
                Error::Invalid { reasons }
            }
        }
    }

    /// Answers `start()`: logs and records a start, or ends the engine.
    fn answer(&mut self, result: Result<StartReport, Error>) {
        let result = match result {
            Ok(mut report) => {
                let fallback_error = (report.source != StartSource::Etcd).then(|| self.timed_out());
                report.etcd_error = fallback_error.as_ref().map(|e| Chain(e).to_string());
                report.log();
                if let Some(error) = &fallback_error {
                    let cache = self.start.as_ref().and_then(|s| s.starting.cache.as_ref());
                    if let (Some(cache), Some(reason)) = (cache, &report.cache_error) {
                        tracing::warn!(
                            event = events::CACHE_IGNORED,
                            path = %cache.path().display(),
                            reason = %reason,
                            "the cache file is not trusted and was ignored"
                        );
                    }
                    tracing::warn!(
                        event = events::FALLBACK,
                        source = ?report.source,
                        revision = report.revision,
                        error.type = error.kind_name(),
                        error.message = %Chain(error),
                        "etcd did not answer in time; serving the fallback and retrying in the background"
                    );
                }
                self.writer.update_status(|status| {
                    status.source = Some(report.source);
                    status.running = true;
                    status.rejected.clone_from(&report.rejected);
                    if let Some(error) = &report.etcd_error {
                        status.last_error = Some(error.clone());
                        status.last_error_kind = Some("StartTimeout");
                    }
                });
                Ok(report)
            }
            Err(error) => {
                self.failed = true;
                Err(error)
            }
        };
        if let Some(start) = self.start.take() {
            start.answered.cancel();
            // `start()` may have been given up on (stopped): nobody to tell then.
            let _ = start.starting.reply.send(result);
        }
    }

    /// Drops the connection after a retryable failure and moves to the next endpoint.
    fn reconnect(&mut self, error: &Error) {
        let from = self.connection.endpoint().to_owned();
        self.connection.rotate();
        let to = self.connection.endpoint();
        if from != to {
            tracing::warn!(
                event = events::ENDPOINT_SWITCHED,
                from = %from,
                to = %to,
                error.type = error.kind_name(),
                error.message = %Chain(error),
                "moving to the next etcd endpoint"
            );
        }
        self.writer.update_status(|status| {
            status.reconnects += 1;
            status.endpoint = Some(to.to_owned());
        });
        self.count(|metrics| metrics.reconnects.increment(1));
    }

    /// Updates the metrics, when they are registered.
    fn count(&self, update: impl FnOnce(&crate::observe::metrics::Metrics)) {
        if let Some(metrics) = self.writer.metrics() {
            update(&metrics);
        }
    }

    /// Records that etcd answered, and the head revision it reported.
    fn synced(&self, head: Option<i64>) {
        self.count(|metrics| {
            metrics.connected.set(1.0);
            metrics.seconds_since_sync.set(0.0);
        });
        let endpoint = self.connection.endpoint();
        self.writer.update_status(|status| {
            status.connected = true;
            status.last_sync = Some(std::time::Instant::now());
            if head.is_some() {
                status.head_revision = head;
            }
            if status.endpoint.as_deref() != Some(endpoint) {
                status.endpoint = Some(endpoint.to_owned());
            }
        });
    }

    async fn perform(&mut self, action: Action) -> Outcome {
        match action {
            Action::List(reason) => {
                // The first read of the prefix is not a re-read.
                if reason != ListReason::Initial {
                    tracing::info!(
                        event = events::RELIST,
                        ?reason,
                        "reading the whole prefix again"
                    );
                    self.count(|metrics| metrics.relists.increment(1));
                }
                match Box::pin(self.load()).await {
                    Ok(next) => Outcome {
                        next,
                        error: None,
                        progressed: true,
                    },
                    Err(error) => Outcome {
                        next: action,
                        error: Some(error),
                        progressed: false,
                    },
                }
            }
            Action::Watch { from_revision } => self.watch(from_revision).await,
        }
    }

    /// Watches from `from_revision` until the stream breaks or asks for a re-list.
    ///
    /// A quiet stream is asked for progress; a stream that does not answer that either
    /// counts as broken, so a frozen member is left within seconds.
    async fn watch(&mut self, from_revision: i64) -> Outcome {
        if self.outage.is_some() {
            // etcd may have been replaced meanwhile by one whose history has as many
            // revisions: its cluster id and head would not tell. Its prefix at the
            // applied revision does.
            match Box::pin(self.probe()).await {
                Ok(Some(next)) => {
                    return Outcome {
                        next,
                        error: None,
                        progressed: true,
                    };
                }
                Ok(None) => {}
                Err(error) => {
                    return Outcome {
                        next: Action::Watch { from_revision },
                        error: Some(error),
                        progressed: false,
                    };
                }
            }
        }
        let opening = self
            .connection
            .watch(self.state.prefix_dir(), from_revision);
        let mut watch = match Box::pin(opening).await {
            Ok(watch) => watch,
            Err(error) => {
                return Outcome {
                    next: Action::Watch { from_revision },
                    error: Some(error),
                    progressed: false,
                };
            }
        };
        if let Some(since) = self.outage.take() {
            tracing::info!(
                event = events::WATCH_RESUMED,
                endpoint = self.connection.endpoint(),
                from_revision,
                outage_ms = since.elapsed().as_millis() as u64,
                "the watch is back, from the last applied revision + 1"
            );
        }
        tracing::debug!(
            event = events::WATCH_STARTED,
            endpoint = self.connection.endpoint(),
            from_revision,
            "watching the prefix"
        );
        let mut progressed = false;
        let mut asked_progress = false;
        let mut last_message = Instant::now();
        let mut confirming = Confirming {
            last_attempt: Instant::now(),
            asked_progress: false,
        };
        loop {
            let liveness_due = last_message
                + if asked_progress {
                    LIVENESS_INTERVAL * 2
                } else {
                    LIVENESS_INTERVAL
                };
            let confirmed_at = self
                .writer
                .status(|status| status.confirmed.map(|(_, at)| at));
            let head_due = confirming.due(confirmed_at);
            let (input, error) = tokio::select! {
                biased;
                message = watch.next() => match message {
                    Ok(input) => (input, None),
                    Err(error) => (Input::Broken, Some(error)),
                },
                () = tokio::time::sleep_until(liveness_due.min(head_due).into()) => {
                    let now = Instant::now();
                    if now >= head_due {
                        // A progress answer confirms where etcd fixed 15220, and its
                        // head is reached by events on a busy prefix; a head read is for
                        // a quiet prefix when that did not confirm.
                        let read_head = confirming.asked_progress
                            && confirmed_at.is_none_or(|at| at < confirming.last_attempt);
                        confirming.last_attempt = now;
                        confirming.asked_progress = !read_head;
                        if read_head {
                            match Box::pin(self.read_head()).await {
                                Ok(input) => (input, None),
                                Err(error) => (Input::Broken, Some(error)),
                            }
                        } else {
                            match watch.request_progress().await {
                                Ok(()) => continue,
                                Err(error) => (Input::Broken, Some(error)),
                            }
                        }
                    } else if !asked_progress {
                        asked_progress = true;
                        match watch.request_progress().await {
                            Ok(()) => continue,
                            Err(error) => (Input::Broken, Some(error)),
                        }
                    } else {
                        (
                            Input::Broken,
                            Some(self.connection.silent(LIVENESS_INTERVAL * 2)),
                        )
                    }
                }
            };
            if error.is_none() && input != Input::Broken {
                progressed = true;
                if !matches!(input, Input::Head { .. }) {
                    asked_progress = false;
                    last_message = Instant::now();
                }
                let head = match &input {
                    Input::Watched { header, .. }
                    | Input::Progress { header, .. }
                    | Input::Created { header, .. }
                    | Input::Head { header, .. } => Some(header.revision),
                    _ => None,
                };
                self.synced(head);
            }
            let broken = input == Input::Broken;
            let outputs = self.step(input);
            if let Some(next) = self.execute(outputs) {
                if broken || error.is_some() {
                    tracing::warn!(
                        event = events::WATCH_BROKEN,
                        endpoint = self.connection.endpoint(),
                        resume_from = self.state.revision() + 1,
                        error.type = error.as_ref().map(Error::kind_name),
                        error.message = error
                            .as_ref()
                            .map(|error| tracing::field::display(Chain(error))),
                        "the watch stream broke; resuming from the last applied revision + 1"
                    );
                }
                return Outcome {
                    next,
                    error: error.or_else(|| broken.then(|| self.connection.stream_ended())),
                    progressed,
                };
            }
        }
    }

    /// Compares etcd's prefix at the applied revision with the state's; the next action
    /// when they differ (a re-list).
    async fn probe(&mut self) -> Result<Option<Action>, Error> {
        let revision = self.state.revision();
        let probe = self.connection.probe(self.state.prefix_dir(), revision);
        let found = tokio::time::timeout(PROBE_BUDGET, probe)
            .await
            .map_err(|_| self.connection.silent(PROBE_BUDGET))??;
        let outputs = self.step(Input::Probed { revision, found });
        Ok(self.execute(outputs))
    }

    /// Applies one input. The state machine runs the schema's checks and coercion hooks:
    /// one that never returns cannot be preempted, so the start of each step is recorded
    /// and health reports a step that takes longer than [`USER_CODE_BUDGET`].
    fn step(&mut self, input: Input) -> Vec<state::Output> {
        self.writer
            .update_status(|status| status.busy_since = Some(Instant::now()));
        let outputs = self.state.step(input);
        self.writer.update_status(|status| status.busy_since = None);
        outputs
    }

    /// Reads etcd's head for the prefix.
    async fn read_head(&mut self) -> Result<Input, Error> {
        let read = tokio::time::timeout(
            LIVENESS_INTERVAL * 2,
            self.connection
                .head(self.state.prefix_dir(), self.state.revision()),
        )
        .await
        .map_err(|_| self.connection.silent(LIVENESS_INTERVAL * 2))??;
        Ok(Input::Head {
            header: read.header,
            count: read.count,
            changed: read.changed,
            at: Instant::now(),
        })
    }

    /// Carries out the effects and returns the next action, if the state machine asked
    /// for one.
    fn execute(&mut self, outputs: Vec<Output>) -> Option<Action> {
        let mut next = None;
        let status_changed = outputs.iter().any(|output| {
            matches!(
                output,
                Output::Publish(_)
                    | Output::Reject(_)
                    | Output::RejectRevision(_)
                    | Output::RejectRollout(_)
            )
        });
        if status_changed {
            let rejected = self.state.rejections().cloned().collect();
            let rejected_revision = self.state.rejected_revision().cloned();
            let rejected_rollouts = self.state.rollout_rejections().to_vec();
            self.writer.update_status(|status| {
                status.rejected = rejected;
                status.rejected_revision = rejected_revision;
                status.rejected_rollouts = rejected_rollouts;
            });
        }
        // Counted before anything is published: whoever sees the new snapshot finds it
        // counted (a scrape right after a publish missed it, 2026-11-28).
        self.count(|metrics| {
            for output in &outputs {
                match output {
                    Output::Notify(_) => metrics.updates_applied.increment(1),
                    Output::Reject(_) => metrics.updates_rejected.increment(1),
                    Output::RejectRevision(_) => metrics.revisions_rejected.increment(1),
                    _ => {}
                }
            }
        });
        for output in outputs {
            match output {
                Output::Publish(snapshot) => self.writer.publish(snapshot),
                Output::Notify(change) => {
                    tracing::info!(
                        event = events::UPDATE_APPLIED,
                        revision = change.revision,
                        names = %change
                            .changes
                            .iter()
                            .map(|c| &*c.name)
                            .collect::<Vec<_>>()
                            .join(","),
                        "configuration updated"
                    );
                    self.writer.notify(change);
                }
                Output::Reject(rejection) => rejection.log(),
                Output::RejectRevision(rejection) => {
                    tracing::warn!(
                    event = events::REVISION_REJECTED,
                    revision = rejection.revision,
                    reasons = ?rejection.reasons,
                    "a revision breaks the schema's checks; the last good snapshot keeps serving"
                    );
                }
                Output::RejectRollout(rejection) => tracing::warn!(
                    event = events::ROLLOUT_REJECTED,
                    rollout = %rejection.rollout,
                    reason = %rejection.reason,
                    "a rollout that targets this instance is not served; the base is"
                ),
                Output::Collide { name, keys } => tracing::warn!(
                    event = events::NAME_COLLISION,
                    name = %name,
                    keys = ?keys,
                    "several etcd keys map to one name; the first key in order wins"
                ),
                Output::Confirmed { revision, at } => self
                    .writer
                    .update_status(|status| status.confirmed = Some((revision, at))),
                Output::List(reason) => {
                    if reason.is_another_etcd() {
                        tracing::warn!(
                            event = events::ETCD_REPLACED,
                            ?reason,
                            revision = self.state.revision(),
                            "another etcd answers (wiped, restored from a backup or replaced); \
                             reading the prefix again and publishing the difference"
                        );
                        let why = match reason {
                            ListReason::ClusterChanged { from, to } => format!(
                                "cluster id changed from {from:x} to {to:x}; reading the prefix again"
                            ),
                            ListReason::RevisionWentBack { applied, reported } => format!(
                                "etcd reported revision {reported}, below the applied {applied}; \
                                 reading the prefix again"
                            ),
                            ListReason::HistoryDiffers { revision } => format!(
                                "etcd's prefix at the applied revision {revision} is not the one \
                                 served; reading the prefix again"
                            ),
                            _ => String::new(),
                        };
                        self.writer.update_status(|status| {
                            status.relisting = Some(why);
                            status.confirmed = None;
                        });
                    }
                    next = Some(Action::List(reason));
                }
                Output::Watch { from_revision } => next = Some(Action::Watch { from_revision }),
                Output::Started(report) => self.answer(Ok(report)),
                Output::StartFailed(failure) => {
                    let error = self.start_failure(failure);
                    self.answer(Err(error));
                }
            }
        }
        next
    }
}

/// The longest wait between two retries of a retryable failure.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a refused request (wrong credentials, no permission) is tried again.
const REFUSED_RETRY: Duration = Duration::from_secs(30);
/// A watch quiet this long is asked for progress; quiet twice as long, it is broken.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(2);
/// How long the history probe (a read of the prefix at the applied revision) may take.
const PROBE_BUDGET: Duration = Duration::from_secs(10);
/// A step (checks and coercion hooks included) that runs longer than this is reported by
/// health.
pub(crate) const USER_CODE_BUDGET: Duration = Duration::from_secs(5);
/// Attempts to confirm (progress requests, head reads) happen at most this often, and
/// only while the last confirmation is older.
const CONFIRM_INTERVAL: Duration = Duration::from_secs(3);

fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// An engine over an auto-discovered `/app`, never connected, and its store.
    fn engine() -> (Engine, Arc<crate::store::Store>) {
        let settings = crate::settings::EtcdSettings::builder()
            .build()
            .expect("default settings");
        engine_with(&settings)
    }

    fn engine_with(settings: &crate::settings::EtcdSettings) -> (Engine, Arc<crate::store::Store>) {
        let keys = Arc::new(crate::schema::Schema::auto_discover())
            .bind("/app")
            .expect("binds");
        let state = State::new(keys, crate::snapshot::Entries::default());
        let store = crate::store::Store::new();
        let writer = store.begin_run();
        (Engine::new(Connection::new(settings), state, writer), store)
    }

    fn unavailable() -> Error {
        Error::Unavailable {
            endpoints: "http://127.0.0.1:2379".into(),
            source: "connection reset".into(),
        }
    }

    #[test]
    fn an_answer_and_a_reconnect_are_recorded_in_the_status_with_the_endpoint_in_use() {
        let settings = crate::settings::EtcdSettings::builder()
            .endpoints("http://127.0.0.1:2379,http://127.0.0.1:22379")
            .build()
            .expect("two endpoints");
        let (mut engine, store) = engine_with(&settings);
        engine.synced(Some(7));
        let status = store.status();
        assert!(status.connected);
        assert!(status.last_sync.is_some());
        assert_eq!(status.head_revision, Some(7));
        assert_eq!(status.endpoint.as_deref(), Some("http://127.0.0.1:2379"));
        engine.synced(None);
        assert_eq!(
            store.status().head_revision,
            Some(7),
            "no head: the last stays"
        );

        engine.reconnect(&unavailable());
        let status = store.status();
        assert_eq!(status.reconnects, 1);
        assert_eq!(status.endpoint.as_deref(), Some("http://127.0.0.1:22379"));
        engine.reconnect(&unavailable());
        let status = store.status();
        assert_eq!(status.reconnects, 2);
        assert_eq!(status.endpoint.as_deref(), Some("http://127.0.0.1:2379"));
    }

    #[test]
    fn a_start_from_a_fallback_says_why_etcd_was_not_used_and_one_from_etcd_does_not() {
        for (source, says_why) in [(StartSource::Etcd, false), (StartSource::Fallback, true)] {
            let (mut engine, _store) = engine();
            let (reply, mut replied) = oneshot::channel();
            engine.start = Some(Pending {
                deadline: tokio::time::Instant::now(),
                answered: CancellationToken::new(),
                starting: Starting {
                    timeout: Duration::from_secs(2),
                    cache: None,
                    reply,
                },
                last_error: Some(unavailable()),
            });
            engine.answer(Ok(StartReport {
                source,
                revision: 0,
                loaded: 0,
                missing: Vec::new(),
                rejected: Vec::new(),
                collisions: Vec::new(),
                etcd_error: None,
                cache_error: None,
            }));
            let report = replied.try_recv().expect("answered").expect("started");
            assert_eq!(
                report.etcd_error.is_some(),
                says_why,
                "{source:?}: {report:?}"
            );
            if let Some(why) = report.etcd_error {
                assert!(why.contains("connection reset"), "{why}");
            }
        }
    }

    #[test]
    fn the_head_is_confirmed_again_an_interval_after_the_later_of_confirmation_and_attempt() {
        let attempt = Instant::now();
        let confirming = Confirming {
            last_attempt: attempt,
            asked_progress: false,
        };
        // Never confirmed: an interval after the last attempt.
        assert_eq!(confirming.due(None), attempt + CONFIRM_INTERVAL);
        // Confirmed after the attempt: an interval after the confirmation.
        let later = attempt + CONFIRM_INTERVAL * 3;
        assert_eq!(confirming.due(Some(later)), later + CONFIRM_INTERVAL);
        // Confirmed before it: still not sooner than an interval after the attempt.
        let earlier = attempt - CONFIRM_INTERVAL / 2;
        assert_eq!(confirming.due(Some(earlier)), attempt + CONFIRM_INTERVAL);
    }

    #[test]
    fn an_attempt_dropped_at_the_deadline_resumes_with_a_list_until_listed_then_a_watch() {
        let (mut engine, _store) = engine();
        assert_eq!(engine.resume_action(), Action::List(ListReason::Initial));
        engine.step(Input::Listed {
            kvs: Vec::new(),
            header: state::Header {
                cluster: 1,
                revision: 41,
            },
            count: 0,
            at: Instant::now(),
        });
        assert_eq!(engine.resume_action(), Action::Watch { from_revision: 42 });
    }

    #[test]
    fn a_replaced_etcd_is_named_in_the_status_while_the_prefix_is_read_again() {
        let (mut engine, store) = engine();
        let replaced = [
            (
                ListReason::ClusterChanged {
                    from: 0xa1,
                    to: 0xb2,
                },
                "cluster id changed from a1 to b2; reading the prefix again",
            ),
            (
                ListReason::RevisionWentBack {
                    applied: 9,
                    reported: 3,
                },
                "etcd reported revision 3, below the applied 9; reading the prefix again",
            ),
            (
                ListReason::HistoryDiffers { revision: 7 },
                "etcd's prefix at the applied revision 7 is not the one served; reading the \
                 prefix again",
            ),
        ];
        for (reason, why) in replaced {
            let confirmed = Some((5, std::time::Instant::now()));
            engine
                .writer
                .update_status(|status| status.confirmed = confirmed);
            let next = engine.execute(vec![Output::List(reason)]);
            assert!(
                matches!(next, Some(Action::List(r)) if r == reason),
                "{next:?}"
            );
            let status = store.status();
            assert_eq!(status.relisting.as_deref(), Some(why));
            assert_eq!(
                status.confirmed, None,
                "{reason:?}: nothing is confirmed now"
            );
        }
        // A re-list of the same etcd says nothing of another one.
        let confirmed = Some((5, std::time::Instant::now()));
        engine.writer.update_status(|status| {
            status.relisting = None;
            status.confirmed = confirmed;
        });
        let reason = ListReason::Compacted {
            compact_revision: 4,
        };
        let next = engine.execute(vec![Output::List(reason)]);
        assert!(
            matches!(next, Some(Action::List(r)) if r == reason),
            "{next:?}"
        );
        assert_eq!(store.status().relisting, None);
        assert_eq!(store.status().confirmed, confirmed);
    }

    #[test]
    fn retries_back_off_from_50_ms_to_5_s_with_jitter() {
        let delays: Vec<Duration> = new_backoff().take(40).collect();
        // Each delay is the exponential step (50 ms doubling, at most 5 s) plus a random
        // jitter below that step.
        assert!(
            (Duration::from_millis(50)..Duration::from_millis(100)).contains(&delays[0]),
            "{delays:?}"
        );
        assert!(delays.iter().all(|d| *d < MAX_BACKOFF * 2), "{delays:?}");
        assert!(delays[20..].iter().all(|d| *d >= MAX_BACKOFF), "{delays:?}");
        assert!(delays[1] >= Duration::from_millis(100), "{delays:?}");
        // Two engines retrying together do not retry in step.
        let other: Vec<Duration> = new_backoff().take(40).collect();
        assert_ne!(delays, other);
    }
}
