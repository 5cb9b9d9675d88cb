//! The end-to-end harness: a provisioned topic namespace on the real stack, the real component
//! binaries as processes, an HTTP client that records every exchange (checked against the
//! components' OpenAPI documents), and a programmable action endpoint standing in for a
//! messaging source.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use eddy_schemas::provision::provision;
use eddy_schemas::{Catalog, CatalogArgs, RegistryArgs, SchemaRegistry};
use eddy_testkit::process::{ComponentCommand, ComponentProcess, free_port};
use eddy_testkit::stack::repo_dir;
use eddy_testkit::{TestNamespace, python_tools};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};

pub mod receiver;
pub const SYSTEM_TOKEN: &str = "e2e-system-token-0123456789";
pub const SECRET_KEY: &str = "e2e-installation-secret-key-0123456789abcdef";
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A provisioned namespace: every catalog topic and schema under the test's own prefix.
#[derive(Debug)]
pub struct Platform {
    pub namespace: TestNamespace,
    pub catalog: Catalog,
    pub exchanges: Exchanges,
}

impl Platform {
    pub async fn provisioned(test_name: &str, partitions: i32) -> Self {
        let namespace = TestNamespace::new(test_name);
        let catalog = Catalog::new(&CatalogArgs {
            namespace: namespace.prefix().to_owned(),
            partitions,
            replication_factor: None,
        });
        let registry =
            SchemaRegistry::new(&RegistryArgs::new(&namespace.stack().schema_registry_url))
                .expect("registry client");
        let report = provision(&namespace.kafka(), &registry, &catalog, false)
            .await
            .expect("provisioning runs");
        assert!(report.is_clean(), "provisioning: {report:?}");
        Platform {
            namespace,
            catalog,
            exchanges: Exchanges::default(),
        }
    }

    /// The full name of a catalog dataset's topic.
    pub fn topic(&self, dataset: &str) -> String {
        self.catalog
            .name(dataset)
            .expect("catalog topic")
            .to_owned()
    }

    /// Starts workspace binary `binary` as instance `instance` with its own ports and state dir.
    pub fn start(&self, binary: &str, instance: &str, env: &[(&str, &str)]) -> Component {
        let settings = ComponentSettings {
            binary: binary.to_owned(),
            instance: instance.to_owned(),
            http_port: free_port(),
            admin_port: free_port(),
            state_dir: self.namespace.state_dir(instance),
            env: env
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        };
        self.spawn(settings)
    }

    /// Starts the component again with the same ports, state dir and settings.
    pub fn restart(&self, component: &Component) -> Component {
        self.spawn(component.settings.clone())
    }

    fn spawn(&self, settings: ComponentSettings) -> Component {
        let mut command = ComponentCommand::new(&self.namespace, &settings.binary)
            .log_as(
                &self.namespace,
                &format!("{}-{}", settings.binary, settings.instance),
            )
            .env("EDDY_TOPIC_NAMESPACE", self.namespace.prefix())
            .env("EDDY_SYSTEM_TOKEN", SYSTEM_TOKEN)
            .env("EDDY_SECRET_KEY", SECRET_KEY)
            .env(
                "EDDY_HTTP_ADDRESS",
                format!("127.0.0.1:{}", settings.http_port),
            )
            .env(
                "EDDY_ADVERTISED_ADDRESS",
                format!("127.0.0.1:{}", settings.http_port),
            )
            .env(
                "EDDY_ADMIN_ADDRESS",
                format!("127.0.0.1:{}", settings.admin_port),
            )
            .env("EDDY_STATE_DIR", &settings.state_dir)
            .env("EDDY_INSTANCE_ID", &settings.instance)
            .env("EDDY_COMMIT_INTERVAL", "100ms")
            .env("EDDY_LOG_FORMAT", "text");
        for (key, value) in &settings.env {
            command = command.env(key, value);
        }
        Component {
            process: command.spawn(),
            settings,
        }
    }

    /// A client of `component`'s API with the system token.
    pub fn api(&self, component: &Component) -> Api {
        Api {
            client: reqwest::Client::new(),
            base: component.base_url(),
            token: Some(SYSTEM_TOKEN.to_owned()),
            component: component.settings.binary.clone(),
            exchanges: self.exchanges.clone(),
        }
    }

    /// The end offset of every catalog topic (summed over partitions).
    pub fn end_offsets(&self) -> BTreeMap<String, i64> {
        let consumer: BaseConsumer = self
            .namespace
            .kafka()
            .consumer_config("e2e-offsets", "e2e-offsets")
            .create()
            .expect("consumer");
        let mut offsets = BTreeMap::new();
        for topic in &self.catalog.topics {
            let metadata = consumer
                .fetch_metadata(Some(&topic.name), Duration::from_secs(10))
                .expect("metadata");
            let mut sum = 0;
            for found in metadata
                .topics()
                .iter()
                .filter(|found| found.name() == topic.name)
            {
                for partition in found.partitions() {
                    let (_, high) = consumer
                        .fetch_watermarks(&topic.name, partition.id(), Duration::from_secs(10))
                        .expect("watermarks");
                    sum += high;
                }
            }
            offsets.insert(topic.name.clone(), sum);
        }
        offsets
    }
}

/// How a component was started (to start it again the same way).
#[derive(Debug, Clone)]
pub struct ComponentSettings {
    pub binary: String,
    pub instance: String,
    pub http_port: u16,
    pub admin_port: u16,
    pub state_dir: PathBuf,
    pub env: Vec<(String, String)>,
}

/// A running component.
#[derive(Debug)]
pub struct Component {
    pub process: ComponentProcess,
    pub settings: ComponentSettings,
}

impl Component {
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.settings.http_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.settings.admin_port)
    }

    /// Waits until `/ready` answers 200; returns how long that took. Panics with the log if the
    /// process exits or the timeout passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let started = Instant::now();
        let client = reqwest::Client::new();
        let url = format!("{}/ready", self.admin_url());
        loop {
            if let Ok(answer) = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && answer.status() == 200
            {
                return started.elapsed();
            }
            assert!(
                self.process.is_running(),
                "{} exited before it was ready:\n{}",
                self.settings.instance,
                self.process.output()
            );
            assert!(
                started.elapsed() < timeout,
                "{} not ready after {timeout:?}:\n{}",
                self.settings.instance,
                self.process.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One request and its answer, for the OpenAPI check.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub component: String,
    pub path: String,
    pub status: u16,
    pub body: Value,
}

/// Every exchange of a test.
#[derive(Debug, Clone, Default)]
pub struct Exchanges(Arc<Mutex<Vec<Exchange>>>);

impl Exchanges {
    fn push(&self, exchange: Exchange) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(exchange);
    }

    pub fn all(&self) -> Vec<Exchange> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// An API answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Panics unless the status is `expected`.
    #[track_caller]
    pub fn expect(self, expected: u16) -> Value {
        assert_eq!(self.status, expected, "unexpected answer: {}", self.body);
        self.body
    }
}

/// A client of one component's API.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
    component: String,
    exchanges: Exchanges,
}

impl Api {
    /// The same client with another token (`None`: no Authorization header).
    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    /// POSTs `body` as JSON to `path`.
    pub async fn call(&self, path: &str, body: Value) -> Answer {
        self.call_raw(path, body.to_string().into_bytes(), &[])
            .await
    }

    /// POSTs raw bytes with extra headers.
    pub async fn call_raw(&self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Answer {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(30))
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                panic!(
                    "{path} answered {status} with a body that is not JSON ({error}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        self.exchanges.push(Exchange {
            component: self.component.clone(),
            path: path.to_owned(),
            status,
            body: body.clone(),
        });
        Answer {
            status,
            headers,
            body,
        }
    }
}

/// Checks every recorded exchange of `component` against its OpenAPI document with the
/// `jsonschema` package: the status must be documented for the path, and the body must match
/// the documented schema. Panics listing every mismatch.
pub fn check_openapi(exchanges: &Exchanges, component: &str, document: &Path) {
    let recorded: Vec<Value> = exchanges
        .all()
        .into_iter()
        .filter(|exchange| exchange.component == component && !exchange.path.starts_with("/internal/"))
        .map(|exchange| {
            json!({"path": exchange.path, "status": exchange.status, "body": exchange.body})
        })
        .collect();
    assert!(
        !recorded.is_empty(),
        "no exchanges with {component} recorded"
    );
    let input = tempfile_with(&Value::Array(recorded).to_string());
    let script = repo_dir().join("tests/e2e/python/check_openapi.py");
    let output = std::process::Command::new(python_tools())
        .arg(&script)
        .arg(document)
        .arg(&input)
        .output()
        .expect("python runs");
    let _ = std::fs::remove_file(&input);
    assert!(
        output.status.success(),
        "answers of {component} do not match {}:\n{}{}",
        document.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes `text` to a temporary file (the caller removes it).
fn tempfile_with(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "eddy-e2e-{}-{}.json",
        std::process::id(),
        NEXT_FILE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, text).expect("temporary file");
    path
}

static NEXT_FILE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Verifies the signatures of `calls` with the official `standardwebhooks` package and that
/// a tampered body and a stale timestamp fail. Panics with the script's output otherwise.
pub fn verify_with_standard_webhooks(secret: &str, calls: &[ReceivedCall]) {
    let calls: Vec<Value> = calls
        .iter()
        .map(|call| {
            json!({
                "headers": call.headers.iter()
                    .map(|(name, value)| (name.as_str().to_owned(), Value::String(value.to_str().unwrap_or_default().to_owned())))
                    .collect::<serde_json::Map<String, Value>>(),
                "body": String::from_utf8_lossy(&call.body),
            })
        })
        .collect();
    let input = tempfile_with(&json!({"secret": secret, "calls": calls}).to_string());
    let script = repo_dir().join("tests/e2e/python/verify_signatures.py");
    let output = std::process::Command::new(python_tools())
        .arg(&script)
        .arg(&input)
        .output()
        .expect("python runs");
    let _ = std::fs::remove_file(&input);
    assert!(
        output.status.success(),
        "signature check failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A call the action endpoint received, and what it answered.
#[derive(Debug, Clone)]
pub struct ReceivedCall {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub answered: u16,
}

#[derive(Debug, Default)]
struct EndpointState {
    calls: Vec<ReceivedCall>,
    /// Statuses to answer next, in order; then 200.
    script: VecDeque<u16>,
}

/// A source's action endpoint: records calls and answers a scripted status sequence, then
/// 200 with `{"source_message_id": "sm-<n>"}`.
#[derive(Debug, Clone)]
pub struct ActionEndpoint {
    pub url: String,
    state: Arc<Mutex<EndpointState>>,
}

impl ActionEndpoint {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(EndpointState::default()));
        let router = Router::new()
            .route("/actions", post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        ActionEndpoint {
            url: format!("http://{address}/actions"),
            state,
        }
    }

    /// Answer these statuses to the next calls.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.lock().script.extend(statuses);
    }

    pub fn calls(&self) -> Vec<ReceivedCall> {
        self.lock().calls.clone()
    }

    /// Waits until at least `count` calls arrived; `None` if `timeout` passes first.
    pub async fn wait_for_calls(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Option<Vec<ReceivedCall>> {
        let deadline = Instant::now() + timeout;
        loop {
            let calls = self.calls();
            if calls.len() >= count {
                return Some(calls);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EndpointState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn receive(
    State(state): State<Arc<Mutex<EndpointState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let status = state.script.pop_front().unwrap_or(200);
    let number = state.calls.len() + 1;
    state.calls.push(ReceivedCall {
        headers,
        body,
        answered: status,
    });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if status.is_success() {
        (
            status,
            axum::Json(json!({"source_message_id": format!("sm-{number}")})),
        )
            .into_response()
    } else {
        (status, "scripted failure").into_response()
    }
}

/// The repository path of a component's OpenAPI document.
pub fn openapi_document(component_dir: &str) -> PathBuf {
    repo_dir()
        .join("components")
        .join(component_dir)
        .join("openapi.json")
}

impl Platform {
    /// Writes a tag straight to the tags topic (as the admin service would).
    pub async fn write_tag(&self, id: &str, name: &str) {
        self.write_tags(&[(id.to_owned(), name.to_owned())]).await;
    }

    /// Writes tags `(id, name)` straight to the tags topic, concurrently.
    pub async fn write_tags(&self, tags: &[(String, String)]) {
        use eddy_schemas::catalog::TAGS;
        use eddy_schemas::writer::{OutgoingRecord, Placement, RecordWriter};
        use eddy_schemas::{AvroSerde, Tag, TagColor};
        let registry = SchemaRegistry::new(&RegistryArgs::new(
            &self.namespace.stack().schema_registry_url,
        ))
        .expect("registry client");
        let topic = self.topic(TAGS);
        let serde = AvroSerde::<Tag>::for_topic(&registry, &topic)
            .await
            .expect("tag serde");
        let writer = RecordWriter::new(&self.namespace.kafka(), "e2e", &[&topic])
            .await
            .expect("writer");
        let envelope = eddy_service::envelope::Envelope::originated("e2e/0");
        let records = tags
            .iter()
            .map(|(id, name)| {
                let value = serde
                    .encode(&Tag {
                        id: id.clone(),
                        name: name.clone(),
                        color: TagColor::Blue,
                    })
                    .expect("encode");
                OutgoingRecord {
                    topic: &topic,
                    key: id,
                    value: Some(value),
                    placement: Placement::ByKey,
                    envelope: &envelope,
                }
            })
            .collect();
        writer.send_all(records).await.expect("tags written");
    }
}

/// Writes messages straight to the messages topic, as the source-api does: Avro values in the
/// wire format, each placed by its conversation id.
#[derive(Debug)]
pub struct MessageWriter {
    topic: String,
    serde: eddy_schemas::AvroSerde<eddy_schemas::Message>,
    writer: eddy_schemas::writer::RecordWriter,
    envelope: eddy_service::envelope::Envelope,
}

impl MessageWriter {
    /// A writer to `platform`'s messages topic, its producer named `client_id`.
    pub async fn new(platform: &Platform, client_id: &str) -> Self {
        use eddy_schemas::catalog::MESSAGES;
        let registry = SchemaRegistry::new(&RegistryArgs::new(
            &platform.namespace.stack().schema_registry_url,
        ))
        .expect("registry client");
        let topic = platform.topic(MESSAGES);
        let serde = eddy_schemas::AvroSerde::for_topic(&registry, &topic)
            .await
            .expect("message serde");
        let writer = eddy_schemas::writer::RecordWriter::new(
            &platform.namespace.kafka(),
            client_id,
            &[&topic],
        )
        .await
        .expect("message writer");
        MessageWriter {
            topic,
            serde,
            writer,
            envelope: eddy_service::envelope::Envelope::originated(&format!("{client_id}/0")),
        }
    }

    /// Writes `messages` (concurrently; returns once Kafka has all of them).
    pub async fn write(&self, messages: &[eddy_schemas::Message]) {
        use eddy_schemas::writer::{OutgoingRecord, Placement};
        let records = messages
            .iter()
            .map(|message| OutgoingRecord {
                topic: &self.topic,
                key: &message.id,
                value: Some(self.serde.encode(message).expect("encode")),
                placement: Placement::By(&message.conversation_id),
                envelope: &self.envelope,
            })
            .collect();
        self.writer
            .send_all(records)
            .await
            .expect("messages written");
    }

    /// Writes a tombstone for message `message_id` of conversation `conversation_id`.
    pub async fn delete(&self, message_id: &str, conversation_id: &str) {
        use eddy_schemas::writer::{OutgoingRecord, Placement};
        let record = OutgoingRecord {
            topic: &self.topic,
            key: message_id,
            value: None,
            placement: Placement::By(conversation_id),
            envelope: &self.envelope,
        };
        self.writer
            .send_all(vec![record])
            .await
            .expect("tombstone written");
    }
}

/// Polls `api` with `path` and `body` until `accept` returns `Some` for a 200 answer.
pub async fn poll_answer<T>(
    api: &Api,
    what: &str,
    path: &str,
    body: Value,
    mut accept: impl FnMut(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = api.call(path, body.clone()).await;
        if answer.status == 200
            && let Some(value) = accept(&answer.body)
        {
            return value;
        }
        let last = json!({"status": answer.status, "body": answer.body});
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}; last answer of {path}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The conversational core running: source-api, communication and unread-counter, one
/// instance each (tests start more where they need them).
#[derive(Debug)]
pub struct Core {
    pub source_api: Component,
    pub communication: Component,
    pub unread_counter: Component,
}

/// A registered source with one connected channel.
#[derive(Debug, Clone)]
pub struct RegisteredSource {
    pub source_id: String,
    pub token: String,
    pub signing_secret: String,
    pub source_channel_id: String,
    pub channel_id: String,
}

impl Core {
    /// Starts the three components and waits until they are ready.
    pub async fn start(platform: &Platform) -> Core {
        let mut source_api = platform.start(
            "eddy-source-api",
            "source-api-0",
            &[("EDDY_ACTION_RETRY_BACKOFF", "100ms")],
        );
        let mut communication = platform.start(
            "eddy-communication",
            "communication-0",
            &[("EDDY_STATIC_MEMBERSHIP", "true")],
        );
        let mut unread_counter = platform.start("eddy-unread-counter", "unread-counter-0", &[]);
        source_api.wait_ready(START_TIMEOUT).await;
        communication.wait_ready(START_TIMEOUT).await;
        unread_counter.wait_ready(START_TIMEOUT).await;
        Core {
            source_api,
            communication,
            unread_counter,
        }
    }

    /// Registers source `source_id` (calling `action_endpoint`) with channel `+4930111`.
    pub async fn register_source(
        &self,
        platform: &Platform,
        source_id: &str,
        action_endpoint: &str,
    ) -> RegisteredSource {
        let sources = platform.api(&self.source_api);
        let created = sources
            .call(
                "/sources.create",
                json!({"source_id": source_id, "action_endpoint": action_endpoint}),
            )
            .await
            .expect(201);
        let channel = sources
            .call(
                "/sources.channels.create",
                json!({"source_id": source_id, "source_channel_id": "+4930111"}),
            )
            .await
            .expect(201);
        RegisteredSource {
            source_id: source_id.to_owned(),
            token: created["token"].as_str().expect("token").to_owned(),
            signing_secret: created["signing_secret"]
                .as_str()
                .expect("secret")
                .to_owned(),
            source_channel_id: "+4930111".to_owned(),
            channel_id: channel["id"].as_str().expect("channel id").to_owned(),
        }
    }
}

/// One inbound contact message in the source-api's ingest shape.
pub fn contact_message(
    source_conversation_id: &str,
    source_message_id: &str,
    sent_at_ms: i64,
) -> Value {
    json!({
        "source_message_id": source_message_id,
        "source_conversation_id": source_conversation_id,
        "source_channel_id": "+4930111",
        "source_sender_id": source_conversation_id,
        "content": {"text": format!("message {source_message_id}")},
        "from_contact": true,
        "sent_at": sent_at_ms,
    })
}
