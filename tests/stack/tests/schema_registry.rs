//! Proof that the local stack has a real Confluent-compatible schema registry: a schema is
//! registered through `schema_registry_converter`, a record is encoded in the Confluent wire
//! format (magic byte 0, 4-byte big-endian schema id, Avro binary), travels through Kafka, and
//! is decoded again by looking the schema up by its id.

use std::time::Duration;

use apache_avro::types::Value;
use eddy_testkit::{TestNamespace, TopicSpec};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_schema_by_id, post_schema,
};
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::{Deserialize, Serialize};

const HEARTBEAT_SCHEMA: &str = r#"{
  "type": "record",
  "name": "Heartbeat",
  "namespace": "dev.eddy.test",
  "fields": [
    {"name": "source", "type": "string"},
    {"name": "beat", "type": "long"}
  ]
}"#;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Heartbeat {
    source: String,
    beat: i64,
}

fn settings(namespace: &TestNamespace) -> SrSettings {
    SrSettings::new_builder(namespace.stack().schema_registry_url.clone())
        .set_timeout(Duration::from_secs(10))
        .build()
        .expect("registry settings")
}

#[tokio::test]
async fn avro_records_round_trip_in_confluent_wire_format_through_the_registry() {
    let namespace = TestNamespace::new("schema-registry");
    let topic = namespace
        .create_topic("heartbeats", TopicSpec::new(1))
        .await;
    let registry = settings(&namespace);
    let subject = format!("{topic}-value");

    let registered = post_schema(
        &registry,
        subject.clone(),
        SuppliedSchema::new(
            Some("dev.eddy.test.Heartbeat".to_owned()),
            SchemaType::Avro,
            HEARTBEAT_SCHEMA.to_owned(),
        ),
    )
    .await
    .expect("registering the schema");
    // Registering the same schema again is idempotent: same id.
    let again = post_schema(
        &registry,
        subject.clone(),
        SuppliedSchema::new(None, SchemaType::Avro, HEARTBEAT_SCHEMA.to_owned()),
    )
    .await
    .expect("registering the schema again");
    assert_eq!(again.id, registered.id);

    let encoder = AvroEncoder::new(settings(&namespace));
    let strategy = SubjectNameStrategy::TopicNameStrategy(topic.clone(), false);
    let heartbeat = Heartbeat {
        source: "eddy".to_owned(),
        beat: 42,
    };
    let bytes = encoder
        .encode_struct(&heartbeat, &strategy)
        .await
        .expect("encoding");
    assert_eq!(bytes[0], 0, "magic byte");
    assert_eq!(
        u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]),
        registered.id,
        "schema id in the frame"
    );

    namespace.produce(&topic, "heart-1", &bytes).await;
    let records = namespace
        .consume_until(&topic, Duration::from_secs(30), |records| {
            !records.is_empty()
        })
        .await
        .expect("the record");

    // A fresh decoder knows nothing: it must fetch the schema by the id in the frame.
    let decoder = AvroDecoder::new(settings(&namespace));
    let decoded = decoder
        .decode(records[0].value.as_deref())
        .await
        .expect("decoding");
    assert_eq!(
        decoded.name.map(|name| name.fullname(None)),
        Some("dev.eddy.test.Heartbeat".to_owned())
    );
    let round_tripped: Heartbeat = apache_avro::from_value(&decoded.value).expect("from value");
    assert_eq!(round_tripped, heartbeat);
    assert_eq!(
        decoded.value,
        Value::Record(vec![
            ("source".to_owned(), Value::String("eddy".to_owned())),
            ("beat".to_owned(), Value::Long(42)),
        ])
    );

    let by_id = get_schema_by_id(registered.id, &registry)
        .await
        .expect("schema by id");
    assert!(by_id.schema.contains("Heartbeat"), "{}", by_id.schema);
}

#[tokio::test]
async fn an_unknown_schema_id_is_an_error_not_garbage() {
    let namespace = TestNamespace::new("schema-registry-unknown-id");
    let decoder = AvroDecoder::new(settings(&namespace));
    // Magic byte, then an id no registry has handed out, then one Avro long.
    let frame = [0_u8, 0x7f, 0xff, 0xff, 0xf0, 0x54];
    let error = decoder.decode(Some(&frame)).await.expect_err("must fail");
    assert!(
        error.error.to_lowercase().contains("schema"),
        "unexpected error: {error:?}"
    );
}
