//! The __NAME__ connector as a real process against the real local Kafka and schema registry
//! (`scripts/stack start`; the test fails if the stack cannot start), calling a real HTTP
//! endpoint the test runs: each new contact message is POSTed once (a call that fails is
//! retried), messages to the contact and rewritten messages are not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use __LIB__::IDEMPOTENCY_KEY_HEADER;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use eddy_schemas::catalog::MESSAGES;
use eddy_schemas::{DeliveryState, Message};
use eddy_testkit::{
    ComponentCommand, ComponentProcess, free_port, poll_until, wait_for_http_status,
};
use serde_json::Value;

mod support;

use support::{CONVERGENCE, Provisioned, STARTUP, message};

impl Provisioned {
    /// Starts the component, calling `notify_url`, and waits until it is ready.
    async fn start_component(&self, notify_url: &str) -> ComponentProcess {
        let admin_port = free_port();
        let instance = format!("__NAME__-{admin_port}");
        let process = ComponentCommand::for_program(
            &self.namespace,
            &instance,
            env!("CARGO_BIN_EXE___CRATE__"),
        )
        .env("EDDY_ADMIN_ADDRESS", format!("127.0.0.1:{admin_port}"))
        .env("EDDY_STATE_DIR", self.namespace.state_dir(&instance))
        .env("EDDY_INSTANCE_ID", &instance)
        .env("EDDY_TOPIC_NAMESPACE", self.namespace.prefix())
        .env("EDDY_NOTIFY_URL", notify_url)
        .env("EDDY_NOTIFY_TIMEOUT", "2s")
        .env("EDDY_SHUTDOWN_GRACE", "5s")
        .spawn();
        wait_for_http_status(
            &format!("http://127.0.0.1:{admin_port}/ready"),
            200,
            STARTUP,
        )
        .await;
        process
    }
}

/// One call the endpoint received: the idempotency key, the body, and the status it answered.
#[derive(Debug, Clone)]
struct Call {
    idempotency_key: String,
    body: Value,
    status: u16,
}

/// An HTTP endpoint that records every call and fails the first one with a 503.
#[derive(Debug, Clone, Default)]
struct Endpoint {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Endpoint {
    /// Serves on a free port; returns its URL.
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let address = listener.local_addr().expect("bound");
        let router = Router::new()
            .route("/hook", post(Self::receive))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{address}/hook")
    }

    async fn receive(
        State(endpoint): State<Endpoint>,
        headers: HeaderMap,
        body: axum::Json<Value>,
    ) -> StatusCode {
        let mut calls = endpoint.calls.lock().expect("not poisoned");
        let status = if calls.is_empty() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::NO_CONTENT
        };
        calls.push(Call {
            idempotency_key: headers
                .get(IDEMPOTENCY_KEY_HEADER)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: body.0,
            status: status.as_u16(),
        });
        status
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("not poisoned").clone()
    }
}


#[tokio::test(flavor = "multi_thread")]
async fn sends_each_new_contact_message_once_and_retries_a_failed_call() {
    let provisioned = Provisioned::new("__NAME__-notify", &[MESSAGES]).await;
    let endpoint = Endpoint::default();
    let url = endpoint.serve().await;
    let mut component = provisioned.start_component(&url).await;

    // One conversation: one partition, processed in order, so once the last message arrived
    // every earlier one has been handled.
    let first = message("conversation-a", 1, true);
    let rewritten = Message {
        delivery_state: DeliveryState::Failed,
        updated_at: Some(first.sent_at + 500),
        ..first.clone()
    };
    provisioned
        .write_messages(&[
            first,
            message("conversation-a", 2, false),
            rewritten,
            message("conversation-a", 3, true),
        ])
        .await;

    let last = "conversation-a-message-3";
    let calls = poll_until(
        &format!("a call for {last} (calls so far are in the component log)"),
        CONVERGENCE,
        || {
            let calls = endpoint.calls();
            let done = calls.iter().any(|call| call.idempotency_key == last);
            std::future::ready(done.then_some(calls))
        },
    )
    .await;

    let summary: Vec<(&str, u16)> = calls
        .iter()
        .map(|call| (call.idempotency_key.as_str(), call.status))
        .collect();
    assert_eq!(
        summary,
        [
            ("conversation-a-message-1", 503),
            ("conversation-a-message-1", 204),
            ("conversation-a-message-3", 204),
        ],
        "calls (key, answer); component log:\n{}",
        component.output()
    );
    for call in &calls {
        assert_eq!(call.body["type"], "message.created");
        assert_eq!(call.body["message"]["id"], call.idempotency_key.as_str());
        assert_eq!(call.body["message"]["conversation_id"], "conversation-a");
    }
    assert_eq!(calls[2].body["message"]["content"]["text"], "message 3");

    component.terminate();
    let status = component.wait_for_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "exited with {status} after SIGTERM; log:\n{}",
        component.output()
    );
}
