//! The DSL against the real broker: a co-partitioned stream-table join with a filter, a
//! group-by-key count, a table-table join that follows updates and deletes (tombstones), and a
//! flat-map to an output topic.

use std::collections::BTreeMap;
use std::time::Duration;

use eddy_streams::{AppState, JsonSerde, StreamsApp, StreamsBuilder, StreamsConfig, StringSerde};
use eddy_testkit::records::{ConsumedRecord, produce_with};
use eddy_testkit::{TestNamespace, TopicSpec, poll_until};

const DEADLINE: Duration = Duration::from_secs(60);

async fn start(namespace: &TestNamespace, builder: StreamsBuilder) -> StreamsApp {
    let mut config = StreamsConfig::new(namespace.kafka(), namespace.state_dir("state"));
    config.commit_interval = Duration::from_millis(100);
    let app = StreamsApp::start(config, builder.build())
        .await
        .expect("start");
    assert_eq!(
        app.wait_for_state(AppState::Running, DEADLINE).await,
        AppState::Running
    );
    app
}

/// The latest value per key (None for a tombstone).
fn latest(records: &[ConsumedRecord]) -> BTreeMap<String, Option<String>> {
    records
        .iter()
        .map(|record| {
            (
                record.key_text(),
                record.value.as_ref().map(|_| record.value_text()),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_co_partitioned_stream_table_join_enriches_orders() {
    let namespace = TestNamespace::new("dsl-join");
    let customers = namespace.create_topic("customers", TopicSpec::new(3)).await;
    let orders = namespace.create_topic("orders", TopicSpec::new(3)).await;
    let enriched = namespace
        .create_topic("orders-enriched", TopicSpec::new(3))
        .await;
    let producer = namespace.producer();
    for (id, name) in [("c1", "Ada"), ("c2", "Grace"), ("c3", "Linus")] {
        produce_with(
            &producer,
            &customers,
            id,
            format!("\"{name}\"").as_bytes(),
            &[],
        )
        .await;
    }

    let mut builder = StreamsBuilder::new(namespace.group("enrich"));
    let customer_table = builder.table(
        &customers,
        StringSerde,
        JsonSerde::<String>::new(),
        "customers",
    );
    let output = builder.output(&enriched, StringSerde, JsonSerde::<String>::new());
    builder
        .stream(&orders, StringSerde, JsonSerde::<i64>::new())
        .filter(|_, amount| *amount > 0)
        .join_table(&customer_table, |amount, name| {
            format!("{name} ordered {amount}")
        })
        .to(&output);
    let store = customer_table.store().clone();
    let app = start(&namespace, builder).await;

    // The table is materialized before any order arrives.
    let queries = app.queries();
    poll_until(
        "the customers table to hold all three customers",
        DEADLINE,
        || {
            let ready = ["c1", "c2", "c3"]
                .iter()
                .all(|id| matches!(queries.get(&store, &(*id).to_owned()), Ok(Some(_))));
            std::future::ready(ready.then_some(()))
        },
    )
    .await;
    assert_eq!(
        queries.get(&store, &"c2".to_owned()).expect("query"),
        Some("Grace".to_owned())
    );

    for (customer, amount) in [
        ("c1", "10"),
        ("c2", "-5"),
        ("c9", "7"),
        ("c3", "30"),
        ("c2", "20"),
    ] {
        produce_with(&producer, &orders, customer, amount.as_bytes(), &[]).await;
    }
    let records = namespace
        .consume_until(&enriched, DEADLINE, |records| records.len() >= 3)
        .await
        .expect("three enriched orders");
    let mut values: Vec<String> = records.iter().map(ConsumedRecord::value_text).collect();
    values.sort();
    assert_eq!(
        values,
        vec![
            "\"Ada ordered 10\"",
            "\"Grace ordered 20\"",
            "\"Linus ordered 30\""
        ],
        "the negative order is filtered and the unknown customer's order has no match"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn counts_and_a_table_table_join_follow_updates_and_tombstones() {
    let namespace = TestNamespace::new("dsl-aggregate");
    let profiles = namespace.create_topic("profiles", TopicSpec::new(2)).await;
    let plans = namespace.create_topic("plans", TopicSpec::new(2)).await;
    let events = namespace.create_topic("events", TopicSpec::new(2)).await;
    let counts_topic = namespace
        .create_topic("event-counts", TopicSpec::new(2))
        .await;
    let joined_topic = namespace
        .create_topic("profile-plans", TopicSpec::new(2))
        .await;
    let words_topic = namespace.create_topic("words", TopicSpec::new(2)).await;

    let mut builder = StreamsBuilder::new(namespace.group("aggregate"));
    let profile_table = builder.table(
        &profiles,
        StringSerde,
        JsonSerde::<String>::new(),
        "profiles",
    );
    let plan_table = builder.table(&plans, StringSerde, JsonSerde::<String>::new(), "plans");
    let joined_store = builder.store("profile-plans", StringSerde, JsonSerde::<String>::new());
    profile_table
        .join(&plan_table, &joined_store, |name, plan| {
            format!("{name} on {plan}")
        })
        .to_stream()
        .to(&builder.output(&joined_topic, StringSerde, JsonSerde::<String>::new()));
    let event_stream = builder.stream(&events, StringSerde, JsonSerde::<String>::new());
    let count_store = builder.store("event-counts", StringSerde, JsonSerde::<u64>::new());
    event_stream
        .group_by_key()
        .count(&count_store)
        .to_stream()
        .to(&builder.output(&counts_topic, StringSerde, JsonSerde::<u64>::new()));
    event_stream
        .flat_map(|_, text| {
            text.split_whitespace()
                .map(|word| (word.to_owned(), 1_u64))
                .collect()
        })
        .to(&builder.output(&words_topic, StringSerde, JsonSerde::<u64>::new()));
    let app = start(&namespace, builder).await;

    let producer = namespace.producer();
    for (user, event) in [
        ("u1", "hello world"),
        ("u2", "hi"),
        ("u1", "again"),
        ("u1", "more"),
    ] {
        produce_with(
            &producer,
            &events,
            user,
            format!("\"{event}\"").as_bytes(),
            &[],
        )
        .await;
    }
    let counts = namespace
        .consume_until(&counts_topic, DEADLINE, |records| {
            latest(records)
                == BTreeMap::from([
                    ("u1".into(), Some("3".into())),
                    ("u2".into(), Some("1".into())),
                ])
        })
        .await
        .expect("counts per user");
    assert_eq!(counts.len(), 4, "one update per event");
    let words = namespace
        .consume_until(&words_topic, DEADLINE, |records| records.len() >= 5)
        .await
        .expect("one record per word");
    let mut word_keys: Vec<String> = words.iter().map(ConsumedRecord::key_text).collect();
    word_keys.sort();
    assert_eq!(word_keys, vec!["again", "hello", "hi", "more", "world"]);

    produce_with(&producer, &profiles, "u1", b"\"Ada\"", &[]).await;
    produce_with(&producer, &plans, "u1", b"\"pro\"", &[]).await;
    produce_with(&producer, &profiles, "u2", b"\"Grace\"", &[]).await;
    namespace
        .consume_until(&joined_topic, DEADLINE, |records| {
            latest(records).get("u1") == Some(&Some("\"Ada on pro\"".to_owned()))
        })
        .await
        .expect("u1 joined once both sides exist (u2 has no plan)");

    // An update on one side updates the join; a tombstone deletes it.
    produce_with(&producer, &plans, "u1", b"\"enterprise\"", &[]).await;
    namespace
        .consume_until(&joined_topic, DEADLINE, |records| {
            latest(records).get("u1") == Some(&Some("\"Ada on enterprise\"".to_owned()))
        })
        .await
        .expect("the join follows the update");
    namespace
        .kafka()
        .producer_config("tombstone")
        .create::<rdkafka::producer::FutureProducer>()
        .expect("producer")
        .send(
            rdkafka::producer::FutureRecord::<str, [u8]>::to(&profiles).key("u1"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("tombstone");
    let joined = namespace
        .consume_until(&joined_topic, DEADLINE, |records| {
            latest(records).get("u1") == Some(&None)
        })
        .await
        .expect("the join deleted with a tombstone");
    assert!(
        joined.iter().all(|record| record.key_text() == "u1"),
        "u2 never joined: {joined:?}"
    );
    assert_eq!(
        app.queries()
            .get(&joined_store, &"u1".to_owned())
            .expect("query"),
        None
    );
    app.stop().await.expect("clean stop");
}
