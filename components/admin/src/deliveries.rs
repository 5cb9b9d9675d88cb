//! `/webhooks.deliveries.list` and `/webhooks.redeliver`: the delivery log of a subscription
//! (every attempt the sender made, newest first) and redelivery of dead-lettered events.
//!
//! The log lives in the stores of the delivery log view ([`crate::delivery_log`]), spread over
//! the partitions the admin instances share: a list asks every instance for its part
//! (`fan_out_post` to the same endpoint, marked as forwarded) and merges. A forwarded request
//! answers from this instance's partitions only, as an ordinary page.
//!
//! Dead letters are a global table (every instance holds all of them), read to the end of its
//! topic before a redelivery looks at it. Redelivering an event writes a copy of it with
//! `redelivery_requested_at` to the events topic, on the event's partition; the sender takes it
//! from there (and tombstones the dead letter).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eddy_api::page::{PaginationData, decode_cursor, encode_cursor, page_size};
use eddy_api::time::{iso_millis, parse_timestamp};
use eddy_api::{ApiError, Page};
use eddy_schemas::writer::{OutgoingRecord, Placement, RecordWriter};
use eddy_schemas::{AvroSerde, DeliveryOutcome, SubscriptionStatus, WebhookDelivery, WebhookEvent};
use eddy_service::ComponentInfo;
use eddy_service::envelope::{Envelope, now_millis};
use eddy_streams::query::fan_out_post;
use eddy_streams::{Queries, ScanOrder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AdminState;
use crate::delivery_log::{
    AttemptFilter, DeliveryStores, Position, attempt_key_of, local_candidates, subscription_prefix,
};
use crate::request::ApiRequest;

/// The path of the list, also asked of every instance for its part.
pub const LIST_PATH: &str = "/webhooks.deliveries.list";

/// The delivery log view of this instance.
#[derive(Debug)]
pub struct DeliveryLog {
    pub queries: Queries,
    pub stores: DeliveryStores,
    /// Asks the other instances for their part of a list.
    pub client: reqwest::Client,
}

/// Where redelivery requests go: the webhook events topic.
#[derive(Debug)]
pub struct EventsTopic {
    pub topic: String,
    pub serde: AvroSerde<WebhookEvent>,
    pub writer: RecordWriter,
    pub component: ComponentInfo,
}

/// `status` as the API names an outcome.
const STATUSES: [(&str, DeliveryOutcome); 4] = [
    ("succeeded", DeliveryOutcome::Succeeded),
    ("failed", DeliveryOutcome::Failed),
    ("dead_lettered", DeliveryOutcome::DeadLettered),
    ("cancelled", DeliveryOutcome::Cancelled),
];

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListDeliveries {
    subscription_id: String,
    status: Option<String>,
    event_id: Option<String>,
    since: Option<Value>,
    until: Option<Value>,
    cursor: Option<String>,
    page_size: Option<i64>,
}

/// A list request, checked.
struct CheckedList {
    filter: AttemptFilter,
    position: Option<Position>,
    size: usize,
}

impl ListDeliveries {
    fn check(&self) -> Result<CheckedList, ApiError> {
        let size = page_size(self.page_size)?;
        let outcome = self.status.as_deref().map(outcome_named).transpose()?;
        let timestamp = |field: &str, value: &Option<Value>| {
            value
                .as_ref()
                .map(|value| {
                    parse_timestamp(value).map_err(|problem| ApiError::bad_field(field, problem))
                })
                .transpose()
        };
        let since = timestamp("since", &self.since)?;
        let until = timestamp("until", &self.until)?;
        if let (Some(since), Some(until)) = (since, until)
            && until <= since
        {
            return Err(ApiError::bad_field("until", "must be after since"));
        }
        let position: Option<Position> = self.cursor.as_deref().map(decode_cursor).transpose()?;
        if let Some(position) = &position
            && !position
                .key()
                .starts_with(&subscription_prefix(&self.subscription_id))
        {
            return Err(ApiError::bad_field(
                "cursor",
                "belongs to another list (use a cursor /webhooks.deliveries.list returned for this subscription)",
            ));
        }
        Ok(CheckedList {
            filter: AttemptFilter {
                subscription_id: self.subscription_id.clone(),
                outcome,
                event_id: self.event_id.clone(),
                since,
                until,
            },
            position,
            size,
        })
    }
}

/// The outcome `status` names; a 400 naming `status` otherwise.
fn outcome_named(status: &str) -> Result<DeliveryOutcome, ApiError> {
    STATUSES
        .iter()
        .find(|(name, _)| *name == status)
        .map(|(_, outcome)| *outcome)
        .ok_or_else(|| {
            ApiError::bad_field(
                "status",
                format!(
                    "'{status}' is not a delivery status; use one of {}",
                    STATUSES.map(|(name, _)| name).join(", ")
                ),
            )
        })
}

fn status_name(outcome: DeliveryOutcome) -> &'static str {
    match outcome {
        DeliveryOutcome::Succeeded => "succeeded",
        DeliveryOutcome::Failed => "failed",
        DeliveryOutcome::DeadLettered => "dead_lettered",
        DeliveryOutcome::Cancelled => "cancelled",
    }
}

/// An attempt as the API shows it.
pub fn view(delivery: &WebhookDelivery) -> Value {
    json!({
        "event_id": delivery.event_id,
        "subscription_id": delivery.subscription_id,
        "event_type": delivery.event_type,
        "attempt": delivery.attempt,
        "attempted_at": iso_millis(delivery.attempted_at),
        "status": status_name(delivery.outcome),
        "status_code": delivery.status_code,
        "latency_ms": delivery.latency_ms,
        "error": delivery.error,
        "next_attempt_at": delivery.next_attempt_at.map(iso_millis),
    })
}

/// The `attempts` key of an attempt as [`view`] shows it (to merge instances' pages).
fn view_key(item: &Value) -> Option<String> {
    let attempted_at = parse_timestamp(&item["attempted_at"]).ok()?;
    Some(attempt_key_of(
        item["subscription_id"].as_str()?,
        attempted_at,
        item["event_id"].as_str()?,
        i32::try_from(item["attempt"].as_i64()?).ok()?,
    ))
}

/// `/webhooks.deliveries.list {subscription_id, status?, event_id?, since?, until?, cursor?,
/// page_size?}`: the subscription's attempts, newest first; 404 for an unknown subscription.
pub async fn list(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<ListDeliveries>,
) -> Result<Response, ApiError> {
    let ApiRequest { body, headers, .. } = request;
    let CheckedList {
        filter,
        position,
        size,
    } = body.check()?;
    let tables = state.tables()?;
    let log = &tables.delivery_log;
    if Queries::is_forwarded(&headers) {
        // Another instance merges: answer from this instance's partitions.
        let (candidates, total) = local_candidates(
            &log.queries,
            &log.stores,
            &filter,
            position.as_ref(),
            size + 1,
        )?;
        let candidates = candidates
            .into_iter()
            .map(|(key, delivery)| (key, view(&delivery)))
            .collect();
        let (candidates, more) = cut(candidates, position.as_ref(), size);
        return Ok(Json(assemble(candidates, position.as_ref(), more, total)).into_response());
    }
    let subscriptions = tables.webhook_subscriptions.loaded()?;
    if subscriptions.get(&filter.subscription_id).is_none() {
        return Err(ApiError::not_found(
            "webhook subscription",
            &filter.subscription_id,
        ));
    }
    let request = serde_json::to_value(&body)
        .map_err(|error| ApiError::internal("the list request", error))?;
    let answers = match fan_out_post(&log.client, &log.queries, LIST_PATH, &request, &headers).await
    {
        Ok(answers) => answers,
        // An instance's own error answer (503 while it restores, ...) is the answer.
        Err(response) => return Ok(response),
    };
    let mut candidates = Vec::new();
    let mut total = 0;
    let mut more = false;
    for answer in answers {
        let page: Page<Value> = serde_json::from_value(answer)
            .map_err(|error| ApiError::internal("merging instance answers", error))?;
        total += page.pagination_data.total;
        more |= match Position::order(position.as_ref()) {
            ScanOrder::Descending => page.pagination_data.previous_cursor.is_some(),
            ScanOrder::Ascending => page.pagination_data.next_cursor.is_some(),
        };
        for item in page.data {
            let key = view_key(&item).ok_or_else(|| {
                ApiError::internal("merging instance answers", "an attempt without its fields")
            })?;
            candidates.push((key, item));
        }
    }
    let (candidates, more_here) = cut(candidates, position.as_ref(), size);
    Ok(Json(assemble(
        candidates,
        position.as_ref(),
        more || more_here,
        total,
    ))
    .into_response())
}

/// Candidates (from any number of partitions) in the walk's order, without repeats, cut to
/// `size`; true if there were more.
fn cut(
    mut candidates: Vec<(String, Value)>,
    position: Option<&Position>,
    size: usize,
) -> (Vec<(String, Value)>, bool) {
    candidates.sort_by(|left, right| left.0.cmp(&right.0));
    candidates.dedup_by(|left, right| left.0 == right.0);
    if Position::order(position) == ScanOrder::Descending {
        candidates.reverse();
    }
    let more = candidates.len() > size;
    candidates.truncate(size);
    (candidates, more)
}

/// A page from candidates in the walk's order (newest first, or oldest first when paging
/// back), `more` saying whether the walk would go on.
fn assemble(
    mut candidates: Vec<(String, Value)>,
    position: Option<&Position>,
    more: bool,
    total: u64,
) -> Page<Value> {
    let first = |candidates: &[(String, Value)]| candidates.first().map(|(key, _)| key.clone());
    let last = |candidates: &[(String, Value)]| candidates.last().map(|(key, _)| key.clone());
    let (previous, next) = match position {
        None => (
            None,
            more.then(|| last(&candidates))
                .flatten()
                .map(Position::After),
        ),
        Some(Position::After(cursor) | Position::From(cursor)) => {
            let previous = match (first(&candidates), position) {
                (Some(key), _) => Position::Before(key),
                // Empty: the page before ends with the cursor's attempt (After) or just
                // before it (From).
                (None, Some(Position::After(_))) => Position::Before(format!("{cursor}\u{0}")),
                (None, _) => Position::Before(cursor.clone()),
            };
            (
                Some(previous),
                more.then(|| last(&candidates))
                    .flatten()
                    .map(Position::After),
            )
        }
        Some(Position::Before(cursor)) => {
            candidates.reverse();
            (
                more.then(|| first(&candidates))
                    .flatten()
                    .map(Position::Before),
                Some(
                    last(&candidates)
                        .map(Position::After)
                        .unwrap_or_else(|| Position::From(cursor.clone())),
                ),
            )
        }
    };
    Page {
        data: candidates.into_iter().map(|(_, item)| item).collect(),
        pagination_data: PaginationData {
            previous_cursor: previous.map(|position| encode_cursor(&position)),
            next_cursor: next.map(|position| encode_cursor(&position)),
            total,
        },
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redeliver {
    subscription_id: String,
    event_id: Option<String>,
}

/// `/webhooks.redeliver {subscription_id, event_id?}`: 202 with the events asked to be sent
/// again (`{redelivering, event_ids}`): the one dead-lettered event named, or every one of
/// the subscription. 404 for an unknown subscription or event, 409 for an event that is not
/// dead-lettered or a subscription that is not subscribed.
pub async fn redeliver(
    State(state): State<Arc<AdminState>>,
    request: ApiRequest<Redeliver>,
) -> Result<Response, ApiError> {
    let ApiRequest {
        body,
        trace,
        headers,
    } = request;
    let tables = state.tables()?;
    let subscription = tables
        .webhook_subscriptions
        .loaded()?
        .get(&body.subscription_id)
        .ok_or_else(|| ApiError::not_found("webhook subscription", &body.subscription_id))?;
    if subscription.status != SubscriptionStatus::Subscribed {
        return Err(ApiError::conflict(format!(
            "webhook subscription {} is unsubscribed: subscribe it again first (/webhooks.update with status Subscribed), then redeliver",
            subscription.id
        )));
    }
    // Every dead letter written before this request counts (the sender may have written it
    // a moment ago).
    let dead_letters = tables
        .dead_letters
        .read_to_end(&tables.dead_letter_ends)
        .await?;
    let mut events: Vec<WebhookEvent> = match &body.event_id {
        Some(event_id) => match dead_letters.get(event_id) {
            Some(event) if event.subscription_id == subscription.id => vec![event],
            Some(_) => return Err(event_not_found(event_id, &subscription.id)),
            None => {
                let asked = json!({
                    "subscription_id": subscription.id,
                    "event_id": event_id,
                    "page_size": 1,
                });
                let answers = match fan_out_post(
                    &tables.delivery_log.client,
                    &tables.delivery_log.queries,
                    LIST_PATH,
                    &asked,
                    &headers,
                )
                .await
                {
                    Ok(answers) => answers,
                    Err(response) => return Ok(response),
                };
                let in_the_log = answers.iter().any(|answer| {
                    answer["data"]
                        .as_array()
                        .is_some_and(|data| !data.is_empty())
                });
                return Err(if in_the_log {
                    ApiError::conflict(format!(
                        "webhook event {event_id} is not dead-lettered (it is in the delivery log, still being delivered or delivered): only dead-lettered events can be redelivered"
                    ))
                } else {
                    event_not_found(event_id, &subscription.id)
                });
            }
        },
        None => dead_letters
            .entries()
            .into_iter()
            .map(|(_, event)| event)
            .filter(|event| event.subscription_id == subscription.id)
            .collect(),
    };
    events.sort_by(|left, right| (left.created_at, &left.id).cmp(&(right.created_at, &right.id)));

    let topic = &tables.events;
    let now = now_millis();
    let envelope = Envelope::ingested(&topic.component, now, trace.as_ref());
    let mut framed = Vec::with_capacity(events.len());
    for event in &events {
        let copy = WebhookEvent {
            redelivery_requested_at: Some(now),
            ..event.clone()
        };
        let value = topic
            .serde
            .encode(&copy)
            .map_err(|error| ApiError::internal("encoding a redelivery request", error))?;
        let placement =
            eddy_webhooks::event_placement(&event.subscription_id, event.ordering_key.as_deref());
        framed.push((event.id.as_str(), value, placement));
    }
    let records = framed
        .iter()
        .map(|(id, value, placement)| OutgoingRecord {
            topic: &topic.topic,
            key: id,
            value: Some(value.clone()),
            placement: Placement::By(placement),
            envelope: &envelope,
        })
        .collect();
    topic
        .writer
        .send_all(records)
        .await
        .map_err(ApiError::write_failed)?;
    tracing::info!(
        subscription = %subscription.id,
        events = events.len(),
        "redelivery requested"
    );
    let event_ids: Vec<&str> = events.iter().map(|event| event.id.as_str()).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "redelivering": events.len(), "event_ids": event_ids })),
    )
        .into_response())
}

fn event_not_found(event_id: &str, subscription_id: &str) -> ApiError {
    ApiError::not_found(
        "webhook event",
        &format!("{event_id} of subscription {subscription_id}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str) -> (String, Value) {
        (key.to_owned(), json!(key))
    }

    fn cursor(position: Option<&String>) -> Option<Position> {
        position.map(|cursor| decode_cursor(cursor).expect("a cursor"))
    }

    #[test]
    fn pages_link_forward_and_back() {
        let (candidates, more) = cut(vec![item("c"), item("a"), item("b")], None, 2);
        assert!(more);
        let first = assemble(candidates, None, more, 3);
        assert_eq!(first.data, [json!("a"), json!("b")]);
        assert!(first.pagination_data.previous_cursor.is_none());
        let next = cursor(first.pagination_data.next_cursor.as_ref());
        assert_eq!(next, Some(Position::After("b".to_owned())));

        let (candidates, more) = cut(vec![item("c")], next.as_ref(), 2);
        let second = assemble(candidates, next.as_ref(), more, 3);
        assert_eq!(second.data, [json!("c")]);
        assert!(second.pagination_data.next_cursor.is_none());
        let back = cursor(second.pagination_data.previous_cursor.as_ref());
        assert_eq!(back, Some(Position::Before("c".to_owned())));

        let (candidates, more) = cut(vec![item("a"), item("b")], back.as_ref(), 2);
        let previous = assemble(candidates, back.as_ref(), more, 3);
        assert_eq!(previous.data, [json!("a"), json!("b")], "newest first");
        assert!(previous.pagination_data.previous_cursor.is_none());
        assert_eq!(
            cursor(previous.pagination_data.next_cursor.as_ref()),
            Some(Position::After("b".to_owned()))
        );
    }

    #[test]
    fn empty_pages_still_lead_back_to_the_cursor() {
        let after = Position::After("b".to_owned());
        let page = assemble(Vec::new(), Some(&after), false, 0);
        assert_eq!(
            cursor(page.pagination_data.previous_cursor.as_ref()),
            Some(Position::Before("b\u{0}".to_owned())),
            "the page before includes b"
        );
        let before = Position::Before("b".to_owned());
        let page = assemble(Vec::new(), Some(&before), false, 0);
        assert_eq!(
            cursor(page.pagination_data.next_cursor.as_ref()),
            Some(Position::From("b".to_owned())),
            "the page after starts at b"
        );
        assert!(page.pagination_data.previous_cursor.is_none());
    }

    #[test]
    fn statuses_are_lowercase_and_others_are_refused() {
        assert_eq!(
            outcome_named("dead_lettered").ok(),
            Some(DeliveryOutcome::DeadLettered)
        );
        let error = outcome_named("DEAD_LETTERED").expect_err("uppercase");
        assert!(
            error
                .message
                .starts_with("status: 'DEAD_LETTERED' is not a delivery status"),
            "{}",
            error.message
        );
        for (name, outcome) in STATUSES {
            assert_eq!(status_name(outcome), name);
        }
    }

    #[test]
    fn the_view_shows_times_as_iso_and_its_key_can_be_rebuilt() {
        let delivery = WebhookDelivery {
            event_id: "e1".to_owned(),
            subscription_id: "s1".to_owned(),
            event_type: "tag.updated".to_owned(),
            attempt: 3,
            attempted_at: 1_763_800_000_123,
            outcome: DeliveryOutcome::Failed,
            status_code: Some(503),
            latency_ms: Some(40),
            error: Some("HTTP 503".to_owned()),
            next_attempt_at: Some(1_763_800_300_123),
        };
        let shown = view(&delivery);
        assert_eq!(
            shown,
            json!({
                "event_id": "e1",
                "subscription_id": "s1",
                "event_type": "tag.updated",
                "attempt": 3,
                "attempted_at": "2025-11-22T08:26:40.123Z",
                "status": "failed",
                "status_code": 503,
                "latency_ms": 40,
                "error": "HTTP 503",
                "next_attempt_at": "2025-11-22T08:31:40.123Z",
            })
        );
        assert_eq!(
            view_key(&shown),
            Some(crate::delivery_log::attempt_key(&delivery))
        );
    }
}
