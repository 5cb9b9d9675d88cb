//! The errors of the streams runtime.

use std::path::PathBuf;

use crate::serde::SerdeError;

/// What can stop a streams application or fail one of its operations.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("store {store} partition {partition}")]
    Store {
        store: String,
        partition: i32,
        #[source]
        source: rocksdb::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("inputs are not co-partitioned: {0}")]
    NotCoPartitioned(String),
    #[error("topic {topic}: {message}")]
    Topic { topic: String, message: String },
    #[error("unknown store {0} (declare it in the topology)")]
    UnknownStore(String),
    #[error("serialization: {0}")]
    Serde(#[from] SerdeError),
    #[error("producing failed: {0}")]
    Produce(String),
    #[error("processor failed on {topic}/{partition}@{offset}: {message}")]
    Processor {
        topic: String,
        partition: i32,
        offset: i64,
        message: String,
    },
    #[error("the processing thread stopped unexpectedly")]
    ThreadPanicked,
}

impl StreamsError {
    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        StreamsError::Kafka {
            context: context.into(),
            source,
        }
    }
}
