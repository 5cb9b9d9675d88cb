//! `scripts/up` on its own ports and run dir: it starts a fresh stack, prints the Kafka
//! bootstrap and registry URL, they work from another client, and Ctrl-C (SIGINT) stops
//! everything it started: no java process of that stack is left.

use std::process::Command;
use std::time::Duration;

use eddy_testkit::records::assign_from_beginning;
use eddy_testkit::stack::repo_dir;
use eddy_testkit::{ComponentCommand, TestNamespace, free_port, poll_until};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn printed_value(output: &str, label: &str) -> Option<String> {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|value| value.trim().to_owned())
}

fn stack_processes(run_dir: &str) -> String {
    let output = Command::new("pgrep")
        .args(["-af", &format!("eddy.stack.dir={run_dir}")])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn up_prints_working_endpoints_and_ctrl_c_leaves_nothing_running() {
    let namespace = TestNamespace::new("scripts-up");
    let run_dir = namespace.state_dir("run");
    let run_dir_text = run_dir.display().to_string();
    let mut up =
        ComponentCommand::for_program(&namespace, "scripts-up", repo_dir().join("scripts/up"))
            .arg("--no-build")
            .env("EDDY_RUN_DIR", &run_dir)
            .env("EDDY_KAFKA_PORT", free_port().to_string())
            .env("EDDY_KAFKA_CONTROLLER_PORT", free_port().to_string())
            .env("EDDY_REGISTRY_PORT", free_port().to_string())
            .env("EDDY_KAFKA_HEAP", "256m")
            .env("EDDY_REGISTRY_HEAP", "256m")
            .spawn();

    poll_until(
        "scripts/up to print 'Press Ctrl-C to stop'",
        Duration::from_secs(180),
        || {
            let output = up.output();
            assert!(up.is_running(), "scripts/up exited early:\n{output}");
            std::future::ready(output.contains("Press Ctrl-C to stop").then_some(()))
        },
    )
    .await;
    let output = up.output();
    assert!(
        output.contains("9 topics and 9 subjects checked"),
        "scripts/up provisions the topic catalog:\n{output}"
    );
    let bootstrap = printed_value(&output, "kafka bootstrap").expect("bootstrap printed");
    let registry = printed_value(&output, "schema registry").expect("registry URL printed");
    assert_ne!(
        bootstrap,
        namespace.stack().bootstrap_servers,
        "must be its own stack"
    );

    // Produce and consume against the printed bootstrap, as another shell would.
    let kafka = eddy_service::kafka::KafkaArgs::plaintext(&bootstrap);
    let admin: AdminClient<DefaultClientContext> =
        kafka.admin_config("up-test").create().expect("admin");
    let topic = "up-test.greetings";
    let created = admin
        .create_topics(
            [&NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let producer: FutureProducer = kafka.producer_config("up-test").create().expect("producer");
    producer
        .send(
            FutureRecord::to(topic).key("k").payload("hello"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("produce");
    let consumer: StreamConsumer = kafka
        .consumer_config("up-test", "up-test")
        .create()
        .expect("consumer");
    assign_from_beginning(&consumer, topic);
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a record within 30 s")
        .expect("consume");
    assert_eq!(message.payload(), Some(&b"hello"[..]));

    let subjects = reqwest::get(format!("{registry}/subjects"))
        .await
        .expect("registry answers");
    assert_eq!(subjects.status(), 200);

    assert!(
        !stack_processes(&run_dir_text).is_empty(),
        "the stack's java processes should run now"
    );
    up.interrupt();
    let status = up.wait_for_exit(Duration::from_secs(90));
    assert_eq!(status.code(), Some(0), "{}", up.output());
    assert_eq!(
        stack_processes(&run_dir_text),
        "",
        "processes left behind after Ctrl-C"
    );
}
