//! The admin service's state: three small compacted topics (channels, tags, webhook
//! subscriptions), each read whole into memory on every instance as a [`GlobalTable`], and the
//! writer that changes them. Because every instance holds everything, any instance answers any
//! request the same way, without routing.
//!
//! Writes are read-your-writes: a handler writes a record, then waits until its own table has
//! read that record back, so its answer and the next request to this instance see the change.
//! Writes to one table are serialised on an instance (a check such as "is this tag name free?"
//! and the write that depends on it happen under one lock); two instances writing conflicting
//! changes at the same moment are not coordinated: the topic keeps the later record.
//!
//! A table written by others (the webhook dead letters) can instead be brought up to date
//! before a request reads it: [`TopicTable::read_to_end`] waits until it has read everything
//! written to its topic before the request came.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_api::ApiError;
use eddy_schemas::writer::{OutgoingRecord, Placement, RecordWriter};
use eddy_schemas::{AvroSerde, Entity};
use eddy_service::ComponentInfo;
use eddy_service::envelope::{Envelope, TraceContext, now_millis};
use eddy_service::kafka::KafkaArgs;
use eddy_streams::{GlobalTable, StringSerde};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::{Mutex, MutexGuard};

use crate::AdminError;

/// How long a handler waits for its own table to show the record it wrote.
const READ_YOUR_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One compacted topic read into memory, its value serde, and the writer for it.
pub struct TopicTable<T> {
    /// What the table holds, plural ("tags"), for messages.
    name: &'static str,
    topic: String,
    table: GlobalTable<String, T>,
    serde: AvroSerde<T>,
    writer: RecordWriter,
    component: ComponentInfo,
    /// Held across a check of the table and the write that depends on it.
    writes: Mutex<()>,
}

impl<T> std::fmt::Debug for TopicTable<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TopicTable")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// How long a metadata or end-offset request to Kafka may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the current end offsets of one topic (a client of its own, made once).
pub struct EndOffsets {
    topic: String,
    consumer: Arc<BaseConsumer>,
}

impl std::fmt::Debug for EndOffsets {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EndOffsets")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl EndOffsets {
    pub fn new(kafka: &KafkaArgs, client_id: &str, topic: &str) -> Result<Self, AdminError> {
        let consumer: BaseConsumer =
            kafka
                .admin_config(client_id)
                .create()
                .map_err(|error| AdminError::Table {
                    topic: topic.to_owned(),
                    message: format!("creating the end offset reader: {error}"),
                })?;
        Ok(EndOffsets {
            topic: topic.to_owned(),
            consumer: Arc::new(consumer),
        })
    }

    /// `(partition, end offset)` of every partition now.
    async fn current(&self) -> Result<Vec<(i32, i64)>, String> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = consumer
                .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
                .map_err(|error| error.to_string())?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|found| found.name() == topic)
                .flat_map(|found| found.partitions().iter().map(|partition| partition.id()))
                .collect();
            partitions
                .into_iter()
                .map(|partition| {
                    consumer
                        .fetch_watermarks(&topic, partition, METADATA_TIMEOUT)
                        .map(|(_, high)| (partition, high))
                        .map_err(|error| error.to_string())
                })
                .collect()
        })
        .await
        .map_err(|error| error.to_string())?
    }
}

/// What [`TopicTable::open`] needs besides the topic: shared by the three tables.
#[derive(Debug, Clone)]
pub struct TableSettings<'a> {
    pub kafka: &'a KafkaArgs,
    pub writer: &'a RecordWriter,
    pub component: ComponentInfo,
}

impl<T> TopicTable<T>
where
    T: Entity + Clone + Send + Sync + 'static,
{
    /// Starts reading `topic` from its beginning (on a thread of its own) with `serde`.
    pub async fn open(
        name: &'static str,
        topic: &str,
        serde: AvroSerde<T>,
        settings: &TableSettings<'_>,
    ) -> Result<Self, AdminError> {
        let kafka = settings.kafka.clone();
        let client_id = format!("{}-{name}", settings.component.name);
        let topic_name = topic.to_owned();
        let reader_serde = serde.clone();
        // Starting reads partition metadata and end offsets: blocking calls.
        let table = tokio::task::spawn_blocking(move || {
            GlobalTable::start(&kafka, &client_id, &topic_name, StringSerde, reader_serde)
        })
        .await
        .map_err(|error| AdminError::Table {
            topic: topic.to_owned(),
            message: error.to_string(),
        })?
        .map_err(|error| AdminError::Table {
            topic: topic.to_owned(),
            message: error.to_string(),
        })?;
        Ok(TopicTable {
            name,
            topic: topic.to_owned(),
            table,
            serde,
            writer: settings.writer.clone(),
            component: settings.component,
            writes: Mutex::new(()),
        })
    }

    /// The table once it has caught up with its topic; a 503 (`loading`) before.
    pub fn loaded(&self) -> Result<&GlobalTable<String, T>, ApiError> {
        if self.table.is_caught_up() {
            Ok(&self.table)
        } else {
            Err(ApiError::unavailable(
                "loading",
                format!(
                    "the {} are still loading from Kafka; retry shortly",
                    self.name
                ),
            ))
        }
    }

    /// The table whether or not it has caught up (for readiness and shutdown).
    pub fn table(&self) -> &GlobalTable<String, T> {
        &self.table
    }

    /// The table once it has read every record written to its topic before now (at most
    /// [`READ_YOUR_WRITE_TIMEOUT`]; after that, or if Kafka does not say where the topic ends,
    /// the table as it is), for a request that must see what others wrote just before it.
    /// A 503 (`loading`) before the table first caught up.
    pub async fn read_to_end(
        &self,
        ends: &EndOffsets,
    ) -> Result<&GlobalTable<String, T>, ApiError> {
        let table = self.loaded()?;
        let deadline = Instant::now() + READ_YOUR_WRITE_TIMEOUT;
        match ends.current().await {
            Ok(ends) => {
                for (partition, end) in ends.into_iter().filter(|(_, end)| *end > 0) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !table.wait_for(partition, end - 1, left).await {
                        tracing::warn!(
                            topic = %self.topic,
                            partition,
                            end,
                            "the table did not reach the end of its topic in time; answering from what it read"
                        );
                        break;
                    }
                }
            }
            Err(error) => tracing::warn!(
                topic = %self.topic,
                error = %error,
                "the end offsets are unknown; answering from what the table read"
            ),
        }
        Ok(table)
    }

    /// Serialises writes to this table on this instance until the guard is dropped; take it
    /// before reading what a write depends on.
    pub async fn lock_writes(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// Writes `value` under `key` (`None`: a tombstone that deletes it), with an envelope that
    /// continues `trace` (the request's `traceparent`), and waits until this instance's table
    /// has read it back.
    pub async fn write(
        &self,
        key: &str,
        value: Option<&T>,
        trace: Option<&TraceContext>,
    ) -> Result<(), ApiError> {
        let framed = value
            .map(|value| self.serde.encode(value))
            .transpose()
            .map_err(|error| {
                ApiError::internal(&format!("encoding a {} record", self.name), error)
            })?;
        let envelope = Envelope::ingested(&self.component, now_millis(), trace);
        let written = self
            .writer
            .send(OutgoingRecord {
                topic: &self.topic,
                key,
                value: framed,
                placement: Placement::ByKey,
                envelope: &envelope,
            })
            .await
            .map_err(ApiError::write_failed)?;
        if !self
            .table
            .wait_for(written.partition, written.offset, READ_YOUR_WRITE_TIMEOUT)
            .await
        {
            // The write is in Kafka and the answer describes it; only this instance's next
            // read may briefly lag behind.
            tracing::warn!(
                topic = %self.topic,
                partition = written.partition,
                offset = written.offset,
                "the table did not show its own write in time; answering anyway"
            );
        }
        tracing::debug!(
            topic = %self.topic,
            partition = written.partition,
            offset = written.offset,
            deleted = value.is_none(),
            "record written"
        );
        Ok(())
    }
}
