//! How keys and values become bytes and back. A [`Serde`] is chosen per topic and per store;
//! Avro plugs in here from the typed-topics crate, JSON and strings serve tests and tools.

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes could not become a value (or the reverse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SerdeError(pub String);

/// Converts values of `T` to bytes and back.
pub trait Serde<T>: Send + Sync + 'static {
    fn serialize(&self, value: &T) -> Result<Vec<u8>, SerdeError>;
    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError>;
}

/// UTF-8 strings.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringSerde;

impl Serde<String> for StringSerde {
    fn serialize(&self, value: &String) -> Result<Vec<u8>, SerdeError> {
        Ok(value.as_bytes().to_vec())
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<String, SerdeError> {
        String::from_utf8(bytes.to_vec()).map_err(|error| SerdeError(format!("not UTF-8: {error}")))
    }
}

/// Raw bytes, unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesSerde;

impl Serde<Vec<u8>> for BytesSerde {
    fn serialize(&self, value: &Vec<u8>) -> Result<Vec<u8>, SerdeError> {
        Ok(value.clone())
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<Vec<u8>, SerdeError> {
        Ok(bytes.to_vec())
    }
}

/// JSON through serde.
pub struct JsonSerde<T>(PhantomData<fn() -> T>);

impl<T> JsonSerde<T> {
    pub fn new() -> Self {
        JsonSerde(PhantomData)
    }
}

impl<T> Default for JsonSerde<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for JsonSerde<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for JsonSerde<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("JsonSerde")
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Serde<T> for JsonSerde<T> {
    fn serialize(&self, value: &T) -> Result<Vec<u8>, SerdeError> {
        serde_json::to_vec(value).map_err(|error| SerdeError(format!("JSON: {error}")))
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError> {
        serde_json::from_slice(bytes).map_err(|error| SerdeError(format!("JSON: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_json_round_trip() {
        let text = "héllo".to_owned();
        assert_eq!(
            StringSerde.deserialize(&StringSerde.serialize(&text).unwrap()),
            Ok(text)
        );
        let json = JsonSerde::<Vec<u64>>::new();
        assert_eq!(
            json.deserialize(&json.serialize(&vec![1, 2]).unwrap()),
            Ok(vec![1, 2])
        );
    }

    #[test]
    fn bad_bytes_say_why() {
        assert!(
            StringSerde
                .deserialize(&[0xff])
                .unwrap_err()
                .0
                .contains("not UTF-8")
        );
        let error = JsonSerde::<u64>::new().deserialize(b"{").unwrap_err();
        assert!(error.0.starts_with("JSON:"), "{error}");
    }
}
