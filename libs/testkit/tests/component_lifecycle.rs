//! The lifecycle every component gets from eddy-service, checked on a real child process
//! (`eddy-lifecycle-fixture`) against the real local Kafka: readiness waits for Kafka, the admin
//! routes answer, SIGTERM and SIGINT drain cleanly, a drain past the grace period fails, bad
//! configuration exits 64 before anything starts, and kill -9 works for crash tests.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use eddy_testkit::{
    ComponentCommand, ComponentProcess, TestNamespace, free_port, wait_for_http_status,
};

const FIXTURE: &str = "eddy-lifecycle-fixture";
const STARTUP: Duration = Duration::from_secs(30);

fn fixture(namespace: &TestNamespace, admin_port: u16) -> ComponentCommand {
    ComponentCommand::new(namespace, FIXTURE)
        .env("EDDY_ADMIN_ADDRESS", format!("127.0.0.1:{admin_port}"))
        .env("EDDY_LOG", "info")
}

async fn wait_ready(process: &ComponentProcess, admin_port: u16) {
    let body = wait_for_http_status(
        &format!("http://127.0.0.1:{admin_port}/ready"),
        200,
        STARTUP,
    )
    .await;
    assert!(body.contains("ready"), "pid {}: {body}", process.pid());
}

#[tokio::test]
async fn ready_once_kafka_answers_then_sigterm_drains_and_exits_zero() {
    let namespace = TestNamespace::new("lifecycle-sigterm");
    let admin_port = free_port();
    let mut process = fixture(&namespace, admin_port)
        .env("EDDY_FIXTURE_DRAIN_DELAY", "300ms")
        .spawn();
    wait_ready(&process, admin_port).await;

    let base = format!("http://127.0.0.1:{admin_port}");
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"eddy_build_info{component="eddy-lifecycle-fixture""#),
        "{metrics}"
    );
    assert!(metrics.contains("eddy_ready 1"), "{metrics}");
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "{metrics}"
    );

    process.terminate();
    let status = process.wait_for_exit(Duration::from_secs(10));
    let output = process.output();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(
        output.contains("signal=\"SIGTERM\"") || output.contains("signal=SIGTERM"),
        "{output}"
    );
    assert!(
        output.contains("worker flushed"),
        "the worker did not drain:\n{output}"
    );
    assert!(output.contains("stopped"), "{output}");
}

#[tokio::test]
async fn sigint_stops_like_sigterm_and_json_logs_are_json() {
    let namespace = TestNamespace::new("lifecycle-sigint");
    let admin_port = free_port();
    let mut process = fixture(&namespace, admin_port)
        .env("EDDY_LOG_FORMAT", "json")
        .spawn();
    wait_ready(&process, admin_port).await;
    process.interrupt();
    let status = process.wait_for_exit(Duration::from_secs(10));
    let output = process.output();
    assert_eq!(status.code(), Some(0), "{output}");
    let events: Vec<serde_json::Value> = output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
        })
        .collect();
    assert!(
        events
            .iter()
            .any(|event| event["message"] == "shutting down" && event["signal"] == "SIGINT"),
        "{output}"
    );
    assert!(
        events
            .iter()
            .any(|event| event["message"] == "worker flushed"),
        "{output}"
    );
}

#[tokio::test]
async fn not_ready_while_kafka_is_unreachable_but_alive() {
    let namespace = TestNamespace::new("lifecycle-no-kafka");
    let admin_port = free_port();
    let closed_port = free_port();
    let mut process = fixture(&namespace, admin_port)
        .env(
            "EDDY_KAFKA_BOOTSTRAP_SERVERS",
            format!("127.0.0.1:{closed_port}"),
        )
        .spawn();
    let base = format!("http://127.0.0.1:{admin_port}");
    wait_for_http_status(&format!("{base}/healthz"), 200, STARTUP).await;
    let body = wait_for_http_status(&format!("{base}/ready"), 503, STARTUP).await;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["waiting_for"],
        serde_json::json!(["kafka"]),
        "{body}"
    );
    // Still waiting, not crash-looping: the process is alive and logs that it waits.
    eddy_testkit::poll_until("the 'waiting for kafka' log line", STARTUP, || {
        let output = process.output();
        std::future::ready(output.contains("waiting for kafka").then_some(()))
    })
    .await;
    assert!(process.is_running());
    process.terminate();
    assert_eq!(
        process.wait_for_exit(Duration::from_secs(10)).code(),
        Some(0)
    );
}

#[tokio::test]
async fn a_drain_longer_than_the_grace_period_fails_and_names_the_task() {
    let namespace = TestNamespace::new("lifecycle-grace");
    let admin_port = free_port();
    let mut process = fixture(&namespace, admin_port)
        .env("EDDY_FIXTURE_DRAIN_DELAY", "60s")
        .env("EDDY_SHUTDOWN_GRACE", "500ms")
        .spawn();
    wait_ready(&process, admin_port).await;
    process.terminate();
    let status = process.wait_for_exit(Duration::from_secs(10));
    let output = process.output();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("shutdown grace period"), "{output}");
    assert!(output.contains("worker"), "{output}");
}

#[tokio::test]
async fn bad_configuration_exits_64_before_binding_anything() {
    let namespace = TestNamespace::new("lifecycle-bad-config");
    let admin_port = free_port();
    let mut process = fixture(&namespace, admin_port)
        .env("EDDY_SHUTDOWN_GRACE", "soon")
        .spawn();
    let status = process.wait_for_exit(Duration::from_secs(10));
    let output = process.output();
    assert_eq!(status.code(), Some(64), "{output}");
    assert!(output.contains("'soon' is not a duration"), "{output}");
    assert!(!output.contains("admin server listening"), "{output}");

    let mut process = fixture(&namespace, admin_port)
        .env("EDDY_KAFKA_SECURITY_PROTOCOL", "sasl-ssl")
        .spawn();
    let status = process.wait_for_exit(Duration::from_secs(10));
    let output = process.output();
    assert_eq!(status.code(), Some(64), "{output}");
    assert!(output.contains("EDDY_KAFKA_SASL_USERNAME"), "{output}");
}

#[tokio::test]
async fn an_admin_port_in_use_is_a_clear_start_up_error() {
    let namespace = TestNamespace::new("lifecycle-port-in-use");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let mut process = fixture(&namespace, port).spawn();
    let status = process.wait_for_exit(Duration::from_secs(10));
    let output = process.output();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains(&format!(
            "could not bind the admin server to 127.0.0.1:{port}"
        )),
        "{output}"
    );
}

#[tokio::test]
async fn kill_9_stops_at_once_without_cleanup() {
    let namespace = TestNamespace::new("lifecycle-kill");
    let admin_port = free_port();
    let mut process = fixture(&namespace, admin_port).spawn();
    wait_ready(&process, admin_port).await;
    let status = process.kill_9();
    assert_eq!(status.signal(), Some(9));
    assert!(
        !process.output().contains("worker flushed"),
        "{}",
        process.output()
    );
}
