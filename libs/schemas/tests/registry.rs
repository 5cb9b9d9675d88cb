//! The wire format and schema evolution against the real registry (Apicurio, ccompat API) and
//! broker: provisioning makes subjects BACKWARD so an incompatible schema is refused; a consumer
//! on the old schema reads records written with a newer compatible one; framed values read with
//! `schema_registry_converter`'s own decoder; producers never register schemas themselves.

use std::time::Duration;

use apache_avro::Schema;
use apache_avro::types::Value;
use eddy_schemas::catalog::{MESSAGES, TAGS};
use eddy_schemas::codec::unframe;
use eddy_schemas::provision::provision;
use eddy_schemas::registry::{COMPATIBILITY, RegistryError};
use eddy_schemas::{
    AvroSerde, Catalog, CatalogArgs, DeliveryState, Entity, Message, RegistryArgs, SchemaRegistry,
    Tag, TagColor,
};
use eddy_testkit::TestNamespace;
use eddy_testkit::records::produce_with;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;
use serde::Serialize;

const DEADLINE: Duration = Duration::from_secs(60);

fn registry(namespace: &TestNamespace) -> SchemaRegistry {
    SchemaRegistry::new(&RegistryArgs::new(&namespace.stack().schema_registry_url))
        .expect("registry client")
}

/// Provisions the whole catalog under the namespace's prefix.
async fn provisioned(namespace: &TestNamespace) -> Catalog {
    let catalog = Catalog::new(&CatalogArgs {
        namespace: namespace.prefix().to_owned(),
        partitions: 1,
        replication_factor: None,
    });
    let report = provision(&namespace.kafka(), &registry(namespace), &catalog, false)
        .await
        .expect("provisioning runs");
    assert!(report.is_clean(), "{report:?}");
    catalog
}

/// `schema`'s JSON with `edit` applied to its field list.
fn edited_schema(schema: &str, edit: impl FnOnce(&mut Vec<serde_json::Value>)) -> String {
    let mut json: serde_json::Value = serde_json::from_str(schema).expect("schema JSON");
    let fields = json["fields"].as_array_mut().expect("a record schema");
    edit(fields);
    json.to_string()
}

#[tokio::test]
async fn a_backward_incompatible_schema_is_refused_at_registration_with_a_clear_error() {
    let namespace = TestNamespace::new("schema-incompatible");
    let catalog = provisioned(&namespace).await;
    let registry = registry(&namespace);
    let subject = catalog.topic(TAGS).expect("tags topic").value_subject();
    assert_eq!(
        registry.compatibility(&subject).await.expect("config"),
        Some(COMPATIBILITY.to_owned())
    );

    // A new required field without a default: new readers could not read old tags.
    let incompatible = edited_schema(Tag::SCHEMA, |fields| {
        fields.push(serde_json::json!({"name": "priority", "type": "int"}));
    });
    let error = registry
        .register(&subject, &incompatible)
        .await
        .expect_err("an incompatible schema is refused");
    assert!(
        matches!(error, RegistryError::Incompatible { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    for expected in [subject.as_str(), "dev.eddy.communication.Tag", "BACKWARD"] {
        assert!(message.contains(expected), "{message}");
    }
    assert_eq!(
        registry
            .lookup(&subject, &incompatible)
            .await
            .expect("lookup"),
        None,
        "nothing was registered"
    );

    // The same change with a default is compatible and accepted.
    let compatible = edited_schema(Tag::SCHEMA, |fields| {
        fields.push(serde_json::json!({"name": "priority", "type": "int", "default": 0}));
    });
    registry
        .register(&subject, &compatible)
        .await
        .expect("a compatible schema is registered");
}

/// `Message` as a newer schema version writes it: one more field, one more delivery state.
#[derive(Serialize)]
struct MessageV2 {
    id: String,
    conversation_id: String,
    channel_id: String,
    source: String,
    sender_id: String,
    source_recipient_id: Option<String>,
    source_message_id: Option<String>,
    is_from_contact: bool,
    delivery_state: DeliveryStateV2,
    content: String,
    sent_at: i64,
    updated_at: Option<i64>,
    source_conversation_id: Option<String>,
    priority: i32,
}

#[derive(Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum DeliveryStateV2 {
    Delivered,
    Read,
}

fn message_v2_schema() -> String {
    edited_schema(Message::SCHEMA, |fields| {
        for field in fields.iter_mut() {
            if field["name"] == "delivery_state" {
                field["type"]["symbols"]
                    .as_array_mut()
                    .expect("enum symbols")
                    .push("READ".into());
            }
        }
        fields.push(serde_json::json!({"name": "priority", "type": "int", "default": 0}));
    })
}

fn message_v2(id: &str, delivery_state: DeliveryStateV2) -> MessageV2 {
    MessageV2 {
        id: id.to_owned(),
        conversation_id: "c1".to_owned(),
        channel_id: "ch1".to_owned(),
        source: "sms".to_owned(),
        sender_id: "+4912345".to_owned(),
        source_recipient_id: None,
        source_message_id: Some("SM1".to_owned()),
        is_from_contact: true,
        delivery_state,
        content: r#"{"text":"hi"}"#.to_owned(),
        sent_at: 1_763_700_000_000,
        updated_at: Some(1_763_700_000_001),
        source_conversation_id: None,
        priority: 7,
    }
}

#[tokio::test]
async fn a_consumer_on_the_old_schema_reads_records_written_with_a_newer_compatible_one() {
    let namespace = TestNamespace::new("schema-evolution");
    let catalog = provisioned(&namespace).await;
    let registry = registry(&namespace);
    let topic = catalog.name(MESSAGES).expect("messages topic").to_owned();
    let subject = format!("{topic}-value");

    // The old consumer starts before the new schema exists.
    let old_reader = AvroSerde::<Message>::for_topic(&registry, &topic)
        .await
        .expect("v1 is provisioned");
    let v2_id = registry
        .register(&subject, &message_v2_schema())
        .await
        .expect("v2 is BACKWARD compatible");
    assert_ne!(v2_id, old_reader.schema_id());

    // A newer producer (here schema_registry_converter's encoder, which writes with the
    // subject's latest version) writes through Kafka.
    let settings = SrSettings::new(namespace.stack().schema_registry_url.clone());
    let encoder = AvroEncoder::new(settings.clone());
    let strategy = SubjectNameStrategy::TopicNameStrategy(topic.clone(), false);
    let producer = namespace.producer();
    for (id, state) in [
        ("m-read", DeliveryStateV2::Read),
        ("m-delivered", DeliveryStateV2::Delivered),
    ] {
        let bytes = encoder
            .encode_struct(message_v2(id, state), &strategy)
            .await
            .expect("v2 encoding");
        produce_with(&producer, &topic, id, &bytes, &[]).await;
    }
    let records = namespace
        .consume_until(&topic, DEADLINE, |records| records.len() >= 2)
        .await
        .expect("both records");

    for record in &records {
        let bytes = record.value.as_deref().expect("a value");
        assert_eq!(unframe(bytes).expect("framed").0, v2_id, "written with v2");
        let message = old_reader
            .decode(bytes)
            .expect("the old reader decodes v2 records");
        let expected_state = match record.key_text().as_str() {
            // A symbol the old schema lacks reads as the enum's default.
            "m-read" => DeliveryState::Pending,
            _ => DeliveryState::Delivered,
        };
        assert_eq!(
            message,
            Message {
                id: record.key_text(),
                conversation_id: "c1".into(),
                channel_id: "ch1".into(),
                source: "sms".into(),
                sender_id: "+4912345".into(),
                source_recipient_id: None,
                source_message_id: Some("SM1".into()),
                is_from_contact: true,
                delivery_state: expected_state,
                content: r#"{"text":"hi"}"#.into(),
                sent_at: 1_763_700_000_000,
                updated_at: Some(1_763_700_000_001),
                source_conversation_id: None,
            }
        );
    }

    // And the other way round: a v2 reader fills the default into records v1 wrote.
    let old_bytes = old_reader
        .encode(&Message {
            id: "m-old".into(),
            conversation_id: "c1".into(),
            channel_id: "ch1".into(),
            source: "sms".into(),
            sender_id: "+49".into(),
            source_recipient_id: None,
            source_message_id: None,
            is_from_contact: false,
            delivery_state: DeliveryState::Failed,
            content: "{}".into(),
            sent_at: 1,
            updated_at: None,
            source_conversation_id: None,
        })
        .expect("v1 encoding");
    let (writer_id, payload) = unframe(&old_bytes).expect("framed");
    let writer = Schema::parse_str(&registry.schema_by_id(writer_id).await.expect("v1 by id"))
        .expect("v1 parses");
    let reader = Schema::parse_str(&message_v2_schema()).expect("v2 parses");
    let value = apache_avro::reader::datum::GenericDatumReader::builder(&writer)
        .reader_schema(&reader)
        .build()
        .and_then(|datum| datum.read_value(&mut &payload[..]))
        .expect("v2 reads v1");
    let Value::Record(fields) = value else {
        panic!("not a record: {value:?}")
    };
    assert!(
        fields.contains(&("priority".to_owned(), Value::Int(0))),
        "{fields:?}"
    );
}

#[tokio::test]
async fn framed_values_read_with_schema_registry_converter_and_producers_never_register() {
    let namespace = TestNamespace::new("schema-wire");
    let registry = registry(&namespace);

    let unprovisioned = namespace.topic("not-provisioned");
    let error = AvroSerde::<Tag>::for_topic(&registry, &unprovisioned)
        .await
        .expect_err("no schema registered");
    assert!(
        error.to_string().contains("eddy topics provision"),
        "{error}"
    );
    assert_eq!(
        registry
            .lookup(
                &format!("{unprovisioned}-value"),
                &Tag::registry_text().expect("schema")
            )
            .await
            .expect("lookup"),
        None,
        "asking did not register it"
    );

    let catalog = provisioned(&namespace).await;
    let topic = catalog.name(TAGS).expect("tags topic");
    let serde = AvroSerde::<Tag>::for_topic(&registry, topic)
        .await
        .expect("provisioned");
    let tag = Tag {
        id: "t1".into(),
        name: "vip".into(),
        color: TagColor::Purple,
    };
    let bytes = serde.encode(&tag).expect("encode");
    assert_eq!(bytes[0], 0, "magic byte");
    assert_eq!(&bytes[1..5], &serde.schema_id().to_be_bytes());

    let decoder = AvroDecoder::new(SrSettings::new(
        namespace.stack().schema_registry_url.clone(),
    ));
    let decoded = decoder.decode(Some(&bytes)).await.expect("decodes");
    assert_eq!(
        decoded.value,
        Value::Record(vec![
            ("id".into(), Value::String("t1".into())),
            ("name".into(), Value::String("vip".into())),
            ("color".into(), Value::Enum(3, "PURPLE".into())),
        ])
    );
    assert_eq!(serde.decode(&bytes).expect("round trip"), tag);

    let error = serde
        .decode(br#"{"id":"t1"}"#)
        .expect_err("JSON is not framed Avro");
    assert!(error.0.contains("magic byte"), "{error}");
    let error = serde
        .decode(&[0, 0x7f, 0xff, 0xff, 0xf0, 2])
        .expect_err("unknown schema id");
    assert!(error.0.contains("schema id 2147483632"), "{error}");
}
