//! Outbound delivery through the source-api: retries on 5xx, failures recorded with their
//! error, resending failed messages only, and `Idempotency-Key` on send.

use std::time::Duration;

use eddy_e2e_tests::{
    ActionEndpoint, Core, Platform, RegisteredSource, check_openapi, contact_message,
    openapi_document, poll_answer, verify_with_standard_webhooks,
};
use serde_json::{Value, json};

/// A core with one conversation; returns it with the conversation id.
async fn core_with_conversation(
    test: &str,
    endpoint: &ActionEndpoint,
) -> (Platform, Core, RegisteredSource, String) {
    let platform = Platform::provisioned(test, 3).await;
    let core = Core::start(&platform).await;
    let source = core
        .register_source(&platform, "gateway", &endpoint.url)
        .await;
    platform
        .api(&core.source_api)
        .with_token(Some(&source.token))
        .call(
            "/sources.webhook",
            json!({"messages": [contact_message("+4917600001", "m1", 1_763_800_000_000)]}),
        )
        .await
        .expect(200);
    let api = platform.api(&core.communication);
    let conversation_id = poll_answer(
        &api,
        "the conversation",
        "/conversations.list",
        json!({}),
        |list| list["data"][0]["id"].as_str().map(str::to_owned),
    )
    .await;
    (platform, core, source, conversation_id)
}

async fn message_state(
    platform: &Platform,
    core: &Core,
    conversation_id: &str,
    message_id: &Value,
    state: &str,
) -> Value {
    let api = platform.api(&core.communication);
    poll_answer(
        &api,
        &format!("message {message_id} {state}"),
        "/messages.list",
        json!({"conversation_id": conversation_id}),
        |list| {
            list["data"]
                .as_array()?
                .iter()
                .find(|message| message["id"] == *message_id && message["delivery_state"] == state)
                .cloned()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_failing_twice_gets_three_calls_and_accepts_one() {
    let endpoint = ActionEndpoint::start().await;
    endpoint.answer_next(&[500, 500]);
    let (platform, core, _source, conversation_id) =
        core_with_conversation("delivery-retries", &endpoint).await;
    let api = platform.api(&core.communication);
    let sent = api
        .call(
            "/messages.send",
            json!({"conversation_id": conversation_id, "message": {"text": "retry me"}}),
        )
        .await
        .expect(200);
    message_state(&platform, &core, &conversation_id, &sent["id"], "delivered").await;
    let calls = endpoint.calls();
    let answered: Vec<u16> = calls.iter().map(|call| call.answered).collect();
    assert_eq!(answered, [500, 500, 200], "three attempts, one accepted");
    let ids: Vec<_> = calls
        .iter()
        .map(|call| call.headers["webhook-id"].clone())
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] == pair[1]),
        "retries keep the webhook-id: {ids:?}"
    );
    // Nothing more arrives: the delivered message is not sent again.
    assert!(
        endpoint
            .wait_for_calls(4, Duration::from_secs(2))
            .await
            .is_none(),
        "sent again"
    );
    check_openapi(
        &platform.exchanges,
        "eddy-communication",
        &openapi_document("communication"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_message_fails_with_its_error_and_only_failed_messages_are_resent() {
    let endpoint = ActionEndpoint::start().await;
    endpoint.answer_next(&[422]);
    let (platform, core, source, conversation_id) =
        core_with_conversation("delivery-resend", &endpoint).await;
    let api = platform.api(&core.communication);
    let sent = api
        .call(
            "/messages.send",
            json!({"conversation_id": conversation_id, "message": {"text": "refused"}}),
        )
        .await
        .expect(200);
    message_state(&platform, &core, &conversation_id, &sent["id"], "failed").await;
    // The error is metadata of the message, a separate record: it shows a moment later.
    let failed = poll_answer(
        &api,
        "the failure's error",
        "/messages.list",
        json!({"conversation_id": conversation_id}),
        |list| {
            list["data"]
                .as_array()?
                .iter()
                .find(|message| {
                    message["id"] == sent["id"] && message["metadata"]["error"].is_string()
                })
                .cloned()
        },
    )
    .await;
    let error = failed["metadata"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("422"),
        "the error says what the endpoint answered: {failed}"
    );
    assert_eq!(endpoint.calls().len(), 1, "a 4xx is not retried");

    let resent = api
        .call("/messages.resend", json!({"message_id": sent["id"]}))
        .await
        .expect(200);
    assert_eq!(resent["delivery_state"], "pending");
    message_state(&platform, &core, &conversation_id, &sent["id"], "delivered").await;
    // The cleared error is a metadata tombstone, a record of another topic than the message's:
    // the view may show it a moment after the delivery.
    poll_answer(
        &api,
        "the delivered message without the old error",
        "/messages.list",
        json!({"conversation_id": conversation_id}),
        |list| {
            list["data"]
                .as_array()?
                .iter()
                .find(|message| {
                    message["id"] == sent["id"]
                        && message["delivery_state"] == "delivered"
                        && message["metadata"].get("error").is_none()
                })
                .cloned()
        },
    )
    .await;
    let calls = endpoint.calls();
    assert_eq!(calls.len(), 2);
    assert_ne!(
        calls[0].headers["webhook-id"], calls[1].headers["webhook-id"],
        "a resend is a new delivery"
    );
    verify_with_standard_webhooks(&source.signing_secret, &calls);

    let again = api
        .call("/messages.resend", json!({"message_id": sent["id"]}))
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.body["code"], "conflict");
    let unknown = api
        .call("/messages.resend", json!({"message_id": "no-such-message"}))
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    check_openapi(
        &platform.exchanges,
        "eddy-communication",
        &openapi_document("communication"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_sends_a_message_once() {
    let endpoint = ActionEndpoint::start().await;
    let (platform, core, _source, conversation_id) =
        core_with_conversation("delivery-idempotency", &endpoint).await;
    let api = platform.api(&core.communication);
    let request =
        json!({"conversation_id": conversation_id, "message": {"text": "once"}}).to_string();
    let first = api
        .call_raw(
            "/messages.send",
            request.clone().into_bytes(),
            &[("Idempotency-Key", "order-42")],
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    message_state(
        &platform,
        &core,
        &conversation_id,
        &first.body["id"],
        "delivered",
    )
    .await;
    let second = api
        .call_raw(
            "/messages.send",
            request.into_bytes(),
            &[("Idempotency-Key", "order-42")],
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["id"], first.body["id"], "the same message");
    let different =
        json!({"conversation_id": conversation_id, "message": {"text": "other"}}).to_string();
    let conflict = api
        .call_raw(
            "/messages.send",
            different.into_bytes(),
            &[("Idempotency-Key", "order-42")],
        )
        .await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert_eq!(conflict.body["code"], "idempotency_conflict");
    let list = api
        .call(
            "/messages.list",
            json!({"conversation_id": conversation_id}),
        )
        .await
        .expect(200);
    assert_eq!(
        list["pagination_data"]["total"], 2,
        "one inbound and one sent message: {list}"
    );
    assert!(
        endpoint
            .wait_for_calls(2, Duration::from_secs(2))
            .await
            .is_none(),
        "sent once"
    );
    check_openapi(
        &platform.exchanges,
        "eddy-communication",
        &openapi_document("communication"),
    );
}
