//! The __NAME__ transformer as a real process against the real local Kafka and schema registry
//! (`scripts/stack start`; the test fails if the stack cannot start): messages in, one
//! `__NAME__.message_count` metadata record per counted message out, on the conversation's
//! partition, each message counted once however often it is written.

use std::collections::HashMap;
use std::time::Duration;

use __LIB__::MESSAGE_COUNT;
use eddy_schemas::catalog::{MESSAGES, METADATA};
use eddy_schemas::provision::provision;
use eddy_schemas::writer::{OutgoingRecord, Placement, RecordWriter};
use eddy_schemas::{
    AvroSerde, Catalog, CatalogArgs, DeliveryState, Message, Metadata, RegistryArgs,
    SchemaRegistry,
};
use eddy_service::envelope::Envelope;
use eddy_streams::partitioner::partition_for_key;
use eddy_testkit::{
    ComponentCommand, ComponentProcess, TestNamespace, free_port, wait_for_http_status,
};

const PARTITIONS: i32 = 3;
const STARTUP: Duration = Duration::from_secs(60);
const CONVERGENCE: Duration = Duration::from_secs(30);

/// A test namespace with the topics the component reads and writes, provisioned like
/// `eddy topics provision` does (topics created, schemas registered).
struct Provisioned {
    namespace: TestNamespace,
    catalog: Catalog,
    registry: SchemaRegistry,
}

impl Provisioned {
    async fn new(test_name: &str, datasets: &[&str]) -> Self {
        let namespace = TestNamespace::new(test_name);
        let mut catalog = Catalog::new(&CatalogArgs {
            namespace: namespace.prefix().to_owned(),
            partitions: PARTITIONS,
            replication_factor: None,
        });
        catalog.topics.retain(|topic| datasets.contains(&topic.dataset));
        let registry =
            SchemaRegistry::new(&RegistryArgs::new(&namespace.stack().schema_registry_url))
                .expect("registry client");
        let report = provision(&namespace.kafka(), &registry, &catalog, false)
            .await
            .expect("provisioning runs");
        assert!(report.is_clean(), "provisioning left {report:?}");
        Provisioned {
            namespace,
            catalog,
            registry,
        }
    }

    fn topic(&self, dataset: &str) -> String {
        self.catalog
            .name(dataset)
            .expect("in the catalog")
            .to_owned()
    }

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

    /// Writes messages as a connector does: keyed by message id, placed by conversation id.
    async fn write_messages(&self, messages: &[Message]) {
        let topic = self.topic(MESSAGES);
        let writer = RecordWriter::new(&self.namespace.kafka(), "__NAME__-test", &[&topic])
            .await
            .expect("writer");
        let serde = AvroSerde::<Message>::for_topic(&self.registry, &topic)
            .await
            .expect("message serde");
        let envelope = Envelope::originated("__NAME__-test");
        for message in messages {
            writer
                .send(OutgoingRecord {
                    topic: &topic,
                    key: &message.id,
                    value: Some(serde.encode(message).expect("encodes")),
                    placement: Placement::By(&message.conversation_id),
                    envelope: &envelope,
                })
                .await
                .expect("message written");
        }
    }
}

fn message(conversation_id: &str, number: i64) -> Message {
    Message {
        id: format!("{conversation_id}-message-{number}"),
        conversation_id: conversation_id.to_owned(),
        channel_id: "test-channel".to_owned(),
        source: "test-source".to_owned(),
        sender_id: "test-contact".to_owned(),
        source_recipient_id: None,
        source_message_id: None,
        is_from_contact: true,
        delivery_state: DeliveryState::Delivered,
        content: format!(r#"{{"text": "message {number}"}}"#),
        sent_at: 1_700_000_000_000 + number * 1_000,
        updated_at: None,
        source_conversation_id: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_each_message_of_a_conversation_once() {
    let provisioned = Provisioned::new("__NAME__-counts", &[MESSAGES, METADATA]).await;
    let mut component = provisioned.start_component().await;

    let first = message("conversation-a", 1);
    let rewritten = Message {
        delivery_state: DeliveryState::Failed,
        updated_at: Some(first.sent_at + 500),
        ..first.clone()
    };
    provisioned
        .write_messages(&[
            first,
            message("conversation-a", 2),
            rewritten,
            message("conversation-a", 3),
            message("conversation-b", 1),
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
