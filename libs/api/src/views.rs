//! The JSON shapes of records in API answers, shared by every component that shows them.

use eddy_schemas::{Channel, ConnectionState, DeliveryState, Message, Tag, TagColor};
use serde_json::{Map, Value, json};

use crate::time::iso_millis;

/// A message, as `/messages.list` and webhook events show it: content is the source's JSON
/// (raw text if it is not JSON); `metadata` is empty here, the communication service fills it.
pub fn message(message: &Message) -> Value {
    let content = serde_json::from_str::<Value>(&message.content)
        .unwrap_or_else(|_| Value::String(message.content.clone()));
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
        "metadata": {},
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

/// A channel: `{id, source, source_channel_id, connected, connected_at, metadata: {name,
/// image_url?, ...user data}}`. `name` defaults to "<source> <last 5 characters of the id>".
pub fn channel(channel: &Channel) -> Value {
    let mut metadata =
        match serde_json::from_str::<Value>(channel.metadata.as_deref().unwrap_or("{}")) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
    let name = channel
        .name
        .clone()
        .unwrap_or_else(|| default_channel_name(channel));
    metadata.insert("name".to_owned(), Value::String(name));
    if let Some(image_url) = &channel.image_url {
        metadata.insert("image_url".to_owned(), Value::String(image_url.clone()));
    }
    json!({
        "id": channel.id,
        "source": channel.source,
        "source_channel_id": channel.source_channel_id,
        "connected": channel.connection_state == ConnectionState::Connected,
        "connected_at": iso_millis(channel.connected_at),
        "metadata": metadata,
    })
}

/// "<source> <last 5 characters of the id>", Airy Core's default channel name.
pub fn default_channel_name(channel: &Channel) -> String {
    let tail: String = channel
        .id
        .chars()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{} {tail}", channel.source)
}

/// A tag: `{id, name, color}` with colours as `tag-red`, `tag-blue`, ...
pub fn tag(tag: &Tag) -> Value {
    json!({"id": tag.id, "name": tag.name, "color": tag_color_name(tag.color)})
}

pub fn tag_color_name(color: TagColor) -> &'static str {
    match color {
        TagColor::Red => "tag-red",
        TagColor::Green => "tag-green",
        TagColor::Blue => "tag-blue",
        TagColor::Purple => "tag-purple",
        TagColor::Orange => "tag-orange",
        TagColor::Grey => "tag-grey",
    }
}

/// The colour named `name` (`tag-red`, ...), if it is one.
pub fn parse_tag_color(name: &str) -> Option<TagColor> {
    match name {
        "tag-red" => Some(TagColor::Red),
        "tag-green" => Some(TagColor::Green),
        "tag-blue" => Some(TagColor::Blue),
        "tag-purple" => Some(TagColor::Purple),
        "tag-orange" => Some(TagColor::Orange),
        "tag-grey" => Some(TagColor::Grey),
        _ => None,
    }
}
