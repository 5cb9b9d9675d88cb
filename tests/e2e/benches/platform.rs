//! The platform benchmark (issue #8): Eddy's components (release builds) on the local stack,
//! measured from the outside, and the Kafka Streams reference (`benches/kafka-streams`) on the
//! same broker and the same input. `scripts/bench` runs it and renders `docs/benchmarks.md`
//! from the JSON it writes; run alone:
//!
//! ```sh
//! cargo build --release --workspace --bins
//! EDDY_BENCH_KAFKA_STREAMS_JAR=$(benches/kafka-streams/build) \
//!   EDDY_BENCH_OUTPUT=/tmp/platform.json cargo bench -p eddy-e2e-tests --bench platform
//! ```
//!
//! Phases, in order (each reported in the JSON under its own key):
//!
//! 1. **footprint** (start): every component started on freshly provisioned topics; the time
//!    from spawning each to its `/ready`, and its RSS once all are ready (idle).
//! 2. **ingest**: closed-loop load on `/sources.webhook` (acks=all): 1 message per request,
//!    then 100 per request; accepted messages/s and request latency p50/p99. RSS of every
//!    component is sampled throughout (under load).
//! 3. **freshness**: open-loop ingest at 100/s, 1,000/s and the highest sustainable rate (the
//!    first of 90%, 70%, 50%, 35%, 25%, 15%, 10% of the lower of the 1-per-request ingest rate
//!    and the rate at which the service worked off the ingest phase's backlog, that the
//!    generator reaches and the service keeps up with); meanwhile 10 probe messages a second, each into a new
//!    conversation of a probe channel, are polled for every 10 ms until `/messages.list` shows
//!    the message and `/conversations.list` shows the conversation with it as last message.
//! 4. **load**: `EDDY_BENCH_MESSAGES` messages over `EDDY_BENCH_CONVERSATIONS` conversations
//!    written straight to the messages topic (as the source-api would), until the
//!    communication service has committed all of them.
//! 5. **queries**: closed-loop `/conversations.info`, `/messages.list` (random conversations)
//!    and `/conversations.list` (first page) on that data: requests/s, p50/p99.
//! 6. **restore**: the communication service stopped and started on its kept state dir
//!    (warm) and on an empty one (cold): time from spawn to `/ready`.
//! 7. **side by side**: the same topology on both engines: `communication-core` (the
//!    reference's topology on eddy-streams, `src/bin/communication_core.rs`) and the Kafka
//!    Streams reference each process the whole messages topic from the start under a new
//!    application id; then the real communication service does the same (reprocessing beside
//!    the running version, all seven stores). For each: start to ready, records/s until its
//!    consumer group has committed the end of the topic, changelog records written, key
//!    lookups/s and p99, RSS, and the cold restore of that state.
//!
//! Settings (environment): `EDDY_BENCH_OUTPUT` (the JSON's path, required),
//! `EDDY_BENCH_KAFKA_STREAMS_JAR` (required), `EDDY_BENCH_JAVA` (java),
//! `EDDY_BENCH_CONVERSATIONS` (100,000), `EDDY_BENCH_MESSAGES` (1,000,000),
//! `EDDY_BENCH_PARTITIONS` (4), `EDDY_BENCH_PHASE_SECONDS` (15, each ingest and freshness run),
//! `EDDY_BENCH_QUERY_SECONDS` (10), `EDDY_BENCH_CONCURRENCY` (32, ingest connections),
//! `EDDY_BENCH_QUERY_CONCURRENCY` (16).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eddy_e2e_tests::{Component, Core, MessageWriter, Platform, SYSTEM_TOKEN, contact_message};
use eddy_schemas::catalog::{MESSAGES, METADATA};
use eddy_schemas::{DeliveryState, Message, ids};
use eddy_testkit::process::{ComponentCommand, free_port};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};

/// How long any one component may take to become ready (a cold restore of the full data set
/// included) or a consumer group to catch up.
const PATIENCE: Duration = Duration::from_secs(600);
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
const PROBE_POLL: Duration = Duration::from_millis(10);
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
const PROBE_CHANNEL: &str = "+4930222";
/// Pages of the probe channel's list are read until they pass the probe's own time: small
/// pages keep each poll cheap for the service being measured.
const PROBE_PAGE_SIZE: u64 = 20;

struct Settings {
    output: PathBuf,
    kafka_streams_jar: PathBuf,
    java: String,
    conversations: u64,
    messages: u64,
    partitions: i32,
    phase: Duration,
    query_phase: Duration,
    concurrency: usize,
    query_concurrency: usize,
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .replace(['_', ','], "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let required = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("{name} is not set (scripts/bench sets it)"))
        };
        let kafka_streams_jar = required("EDDY_BENCH_KAFKA_STREAMS_JAR");
        assert!(
            kafka_streams_jar.is_file(),
            "EDDY_BENCH_KAFKA_STREAMS_JAR: no file at {} (build it with benches/kafka-streams/build)",
            kafka_streams_jar.display()
        );
        Settings {
            output: required("EDDY_BENCH_OUTPUT"),
            kafka_streams_jar,
            java: std::env::var("EDDY_BENCH_JAVA").unwrap_or_else(|_| "java".to_owned()),
            conversations: env_number("EDDY_BENCH_CONVERSATIONS", 100_000),
            messages: env_number("EDDY_BENCH_MESSAGES", 1_000_000),
            partitions: env_number("EDDY_BENCH_PARTITIONS", 4) as i32,
            phase: Duration::from_secs(env_number("EDDY_BENCH_PHASE_SECONDS", 15)),
            query_phase: Duration::from_secs(env_number("EDDY_BENCH_QUERY_SECONDS", 10)),
            concurrency: env_number("EDDY_BENCH_CONCURRENCY", 32) as usize,
            query_concurrency: env_number("EDDY_BENCH_QUERY_CONCURRENCY", 16) as usize,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// Latencies of one run: percentiles in milliseconds.
#[derive(Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn percentile_ms(&self, fraction: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
        Some(round2(sorted[index].as_secs_f64() * 1000.0))
    }

    fn summary(&self) -> Value {
        json!({
            "count": self.0.len(),
            "p50_ms": self.percentile_ms(0.50),
            "p99_ms": self.percentile_ms(0.99),
            "max_ms": self.percentile_ms(1.0),
        })
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Resident set size of a process, in MiB (from /proc).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(round2(kib / 1024.0))
}

/// Samples the RSS of named processes in the background and keeps each one's maximum.
struct RssSampler {
    peaks: Arc<Mutex<BTreeMap<String, f64>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(processes: Vec<(String, u32)>) -> RssSampler {
        let peaks = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let peaks = peaks.clone();
            let stop = stop.clone();
            async move {
                let mut ticker = tokio::time::interval(RSS_SAMPLE_INTERVAL);
                while !stop.load(Ordering::Relaxed) {
                    ticker.tick().await;
                    let mut peaks = peaks.lock().unwrap_or_else(PoisonError::into_inner);
                    for (name, pid) in &processes {
                        if let Some(rss) = rss_mib(*pid) {
                            let peak = peaks.entry(name.clone()).or_insert(0.0);
                            *peak = f64::max(*peak, rss);
                        }
                    }
                }
            }
        });
        RssSampler { peaks, stop, task }
    }

    async fn finish(self) -> BTreeMap<String, f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the RSS sampler ends");
        let peaks = self.peaks.lock().unwrap_or_else(PoisonError::into_inner);
        peaks.clone()
    }
}

/// The result of a closed-loop run.
struct LoadResult {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Latencies,
}

impl LoadResult {
    fn per_second(&self, per_request: u64) -> f64 {
        round2(
            (self.requests - self.errors) as f64 * per_request as f64 / self.elapsed.as_secs_f64(),
        )
    }
}

/// `concurrency` workers sending requests made by `request(worker, n)` back to back for
/// `duration`; a request counts as an error unless it answers 2xx.
async fn closed_loop<F>(concurrency: usize, duration: Duration, request: F) -> LoadResult
where
    F: Fn(usize, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut requests, mut errors, mut first_error) = (0, 0, None);
                let mut n = 0;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let outcome = request(worker, n).send().await;
                    n += 1;
                    requests += 1;
                    match outcome {
                        Ok(answer) if answer.status().is_success() => {
                            let _ = answer.bytes().await;
                            latencies.push(sent.elapsed());
                        }
                        Ok(answer) => {
                            errors += 1;
                            let status = answer.status();
                            let body = answer.text().await.unwrap_or_default();
                            first_error.get_or_insert(format!("{status}: {body}"));
                        }
                        Err(error) => {
                            errors += 1;
                            first_error.get_or_insert(error.to_string());
                        }
                    }
                }
                (requests, errors, first_error, latencies)
            })
        })
        .collect();
    let mut result = LoadResult {
        requests: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Latencies::default(),
    };
    for worker in workers {
        let (requests, errors, first_error, latencies) = worker.await.expect("load worker");
        result.requests += requests;
        result.errors += errors;
        result.first_error = result.first_error.or(first_error);
        result.latencies.0.extend(latencies);
    }
    result.elapsed = started.elapsed();
    result
}

fn load_summary(result: &LoadResult, per_request: u64) -> Value {
    json!({
        "seconds": round2(result.elapsed.as_secs_f64()),
        "requests": result.requests,
        "errors": result.errors,
        "first_error": result.first_error,
        "per_second": result.per_second(per_request),
        "requests_per_second": result.per_second(1),
        "latency": result.latencies.summary(),
    })
}

/// A consumer in `group` (never subscribed) for reading the group's committed offsets.
fn group_consumer(platform: &Platform, group: &str) -> BaseConsumer {
    platform
        .namespace
        .kafka()
        .consumer_config("bench-lag", group)
        .create()
        .expect("lag consumer")
}

/// The committed offsets of `consumer`'s group on `topic`, and the topic's end offsets, summed.
fn group_position(consumer: &BaseConsumer, topic: &str) -> (i64, i64) {
    group_partitions(consumer, topic)
        .into_iter()
        .fold((0, 0), |(position, end), (committed, high)| {
            (position + committed, end + high)
        })
}

/// Per partition of `topic`: the committed offset of `consumer`'s group (0 if none) and the
/// end offset.
fn group_partitions(consumer: &BaseConsumer, topic: &str) -> Vec<(i64, i64)> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut list = rdkafka::TopicPartitionList::new();
    let mut ends = Vec::new();
    for partition in metadata.topics()[0].partitions() {
        list.add_partition(topic, partition.id());
        let (_, high) = consumer
            .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
            .expect("watermarks");
        ends.push((partition.id(), high));
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    ends.into_iter()
        .map(|(partition, high)| {
            let position = committed
                .find_partition(topic, partition)
                .and_then(|element| element.offset().to_raw())
                .unwrap_or(0)
                .max(0);
            (position, high)
        })
        .collect()
}

/// Waits until consumer group `group` has committed the end of `topic` (as it is when called);
/// returns the end offset total and when the group got there. `slack` is how far short of
/// each partition's end still counts as the end: 1 for a topic written in transactions, whose
/// partitions may end with a commit marker (a control record consumers skip, so no committed
/// offset points past it).
async fn wait_caught_up_within(
    platform: &Platform,
    group: &str,
    topic: &str,
    slack: i64,
) -> (i64, Instant) {
    // One consumer for the whole wait: a new client per poll would compete with what is
    // measured.
    let consumer = group_consumer(platform, group);
    let ends: Vec<i64> = tokio::task::block_in_place(|| group_partitions(&consumer, topic))
        .into_iter()
        .map(|(_, end)| end)
        .collect();
    let started = Instant::now();
    loop {
        let partitions = tokio::task::block_in_place(|| group_partitions(&consumer, topic));
        let behind: i64 = partitions
            .iter()
            .zip(&ends)
            .map(|((committed, _), end)| (end - slack - committed).max(0))
            .sum();
        if behind == 0 {
            return (ends.iter().sum(), Instant::now());
        }
        assert!(
            started.elapsed() < PATIENCE,
            "group {group} {behind} records short of the end of {topic} after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_caught_up_within`] for a topic written without transactions.
async fn wait_caught_up(platform: &Platform, group: &str, topic: &str) -> (i64, Instant) {
    wait_caught_up_within(platform, group, topic, 0).await
}

// ---------------------------------------------------------------------------------------------
// The platform

struct Bench {
    settings: Settings,
    platform: Platform,
    http: reqwest::Client,
    report: serde_json::Map<String, Value>,
}

/// The registered source: its token and the ids of its two channels.
struct Source {
    token: String,
    channel_id: String,
    probe_channel_id: String,
}

struct Running {
    core: Core,
    others: Vec<Component>,
    source: Source,
}

impl Running {
    fn processes(&self) -> Vec<(String, u32)> {
        [
            &self.core.source_api,
            &self.core.communication,
            &self.core.unread_counter,
        ]
        .into_iter()
        .chain(self.others.iter())
        .map(|component| (component.settings.binary.clone(), component.process.pid()))
        .collect()
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

impl Bench {
    fn post(&self, base: &str, path: &str, token: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{base}{path}"))
            .header("authorization", bearer(token))
            .json(body)
    }

    async fn call(&self, base: &str, path: &str, token: &str, body: Value) -> Value {
        let answer = self
            .post(base, path, token, &body)
            .send()
            .await
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        let status = answer.status();
        let text = answer.text().await.expect("answer body");
        assert!(status.is_success(), "{path} answered {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}: {text}"))
    }

    /// Phase 1: every component started on empty topics; start to ready, idle RSS.
    async fn start_platform(&mut self) -> Running {
        let spawned = Instant::now();
        let core = Core::start(&self.platform).await;
        let mut others = vec![
            self.platform.start("eddy-admin", "admin-0", &[]),
            self.platform
                .start("eddy-webhook-publisher", "webhook-publisher-0", &[]),
            self.platform
                .start("eddy-webhook-sender", "webhook-sender-0", &[]),
        ];
        let backends = format!(
            "communication={};source-api={};admin={}",
            core.communication.base_url(),
            core.source_api.base_url(),
            others[0].base_url()
        );
        others.push(self.platform.start(
            "eddy-gateway",
            "gateway-0",
            &[("EDDY_GATEWAY_BACKENDS", backends.as_str())],
        ));
        for component in &mut others {
            component.wait_ready(PATIENCE).await;
        }
        println!("platform ready in {:?}", spawned.elapsed());
        // Start to ready of each on its own, from its log-independent readiness: restart each
        // one alone (topics exist, nothing to restore) and time spawn → /ready.
        let mut footprint = Vec::new();
        let mut core = core;
        let mut restarted = Vec::new();
        for component in [
            &mut core.source_api,
            &mut core.communication,
            &mut core.unread_counter,
        ]
        .into_iter()
        .chain(others.iter_mut())
        {
            component.process.terminate();
            component.process.wait_for_exit(Duration::from_secs(60));
            let mut again = self.platform.restart(component);
            let ready = again.wait_ready(PATIENCE).await;
            restarted.push((component.settings.binary.clone(), ready));
            *component = again;
        }
        let source = self.register_source(&core).await;
        let running = Running {
            core,
            others,
            source,
        };
        for (binary, ready) in restarted {
            let pid = running
                .processes()
                .into_iter()
                .find(|(name, _)| *name == binary)
                .map(|(_, pid)| pid)
                .expect("pid");
            footprint.push(json!({
                "component": binary,
                "start_to_ready_ms": ready.as_millis() as u64,
                "rss_idle_mib": rss_mib(pid),
            }));
        }
        self.report
            .insert("footprint".to_owned(), Value::Array(footprint));
        running
    }

    async fn register_source(&self, core: &Core) -> Source {
        let base = core.source_api.base_url();
        let created = self
            .call(
                &base,
                "/sources.create",
                SYSTEM_TOKEN,
                json!({"source_id": "bench", "action_endpoint": "http://127.0.0.1:9/unused"}),
            )
            .await;
        let mut channel_ids = Vec::new();
        for source_channel_id in ["+4930111", PROBE_CHANNEL] {
            let channel = self
                .call(
                    &base,
                    "/sources.channels.create",
                    SYSTEM_TOKEN,
                    json!({"source_id": "bench", "source_channel_id": source_channel_id}),
                )
                .await;
            channel_ids.push(channel["id"].as_str().expect("channel id").to_owned());
        }
        Source {
            token: created["token"].as_str().expect("token").to_owned(),
            channel_id: channel_ids[0].clone(),
            probe_channel_id: channel_ids[1].clone(),
        }
    }

    /// Phase 2: closed-loop ingest, 1 and 100 messages per request.
    async fn ingest(&mut self, running: &Running) -> f64 {
        let sampler = RssSampler::start(running.processes());
        let mut runs = Vec::new();
        let mut single_rate = 0.0;
        for (per_request, concurrency) in [(1_u64, self.settings.concurrency), (100, 8)] {
            let url = format!("{}/sources.webhook", running.core.source_api.base_url());
            let auth = bearer(&running.source.token);
            let http = self.http.clone();
            let result = closed_loop(concurrency, self.settings.phase, move |worker, n| {
                let messages: Vec<Value> = (0..per_request)
                    .map(|i| {
                        let id = format!("ingest-{per_request}-{worker}-{n}-{i}");
                        contact_message(
                            &format!("ingest-{}", (n * 31 + i) % 10_000),
                            &id,
                            1_763_800_000_000 + n as i64,
                        )
                    })
                    .collect();
                http.post(&url)
                    .header("authorization", &auth)
                    .json(&json!({ "messages": messages }))
            })
            .await;
            assert_eq!(
                result.errors, 0,
                "ingest answered errors: {:?}",
                result.first_error
            );
            if per_request == 1 {
                single_rate = result.per_second(1);
            }
            println!(
                "ingest, {per_request} per request: {} messages/s",
                result.per_second(per_request)
            );
            let mut summary = load_summary(&result, per_request);
            summary["messages_per_request"] = json!(per_request);
            summary["concurrency"] = json!(concurrency);
            runs.push(summary);
        }
        let peaks = sampler.finish().await;
        self.report.insert("ingest".to_owned(), Value::Array(runs));
        self.report
            .insert("rss_under_ingest_mib".to_owned(), json!(peaks));
        single_rate
    }

    /// The live communication service's application id (its consumer group): its default in
    /// the namespace.
    fn communication_group(&self) -> String {
        self.application_id(eddy_communication::APPLICATION)
    }

    /// A component's default application id (its consumer group) in the bench's namespace.
    fn application_id(&self, application: &str) -> String {
        eddy_schemas::CatalogArgs {
            namespace: self.platform.namespace.prefix().to_owned(),
            ..eddy_schemas::CatalogArgs::default()
        }
        .application_id(application)
    }

    /// Waits until the core has worked off everything ingested so far: the unread-counter has
    /// read the messages topic to its end (its counts are committed with its offsets), then
    /// the communication service both the messages topic and the metadata topic where those
    /// counts land. Returns when it got there.
    async fn wait_core_idle(&self) -> Instant {
        let messages = self.platform.topic(MESSAGES);
        let metadata = self.platform.topic(METADATA);
        let unread_counter = self.application_id(eddy_unread_counter::APPLICATION);
        let communication = self.communication_group();
        wait_caught_up(&self.platform, &unread_counter, &messages).await;
        wait_caught_up(&self.platform, &communication, &messages).await;
        let (_, idle) = wait_caught_up_within(&self.platform, &communication, &metadata, 1).await;
        idle
    }

    /// Phase 3: freshness at fixed rates while probes measure ingest → visible.
    async fn freshness(&mut self, running: &Running, single_rate: f64) {
        let messages_topic = self.platform.topic(MESSAGES);
        let group = self.communication_group();
        // The ingest phase left a backlog: how fast the core works it off (the messages, and
        // the unread counts the unread-counter derives from them) is its processing rate under
        // this machine's load, and caps the rate it can sustain.
        let (backlog_start, end) = tokio::task::block_in_place(|| {
            group_position(&group_consumer(&self.platform, &group), &messages_topic)
        });
        let catch_up_started = Instant::now();
        let caught_up = self.wait_core_idle().await;
        let catch_up = caught_up - catch_up_started;
        let catch_up_rate = (end - backlog_start) as f64 / catch_up.as_secs_f64().max(0.001);
        println!("the core worked off the ingest backlog at {catch_up_rate:.0} messages/s");
        self.report.insert(
            "ingest_backlog".to_owned(),
            json!({
                "records": end - backlog_start,
                "seconds": round2(catch_up.as_secs_f64()),
                "records_per_second": round2(catch_up_rate),
            }),
        );
        // Each run starts on an idle core: a backlog left by the one before would be measured
        // as this one's latency.
        let mut runs = Vec::new();
        for rate in [100.0, 1000.0] {
            runs.push(self.freshness_run(running, rate, "fixed").await);
            self.wait_core_idle().await;
        }
        // Candidates below both the ingest rate and the backlog rate (messages topic records;
        // the service also works through about one unread-counter metadata record per message).
        let ceiling = single_rate.min(catch_up_rate);
        let mut sustainable = None;
        for fraction in [0.9, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1] {
            let rate = (ceiling * fraction).round().max(10.0);
            let run = self
                .freshness_run(running, rate, "highest sustainable")
                .await;
            self.wait_core_idle().await;
            let achieved = run["achieved_per_second"].as_f64().unwrap_or(0.0);
            let p99 = run["messages_list"]["p99_ms"].as_f64().unwrap_or(f64::MAX);
            let kept_up = achieved >= rate * 0.95 && p99 < 1000.0;
            println!(
                "freshness at {rate}/s: achieved {achieved}/s, p99 {p99} ms, kept up: {kept_up}"
            );
            if kept_up {
                sustainable = Some(run);
                break;
            }
            runs.push(json!({"rate": rate, "kind": "not sustained", "details": run}));
        }
        // None sustained is a result too (the report says so), not a reason to lose the run.
        runs.extend(sustainable);
        self.report
            .insert("freshness".to_owned(), Value::Array(runs));
    }

    async fn freshness_run(&self, running: &Running, rate: f64, kind: &str) -> Value {
        let source_api = running.core.source_api.base_url();
        let communication = running.core.communication.base_url();
        let started = Instant::now();
        let deadline = started + self.settings.phase;
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let run_tag = format!("fresh{}", rate as u64);
        // The background load: one message per request, at `rate`.
        let load = tokio::spawn({
            let http = self.http.clone();
            let url = format!("{source_api}/sources.webhook");
            let auth = bearer(&running.source.token);
            let (sent, failed) = (sent.clone(), failed.clone());
            let run_tag = run_tag.clone();
            async move {
                let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut requests = tokio::task::JoinSet::new();
                let mut n = 0_u64;
                while Instant::now() < deadline {
                    ticker.tick().await;
                    let message = contact_message(
                        &format!("{run_tag}-{}", n % 10_000),
                        &format!("{run_tag}-{n}"),
                        1_763_900_000_000 + n as i64,
                    );
                    let request = http
                        .post(&url)
                        .header("authorization", &auth)
                        .json(&json!({ "messages": [message] }));
                    let (sent, failed) = (sent.clone(), failed.clone());
                    requests.spawn(async move {
                        match request.send().await {
                            Ok(answer) if answer.status().is_success() => {
                                sent.fetch_add(1, Ordering::Relaxed)
                            }
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    });
                    n += 1;
                    while requests.try_join_next().is_some() {}
                }
                while requests.join_next().await.is_some() {}
            }
        });
        // The probes: a new conversation each, on the probe channel.
        let mut probes = tokio::task::JoinSet::new();
        let mut probe_ticker = tokio::time::interval(PROBE_INTERVAL);
        let mut n = 0;
        while Instant::now() < deadline {
            probe_ticker.tick().await;
            let probe = Probe {
                http: self.http.clone(),
                source_api: source_api.clone(),
                communication: communication.clone(),
                source_token: running.source.token.clone(),
                probe_channel_id: running.source.probe_channel_id.clone(),
                source_conversation_id: format!("{run_tag}-probe-{n}"),
            };
            probes.spawn(probe.run());
            n += 1;
        }
        load.await.expect("load task");
        let elapsed = started.elapsed();
        let (mut listed, mut updated) = (Latencies::default(), Latencies::default());
        while let Some(outcome) = probes.join_next().await {
            let (messages_list, conversations_list) = outcome.expect("probe task");
            listed.0.push(messages_list);
            updated.0.push(conversations_list);
        }
        json!({
            "rate": rate,
            "kind": kind,
            "seconds": round2(elapsed.as_secs_f64()),
            "achieved_per_second": round2(sent.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()),
            "failed_requests": failed.load(Ordering::Relaxed),
            "probes": listed.0.len(),
            "messages_list": listed.summary(),
            "conversations_list": updated.summary(),
        })
    }

    /// Phase 4: the data set for the queries, written straight to the messages topic.
    async fn load(&mut self, running: &Running) {
        let topic = self.platform.topic(MESSAGES);
        let writer = MessageWriter::new(&self.platform, "bench-load").await;
        let channel_id = running.source.channel_id.clone();
        let (conversations, total) = (self.settings.conversations, self.settings.messages);
        let started = Instant::now();
        let chunk = 20_000;
        let mut next = 0;
        while next < total {
            let end = (next + chunk).min(total);
            let messages: Vec<Message> = (next..end)
                .map(|n| {
                    let conversation = n % conversations;
                    let source_conversation_id = format!("load-{conversation}");
                    let source_message_id = format!("load-m{n}");
                    Message {
                        id: ids::message_id(&channel_id, &source_message_id),
                        conversation_id: ids::conversation_id(&channel_id, &source_conversation_id),
                        channel_id: channel_id.clone(),
                        source: "bench".to_owned(),
                        sender_id: source_conversation_id.clone(),
                        source_recipient_id: None,
                        source_message_id: Some(source_message_id),
                        is_from_contact: true,
                        delivery_state: DeliveryState::Delivered,
                        content: json!({"text": format!("load message {n}: a line of text as people send it")}).to_string(),
                        sent_at: 1_764_000_000_000 + n as i64,
                        updated_at: None,
                        source_conversation_id: Some(source_conversation_id),
                    }
                })
                .collect();
            writer.write(&messages).await;
            next = end;
        }
        let written = started.elapsed();
        println!("loaded {total} messages in {written:?}");
        let group = self.communication_group();
        let (end, caught_up) = wait_caught_up(&self.platform, &group, &topic).await;
        // The queries run on an idle core: the unread counts of the loaded (contact) messages
        // applied too.
        let idle = self.wait_core_idle().await;
        self.report.insert(
            "load".to_owned(),
            json!({
                "messages": total,
                "conversations": conversations,
                "topic_records": end,
                "write_seconds": round2(written.as_secs_f64()),
                "written_per_second": round2(total as f64 / written.as_secs_f64()),
                "committed_by_communication_seconds": round2((caught_up - started).as_secs_f64()),
                "core_idle_seconds": round2((idle - started).as_secs_f64()),
            }),
        );
    }

    /// Phase 5: closed-loop queries on the loaded data.
    async fn queries(&mut self, running: &Running) {
        let base = running.core.communication.base_url();
        let channel_id = running.source.channel_id.clone();
        let conversations = self.settings.conversations;
        let sampler = RssSampler::start(vec![(
            "eddy-communication".to_owned(),
            running.core.communication.process.pid(),
        )]);
        let mut runs = Vec::new();
        for path in [
            "/conversations.info",
            "/messages.list",
            "/conversations.list",
        ] {
            let http = self.http.clone();
            let url = format!("{base}{path}");
            let channel_id = channel_id.clone();
            let result = closed_loop(
                self.settings.query_concurrency,
                self.settings.query_phase,
                move |worker, n| {
                    let pick = (worker as u64 * 7_919 + n * 104_729) % conversations;
                    let conversation_id =
                        ids::conversation_id(&channel_id, &format!("load-{pick}"));
                    let body = match path {
                        "/conversations.list" => json!({}),
                        _ => json!({ "conversation_id": conversation_id }),
                    };
                    http.post(&url)
                        .header("authorization", bearer(SYSTEM_TOKEN))
                        .json(&body)
                },
            )
            .await;
            assert_eq!(
                result.errors, 0,
                "{path} answered errors: {:?}",
                result.first_error
            );
            println!("{path}: {} requests/s", result.per_second(1));
            let mut summary = load_summary(&result, 1);
            summary["endpoint"] = json!(path);
            summary["concurrency"] = json!(self.settings.query_concurrency);
            runs.push(summary);
        }
        let peaks = sampler.finish().await;
        self.report.insert("queries".to_owned(), Value::Array(runs));
        self.report.insert(
            "rss_communication_under_queries_mib".to_owned(),
            json!(peaks.get("eddy-communication")),
        );
        // A check that the data is what was loaded: the total the list reports.
        let list = self
            .call(&base, "/conversations.list", SYSTEM_TOKEN, json!({}))
            .await;
        let total = list["pagination_data"]["total"].as_u64().unwrap_or(0);
        assert!(
            total >= conversations,
            "/conversations.list reports {total} conversations, fewer than the {conversations} loaded"
        );
    }

    /// Phase 6: the communication service restarted on its kept state dir, then on an empty one.
    async fn restore(&mut self, running: &mut Running) {
        let state_dir = running.core.communication.settings.state_dir.clone();
        let communication = &mut running.core.communication;
        communication.process.terminate();
        communication
            .process
            .wait_for_exit(Duration::from_secs(120));
        let state_bytes = dir_bytes(&state_dir);
        let mut warm = self.platform.restart(communication);
        let warm_ready = warm.wait_ready(PATIENCE).await;
        warm.process.terminate();
        warm.process.wait_for_exit(Duration::from_secs(120));
        std::fs::remove_dir_all(&state_dir).expect("state dir removed");
        let mut cold = self.platform.restart(&warm);
        let cold_ready = cold.wait_ready(PATIENCE).await;
        println!("communication restart: warm {warm_ready:?}, cold {cold_ready:?}");
        *communication = cold;
        self.report.insert(
            "restore".to_owned(),
            json!({
                "component": "eddy-communication",
                "state_dir_mib": round2(state_bytes as f64 / 1_048_576.0),
                "warm_ms": warm_ready.as_millis() as u64,
                "cold_ms": cold_ready.as_millis() as u64,
            }),
        );
    }

    /// Phase 7, Eddy's side: a new application (its own group and changelogs) of `binary`
    /// processing the whole messages topic from the start, beside the running service; then
    /// its lookups and its cold restore. `lookup` makes the lookup request for a conversation;
    /// with `reads_metadata` processing ends when the metadata topic is done too.
    async fn eddy_side(
        &mut self,
        running: &Running,
        binary: &str,
        what: &str,
        env: &[(&str, &str)],
        lookup: LookupRequest,
        reads_metadata: bool,
    ) -> Value {
        let topic = self.platform.topic(MESSAGES);
        let application_id = format!("{}-{binary}-reprocess", self.communication_group());
        let mut env = env.to_vec();
        env.push(("EDDY_APPLICATION_ID", application_id.as_str()));
        let spawned = Instant::now();
        let mut reprocess = self
            .platform
            .start(binary, &format!("{binary}-reprocess"), &env);
        let ready = reprocess.wait_ready(PATIENCE).await;
        let sampler = RssSampler::start(vec![("reprocess".to_owned(), reprocess.process.pid())]);
        let (records, mut caught_up) =
            wait_caught_up(&self.platform, &application_id, &topic).await;
        if reads_metadata {
            let metadata = self.platform.topic(METADATA);
            (_, caught_up) =
                wait_caught_up_within(&self.platform, &application_id, &metadata, 1).await;
        }
        let rss_processing = sampler.finish().await.get("reprocess").copied();
        let processing = caught_up - spawned;
        let lookups = self.lookups(reprocess.base_url(), lookup, running).await;
        let rss = rss_mib(reprocess.process.pid());
        reprocess.process.terminate();
        reprocess.process.wait_for_exit(Duration::from_secs(120));
        let changelog_records = self.changelog_records(&application_id);
        std::fs::remove_dir_all(&reprocess.settings.state_dir).expect("state dir removed");
        let mut cold = self.platform.restart(&reprocess);
        let cold_ready = cold.wait_ready(PATIENCE).await;
        cold.process.terminate();
        cold.process.wait_for_exit(Duration::from_secs(120));
        json!({
            "what": what,
            "start_to_ready_ms": ready.as_millis() as u64,
            "records": records,
            "processing_seconds": round2(processing.as_secs_f64()),
            "records_per_second": round2(records as f64 / processing.as_secs_f64()),
            "changelog_records": changelog_records,
            "lookup": lookups,
            "rss_processing_peak_mib": rss_processing,
            "rss_after_mib": rss,
            "cold_restore_ms": cold_ready.as_millis() as u64,
        })
    }

    /// Records in the changelog topics of `application_id` (what a cold restore reads, before
    /// the broker compacts them), summed over its stores and partitions.
    fn changelog_records(&self, application_id: &str) -> i64 {
        let consumer = group_consumer(&self.platform, "bench-changelogs");
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .expect("metadata");
        let prefix = format!("{application_id}-");
        let mut total = 0;
        for topic in metadata.topics() {
            if !(topic.name().starts_with(&prefix) && topic.name().ends_with("-changelog")) {
                continue;
            }
            for partition in topic.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(topic.name(), partition.id(), Duration::from_secs(10))
                    .expect("watermarks");
                total += high - low;
            }
        }
        total
    }

    /// Phase 7, the reference: the Kafka Streams application on the same topic.
    async fn kafka_streams_side(&mut self, running: &Running) -> Value {
        let topic = self.platform.topic(MESSAGES);
        let application_id = format!("{}ks-reference", self.platform.namespace.prefix());
        let state_dir = self.platform.namespace.state_dir("kafka-streams");
        let port = free_port();
        let start = |bench: &Bench| {
            ComponentCommand::for_program(
                &bench.platform.namespace,
                "kafka-streams",
                &bench.settings.java,
            )
            .arg("-Xms256m")
            .arg("-Xmx256m")
            .arg("-jar")
            .arg(&bench.settings.kafka_streams_jar)
            .env(
                "BENCH_BOOTSTRAP_SERVERS",
                &bench.platform.namespace.stack().bootstrap_servers,
            )
            .env(
                "BENCH_REGISTRY_URL",
                &bench.platform.namespace.stack().schema_registry_url,
            )
            .env("BENCH_INPUT_TOPIC", &topic)
            .env("BENCH_APPLICATION_ID", &application_id)
            .env("BENCH_STATE_DIR", &state_dir)
            .env("BENCH_HTTP_PORT", port.to_string())
            .spawn()
        };
        let ready_url = format!("http://127.0.0.1:{port}/ready");
        let spawned = Instant::now();
        let mut process = start(self);
        let ready = wait_http_ok(&self.http, &ready_url, &mut process).await;
        let sampler = RssSampler::start(vec![("ks".to_owned(), process.pid())]);
        let (records, caught_up) = wait_caught_up(&self.platform, &application_id, &topic).await;
        let rss_processing = sampler.finish().await.get("ks").copied();
        let processing = caught_up - spawned;
        let lookups = self
            .lookups(
                format!("http://127.0.0.1:{port}"),
                LookupRequest::GetByKey,
                running,
            )
            .await;
        let rss = rss_mib(process.pid());
        process.terminate();
        process.wait_for_exit(Duration::from_secs(120));
        let changelog_records = self.changelog_records(&application_id);
        std::fs::remove_dir_all(&state_dir).expect("state dir removed");
        let mut cold = start(self);
        let cold_ready = wait_http_ok(&self.http, &ready_url, &mut cold).await;
        cold.terminate();
        cold.wait_for_exit(Duration::from_secs(120));
        json!({
            "what": "Kafka Streams reference (1 store, exactly_once_v2, commit interval 100 ms)",
            "start_to_ready_ms": ready.as_millis() as u64,
            "records": records,
            "processing_seconds": round2(processing.as_secs_f64()),
            "records_per_second": round2(records as f64 / processing.as_secs_f64()),
            "changelog_records": changelog_records,
            "lookup": lookups,
            "rss_processing_peak_mib": rss_processing,
            "rss_after_mib": rss,
            "cold_restore_ms": cold_ready.as_millis() as u64,
        })
    }

    /// Key lookups of random loaded conversations on the service at `base`: a closed loop of
    /// the query phase's length and concurrency.
    async fn lookups(&self, base: String, lookup: LookupRequest, running: &Running) -> Value {
        let http = self.http.clone();
        let channel_id = running.source.channel_id.clone();
        let conversations = self.settings.conversations;
        let result = closed_loop(
            self.settings.query_concurrency,
            self.settings.query_phase,
            move |worker, n| {
                let pick = (worker as u64 * 7_919 + n * 104_729) % conversations;
                let conversation_id = ids::conversation_id(&channel_id, &format!("load-{pick}"));
                match lookup {
                    LookupRequest::ConversationsInfo => http
                        .post(format!("{base}/conversations.info"))
                        .header("authorization", bearer(SYSTEM_TOKEN))
                        .json(&json!({ "conversation_id": conversation_id })),
                    LookupRequest::GetByKey => {
                        http.get(format!("{base}/conversations/{conversation_id}"))
                    }
                }
            },
        )
        .await;
        assert_eq!(
            result.errors, 0,
            "lookups ({lookup:?}): {:?}",
            result.first_error
        );
        load_summary(&result, 1)
    }
}

/// How a side of the comparison is asked for one conversation.
#[derive(Debug, Clone, Copy)]
enum LookupRequest {
    /// Eddy's API: `POST /conversations.info` with the system token.
    ConversationsInfo,
    /// The core topology's (either engine's): `GET /conversations/{id}`.
    GetByKey,
}

/// Polls `url` until it answers 200; the time since `process` was spawned (roughly: since
/// this was called right after). Panics with the log if the process exits.
async fn wait_http_ok(
    http: &reqwest::Client,
    url: &str,
    process: &mut eddy_testkit::process::ComponentProcess,
) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(answer) = http.get(url).timeout(Duration::from_secs(2)).send().await
            && answer.status() == 200
        {
            return started.elapsed();
        }
        assert!(
            process.is_running(),
            "{url}: the process exited:\n{}",
            process.output()
        );
        assert!(
            started.elapsed() < PATIENCE,
            "{url}: not ready after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One freshness probe: ingest one message into a new conversation of the probe channel, then
/// poll until the communication service shows it.
struct Probe {
    http: reqwest::Client,
    source_api: String,
    communication: String,
    source_token: String,
    probe_channel_id: String,
    source_conversation_id: String,
}

impl Probe {
    /// (accepted → in /messages.list, accepted → last message in /conversations.list)
    async fn run(self) -> (Duration, Duration) {
        let sent_at = eddy_service::envelope::now_millis();
        let mut message = contact_message(
            &self.source_conversation_id,
            &format!("{}-m", self.source_conversation_id),
            sent_at,
        );
        message["source_channel_id"] = json!(PROBE_CHANNEL);
        let answer = self
            .http
            .post(format!("{}/sources.webhook", self.source_api))
            .header("authorization", bearer(&self.source_token))
            .json(&json!({ "messages": [message] }))
            .send()
            .await
            .expect("probe ingest");
        let accepted = Instant::now();
        let status = answer.status();
        let body: Value = answer.json().await.expect("probe answer");
        assert!(
            status.is_success(),
            "probe ingest answered {status}: {body}"
        );
        let message_id = body["messages"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no message id in {body}"))
            .to_owned();
        let conversation_id = body["messages"][0]["conversation_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no conversation id in {body}"))
            .to_owned();
        let listed = self
            .poll_until(
                "/messages.list",
                json!({"conversation_id": conversation_id}),
                accepted,
                |list| {
                    list["data"].as_array().is_some_and(|data| {
                        data.iter().any(|item| item["id"] == message_id.as_str())
                    })
                },
            )
            .await;
        let updated = self
            .poll_listed(&conversation_id, &message_id, sent_at, accepted)
            .await;
        (listed, updated)
    }

    /// Polls until the probe channel's `/conversations.list` shows `conversation_id` with
    /// `message_id` as its last message. The list is newest activity first, and newer probes
    /// come before this one, so each poll walks the pages until it finds the conversation, or
    /// reaches a conversation older than the probe's message (where the probe would have been
    /// listed), or the end. The first full run read every page of the channel on every poll of
    /// every waiting probe: the service spent its time on those scans and every freshness
    /// figure measured the probes' own load (p99 5-9 s even at 100 messages/s).
    async fn poll_listed(
        &self,
        conversation_id: &str,
        message_id: &str,
        sent_at: i64,
        accepted: Instant,
    ) -> Duration {
        loop {
            let mut cursor: Option<String> = None;
            loop {
                let mut body = json!({
                    "filters": {"channel_id": self.probe_channel_id},
                    "page_size": PROBE_PAGE_SIZE,
                });
                if let Some(cursor) = &cursor {
                    body["cursor"] = json!(cursor);
                }
                let answer = self
                    .http
                    .post(format!("{}/conversations.list", self.communication))
                    .header("authorization", bearer(SYSTEM_TOKEN))
                    .json(&body)
                    .send()
                    .await
                    .expect("probe poll");
                if answer.status() != 200 {
                    break;
                }
                let Ok(page) = answer.json::<Value>().await else {
                    break;
                };
                let shown = page["data"].as_array().is_some_and(|data| {
                    data.iter().any(|item| {
                        item["id"] == conversation_id && item["last_message"]["id"] == message_id
                    })
                });
                if shown {
                    return accepted.elapsed();
                }
                let passed_the_probe = page["data"].as_array().is_some_and(|data| {
                    data.iter().any(|item| {
                        item["last_message"]["sent_at"]
                            .as_str()
                            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                            .is_some_and(|at| at.timestamp_millis() < sent_at)
                    })
                });
                if passed_the_probe {
                    break;
                }
                match page["pagination_data"]["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
            assert!(
                accepted.elapsed() < PATIENCE,
                "probe {}: not in /conversations.list after {PATIENCE:?}",
                self.source_conversation_id
            );
            tokio::time::sleep(PROBE_POLL).await;
        }
    }

    async fn poll_until(
        &self,
        path: &str,
        body: Value,
        accepted: Instant,
        shows: impl Fn(&Value) -> bool,
    ) -> Duration {
        loop {
            let answer = self
                .http
                .post(format!("{}{path}", self.communication))
                .header("authorization", bearer(SYSTEM_TOKEN))
                .json(&body)
                .send()
                .await
                .expect("probe poll");
            let seen = answer.status() == 200
                && answer.json::<Value>().await.is_ok_and(|list| shows(&list));
            if seen {
                return accepted.elapsed();
            }
            assert!(
                accepted.elapsed() < PATIENCE,
                "probe {}: not in {path} after {PATIENCE:?}",
                self.source_conversation_id
            );
            tokio::time::sleep(PROBE_POLL).await;
        }
    }
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => dir_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split(':').nth(1))
        .map(|model| model.trim().to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total_kib: Option<f64> = memory
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok());
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu": model,
        "memory_gib": total_kib.map(|kib| round2(kib / 1_048_576.0)),
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let settings = Settings::from_env();
    let platform = Platform::provisioned("bench-platform", settings.partitions).await;
    let mut bench = Bench {
        report: serde_json::Map::new(),
        http: eddy_service::http::client_builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        platform,
        settings,
    };
    bench.report.insert("machine".to_owned(), machine());
    bench.report.insert(
        "settings".to_owned(),
        json!({
            "partitions": bench.settings.partitions,
            "conversations": bench.settings.conversations,
            "messages": bench.settings.messages,
            "phase_seconds": bench.settings.phase.as_secs(),
            "query_seconds": bench.settings.query_phase.as_secs(),
            "ingest_concurrency": bench.settings.concurrency,
            "query_concurrency": bench.settings.query_concurrency,
        }),
    );
    let started = Instant::now();
    let mut running = bench.start_platform().await;
    let single_rate = bench.ingest(&running).await;
    bench.freshness(&running, single_rate).await;
    bench.load(&running).await;
    bench.queries(&running).await;
    bench.restore(&mut running).await;
    let topic = bench.platform.topic(MESSAGES);
    let eddy = bench
        .eddy_side(
            &running,
            "communication-core",
            "the same topology on eddy-streams (1 store, exactly-once, commit interval 100 ms)",
            &[("EDDY_INPUT_TOPIC", topic.as_str())],
            LookupRequest::GetByKey,
            false,
        )
        .await;
    let kafka_streams = bench.kafka_streams_side(&running).await;
    let eddy_service = bench
        .eddy_side(
            &running,
            "eddy-communication",
            "eddy-communication (7 stores and the metadata topic, exactly-once, commit interval 100 ms)",
            &[],
            LookupRequest::ConversationsInfo,
            true,
        )
        .await;
    bench.report.insert(
        "side_by_side".to_owned(),
        json!({"eddy": eddy, "kafka_streams": kafka_streams, "eddy_service": eddy_service}),
    );
    bench.report.insert(
        "duration_seconds".to_owned(),
        json!(round2(started.elapsed().as_secs_f64())),
    );
    let text = serde_json::to_string_pretty(&Value::Object(bench.report)).expect("json");
    std::fs::write(&bench.settings.output, text + "\n")
        .unwrap_or_else(|error| panic!("writing {}: {error}", bench.settings.output.display()));
    println!(
        "platform benchmark done in {:?}; results in {}",
        started.elapsed(),
        bench.settings.output.display()
    );
}
