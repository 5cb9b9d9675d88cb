//! The `webhook-receiver` process on its own (no Kafka): scripted answers, records, summary
//! counts, hanging, kill and restart, and the signature check fed from its records.

use std::time::{Duration, Instant};

use eddy_e2e_tests::receiver::{
    Delivery, Receiver, Script, verify_deliveries_with_standard_webhooks,
};
use eddy_webhooks::SigningSecret;
use serde_json::json;

fn receiver() -> Receiver {
    Receiver::start_binary(env!("CARGO_BIN_EXE_webhook-receiver"))
}

/// An event body as the sender posts it, created `age` ago.
fn event(id: &str, age: Duration) -> String {
    let created_at = chrono::Utc::now()
        - chrono::Duration::from_std(age).unwrap_or_else(|_| chrono::Duration::zero());
    json!({
        "id": id,
        "type": "message.created",
        "created_at": created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "payload": {"text": "hello"},
    })
    .to_string()
}

async fn post(client: &reqwest::Client, url: &str, id: &str, body: String) -> u16 {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", "1700000000")
        .header("webhook-signature", "v1,c2lnbmF0dXJl")
        .header("x-custom", "custom value")
        .timeout(Duration::from_secs(10))
        .body(body)
        .send()
        .await
        .expect("the receiver answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn scripted_answers_records_and_summary() {
    let receiver = receiver();
    let client = reqwest::Client::new();
    let url = receiver.url("orders");
    receiver
        .script("orders", Script::statuses([500, 500]).then(200))
        .await;

    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(
            post(
                &client,
                &url,
                "evt-1",
                event("evt-1", Duration::from_secs(1)),
            )
            .await,
        );
    }
    assert_eq!(answers, [500, 500, 200]);

    let received = receiver.received("orders").await;
    assert_eq!(received.len(), 3);
    assert_eq!(
        received
            .iter()
            .map(|delivery| delivery.answered)
            .collect::<Vec<_>>(),
        [500, 500, 200]
    );
    let first = &received[0];
    assert_eq!(first.id.as_deref(), Some("evt-1"));
    assert_eq!(first.timestamp.as_deref(), Some("1700000000"));
    assert_eq!(first.signature.as_deref(), Some("v1,c2lnbmF0dXJl"));
    assert_eq!(
        first.headers.get("x-custom").map(String::as_str),
        Some("custom value")
    );
    assert_eq!(first.json()["id"], "evt-1");
    assert!(
        received
            .windows(2)
            .all(|pair| pair[0].received_monotonic_ms <= pair[1].received_monotonic_ms)
    );

    let summary = receiver.summary("orders").await;
    assert_eq!(summary.requests, 3);
    assert_eq!(summary.acknowledged, 1);
    assert_eq!(summary.unanswered, 0);
    assert_eq!(summary.distinct_ids, 1);
    assert_eq!(summary.distinct_acknowledged_ids, 1);
    assert_eq!(summary.duplicate_acknowledgements, 0);
    assert_eq!(summary.latency_ms.count, 3);
    let p50 = summary.latency_ms.p50.expect("a latency");
    assert!((1_000..60_000).contains(&p50), "latency p50 {p50} ms");

    // The script ran out: the default status (200) acknowledges evt-1 again, a duplicate.
    assert_eq!(
        post(&client, &url, "evt-1", event("evt-1", Duration::ZERO)).await,
        200
    );
    assert_eq!(
        post(&client, &url, "evt-2", event("evt-2", Duration::ZERO)).await,
        200
    );
    // A body without created_at counts, but not for latency.
    assert_eq!(
        post(&client, &url, "evt-3", "not json".to_owned()).await,
        200
    );
    let summary = receiver.summary("orders").await;
    assert_eq!(summary.requests, 6);
    assert_eq!(summary.acknowledged, 4);
    assert_eq!(summary.distinct_ids, 3);
    assert_eq!(summary.distinct_acknowledged_ids, 3);
    assert_eq!(summary.duplicate_acknowledgements, 1);
    assert_eq!(summary.latency_ms.count, 5);
    let max = summary.latency_ms.max.expect("a latency");
    let min = summary.latency_ms.min.expect("a latency");
    assert!(max >= p50 && min <= p50, "{:?}", summary.latency_ms);

    // Names are independent; a never-used name is empty.
    assert!(receiver.received("other").await.is_empty());
    assert_eq!(receiver.summary("other").await.requests, 0);

    // Always 503, then clearing the record.
    receiver.script("orders", Script::always(503)).await;
    assert_eq!(
        post(&client, &url, "evt-4", event("evt-4", Duration::ZERO)).await,
        503
    );
    receiver.clear("orders").await;
    assert!(receiver.received("orders").await.is_empty());
    assert_eq!(receiver.summary("orders").await.requests, 0);

    // A script with an impossible status is refused.
    let refused = client
        .put(format!("{}/_scripts/orders", receiver.base_url()))
        .json(&json!({"statuses": [42]}))
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 400);
}

#[tokio::test]
async fn a_hanging_name_holds_requests_while_others_answer() {
    let receiver = receiver();
    let client = reqwest::Client::new();
    receiver.script("stuck", Script::hang()).await;

    let hanging = {
        let client = client.clone();
        let url = receiver.url("stuck");
        tokio::spawn(async move {
            let started = Instant::now();
            let result = client
                .post(&url)
                .header("webhook-id", "evt-hang")
                .timeout(Duration::from_millis(300))
                .body(event("evt-hang", Duration::ZERO))
                .send()
                .await;
            (result, started.elapsed())
        })
    };
    // Once the hanging request is recorded, another name answers at once.
    let held = receiver
        .wait_for_count("stuck", 1, Duration::from_secs(10))
        .await;
    assert_eq!(held[0].answered, 0);
    let started = Instant::now();
    assert_eq!(
        post(
            &client,
            &receiver.url("free"),
            "evt-free",
            event("evt-free", Duration::ZERO)
        )
        .await,
        200
    );
    // Answered while the hanging request (300 ms client timeout) is still held.
    assert!(
        !hanging.is_finished(),
        "the hanging request ended before another name answered ({:?})",
        started.elapsed()
    );

    let (result, waited) = hanging.await.expect("the hanging request task");
    let error = result.expect_err("a hanging receiver never answers");
    assert!(error.is_timeout(), "{error}");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let summary = receiver.summary("stuck").await;
    assert_eq!(summary.requests, 1);
    assert_eq!(summary.acknowledged, 0);
    assert_eq!(summary.unanswered, 1);

    // A delayed answer takes at least the delay.
    receiver
        .script(
            "slow",
            Script::always(202).delayed(Duration::from_millis(200)),
        )
        .await;
    let started = Instant::now();
    assert_eq!(
        post(
            &client,
            &receiver.url("slow"),
            "evt-slow",
            event("evt-slow", Duration::ZERO)
        )
        .await,
        202
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    let slow = receiver.received("slow").await;
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0].answered, 202);
}

#[tokio::test]
async fn kill_and_restart_on_the_same_port() {
    let mut receiver = receiver();
    let client = reqwest::Client::new();
    let port = receiver.port();
    let url = receiver.url("hooks");
    receiver.script("hooks", Script::always(500)).await;
    assert_eq!(
        post(&client, &url, "evt-1", event("evt-1", Duration::ZERO)).await,
        500
    );

    receiver.kill();
    assert!(!receiver.is_running());
    let refused = client
        .post(&url)
        .timeout(Duration::from_secs(5))
        .body("{}")
        .send()
        .await;
    assert!(refused.is_err(), "a killed receiver answered: {refused:?}");

    receiver.restart();
    assert!(receiver.is_running());
    assert_eq!(receiver.port(), port);
    assert_eq!(receiver.url("hooks"), url);
    // A fresh process: no records, default script (200).
    assert!(receiver.received("hooks").await.is_empty());
    assert_eq!(
        post(&client, &url, "evt-1", event("evt-1", Duration::ZERO)).await,
        200
    );
    let deliveries = receiver
        .wait_for(
            "hooks",
            |deliveries| deliveries.iter().any(Delivery::acknowledged),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(deliveries.len(), 1);

    // Restarting a running receiver kills it first.
    receiver.restart();
    assert_eq!(receiver.port(), port);
    assert!(receiver.received("hooks").await.is_empty());
}

#[tokio::test]
async fn signatures_of_recorded_deliveries_verify() {
    let receiver = receiver();
    let client = reqwest::Client::new();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let signing = SigningSecret::parse(secret).expect("secret");
    for number in 0..3 {
        let id = format!("evt-{number}");
        let body = event(&id, Duration::ZERO);
        let timestamp = chrono::Utc::now().timestamp();
        let answer = client
            .post(receiver.url("signed"))
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signing.sign(&id, timestamp, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status(), 200);
    }
    let deliveries = receiver.received("signed").await;
    assert_eq!(deliveries.len(), 3);
    verify_deliveries_with_standard_webhooks(secret, &deliveries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_thousands_of_concurrent_deliveries_without_losing_one() {
    let receiver = receiver();
    let client = reqwest::Client::new();
    let url = receiver.url("bulk");
    let total = 4_000usize;
    let workers = 32usize;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            for number in (worker..total).step_by(workers) {
                let id = format!("evt-{number}");
                let status = post(&client, &url, &id, event(&id, Duration::ZERO)).await;
                assert_eq!(status, 200);
            }
        }));
    }
    for task in tasks {
        task.await.expect("a sender task");
    }
    let elapsed = started.elapsed();
    let rate = total as f64 / elapsed.as_secs_f64();
    println!("{total} deliveries in {elapsed:?}: {rate:.0}/s");
    let summary = receiver.summary("bulk").await;
    assert_eq!(summary.requests, total as u64);
    assert_eq!(summary.acknowledged, total as u64);
    assert_eq!(summary.distinct_acknowledged_ids, total as u64);
    assert_eq!(summary.duplicate_acknowledgements, 0);
    assert_eq!(summary.latency_ms.count, total as u64);
    // How fast it is, is the webhook benchmark's business (tests/e2e/benches/webhooks.rs).
}
