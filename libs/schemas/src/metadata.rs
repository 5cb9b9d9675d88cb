//! Metadata: flexible facts about a conversation, message, channel or contact, one record per
//! (subject, dot-path key), keyed by [`crate::ids::metadata_id`]. Records of a conversation or
//! of one of its messages are partitioned by the conversation id, so the communication service
//! sees them in the conversation's task; a tombstone on the same key and partition deletes one.
//!
//! JSON documents are stored flattened (`{"a": {"b": 1}}` becomes key `a.b`, type NUMBER,
//! value `1`; arrays are stored whole) and reassembled for the API.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::entities::ValueType;

/// Reserved conversation keys.
pub const TAGS_PREFIX: &str = "tags.";
pub const STATE: &str = "state";
pub const UNREAD_COUNT: &str = "unread_count";
pub const CONTACT_DISPLAY_NAME: &str = "contact.display_name";
/// Reserved message key: why delivery failed.
pub const ERROR: &str = "error";
/// Where `/metadata.upsert` puts user data.
pub const USER_DATA: &str = "user_data";

/// What a metadata record is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Conversation(String),
    Message(String),
    Channel(String),
    Contact(String),
}

impl Subject {
    /// Parses `<namespace>:<id>`.
    pub fn parse(text: &str) -> Option<Subject> {
        let (namespace, id) = text.split_once(':')?;
        if id.is_empty() {
            return None;
        }
        let id = id.to_owned();
        match namespace {
            "conversation" => Some(Subject::Conversation(id)),
            "message" => Some(Subject::Message(id)),
            "channel" => Some(Subject::Channel(id)),
            "contact" => Some(Subject::Contact(id)),
            _ => None,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Subject::Conversation(id)
            | Subject::Message(id)
            | Subject::Channel(id)
            | Subject::Contact(id) => id,
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let namespace = match self {
            Subject::Conversation(_) => "conversation",
            Subject::Message(_) => "message",
            Subject::Channel(_) => "channel",
            Subject::Contact(_) => "contact",
        };
        write!(formatter, "{namespace}:{}", self.id())
    }
}

/// One flattened JSON leaf: its dot path, its text form and its type. A JSON `null` leaf means
/// "delete this key" (JSON merge patch, RFC 7396).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatValue {
    pub key: String,
    pub value: String,
    pub value_type: ValueType,
}

/// Flattens `document` under `prefix` (empty: none) into dot-path leaves. Objects recurse;
/// arrays, strings, numbers, booleans and nulls are leaves. An empty object is a leaf too, so
/// `{}` can be stored.
pub fn flatten(prefix: &str, document: &Value) -> Vec<FlatValue> {
    let mut leaves = Vec::new();
    flatten_into(prefix, document, &mut leaves);
    leaves
}

fn flatten_into(path: &str, value: &Value, leaves: &mut Vec<FlatValue>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, inner) in map {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                flatten_into(&path, inner, leaves);
            }
        }
        leaf => leaves.push(FlatValue {
            key: path.to_owned(),
            value: match leaf {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            },
            value_type: value_type_of(leaf),
        }),
    }
}

/// The type a JSON value is stored as.
pub fn value_type_of(value: &Value) -> ValueType {
    match value {
        Value::Null => ValueType::Null,
        Value::Bool(_) => ValueType::Bool,
        Value::Number(_) => ValueType::Number,
        Value::String(_) => ValueType::Text,
        Value::Array(_) => ValueType::Array,
        Value::Object(_) => ValueType::Object,
    }
}

/// The JSON value of a stored metadata value.
pub fn typed_value(value: &str, value_type: ValueType) -> Value {
    match value_type {
        ValueType::Text => Value::String(value.to_owned()),
        ValueType::Null => Value::Null,
        ValueType::Bool => Value::Bool(value == "true"),
        ValueType::Number | ValueType::Object | ValueType::Array => serde_json::from_str(value)
            // A value that does not parse as its type is still shown, as text.
            .unwrap_or_else(|_| Value::String(value.to_owned())),
    }
}

/// Reassembles flattened entries (dot path → JSON value) into one document. Entries are
/// applied in key order; a longer path replaces a scalar at its prefix.
pub fn unflatten<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let mut root = Map::new();
    for (path, value) in entries {
        insert_path(&mut root, path, value);
    }
    Value::Object(root)
}

fn insert_path(root: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut node = root;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            node.insert(part.to_owned(), value);
            return;
        }
        let child = node
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            *child = Value::Object(Map::new());
        }
        let Value::Object(map) = child else {
            return;
        };
        node = map;
    }
}

/// Convenience: a document from stored (key → (value, type)) pairs.
pub fn document(entries: &BTreeMap<String, (String, ValueType)>) -> Value {
    unflatten(
        entries
            .iter()
            .map(|(key, (value, value_type))| (key.as_str(), typed_value(value, *value_type))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_flatten_to_typed_dot_paths_and_back() {
        let document_in = json!({"a": {"b": 1, "c": "x"}, "d": [1, 2], "e": true, "f": {}});
        let leaves = flatten("user_data", &document_in);
        let keys: Vec<_> = leaves.iter().map(|leaf| leaf.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "user_data.a.b",
                "user_data.a.c",
                "user_data.d",
                "user_data.e",
                "user_data.f"
            ]
        );
        assert_eq!(leaves[0].value_type, ValueType::Number);
        assert_eq!(leaves[2].value, "[1,2]");
        let back = unflatten(
            leaves
                .iter()
                .map(|leaf| (leaf.key.as_str(), typed_value(&leaf.value, leaf.value_type))),
        );
        assert_eq!(back, json!({"user_data": document_in}));
    }

    #[test]
    fn subjects_parse_and_print() {
        assert_eq!(
            Subject::parse("conversation:42"),
            Some(Subject::Conversation("42".to_owned()))
        );
        assert_eq!(Subject::parse("user:42"), None);
        assert_eq!(Subject::parse("message:"), None);
        assert_eq!(Subject::Message("7".to_owned()).to_string(), "message:7");
    }
}
