//! The __NAME__ connector (made by `scripts/new-component`: a working sample to replace with
//! your own logic). It sends every new message from a contact to an HTTP endpoint of yours
//! (`EDDY_NOTIFY_URL`) as a JSON POST; without one it only logs them.
//!
//! Input: the messages topic. The `notified` store remembers each message sent, so a message
//! written again (a delivery update) is not sent twice. A call that fails (no answer, or not
//! 2xx) fails the record: the streams runtime retries it with backoff
//! (`EDDY_PROCESSING_MAX_RETRIES`), then dead-letters it to `<application id>.dlq`
//! (`EDDY_PROCESSING_ERROR_POLICY`). While it retries, the partition waits: calls stay in order.
//!
//! At-least-once: the store is written after the endpoint accepted, so a crash in between sends
//! that message again after the restart, with the same `Idempotency-Key` header (the message
//! id) for the endpoint to drop the duplicate. Exactly-once cannot cover a call to the outside.

use std::time::Duration;

use clap::Parser;
use eddy_api::time::iso_millis;
use eddy_schemas::catalog::MESSAGES;
use eddy_schemas::{AvroSerde, Catalog, CatalogArgs, Message, RegistryArgs};
use eddy_service::config::parse_duration;
use eddy_service::kafka::KafkaArgs;
use eddy_service::{ComponentConfig, ComponentInfo, Runtime, ServiceArgs, ServiceError};
use eddy_streams::service::{StreamsArgs, supervise};
use eddy_streams::{
    InputRecord, InputTopic, JsonSerde, Processor, ProcessorContext, ProcessorError,
    StoreDefinition, StreamsApp, StringSerde, Topology,
};
use reqwest::Url;
use serde_json::{Value, json};

pub const COMPONENT: ComponentInfo = ComponentInfo::new("__CRATE__", env!("CARGO_PKG_VERSION"));

/// The version of the state layout. A new version (`-v2`) is a new consumer group with a new
/// store: it reads the inputs from the start again, so it would send every message again (see
/// `docs/adding-a-component.md`).
const APPLICATION: &str = "__NAME__-v1";

/// The header carrying the message id, the same on every attempt.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

#[derive(Debug, Parser)]
#[command(version, about = "Sends new contact messages to an HTTP endpoint")]
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
    /// Where new contact messages are POSTed (http or https); unset: they are only logged.
    #[arg(long, env = "EDDY_NOTIFY_URL", value_parser = parse_http_url)]
    pub notify_url: Option<Url>,
    /// Timeout of one call.
    #[arg(long, env = "EDDY_NOTIFY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub notify_timeout: Duration,
}

impl ComponentConfig for Config {
    fn service(&self) -> &ServiceArgs {
        &self.service
    }

    fn validate(&self) -> Result<(), ServiceError> {
        self.kafka.validate()?;
        // A call must end before shutdown gives up on the processing thread.
        if self.notify_timeout >= self.service.shutdown_grace {
            return Err(ServiceError::Config(format!(
                "EDDY_NOTIFY_TIMEOUT ({:?}) must be shorter than EDDY_SHUTDOWN_GRACE ({:?})",
                self.notify_timeout, self.service.shutdown_grace
            )));
        }
        Ok(())
    }
}

impl Config {
    pub fn application_id(&self) -> String {
        self.application_id
            .clone()
            .unwrap_or_else(|| self.catalog.application_id(APPLICATION))
    }
}

fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("{text:?} is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} is not an http or https URL"));
    }
    Ok(url)
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
    let target = match &config.notify_url {
        Some(url) => Some(Target {
            url: url.clone(),
            timeout: config.notify_timeout,
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| error(&e))?,
            // The processor runs on the streams runtime's own thread, not a Tokio one; it makes
            // its calls on this Tokio runtime.
            runtime: tokio::runtime::Handle::current(),
        }),
        None => {
            tracing::warn!("EDDY_NOTIFY_URL is not set: new contact messages are only logged");
            None
        }
    };

    let mut topology = Topology::new(config.application_id());
    let processor = __STRUCT__Processor {
        messages: topology.input(&messages_topic, StringSerde, message_serde),
        notified: topology.store("notified", StringSerde, JsonSerde::new()),
        target,
    };
    topology.processor(move |_partition| processor.clone());
    let streams_config = config
        .streams
        .config(config.kafka.clone())
        .for_component(&runtime);
    let app = StreamsApp::start(streams_config, topology)
        .await
        .map_err(|e| error(&e))?;
    // `/ready` holds while the application is RUNNING; SIGTERM commits and closes it.
    supervise(app, &runtime);
    Ok(())
}

/// Where and how notifications are sent.
#[derive(Debug, Clone)]
pub struct Target {
    url: Url,
    timeout: Duration,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

/// The processor of one partition.
#[derive(Debug, Clone)]
pub struct __STRUCT__Processor {
    messages: InputTopic<String, Message>,
    /// Message id → when it was sent (ms), for every message notified.
    notified: StoreDefinition<String, i64>,
    target: Option<Target>,
}

impl Processor for __STRUCT__Processor {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        // A record that does not decode goes to `<application id>.dlq`.
        let (_, message) = self.messages.decode(record)?;
        let Some(message) = message.filter(|message| message.is_from_contact) else {
            return Ok(()); // A tombstone, or a message to the contact.
        };
        if context.get(&self.notified, &message.id)?.is_some() {
            return Ok(());
        }
        self.notify(&message)?;
        context.put(&self.notified, &message.id, &message.sent_at)
    }
}

impl __STRUCT__Processor {
    fn notify(&self, message: &Message) -> Result<(), ProcessorError> {
        let Some(target) = &self.target else {
            tracing::info!(
                message_id = message.id,
                conversation_id = message.conversation_id,
                "new contact message"
            );
            return Ok(());
        };
        let body = notification(message);
        let answer = target.runtime.block_on(async {
            target
                .client
                .post(target.url.clone())
                .timeout(target.timeout)
                .header(IDEMPOTENCY_KEY_HEADER, &message.id)
                .json(&body)
                .send()
                .await
        });
        match answer {
            Ok(answer) if answer.status().is_success() => Ok(()),
            Ok(answer) => Err(ProcessorError::Failed(format!(
                "{} answered {} for message {}",
                target.url,
                answer.status(),
                message.id
            ))),
            Err(error) => Err(ProcessorError::Failed(format!(
                "calling {} for message {} failed: {error}",
                target.url, message.id
            ))),
        }
    }
}

/// The JSON body sent for `message`.
pub fn notification(message: &Message) -> Value {
    json!({
        "type": "message.created",
        "message": {
            "id": message.id,
            "conversation_id": message.conversation_id,
            "channel_id": message.channel_id,
            "sender_id": message.sender_id,
            "sent_at": iso_millis(message.sent_at),
            // Content is JSON text; anything else is passed on as a string.
            "content": serde_json::from_str::<Value>(&message.content)
                .unwrap_or_else(|_| Value::String(message.content.clone())),
        },
    })
}

#[cfg(test)]
mod tests {
    use eddy_schemas::DeliveryState;

    use super::*;

    #[test]
    fn the_notification_carries_the_message() {
        let message = Message {
            id: "m-1".to_owned(),
            conversation_id: "c-1".to_owned(),
            channel_id: "channel".to_owned(),
            source: "source".to_owned(),
            sender_id: "contact".to_owned(),
            source_recipient_id: None,
            source_message_id: None,
            is_from_contact: true,
            delivery_state: DeliveryState::Delivered,
            content: "plain text".to_owned(),
            sent_at: 1_700_000_000_000,
            updated_at: None,
            source_conversation_id: None,
        };
        assert_eq!(
            notification(&message),
            json!({
                "type": "message.created",
                "message": {
                    "id": "m-1",
                    "conversation_id": "c-1",
                    "channel_id": "channel",
                    "sender_id": "contact",
                    "sent_at": "2023-11-14T22:13:20.000Z",
                    "content": "plain text",
                },
            })
        );
    }

    #[test]
    fn config_takes_an_http_url_and_a_timeout_within_the_shutdown_grace() {
        let config = Config::try_parse_from(["__CRATE__"]).expect("defaults parse");
        config.validate().expect("valid without a URL");
        assert_eq!(config.application_id(), "__NAME__-v1");
        let config = Config::try_parse_from(["__CRATE__", "--notify-url", "https://x.test/hook"])
            .expect("parses");
        assert_eq!(
            config.notify_url.map(String::from).as_deref(),
            Some("https://x.test/hook")
        );
        assert!(Config::try_parse_from(["__CRATE__", "--notify-url", "ftp://x.test"]).is_err());
        assert!(Config::try_parse_from(["__CRATE__", "--notify-url", "not a url"]).is_err());
        let slow = Config::try_parse_from(["__CRATE__", "--notify-timeout", "1m"]).expect("parses");
        assert!(slow.validate().is_err());
    }
}
