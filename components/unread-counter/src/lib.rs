//! The unread-counter transformer: counts a conversation's contact messages since its last read
//! receipt and publishes the count as the conversation's `unread_count` metadata.
//!
//! Inputs: messages (partitioned by conversation id) and read receipts (keyed by conversation
//! id), so both meet in the conversation's task. A contact message counts once, however often
//! it is re-ingested (the `counted` store remembers it), and only if it was sent after the last
//! read receipt. A read receipt resets the count. The output metadata record goes to the same
//! partition of the metadata topic, where the communication service's task for the
//! conversation reads it.

use clap::Parser;
use eddy_schemas::catalog::{MESSAGES, METADATA, READ_RECEIPTS};
use eddy_schemas::metadata::{Subject, UNREAD_COUNT};
use eddy_schemas::{
    AvroSerde, Catalog, CatalogArgs, Message, Metadata, ReadReceipt, RegistryArgs, ValueType, ids,
};
use eddy_service::kafka::KafkaArgs;
use eddy_service::{ComponentConfig, ComponentInfo, Runtime, ServiceArgs, ServiceError};
use eddy_streams::service::{StreamsArgs, supervise};
use eddy_streams::{
    InputRecord, InputTopic, JsonSerde, OutputTopic, Processor, ProcessorContext, ProcessorError,
    StoreDefinition, StreamsApp, StringSerde, Topology,
};
use serde::{Deserialize, Serialize};

pub const COMPONENT: ComponentInfo =
    ComponentInfo::new("eddy-unread-counter", env!("CARGO_PKG_VERSION"));

pub const APPLICATION: &str = "unread-counter-v1";

#[derive(Debug, Parser)]
#[command(version, about = "Counts unread contact messages per conversation")]
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
    /// Application id; default `[<topic namespace>.]unread-counter-v1`.
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

/// A conversation's unread state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unread {
    pub count: u64,
    /// The last read receipt's time (ms); contact messages sent before it are read.
    pub read_at: i64,
}

pub async fn start(config: Config, runtime: Runtime) -> Result<(), String> {
    let registry = eddy_api::platform::connect(&runtime, &config.kafka, &config.registry).await?;
    let catalog = Catalog::new(&config.catalog);
    let name = |dataset: &str| catalog.name(dataset).unwrap_or(dataset).to_owned();
    let error = |error: &dyn std::fmt::Display| error.to_string();
    let messages_topic = name(MESSAGES);
    let receipts_topic = name(READ_RECEIPTS);
    let metadata_topic = name(METADATA);
    let message_serde = AvroSerde::<Message>::for_topic(&registry, &messages_topic)
        .await
        .map_err(|e| error(&e))?;
    let receipt_serde = AvroSerde::<ReadReceipt>::for_topic(&registry, &receipts_topic)
        .await
        .map_err(|e| error(&e))?;
    let metadata_serde = AvroSerde::<Metadata>::for_topic(&registry, &metadata_topic)
        .await
        .map_err(|e| error(&e))?;

    let application_id = config
        .application_id
        .clone()
        .unwrap_or_else(|| config.catalog.application_id(APPLICATION));
    let mut topology = Topology::new(application_id);
    let counter = UnreadCounter {
        messages: topology.input(&messages_topic, StringSerde, message_serde),
        receipts: topology.input(&receipts_topic, StringSerde, receipt_serde),
        unread: topology.store("unread", StringSerde, JsonSerde::new()),
        counted: topology.store("counted", StringSerde, JsonSerde::new()),
        metadata: topology.output(&metadata_topic, StringSerde, metadata_serde),
    };
    topology.processor(move |_partition| counter.clone());
    let streams_config = config
        .streams
        .config_exactly_once_by_default(config.kafka.clone())
        .for_component(&runtime);
    let app = StreamsApp::start(streams_config, topology)
        .await
        .map_err(|e| error(&e))?;
    supervise(app, &runtime);
    Ok(())
}

/// The processor of one partition.
#[derive(Debug, Clone)]
pub struct UnreadCounter {
    messages: InputTopic<String, Message>,
    receipts: InputTopic<String, ReadReceipt>,
    unread: StoreDefinition<String, Unread>,
    /// `<conversation id>/<message id>` of every contact message counted.
    counted: StoreDefinition<String, i64>,
    metadata: OutputTopic<String, Metadata>,
}

impl Processor for UnreadCounter {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        if self.messages.matches(record) {
            let (_, message) = self.messages.decode(record)?;
            let Some(message) = message.filter(|message| message.is_from_contact) else {
                return Ok(());
            };
            let counted_key = format!("{}/{}", message.conversation_id, message.id);
            if context.get(&self.counted, &counted_key)?.is_some() {
                return Ok(());
            }
            context.put(&self.counted, &counted_key, &message.sent_at)?;
            let mut unread = context
                .get(&self.unread, &message.conversation_id)?
                .unwrap_or_default();
            if message.sent_at <= unread.read_at {
                return Ok(());
            }
            unread.count += 1;
            context.put(&self.unread, &message.conversation_id, &unread)?;
            self.publish(context, &message.conversation_id, unread.count)
        } else if self.receipts.matches(record) {
            let (conversation_id, receipt) = self.receipts.decode(record)?;
            let Some(receipt) = receipt else {
                return Ok(());
            };
            let before = context
                .get(&self.unread, &conversation_id)?
                .unwrap_or_default();
            let after = Unread {
                count: 0,
                read_at: before.read_at.max(receipt.read_at),
            };
            if after != before {
                context.put(&self.unread, &conversation_id, &after)?;
            }
            if before.count != 0 {
                self.publish(context, &conversation_id, 0)?;
            }
            Ok(())
        } else {
            Ok(())
        }
    }
}

impl UnreadCounter {
    /// Writes `unread_count` of the conversation, on its partition of the metadata topic.
    fn publish(
        &self,
        context: &mut ProcessorContext<'_>,
        conversation_id: &str,
        count: u64,
    ) -> Result<(), ProcessorError> {
        let subject = Subject::Conversation(conversation_id.to_owned()).to_string();
        let record = Metadata {
            key: UNREAD_COUNT.to_owned(),
            value: count.to_string(),
            value_type: ValueType::Number,
            timestamp: context.input_envelope().event_time,
            subject: subject.clone(),
        };
        let partition = context.partition();
        context.emit_to_partition(
            &self.metadata,
            partition,
            &ids::metadata_id(&subject, UNREAD_COUNT),
            Some(&record),
        )
    }
}
