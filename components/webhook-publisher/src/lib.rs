//! The webhook-publisher transformer: turns every change of messages, conversations (their
//! metadata), channels and tags into webhook events, one per matching subscription, on the
//! events topic, where the webhook-sender delivers them (see `docs/webhooks.md`).
//!
//! Inputs: messages and metadata (partitioned by conversation id), channels and tags (by their
//! id); the subscriptions are a global table. A subscription matches a change when it is
//! subscribed, asks for the event type (or for all), and existed when the change was written.
//! Each event's id is derived from the subscription, the type, the record and its version (its
//! Kafka timestamp), so reprocessing after a crash writes the same ids again and the sender
//! drops them. Events go to the partition of `<subscription id>/<ordering key>`: one
//! conversation's events for one subscription stay in order.

pub mod events;

use std::sync::Arc;

use clap::Parser;
use eddy_schemas::catalog::{
    CHANNELS, MESSAGES, METADATA, TAGS, WEBHOOK_EVENTS, WEBHOOK_SUBSCRIPTIONS,
};
use eddy_schemas::writer::RecordWriter;
use eddy_schemas::{AvroSerde, Catalog, CatalogArgs, RegistryArgs};
use eddy_service::kafka::KafkaArgs;
use eddy_service::{ComponentConfig, ComponentInfo, Runtime, ServiceArgs, ServiceError};
use eddy_streams::service::{StreamsArgs, ready_when_caught_up, supervise};
use eddy_streams::{GlobalTable, JsonSerde, StreamsApp, StringSerde, Topology};

use crate::events::{Inputs, Publisher};

pub const COMPONENT: ComponentInfo =
    ComponentInfo::new("eddy-webhook-publisher", env!("CARGO_PKG_VERSION"));

const APPLICATION: &str = "webhook-publisher-v1";

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Turns changes into webhook events, one per matching subscription"
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
    /// Application id; default `[<topic namespace>.]webhook-publisher-v1`.
    #[arg(long, env = "EDDY_APPLICATION_ID")]
    pub application_id: Option<String>,
}

impl ComponentConfig for Config {
    fn service(&self) -> &ServiceArgs {
        &self.service
    }

    fn validate(&self) -> Result<(), ServiceError> {
        self.kafka.validate()
    }
}

pub async fn start(config: Config, runtime: Runtime) -> Result<(), String> {
    let registry = eddy_api::platform::connect(&runtime, &config.kafka, &config.registry).await?;
    let catalog = Catalog::new(&config.catalog);
    let name = |dataset: &str| catalog.name(dataset).unwrap_or(dataset).to_owned();
    let error = |error: &dyn std::fmt::Display| error.to_string();
    let (messages, metadata, channels, tags, subscriptions, events) = (
        name(MESSAGES),
        name(METADATA),
        name(CHANNELS),
        name(TAGS),
        name(WEBHOOK_SUBSCRIPTIONS),
        name(WEBHOOK_EVENTS),
    );
    let (message, meta, channel, tag, subscription, event) = tokio::try_join!(
        AvroSerde::for_topic(&registry, &messages),
        AvroSerde::for_topic(&registry, &metadata),
        AvroSerde::for_topic(&registry, &channels),
        AvroSerde::for_topic(&registry, &tags),
        AvroSerde::for_topic(&registry, &subscriptions),
        AvroSerde::for_topic(&registry, &events),
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
    // Only for the events topic's partition count: events are placed by subscription and
    // ordering key, not by their own key.
    let placement = RecordWriter::new(&config.kafka, COMPONENT.name, &[&events])
        .await
        .map_err(|e| error(&e))?;

    let application_id = config
        .application_id
        .clone()
        .unwrap_or_else(|| config.catalog.application_id(APPLICATION));
    let mut topology = Topology::new(application_id);
    let publisher = Publisher {
        inputs: Inputs {
            messages: topology.input(&messages, StringSerde, message),
            metadata: topology.input(&metadata, StringSerde, meta),
            channels: topology.input(&channels, StringSerde, channel),
            tags: topology.input(&tags, StringSerde, tag),
        },
        metadata_subjects: topology.store("metadata-subjects", StringSerde, JsonSerde::new()),
        events: topology.output(&events, StringSerde, event),
        events_topic: events.clone(),
        placement: Arc::new(placement),
        subscriptions: subscriptions.clone(),
    };
    topology.processor(move |_partition| publisher.clone());
    // Events are matched against the subscriptions: none may be missed at start.
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
    supervise(app, &runtime);
    Ok(())
}
