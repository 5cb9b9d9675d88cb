//! A minimal component on `eddy-service`, used by the lifecycle tests (and a reference for the
//! shape of a component's `main`): it waits for Kafka before it is ready, serves the admin
//! routes, and on SIGTERM/SIGINT "flushes" for `--drain-delay` before it stops.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use eddy_service::config::parse_duration;
use eddy_service::kafka::{KafkaArgs, wait_for_kafka};
use eddy_service::{ComponentConfig, ComponentInfo, Runtime, ServiceArgs, ServiceError};

const COMPONENT: ComponentInfo =
    ComponentInfo::new("eddy-lifecycle-fixture", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Parser)]
#[command(version, about = "A do-nothing component for lifecycle tests")]
struct Config {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// How long the worker takes to finish after it is told to stop.
    #[arg(long, env = "EDDY_FIXTURE_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    drain_delay: Duration,
}

impl ComponentConfig for Config {
    fn service(&self) -> &ServiceArgs {
        &self.service
    }

    fn validate(&self) -> Result<(), ServiceError> {
        self.kafka.validate()
    }
}

fn main() -> ExitCode {
    eddy_service::main(COMPONENT, start)
}

async fn start(config: Config, runtime: Runtime) -> Result<(), String> {
    let kafka_ready = runtime.readiness.condition("kafka");
    let stop = runtime.shutdown.token();
    runtime.shutdown.spawn("wait-for-kafka", async move {
        if wait_for_kafka(&config.kafka, COMPONENT.name, &stop).await {
            kafka_ready.set(true);
        }
        Ok::<(), String>(())
    });

    let stop = runtime.shutdown.token();
    let drain_delay = config.drain_delay;
    runtime.shutdown.spawn("worker", async move {
        stop.cancelled().await;
        tokio::time::sleep(drain_delay).await;
        tracing::info!("worker flushed");
        Ok::<(), String>(())
    });
    Ok(())
}
