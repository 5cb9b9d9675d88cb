//! Global tables: every partition of a small compacted topic (channels, tags, sources, webhook
//! subscriptions) read into memory on every instance, like Kafka Streams' `GlobalKTable`. The
//! topic is its own changelog, so a table rebuilds from it at start-up (in milliseconds for
//! configuration-sized topics) and needs no routing: every instance answers from the whole table.
//!
//! A table is *caught up* once it has read every partition up to the end offsets it found at
//! start-up; a component holds readiness until then. [`GlobalTable::wait_for`] lets a handler
//! that just wrote a record answer only once its own table shows it (read-your-writes).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use eddy_service::kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::StreamsError;
use crate::serde::Serde;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// Until caught up, polls return almost at once when nothing is queued: the commit marker
/// after a transactional record is taken by the next poll, which otherwise waits its whole
/// timeout before the position past the marker (the end offset) shows: 100 ms of every start
/// whose table ends in a transaction.
const CATCH_UP_POLL_TIMEOUT: Duration = Duration::from_millis(5);

/// A topic read whole into memory and kept current. Cheap to clone.
pub struct GlobalTable<K, V> {
    inner: Arc<TableInner<K, V>>,
}

impl<K, V> Clone for GlobalTable<K, V> {
    fn clone(&self) -> Self {
        GlobalTable {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> std::fmt::Debug for GlobalTable<K, V> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GlobalTable")
            .field("topic", &self.inner.topic)
            .finish_non_exhaustive()
    }
}

struct TableInner<K, V> {
    topic: String,
    entries: RwLock<HashMap<K, V>>,
    /// The next offset to read, per partition.
    positions: watch::Sender<HashMap<i32, i64>>,
    caught_up: watch::Sender<bool>,
    stop: AtomicBool,
    skipped_records: std::sync::atomic::AtomicU64,
}

impl<K, V> GlobalTable<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts reading `topic` from the beginning of every partition on a thread of its own.
    /// Records that do not decode are logged with their position and skipped: the source topic
    /// keeps them, and one bad record must not stop every instance from starting.
    pub fn start(
        kafka: &KafkaArgs,
        client_id: &str,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> Result<Self, StreamsError> {
        // No consumer group: positions are never committed, every start reads the whole topic.
        let consumer: BaseConsumer = kafka
            .consumer_config(client_id, &format!("{client_id}-global-unused"))
            .create()
            .map_err(|error| {
                StreamsError::kafka(
                    format!("creating the reader of global table {topic}"),
                    error,
                )
            })?;
        let metadata = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|error| {
                StreamsError::kafka(format!("reading the partitions of {topic}"), error)
            })?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|found| found.name() == topic && found.error().is_none())
            .flat_map(|found| found.partitions().iter().map(|partition| partition.id()))
            .collect();
        if partitions.is_empty() {
            return Err(StreamsError::Topic {
                topic: topic.to_owned(),
                message: "does not exist (run `eddy topics provision`)".to_owned(),
            });
        }
        let mut targets = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for &partition in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
                .map_err(|error| {
                    StreamsError::kafka(format!("reading the end offsets of {topic}"), error)
                })?;
            targets.insert(partition, high);
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(low))
                .map_err(|error| StreamsError::kafka(format!("assigning {topic}"), error))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|error| StreamsError::kafka(format!("assigning {topic}"), error))?;
        let (positions, _) = watch::channel(HashMap::new());
        let (caught_up, _) = watch::channel(false);
        let inner = Arc::new(TableInner {
            topic: topic.to_owned(),
            entries: RwLock::new(HashMap::new()),
            positions,
            caught_up,
            stop: AtomicBool::new(false),
            skipped_records: std::sync::atomic::AtomicU64::new(0),
        });
        let reader = TableReader {
            inner: Arc::clone(&inner),
            consumer,
            key_serde,
            value_serde,
            targets,
            partitions,
        };
        std::thread::Builder::new()
            .name(format!("global-{topic}"))
            .spawn(move || reader.run())
            .map_err(|source| StreamsError::Io {
                what: format!("starting the reader of global table {topic}"),
                source,
            })?;
        Ok(GlobalTable { inner })
    }
}

impl<K, V> GlobalTable<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    /// The topic this table reads.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The current value of `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        self.inner
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> Vec<(K, V)> {
        self.inner
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// How many entries the table holds.
    pub fn len(&self) -> usize {
        self.inner
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once the table has read up to the end offsets found at start-up.
    pub fn is_caught_up(&self) -> bool {
        *self.inner.caught_up.borrow()
    }

    /// Records skipped because they did not decode.
    pub fn skipped_records(&self) -> u64 {
        self.inner.skipped_records.load(Ordering::Relaxed)
    }

    /// Watches the caught-up flag (false until the first full read).
    pub fn caught_up_changes(&self) -> watch::Receiver<bool> {
        self.inner.caught_up.subscribe()
    }

    /// Waits until the table has read the record at `offset` of `partition` (the offset a
    /// producer got back for a write), at most `timeout`. Returns whether it did.
    pub async fn wait_for(&self, partition: i32, offset: i64, timeout: Duration) -> bool {
        let mut positions = self.inner.positions.subscribe();
        let reached = positions.wait_for(|positions| {
            positions
                .get(&partition)
                .is_some_and(|position| *position > offset)
        });
        matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(_)))
    }

    /// Stops the reader thread (it also stops when the last handle is dropped).
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
    }
}

impl<K, V> Drop for GlobalTable<K, V> {
    fn drop(&mut self) {
        // The reader holds one reference; when only it is left, nobody reads the table.
        if Arc::strong_count(&self.inner) <= 2 {
            self.inner.stop.store(true, Ordering::Relaxed);
        }
    }
}

struct TableReader<K, V, KS, VS> {
    inner: Arc<TableInner<K, V>>,
    consumer: BaseConsumer,
    key_serde: KS,
    value_serde: VS,
    /// End offsets at start-up: caught up once every partition reached its target.
    targets: HashMap<i32, i64>,
    partitions: Vec<i32>,
}

impl<K, V, KS, VS> TableReader<K, V, KS, VS>
where
    K: Eq + Hash + Clone,
    V: Clone,
    KS: Serde<K>,
    VS: Serde<V>,
{
    fn run(self) {
        let topic = self.inner.topic.clone();
        self.refresh_positions();
        while !self.inner.stop.load(Ordering::Relaxed) {
            let timeout = if *self.inner.caught_up.borrow() {
                POLL_TIMEOUT
            } else {
                CATCH_UP_POLL_TIMEOUT
            };
            match self.consumer.poll(timeout) {
                Some(Ok(message)) => {
                    self.apply(
                        message.partition(),
                        message.offset(),
                        message.key(),
                        message.payload(),
                    );
                    let partition = message.partition();
                    let next = message.offset() + 1;
                    self.inner.positions.send_modify(|positions| {
                        positions.insert(partition, next);
                    });
                    self.check_caught_up();
                }
                Some(Err(error)) => {
                    tracing::warn!(topic, error = %error, "global table read failed; retrying");
                }
                // Idle: positions can be past the last record (compaction gaps, control
                // records), so take them from the consumer.
                None => self.refresh_positions(),
            }
        }
        tracing::debug!(topic, "global table reader stopped");
    }

    fn apply(&self, partition: i32, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        let topic = &self.inner.topic;
        let skip = |reason: String| {
            self.inner.skipped_records.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                topic,
                partition,
                offset,
                error = %reason,
                "global table skipped a record it cannot decode"
            );
        };
        let Some(key) = key else {
            return skip("the record has no key".to_owned());
        };
        let key = match self.key_serde.deserialize(key) {
            Ok(key) => key,
            Err(error) => return skip(format!("key: {error}")),
        };
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match value {
            None => {
                entries.remove(&key);
            }
            Some(value) => match self.value_serde.deserialize(value) {
                Ok(value) => {
                    entries.insert(key, value);
                }
                Err(error) => {
                    drop(entries);
                    skip(format!("value: {error}"));
                }
            },
        }
    }

    fn refresh_positions(&self) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let known: Vec<(i32, i64)> = positions
            .elements()
            .iter()
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) => Some((element.partition(), offset)),
                _ => None,
            })
            .collect();
        if !known.is_empty() {
            self.inner.positions.send_if_modified(|positions| {
                let mut changed = false;
                for (partition, offset) in &known {
                    let current = positions.entry(*partition).or_insert(0);
                    if *offset > *current {
                        *current = *offset;
                        changed = true;
                    }
                }
                changed
            });
        }
        self.check_caught_up();
    }

    fn check_caught_up(&self) {
        if *self.inner.caught_up.borrow() {
            return;
        }
        let positions = self.inner.positions.borrow();
        let done = self.partitions.iter().all(|partition| {
            let target = self.targets.get(partition).copied().unwrap_or(0);
            target == 0 || positions.get(partition).is_some_and(|at| *at >= target)
        });
        drop(positions);
        if done {
            tracing::info!(
                topic = self.inner.topic,
                entries = self
                    .inner
                    .entries
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len(),
                "global table caught up"
            );
            self.inner.caught_up.send_replace(true);
        }
    }
}
