//! Throughput and latency of eddy-streams against the local broker (a benchmark, not a test):
//! stateless map and stateful count records/s on one instance, restart to RUNNING with a kept
//! state dir, restore records/s into an empty state dir, and store get latency.
//!
//! Run: `scripts/stack start && cargo bench -p eddy-streams --bench streams`
//! (`EDDY_BENCH_RECORDS`, default 1,000,000; `EDDY_BENCH_KEYS`, default 100,000). With
//! `EDDY_BENCH_OUTPUT` set, the results also go to that file as JSON (`scripts/bench`).

use std::time::{Duration, Instant};

use eddy_streams::{
    AppState, BytesSerde, JsonSerde, StreamsApp, StreamsBuilder, StreamsConfig, StringSerde,
};
use eddy_testkit::{TestNamespace, TopicSpec};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const DEADLINE: Duration = Duration::from_secs(600);

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
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let key = format!("key-{}", state % keys);
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
        });
        std::fs::write(&output, format!("{results:#}\n"))
            .unwrap_or_else(|error| panic!("writing {output}: {error}"));
    }
}
