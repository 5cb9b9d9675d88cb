//! Delivery reports of the application's producer: the first failure (which stops the
//! application before anything is committed) and, per changelog partition, the highest offset
//! the broker acknowledged (which becomes the store's checkpoint).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rdkafka::ClientContext;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};

#[derive(Debug)]
pub(crate) struct DeliveryTracker {
    changelog_topics: HashSet<String>,
    state: Mutex<DeliveryState>,
}

#[derive(Debug, Default)]
struct DeliveryState {
    first_error: Option<String>,
    changelog_offsets: HashMap<(String, i32), i64>,
}

impl DeliveryTracker {
    pub(crate) fn new(changelog_topics: HashSet<String>) -> Self {
        DeliveryTracker {
            changelog_topics,
            state: Mutex::default(),
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
        match result {
            Ok(message) => {
                if self.changelog_topics.contains(message.topic()) {
                    let key = (message.topic().to_owned(), message.partition());
                    let mut state = self.state();
                    let offset = state.changelog_offsets.entry(key).or_insert(-1);
                    *offset = (*offset).max(message.offset());
                }
            }
            Err((error, message)) => {
                let mut state = self.state();
                if state.first_error.is_none() {
                    tracing::error!(error = %error, topic = message.topic(), "delivery failed");
                    state.first_error = Some(format!("{}: {error}", message.topic()));
                }
            }
        }
    }
}
