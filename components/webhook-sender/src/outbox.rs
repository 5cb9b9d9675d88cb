//! The outbox: per partition, every event's delivery state and the queue of events due, kept in
//! one eddy-streams store (so both change together, and a restart restores them from its
//! changelog). The processor here is the only writer. It applies
//!
//! - **events** (from the events topic): a new id is queued for an immediate attempt; an id
//!   already known is a replay and is dropped; a copy with `redelivery_requested_at` newer
//!   than the last one applied starts a new round for an event that is done with;
//! - **attempts** (from the delivery log, written by the [`crate::executor`] once the receiver
//!   answered): the state moves on (acknowledged, queued for a retry at `next_attempt_at`,
//!   dead-lettered, or cancelled). A redelivery tombstones the event's dead letter. An attempt not newer than the
//!   entry's last is a replay and is dropped.
//!
//! Keys: `e/<event id>` → [`OutboxValue::Entry`]; `q/<due, 16 hex>/<sequence, 16 hex>/<event id>`
//! → [`OutboxValue::Due`] for each pending event, so a range scan up to `q/<now>` yields the due
//! events oldest first, in the order they arrived.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eddy_schemas::{DeliveryOutcome, WebhookDelivery, WebhookEvent};
use eddy_service::envelope::now_millis;
use eddy_streams::{
    InputRecord, InputTopic, OutputTopic, Processor, ProcessorContext, ProcessorError,
    StoreDefinition,
};
use eddy_webhooks::event_placement;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryState {
    Pending,
    Succeeded,
    DeadLettered,
    Cancelled,
}

/// One event's delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The event; `None` once it succeeded or was cancelled (nothing will send it again), or
    /// while only its attempts are known (they were applied before the event was replayed).
    pub event: Option<WebhookEvent>,
    pub subscription_id: String,
    /// `<subscription id>/<ordering key>` (see [`eddy_webhooks::event_placement`]).
    pub ordering: String,
    pub state: EntryState,
    /// The number of the last attempt applied (attempt numbers go on across redeliveries, so
    /// every attempt has its own delivery-log key).
    pub attempts: u32,
    /// Attempts since the event was first queued or last redelivered.
    pub round_attempts: u32,
    /// When the current round started (the event's creation or the redelivery request): its
    /// maximum age counts from here.
    pub round_started_at: i64,
    /// The entry's key in the due queue while pending.
    pub due_key: Option<String>,
    /// The event's offset on its partition: orders events due at the same time.
    pub sequence: i64,
    pub redelivery_requested_at: Option<i64>,
}

/// A queue slot: which event is due, and what the queue metrics need to know of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueSlot {
    pub event_id: String,
    pub subscription_id: String,
    /// `<subscription id>/<ordering key>`: one delivery at a time per ordering.
    pub ordering: String,
    /// When the event's current round started (its creation or its redelivery request).
    pub pending_since: i64,
}

/// A value of the outbox store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutboxValue {
    Entry(OutboxEntry),
    Due(DueSlot),
}

pub const ENTRY_PREFIX: &str = "e/";
pub const DUE_PREFIX: &str = "q/";

pub fn entry_key(event_id: &str) -> String {
    format!("{ENTRY_PREFIX}{event_id}")
}

pub fn due_key(due_at: i64, sequence: i64, event_id: &str) -> String {
    format!(
        "{DUE_PREFIX}{:016x}/{:016x}/{event_id}",
        due_at.max(0),
        sequence.max(0)
    )
}

/// The end of the queue slots due at or before `now`.
pub fn due_until(now: i64) -> String {
    format!("{DUE_PREFIX}{:016x}0", now.max(0))
}

/// What the processor tells the executor, which runs beside it in the same process.
#[derive(Debug, Default)]
pub struct OutboxSignals {
    /// Something was queued: look again now rather than at the next tick.
    pub queued: Notify,
    /// The offset of the last delivery-log record applied, by partition: the executor sends
    /// nothing from a partition until the log is applied up to where it ended when the
    /// partition arrived (otherwise it could resend an acknowledged event).
    applied_log_offsets: Mutex<HashMap<i32, i64>>,
    /// (event id, attempt) pairs applied, which the executor waits for before it looks at an
    /// event again.
    applied_attempts: Mutex<HashMap<String, u32>>,
    /// Per partition, the lowest queue key written since the executor last took it. The
    /// executor's scans start at the lowest slot its last scan found (everything before it is
    /// gone) unless a slot was queued below that since: a scan from the queue's start would
    /// step over every deleted slot that compaction has not dropped yet (after a burst, tens
    /// of thousands, for every scan).
    lowest_queued: Mutex<HashMap<i32, String>>,
    /// Deliveries under way per partition, and the partitions closing here.
    dispatches: Mutex<Dispatches>,
    /// Signalled when a partition's last delivery under way is recorded.
    dispatches_recorded: Condvar,
}

/// What the executor has under way, per partition. A partition that closes here (revoked, or
/// the sender stopping) takes no new dispatches and waits until every attempt under way is in
/// the delivery log: its next owner, reading the log up to its end before it dispatches, then
/// knows of every acknowledgement and sends nothing twice.
#[derive(Debug, Default)]
struct Dispatches {
    unrecorded: HashMap<i32, usize>,
    closing: HashSet<i32>,
}

impl OutboxSignals {
    pub fn applied_log_offset(&self, partition: i32) -> Option<i64> {
        lock(&self.applied_log_offsets).get(&partition).copied()
    }

    /// Takes the attempts applied since the last call.
    pub fn take_applied_attempts(&self) -> HashMap<String, u32> {
        std::mem::take(&mut *lock(&self.applied_attempts))
    }

    /// Takes the lowest queue key written in `partition` since the last call.
    pub fn take_lowest_queued(&self, partition: i32) -> Option<String> {
        lock(&self.lowest_queued).remove(&partition)
    }

    /// The lowest queue key written in `partition` since it was last taken.
    pub fn lowest_queued(&self, partition: i32) -> Option<String> {
        lock(&self.lowest_queued).get(&partition).cloned()
    }

    /// A partition's processor starts (after its store was restored): the executor looks at
    /// its whole queue again, and may dispatch from it.
    pub fn partition_started(&self, partition: i32) {
        self.slot_queued(partition, DUE_PREFIX);
        lock(&self.dispatches).closing.remove(&partition);
    }

    /// Counts a delivery from `partition` as under way; false (nothing counted) if the
    /// partition is closing here.
    pub fn try_dispatch(&self, partition: i32) -> bool {
        let mut dispatches = lock(&self.dispatches);
        if dispatches.closing.contains(&partition) {
            return false;
        }
        *dispatches.unrecorded.entry(partition).or_insert(0) += 1;
        true
    }

    /// A delivery from `partition` is over: its attempt is in the delivery log, or writing it
    /// failed.
    pub fn dispatch_recorded(&self, partition: i32) {
        let mut dispatches = lock(&self.dispatches);
        if let Some(count) = dispatches.unrecorded.get_mut(&partition) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                dispatches.unrecorded.remove(&partition);
                self.dispatches_recorded.notify_all();
            }
        }
    }

    /// Closes `partition` here: no new dispatches from it, and waits (at most `timeout`)
    /// until the deliveries under way are recorded; false if some were not in time.
    pub fn close_partition(&self, partition: i32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut dispatches = lock(&self.dispatches);
        dispatches.closing.insert(partition);
        while dispatches.unrecorded.contains_key(&partition) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            dispatches = self
                .dispatches_recorded
                .wait_timeout(dispatches, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn slot_queued(&self, partition: i32, key: &str) {
        let mut lowest = lock(&self.lowest_queued);
        match lowest.get_mut(&partition) {
            Some(known) if known.as_str() <= key => {}
            Some(known) => key.clone_into(known),
            None => {
                lowest.insert(partition, key.to_owned());
            }
        }
    }

    fn log_applied(&self, partition: i32, offset: i64) {
        lock(&self.applied_log_offsets).insert(partition, offset);
    }

    fn attempt_applied(&self, event_id: &str, attempt: u32) {
        let mut applied = lock(&self.applied_attempts);
        let known = applied.entry(event_id.to_owned()).or_insert(attempt);
        *known = (*known).max(attempt);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The processor of one partition.
#[derive(Clone)]
pub struct OutboxKeeper {
    pub events: InputTopic<String, WebhookEvent>,
    pub attempts: InputTopic<String, WebhookDelivery>,
    pub outbox: StoreDefinition<String, OutboxValue>,
    pub dead_letters: OutputTopic<String, WebhookEvent>,
    pub signals: Arc<OutboxSignals>,
    /// The partition this copy processes (set by the processor factory).
    pub partition: i32,
    /// How long closing the partition waits for its deliveries under way (the call's timeout
    /// and then some).
    pub close_timeout: Duration,
}

impl std::fmt::Debug for OutboxKeeper {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OutboxKeeper")
            .finish_non_exhaustive()
    }
}

impl Processor for OutboxKeeper {
    fn close(&mut self) {
        if !self
            .signals
            .close_partition(self.partition, self.close_timeout)
        {
            tracing::warn!(
                partition = self.partition,
                "deliveries still under way at the partition's close; their next owner may send them again"
            );
        }
    }

    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        if self.events.matches(record) {
            let (_, event) = self.events.decode(record)?;
            if let Some(event) = event {
                self.apply_event(context, event, record.offset)?;
            }
        } else if self.attempts.matches(record) {
            let (_, attempt) = self.attempts.decode(record)?;
            if let Some(attempt) = attempt {
                self.apply_attempt(context, &attempt)?;
            }
            self.signals.log_applied(record.partition, record.offset);
        }
        Ok(())
    }
}

impl OutboxKeeper {
    fn entry(
        &self,
        context: &mut ProcessorContext<'_>,
        event_id: &str,
    ) -> Result<Option<OutboxEntry>, ProcessorError> {
        Ok(match context.get(&self.outbox, &entry_key(event_id))? {
            Some(OutboxValue::Entry(entry)) => Some(entry),
            _ => None,
        })
    }

    fn save(
        &self,
        context: &mut ProcessorContext<'_>,
        event_id: &str,
        entry: &OutboxEntry,
    ) -> Result<(), ProcessorError> {
        context.put(
            &self.outbox,
            &entry_key(event_id),
            &OutboxValue::Entry(entry.clone()),
        )
    }

    /// Moves `entry` into the queue at `due_at` (out of its old slot, if any).
    fn queue(
        &self,
        context: &mut ProcessorContext<'_>,
        event_id: &str,
        entry: &mut OutboxEntry,
        due_at: i64,
    ) -> Result<(), ProcessorError> {
        self.unqueue(context, entry)?;
        let key = due_key(due_at, entry.sequence, event_id);
        let slot = DueSlot {
            event_id: event_id.to_owned(),
            subscription_id: entry.subscription_id.clone(),
            ordering: entry.ordering.clone(),
            pending_since: entry.round_started_at,
        };
        context.put(&self.outbox, &key, &OutboxValue::Due(slot))?;
        self.signals.slot_queued(context.partition(), &key);
        entry.due_key = Some(key);
        Ok(())
    }

    fn unqueue(
        &self,
        context: &mut ProcessorContext<'_>,
        entry: &mut OutboxEntry,
    ) -> Result<(), ProcessorError> {
        if let Some(key) = entry.due_key.take() {
            context.delete(&self.outbox, &key)?;
        }
        Ok(())
    }

    fn apply_event(
        &self,
        context: &mut ProcessorContext<'_>,
        event: WebhookEvent,
        offset: i64,
    ) -> Result<(), ProcessorError> {
        let event_id = event.id.clone();
        let now = now_millis();
        let Some(mut entry) = self.entry(context, &event_id)? else {
            let mut entry = OutboxEntry {
                subscription_id: event.subscription_id.clone(),
                ordering: event_placement(&event.subscription_id, event.ordering_key.as_deref()),
                state: EntryState::Pending,
                attempts: 0,
                round_attempts: 0,
                round_started_at: event.redelivery_requested_at.unwrap_or(event.created_at),
                due_key: None,
                sequence: offset,
                redelivery_requested_at: event.redelivery_requested_at,
                event: Some(event),
            };
            self.queue(context, &event_id, &mut entry, now)?;
            self.save(context, &event_id, &entry)?;
            self.signals.queued.notify_one();
            return Ok(());
        };
        match event.redelivery_requested_at {
            Some(requested_at)
                if entry.state != EntryState::Pending
                    && entry.redelivery_requested_at < Some(requested_at) =>
            {
                if entry.state == EntryState::DeadLettered {
                    let partition = context.partition();
                    context.emit_to_partition(
                        &self.dead_letters,
                        partition,
                        &event_id,
                        None::<&WebhookEvent>,
                    )?;
                }
                entry.state = EntryState::Pending;
                entry.round_attempts = 0;
                entry.round_started_at = requested_at;
                entry.redelivery_requested_at = Some(requested_at);
                entry.sequence = offset;
                entry.event = Some(WebhookEvent {
                    redelivery_requested_at: None,
                    ..event
                });
                self.queue(context, &event_id, &mut entry, now)?;
                self.save(context, &event_id, &entry)?;
                self.signals.queued.notify_one();
            }
            Some(_) => {} // Pending already, or an old request replayed.
            None if entry.event.is_none() && entry.state == EntryState::Pending => {
                // Its attempts were applied before the event itself was replayed.
                entry.event = Some(event);
                self.save(context, &event_id, &entry)?;
            }
            None => {} // A replay of an event already handled.
        }
        Ok(())
    }

    fn apply_attempt(
        &self,
        context: &mut ProcessorContext<'_>,
        attempt: &WebhookDelivery,
    ) -> Result<(), ProcessorError> {
        let number = u32::try_from(attempt.attempt).unwrap_or(0);
        let event_id = attempt.event_id.as_str();
        let mut entry = match self.entry(context, event_id)? {
            Some(entry) if entry.attempts >= number => return Ok(()), // Replayed.
            Some(entry) => entry,
            None => OutboxEntry {
                event: None,
                subscription_id: attempt.subscription_id.clone(),
                ordering: format!("{}/", attempt.subscription_id),
                state: EntryState::Pending,
                attempts: 0,
                round_attempts: 0,
                round_started_at: attempt.attempted_at,
                due_key: None,
                sequence: 0,
                redelivery_requested_at: None,
            },
        };
        entry.attempts = number;
        entry.round_attempts += 1;
        match attempt.outcome {
            DeliveryOutcome::Failed => {
                let due_at = attempt.next_attempt_at.unwrap_or(attempt.attempted_at);
                self.queue(context, event_id, &mut entry, due_at)?;
            }
            DeliveryOutcome::Succeeded | DeliveryOutcome::Cancelled => {
                self.unqueue(context, &mut entry)?;
                entry.state = if attempt.outcome == DeliveryOutcome::Succeeded {
                    EntryState::Succeeded
                } else {
                    EntryState::Cancelled
                };
                entry.event = None;
            }
            DeliveryOutcome::DeadLettered => {
                // The executor wrote the dead letter before this attempt record.
                self.unqueue(context, &mut entry)?;
                entry.state = EntryState::DeadLettered;
            }
        }
        self.save(context, event_id, &entry)?;
        self.signals.attempt_applied(event_id, number);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executor_learns_the_lowest_slot_queued_per_partition() {
        let signals = OutboxSignals::default();
        assert_eq!(signals.take_lowest_queued(0), None);
        signals.slot_queued(0, &due_key(2_000, 1, "b"));
        signals.slot_queued(0, &due_key(1_000, 9, "a"));
        signals.slot_queued(0, &due_key(3_000, 2, "c"));
        signals.slot_queued(1, &due_key(5_000, 1, "d"));
        assert_eq!(signals.lowest_queued(0), Some(due_key(1_000, 9, "a")));
        assert_eq!(signals.take_lowest_queued(0), Some(due_key(1_000, 9, "a")));
        assert_eq!(signals.take_lowest_queued(0), None, "taken");
        assert_eq!(signals.take_lowest_queued(1), Some(due_key(5_000, 1, "d")));
        signals.slot_queued(1, &due_key(6_000, 1, "e"));
        signals.partition_started(1);
        assert_eq!(
            signals.take_lowest_queued(1).as_deref(),
            Some(DUE_PREFIX),
            "a restored partition is scanned from the queue's start"
        );
    }

    #[test]
    fn a_closing_partition_takes_no_dispatch_and_waits_for_those_under_way() {
        let signals = OutboxSignals::default();
        assert!(signals.try_dispatch(0));
        assert!(signals.try_dispatch(1));
        assert!(
            !signals.close_partition(0, Duration::from_millis(20)),
            "one delivery from partition 0 is not recorded"
        );
        assert!(!signals.try_dispatch(0), "partition 0 is closing");
        assert!(signals.try_dispatch(1), "partition 1 is not");
        std::thread::scope(|scope| {
            let closing = scope.spawn(|| signals.close_partition(0, Duration::from_secs(10)));
            signals.dispatch_recorded(0);
            assert!(
                closing.join().unwrap(),
                "the close ends with the last record"
            );
        });
        signals.partition_started(0);
        assert!(
            signals.try_dispatch(0),
            "open again once it is assigned here again"
        );
    }

    #[test]
    fn queue_keys_sort_by_due_time_then_arrival_and_stop_at_now() {
        let early = due_key(1_000, 7, "b");
        let same_time_later_arrival = due_key(1_000, 8, "a");
        let later = due_key(2_000, 1, "c");
        assert!(early < same_time_later_arrival);
        assert!(same_time_later_arrival < later);
        assert!(later.as_str() < due_until(2_000).as_str());
        assert!(due_until(1_999).as_str() < later.as_str());
        assert!(
            entry_key("x") < due_key(0, 0, "x"),
            "entries sort before the queue"
        );
    }
}
