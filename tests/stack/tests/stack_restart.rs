//! The local stack keeps its data across a restart: `scripts/stack stop` then `start` on the
//! same run dir finds the topics (storage is formatted only on the first start) and the schemas
//! (the registry keeps them in Kafka). Runs a private stack on its own ports and run dir.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use eddy_service::kafka::KafkaArgs;
use eddy_testkit::stack::repo_dir;
use eddy_testkit::{TestNamespace, free_port};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// A private stack; stopped when dropped, even if the test panics.
struct PrivateStack {
    run_dir: PathBuf,
    ports: [(&'static str, u16); 3],
}

impl PrivateStack {
    fn new(namespace: &TestNamespace) -> Self {
        PrivateStack {
            run_dir: namespace.state_dir("run"),
            ports: [
                ("EDDY_KAFKA_PORT", free_port()),
                ("EDDY_KAFKA_CONTROLLER_PORT", free_port()),
                ("EDDY_REGISTRY_PORT", free_port()),
            ],
        }
    }

    fn script(&self, arguments: &[&str]) -> Output {
        let mut command = Command::new(repo_dir().join("scripts/stack"));
        command
            .args(arguments)
            .env("EDDY_RUN_DIR", &self.run_dir)
            .env("EDDY_KAFKA_HEAP", "256m")
            .env("EDDY_REGISTRY_HEAP", "256m");
        for (variable, port) in self.ports {
            command.env(variable, port.to_string());
        }
        command.output().expect("running scripts/stack")
    }

    fn succeed(&self, arguments: &[&str]) -> String {
        let output = self.script(arguments);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "scripts/stack {arguments:?} failed:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0].1)
    }

    fn registry_url(&self) -> String {
        format!("http://127.0.0.1:{}/apis/ccompat/v7", self.ports[2].1)
    }

    fn processes(&self) -> String {
        let output = Command::new("pgrep")
            .args(["-af", &format!("eddy.stack.dir={}", self.run_dir.display())])
            .output()
            .expect("pgrep");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let _ = self.script(&["stop"]);
    }
}

fn topic_exists(bootstrap: &str, topic: &str) -> bool {
    let consumer: BaseConsumer = KafkaArgs::plaintext(bootstrap)
        .consumer_config("restart-test", "restart-test")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .first()
        .is_some_and(|found| found.error().is_none() && found.partitions().len() == 2)
}

#[tokio::test]
async fn topics_and_schemas_survive_a_stack_restart() {
    let namespace = TestNamespace::new("stack-restart");
    let stack = PrivateStack::new(&namespace);
    let started = stack.succeed(&["start"]);
    assert!(
        started.contains(&format!("kafka bootstrap: {}", stack.bootstrap())),
        "{started}"
    );
    assert!(
        started.contains(&format!("schema registry: {}", stack.registry_url())),
        "{started}"
    );

    let admin: AdminClient<DefaultClientContext> = KafkaArgs::plaintext(stack.bootstrap())
        .admin_config("restart-test")
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            [&NewTopic::new(
                "restart.check",
                2,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let http = reqwest::Client::new();
    let schema =
        r#"{"type":"record","name":"RestartCheck","fields":[{"name":"id","type":"string"}]}"#;
    let registered = http
        .post(format!(
            "{}/subjects/restart.check-value/versions",
            stack.registry_url()
        ))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&serde_json::json!({ "schema": schema }))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), 200);
    let id = registered.json::<serde_json::Value>().await.expect("json")["id"].clone();

    stack.succeed(&["stop"]);
    assert_eq!(stack.processes(), "", "processes left after stop");
    let status = stack.script(&["status"]);
    assert_eq!(status.status.code(), Some(3));

    stack.succeed(&["start"]);
    assert!(
        topic_exists(&stack.bootstrap(), "restart.check"),
        "topic lost in the restart"
    );
    // A new client: the old one's pooled connection went down with the old registry.
    let latest: serde_json::Value = reqwest::get(format!(
        "{}/subjects/restart.check-value/versions/latest",
        stack.registry_url()
    ))
    .await
    .expect("latest version")
    .json()
    .await
    .expect("json");
    assert_eq!(latest["id"], id, "schema lost in the restart: {latest}");

    let logs = stack.succeed(&["logs", "kafka"]);
    assert!(logs.contains("Kafka Server started"), "{logs}");
}

#[test]
fn logs_say_what_is_wrong() {
    let namespace = TestNamespace::new("stack-logs");
    let stack = PrivateStack::new(&namespace);
    let output = stack.script(&["logs", "zookeeper"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown log 'zookeeper' (expected kafka, registry or -f)"),
        "{stderr}"
    );
    let output = stack.script(&["logs", "kafka"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no log yet at"), "{stderr}");
}
