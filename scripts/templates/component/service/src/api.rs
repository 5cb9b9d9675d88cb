//! The __NAME__ service's HTTP API, documented in `openapi.json` (served at `/openapi.json`):
//! `POST /__NAME__.get {"conversation_id": "..."}` answers the conversation's latest message.
//! Every endpoint but `/openapi.json` needs the system token.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use eddy_api::server::{openapi_json, with_system_token};
use eddy_api::time::iso_millis;
use eddy_api::{ApiError, parse_json, read_body};
use eddy_service::config::Secret;
use eddy_streams::query::forward_bytes;
use eddy_streams::{KeyOwner, Queries, StoreDefinition};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::LatestMessage;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Everything a handler needs.
#[derive(Debug)]
pub struct Api {
    pub queries: Queries,
    pub latest: StoreDefinition<String, LatestMessage>,
    /// Forwards requests to the instance that owns the key.
    pub client: reqwest::Client,
    pub max_body_bytes: usize,
}

/// The routes: the API behind the system token, the OpenAPI document open.
pub fn router(api: Arc<Api>, system_token: &Secret) -> Router {
    let routes = Router::new()
        .route("/__NAME__.get", post(latest_message))
        .with_state(api);
    with_system_token(routes, system_token)
        .route("/openapi.json", get(|| async { openapi_json(OPENAPI) }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetRequest {
    conversation_id: String,
}

/// `/__NAME__.get`: answered by the instance that owns the conversation's partition; any other
/// instance forwards the request there.
async fn latest_message(
    State(api): State<Arc<Api>>,
    request: Request,
) -> Result<Response, ApiError> {
    let read = read_body(request, api.max_body_bytes).await?;
    let body: GetRequest = parse_json(&read.body)?;
    let conversation_id = body.conversation_id;
    if conversation_id.is_empty() {
        return Err(ApiError::bad_field("conversation_id", "must not be empty"));
    }
    // 503 with Retry-After while the stores restore or a rebalance moves the partition.
    match api.queries.owner_of(&api.latest, &conversation_id)? {
        KeyOwner::Local => {
            let latest = api
                .queries
                .get(&api.latest, &conversation_id)?
                .ok_or_else(|| ApiError::not_found("conversation", &conversation_id))?;
            Ok(axum::Json(view(&conversation_id, &latest)).into_response())
        }
        KeyOwner::Remote { address, .. } => Ok(forward_bytes(
            &api.client,
            api.queries.instance_id(),
            &address,
            &read.parts,
            read.body.clone(),
        )
        .await),
    }
}

/// The JSON answer (the `LatestMessage` schema of `openapi.json`).
pub fn view(conversation_id: &str, latest: &LatestMessage) -> Value {
    json!({
        "conversation_id": conversation_id,
        "message": {
            "id": latest.id,
            "sent_at": iso_millis(latest.sent_at),
            "from_contact": latest.from_contact,
            // Content is JSON text; anything else is passed on as a string.
            "content": serde_json::from_str::<Value>(&latest.content)
                .unwrap_or_else(|_| Value::String(latest.content.clone())),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_has_the_documented_fields() {
        let latest = LatestMessage {
            id: "m-1".to_owned(),
            sent_at: 1_700_000_000_000,
            from_contact: true,
            content: r#"{"text": "hi"}"#.to_owned(),
        };
        assert_eq!(
            view("c-1", &latest),
            json!({
                "conversation_id": "c-1",
                "message": {
                    "id": "m-1",
                    "sent_at": "2023-11-14T22:13:20.000Z",
                    "from_contact": true,
                    "content": {"text": "hi"},
                },
            })
        );
        let document: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(document["paths"]["/__NAME__.get"]["post"].is_object());
        let schema = &document["components"]["schemas"]["LatestMessage"];
        for field in ["conversation_id", "message"] {
            assert!(
                schema["required"]
                    .as_array()
                    .is_some_and(|required| required.contains(&json!(field))),
                "openapi.json does not require {field}"
            );
        }
    }
}
