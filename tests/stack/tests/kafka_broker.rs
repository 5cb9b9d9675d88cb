//! Proof that the local stack is a real Apache Kafka broker: topic configs through the admin
//! API, the idempotent producer and Java-compatible partitioning (eddy-streams' murmur2, itself
//! checked against kafka-clients' values), consumer-group offsets that
//! survive a consumer restart, and transactions whose aborted records stay invisible.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use eddy_streams::partitioner::partition_for_key;
use eddy_testkit::records::{assign_from_beginning, collect_until, produce_with};
use eddy_testkit::{TestNamespace, TopicSpec};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, FutureProducer, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn compacted_topic_configs_are_set_and_read_back_through_the_admin_api() {
    let namespace = TestNamespace::new("compacted-topic");
    let topic = namespace
        .create_topic(
            "application.communication.messages",
            TopicSpec::new(3)
                .with("cleanup.policy", "compact")
                .with("min.compaction.lag.ms", "86400000")
                .with("segment.bytes", "10485760"),
        )
        .await;

    let described = namespace
        .admin()
        .describe_configs([&ResourceSpecifier::Topic(&topic)], &AdminOptions::new())
        .await
        .expect("describe_configs request");
    let resource = described
        .into_iter()
        .next()
        .expect("one resource")
        .expect("topic config");
    let entries = resource.entry_map();
    let value = |name: &str| {
        let entry = entries
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {entries:?}"));
        assert!(
            !entry.is_default,
            "{name} should be set on the topic, not a default"
        );
        entry.value.clone()
    };
    assert_eq!(value("cleanup.policy").as_deref(), Some("compact"));
    assert_eq!(value("min.compaction.lag.ms").as_deref(), Some("86400000"));
    assert_eq!(value("segment.bytes").as_deref(), Some("10485760"));

    let metadata = namespace
        .consumer(&namespace.group("metadata"))
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .expect("metadata");
    assert_eq!(metadata.topics()[0].partitions().len(), 3);
}

/// Collects librdkafka statistics, to see the idempotent producer's broker-assigned id.
#[derive(Default)]
struct StatisticsProbe {
    latest: Mutex<Option<Statistics>>,
}

impl ClientContext for StatisticsProbe {
    fn stats(&self, statistics: Statistics) {
        *self.latest.lock().expect("statistics lock") = Some(statistics);
    }
}

impl ProducerContext for StatisticsProbe {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[tokio::test]
async fn idempotent_producer_gets_a_producer_id_and_partitions_keys_like_java() {
    let namespace = TestNamespace::new("idempotent-producer");
    let topic = namespace.create_topic("keyed", TopicSpec::new(7)).await;

    let mut config: ClientConfig = namespace.kafka().producer_config("idempotence-test");
    config.set("statistics.interval.ms", "100");
    let producer: ThreadedProducer<StatisticsProbe> = config
        .create_with_context(StatisticsProbe::default())
        .expect("producer");
    let keys: Vec<String> = (0..50)
        .map(|index| format!("conversation-{index}"))
        .collect();
    for (index, key) in keys.iter().enumerate() {
        let value = index.to_string();
        producer
            .send(BaseRecord::to(&topic).key(key).payload(&value))
            .map_err(|(error, _)| error)
            .expect("enqueue");
    }
    producer.flush(DEADLINE).expect("flush");

    let probe = producer.context();
    let producer_id = eddy_testkit::poll_until(
        "the broker to assign the idempotent producer an id",
        DEADLINE,
        || {
            let eos = probe
                .latest
                .lock()
                .expect("statistics lock")
                .as_ref()
                .and_then(|statistics| statistics.eos.clone());
            std::future::ready(
                eos.filter(|eos| eos.idemp_state == "Assigned")
                    .map(|eos| eos.producer_id),
            )
        },
    )
    .await;
    assert!(producer_id >= 0, "producer id {producer_id}");

    let records = namespace
        .consume_until(&topic, DEADLINE, |records| records.len() >= keys.len())
        .await
        .expect("all records");
    assert_eq!(records.len(), keys.len(), "each record exactly once");
    for record in &records {
        assert_eq!(
            record.partition,
            partition_for_key(record.key.as_deref().expect("key"), 7),
            "key {} is not on the partition a Java producer would pick",
            record.key_text()
        );
    }
    // Per key, order is kept: values of one partition increase with offset.
    let mut last_value_by_partition: BTreeMap<i32, i64> = BTreeMap::new();
    for record in &records {
        let value: i64 = record.value_text().parse().expect("numeric value");
        let last = last_value_by_partition
            .entry(record.partition)
            .or_insert(-1);
        assert!(
            value > *last,
            "partition {} went backwards",
            record.partition
        );
        *last = value;
    }
}

#[tokio::test]
async fn a_consumer_group_resumes_from_its_committed_offset_after_a_restart() {
    let namespace = TestNamespace::new("group-resume");
    let topic = namespace.create_topic("events", TopicSpec::new(1)).await;
    let group = namespace.group("resuming-consumer");
    let producer = namespace.producer();
    for index in 0..10 {
        produce_with(
            &producer,
            &topic,
            "key",
            format!("first-{index}").as_bytes(),
            &[],
        )
        .await;
    }

    // First run: read the 10 records, commit, stop.
    {
        let consumer = namespace.consumer(&group);
        consumer.subscribe(&[&topic]).expect("subscribe");
        let records = collect_until(&consumer, DEADLINE, &mut |records| records.len() >= 10)
            .await
            .expect("first 10 records");
        assert_eq!(records[0].value_text(), "first-0");
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .expect("commit");
        let committed = consumer
            .committed(Duration::from_secs(10))
            .expect("committed offsets");
        let offset = committed
            .find_partition(&topic, 0)
            .expect("partition 0")
            .offset();
        assert_eq!(offset, rdkafka::Offset::Offset(10));
        consumer.unsubscribe();
    }

    for index in 0..5 {
        produce_with(
            &producer,
            &topic,
            "key",
            format!("second-{index}").as_bytes(),
            &[],
        )
        .await;
    }

    // Second run, same group: starts at the committed offset, not at the beginning.
    let consumer = namespace.consumer(&group);
    consumer.subscribe(&[&topic]).expect("subscribe");
    let records = collect_until(&consumer, DEADLINE, &mut |records| !records.is_empty())
        .await
        .expect("records after restart");
    assert_eq!(records[0].offset, 10);
    assert_eq!(records[0].value_text(), "second-0");
}

#[tokio::test]
async fn aborted_transactions_are_invisible_to_read_committed_consumers() {
    let namespace = TestNamespace::new("transactions");
    let topic = namespace.create_topic("ledger", TopicSpec::new(1)).await;
    let producer: FutureProducer = namespace
        .kafka()
        .transactional_producer_config(
            "transactions-test",
            &namespace.transactional_id("ledger-writer"),
        )
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(DEADLINE)
        .expect("init transactions");

    producer.begin_transaction().expect("begin");
    produce_with(&producer, &topic, "a", b"aborted-1", &[]).await;
    produce_with(&producer, &topic, "a", b"aborted-2", &[]).await;
    producer.abort_transaction(DEADLINE).expect("abort");

    producer.begin_transaction().expect("begin");
    produce_with(&producer, &topic, "a", b"committed-1", &[]).await;
    producer.commit_transaction(DEADLINE).expect("commit");

    let read_committed = namespace
        .consume_until(&topic, DEADLINE, |records| {
            records
                .iter()
                .any(|record| record.value_text() == "committed-1")
        })
        .await
        .expect("the committed record");
    let values: Vec<String> = read_committed
        .iter()
        .map(|record| record.value_text())
        .collect();
    assert_eq!(values, vec!["committed-1"], "aborted records leaked");

    // The aborted records are in the log: a read_uncommitted consumer sees them.
    let mut config = namespace
        .kafka()
        .consumer_config("uncommitted", &namespace.group("uncommitted"));
    config.set("isolation.level", "read_uncommitted");
    let uncommitted: rdkafka::consumer::StreamConsumer = config.create().expect("consumer");
    assign_from_beginning(&uncommitted, &topic);
    let everything = collect_until(&uncommitted, DEADLINE, &mut |records| {
        records
            .iter()
            .any(|record| record.value_text() == "committed-1")
    })
    .await
    .expect("all records");
    let values: Vec<String> = everything
        .iter()
        .map(|record| record.value_text())
        .collect();
    assert_eq!(values, vec!["aborted-1", "aborted-2", "committed-1"]);
    assert!(everything.iter().all(|record| record.topic == topic));
}
