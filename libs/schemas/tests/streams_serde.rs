//! `AvroSerde` plugged into `eddy-streams`: a topology reads typed, Confluent-framed messages
//! from the provisioned messages topic and writes typed metadata records (the unread count of
//! each conversation) to the metadata topic, against the real broker and registry.

use std::time::Duration;

use eddy_schemas::catalog::{MESSAGES, METADATA};
use eddy_schemas::provision::provision;
use eddy_schemas::{
    AvroSerde, Catalog, CatalogArgs, DeliveryState, Message, Metadata, RegistryArgs,
    SchemaRegistry, ValueType,
};
use eddy_streams::{AppState, JsonSerde, StreamsApp, StreamsBuilder, StreamsConfig, StringSerde};
use eddy_testkit::TestNamespace;
use eddy_testkit::records::produce_with;

const DEADLINE: Duration = Duration::from_secs(60);

fn message(id: &str, conversation: &str, from_contact: bool) -> Message {
    Message {
        id: id.to_owned(),
        conversation_id: conversation.to_owned(),
        channel_id: "ch1".to_owned(),
        source: "sms".to_owned(),
        sender_id: "+4912345".to_owned(),
        source_recipient_id: None,
        source_message_id: None,
        is_from_contact: from_contact,
        delivery_state: DeliveryState::Delivered,
        content: r#"{"text":"hi"}"#.to_owned(),
        sent_at: 1_763_700_000_000,
        updated_at: None,
        source_conversation_id: None,
    }
}

#[tokio::test]
async fn a_topology_reads_and_writes_typed_avro_topics() {
    let namespace = TestNamespace::new("avro-streams");
    let registry = SchemaRegistry::new(&RegistryArgs::new(&namespace.stack().schema_registry_url))
        .expect("registry");
    let catalog = Catalog::new(&CatalogArgs {
        namespace: namespace.prefix().to_owned(),
        partitions: 2,
        replication_factor: None,
    });
    let report = provision(&namespace.kafka(), &registry, &catalog, false)
        .await
        .expect("provision");
    assert!(report.is_clean(), "{report:?}");
    let messages_topic = catalog.name(MESSAGES).expect("messages").to_owned();
    let metadata_topic = catalog.name(METADATA).expect("metadata").to_owned();
    let messages = AvroSerde::<Message>::for_topic(&registry, &messages_topic)
        .await
        .expect("message serde");
    let metadata = AvroSerde::<Metadata>::for_topic(&registry, &metadata_topic)
        .await
        .expect("metadata serde");

    let application_id = namespace.group("unread");
    let mut builder = StreamsBuilder::new(&application_id);
    let counts = builder.store("unread", StringSerde, JsonSerde::<u64>::new());
    let output = builder.output(&metadata_topic, StringSerde, metadata.clone());
    builder
        .stream(&messages_topic, StringSerde, messages.clone())
        .filter(|_, message| message.is_from_contact)
        .group_by_key()
        .count(&counts)
        .to_stream()
        .map(|conversation, count| {
            let subject = format!("conversation:{conversation}");
            let record = Metadata {
                subject: subject.clone(),
                key: "unread_count".to_owned(),
                value: count.to_string(),
                value_type: ValueType::Number,
                timestamp: 1_763_700_000_000,
            };
            (format!("{subject}/unread_count"), record)
        })
        .to(&output);
    let mut config = StreamsConfig::new(namespace.kafka(), namespace.state_dir("state"));
    config.commit_interval = Duration::from_millis(100);
    let app = StreamsApp::start(config, builder.build())
        .await
        .expect("start");
    assert_eq!(
        app.wait_for_state(AppState::Running, DEADLINE).await,
        AppState::Running
    );

    let producer = namespace.producer();
    // Keyed by conversation here, so counting needs no repartitioning.
    for (id, conversation, from_contact) in [
        ("m1", "c1", true),
        ("m2", "c1", true),
        ("m3", "c1", false),
        ("m4", "c2", true),
    ] {
        let bytes = messages
            .encode(&message(id, conversation, from_contact))
            .expect("encode");
        produce_with(&producer, &messages_topic, conversation, &bytes, &[]).await;
    }
    // An undecodable record goes to the dead-letter topic; processing goes on.
    produce_with(&producer, &messages_topic, "c2", b"{\"not\":\"avro\"}", &[]).await;

    let written = namespace
        .consume_until(&metadata_topic, DEADLINE, |records| records.len() >= 3)
        .await
        .expect("three counts");
    let mut latest = std::collections::BTreeMap::new();
    for record in &written {
        let value = metadata
            .decode(record.value.as_deref().expect("a value"))
            .expect("framed Avro metadata");
        assert_eq!(value.key, "unread_count");
        assert_eq!(value.value_type, ValueType::Number);
        latest.insert(value.subject, value.value);
    }
    assert_eq!(
        latest,
        std::collections::BTreeMap::from([
            ("conversation:c1".to_owned(), "2".to_owned()),
            ("conversation:c2".to_owned(), "1".to_owned()),
        ])
    );
    let dead = namespace
        .consume_until(
            &eddy_streams::dead_letter_topic(&application_id),
            DEADLINE,
            |records| !records.is_empty(),
        )
        .await
        .expect("the JSON record is dead-lettered");
    let error = dead[0]
        .headers
        .iter()
        .find(|(name, _)| name == "eddy.dlq.error")
        .and_then(|(_, value)| value.clone())
        .map(|value| String::from_utf8_lossy(&value).into_owned());
    assert!(
        error
            .as_deref()
            .is_some_and(|error| error.contains("magic byte")),
        "{error:?}"
    );
    app.stop().await.expect("stop");
}
