//! Outbound webhooks end to end (issue #6): the admin service, the webhook publisher and the
//! webhook sender as processes on the real stack, delivering to a real receiver process.
//!
//! Changes are tags written to the tags topic (each `tag.updated`), which need no other
//! component. Retry schedules, maximum ages and timeouts are shortened through the sender's
//! settings.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use eddy_e2e_tests::receiver::{
    Delivery, Receiver, Script, verify_deliveries_with_standard_webhooks,
};
use eddy_e2e_tests::{Api, Component, DEADLINE, Platform, START_TIMEOUT};
use serde_json::{Value, json};

/// The admin service, the publisher and one sender, ready.
struct Webhooks {
    admin: Component,
    /// Kept running for the test's length; never called.
    _publisher: Component,
    sender: Component,
}

/// Sender settings for tests: quick retries, a short timeout.
const QUICK_RETRIES: &[(&str, &str)] = &[
    ("EDDY_WEBHOOK_ALLOW_LOOPBACK", "true"),
    ("EDDY_WEBHOOK_RETRY_SCHEDULE", "0s,200ms,400ms,800ms"),
    ("EDDY_WEBHOOK_RETRY_JITTER", "0.1"),
    ("EDDY_WEBHOOK_TIMEOUT", "2s"),
    ("EDDY_STATIC_MEMBERSHIP", "true"),
];

impl Webhooks {
    async fn start(platform: &Platform, sender_env: &[(&str, &str)]) -> Self {
        let mut admin = platform.start(
            "eddy-admin",
            "admin-0",
            &[("EDDY_WEBHOOK_ALLOW_LOOPBACK", "true")],
        );
        let mut publisher = platform.start("eddy-webhook-publisher", "publisher-0", &[]);
        let mut sender = platform.start("eddy-webhook-sender", "sender-0", sender_env);
        admin.wait_ready(START_TIMEOUT).await;
        publisher.wait_ready(START_TIMEOUT).await;
        sender.wait_ready(START_TIMEOUT).await;
        Webhooks {
            admin,
            _publisher: publisher,
            sender,
        }
    }

    /// Subscribes `url` to `events` with `extra` fields; the subscription and its secret.
    async fn subscribe(
        &self,
        platform: &Platform,
        url: &str,
        events: &[&str],
        extra: Value,
    ) -> (String, String) {
        let mut body = json!({"url": url, "events": events});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let created = platform
            .api(&self.admin)
            .call("/webhooks.subscribe", body)
            .await
            .expect(201);
        (
            created["id"].as_str().expect("id").to_owned(),
            created["signing_secret"]
                .as_str()
                .expect("secret")
                .to_owned(),
        )
    }
}

/// Every attempt the delivery log shows for `subscription_id` (all pages), newest first.
async fn attempts(api: &Api, subscription_id: &str, filter: Value) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"subscription_id": subscription_id, "page_size": 100});
        if let Some(filter) = filter.as_object() {
            body.as_object_mut().expect("object").extend(filter.clone());
        }
        if let Some(cursor) = &cursor {
            body["cursor"] = json!(cursor);
        }
        let page = api
            .call("/webhooks.deliveries.list", body)
            .await
            .expect(200);
        all.extend(page["data"].as_array().expect("data").iter().cloned());
        match page["pagination_data"]["next_cursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => return all,
        }
    }
}

/// Polls the delivery log until `accept` holds.
async fn wait_for_attempts(
    api: &Api,
    subscription_id: &str,
    filter: Value,
    what: &str,
    mut accept: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let found = attempts(api, subscription_id, filter.clone()).await;
        if accept(&found) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the log has {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tags(prefix: &str, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|index| (format!("{prefix}-{index:04}"), format!("{prefix} {index}")))
        .collect()
}

fn body(delivery: &Delivery) -> Value {
    serde_json::from_str(&delivery.body).expect("a JSON body")
}

#[tokio::test]
async fn a_failing_receiver_gets_the_event_until_it_acknowledges_and_every_attempt_is_logged() {
    let platform = Platform::provisioned("webhooks_retry", 3).await;
    let stack = Webhooks::start(&platform, QUICK_RETRIES).await;
    let receiver = Receiver::start_binary(env!("CARGO_BIN_EXE_webhook-receiver"));
    let admin = platform.api(&stack.admin);

    // A change from before the subscription is not sent.
    admin
        .call(
            "/tags.create",
            json!({"name": "before", "color": "tag-red"}),
        )
        .await
        .expect(201);
    receiver
        .script("flaky", Script::statuses([500, 500]).then(200))
        .await;
    let (subscription_id, secret) = stack
        .subscribe(
            &platform,
            &receiver.url("flaky"),
            &["tag.updated"],
            json!({"headers": {"x-team": "support"}}),
        )
        .await;
    let tag = admin
        .call("/tags.create", json!({"name": "vip", "color": "tag-blue"}))
        .await
        .expect(201);
    let tag_id = tag["id"].as_str().expect("tag id");

    let deliveries = receiver
        .wait_for(
            "flaky",
            |deliveries| deliveries.iter().any(Delivery::acknowledged),
            DEADLINE,
        )
        .await;
    let answered: Vec<u16> = deliveries
        .iter()
        .map(|delivery| delivery.answered)
        .collect();
    assert_eq!(
        answered,
        vec![500, 500, 200],
        "three attempts: {deliveries:#?}"
    );
    let ids: BTreeSet<&str> = deliveries
        .iter()
        .map(|delivery| delivery.id.as_deref().expect("webhook-id"))
        .collect();
    assert_eq!(ids.len(), 1, "one event, one id on every attempt");
    let event = body(&deliveries[2]);
    assert_eq!(event["type"], "tag.updated");
    assert_eq!(event["payload"]["id"], tag_id);
    assert_eq!(event["payload"]["name"], "vip");
    assert_eq!(event["id"].as_str(), deliveries[2].id.as_deref());
    assert!(
        event["created_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );
    assert_eq!(
        deliveries[2].headers.get("x-team").map(String::as_str),
        Some("support")
    );
    verify_deliveries_with_standard_webhooks(&secret, &deliveries);

    let log = wait_for_attempts(
        &admin,
        &subscription_id,
        json!({}),
        "three attempts",
        |log| log.len() == 3,
    )
    .await;
    let outcomes: Vec<(i64, &str, i64)> = log
        .iter()
        .map(|attempt| {
            (
                attempt["attempt"].as_i64().expect("attempt"),
                attempt["status"].as_str().expect("status"),
                attempt["status_code"].as_i64().expect("status code"),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (3, "succeeded", 200),
            (2, "failed", 500),
            (1, "failed", 500)
        ],
        "newest first: {log:#?}"
    );
    assert!(log[1]["next_attempt_at"].is_string(), "{:#?}", log[1]);
    assert!(log.iter().all(|attempt| attempt["latency_ms"].is_i64()));
    let expected = [
        format!(
            "eddy_webhook_deliveries_total{{outcome=\"failed\",subscription=\"{subscription_id}\"}} 2"
        ),
        format!(
            "eddy_webhook_deliveries_total{{outcome=\"succeeded\",subscription=\"{subscription_id}\"}} 1"
        ),
        format!("eddy_webhook_attempts_total{{subscription=\"{subscription_id}\"}} 3"),
        format!(
            "eddy_webhook_delivery_latency_seconds_count{{subscription=\"{subscription_id}\"}} 3"
        ),
        format!("eddy_webhook_event_to_ack_seconds_count{{subscription=\"{subscription_id}\"}} 1"),
        // Refreshed every 2 s; nothing is pending any more.
        format!("eddy_webhook_queue_depth{{subscription=\"{subscription_id}\"}} 0"),
        format!("eddy_webhook_oldest_pending_age_seconds{{subscription=\"{subscription_id}\"}} 0"),
    ];
    let deadline = Instant::now() + DEADLINE;
    loop {
        let metrics = reqwest::get(format!("{}/metrics", stack.sender.admin_url()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        let missing: Vec<&String> = expected
            .iter()
            .filter(|line| !metrics.contains(line.as_str()))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sender's metrics lack {missing:?}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary = receiver.summary("flaky").await;
    assert_eq!(summary.acknowledged, 1);
    assert_eq!(summary.duplicate_acknowledgements, 0);
    assert!(
        receiver
            .received("flaky")
            .await
            .iter()
            .all(|delivery| body(delivery)["payload"]["name"] != "before"),
        "a change older than the subscription was sent"
    );
}

#[tokio::test]
async fn kill_9_of_the_sender_during_a_burst_loses_nothing() {
    let platform = Platform::provisioned("webhooks_kill9", 4).await;
    let mut stack = Webhooks::start(&platform, QUICK_RETRIES).await;
    let receiver = Receiver::start_binary(env!("CARGO_BIN_EXE_webhook-receiver"));
    stack
        .subscribe(
            &platform,
            &receiver.url("burst"),
            &["tag.updated"],
            json!({}),
        )
        .await;

    // Without a crash: every event once.
    platform.write_tags(&tags("calm", 300)).await;
    receiver
        .wait_for(
            "burst",
            |deliveries| acknowledged_ids(deliveries).len() >= 300,
            DEADLINE,
        )
        .await;
    let calm = receiver.summary("burst").await;
    assert_eq!(calm.distinct_acknowledged_ids, 300);
    assert_eq!(calm.duplicate_acknowledgements, 0, "no crash, no duplicate");
    println!(
        "300 events without a crash: latency p50 {:?} ms, p99 {:?} ms",
        calm.latency_ms.p50, calm.latency_ms.p99
    );

    // kill -9 in the middle of 1,000 more.
    platform.write_tags(&tags("burst", 1000)).await;
    receiver
        .wait_for(
            "burst",
            |deliveries| acknowledged_ids(deliveries).len() >= 500,
            DEADLINE,
        )
        .await;
    stack.sender.process.kill_9();
    let at_kill = receiver.summary("burst").await.distinct_acknowledged_ids;
    stack.sender = platform.restart(&stack.sender);
    stack.sender.wait_ready(START_TIMEOUT).await;
    receiver
        .wait_for(
            "burst",
            |deliveries| acknowledged_ids(deliveries).len() >= 1300,
            DEADLINE,
        )
        .await;
    let summary = receiver.summary("burst").await;
    println!(
        "kill -9 with {at_kill} of 1,300 events acknowledged: all {} acknowledged, {} duplicate acknowledgements",
        summary.distinct_acknowledged_ids, summary.duplicate_acknowledgements
    );
    assert_eq!(summary.distinct_acknowledged_ids, 1300);
    // Only the deliveries in flight at the kill may come twice (the sender's in-flight limit).
    assert!(
        summary.duplicate_acknowledgements <= 256,
        "{} duplicates",
        summary.duplicate_acknowledgements
    );
}

/// Sender settings for the rebalance test: dynamic membership, so a stopping sender leaves the
/// group at once (a static member's partitions would wait out the session timeout).
const REBALANCING: &[(&str, &str)] = &[
    ("EDDY_WEBHOOK_ALLOW_LOOPBACK", "true"),
    ("EDDY_WEBHOOK_RETRY_SCHEDULE", "0s,200ms,400ms,800ms"),
    ("EDDY_WEBHOOK_TIMEOUT", "5s"),
    ("EDDY_STATIC_MEMBERSHIP", "false"),
];

/// How many attempts a sender made, from its metrics.
async fn attempts_made(sender: &Component) -> u64 {
    let metrics = reqwest::get(format!("{}/metrics", sender.admin_url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    metrics
        .lines()
        .filter(|line| line.starts_with("eddy_webhook_attempts_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn rebalancing_senders_send_every_event_once() {
    let platform = Platform::provisioned("webhooks_rebalance", 4).await;
    let mut stack = Webhooks::start(&platform, REBALANCING).await;
    let receiver = Receiver::start_binary(env!("CARGO_BIN_EXE_webhook-receiver"));
    // Slow answers keep deliveries under way whenever a partition moves, longer than its next
    // owner takes to start on it.
    receiver
        .script(
            "moving",
            Script::always(200).delayed(Duration::from_secs(2)),
        )
        .await;
    stack
        .subscribe(
            &platform,
            &receiver.url("moving"),
            &["tag.updated"],
            json!({}),
        )
        .await;
    const EVENTS: usize = 240;
    platform.write_tags(&tags("moving", EVENTS)).await;
    let acknowledged =
        |count: usize| move |deliveries: &[Delivery]| acknowledged_ids(deliveries).len() >= count;
    receiver
        .wait_for("moving", acknowledged(32), DEADLINE)
        .await;

    // A second sender joins: the partitions are revoked and shared out.
    let mut second = platform.start("eddy-webhook-sender", "sender-1", REBALANCING);
    second.wait_ready(START_TIMEOUT).await;
    let before_leaving = receiver.summary("moving").await.distinct_acknowledged_ids;
    receiver
        .wait_for(
            "moving",
            acknowledged(before_leaving as usize + 32),
            DEADLINE,
        )
        .await;
    let second_attempts = attempts_made(&second).await;

    // The first one stops: its partitions move to the second.
    stack.sender.process.terminate();
    let status = stack.sender.process.wait_for_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let at_leaving = receiver.summary("moving").await.distinct_acknowledged_ids;
    receiver
        .wait_for("moving", acknowledged(EVENTS), DEADLINE)
        .await;
    let summary = receiver.summary("moving").await;
    println!(
        "2 rebalances: {before_leaving} of {EVENTS} acknowledged when the second sender was ready, \
         {at_leaving} when the first had stopped; the second made {second_attempts} attempts \
         while both ran; {} requests, {} duplicate acknowledgements",
        summary.requests, summary.duplicate_acknowledgements
    );
    assert!(
        (at_leaving as usize) < EVENTS,
        "the partitions moved while deliveries were left to make"
    );
    assert!(second_attempts > 0, "the second sender took partitions");
    assert_eq!(summary.distinct_acknowledged_ids, EVENTS as u64);
    // Not even a call cut off by the stopping sender: a closing partition waits for its calls
    // under way and their attempts in the log before its next owner may start.
    assert_eq!(
        summary.requests, EVENTS as u64,
        "a rebalance sends nothing twice"
    );
    assert_eq!(summary.duplicate_acknowledgements, 0);
}

fn acknowledged_ids(deliveries: &[Delivery]) -> BTreeSet<String> {
    deliveries
        .iter()
        .filter(|delivery| delivery.acknowledged())
        .filter_map(|delivery| delivery.id.clone())
        .collect()
}

#[tokio::test]
async fn events_past_their_maximum_age_are_dead_lettered_and_redelivered_on_request() {
    let platform = Platform::provisioned("webhooks_dead_letters", 3).await;
    let mut settings = QUICK_RETRIES.to_vec();
    settings.push(("EDDY_WEBHOOK_MAX_AGE", "1500ms"));
    settings.retain(|(key, _)| *key != "EDDY_WEBHOOK_RETRY_SCHEDULE");
    settings.push((
        "EDDY_WEBHOOK_RETRY_SCHEDULE",
        "0s,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
    ));
    let stack = Webhooks::start(&platform, &settings).await;
    let admin = platform.api(&stack.admin);
    let mut receiver = Receiver::start_binary(env!("CARGO_BIN_EXE_webhook-receiver"));
    let url = receiver.url("down");
    let (subscription_id, _) = stack
        .subscribe(&platform, &url, &["tag.updated"], json!({}))
        .await;
    receiver.kill();

    platform.write_tags(&tags("lost", 3)).await;
    let dead = wait_for_attempts(
        &admin,
        &subscription_id,
        json!({"status": "dead_lettered"}),
        "three dead letters",
        |log| log.len() == 3,
    )
    .await;
    assert!(
        dead.iter().all(|attempt| attempt["error"]
            .as_str()
            .is_some_and(|error| error.contains("connect"))),
        "{dead:#?}"
    );
    let failed = attempts(&admin, &subscription_id, json!({"status": "failed"})).await;
    assert!(!failed.is_empty(), "retried before giving up");

    receiver.restart();
    let redelivered = admin
        .call(
            "/webhooks.redeliver",
            json!({"subscription_id": subscription_id}),
        )
        .await
        .expect(202);
    assert_eq!(redelivered["redelivering"], 3, "{redelivered}");
    let deliveries = receiver
        .wait_for(
            "down",
            |deliveries| acknowledged_ids(deliveries).len() == 3,
            DEADLINE,
        )
        .await;
    let dead_ids: BTreeSet<String> = dead
        .iter()
        .map(|attempt| attempt["event_id"].as_str().expect("event id").to_owned())
        .collect();
    assert_eq!(
        acknowledged_ids(&deliveries),
        dead_ids,
        "same ids on redelivery"
    );
    wait_for_attempts(
        &admin,
        &subscription_id,
        json!({"status": "succeeded"}),
        "three successes",
        |log| log.len() == 3,
    )
    .await;
}

#[tokio::test]
async fn a_hanging_receiver_does_not_slow_another_subscription() {
    let platform = Platform::provisioned("webhooks_isolation", 3).await;
    let mut settings = QUICK_RETRIES.to_vec();
    settings.retain(|(key, _)| *key != "EDDY_WEBHOOK_TIMEOUT");
    settings.extend([
        ("EDDY_WEBHOOK_TIMEOUT", "30s"),
        ("EDDY_SHUTDOWN_GRACE", "60s"),
        ("EDDY_WEBHOOK_CONCURRENCY", "4"),
    ]);
    let stack = Webhooks::start(&platform, &settings).await;
    let receiver = Receiver::start_binary(env!("CARGO_BIN_EXE_webhook-receiver"));
    receiver.script("stuck", Script::hang()).await;
    stack
        .subscribe(
            &platform,
            &receiver.url("stuck"),
            &["tag.updated"],
            json!({}),
        )
        .await;
    stack
        .subscribe(
            &platform,
            &receiver.url("healthy"),
            &["tag.updated"],
            json!({}),
        )
        .await;

    platform.write_tags(&tags("busy", 100)).await;
    let healthy = receiver
        .wait_for(
            "healthy",
            |deliveries| acknowledged_ids(deliveries).len() == 100,
            DEADLINE,
        )
        .await;
    let stuck = receiver.received("stuck").await;
    assert!(
        stuck.len() <= 4,
        "the hanging receiver holds at most its concurrency: {}",
        stuck.len()
    );
    let latency = receiver.summary("healthy").await.latency_ms;
    println!(
        "healthy receiver beside a hanging one: 100 events, latency p50 {:?} ms, p99 {:?} ms",
        latency.p50, latency.p99
    );
    // The hanging calls time out after 30 s; the healthy receiver got everything long before.
    let last = healthy
        .iter()
        .map(|delivery| delivery.received_at_ms)
        .max()
        .unwrap_or(0);
    let first = healthy
        .iter()
        .map(|delivery| delivery.received_at_ms)
        .min()
        .unwrap_or(0);
    assert!(
        last - first < 10_000,
        "100 deliveries took {} ms",
        last - first
    );
}

#[tokio::test]
async fn unsubscribing_mid_retry_stops_delivery() {
    let platform = Platform::provisioned("webhooks_unsubscribe", 3).await;
    let mut settings = QUICK_RETRIES.to_vec();
    settings.retain(|(key, _)| *key != "EDDY_WEBHOOK_RETRY_SCHEDULE");
    settings.push((
        "EDDY_WEBHOOK_RETRY_SCHEDULE",
        "0s,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
    ));
    let stack = Webhooks::start(&platform, &settings).await;
    let admin = platform.api(&stack.admin);
    let receiver = Receiver::start_binary(env!("CARGO_BIN_EXE_webhook-receiver"));
    receiver.script("failing", Script::always(503)).await;
    let (subscription_id, _) = stack
        .subscribe(
            &platform,
            &receiver.url("failing"),
            &["tag.updated"],
            json!({}),
        )
        .await;
    platform.write_tags(&tags("retried", 1)).await;
    receiver.wait_for_count("failing", 2, DEADLINE).await;

    admin
        .call("/webhooks.unsubscribe", json!({"id": subscription_id}))
        .await
        .expect(200);
    let log = wait_for_attempts(
        &admin,
        &subscription_id,
        json!({}),
        "the cancellation",
        |log| log.iter().any(|attempt| attempt["status"] == "cancelled"),
    )
    .await;
    let made: Vec<&Value> = log
        .iter()
        .filter(|attempt| attempt["status"] != "cancelled")
        .collect();
    let received = receiver.received("failing").await;
    assert_eq!(
        received.len(),
        made.len(),
        "every call the receiver got is in the log, and none came after the cancellation: {log:#?}"
    );
    assert_eq!(
        log[0]["status"], "cancelled",
        "the cancellation is the last entry: {log:#?}"
    );
    let by_attempt: BTreeMap<i64, &str> = log
        .iter()
        .map(|attempt| {
            (
                attempt["attempt"].as_i64().expect("attempt"),
                attempt["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(by_attempt.len(), log.len(), "one entry per attempt number");
}
