//! What every Eddy binary shares, so each cross-cutting concern is done one way:
//!
//! - [`config`]: command-line flags with `EDDY_*` environment twins, parsed before anything
//!   starts (exit code 64 on bad configuration), and [`config::Secret`] for values that never print;
//! - [`telemetry`]: tracing as text or JSON;
//! - [`metrics`]: one Prometheus registry with the base metrics every component exports;
//! - [`admin`]: the `/metrics`, `/healthz` and `/ready` routes, with named readiness conditions;
//! - [`shutdown`]: named tasks under one cancellation token, SIGTERM/SIGINT handling and a
//!   grace timeout; the first fatal error stops the rest;
//! - [`kafka`]: the one Kafka client configuration builder (bootstrap, security, idempotent
//!   producer with `acks=all`, Java-compatible `murmur2_random` partitioning);
//! - [`http`]: the one outbound HTTP client builder (one TLS configuration per process);
//! - [`envelope`]: the headers every record carries (event and ingest time, producer, W3C
//!   `traceparent`);
//! - [`run`]: ties them together so a component's `main` is a table of contents.

pub mod admin;
pub mod config;
pub mod envelope;
pub mod error;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod run;
pub mod shutdown;
pub mod telemetry;

pub use config::{ServiceArgs, parse_config_or_exit};
pub use error::ServiceError;
pub use run::{ComponentConfig, ComponentInfo, Runtime, main, run};
