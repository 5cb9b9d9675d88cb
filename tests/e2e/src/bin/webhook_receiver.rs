//! `webhook-receiver`: a scriptable webhook endpoint for the outbound-webhook end-to-end tests
//! and benchmark (the harness is `eddy_e2e_tests::receiver`).
//!
//! - `POST /hooks/{name}`: a delivery to receiver `name`; recorded and answered by its script.
//! - `PUT /_scripts/{name}` `{"statuses": [500], "default_status": 200, "hang": false,
//!   "delay_ms": 0}` (all optional): replaces the script.
//! - `GET /_received/{name}`: the deliveries, in arrival order; `DELETE` clears them.
//! - `GET /_summary/{name}`: counts, duplicate acknowledgements and latency.
//!
//! Prints `listening on http://<address>` on stdout once it listens.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use clap::Parser;
use eddy_e2e_tests::receiver::{Delivery, LISTENING_PREFIX, Latency, Script, Summary};

#[derive(Debug, Parser)]
#[command(
    name = "webhook-receiver",
    about = "A scriptable webhook endpoint for tests"
)]
struct Args {
    /// Where to listen (port 0: any free port).
    #[arg(long, env = "WEBHOOK_RECEIVER_ADDRESS", default_value = "127.0.0.1:0")]
    address: SocketAddr,
    /// Exit when stdin reaches its end (the harness holds a pipe, so the receiver goes away
    /// with the test process even if that is killed).
    #[arg(long)]
    exit_on_stdin_close: bool,
}

/// The script of one name, as the server runs it.
#[derive(Debug, Default)]
struct Running {
    statuses: VecDeque<u16>,
    default_status: u16,
    hang: bool,
    delay: Duration,
}

impl Running {
    fn from(script: Script) -> Self {
        Running {
            statuses: script.statuses.into(),
            default_status: script.default_status.unwrap_or(200),
            hang: script.hang,
            delay: Duration::from_millis(script.delay_ms),
        }
    }
}

#[derive(Debug)]
struct Endpoint {
    script: Running,
    deliveries: Vec<Delivery>,
    /// Incremented when the deliveries are cleared, so a delayed answer does not update a
    /// record of the next generation.
    generation: u64,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint {
            script: Running::from(Script::default()),
            deliveries: Vec::new(),
            generation: 0,
        }
    }
}

#[derive(Debug)]
struct Clock {
    started: Instant,
    started_unix_ms: i64,
}

#[derive(Debug)]
struct Shared {
    endpoints: Mutex<HashMap<String, Endpoint>>,
    clock: Clock,
}

type AppState = Arc<Shared>;

impl Shared {
    fn with<T>(&self, name: &str, action: impl FnOnce(&mut Endpoint) -> T) -> T {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(endpoint) = endpoints.get_mut(name) {
            return action(endpoint);
        }
        action(endpoints.entry(name.to_owned()).or_default())
    }

    fn read<T>(&self, name: &str, action: impl FnOnce(Option<&Endpoint>) -> T) -> T {
        let endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        action(endpoints.get(name))
    }
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

async fn deliver(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_at_ms = unix_ms(SystemTime::now());
    let received_monotonic_ms = state.clock.started_unix_ms
        + i64::try_from(state.clock.started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let mut all = std::collections::BTreeMap::new();
    for (key, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        all.entry(key.as_str().to_owned())
            .and_modify(|existing: &mut String| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let mut delivery = Delivery {
        id: header(&headers, "webhook-id"),
        timestamp: header(&headers, "webhook-timestamp"),
        signature: header(&headers, "webhook-signature"),
        headers: all,
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: 0,
        received_at_ms,
        received_monotonic_ms,
    };
    // Decide the answer and record the delivery under one lock, so arrival order and the
    // script's order agree.
    let (status, delay, position) = state.with(&name, |endpoint| {
        if endpoint.script.hang {
            endpoint.deliveries.push(delivery);
            return (None, Duration::ZERO, None);
        }
        let status = endpoint
            .script
            .statuses
            .pop_front()
            .unwrap_or(endpoint.script.default_status);
        let delay = endpoint.script.delay;
        if delay.is_zero() {
            delivery.answered = status;
            endpoint.deliveries.push(delivery);
            (Some(status), delay, None)
        } else {
            endpoint.deliveries.push(delivery);
            let position = (endpoint.generation, endpoint.deliveries.len() - 1);
            (Some(status), delay, Some(position))
        }
    });
    let Some(status) = status else {
        // Hold the request until the client gives up (or the process dies).
        std::future::pending::<()>().await;
        return StatusCode::OK.into_response();
    };
    if let Some((generation, index)) = position {
        // Dropped (client gone) during the delay: the record keeps `answered: 0`.
        tokio::time::sleep(delay).await;
        state.with(&name, |endpoint| {
            if endpoint.generation == generation
                && let Some(record) = endpoint.deliveries.get_mut(index)
            {
                record.answered = status;
            }
        });
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        if code.is_success() {
            "ok"
        } else {
            "scripted failure"
        },
    )
        .into_response()
}

async fn set_script(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let script: Script = match serde_json::from_slice(&body) {
        Ok(script) => script,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let statuses = script.statuses.iter().copied().chain(script.default_status);
    for status in statuses {
        if !(100..=999).contains(&status) {
            return (
                StatusCode::BAD_REQUEST,
                format!("{status} is not an HTTP status"),
            )
                .into_response();
        }
    }
    state.with(&name, |endpoint| endpoint.script = Running::from(script));
    StatusCode::NO_CONTENT.into_response()
}

async fn received(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let body = state.read(&name, |endpoint| {
        serde_json::to_vec(endpoint.map_or(&[][..], |endpoint| &endpoint.deliveries[..]))
    });
    match body {
        Ok(body) => ([("content-type", "application/json")], body).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn clear(State(state): State<AppState>, Path(name): Path<String>) -> StatusCode {
    state.with(&name, |endpoint| {
        endpoint.deliveries = Vec::new();
        endpoint.generation += 1;
    });
    StatusCode::NO_CONTENT
}

async fn summary(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    // Copy out what the summary needs; parse bodies outside the lock.
    let records: Vec<(Option<String>, u16, i64, String)> = state.read(&name, |endpoint| {
        endpoint
            .map(|endpoint| {
                endpoint
                    .deliveries
                    .iter()
                    .map(|delivery| {
                        (
                            delivery.id.clone(),
                            delivery.answered,
                            delivery.received_at_ms,
                            delivery.body.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    axum::Json(summarize(&records)).into_response()
}

fn summarize(records: &[(Option<String>, u16, i64, String)]) -> Summary {
    let mut summary = Summary::default();
    let mut ids = HashSet::new();
    let mut acknowledged_ids = HashSet::new();
    let mut latencies = Vec::new();
    for (id, answered, received_at_ms, body) in records {
        summary.requests += 1;
        let acknowledged = (200..300).contains(answered);
        if *answered == 0 {
            summary.unanswered += 1;
        }
        if acknowledged {
            summary.acknowledged += 1;
        }
        if let Some(id) = id {
            ids.insert(id.as_str());
            if acknowledged && !acknowledged_ids.insert(id.as_str()) {
                summary.duplicate_acknowledgements += 1;
            }
        }
        if let Some(created_at) = created_at_ms(body) {
            latencies.push(received_at_ms - created_at);
        }
    }
    summary.distinct_ids = ids.len() as u64;
    summary.distinct_acknowledged_ids = acknowledged_ids.len() as u64;
    latencies.sort_unstable();
    summary.latency_ms = Latency {
        count: latencies.len() as u64,
        min: latencies.first().copied(),
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
        max: latencies.last().copied(),
    };
    summary
}

/// The body's `created_at` (RFC 3339) as Unix ms.
fn created_at_ms(body: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        created_at: Option<std::borrow::Cow<'a, str>>,
    }
    let event: Event<'_> = serde_json::from_str(body).ok()?;
    let created_at = event.created_at?;
    chrono::DateTime::parse_from_rfc3339(&created_at)
        .ok()
        .map(|time| time.timestamp_millis())
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], percent: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    // A restart on the same port may race the previous process's socket teardown.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(address).and_then(|()| socket.listen(1024)) {
            Ok(listener) => return Ok(listener),
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if args.exit_on_stdin_close {
        std::thread::spawn(|| {
            let mut stdin = std::io::stdin();
            let mut buffer = [0u8; 256];
            while matches!(stdin.read(&mut buffer), Ok(read) if read > 0) {}
            std::process::exit(0);
        });
    }
    let state: AppState = Arc::new(Shared {
        endpoints: Mutex::new(HashMap::new()),
        clock: Clock {
            started: Instant::now(),
            started_unix_ms: unix_ms(SystemTime::now()),
        },
    });
    let router = Router::new()
        .route("/hooks/{name}", post(deliver))
        .route("/_scripts/{name}", put(set_script))
        .route("/_received/{name}", get(received).delete(clear))
        .route("/_summary/{name}", get(summary))
        .with_state(state);
    let listener = bind(args.address).await.map_err(|error| {
        eprintln!(
            "webhook-receiver: cannot listen on {}: {error}",
            args.address
        );
        error
    })?;
    let local = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{LISTENING_PREFIX}http://{local}")?;
        stdout.flush()?;
    }
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await
}
