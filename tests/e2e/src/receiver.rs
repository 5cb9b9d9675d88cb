//! A real webhook receiver process for the outbound-webhook tests and benchmark: the
//! `webhook-receiver` binary (`src/bin/webhook_receiver.rs`) started as a child process, and a
//! client of its control API.
//!
//! Every receiver name (`/hooks/<name>`) has its own script (which statuses to answer, whether
//! to hang, how long to delay) and its own record of deliveries. The types here are the wire
//! format of the control API, shared with the binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eddy_testkit::python_tools;
use eddy_testkit::stack::repo_dir;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The binary's name (`CARGO_BIN_EXE_webhook-receiver` in integration tests).
pub const BINARY: &str = "webhook-receiver";

/// What the binary prints (followed by the base URL) once it listens.
pub const LISTENING_PREFIX: &str = "listening on ";

/// How long the harness waits for the listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How one receiver name answers deliveries: first `statuses` in order (one per request), then
/// `default_status` (200 when unset). `hang` holds every request without answering (it is
/// still recorded); `delay_ms` delays every answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Script {
    pub statuses: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_status: Option<u16>,
    pub hang: bool,
    pub delay_ms: u64,
}

impl Script {
    /// Answer `statuses` to the next requests, then 200.
    pub fn statuses(statuses: impl IntoIterator<Item = u16>) -> Self {
        Script {
            statuses: statuses.into_iter().collect(),
            ..Script::default()
        }
    }

    /// Answer `status` to every request.
    pub fn always(status: u16) -> Self {
        Script {
            default_status: Some(status),
            ..Script::default()
        }
    }

    /// Never answer.
    pub fn hang() -> Self {
        Script {
            hang: true,
            ..Script::default()
        }
    }

    /// After the queued statuses, answer `status`.
    pub fn then(mut self, status: u16) -> Self {
        self.default_status = Some(status);
        self
    }

    /// Delay every answer by `delay`.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }
}

/// One delivery a receiver got, as `GET /_received/<name>` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The `webhook-id` header (`None`: absent).
    pub id: Option<String>,
    /// The `webhook-timestamp` header.
    pub timestamp: Option<String>,
    /// The `webhook-signature` header.
    pub signature: Option<String>,
    /// Every header, lower-case name to value (repeated headers joined with ", ").
    pub headers: BTreeMap<String, String>,
    /// The raw body (lossy UTF-8).
    pub body: String,
    /// The status answered; 0 while (or if never) answered: a hanging script, a delay still
    /// running, or a client that went away during the delay.
    pub answered: u16,
    /// Wall clock (Unix ms) when the request arrived.
    pub received_at_ms: i64,
    /// The receiver process's start time (Unix ms) plus its monotonic clock's elapsed time at
    /// arrival: never goes backwards within one process.
    pub received_monotonic_ms: i64,
}

impl Delivery {
    /// True if the answer was a 2xx.
    pub fn acknowledged(&self) -> bool {
        (200..300).contains(&self.answered)
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Delivery latency (receipt minus the body's `created_at`) in milliseconds; `None` when no
/// record had a `created_at`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// How many records had a parseable `created_at`.
    pub count: u64,
    pub min: Option<i64>,
    pub p50: Option<i64>,
    pub p99: Option<i64>,
    pub max: Option<i64>,
}

/// `GET /_summary/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub requests: u64,
    /// Answers with a 2xx status.
    pub acknowledged: u64,
    /// Requests not (yet) answered (hanging, delayed).
    pub unanswered: u64,
    /// Distinct `webhook-id`s received.
    pub distinct_ids: u64,
    /// Distinct `webhook-id`s acknowledged at least once.
    pub distinct_acknowledged_ids: u64,
    /// Acknowledged answers to a `webhook-id` that had already been acknowledged.
    pub duplicate_acknowledgements: u64,
    /// Received at minus the body's `created_at`.
    pub latency_ms: Latency,
}

/// A running `webhook-receiver` process. Dropping it kills the process.
#[derive(Debug)]
pub struct Receiver {
    binary: PathBuf,
    port: u16,
    base: String,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    client: reqwest::Client,
}

impl Receiver {
    /// Starts the receiver on a free port of 127.0.0.1.
    pub fn start() -> Self {
        Self::start_binary(receiver_binary())
    }

    /// Starts the given receiver binary (e.g. `env!("CARGO_BIN_EXE_webhook-receiver")`).
    pub fn start_binary(binary: impl Into<PathBuf>) -> Self {
        let binary = binary.into();
        let (child, port, stderr) = spawn(&binary, "127.0.0.1:0");
        Receiver {
            binary,
            port,
            base: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            stderr,
            client: control_client(),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The delivery URL of receiver `name`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/hooks/{name}", self.base)
    }

    /// Replaces the script of receiver `name`.
    pub async fn script(&self, name: &str, script: Script) {
        let response = self
            .client
            .put(format!("{}/_scripts/{name}", self.base))
            .json(&script)
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!("PUT script of {name}: {}{}", describe(&error), self.log())
            });
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "PUT script of {name} answered {status}: {text}"
        );
    }

    /// Every delivery to `name`, in arrival order.
    pub async fn received(&self, name: &str) -> Vec<Delivery> {
        self.try_received(name)
            .await
            .unwrap_or_else(|error| panic!("{error}{}", self.log()))
    }

    /// Forgets the deliveries to `name`.
    pub async fn clear(&self, name: &str) {
        let response = self
            .client
            .delete(format!("{}/_received/{name}", self.base))
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "DELETE received of {name}: {}{}",
                    describe(&error),
                    self.log()
                )
            });
        assert!(
            response.status().is_success(),
            "DELETE received of {name} answered {}",
            response.status()
        );
    }

    /// Counts and latency of the deliveries to `name`.
    pub async fn summary(&self, name: &str) -> Summary {
        let response = self
            .client
            .get(format!("{}/_summary/{name}", self.base))
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!("GET summary of {name}: {}{}", describe(&error), self.log())
            });
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "GET summary of {name} answered {status}: {text}"
        );
        serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("summary of {name} ({error}): {text}"))
    }

    /// Polls the deliveries to `name` every 20 ms until `accept` returns true for them, and
    /// returns them. Panics with what arrived if `timeout` passes first.
    pub async fn wait_for(
        &self,
        name: &str,
        mut accept: impl FnMut(&[Delivery]) -> bool,
        timeout: Duration,
    ) -> Vec<Delivery> {
        let deadline = Instant::now() + timeout;
        loop {
            let (deliveries, error) = match self.try_received(name).await {
                Ok(deliveries) => {
                    if accept(&deliveries) {
                        return deliveries;
                    }
                    (deliveries, None)
                }
                Err(error) => (Vec::new(), Some(error)),
            };
            if Instant::now() >= deadline {
                let listed: Vec<String> = deliveries
                    .iter()
                    .map(|delivery| {
                        format!(
                            "  {:?} answered {} at {}: {}",
                            delivery.id, delivery.answered, delivery.received_at_ms, delivery.body
                        )
                    })
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for deliveries to {name}; {} received{}:\n{}{}",
                    deliveries.len(),
                    error
                        .map(|error| format!(" (last poll failed: {error})"))
                        .unwrap_or_default(),
                    listed.join("\n"),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `name` has at least `count` deliveries.
    pub async fn wait_for_count(
        &self,
        name: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<Delivery> {
        self.wait_for(name, |deliveries| deliveries.len() >= count, timeout)
            .await
    }

    /// Kills the process with SIGKILL (as in a crash) and waits for it to exit. Its records
    /// and scripts are gone; open connections are reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the receiver again on the same port (killing it first if it still runs), with
    /// empty records and default scripts.
    pub fn restart(&mut self) {
        self.kill();
        let (child, port, stderr) = spawn(&self.binary, &format!("127.0.0.1:{}", self.port));
        assert_eq!(port, self.port, "the receiver restarted on another port");
        self.child = Some(child);
        self.stderr = stderr;
        // Pooled connections went with the old process.
        self.client = control_client();
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn try_received(&self, name: &str) -> Result<Vec<Delivery>, String> {
        let response = self
            .client
            .get(format!("{}/_received/{name}", self.base))
            .send()
            .await
            .map_err(|error| format!("GET received of {name}: {}", describe(&error)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|error| format!("GET received of {name}: {}", describe(&error)))?;
        if !status.is_success() {
            return Err(format!("GET received of {name} answered {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|error| format!("received of {name} ({error}): {text}"))
    }

    fn log(&self) -> String {
        let stderr = self.stderr();
        if stderr.is_empty() {
            String::new()
        } else {
            format!("\nreceiver stderr:\n{stderr}")
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client of the control API.
fn control_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|error| panic!("HTTP client: {error}"))
}

/// An error with its causes (reqwest's own message names only the URL).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The receiver binary: `CARGO_BIN_EXE_webhook-receiver` if set at run time, else the one in
/// this test's target dir (built with `cargo build --bin webhook-receiver` if missing, as
/// `eddy_testkit::workspace_binary` does for the components).
pub fn receiver_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(format!("CARGO_BIN_EXE_{BINARY}")) {
        return PathBuf::from(path);
    }
    eddy_testkit::workspace_binary(BINARY)
}

/// Starts the binary on `address`; returns the child, its port and its collected stderr.
fn spawn(binary: &PathBuf, address: &str) -> (Child, u16, Arc<Mutex<String>>) {
    let mut child = Command::new(binary)
        .arg("--address")
        .arg(address)
        .arg("--exit-on-stdin-close")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let stderr_reader = child.stderr.take().map(|mut pipe| {
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = pipe.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        })
    });
    let stdout = child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("no stdout pipe"));
    let (lines, line) = mpsc::channel();
    std::thread::spawn(move || {
        // The first line names the port; later output is drained so the child never blocks.
        for read in BufReader::new(stdout).lines() {
            match read {
                Ok(text) => {
                    let _ = lines.send(text);
                }
                Err(_) => break,
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match line.recv_timeout(remaining.min(Duration::from_millis(100))) {
            Ok(text) => {
                if let Some(port) = text
                    .strip_prefix(LISTENING_PREFIX)
                    .and_then(|url| url.rsplit(':').next())
                    .and_then(|port| port.trim().parse::<u16>().ok())
                {
                    return (child, port, stderr);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait();
                // The process is gone: its stderr reader ends at the pipe's end.
                if let Some(reader) = stderr_reader {
                    let _ = reader.join();
                }
                panic!(
                    "{} exited ({status:?}) before it listened on {address}:\n{}",
                    binary.display(),
                    stderr.lock().unwrap_or_else(PoisonError::into_inner)
                );
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} did not print its listening line within {START_TIMEOUT:?}:\n{}",
                binary.display(),
                stderr.lock().unwrap_or_else(PoisonError::into_inner)
            );
        }
    }
}

/// Verifies the signatures of `deliveries` with the official `standardwebhooks` package
/// (`tests/e2e/python/verify_signatures.py`, as `verify_with_standard_webhooks` does for
/// `ReceivedCall`s), and that a tampered body and a stale timestamp fail. Panics with the
/// script's output otherwise.
pub fn verify_deliveries_with_standard_webhooks(secret: &str, deliveries: &[Delivery]) {
    assert!(!deliveries.is_empty(), "no deliveries to verify");
    let calls: Vec<Value> = deliveries
        .iter()
        .map(|delivery| json!({"headers": delivery.headers, "body": delivery.body}))
        .collect();
    let input = temporary_file(&json!({"secret": secret, "calls": calls}).to_string());
    let script = repo_dir().join("tests/e2e/python/verify_signatures.py");
    let output = Command::new(python_tools())
        .arg(&script)
        .arg(&input)
        .output()
        .unwrap_or_else(|error| panic!("python runs: {error}"));
    let _ = std::fs::remove_file(&input);
    assert!(
        output.status.success(),
        "signature check failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes `text` to a temporary file (the caller removes it).
fn temporary_file(text: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "eddy-e2e-receiver-{}-{}.json",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, text)
        .unwrap_or_else(|error| panic!("temporary file {}: {error}", path.display()));
    path
}
