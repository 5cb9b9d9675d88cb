//! The topic catalog: every topic Eddy owns, with its settings, key type and value schema.
//! Names are `<kind>.<domain>.<dataset>`, prefixed with `<namespace>.` when a namespace is set
//! so several installations can share one cluster. `eddy topics provision` makes a cluster
//! match this list; components find their topics here by dataset.

use std::collections::BTreeMap;

use clap::Args;

use crate::entities::{
    Channel, Entity, Message, Metadata, ReadReceipt, SchemaError, Source, Tag, WebhookDelivery,
    WebhookEvent, WebhookSubscription, compact_schema_json,
};

pub const MESSAGES: &str = "application.communication.messages";
pub const CHANNELS: &str = "application.communication.channels";
pub const METADATA: &str = "application.communication.metadata";
pub const READ_RECEIPTS: &str = "application.communication.read-receipts";
pub const SOURCES: &str = "application.communication.sources";
pub const TAGS: &str = "application.communication.tags";
pub const WEBHOOK_SUBSCRIPTIONS: &str = "application.communication.webhook-subscriptions";
pub const WEBHOOK_EVENTS: &str = "application.webhooks.events";
pub const WEBHOOK_DELIVERIES: &str = "application.webhooks.deliveries";
pub const WEBHOOK_DEAD_LETTERS: &str = "application.webhooks.dead-letters";

/// Compacted topics keep the latest record per key: one day before a record may be compacted
/// away (consumers that fall behind still see every change of the last day) and 10 MiB segments
/// so compaction can start on small topics.
const COMPACTED: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("min.compaction.lag.ms", "86400000"),
    ("segment.bytes", "10485760"),
];

/// Event streams are kept for a week.
const EVENT_STREAM: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "104857600"),
];

/// The webhook delivery log: compacted (one record per attempt) and also trimmed after 30 days,
/// since attempt keys are never written twice and would otherwise be kept forever.
const DELIVERY_LOG: &[(&str, &str)] = &[
    ("cleanup.policy", "compact,delete"),
    ("retention.ms", "2592000000"),
    ("min.compaction.lag.ms", "86400000"),
    ("segment.bytes", "104857600"),
];

/// How topics are named and sized in this installation.
#[derive(Debug, Clone, Args)]
pub struct CatalogArgs {
    /// Prefix of every topic name (`<namespace>.<kind>.<domain>.<dataset>`), so several
    /// installations can share a cluster; empty: no prefix.
    #[arg(long = "topic-namespace", env = "EDDY_TOPIC_NAMESPACE", default_value = "", value_parser = parse_namespace)]
    pub namespace: String,

    /// Partitions of every topic. Keys are spread over partitions, and a partition is the unit
    /// of parallelism: at most this many instances of a component share the work.
    #[arg(
        long = "topic-partitions",
        env = "EDDY_TOPIC_PARTITIONS",
        default_value_t = 10,
        value_parser = clap::value_parser!(i32).range(1..=10_000)
    )]
    pub partitions: i32,

    /// Replicas of every partition; unset: the broker's `default.replication.factor`.
    #[arg(
        long = "topic-replication-factor",
        env = "EDDY_TOPIC_REPLICATION_FACTOR",
        value_parser = clap::value_parser!(i32).range(1..=100)
    )]
    pub replication_factor: Option<i32>,
}

impl CatalogArgs {
    /// The id of a streams application (`communication-v1`) in this installation: prefixed
    /// with the topic namespace, so installations sharing a cluster keep apart groups, stores
    /// and internal topics too.
    pub fn application_id(&self, application: &str) -> String {
        if self.namespace.is_empty() {
            application.to_owned()
        } else {
            format!("{}.{application}", self.namespace)
        }
    }
}

impl Default for CatalogArgs {
    fn default() -> Self {
        CatalogArgs {
            namespace: String::new(),
            partitions: 10,
            replication_factor: None,
        }
    }
}

fn parse_namespace(text: &str) -> Result<String, String> {
    let valid = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid || text.starts_with('.') || text.ends_with('.') || text.len() > 100 {
        return Err(format!(
            "{text:?} is not a topic namespace: use letters, digits, '-', '_' and inner '.', at most 100 characters"
        ));
    }
    Ok(text.to_owned())
}

/// How record keys are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// UTF-8 text (ids), no schema.
    String,
}

/// The schema of a topic's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueSchema {
    /// Full name, e.g. `dev.eddy.communication.Message`.
    pub name: &'static str,
    /// The `.avsc` text.
    pub avsc: &'static str,
}

impl ValueSchema {
    pub fn of<T: Entity>() -> Self {
        ValueSchema {
            name: T::NAME,
            avsc: T::SCHEMA,
        }
    }

    /// The compact JSON form registered in the schema registry.
    pub fn registry_text(&self) -> Result<String, SchemaError> {
        compact_schema_json(self.name, self.avsc)
    }
}

/// One topic: its name, settings, key type and value schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDefinition {
    /// The unprefixed `<kind>.<domain>.<dataset>` name.
    pub dataset: &'static str,
    /// The full name, with the namespace prefix.
    pub name: String,
    pub partitions: i32,
    /// `None`: the broker's default.
    pub replication_factor: Option<i32>,
    pub configs: BTreeMap<String, String>,
    pub key: KeyType,
    pub value: ValueSchema,
    /// What the topic holds, for listings.
    pub description: &'static str,
}

impl TopicDefinition {
    /// The registry subject of the values (TopicNameStrategy).
    pub fn value_subject(&self) -> String {
        format!("{}-value", self.name)
    }
}

/// Every topic of one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub topics: Vec<TopicDefinition>,
}

impl Catalog {
    pub fn new(args: &CatalogArgs) -> Self {
        let topic = |dataset: &'static str,
                     configs: &[(&str, &str)],
                     value: ValueSchema,
                     description: &'static str| TopicDefinition {
            dataset,
            name: if args.namespace.is_empty() {
                dataset.to_owned()
            } else {
                format!("{}.{dataset}", args.namespace)
            },
            partitions: args.partitions,
            replication_factor: args.replication_factor,
            configs: configs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            key: KeyType::String,
            value,
            description,
        };
        Catalog {
            topics: vec![
                topic(
                    MESSAGES,
                    COMPACTED,
                    ValueSchema::of::<Message>(),
                    "messages, key: message id, partitioned by conversation id",
                ),
                topic(
                    CHANNELS,
                    COMPACTED,
                    ValueSchema::of::<Channel>(),
                    "connected channels, key: channel id",
                ),
                topic(
                    METADATA,
                    COMPACTED,
                    ValueSchema::of::<Metadata>(),
                    "facts about conversations, messages, channels and contacts, key: id of (subject, key), partitioned by conversation id (channel id for channel facts)",
                ),
                topic(
                    READ_RECEIPTS,
                    COMPACTED,
                    ValueSchema::of::<ReadReceipt>(),
                    "conversations read up to a time, key: conversation id",
                ),
                topic(
                    SOURCES,
                    COMPACTED,
                    ValueSchema::of::<Source>(),
                    "registered bring-your-own sources, key: source id",
                ),
                topic(
                    TAGS,
                    COMPACTED,
                    ValueSchema::of::<Tag>(),
                    "tags, key: tag id",
                ),
                topic(
                    WEBHOOK_SUBSCRIPTIONS,
                    COMPACTED,
                    ValueSchema::of::<WebhookSubscription>(),
                    "webhook subscriptions, key: subscription id",
                ),
                topic(
                    WEBHOOK_EVENTS,
                    EVENT_STREAM,
                    ValueSchema::of::<WebhookEvent>(),
                    "webhook events to deliver, one per subscription, key: event id, partitioned by <subscription id>/<ordering key>",
                ),
                topic(
                    WEBHOOK_DELIVERIES,
                    DELIVERY_LOG,
                    ValueSchema::of::<WebhookDelivery>(),
                    "webhook delivery attempts, key: <event id>/<attempt>, on the partition of their event",
                ),
                topic(
                    WEBHOOK_DEAD_LETTERS,
                    COMPACTED,
                    ValueSchema::of::<WebhookEvent>(),
                    "webhook events given up on, key: event id, on the partition of the event (tombstoned when redelivered)",
                ),
            ],
        }
    }

    /// The topic of `dataset` (one of the constants of this module).
    pub fn topic(&self, dataset: &str) -> Option<&TopicDefinition> {
        self.topics.iter().find(|topic| topic.dataset == dataset)
    }

    /// The full name of `dataset`'s topic.
    pub fn name(&self, dataset: &str) -> Option<&str> {
        self.topic(dataset).map(|topic| topic.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_is_named_by_convention_and_has_a_parseable_schema() {
        let catalog = Catalog::new(&CatalogArgs::default());
        assert_eq!(catalog.topics.len(), 10);
        for topic in &catalog.topics {
            assert_eq!(topic.name, topic.dataset);
            assert_eq!(topic.name.split('.').count(), 3, "{}", topic.name);
            assert_eq!(topic.value_subject(), format!("{}-value", topic.name));
            let schema = apache_avro::Schema::parse_str(topic.value.avsc).unwrap();
            assert_eq!(
                schema.name().map(|name| name.fullname(None)),
                Some(topic.value.name.to_owned())
            );
            assert!(topic.configs.contains_key("cleanup.policy"));
            assert!(topic.configs.contains_key("segment.bytes"));
        }
    }

    #[test]
    fn a_namespace_prefixes_every_name() {
        let catalog = Catalog::new(&CatalogArgs {
            namespace: "staging".to_owned(),
            ..CatalogArgs::default()
        });
        assert_eq!(
            catalog.name(MESSAGES),
            Some("staging.application.communication.messages")
        );
        assert!(parse_namespace("team-a.eu").is_ok());
        for bad in ["a b", ".a", "a.", "a/b"] {
            assert!(parse_namespace(bad).is_err(), "{bad:?}");
        }
    }
}
