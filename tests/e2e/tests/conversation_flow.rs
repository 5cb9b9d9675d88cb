//! The conversational core end to end, with the real binaries: a message ingested through the
//! source-api becomes a conversation in the communication service with an unread count kept
//! by the unread-counter; tags and states show and filter; a reply is sent to the source's
//! action endpoint signed per Standard Webhooks and recorded as delivered.

use eddy_e2e_tests::{
    ActionEndpoint, Platform, START_TIMEOUT, check_openapi, openapi_document, poll_answer,
    verify_with_standard_webhooks,
};
use serde_json::{Value, json};

fn ingest_payload(source_message_id: &str, text: &str, sent_at: &str) -> Value {
    json!({"messages": [{
        "source_message_id": source_message_id,
        "source_conversation_id": "+4917600001",
        "source_channel_id": "+4930111",
        "source_sender_id": "+4917600001",
        "content": {"text": text},
        "from_contact": true,
        "sent_at": sent_at,
    }]})
}

fn only_conversation(list: &Value) -> Option<Value> {
    let data = list["data"].as_array()?;
    (data.len() == 1).then(|| data[0].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_flow_in_and_replies_flow_out() {
    let platform = Platform::provisioned("conversation-flow", 3).await;
    let endpoint = ActionEndpoint::start().await;
    let mut source_api = platform.start(
        "eddy-source-api",
        "source-api-0",
        &[("EDDY_ACTION_RETRY_BACKOFF", "100ms")],
    );
    let mut communication = platform.start("eddy-communication", "communication-0", &[]);
    let mut unread_counter = platform.start("eddy-unread-counter", "unread-counter-0", &[]);
    source_api.wait_ready(START_TIMEOUT).await;
    communication.wait_ready(START_TIMEOUT).await;
    unread_counter.wait_ready(START_TIMEOUT).await;
    let sources = platform.api(&source_api);
    let api = platform.api(&communication);

    let created = sources
        .call(
            "/sources.create",
            json!({"source_id": "sms-gateway", "name": "SMS gateway", "action_endpoint": endpoint.url}),
        )
        .await
        .expect(201);
    let token = created["token"]
        .as_str()
        .expect("a source token")
        .to_owned();
    let secret = created["signing_secret"]
        .as_str()
        .expect("a signing secret")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let channel = sources
        .call(
            "/sources.channels.create",
            json!({"source_id": "sms-gateway", "source_channel_id": "+4930111", "name": "Berlin line"}),
        )
        .await
        .expect(201);
    let channel_id = channel["id"].as_str().expect("channel id").to_owned();
    let ingest = sources.with_token(Some(&token));

    // A first message: one conversation, one unread message.
    let first = ingest_payload("m1", "Hello", "2026-11-22T10:00:00.000Z");
    ingest
        .call("/sources.webhook", first.clone())
        .await
        .expect(200);
    let conversation = poll_answer(
        &api,
        "a conversation with 1 unread",
        "/conversations.list",
        json!({}),
        |list| {
            only_conversation(list)
                .filter(|conversation| conversation["metadata"]["unread_count"] == 1)
        },
    )
    .await;
    let conversation_id = conversation["id"].as_str().expect("id").to_owned();
    assert_eq!(conversation["channel"]["id"], channel_id.as_str());
    assert_eq!(conversation["channel"]["metadata"]["name"], "Berlin line");
    assert_eq!(conversation["created_at"], "2026-11-22T10:00:00.000Z");
    assert_eq!(conversation["last_message"]["content"]["text"], "Hello");

    // The same payload again changes nothing; a second message makes two unread.
    ingest.call("/sources.webhook", first).await.expect(200);
    ingest
        .call(
            "/sources.webhook",
            ingest_payload("m2", "Anyone there?", "2026-11-22T10:01:00.000Z"),
        )
        .await
        .expect(200);
    poll_answer(
        &api,
        "2 unread",
        "/conversations.info",
        json!({"conversation_id": conversation_id}),
        |info| (info["metadata"]["unread_count"] == 2).then_some(()),
    )
    .await;
    let messages = api
        .call(
            "/messages.list",
            json!({"conversation_id": conversation_id}),
        )
        .await
        .expect(200);
    assert_eq!(
        messages["pagination_data"]["total"], 2,
        "re-ingesting made no duplicate: {messages}"
    );
    let texts: Vec<&str> = messages["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|message| message["content"]["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(texts, ["Anyone there?", "Hello"], "newest first");

    // Reading resets the count.
    api.call(
        "/conversations.mark-read",
        json!({"conversation_id": conversation_id}),
    )
    .await
    .expect(204);
    poll_answer(
        &api,
        "0 unread",
        "/conversations.info",
        json!({"conversation_id": conversation_id}),
        |info| (info["metadata"]["unread_count"] == 0).then_some(()),
    )
    .await;

    // Tags and states show in info and list, and filter.
    platform.write_tag("tag-vip", "VIP").await;
    // The communication service learns of the tag a moment after it is written.
    let deadline = std::time::Instant::now() + eddy_e2e_tests::DEADLINE;
    let tag_answer = loop {
        let answer = api
            .call(
                "/conversations.tag",
                json!({"conversation_id": conversation_id, "tag_id": "tag-vip"}),
            )
            .await;
        if answer.status != 404 || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(tag_answer.status, 204, "{}", tag_answer.body);
    api.call(
        "/conversations.set-state",
        json!({"conversation_id": conversation_id, "state": "CLOSED"}),
    )
    .await
    .expect(204);
    let info = poll_answer(
        &api,
        "tag and state",
        "/conversations.info",
        json!({"conversation_id": conversation_id}),
        |info| {
            (info["metadata"]["state"] == "CLOSED"
                && info["metadata"]["tags"].get("tag-vip").is_some())
            .then(|| info.clone())
        },
    )
    .await;
    assert!(
        info["metadata"]["contact"]["display_name"].is_string(),
        "{info}"
    );
    for (filters, expected) in [
        (json!({"tag_id": "tag-vip"}), 1),
        (json!({"tag_id": "tag-other"}), 0),
        (json!({"state": "CLOSED"}), 1),
        (json!({"state": "OPEN"}), 0),
        (json!({"channel_id": channel_id}), 1),
        (json!({"source": "sms-gateway"}), 1),
        (json!({"unread_only": true}), 0),
        // Two filters: the total is counted from the rows, not a stored count.
        (json!({"tag_id": "tag-vip", "state": "CLOSED"}), 1),
        (json!({"tag_id": "tag-vip", "state": "OPEN"}), 0),
    ] {
        let list = api
            .call("/conversations.list", json!({"filters": filters}))
            .await
            .expect(200);
        assert_eq!(
            list["data"].as_array().map(Vec::len),
            Some(expected),
            "filters {filters}: {list}"
        );
        assert_eq!(
            list["pagination_data"]["total"], expected,
            "filters {filters}: {list}"
        );
    }

    // Untagged: the tag's stored count goes back to 0 (and its key away), the others stay.
    api.call(
        "/conversations.untag",
        json!({"conversation_id": conversation_id, "tag_id": "tag-vip"}),
    )
    .await
    .expect(204);
    poll_answer(
        &api,
        "the tag's total back to 0",
        "/conversations.list",
        json!({"filters": {"tag_id": "tag-vip"}}),
        |list| (list["pagination_data"]["total"] == 0).then_some(()),
    )
    .await;
    let closed = api
        .call(
            "/conversations.list",
            json!({"filters": {"state": "CLOSED"}}),
        )
        .await
        .expect(200);
    assert_eq!(closed["pagination_data"]["total"], 1, "{closed}");

    // A reply goes out signed and comes back delivered.
    let sent = api
        .call(
            "/messages.send",
            json!({"conversation_id": conversation_id, "message": {"text": "On my way"}}),
        )
        .await
        .expect(200);
    assert_eq!(sent["delivery_state"], "pending");
    let calls = endpoint
        .wait_for_calls(1, eddy_e2e_tests::DEADLINE)
        .await
        .unwrap_or_else(|| {
            panic!(
                "no call to the action endpoint; source-api log:\n{}",
                source_api.process.output()
            )
        });
    let body: Value = serde_json::from_slice(&calls[0].body).expect("JSON call");
    assert_eq!(body["type"], "message.send");
    assert_eq!(body["payload"]["message"]["id"], sent["id"]);
    assert_eq!(
        body["payload"]["message"]["source_recipient_id"],
        "+4917600001"
    );
    assert_eq!(
        body["payload"]["conversation"]["source_channel_id"],
        "+4930111"
    );
    verify_with_standard_webhooks(&secret, &calls);
    let delivered = poll_answer(
        &api,
        "the reply delivered",
        "/messages.list",
        json!({"conversation_id": conversation_id}),
        |list| {
            list["data"]
                .as_array()?
                .iter()
                .find(|message| {
                    message["id"] == sent["id"] && message["delivery_state"] == "delivered"
                })
                .cloned()
        },
    )
    .await;
    assert_eq!(delivered["source_message_id"], "sm-1");
    assert_eq!(endpoint.calls().len(), 1, "sent exactly once");

    check_openapi(
        &platform.exchanges,
        "eddy-communication",
        &openapi_document("communication"),
    );
    check_openapi(
        &platform.exchanges,
        "eddy-source-api",
        &openapi_document("source-api"),
    );
    // Each service serves its document, without a token.
    for (component, folder) in [
        (&communication, "communication"),
        (&source_api, "source-api"),
    ] {
        let served: Value = reqwest::get(format!("{}/openapi.json", component.base_url()))
            .await
            .expect("the document is served")
            .json()
            .await
            .expect("JSON");
        let file: Value = serde_json::from_str(
            &std::fs::read_to_string(openapi_document(folder)).expect("the document file"),
        )
        .expect("JSON file");
        assert_eq!(served, file, "{folder} serves its openapi.json");
    }
}
