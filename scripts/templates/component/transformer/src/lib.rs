//! The __NAME__ transformer (made by `scripts/new-component`: a working sample to replace with
//! your own logic). It counts the messages of each conversation and publishes the count as the
//! conversation's `__NAME__.message_count` metadata.
//!
//! Input: the messages topic. Messages are placed by conversation id, so all of a conversation's
//! messages meet in one task (one partition). A message counts once, however often it is
//! written again (a delivery update rewrites it under the same id): the `seen` store remembers
//! it. The metadata record goes to the same partition of the metadata topic (see "Placement" in
//! `docs/topics.md`), where the communication service folds it into the conversation.
//!
//! Two stores that must agree after a crash (`seen` and `counts`), so the application runs
//! exactly-once by default (`EDDY_PROCESSING_GUARANTEE` overrides it).

use clap::Parser;
use eddy_schemas::catalog::{MESSAGES, METADATA};
use eddy_schemas::metadata::Subject;
use eddy_schemas::{
    AvroSerde, Catalog, CatalogArgs, Message, Metadata, RegistryArgs, ValueType, ids,
};
use eddy_service::kafka::KafkaArgs;
use eddy_service::{ComponentConfig, ComponentInfo, Runtime, ServiceArgs, ServiceError};
use eddy_streams::service::{StreamsArgs, supervise};
use eddy_streams::{
    InputRecord, InputTopic, JsonSerde, OutputTopic, Processor, ProcessorContext, ProcessorError,
    StoreDefinition, StreamsApp, StringSerde, Topology,
};

pub const COMPONENT: ComponentInfo = ComponentInfo::new("__CRATE__", env!("CARGO_PKG_VERSION"));

/// The version of the state layout and of what the output means. A new version (`-v2`) is a new
/// consumer group with new stores and changelogs: it reprocesses the inputs from the start
/// beside the old one (see `docs/adding-a-component.md`).
const APPLICATION: &str = "__NAME__-v1";

/// The metadata key written on each conversation.
pub const MESSAGE_COUNT: &str = "__NAME__.message_count";

#[derive(Debug, Parser)]
#[command(version, about = "Counts the messages of each conversation")]
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
        self.kafka.validate()
    }
}

impl Config {
    pub fn application_id(&self) -> String {
        self.application_id
            .clone()
            .unwrap_or_else(|| self.catalog.application_id(APPLICATION))
    }
}

pub async fn start(config: Config, runtime: Runtime) -> Result<(), String> {
    let registry = eddy_api::platform::connect(&runtime, &config.kafka, &config.registry).await?;
    let catalog = Catalog::new(&config.catalog);
    let name = |dataset: &str| catalog.name(dataset).unwrap_or(dataset).to_owned();
    let error = |error: &dyn std::fmt::Display| error.to_string();
    let messages_topic = name(MESSAGES);
    let metadata_topic = name(METADATA);
    // Fails with "run `eddy topics provision`" when the schemas are not registered yet.
    let message_serde = AvroSerde::<Message>::for_topic(&registry, &messages_topic)
        .await
        .map_err(|e| error(&e))?;
    let metadata_serde = AvroSerde::<Metadata>::for_topic(&registry, &metadata_topic)
        .await
        .map_err(|e| error(&e))?;

    let mut topology = Topology::new(config.application_id());
    let processor = __STRUCT__Processor {
        messages: topology.input(&messages_topic, StringSerde, message_serde),
        seen: topology.store("seen", StringSerde, JsonSerde::new()),
        counts: topology.store("counts", StringSerde, JsonSerde::new()),
        metadata: topology.output(&metadata_topic, StringSerde, metadata_serde),
    };
    topology.processor(move |_partition| processor.clone());
    let streams_config = config
        .streams
        .config_exactly_once_by_default(config.kafka.clone())
        .for_component(&runtime);
    let app = StreamsApp::start(streams_config, topology)
        .await
        .map_err(|e| error(&e))?;
    // `/ready` holds while the application is RUNNING; SIGTERM commits and closes it.
    supervise(app, &runtime);
    Ok(())
}

/// The processor of one partition.
#[derive(Debug, Clone)]
pub struct __STRUCT__Processor {
    messages: InputTopic<String, Message>,
    /// `<conversation id>/<message id>` of every message counted, with its `sent_at`.
    seen: StoreDefinition<String, i64>,
    /// Messages per conversation id.
    counts: StoreDefinition<String, u64>,
    metadata: OutputTopic<String, Metadata>,
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
            return Ok(()); // A tombstone: nothing to count.
        };
        let seen_key = format!("{}/{}", message.conversation_id, message.id);
        if context.get(&self.seen, &seen_key)?.is_some() {
            return Ok(());
        }
        context.put(&self.seen, &seen_key, &message.sent_at)?;
        let count = context
            .get(&self.counts, &message.conversation_id)?
            .unwrap_or_default()
            + 1;
        context.put(&self.counts, &message.conversation_id, &count)?;
        let (key, metadata) = message_count_metadata(
            &message.conversation_id,
            count,
            context.input_envelope().event_time,
        );
        // On this partition: the conversation's partition of the metadata topic.
        let partition = context.partition();
        context.emit_to_partition(&self.metadata, partition, &key, Some(&metadata))
    }
}

/// The metadata record saying that the conversation has `count` messages, and its key.
pub fn message_count_metadata(
    conversation_id: &str,
    count: u64,
    timestamp: i64,
) -> (String, Metadata) {
    let subject = Subject::Conversation(conversation_id.to_owned()).to_string();
    let key = ids::metadata_id(&subject, MESSAGE_COUNT);
    let metadata = Metadata {
        subject,
        key: MESSAGE_COUNT.to_owned(),
        value: count.to_string(),
        value_type: ValueType::Number,
        timestamp,
    };
    (key, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_a_number_fact_about_the_conversation() {
        let (key, metadata) = message_count_metadata("c-1", 3, 1_700_000_000_000);
        assert_eq!(metadata.subject, "conversation:c-1");
        assert_eq!(metadata.key, MESSAGE_COUNT);
        assert_eq!(metadata.value, "3");
        assert_eq!(metadata.value_type, ValueType::Number);
        assert_eq!(metadata.timestamp, 1_700_000_000_000);
        // One record per (conversation, key): a newer count replaces the older under compaction.
        assert_eq!(key, message_count_metadata("c-1", 4, 0).0);
        assert_ne!(key, message_count_metadata("c-2", 3, 0).0);
    }

    #[test]
    fn config_defaults_and_the_namespaced_application_id() {
        let config = Config::try_parse_from(["__CRATE__"]).expect("defaults parse");
        config.validate().expect("defaults are valid");
        assert_eq!(config.application_id(), "__NAME__-v1");
        let config = Config::try_parse_from(["__CRATE__", "--topic-namespace", "staging"])
            .expect("parses");
        assert_eq!(config.application_id(), "staging.__NAME__-v1");
        assert!(Config::try_parse_from(["__CRATE__", "--topic-namespace", ".bad"]).is_err());
    }
}
