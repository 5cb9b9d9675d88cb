//! The communication service: conversations and messages, built from the messages and
//! metadata topics in eddy-streams stores (see [`state`]), answered and changed over HTTP
//! (see [`api`]). Several instances share the partitions; each answers every query, forwarding
//! to the owner of a conversation or asking all instances for lists.

pub mod api;
pub mod state;
pub mod views;

use std::sync::Arc;

use clap::Parser;
use eddy_api::ApiArgs;
use eddy_schemas::catalog::{CHANNELS, MESSAGES, METADATA, READ_RECEIPTS, TAGS};
use eddy_schemas::writer::RecordWriter;
use eddy_schemas::{AvroSerde, Catalog, CatalogArgs, RegistryArgs};
use eddy_service::kafka::KafkaArgs;
use eddy_service::{ComponentConfig, ComponentInfo, Runtime, ServiceArgs, ServiceError};
use eddy_streams::service::{StreamsArgs, ready_when_caught_up, supervise};
use eddy_streams::{GlobalTable, StreamsApp, StringSerde, Topology};

use crate::api::{Api, Serdes, Topics};
use crate::state::ConversationBuilder;

pub const COMPONENT: ComponentInfo =
    ComponentInfo::new("eddy-communication", env!("CARGO_PKG_VERSION"));

/// The version of the state layout; a new one reprocesses beside the old (its own group,
/// stores and changelogs). v2: the `counts` store counts per list filter value too.
pub const APPLICATION: &str = "communication-v2";

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Conversations and messages over HTTP, built from Kafka"
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
    pub api: ApiArgs,
    #[command(flatten)]
    pub streams: StreamsArgs,
    /// Application id (consumer group, internal-topic prefix); default
    /// `[<topic namespace>.]communication-v2`.
    #[arg(long, env = "EDDY_APPLICATION_ID")]
    pub application_id: Option<String>,
}

impl ComponentConfig for Config {
    fn service(&self) -> &ServiceArgs {
        &self.service
    }

    fn validate(&self) -> Result<(), ServiceError> {
        self.kafka.validate()?;
        self.api.validate()
    }
}

impl Config {
    fn application_id(&self) -> String {
        self.application_id
            .clone()
            .unwrap_or_else(|| self.catalog.application_id(APPLICATION))
    }

    /// Where other instances reach this one: `EDDY_ADVERTISED_ADDRESS`, else the API address
    /// (with 127.0.0.1 for an unspecified host: right for one machine; Kubernetes sets the pod
    /// address).
    fn advertised_address(&self) -> String {
        self.streams.advertised_address.clone().unwrap_or_else(|| {
            let address = self.api.http_address;
            if address.ip().is_unspecified() {
                format!("127.0.0.1:{}", address.port())
            } else {
                address.to_string()
            }
        })
    }
}

pub async fn start(config: Config, runtime: Runtime) -> Result<(), String> {
    let registry = eddy_api::platform::connect(&runtime, &config.kafka, &config.registry).await?;
    let catalog = Catalog::new(&config.catalog);
    let name = |dataset: &str| catalog.name(dataset).unwrap_or(dataset).to_owned();
    let topics = Topics {
        messages: name(MESSAGES),
        metadata: name(METADATA),
        read_receipts: name(READ_RECEIPTS),
        channels: name(CHANNELS),
    };
    let tags_topic = name(TAGS);
    let error = |error: &dyn std::fmt::Display| error.to_string();
    let (message, metadata, read_receipt, channel, tag) = tokio::try_join!(
        AvroSerde::for_topic(&registry, &topics.messages),
        AvroSerde::for_topic(&registry, &topics.metadata),
        AvroSerde::for_topic(&registry, &topics.read_receipts),
        AvroSerde::for_topic(&registry, &topics.channels),
        AvroSerde::for_topic(&registry, &tags_topic),
    )
    .map_err(|e| error(&e))?;
    let serdes = Serdes {
        message,
        metadata,
        read_receipt,
        channel,
    };

    let mut topology = Topology::new(config.application_id());
    let (inputs, stores) = state::declare(
        &mut topology,
        &topics.messages,
        &topics.metadata,
        serdes.message.clone(),
        serdes.metadata.clone(),
    );
    topology.processor({
        let stores = stores.clone();
        move |_partition| ConversationBuilder {
            inputs: inputs.clone(),
            stores: stores.clone(),
        }
    });
    let advertised_address = config.advertised_address();
    let mut streams_config = config
        .streams
        .config_exactly_once_by_default(config.kafka.clone())
        .for_component(&runtime);
    streams_config.advertised_address = Some(advertised_address.clone());

    // The streams application, the global tables and the writer start side by side: a
    // restart is ready in well under a second.
    let channels = {
        let kafka = config.kafka.clone();
        let channels_topic = topics.channels.clone();
        let channel_serde = serdes.channel.clone();
        tokio::task::spawn_blocking(move || {
            GlobalTable::start(
                &kafka,
                COMPONENT.name,
                &channels_topic,
                StringSerde,
                channel_serde,
            )
        })
    };
    let tags = {
        let kafka = config.kafka.clone();
        tokio::task::spawn_blocking(move || {
            GlobalTable::start(&kafka, COMPONENT.name, &tags_topic, StringSerde, tag)
        })
    };
    let written_topics = [
        topics.messages.as_str(),
        topics.metadata.as_str(),
        topics.read_receipts.as_str(),
        topics.channels.as_str(),
    ];
    let (app, channels, tags, writer) = tokio::join!(
        StreamsApp::start(streams_config, topology),
        channels,
        tags,
        RecordWriter::new(&config.kafka, COMPONENT.name, &written_topics),
    );
    let app = app.map_err(|e| error(&e))?;
    let channels = channels.map_err(|e| error(&e))?.map_err(|e| error(&e))?;
    let tags = tags.map_err(|e| error(&e))?.map_err(|e| error(&e))?;
    let writer = writer.map_err(|e| error(&e))?;
    let queries = app.queries();
    supervise(app, &runtime);
    ready_when_caught_up(&runtime, "channels", &channels);
    ready_when_caught_up(&runtime, "tags", &tags);

    let api = Arc::new(Api {
        component: runtime.component,
        queries,
        stores,
        writer,
        channels,
        tags,
        topics,
        serdes,
        client: registry.http_client(),
        advertised_address,
        max_body_bytes: config.api.max_body_bytes,
    });
    eddy_api::serve(
        &runtime,
        config.api.http_address,
        api::router(api, &config.api.system_token),
    )
    .await
    .map_err(|e| error(&e))?;
    Ok(())
}
