//! The __NAME__ service (made by `scripts/new-component`: a working sample to replace with your
//! own logic). It keeps the latest message of every conversation in a store built from the
//! messages topic ([`__STRUCT__Processor`]) and answers `POST /__NAME__.get` over HTTP
//! ([`api`]).
//!
//! Several instances share the partitions. The store is partitioned like its input (by
//! conversation id), so one instance holds a conversation's entry; any instance answers, and
//! one that does not hold it forwards the request to the one that does (one hop).
//!
//! One store, and every write is idempotent (it keeps the newest message it has seen), so a
//! record processed twice after a crash changes nothing: at-least-once is enough
//! (`EDDY_PROCESSING_GUARANTEE=exactly-once` if your logic needs it).

pub mod api;

use std::sync::Arc;

use clap::Parser;
use eddy_api::ApiArgs;
use eddy_schemas::catalog::MESSAGES;
use eddy_schemas::{AvroSerde, Catalog, CatalogArgs, Message, RegistryArgs};
use eddy_service::kafka::KafkaArgs;
use eddy_service::{ComponentConfig, ComponentInfo, Runtime, ServiceArgs, ServiceError};
use eddy_streams::service::{StreamsArgs, supervise};
use eddy_streams::{
    InputRecord, InputTopic, JsonSerde, Processor, ProcessorContext, ProcessorError,
    StoreDefinition, StreamsApp, StringSerde, Topology,
};
use serde::{Deserialize, Serialize};

use crate::api::Api;

pub const COMPONENT: ComponentInfo = ComponentInfo::new("__CRATE__", env!("CARGO_PKG_VERSION"));

/// The version of the state layout. A new version (`-v2`) is a new consumer group with new
/// stores and changelogs: it reprocesses the inputs from the start beside the old one (see
/// `docs/adding-a-component.md`).
const APPLICATION: &str = "__NAME__-v1";

#[derive(Debug, Parser)]
#[command(version, about = "The latest message of each conversation, over HTTP")]
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
    /// `[<topic namespace>.]__NAME__-v1`.
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
    pub fn application_id(&self) -> String {
        self.application_id
            .clone()
            .unwrap_or_else(|| self.catalog.application_id(APPLICATION))
    }

    /// Where other instances reach this one: `EDDY_ADVERTISED_ADDRESS`, else the API address
    /// (127.0.0.1 for an unspecified host: right on one machine; Kubernetes sets the pod's).
    pub fn advertised_address(&self) -> String {
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
    let error = |error: &dyn std::fmt::Display| error.to_string();
    let messages_topic = catalog.name(MESSAGES).unwrap_or(MESSAGES).to_owned();
    // Fails with "run `eddy topics provision`" when the schema is not registered yet.
    let message_serde = AvroSerde::<Message>::for_topic(&registry, &messages_topic)
        .await
        .map_err(|e| error(&e))?;

    let mut topology = Topology::new(config.application_id());
    let processor = __STRUCT__Processor {
        messages: topology.input(&messages_topic, StringSerde, message_serde),
        latest: topology.store("latest", StringSerde, JsonSerde::new()),
    };
    let latest = processor.latest.clone();
    topology.processor(move |_partition| processor.clone());
    let advertised_address = config.advertised_address();
    let mut streams_config = config
        .streams
        .config(config.kafka.clone())
        .for_component(&runtime);
    // Written to the membership topic: how other instances forward queries here.
    streams_config.advertised_address = Some(advertised_address);
    let app = StreamsApp::start(streams_config, topology)
        .await
        .map_err(|e| error(&e))?;
    let queries = app.queries();
    // `/ready` holds while the application is RUNNING; SIGTERM commits and closes it.
    supervise(app, &runtime);

    let api = Arc::new(Api {
        queries,
        latest,
        client: reqwest::Client::new(),
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

/// What the store keeps per conversation: its latest message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestMessage {
    pub id: String,
    pub sent_at: i64,
    pub from_contact: bool,
    /// Source-specific content as JSON text.
    pub content: String,
}

impl LatestMessage {
    pub fn of(message: &Message) -> Self {
        LatestMessage {
            id: message.id.clone(),
            sent_at: message.sent_at,
            from_contact: message.is_from_contact,
            content: message.content.clone(),
        }
    }

    /// Whether `message` replaces this one: it was sent later (ties by id), or it is this
    /// message again (updated).
    pub fn is_replaced_by(&self, message: &Message) -> bool {
        (message.sent_at, message.id.as_str()) >= (self.sent_at, self.id.as_str())
    }
}

/// The processor of one partition.
#[derive(Debug, Clone)]
pub struct __STRUCT__Processor {
    messages: InputTopic<String, Message>,
    /// Conversation id → its latest message.
    latest: StoreDefinition<String, LatestMessage>,
}

impl Processor for __STRUCT__Processor {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        // A record that does not decode goes to `<application id>.dlq`.
        let (_, message) = self.messages.decode(record)?;
        let Some(message) = message else {
            return Ok(()); // A tombstone.
        };
        let current = context.get(&self.latest, &message.conversation_id)?;
        if current.is_none_or(|latest| latest.is_replaced_by(&message)) {
            context.put(
                &self.latest,
                &message.conversation_id,
                &LatestMessage::of(&message),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use eddy_schemas::DeliveryState;

    use super::*;

    fn message(id: &str, sent_at: i64) -> Message {
        Message {
            id: id.to_owned(),
            conversation_id: "c-1".to_owned(),
            channel_id: "channel".to_owned(),
            source: "source".to_owned(),
            sender_id: "contact".to_owned(),
            source_recipient_id: None,
            source_message_id: None,
            is_from_contact: true,
            delivery_state: DeliveryState::Delivered,
            content: r#"{"text": "hi"}"#.to_owned(),
            sent_at,
            updated_at: None,
            source_conversation_id: None,
        }
    }

    #[test]
    fn a_later_message_or_the_same_one_updated_replaces_the_latest() {
        let latest = LatestMessage::of(&message("m-2", 2_000));
        assert!(latest.is_replaced_by(&message("m-3", 3_000)));
        assert!(latest.is_replaced_by(&message("m-2", 2_000)));
        assert!(!latest.is_replaced_by(&message("m-1", 1_000)));
        // Sent in the same millisecond: the greater id wins, on every instance alike.
        assert!(latest.is_replaced_by(&message("m-3", 2_000)));
        assert!(!latest.is_replaced_by(&message("m-1", 2_000)));
    }

    #[test]
    fn config_needs_a_system_token_of_16_characters() {
        let config = Config::try_parse_from(["__CRATE__", "--system-token", "0123456789abcdef"])
            .expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.application_id(), "__NAME__-v1");
        assert_eq!(config.advertised_address(), "127.0.0.1:8080");
        let short = Config::try_parse_from(["__CRATE__", "--system-token", "short"]).expect("parses");
        assert!(short.validate().is_err());
    }
}
