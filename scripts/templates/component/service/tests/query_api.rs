//! The __NAME__ service as two real processes against the real local Kafka and schema registry
//! (`scripts/stack start`; the test fails if the stack cannot start): messages in, and
//! `/__NAME__.get` answering every conversation's latest message identically on both
//! instances (the one that does not own the conversation forwards to the one that does), with
//! the API's conventions (system token, errors naming the field, 404, `/openapi.json`).

use std::time::{Duration, Instant};

use eddy_schemas::catalog::MESSAGES;
use eddy_testkit::{
    ComponentCommand, ComponentProcess, free_port, wait_for_http_status,
};
use serde_json::{Value, json};

const SYSTEM_TOKEN: &str = "__NAME__-test-system-token";

mod support;

use support::{CONVERGENCE, Provisioned, STARTUP, message};

impl Provisioned {
    /// Starts an instance of the service (not waiting for it).
    fn start_instance(&self) -> Instance {
        let http_port = free_port();
        let admin_port = free_port();
        let instance = format!("__NAME__-{http_port}");
        let process = ComponentCommand::for_program(
            &self.namespace,
            &instance,
            env!("CARGO_BIN_EXE___CRATE__"),
        )
        .env("EDDY_ADMIN_ADDRESS", format!("127.0.0.1:{admin_port}"))
        .env("EDDY_HTTP_ADDRESS", format!("127.0.0.1:{http_port}"))
        .env("EDDY_ADVERTISED_ADDRESS", format!("127.0.0.1:{http_port}"))
        .env("EDDY_STATE_DIR", self.namespace.state_dir(&instance))
        .env("EDDY_INSTANCE_ID", &instance)
        .env("EDDY_SYSTEM_TOKEN", SYSTEM_TOKEN)
        .env("EDDY_TOPIC_NAMESPACE", self.namespace.prefix())
        .env("EDDY_SHUTDOWN_GRACE", "5s")
        .spawn();
        Instance {
            process,
            api: format!("http://127.0.0.1:{http_port}"),
            ready: format!("http://127.0.0.1:{admin_port}/ready"),
        }
    }
}

struct Instance {
    process: ComponentProcess,
    api: String,
    ready: String,
}

impl Instance {
    /// `POST <path>` with `body` and `token`; the status and the JSON answer.
    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.api))
            .timeout(Duration::from_secs(10))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let answer = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST {path} failed: {error}"));
        let status = answer.status().as_u16();
        let text = answer.text().await.expect("an answer body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("POST {path} answered {status} {text:?}: {error}"));
        (status, json)
    }

    /// `/__NAME__.get` for the conversation once it answers 200 with message `message_id`
    /// (before, it may answer 503 while restoring or 404 until the message is processed).
    async fn latest_once(&self, conversation_id: &str, message_id: &str) -> Value {
        let body = json!({ "conversation_id": conversation_id });
        let deadline = Instant::now() + CONVERGENCE;
        loop {
            let (status, answer) = self.post("/__NAME__.get", Some(SYSTEM_TOKEN), &body).await;
            if status == 200 && answer["message"]["id"] == message_id {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer message {message_id} for {conversation_id} within \
                 {CONVERGENCE:?}; last answer: {status} {answer}",
                self.api
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}


#[tokio::test(flavor = "multi_thread")]
async fn two_instances_answer_the_latest_message_of_every_conversation() {
    let provisioned = Provisioned::new("__NAME__-query", &[MESSAGES]).await;
    let mut instances = [provisioned.start_instance(), provisioned.start_instance()];
    for instance in &instances {
        wait_for_http_status(&instance.ready, 200, STARTUP).await;
    }

    // Conversation a's latest message is its third, written before the second.
    provisioned
        .write_messages(&[
            message("conversation-a", 1, true),
            message("conversation-a", 3, false),
            message("conversation-a", 2, true),
            message("conversation-b", 1, true),
            message("conversation-c", 1, true),
        ])
        .await;

    for instance in &instances {
        let answer = instance
            .latest_once("conversation-a", "conversation-a-message-3")
            .await;
        assert_eq!(
            answer,
            json!({
                "conversation_id": "conversation-a",
                "message": {
                    "id": "conversation-a-message-3",
                    "sent_at": "2023-11-14T22:13:23.000Z",
                    "from_contact": false,
                    "content": {"text": "message 3"},
                },
            })
        );
        for conversation in ["conversation-b", "conversation-c"] {
            let answer = instance
                .latest_once(conversation, &format!("{conversation}-message-1"))
                .await;
            assert_eq!(answer["conversation_id"], conversation);
        }

        let unknown = json!({ "conversation_id": "no-such-conversation" });
        let (status, answer) = instance
            .post("/__NAME__.get", Some(SYSTEM_TOKEN), &unknown)
            .await;
        assert_eq!((status, &answer["code"]), (404, &json!("not_found")), "{answer}");
        let (status, answer) = instance.post("/__NAME__.get", None, &unknown).await;
        assert_eq!((status, &answer["code"]), (401, &json!("unauthorized")), "{answer}");
        let (status, answer) = instance
            .post("/__NAME__.get", Some(SYSTEM_TOKEN), &json!({}))
            .await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|message| message.contains("conversation_id")),
            "the error names the field: {answer}"
        );
    }

    let document: Value = reqwest::get(format!("{}/openapi.json", instances[0].api))
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("the OpenAPI document");
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["paths"]["/__NAME__.get"].is_object());

    for instance in &mut instances {
        instance.process.terminate();
    }
    for instance in &mut instances {
        let status = instance.process.wait_for_exit(Duration::from_secs(30));
        assert!(
            status.success(),
            "exited with {status} after SIGTERM; log:\n{}",
            instance.process.output()
        );
    }
}
