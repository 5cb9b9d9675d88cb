//! Topics and records on the real broker: create topics, produce, and consume until a
//! predicate holds or a deadline passes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::TestNamespace;

/// A topic to create: partition count and topic-level configs.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub partitions: i32,
    pub config: Vec<(String, String)>,
}

impl TopicSpec {
    pub fn new(partitions: i32) -> Self {
        TopicSpec {
            partitions,
            config: Vec::new(),
        }
    }

    /// Adds a topic config such as `cleanup.policy=compact`.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A record read back from a topic, with everything owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl ConsumedRecord {
    /// The key as UTF-8 (lossy), or "" for none.
    pub fn key_text(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }

    /// The value as UTF-8 (lossy), or "" for a tombstone.
    pub fn value_text(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }

    /// Builds one from any rdkafka message.
    pub fn from_message<M: Message>(message: &M) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        ConsumedRecord {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

impl TestNamespace {
    /// An admin client on the local broker.
    pub fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.kafka()
            .admin_config(&self.group("admin"))
            .create()
            .unwrap_or_else(|error| panic!("cannot create a Kafka admin client: {error}"))
    }

    /// Creates namespaced topic `name` and returns its full name; waits until every partition
    /// has a leader, so producing right after works.
    pub async fn create_topic(&self, name: &str, spec: TopicSpec) -> String {
        let topic = self.topic(name);
        let mut new_topic = NewTopic::new(&topic, spec.partitions, TopicReplication::Fixed(1));
        for (key, value) in &spec.config {
            new_topic = new_topic.set(key, value);
        }
        let results = self
            .admin()
            .create_topics(
                [&new_topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .unwrap_or_else(|error| panic!("creating topic {topic} failed: {error}"));
        for result in results {
            if let Err((name, code)) = result {
                panic!("creating topic {name} failed: {code}");
            }
        }
        self.wait_for_leaders(&topic, spec.partitions).await;
        topic
    }

    async fn wait_for_leaders(&self, topic: &str, partitions: i32) {
        let consumer = self.consumer(&self.group("metadata"));
        let topic_name = topic.to_owned();
        crate::poll_until(
            &format!("leaders for the {partitions} partitions of {topic}"),
            Duration::from_secs(30),
            || {
                let ready = consumer
                    .fetch_metadata(Some(&topic_name), Duration::from_secs(5))
                    .ok()
                    .and_then(|metadata| {
                        metadata.topics().first().map(|topic| {
                            topic.error().is_none()
                                && topic.partitions().len()
                                    == usize::try_from(partitions).unwrap_or(0)
                                && topic
                                    .partitions()
                                    .iter()
                                    .all(|partition| partition.leader() >= 0)
                        })
                    })
                    .unwrap_or(false);
                std::future::ready(ready.then_some(()))
            },
        )
        .await;
    }

    /// An idempotent producer configured the way components configure theirs.
    pub fn producer(&self) -> FutureProducer {
        self.kafka()
            .producer_config(&self.group("producer"))
            .create()
            .unwrap_or_else(|error| panic!("cannot create a Kafka producer: {error}"))
    }

    /// A consumer in `group_id` configured the way components configure theirs (explicit
    /// commits, `read_committed`, from the earliest offset when the group has none).
    pub fn consumer(&self, group_id: &str) -> StreamConsumer {
        self.kafka()
            .consumer_config(group_id, group_id)
            .create()
            .unwrap_or_else(|error| panic!("cannot create a Kafka consumer: {error}"))
    }

    /// Produces one record with a fresh idempotent producer and returns its (partition, offset).
    pub async fn produce(&self, topic: &str, key: &str, value: &[u8]) -> (i32, i64) {
        produce_with(&self.producer(), topic, key, value, &[]).await
    }

    /// Reads `topic` from the beginning of every partition (no consumer group involved) until
    /// `done` holds for the records read so far, and returns them. Fails with what was read if
    /// `timeout` passes first.
    pub async fn consume_until<F>(
        &self,
        topic: &str,
        timeout: Duration,
        mut done: F,
    ) -> Result<Vec<ConsumedRecord>, ConsumeTimeout>
    where
        F: FnMut(&[ConsumedRecord]) -> bool,
    {
        let consumer = self.consumer(&self.group("reader"));
        assign_from_beginning(&consumer, topic);
        collect_until(&consumer, timeout, &mut done).await
    }
}

/// Assigns every partition of `topic` to `consumer` from the first offset, bypassing group
/// membership (the consumer reads the whole topic, whatever its group has committed).
pub fn assign_from_beginning<C: Consumer>(consumer: &C, topic: &str) {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|error| panic!("cannot read metadata of {topic}: {error}"));
    let mut assignment = TopicPartitionList::new();
    for partition in metadata
        .topics()
        .first()
        .map(|topic| topic.partitions())
        .unwrap_or_default()
    {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .unwrap_or_else(|error| panic!("cannot assign {topic}: {error}"));
    }
    assert!(
        assignment.count() > 0,
        "topic {topic} has no partitions (does it exist?)"
    );
    consumer
        .assign(&assignment)
        .unwrap_or_else(|error| panic!("cannot assign {topic}: {error}"));
}

/// Produces one record with `producer` and returns its (partition, offset).
pub async fn produce_with(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
    headers: &[(&str, &[u8])],
) -> (i32, i64) {
    let mut owned_headers = OwnedHeaders::new();
    for (name, header_value) in headers {
        owned_headers = owned_headers.insert(Header {
            key: name,
            value: Some(*header_value),
        });
    }
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(value)
        .headers(owned_headers);
    match producer.send(record, Duration::from_secs(30)).await {
        Ok(delivery) => (delivery.partition, delivery.offset),
        Err((error, _)) => panic!("producing to {topic} failed: {error}"),
    }
}

/// Reads from an already subscribed or assigned consumer until `done` holds for the records read
/// so far, or `timeout` passes.
pub async fn collect_until<F>(
    consumer: &StreamConsumer,
    timeout: Duration,
    done: &mut F,
) -> Result<Vec<ConsumedRecord>, ConsumeTimeout>
where
    F: FnMut(&[ConsumedRecord]) -> bool,
{
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while !done(&records) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ConsumeTimeout { timeout, records });
        }
        match tokio::time::timeout(remaining, consumer.recv()).await {
            Ok(Ok(message)) => records.push(ConsumedRecord::from_message(&message)),
            Ok(Err(KafkaError::PartitionEOF(_))) => {}
            Ok(Err(error)) => panic!("consuming failed: {error}"),
            Err(_elapsed) => return Err(ConsumeTimeout { timeout, records }),
        }
    }
    Ok(records)
}

/// The condition did not hold before the deadline; carries what was read.
#[derive(Debug)]
pub struct ConsumeTimeout {
    pub timeout: Duration,
    pub records: Vec<ConsumedRecord>,
}

impl std::fmt::Display for ConsumeTimeout {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let by_partition: HashMap<i32, usize> =
            self.records
                .iter()
                .fold(HashMap::new(), |mut counts, record| {
                    *counts.entry(record.partition).or_default() += 1;
                    counts
                });
        write!(
            formatter,
            "condition not met within {:?}; read {} records (per partition: {by_partition:?})",
            self.timeout,
            self.records.len()
        )
    }
}

impl std::error::Error for ConsumeTimeout {}
