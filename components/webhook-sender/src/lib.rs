//! The webhook-sender connector: delivers the events on the events topic to their
//! subscribers, signed per Standard Webhooks, retried on a schedule from seconds to hours,
//! dead-lettered when attempts or age run out, every attempt in the delivery log (see
//! `docs/webhooks.md`).
//!
//! Two halves share the partitions of the events topic:
//! - the **outbox** ([`outbox`]), an eddy-streams processor over the events and the delivery
//!   log that keeps each event's state and the due queue in a store backed by a changelog;
//! - the **executor** ([`executor`]), which reads the due queue of the partitions this
//!   instance owns, makes the calls and writes their outcomes to the delivery log.

pub mod executor;
pub mod metrics;
pub mod outbox;
pub mod resolver;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use eddy_schemas::catalog::{
    WEBHOOK_DEAD_LETTERS, WEBHOOK_DELIVERIES, WEBHOOK_EVENTS, WEBHOOK_SUBSCRIPTIONS,
};
use eddy_schemas::writer::RecordWriter;
use eddy_schemas::{AvroSerde, Catalog, CatalogArgs, RegistryArgs};
use eddy_service::config::{Secret, parse_duration};
use eddy_service::envelope::producer_name;
use eddy_service::kafka::KafkaArgs;
use eddy_service::{ComponentConfig, ComponentInfo, Runtime, ServiceArgs, ServiceError};
use eddy_streams::service::{StreamsArgs, ready_when_caught_up, supervise};
use eddy_streams::{GlobalTable, JsonSerde, StreamsApp, StringSerde, Topology};
use eddy_webhooks::SecretKey;
use eddy_webhooks::destination::DestinationArgs;

use crate::executor::{DeliveryPolicy, Executor};
use crate::metrics::SenderMetrics;
use crate::outbox::{OutboxKeeper, OutboxSignals};
use crate::resolver::PolicyResolver;
use crate::schedule::{DEFAULT_SCHEDULE, RetrySchedule, parse_schedule};

pub const COMPONENT: ComponentInfo =
    ComponentInfo::new("eddy-webhook-sender", env!("CARGO_PKG_VERSION"));

const APPLICATION: &str = "webhook-sender-v1";
/// A closing partition waits for its calls under way up to their timeout plus this (to write
/// their attempts to the delivery log).
const CLOSE_MARGIN: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Delivers webhook events: signed, retried, logged, dead-lettered"
)]
pub struct Config {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
    #[command(flatten)]
    pub streams: StreamsArgs,
    #[command(flatten)]
    pub destinations: DestinationArgs,
    /// Application id; default `[<topic namespace>.]webhook-sender-v1`.
    #[arg(long, env = "EDDY_APPLICATION_ID")]
    pub application_id: Option<String>,
    /// The installation's secret key; subscriptions' signing secrets are derived from it.
    #[arg(long, env = "EDDY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Secret,
    /// The wait before each attempt, comma-separated (the first is normally 0s); its length
    /// is the number of attempts unless a subscription sets `max_attempts`.
    #[arg(long, env = "EDDY_WEBHOOK_RETRY_SCHEDULE", default_value = DEFAULT_SCHEDULE, value_parser = parse_schedule)]
    pub retry_schedule: std::vec::Vec<Duration>,
    /// Random spread of each retry delay, as a fraction (0.2: ±20 %).
    #[arg(long, env = "EDDY_WEBHOOK_RETRY_JITTER", default_value_t = 0.2)]
    pub retry_jitter: f64,
    /// How long after its creation an event may still be retried, for subscriptions that do
    /// not set `max_age_seconds`.
    #[arg(long, env = "EDDY_WEBHOOK_MAX_AGE", default_value = "72h", value_parser = parse_duration)]
    pub max_age: Duration,
    /// Deliveries in flight per subscription.
    #[arg(long, env = "EDDY_WEBHOOK_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Deliveries in flight in all.
    #[arg(long, env = "EDDY_WEBHOOK_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    /// Time to connect to a receiver.
    #[arg(long, env = "EDDY_WEBHOOK_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Time for the whole call, answer included.
    #[arg(long, env = "EDDY_WEBHOOK_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl ComponentConfig for Config {
    fn service(&self) -> &ServiceArgs {
        &self.service
    }

    fn validate(&self) -> Result<(), ServiceError> {
        self.kafka.validate()?;
        if self.secret_key.expose().len() < 32 {
            return Err(ServiceError::Config(
                "EDDY_SECRET_KEY must be at least 32 characters".to_owned(),
            ));
        }
        if !(0.0..1.0).contains(&self.retry_jitter) {
            return Err(ServiceError::Config(
                "EDDY_WEBHOOK_RETRY_JITTER must be at least 0 and below 1".to_owned(),
            ));
        }
        if self.timeout + CLOSE_MARGIN >= self.service.shutdown_grace {
            return Err(ServiceError::Config(format!(
                "EDDY_SHUTDOWN_GRACE ({} s) must be longer than EDDY_WEBHOOK_TIMEOUT ({} s) plus {} s: \
                 a stopping sender finishes its calls under way and records them",
                self.service.shutdown_grace.as_secs(),
                self.timeout.as_secs(),
                CLOSE_MARGIN.as_secs()
            )));
        }
        if self.concurrency == 0 || self.max_in_flight == 0 {
            return Err(ServiceError::Config(
                "EDDY_WEBHOOK_CONCURRENCY and EDDY_WEBHOOK_MAX_IN_FLIGHT must be at least 1"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

pub async fn start(config: Config, runtime: Runtime) -> Result<(), String> {
    let registry = eddy_api::platform::connect(&runtime, &config.kafka, &config.registry).await?;
    let catalog = Catalog::new(&config.catalog);
    let name = |dataset: &str| catalog.name(dataset).unwrap_or(dataset).to_owned();
    let error = |error: &dyn std::fmt::Display| error.to_string();
    let (events, deliveries, dead_letters, subscriptions) = (
        name(WEBHOOK_EVENTS),
        name(WEBHOOK_DELIVERIES),
        name(WEBHOOK_DEAD_LETTERS),
        name(WEBHOOK_SUBSCRIPTIONS),
    );
    let (event, delivery, dead_letter, subscription) = tokio::try_join!(
        AvroSerde::for_topic(&registry, &events),
        AvroSerde::for_topic(&registry, &deliveries),
        AvroSerde::for_topic(&registry, &dead_letters),
        AvroSerde::for_topic(&registry, &subscriptions),
    )
    .map_err(|e| error(&e))?;
    let subscriptions = GlobalTable::start(
        &config.kafka,
        COMPONENT.name,
        &subscriptions,
        StringSerde,
        subscription,
    )
    .map_err(|e| error(&e))?;
    ready_when_caught_up(&runtime, "webhook subscriptions", &subscriptions);
    let writer = RecordWriter::new(&config.kafka, COMPONENT.name, &[&deliveries, &dead_letters])
        .await
        .map_err(|e| error(&e))?;

    let application_id = config
        .application_id
        .clone()
        .unwrap_or_else(|| config.catalog.application_id(APPLICATION));
    let mut topology = Topology::new(application_id.clone());
    let signals = Arc::new(OutboxSignals::default());
    let keeper = OutboxKeeper {
        events: topology.input(&events, StringSerde, event),
        attempts: topology.input(&deliveries, StringSerde, delivery.clone()),
        outbox: topology.store("outbox", StringSerde, JsonSerde::new()),
        dead_letters: topology.output(&dead_letters, StringSerde, dead_letter.clone()),
        signals: Arc::clone(&signals),
        partition: 0,
        close_timeout: config.timeout + CLOSE_MARGIN,
    };
    let outbox = keeper.outbox.clone();
    topology.processor(move |partition| {
        keeper.signals.partition_started(partition);
        OutboxKeeper {
            partition,
            ..keeper.clone()
        }
    });
    // Deliveries check the subscription first: it must be loaded.
    let mut loaded = subscriptions.caught_up_changes();
    if loaded.wait_for(|loaded| *loaded).await.is_err() {
        return Err("the webhook subscriptions table stopped before it loaded".to_owned());
    }
    let streams_config = config
        .streams
        .config(config.kafka.clone())
        .for_component(&runtime);
    let app = StreamsApp::start(streams_config, topology)
        .await
        .map_err(|e| error(&e))?;
    let queries = app.queries();
    supervise(app, &runtime);

    let destinations = config.destinations.policy();
    let client = eddy_service::http::client_builder()
        .connect_timeout(config.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(config.concurrency)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(format!("Eddy-Webhooks/{}", COMPONENT.version))
        .dns_resolver(PolicyResolver {
            policy: destinations,
        })
        .build()
        .map_err(|e| error(&e))?;
    let executor = Executor {
        queries,
        outbox,
        signals,
        subscriptions,
        client,
        secret_key: SecretKey::new(config.secret_key.expose().as_bytes()),
        writer: Arc::new(writer),
        deliveries_topic: deliveries,
        delivery_serde: delivery,
        dead_letters_topic: dead_letters,
        dead_letter_serde: dead_letter,
        policy: DeliveryPolicy {
            schedule: RetrySchedule {
                delays: config.retry_schedule.clone(),
                jitter: config.retry_jitter,
                default_max_age: config.max_age,
            },
            concurrency: config.concurrency,
            max_in_flight: config.max_in_flight,
            timeout: config.timeout,
            destinations,
        },
        metrics: SenderMetrics::new(runtime.metrics.registry()).map_err(|e| error(&e))?,
        producer: producer_name(&runtime.component),
        kafka: config.kafka.clone(),
        application_id,
    };
    let stop = runtime.shutdown.token();
    runtime
        .shutdown
        .spawn("webhook executor", executor.run(stop));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[&str]) -> Config {
        let mut arguments = vec![
            "eddy-webhook-sender",
            "--secret-key",
            "0123456789abcdef0123456789abcdef",
        ];
        arguments.extend_from_slice(extra);
        Config::try_parse_from(arguments).expect("parses")
    }

    #[test]
    fn the_shutdown_grace_must_cover_a_call_under_way() {
        assert!(config(&[]).validate().is_ok(), "the defaults fit");
        let error = config(&["--timeout", "25s"])
            .validate()
            .expect_err("25 s calls do not fit in 30 s of grace");
        assert!(error.to_string().contains("EDDY_SHUTDOWN_GRACE"), "{error}");
        assert!(
            config(&["--timeout", "25s", "--shutdown-grace", "60s"])
                .validate()
                .is_ok()
        );
    }
}
