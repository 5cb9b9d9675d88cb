//! Outbound: PENDING messages of this connector's sources are POSTed to the source's
//! `action_endpoint`, signed per Standard Webhooks with the source's signing secret, then
//! recorded DELIVERED (with the source's message id) or FAILED (with the error as message
//! metadata). Network errors and 5xx answers are retried with doubling backoff; other answers
//! fail at once.
//!
//! Never twice: the processor records each handled (message, version) in its `deliveries`
//! store, whose changelog is flushed before the input offset is committed, so a restart or a
//! rebalance replays the message into a store that already knows it was sent. The one window
//! left is a crash after the endpoint accepted and before that flush; the stable `webhook-id`
//! (`<message id>.<version>`) lets the endpoint drop that duplicate. A resend (FAILED, then
//! PENDING again with a newer `updated_at`) is a new version and is sent.

use std::time::Duration;

use eddy_api::time::iso_millis;
use eddy_schemas::metadata::{ERROR, Subject};
use eddy_schemas::{Channel, DeliveryState, Message, Metadata, Source, ValueType, ids};
use eddy_service::envelope::now_millis;
use eddy_streams::{
    GlobalTable, InputRecord, InputTopic, OutputTopic, Processor, ProcessorContext, ProcessorError,
    StoreDefinition,
};
use eddy_webhooks::{ID_HEADER, SIGNATURE_HEADER, SecretKey, TIMESTAMP_HEADER, signature_header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How calls to action endpoints are made.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub timeout: Duration,
}

/// What the processor remembers of a message it handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handled {
    /// `updated_at` (or `sent_at`) of the version handled.
    pub version: i64,
    pub delivered: bool,
}

/// The dispatcher of one partition.
#[derive(Clone)]
pub struct Dispatcher {
    pub messages: InputTopic<String, Message>,
    pub deliveries: StoreDefinition<String, Handled>,
    pub message_output: OutputTopic<String, Message>,
    pub metadata_output: OutputTopic<String, Metadata>,
    pub sources: GlobalTable<String, Source>,
    pub channels: GlobalTable<String, Channel>,
    pub secret_key: SecretKey,
    pub client: reqwest::Client,
    pub runtime: tokio::runtime::Handle,
    pub policy: CallPolicy,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

/// The outcome of delivering one message.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered { source_message_id: Option<String> },
    Failed { error: String },
}

impl Processor for Dispatcher {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        let (_, message) = self.messages.decode(record)?;
        let Some(message) = message else {
            return Ok(());
        };
        if message.is_from_contact || message.delivery_state != DeliveryState::Pending {
            return Ok(());
        }
        let Some(source) = self.sources.get(&message.source) else {
            return Ok(()); // Another connector's message.
        };
        let version = message.updated_at.unwrap_or(message.sent_at);
        if context
            .get(&self.deliveries, &message.id)?
            .is_some_and(|handled| handled.version >= version)
        {
            return Ok(());
        }
        let outcome = self.deliver(&source, &message, version);
        let now = now_millis();
        let partition = context.partition();
        let (state, source_message_id, error) = match &outcome {
            Outcome::Delivered { source_message_id } => {
                (DeliveryState::Delivered, source_message_id.clone(), None)
            }
            Outcome::Failed { error } => (DeliveryState::Failed, None, Some(error.clone())),
        };
        let updated = Message {
            delivery_state: state,
            source_message_id: source_message_id.or(message.source_message_id.clone()),
            updated_at: Some(now.max(version + 1)),
            ..message.clone()
        };
        context.emit_to_partition(&self.message_output, partition, &message.id, Some(&updated))?;
        if let Some(error) = error {
            tracing::warn!(
                message_id = message.id,
                source = source.id,
                error,
                "message delivery failed"
            );
            let subject = Subject::Message(message.id.clone()).to_string();
            let record = Metadata {
                subject: subject.clone(),
                key: ERROR.to_owned(),
                value: error,
                value_type: ValueType::Text,
                timestamp: now,
            };
            context.emit_to_partition(
                &self.metadata_output,
                partition,
                &ids::metadata_id(&subject, ERROR),
                Some(&record),
            )?;
        }
        context.put(
            &self.deliveries,
            &message.id,
            &Handled {
                version,
                delivered: matches!(outcome, Outcome::Delivered { .. }),
            },
        )
    }
}

impl Dispatcher {
    fn deliver(&self, source: &Source, message: &Message, version: i64) -> Outcome {
        let Some(endpoint) = source.action_endpoint.as_deref() else {
            return Outcome::Failed {
                error: format!(
                    "source {} has no action_endpoint to send messages to",
                    source.id
                ),
            };
        };
        let Some(secret_ref) = source.signing_secret_ref.as_deref() else {
            return Outcome::Failed {
                error: format!("source {} has no signing secret", source.id),
            };
        };
        let secret = match self
            .secret_key
            .derive(crate::SOURCE_SECRET_PURPOSE, secret_ref)
        {
            Ok(secret) => secret,
            Err(error) => {
                return Outcome::Failed {
                    error: error.to_string(),
                };
            }
        };
        let channel = self.channels.get(&message.channel_id);
        let body = json!({
            "type": "message.send",
            "payload": {
                "message": {
                    "id": message.id,
                    "source_recipient_id": message.source_recipient_id,
                    "content": serde_json::from_str::<Value>(&message.content)
                        .unwrap_or_else(|_| Value::String(message.content.clone())),
                    "sent_at": iso_millis(message.sent_at),
                },
                "conversation": {
                    "id": message.conversation_id,
                    "channel_id": message.channel_id,
                    "source_channel_id": channel.map(|channel| channel.source_channel_id),
                    "source_conversation_id": message.source_conversation_id,
                },
            },
        })
        .to_string();
        let webhook_id = format!("{}.{version}", message.id);
        let mut backoff = self.policy.first_backoff;
        let mut last_error = String::new();
        for attempt in 1..=self.policy.max_attempts.max(1) {
            let timestamp = now_millis() / 1000;
            let signature = signature_header(
                std::slice::from_ref(&secret),
                &webhook_id,
                timestamp,
                body.as_bytes(),
            );
            let answer = self.runtime.block_on(async {
                // Built inside the runtime: the timeout needs its timer.
                let response = self
                    .client
                    .post(endpoint)
                    .timeout(self.policy.timeout)
                    .header("content-type", "application/json")
                    .header(ID_HEADER, &webhook_id)
                    .header(TIMESTAMP_HEADER, timestamp.to_string())
                    .header(SIGNATURE_HEADER, signature)
                    .body(body.clone())
                    .send()
                    .await?;
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                Ok::<_, reqwest::Error>((status, text))
            });
            match answer {
                Ok((status, text)) if status.is_success() => {
                    let source_message_id =
                        serde_json::from_str::<Value>(&text)
                            .ok()
                            .and_then(|answer| {
                                answer
                                    .get("source_message_id")
                                    .and_then(Value::as_str)
                                    .map(str::to_owned)
                            });
                    return Outcome::Delivered { source_message_id };
                }
                Ok((status, text)) if !status.is_server_error() => {
                    return Outcome::Failed {
                        error: format!(
                            "the action endpoint answered {status}: {}",
                            truncate(&text)
                        ),
                    };
                }
                Ok((status, text)) => {
                    last_error =
                        format!("the action endpoint answered {status}: {}", truncate(&text))
                }
                Err(error) => last_error = format!("calling the action endpoint failed: {error}"),
            }
            tracing::info!(
                message_id = message.id,
                attempt,
                error = last_error,
                "message delivery attempt failed; retrying"
            );
            if attempt < self.policy.max_attempts {
                std::thread::sleep(backoff);
                backoff = backoff.saturating_mul(2);
            }
        }
        Outcome::Failed {
            error: format!("{last_error} (after {} attempts)", self.policy.max_attempts),
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}
