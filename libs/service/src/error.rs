//! The errors of the shared service layer.

use std::net::SocketAddr;

/// What can go wrong while starting or running the shared parts of a component.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("start-up failed: {0}")]
    Start(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("could not bind the admin server to {address}")]
    BindAdmin {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("could not install the {signal} handler")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("could not build the tokio runtime")]
    Runtime(#[source] std::io::Error),
    #[error("metrics registry")]
    Metrics(#[from] prometheus::Error),
    #[error("task {task} failed: {message}")]
    TaskFailed { task: String, message: String },
    #[error("tasks still running after the {grace_seconds}s shutdown grace period: {tasks:?}")]
    GraceExceeded {
        grace_seconds: u64,
        tasks: Vec<String>,
    },
}
