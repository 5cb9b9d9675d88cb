//! Deterministic ids. Records that describe the same thing get the same id wherever and
//! however often they are made, so re-ingesting a payload overwrites instead of duplicating
//! (the topics are compacted by id). Ids are RFC 4122 version-5 UUIDs in Eddy's own namespace,
//! over the parts joined with a NUL byte (which no part can contain ambiguously), unlike Airy
//! Core's non-standard concatenation.

use uuid::Uuid;

/// The namespace of every derived id (a v5 UUID of "eddy.dev" in the DNS namespace).
pub fn namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_DNS, b"eddy.dev")
}

fn derive(kind: &str, parts: &[&str]) -> String {
    let mut name = Vec::with_capacity(64);
    name.extend_from_slice(kind.as_bytes());
    for part in parts {
        name.push(0);
        name.extend_from_slice(part.as_bytes());
    }
    Uuid::new_v5(&namespace(), &name).to_string()
}

/// A channel: one account (`source_channel_id`) of a source.
pub fn channel_id(source: &str, source_channel_id: &str) -> String {
    derive("channel", &[source, source_channel_id])
}

/// A conversation of a channel with the source's conversation id (for one-to-one channels,
/// the contact's address). A reply to a new recipient uses the recipient id here, so inbound
/// and outbound messages of one contact share a conversation.
pub fn conversation_id(channel_id: &str, source_conversation_id: &str) -> String {
    derive("conversation", &[channel_id, source_conversation_id])
}

/// An inbound message: the source's message id within the channel.
pub fn message_id(channel_id: &str, source_message_id: &str) -> String {
    derive("message", &[channel_id, source_message_id])
}

/// An outbound message sent with an `Idempotency-Key`: the same key on the same conversation
/// names the same message.
pub fn idempotent_message_id(conversation_id: &str, idempotency_key: &str) -> String {
    derive("sent-message", &[conversation_id, idempotency_key])
}

/// A metadata record: one key of one subject.
pub fn metadata_id(subject: &str, key: &str) -> String {
    derive("metadata", &[subject, key])
}

/// A webhook event: one change (the record `key` of catalog dataset `dataset` at `version`)
/// sent to one subscription as one event type. Reprocessing the record gives the same id.
pub fn webhook_event_id(
    subscription_id: &str,
    event_type: &str,
    dataset: &str,
    key: &str,
    version: i64,
) -> String {
    derive(
        "webhook-event",
        &[
            subscription_id,
            event_type,
            dataset,
            key,
            &version.to_string(),
        ],
    )
}

/// A fresh random id (v4 UUID).
pub fn random_id() -> String {
    Uuid::new_v4().to_string()
}

/// True if `text` is a UUID in its hyphenated form (every id Eddy makes is one).
pub fn is_uuid(text: &str) -> bool {
    text.len() == 36 && Uuid::parse_str(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_parts_do_not_run_together() {
        assert_eq!(channel_id("sms", "+49"), channel_id("sms", "+49"));
        assert_ne!(channel_id("sms", "+49"), channel_id("sm", "s+49"));
        assert_ne!(
            conversation_id("a", "b"),
            message_id("a", "b"),
            "kinds are part of the name"
        );
        assert!(is_uuid(&message_id("a", "b")));
        assert_eq!(
            Uuid::parse_str(&metadata_id("conversation:1", "state"))
                .map(|id| id.get_version_num())
                .ok(),
            Some(5)
        );
        assert_ne!(random_id(), random_id());
    }
}
