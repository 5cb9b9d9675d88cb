//! The executor: finds the due events in the outbox partitions this instance owns, POSTs them
//! to their subscribers, and writes each attempt's outcome to the delivery log, from which the
//! outbox processor moves the event on (see [`crate::outbox`]). It never writes the outbox
//! itself.
//!
//! - **Isolation**: each subscription has at most `concurrency` deliveries in flight, and
//!   each call is cut off by the request timeout; a subscription at its limit is skipped, so
//!   a hanging or slow receiver never holds back another subscription's events.
//! - **Order**: one delivery at a time per (subscription, ordering key); queue slots come in
//!   (due time, arrival) order, so a conversation's events go out in order while none waits for
//!   a retry.
//! - **Never twice**: an event stays "in flight" from its dispatch until the outbox has applied
//!   its attempt (not just until the log record is written), and a partition that arrives on
//!   this instance is not dispatched from until the outbox has applied the delivery log up to
//!   its end at that moment.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_api::time::iso_millis;
use eddy_schemas::writer::{OutgoingRecord, Placement, RecordWriter};
use eddy_schemas::{
    AvroSerde, DeliveryOutcome, SubscriptionStatus, WebhookDelivery, WebhookEvent,
    WebhookSubscription,
};
use eddy_service::envelope::{Envelope, now_millis};
use eddy_service::kafka::KafkaArgs;
use eddy_streams::{GlobalTable, KeyRange, Queries, ScanOrder, StoreDefinition};
use eddy_webhooks::destination::DestinationPolicy;
use eddy_webhooks::{
    ID_HEADER, SIGNATURE_HEADER, SUBSCRIPTION_SECRET_PURPOSE, SecretKey, SigningSecret,
    TIMESTAMP_HEADER, event_placement, signature_header,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::SenderMetrics;
use crate::outbox::{
    DUE_PREFIX, EntryState, OutboxEntry, OutboxSignals, OutboxValue, due_until, entry_key,
};
use crate::schedule::{AfterFailure, RetrySchedule, random_unit};

/// How the executor calls receivers.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    pub schedule: RetrySchedule,
    /// Deliveries in flight per subscription.
    pub concurrency: usize,
    /// Deliveries in flight in all.
    pub max_in_flight: usize,
    pub timeout: Duration,
    pub destinations: DestinationPolicy,
}

/// Everything a delivery needs.
pub struct Executor {
    pub queries: Queries,
    pub outbox: StoreDefinition<String, OutboxValue>,
    pub signals: Arc<OutboxSignals>,
    pub subscriptions: GlobalTable<String, WebhookSubscription>,
    pub client: reqwest::Client,
    pub secret_key: SecretKey,
    pub writer: Arc<RecordWriter>,
    pub deliveries_topic: String,
    pub delivery_serde: AvroSerde<WebhookDelivery>,
    pub dead_letters_topic: String,
    pub dead_letter_serde: AvroSerde<WebhookEvent>,
    pub policy: DeliveryPolicy,
    pub metrics: SenderMetrics,
    pub producer: String,
    /// For the delivery log's end offsets and the outbox's committed position.
    pub kafka: KafkaArgs,
    pub application_id: String,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Executor").finish_non_exhaustive()
    }
}

/// One delivery to make.
#[derive(Debug, Clone)]
struct Job {
    event: WebhookEvent,
    attempt: u32,
    round_attempt: u32,
    round_started_at: i64,
}

/// A dispatched event, until the outbox has applied its attempt.
#[derive(Debug, Clone)]
struct InFlight {
    partition: i32,
    attempt: u32,
}

/// What a delivery task reports.
#[derive(Debug)]
enum Report {
    /// The receiver answered (or the call failed): the subscription's slot and the ordering
    /// are free again. The event stays in flight until its attempt is applied.
    Answered {
        subscription_id: String,
        ordering: String,
    },
    /// The attempt could not be written to the log: the event may be sent again.
    Unrecorded { event_id: String },
}

/// Whether a partition may be dispatched from yet.
#[derive(Debug, Clone, Copy)]
enum Gate {
    /// Until the outbox has applied the delivery log up to this offset.
    WaitingFor(i64),
    Open,
}

/// The executor's bookkeeping (owned by its loop).
#[derive(Debug, Default)]
struct Book {
    in_flight: HashMap<String, InFlight>,
    /// (subscription, ordering key) with a delivery under way.
    busy_orderings: HashSet<String>,
    per_subscription: HashMap<String, usize>,
    running: usize,
    gates: HashMap<i32, Gate>,
    /// Per partition, where the next due-queue scan starts (see
    /// [`OutboxSignals::take_lowest_queued`]); none: at the queue's start.
    scan_from: HashMap<i32, String>,
    /// Subscriptions with a queue gauge set, to zero them when their queue empties.
    gauged: HashSet<String>,
}

/// How often the loop looks for due retries without being woken, and refreshes queue gauges.
const TICK: Duration = Duration::from_millis(50);
const GAUGE_PERIOD: Duration = Duration::from_secs(2);
/// The shortest pause between two scans: wake-ups in a burst share one scan.
const MIN_SCAN_GAP: Duration = Duration::from_millis(2);

impl Executor {
    /// Runs until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) -> Result<(), String> {
        let executor = Arc::new(self);
        let (finished_tx, mut finished_rx) = mpsc::unbounded_channel::<Report>();
        let mut book = Book::default();
        let mut last_gauges = Instant::now() - GAUGE_PERIOD;
        let mut last_scan = Instant::now() - MIN_SCAN_GAP;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = executor.signals.queued.notified() => {}
                Some(report) = finished_rx.recv() => book.apply(report),
                () = tokio::time::sleep(TICK) => {}
            }
            while let Ok(report) = finished_rx.try_recv() {
                book.apply(report);
            }
            for (event_id, attempt) in executor.signals.take_applied_attempts() {
                if book
                    .in_flight
                    .get(&event_id)
                    .is_some_and(|in_flight| in_flight.attempt <= attempt)
                {
                    book.in_flight.remove(&event_id);
                }
            }
            if executor.queries.ensure_running().is_err() {
                continue;
            }
            let since_scan = last_scan.elapsed();
            if since_scan < MIN_SCAN_GAP {
                tokio::time::sleep(MIN_SCAN_GAP - since_scan).await;
            }
            last_scan = Instant::now();
            let partitions = executor.queries.local_partition_numbers(&executor.outbox);
            executor.forget_moved_partitions(&mut book, &partitions);
            let arrived: Vec<i32> = partitions
                .iter()
                .filter(|partition| !book.gates.contains_key(partition))
                .copied()
                .collect();
            if !arrived.is_empty() {
                match executor.initial_gates(arrived).await {
                    Ok(gates) => book.gates.extend(gates),
                    Err(error) => {
                        tracing::warn!(error, "reading the delivery log's end failed; trying again")
                    }
                }
            }
            for &partition in &partitions {
                if executor.gate_is_open(&mut book, partition) {
                    executor.dispatch_due(&mut book, partition, &finished_tx);
                }
            }
            if last_gauges.elapsed() >= GAUGE_PERIOD {
                last_gauges = Instant::now();
                executor.refresh_queue_gauges(&mut book, &partitions);
            }
        }
        Ok(())
    }

    /// Drops what is known of partitions no longer owned here: their next owner takes over.
    fn forget_moved_partitions(&self, book: &mut Book, partitions: &[i32]) {
        book.gates
            .retain(|partition, _| partitions.contains(partition));
        book.scan_from
            .retain(|partition, _| partitions.contains(partition));
        book.in_flight
            .retain(|_, in_flight| partitions.contains(&in_flight.partition));
    }

    fn gate_is_open(&self, book: &mut Book, partition: i32) -> bool {
        match book.gates.get(&partition) {
            None => false,
            Some(Gate::Open) => true,
            Some(Gate::WaitingFor(offset)) => {
                let open = self
                    .signals
                    .applied_log_offset(partition)
                    .is_some_and(|applied| applied >= *offset);
                if open {
                    book.gates.insert(partition, Gate::Open);
                    tracing::info!(partition, "delivery log applied; dispatching");
                }
                open
            }
        }
    }

    /// The gates of newly owned partitions: each waits until the outbox has applied the
    /// delivery log as far as it reached now, unless the outbox's committed position is
    /// already there. One client reads the end and committed offsets of all of them.
    async fn initial_gates(&self, partitions: Vec<i32>) -> Result<Vec<(i32, Gate)>, String> {
        let kafka = self.kafka.clone();
        let group = self.application_id.clone();
        let topic = self.deliveries_topic.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = kafka
                .consumer_config("webhook-sender-gate", &group)
                .create()
                .map_err(|error| error.to_string())?;
            let mut wanted = TopicPartitionList::new();
            for &partition in &partitions {
                wanted.add_partition(&topic, partition);
            }
            let committed = consumer
                .committed_offsets(wanted, Duration::from_secs(10))
                .map_err(|error| error.to_string())?;
            partitions
                .into_iter()
                .map(|partition| {
                    let (_, high) = consumer
                        .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                        .map_err(|error| error.to_string())?;
                    let committed = committed
                        .find_partition(&topic, partition)
                        .and_then(|found| match found.offset() {
                            Offset::Offset(offset) => Some(offset),
                            _ => None,
                        });
                    let gate = if high == 0 || committed.is_some_and(|at| at >= high) {
                        Gate::Open
                    } else {
                        Gate::WaitingFor(high - 1)
                    };
                    Ok((partition, gate))
                })
                .collect()
        })
        .await
        .map_err(|error| error.to_string())?
    }

    /// Starts deliveries of the due events of one partition, as far as the limits allow.
    fn dispatch_due(
        self: &Arc<Self>,
        book: &mut Book,
        partition: i32,
        finished: &mpsc::UnboundedSender<Report>,
    ) {
        if book.running >= self.policy.max_in_flight {
            return;
        }
        let until = due_until(now_millis());
        let from = scan_start(
            book.scan_from.remove(&partition),
            self.signals.take_lowest_queued(partition),
        );
        let range = KeyRange {
            from: from.as_bytes(),
            to: Some(until.as_bytes()),
            order: ScanOrder::Ascending,
        };
        let limit = self.policy.max_in_flight * 2;
        let slots = match self
            .queries
            .range_in_partition(&self.outbox, partition, range, limit)
        {
            Ok(slots) => slots,
            Err(error) => {
                tracing::debug!(partition, %error, "reading the due queue failed");
                return;
            }
        };
        // Nothing is left below the first slot found (below `until` if none was); what gets
        // queued below it from now on shows in the signals.
        let cursor = slots.first().map_or(until, |(key, _)| key.clone());
        book.scan_from.insert(partition, cursor);
        // Orderings met in this scan that could not go: their later events wait too.
        let mut held: HashSet<String> = HashSet::new();
        for (_, value) in slots {
            let OutboxValue::Due(slot) = value else {
                continue;
            };
            if book.in_flight.contains_key(&slot.event_id) {
                held.insert(slot.ordering);
                continue;
            }
            if held.contains(&slot.ordering) || book.busy_orderings.contains(&slot.ordering) {
                held.insert(slot.ordering);
                continue;
            }
            let running_for_subscription = book
                .per_subscription
                .get(&slot.subscription_id)
                .copied()
                .unwrap_or(0);
            if running_for_subscription >= self.policy.concurrency {
                continue;
            }
            if book.running >= self.policy.max_in_flight {
                break;
            }
            let entry = match self.queries.get_in_partition(
                &self.outbox,
                partition,
                &entry_key(&slot.event_id),
            ) {
                Ok(Some(OutboxValue::Entry(entry))) => entry,
                _ => continue,
            };
            let Some(event) = entry
                .event
                .clone()
                .filter(|_| entry.state == EntryState::Pending)
            else {
                continue;
            };
            self.start(book, partition, &entry, event, slot.ordering, finished);
        }
    }

    fn start(
        self: &Arc<Self>,
        book: &mut Book,
        partition: i32,
        entry: &OutboxEntry,
        event: WebhookEvent,
        ordering: String,
        finished: &mpsc::UnboundedSender<Report>,
    ) {
        if !self.signals.try_dispatch(partition) {
            return; // The partition is closing here.
        }
        let job = Job {
            attempt: entry.attempts + 1,
            round_attempt: entry.round_attempts + 1,
            round_started_at: entry.round_started_at,
            event,
        };
        book.in_flight.insert(
            job.event.id.clone(),
            InFlight {
                partition,
                attempt: job.attempt,
            },
        );
        book.busy_orderings.insert(ordering.clone());
        *book
            .per_subscription
            .entry(job.event.subscription_id.clone())
            .or_insert(0) += 1;
        book.running += 1;
        let executor = Arc::clone(self);
        let finished = finished.clone();
        tokio::spawn(async move {
            let event = job.event.clone();
            let attempt = executor.attempt(job).await;
            let _ = finished.send(Report::Answered {
                subscription_id: event.subscription_id.clone(),
                ordering,
            });
            executor.signals.queued.notify_one();
            let recorded = executor.record(&attempt, &event).await;
            executor.signals.dispatch_recorded(partition);
            if !recorded {
                let _ = finished.send(Report::Unrecorded { event_id: event.id });
                executor.signals.queued.notify_one();
            }
        });
    }

    /// Makes one attempt; its delivery-log record.
    async fn attempt(&self, job: Job) -> WebhookDelivery {
        let event = &job.event;
        let attempted_at = now_millis();
        let started = Instant::now();
        let subscription = self.subscriptions.get(&event.subscription_id);
        let (outcome, status_code, error, next_attempt_at) = match subscription
            .as_ref()
            .filter(|subscription| subscription.status == SubscriptionStatus::Subscribed)
        {
            None => (
                DeliveryOutcome::Cancelled,
                None,
                Some(match subscription {
                    Some(_) => "the subscription is unsubscribed".to_owned(),
                    None => "the subscription no longer exists".to_owned(),
                }),
                None,
            ),
            Some(subscription) => {
                let answer = self.call(subscription, event).await;
                let latency = started.elapsed();
                self.metrics
                    .observe_latency(&event.subscription_id, latency);
                match answer {
                    Ok(status) if (200..300).contains(&status) => {
                        (DeliveryOutcome::Succeeded, Some(status), None, None)
                    }
                    failed => {
                        let (status, error) = match failed {
                            Ok(status) => (Some(status), format!("the receiver answered {status}")),
                            Err(CallError { status, message }) => (status, message),
                        };
                        let max_attempts =
                            self.policy.schedule.max_attempts(subscription.max_attempts);
                        let max_age = subscription
                            .max_age_ms
                            .and_then(|ms| u64::try_from(ms).ok())
                            .map_or(self.policy.schedule.default_max_age, Duration::from_millis);
                        match self.policy.schedule.after_failure(
                            job.round_attempt,
                            max_attempts,
                            max_age,
                            job.round_started_at,
                            now_millis(),
                            random_unit(),
                        ) {
                            AfterFailure::RetryAt(at) => {
                                (DeliveryOutcome::Failed, status, Some(error), Some(at))
                            }
                            AfterFailure::GiveUp => {
                                (DeliveryOutcome::DeadLettered, status, Some(error), None)
                            }
                        }
                    }
                }
            }
        };
        let latency_ms = started.elapsed().as_millis() as i64;
        let record = WebhookDelivery {
            event_id: event.id.clone(),
            subscription_id: event.subscription_id.clone(),
            event_type: event.event_type.clone(),
            attempt: job.attempt as i32,
            attempted_at,
            outcome,
            status_code: status_code.map(i32::from),
            latency_ms: Some(latency_ms),
            error,
            next_attempt_at,
        };
        self.metrics.count_attempt(&record);
        if outcome == DeliveryOutcome::Succeeded {
            self.metrics
                .observe_end_to_end(&event.subscription_id, now_millis() - event.created_at);
        }
        if outcome != DeliveryOutcome::Succeeded {
            tracing::info!(
                event_id = event.id,
                subscription_id = event.subscription_id,
                attempt = job.attempt,
                outcome = ?outcome,
                error = record.error.as_deref().unwrap_or_default(),
                "webhook delivery attempt did not succeed"
            );
        }
        record
    }

    /// Writes the attempt to the delivery log (a dead-lettered event to the dead-letter topic
    /// first, so whoever sees the attempt finds the dead letter); false if a write failed.
    async fn record(&self, record: &WebhookDelivery, event: &WebhookEvent) -> bool {
        let placement = event_placement(&event.subscription_id, event.ordering_key.as_deref());
        let envelope = Envelope::originated(&self.producer);
        if record.outcome == DeliveryOutcome::DeadLettered {
            let dead_letter = WebhookEvent {
                redelivery_requested_at: None,
                ..event.clone()
            };
            let written = match self.dead_letter_serde.encode(&dead_letter) {
                Ok(value) => self
                    .writer
                    .send(OutgoingRecord {
                        topic: &self.dead_letters_topic,
                        key: &event.id,
                        value: Some(value),
                        placement: Placement::By(&placement),
                        envelope: &envelope,
                    })
                    .await
                    .map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = written {
                tracing::error!(
                    event_id = event.id,
                    error,
                    "writing the dead letter failed; the attempt will be made again"
                );
                return false;
            }
        }
        let value = match self.delivery_serde.encode(record) {
            Ok(value) => value,
            Err(error) => {
                tracing::error!(%error, "encoding a delivery record failed");
                return false;
            }
        };
        let key = format!("{}/{}", record.event_id, record.attempt);
        let written = self
            .writer
            .send(OutgoingRecord {
                topic: &self.deliveries_topic,
                key: &key,
                value: Some(value),
                placement: Placement::By(&placement),
                envelope: &envelope,
            })
            .await;
        match written {
            Ok(_) => true,
            Err(error) => {
                tracing::error!(event_id = record.event_id, %error, "writing the delivery log failed; the attempt will be made again");
                false
            }
        }
    }

    /// POSTs the event; the status code, or why there is none.
    async fn call(
        &self,
        subscription: &WebhookSubscription,
        event: &WebhookEvent,
    ) -> Result<u16, CallError> {
        let secrets = self.secrets(subscription)?;
        let payload = serde_json::from_str::<Value>(&event.payload)
            .unwrap_or_else(|_| Value::String(event.payload.clone()));
        let body = json!({
            "id": event.id,
            "type": event.event_type,
            "created_at": iso_millis(event.created_at),
            "payload": payload,
        })
        .to_string();
        let url = reqwest::Url::parse(&subscription.endpoint).map_err(|error| CallError {
            status: None,
            message: format!("the subscription URL does not parse: {error}"),
        })?;
        check_literal_host(&url, self.policy.destinations)?;
        let timestamp = now_millis() / 1000;
        let signature = signature_header(&secrets, &event.id, timestamp, body.as_bytes());
        let mut request = self
            .client
            .post(url)
            .timeout(self.policy.timeout)
            .header("content-type", "application/json")
            .header(ID_HEADER, &event.id)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature);
        for (name, value) in &subscription.headers {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(|error| CallError {
            status: None,
            message: describe(&error),
        })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            // Read (and drop) the answer so the connection goes back to the pool.
            let _ = response.bytes().await;
            return Ok(status);
        }
        let text = response.text().await.unwrap_or_default();
        Err(CallError {
            status: Some(status),
            message: format!(
                "the receiver answered {status}: {}",
                text.chars().take(200).collect::<String>()
            ),
        })
    }

    /// The subscription's signing secrets: the current one, and the previous one while a
    /// rotation's overlap lasts.
    fn secrets(&self, subscription: &WebhookSubscription) -> Result<Vec<SigningSecret>, CallError> {
        let derive = |reference: &str| {
            self.secret_key
                .derive(SUBSCRIPTION_SECRET_PURPOSE, reference)
                .map_err(|error| CallError {
                    status: None,
                    message: format!("the subscription's signing secret: {error}"),
                })
        };
        let Some(current) = subscription.secret_ref.as_deref() else {
            return Err(CallError {
                status: None,
                message: "the subscription has no signing secret".to_owned(),
            });
        };
        let mut secrets = vec![derive(current)?];
        if let (Some(previous), Some(expires_at)) = (
            subscription.previous_secret_ref.as_deref(),
            subscription.previous_secret_expires_at,
        ) && expires_at > now_millis()
        {
            secrets.push(derive(previous)?);
        }
        Ok(secrets)
    }

    /// Sets the queue gauges: pending events and the oldest one's age, per subscription.
    fn refresh_queue_gauges(&self, book: &mut Book, partitions: &[i32]) {
        let now = now_millis();
        let mut depth: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for &partition in partitions {
            let from = scan_start(
                book.scan_from.get(&partition).cloned(),
                self.signals.lowest_queued(partition),
            );
            let range = KeyRange {
                from: from.as_bytes(),
                to: Some(b"q0"),
                order: ScanOrder::Ascending,
            };
            let Ok(slots) =
                self.queries
                    .range_in_partition(&self.outbox, partition, range, usize::MAX)
            else {
                continue;
            };
            for (_, value) in slots {
                if let OutboxValue::Due(slot) = value {
                    let (count, oldest) = depth
                        .entry(slot.subscription_id)
                        .or_insert((0, slot.pending_since));
                    *count += 1;
                    *oldest = (*oldest).min(slot.pending_since);
                }
            }
        }
        // Every subscription gets its gauges, empty queues too (and ones just emptied).
        let known: Vec<String> = self
            .subscriptions
            .entries()
            .into_iter()
            .filter(|(_, subscription)| subscription.status == SubscriptionStatus::Subscribed)
            .map(|(id, _)| id)
            .chain(book.gauged.iter().cloned())
            .collect();
        for subscription in known {
            if !depth.contains_key(&subscription) {
                self.metrics.set_queue(&subscription, 0, 0.0);
            }
        }
        book.gauged = depth.keys().cloned().collect();
        for (subscription, (count, oldest)) in depth {
            let age = (now - oldest).max(0) as f64 / 1000.0;
            self.metrics.set_queue(&subscription, count, age);
        }
    }
}

impl Book {
    fn apply(&mut self, report: Report) {
        match report {
            Report::Answered {
                subscription_id,
                ordering,
            } => {
                self.busy_orderings.remove(&ordering);
                if let Some(count) = self.per_subscription.get_mut(&subscription_id) {
                    *count = count.saturating_sub(1);
                }
                self.running = self.running.saturating_sub(1);
            }
            Report::Unrecorded { event_id } => {
                self.in_flight.remove(&event_id);
            }
        }
    }
}

/// Where a due-queue scan starts: the executor's cursor, or lower if a slot was queued below
/// it since; the queue's start without a cursor.
fn scan_start(cursor: Option<String>, lowest_queued: Option<String>) -> String {
    match (cursor, lowest_queued) {
        (Some(cursor), Some(queued)) => cursor.min(queued),
        (Some(cursor), None) => cursor,
        (None, _) => DUE_PREFIX.to_owned(),
    }
}

/// Why a call has no usable answer.
#[derive(Debug)]
struct CallError {
    status: Option<u16>,
    message: String,
}

/// Refuses a URL whose host is a literal address the policy does not allow (names are checked
/// by the resolver, [`crate::resolver::PolicyResolver`], as they are resolved).
fn check_literal_host(url: &reqwest::Url, policy: DestinationPolicy) -> Result<(), CallError> {
    let host = url.host_str().unwrap_or_default();
    let literal = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    let Ok(address) = literal.parse::<std::net::IpAddr>() else {
        return Ok(());
    };
    match policy.refusal(address) {
        Some((what, setting)) => Err(CallError {
            status: None,
            message: format!(
                "refused to connect to {address}, {what}; allow it with {setting}=true"
            ),
        }),
        None => Ok(()),
    }
}

/// A request error in a few words, with its cause (reqwest's own text is "error sending
/// request").
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut text = format!("the request {kind}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
