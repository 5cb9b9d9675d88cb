//! `communication-core`, the benchmark's Eddy side of the Kafka Streams comparison, computes the
//! reference's aggregate: per conversation the message count, the first sent time and the
//! newest message (by `sent_at`, then id), skipping tombstones; and answers it by key.

use std::time::Duration;

use eddy_e2e_tests::{DEADLINE, MessageWriter, Platform, START_TIMEOUT};
use eddy_schemas::catalog::MESSAGES;
use eddy_schemas::{DeliveryState, Message};
use eddy_testkit::poll_until;
use serde_json::{Value, json};

fn message(id: &str, conversation_id: &str, sent_at: i64, text: &str) -> Message {
    Message {
        id: id.to_owned(),
        conversation_id: conversation_id.to_owned(),
        channel_id: "channel-1".to_owned(),
        source: "sms".to_owned(),
        sender_id: "contact-1".to_owned(),
        source_recipient_id: None,
        source_message_id: Some(id.to_owned()),
        is_from_contact: true,
        delivery_state: DeliveryState::Delivered,
        content: json!({ "text": text }).to_string(),
        sent_at,
        updated_at: None,
        source_conversation_id: Some(conversation_id.to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregates_each_conversation_as_the_reference_does() {
    let platform = Platform::provisioned("communication-core", 2).await;
    let topic = platform.topic(MESSAGES);
    let writer = MessageWriter::new(&platform, "core-test").await;
    // Out of order on purpose: the newest message (by sent_at) comes second, and the last one
    // written is older than it.
    writer
        .write(&[
            message("m1", "conv-a", 2_000, "first"),
            message("m3", "conv-a", 9_000, "newest"),
            message("m2", "conv-a", 5_000, "middle"),
            message("m0", "conv-a", 1_000, "earliest, written last"),
            message("other", "conv-b", 3_000, "another conversation"),
        ])
        .await;
    // A tombstone changes nothing (the reference skips them).
    writer.delete("m3", "conv-a").await;

    let application_id = format!("{}core-test", platform.namespace.prefix());
    let mut core = platform.start(
        "communication-core",
        "core-0",
        &[
            ("EDDY_APPLICATION_ID", application_id.as_str()),
            ("EDDY_INPUT_TOPIC", topic.as_str()),
        ],
    );
    core.wait_ready(START_TIMEOUT).await;
    let http = reqwest::Client::new();
    let get = |id: &str| {
        let request = http.get(format!("{}/conversations/{id}", core.base_url()));
        async move {
            let answer = request.send().await.ok()?;
            (answer.status() == 200).then_some(())?;
            answer.json::<Value>().await.ok()
        }
    };
    let conversation_a = poll_until("conv-a counted in full", DEADLINE, || async {
        get("conv-a")
            .await
            .filter(|aggregate| aggregate["message_count"] == 4)
    })
    .await;
    assert_eq!(conversation_a["conversation_id"], "conv-a");
    assert_eq!(conversation_a["channel_id"], "channel-1");
    assert_eq!(conversation_a["created_at"], 1_000, "{conversation_a}");
    assert_eq!(
        conversation_a["last_message"]["id"], "m3",
        "{conversation_a}"
    );
    assert_eq!(conversation_a["last_message"]["sent_at"], 9_000);
    let conversation_b =
        poll_until("conv-b counted", DEADLINE, || async { get("conv-b").await }).await;
    assert_eq!(conversation_b["message_count"], 1, "{conversation_b}");
    assert_eq!(conversation_b["last_message"]["id"], "other");
    let unknown = http
        .get(format!(
            "{}/conversations/no-such-conversation",
            core.base_url()
        ))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("answer");
    assert_eq!(unknown.status(), 404);
}
