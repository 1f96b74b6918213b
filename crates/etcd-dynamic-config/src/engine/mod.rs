//! The I/O loop: executes the state machine's outputs against etcd.
//!
//! Lists the prefix at one revision, watches from the next one, resumes after a broken
//! stream from the last applied revision + 1, and re-lists when that revision has been
//! compacted. Retries back off exponentially with jitter.

pub(crate) mod state;

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;

use crate::connection::Connection;
use crate::error::{Chain, Error};
use crate::store::{Status, Writer};
use state::{Input, ListReason, Output, State};

/// What to ask etcd next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    List(ListReason),
    Watch { from_revision: i64 },
}

/// The engine: the state machine, its connection, and the store it publishes to.
#[derive(Debug)]
pub(crate) struct Engine {
    connection: Connection,
    state: State,
    writer: Writer,
}

/// How one attempt at an action ended.
struct Outcome {
    next: Action,
    error: Option<Error>,
    /// Whether etcd answered at all (resets the backoff).
    progressed: bool,
}

impl Engine {
    pub(crate) fn new(connection: Connection, state: State, writer: Writer) -> Self {
        Self {
            connection,
            state,
            writer,
        }
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// Lists the prefix once and applies the result: the start-up read.
    ///
    /// # Errors
    ///
    /// As [`Connection::list`].
    pub(crate) async fn load(&mut self) -> Result<Action, Error> {
        let (kvs, revision) = self.connection.list(self.state.prefix_dir()).await?;
        let outputs = self.state.step(Input::Listed { kvs, revision });
        Ok(self.execute(outputs).unwrap_or(Action::Watch {
            from_revision: revision + 1,
        }))
    }

    /// Runs until `stop` changes or is dropped.
    pub(crate) async fn run(mut self, mut action: Action, mut stop: watch::Receiver<bool>) {
        let mut backoff = new_backoff();
        loop {
            let outcome = tokio::select! {
                biased;
                _ = stop.changed() => return,
                outcome = self.perform(action) => outcome,
            };
            action = outcome.next;
            if outcome.progressed {
                backoff = new_backoff();
            }
            let Some(error) = outcome.error else {
                continue;
            };
            let delay = backoff.next().unwrap_or(Duration::from_secs(5));
            if error.is_retryable() {
                tracing::debug!(
                    event = "etcd_retry",
                    error = %Chain(&error),
                    next = ?action,
                    delay_ms = delay.as_millis() as u64,
                    "etcd request failed; retrying"
                );
            } else {
                tracing::error!(
                    event = "etcd_refused",
                    error = %Chain(&error),
                    next = ?action,
                    delay_ms = delay.as_millis() as u64,
                    "etcd refused the request; the last good configuration keeps serving"
                );
            }
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn perform(&mut self, action: Action) -> Outcome {
        match action {
            Action::List(reason) => {
                tracing::info!(event = "relist", ?reason, "reading the whole prefix again");
                match self.load().await {
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
    async fn watch(&mut self, from_revision: i64) -> Outcome {
        let mut watch = match self
            .connection
            .watch(self.state.prefix_dir(), from_revision)
            .await
        {
            Ok(watch) => watch,
            Err(error) => {
                return Outcome {
                    next: Action::Watch { from_revision },
                    error: Some(error),
                    progressed: false,
                };
            }
        };
        tracing::debug!(
            event = "watch_started",
            from_revision,
            "watching the prefix"
        );
        let mut progressed = false;
        loop {
            let (input, error) = match watch.next().await {
                Ok(input) => (input, None),
                Err(error) => (Input::Broken, Some(error)),
            };
            progressed |= error.is_none();
            let broken = input == Input::Broken;
            let outputs = self.state.step(input);
            if let Some(next) = self.execute(outputs) {
                if broken || error.is_some() {
                    tracing::warn!(
                        event = "watch_broken",
                        resume_from = self.state.revision() + 1,
                        error = error
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

    /// Carries out the effects and returns the next action, if the state machine asked
    /// for one.
    fn execute(&mut self, outputs: Vec<Output>) -> Option<Action> {
        let mut next = None;
        let status_changed = outputs.iter().any(|output| {
            matches!(
                output,
                Output::Publish(_) | Output::Reject(_) | Output::RejectRevision(_)
            )
        });
        if status_changed {
            self.writer.set_status(Status {
                rejected: self.state.rejections().cloned().collect(),
                rejected_revision: self.state.rejected_revision().cloned(),
            });
        }
        for output in outputs {
            match output {
                Output::Publish(snapshot) => self.writer.publish(snapshot),
                Output::Notify(change) => {
                    tracing::info!(
                        event = "update_applied",
                        revision = change.revision,
                        names = ?change.changes.iter().map(|c| &*c.name).collect::<Vec<_>>(),
                        "configuration updated"
                    );
                    self.writer.notify(change);
                }
                Output::Reject(rejection) => tracing::warn!(
                    event = "update_rejected",
                    name = %rejection.name,
                    source = %rejection.source,
                    reason = %rejection.reason,
                    "a value was rejected; the name keeps its last good value"
                ),
                Output::RejectRevision(rejection) => tracing::warn!(
                    event = "revision_rejected",
                    revision = rejection.revision,
                    reasons = ?rejection.reasons,
                    "a revision breaks the schema's checks; the last good snapshot keeps serving"
                ),
                Output::Collide { name, keys } => tracing::warn!(
                    event = "name_collision",
                    name = %name,
                    keys = ?keys,
                    "several etcd keys map to one name; the first key in order wins"
                ),
                Output::List(reason) => next = Some(Action::List(reason)),
                Output::Watch { from_revision } => next = Some(Action::Watch { from_revision }),
            }
        }
        next
    }
}

fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}
