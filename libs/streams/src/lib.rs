//! `eddy-streams`: a Kafka-Streams-style runtime on rdkafka and RocksDB, the engine under every
//! Eddy transformer and service.
//!
//! An application ([`Topology`]) has an id (its consumer group and the prefix of its internal
//! topics), co-partitioned input topics, state stores and a [`Processor`] that runs once per
//! partition ("task"). Each store is a RocksDB instance per partition, and every write also goes
//! to the store's compacted changelog topic `<application id>-<store>-changelog`. On assignment a
//! store restores from its changelog starting at its local checkpoint, so a restart with a kept
//! state dir reads only the tail. Commits are at-least-once: outputs and changelog records are
//! acknowledged before input offsets are committed, and checkpoints follow the commit.

pub mod app;
mod delivery;
pub mod dsl;
pub mod error;
pub mod global;
mod membership;
pub mod metrics;
pub mod partitioner;
pub mod processor;
pub mod query;
pub mod serde;
pub mod service;
pub mod store;
mod task;
pub mod topology;

pub use app::{
    AppState, ErrorPolicy, ProcessingGuarantee, StreamsApp, StreamsConfig, dead_letter_topic,
};
pub use dsl::{KGroupedStream, KStream, KTable, StreamsBuilder};
pub use error::StreamsError;
pub use global::GlobalTable;
pub use metrics::StreamsMetrics;
pub use processor::{Processor, ProcessorContext, ProcessorError};
pub use query::{InstanceInfo, KeyOwner, KeyRange, Queries, QueryError, ScanOrder};
pub use serde::{BytesSerde, JsonSerde, Serde, SerdeError, StringSerde};
pub use task::{
    DLQ_ATTEMPTS_HEADER, DLQ_ERROR_HEADER, DLQ_OFFSET_HEADER, DLQ_PARTITION_HEADER,
    DLQ_TOPIC_HEADER,
};
pub use topology::{DecodeError, InputRecord, InputTopic, OutputTopic, StoreDefinition, Topology};
