//! Eddy's typed topics:
//!
//! - [`entities`]: the record types, each with an Avro schema in `avro/<entity>.avsc`;
//! - [`codec`]: the wire format (Confluent framing: magic byte, schema id, Avro binary) and
//!   [`AvroSerde`], the `eddy-streams` serde for typed topics;
//! - [`registry`]: the schema registry client (Confluent-compatible API);
//! - [`catalog`]: every topic with its settings, key type and value schema;
//! - [`ids`]: deterministic ids, so re-ingestion is idempotent;
//! - [`metadata`]: metadata subjects, reserved keys and JSON flattening;
//! - [`writer`]: the producer of request handlers (framed values, envelopes, placement);
//! - [`provision`]: makes a cluster and registry match the catalog (`eddy topics provision`).
//!
//! `docs/topics.md` explains the choices.

pub mod catalog;
pub mod codec;
pub mod entities;
pub mod ids;
pub mod metadata;
pub mod provision;
pub mod registry;
pub mod writer;

pub use catalog::{Catalog, CatalogArgs, TopicDefinition};
pub use codec::AvroSerde;
pub use entities::*;
pub use registry::{RegistryArgs, SchemaRegistry};
