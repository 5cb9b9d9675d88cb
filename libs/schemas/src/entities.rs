//! The record types. Each entity has an Avro schema in `avro/<entity>.avsc` (snake_case field
//! names like the HTTP API) and a Rust type that serde maps to it; tests check that every type
//! round-trips through its schema. `docs/topics.md` gives the reasons behind the choices.

use std::collections::BTreeMap;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

/// Why a schema or a record could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema {name}: {source}")]
    Parse {
        name: &'static str,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("record does not fit schema {name}: {source}")]
    Encode {
        name: &'static str,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("bytes do not decode as {name}: {source}")]
    Decode {
        name: &'static str,
        #[source]
        source: Box<apache_avro::Error>,
    },
}

/// An entity with an Avro schema kept in the repository.
pub trait Entity: Serialize + for<'de> Deserialize<'de> {
    /// The schema's full name.
    const NAME: &'static str;
    /// The `.avsc` text.
    const SCHEMA: &'static str;

    /// The parsed schema.
    fn schema() -> Result<Schema, SchemaError> {
        Schema::parse_str(Self::SCHEMA).map_err(|source| SchemaError::Parse {
            name: Self::NAME,
            source: Box::new(source),
        })
    }

    /// The schema as compact JSON, the form registered in the schema registry.
    fn registry_text() -> Result<String, SchemaError> {
        compact_schema_json(Self::NAME, Self::SCHEMA)
    }

    /// Avro binary of `self` (no framing; the Confluent wire format adds magic byte and id).
    fn to_avro(&self) -> Result<Vec<u8>, SchemaError> {
        encode_with(&Self::schema()?, self)
    }

    /// Decodes Avro binary written with this schema.
    fn from_avro(bytes: &[u8]) -> Result<Self, SchemaError> {
        let schema = Self::schema()?;
        decode_with(&schema, &schema, bytes)
    }
}

/// The compact JSON form of the `.avsc` text `avsc` of schema `name`.
pub(crate) fn compact_schema_json(name: &'static str, avsc: &str) -> Result<String, SchemaError> {
    serde_json::from_str::<serde_json::Value>(avsc)
        .map(|json| json.to_string())
        .map_err(|error| SchemaError::Parse {
            name,
            source: Box::new(apache_avro::Error::new(
                apache_avro::error::Details::ParseSchemaJson(error),
            )),
        })
}

/// Avro binary of `value` written with `schema`.
pub(crate) fn encode_with<T: Entity>(schema: &Schema, value: &T) -> Result<Vec<u8>, SchemaError> {
    let encode_error = |source| SchemaError::Encode {
        name: T::NAME,
        source: Box::new(source),
    };
    let value = apache_avro::to_value(value)
        .and_then(|value| value.resolve(schema))
        .map_err(encode_error)?;
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|writer| writer.write_value_to_vec(value))
        .map_err(encode_error)
}

/// Decodes Avro binary written with `writer`, resolved to `reader` (Avro schema resolution:
/// defaults for fields the writer lacks, enum defaults for unknown symbols, fields the reader
/// lacks skipped).
pub(crate) fn decode_with<T: Entity>(
    writer: &Schema,
    reader: &Schema,
    bytes: &[u8],
) -> Result<T, SchemaError> {
    let decode_error = |source| SchemaError::Decode {
        name: T::NAME,
        source: Box::new(source),
    };
    let value = apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()
        .and_then(|datum_reader| datum_reader.read_value(&mut &bytes[..]))
        .map_err(decode_error)?;
    apache_avro::from_value(&value).map_err(decode_error)
}

macro_rules! entity {
    ($type:ty, $name:literal, $file:literal) => {
        impl Entity for $type {
            const NAME: &'static str = $name;
            const SCHEMA: &'static str = include_str!(concat!("../avro/", $file));
        }
    };
}

/// Whether a message reached its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

/// A message of a conversation. Key: the message id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub channel_id: String,
    pub source: String,
    pub sender_id: String,
    pub source_recipient_id: Option<String>,
    pub source_message_id: Option<String>,
    pub is_from_contact: bool,
    pub delivery_state: DeliveryState,
    /// Source-specific content as JSON text.
    pub content: String,
    /// Milliseconds since the Unix epoch.
    pub sent_at: i64,
    pub updated_at: Option<i64>,
    /// The source's id of the conversation, which outbound messages are addressed to.
    pub source_conversation_id: Option<String>,
}
entity!(Message, "dev.eddy.communication.Message", "message.avsc");

/// Whether a channel is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionState {
    Connected,
    Disconnected,
}

/// A connected account of a source. Key: the channel id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: String,
    pub source: String,
    pub source_channel_id: String,
    pub connection_state: ConnectionState,
    /// Where the access token is kept (e.g. `secret://<name>/<key>`), never the token.
    pub token_ref: Option<String>,
    pub connected_at: i64,
    pub name: Option<String>,
    pub image_url: Option<String>,
    /// User data as JSON object text; `None`: none.
    pub metadata: Option<String>,
}
entity!(Channel, "dev.eddy.communication.Channel", "channel.avsc");

/// How a metadata value is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValueType {
    Text,
    Number,
    Bool,
    Object,
    Array,
    Null,
}

/// A flexible fact about a conversation, message, channel or contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// `<namespace>:<id>`.
    pub subject: String,
    pub key: String,
    pub value: String,
    pub value_type: ValueType,
    pub timestamp: i64,
}
entity!(Metadata, "dev.eddy.communication.Metadata", "metadata.avsc");

/// A conversation read up to a time. Key: the conversation id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReceipt {
    pub conversation_id: String,
    pub read_at: i64,
}
entity!(
    ReadReceipt,
    "dev.eddy.communication.ReadReceipt",
    "read_receipt.avsc"
);

/// A tag's colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagColor {
    Red,
    Green,
    Blue,
    Purple,
    Orange,
    Grey,
}

/// A label conversations can carry. Key: the tag id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub id: String,
    pub name: String,
    pub color: TagColor,
}
entity!(Tag, "dev.eddy.communication.Tag", "tag.avsc");

/// A registered bring-your-own source. Key: the source id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub id: String,
    pub name: Option<String>,
    pub image_url: Option<String>,
    pub action_endpoint: Option<String>,
    /// SHA-256 of the source token, hex.
    pub token_hash: String,
    pub signing_secret_ref: Option<String>,
    pub created_at: i64,
}
entity!(Source, "dev.eddy.communication.Source", "source.avsc");

/// Whether a webhook subscription is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionStatus {
    Subscribed,
    Unsubscribed,
}

/// A subscription to outbound webhook events. Key: the subscription id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSubscription {
    pub id: String,
    pub name: Option<String>,
    pub endpoint: String,
    /// Event types to send; empty means all.
    pub events: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub status: SubscriptionStatus,
    pub secret_ref: Option<String>,
    pub subscribed_at: i64,
    /// Attempts per event before it is dead-lettered; `None`: the sender's schedule.
    pub max_attempts: Option<i32>,
    /// How long after its creation an event may be retried; `None`: the sender's default.
    pub max_age_ms: Option<i64>,
    /// During a secret rotation, the old secret's reference (deliveries carry both signatures).
    pub previous_secret_ref: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
}
entity!(
    WebhookSubscription,
    "dev.eddy.communication.WebhookSubscription",
    "webhook_subscription.avsc"
);

/// One event to deliver to one subscription. Key: the event id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Stable: derived from the source record and its version.
    pub id: String,
    pub subscription_id: String,
    pub event_type: String,
    pub created_at: i64,
    /// Events with the same ordering key are delivered in order.
    pub ordering_key: Option<String>,
    /// JSON text.
    pub payload: String,
    /// Set on a copy written to ask for the event's redelivery.
    pub redelivery_requested_at: Option<i64>,
}
entity!(
    WebhookEvent,
    "dev.eddy.webhooks.WebhookEvent",
    "webhook_event.avsc"
);

/// How a delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryOutcome {
    Succeeded,
    Failed,
    DeadLettered,
    /// Not attempted: the subscription was unsubscribed or deleted.
    Cancelled,
}

/// One delivery attempt of an event. Key: `<event id>/<attempt>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub event_id: String,
    pub subscription_id: String,
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: i32,
    pub attempted_at: i64,
    pub outcome: DeliveryOutcome,
    pub status_code: Option<i32>,
    pub latency_ms: Option<i64>,
    pub error: Option<String>,
    pub next_attempt_at: Option<i64>,
}
entity!(
    WebhookDelivery,
    "dev.eddy.webhooks.WebhookDelivery",
    "webhook_delivery.avsc"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Entity + PartialEq + std::fmt::Debug>(value: T) {
        let schema = T::schema().unwrap();
        assert_eq!(
            schema.name().map(|name| name.fullname(None)),
            Some(T::NAME.to_owned())
        );
        let bytes = value.to_avro().unwrap();
        assert_eq!(T::from_avro(&bytes).unwrap(), value, "{}", T::NAME);
    }

    #[test]
    fn every_entity_round_trips_through_its_schema() {
        round_trip(Message {
            id: "m1".into(),
            conversation_id: "c1".into(),
            channel_id: "ch1".into(),
            source: "sms".into(),
            sender_id: "+4912345".into(),
            source_recipient_id: None,
            source_message_id: Some("SM123".into()),
            is_from_contact: true,
            delivery_state: DeliveryState::Delivered,
            content: r#"{"text":"hello"}"#.into(),
            sent_at: 1_763_700_000_000,
            updated_at: Some(1_763_700_000_500),
            source_conversation_id: None,
        });
        round_trip(Channel {
            id: "ch1".into(),
            source: "sms".into(),
            source_channel_id: "+4900000".into(),
            connection_state: ConnectionState::Disconnected,
            token_ref: Some("secret://sms-tokens/ch1".into()),
            connected_at: 1,
            name: None,
            image_url: None,
            metadata: None,
        });
        for value_type in [
            ValueType::Text,
            ValueType::Number,
            ValueType::Bool,
            ValueType::Object,
            ValueType::Array,
            ValueType::Null,
        ] {
            round_trip(Metadata {
                subject: "conversation:c1".into(),
                key: "unread_count".into(),
                value: "2".into(),
                value_type,
                timestamp: 2,
            });
        }
        round_trip(ReadReceipt {
            conversation_id: "c1".into(),
            read_at: 3,
        });
        round_trip(Tag {
            id: "t1".into(),
            name: "vip".into(),
            color: TagColor::Purple,
        });
        round_trip(Source {
            id: "s1".into(),
            name: Some("my source".into()),
            image_url: None,
            action_endpoint: Some("https://example.com/actions".into()),
            token_hash: "ab".repeat(32),
            signing_secret_ref: None,
            created_at: 4,
        });
        round_trip(WebhookSubscription {
            id: "w1".into(),
            name: None,
            endpoint: "https://example.com/hook".into(),
            events: vec!["message.created".into()],
            headers: BTreeMap::from([("x-team".into(), "support".into())]),
            status: SubscriptionStatus::Subscribed,
            secret_ref: Some("secret://webhooks/w1".into()),
            subscribed_at: 5,
            max_attempts: Some(3),
            max_age_ms: Some(60_000),
            previous_secret_ref: None,
            previous_secret_expires_at: Some(9),
        });
        round_trip(WebhookEvent {
            id: "e1".into(),
            subscription_id: "w1".into(),
            event_type: "message.created".into(),
            created_at: 6,
            ordering_key: Some("c1".into()),
            payload: r#"{"id":"m1"}"#.into(),
            redelivery_requested_at: Some(8),
        });
        for outcome in [
            DeliveryOutcome::Succeeded,
            DeliveryOutcome::Failed,
            DeliveryOutcome::DeadLettered,
            DeliveryOutcome::Cancelled,
        ] {
            round_trip(WebhookDelivery {
                event_id: "e1".into(),
                subscription_id: "w1".into(),
                event_type: "message.created".into(),
                attempt: 2,
                attempted_at: 7,
                outcome,
                status_code: Some(503),
                latency_ms: Some(12),
                error: Some("Service Unavailable".into()),
                next_attempt_at: None,
            });
        }
    }

    #[test]
    fn bytes_of_another_entity_do_not_pass_for_this_one() {
        let tag = Tag {
            id: "t1".into(),
            name: "vip".into(),
            color: TagColor::Red,
        };
        let error = Message::from_avro(&tag.to_avro().unwrap()).unwrap_err();
        assert!(
            error.to_string().contains("dev.eddy.communication.Message"),
            "{error}"
        );
    }
}
