//! A stateful aggregate against the real broker: per-key sums stay correct across a graceful
//! restart, a restart with the state dir kept restores nothing (only the tail, which is empty
//! after a clean stop), and a restart with an empty state dir restores every changelog record.

use std::collections::BTreeMap;
use std::time::Duration;

use eddy_streams::{
    AppState, InputTopic, JsonSerde, OutputTopic, Processor, ProcessorContext, ProcessorError,
    StoreDefinition, StreamsApp, StreamsConfig, StringSerde, Topology,
};
use eddy_testkit::records::produce_with;
use eddy_testkit::{TestNamespace, TopicSpec};

const DEADLINE: Duration = Duration::from_secs(60);
const KEYS: u64 = 10;

/// Adds each record's value to its key's running sum and emits the new sum.
struct Summer {
    input: InputTopic<String, u64>,
    sums: StoreDefinition<String, u64>,
    output: OutputTopic<String, u64>,
}

impl Processor for Summer {
    fn process(
        &mut self,
        record: &eddy_streams::InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        let (key, value) = self.input.decode(record)?;
        let sum = context.get(&self.sums, &key)?.unwrap_or(0) + value.unwrap_or(0);
        context.put(&self.sums, &key, &sum)?;
        context.emit(&self.output, &key, Some(&sum))
    }
}

fn topology(application_id: &str, input_topic: &str, output_topic: &str) -> Topology {
    let mut topology = Topology::new(application_id);
    let input = topology.input(input_topic, StringSerde, JsonSerde::<u64>::new());
    let sums = topology.store("sums", StringSerde, JsonSerde::<u64>::new());
    let output = topology.output(output_topic, StringSerde, JsonSerde::<u64>::new());
    topology.processor(move |_partition| Summer {
        input: input.clone(),
        sums: sums.clone(),
        output: output.clone(),
    });
    topology
}

/// Produces `count` records (keys k0..k9, values first..first+count) and adds them to `expected`.
async fn produce_batch(
    namespace: &TestNamespace,
    topic: &str,
    first: u64,
    count: u64,
    expected: &mut BTreeMap<String, u64>,
) {
    let producer = namespace.producer();
    for value in first..first + count {
        let key = format!("k{}", value % KEYS);
        produce_with(&producer, topic, &key, value.to_string().as_bytes(), &[]).await;
        *expected.entry(key).or_default() += value;
    }
}

/// Reads the output until the latest sum of every key equals `expected`.
async fn wait_for_sums(namespace: &TestNamespace, topic: &str, expected: &BTreeMap<String, u64>) {
    let result = namespace
        .consume_until(topic, DEADLINE, |records| {
            let mut latest = BTreeMap::new();
            for record in records {
                latest.insert(
                    record.key_text(),
                    record.value_text().parse::<u64>().unwrap_or(0),
                );
            }
            &latest == expected
        })
        .await;
    if let Err(timeout) = result {
        let mut latest = BTreeMap::new();
        for record in &timeout.records {
            latest.insert(record.key_text(), record.value_text());
        }
        panic!("{timeout}; expected {expected:?}, latest {latest:?}");
    }
}

async fn start(
    namespace: &TestNamespace,
    state_dir: &str,
    input: &str,
    output: &str,
) -> StreamsApp {
    let mut config = StreamsConfig::new(namespace.kafka(), namespace.state_dir(state_dir));
    config.commit_interval = Duration::from_millis(200);
    let app = StreamsApp::start(config, topology(&namespace.group("summer"), input, output))
        .await
        .expect("start");
    assert_eq!(
        app.wait_for_state(AppState::Running, DEADLINE).await,
        AppState::Running
    );
    app
}

#[tokio::test]
async fn sums_survive_restarts_and_a_kept_state_dir_restores_only_the_tail() {
    let namespace = TestNamespace::new("streams-aggregate");
    let input = namespace.create_topic("numbers", TopicSpec::new(3)).await;
    let output = namespace.create_topic("sums", TopicSpec::new(3)).await;
    let mut expected = BTreeMap::new();

    produce_batch(&namespace, &input, 1, 300, &mut expected).await;
    let app = start(&namespace, "warm", &input, &output).await;
    wait_for_sums(&namespace, &output, &expected).await;
    assert_eq!(
        app.metrics().restored_records(),
        0,
        "nothing to restore at first"
    );
    assert_eq!(app.metrics().processed_records(), 300);
    app.stop().await.expect("clean stop");

    // Restart with the state dir kept: the checkpoint is at the changelog's end, nothing to read.
    produce_batch(&namespace, &input, 301, 200, &mut expected).await;
    let app = start(&namespace, "warm", &input, &output).await;
    wait_for_sums(&namespace, &output, &expected).await;
    assert_eq!(
        app.metrics().restored_records(),
        0,
        "a kept state dir must not restore what it already has"
    );
    assert_eq!(
        app.metrics().processed_records(),
        200,
        "committed records reprocessed"
    );
    app.stop().await.expect("clean stop");

    // Restart with an empty state dir: every changelog record (one per processed record) is
    // restored, and the sums continue from the restored state.
    produce_batch(&namespace, &input, 501, 10, &mut expected).await;
    let app = start(&namespace, "cold", &input, &output).await;
    wait_for_sums(&namespace, &output, &expected).await;
    assert_eq!(app.metrics().restored_records(), 500);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn inputs_with_different_partition_counts_are_refused() {
    let namespace = TestNamespace::new("streams-copartition");
    let three = namespace.create_topic("three", TopicSpec::new(3)).await;
    let two = namespace.create_topic("two", TopicSpec::new(2)).await;
    let mut topology = Topology::new(namespace.group("joiner"));
    let _ = topology.input(three.clone(), StringSerde, StringSerde);
    let _ = topology.input(two.clone(), StringSerde, StringSerde);
    topology.processor(|_| Summer {
        input: Topology::new("unused").input("unused", StringSerde, JsonSerde::new()),
        sums: Topology::new("unused").store("unused", StringSerde, JsonSerde::new()),
        output: Topology::new("unused").output("unused", StringSerde, JsonSerde::new()),
    });
    let error = StreamsApp::start(
        StreamsConfig::new(namespace.kafka(), namespace.state_dir("state")),
        topology,
    )
    .await
    .expect_err("must refuse");
    let message = error.to_string();
    assert!(message.contains("not co-partitioned"), "{message}");
    assert!(message.contains(&format!("{three} has 3")), "{message}");
    assert!(message.contains(&format!("{two} has 2")), "{message}");
}

#[tokio::test]
async fn state_of_partitions_not_owned_is_deleted_after_the_cleanup_delay() {
    let namespace = TestNamespace::new("streams-state-cleanup");
    let input = namespace.create_topic("numbers", TopicSpec::new(2)).await;
    let output = namespace.create_topic("sums", TopicSpec::new(2)).await;
    let application_id = namespace.group("summer");
    let state_dir = namespace.state_dir("state");
    // Left over from an earlier assignment: partition 7 is not ours (the topic has 2).
    let stale = state_dir.join(&application_id).join("7").join("sums");
    std::fs::create_dir_all(&stale).expect("stale state dir");

    let mut config = StreamsConfig::new(namespace.kafka(), &state_dir);
    config.commit_interval = Duration::from_millis(100);
    config.state_cleanup_delay = Duration::from_millis(500);
    let app = StreamsApp::start(config, topology(&application_id, &input, &output))
        .await
        .expect("start");
    assert_eq!(
        app.wait_for_state(AppState::Running, DEADLINE).await,
        AppState::Running
    );
    let owned = state_dir.join(&application_id).join("0");
    eddy_testkit::poll_until(
        "the unowned partition's state to be deleted",
        DEADLINE,
        || std::future::ready((!stale.exists()).then_some(())),
    )
    .await;
    assert!(owned.exists(), "owned state must stay");
    app.stop().await.expect("clean stop");
}
