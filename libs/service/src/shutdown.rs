//! Graceful shutdown: a component's long-running work runs as named tasks under one
//! cancellation token. SIGTERM, SIGINT or the first task failure cancels the token; every task
//! is then given the grace period to finish (flush, commit, close) before the process exits.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ServiceError;

/// Why the component is stopping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Signal(&'static str),
    TaskFailed,
    Requested,
}

/// SIGTERM and SIGINT handlers. Install them first thing, before anything can report ready, so
/// a signal never meets the default action (an immediate exit without draining).
#[derive(Debug)]
pub struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn install() -> Result<Self, ServiceError> {
        let terminate = signal(SignalKind::terminate()).map_err(|source| ServiceError::Signal {
            signal: "SIGTERM",
            source,
        })?;
        let interrupt = signal(SignalKind::interrupt()).map_err(|source| ServiceError::Signal {
            signal: "SIGINT",
            source,
        })?;
        Ok(StopSignals {
            terminate,
            interrupt,
        })
    }
}

/// The set of running tasks and the token that tells them to stop. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
    state: Arc<Mutex<ShutdownState>>,
}

#[derive(Debug, Default)]
struct ShutdownState {
    running: BTreeSet<String>,
    first_failure: Option<(String, String)>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when the component starts shutting down; tasks select on
    /// `token.cancelled()` and then finish their in-flight work.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Asks every task to stop, as a signal would.
    pub fn request_stop(&self) {
        self.token.cancel();
    }

    /// Runs `task` as a named task. An error or a panic is logged, recorded as the first
    /// failure (if it is) and stops every other task.
    pub fn spawn<F, E>(&self, name: impl Into<String>, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let name = name.into();
        self.state().running.insert(name.clone());
        let shutdown = self.clone();
        let inner = tokio::spawn(task);
        self.tracker.spawn(async move {
            let failure = match inner.await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(join_error) if join_error.is_panic() => Some("panicked".to_owned()),
                Err(join_error) => Some(join_error.to_string()),
            };
            let mut state = shutdown.state();
            state.running.remove(&name);
            match failure {
                None => tracing::debug!(task = %name, "task finished"),
                Some(message) => {
                    tracing::error!(task = %name, error = %message, "task failed; stopping the component");
                    state.first_failure.get_or_insert((name, message));
                    shutdown.token.cancel();
                }
            }
        });
    }

    /// Waits for SIGTERM, SIGINT (caught since `signals` was installed), a task failure or
    /// [`Shutdown::request_stop`].
    pub async fn wait_for_stop(&self, signals: &mut StopSignals) -> StopReason {
        tokio::select! {
            _ = signals.terminate.recv() => StopReason::Signal("SIGTERM"),
            _ = signals.interrupt.recv() => StopReason::Signal("SIGINT"),
            () = self.token.cancelled() => if self.state().first_failure.is_some() {
                StopReason::TaskFailed
            } else {
                StopReason::Requested
            },
        }
    }

    /// Cancels every task and waits up to `grace` for them to finish. Fails if a task failed
    /// (at any time) or some are still running after the grace period.
    pub async fn drain(&self, grace: Duration) -> Result<(), ServiceError> {
        self.token.cancel();
        self.tracker.close();
        let finished = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        let state = self.state();
        if let Some((task, message)) = &state.first_failure {
            return Err(ServiceError::TaskFailed {
                task: task.clone(),
                message: message.clone(),
            });
        }
        if !finished {
            return Err(ServiceError::GraceExceeded {
                grace_seconds: grace.as_secs(),
                tasks: state.running.iter().cloned().collect(),
            });
        }
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, ShutdownState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_stop_on_request_and_drain_cleanly() {
        let shutdown = Shutdown::new();
        let token = shutdown.token();
        let (done_sender, mut done) = tokio::sync::mpsc::unbounded_channel();
        shutdown.spawn("worker", async move {
            token.cancelled().await;
            done_sender
                .send("flushed")
                .map_err(|error| error.to_string())
        });
        shutdown.request_stop();
        assert_eq!(
            shutdown
                .wait_for_stop(&mut StopSignals::install().unwrap())
                .await,
            StopReason::Requested
        );
        shutdown.drain(Duration::from_secs(5)).await.unwrap();
        assert_eq!(done.recv().await, Some("flushed"));
    }

    #[tokio::test]
    async fn first_failure_stops_the_others_and_is_reported() {
        let shutdown = Shutdown::new();
        let token = shutdown.token();
        shutdown.spawn("patient", async move {
            token.cancelled().await;
            Ok::<(), String>(())
        });
        shutdown.spawn("broken", async { Err::<(), _>("disk on fire") });
        assert_eq!(
            shutdown
                .wait_for_stop(&mut StopSignals::install().unwrap())
                .await,
            StopReason::TaskFailed
        );
        let error = shutdown.drain(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "task broken failed: disk on fire",
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_panic_is_a_failure() {
        let shutdown = Shutdown::new();
        shutdown.spawn("panicky", async {
            let values: Vec<u32> = Vec::new();
            // Indexing an empty vector panics, as a bug in a task would.
            let first = values[0];
            tracing::debug!(first, "unreachable");
            Ok::<(), String>(())
        });
        assert_eq!(
            shutdown
                .wait_for_stop(&mut StopSignals::install().unwrap())
                .await,
            StopReason::TaskFailed
        );
        let error = shutdown.drain(Duration::from_secs(5)).await.unwrap_err();
        assert!(
            error.to_string().contains("panicky failed: panicked"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn tasks_outliving_the_grace_period_are_named() {
        let shutdown = Shutdown::new();
        shutdown.spawn("stubborn", async {
            std::future::pending::<()>().await;
            Ok::<(), String>(())
        });
        let error = shutdown.drain(Duration::from_millis(50)).await.unwrap_err();
        match error {
            ServiceError::GraceExceeded { tasks, .. } => assert_eq!(tasks, vec!["stubborn"]),
            other => panic!("expected GraceExceeded, got {other:?}"),
        }
    }
}
