//! kill -9 of the communication service in the middle of ingest: restarted with its state dir
//! it is ready in under a second and nothing is missing. While it is away and while it starts,
//! its API answers 503 with Retry-After (or is not listening), never 500.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eddy_e2e_tests::{ActionEndpoint, Core, Platform, contact_message, poll_answer};
use serde_json::{Value, json};

const BATCHES: usize = 30;
const PER_BATCH: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_communication_service_restarts_in_under_a_second_with_nothing_missing() {
    let platform = Platform::provisioned("crash", 3).await;
    let endpoint = ActionEndpoint::start().await;
    let mut core = Core::start(&platform).await;
    let source = core
        .register_source(&platform, "gateway", &endpoint.url)
        .await;
    let ingest = platform
        .api(&core.source_api)
        .with_token(Some(&source.token));

    // Ingest in the background, batch after batch.
    let accepted = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let accepted = Arc::clone(&accepted);
        async move {
            let mut conversation_ids = Vec::new();
            for batch in 0..BATCHES {
                let messages: Vec<Value> = (0..PER_BATCH)
                    .map(|n| {
                        let k = batch * PER_BATCH + n;
                        contact_message(
                            &format!("+49176{k:05}"),
                            &format!("m{k}"),
                            1_763_800_000_000 + k as i64,
                        )
                    })
                    .collect();
                let answer = ingest
                    .call("/sources.webhook", json!({ "messages": messages }))
                    .await
                    .expect(200);
                for message in answer["messages"].as_array().cloned().unwrap_or_default() {
                    conversation_ids.push(
                        message["conversation_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            conversation_ids
        }
    });
    poll_answer(
        &platform.api(&core.communication),
        "some conversations processed",
        "/conversations.list",
        json!({}),
        |list| (list["pagination_data"]["total"].as_u64().unwrap_or(0) > 100).then_some(()),
    )
    .await;
    assert!(
        accepted.load(Ordering::SeqCst) < BATCHES,
        "the kill lands mid-ingest"
    );
    core.communication.process.kill_9();

    let restarted_at = Instant::now();
    core.communication = platform.restart(&core.communication);
    // Until it is ready, every answer is a 503 with Retry-After (or the port is not open
    // yet); ready means /ready says so and the list answers.
    let client = reqwest::Client::new();
    let url = format!("{}/conversations.list", core.communication.base_url());
    let ready_url = format!("{}/ready", core.communication.admin_url());
    let mut not_ready_answers = 0;
    let mut ready_at = None;
    let ready_after = loop {
        let ready = client
            .get(&ready_url)
            .send()
            .await
            .is_ok_and(|answer| answer.status() == 200);
        if ready && ready_at.is_none() {
            ready_at = Some(restarted_at.elapsed());
        }
        if let Ok(answer) = client
            .post(&url)
            .bearer_auth(eddy_e2e_tests::SYSTEM_TOKEN)
            .json(&json!({}))
            .send()
            .await
        {
            let status = answer.status().as_u16();
            if status == 200 && ready {
                break restarted_at.elapsed();
            }
            if status != 200 {
                let retry_after = answer.headers().contains_key("retry-after");
                let text = answer.text().await.unwrap_or_default();
                assert_eq!(status, 503, "while starting: {text}");
                assert!(retry_after);
                not_ready_answers += 1;
            }
        }
        assert!(
            restarted_at.elapsed() < Duration::from_secs(30),
            "not ready after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let ready_at = ready_at.unwrap_or(ready_after);
    println!(
        "restart: /ready after {ready_at:?}, queries answered after {ready_after:?} ({not_ready_answers} answers of 503 before)"
    );
    assert!(
        ready_at < Duration::from_secs(1),
        "ready in under a second, took {ready_at:?}:\n{}",
        core.communication.process.output()
    );

    let conversation_ids = writer.await.expect("ingest finished");
    assert_eq!(conversation_ids.len(), BATCHES * PER_BATCH);
    let api = platform.api(&core.communication);
    let deadline = Instant::now() + eddy_e2e_tests::DEADLINE;
    loop {
        let list = api.call("/conversations.list", json!({})).await;
        if list.status == 200 && list.body["pagination_data"]["total"] == BATCHES * PER_BATCH {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every conversation after the restart: {} {}\ncommunication log:\n{}",
            list.status,
            list.body["pagination_data"],
            core.communication.process.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &conversation_ids {
        let info = api
            .call("/conversations.info", json!({"conversation_id": id}))
            .await
            .expect(200);
        assert_eq!(
            info["metadata"]["unread_count"]
                .as_u64()
                .map(|count| count <= 1),
            Some(true)
        );
        let messages = api
            .call("/messages.list", json!({"conversation_id": id}))
            .await
            .expect(200);
        assert_eq!(
            messages["pagination_data"]["total"], 1,
            "conversation {id}: {messages}"
        );
    }
}
