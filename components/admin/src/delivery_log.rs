//! The delivery log view: a streams application (`admin-deliveries-v1`) reading the webhook
//! deliveries topic (one record per attempt, keyed `<event id>/<attempt>`, on the partition of
//! its event) into stores that answer `/webhooks.deliveries.list`. Several admin instances share
//! the partitions; a list asks every instance for its part and merges (see
//! [`crate::deliveries`]).
//!
//! Stores, per partition:
//!
//! - `attempts`: `<subscription id>/<inverted attempted_at, 16 hex digits>/<event id>/<attempt,
//!   8 hex digits>` → the attempt, so a subscription's attempts are newest first in key order;
//! - `event-attempts`: the record key (`<event id>/<attempt>`) → the attempt: finds an event's
//!   attempts at once (the `event_id` filter, "is this event in the log?") and the `attempts`
//!   entry a rewritten or deleted record replaces;
//! - `counts`: subscription id → how many attempts of it the partition holds (the unfiltered
//!   list's `total` without a scan).
//!
//! The stores mirror the topic: a record rewritten under the same key replaces the attempt, a
//! tombstone deletes it. They are not trimmed when the topic's retention drops old records.

use eddy_schemas::{AvroSerde, DeliveryOutcome, WebhookDelivery};
use eddy_streams::query::{KeyWalk, just_after, prefix_end, scan};
use eddy_streams::{
    InputRecord, InputTopic, JsonSerde, KeyRange, Processor, ProcessorContext, ProcessorError,
    Queries, QueryError, ScanOrder, StoreDefinition, StringSerde, Topology,
};
use serde::{Deserialize, Serialize};

/// The stores of the delivery log view.
#[derive(Debug, Clone)]
pub struct DeliveryStores {
    pub attempts: StoreDefinition<String, WebhookDelivery>,
    pub event_attempts: StoreDefinition<String, WebhookDelivery>,
    pub counts: StoreDefinition<String, u64>,
}

/// Declares the deliveries input and the stores in `topology`.
pub fn declare(
    topology: &mut Topology,
    deliveries_topic: &str,
    serde: AvroSerde<WebhookDelivery>,
) -> (InputTopic<String, WebhookDelivery>, DeliveryStores) {
    let input = topology.input(deliveries_topic, StringSerde, serde);
    let stores = DeliveryStores {
        attempts: topology.store("attempts", StringSerde, JsonSerde::new()),
        event_attempts: topology.store("event-attempts", StringSerde, JsonSerde::new()),
        counts: topology.store("counts", StringSerde, JsonSerde::new()),
    };
    (input, stores)
}

/// `millis` inverted (later times sort first) as 16 hex digits.
pub fn inverted_time(millis: i64) -> String {
    format!("{:016x}", u64::MAX - millis.max(0).unsigned_abs())
}

/// The `attempts` key of an attempt.
pub fn attempt_key(delivery: &WebhookDelivery) -> String {
    attempt_key_of(
        &delivery.subscription_id,
        delivery.attempted_at,
        &delivery.event_id,
        delivery.attempt,
    )
}

/// The `attempts` key of attempt `attempt` of event `event_id` of a subscription, made at
/// `attempted_at`.
pub fn attempt_key_of(
    subscription_id: &str,
    attempted_at: i64,
    event_id: &str,
    attempt: i32,
) -> String {
    format!(
        "{subscription_id}/{}/{event_id}/{:08x}",
        inverted_time(attempted_at),
        attempt.max(0).unsigned_abs()
    )
}

/// The prefix of every `attempts` key of a subscription.
pub fn subscription_prefix(subscription_id: &str) -> String {
    format!("{subscription_id}/")
}

/// Builds the stores from the deliveries topic, one task per partition.
#[derive(Debug)]
pub struct DeliveryLogBuilder {
    pub input: InputTopic<String, WebhookDelivery>,
    pub stores: DeliveryStores,
}

impl DeliveryLogBuilder {
    /// Adds `delta` to the partition's count of `subscription_id`'s attempts.
    fn count(
        &self,
        context: &mut ProcessorContext<'_>,
        subscription_id: &str,
        delta: i64,
    ) -> Result<(), ProcessorError> {
        let key = subscription_id.to_owned();
        let current = context.get(&self.stores.counts, &key)?.unwrap_or(0);
        let next = current.saturating_add_signed(delta);
        if next == 0 {
            context.delete(&self.stores.counts, &key)
        } else {
            context.put(&self.stores.counts, &key, &next)
        }
    }
}

impl Processor for DeliveryLogBuilder {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        if !self.input.matches(record) {
            return Ok(());
        }
        let (key, delivery) = self.input.decode(record)?;
        let previous = context.get(&self.stores.event_attempts, &key)?;
        if let Some(previous) = &previous {
            let previous_key = attempt_key(previous);
            if delivery
                .as_ref()
                .is_none_or(|delivery| attempt_key(delivery) != previous_key)
            {
                context.delete(&self.stores.attempts, &previous_key)?;
            }
        }
        match (delivery, previous) {
            (Some(delivery), previous) => {
                context.put(&self.stores.attempts, &attempt_key(&delivery), &delivery)?;
                context.put(&self.stores.event_attempts, &key, &delivery)?;
                match previous {
                    None => self.count(context, &delivery.subscription_id, 1)?,
                    Some(previous) if previous.subscription_id != delivery.subscription_id => {
                        self.count(context, &previous.subscription_id, -1)?;
                        self.count(context, &delivery.subscription_id, 1)?;
                    }
                    Some(_) => {}
                }
            }
            (None, Some(previous)) => {
                context.delete(&self.stores.event_attempts, &key)?;
                self.count(context, &previous.subscription_id, -1)?;
            }
            (None, None) => {}
        }
        Ok(())
    }
}

/// A position in a subscription's attempts, by an attempt's `attempts` key: after it, from it
/// on (itself included), or before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Position {
    #[serde(rename = "a")]
    After(String),
    #[serde(rename = "f")]
    From(String),
    #[serde(rename = "b")]
    Before(String),
}

impl Position {
    pub fn key(&self) -> &str {
        match self {
            Position::After(key) | Position::From(key) | Position::Before(key) => key,
        }
    }

    /// The direction candidates are walked in: towards older attempts (ascending keys) unless
    /// paging back.
    pub fn order(position: Option<&Position>) -> ScanOrder {
        match position {
            Some(Position::Before(_)) => ScanOrder::Descending,
            _ => ScanOrder::Ascending,
        }
    }
}

/// Which attempts of one subscription a list asks for.
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub subscription_id: String,
    pub outcome: Option<DeliveryOutcome>,
    pub event_id: Option<String>,
    /// Attempts at or after this time (milliseconds).
    pub since: Option<i64>,
    /// Attempts before this time (milliseconds).
    pub until: Option<i64>,
}

impl AttemptFilter {
    /// True without any filter but the subscription: the count store has the total.
    fn is_unfiltered(&self) -> bool {
        self.outcome.is_none()
            && self.event_id.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    fn matches(&self, delivery: &WebhookDelivery) -> bool {
        delivery.subscription_id == self.subscription_id
            && self
                .outcome
                .is_none_or(|outcome| outcome == delivery.outcome)
            && self
                .event_id
                .as_ref()
                .is_none_or(|event_id| *event_id == delivery.event_id)
            && self
                .since
                .is_none_or(|since| delivery.attempted_at >= since)
            && self.until.is_none_or(|until| delivery.attempted_at < until)
    }

    /// The `attempts` keys `from <= key < to` the time window allows, without a position.
    fn key_bounds(&self) -> (Vec<u8>, Vec<u8>) {
        let prefix = subscription_prefix(&self.subscription_id);
        // attempted_at < until: the inverted time at least that of until - 1.
        let from = match self.until {
            Some(until) if until > 0 => {
                format!("{prefix}{}", inverted_time(until - 1)).into_bytes()
            }
            // Nothing is before the epoch: an empty range.
            Some(_) => prefix_end(&prefix),
            None => prefix.clone().into_bytes(),
        };
        // attempted_at >= since: the inverted time at most that of since.
        let to = match self.since {
            Some(since) => prefix_end(&format!("{prefix}{}/", inverted_time(since))),
            None => prefix_end(&prefix),
        };
        (from, to)
    }

    /// The key bounds after a position: past the cursor in the walk's direction.
    fn bounds_after(&self, position: Option<&Position>) -> (Vec<u8>, Vec<u8>) {
        let (mut from, mut to) = self.key_bounds();
        match position {
            None => {}
            Some(Position::After(key)) => from = from.max(just_after(key)),
            Some(Position::From(key)) => from = from.max(key.as_bytes().to_vec()),
            Some(Position::Before(key)) => to = to.min(key.as_bytes().to_vec()),
        }
        (from, to)
    }
}

/// This instance's candidates for a page, from each partition it owns: up to `limit` per
/// partition in the walk's order (merged and cut by the caller), and the number of attempts in
/// those partitions matching `filter` (whatever the position).
pub fn local_candidates(
    queries: &Queries,
    stores: &DeliveryStores,
    filter: &AttemptFilter,
    position: Option<&Position>,
    limit: usize,
) -> Result<(Vec<(String, WebhookDelivery)>, u64), QueryError> {
    queries.ensure_running()?;
    let order = Position::order(position);
    let (from, to) = filter.bounds_after(position);
    let mut candidates = Vec::new();
    let mut total = 0;
    for partition in queries.local_partition_numbers(&stores.attempts) {
        if let Some(event_id) = &filter.event_id {
            // An event has a handful of attempts: read them all through the event index.
            let prefix = format!("{event_id}/");
            let end = prefix_end(&prefix);
            let mut attempts: Vec<(String, WebhookDelivery)> = queries
                .range_in_partition(
                    &stores.event_attempts,
                    partition,
                    KeyRange {
                        from: prefix.as_bytes(),
                        to: Some(&end),
                        order: ScanOrder::Ascending,
                    },
                    usize::MAX,
                )?
                .into_iter()
                .map(|(_, delivery)| (attempt_key(&delivery), delivery))
                .filter(|(_, delivery)| filter.matches(delivery))
                .collect();
            total += attempts.len() as u64;
            attempts.retain(|(key, _)| {
                key.as_bytes() >= from.as_slice() && key.as_bytes() < to.as_slice()
            });
            attempts.sort_by(|left, right| left.0.cmp(&right.0));
            if order == ScanOrder::Descending {
                attempts.reverse();
            }
            attempts.truncate(limit);
            candidates.extend(attempts);
            continue;
        }
        candidates.extend(scan(
            queries,
            &stores.attempts,
            partition,
            KeyWalk {
                from: from.clone(),
                to: Some(to.clone()),
                order,
            },
            limit,
            |_, delivery| filter.matches(delivery),
        )?);
        total += if filter.is_unfiltered() {
            queries
                .get_in_partition(&stores.counts, partition, &filter.subscription_id)?
                .unwrap_or(0)
        } else {
            let (from, to) = filter.key_bounds();
            scan(
                queries,
                &stores.attempts,
                partition,
                KeyWalk {
                    from,
                    to: Some(to),
                    order: ScanOrder::Ascending,
                },
                usize::MAX,
                |_, delivery| filter.matches(delivery),
            )?
            .len() as u64
        };
    }
    Ok((candidates, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(subscription_id: &str, event_id: &str, attempt: i32, at: i64) -> WebhookDelivery {
        WebhookDelivery {
            event_id: event_id.to_owned(),
            subscription_id: subscription_id.to_owned(),
            event_type: "message.created".to_owned(),
            attempt,
            attempted_at: at,
            outcome: DeliveryOutcome::Failed,
            status_code: Some(500),
            latency_ms: Some(12),
            error: None,
            next_attempt_at: None,
        }
    }

    #[test]
    fn keys_sort_a_subscription_newest_first() {
        let older = attempt_key(&attempt("s1", "e1", 1, 1_000));
        let newer = attempt_key(&attempt("s1", "e2", 2, 2_000));
        assert!(newer < older, "{newer} < {older}");
        assert_eq!(older, format!("s1/{:016x}/e1/00000001", u64::MAX - 1_000));
        assert_eq!(inverted_time(0), "ffffffffffffffff");
        assert!(older.starts_with(&subscription_prefix("s1")));
    }

    #[test]
    fn time_bounds_keep_since_and_drop_until() {
        let filter = AttemptFilter {
            subscription_id: "s1".to_owned(),
            since: Some(2_000),
            until: Some(3_000),
            ..AttemptFilter::default()
        };
        let (from, to) = filter.key_bounds();
        let inside = |at: i64| {
            let key = attempt_key(&attempt("s1", "e", 1, at)).into_bytes();
            key >= from && key < to
        };
        assert!(!inside(1_999));
        assert!(inside(2_000));
        assert!(inside(2_999));
        assert!(!inside(3_000));
        let nothing = AttemptFilter {
            subscription_id: "s1".to_owned(),
            until: Some(0),
            ..AttemptFilter::default()
        };
        let (from, to) = nothing.key_bounds();
        assert!(from >= to, "an empty range");
    }

    #[test]
    fn positions_narrow_the_bounds_in_their_direction() {
        let filter = AttemptFilter {
            subscription_id: "s1".to_owned(),
            ..AttemptFilter::default()
        };
        let cursor = attempt_key(&attempt("s1", "e", 1, 5_000));
        let (from, _) = filter.bounds_after(Some(&Position::After(cursor.clone())));
        assert_eq!(from, just_after(&cursor));
        let (from, _) = filter.bounds_after(Some(&Position::From(cursor.clone())));
        assert_eq!(from, cursor.as_bytes());
        let (_, to) = filter.bounds_after(Some(&Position::Before(cursor.clone())));
        assert_eq!(to, cursor.into_bytes());
    }
}
