//! Outbound webhook benchmark (issue #6): the webhook publisher and sender (release builds)
//! on the local stack, delivering to the receiver process on the same machine.
//!
//! ```sh
//! cargo build --release -p eddy-webhook-publisher -p eddy-webhook-sender -p eddy-e2e-tests --bins
//! cargo bench -p eddy-e2e-tests --bench webhooks
//! ```
//!
//! 1. **Throughput**: `EDDY_BENCH_EVENTS` (default 20,000) tag changes written at once; the
//!    deliveries per second from the first to the last delivery the receiver acknowledged.
//! 2. **Latency at a steady rate**: `EDDY_BENCH_RATE` (default 500) changes per second for
//!    `EDDY_BENCH_SECONDS` (default 20); per event, the time from the change's Kafka timestamp
//!    to the receiver getting it: p50, p99, max.
//!
//! Results go in `docs/benchmarks.md`; with `EDDY_BENCH_OUTPUT` set, also to that file as
//! JSON (`scripts/bench`).

use std::time::{Duration, Instant};

use eddy_e2e_tests::Platform;
use eddy_e2e_tests::receiver::{Receiver, receiver_binary};
use eddy_schemas::catalog::{TAGS, WEBHOOK_SUBSCRIPTIONS};
use eddy_schemas::writer::{OutgoingRecord, Placement, RecordWriter};
use eddy_schemas::{
    AvroSerde, RegistryArgs, SchemaRegistry, SubscriptionStatus, Tag, TagColor, WebhookSubscription,
};
use eddy_service::envelope::{Envelope, now_millis};
use eddy_webhooks::SecretKey;

/// The publisher's part of the latency: for each event of `marker`, its record timestamp on
/// the events topic minus the change's (`created_at`): p50, p99, max in ms.
fn publisher_hop(platform: &Platform, registry: &SchemaRegistry, marker: &str) -> (i64, i64, i64) {
    use eddy_schemas::WebhookEvent;
    use eddy_schemas::catalog::WEBHOOK_EVENTS;
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let topic = platform.topic(WEBHOOK_EVENTS);
    let serde = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current()
            .block_on(AvroSerde::<WebhookEvent>::for_topic(registry, &topic))
    })
    .expect("serde");
    let consumer: BaseConsumer = platform
        .namespace
        .kafka()
        .consumer_config("bench-hops", "bench-hops")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .expect("metadata");
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut remaining = 0;
    for partition in metadata.topics()[0].partitions() {
        let (_, high) = consumer
            .fetch_watermarks(&topic, partition.id(), Duration::from_secs(10))
            .expect("watermarks");
        remaining += high;
        assignment
            .add_partition_offset(&topic, partition.id(), rdkafka::Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut hops = Vec::new();
    while remaining > 0 {
        let Some(Ok(record)) = consumer.poll(Duration::from_secs(10)) else {
            break;
        };
        remaining -= 1;
        let Some(event) = record.payload().and_then(|bytes| serde.decode(bytes).ok()) else {
            continue;
        };
        if event.payload.contains(marker)
            && let Some(written) = record.timestamp().to_millis()
        {
            hops.push(written - event.created_at);
        }
    }
    hops.sort_unstable();
    let at = |fraction: f64| hops[((hops.len() as f64 * fraction) as usize).min(hops.len() - 1)];
    (at(0.5), at(0.99), *hops.last().unwrap_or(&0))
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

struct Tags {
    writer: RecordWriter,
    serde: AvroSerde<Tag>,
    topic: String,
}

impl Tags {
    async fn write(&self, id: &str) {
        let value = self
            .serde
            .encode(&Tag {
                id: id.to_owned(),
                name: id.to_owned(),
                color: TagColor::Green,
            })
            .expect("encode");
        let envelope = Envelope::originated("bench/0");
        self.writer
            .send(OutgoingRecord {
                topic: &self.topic,
                key: id,
                value: Some(value),
                placement: Placement::ByKey,
                envelope: &envelope,
            })
            .await
            .expect("tag written");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events = setting("EDDY_BENCH_EVENTS", 20_000) as usize;
    let rate = setting("EDDY_BENCH_RATE", 500);
    let seconds = setting("EDDY_BENCH_SECONDS", 20);
    let partitions = setting("EDDY_BENCH_PARTITIONS", 4) as i32;

    let platform = Platform::provisioned("bench_webhooks", partitions).await;
    let registry = SchemaRegistry::new(&RegistryArgs::new(
        &platform.namespace.stack().schema_registry_url,
    ))
    .expect("registry client");
    let receiver = Receiver::start_binary(receiver_binary());

    // The subscription, written as the admin service would.
    let subscriptions_topic = platform.topic(WEBHOOK_SUBSCRIPTIONS);
    let tags_topic = platform.topic(TAGS);
    let kafka = platform.namespace.kafka();
    let writer = RecordWriter::new(&kafka, "bench", &[&subscriptions_topic, &tags_topic])
        .await
        .expect("writer");
    let subscription = WebhookSubscription {
        id: "bench".to_owned(),
        name: None,
        endpoint: receiver.url("bench"),
        events: vec!["tag.updated".to_owned()],
        headers: Default::default(),
        status: SubscriptionStatus::Subscribed,
        secret_ref: Some(SecretKey::new_reference().expect("reference")),
        subscribed_at: now_millis() - 1,
        max_attempts: None,
        max_age_ms: None,
        previous_secret_ref: None,
        previous_secret_expires_at: None,
    };
    let subscription_serde =
        AvroSerde::<WebhookSubscription>::for_topic(&registry, &subscriptions_topic)
            .await
            .expect("serde");
    writer
        .send(OutgoingRecord {
            topic: &subscriptions_topic,
            key: &subscription.id,
            value: Some(subscription_serde.encode(&subscription).expect("encode")),
            placement: Placement::ByKey,
            envelope: &Envelope::originated("bench/0"),
        })
        .await
        .expect("subscription written");

    let mut publisher = platform.start("eddy-webhook-publisher", "publisher-0", &[]);
    let mut sender = platform.start(
        "eddy-webhook-sender",
        "sender-0",
        &[
            ("EDDY_WEBHOOK_ALLOW_LOOPBACK", "true"),
            ("EDDY_LOG_LEVEL", "warn"),
        ],
    );
    publisher.wait_ready(Duration::from_secs(120)).await;
    sender.wait_ready(Duration::from_secs(120)).await;
    let tags = std::sync::Arc::new(Tags {
        writer,
        serde: AvroSerde::for_topic(&registry, &tags_topic)
            .await
            .expect("serde"),
        topic: tags_topic,
    });

    // 1. Throughput.
    let started = now_millis();
    futures::future::join_all((0..events).map(|index| {
        let tags = &tags;
        async move { tags.write(&format!("burst-{index:06}")).await }
    }))
    .await;
    let written = now_millis();
    let deliveries = receiver
        .wait_for(
            "bench",
            |deliveries| {
                deliveries
                    .iter()
                    .filter(|delivery| delivery.acknowledged())
                    .count()
                    >= events
            },
            Duration::from_secs(600),
        )
        .await;
    let first = deliveries
        .iter()
        .map(|delivery| delivery.received_at_ms)
        .min()
        .unwrap_or(0);
    let last = deliveries
        .iter()
        .map(|delivery| delivery.received_at_ms)
        .max()
        .unwrap_or(0);
    let summary = receiver.summary("bench").await;
    println!(
        "throughput: {events} events written in {} ms; delivered from {} ms to {} ms after the first write: {:.0} deliveries/s ({} duplicates)",
        written - started,
        first - started,
        last - started,
        events as f64 * 1000.0 / (last - first).max(1) as f64,
        summary.duplicate_acknowledgements,
    );
    let burst_duplicates = summary.duplicate_acknowledgements;
    receiver.clear("bench").await;

    // 2. Latency at a steady rate.
    let total = (rate * seconds) as usize;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let paced_start = Instant::now();
    let mut writes = tokio::task::JoinSet::new();
    for index in 0..total {
        ticker.tick().await;
        let tags = std::sync::Arc::clone(&tags);
        writes.spawn(async move { tags.write(&format!("steady-{index:06}")).await });
    }
    while writes.join_next().await.is_some() {}
    let paced = paced_start.elapsed();
    receiver
        .wait_for(
            "bench",
            |deliveries| {
                deliveries
                    .iter()
                    .filter(|delivery| delivery.acknowledged())
                    .count()
                    >= total
            },
            Duration::from_secs(600),
        )
        .await;
    let summary = receiver.summary("bench").await;
    println!(
        "latency at {rate} events/s: {total} events written in {:.1} s; change to delivery p50 {:?} ms, p99 {:?} ms, max {:?} ms ({} duplicates)",
        paced.as_secs_f64(),
        summary.latency_ms.p50,
        summary.latency_ms.p99,
        summary.latency_ms.max,
        summary.duplicate_acknowledgements,
    );
    let (p50, p99, max) = publisher_hop(&platform, &registry, "steady-");
    println!(
        "  of which change to event on the events topic (the publisher's hop): p50 {p50} ms, p99 {p99} ms, max {max} ms"
    );

    if let Ok(output) = std::env::var("EDDY_BENCH_OUTPUT") {
        let results = serde_json::json!({
            "burst_events": events,
            "deliveries_per_second": (events as f64 * 1000.0 / (last - first).max(1) as f64).round(),
            "burst_duplicates": burst_duplicates,
            "steady_rate": rate,
            "steady_events": total,
            "latency_p50_ms": summary.latency_ms.p50,
            "latency_p99_ms": summary.latency_ms.p99,
            "latency_max_ms": summary.latency_ms.max,
            "steady_duplicates": summary.duplicate_acknowledgements,
            "publisher_hop_p50_ms": p50,
            "publisher_hop_p99_ms": p99,
        });
        std::fs::write(&output, format!("{results:#}\n"))
            .unwrap_or_else(|error| panic!("writing {output}: {error}"));
    }
}
