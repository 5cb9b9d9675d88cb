//! Paging through more conversations than Airy Core's 2,000-hit cap, forward and back, with
//! opaque position cursors.

use eddy_e2e_tests::{ActionEndpoint, Core, Platform, contact_message, poll_answer};
use serde_json::{Value, json};

const CONVERSATIONS: usize = 2_100;
const PAGE: usize = 100;

#[tokio::test(flavor = "multi_thread")]
async fn pages_go_past_two_thousand_and_back() {
    let platform = Platform::provisioned("pagination", 3).await;
    let endpoint = ActionEndpoint::start().await;
    let core = Core::start(&platform).await;
    let source = core
        .register_source(&platform, "gateway", &endpoint.url)
        .await;
    let ingest = platform
        .api(&core.source_api)
        .with_token(Some(&source.token));
    let base = 1_763_800_000_000_i64;
    for batch in 0..3 {
        let messages: Vec<Value> = (batch * 700..(batch + 1) * 700)
            .map(|n| contact_message(&format!("+49176{n:05}"), &format!("m{n}"), base + n as i64))
            .collect();
        ingest
            .call("/sources.webhook", json!({ "messages": messages }))
            .await
            .expect(200);
    }
    let api = platform.api(&core.communication);
    poll_answer(
        &api,
        "every conversation listed",
        "/conversations.list",
        json!({}),
        |list| (list["pagination_data"]["total"] == CONVERSATIONS).then_some(()),
    )
    .await;

    let mut pages: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = json!({"page_size": PAGE});
        if let Some(cursor) = &cursor {
            request["cursor"] = Value::String(cursor.clone());
        }
        let page = api.call("/conversations.list", request).await.expect(200);
        assert_eq!(page["pagination_data"]["total"], CONVERSATIONS);
        cursor = page["pagination_data"]["next_cursor"]
            .as_str()
            .map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            break;
        }
        assert!(pages.len() < 100, "paging does not end");
    }
    assert_eq!(pages.len(), CONVERSATIONS / PAGE);
    assert!(
        pages[0]["pagination_data"]["previous_cursor"].is_null(),
        "the first page has no previous page"
    );
    let sent_at: Vec<String> = pages
        .iter()
        .flat_map(|page| page["data"].as_array().cloned().unwrap_or_default())
        .map(|conversation| {
            conversation["last_message"]["sent_at"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        sent_at.len(),
        CONVERSATIONS,
        "every conversation once, past 2,000"
    );
    assert!(
        sent_at.windows(2).all(|pair| pair[0] > pair[1]),
        "newest activity first, no repeats"
    );

    // previous_cursor of a page leads to exactly the page before it.
    for index in [1, 10, 20] {
        let previous = pages[index]["pagination_data"]["previous_cursor"]
            .as_str()
            .expect("previous cursor");
        let back = api
            .call(
                "/conversations.list",
                json!({"page_size": PAGE, "cursor": previous}),
            )
            .await
            .expect(200);
        // Compare ids: unread counts may still be settling while the test pages.
        let ids = |page: &Value| -> Vec<Value> {
            page["data"]
                .as_array()
                .map(|data| data.iter().map(|item| item["id"].clone()).collect())
                .unwrap_or_default()
        };
        assert_eq!(ids(&back), ids(&pages[index - 1]), "back from page {index}");
        assert_eq!(
            back["pagination_data"]["previous_cursor"].is_null(),
            index == 1,
            "only the first page lacks a previous page"
        );
    }
}
