//! The wire format of record values: Confluent framing (magic byte 0, the 4-byte big-endian
//! schema id, then Avro binary), readable by every Confluent-compatible deserializer.
//!
//! [`AvroSerde`] writes with the entity's own schema, which must already be registered under
//! the topic's subject (provisioning registers schemas; producers never do), and reads any
//! version of the subject by the id in the frame, resolving it to the entity's schema. It plugs
//! into `eddy-streams` as a [`Serde`], so topologies read and write typed topics directly.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, PoisonError, RwLock};

use apache_avro::Schema;
use eddy_streams::serde::{Serde, SerdeError};

use crate::entities::{Entity, SchemaError, decode_with, encode_with};
use crate::registry::{RegistryError, SchemaRegistry};

/// The first byte of a Confluent-framed value.
pub const MAGIC_BYTE: u8 = 0;

/// `bytes` framed with `schema_id`.
pub fn frame(schema_id: u32, avro: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(5 + avro.len());
    framed.push(MAGIC_BYTE);
    framed.extend_from_slice(&schema_id.to_be_bytes());
    framed.extend_from_slice(avro);
    framed
}

/// The schema id and Avro payload of a framed value.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), SerdeError> {
    match bytes {
        [MAGIC_BYTE, a, b, c, d, payload @ ..] => {
            Ok((u32::from_be_bytes([*a, *b, *c, *d]), payload))
        }
        [] => Err(SerdeError(
            "empty value: not a Confluent-framed Avro record".to_owned(),
        )),
        [first, ..] if *first != MAGIC_BYTE => Err(SerdeError(format!(
            "first byte is {first:#04x}, not the magic byte 0: not a Confluent-framed Avro record"
        ))),
        _ => Err(SerdeError(format!(
            "{} bytes: too short for a Confluent-framed Avro record (5-byte header)",
            bytes.len()
        ))),
    }
}

/// Confluent-framed Avro values of one entity on one topic.
pub struct AvroSerde<T> {
    subject: String,
    writer_id: u32,
    schema: Arc<Schema>,
    /// Writer schemas by id, fetched from the registry the first time a record carries the id.
    writers: Arc<RwLock<HashMap<u32, Arc<Schema>>>>,
    registry: SchemaRegistry,
    entity: PhantomData<fn() -> T>,
}

impl<T> Clone for AvroSerde<T> {
    fn clone(&self) -> Self {
        AvroSerde {
            subject: self.subject.clone(),
            writer_id: self.writer_id,
            schema: Arc::clone(&self.schema),
            writers: Arc::clone(&self.writers),
            registry: self.registry.clone(),
            entity: PhantomData,
        }
    }
}

impl<T> fmt::Debug for AvroSerde<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AvroSerde")
            .field("subject", &self.subject)
            .field("writer_id", &self.writer_id)
            .finish_non_exhaustive()
    }
}

/// Why an [`AvroSerde`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl<T: Entity> AvroSerde<T> {
    /// The serde for values of `topic` (subject `<topic>-value`). Fails when the entity's
    /// schema is not registered under the subject.
    pub async fn for_topic(registry: &SchemaRegistry, topic: &str) -> Result<Self, CodecError> {
        let subject = format!("{topic}-value");
        let schema = Arc::new(T::schema()?);
        let registered = registry
            .lookup(&subject, &T::registry_text()?)
            .await?
            .ok_or_else(|| RegistryError::NotRegistered {
                subject: subject.clone(),
                schema: T::NAME.to_owned(),
            })?;
        let writers = HashMap::from([(registered.id, Arc::clone(&schema))]);
        Ok(AvroSerde {
            subject,
            writer_id: registered.id,
            schema,
            writers: Arc::new(RwLock::new(writers)),
            registry: registry.clone(),
            entity: PhantomData,
        })
    }

    /// The id framed values written by this serde carry.
    pub fn schema_id(&self) -> u32 {
        self.writer_id
    }

    /// The framed value of `value`.
    pub fn encode(&self, value: &T) -> Result<Vec<u8>, SchemaError> {
        encode_with(&self.schema, value).map(|avro| frame(self.writer_id, &avro))
    }

    /// Decodes a framed value written with any registered version of the schema.
    pub fn decode(&self, bytes: &[u8]) -> Result<T, SerdeError> {
        let (id, payload) = unframe(bytes)?;
        let writer = self.writer_schema(id)?;
        decode_with(&writer, &self.schema, payload)
            .map_err(|error| SerdeError(format!("schema id {id}: {error}")))
    }

    fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, SerdeError> {
        let known = self
            .writers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        if let Some(schema) = known {
            return Ok(schema);
        }
        let schema = Arc::new(fetch_schema_blocking(self.registry.args(), id).map_err(
            |error| {
                SerdeError(format!(
                    "schema id {id} of subject {}: {error}",
                    self.subject
                ))
            },
        )?);
        self.writers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&schema));
        Ok(schema)
    }
}

/// Fetches and parses schema `id` from any context (the streams processing thread or an async
/// task) on a short-lived thread with its own client. This happens once per schema id, when a
/// record written with a schema version this process has not seen arrives.
fn fetch_schema_blocking(
    args: &crate::registry::RegistryArgs,
    id: u32,
) -> Result<Schema, RegistryError> {
    let args = args.clone();
    let fetched = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|error| RegistryError::Unreachable {
                        url: args.url.clone(),
                        message: format!("cannot start a runtime to fetch schema {id}: {error}"),
                    })?;
                runtime.block_on(async { SchemaRegistry::new(&args)?.schema_by_id(id).await })
            })
            .join()
    });
    let text = fetched.map_err(|_| RegistryError::BadSchema {
        id,
        message: "the thread fetching it panicked".to_owned(),
    })??;
    Schema::parse_str(&text).map_err(|error| RegistryError::BadSchema {
        id,
        message: error.to_string(),
    })
}

impl<T: Entity + 'static> Serde<T> for AvroSerde<T> {
    fn serialize(&self, value: &T) -> Result<Vec<u8>, SerdeError> {
        self.encode(value)
            .map_err(|error| SerdeError(error.to_string()))
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError> {
        self.decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips_and_bad_frames_say_why() {
        let framed = frame(0x0102_0304, b"avro");
        assert_eq!(framed, [0, 1, 2, 3, 4, b'a', b'v', b'r', b'o']);
        assert_eq!(unframe(&framed), Ok((0x0102_0304, &b"avro"[..])));
        assert!(unframe(b"").unwrap_err().0.contains("empty"));
        assert!(
            unframe(b"{\"json\":1}")
                .unwrap_err()
                .0
                .contains("magic byte")
        );
        assert!(unframe(&[0, 0, 1]).unwrap_err().0.contains("too short"));
    }
}
