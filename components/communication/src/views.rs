//! The JSON answers of the communication API (Airy Core's shapes, snake_case, ISO-8601 UTC
//! timestamps with milliseconds).

use eddy_api::time::iso_millis;
use eddy_api::views::channel as channel_view;
use eddy_schemas::metadata::{self, UNREAD_COUNT};
use eddy_schemas::{Channel, DeliveryState, Message};
use serde_json::{Map, Value, json};

use crate::state::{Conversation, MetaEntry, entry_json};

/// A message: content is the source's JSON (raw text if it is not JSON).
pub fn message(message: &Message, metadata_entries: &[(String, MetaEntry)]) -> Value {
    let content = serde_json::from_str::<Value>(&message.content)
        .unwrap_or_else(|_| Value::String(message.content.clone()));
    let metadata = metadata::unflatten(
        metadata_entries
            .iter()
            .map(|(key, entry)| (key.as_str(), entry_json(entry))),
    );
    let mut view = json!({
        "id": message.id,
        "conversation_id": message.conversation_id,
        "channel_id": message.channel_id,
        "content": content,
        "sent_at": iso_millis(message.sent_at),
        "delivery_state": delivery_state(message.delivery_state),
        "from_contact": message.is_from_contact,
        "source": message.source,
        "sender": {"id": message.sender_id},
        "metadata": metadata,
    });
    if let Some(source_message_id) = &message.source_message_id {
        view["source_message_id"] = Value::String(source_message_id.clone());
    }
    if let Some(updated_at) = message.updated_at {
        view["updated_at"] = Value::String(iso_millis(updated_at));
    }
    view
}

pub fn delivery_state(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "pending",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Failed => "failed",
    }
}

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
