//! The communication API. Every endpoint about one conversation is answered by the instance
//! that owns the conversation's partition (others forward the request there, one hop);
//! `/conversations.list` asks every instance for its part and merges; endpoints about one
//! message first find the instance that holds it. Writes go to Kafka and show in the answers
//! once the owner's task has processed them (milliseconds).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use eddy_api::page::{PaginationData, decode_cursor, encode_cursor, page_size};
use eddy_api::server::{openapi_json, with_system_token};
use eddy_api::{ApiError, Page, ReadBody, parse_json, read_body};
use eddy_schemas::metadata::{self, Subject};
use eddy_schemas::writer::{OutgoingRecord, Placement, RecordWriter};
use eddy_schemas::{
    AvroSerde, Channel, ConnectionState, DeliveryState, Message, Metadata, ReadReceipt, Tag,
    ValueType, ids,
};
use eddy_service::ComponentInfo;
use eddy_service::config::Secret;
use eddy_service::envelope::{Envelope, now_millis};
use eddy_streams::query::{
    FORWARDED_HEADER, KeyWalk, fan_out_post, fan_out_post_with_local, forward_bytes, just_after,
    prefix_end, scan,
};
use eddy_streams::{GlobalTable, KeyOwner, KeyRange, Queries, ScanOrder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::state::{
    Conversation, Counted, ListingRow, MessageLocation, MetaEntry, Stores,
    conversation_messages_prefix,
};
use crate::views;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

const LOCAL_LIST_PATH: &str = "/internal/conversations.list.local";
const LOCATE_PATH: &str = "/internal/messages.locate";
/// Who API-sent messages are from.
const API_SENDER: &str = "api";
const STATES: [&str; 2] = ["OPEN", "CLOSED"];
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Topic names of this installation.
#[derive(Debug, Clone)]
pub struct Topics {
    pub messages: String,
    pub metadata: String,
    pub read_receipts: String,
    pub channels: String,
}

/// Value codecs of the topics written.
#[derive(Debug, Clone)]
pub struct Serdes {
    pub message: AvroSerde<Message>,
    pub metadata: AvroSerde<Metadata>,
    pub read_receipt: AvroSerde<ReadReceipt>,
    pub channel: AvroSerde<Channel>,
}

/// Everything a handler needs.
#[derive(Debug)]
pub struct Api {
    pub component: ComponentInfo,
    pub queries: Queries,
    pub stores: Stores,
    pub writer: RecordWriter,
    pub channels: GlobalTable<String, Channel>,
    pub tags: GlobalTable<String, Tag>,
    pub topics: Topics,
    pub serdes: Serdes,
    pub client: reqwest::Client,
    /// `host:port` other instances reach this one at.
    pub advertised_address: String,
    pub max_body_bytes: usize,
}

type Handled = Result<Response, ApiError>;

/// The API's routes; all but `/openapi.json` need the system token.
pub fn router(api: Arc<Api>, system_token: &Secret) -> Router {
    let routes = Router::new()
        .route("/conversations.list", post(conversations_list))
        .route("/conversations.info", post(conversations_info))
        .route("/conversations.tag", post(conversations_tag))
        .route("/conversations.untag", post(conversations_untag))
        .route("/conversations.set-state", post(conversations_set_state))
        .route(
            "/conversations.remove-state",
            post(conversations_remove_state),
        )
        .route(
            "/conversations.update-contact",
            post(conversations_update_contact),
        )
        .route("/conversations.mark-read", post(conversations_mark_read))
        .route("/messages.list", post(messages_list))
        .route("/messages.send", post(messages_send))
        .route("/messages.resend", post(messages_resend))
        .route("/metadata.upsert", post(metadata_upsert))
        .route(LOCAL_LIST_PATH, post(conversations_list_local))
        .route(LOCATE_PATH, post(messages_locate))
        .with_state(api);
    with_system_token(routes, system_token)
        .route("/openapi.json", get(|| async { openapi_json(OPENAPI) }))
}

// ---------------------------------------------------------------------------------------------
// Requests

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversationRequest {
    conversation_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TagRequest {
    conversation_id: String,
    tag_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStateRequest {
    conversation_id: String,
    state: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateContactRequest {
    conversation_id: String,
    display_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListConversationsRequest {
    cursor: Option<String>,
    page_size: Option<i64>,
    #[serde(default)]
    filters: Filters,
}

/// Conversation list filters; all given ones must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filters {
    channel_id: Option<String>,
    source: Option<String>,
    state: Option<String>,
    tag_id: Option<String>,
    #[serde(default)]
    unread_only: bool,
}

impl Filters {
    /// The stored count that is this filter's total: all conversations, or those matching its
    /// one filter. None for two or more filters (their total is counted by walking the rows).
    fn stored_count(&self) -> Option<Counted<'_>> {
        let given = [
            self.channel_id.as_deref().map(Counted::Channel),
            self.source.as_deref().map(Counted::Source),
            self.state.as_deref().map(Counted::State),
            self.tag_id.as_deref().map(Counted::Tag),
            self.unread_only.then_some(Counted::Unread),
        ];
        let mut given = given.into_iter().flatten();
        match (given.next(), given.next()) {
            (None, _) => Some(Counted::All),
            (Some(only), None) => Some(only),
            (Some(_), Some(_)) => None,
        }
    }

    fn matches(&self, row: &ListingRow) -> bool {
        self.channel_id
            .as_ref()
            .is_none_or(|id| *id == row.channel_id)
            && self
                .source
                .as_ref()
                .is_none_or(|source| *source == row.source)
            && self
                .state
                .as_ref()
                .is_none_or(|state| row.state.as_ref() == Some(state))
            && self
                .tag_id
                .as_ref()
                .is_none_or(|tag| row.tag_ids.contains(tag))
            && (!self.unread_only || row.has_unread)
    }
}

/// A position in a list: after or before an item's store key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Position {
    #[serde(rename = "a")]
    After(String),
    #[serde(rename = "b")]
    Before(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct LocalListRequest {
    position: Option<Position>,
    limit: usize,
    filters: Filters,
}

#[derive(Debug, Serialize, Deserialize)]
struct LocalListAnswer {
    /// (activity key, conversation view), in the walk's order.
    candidates: Vec<(String, Value)>,
    total: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListMessagesRequest {
    conversation_id: String,
    cursor: Option<String>,
    page_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    conversation_id: Option<String>,
    channel_id: Option<String>,
    source_recipient_id: Option<String>,
    message: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRequest {
    message_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertRequest {
    subject: String,
    id: String,
    data: Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct LocateAnswer {
    /// The address of the instance holding the message, if it is this one.
    address: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Shared steps

fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.trim().is_empty() {
        Err(ApiError::bad_field(field, "must not be empty"))
    } else {
        Ok(value)
    }
}

impl Api {
    async fn read(&self, request: Request) -> Result<ReadBody, ApiError> {
        read_body(request, self.max_body_bytes).await
    }

    /// The envelope of records written for this request (continuing the caller's trace).
    fn envelope(&self, read: &ReadBody) -> Envelope {
        Envelope::ingested(&self.component, now_millis(), read.caller_trace().as_ref())
    }

    /// Runs `local` here if this instance owns `conversation_id`'s partition, or forwards the
    /// request to the instance that does.
    async fn on_owner<F, Fut>(&self, conversation_id: &str, read: &ReadBody, local: F) -> Handled
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Handled>,
    {
        match self
            .queries
            .owner_of(&self.stores.conversations, &conversation_id.to_owned())?
        {
            KeyOwner::Local => local().await,
            KeyOwner::Remote { address, .. } => Ok(forward_bytes(
                &self.client,
                self.queries.instance_id(),
                &address,
                &read.parts,
                read.body.clone(),
            )
            .await),
        }
    }

    fn conversation_partition(&self, conversation_id: &str) -> i32 {
        self.queries.partition_for_bytes(conversation_id.as_bytes())
    }

    /// The conversation, if it exists (has a message); this instance must own it.
    fn listed_conversation(&self, conversation_id: &str) -> Result<Conversation, ApiError> {
        self.queries
            .get(&self.stores.conversations, &conversation_id.to_owned())?
            .filter(Conversation::is_listed)
            .ok_or_else(|| ApiError::not_found("conversation", conversation_id))
    }

    fn conversation_view(&self, conversation: &Conversation) -> Value {
        let channel = self.channels.get(&conversation.channel_id);
        views::conversation(conversation, channel.as_ref())
    }

    /// The message's metadata entries, from the conversation's partition.
    fn message_metadata(
        &self,
        partition: i32,
        message_id: &str,
    ) -> Result<Vec<(String, MetaEntry)>, ApiError> {
        let prefix = format!("{message_id}/");
        let end = prefix_end(&prefix);
        let entries = self.queries.range_in_partition(
            &self.stores.message_metadata,
            partition,
            KeyRange {
                from: prefix.as_bytes(),
                to: Some(&end),
                order: ScanOrder::Ascending,
            },
            usize::MAX,
        )?;
        Ok(entries
            .into_iter()
            .map(|(key, entry)| (key[prefix.len()..].to_owned(), entry))
            .collect())
    }

    fn message_view(&self, message: &Message) -> Result<Value, ApiError> {
        let partition = self.conversation_partition(&message.conversation_id);
        let metadata = self.message_metadata(partition, &message.id)?;
        Ok(views::message(message, &metadata))
    }

    /// Writes metadata changes of one subject (`None`: delete the key), on the conversation's
    /// partition.
    async fn write_metadata(
        &self,
        read: &ReadBody,
        conversation_id: &str,
        subject: &Subject,
        changes: Vec<(String, Option<(String, ValueType)>)>,
    ) -> Result<(), ApiError> {
        let envelope = self.envelope(read);
        let subject_text = subject.to_string();
        let mut records = Vec::with_capacity(changes.len());
        let mut keys = Vec::with_capacity(changes.len());
        for (key, value) in changes {
            let value = match value {
                Some((value, value_type)) => Some(
                    self.serdes
                        .metadata
                        .encode(&Metadata {
                            subject: subject_text.clone(),
                            key: key.clone(),
                            value,
                            value_type,
                            timestamp: envelope.event_time,
                        })
                        .map_err(|error| ApiError::internal("encoding metadata", error))?,
                ),
                None => None,
            };
            keys.push((ids::metadata_id(&subject_text, &key), value));
        }
        for (key, value) in &keys {
            records.push(OutgoingRecord {
                topic: &self.topics.metadata,
                key,
                value: value.clone(),
                placement: Placement::By(conversation_id),
                envelope: &envelope,
            });
        }
        self.writer
            .send_all(records)
            .await
            .map_err(ApiError::write_failed)?;
        Ok(())
    }

    async fn write_message(&self, read: &ReadBody, message: &Message) -> Result<(), ApiError> {
        let envelope = self.envelope(read);
        let value = self
            .serdes
            .message
            .encode(message)
            .map_err(|error| ApiError::internal("encoding the message", error))?;
        self.writer
            .send(OutgoingRecord {
                topic: &self.topics.messages,
                key: &message.id,
                value: Some(value),
                placement: Placement::By(&message.conversation_id),
                envelope: &envelope,
            })
            .await
            .map_err(ApiError::write_failed)?;
        Ok(())
    }

    /// Where message `message_id` is, if this instance holds it.
    fn locate_locally(&self, message_id: &str) -> Result<Option<MessageLocation>, ApiError> {
        self.queries.ensure_running()?;
        let id = message_id.to_owned();
        for partition in self
            .queries
            .local_partition_numbers(&self.stores.message_index)
        {
            if let Some(location) =
                self.queries
                    .get_in_partition(&self.stores.message_index, partition, &id)?
            {
                return Ok(Some(location));
            }
        }
        Ok(None)
    }

    /// Runs `local` with the message's location if this instance holds it, else forwards the
    /// request to the instance that does (found by asking all), else 404.
    async fn on_message_owner<F, Fut>(&self, message_id: &str, read: &ReadBody, local: F) -> Handled
    where
        F: FnOnce(MessageLocation) -> Fut,
        Fut: Future<Output = Handled>,
    {
        if let Some(location) = self.locate_locally(message_id)? {
            return local(location).await;
        }
        if read.parts.headers.contains_key(FORWARDED_HEADER) {
            return Err(ApiError::not_found("message", message_id));
        }
        let answers = match fan_out_post(
            &self.client,
            &self.queries,
            LOCATE_PATH,
            &json!({ "message_id": message_id }),
            &read.parts.headers,
        )
        .await
        {
            Ok(answers) => answers,
            // An instance's own error answer (503 while it restores, ...) is the answer.
            Err(response) => return Ok(response),
        };
        let owner = answers
            .into_iter()
            .filter_map(|answer| serde_json::from_value::<LocateAnswer>(answer).ok())
            .find_map(|answer| answer.address);
        match owner {
            Some(address) if address != self.advertised_address => Ok(forward_bytes(
                &self.client,
                self.queries.instance_id(),
                &address,
                &read.parts,
                read.body.clone(),
            )
            .await),
            _ => Err(ApiError::not_found("message", message_id)),
        }
    }
}

/// True for keys of the `activity` store: 16 hex digits, '/', a conversation id.
fn is_activity_key(key: &str) -> bool {
    key.len() > 17
        && key.as_bytes()[16] == b'/'
        && key[..16].bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// Builds a page from candidates sorted in walk order (ascending for no cursor and `After`,
/// descending for `Before`), at most `size + 1` of them.
fn assemble_page<T>(
    mut candidates: Vec<(String, T)>,
    position: Option<&Position>,
    size: usize,
    total: u64,
) -> Page<T> {
    let more = candidates.len() > size;
    candidates.truncate(size);
    let (previous_cursor, next_cursor) = match position {
        None => (
            None,
            more.then(|| candidates.last().map(|(key, _)| key.clone()))
                .flatten()
                .map(Position::After),
        ),
        Some(Position::After(cursor_key)) => (
            Some(Position::Before(candidates.first().map_or_else(
                || just_after_text(cursor_key),
                |(key, _)| key.clone(),
            ))),
            more.then(|| candidates.last().map(|(key, _)| key.clone()))
                .flatten()
                .map(Position::After),
        ),
        Some(Position::Before(cursor_key)) => {
            candidates.reverse();
            (
                more.then(|| candidates.first().map(|(key, _)| key.clone()))
                    .flatten()
                    .map(Position::Before),
                Some(Position::After(candidates.last().map_or_else(
                    || before_text(cursor_key),
                    |(key, _)| key.clone(),
                ))),
            )
        }
    };
    Page {
        data: candidates.into_iter().map(|(_, item)| item).collect(),
        pagination_data: PaginationData {
            previous_cursor: previous_cursor.map(|position| encode_cursor(&position)),
            next_cursor: next_cursor.map(|position| encode_cursor(&position)),
            total,
        },
    }
}

/// A key that sorts just after `key` (text form, for an empty page's "previous" cursor).
fn just_after_text(key: &str) -> String {
    format!("{key}\u{0}")
}

/// An `After` position that includes `key` itself: the cursor item's own key minus its end.
fn before_text(key: &str) -> String {
    let mut text = key.to_owned();
    text.pop();
    text
}

// ---------------------------------------------------------------------------------------------
// Conversations

async fn conversations_info(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: ConversationRequest = parse_json(&read.body)?;
    let id = required("conversation_id", &body.conversation_id)?;
    api.on_owner(id, &read, || async {
        let conversation = api.listed_conversation(id)?;
        Ok(axum::Json(api.conversation_view(&conversation)).into_response())
    })
    .await
}

async fn conversations_list(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: ListConversationsRequest = parse_json(&read.body)?;
    let size = page_size(body.page_size)?;
    let position: Option<Position> = body.cursor.as_deref().map(decode_cursor).transpose()?;
    if let Some(Position::After(key) | Position::Before(key)) = &position
        && !is_activity_key(key)
    {
        return Err(ApiError::bad_field(
            "cursor",
            "belongs to another list (use a cursor /conversations.list returned)",
        ));
    }
    let local = LocalListRequest {
        position: position.clone(),
        limit: size + 1,
        filters: body.filters,
    };
    let local_json =
        serde_json::to_value(&local).map_err(|error| ApiError::internal("list request", error))?;
    // This instance's part is answered in-process, the others' over HTTP.
    let answers = match fan_out_post_with_local(
        &api.client,
        &api.queries,
        LOCAL_LIST_PATH,
        &local_json,
        &read.parts.headers,
        || local_list(&api, &local),
    )
    .await
    {
        Ok(answers) => answers,
        // An instance's own error answer (503 while it restores, ...) is the answer.
        Err(response) => return Ok(response),
    };
    let mut total = 0;
    let mut candidates = Vec::new();
    for answer in answers {
        total += answer.total;
        candidates.extend(answer.candidates);
    }
    sort_in_walk_order(&mut candidates, position.as_ref());
    candidates.truncate(size + 1);
    Ok(axum::Json(assemble_page(candidates, position.as_ref(), size, total)).into_response())
}

/// Sorts list candidates by key in the order of the walk `position` asks for (descending for
/// `Before`).
fn sort_in_walk_order<T>(candidates: &mut [(String, T)], position: Option<&Position>) {
    match position {
        Some(Position::Before(_)) => candidates.sort_by(|a, b| b.0.cmp(&a.0)),
        _ => candidates.sort_by(|a, b| a.0.cmp(&b.0)),
    }
}

/// One instance's part of a conversation list, for the instance that merges (over HTTP).
async fn conversations_list_local(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: LocalListRequest = parse_json(&read.body)?;
    Ok(axum::Json(local_list(&api, &body)?).into_response())
}

/// One instance's part of a conversation list: the first `limit` listing rows of its
/// partitions together (each partition walked from the position, filtered, the walks merged),
/// with their conversations; and the total of its partitions.
fn local_list(api: &Api, body: &LocalListRequest) -> Result<LocalListAnswer, ApiError> {
    api.queries.ensure_running()?;
    let stores = &api.stores;
    let mut rows = Vec::new();
    let mut total = 0;
    for partition in api.queries.local_partition_numbers(&stores.activity) {
        let (from, to, order) = match &body.position {
            None => (Vec::new(), None, ScanOrder::Ascending),
            Some(Position::After(key)) => (just_after(key), None, ScanOrder::Ascending),
            Some(Position::Before(key)) => (
                Vec::new(),
                Some(key.as_bytes().to_vec()),
                ScanOrder::Descending,
            ),
        };
        let walked = scan(
            &api.queries,
            &stores.activity,
            partition,
            KeyWalk { from, to, order },
            body.limit,
            |_, row| body.filters.matches(row),
        )?;
        rows.extend(walked.into_iter().map(|(key, _)| (key, partition)));
        total += match body.filters.stored_count() {
            Some(counted) => api
                .queries
                .get_in_partition(&stores.counts, partition, &counted.key())?
                .unwrap_or(0),
            None => scan(
                &api.queries,
                &stores.activity,
                partition,
                KeyWalk {
                    from: Vec::new(),
                    to: None,
                    order: ScanOrder::Ascending,
                },
                usize::MAX,
                |_, row| body.filters.matches(row),
            )?
            .len() as u64,
        };
    }
    // Only the first `limit` rows of all partitions can be on the page: read and render just
    // their conversations.
    sort_in_walk_order(&mut rows, body.position.as_ref());
    rows.truncate(body.limit);
    let mut candidates = Vec::with_capacity(rows.len());
    for (key, partition) in rows {
        let Some(conversation_id) = key.split_once('/').map(|(_, id)| id.to_owned()) else {
            continue;
        };
        if let Some(conversation) =
            api.queries
                .get_in_partition(&stores.conversations, partition, &conversation_id)?
        {
            candidates.push((key, api.conversation_view(&conversation)));
        }
    }
    Ok(LocalListAnswer { candidates, total })
}

/// Checks the conversation exists on its owner, then writes metadata changes there.
async fn change_conversation(
    api: &Api,
    read: &ReadBody,
    conversation_id: &str,
    changes: Vec<(String, Option<(String, ValueType)>)>,
) -> Handled {
    api.on_owner(conversation_id, read, || async {
        api.listed_conversation(conversation_id)?;
        let subject = Subject::Conversation(conversation_id.to_owned());
        api.write_metadata(read, conversation_id, &subject, changes)
            .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

async fn conversations_tag(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: TagRequest = parse_json(&read.body)?;
    let id = required("conversation_id", &body.conversation_id)?;
    let tag_id = required("tag_id", &body.tag_id)?;
    if !api.tags.is_caught_up() {
        return Err(ApiError::unavailable("loading", "tags are still loading"));
    }
    if api.tags.get(&tag_id.to_owned()).is_none() {
        return Err(ApiError::not_found("tag", tag_id));
    }
    let key = format!("{}{tag_id}", metadata::TAGS_PREFIX);
    change_conversation(
        &api,
        &read,
        id,
        vec![(key, Some((String::new(), ValueType::Text)))],
    )
    .await
}

async fn conversations_untag(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: TagRequest = parse_json(&read.body)?;
    let id = required("conversation_id", &body.conversation_id)?;
    let tag_id = required("tag_id", &body.tag_id)?;
    let key = format!("{}{tag_id}", metadata::TAGS_PREFIX);
    change_conversation(&api, &read, id, vec![(key, None)]).await
}

async fn conversations_set_state(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: SetStateRequest = parse_json(&read.body)?;
    let id = required("conversation_id", &body.conversation_id)?;
    if !STATES.contains(&body.state.as_str()) {
        return Err(ApiError::bad_field(
            "state",
            format!("'{}' is not a state: use OPEN or CLOSED", body.state),
        ));
    }
    change_conversation(
        &api,
        &read,
        id,
        vec![(
            metadata::STATE.to_owned(),
            Some((body.state, ValueType::Text)),
        )],
    )
    .await
}

async fn conversations_remove_state(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: ConversationRequest = parse_json(&read.body)?;
    let id = required("conversation_id", &body.conversation_id)?;
    change_conversation(&api, &read, id, vec![(metadata::STATE.to_owned(), None)]).await
}

async fn conversations_update_contact(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: UpdateContactRequest = parse_json(&read.body)?;
    let id = required("conversation_id", &body.conversation_id)?;
    let name = required("display_name", &body.display_name)?;
    if name.chars().count() > 200 {
        return Err(ApiError::bad_field(
            "display_name",
            "longer than 200 characters",
        ));
    }
    change_conversation(
        &api,
        &read,
        id,
        vec![(
            metadata::CONTACT_DISPLAY_NAME.to_owned(),
            Some((name.to_owned(), ValueType::Text)),
        )],
    )
    .await
}

async fn conversations_mark_read(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: ConversationRequest = parse_json(&read.body)?;
    let id = required("conversation_id", &body.conversation_id)?;
    api.on_owner(id, &read, || async {
        api.listed_conversation(id)?;
        let envelope = api.envelope(&read);
        let value = api
            .serdes
            .read_receipt
            .encode(&ReadReceipt {
                conversation_id: id.to_owned(),
                read_at: envelope.event_time,
            })
            .map_err(|error| ApiError::internal("encoding the read receipt", error))?;
        api.writer
            .send(OutgoingRecord {
                topic: &api.topics.read_receipts,
                key: id,
                value: Some(value),
                placement: Placement::ByKey,
                envelope: &envelope,
            })
            .await
            .map_err(ApiError::write_failed)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Messages

async fn messages_list(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: ListMessagesRequest = parse_json(&read.body)?;
    let id = required("conversation_id", &body.conversation_id)?;
    let size = page_size(body.page_size)?;
    let position: Option<Position> = body.cursor.as_deref().map(decode_cursor).transpose()?;
    let prefix = conversation_messages_prefix(id);
    if let Some(Position::After(key) | Position::Before(key)) = &position
        && !key.starts_with(&prefix)
    {
        return Err(ApiError::bad_field(
            "cursor",
            "belongs to another conversation's message list",
        ));
    }
    api.on_owner(id, &read, || async {
        let conversation = api.listed_conversation(id)?;
        let partition = api.conversation_partition(id);
        let end = prefix_end(&prefix);
        let (from, to, order) = match &position {
            None => (prefix.as_bytes().to_vec(), Some(end), ScanOrder::Ascending),
            Some(Position::After(key)) => (just_after(key), Some(end), ScanOrder::Ascending),
            Some(Position::Before(key)) => (
                prefix.as_bytes().to_vec(),
                Some(key.as_bytes().to_vec()),
                ScanOrder::Descending,
            ),
        };
        let entries = scan(
            &api.queries,
            &api.stores.messages,
            partition,
            KeyWalk { from, to, order },
            size + 1,
            |_, _| true,
        )?;
        let mut candidates = Vec::with_capacity(entries.len());
        for (key, message) in entries {
            let metadata = api.message_metadata(partition, &message.id)?;
            candidates.push((key, views::message(&message, &metadata)));
        }
        Ok(axum::Json(assemble_page(
            candidates,
            position.as_ref(),
            size,
            conversation.message_count,
        ))
        .into_response())
    })
    .await
}

fn idempotency_key(read: &ReadBody) -> Result<Option<String>, ApiError> {
    let Some(value) = read.parts.headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|key| !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Idempotency-Key: use 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

async fn messages_send(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: SendRequest = parse_json(&read.body)?;
    let idempotency_key = idempotency_key(&read)?;
    if body.message.is_null() {
        return Err(ApiError::bad_field(
            "message",
            "must be the message content (JSON), not null",
        ));
    }
    let (conversation_id, recipient) = match (
        &body.conversation_id,
        &body.channel_id,
        &body.source_recipient_id,
    ) {
        (Some(conversation_id), None, None) => (
            required("conversation_id", conversation_id)?.to_owned(),
            None,
        ),
        (None, Some(channel_id), Some(recipient)) => {
            let channel_id = required("channel_id", channel_id)?;
            let recipient = required("source_recipient_id", recipient)?;
            (
                ids::conversation_id(channel_id, recipient),
                Some((channel_id.to_owned(), recipient.to_owned())),
            )
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either conversation_id, or channel_id and source_recipient_id",
            ));
        }
    };
    let content = body.message.to_string();
    api.on_owner(&conversation_id, &read, || async {
        let conversation = api
            .queries
            .get(&api.stores.conversations, &conversation_id)?
            .filter(Conversation::is_listed);
        let (channel_id, source_conversation_id) = match (&conversation, &recipient) {
            (Some(conversation), _) => (
                conversation.channel_id.clone(),
                conversation.source_conversation_id.clone(),
            ),
            (None, Some((channel_id, recipient))) => (channel_id.clone(), Some(recipient.clone())),
            (None, None) => return Err(ApiError::not_found("conversation", &conversation_id)),
        };
        if !api.channels.is_caught_up() {
            return Err(ApiError::unavailable(
                "loading",
                "channels are still loading",
            ));
        }
        let channel = api
            .channels
            .get(&channel_id)
            .ok_or_else(|| ApiError::not_found("channel", &channel_id))?;
        if channel.connection_state != ConnectionState::Connected {
            return Err(ApiError::conflict(format!(
                "channel {channel_id} is disconnected: messages cannot be sent through it"
            )));
        }
        let message_id = match &idempotency_key {
            Some(key) => ids::idempotent_message_id(&conversation_id, key),
            None => ids::random_id(),
        };
        if idempotency_key.is_some()
            && let Some(existing) = existing_message(&api, &conversation_id, &message_id)?
        {
            let same_request =
                serde_json::from_str::<Value>(&existing.content).ok() == Some(body.message.clone());
            if !same_request {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_conflict",
                    "this Idempotency-Key was used for a different message",
                ));
            }
            return Ok(axum::Json(api.message_view(&existing)?).into_response());
        }
        let message = Message {
            id: message_id,
            conversation_id: conversation_id.clone(),
            channel_id: channel.id.clone(),
            source: channel.source.clone(),
            sender_id: API_SENDER.to_owned(),
            source_recipient_id: source_conversation_id.clone(),
            source_message_id: None,
            is_from_contact: false,
            delivery_state: DeliveryState::Pending,
            content: content.clone(),
            sent_at: now_millis(),
            updated_at: None,
            source_conversation_id,
        };
        api.write_message(&read, &message).await?;
        Ok(axum::Json(views::message(&message, &[])).into_response())
    })
    .await
}

/// The stored message `message_id` of a conversation this instance owns.
fn existing_message(
    api: &Api,
    conversation_id: &str,
    message_id: &str,
) -> Result<Option<Message>, ApiError> {
    let partition = api.conversation_partition(conversation_id);
    let Some(location) = api.queries.get_in_partition(
        &api.stores.message_index,
        partition,
        &message_id.to_owned(),
    )?
    else {
        return Ok(None);
    };
    let key = crate::state::message_key(&location.conversation_id, location.sent_at, message_id);
    Ok(api
        .queries
        .get_in_partition(&api.stores.messages, partition, &key)?)
}

async fn messages_resend(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: MessageRequest = parse_json(&read.body)?;
    let id = required("message_id", &body.message_id)?;
    let (api, read) = (&api, &read);
    api.on_message_owner(id, read, |location| async move {
        let message = existing_message(api, &location.conversation_id, id)?
            .ok_or_else(|| ApiError::not_found("message", id))?;
        if message.delivery_state != DeliveryState::Failed {
            return Err(ApiError::conflict(format!(
                "message {id} is {}, not failed: only failed messages can be resent",
                views::delivery_state(message.delivery_state)
            )));
        }
        let resent = Message {
            delivery_state: DeliveryState::Pending,
            updated_at: Some(now_millis()),
            ..message
        };
        // The old error goes first, so it is gone from the log before the resend can succeed.
        let subject = Subject::Message(id.to_owned());
        api.write_metadata(
            read,
            &location.conversation_id,
            &subject,
            vec![(metadata::ERROR.to_owned(), None)],
        )
        .await?;
        api.write_message(read, &resent).await?;
        Ok(axum::Json(views::message(&resent, &[])).into_response())
    })
    .await
}

/// Whether this instance holds a message (asked by an instance looking for it).
async fn messages_locate(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: MessageRequest = parse_json(&read.body)?;
    let address = api
        .locate_locally(&body.message_id)?
        .map(|_| api.advertised_address.clone());
    Ok(axum::Json(LocateAnswer { address }).into_response())
}

// ---------------------------------------------------------------------------------------------
// Metadata

async fn metadata_upsert(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = api.read(request).await?;
    let body: UpsertRequest = parse_json(&read.body)?;
    let id = required("id", &body.id)?;
    if !body.data.is_object() {
        return Err(ApiError::bad_field("data", "must be a JSON object"));
    }
    let changes: Vec<(String, Option<(String, ValueType)>)> =
        metadata::flatten(metadata::USER_DATA, &body.data)
            .into_iter()
            .map(|leaf| {
                let value =
                    (leaf.value_type != ValueType::Null).then_some((leaf.value, leaf.value_type));
                (leaf.key, value)
            })
            .collect();
    match body.subject.as_str() {
        "conversation" => change_conversation(&api, &read, id, changes).await,
        "message" => {
            let (api, read) = (&api, &read);
            api.on_message_owner(id, read, |location| async move {
                let subject = Subject::Message(id.to_owned());
                api.write_metadata(read, &location.conversation_id, &subject, changes)
                    .await?;
                Ok(StatusCode::NO_CONTENT.into_response())
            })
            .await
        }
        "channel" => upsert_channel_metadata(&api, &read, id, &body.data).await,
        other => Err(ApiError::bad_field(
            "subject",
            format!("'{other}' is not a subject: use conversation, message or channel"),
        )),
    }
}

/// Channel user data lives in the channel record (`metadata.user_data`), merged like a JSON
/// merge patch (null deletes a key).
async fn upsert_channel_metadata(
    api: &Api,
    read: &ReadBody,
    channel_id: &str,
    data: &Value,
) -> Handled {
    if !api.channels.is_caught_up() {
        return Err(ApiError::unavailable(
            "loading",
            "channels are still loading",
        ));
    }
    let mut channel = api
        .channels
        .get(&channel_id.to_owned())
        .ok_or_else(|| ApiError::not_found("channel", channel_id))?;
    let mut document: Value = channel
        .metadata
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_else(|| json!({}));
    if !document.is_object() {
        document = json!({});
    }
    let user_data = document
        .as_object_mut()
        .map(|map| map.entry(metadata::USER_DATA).or_insert_with(|| json!({})));
    if let Some(user_data) = user_data {
        merge_patch(user_data, data);
    }
    channel.metadata = Some(document.to_string());
    let envelope = api.envelope(read);
    let value = api
        .serdes
        .channel
        .encode(&channel)
        .map_err(|error| ApiError::internal("encoding the channel", error))?;
    let written = api
        .writer
        .send(OutgoingRecord {
            topic: &api.topics.channels,
            key: &channel.id,
            value: Some(value),
            placement: Placement::ByKey,
            envelope: &envelope,
        })
        .await
        .map_err(ApiError::write_failed)?;
    api.channels
        .wait_for(
            written.partition,
            written.offset,
            std::time::Duration::from_secs(5),
        )
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// RFC 7396 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(page: &Page<&'a str>) -> Vec<&'a str> {
        page.data.clone()
    }

    #[test]
    fn pages_link_forward_and_back() {
        let items: Vec<(String, &str)> = ["a", "b", "c"]
            .iter()
            .map(|key| ((*key).to_owned(), *key))
            .collect();
        let first = assemble_page(items.clone(), None, 2, 3);
        assert_eq!(keys(&first), ["a", "b"]);
        assert!(first.pagination_data.previous_cursor.is_none());
        let next: Position = decode_cursor(
            first
                .pagination_data
                .next_cursor
                .as_deref()
                .unwrap_or_default(),
        )
        .expect("next cursor");
        assert_eq!(next, Position::After("b".to_owned()));
        let second = assemble_page(vec![("c".to_owned(), "c")], Some(&next), 2, 3);
        assert_eq!(keys(&second), ["c"]);
        assert!(second.pagination_data.next_cursor.is_none());
        let back: Position = decode_cursor(
            second
                .pagination_data
                .previous_cursor
                .as_deref()
                .unwrap_or_default(),
        )
        .expect("previous cursor");
        assert_eq!(back, Position::Before("c".to_owned()));
        // Walking back: candidates arrive newest-last (descending walk).
        let previous = assemble_page(
            vec![("b".to_owned(), "b"), ("a".to_owned(), "a")],
            Some(&back),
            2,
            3,
        );
        assert_eq!(keys(&previous), ["a", "b"]);
        assert!(
            previous.pagination_data.previous_cursor.is_none(),
            "the first page has no previous page"
        );
        assert!(previous.pagination_data.next_cursor.is_some());
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut target, &json!({"a": null, "b": {"c": 5}, "e": "x"}));
        assert_eq!(target, json!({"b": {"c": 5, "d": 3}, "e": "x"}));
    }

    #[test]
    fn filters_match_rows() {
        let row = ListingRow {
            channel_id: "ch".to_owned(),
            source: "sms".to_owned(),
            state: Some("OPEN".to_owned()),
            tag_ids: vec!["t1".to_owned()],
            has_unread: false,
        };
        assert!(Filters::default().matches(&row));
        assert!(
            Filters {
                tag_id: Some("t1".to_owned()),
                ..Filters::default()
            }
            .matches(&row)
        );
        assert!(
            !Filters {
                unread_only: true,
                ..Filters::default()
            }
            .matches(&row)
        );
        assert!(
            !Filters {
                state: Some("CLOSED".to_owned()),
                ..Filters::default()
            }
            .matches(&row)
        );
    }

    #[test]
    fn a_list_with_at_most_one_filter_takes_its_total_from_a_stored_count() {
        assert_eq!(Filters::default().stored_count(), Some(Counted::All));
        let by_channel = Filters {
            channel_id: Some("ch".to_owned()),
            ..Filters::default()
        };
        assert_eq!(by_channel.stored_count(), Some(Counted::Channel("ch")));
        let unread = Filters {
            unread_only: true,
            ..Filters::default()
        };
        assert_eq!(unread.stored_count(), Some(Counted::Unread));
        let two = Filters {
            state: Some("OPEN".to_owned()),
            tag_id: Some("t1".to_owned()),
            ..Filters::default()
        };
        assert_eq!(two.stored_count(), None);
        // Every single filter a row matches is one of the counts the row is part of.
        let row = ListingRow {
            channel_id: "ch".to_owned(),
            source: "sms".to_owned(),
            state: Some("OPEN".to_owned()),
            tag_ids: vec!["t1".to_owned(), "t2".to_owned()],
            has_unread: true,
        };
        let counted = row.counted();
        for filters in [
            Filters::default(),
            by_channel,
            unread,
            Filters {
                source: Some("sms".to_owned()),
                ..Filters::default()
            },
            Filters {
                state: Some("OPEN".to_owned()),
                ..Filters::default()
            },
            Filters {
                tag_id: Some("t2".to_owned()),
                ..Filters::default()
            },
        ] {
            assert!(filters.matches(&row));
            let stored = filters.stored_count().expect("one filter at most");
            assert!(counted.contains(&stored), "{stored:?} not in {counted:?}");
        }
        assert_eq!(counted.len(), 7, "{counted:?}");
        let distinct: std::collections::BTreeSet<String> =
            counted.iter().map(Counted::key).collect();
        assert_eq!(distinct.len(), counted.len(), "keys collide: {distinct:?}");
    }
}
