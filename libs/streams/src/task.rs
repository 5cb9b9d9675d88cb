//! Tasks: one per assigned partition, each with its processor and its stores. The task manager
//! opens and restores stores when partitions are assigned, runs records through processors,
//! commits (outputs acknowledged, then input offsets; store checkpoints move on in the background) and closes stores when
//! partitions are revoked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use eddy_service::envelope::Envelope;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Header, Message};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use rocksdb::WriteBatch;

use crate::StreamsError;
use crate::app::{AppState, ErrorPolicy, ProcessingGuarantee, StateCell, dead_letter_topic};
use crate::membership::MembershipPublisher;
use crate::metrics::StreamsMetrics;
use crate::processor::{Processor, ProcessorContext, ProcessorError, RecordSink, TaskStore};
use crate::query::OpenStores;
use crate::store::PartitionStore;
use crate::topology::{InputRecord, ProcessorFactory, changelog_topic};

const RESTORE_BATCH: usize = 10_000;
const RESTORE_STALL_TIMEOUT: Duration = Duration::from_secs(60);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// How often a changed store's checkpoint moves on, at the latest (commits are far more
/// frequent: a checkpoint needs the store's memtable on disk, which is not worth it per commit).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
/// How far a store's changelog may run ahead of its checkpoint before the checkpoint moves
/// on sooner (as Kafka Streams does): what a restart after a crash replays, at most, per
/// store and interval.
pub const CHECKPOINT_RECORDS: i64 = 10_000;

/// A store of a newly assigned partition, checked against its changelog.
struct PreparedStore {
    name: String,
    changelog: String,
    store: PartitionStore,
    /// Where its restore starts (its checkpoint, or the changelog's first offset).
    start: i64,
    /// The changelog's end when the partition was assigned.
    high: i64,
    checkpoint: Option<i64>,
}

/// One changelog partition to read into a store.
struct RestoreJob<'a> {
    store: &'a PartitionStore,
    changelog: String,
    partition: i32,
    start: i64,
    end: i64,
}

/// How far one restore job has come.
struct RestoreProgress {
    batch: WriteBatch,
    restored: u64,
    done: bool,
    remaining: prometheus::IntGauge,
}

/// Stores opened for new partitions, with their changelogs' (low, high) offsets.
type OpenedStores = HashMap<i32, HashMap<String, (PartitionStore, (i64, i64))>>;

/// How long a just-created changelog may take to answer for its offsets.
const WATERMARKS_DEADLINE: Duration = Duration::from_secs(30);

/// The (first, end) offsets of many changelog partitions in two ListOffsets requests. The end
/// is the last stable offset for this read-committed consumer: under exactly-once, records of
/// a dead predecessor's open transaction lie beyond it and will be aborted. Partitions the
/// broker did not answer for are left out (the caller asks for them one by one).
fn changelog_bounds<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    changelogs: &[(i32, String, String)],
) -> HashMap<(String, i32), (i64, i64)> {
    let lookup = |wanted: Offset| -> HashMap<(String, i32), i64> {
        let mut list = TopicPartitionList::new();
        for (partition, _, changelog) in changelogs {
            if list
                .add_partition_offset(changelog, *partition, wanted)
                .is_err()
            {
                return HashMap::new();
            }
        }
        match consumer.offsets_for_times(list, Duration::from_secs(10)) {
            Ok(found) => found
                .elements()
                .iter()
                .filter(|element| element.error().is_ok())
                .filter_map(|element| match element.offset() {
                    Offset::Offset(offset) if offset >= 0 => {
                        Some(((element.topic().to_owned(), element.partition()), offset))
                    }
                    _ => None,
                })
                .collect(),
            Err(error) => {
                tracing::debug!(error = %error, "listing changelog offsets failed; asking per partition");
                HashMap::new()
            }
        }
    };
    let lows = lookup(Offset::Beginning);
    let highs = lookup(Offset::End);
    lows.into_iter()
        .filter_map(|(key, low)| highs.get(&key).map(|high| (key, (low, *high))))
        .collect()
}

/// The low and high offsets of a changelog partition. A topic created a moment ago can answer
/// "unknown partition" or "leader not available" until its metadata has spread: retry those
/// for up to 30 s instead of failing the application.
fn changelog_watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    changelog: &str,
    partition: i32,
) -> Result<(i64, i64), StreamsError> {
    let deadline = Instant::now() + WATERMARKS_DEADLINE;
    let mut backoff = Duration::from_millis(50);
    loop {
        match consumer.fetch_watermarks(changelog, partition, Duration::from_secs(10)) {
            Ok(watermarks) => return Ok(watermarks),
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(changelog, partition, error = %error, "changelog offsets not available yet; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(error) => {
                return Err(StreamsError::kafka(
                    format!("watermarks of {changelog}/{partition}"),
                    error,
                ));
            }
        }
    }
}

/// Header names on dead-lettered records.
pub const DLQ_ERROR_HEADER: &str = "eddy.dlq.error";
pub const DLQ_TOPIC_HEADER: &str = "eddy.dlq.topic";
pub const DLQ_PARTITION_HEADER: &str = "eddy.dlq.partition";
pub const DLQ_OFFSET_HEADER: &str = "eddy.dlq.offset";
pub const DLQ_ATTEMPTS_HEADER: &str = "eddy.dlq.attempts";

/// Sends `record` unchanged (key and value) to the dead-letter topic, with headers saying what
/// was wrong and where it came from.
fn dead_letter(
    sink: &RecordSink,
    dead_letter_topic: &str,
    record: &InputRecord<'_>,
    reason: &str,
    attempts: u32,
) -> Result<(), StreamsError> {
    tracing::warn!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        error = %reason,
        dead_letter_topic,
        "record dead-lettered"
    );
    // The record keeps its envelope (trace and times) so its journey can be followed.
    let envelope = Envelope::from_headers(record.headers, record.timestamp).derive(&sink.writer);
    let headers = envelope
        .to_headers()
        .insert(Header {
            key: DLQ_ERROR_HEADER,
            value: Some(reason),
        })
        .insert(Header {
            key: DLQ_TOPIC_HEADER,
            value: Some(record.topic),
        })
        .insert(Header {
            key: DLQ_PARTITION_HEADER,
            value: Some(&record.partition.to_string()),
        })
        .insert(Header {
            key: DLQ_OFFSET_HEADER,
            value: Some(&record.offset.to_string()),
        })
        .insert(Header {
            key: DLQ_ATTEMPTS_HEADER,
            value: Some(&attempts.to_string()),
        });
    sink.send_with_headers(
        dead_letter_topic,
        None,
        record.key,
        record.value,
        Some(headers),
    )
}

struct Task {
    partition: i32,
    stores: HashMap<String, TaskStore>,
    processor: Box<dyn Processor>,
    /// Per input topic, the offset to commit (last processed + 1).
    next_offsets: HashMap<String, i64>,
    /// Per store, the changelog offset of the last checkpoint.
    checkpointed: HashMap<String, i64>,
    /// Per store, the checkpoint to write once the flush under way has finished.
    flushing: HashMap<String, i64>,
}

pub(crate) struct TaskManager {
    application_id: String,
    inputs: Vec<String>,
    store_names: Vec<String>,
    processor_factory: ProcessorFactory,
    partitions_dir: PathBuf,
    pub(crate) sink: RecordSink,
    restore_consumer: BaseConsumer,
    tasks: BTreeMap<i32, Task>,
    metrics: StreamsMetrics,
    /// Time spent in processors since the last commit (reported per commit, not per record).
    process_time: Duration,
    state: StateCell,
    uncommitted: bool,
    error_policy: ErrorPolicy,
    max_retries: u32,
    dead_letter_topic: String,
    membership: MembershipPublisher,
    open_stores: OpenStores,
    guarantee: ProcessingGuarantee,
    state_cleanup_delay: Duration,
    /// Partitions whose local state this instance no longer uses, and since when.
    released: HashMap<i32, Instant>,
    /// Exactly-once: a transaction is open (records were sent since the last commit).
    in_transaction: bool,
    /// Exactly-once: the registration of the transactional producer, while it runs.
    transactions_ready:
        Option<Result<std::thread::JoinHandle<Result<(), StreamsError>>, StreamsError>>,
    last_checkpoint: Instant,
    /// A failure inside a rebalance callback, raised by the processing loop.
    pub(crate) fatal: Option<StreamsError>,
}

pub(crate) struct TaskManagerParts {
    pub(crate) application_id: String,
    pub(crate) inputs: Vec<String>,
    pub(crate) store_names: Vec<String>,
    pub(crate) processor_factory: ProcessorFactory,
    pub(crate) partitions_dir: PathBuf,
    pub(crate) sink: RecordSink,
    pub(crate) restore_consumer: BaseConsumer,
    pub(crate) metrics: StreamsMetrics,
    pub(crate) state: StateCell,
    pub(crate) error_policy: ErrorPolicy,
    pub(crate) max_retries: u32,
    pub(crate) membership: MembershipPublisher,
    pub(crate) open_stores: OpenStores,
    pub(crate) guarantee: ProcessingGuarantee,
    pub(crate) state_cleanup_delay: Duration,
}

impl TaskManager {
    pub(crate) fn new(parts: TaskManagerParts) -> Self {
        TaskManager {
            application_id: parts.application_id.clone(),
            inputs: parts.inputs,
            store_names: parts.store_names,
            processor_factory: parts.processor_factory,
            partitions_dir: parts.partitions_dir,
            sink: parts.sink,
            restore_consumer: parts.restore_consumer,
            tasks: BTreeMap::new(),
            metrics: parts.metrics,
            process_time: Duration::ZERO,
            state: parts.state,
            uncommitted: false,
            error_policy: parts.error_policy,
            max_retries: parts.max_retries,
            dead_letter_topic: dead_letter_topic(&parts.application_id),
            membership: parts.membership,
            open_stores: parts.open_stores,
            guarantee: parts.guarantee,
            state_cleanup_delay: parts.state_cleanup_delay,
            released: HashMap::new(),
            in_transaction: false,
            transactions_ready: None,
            last_checkpoint: Instant::now(),
            fatal: None,
        }
    }

    pub(crate) fn set_state(&self, state: AppState) {
        self.state.set(state);
    }

    /// Opens and restores the stores of newly assigned partitions and creates their tasks.
    pub(crate) fn assign(&mut self, assignment: &TopicPartitionList) -> Result<(), StreamsError> {
        let elements = assignment.elements();
        let partitions: BTreeSet<i32> =
            elements.iter().map(|element| element.partition()).collect();
        for partition in &partitions {
            let topics: BTreeSet<&str> = elements
                .iter()
                .filter(|element| element.partition() == *partition)
                .map(|element| element.topic())
                .collect();
            if topics.len() != self.inputs.len() {
                tracing::warn!(partition, ?topics, inputs = ?self.inputs, "partition assigned for only some inputs");
            }
        }
        self.set_state(AppState::Restoring);
        let new_partitions: Vec<i32> = partitions
            .into_iter()
            .filter(|partition| !self.tasks.contains_key(partition))
            .collect();
        let mut opened = self.open_stores_of(&new_partitions)?;
        let mut prepared = Vec::with_capacity(new_partitions.len());
        for partition in &new_partitions {
            let stores = opened.remove(partition).unwrap_or_default();
            prepared.push((*partition, self.prepare_stores(*partition, stores)?));
        }
        // Every changelog partition to catch up, read in one pass.
        let jobs: Vec<RestoreJob<'_>> = prepared
            .iter()
            .flat_map(|(partition, stores)| {
                stores
                    .iter()
                    .filter(|prepared| prepared.start < prepared.high)
                    .map(|prepared| RestoreJob {
                        store: &prepared.store,
                        changelog: prepared.changelog.clone(),
                        partition: *partition,
                        start: prepared.start,
                        end: prepared.high,
                    })
            })
            .collect();
        self.restore_all(&jobs)?;
        drop(jobs);
        // No checkpoint now: flushing and syncing every store would cost a restart more than
        // the restore itself. The checkpoints on disk stay valid (local data only went further),
        // and the next periodic checkpoint records the new position.
        for (partition, stores) in prepared {
            let task = self.make_task(partition, stores);
            {
                let mut open = self
                    .open_stores
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                for (name, task_store) in &task.stores {
                    open.insert((name.clone(), partition), Arc::clone(&task_store.store));
                }
            }
            self.tasks.insert(partition, task);
        }
        let owned: Vec<i32> = self.tasks.keys().copied().collect();
        self.track_unowned_state();
        self.membership.publish(&owned)?;
        tracing::info!(partitions = ?self.tasks.keys().collect::<Vec<_>>(), "tasks running");
        self.set_state(AppState::Running);
        Ok(())
    }

    /// Opens every store of `partitions` at once, on a thread each: opening a RocksDB costs
    /// milliseconds of file work, and a restart opens one per store and partition, so doing
    /// them side by side is what keeps a restart under a second.
    fn open_stores_of(&self, partitions: &[i32]) -> Result<OpenedStores, StreamsError> {
        let wal = self.guarantee == ProcessingGuarantee::ExactlyOnce;
        let wanted: Vec<(i32, String)> = partitions
            .iter()
            .flat_map(|partition| {
                self.store_names
                    .iter()
                    .map(move |name| (*partition, name.clone()))
            })
            .collect();
        let mut watermarks = HashMap::new();
        let results: Vec<(i32, String, Result<PartitionStore, StreamsError>)> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = wanted
                    .iter()
                    .map(|(partition, name)| {
                        let partition_dir = self.partitions_dir.join(partition.to_string());
                        scope.spawn(move || {
                            PartitionStore::open_with_wal(&partition_dir, name, *partition, wal)
                        })
                    })
                    .collect();
                // Meanwhile, where each changelog starts and ends: two requests for all of
                // them, or one per partition if the broker does not answer those.
                let all: Vec<(i32, String, String)> = wanted
                    .iter()
                    .map(|(partition, name)| {
                        (
                            *partition,
                            name.clone(),
                            changelog_topic(&self.application_id, name),
                        )
                    })
                    .collect();
                let batched = changelog_bounds(&self.restore_consumer, &all);
                for (partition, name, changelog) in &all {
                    let bounds = match batched.get(&(changelog.clone(), *partition)) {
                        Some(bounds) => Ok(*bounds),
                        None => changelog_watermarks(&self.restore_consumer, changelog, *partition),
                    };
                    watermarks.insert((*partition, name.clone()), bounds);
                }
                wanted
                    .iter()
                    .zip(handles)
                    .map(|((partition, name), handle)| {
                        let opened = handle.join().unwrap_or_else(|_| {
                            Err(StreamsError::Io {
                                what: format!("opening store {name} of partition {partition}"),
                                source: std::io::Error::other("the opening thread panicked"),
                            })
                        });
                        (*partition, name.clone(), opened)
                    })
                    .collect()
            });
        let mut opened: OpenedStores = HashMap::new();
        for (partition, name, store) in results {
            let bounds = watermarks
                .remove(&(partition, name.clone()))
                .ok_or_else(|| StreamsError::UnknownStore(name.clone()))??;
            opened
                .entry(partition)
                .or_default()
                .insert(name, (store?, bounds));
        }
        Ok(opened)
    }

    /// Checks the opened stores of `partition` against their changelogs: where each must
    /// restore from (its checkpoint, or the changelog's start), and a store whose checkpoint is
    /// ahead of its changelog (the topic was recreated) wiped first.
    fn prepare_stores(
        &mut self,
        partition: i32,
        mut opened: HashMap<String, (PartitionStore, (i64, i64))>,
    ) -> Result<Vec<PreparedStore>, StreamsError> {
        let partition_dir = self.partitions_dir.join(partition.to_string());
        let wal = self.guarantee == ProcessingGuarantee::ExactlyOnce;
        let mut prepared = Vec::with_capacity(self.store_names.len());
        for name in self.store_names.clone() {
            let changelog = changelog_topic(&self.application_id, &name);
            let (mut store, (low, high)) = match opened.remove(&name) {
                Some(opened) => opened,
                None => (
                    PartitionStore::open_with_wal(&partition_dir, &name, partition, wal)?,
                    changelog_watermarks(&self.restore_consumer, &changelog, partition)?,
                ),
            };
            if let Some(checkpoint) = store.checkpoint()?
                && checkpoint > high
            {
                tracing::warn!(store = %name, partition, checkpoint, high, "checkpoint is ahead of the changelog: restoring in full");
                drop(store);
                std::fs::remove_file(partition_dir.join(format!("{name}.checkpoint"))).map_err(
                    |source| StreamsError::Io {
                        what: "removing a stale checkpoint".to_owned(),
                        source,
                    },
                )?;
                store = PartitionStore::open_with_wal(&partition_dir, &name, partition, wal)?;
            }
            let checkpoint = store.checkpoint()?;
            prepared.push(PreparedStore {
                name,
                changelog,
                start: checkpoint.unwrap_or(low).max(low),
                high,
                checkpoint,
                store,
            });
        }
        Ok(prepared)
    }

    fn make_task(&mut self, partition: i32, prepared: Vec<PreparedStore>) -> Task {
        let wal = self.guarantee == ProcessingGuarantee::ExactlyOnce;
        let mut stores = HashMap::new();
        let mut checkpointed = HashMap::new();
        for store in prepared {
            // What the checkpoint file says (the next checkpoint moves it on).
            checkpointed.insert(store.name.clone(), store.checkpoint.unwrap_or(-1));
            stores.insert(
                store.name,
                TaskStore {
                    store: Arc::new(store.store),
                    pending: wal.then(BTreeMap::new),
                },
            );
        }
        Task {
            partition,
            stores,
            processor: (self.processor_factory)(partition),
            next_offsets: HashMap::new(),
            checkpointed,
            flushing: HashMap::new(),
        }
    }

    /// Reads every job's changelog partition from its start up to its end into its store, in
    /// write batches without the WAL, with one assignment of all of them: the restore of a
    /// restart costs a few fetches, not a round trip per store.
    fn restore_all(&self, jobs: &[RestoreJob<'_>]) -> Result<(), StreamsError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let began = Instant::now();
        let mut assignment = TopicPartitionList::new();
        let mut index = HashMap::new();
        let mut progress = Vec::with_capacity(jobs.len());
        for (position, job) in jobs.iter().enumerate() {
            assignment
                .add_partition_offset(&job.changelog, job.partition, Offset::Offset(job.start))
                .map_err(|error| StreamsError::kafka("restore assignment", error))?;
            index.insert((job.changelog.as_str(), job.partition), position);
            let remaining = self
                .metrics
                .restore_remaining
                .with_label_values(&[job.store.name(), &job.partition.to_string()]);
            remaining.set(job.end - job.start);
            progress.push(RestoreProgress {
                batch: WriteBatch::default(),
                restored: 0,
                done: false,
                remaining,
            });
        }
        self.restore_consumer
            .assign(&assignment)
            .map_err(|error| StreamsError::kafka("assigning changelogs for restore", error))?;
        let finish =
            |job: &RestoreJob<'_>, progress: &mut RestoreProgress| -> Result<(), StreamsError> {
                progress.restored += progress.batch.len() as u64;
                job.store.write_batch(std::mem::take(&mut progress.batch))?;
                progress.remaining.set(0);
                progress.done = true;
                Ok(())
            };
        let mut open_jobs = jobs.len();
        let mut last_progress = Instant::now();
        while open_jobs > 0 {
            // A short poll: under exactly-once a changelog ends with a transaction marker that
            // is never delivered, so the end is found from the position after an empty poll.
            match self.restore_consumer.poll(Duration::from_millis(2)) {
                Some(Ok(message)) => {
                    last_progress = Instant::now();
                    let Some(&position) = index.get(&(message.topic(), message.partition())) else {
                        continue;
                    };
                    let (job, state) = (&jobs[position], &mut progress[position]);
                    if state.done {
                        continue;
                    }
                    if let Some(key) = message.key() {
                        match message.payload() {
                            Some(value) => state.batch.put(key, value),
                            None => state.batch.delete(key),
                        }
                    }
                    if message.offset() + 1 >= job.end {
                        finish(job, state)?;
                        open_jobs -= 1;
                    } else if state.batch.len() >= RESTORE_BATCH {
                        state.restored += state.batch.len() as u64;
                        job.store.write_batch(std::mem::take(&mut state.batch))?;
                        state.remaining.set(job.end - message.offset() - 1);
                    }
                }
                Some(Err(error)) => {
                    return Err(StreamsError::kafka("restoring changelogs", error));
                }
                None => {
                    // Transaction markers at the end of a log are never delivered as messages.
                    let positions = self.restore_consumer.position().ok();
                    for (position, job) in jobs.iter().enumerate() {
                        let state = &mut progress[position];
                        if state.done {
                            continue;
                        }
                        let at = positions.as_ref().and_then(|positions| {
                            positions
                                .find_partition(&job.changelog, job.partition)
                                .and_then(|element| element.offset().to_raw())
                        });
                        if at.is_some_and(|at| at >= job.end) {
                            finish(job, state)?;
                            open_jobs -= 1;
                        }
                    }
                    if open_jobs > 0 && last_progress.elapsed() > RESTORE_STALL_TIMEOUT {
                        let stalled: Vec<String> = jobs
                            .iter()
                            .zip(&progress)
                            .filter(|(_, state)| !state.done)
                            .map(|(job, _)| {
                                format!("{}/{} (end {})", job.changelog, job.partition, job.end)
                            })
                            .collect();
                        return Err(StreamsError::Topic {
                            topic: stalled.join(", "),
                            message: format!(
                                "restore made no progress for {RESTORE_STALL_TIMEOUT:?}"
                            ),
                        });
                    }
                }
            }
        }
        self.restore_consumer
            .unassign()
            .map_err(|error| StreamsError::kafka("ending restore", error))?;
        let elapsed = began.elapsed();
        for (job, state) in jobs.iter().zip(&progress) {
            self.metrics
                .record_restored(job.store.name(), state.restored);
            self.metrics
                .restore_duration
                .with_label_values(&[job.store.name()])
                .observe(elapsed.as_secs_f64());
            tracing::info!(
                store = job.store.name(),
                partition = job.partition,
                from = job.start,
                to = job.end,
                records = state.restored,
                "restored"
            );
        }
        tracing::info!(
            changelog_partitions = jobs.len(),
            records = progress.iter().map(|state| state.restored).sum::<u64>(),
            elapsed_ms = elapsed.as_millis() as u64,
            "restore finished"
        );
        Ok(())
    }

    /// Runs one input record through its task's processor.
    pub(crate) fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<(), StreamsError> {
        let partition = message.partition();
        self.await_transactions()?;
        let Some(task) = self.tasks.get_mut(&partition) else {
            tracing::warn!(
                topic = message.topic(),
                partition,
                "record for a partition without a task"
            );
            return Ok(());
        };
        let record = InputRecord {
            topic: message.topic(),
            partition,
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key(),
            value: message.payload(),
            headers: message.headers(),
        };
        if self.guarantee == ProcessingGuarantee::ExactlyOnce && !self.in_transaction {
            self.sink
                .producer
                .begin_transaction()
                .map_err(|error| StreamsError::kafka("beginning a transaction", error))?;
            self.in_transaction = true;
        }
        let began = Instant::now();
        let mut attempt = 0;
        // `Some(reason)` when the record ends in the dead-letter topic.
        let dead_letter_reason = loop {
            let mut context = ProcessorContext {
                partition,
                stores: &mut task.stores,
                sink: &self.sink,
                input_headers: record.headers,
                input_timestamp: record.timestamp,
                output_headers: None,
            };
            match task.processor.process(&record, &mut context) {
                Ok(()) => break None,
                Err(ProcessorError::BadRecord(reason)) => break Some(reason),
                Err(ProcessorError::Failed(reason)) if attempt < self.max_retries => {
                    let backoff = RETRY_BACKOFF * 2_u32.saturating_pow(attempt);
                    tracing::warn!(
                        topic = record.topic,
                        partition,
                        offset = record.offset,
                        error = %reason,
                        attempt = attempt + 1,
                        backoff_ms = backoff.as_millis() as u64,
                        "processing failed; retrying"
                    );
                    std::thread::sleep(backoff);
                    attempt += 1;
                }
                Err(ProcessorError::Failed(reason)) => match self.error_policy {
                    ErrorPolicy::DeadLetter => break Some(reason),
                    ErrorPolicy::Fail => {
                        return Err(StreamsError::Processor {
                            topic: record.topic.to_owned(),
                            partition,
                            offset: record.offset,
                            message: reason,
                        });
                    }
                },
            }
        };
        if let Some(reason) = dead_letter_reason {
            dead_letter(
                &self.sink,
                &self.dead_letter_topic,
                &record,
                &reason,
                attempt + 1,
            )?;
            self.metrics.record_dead_letter();
        }
        task.next_offsets
            .insert(record.topic.to_owned(), record.offset + 1);
        self.uncommitted = true;
        self.process_time += began.elapsed();
        self.metrics.record_processed();
        Ok(())
    }

    /// Commits what was processed since the last commit.
    ///
    /// At-least-once: every output and changelog record acknowledged, then the input offsets
    /// committed, then store checkpoints written.
    ///
    /// Exactly-once: the input offsets join the open transaction, which is committed; only then
    /// do the transaction's store writes reach RocksDB (with its WAL).
    ///
    /// Checkpoints move on in the background (see [`Self::advance_checkpoints`]) and in full on
    /// close; restoring from an older checkpoint replays changelog records onto state that may
    /// already have them, which changes nothing.
    pub(crate) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        closing: bool,
    ) -> Result<(), StreamsError> {
        if !self.uncommitted {
            if closing {
                self.write_checkpoints()?;
            }
            return Ok(());
        }
        let began = Instant::now();
        let offsets = self.offsets_to_commit()?;
        match self.guarantee {
            ProcessingGuarantee::AtLeastOnce => {
                self.sink.wait_until_delivered(FLUSH_TIMEOUT)?;
                if offsets.count() > 0 {
                    consumer
                        .commit(&offsets, CommitMode::Sync)
                        .map_err(|error| StreamsError::kafka("committing input offsets", error))?;
                }
            }
            ProcessingGuarantee::ExactlyOnce => {
                let group = consumer.group_metadata().ok_or_else(|| {
                    StreamsError::Produce(
                        "no consumer group metadata for the transaction".to_owned(),
                    )
                })?;
                self.sink
                    .producer
                    .send_offsets_to_transaction(&offsets, &group, FLUSH_TIMEOUT)
                    .map_err(|error| {
                        StreamsError::kafka("adding offsets to the transaction", error)
                    })?;
                // The transaction's records acknowledged and released first:
                // commit_transaction's own flush then has nothing to wait for.
                self.sink.wait_until_delivered(FLUSH_TIMEOUT)?;
                self.sink.wait_until_released();
                self.sink
                    .producer
                    .commit_transaction(FLUSH_TIMEOUT)
                    .map_err(|error| StreamsError::kafka("committing the transaction", error))?;
                self.in_transaction = false;
                if let Some(error) = self.sink.producer.context().first_error() {
                    return Err(StreamsError::Produce(error));
                }
                for task in self.tasks.values_mut() {
                    for task_store in task.stores.values_mut() {
                        task_store.apply_pending()?;
                    }
                }
            }
        }
        if closing {
            self.write_checkpoints()?;
        } else {
            self.advance_checkpoints()?;
        }
        self.uncommitted = false;
        self.metrics
            .process_seconds
            .inc_by(self.process_time.as_secs_f64());
        self.process_time = Duration::ZERO;
        self.metrics.record_commit(began.elapsed().as_secs_f64());
        Ok(())
    }

    fn offsets_to_commit(&self) -> Result<TopicPartitionList, StreamsError> {
        let mut offsets = TopicPartitionList::new();
        for task in self.tasks.values() {
            for (topic, next) in &task.next_offsets {
                offsets
                    .add_partition_offset(topic, task.partition, Offset::Offset(*next))
                    .map_err(|error| StreamsError::kafka("building the commit", error))?;
            }
        }
        Ok(offsets)
    }

    /// Moves checkpoints on without stopping processing: a store whose changelog ran
    /// [`CHECKPOINT_RECORDS`] ahead of its checkpoint, or that changed in the last
    /// [`CHECKPOINT_INTERVAL`], starts a flush of its memtable in the background, noting the
    /// changelog offset its writes so far go up to (every record is acknowledged or committed
    /// at this point); a later commit writes that checkpoint once the flush has finished.
    ///
    /// Between checkpoints the store's latest writes may be only in memory (at-least-once
    /// skips the WAL): after a crash the restore replays the changelog from the checkpoint.
    fn advance_checkpoints(&mut self) -> Result<(), StreamsError> {
        let interval_over = self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL;
        if interval_over {
            self.last_checkpoint = Instant::now();
        }
        for task in self.tasks.values_mut() {
            for (name, task_store) in &task.stores {
                let store = &task_store.store;
                if let Some(&offset) = task.flushing.get(name) {
                    if store.flushes_done() {
                        store.write_checkpoint_file(offset)?;
                        task.checkpointed.insert(name.clone(), offset);
                        task.flushing.remove(name);
                    }
                    continue;
                }
                let changelog = changelog_topic(&self.application_id, name);
                let Some(last) = self
                    .sink
                    .producer
                    .context()
                    .changelog_offset(&changelog, task.partition)
                else {
                    continue;
                };
                let checkpointed = task.checkpointed.get(name).copied().unwrap_or(-1);
                let behind = last + 1 - checkpointed.max(0);
                if last + 1 != checkpointed && (interval_over || behind >= CHECKPOINT_RECORDS) {
                    store.start_flush()?;
                    task.flushing.insert(name.clone(), last + 1);
                }
                if interval_over {
                    self.metrics
                        .store_size
                        .with_label_values(&[name.as_str(), &task.partition.to_string()])
                        .set(i64::try_from(store.approximate_size_bytes()).unwrap_or(i64::MAX));
                }
            }
        }
        Ok(())
    }

    /// Flushes every store and records how far into its changelog it goes (on close).
    fn write_checkpoints(&mut self) -> Result<(), StreamsError> {
        self.last_checkpoint = Instant::now();
        for task in self.tasks.values_mut() {
            for (name, task_store) in &task.stores {
                let store = &task_store.store;
                let changelog = changelog_topic(&self.application_id, name);
                let Some(last) = self
                    .sink
                    .producer
                    .context()
                    .changelog_offset(&changelog, task.partition)
                else {
                    continue;
                };
                if task.checkpointed.get(name) != Some(&(last + 1)) {
                    store.write_checkpoint(last + 1)?;
                    task.checkpointed.insert(name.clone(), last + 1);
                }
                self.metrics
                    .store_size
                    .with_label_values(&[name.as_str(), &task.partition.to_string()])
                    .set(i64::try_from(store.approximate_size_bytes()).unwrap_or(i64::MAX));
            }
        }
        Ok(())
    }

    /// Notes local state of partitions this instance does not own (left by an earlier
    /// assignment or an earlier run) so it can be deleted after the cleanup delay.
    fn track_unowned_state(&mut self) {
        for partition in self.tasks.keys() {
            self.released.remove(partition);
        }
        let Ok(entries) = std::fs::read_dir(&self.partitions_dir) else {
            return;
        };
        let now = Instant::now();
        for entry in entries.flatten() {
            let Some(partition) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
            else {
                continue;
            };
            if !self.tasks.contains_key(&partition) {
                self.released.entry(partition).or_insert(now);
            }
        }
    }

    /// Deletes the local state of partitions released longer ago than the cleanup delay (kept
    /// until then in case they come back after a short rebalance).
    pub(crate) fn clean_up_released_state(&mut self) {
        let expired: Vec<i32> = self
            .released
            .iter()
            .filter(|(partition, since)| {
                !self.tasks.contains_key(partition) && since.elapsed() >= self.state_cleanup_delay
            })
            .map(|(partition, _)| *partition)
            .collect();
        for partition in expired {
            self.released.remove(&partition);
            let dir = self.partitions_dir.join(partition.to_string());
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(partition, dir = %dir.display(), "deleted state of a partition no longer owned")
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(error = %error, dir = %dir.display(), "could not delete unowned state")
                }
            }
        }
    }

    /// Exactly-once: starts registering the transactional producer with the broker, fencing
    /// (and aborting the open transaction of) an earlier incarnation of this instance, on a
    /// thread of its own. [`Self::await_transactions`] waits for it.
    pub(crate) fn start_init_transactions(&mut self) {
        if self.guarantee != ProcessingGuarantee::ExactlyOnce {
            return;
        }
        let producer = Arc::clone(&self.sink.producer);
        let spawned = std::thread::Builder::new()
            .name("init-transactions".to_owned())
            .spawn(move || {
                producer
                    .init_transactions(FLUSH_TIMEOUT)
                    .map_err(|error| StreamsError::kafka("initializing transactions", error))
            });
        self.transactions_ready = Some(spawned.map_err(|source| StreamsError::Io {
            what: "starting the transaction set-up".to_owned(),
            source,
        }));
    }

    /// Waits until the transactional producer is registered (once; later calls return at once).
    fn await_transactions(&mut self) -> Result<(), StreamsError> {
        match self.transactions_ready.take() {
            None => Ok(()),
            Some(Err(error)) => Err(error),
            Some(Ok(handle)) => handle.join().map_err(|_| StreamsError::ThreadPanicked)?,
        }
    }

    /// Removes this instance from the membership topic and waits for that to be written.
    pub(crate) fn leave(&self) -> Result<(), StreamsError> {
        self.membership.leave()
    }

    /// Commits and closes every task (partitions revoked or the application stopping).
    pub(crate) fn close_all<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), StreamsError> {
        if self.tasks.is_empty() {
            return Ok(());
        }
        for task in self.tasks.values_mut() {
            task.processor.close();
        }
        self.commit(consumer, true)?;
        let closed: Vec<i32> = self.tasks.keys().copied().collect();
        let now = Instant::now();
        for partition in &closed {
            self.released.insert(*partition, now);
        }
        self.open_stores
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.tasks.clear();
        self.membership.publish(&[])?;
        tracing::info!(partitions = ?closed, "tasks closed");
        Ok(())
    }
}
