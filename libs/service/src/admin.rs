//! The admin routes every component serves on its admin address:
//!
//! - `GET /healthz`: 200 while the process is alive and its event loop answers (liveness);
//! - `GET /ready`: 200 when every readiness condition holds, else 503 naming what it waits for
//!   (readiness: a Kubernetes Service only routes to ready instances);
//! - `GET /metrics`: Prometheus text format.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::metrics::Metrics;

/// Named conditions that must all hold before the component is ready. A component registers a
/// condition per thing it waits for ("kafka", "restore"), and flips it as that changes.
/// Shutting down makes the component unready at once, so traffic drains away.
#[derive(Clone, Debug)]
pub struct Readiness {
    inner: Arc<Mutex<ReadinessState>>,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct ReadinessState {
    conditions: BTreeMap<String, bool>,
    draining: bool,
}

/// One readiness condition; see [`Readiness::condition`].
#[derive(Clone, Debug)]
pub struct ReadinessCondition {
    name: String,
    readiness: Readiness,
}

impl Readiness {
    pub fn new(metrics: Metrics) -> Self {
        let readiness = Readiness {
            inner: Arc::default(),
            metrics,
        };
        readiness.publish();
        readiness
    }

    /// Registers a condition, not yet holding.
    pub fn condition(&self, name: &str) -> ReadinessCondition {
        self.state().conditions.insert(name.to_owned(), false);
        self.publish();
        ReadinessCondition {
            name: name.to_owned(),
            readiness: self.clone(),
        }
    }

    /// Marks the component as shutting down: not ready from now on.
    pub fn set_draining(&self) {
        self.state().draining = true;
        self.publish();
    }

    /// `Ok` when ready, else what it is waiting for.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let state = self.state();
        if state.draining {
            return Err(vec!["shutdown".to_owned()]);
        }
        let waiting: Vec<String> = state
            .conditions
            .iter()
            .filter(|(_, holds)| !**holds)
            .map(|(name, _)| name.clone())
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting)
        }
    }

    fn state(&self) -> MutexGuard<'_, ReadinessState> {
        // The state stays consistent even if a holder panicked: every update is one assignment.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self) {
        self.metrics.set_ready(self.check().is_ok());
    }
}

impl ReadinessCondition {
    pub fn set(&self, holds: bool) {
        let changed = self
            .readiness
            .state()
            .conditions
            .insert(self.name.clone(), holds)
            != Some(holds);
        if changed {
            tracing::info!(condition = %self.name, holds, "readiness condition changed");
        }
        self.readiness.publish();
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: Metrics,
}

/// The admin router; components may merge routes of their own into it.
pub fn router(readiness: Readiness, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(AdminState { readiness, metrics })
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn ready(State(state): State<AdminState>) -> Response {
    match state.readiness.check() {
        Ok(()) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(waiting_for) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not_ready", "waiting_for": waiting_for })),
        )
            .into_response(),
    }
}

async fn render_metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::ComponentInfo;

    fn readiness() -> Readiness {
        Readiness::new(Metrics::new(&ComponentInfo::new("eddy-test", "0")).unwrap())
    }

    #[test]
    fn ready_only_when_every_condition_holds() {
        let readiness = readiness();
        assert_eq!(readiness.check(), Ok(()));
        let kafka = readiness.condition("kafka");
        let restore = readiness.condition("restore");
        assert_eq!(
            readiness.check(),
            Err(vec!["kafka".to_owned(), "restore".to_owned()])
        );
        kafka.set(true);
        assert_eq!(readiness.check(), Err(vec!["restore".to_owned()]));
        restore.set(true);
        assert_eq!(readiness.check(), Ok(()));
        assert!(readiness.metrics.render().contains("eddy_ready 1"));
        restore.set(false);
        assert_eq!(readiness.check(), Err(vec!["restore".to_owned()]));
        assert!(readiness.metrics.render().contains("eddy_ready 0"));
    }

    #[test]
    fn draining_is_never_ready() {
        let readiness = readiness();
        readiness.condition("kafka").set(true);
        readiness.set_draining();
        assert_eq!(readiness.check(), Err(vec!["shutdown".to_owned()]));
    }
}
