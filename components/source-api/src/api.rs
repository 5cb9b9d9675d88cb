//! The source-api's HTTP API.
//!
//! Administration (system token): `/sources.create|list|delete`,
//! `/sources.channels.create|list|disconnect`. Ingest (the source's own token):
//! `/sources.webhook`, a batch of messages and metadata. Ids are derived from the source's own
//! ids (channel from source and source channel id, conversation from channel and source
//! conversation id, message from channel and source message id), so sending the same payload
//! twice changes nothing. A batch is checked whole before anything is written: one bad item
//! rejects the request, naming the item and field, and writes nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use eddy_api::auth::{bearer_token, token_hash, token_matches_hash};
use eddy_api::server::{openapi_json, with_system_token};
use eddy_api::time::{iso_millis, parse_timestamp};
use eddy_api::{ApiError, ReadBody, parse_json, read_body, views};
use eddy_schemas::metadata::{self, Subject};
use eddy_schemas::writer::{OutgoingRecord, Placement, RecordWriter, Written};
use eddy_schemas::{
    AvroSerde, Channel, ConnectionState, DeliveryState, Message, Metadata, Source, ValueType, ids,
};
use eddy_service::ComponentInfo;
use eddy_service::config::Secret;
use eddy_service::envelope::{Envelope, now_millis};
use eddy_streams::GlobalTable;
use eddy_webhooks::SecretKey;
use serde::Deserialize;
use serde_json::{Value, json};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

const READ_YOUR_WRITE: Duration = Duration::from_secs(5);
const MAX_ID_LENGTH: usize = 200;

/// Topic names of this installation.
#[derive(Debug, Clone)]
pub struct Topics {
    pub sources: String,
    pub channels: String,
    pub messages: String,
    pub metadata: String,
}

/// Value codecs of the topics written.
#[derive(Debug, Clone)]
pub struct Serdes {
    pub source: AvroSerde<Source>,
    pub channel: AvroSerde<Channel>,
    pub message: AvroSerde<Message>,
    pub metadata: AvroSerde<Metadata>,
}

/// Everything a handler needs.
#[derive(Debug)]
pub struct Api {
    pub component: ComponentInfo,
    pub sources: GlobalTable<String, Source>,
    pub channels: GlobalTable<String, Channel>,
    pub writer: RecordWriter,
    pub topics: Topics,
    pub serdes: Serdes,
    pub secret_key: SecretKey,
    pub max_body_bytes: usize,
    pub max_batch: usize,
}

type Handled = Result<Response, ApiError>;

/// The routes: administration behind the system token, ingest behind source tokens.
pub fn router(api: Arc<Api>, system_token: &Secret) -> Router {
    let admin = Router::new()
        .route("/sources.create", post(sources_create))
        .route("/sources.list", post(sources_list))
        .route("/sources.delete", post(sources_delete))
        .route("/sources.channels.create", post(channels_create))
        .route("/sources.channels.list", post(channels_list))
        .route("/sources.channels.disconnect", post(channels_disconnect))
        .with_state(Arc::clone(&api));
    let ingest = Router::new()
        .route("/sources.webhook", post(webhook))
        .with_state(api);
    with_system_token(admin, system_token)
        .merge(ingest)
        .route("/openapi.json", get(|| async { openapi_json(OPENAPI) }))
}

// ---------------------------------------------------------------------------------------------
// Shared steps

impl Api {
    fn envelope(&self, read: &ReadBody, event_time: i64) -> Envelope {
        Envelope::ingested(&self.component, event_time, read.caller_trace().as_ref())
    }

    fn require_loaded(&self) -> Result<(), ApiError> {
        if self.sources.is_caught_up() && self.channels.is_caught_up() {
            Ok(())
        } else {
            Err(ApiError::unavailable(
                "loading",
                "sources and channels are still loading",
            ))
        }
    }

    async fn write_source(
        &self,
        read: &ReadBody,
        id: &str,
        source: Option<&Source>,
    ) -> Result<(), ApiError> {
        let value = source
            .map(|source| self.serdes.source.encode(source))
            .transpose()
            .map_err(|error| ApiError::internal("encoding the source", error))?;
        let envelope = self.envelope(read, now_millis());
        let written = self
            .writer
            .send(OutgoingRecord {
                topic: &self.topics.sources,
                key: id,
                value,
                placement: Placement::ByKey,
                envelope: &envelope,
            })
            .await
            .map_err(ApiError::write_failed)?;
        self.sources
            .wait_for(written.partition, written.offset, READ_YOUR_WRITE)
            .await;
        Ok(())
    }

    async fn write_channels(&self, read: &ReadBody, channels: &[Channel]) -> Result<(), ApiError> {
        let envelope = self.envelope(read, now_millis());
        let mut values = Vec::with_capacity(channels.len());
        for channel in channels {
            values.push(
                self.serdes
                    .channel
                    .encode(channel)
                    .map_err(|error| ApiError::internal("encoding the channel", error))?,
            );
        }
        let records = channels
            .iter()
            .zip(values)
            .map(|(channel, value)| OutgoingRecord {
                topic: &self.topics.channels,
                key: &channel.id,
                value: Some(value),
                placement: Placement::ByKey,
                envelope: &envelope,
            })
            .collect();
        let written = self
            .writer
            .send_all(records)
            .await
            .map_err(ApiError::write_failed)?;
        for Written { partition, offset } in written {
            self.channels
                .wait_for(partition, offset, READ_YOUR_WRITE)
                .await;
        }
        Ok(())
    }

    /// The source whose token the request carries, or 401.
    fn authenticate_source(&self, headers: &axum::http::HeaderMap) -> Result<Source, ApiError> {
        let token = bearer_token(headers)?;
        self.sources
            .entries()
            .into_iter()
            .map(|(_, source)| source)
            .find(|source| token_matches_hash(token, &source.token_hash))
            .ok_or_else(|| ApiError::unauthorized("the bearer token is not a source token"))
    }
}

fn checked_id<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::bad_field(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LENGTH {
        return Err(ApiError::bad_field(
            field,
            format!("longer than {MAX_ID_LENGTH} bytes"),
        ));
    }
    Ok(value)
}

fn checked_url(field: &str, value: &str) -> Result<String, ApiError> {
    let url = reqwest::Url::parse(value)
        .map_err(|error| ApiError::bad_field(field, format!("not a URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ApiError::bad_field(
            field,
            "use an http or https URL with a host",
        ));
    }
    Ok(url.to_string())
}

fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| ApiError::internal("making a token", error))?;
    Ok(format!(
        "src_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn source_view(source: &Source) -> Value {
    json!({
        "source_id": source.id,
        "name": source.name,
        "image_url": source.image_url,
        "action_endpoint": source.action_endpoint,
        "created_at": iso_millis(source.created_at),
    })
}

// ---------------------------------------------------------------------------------------------
// Sources

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSource {
    source_id: String,
    name: Option<String>,
    image_url: Option<String>,
    action_endpoint: Option<String>,
}

async fn sources_create(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = read_body(request, api.max_body_bytes).await?;
    let body: CreateSource = parse_json(&read.body)?;
    let id = checked_id("source_id", &body.source_id)?;
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(ApiError::bad_field(
            "source_id",
            "use letters, digits, '.', '-' and '_'",
        ));
    }
    let action_endpoint = body
        .action_endpoint
        .as_deref()
        .map(|url| checked_url("action_endpoint", url))
        .transpose()?;
    let image_url = body
        .image_url
        .as_deref()
        .map(|url| checked_url("image_url", url))
        .transpose()?;
    api.require_loaded()?;
    if api.sources.get(&id.to_owned()).is_some() {
        return Err(ApiError::conflict(format!("source {id} already exists")));
    }
    let token = random_token()?;
    let secret_ref =
        SecretKey::new_reference().map_err(|error| ApiError::internal("making a secret", error))?;
    let signing_secret = api
        .secret_key
        .derive(crate::SOURCE_SECRET_PURPOSE, &secret_ref)
        .map_err(|error| ApiError::internal("deriving the signing secret", error))?;
    let source = Source {
        id: id.to_owned(),
        name: body.name,
        image_url,
        action_endpoint,
        token_hash: token_hash(&token),
        signing_secret_ref: Some(secret_ref),
        created_at: now_millis(),
    };
    api.write_source(&read, id, Some(&source)).await?;
    let mut view = source_view(&source);
    view["token"] = Value::String(token);
    view["signing_secret"] = Value::String(signing_secret.expose());
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

async fn sources_list(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = read_body(request, api.max_body_bytes).await?;
    let _: Empty = parse_json(&read.body)?;
    api.require_loaded()?;
    let mut sources: Vec<Source> = api
        .sources
        .entries()
        .into_iter()
        .map(|(_, source)| source)
        .collect();
    sources.sort_by(|a, b| a.id.cmp(&b.id));
    let data: Vec<Value> = sources.iter().map(source_view).collect();
    Ok(axum::Json(json!({ "data": data })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceRequest {
    source_id: String,
}

/// Deletes a source and disconnects its channels; its token stops working at once.
async fn sources_delete(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = read_body(request, api.max_body_bytes).await?;
    let body: SourceRequest = parse_json(&read.body)?;
    let id = checked_id("source_id", &body.source_id)?;
    api.require_loaded()?;
    if api.sources.get(&id.to_owned()).is_none() {
        return Err(ApiError::not_found("source", id));
    }
    let disconnected: Vec<Channel> = api
        .channels
        .entries()
        .into_iter()
        .map(|(_, channel)| channel)
        .filter(|channel| {
            channel.source == id && channel.connection_state == ConnectionState::Connected
        })
        .map(|channel| Channel {
            connection_state: ConnectionState::Disconnected,
            ..channel
        })
        .collect();
    api.write_channels(&read, &disconnected).await?;
    api.write_source(&read, id, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// Channels

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateChannel {
    source_id: String,
    source_channel_id: String,
    name: Option<String>,
    image_url: Option<String>,
    metadata: Option<Value>,
}

/// Connects a channel (again, if it was disconnected); 201 with the channel.
async fn channels_create(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = read_body(request, api.max_body_bytes).await?;
    let body: CreateChannel = parse_json(&read.body)?;
    let source_id = checked_id("source_id", &body.source_id)?;
    let source_channel_id = checked_id("source_channel_id", &body.source_channel_id)?;
    let image_url = body
        .image_url
        .as_deref()
        .map(|url| checked_url("image_url", url))
        .transpose()?;
    let user_data = match body.metadata {
        None => None,
        Some(Value::Object(map)) => Some(Value::Object(map)),
        Some(_) => return Err(ApiError::bad_field("metadata", "must be a JSON object")),
    };
    api.require_loaded()?;
    if api.sources.get(&source_id.to_owned()).is_none() {
        return Err(ApiError::not_found("source", source_id));
    }
    let channel = Channel {
        id: ids::channel_id(source_id, source_channel_id),
        source: source_id.to_owned(),
        source_channel_id: source_channel_id.to_owned(),
        connection_state: ConnectionState::Connected,
        token_ref: None,
        connected_at: now_millis(),
        name: body.name,
        image_url,
        metadata: user_data.map(|data| json!({ metadata::USER_DATA: data }).to_string()),
    };
    api.write_channels(&read, std::slice::from_ref(&channel))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(views::channel(&channel))).into_response())
}

async fn channels_list(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = read_body(request, api.max_body_bytes).await?;
    let body: SourceRequest = parse_json(&read.body)?;
    let source_id = checked_id("source_id", &body.source_id)?;
    api.require_loaded()?;
    if api.sources.get(&source_id.to_owned()).is_none() {
        return Err(ApiError::not_found("source", source_id));
    }
    let mut channels: Vec<Channel> = api
        .channels
        .entries()
        .into_iter()
        .map(|(_, channel)| channel)
        .filter(|channel| channel.source == source_id)
        .collect();
    channels.sort_by(|a, b| a.id.cmp(&b.id));
    let data: Vec<Value> = channels.iter().map(views::channel).collect();
    Ok(axum::Json(json!({ "data": data })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelRequest {
    channel_id: String,
}

async fn channels_disconnect(State(api): State<Arc<Api>>, request: Request) -> Handled {
    let read = read_body(request, api.max_body_bytes).await?;
    let body: ChannelRequest = parse_json(&read.body)?;
    let id = checked_id("channel_id", &body.channel_id)?;
    api.require_loaded()?;
    let channel = api
        .channels
        .get(&id.to_owned())
        .filter(|channel| api.sources.get(&channel.source).is_some())
        .ok_or_else(|| ApiError::not_found("channel", id))?;
    if channel.connection_state == ConnectionState::Connected {
        let disconnected = Channel {
            connection_state: ConnectionState::Disconnected,
            ..channel
        };
        api.write_channels(&read, &[disconnected]).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// Ingest

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBatch {
    #[serde(default)]
    messages: Vec<IncomingMessage>,
    #[serde(default)]
    metadata: Vec<IncomingMetadata>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncomingMessage {
    source_message_id: String,
    source_conversation_id: String,
    source_channel_id: String,
    source_sender_id: String,
    content: Value,
    from_contact: bool,
    sent_at: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncomingMetadata {
    namespace: String,
    source_channel_id: String,
    /// The source's id of the conversation or message the metadata is about.
    source_id: String,
    /// For message metadata: the source's id of the message's conversation (metadata is
    /// placed by conversation, so the service that keeps the message sees it).
    source_conversation_id: Option<String>,
    metadata: Value,
}

/// One record to write, checked.
struct Prepared {
    key: String,
    value: Option<Vec<u8>>,
    topic_is_messages: bool,
    conversation_id: String,
    event_time: i64,
}

async fn webhook(State(api): State<Arc<Api>>, request: Request) -> Handled {
    api.require_loaded()?;
    // Authenticate before reading the body.
    let source = api.authenticate_source(request.headers())?;
    let read = read_body(request, api.max_body_bytes).await?;
    let batch: WebhookBatch = parse_json(&read.body)?;
    if batch.messages.len() + batch.metadata.len() > api.max_batch {
        return Err(ApiError::bad_request(format!(
            "a batch holds at most {} messages and metadata items together",
            api.max_batch
        )));
    }
    let mut prepared = Vec::with_capacity(batch.messages.len() + batch.metadata.len());
    let mut accepted = Vec::with_capacity(batch.messages.len());
    for (index, item) in batch.messages.iter().enumerate() {
        let field = |name: &str| format!("messages[{index}].{name}");
        let channel = connected_channel(
            &api,
            &source,
            &item.source_channel_id,
            &field("source_channel_id"),
        )?;
        let source_message_id = checked_id(&field("source_message_id"), &item.source_message_id)?;
        let source_conversation_id = checked_id(
            &field("source_conversation_id"),
            &item.source_conversation_id,
        )?;
        let sender = checked_id(&field("source_sender_id"), &item.source_sender_id)?;
        let sent_at = parse_timestamp(&item.sent_at)
            .map_err(|problem| ApiError::bad_field(&field("sent_at"), problem))?;
        if item.content.is_null() {
            return Err(ApiError::bad_field(
                &field("content"),
                "must be the message content (JSON), not null",
            ));
        }
        let conversation_id = ids::conversation_id(&channel.id, source_conversation_id);
        let message = Message {
            id: ids::message_id(&channel.id, source_message_id),
            conversation_id: conversation_id.clone(),
            channel_id: channel.id.clone(),
            source: source.id.clone(),
            sender_id: sender.to_owned(),
            source_recipient_id: (!item.from_contact).then(|| source_conversation_id.to_owned()),
            source_message_id: Some(source_message_id.to_owned()),
            is_from_contact: item.from_contact,
            delivery_state: DeliveryState::Delivered,
            content: item.content.to_string(),
            sent_at,
            updated_at: None,
            source_conversation_id: Some(source_conversation_id.to_owned()),
        };
        accepted.push(json!({
            "id": message.id,
            "conversation_id": message.conversation_id,
            "source_message_id": source_message_id,
        }));
        prepared.push(Prepared {
            key: message.id.clone(),
            value: Some(
                api.serdes
                    .message
                    .encode(&message)
                    .map_err(|error| ApiError::internal("encoding a message", error))?,
            ),
            topic_is_messages: true,
            conversation_id,
            event_time: sent_at,
        });
    }
    let now = now_millis();
    for (index, item) in batch.metadata.iter().enumerate() {
        let field = |name: &str| format!("metadata[{index}].{name}");
        let channel = connected_channel(
            &api,
            &source,
            &item.source_channel_id,
            &field("source_channel_id"),
        )?;
        let source_id = checked_id(&field("source_id"), &item.source_id)?;
        if !item.metadata.is_object() {
            return Err(ApiError::bad_field(
                &field("metadata"),
                "must be a JSON object",
            ));
        }
        let (subject, conversation_id) = match item.namespace.as_str() {
            "conversation" => {
                let conversation_id = ids::conversation_id(&channel.id, source_id);
                (
                    Subject::Conversation(conversation_id.clone()),
                    conversation_id,
                )
            }
            "message" => {
                let source_conversation_id =
                    item.source_conversation_id.as_deref().ok_or_else(|| {
                        ApiError::bad_field(
                            &field("source_conversation_id"),
                            "is required for message metadata",
                        )
                    })?;
                (
                    Subject::Message(ids::message_id(&channel.id, source_id)),
                    ids::conversation_id(
                        &channel.id,
                        checked_id(&field("source_conversation_id"), source_conversation_id)?,
                    ),
                )
            }
            other => {
                return Err(ApiError::bad_field(
                    &field("namespace"),
                    format!("'{other}' is not a namespace: use conversation or message"),
                ));
            }
        };
        let subject_text = subject.to_string();
        for leaf in metadata::flatten("", &item.metadata) {
            let value = if leaf.value_type == ValueType::Null {
                None
            } else {
                Some(
                    api.serdes
                        .metadata
                        .encode(&Metadata {
                            subject: subject_text.clone(),
                            key: leaf.key.clone(),
                            value: leaf.value,
                            value_type: leaf.value_type,
                            timestamp: now,
                        })
                        .map_err(|error| ApiError::internal("encoding metadata", error))?,
                )
            };
            prepared.push(Prepared {
                key: ids::metadata_id(&subject_text, &leaf.key),
                value,
                topic_is_messages: false,
                conversation_id: conversation_id.clone(),
                event_time: now,
            });
        }
    }
    // Everything checked: write.
    let envelopes: Vec<Envelope> = prepared
        .iter()
        .map(|record| api.envelope(&read, record.event_time))
        .collect();
    let records = prepared
        .iter()
        .zip(&envelopes)
        .map(|(record, envelope)| OutgoingRecord {
            topic: if record.topic_is_messages {
                &api.topics.messages
            } else {
                &api.topics.metadata
            },
            key: &record.key,
            value: record.value.clone(),
            placement: Placement::By(&record.conversation_id),
            envelope,
        })
        .collect();
    api.writer
        .send_all(records)
        .await
        .map_err(ApiError::write_failed)?;
    Ok(axum::Json(json!({
        "messages": accepted,
        "metadata_records": prepared.iter().filter(|record| !record.topic_is_messages).count(),
    }))
    .into_response())
}

/// The connected channel `source_channel_id` of `source`, or 400 naming `field`.
fn connected_channel(
    api: &Api,
    source: &Source,
    source_channel_id: &str,
    field: &str,
) -> Result<Channel, ApiError> {
    let source_channel_id = checked_id(field, source_channel_id)?;
    let id = ids::channel_id(&source.id, source_channel_id);
    match api.channels.get(&id) {
        Some(channel) if channel.connection_state == ConnectionState::Connected => Ok(channel),
        Some(_) => Err(ApiError::bad_field(
            field,
            format!(
                "channel {source_channel_id} of source {} is disconnected",
                source.id
            ),
        )),
        None => Err(ApiError::bad_field(
            field,
            format!(
                "source {} has no channel {source_channel_id} (create it with /sources.channels.create)",
                source.id
            ),
        )),
    }
}
