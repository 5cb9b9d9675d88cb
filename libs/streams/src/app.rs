//! A running streams application: the processing thread, its lifecycle state and statistics.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use eddy_service::kafka::KafkaArgs;
use prometheus::Registry;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::ThreadedProducer;
use rdkafka::statistics::Statistics;
use tokio::sync::watch;

use crate::StreamsError;
use crate::delivery::DeliveryTracker;
use crate::membership::{self, MembershipPublisher, membership_topic};
use crate::metrics::StreamsMetrics;
use crate::processor::RecordSink;
use crate::query::{Members, OpenStores, Queries};
use crate::task::{TaskManager, TaskManagerParts};
use crate::topology::{Topology, changelog_topic};

/// Lifecycle of an application, as in Kafka Streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppState {
    Created,
    /// Waiting for a partition assignment.
    Rebalancing,
    /// Restoring stores of newly assigned partitions from their changelogs.
    Restoring,
    Running,
    PendingShutdown,
    NotRunning,
    Error,
}

/// Shared, observable lifecycle state.
#[derive(Debug, Clone)]
pub(crate) struct StateCell {
    sender: Arc<watch::Sender<AppState>>,
    metrics: StreamsMetrics,
}

impl StateCell {
    pub(crate) fn set(&self, state: AppState) {
        let previous = self.sender.send_replace(state);
        if previous != state {
            tracing::info!(from = ?previous, to = ?state, "streams state changed");
            self.metrics.record_state(state);
        }
    }
}

/// How the application reaches Kafka and where it keeps local state.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    pub kafka: KafkaArgs,
    /// Local state lives in `<state_dir>/<application id>/<partition>/<store>`; keep it on a
    /// persistent volume so a restart restores only the changelog's tail.
    pub state_dir: PathBuf,
    /// How often processed input offsets are committed (after outputs are acknowledged).
    pub commit_interval: Duration,
    /// A stable id of this instance (e.g. the StatefulSet pod name), used in the membership
    /// topic; generated from host name and process id when not set.
    pub instance_id: Option<String>,
    /// Join the consumer group as a static member (KIP-345) under `instance_id`: a restarted
    /// instance, even after kill -9, takes its partitions back at once instead of waiting out
    /// the session timeout; an instance that stops for good hands its partitions on only after
    /// the session timeout (45 s).
    pub static_membership: bool,
    /// What happens to a record whose processing keeps failing.
    pub error_policy: ErrorPolicy,
    /// Retries of a failing record (backoff 100 ms, doubling) before the policy applies.
    pub max_retries: u32,
    /// The component's metrics registry for the `eddy_streams_*` metrics (none: unregistered).
    pub metrics_registry: Option<Registry>,
    /// `host:port` where this instance answers queries, advertised to the other instances for
    /// routing (none: this instance is not a query target).
    pub advertised_address: Option<String>,
    pub guarantee: ProcessingGuarantee,
    /// How long local state of a partition this instance no longer owns is kept (it may come
    /// back after a short rebalance) before it is deleted.
    pub state_cleanup_delay: Duration,
    /// `<component>/<version>`: the `eddy-producer` envelope header of every record written.
    pub component: String,
}

/// How processing results and input offsets are committed together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProcessingGuarantee {
    /// Outputs and changelog records are acknowledged before input offsets are committed: after
    /// a crash, records since the last commit are processed again (nothing is lost).
    AtLeastOnce,
    /// Outputs, changelog records and input offsets are committed in one Kafka transaction, and
    /// store writes reach local state only after it commits: every record counts exactly once.
    ExactlyOnce,
}

/// What to do with a record whose processing still fails after the retries. Records that do not
/// decode always go to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ErrorPolicy {
    /// Send it to `<application id>.dlq` with headers naming the error and its origin, and go on.
    DeadLetter,
    /// Stop the application (state ERROR).
    Fail,
}

impl StreamsConfig {
    pub fn new(kafka: KafkaArgs, state_dir: impl Into<PathBuf>) -> Self {
        StreamsConfig {
            kafka,
            state_dir: state_dir.into(),
            commit_interval: Duration::from_secs(1),
            instance_id: None,
            static_membership: false,
            error_policy: ErrorPolicy::DeadLetter,
            max_retries: 3,
            metrics_registry: None,
            advertised_address: None,
            guarantee: ProcessingGuarantee::AtLeastOnce,
            state_cleanup_delay: Duration::from_secs(600),
            component: format!("eddy-streams/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Ties the application to its component: its metrics registry (so `/metrics` shows
    /// `eddy_streams_*`) and its name and version (the `eddy-producer` envelope header).
    pub fn for_component(mut self, runtime: &eddy_service::Runtime) -> Self {
        self.metrics_registry = Some(runtime.metrics.registry().clone());
        self.component = eddy_service::envelope::producer_name(&runtime.component);
        self
    }

    /// Registers the application's metrics in `registry` (the component's).
    pub fn with_metrics(mut self, registry: Registry) -> Self {
        self.metrics_registry = Some(registry);
        self
    }
}

/// Consumer callbacks: partitions revoked are committed and closed before they move, partitions
/// assigned are restored before they are processed.
struct StreamsContext {
    tasks: Arc<Mutex<TaskManager>>,
    metrics: StreamsMetrics,
}

impl StreamsContext {
    fn tasks(&self) -> MutexGuard<'_, TaskManager> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for StreamsContext {
    /// librdkafka statistics (every few seconds): consumer lag per assigned input partition.
    fn stats(&self, statistics: Statistics) {
        for (topic, topic_statistics) in &statistics.topics {
            for (partition, partition_statistics) in &topic_statistics.partitions {
                if *partition < 0 {
                    continue;
                }
                let lag = self
                    .metrics
                    .consumer_lag
                    .with_label_values(&[topic.as_str(), &partition.to_string()]);
                if partition_statistics.desired && partition_statistics.consumer_lag >= 0 {
                    lag.set(partition_statistics.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for StreamsContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            let mut tasks = self.tasks();
            tasks.set_state(AppState::Rebalancing);
            if let Err(error) = tasks.close_all(consumer) {
                tasks.fatal.get_or_insert(error);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut tasks = self.tasks();
        match rebalance {
            Rebalance::Assign(assignment) => {
                if let Err(error) = tasks.assign(assignment) {
                    tasks.fatal.get_or_insert(error);
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(error = %error, "rebalance error"),
        }
    }
}

/// A started application. Stop it with [`StreamsApp::stop`] to commit and close cleanly.
#[derive(Debug)]
pub struct StreamsApp {
    state: watch::Receiver<AppState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), StreamsError>>>,
    metrics: StreamsMetrics,
    queries: Queries,
}

impl StreamsApp {
    /// Checks that the inputs are co-partitioned, creates missing changelog topics (compacted,
    /// one partition per input partition), and starts the processing thread.
    pub async fn start(config: StreamsConfig, topology: Topology) -> Result<Self, StreamsError> {
        let processor_factory =
            topology
                .processor_factory
                .clone()
                .ok_or_else(|| StreamsError::Topic {
                    topic: topology.application_id.clone(),
                    message: "the topology has no processor".to_owned(),
                })?;
        let application_id = topology.application_id.clone();
        let changelogs: Vec<String> = topology
            .stores
            .iter()
            .map(|store| changelog_topic(&application_id, store))
            .collect();
        let membership_topic = membership_topic(&application_id);
        let dead_letters = dead_letter_topic(&application_id);
        // One metadata client for the inputs and the internal topics.
        let mut internal = changelogs.clone();
        internal.push(dead_letters.clone());
        internal.push(membership_topic.clone());
        let counts = {
            let kafka = config.kafka.clone();
            let mut names = topology.inputs.clone();
            names.extend(internal.iter().cloned());
            tokio::task::spawn_blocking(move || partition_counts(&kafka, &names))
                .await
                .map_err(|_| StreamsError::ThreadPanicked)??
        };
        let (input_counts, internal_counts) = counts.split_at(topology.inputs.len());
        let partitions = co_partitioned(input_counts)?;
        let missing: Vec<String> = internal_counts
            .iter()
            .filter(|(_, count)| *count == 0)
            .map(|(name, _)| name.clone())
            .collect();
        create_internal_topics(
            &config.kafka,
            &missing,
            &changelogs,
            &dead_letters,
            &membership_topic,
            partitions,
        )
        .await?;
        let members = Members::default();
        let open_stores = OpenStores::default();

        let metrics = StreamsMetrics::new(&application_id, config.metrics_registry.as_ref())
            .map_err(|error| StreamsError::Topic {
                topic: application_id.clone(),
                message: format!("registering metrics: {error}"),
            })?;
        let instance_id = config
            .instance_id
            .clone()
            .unwrap_or_else(generated_instance_id);
        let (sender, state) = watch::channel(AppState::Created);
        let state_cell = StateCell {
            sender: Arc::new(sender),
            metrics: metrics.clone(),
        };
        let producer_config = match config.guarantee {
            ProcessingGuarantee::AtLeastOnce => config
                .kafka
                .producer_config(&format!("{application_id}-producer")),
            // Stable per instance, so a restarted instance fences its predecessor's transaction.
            ProcessingGuarantee::ExactlyOnce => config.kafka.transactional_producer_config(
                &format!("{application_id}-producer"),
                &format!("{application_id}-{instance_id}"),
            ),
        };
        let producer: ThreadedProducer<DeliveryTracker> = producer_config
            .create_with_context(DeliveryTracker::new(
                changelogs.iter().cloned().collect::<HashSet<_>>(),
            ))
            .map_err(|error| StreamsError::kafka("creating the producer", error))?;
        let mut restore_config = config.kafka.consumer_config(
            &format!("{application_id}-restore"),
            &format!("{application_id}-restore"),
        );
        // Restores read whole changelog partitions: fetch big. And never let the broker hold a
        // fetch at the end of a changelog: the offset lookups of the next store queue behind it
        // on the same connection, which cost 0.5 s (the default fetch.wait.max.ms) per store.
        restore_config
            .set("fetch.wait.max.ms", "5")
            .set("fetch.max.bytes", "104857600")
            .set("max.partition.fetch.bytes", "16777216")
            .set("queued.max.messages.kbytes", "262144");
        let restore_consumer: BaseConsumer = restore_config
            .create()
            .map_err(|error| StreamsError::kafka("creating the restore consumer", error))?;
        let tasks = Arc::new(Mutex::new(TaskManager::new(TaskManagerParts {
            application_id: application_id.clone(),
            inputs: topology.inputs.clone(),
            store_names: topology.stores.clone(),
            processor_factory,
            partitions_dir: config.state_dir.join(&application_id),
            sink: RecordSink {
                application_id: application_id.clone(),
                producer: Arc::new(producer),
                writer: config.component.clone(),
            },
            restore_consumer,
            metrics: metrics.clone(),
            state: state_cell.clone(),
            error_policy: config.error_policy,
            max_retries: config.max_retries,
            membership: MembershipPublisher {
                topic: membership_topic.clone(),
                instance_id: instance_id.clone(),
                address: config.advertised_address.clone(),
                writer: config.component.clone(),
                members: members.clone(),
                producer: config
                    .kafka
                    .producer_config(&format!("{application_id}-membership"))
                    .create()
                    .map_err(|error| {
                        StreamsError::kafka("creating the membership producer", error)
                    })?,
            },
            open_stores: open_stores.clone(),
            guarantee: config.guarantee,
            state_cleanup_delay: config.state_cleanup_delay,
        })));
        let mut consumer_config = config
            .kafka
            .consumer_config(&format!("{application_id}-consumer"), &application_id);
        // Range assignment gives partition p of every (equally partitioned) input to the same
        // member: the co-partitioning that joins and shared stores rely on.
        consumer_config.set("partition.assignment.strategy", "range");
        consumer_config.set("statistics.interval.ms", "5000");
        // Larger fetches: an application reads its inputs in bulk, most of all when catching up.
        consumer_config
            .set("fetch.max.bytes", "104857600")
            .set("max.partition.fetch.bytes", "4194304");
        if config.static_membership {
            let instance_id = config
                .instance_id
                .as_ref()
                .ok_or_else(|| StreamsError::Topic {
                    topic: application_id.clone(),
                    message: "static membership needs an instance id (EDDY_INSTANCE_ID)".to_owned(),
                })?;
            consumer_config.set("group.instance.id", instance_id);
        }
        let consumer: BaseConsumer<StreamsContext> = consumer_config
            .create_with_context(StreamsContext {
                tasks: Arc::clone(&tasks),
                metrics: metrics.clone(),
            })
            .map_err(|error| StreamsError::kafka("creating the consumer", error))?;
        let inputs: Vec<&str> = topology.inputs.iter().map(String::as_str).collect();
        consumer
            .subscribe(&inputs)
            .map_err(|error| StreamsError::kafka("subscribing to the inputs", error))?;

        let stop = Arc::new(AtomicBool::new(false));
        membership::spawn_reader(
            &config.kafka,
            &membership_topic,
            members.clone(),
            Arc::clone(&stop),
        )?;
        let queries = Queries {
            instance_id,
            partitions,
            stores: open_stores,
            members,
            state: state.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("streams-{application_id}"))
            .spawn({
                let stop = Arc::clone(&stop);
                let state_cell = state_cell.clone();
                let commit_interval = config.commit_interval;
                move || {
                    state_cell.set(AppState::Rebalancing);
                    let result = process_until_stopped(&consumer, &tasks, &stop, commit_interval);
                    state_cell.set(if result.is_ok() {
                        AppState::NotRunning
                    } else {
                        AppState::Error
                    });
                    if let Err(error) = &result {
                        tracing::error!(error = %error, "streams application failed");
                    }
                    result
                }
            })
            .map_err(|source| StreamsError::Io {
                what: "starting the processing thread".to_owned(),
                source,
            })?;
        Ok(StreamsApp {
            state,
            stop,
            thread: Some(thread),
            metrics,
            queries,
        })
    }

    pub fn state(&self) -> AppState {
        *self.state.borrow()
    }

    /// A receiver that sees every state change (for readiness).
    pub fn state_changes(&self) -> watch::Receiver<AppState> {
        self.state.clone()
    }

    pub fn metrics(&self) -> &StreamsMetrics {
        &self.metrics
    }

    /// A handle for query handlers: local store reads and key ownership.
    pub fn queries(&self) -> Queries {
        self.queries.clone()
    }

    /// Waits until the application is in `wanted` (or failed), at most `timeout`.
    pub async fn wait_for_state(&self, wanted: AppState, timeout: Duration) -> AppState {
        let mut state = self.state.clone();
        let reached = tokio::time::timeout(
            timeout,
            state.wait_for(|current| *current == wanted || *current == AppState::Error),
        )
        .await;
        match reached {
            Ok(Ok(current)) => *current,
            _ => self.state(),
        }
    }

    /// Stops processing, commits, checkpoints and closes the stores, and leaves the group.
    pub async fn stop(mut self) -> Result<(), StreamsError> {
        self.stop.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|_| StreamsError::ThreadPanicked)?
            .map_err(|_| StreamsError::ThreadPanicked)?
    }
}

impl Drop for StreamsApp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The longest the processing loop waits for a record before it looks at the stop flag again.
const LONGEST_POLL: Duration = Duration::from_millis(100);

fn process_until_stopped(
    consumer: &BaseConsumer<StreamsContext>,
    tasks: &Mutex<TaskManager>,
    stop: &AtomicBool,
    commit_interval: Duration,
) -> Result<(), StreamsError> {
    let lock = || tasks.lock().unwrap_or_else(PoisonError::into_inner);
    // Exactly-once: registering the transactional producer waits for the broker to abort a
    // dead predecessor's open transaction; that runs beside the group join and the restore,
    // and processing waits for it only before its first transaction.
    lock().start_init_transactions();
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Rebalance callbacks run inside poll; the task lock is not held here. The wait ends
        // when the next commit is due: a record followed by a quiet spell is committed (and,
        // under exactly-once, shows in queries) on time, not a whole poll timeout later.
        let until_commit = commit_interval.saturating_sub(last_commit.elapsed());
        let message = consumer.poll(until_commit.min(LONGEST_POLL));
        let mut manager = lock();
        if let Some(error) = manager.fatal.take() {
            return Err(error);
        }
        match message {
            Some(Ok(message)) => manager.process(&message)?,
            Some(Err(error)) => tracing::warn!(error = %error, "consumer error"),
            None => {}
        }
        if last_commit.elapsed() >= commit_interval {
            manager.commit(consumer, false)?;
            manager.clean_up_released_state();
            last_commit = Instant::now();
        }
    }
    let mut manager = lock();
    manager.set_state(AppState::PendingShutdown);
    manager.close_all(consumer)?;
    manager.leave()?;
    drop(manager);
    consumer.unsubscribe();
    Ok(())
}

/// The partition count of each of `names` (0 for a topic the cluster does not have): one
/// metadata request per topic on one client, cheap even on a cluster with thousands of topics.
fn partition_counts(
    kafka: &KafkaArgs,
    names: &[String],
) -> Result<Vec<(String, usize)>, StreamsError> {
    let consumer: BaseConsumer = kafka
        .admin_config("streams-metadata")
        .create()
        .map_err(|error| StreamsError::kafka("creating a metadata client", error))?;
    // One request per topic (the metadata of every topic is large on a shared cluster), all
    // in flight at once: a start waits for one round trip, not one per topic.
    std::thread::scope(|scope| {
        let lookups: Vec<_> = names
            .iter()
            .map(|name| {
                let consumer = &consumer;
                scope.spawn(move || {
                    let metadata = consumer
                        .fetch_metadata(Some(name), Duration::from_secs(30))
                        .map_err(|error| {
                            StreamsError::kafka(format!("metadata of {name}"), error)
                        })?;
                    let count = metadata
                        .topics()
                        .iter()
                        .find(|topic| topic.name() == name && topic.error().is_none())
                        .map_or(0, |topic| topic.partitions().len());
                    Ok((name.clone(), count))
                })
            })
            .collect();
        lookups
            .into_iter()
            .map(|lookup| lookup.join().map_err(|_| StreamsError::ThreadPanicked)?)
            .collect()
    })
}

/// The partition count shared by every input; an error if one is missing or they differ.
fn co_partitioned(counts: &[(String, usize)]) -> Result<i32, StreamsError> {
    if let Some((topic, _)) = counts.iter().find(|(_, count)| *count == 0) {
        return Err(StreamsError::Topic {
            topic: topic.clone(),
            message: "input topic does not exist".to_owned(),
        });
    }
    let (first_topic, first) = counts.first().ok_or_else(|| StreamsError::Topic {
        topic: String::new(),
        message: "the topology has no input".to_owned(),
    })?;
    if counts.iter().any(|(_, count)| count != first) {
        let listing: Vec<String> = counts
            .iter()
            .map(|(topic, count)| format!("{topic} has {count}"))
            .collect();
        return Err(StreamsError::NotCoPartitioned(listing.join(", ")));
    }
    i32::try_from(*first).map_err(|_| StreamsError::Topic {
        topic: first_topic.clone(),
        message: "too many partitions".to_owned(),
    })
}

/// An instance id for membership when none is configured: host name and process id.
fn generated_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "instance".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The dead-letter topic of an application.
pub fn dead_letter_topic(application_id: &str) -> String {
    format!("{application_id}.dlq")
}

/// Creates the changelogs (compacted, one partition per input partition) and the dead-letter
/// topic (one partition, time-retained) where missing.
async fn create_internal_topics(
    kafka: &KafkaArgs,
    missing: &[String],
    changelogs: &[String],
    dead_letter: &str,
    membership: &str,
    partitions: i32,
) -> Result<(), StreamsError> {
    // On a restart every internal topic exists: nothing to create, no admin round trip.
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = kafka
        .admin_config("streams-admin")
        .create()
        .map_err(|error| StreamsError::kafka("creating an admin client", error))?;
    let mut topics: Vec<NewTopic<'_>> = changelogs
        .iter()
        .filter(|name| missing.contains(name))
        .map(|name| {
            NewTopic::new(name, partitions, TopicReplication::Fixed(-1))
                .set("cleanup.policy", "compact")
                .set("min.compaction.lag.ms", "0")
                .set("segment.bytes", "104857600")
        })
        .collect();
    if missing.iter().any(|name| name == dead_letter) {
        topics.push(NewTopic::new(dead_letter, 1, TopicReplication::Fixed(-1)));
    }
    if missing.iter().any(|name| name == membership) {
        topics.push(
            NewTopic::new(membership, 1, TopicReplication::Fixed(-1))
                .set("cleanup.policy", "compact"),
        );
    }
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(|error| StreamsError::kafka("creating changelog topics", error))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic = %topic, "internal topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(StreamsError::Topic {
                    topic,
                    message: format!("could not create the internal topic: {code}"),
                });
            }
        }
    }
    Ok(())
}
