//! `/webhooks.subscribe`, `/webhooks.update`, `/webhooks.unsubscribe`, `/webhooks.info`,
//! `/webhooks.list`, `/webhooks.rotate-secret`: where Eddy sends its signed webhook events.
//!
//! A subscription's signing secret (`whsec_…`) is shown once, in the answer to
//! `/webhooks.subscribe` (or `/webhooks.rotate-secret`), and never again: the record keeps only
//! a reference (`secret_ref`), from which the sender derives the secret with the installation's
//! secret key. After a rotation the old reference stays in `previous_secret_ref` for
//! [`PREVIOUS_SECRET_VALIDITY_MS`], and deliveries carry both signatures meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use eddy_api::ApiError;
use eddy_api::time::iso_millis;
use eddy_schemas::ids::random_id;
use eddy_schemas::{SubscriptionStatus, WebhookSubscription};
use eddy_service::envelope::now_millis;
use eddy_webhooks::SecretKey;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::destination::check_webhook_url;
use crate::request::ApiRequest;
use crate::{AdminState, check_name};

/// The event types a subscription can ask for; none means all of them.
pub const EVENT_TYPES: &[&str] = &[
    "message.created",
    "message.updated",
    "conversation.updated",
    "channel.updated",
    "tag.updated",
    "tag.deleted",
];

/// Headers a subscription may not set: hop-by-hop ones, ones the sender sets itself, and the
/// Standard Webhooks `webhook-*` headers that carry the signature.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
];
const RESERVED_HEADER_PREFIX: &str = "webhook-";

/// The most custom headers one subscription may carry.
const MAX_HEADERS: usize = 50;

/// `max_attempts`: how many attempts per event a subscription may ask for.
pub const MAX_ATTEMPTS: std::ops::RangeInclusive<i64> = 1..=100;

/// `max_age_seconds`: from a minute to 30 days (the delivery log's retention).
pub const MAX_AGE_SECONDS: std::ops::RangeInclusive<i64> = 60..=2_592_000;

/// How long the old secret keeps signing beside the new one after a rotation: 24 hours.
pub const PREVIOUS_SECRET_VALIDITY_MS: i64 = 24 * 60 * 60 * 1000;

/// The key derivation purpose of webhook signing secrets (see [`SecretKey::derive`]).
pub use eddy_webhooks::SUBSCRIPTION_SECRET_PURPOSE as SECRET_PURPOSE;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    url: String,
    name: Option<String>,
    events: Option<Vec<String>>,
    headers: Option<BTreeMap<String, String>>,
    max_attempts: Option<i64>,
    max_age_seconds: Option<i64>,
}

/// `status` as the API names it.
#[derive(Debug, Clone, Copy, Deserialize)]
pub enum StatusName {
    Subscribed,
    Unsubscribed,
}

impl From<StatusName> for SubscriptionStatus {
    fn from(status: StatusName) -> Self {
        match status {
            StatusName::Subscribed => SubscriptionStatus::Subscribed,
            StatusName::Unsubscribed => SubscriptionStatus::Unsubscribed,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscription {
    id: String,
    url: Option<String>,
    name: Option<String>,
    events: Option<Vec<String>>,
    headers: Option<BTreeMap<String, String>>,
    status: Option<StatusName>,
    max_attempts: Option<i64>,
    max_age_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionId {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSubscriptions {}

/// `/webhooks.subscribe {url, name?, events?, headers?, max_attempts?, max_age_seconds?}`:
/// 201 with the subscription and its signing secret, the only time the secret is shown.
pub async fn subscribe(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<Subscribe>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ApiRequest { body, trace, .. } = request;
    let name = body
        .name
        .as_deref()
        .map(|name| check_name("name", name))
        .transpose()?;
    let events = check_events(body.events.unwrap_or_default())?;
    let headers = check_headers(body.headers.unwrap_or_default())?;
    let max_attempts = body.max_attempts.map(check_max_attempts).transpose()?;
    let max_age_ms = body.max_age_seconds.map(check_max_age).transpose()?;
    let endpoint = check_webhook_url("url", &body.url, state.destination_policy).await?;

    let secret_ref = SecretKey::new_reference()
        .map_err(|error| ApiError::internal("making a signing secret reference", error))?;
    let signing_secret = state
        .secret_key
        .derive(SECRET_PURPOSE, &secret_ref)
        .map_err(|error| ApiError::internal("deriving a signing secret", error))?;
    let subscription = WebhookSubscription {
        id: random_id(),
        name,
        endpoint,
        events,
        headers,
        status: SubscriptionStatus::Subscribed,
        secret_ref: Some(secret_ref),
        subscribed_at: now_millis(),
        max_attempts,
        max_age_ms,
        previous_secret_ref: None,
        previous_secret_expires_at: None,
    };

    let table = &state.tables()?.webhook_subscriptions;
    let _writes = table.lock_writes().await;
    table.loaded()?;
    table
        .write(&subscription.id, Some(&subscription), trace.as_ref())
        .await?;
    let mut created = view(&subscription);
    created["signing_secret"] = Value::String(signing_secret.expose());
    Ok((StatusCode::CREATED, Json(created)))
}

/// `/webhooks.update {id, url?, name?, events?, headers?, status?, max_attempts?,
/// max_age_seconds?}`: the changed subscription (without its secret); 404 for an unknown id.
pub async fn update(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<UpdateSubscription>,
) -> Result<Json<Value>, ApiError> {
    let ApiRequest { body, trace, .. } = request;
    if body.url.is_none()
        && body.name.is_none()
        && body.events.is_none()
        && body.headers.is_none()
        && body.status.is_none()
        && body.max_attempts.is_none()
        && body.max_age_seconds.is_none()
    {
        return Err(ApiError::bad_request(
            "nothing to update: give url, name, events, headers, status, max_attempts or max_age_seconds",
        ));
    }
    let name = body
        .name
        .as_deref()
        .map(|name| check_name("name", name))
        .transpose()?;
    let events = body.events.map(check_events).transpose()?;
    let headers = body.headers.map(check_headers).transpose()?;
    let max_attempts = body.max_attempts.map(check_max_attempts).transpose()?;
    let max_age_ms = body.max_age_seconds.map(check_max_age).transpose()?;
    let endpoint = match body.url.as_deref() {
        Some(url) => Some(check_webhook_url("url", url, state.destination_policy).await?),
        None => None,
    };

    let table = &state.tables()?.webhook_subscriptions;
    let _writes = table.lock_writes().await;
    let subscriptions = table.loaded()?;
    let current = subscriptions
        .get(&body.id)
        .ok_or_else(|| ApiError::not_found("webhook subscription", &body.id))?;
    let mut changed = current.clone();
    if let Some(name) = name {
        changed.name = Some(name);
    }
    if let Some(events) = events {
        changed.events = events;
    }
    if let Some(headers) = headers {
        changed.headers = headers;
    }
    if let Some(endpoint) = endpoint {
        changed.endpoint = endpoint;
    }
    if let Some(status) = body.status {
        changed.status = status.into();
    }
    if max_attempts.is_some() {
        changed.max_attempts = max_attempts;
    }
    if max_age_ms.is_some() {
        changed.max_age_ms = max_age_ms;
    }
    if changed != current {
        table
            .write(&changed.id, Some(&changed), trace.as_ref())
            .await?;
    }
    Ok(Json(view(&changed)))
}

/// `/webhooks.unsubscribe {id}`: the subscription, now `Unsubscribed` (kept, so it can be
/// subscribed again with `/webhooks.update`); 404 for an unknown id.
pub async fn unsubscribe(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<SubscriptionId>,
) -> Result<Json<Value>, ApiError> {
    let ApiRequest { body, trace, .. } = request;
    let table = &state.tables()?.webhook_subscriptions;
    let _writes = table.lock_writes().await;
    let subscriptions = table.loaded()?;
    let mut subscription = subscriptions
        .get(&body.id)
        .ok_or_else(|| ApiError::not_found("webhook subscription", &body.id))?;
    if subscription.status != SubscriptionStatus::Unsubscribed {
        subscription.status = SubscriptionStatus::Unsubscribed;
        table
            .write(&subscription.id, Some(&subscription), trace.as_ref())
            .await?;
    }
    Ok(Json(view(&subscription)))
}

/// `/webhooks.rotate-secret {id}`: a new signing secret for the subscription, in the answer
/// (the only time it is shown) beside the subscription. The old secret keeps signing beside the
/// new one for 24 hours, so receivers can switch without missing a delivery; 404 for an
/// unknown id.
pub async fn rotate_secret(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<SubscriptionId>,
) -> Result<Json<Value>, ApiError> {
    let ApiRequest { body, trace, .. } = request;
    let table = &state.tables()?.webhook_subscriptions;
    let _writes = table.lock_writes().await;
    let subscriptions = table.loaded()?;
    let mut subscription = subscriptions
        .get(&body.id)
        .ok_or_else(|| ApiError::not_found("webhook subscription", &body.id))?;
    let secret_ref = SecretKey::new_reference()
        .map_err(|error| ApiError::internal("making a signing secret reference", error))?;
    let signing_secret = state
        .secret_key
        .derive(SECRET_PURPOSE, &secret_ref)
        .map_err(|error| ApiError::internal("deriving a signing secret", error))?;
    let previous = subscription.secret_ref.replace(secret_ref);
    subscription.previous_secret_expires_at = previous
        .as_ref()
        .map(|_| now_millis() + PREVIOUS_SECRET_VALIDITY_MS);
    subscription.previous_secret_ref = previous;
    table
        .write(&subscription.id, Some(&subscription), trace.as_ref())
        .await?;
    tracing::info!(subscription = %subscription.id, "signing secret rotated");
    let mut rotated = view(&subscription);
    rotated["signing_secret"] = Value::String(signing_secret.expose());
    Ok(Json(rotated))
}

/// `/webhooks.info {id}`: one subscription (without its secret), or 404.
pub async fn info(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<SubscriptionId>,
) -> Result<Json<Value>, ApiError> {
    let subscriptions = state.tables()?.webhook_subscriptions.loaded()?;
    let subscription = subscriptions
        .get(&request.body.id)
        .ok_or_else(|| ApiError::not_found("webhook subscription", &request.body.id))?;
    Ok(Json(view(&subscription)))
}

/// `/webhooks.list {}`: every subscription, unsubscribed ones too, by `subscribed_at` then id.
pub async fn list(
    State(state): State<Arc<AdminState>>,
    _request: ApiRequest<ListSubscriptions>,
) -> Result<Json<Value>, ApiError> {
    let subscriptions = state.tables()?.webhook_subscriptions.loaded()?;
    let mut all: Vec<WebhookSubscription> = subscriptions
        .entries()
        .into_iter()
        .map(|(_, subscription)| subscription)
        .collect();
    all.sort_by(|left, right| {
        (left.subscribed_at, &left.id).cmp(&(right.subscribed_at, &right.id))
    });
    let data: Vec<Value> = all.iter().map(view).collect();
    Ok(Json(json!({ "data": data })))
}

/// A subscription as the API shows it: `{id, name, url, events, headers, status,
/// subscribed_at, max_attempts, max_age_seconds}`, never its secret or secret references.
pub fn view(subscription: &WebhookSubscription) -> Value {
    json!({
        "id": subscription.id,
        "name": subscription.name,
        "url": subscription.endpoint,
        "events": subscription.events,
        "headers": subscription.headers,
        "status": match subscription.status {
            SubscriptionStatus::Subscribed => "Subscribed",
            SubscriptionStatus::Unsubscribed => "Unsubscribed",
        },
        "subscribed_at": iso_millis(subscription.subscribed_at),
        "max_attempts": subscription.max_attempts,
        "max_age_seconds": subscription.max_age_ms.map(|millis| millis / 1000),
    })
}

/// `max_attempts` within [`MAX_ATTEMPTS`], or a 400 naming it.
fn check_max_attempts(attempts: i64) -> Result<i32, ApiError> {
    if !MAX_ATTEMPTS.contains(&attempts) {
        return Err(ApiError::bad_field(
            "max_attempts",
            format!(
                "{attempts} is out of range: use {} to {}",
                MAX_ATTEMPTS.start(),
                MAX_ATTEMPTS.end()
            ),
        ));
    }
    i32::try_from(attempts).map_err(|error| ApiError::bad_field("max_attempts", error))
}

/// `max_age_seconds` within [`MAX_AGE_SECONDS`] as milliseconds, or a 400 naming it.
fn check_max_age(seconds: i64) -> Result<i64, ApiError> {
    if !MAX_AGE_SECONDS.contains(&seconds) {
        return Err(ApiError::bad_field(
            "max_age_seconds",
            format!(
                "{seconds} is out of range: use {} (a minute) to {} (30 days)",
                MAX_AGE_SECONDS.start(),
                MAX_AGE_SECONDS.end()
            ),
        ));
    }
    Ok(seconds * 1000)
}

/// The requested event types, each one Eddy sends, without repeats (in the order given); a
/// 400 naming `events[i]` otherwise. Empty means every event type.
fn check_events(events: Vec<String>) -> Result<Vec<String>, ApiError> {
    let mut checked: Vec<String> = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        if !EVENT_TYPES.contains(&event.as_str()) {
            return Err(ApiError::bad_field(
                &format!("events[{index}]"),
                format!(
                    "'{event}' is not an event type; use one of {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !checked.contains(&event) {
            checked.push(event);
        }
    }
    Ok(checked)
}

/// Custom delivery headers: valid HTTP names and values, none reserved, no name twice
/// (ignoring case); a 400 naming `headers.<name>` otherwise.
fn check_headers(headers: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ApiError> {
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::bad_field(
            "headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    let mut seen: Vec<String> = Vec::with_capacity(headers.len());
    for (name, value) in &headers {
        let field = format!("headers.{name}");
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ApiError::bad_field(&field, "not a valid HTTP header name"));
        }
        let lowercase = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lowercase.as_str())
            || lowercase.starts_with(RESERVED_HEADER_PREFIX)
        {
            return Err(ApiError::bad_field(
                &field,
                format!(
                    "Eddy sets this header itself; custom headers cannot be {} or start with {RESERVED_HEADER_PREFIX}",
                    RESERVED_HEADERS.join(", ")
                ),
            ));
        }
        if HeaderValue::from_str(value).is_err() {
            return Err(ApiError::bad_field(&field, "not a valid HTTP header value"));
        }
        if seen.contains(&lowercase) {
            return Err(ApiError::bad_field(
                &field,
                "given twice (header names ignore case)",
            ));
        }
        seen.push(lowercase);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_events_are_named_by_position_and_repeats_dropped() {
        let error = check_events(vec!["message.created".into(), "message.sent".into()])
            .expect_err("unknown event");
        assert!(
            error.message.starts_with("events[1]: 'message.sent'"),
            "{}",
            error.message
        );
        assert_eq!(
            check_events(vec!["tag.updated".into(), "tag.updated".into()]).ok(),
            Some(vec!["tag.updated".to_owned()])
        );
        assert_eq!(check_events(Vec::new()).ok(), Some(Vec::new()));
    }

    #[test]
    fn reserved_and_malformed_headers_are_refused() {
        for reserved in [
            "Host",
            "content-type",
            "Connection",
            "Webhook-Signature",
            "webhook-id",
        ] {
            let headers = BTreeMap::from([(reserved.to_owned(), "x".to_owned())]);
            let error = check_headers(headers).expect_err(reserved);
            assert!(
                error.message.starts_with(&format!("headers.{reserved}: ")),
                "{}",
                error.message
            );
        }
        let error = check_headers(BTreeMap::from([("bad name".to_owned(), "x".to_owned())]))
            .expect_err("space in a name");
        assert!(
            error.message.contains("not a valid HTTP header name"),
            "{}",
            error.message
        );
        let error = check_headers(BTreeMap::from([(
            "x-a".to_owned(),
            "line\nbreak".to_owned(),
        )]))
        .expect_err("newline in a value");
        assert!(
            error.message.contains("not a valid HTTP header value"),
            "{}",
            error.message
        );
        let error = check_headers(BTreeMap::from([
            ("X-Team".to_owned(), "a".to_owned()),
            ("x-team".to_owned(), "b".to_owned()),
        ]))
        .expect_err("twice");
        assert!(error.message.contains("given twice"), "{}", error.message);
        let fine = BTreeMap::from([
            ("Authorization".to_owned(), "Bearer abc".to_owned()),
            ("X-Team".to_owned(), "support".to_owned()),
        ]);
        assert_eq!(check_headers(fine.clone()).ok(), Some(fine));
    }

    #[test]
    fn the_view_never_shows_the_secret_reference() {
        let subscription = WebhookSubscription {
            id: "w1".into(),
            name: None,
            endpoint: "https://example.com/hook".into(),
            events: Vec::new(),
            headers: BTreeMap::new(),
            status: SubscriptionStatus::Unsubscribed,
            secret_ref: Some("derived:v1:salt".into()),
            subscribed_at: 1_763_800_000_123,
            max_attempts: None,
            max_age_ms: None,
            previous_secret_ref: None,
            previous_secret_expires_at: None,
        };
        let shown = view(&subscription);
        assert_eq!(
            shown,
            json!({
                "id": "w1",
                "name": null,
                "url": "https://example.com/hook",
                "events": [],
                "headers": {},
                "status": "Unsubscribed",
                "subscribed_at": "2025-11-22T08:26:40.123Z",
                "max_attempts": null,
                "max_age_seconds": null,
            })
        );
        let limited = WebhookSubscription {
            max_attempts: Some(5),
            max_age_ms: Some(3_600_000),
            previous_secret_ref: Some("derived:v1:old".into()),
            previous_secret_expires_at: Some(1_763_900_000_000),
            ..subscription
        };
        let shown = view(&limited);
        assert_eq!(shown["max_attempts"], 5);
        assert_eq!(shown["max_age_seconds"], 3600);
        assert!(!shown.to_string().contains("derived:v1"), "{shown}");
    }

    #[test]
    fn attempt_and_age_limits_are_bounded() {
        assert_eq!(check_max_attempts(1).ok(), Some(1));
        assert_eq!(check_max_attempts(100).ok(), Some(100));
        for bad in [0, 101, -1, i64::MAX] {
            let error = check_max_attempts(bad).expect_err("out of range");
            assert!(
                error.message.starts_with("max_attempts: "),
                "{}",
                error.message
            );
        }
        assert_eq!(check_max_age(60).ok(), Some(60_000));
        assert_eq!(check_max_age(2_592_000).ok(), Some(2_592_000_000));
        for bad in [59, 2_592_001, 0] {
            let error = check_max_age(bad).expect_err("out of range");
            assert!(
                error.message.starts_with("max_age_seconds: "),
                "{}",
                error.message
            );
        }
    }
}
