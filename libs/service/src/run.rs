//! The component lifecycle every binary shares: tracing, metrics, the admin server, the
//! component's own start-up, then wait for SIGTERM/SIGINT (or a failure) and drain within the
//! grace period. A component's `main` parses its config and calls [`run`].

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Readiness};
use crate::config::{EXIT_BAD_CONFIG, ServiceArgs};
use crate::metrics::Metrics;
use crate::shutdown::{Shutdown, StopReason, StopSignals};
use crate::{ServiceError, telemetry};

/// A component's name and version, as reported in logs and `eddy_build_info`.
#[derive(Debug, Clone, Copy)]
pub struct ComponentInfo {
    pub name: &'static str,
    pub version: &'static str,
}

impl ComponentInfo {
    pub const fn new(name: &'static str, version: &'static str) -> Self {
        ComponentInfo { name, version }
    }
}

/// What a component's start-up gets: the metrics registry, readiness conditions, the shutdown
/// handle to spawn its tasks on, and the admin server's bound address.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub component: ComponentInfo,
    pub metrics: Metrics,
    pub readiness: Readiness,
    pub shutdown: Shutdown,
    pub admin_address: SocketAddr,
}

/// A component's configuration: clap flags with `EDDY_*` twins that include [`ServiceArgs`],
/// plus the checks of settings that only make sense together.
pub trait ComponentConfig: clap::Parser {
    /// The shared settings (admin address, logging, shutdown grace).
    fn service(&self) -> &ServiceArgs;

    /// Checks run after parsing; an error exits 64 before anything starts.
    fn validate(&self) -> Result<(), ServiceError> {
        Ok(())
    }
}

/// The whole `main` of a component: parse and check its configuration (exit 64 on bad
/// configuration, before anything starts), then [`run`] it with `start`.
pub fn main<C, F, Fut, E>(component: ComponentInfo, start: F) -> ExitCode
where
    C: ComponentConfig,
    F: FnOnce(C, Runtime) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let config: C = crate::config::parse_config_or_exit();
    if let Err(error) = config.validate() {
        return crate::config::bad_config_exit(&error.to_string());
    }
    let service = config.service().clone();
    run(component, &service, |runtime| start(config, runtime))
}

/// Runs a component to completion and returns the process exit code: 0 after a clean shutdown,
/// 1 when start-up or a task failed or the grace period ran out, 64 for bad configuration.
///
/// `start` builds the component and spawns its long-running tasks on `runtime.shutdown`, then
/// returns; the component is stopped when a signal arrives or a task fails.
pub fn run<F, Fut, E>(component: ComponentInfo, args: &ServiceArgs, start: F) -> ExitCode
where
    F: FnOnce(Runtime) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    if let Err(error) = telemetry::init_tracing(args) {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let tokio_runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            report_error(&ServiceError::Runtime(error));
            return ExitCode::FAILURE;
        }
    };
    tokio_runtime.block_on(async move {
        match run_async(component, args, start).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                report_error(&error);
                ExitCode::FAILURE
            }
        }
    })
}

async fn run_async<F, Fut, E>(
    component: ComponentInfo,
    args: &ServiceArgs,
    start: F,
) -> Result<(), ServiceError>
where
    F: FnOnce(Runtime) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    // Before anything can report ready: a SIGTERM from then on always drains.
    let mut signals = StopSignals::install()?;
    tracing::info!(
        component = component.name,
        version = component.version,
        "starting"
    );
    let metrics = Metrics::new(&component)?;
    let readiness = Readiness::new(metrics.clone());
    let shutdown = Shutdown::new();

    let listener = TcpListener::bind(args.admin_address)
        .await
        .map_err(|source| ServiceError::BindAdmin {
            address: args.admin_address,
            source,
        })?;
    let admin_address = listener
        .local_addr()
        .map_err(|source| ServiceError::BindAdmin {
            address: args.admin_address,
            source,
        })?;
    tracing::info!(address = %admin_address, "admin server listening");
    // The admin server outlives the component's tasks, so /healthz and /metrics answer while
    // they drain; it stops last.
    let admin_stop = CancellationToken::new();
    let admin_server = tokio::spawn({
        let router = admin::router(readiness.clone(), metrics.clone());
        let stop = admin_stop.clone();
        async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });

    let runtime = Runtime {
        component,
        metrics,
        readiness: readiness.clone(),
        shutdown: shutdown.clone(),
        admin_address,
    };
    // Not ready before start-up has finished, whatever conditions it registers on the way.
    let starting = readiness.condition("started");
    let started = start(runtime).await.map_err(|error| error.to_string());
    if started.is_ok() {
        starting.set(true);
    }

    let stopped = match started {
        Ok(()) => {
            tracing::info!("started");
            let reason = shutdown.wait_for_stop(&mut signals).await;
            match reason {
                StopReason::Signal(signal) => tracing::info!(signal, "shutting down"),
                StopReason::TaskFailed => tracing::info!("shutting down after a task failure"),
                StopReason::Requested => tracing::info!("shutting down on request"),
            }
            Ok(())
        }
        Err(message) => Err(ServiceError::Start(message)),
    };

    readiness.set_draining();
    let drained = shutdown.drain(args.shutdown_grace).await;
    admin_stop.cancel();
    match admin_server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(error = %error, "admin server stopped with an error"),
        Err(error) => tracing::warn!(error = %error, "admin server task failed"),
    }
    stopped?;
    drained?;
    tracing::info!("stopped");
    Ok(())
}

/// Logs an error with its chain of causes, one level per `caused_by` entry.
fn report_error(error: &(dyn std::error::Error + 'static)) {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    tracing::error!(error = %error, caused_by = ?causes, "component failed");
}
