//! What the tests of __NAME__ share: a test namespace with provisioned topics, sample messages,
//! and a way to write them into it as a connector does.

use std::time::Duration;

use eddy_schemas::catalog::MESSAGES;
use eddy_schemas::provision::provision;
use eddy_schemas::writer::{OutgoingRecord, Placement, RecordWriter};
use eddy_schemas::{
    AvroSerde, Catalog, CatalogArgs, DeliveryState, Message, RegistryArgs, SchemaRegistry,
};
use eddy_service::envelope::Envelope;
use eddy_testkit::TestNamespace;

pub const PARTITIONS: i32 = 3;
/// How long a started component may take to be ready.
pub const STARTUP: Duration = Duration::from_secs(60);
/// How long an outcome may take to show.
pub const CONVERGENCE: Duration = Duration::from_secs(30);

/// A test namespace with the topics the component uses, provisioned like
/// `eddy topics provision` does (topics created, schemas registered).
pub struct Provisioned {
    pub namespace: TestNamespace,
    pub catalog: Catalog,
    pub registry: SchemaRegistry,
}

impl Provisioned {
    pub async fn new(test_name: &str, datasets: &[&str]) -> Self {
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

    pub fn topic(&self, dataset: &str) -> String {
        self.catalog
            .name(dataset)
            .expect("in the catalog")
            .to_owned()
    }

    /// Writes messages as a connector does: keyed by message id, placed by conversation id.
    pub async fn write_messages(&self, messages: &[Message]) {
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

/// Message `number` of a conversation: `<conversation id>-message-<number>`, sent `number`
/// seconds after a fixed time, with the text `message <number>`.
pub fn message(conversation_id: &str, number: i64, from_contact: bool) -> Message {
    Message {
        id: format!("{conversation_id}-message-{number}"),
        conversation_id: conversation_id.to_owned(),
        channel_id: "test-channel".to_owned(),
        source: "test-source".to_owned(),
        sender_id: "test-sender".to_owned(),
        source_recipient_id: None,
        source_message_id: None,
        is_from_contact: from_contact,
        delivery_state: DeliveryState::Delivered,
        content: format!(r#"{{"text": "message {number}"}}"#),
        sent_at: 1_700_000_000_000 + number * 1_000,
        updated_at: None,
        source_conversation_id: None,
    }
}
