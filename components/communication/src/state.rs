//! The communication service's state, built per partition from the messages and metadata
//! topics (both partitioned by conversation id, so a conversation's records meet in one task):
//!
//! | store | key | value |
//! |---|---|---|
//! | `conversations` | conversation id | [`Conversation`]: channel, times, last message, count, metadata |
//! | `messages` | `<conversation id>/<inverted sent_at, hex>/<message id>` | [`Message`]: newest first in key order |
//! | `message-index` | message id | [`MessageLocation`] (its key in `messages`) |
//! | `message-metadata` | `<message id>/<key>` | [`MetaEntry`] |
//! | `metadata-index` | metadata record id | [`MetadataKey`] (to apply tombstones) |
//! | `activity` | `<inverted last activity, hex>/<conversation id>` | [`ListingRow`]: newest activity first |
//! | `counts` | [`Counted::key`] | listed conversations in the partition, all and per list filter value |

use std::collections::BTreeMap;

use eddy_schemas::metadata::{self, Subject};
use eddy_schemas::{Message, Metadata, ValueType};
use eddy_streams::{
    InputRecord, InputTopic, JsonSerde, Processor, ProcessorContext, ProcessorError,
    StoreDefinition, StringSerde, Topology,
};
use serde::{Deserialize, Serialize};

/// A conversation as the service keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub channel_id: String,
    pub source: String,
    pub source_conversation_id: Option<String>,
    /// When its first message was sent (ms); 0 until it has one.
    pub created_at: i64,
    /// Sent time of its newest message (ms): the list order.
    pub last_activity_at: i64,
    pub last_message: Option<Message>,
    pub message_count: u64,
    /// Conversation metadata by dot-path key.
    pub metadata: BTreeMap<String, MetaEntry>,
}

impl Conversation {
    /// Listed (and visible) once it has a message; metadata may arrive first.
    pub fn is_listed(&self) -> bool {
        self.message_count > 0
    }

    pub fn state(&self) -> Option<&str> {
        self.metadata
            .get(metadata::STATE)
            .map(|entry| entry.value.as_str())
    }

    pub fn tag_ids(&self) -> Vec<String> {
        self.metadata
            .keys()
            .filter_map(|key| key.strip_prefix(metadata::TAGS_PREFIX))
            .map(str::to_owned)
            .collect()
    }

    pub fn unread_count(&self) -> u64 {
        self.metadata
            .get(metadata::UNREAD_COUNT)
            .and_then(|entry| entry.value.parse::<f64>().ok())
            .map_or(0, |count| count.max(0.0) as u64)
    }

    fn listing_row(&self) -> ListingRow {
        ListingRow {
            channel_id: self.channel_id.clone(),
            source: self.source.clone(),
            state: self.state().map(str::to_owned),
            tag_ids: self.tag_ids(),
            has_unread: self.unread_count() > 0,
        }
    }
}

/// One stored metadata value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaEntry {
    pub value: String,
    pub value_type: ValueType,
    pub timestamp: i64,
}

/// What the list filters look at, kept beside the activity order so filtering reads small rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingRow {
    pub channel_id: String,
    pub source: String,
    pub state: Option<String>,
    pub tag_ids: Vec<String>,
    /// Whether it has unread messages (the `unread_only` filter). Not the count itself: a
    /// count going from 3 to 4 leaves the row, and its changelog, alone.
    pub has_unread: bool,
}

/// Where a message is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageLocation {
    pub conversation_id: String,
    pub sent_at: i64,
}

/// The subject and key a metadata record id stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataKey {
    pub subject: String,
    pub key: String,
}

/// What the `counts` store counts, per partition: listed conversations, all of them or those
/// matching one list filter, so that a list with at most one filter has its `total` without
/// walking the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted<'a> {
    All,
    Channel(&'a str),
    Source(&'a str),
    State(&'a str),
    Tag(&'a str),
    Unread,
}

impl Counted<'_> {
    /// The `counts` key: `conversations` for all (the only key of the first state layout),
    /// `conversations/<filter>=<value>` for the others.
    pub fn key(&self) -> String {
        match self {
            Counted::All => "conversations".to_owned(),
            Counted::Channel(id) => format!("conversations/channel_id={id}"),
            Counted::Source(source) => format!("conversations/source={source}"),
            Counted::State(state) => format!("conversations/state={state}"),
            Counted::Tag(id) => format!("conversations/tag_id={id}"),
            Counted::Unread => "conversations/unread_only".to_owned(),
        }
    }
}

impl ListingRow {
    /// Every count a listed conversation with this row is part of (each once: tag ids are
    /// distinct, being metadata keys).
    pub fn counted(&self) -> Vec<Counted<'_>> {
        let mut counted = vec![
            Counted::All,
            Counted::Channel(&self.channel_id),
            Counted::Source(&self.source),
        ];
        counted.extend(self.state.as_deref().map(Counted::State));
        counted.extend(self.tag_ids.iter().map(|id| Counted::Tag(id)));
        if self.has_unread {
            counted.push(Counted::Unread);
        }
        counted
    }
}

/// Keys sort ascending, so newer times get smaller keys: `u64::MAX - time` in fixed-width hex.
pub fn inverted_time(millis: i64) -> String {
    format!("{:016x}", u64::MAX - millis.max(0) as u64)
}

/// The `messages` store key of a message.
pub fn message_key(conversation_id: &str, sent_at: i64, message_id: &str) -> String {
    format!("{conversation_id}/{}/{message_id}", inverted_time(sent_at))
}

/// The prefix of every `messages` key of a conversation.
pub fn conversation_messages_prefix(conversation_id: &str) -> String {
    format!("{conversation_id}/")
}

/// The `activity` store key of a conversation.
pub fn activity_key(last_activity_at: i64, conversation_id: &str) -> String {
    format!("{}/{conversation_id}", inverted_time(last_activity_at))
}

/// The `message-metadata` key of one key of a message.
pub fn message_metadata_key(message_id: &str, key: &str) -> String {
    format!("{message_id}/{key}")
}

/// The stores, shared by the processor (writes) and the API (reads).
#[derive(Debug, Clone)]
pub struct Stores {
    pub conversations: StoreDefinition<String, Conversation>,
    pub messages: StoreDefinition<String, Message>,
    pub message_index: StoreDefinition<String, MessageLocation>,
    pub message_metadata: StoreDefinition<String, MetaEntry>,
    pub metadata_index: StoreDefinition<String, MetadataKey>,
    pub activity: StoreDefinition<String, ListingRow>,
    pub counts: StoreDefinition<String, u64>,
}

/// The inputs, typed.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub messages: InputTopic<String, Message>,
    pub metadata: InputTopic<String, Metadata>,
}

/// Declares inputs and stores on `topology`.
pub fn declare(
    topology: &mut Topology,
    messages_topic: &str,
    metadata_topic: &str,
    message_serde: impl eddy_streams::Serde<Message> + Clone,
    metadata_serde: impl eddy_streams::Serde<Metadata>,
) -> (Inputs, Stores) {
    let inputs = Inputs {
        messages: topology.input(messages_topic, StringSerde, message_serde.clone()),
        metadata: topology.input(metadata_topic, StringSerde, metadata_serde),
    };
    let stores = Stores {
        conversations: topology.store("conversations", StringSerde, JsonSerde::new()),
        messages: topology.store("messages", StringSerde, message_serde),
        message_index: topology.store("message-index", StringSerde, JsonSerde::new()),
        message_metadata: topology.store("message-metadata", StringSerde, JsonSerde::new()),
        metadata_index: topology.store("metadata-index", StringSerde, JsonSerde::new()),
        activity: topology.store("activity", StringSerde, JsonSerde::new()),
        counts: topology.store("counts", StringSerde, JsonSerde::new()),
    };
    (inputs, stores)
}

/// Folds messages and metadata into the stores, one partition.
#[derive(Debug)]
pub struct ConversationBuilder {
    pub inputs: Inputs,
    pub stores: Stores,
}

impl Processor for ConversationBuilder {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        if self.inputs.messages.matches(record) {
            let (id, message) = self.inputs.messages.decode(record)?;
            match message {
                Some(message) => self.apply_message(context, message),
                None => self.remove_message(context, &id),
            }
        } else if self.inputs.metadata.matches(record) {
            let (id, metadata) = self.inputs.metadata.decode(record)?;
            match metadata {
                Some(metadata) => self.apply_metadata(context, &id, metadata),
                None => self.remove_metadata(context, &id),
            }
        } else {
            Ok(())
        }
    }
}

impl ConversationBuilder {
    fn apply_message(
        &self,
        context: &mut ProcessorContext<'_>,
        message: Message,
    ) -> Result<(), ProcessorError> {
        let stores = &self.stores;
        let previous = context.get(&stores.message_index, &message.id)?;
        if let Some(previous) = &previous
            && (previous.sent_at != message.sent_at
                || previous.conversation_id != message.conversation_id)
        {
            context.delete(
                &stores.messages,
                &message_key(&previous.conversation_id, previous.sent_at, &message.id),
            )?;
        }
        context.put(
            &stores.messages,
            &message_key(&message.conversation_id, message.sent_at, &message.id),
            &message,
        )?;
        context.put(
            &stores.message_index,
            &message.id,
            &MessageLocation {
                conversation_id: message.conversation_id.clone(),
                sent_at: message.sent_at,
            },
        )?;

        let before = context.get(&stores.conversations, &message.conversation_id)?;
        let mut conversation = before.clone().unwrap_or_else(|| Conversation {
            id: message.conversation_id.clone(),
            ..Conversation::default()
        });
        if conversation.channel_id.is_empty() {
            conversation.channel_id = message.channel_id.clone();
            conversation.source = message.source.clone();
        }
        if conversation.source_conversation_id.is_none() {
            conversation.source_conversation_id = message.source_conversation_id.clone();
        }
        if previous.is_none() {
            conversation.message_count += 1;
        }
        if conversation.created_at == 0 || message.sent_at < conversation.created_at {
            conversation.created_at = message.sent_at;
        }
        let is_newest = conversation
            .last_message
            .as_ref()
            .is_none_or(|last| last.id == message.id || message.sent_at >= last.sent_at);
        if is_newest {
            conversation.last_activity_at = conversation.last_activity_at.max(message.sent_at);
            conversation.last_message = Some(message);
        }
        self.save_conversation(context, before.as_ref(), &conversation)
    }

    fn remove_message(
        &self,
        context: &mut ProcessorContext<'_>,
        message_id: &str,
    ) -> Result<(), ProcessorError> {
        let stores = &self.stores;
        let id = message_id.to_owned();
        let Some(location) = context.get(&stores.message_index, &id)? else {
            return Ok(());
        };
        context.delete(
            &stores.messages,
            &message_key(&location.conversation_id, location.sent_at, message_id),
        )?;
        context.delete(&stores.message_index, &id)?;
        let Some(before) = context.get(&stores.conversations, &location.conversation_id)? else {
            return Ok(());
        };
        let mut conversation = before.clone();
        conversation.message_count = conversation.message_count.saturating_sub(1);
        if conversation
            .last_message
            .as_ref()
            .is_some_and(|last| last.id == message_id)
        {
            conversation.last_message = None;
        }
        self.save_conversation(context, Some(&before), &conversation)
    }

    fn apply_metadata(
        &self,
        context: &mut ProcessorContext<'_>,
        record_id: &str,
        record: Metadata,
    ) -> Result<(), ProcessorError> {
        let stores = &self.stores;
        let entry = MetaEntry {
            value: record.value,
            value_type: record.value_type,
            timestamp: record.timestamp,
        };
        match Subject::parse(&record.subject) {
            Some(Subject::Conversation(conversation_id)) => {
                let before = context.get(&stores.conversations, &conversation_id)?;
                let mut conversation = before.clone().unwrap_or_else(|| Conversation {
                    id: conversation_id.clone(),
                    ..Conversation::default()
                });
                conversation.metadata.insert(record.key.clone(), entry);
                self.save_conversation(context, before.as_ref(), &conversation)?;
            }
            Some(Subject::Message(message_id)) => {
                context.put(
                    &stores.message_metadata,
                    &message_metadata_key(&message_id, &record.key),
                    &entry,
                )?;
            }
            // Channel and contact facts are not the communication service's.
            _ => return Ok(()),
        }
        context.put(
            &stores.metadata_index,
            &record_id.to_owned(),
            &MetadataKey {
                subject: record.subject,
                key: record.key,
            },
        )
    }

    fn remove_metadata(
        &self,
        context: &mut ProcessorContext<'_>,
        record_id: &str,
    ) -> Result<(), ProcessorError> {
        let stores = &self.stores;
        let id = record_id.to_owned();
        let Some(target) = context.get(&stores.metadata_index, &id)? else {
            return Ok(());
        };
        context.delete(&stores.metadata_index, &id)?;
        match Subject::parse(&target.subject) {
            Some(Subject::Conversation(conversation_id)) => {
                if let Some(before) = context.get(&stores.conversations, &conversation_id)? {
                    let mut conversation = before.clone();
                    conversation.metadata.remove(&target.key);
                    self.save_conversation(context, Some(&before), &conversation)?;
                }
            }
            Some(Subject::Message(message_id)) => {
                context.delete(
                    &stores.message_metadata,
                    &message_metadata_key(&message_id, &target.key),
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Stores the conversation and keeps its activity row and the counts in step.
    fn save_conversation(
        &self,
        context: &mut ProcessorContext<'_>,
        before: Option<&Conversation>,
        after: &Conversation,
    ) -> Result<(), ProcessorError> {
        let stores = &self.stores;
        if before == Some(after) {
            return Ok(());
        }
        context.put(&stores.conversations, &after.id, after)?;
        // A conversation is in the listing (activity row, counts) once it has a message.
        let old_listing = before.filter(|before| before.is_listed()).map(|before| {
            (
                activity_key(before.last_activity_at, &before.id),
                before.listing_row(),
            )
        });
        let new_listing = after.is_listed().then(|| {
            (
                activity_key(after.last_activity_at, &after.id),
                after.listing_row(),
            )
        });
        if let Some((old_key, _)) = &old_listing
            && new_listing
                .as_ref()
                .is_none_or(|(new_key, _)| new_key != old_key)
        {
            context.delete(&stores.activity, old_key)?;
        }
        if let Some(listing) = &new_listing
            && old_listing.as_ref() != Some(listing)
        {
            context.put(&stores.activity, &listing.0, &listing.1)?;
        }
        let old_counted = old_listing
            .as_ref()
            .map(|(_, row)| row.counted())
            .unwrap_or_default();
        let new_counted = new_listing
            .as_ref()
            .map(|(_, row)| row.counted())
            .unwrap_or_default();
        for left in old_counted
            .iter()
            .filter(|counted| !new_counted.contains(counted))
        {
            self.add_to_count(context, left, -1)?;
        }
        for joined in new_counted
            .iter()
            .filter(|counted| !old_counted.contains(counted))
        {
            self.add_to_count(context, joined, 1)?;
        }
        Ok(())
    }

    /// Moves one count by `change`; a count that reaches 0 is deleted (filter values come and
    /// go: states, tags, channels).
    fn add_to_count(
        &self,
        context: &mut ProcessorContext<'_>,
        counted: &Counted<'_>,
        change: i64,
    ) -> Result<(), ProcessorError> {
        let key = counted.key();
        let count = context.get(&self.stores.counts, &key)?.unwrap_or(0);
        let count = count.saturating_add_signed(change);
        if count == 0 {
            context.delete(&self.stores.counts, &key)
        } else {
            context.put(&self.stores.counts, &key, &count)
        }
    }
}

/// The value of a metadata entry as JSON.
pub fn entry_json(entry: &MetaEntry) -> serde_json::Value {
    metadata::typed_value(&entry.value, entry.value_type)
}
