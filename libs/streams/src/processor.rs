//! The processor API: for each input record of its partition, a processor reads and writes the
//! task's state stores and emits records to output topics through its [`ProcessorContext`].
//! Every store write also goes to the store's changelog topic, on the same partition.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_service::envelope::Envelope;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedHeaders, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::StreamsError;
use crate::delivery::DeliveryTracker;
use crate::serde::SerdeError;
use crate::store::{KeyValue, PartitionStore};
use crate::topology::{DecodeError, InputRecord, OutputTopic, StoreDefinition, changelog_topic};

/// Processes the records of one task (one partition of every input).
pub trait Processor: Send {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError>;

    /// Called when the task closes (its partition is revoked, or the application stops),
    /// before the final commit and before the partition can go to another instance: a
    /// processor whose partition has work under way elsewhere (say, calls another thread makes
    /// from its store) finishes or fences it here. It may block, within the consumer's poll
    /// interval.
    fn close(&mut self) {}
}

/// A processor's failure on one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessorError {
    /// The input record cannot be used (it does not decode): it goes to the dead-letter topic
    /// at once and processing continues with the next record.
    #[error("bad record: {0}")]
    BadRecord(String),
    /// Processing the record failed: it is retried with backoff, then dead-lettered or fatal,
    /// as [`crate::ErrorPolicy`] says.
    #[error("{0}")]
    Failed(String),
}

impl From<DecodeError> for ProcessorError {
    fn from(error: DecodeError) -> Self {
        ProcessorError::BadRecord(error.to_string())
    }
}

impl From<SerdeError> for ProcessorError {
    fn from(error: SerdeError) -> Self {
        ProcessorError::Failed(format!("serialization: {error}"))
    }
}

impl From<StreamsError> for ProcessorError {
    fn from(error: StreamsError) -> Self {
        ProcessorError::Failed(error.to_string())
    }
}

/// Where records go: output topics and changelogs, through one idempotent producer.
pub(crate) struct RecordSink {
    pub(crate) application_id: String,
    /// Shared so exactly-once can register it with the broker on a thread of its own while
    /// stores restore.
    pub(crate) producer: Arc<ThreadedProducer<DeliveryTracker>>,
    /// `<component>/<version>`, the `eddy-producer` header of every record written.
    pub(crate) writer: String,
}

/// How long an exactly-once commit waits, once every delivery report is in, for the producer to
/// release the reported records (a bound, not a pause: it takes microseconds).
const RELEASE_WAIT: Duration = Duration::from_millis(100);

impl RecordSink {
    /// Waits until the broker has acknowledged every record sent so far; the first delivery
    /// error, or a timeout, is an error. (Not rust-rdkafka's `flush`, which polls the
    /// producer's queue in 100 ms waits, each taken in full while the `ThreadedProducer`'s own
    /// thread takes the reports: a commit with records in flight stalled processing 100 ms.)
    pub(crate) fn wait_until_delivered(&self, timeout: Duration) -> Result<(), StreamsError> {
        let tracker = self.producer.context();
        if !tracker.wait_for_reports(timeout) {
            return Err(StreamsError::Produce(format!(
                "records still unacknowledged after {} s",
                timeout.as_secs()
            )));
        }
        match tracker.first_error() {
            Some(error) => Err(StreamsError::Produce(error)),
            None => Ok(()),
        }
    }

    /// After [`Self::wait_until_delivered`], waits (at most [`RELEASE_WAIT`]) until the
    /// producer has let go of the reported records, which it does right after each report's
    /// callback. rust-rdkafka's `commit_transaction` runs its `flush` first, and that flush
    /// returns at once only when nothing is left.
    pub(crate) fn wait_until_released(&self) {
        let released_by = Instant::now() + RELEASE_WAIT;
        while self.producer.in_flight_count() > 0 && Instant::now() < released_by {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Sends a record with optional key and headers; waits for room when the queue is full.
    pub(crate) fn send_with_headers(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), StreamsError> {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let tracker = self.producer.context();
        tracker.sending();
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    // The background thread drains the queue; give it a moment.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    tracker.refused();
                    return Err(StreamsError::Produce(format!("to {topic}: {error}")));
                }
            }
        }
    }
}

/// A task's view of one store: the store itself and, under exactly-once, the writes of the
/// open transaction, which reach RocksDB only once Kafka has committed the transaction. Local
/// state is therefore never ahead of what Kafka committed.
pub(crate) struct TaskStore {
    pub(crate) store: Arc<PartitionStore>,
    pub(crate) pending: Option<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl TaskStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StreamsError> {
        if let Some(pending) = &self.pending
            && let Some(value) = pending.get(key)
        {
            return Ok(value.clone());
        }
        self.store.get(key)
    }

    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StreamsError> {
        match (&mut self.pending, value) {
            (Some(pending), value) => {
                pending.insert(key.to_vec(), value.map(<[u8]>::to_vec));
                Ok(())
            }
            (None, Some(value)) => self.store.put(key, value),
            (None, None) => self.store.delete(key),
        }
    }

    /// Applies the committed transaction's writes to the store.
    pub(crate) fn apply_pending(&mut self) -> Result<(), StreamsError> {
        if let Some(pending) = &mut self.pending
            && !pending.is_empty()
        {
            let batch: Vec<KeyValue> = std::mem::take(pending).into_iter().collect();
            self.store.apply_batch(&batch)?;
        }
        Ok(())
    }
}

/// What a processor can do while handling a record.
pub struct ProcessorContext<'a> {
    pub(crate) partition: i32,
    pub(crate) stores: &'a mut HashMap<String, TaskStore>,
    pub(crate) sink: &'a RecordSink,
    pub(crate) input_headers: Option<&'a BorrowedHeaders>,
    pub(crate) input_timestamp: Option<i64>,
    /// The envelope of records derived from the input, made when the first one is written.
    pub(crate) output_headers: Option<OwnedHeaders>,
}

impl std::fmt::Debug for ProcessorContext<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ProcessorContext")
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl ProcessorContext<'_> {
    /// The partition this task processes.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The envelope of the record being processed (times and trace from its headers, or its
    /// timestamp and a new trace when it came from outside Eddy).
    pub fn input_envelope(&self) -> Envelope {
        Envelope::from_headers(self.input_headers, self.input_timestamp)
    }

    /// Headers for every record written while processing this input: its envelope carried on
    /// (same event and ingest time, same trace, a new span) with this component as producer.
    fn output_headers(&mut self) -> OwnedHeaders {
        match &self.output_headers {
            Some(headers) => headers.clone(),
            None => {
                let headers = self.input_envelope().derive(&self.sink.writer).to_headers();
                self.output_headers = Some(headers.clone());
                headers
            }
        }
    }

    /// The value stored under `key`.
    pub fn get<K: 'static, V: 'static>(
        &self,
        store: &StoreDefinition<K, V>,
        key: &K,
    ) -> Result<Option<V>, ProcessorError> {
        let key = store.key_serde.serialize(key)?;
        let local = self
            .stores
            .get(store.name())
            .ok_or_else(|| StreamsError::UnknownStore(store.name().to_owned()))?;
        match local.get(&key)? {
            Some(bytes) => Ok(Some(store.value_serde.deserialize(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key`, locally and in the changelog.
    pub fn put<K: 'static, V: 'static>(
        &mut self,
        store: &StoreDefinition<K, V>,
        key: &K,
        value: &V,
    ) -> Result<(), ProcessorError> {
        let key = store.key_serde.serialize(key)?;
        let value = store.value_serde.serialize(value)?;
        self.local_store(store.name())?.write(&key, Some(&value))?;
        self.sink.send_with_headers(
            &changelog_topic(&self.sink.application_id, store.name()),
            Some(self.partition),
            Some(&key),
            Some(&value),
            // Changelogs replicate the store, nothing reads them as facts: no envelope,
            // which keeps them small and restores fast.
            None,
        )?;
        Ok(())
    }

    /// Deletes `key`, locally and in the changelog (a tombstone).
    pub fn delete<K: 'static, V: 'static>(
        &mut self,
        store: &StoreDefinition<K, V>,
        key: &K,
    ) -> Result<(), ProcessorError> {
        let key = store.key_serde.serialize(key)?;
        self.local_store(store.name())?.write(&key, None)?;
        self.sink.send_with_headers(
            &changelog_topic(&self.sink.application_id, store.name()),
            Some(self.partition),
            Some(&key),
            None,
            // Changelogs replicate the store, nothing reads them as facts: no envelope,
            // which keeps them small and restores fast.
            None,
        )?;
        Ok(())
    }

    /// Sends a record to an output topic, partitioned by key like the Java producer; `None` as
    /// the value sends a tombstone.
    pub fn emit<K: 'static, V: 'static>(
        &mut self,
        output: &OutputTopic<K, V>,
        key: &K,
        value: Option<&V>,
    ) -> Result<(), ProcessorError> {
        let key = output.key_serde.serialize(key)?;
        let value = value
            .map(|value| output.value_serde.serialize(value))
            .transpose()?;
        let headers = self.output_headers();
        self.sink.send_with_headers(
            output.name(),
            None,
            Some(&key),
            value.as_deref(),
            Some(headers),
        )?;
        Ok(())
    }

    /// Sends a record to an output topic on an explicit partition: for topics partitioned by
    /// something other than their key (messages and metadata are partitioned by conversation
    /// id, so a conversation's records meet in one task).
    pub fn emit_to_partition<K: 'static, V: 'static>(
        &mut self,
        output: &OutputTopic<K, V>,
        partition: i32,
        key: &K,
        value: Option<&V>,
    ) -> Result<(), ProcessorError> {
        let key = output.key_serde.serialize(key)?;
        let value = value
            .map(|value| output.value_serde.serialize(value))
            .transpose()?;
        let headers = self.output_headers();
        self.sink.send_with_headers(
            output.name(),
            Some(partition),
            Some(&key),
            value.as_deref(),
            Some(headers),
        )?;
        Ok(())
    }

    fn local_store(&mut self, name: &str) -> Result<&mut TaskStore, StreamsError> {
        self.stores
            .get_mut(name)
            .ok_or_else(|| StreamsError::UnknownStore(name.to_owned()))
    }
}
