//! The communication service's core topology on eddy-streams, exactly as the Kafka Streams
//! reference (`benches/kafka-streams`) builds it, for the platform benchmark's side-by-side: the
//! messages topic → one changelogged store of per-conversation aggregates (channel, first sent
//! time, message count, last message), answered by key over HTTP (`GET /conversations/{id}`,
//! local partitions only). The real service (`eddy-communication`) keeps six more stores and
//! reads the metadata topic too; this binary isolates what the two engines do for the same work.
//!
//! Like the reference: a tombstone is skipped, a message seen twice counts twice, the last
//! message is the one with the greatest `sent_at` (ties: the greatest id), and it runs
//! exactly-once with a 100 ms commit interval by default.

use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use eddy_schemas::{AvroSerde, Message, RegistryArgs};
use eddy_service::kafka::KafkaArgs;
use eddy_service::{ComponentConfig, ComponentInfo, Runtime, ServiceArgs, ServiceError};
use eddy_streams::service::{StreamsArgs, supervise};
use eddy_streams::{
    InputRecord, InputTopic, JsonSerde, Processor, ProcessorContext, ProcessorError, Queries,
    StoreDefinition, StreamsApp, StringSerde, Topology,
};
use serde::{Deserialize, Serialize};

const COMPONENT: ComponentInfo =
    ComponentInfo::new("eddy-communication-core", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The communication core topology on eddy-streams (benchmark)"
)]
struct Config {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Where `GET /conversations/{id}` is answered.
    #[arg(long, env = "EDDY_HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    http_address: std::net::SocketAddr,
    #[command(flatten)]
    streams: StreamsArgs,
    /// Application id (consumer group, changelog prefix).
    #[arg(long, env = "EDDY_APPLICATION_ID")]
    application_id: String,
    /// The messages topic to aggregate.
    #[arg(long, env = "EDDY_INPUT_TOPIC")]
    input_topic: String,
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

/// The reference's aggregate, field for field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ConversationAggregate {
    conversation_id: String,
    channel_id: String,
    created_at: i64,
    message_count: u64,
    last_message: Option<LastMessage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LastMessage {
    id: String,
    sender_id: String,
    is_from_contact: bool,
    content: String,
    sent_at: i64,
}

async fn start(config: Config, runtime: Runtime) -> Result<(), String> {
    let registry = eddy_api::platform::connect(&runtime, &config.kafka, &config.registry).await?;
    let serde = AvroSerde::<Message>::for_topic(&registry, &config.input_topic)
        .await
        .map_err(|error| error.to_string())?;
    let mut topology = Topology::new(&config.application_id);
    let input = topology.input(&config.input_topic, StringSerde, serde);
    let conversations = topology.store("conversations", StringSerde, JsonSerde::new());
    topology.processor({
        let conversations = conversations.clone();
        move |_partition| Aggregation {
            input: input.clone(),
            conversations: conversations.clone(),
        }
    });
    let streams_config = config
        .streams
        .config_exactly_once_by_default(config.kafka.clone())
        .for_component(&runtime);
    let app = StreamsApp::start(streams_config, topology)
        .await
        .map_err(|error| error.to_string())?;
    let lookup = Arc::new(Lookup {
        queries: app.queries(),
        conversations,
    });
    supervise(app, &runtime);
    let router = Router::new()
        .route("/conversations/{id}", get(conversation))
        .with_state(lookup);
    eddy_api::serve(&runtime, config.http_address, router)
        .await
        .map_err(|error| error.to_string())?;
    Ok(())
}

struct Aggregation {
    input: InputTopic<String, Message>,
    conversations: StoreDefinition<String, ConversationAggregate>,
}

impl Processor for Aggregation {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        let (_, message) = self.input.decode(record)?;
        let Some(message) = message else {
            return Ok(());
        };
        let mut aggregate = context
            .get(&self.conversations, &message.conversation_id)?
            .unwrap_or_else(|| ConversationAggregate {
                conversation_id: message.conversation_id.clone(),
                channel_id: message.channel_id.clone(),
                created_at: message.sent_at,
                ..ConversationAggregate::default()
            });
        aggregate.message_count += 1;
        aggregate.created_at = aggregate.created_at.min(message.sent_at);
        let is_last = aggregate.last_message.as_ref().is_none_or(|last| {
            (message.sent_at, message.id.as_str()) >= (last.sent_at, last.id.as_str())
        });
        if is_last {
            aggregate.last_message = Some(LastMessage {
                id: message.id,
                sender_id: message.sender_id,
                is_from_contact: message.is_from_contact,
                content: message.content,
                sent_at: message.sent_at,
            });
        }
        context.put(&self.conversations, &message.conversation_id, &aggregate)
    }
}

struct Lookup {
    queries: Queries,
    conversations: StoreDefinition<String, ConversationAggregate>,
}

async fn conversation(State(lookup): State<Arc<Lookup>>, Path(id): Path<String>) -> Response {
    match lookup.queries.get(&lookup.conversations, &id) {
        Ok(Some(aggregate)) => axum::Json(aggregate).into_response(),
        Ok(None) => axum::http::StatusCode::NOT_FOUND.into_response(),
        Err(error) => error.into_response(),
    }
}
