//! Serving a component's API: its own address (apart from the admin address with `/ready` and
//! `/metrics`), the system token, the body limit, JSON answers for unknown paths and methods,
//! request metrics, and graceful shutdown with the component.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use clap::Args;
use eddy_service::config::Secret;
use eddy_service::{Runtime, ServiceError};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tokio::net::TcpListener;

use crate::ApiError;
use crate::auth::require_token;

/// The API settings every component with an HTTP API shares.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Where the API listens (the admin address serves /ready and /metrics apart from it).
    #[arg(long, env = "EDDY_HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    pub http_address: SocketAddr,

    /// The system token: `Authorization: Bearer <token>` on every API call (ingest takes a
    /// source's token instead).
    #[arg(long, env = "EDDY_SYSTEM_TOKEN", hide_env_values = true)]
    pub system_token: Secret,

    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "EDDY_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
}

impl ApiArgs {
    pub fn validate(&self) -> Result<(), ServiceError> {
        if self.system_token.expose().len() < 16 {
            return Err(ServiceError::Config(
                "EDDY_SYSTEM_TOKEN must be at least 16 characters".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Middleware: 401 unless the request carries the system token. Apply it to every route but
/// `/openapi.json` and ingest.
pub async fn require_system_token(
    State(token): State<Arc<Secret>>,
    request: Request,
    next: Next,
) -> Response {
    match require_token(request.headers(), token.expose()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// Wraps `routes` (with the system-token check) and `public` (without) in the shared layers.
pub fn with_system_token(routes: Router, token: &Secret) -> Router {
    routes.layer(middleware::from_fn_with_state(
        Arc::new(token.clone()),
        require_system_token,
    ))
}

/// Binds the API and serves `router` until the component shuts down; returns the bound
/// address (useful with port 0).
pub async fn serve(
    runtime: &Runtime,
    address: SocketAddr,
    router: Router,
) -> Result<SocketAddr, ServiceError> {
    let metrics = HttpMetrics::register(runtime)?;
    let router = router
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(metrics, record_request));
    let listener = TcpListener::bind(address)
        .await
        .map_err(|error| ServiceError::Start(format!("binding the API to {address}: {error}")))?;
    let bound = listener
        .local_addr()
        .map_err(|error| ServiceError::Start(format!("binding the API to {address}: {error}")))?;
    tracing::info!(address = %bound, "API listening");
    let stop = runtime.shutdown.token();
    runtime.shutdown.spawn("api", async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .map_err(|error| format!("API server: {error}"))
    });
    Ok(bound)
}

/// Serves an OpenAPI document (JSON text).
pub fn openapi_json(document: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document).into_response()
}

async fn unknown_path(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_endpoint",
        format!(
            "there is no endpoint {} (see /openapi.json)",
            request.uri().path()
        ),
    )
}

async fn wrong_method(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not accept {} (API endpoints take POST with a JSON body)",
            request.uri().path(),
            request.method()
        ),
    )
}

#[derive(Clone)]
struct HttpMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
}

impl HttpMetrics {
    fn register(runtime: &Runtime) -> Result<Self, ServiceError> {
        let requests = IntCounterVec::new(
            Opts::new(
                "eddy_http_requests_total",
                "API requests answered, by endpoint and status",
            ),
            &["endpoint", "status"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "eddy_http_request_duration_seconds",
                "Time to answer an API request",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["endpoint"],
        )?;
        let registry = runtime.metrics.registry();
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        Ok(HttpMetrics { requests, seconds })
    }
}

async fn record_request(
    State(metrics): State<HttpMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .seconds
        .with_label_values(&[endpoint.as_str()])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[endpoint.as_str(), response.status().as_str()])
        .inc();
    response
}
