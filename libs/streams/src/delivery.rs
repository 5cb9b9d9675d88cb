//! Delivery reports of the application's producer: the first failure (which stops the
//! application before anything is committed), per changelog partition the highest offset the
//! broker acknowledged (which becomes the store's checkpoint), and how many records still wait
//! for their report (a commit waits until none does).

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};

#[derive(Debug)]
pub(crate) struct DeliveryTracker {
    changelog_topics: HashSet<String>,
    state: Mutex<DeliveryState>,
    /// Signalled when the last outstanding record gets its report.
    all_reported: Condvar,
}

#[derive(Debug, Default)]
struct DeliveryState {
    first_error: Option<String>,
    changelog_offsets: HashMap<(String, i32), i64>,
    /// Records handed to the producer whose delivery report has not come yet.
    outstanding: u64,
}

impl DeliveryTracker {
    pub(crate) fn new(changelog_topics: HashSet<String>) -> Self {
        DeliveryTracker {
            changelog_topics,
            state: Mutex::default(),
            all_reported: Condvar::new(),
        }
    }

    /// Counts a record about to be handed to the producer.
    pub(crate) fn sending(&self) {
        self.state().outstanding += 1;
    }

    /// Uncounts a record the producer refused (it will get no report).
    pub(crate) fn refused(&self) {
        self.reported(&mut self.state());
    }

    /// Waits until every record handed to the producer has its delivery report; false if
    /// `timeout` passed first.
    ///
    /// Not `Producer::flush`: rust-rdkafka's flush polls the producer's queue in 100 ms
    /// waits, and with the background thread of a `ThreadedProducer` taking the reports, each
    /// flush took those 100 ms in full (every commit stalled processing for 100 ms).
    pub(crate) fn wait_for_reports(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        while state.outstanding > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            state = self
                .all_reported
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn reported(&self, state: &mut DeliveryState) {
        state.outstanding = state.outstanding.saturating_sub(1);
        if state.outstanding == 0 {
            self.all_reported.notify_all();
        }
    }

    pub(crate) fn first_error(&self) -> Option<String> {
        self.state().first_error.clone()
    }

    /// The highest acknowledged offset of a changelog partition, if anything was written.
    pub(crate) fn changelog_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.state()
            .changelog_offsets
            .get(&(topic.to_owned(), partition))
            .copied()
    }

    fn state(&self) -> MutexGuard<'_, DeliveryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        let mut state = self.state();
        match result {
            Ok(message) => {
                if self.changelog_topics.contains(message.topic()) {
                    let key = (message.topic().to_owned(), message.partition());
                    let offset = state.changelog_offsets.entry(key).or_insert(-1);
                    *offset = (*offset).max(message.offset());
                }
            }
            Err((error, message)) => {
                if state.first_error.is_none() {
                    tracing::error!(error = %error, topic = message.topic(), "delivery failed");
                    state.first_error = Some(format!("{}: {error}", message.topic()));
                }
            }
        }
        self.reported(&mut state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_waits_for_every_outstanding_report() {
        let tracker = DeliveryTracker::new(HashSet::new());
        assert!(tracker.wait_for_reports(Duration::ZERO), "nothing sent");
        tracker.sending();
        tracker.sending();
        assert!(
            !tracker.wait_for_reports(Duration::from_millis(10)),
            "two records without a report"
        );
        tracker.refused();
        assert!(!tracker.wait_for_reports(Duration::from_millis(10)));
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| tracker.wait_for_reports(Duration::from_secs(10)));
            tracker.refused();
            assert!(waiter.join().unwrap(), "woken by the last report");
        });
    }
}
