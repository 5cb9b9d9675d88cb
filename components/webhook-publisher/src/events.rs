//! Which events a change makes, and for whom.

use std::sync::Arc;

use eddy_api::views;
use eddy_schemas::catalog::{CHANNELS, MESSAGES, METADATA, TAGS};
use eddy_schemas::metadata::{Subject, typed_value};
use eddy_schemas::writer::RecordWriter;
use eddy_schemas::{
    Channel, Message, Metadata, SubscriptionStatus, Tag, WebhookEvent, WebhookSubscription, ids,
};
use eddy_streams::{
    GlobalTable, InputRecord, InputTopic, OutputTopic, Processor, ProcessorContext, ProcessorError,
    StoreDefinition,
};
use eddy_webhooks::event_placement;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The event types, as subscriptions name them.
pub const MESSAGE_CREATED: &str = "message.created";
pub const MESSAGE_UPDATED: &str = "message.updated";
pub const CONVERSATION_UPDATED: &str = "conversation.updated";
pub const CHANNEL_UPDATED: &str = "channel.updated";
pub const TAG_UPDATED: &str = "tag.updated";
pub const TAG_DELETED: &str = "tag.deleted";

#[derive(Debug, Clone)]
pub struct Inputs {
    pub messages: InputTopic<String, Message>,
    pub metadata: InputTopic<String, Metadata>,
    pub channels: InputTopic<String, Channel>,
    pub tags: InputTopic<String, Tag>,
}

/// What a metadata record id stands for, so its tombstone can be told as a removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataKey {
    pub subject: String,
    pub key: String,
}

/// One change, before it is matched against the subscriptions.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub event_type: &'static str,
    /// The catalog dataset and record key the change came from (part of the event id).
    pub dataset: &'static str,
    pub key: String,
    pub ordering_key: String,
    pub payload: Value,
}

/// The processor of one partition.
#[derive(Clone)]
pub struct Publisher {
    pub inputs: Inputs,
    /// Metadata record id → its subject and key.
    pub metadata_subjects: StoreDefinition<String, MetadataKey>,
    pub events: OutputTopic<String, WebhookEvent>,
    pub events_topic: String,
    pub placement: Arc<RecordWriter>,
    pub subscriptions: GlobalTable<String, WebhookSubscription>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Processor for Publisher {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        let Some(change) = self.change(record, context)? else {
            return Ok(());
        };
        // The record's timestamp: when the change was written, and its version.
        let written_at = record.timestamp.unwrap_or(record.offset);
        let payload = change.payload.to_string();
        for subscription in self.matching(change.event_type, written_at) {
            let event = WebhookEvent {
                id: ids::webhook_event_id(
                    &subscription.id,
                    change.event_type,
                    change.dataset,
                    &change.key,
                    written_at,
                ),
                subscription_id: subscription.id.clone(),
                event_type: change.event_type.to_owned(),
                created_at: written_at,
                ordering_key: Some(change.ordering_key.clone()),
                payload: payload.clone(),
                redelivery_requested_at: None,
            };
            let partition = self
                .placement
                .partition_of(
                    &self.events_topic,
                    &event_placement(&subscription.id, event.ordering_key.as_deref()),
                )
                .map_err(|error| ProcessorError::Failed(error.to_string()))?;
            context.emit_to_partition(&self.events, partition, &event.id, Some(&event))?;
        }
        Ok(())
    }
}

impl Publisher {
    /// The subscriptions that get an event of `event_type` for a change written at
    /// `written_at`: subscribed, asking for the type (or for all), and older than the change.
    fn matching(&self, event_type: &str, written_at: i64) -> Vec<WebhookSubscription> {
        let mut matching: Vec<WebhookSubscription> = self
            .subscriptions
            .entries()
            .into_iter()
            .map(|(_, subscription)| subscription)
            .filter(|subscription| {
                subscription.status == SubscriptionStatus::Subscribed
                    && subscription.subscribed_at <= written_at
                    && (subscription.events.is_empty()
                        || subscription
                            .events
                            .iter()
                            .any(|wanted| wanted == event_type))
            })
            .collect();
        matching.sort_by(|left, right| left.id.cmp(&right.id));
        matching
    }

    /// The change `record` stands for, if it is one that subscribers hear about.
    fn change(
        &self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<Option<Change>, ProcessorError> {
        let inputs = &self.inputs;
        if inputs.messages.matches(record) {
            let (key, message) = inputs.messages.decode(record)?;
            Ok(message.map(|message| message_change(key, &message)))
        } else if inputs.metadata.matches(record) {
            let (id, metadata) = inputs.metadata.decode(record)?;
            match metadata {
                Some(metadata) => {
                    let known = MetadataKey {
                        subject: metadata.subject.clone(),
                        key: metadata.key.clone(),
                    };
                    if context.get(&self.metadata_subjects, &id)?.as_ref() != Some(&known) {
                        context.put(&self.metadata_subjects, &id, &known)?;
                    }
                    let value = typed_value(&metadata.value, metadata.value_type);
                    Ok(metadata_change(id, &known, value))
                }
                None => {
                    let Some(known) = context.get(&self.metadata_subjects, &id)? else {
                        return Ok(None);
                    };
                    context.delete(&self.metadata_subjects, &id)?;
                    Ok(metadata_change(id, &known, Value::Null))
                }
            }
        } else if inputs.channels.matches(record) {
            let (key, channel) = inputs.channels.decode(record)?;
            Ok(channel.map(|channel| Change {
                event_type: CHANNEL_UPDATED,
                dataset: CHANNELS,
                ordering_key: channel.id.clone(),
                payload: views::channel(&channel),
                key,
            }))
        } else if inputs.tags.matches(record) {
            let (key, tag) = inputs.tags.decode(record)?;
            Ok(Some(match tag {
                Some(tag) => Change {
                    event_type: TAG_UPDATED,
                    dataset: TAGS,
                    ordering_key: key.clone(),
                    payload: views::tag(&tag),
                    key,
                },
                None => Change {
                    event_type: TAG_DELETED,
                    dataset: TAGS,
                    ordering_key: key.clone(),
                    payload: json!({ "id": key }),
                    key,
                },
            }))
        } else {
            Ok(None)
        }
    }
}

/// `message.created` for a message never updated, `message.updated` after (delivery state,
/// resend).
pub fn message_change(key: String, message: &Message) -> Change {
    Change {
        event_type: if message.updated_at.is_none() {
            MESSAGE_CREATED
        } else {
            MESSAGE_UPDATED
        },
        dataset: MESSAGES,
        ordering_key: message.conversation_id.clone(),
        payload: views::message(message),
        key,
    }
}

/// `conversation.updated` or `channel.updated` for a metadata value (null: removed) of a
/// conversation or a channel; other subjects make no event (a message's changes come as
/// `message.updated`).
pub fn metadata_change(id: String, known: &MetadataKey, value: Value) -> Option<Change> {
    let (event_type, subject_field, subject_id) = match Subject::parse(&known.subject)? {
        Subject::Conversation(conversation_id) => {
            (CONVERSATION_UPDATED, "conversation_id", conversation_id)
        }
        Subject::Channel(channel_id) => (CHANNEL_UPDATED, "channel_id", channel_id),
        _ => return None,
    };
    Some(Change {
        event_type,
        dataset: METADATA,
        key: id,
        payload: json!({ subject_field: subject_id, "key": known.key, "value": value }),
        ordering_key: subject_id,
    })
}

#[cfg(test)]
mod tests {
    use eddy_schemas::DeliveryState;

    use super::*;

    fn message(updated_at: Option<i64>) -> Message {
        Message {
            id: "m1".into(),
            conversation_id: "c1".into(),
            channel_id: "ch1".into(),
            source: "sms".into(),
            sender_id: "+49".into(),
            source_recipient_id: None,
            source_message_id: None,
            is_from_contact: true,
            delivery_state: DeliveryState::Delivered,
            content: r#"{"text":"hi"}"#.into(),
            sent_at: 1,
            updated_at,
            source_conversation_id: None,
        }
    }

    #[test]
    fn a_message_is_created_until_it_is_updated() {
        let created = message_change("m1".into(), &message(None));
        assert_eq!(created.event_type, MESSAGE_CREATED);
        assert_eq!(created.ordering_key, "c1");
        assert_eq!(created.payload["content"]["text"], "hi");
        assert_eq!(
            message_change("m1".into(), &message(Some(2))).event_type,
            MESSAGE_UPDATED
        );
    }

    #[test]
    fn conversation_and_channel_metadata_make_events_and_message_metadata_does_not() {
        let state = MetadataKey {
            subject: Subject::Conversation("c1".into()).to_string(),
            key: "state".into(),
        };
        let change = metadata_change("id".into(), &state, json!("CLOSED")).expect("an event");
        assert_eq!(change.event_type, CONVERSATION_UPDATED);
        assert_eq!(
            change.payload,
            json!({"conversation_id": "c1", "key": "state", "value": "CLOSED"})
        );
        let channel = MetadataKey {
            subject: Subject::Channel("ch1".into()).to_string(),
            key: "name".into(),
        };
        assert_eq!(
            metadata_change("id".into(), &channel, Value::Null)
                .expect("an event")
                .event_type,
            CHANNEL_UPDATED
        );
        let on_message = MetadataKey {
            subject: Subject::Message("m1".into()).to_string(),
            key: "error".into(),
        };
        assert_eq!(metadata_change("id".into(), &on_message, json!("x")), None);
    }
}
