//! Writing records from request handlers: one idempotent `acks=all` producer per component,
//! records framed by [`crate::AvroSerde`], every record with its envelope, and an explicit
//! partition for topics partitioned by something other than their key (a conversation's
//! messages and metadata all go to the conversation id's partition, where the communication
//! service's task for that conversation reads them).

use std::collections::HashMap;
use std::time::Duration;

use eddy_service::envelope::Envelope;
use eddy_service::kafka::KafkaArgs;
use eddy_streams::partitioner::partition_for_key;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("kafka: {what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("topic {0} does not exist (run `eddy topics provision`)")]
    MissingTopic(String),
    #[error("topic {0} is not one this writer was opened for")]
    UnknownTopic(String),
    #[error("encoding a {topic} record: {message}")]
    Encode { topic: String, message: String },
}

/// Which partition a record goes to.
#[derive(Debug, Clone, Copy)]
pub enum Placement<'a> {
    /// The key's murmur2 partition (what every Java producer does).
    ByKey,
    /// The murmur2 partition of another id: the conversation id for messages and metadata.
    By(&'a str),
}

/// One record to write: raw key, framed value (`None`: a tombstone), its envelope.
#[derive(Debug)]
pub struct OutgoingRecord<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    pub value: Option<Vec<u8>>,
    pub placement: Placement<'a>,
    pub envelope: &'a Envelope,
}

/// Where a record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub partition: i32,
    pub offset: i64,
}

/// The producer of a component's request handlers. Cheap to clone.
#[derive(Clone)]
pub struct RecordWriter {
    producer: FutureProducer,
    partitions: HashMap<String, i32>,
}

impl std::fmt::Debug for RecordWriter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RecordWriter")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl RecordWriter {
    /// A writer for `topics`, whose partition counts it reads once (partition counts never
    /// change: provisioning refuses to).
    pub async fn new(
        kafka: &KafkaArgs,
        client_id: &str,
        topics: &[&str],
    ) -> Result<Self, WriteError> {
        let producer: FutureProducer =
            kafka
                .producer_config(client_id)
                .create()
                .map_err(|source| WriteError::Kafka {
                    what: "creating the producer".to_owned(),
                    source,
                })?;
        let mut partitions = HashMap::new();
        for topic in topics {
            let metadata_producer = producer.clone();
            let name = (*topic).to_owned();
            let metadata = tokio::task::spawn_blocking(move || {
                metadata_producer
                    .client()
                    .fetch_metadata(Some(&name), METADATA_TIMEOUT)
            })
            .await
            .map_err(|_| WriteError::MissingTopic((*topic).to_owned()))?
            .map_err(|source| WriteError::Kafka {
                what: format!("reading the partitions of {topic}"),
                source,
            })?;
            let count = metadata
                .topics()
                .iter()
                .find(|found| found.name() == *topic && found.error().is_none())
                .map_or(0, |found| found.partitions().len());
            if count == 0 {
                return Err(WriteError::MissingTopic((*topic).to_owned()));
            }
            partitions.insert((*topic).to_owned(), count as i32);
        }
        Ok(RecordWriter {
            producer,
            partitions,
        })
    }

    /// The partition a record placed by `id` goes to on `topic`.
    pub fn partition_of(&self, topic: &str, id: &str) -> Result<i32, WriteError> {
        let count = self
            .partitions
            .get(topic)
            .ok_or_else(|| WriteError::UnknownTopic(topic.to_owned()))?;
        Ok(partition_for_key(id.as_bytes(), *count))
    }

    /// Writes one record and waits until Kafka acknowledged it (all in-sync replicas).
    pub async fn send(&self, record: OutgoingRecord<'_>) -> Result<Written, WriteError> {
        let placed_by = match record.placement {
            Placement::ByKey => record.key,
            Placement::By(id) => id,
        };
        let partition = self.partition_of(record.topic, placed_by)?;
        let mut outgoing = FutureRecord::<str, [u8]>::to(record.topic)
            .key(record.key)
            .partition(partition)
            .headers(record.envelope.to_headers());
        if let Some(value) = record.value.as_deref() {
            outgoing = outgoing.payload(value);
        }
        match self.producer.send(outgoing, DELIVERY_TIMEOUT).await {
            Ok(delivery) => Ok(Written {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((source, _)) => Err(WriteError::Kafka {
                what: format!("writing to {}", record.topic),
                source,
            }),
        }
    }

    /// Writes records concurrently; returns where each went, in order, or the first failure.
    pub async fn send_all(
        &self,
        records: Vec<OutgoingRecord<'_>>,
    ) -> Result<Vec<Written>, WriteError> {
        futures::future::join_all(records.into_iter().map(|record| self.send(record)))
            .await
            .into_iter()
            .collect()
    }
}
