//! The membership topic `<application id>-membership`: each instance writes which partitions it
//! owns and where its query API listens, keyed by instance id (a tombstone when it leaves), and
//! reads everyone's entries into [`Members`] for query routing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use eddy_service::kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::StreamsError;
use crate::query::{InstanceInfo, Members};
use eddy_service::envelope::{Envelope, now_millis};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

pub(crate) fn membership_topic(application_id: &str) -> String {
    format!("{application_id}-membership")
}

/// Writes this instance's entry, with a producer of its own (outside any transaction of the
/// application's producer).
pub(crate) struct MembershipPublisher {
    pub(crate) topic: String,
    pub(crate) instance_id: String,
    /// No address: the instance serves no queries and is not advertised.
    pub(crate) address: Option<String>,
    pub(crate) producer: ThreadedProducer<DefaultProducerContext>,
    /// `<component>/<version>` for the envelope headers.
    pub(crate) writer: String,
    /// Everyone's entries as read back from the topic; this instance's own entry is updated at
    /// once, so its own queries see its partitions the moment it owns them.
    pub(crate) members: Members,
}

impl MembershipPublisher {
    pub(crate) fn publish(&self, partitions: &[i32]) -> Result<(), StreamsError> {
        let Some(address) = &self.address else {
            return Ok(());
        };
        let info = InstanceInfo {
            instance_id: self.instance_id.clone(),
            address: address.clone(),
            partitions: partitions.to_vec(),
            updated_at_ms: now_millis(),
        };
        let value = serde_json::to_vec(&info)
            .map_err(|error| StreamsError::Produce(format!("membership entry: {error}")))?;
        self.send(Some(&value))?;
        self.members
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(info.instance_id.clone(), info);
        Ok(())
    }

    /// Deletes this instance's entry and waits until that is written.
    pub(crate) fn leave(&self) -> Result<(), StreamsError> {
        if self.address.is_none() {
            return Ok(());
        }
        self.send(None)?;
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|error| StreamsError::kafka("writing the membership entry", error))
    }

    fn send(&self, value: Option<&[u8]>) -> Result<(), StreamsError> {
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic)
            .partition(0)
            .key(self.instance_id.as_bytes())
            .headers(Envelope::originated(&self.writer).to_headers());
        if let Some(value) = value {
            record = record.payload(value);
        }
        self.producer
            .send(record)
            .map_err(|(error, _)| StreamsError::kafka("writing the membership entry", error))
    }
}

/// Reads the membership topic from the beginning, and then as it changes, into `members`,
/// until `stop` is set.
pub(crate) fn spawn_reader(
    kafka: &KafkaArgs,
    topic: &str,
    members: Members,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, StreamsError> {
    let consumer: BaseConsumer = kafka
        .consumer_config(&format!("{topic}-reader"), &format!("{topic}-reader"))
        .create()
        .map_err(|error| StreamsError::kafka("creating the membership reader", error))?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .map_err(|error| StreamsError::kafka("membership assignment", error))?;
    consumer
        .assign(&assignment)
        .map_err(|error| StreamsError::kafka("assigning the membership topic", error))?;
    std::thread::Builder::new()
        .name("streams-membership".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => {
                        let Some(key) = message.key() else { continue };
                        let instance_id = String::from_utf8_lossy(key).into_owned();
                        let mut members = members.write().unwrap_or_else(PoisonError::into_inner);
                        match message.payload().map(serde_json::from_slice::<InstanceInfo>) {
                            Some(Ok(info)) => {
                                members.insert(instance_id, info);
                            }
                            Some(Err(error)) => {
                                tracing::warn!(error = %error, instance_id, "unreadable membership entry");
                            }
                            None => {
                                members.remove(&instance_id);
                            }
                        }
                    }
                    Some(Err(error)) => tracing::warn!(error = %error, "membership reader error"),
                    None => {}
                }
            }
        })
        .map_err(|source| StreamsError::Io {
            what: "starting the membership reader".to_owned(),
            source,
        })
}
