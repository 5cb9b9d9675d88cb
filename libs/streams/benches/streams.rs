//! Throughput and latency of eddy-streams against the local broker (a benchmark, not a test):
//! stateless map and stateful count records/s on one instance, restart to RUNNING with a kept
//! state dir, restore records/s into an empty state dir, store get latency, and under
//! exactly-once the time from a record's acknowledgement to its count showing in a query.
//!
//! Run: `scripts/stack start && cargo bench -p eddy-streams --bench streams`
//! (`EDDY_BENCH_RECORDS`, default 1,000,000; `EDDY_BENCH_KEYS`, default 100,000). With
//! `EDDY_BENCH_OUTPUT` set, the results also go to that file as JSON (`scripts/bench`).

use std::time::{Duration, Instant};

use eddy_streams::{
    AppState, BytesSerde, JsonSerde, ProcessingGuarantee, StreamsApp, StreamsBuilder,
    StreamsConfig, StringSerde,
};
use eddy_testkit::{TestNamespace, TopicSpec};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, FutureProducer, FutureRecord, Producer, ThreadedProducer,
};

const DEADLINE: Duration = Duration::from_secs(600);
/// Exactly-once probes: records sent one at a time, each timed to its count in a query.
const EXACTLY_ONCE_PROBES: u64 = 100;
const EXACTLY_ONCE_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Produces `records` records (keys `key-<i % keys>`, 8-byte values) as fast as the idempotent
/// producer takes them; returns records/s.
fn produce(namespace: &TestNamespace, topic: &str, records: u64, keys: u64) -> f64 {
    let mut config = namespace.kafka().producer_config("bench-producer");
    config.set("linger.ms", "20").set("batch.size", "1000000");
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().expect("producer");
    let began = Instant::now();
    for index in 0..records {
        let key = format!("key-{}", index % keys);
        let value = index.to_le_bytes();
        let mut record = BaseRecord::<str, [u8]>::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => panic!("produce: {error}"),
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    records as f64 / began.elapsed().as_secs_f64()
}

struct Run {
    app: StreamsApp,
    /// From StreamsApp::start until RUNNING.
    start_to_running: Duration,
}

async fn start(namespace: &TestNamespace, builder: StreamsBuilder, state: &str) -> Run {
    let mut config = StreamsConfig::new(namespace.kafka(), namespace.state_dir(state));
    config.commit_interval = Duration::from_secs(1);
    start_with(config, builder).await
}

async fn start_with(config: StreamsConfig, builder: StreamsBuilder) -> Run {
    let began = Instant::now();
    let app = StreamsApp::start(config, builder.build())
        .await
        .expect("start");
    assert_eq!(
        app.wait_for_state(AppState::Running, DEADLINE).await,
        AppState::Running
    );
    Run {
        app,
        start_to_running: began.elapsed(),
    }
}

/// Waits until `records` are processed; returns records/s from RUNNING to the last one.
async fn throughput(run: &Run, records: u64) -> f64 {
    let began = Instant::now();
    while run.app.metrics().processed_records() < records {
        assert!(began.elapsed() < DEADLINE, "processing took too long");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    records as f64 / began.elapsed().as_secs_f64()
}

/// Under exactly-once a store write shows in queries once its transaction has committed: sends
/// [`EXACTLY_ONCE_PROBES`] records to a count, one at a time at pseudo-random points of the
/// commit cycle, and times each from the broker's acknowledgement to its key's count in a
/// query. Returns the sorted times and the mean commit duration.
async fn exactly_once_visibility(namespace: &TestNamespace) -> (Vec<Duration>, Duration) {
    let input = namespace
        .create_topic("exactly-once-input", TopicSpec::new(1))
        .await;
    let mut builder = StreamsBuilder::new(namespace.group("exactly-once-count"));
    let store = builder.store("counts", StringSerde, JsonSerde::<u64>::new());
    builder
        .stream(&input, StringSerde, BytesSerde)
        .group_by_key()
        .count(&store);
    let mut config = StreamsConfig::new(namespace.kafka(), namespace.state_dir("exactly-once"));
    config.guarantee = ProcessingGuarantee::ExactlyOnce;
    config.commit_interval = EXACTLY_ONCE_COMMIT_INTERVAL;
    let run = start_with(config, builder).await;
    let queries = run.app.queries();
    let producer: FutureProducer = namespace
        .kafka()
        .producer_config("bench-exactly-once")
        .create()
        .expect("producer");
    let (commits_before, commit_seconds_before) = (
        run.app.metrics().commits(),
        run.app.metrics().commit_seconds(),
    );
    let mut times = Vec::new();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for probe in 0..EXACTLY_ONCE_PROBES {
        // Pacing, not synchronisation: each probe lands at another point of the commit cycle.
        let random = xorshift(&mut state);
        tokio::time::sleep(EXACTLY_ONCE_COMMIT_INTERVAL.mul_f64((random % 1000) as f64 / 1000.0))
            .await;
        let key = format!("probe-{probe}");
        producer
            .send(
                FutureRecord::to(&input).key(&key).payload(&[0_u8; 8]),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(error, _)| panic!("probe {probe}: {error}"));
        let acknowledged = Instant::now();
        while queries.get(&store, &key).expect("get").is_none() {
            assert!(
                acknowledged.elapsed() < DEADLINE,
                "probe {probe} not counted after {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(acknowledged.elapsed());
    }
    let metrics = run.app.metrics();
    let commits = (metrics.commits() - commits_before).max(1);
    let mean_commit = Duration::from_secs_f64(
        (metrics.commit_seconds() - commit_seconds_before) / commits as f64,
    );
    run.app.stop().await.expect("stop");
    times.sort();
    (times, mean_commit)
}

/// The next number of a xorshift64 sequence (spread, not secure).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let records = setting("EDDY_BENCH_RECORDS", 1_000_000);
    let keys = setting("EDDY_BENCH_KEYS", 100_000);
    let namespace = TestNamespace::new("bench");
    let input = namespace.create_topic("input", TopicSpec::new(1)).await;
    let mapped = namespace.create_topic("mapped", TopicSpec::new(1)).await;
    println!(
        "records {records}, distinct keys {keys}, 1 partition, at-least-once, commit every 1 s"
    );

    let produce_rate = produce(&namespace, &input, records, keys);
    println!("produce (idempotent, acks=all): {produce_rate:.0} records/s");

    // Stateless: map each value and write it to an output topic.
    let mut builder = StreamsBuilder::new(namespace.group("map"));
    let output = builder.output(&mapped, StringSerde, BytesSerde);
    builder
        .stream(&input, StringSerde, BytesSerde)
        .map_values(|_, value| value.iter().rev().copied().collect::<Vec<u8>>())
        .to(&output);
    let run = start(&namespace, builder, "map").await;
    let map_rate = throughput(&run, records).await;
    run.app.stop().await.expect("stop");
    println!("stateless map -> output topic: {map_rate:.0} records/s");

    // Stateful: count per key into a changelogged RocksDB store.
    let count_builder = || {
        let mut builder = StreamsBuilder::new(namespace.group("count"));
        let store = builder.store("counts", StringSerde, JsonSerde::<u64>::new());
        builder
            .stream(&input, StringSerde, BytesSerde)
            .group_by_key()
            .count(&store);
        (builder, store)
    };
    let (builder, _) = count_builder();
    let run = start(&namespace, builder, "count").await;
    let count_rate = throughput(&run, records).await;
    run.app.stop().await.expect("stop");
    println!("stateful count (store + changelog): {count_rate:.0} records/s");

    // Restart with the state dir kept: only the (empty) tail to restore.
    let (builder, store) = count_builder();
    let run = start(&namespace, builder, "count").await;
    let warm_restart = run.start_to_running;
    let warm_restored = run.app.metrics().restored_records();
    println!(
        "restart with kept state dir: RUNNING after {} ms, {warm_restored} records restored",
        warm_restart.as_millis()
    );

    // Store get latency through the query API, on the kept state.
    let queries = run.app.queries();
    let mut latencies = Vec::with_capacity(100_000);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..100_000 {
        let random = xorshift(&mut state);
        let key = format!("key-{}", random % keys);
        let began = Instant::now();
        let value = queries.get(&store, &key).expect("get");
        latencies.push(began.elapsed());
        assert!(value.is_some(), "{key} has a count");
    }
    latencies.sort();
    let (get_p50, get_p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    println!(
        "store get ({keys} keys): p50 {:.1} µs, p99 {:.1} µs",
        get_p50.as_secs_f64() * 1e6,
        get_p99.as_secs_f64() * 1e6
    );
    run.app.stop().await.expect("stop");

    // Restore into an empty state dir: every changelog record.
    let (builder, _) = count_builder();
    let run = start(&namespace, builder, "count-cold").await;
    let restored = run.app.metrics().restored_records();
    let restore_seconds = run.app.metrics().restore_seconds();
    println!(
        "cold restore: {restored} records in {:.2} s ({:.0} records/s), RUNNING after {} ms",
        restore_seconds,
        restored as f64 / restore_seconds,
        run.start_to_running.as_millis()
    );
    run.app.stop().await.expect("stop");

    let (visible, mean_commit) = exactly_once_visibility(&namespace).await;
    let millis = |duration: Duration| (duration.as_secs_f64() * 1e4).round() / 10.0;
    let (visible_p50, visible_p99) = (percentile(&visible, 0.50), percentile(&visible, 0.99));
    println!(
        "exactly-once, commit every {} ms: acknowledged -> counted in a query p50 {} ms, p99 {} ms; \
         mean commit {} ms",
        EXACTLY_ONCE_COMMIT_INTERVAL.as_millis(),
        millis(visible_p50),
        millis(visible_p99),
        millis(mean_commit)
    );

    if let Ok(output) = std::env::var("EDDY_BENCH_OUTPUT") {
        let micros = |duration: Duration| (duration.as_secs_f64() * 1e7).round() / 10.0;
        let results = serde_json::json!({
            "records": records,
            "keys": keys,
            "produce_per_second": produce_rate.round(),
            "map_per_second": map_rate.round(),
            "count_per_second": count_rate.round(),
            "warm_restart_ms": warm_restart.as_millis() as u64,
            "warm_restored_records": warm_restored,
            "get_p50_us": micros(get_p50),
            "get_p99_us": micros(get_p99),
            "cold_restored_records": restored,
            "cold_restore_per_second": (restored as f64 / restore_seconds).round(),
            "cold_start_to_running_ms": run.start_to_running.as_millis() as u64,
            "exactly_once": {
                "commit_interval_ms": EXACTLY_ONCE_COMMIT_INTERVAL.as_millis() as u64,
                "probes": visible.len(),
                "visible_p50_ms": millis(visible_p50),
                "visible_p99_ms": millis(visible_p99),
                "mean_commit_ms": millis(mean_commit),
            },
        });
        std::fs::write(&output, format!("{results:#}\n"))
            .unwrap_or_else(|error| panic!("writing {output}: {error}"));
    }
}
