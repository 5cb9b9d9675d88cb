//! `/channels.list`, `/channels.info`, `/channels.update`: the connected channels and their
//! display name and image. Connectors write channels when they connect or disconnect one; the
//! admin API only renames them or changes their picture, writing the whole record anew.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use eddy_api::ApiError;
use eddy_api::views;
use eddy_schemas::{Channel, ConnectionState};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::destination::MAX_URL_CHARS;
use crate::request::ApiRequest;
use crate::{AdminState, check_name};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListChannels {
    /// Only channels of this source (`sms`, `whatsapp`, ...).
    source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelInfo {
    channel_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateChannel {
    channel_id: String,
    name: Option<String>,
    image_url: Option<String>,
}

/// `/channels.list {source?}`: connected channels, sorted by id.
pub async fn list(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<ListChannels>,
) -> Result<Json<Value>, ApiError> {
    let channels = state.tables()?.channels.loaded()?;
    let mut connected: Vec<Channel> = channels
        .entries()
        .into_iter()
        .map(|(_, channel)| channel)
        .filter(|channel| channel.connection_state == ConnectionState::Connected)
        .filter(|channel| {
            request
                .body
                .source
                .as_deref()
                .is_none_or(|source| channel.source == source)
        })
        .collect();
    connected.sort_by(|left, right| left.id.cmp(&right.id));
    let data: Vec<Value> = connected.iter().map(views::channel).collect();
    Ok(Json(json!({ "data": data })))
}

/// `/channels.info {channel_id}`: one connected channel, or 404.
pub async fn info(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<ChannelInfo>,
) -> Result<Json<Value>, ApiError> {
    let channels = state.tables()?.channels.loaded()?;
    let channel = connected_channel(
        channels.get(&request.body.channel_id),
        &request.body.channel_id,
    )?;
    Ok(Json(views::channel(&channel)))
}

/// `/channels.update {channel_id, name?, image_url?}`: the updated channel, or 404.
pub async fn update(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<UpdateChannel>,
) -> Result<Json<Value>, ApiError> {
    let ApiRequest { body, trace, .. } = request;
    if body.name.is_none() && body.image_url.is_none() {
        return Err(ApiError::bad_request(
            "nothing to update: give name or image_url",
        ));
    }
    let name = body
        .name
        .as_deref()
        .map(|name| check_name("name", name))
        .transpose()?;
    let image_url = body
        .image_url
        .as_deref()
        .map(|image_url| check_image_url("image_url", image_url))
        .transpose()?;

    let table = &state.tables()?.channels;
    let _writes = table.lock_writes().await;
    let channels = table.loaded()?;
    let mut channel = connected_channel(channels.get(&body.channel_id), &body.channel_id)?;
    if let Some(name) = name {
        channel.name = Some(name);
    }
    if let Some(image_url) = image_url {
        channel.image_url = Some(image_url);
    }
    table
        .write(&channel.id, Some(&channel), trace.as_ref())
        .await?;
    Ok(Json(views::channel(&channel)))
}

/// The channel if it exists and is connected; a 404 otherwise (a disconnected channel is gone
/// as far as the API is concerned).
fn connected_channel(found: Option<Channel>, channel_id: &str) -> Result<Channel, ApiError> {
    found
        .filter(|channel| channel.connection_state == ConnectionState::Connected)
        .ok_or_else(|| ApiError::not_found("channel", channel_id))
}

/// An image URL: non-empty text of at most 2,048 characters.
fn check_image_url(field: &str, image_url: &str) -> Result<String, ApiError> {
    let image_url = image_url.trim();
    if image_url.is_empty() {
        return Err(ApiError::bad_field(field, "must not be empty"));
    }
    if image_url.chars().count() > MAX_URL_CHARS {
        return Err(ApiError::bad_field(
            field,
            format!("longer than {MAX_URL_CHARS} characters"),
        ));
    }
    Ok(image_url.to_owned())
}
