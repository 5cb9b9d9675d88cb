//! Bad records never stop an application: a record that does not decode goes to the
//! dead-letter topic with headers naming the error, its topic, partition and offset, and later
//! records are processed; a record whose processing keeps failing is retried, then dead-lettered
//! or, by configuration, stops the application.

use std::time::Duration;

use eddy_streams::{
    AppState, ErrorPolicy, InputRecord, InputTopic, JsonSerde, OutputTopic, Processor,
    ProcessorContext, ProcessorError, StreamsApp, StreamsConfig, StringSerde, Topology,
    dead_letter_topic,
};
use eddy_testkit::records::ConsumedRecord;
use eddy_testkit::{TestNamespace, TopicSpec};

const DEADLINE: Duration = Duration::from_secs(60);

/// Emits each value doubled; fails (every time) on the value 13.
struct Doubler {
    input: InputTopic<String, u64>,
    output: OutputTopic<String, u64>,
}

impl Processor for Doubler {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        let (key, value) = self.input.decode(record)?;
        let value = value.unwrap_or(0);
        if value == 13 {
            return Err(ProcessorError::Failed("13 is unlucky".to_owned()));
        }
        context.emit(&self.output, &key, Some(&(value * 2)))
    }
}

async fn start(
    namespace: &TestNamespace,
    input: &str,
    output: &str,
    error_policy: ErrorPolicy,
) -> (StreamsApp, String) {
    let application_id = namespace.group("doubler");
    let mut topology = Topology::new(&application_id);
    let input = topology.input(input, StringSerde, JsonSerde::<u64>::new());
    let output = topology.output(output, StringSerde, JsonSerde::<u64>::new());
    topology.processor(move |_| Doubler {
        input: input.clone(),
        output: output.clone(),
    });
    let mut config = StreamsConfig::new(namespace.kafka(), namespace.state_dir("state"));
    config.error_policy = error_policy;
    config.max_retries = 2;
    let app = StreamsApp::start(config, topology).await.expect("start");
    (app, dead_letter_topic(&application_id))
}

fn header(record: &ConsumedRecord, name: &str) -> String {
    record
        .headers
        .iter()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| value.as_deref())
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_else(|| panic!("no header {name} in {:?}", record.headers))
}

#[tokio::test]
async fn undecodable_and_failing_records_are_dead_lettered_and_processing_goes_on() {
    let namespace = TestNamespace::new("streams-dlq");
    let input = namespace.create_topic("numbers", TopicSpec::new(1)).await;
    let output = namespace.create_topic("doubled", TopicSpec::new(1)).await;
    namespace.produce(&input, "a", b"1").await;
    let (_, poison_offset) = namespace.produce(&input, "b", b"not-a-number").await;
    let (_, unlucky_offset) = namespace.produce(&input, "c", b"13").await;
    namespace.produce(&input, "d", b"4").await;

    let (app, dead_letters) = start(&namespace, &input, &output, ErrorPolicy::DeadLetter).await;
    let doubled = namespace
        .consume_until(&output, DEADLINE, |records| records.len() >= 2)
        .await
        .expect("the good records, processed around the bad ones");
    let values: Vec<(String, String)> = doubled
        .iter()
        .map(|record| (record.key_text(), record.value_text()))
        .collect();
    assert_eq!(
        values,
        vec![("a".into(), "2".into()), ("d".into(), "8".into())]
    );

    let dead = namespace
        .consume_until(&dead_letters, DEADLINE, |records| records.len() >= 2)
        .await
        .expect("two dead letters");
    let poison = &dead[0];
    assert_eq!(poison.key_text(), "b");
    assert_eq!(
        poison.value_text(),
        "not-a-number",
        "the original bytes, unchanged"
    );
    assert!(
        header(poison, "eddy.dlq.error").contains("undecodable value"),
        "{poison:?}"
    );
    assert_eq!(header(poison, "eddy.dlq.topic"), input);
    assert_eq!(header(poison, "eddy.dlq.partition"), "0");
    assert_eq!(header(poison, "eddy.dlq.offset"), poison_offset.to_string());
    assert_eq!(
        header(poison, "eddy.dlq.attempts"),
        "1",
        "bad records are not retried"
    );
    assert!(
        header(poison, "traceparent").starts_with("00-"),
        "dead letters carry an envelope: {poison:?}"
    );
    assert!(header(poison, "eddy-producer").starts_with("eddy-streams/"));

    let unlucky = &dead[1];
    assert_eq!(unlucky.key_text(), "c");
    assert_eq!(header(unlucky, "eddy.dlq.error"), "13 is unlucky");
    assert_eq!(
        header(unlucky, "eddy.dlq.offset"),
        unlucky_offset.to_string()
    );
    assert_eq!(
        header(unlucky, "eddy.dlq.attempts"),
        "3",
        "one try and two retries"
    );

    assert_eq!(app.state(), AppState::Running);
    assert_eq!(app.metrics().dead_lettered_records(), 2);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_fail_policy_stops_the_application_on_a_failing_record() {
    let namespace = TestNamespace::new("streams-fail-policy");
    let input = namespace.create_topic("numbers", TopicSpec::new(1)).await;
    let output = namespace.create_topic("doubled", TopicSpec::new(1)).await;
    namespace.produce(&input, "c", b"13").await;
    let (app, _) = start(&namespace, &input, &output, ErrorPolicy::Fail).await;
    assert_eq!(
        app.wait_for_state(AppState::Error, DEADLINE).await,
        AppState::Error
    );
    let error = app.stop().await.expect_err("the failure is reported");
    assert!(error.to_string().contains("13 is unlucky"), "{error}");
}
