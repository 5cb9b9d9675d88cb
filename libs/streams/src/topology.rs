//! What an application consists of: its input topics, its state stores, its output topics and
//! the processor that runs for each partition ("task"). Typed handles ([`InputTopic`],
//! [`StoreDefinition`], [`OutputTopic`]) carry their serdes, so processors work with values.

use std::sync::Arc;

use rdkafka::message::BorrowedHeaders;

use crate::processor::Processor;
use crate::serde::{Serde, SerdeError};

/// One record as read from an input topic.
#[derive(Clone, Copy)]
pub struct InputRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's headers, among them its envelope (see [`eddy_service::envelope`]).
    pub headers: Option<&'a BorrowedHeaders>,
}

impl std::fmt::Debug for InputRecord<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("InputRecord")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &self.key)
            .field("value", &self.value)
            .field(
                "headers",
                &self.headers.map(rdkafka::message::Headers::count),
            )
            .finish()
    }
}

/// Why an input record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("undecodable key: {0}")]
    Key(String),
    #[error("undecodable value: {0}")]
    Value(String),
}

/// A typed input topic.
pub struct InputTopic<K, V> {
    name: String,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
}

impl<K, V> Clone for InputTopic<K, V> {
    fn clone(&self) -> Self {
        InputTopic {
            name: self.name.clone(),
            key_serde: Arc::clone(&self.key_serde),
            value_serde: Arc::clone(&self.value_serde),
        }
    }
}

impl<K, V> std::fmt::Debug for InputTopic<K, V> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("InputTopic")
            .field("name", &self.name)
            .finish()
    }
}

impl<K: 'static, V: 'static> InputTopic<K, V> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if `record` came from this topic.
    pub fn matches(&self, record: &InputRecord<'_>) -> bool {
        record.topic == self.name
    }

    /// The record's key and value (`None` for a tombstone). A record without a key is an error:
    /// every topic in Eddy is keyed. With `?` in a processor, a failure sends the record to the
    /// dead-letter topic.
    pub fn decode(&self, record: &InputRecord<'_>) -> Result<(K, Option<V>), DecodeError> {
        let key = record
            .key
            .ok_or_else(|| DecodeError::Key("the record has no key".to_owned()))
            .and_then(|key| {
                self.key_serde
                    .deserialize(key)
                    .map_err(|error| DecodeError::Key(error.0))
            })?;
        let value = record
            .value
            .map(|value| self.value_serde.deserialize(value))
            .transpose()
            .map_err(|error| DecodeError::Value(error.0))?;
        Ok((key, value))
    }
}

/// A typed key-value state store, changelogged to `<application id>-<name>-changelog`.
pub struct StoreDefinition<K, V> {
    name: String,
    pub(crate) key_serde: Arc<dyn Serde<K>>,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
}

impl<K, V> Clone for StoreDefinition<K, V> {
    fn clone(&self) -> Self {
        StoreDefinition {
            name: self.name.clone(),
            key_serde: Arc::clone(&self.key_serde),
            value_serde: Arc::clone(&self.value_serde),
        }
    }
}

impl<K, V> std::fmt::Debug for StoreDefinition<K, V> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StoreDefinition")
            .field("name", &self.name)
            .finish()
    }
}

impl<K: 'static, V: 'static> StoreDefinition<K, V> {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn encode_key(&self, key: &K) -> Result<Vec<u8>, SerdeError> {
        self.key_serde.serialize(key)
    }

    pub fn decode_key(&self, bytes: &[u8]) -> Result<K, SerdeError> {
        self.key_serde.deserialize(bytes)
    }

    pub fn decode_value(&self, bytes: &[u8]) -> Result<V, SerdeError> {
        self.value_serde.deserialize(bytes)
    }
}

/// A typed output topic.
pub struct OutputTopic<K, V> {
    name: String,
    pub(crate) key_serde: Arc<dyn Serde<K>>,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
}

impl<K, V> Clone for OutputTopic<K, V> {
    fn clone(&self) -> Self {
        OutputTopic {
            name: self.name.clone(),
            key_serde: Arc::clone(&self.key_serde),
            value_serde: Arc::clone(&self.value_serde),
        }
    }
}

impl<K, V> std::fmt::Debug for OutputTopic<K, V> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OutputTopic")
            .field("name", &self.name)
            .finish()
    }
}

impl<K: 'static, V: 'static> OutputTopic<K, V> {
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Builds one processor for a task (a partition number).
pub type ProcessorFactory = Arc<dyn Fn(i32) -> Box<dyn Processor> + Send + Sync>;

/// The parts of an application. Build it, then start it with [`crate::StreamsApp::start`].
pub struct Topology {
    pub(crate) application_id: String,
    pub(crate) inputs: Vec<String>,
    pub(crate) stores: Vec<String>,
    pub(crate) processor_factory: Option<ProcessorFactory>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Topology")
            .field("application_id", &self.application_id)
            .field("inputs", &self.inputs)
            .field("stores", &self.stores)
            .finish_non_exhaustive()
    }
}

impl Topology {
    /// An application with id `application_id`: its consumer group and the prefix of its
    /// internal topics. Version it (`communication-v2`) so a new version can reprocess beside the
    /// old one.
    pub fn new(application_id: impl Into<String>) -> Self {
        Topology {
            application_id: application_id.into(),
            inputs: Vec::new(),
            stores: Vec::new(),
            processor_factory: None,
        }
    }

    pub fn application_id(&self) -> &str {
        &self.application_id
    }

    /// Declares an input topic. All inputs must have the same partition count (co-partitioned):
    /// partition p of every input is processed by the same task.
    pub fn input<K: 'static, V: 'static>(
        &mut self,
        name: impl Into<String>,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> InputTopic<K, V> {
        let name = name.into();
        if !self.inputs.contains(&name) {
            self.inputs.push(name.clone());
        }
        InputTopic {
            name,
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
        }
    }

    /// Declares a state store.
    pub fn store<K: 'static, V: 'static>(
        &mut self,
        name: impl Into<String>,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> StoreDefinition<K, V> {
        let name = name.into();
        self.stores.push(name.clone());
        StoreDefinition {
            name,
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
        }
    }

    /// Declares an output topic (created by provisioning, not by the application).
    pub fn output<K: 'static, V: 'static>(
        &self,
        name: impl Into<String>,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> OutputTopic<K, V> {
        OutputTopic {
            name: name.into(),
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
        }
    }

    /// Sets the processor, built once per task by `factory(partition)`.
    pub fn processor<P, F>(&mut self, factory: F)
    where
        P: Processor + 'static,
        F: Fn(i32) -> P + Send + Sync + 'static,
    {
        self.processor_factory = Some(Arc::new(move |partition| Box::new(factory(partition))));
    }

    /// The changelog topic of store `store`.
    pub fn changelog_topic(&self, store: &str) -> String {
        changelog_topic(&self.application_id, store)
    }
}

pub(crate) fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}-changelog")
}
