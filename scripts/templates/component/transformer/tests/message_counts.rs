//! The __NAME__ transformer as a real process against the real local Kafka and schema registry
//! (`scripts/stack start`; the test fails if the stack cannot start): messages in, one
//! `__NAME__.message_count` metadata record per counted message out, on the conversation's
//! partition, each message counted once however often it is written.

use std::collections::HashMap;
use std::time::Duration;

use __LIB__::MESSAGE_COUNT;
use eddy_schemas::catalog::{MESSAGES, METADATA};
use eddy_schemas::{AvroSerde, DeliveryState, Message, Metadata};
use eddy_streams::partitioner::partition_for_key;
use eddy_testkit::{
    ComponentCommand, ComponentProcess, free_port, wait_for_http_status,
};

mod support;

use support::{CONVERGENCE, PARTITIONS, Provisioned, STARTUP, message};

impl Provisioned {
    /// Starts the component and waits until it is ready.
    async fn start_component(&self) -> ComponentProcess {
        let admin_port = free_port();
        let instance = format!("__NAME__-{admin_port}");
        let process = ComponentCommand::for_program(
            &self.namespace,
            &instance,
            env!("CARGO_BIN_EXE___CRATE__"),
        )
        .env("EDDY_ADMIN_ADDRESS", format!("127.0.0.1:{admin_port}"))
        .env("EDDY_STATE_DIR", self.namespace.state_dir(&instance))
        .env("EDDY_INSTANCE_ID", &instance)
        .env("EDDY_TOPIC_NAMESPACE", self.namespace.prefix())
        .env("EDDY_SHUTDOWN_GRACE", "5s")
        .spawn();
        wait_for_http_status(
            &format!("http://127.0.0.1:{admin_port}/ready"),
            200,
            STARTUP,
        )
        .await;
        process
    }
}


#[tokio::test(flavor = "multi_thread")]
async fn counts_each_message_of_a_conversation_once() {
    let provisioned = Provisioned::new("__NAME__-counts", &[MESSAGES, METADATA]).await;
    let mut component = provisioned.start_component().await;

    let first = message("conversation-a", 1, true);
    let rewritten = Message {
        delivery_state: DeliveryState::Failed,
        updated_at: Some(first.sent_at + 500),
        ..first.clone()
    };
    provisioned
        .write_messages(&[
            first,
            message("conversation-a", 2, true),
            rewritten,
            message("conversation-a", 3, true),
            message("conversation-b", 1, true),
        ])
        .await;

    let metadata_topic = provisioned.topic(METADATA);
    let serde = AvroSerde::<Metadata>::for_topic(&provisioned.registry, &metadata_topic)
        .await
        .expect("metadata serde");
    let decode = |value: &[u8]| serde.decode(value).expect("a metadata record");
    // The counts each conversation was given, in order, with the partitions they went to.
    let counts = |records: &[eddy_testkit::ConsumedRecord]| {
        let mut counts: HashMap<String, Vec<(String, i32)>> = HashMap::new();
        for record in records {
            let metadata = decode(record.value.as_deref().expect("not a tombstone"));
            assert_eq!(metadata.key, MESSAGE_COUNT);
            counts
                .entry(metadata.subject)
                .or_default()
                .push((metadata.value, record.partition));
        }
        counts
    };
    let records = provisioned
        .namespace
        .consume_until(&metadata_topic, CONVERGENCE, |records| {
            // Until both reach their count (or pass it: the assertions below say so).
            let counts = counts(records);
            let reached = |subject: &str, wanted: u64| {
                counts
                    .get(subject)
                    .and_then(|values| values.last())
                    .is_some_and(|(count, _)| count.parse::<u64>().is_ok_and(|n| n >= wanted))
            };
            reached("conversation:conversation-a", 3) && reached("conversation:conversation-b", 1)
        })
        .await
        .unwrap_or_else(|timeout| {
            panic!(
                "no counts of 3 and 1: {timeout}; read {:?}; component log:\n{}",
                counts(&timeout.records),
                component.output()
            )
        });

    let counts = counts(&records);
    for (conversation, expected) in [("conversation-a", 3), ("conversation-b", 1)] {
        let partition = partition_for_key(conversation.as_bytes(), PARTITIONS);
        let expected: Vec<(String, i32)> = (1..=expected)
            .map(|count| (count.to_string(), partition))
            .collect();
        assert_eq!(
            counts[&format!("conversation:{conversation}")],
            expected,
            "{conversation}: one record per counted message, on the conversation's partition"
        );
    }

    component.terminate();
    let status = component.wait_for_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "exited with {status} after SIGTERM; log:\n{}",
        component.output()
    );
}
