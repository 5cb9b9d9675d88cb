//! Two communication instances share the partitions and answer every query identically:
//! single conversations are forwarded to their owner, lists ask both and merge. When an
//! instance dies, the survivor answers 503 with Retry-After for what it cannot reach, never
//! 500 and never a partial list.

use eddy_e2e_tests::{
    ActionEndpoint, Core, Platform, START_TIMEOUT, check_openapi, contact_message,
    openapi_document, poll_answer,
};
use serde_json::{Value, json};

const CONVERSATIONS: usize = 200;

/// Every page of `/conversations.list` at `page_size`, as returned.
async fn all_pages(api: &eddy_e2e_tests::Api, page_size: u64) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = json!({"page_size": page_size});
        if let Some(cursor) = &cursor {
            request["cursor"] = Value::String(cursor.clone());
        }
        let page = api.call("/conversations.list", request).await.expect(200);
        cursor = page["pagination_data"]["next_cursor"]
            .as_str()
            .map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_answer_every_query_identically() {
    let platform = Platform::provisioned("scaling", 6).await;
    let endpoint = ActionEndpoint::start().await;
    let core = Core::start(&platform).await;
    let mut second = platform.start("eddy-communication", "communication-1", &[]);
    second.wait_ready(START_TIMEOUT).await;
    let source = core
        .register_source(&platform, "gateway", &endpoint.url)
        .await;
    let messages: Vec<Value> = (0..CONVERSATIONS)
        .map(|n| {
            contact_message(
                &format!("+49176{n:05}"),
                &format!("m{n}"),
                1_763_800_000_000 + n as i64,
            )
        })
        .collect();
    platform
        .api(&core.source_api)
        .with_token(Some(&source.token))
        .call("/sources.webhook", json!({ "messages": messages }))
        .await
        .expect(200);

    let first_api = platform.api(&core.communication);
    let second_api = platform.api(&second);
    for api in [&first_api, &second_api] {
        // Settled: every conversation listed with its unread count.
        poll_answer(
            api,
            "every conversation listed and counted",
            "/conversations.list",
            json!({"filters": {"unread_only": true}}),
            |list| (list["pagination_data"]["total"] == CONVERSATIONS).then_some(()),
        )
        .await;
    }
    // Both instances must own partitions, or this test would prove nothing about routing.
    let owners = |component: &eddy_e2e_tests::Component| {
        component.process.output().matches("tasks running").count()
    };
    assert!(
        owners(&core.communication) > 0 && owners(&second) > 0,
        "both instances run tasks"
    );

    let first_pages = all_pages(&first_api, 50).await;
    let second_pages = all_pages(&second_api, 50).await;
    assert_eq!(first_pages.len(), 4);
    assert_eq!(
        first_pages, second_pages,
        "the same pages from both instances"
    );
    let ids: Vec<String> = first_pages
        .iter()
        .flat_map(|page| page["data"].as_array().cloned().unwrap_or_default())
        .map(|conversation| conversation["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids.len(), CONVERSATIONS);
    for id in &ids {
        let request = json!({"conversation_id": id});
        let on_first = first_api
            .call("/conversations.info", request.clone())
            .await
            .expect(200);
        let on_second = second_api
            .call("/conversations.info", request.clone())
            .await
            .expect(200);
        assert_eq!(on_first, on_second, "conversation {id}");
        let messages_first = first_api
            .call("/messages.list", request.clone())
            .await
            .expect(200);
        let messages_second = second_api.call("/messages.list", request).await.expect(200);
        assert_eq!(messages_first, messages_second, "messages of {id}");
        assert_eq!(messages_first["pagination_data"]["total"], 1);
    }
    check_openapi(
        &platform.exchanges,
        "eddy-communication",
        &openapi_document("communication"),
    );

    // The second instance dies: until the group rebalances, the survivor cannot answer for
    // the dead one's partitions, and says so.
    second.process.kill_9();
    let list = first_api.call("/conversations.list", json!({})).await;
    assert_eq!(
        list.status, 503,
        "a partial list is never served: {}",
        list.body
    );
    assert!(
        list.headers.contains_key("retry-after"),
        "{:?}",
        list.headers
    );
    assert!(
        list.body["code"].is_string() && list.body["message"].is_string(),
        "{}",
        list.body
    );
    let mut statuses = std::collections::BTreeMap::new();
    for id in &ids {
        let answer = first_api
            .call("/conversations.info", json!({"conversation_id": id}))
            .await;
        assert!(
            answer.status == 200 || answer.status == 503,
            "{} {}",
            answer.status,
            answer.body
        );
        if answer.status == 503 {
            assert!(answer.headers.contains_key("retry-after"));
        }
        *statuses.entry(answer.status).or_insert(0) += 1;
    }
    assert!(
        statuses.get(&503).copied().unwrap_or(0) > 0,
        "the dead instance's conversations answer 503: {statuses:?}"
    );
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > 0,
        "the survivor's own conversations answer 200: {statuses:?}"
    );
}
