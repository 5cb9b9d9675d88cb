//! Envelope headers through a topology, against the real broker: outputs keep the input's event
//! and ingest time and trace, get a new span, and name the writing component; input from
//! outside Eddy (no headers) gets an envelope from its timestamp. Changelog records, internal
//! replicas of the stores, carry none.

use std::time::Duration;

use eddy_service::envelope::{
    EVENT_TIME_HEADER, INGEST_TIME_HEADER, PRODUCER_HEADER, TRACEPARENT_HEADER, TraceContext,
};
use eddy_streams::{AppState, JsonSerde, StreamsApp, StreamsBuilder, StreamsConfig, StringSerde};
use eddy_testkit::records::{ConsumedRecord, produce_with};
use eddy_testkit::{TestNamespace, TopicSpec};

const DEADLINE: Duration = Duration::from_secs(60);
const COMPONENT: &str = "eddy-envelope-test/9.9.9";

fn header(record: &ConsumedRecord, name: &str) -> String {
    let value = record
        .headers
        .iter()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| value.clone())
        .unwrap_or_else(|| panic!("record {record:?} has no {name} header"));
    String::from_utf8(value).expect("UTF-8 header")
}

#[tokio::test]
async fn outputs_carry_the_input_envelope_on() {
    let namespace = TestNamespace::new("envelope");
    let input = namespace.create_topic("input", TopicSpec::new(1)).await;
    let output = namespace.create_topic("output", TopicSpec::new(1)).await;
    let application_id = namespace.group("envelope");

    let mut builder = StreamsBuilder::new(&application_id);
    let counts = builder.store("counts", StringSerde, JsonSerde::<u64>::new());
    let output_topic = builder.output(&output, StringSerde, JsonSerde::<u64>::new());
    builder
        .stream(&input, StringSerde, JsonSerde::<u64>::new())
        .group_by_key()
        .count(&counts)
        .to_stream()
        .to(&output_topic);
    let mut config = StreamsConfig::new(namespace.kafka(), namespace.state_dir("state"));
    config.commit_interval = Duration::from_millis(100);
    config.component = COMPONENT.to_owned();
    let app = StreamsApp::start(config, builder.build())
        .await
        .expect("start");
    assert_eq!(
        app.wait_for_state(AppState::Running, DEADLINE).await,
        AppState::Running
    );

    let caller = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .expect("valid traceparent");
    let producer = namespace.producer();
    produce_with(
        &producer,
        &input,
        "with-envelope",
        b"1",
        &[
            (EVENT_TIME_HEADER, b"1700000000000"),
            (INGEST_TIME_HEADER, b"1700000000123"),
            (PRODUCER_HEADER, b"eddy-source-api/0.1.0"),
            (TRACEPARENT_HEADER, caller.to_string().as_bytes()),
        ],
    )
    .await;
    produce_with(&producer, &input, "from-outside", b"2", &[]).await;

    let outputs = namespace
        .consume_until(&output, DEADLINE, |records| records.len() >= 2)
        .await
        .expect("both outputs");
    let changelog = format!("{application_id}-counts-changelog");
    let changelog_records = namespace
        .consume_until(&changelog, DEADLINE, |records| records.len() >= 2)
        .await
        .expect("both changelog records");

    assert!(
        changelog_records
            .iter()
            .all(|record| record.headers.is_empty()),
        "changelog records stay small: {changelog_records:?}"
    );
    let carried = outputs
        .iter()
        .find(|record| record.key_text() == "with-envelope")
        .expect("the record with an envelope");
    assert_eq!(header(carried, EVENT_TIME_HEADER), "1700000000000");
    assert_eq!(header(carried, INGEST_TIME_HEADER), "1700000000123");
    assert_eq!(header(carried, PRODUCER_HEADER), COMPONENT);
    let trace = TraceContext::parse(&header(carried, TRACEPARENT_HEADER)).expect("traceparent");
    assert_eq!(trace.trace_id, caller.trace_id, "same trace");
    assert_ne!(trace.span_id, caller.span_id, "a new span");

    let foreign = outputs
        .iter()
        .find(|record| record.key_text() == "from-outside")
        .expect("the record from outside");
    let event_time: i64 = header(foreign, EVENT_TIME_HEADER)
        .parse()
        .expect("a number");
    assert!(
        event_time > 1_700_000_000_000,
        "the input's timestamp: {event_time}"
    );
    assert_eq!(header(foreign, INGEST_TIME_HEADER), event_time.to_string());
    assert_eq!(header(foreign, PRODUCER_HEADER), COMPONENT);
    let trace = TraceContext::parse(&header(foreign, TRACEPARENT_HEADER)).expect("traceparent");
    assert_ne!(trace.trace_id, caller.trace_id, "a new trace");
    app.stop().await.expect("stop");
}
