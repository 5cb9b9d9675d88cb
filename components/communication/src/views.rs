//! The JSON answers of the communication API (Airy Core's shapes, snake_case, ISO-8601 UTC
//! timestamps with milliseconds).

use eddy_api::time::iso_millis;
use eddy_api::views::channel as channel_view;
use eddy_schemas::metadata::{self, UNREAD_COUNT};
use eddy_schemas::{Channel, Message};
use serde_json::{Map, Value, json};

use crate::state::{Conversation, MetaEntry, entry_json};

/// A message with its metadata (see [`eddy_api::views::message`]).
pub fn message(message: &Message, metadata_entries: &[(String, MetaEntry)]) -> Value {
    let mut view = eddy_api::views::message(message);
    view["metadata"] = metadata::unflatten(
        metadata_entries
            .iter()
            .map(|(key, entry)| (key.as_str(), entry_json(entry))),
    );
    view
}

pub use eddy_api::views::delivery_state;

/// A conversation: `{id, created_at, channel, metadata: {contact: {display_name},
/// unread_count, state?, tags: {<tag id>: ""}, user_data?...}, last_message}`.
pub fn conversation(conversation: &Conversation, channel: Option<&Channel>) -> Value {
    let mut metadata = match metadata::unflatten(
        conversation
            .metadata
            .iter()
            .map(|(key, entry)| (key.as_str(), entry_json(entry))),
    ) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let contact = metadata
        .entry("contact")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(contact) = contact
        && !contact.contains_key("display_name")
    {
        contact.insert(
            "display_name".to_owned(),
            Value::String(default_display_name(conversation)),
        );
    }
    metadata.insert(
        UNREAD_COUNT.to_owned(),
        Value::from(conversation.unread_count()),
    );
    let channel = channel.map_or_else(
        || json!({"id": conversation.channel_id, "source": conversation.source}),
        channel_view,
    );
    json!({
        "id": conversation.id,
        "created_at": iso_millis(conversation.created_at),
        "channel": channel,
        "metadata": metadata,
        "last_message": conversation.last_message.as_ref().map(|last| message(last, &[])),
    })
}

/// "<Source> <last 5 characters of the conversation id>" (Airy Core's default).
fn default_display_name(conversation: &Conversation) -> String {
    let mut source = conversation.source.clone();
    if let Some(first) = source.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    let tail: String = conversation
        .id
        .chars()
        .skip(conversation.id.chars().count().saturating_sub(5))
        .collect();
    format!("{source} {tail}")
}
