//! The source-api connector, for any messaging channel ("source") that can call a webhook and
//! receive one: sources register with the system token, get a token to send their messages
//! to `/sources.webhook` ([`api`]), and receive the messages Eddy sends on their channels as
//! signed calls to their action endpoint ([`outbound`]).

pub mod api;
pub mod outbound;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use eddy_api::ApiArgs;
use eddy_schemas::catalog::{CHANNELS, MESSAGES, METADATA, SOURCES};
use eddy_schemas::writer::RecordWriter;
use eddy_schemas::{AvroSerde, Catalog, CatalogArgs, RegistryArgs};
use eddy_service::config::{Secret, parse_duration};
use eddy_service::kafka::KafkaArgs;
use eddy_service::{ComponentConfig, ComponentInfo, Runtime, ServiceArgs, ServiceError};
use eddy_streams::service::{StreamsArgs, ready_when_caught_up, supervise};
use eddy_streams::{GlobalTable, JsonSerde, StreamsApp, StringSerde, Topology};
use eddy_webhooks::SecretKey;

use crate::api::{Api, Serdes, Topics};
use crate::outbound::{CallPolicy, Dispatcher};

pub const COMPONENT: ComponentInfo =
    ComponentInfo::new("eddy-source-api", env!("CARGO_PKG_VERSION"));

/// What source signing secrets are derived for (see `eddy_webhooks::SecretKey::derive`).
pub const SOURCE_SECRET_PURPOSE: &str = "source-action";

const APPLICATION: &str = "source-api-v1";

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Bring-your-own-source connector: webhooks in, signed calls out"
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
    /// Application id of the outbound dispatcher; default `[<topic namespace>.]source-api-v1`.
    #[arg(long, env = "EDDY_APPLICATION_ID")]
    pub application_id: Option<String>,
    /// The installation's secret key; sources' signing secrets are derived from it (at least
    /// 32 characters; changing it changes every source's secret).
    #[arg(long, env = "EDDY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Secret,
    /// Attempts per outbound call before the message is FAILED.
    #[arg(long, env = "EDDY_ACTION_MAX_ATTEMPTS", default_value_t = 5)]
    pub action_max_attempts: u32,
    /// Wait before the second attempt; doubles after each.
    #[arg(long, env = "EDDY_ACTION_RETRY_BACKOFF", default_value = "500ms", value_parser = parse_duration)]
    pub action_retry_backoff: Duration,
    /// Timeout of one outbound call.
    #[arg(long, env = "EDDY_ACTION_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub action_timeout: Duration,
    /// Most messages plus metadata items in one `/sources.webhook` batch.
    #[arg(long, env = "EDDY_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,
}

impl ComponentConfig for Config {
    fn service(&self) -> &ServiceArgs {
        &self.service
    }

    fn validate(&self) -> Result<(), ServiceError> {
        self.kafka.validate()?;
        self.api.validate()?;
        if self.secret_key.expose().len() < 32 {
            return Err(ServiceError::Config(
                "EDDY_SECRET_KEY must be at least 32 characters".to_owned(),
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
    let topics = Topics {
        sources: name(SOURCES),
        channels: name(CHANNELS),
        messages: name(MESSAGES),
        metadata: name(METADATA),
    };
    let serdes = Serdes {
        source: AvroSerde::for_topic(&registry, &topics.sources)
            .await
            .map_err(|e| error(&e))?,
        channel: AvroSerde::for_topic(&registry, &topics.channels)
            .await
            .map_err(|e| error(&e))?,
        message: AvroSerde::for_topic(&registry, &topics.messages)
            .await
            .map_err(|e| error(&e))?,
        metadata: AvroSerde::for_topic(&registry, &topics.metadata)
            .await
            .map_err(|e| error(&e))?,
    };
    let sources = GlobalTable::start(
        &config.kafka,
        COMPONENT.name,
        &topics.sources,
        StringSerde,
        serdes.source.clone(),
    )
    .map_err(|e| error(&e))?;
    let channels = GlobalTable::start(
        &config.kafka,
        COMPONENT.name,
        &topics.channels,
        StringSerde,
        serdes.channel.clone(),
    )
    .map_err(|e| error(&e))?;
    ready_when_caught_up(&runtime, "sources", &sources);
    ready_when_caught_up(&runtime, "channels", &channels);
    let secret_key = SecretKey::new(config.secret_key.expose().as_bytes());

    let application_id = config
        .application_id
        .clone()
        .unwrap_or_else(|| config.catalog.application_id(APPLICATION));
    let mut topology = Topology::new(application_id);
    let dispatcher = Dispatcher {
        messages: topology.input(&topics.messages, StringSerde, serdes.message.clone()),
        deliveries: topology.store("deliveries", StringSerde, JsonSerde::new()),
        message_output: topology.output(&topics.messages, StringSerde, serdes.message.clone()),
        metadata_output: topology.output(&topics.metadata, StringSerde, serdes.metadata.clone()),
        sources: sources.clone(),
        channels: channels.clone(),
        secret_key: secret_key.clone(),
        client: eddy_service::http::client_builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| error(&e))?,
        runtime: tokio::runtime::Handle::current(),
        policy: CallPolicy {
            max_attempts: config.action_max_attempts,
            first_backoff: config.action_retry_backoff,
            timeout: config.action_timeout,
        },
    };
    topology.processor(move |_partition| dispatcher.clone());
    // Outbound calls need the sources: the dispatcher starts once they are loaded.
    let mut loaded = sources.caught_up_changes();
    if loaded.wait_for(|loaded| *loaded).await.is_err() {
        return Err("the sources table stopped before it loaded".to_owned());
    }
    let streams_config = config
        .streams
        .config(config.kafka.clone())
        .for_component(&runtime);
    let app = StreamsApp::start(streams_config, topology)
        .await
        .map_err(|e| error(&e))?;
    supervise(app, &runtime);

    let writer = RecordWriter::new(
        &config.kafka,
        COMPONENT.name,
        &[
            &topics.sources,
            &topics.channels,
            &topics.messages,
            &topics.metadata,
        ],
    )
    .await
    .map_err(|e| error(&e))?;
    let api = Arc::new(Api {
        component: runtime.component,
        sources,
        channels,
        writer,
        topics,
        serdes,
        secret_key,
        max_body_bytes: config.api.max_body_bytes,
        max_batch: config.max_batch,
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
