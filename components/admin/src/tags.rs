//! `/tags.create`, `/tags.list`, `/tags.update`, `/tags.delete`: labels conversations can carry.
//! Tag names are unique, ignoring case; a deleted tag is a tombstone on the tags topic.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use eddy_api::ApiError;
use eddy_api::views::{self, parse_tag_color, tag_color_name};
use eddy_schemas::ids::random_id;
use eddy_schemas::{Tag, TagColor};
use eddy_streams::GlobalTable;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::request::ApiRequest;
use crate::{AdminState, check_name};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTag {
    name: String,
    /// `tag-red`, `tag-green`, `tag-blue`, `tag-purple`, `tag-orange` or `tag-grey` (default).
    color: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListTags {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTag {
    id: String,
    name: Option<String>,
    color: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteTag {
    id: String,
}

/// `/tags.create {name, color?}`: 201 with the new tag; 409 if the name is taken.
pub async fn create(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<CreateTag>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ApiRequest { body, trace, .. } = request;
    let name = check_name("name", &body.name)?;
    let color = match body.color.as_deref() {
        Some(color) => check_color("color", color)?,
        None => TagColor::Grey,
    };

    let table = &state.tables()?.tags;
    let _writes = table.lock_writes().await;
    let tags = table.loaded()?;
    refuse_taken_name(tags, &name, None)?;
    let tag = Tag {
        id: random_id(),
        name,
        color,
    };
    table.write(&tag.id, Some(&tag), trace.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(views::tag(&tag))))
}

/// `/tags.list {}`: every tag, sorted by name (ignoring case, then by id).
pub async fn list(
    State(state): State<Arc<AdminState>>,
    _request: ApiRequest<ListTags>,
) -> Result<Json<Value>, ApiError> {
    let tags = state.tables()?.tags.loaded()?;
    let mut all: Vec<Tag> = tags.entries().into_iter().map(|(_, tag)| tag).collect();
    all.sort_by(|left, right| {
        (left.name.to_lowercase(), &left.name, &left.id).cmp(&(
            right.name.to_lowercase(),
            &right.name,
            &right.id,
        ))
    });
    let data: Vec<Value> = all.iter().map(views::tag).collect();
    Ok(Json(json!({ "data": data })))
}

/// `/tags.update {id, name?, color?}`: 204; 404 for an unknown tag, 409 if the new name is
/// another tag's.
pub async fn update(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<UpdateTag>,
) -> Result<StatusCode, ApiError> {
    let ApiRequest { body, trace, .. } = request;
    if body.name.is_none() && body.color.is_none() {
        return Err(ApiError::bad_request(
            "nothing to update: give name or color",
        ));
    }
    let name = body
        .name
        .as_deref()
        .map(|name| check_name("name", name))
        .transpose()?;
    let color = body
        .color
        .as_deref()
        .map(|color| check_color("color", color))
        .transpose()?;

    let table = &state.tables()?.tags;
    let _writes = table.lock_writes().await;
    let tags = table.loaded()?;
    let mut tag = tags
        .get(&body.id)
        .ok_or_else(|| ApiError::not_found("tag", &body.id))?;
    if let Some(name) = name {
        refuse_taken_name(tags, &name, Some(&tag.id))?;
        tag.name = name;
    }
    if let Some(color) = color {
        tag.color = color;
    }
    table.write(&tag.id, Some(&tag), trace.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `/tags.delete {id}`: 204 (a tombstone); 404 for an unknown tag.
pub async fn delete(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<DeleteTag>,
) -> Result<StatusCode, ApiError> {
    let ApiRequest { body, trace, .. } = request;
    let table = &state.tables()?.tags;
    let _writes = table.lock_writes().await;
    let tags = table.loaded()?;
    if tags.get(&body.id).is_none() {
        return Err(ApiError::not_found("tag", &body.id));
    }
    table.write(&body.id, None, trace.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The colour named `color`, or a 400 naming `field` and the colours there are.
fn check_color(field: &str, color: &str) -> Result<TagColor, ApiError> {
    parse_tag_color(color).ok_or_else(|| {
        let known: Vec<&str> = [
            TagColor::Red,
            TagColor::Green,
            TagColor::Blue,
            TagColor::Purple,
            TagColor::Orange,
            TagColor::Grey,
        ]
        .into_iter()
        .map(tag_color_name)
        .collect();
        ApiError::bad_field(
            field,
            format!(
                "'{color}' is not a tag colour; use one of {}",
                known.join(", ")
            ),
        )
    })
}

/// 409 if a tag other than `except` is already called `name` (ignoring case).
fn refuse_taken_name(
    tags: &GlobalTable<String, Tag>,
    name: &str,
    except: Option<&str>,
) -> Result<(), ApiError> {
    let wanted = name.to_lowercase();
    let taken = tags
        .entries()
        .into_iter()
        .map(|(_, tag)| tag)
        .find(|tag| Some(tag.id.as_str()) != except && tag.name.to_lowercase() == wanted);
    match taken {
        Some(tag) => Err(ApiError::conflict(format!(
            "a tag named '{}' already exists (id {})",
            tag.name, tag.id
        ))),
        None => Ok(()),
    }
}
