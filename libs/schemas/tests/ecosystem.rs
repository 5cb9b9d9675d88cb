//! Ecosystem check: what Eddy writes to Kafka is readable without Eddy. One record of every
//! entity is encoded by [`AvroSerde`] and produced to its catalog topic; the bytes consumed back
//! are decoded by `ecosystem/decode.py` with Python's fastavro (an independent Avro
//! implementation), which takes the writer schema from the registry by the id in each record's
//! Confluent frame. The decoded records must equal the entities' JSON form.
//!
//! Needs the local stack (started if down) and the Python tools (`scripts/python-tools`,
//! installed on first use); the test fails when either is missing.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use eddy_schemas::catalog::{self, Catalog, CatalogArgs};
use eddy_schemas::provision::provision;
use eddy_schemas::{
    AvroSerde, Channel, ConnectionState, DeliveryOutcome, DeliveryState, Entity, Message, Metadata,
    ReadReceipt, RegistryArgs, SchemaRegistry, Source, SubscriptionStatus, Tag, TagColor,
    ValueType, WebhookDelivery, WebhookEvent, WebhookSubscription,
};
use eddy_testkit::records::produce_with;
use eddy_testkit::{ConsumedRecord, TestNamespace, python_tools};
use rdkafka::producer::FutureProducer;
use serde_json::{Value, json};

const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);

/// The catalog settings as the CLI parses them, so the namespace goes through the real check.
#[derive(Debug, Parser)]
struct CatalogCli {
    #[command(flatten)]
    catalog: CatalogArgs,
}

/// One record Eddy wrote, and what an outside reader must find in it.
#[derive(Debug)]
struct Written {
    dataset: &'static str,
    topic: String,
    key: String,
    bytes: Vec<u8>,
    schema_id: u32,
    schema_name: &'static str,
    json: Value,
}

/// Writes entities the way components do: `AvroSerde` for the catalog topic, then Kafka.
struct Writer<'a> {
    catalog: &'a Catalog,
    registry: &'a SchemaRegistry,
    producer: FutureProducer,
    written: Vec<Written>,
}

impl Writer<'_> {
    async fn write<T: Entity>(&mut self, dataset: &'static str, key: &str, entity: &T) {
        let topic = self
            .catalog
            .topic(dataset)
            .unwrap_or_else(|| panic!("no catalog topic for {dataset}"));
        assert_eq!(
            topic.value.name,
            T::NAME,
            "the catalog declares another schema for {dataset}"
        );
        let serde = AvroSerde::<T>::for_topic(self.registry, &topic.name)
            .await
            .unwrap_or_else(|error| panic!("no serde for {}: {error}", topic.name));
        let bytes = serde
            .encode(entity)
            .unwrap_or_else(|error| panic!("encoding a {}: {error}", T::NAME));
        produce_with(&self.producer, &topic.name, key, &bytes, &[]).await;
        self.written.push(Written {
            dataset,
            topic: topic.name.clone(),
            key: key.to_owned(),
            bytes,
            schema_id: serde.schema_id(),
            schema_name: T::NAME,
            json: serde_json::to_value(entity)
                .unwrap_or_else(|error| panic!("{} as JSON: {error}", T::NAME)),
        });
    }
}

#[tokio::test]
async fn every_entity_written_by_eddy_is_read_by_fastavro_with_the_schema_from_the_registry() {
    let python = python_tools();
    let namespace = TestNamespace::new("ecosystem");
    CatalogCli::try_parse_from(["ecosystem", "--topic-namespace", namespace.prefix()])
        .unwrap_or_else(|error| {
            panic!("{:?} is not a topic namespace: {error}", namespace.prefix())
        });
    let catalog = Catalog::new(&CatalogArgs {
        namespace: namespace.prefix().to_owned(),
        partitions: 1,
        replication_factor: None,
    });
    let registry_url = namespace.stack().schema_registry_url.clone();
    let registry = SchemaRegistry::new(&RegistryArgs::new(&registry_url))
        .unwrap_or_else(|error| panic!("registry client: {error}"));
    let report = provision(&namespace.kafka(), &registry, &catalog, false)
        .await
        .unwrap_or_else(|error| panic!("provisioning failed: {error}"));
    assert!(report.is_clean(), "provisioning left work: {report:?}");

    let mut writer = Writer {
        catalog: &catalog,
        registry: &registry,
        producer: namespace.producer(),
        written: Vec::new(),
    };
    write_one_of_every_entity(&mut writer).await;
    let written = writer.written;

    let all_datasets: BTreeSet<&str> = catalog.topics.iter().map(|topic| topic.dataset).collect();
    let written_datasets: BTreeSet<&str> = written.iter().map(|record| record.dataset).collect();
    assert_eq!(
        written_datasets, all_datasets,
        "the check must write one record to every catalog topic"
    );

    let mut consumed: Vec<ConsumedRecord> = Vec::new();
    for record in &written {
        let read = namespace
            .consume_until(&record.topic, CONSUME_TIMEOUT, |records| {
                !records.is_empty()
            })
            .await
            .unwrap_or_else(|timeout| panic!("reading {}: {timeout}", record.topic));
        assert_eq!(
            read.len(),
            1,
            "{} holds other records: {read:?}",
            record.topic
        );
        assert_eq!(read[0].key_text(), record.key, "key on {}", record.topic);
        assert_eq!(
            read[0].value.as_deref(),
            Some(record.bytes.as_slice()),
            "value on {} is not what AvroSerde wrote",
            record.topic
        );
        consumed.extend(read);
    }

    let decoded = decode_with_fastavro(python, &registry_url, &consumed);
    assert_eq!(
        decoded.len(),
        written.len(),
        "decode.py answered {} records for {} sent: {decoded:?}",
        decoded.len(),
        written.len()
    );
    for (record, decoded) in written.iter().zip(&decoded) {
        assert_eq!(decoded["topic"], json!(record.topic), "{decoded}");
        assert_eq!(
            decoded["schema_name"],
            json!(record.schema_name),
            "the registry's schema {} for {} is another schema",
            decoded["schema_id"],
            record.topic
        );
        assert_eq!(
            decoded["schema_id"],
            json!(record.schema_id),
            "schema id in the frame on {}",
            record.topic
        );
        assert_eq!(
            decoded["value"], record.json,
            "fastavro read a {} on {} differently from what Eddy wrote",
            record.schema_name, record.topic
        );
    }
}

/// One realistic value of every entity, optionals set in some and empty in others.
async fn write_one_of_every_entity(writer: &mut Writer<'_>) {
    writer
        .write(
            catalog::MESSAGES,
            "msg-7f3a",
            &Message {
                id: "msg-7f3a".into(),
                conversation_id: "conv-19".into(),
                channel_id: "chan-sms-1".into(),
                source: "sms".into(),
                sender_id: "+4915112345678".into(),
                source_recipient_id: Some("+4930901820".into()),
                source_message_id: Some("SM5f0c2e".into()),
                is_from_contact: true,
                delivery_state: DeliveryState::Delivered,
                content: r#"{"text":"Grüße aus Köln 👋, see you at 10:30?"}"#.into(),
                sent_at: 1_763_700_000_123,
                updated_at: Some(1_763_700_002_999),
                source_conversation_id: None,
            },
        )
        .await;
    writer
        .write(
            catalog::CHANNELS,
            "chan-sms-1",
            &Channel {
                id: "chan-sms-1".into(),
                source: "sms".into(),
                source_channel_id: "+4930901820".into(),
                connection_state: ConnectionState::Connected,
                token_ref: Some("secret://sms-tokens/chan-sms-1".into()),
                connected_at: 1_700_000_000_001,
                name: None,
                image_url: None,
                metadata: None,
            },
        )
        .await;
    writer
        .write(
            catalog::METADATA,
            "contact:c-42/contact.display_name",
            &Metadata {
                subject: "contact:c-42".into(),
                key: "contact.display_name".into(),
                value: "Zoë Müller".into(),
                value_type: ValueType::Text,
                timestamp: 1_763_700_001_500,
            },
        )
        .await;
    writer
        .write(
            catalog::READ_RECEIPTS,
            "conv-19",
            &ReadReceipt {
                conversation_id: "conv-19".into(),
                read_at: 1_763_700_004_250,
            },
        )
        .await;
    writer
        .write(
            catalog::SOURCES,
            "src-acme",
            &Source {
                id: "src-acme".into(),
                name: Some("Acme chat".into()),
                image_url: None,
                action_endpoint: Some("https://chat.acme.example/eddy/actions".into()),
                token_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                    .into(),
                signing_secret_ref: None,
                created_at: 1_720_000_000_000,
            },
        )
        .await;
    writer
        .write(
            catalog::TAGS,
            "tag-vip",
            &Tag {
                id: "tag-vip".into(),
                name: "VIP".into(),
                color: TagColor::Purple,
            },
        )
        .await;
    writer
        .write(
            catalog::WEBHOOK_SUBSCRIPTIONS,
            "sub-crm",
            &WebhookSubscription {
                id: "sub-crm".into(),
                name: None,
                endpoint: "https://crm.example.com/hooks/eddy".into(),
                events: vec!["message.created".into(), "conversation.updated".into()],
                headers: [
                    ("x-team".to_owned(), "support".to_owned()),
                    ("x-tenant".to_owned(), "eu-1".to_owned()),
                ]
                .into(),
                status: SubscriptionStatus::Subscribed,
                secret_ref: Some("secret://webhooks/sub-crm".into()),
                subscribed_at: 1_750_000_000_777,
                max_attempts: Some(5),
                max_age_ms: None,
                previous_secret_ref: None,
                previous_secret_expires_at: None,
            },
        )
        .await;
    writer
        .write(
            catalog::WEBHOOK_EVENTS,
            "evt-msg-7f3a-v1-sub-crm",
            &WebhookEvent {
                id: "evt-msg-7f3a-v1-sub-crm".into(),
                subscription_id: "sub-crm".into(),
                event_type: "message.created".into(),
                created_at: 1_763_700_000_456,
                ordering_key: Some("conv-19".into()),
                payload: r#"{"id":"msg-7f3a","conversation_id":"conv-19"}"#.into(),
                redelivery_requested_at: None,
            },
        )
        .await;
    writer
        .write(
            catalog::WEBHOOK_DEAD_LETTERS,
            "evt-tag-9-v1-sub-crm",
            &WebhookEvent {
                id: "evt-tag-9-v1-sub-crm".into(),
                subscription_id: "sub-crm".into(),
                event_type: "tag.deleted".into(),
                created_at: 1_763_700_000_999,
                ordering_key: Some("tag-9".into()),
                payload: r#"{"id":"tag-9"}"#.into(),
                redelivery_requested_at: Some(1_763_700_100_000),
            },
        )
        .await;
    writer
        .write(
            catalog::WEBHOOK_DELIVERIES,
            "evt-msg-7f3a-v1-sub-crm/2",
            &WebhookDelivery {
                event_id: "evt-msg-7f3a-v1-sub-crm".into(),
                subscription_id: "sub-crm".into(),
                event_type: "message.created".into(),
                attempt: 2,
                attempted_at: 1_763_700_030_000,
                outcome: DeliveryOutcome::Failed,
                status_code: Some(503),
                latency_ms: Some(1_234),
                error: Some("Service Unavailable".into()),
                next_attempt_at: Some(1_763_700_090_000),
            },
        )
        .await;
}

/// Runs `ecosystem/decode.py` on the consumed records and returns its answer, one JSON object
/// per record in order. Panics with the script's stderr when it fails.
fn decode_with_fastavro(
    python: &Path,
    registry_url: &str,
    records: &[ConsumedRecord],
) -> Vec<Value> {
    // The package folder at run time (cargo sets it for every test process): a target dir
    // shared between clones can hold this test built in another clone, whose compile-time
    // path may be gone.
    let package_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let script = package_dir.join("tests/ecosystem/decode.py");
    let request = json!({
        "registry": registry_url,
        "records": records
            .iter()
            .map(|record| json!({
                "topic": record.topic,
                "value_hex": hex(record.value.as_deref().unwrap_or_default()),
            }))
            .collect::<Vec<_>>(),
    });
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python.display()));
    // decode.py reads all of stdin before it writes, so writing first cannot deadlock.
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(request.to_string().as_bytes())
        .unwrap_or_else(|error| panic!("writing to decode.py: {error}"));
    let output = child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("waiting for decode.py: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} {} exited with {}.\nstderr:\n{stderr}\nstdout:\n{stdout}",
        python.display(),
        script.display(),
        output.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("decode.py printed no JSON list ({error}):\n{stdout}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
