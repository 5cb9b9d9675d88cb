//! `scripts/up` on its own ports and run dir: it starts a fresh stack, prints the Kafka
//! bootstrap and registry URL, they work from another client; the README's API session works
//! through the printed gateway address with two instances of the services; and Ctrl-C (SIGINT)
//! stops everything it started: no java or component process is left.

use std::process::Command;
use std::time::Duration;

use eddy_testkit::records::assign_from_beginning;
use eddy_testkit::stack::repo_dir;
use eddy_testkit::{ComponentCommand, TestNamespace, free_port, free_port_block, poll_until};
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
            .arg("--instances")
            .arg("2")
            .env("EDDY_RUN_DIR", &run_dir)
            .env("EDDY_GATEWAY_PORT", free_port().to_string())
            .env(
                "EDDY_COMPONENT_PORT_BASE",
                // scripts/up numbers every component's ports from this base, up to base + 190.
                free_port_block(200).to_string(),
            )
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
        output.contains("10 topics and 10 subjects checked"),
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

    readme_session(
        &printed_value(&output, "API (all endpoints)").expect("gateway printed"),
        &printed_value(&output, "system token")
            .and_then(|line| line.split_whitespace().next().map(str::to_owned))
            .expect("token printed"),
        &up,
    )
    .await;

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
    let components = Command::new("pgrep")
        .args(["-af", &format!("{}/state/", run_dir_text)])
        .output()
        .expect("pgrep");
    assert!(
        components.stdout.is_empty(),
        "component processes left behind"
    );
}

/// A range of 200 ports for the components, away from the usual ones.
/// The README's session, through the gateway: a source with an action endpoint, a channel, an
/// inbound message, the conversation listed, a reply sent and delivered.
async fn readme_session(api: &str, token: &str, up: &eddy_testkit::ComponentProcess) {
    use serde_json::{Value, json};
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let action_endpoint = format!("http://{}/actions", listener.local_addr().expect("address"));
    let router = axum::Router::new().route(
        "/actions",
        axum::routing::post({
            let calls = std::sync::Arc::clone(&calls);
            move |axum::Json(body): axum::Json<Value>| async move {
                calls.lock().expect("lock").push(body);
                axum::Json(json!({"source_message_id": "sms-1"}))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let call = |path: &str, bearer: &str, body: Value| {
        let request = client
            .post(format!("{api}{path}"))
            .bearer_auth(bearer)
            .json(&body);
        async move {
            let answer = request.send().await.expect("the gateway answers");
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, source) = call(
        "/sources.create",
        token,
        json!({"source_id": "my-sms", "action_endpoint": action_endpoint}),
    )
    .await;
    assert_eq!(status, 201, "{source}\n{}", up.output());
    let source_token = source["token"].as_str().expect("source token").to_owned();
    let (status, channel) = call(
        "/sources.channels.create",
        token,
        json!({"source_id": "my-sms", "source_channel_id": "+4930123"}),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    let (status, ingested) = call("/sources.webhook", &source_token, json!({"messages": [{
        "source_message_id": "sms-0", "source_conversation_id": "+4917612345", "source_channel_id": "+4930123",
        "source_sender_id": "+4917612345", "content": {"text": "Hello!"}, "from_contact": true,
        "sent_at": "2026-11-22T09:00:00.000Z"}]})).await;
    assert_eq!(status, 200, "{ingested}");
    let conversation_id = poll_until(
        "the conversation listed",
        Duration::from_secs(30),
        || async {
            let (status, list) = call("/conversations.list", token, json!({})).await;
            (status == 200 && list["pagination_data"]["total"] == 1).then(|| {
                list["data"][0]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
        },
    )
    .await;
    // Both instances answer alike through the one address.
    let (_, first) = call(
        "/conversations.info",
        token,
        json!({"conversation_id": conversation_id}),
    )
    .await;
    let (_, second) = call(
        "/conversations.info",
        token,
        json!({"conversation_id": conversation_id}),
    )
    .await;
    assert_eq!(first["id"], second["id"]);
    let (status, sent) = call(
        "/messages.send",
        token,
        json!({"conversation_id": conversation_id, "message": {"text": "Hi, how can I help?"}}),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    poll_until("the reply delivered", Duration::from_secs(30), || async {
        let (_, list) = call(
            "/messages.list",
            token,
            json!({"conversation_id": conversation_id}),
        )
        .await;
        let reply = list["data"].as_array().and_then(|data| {
            data.iter()
                .find(|message| message["id"] == sent["id"])
                .cloned()
        });
        reply
            .filter(|reply| reply["delivery_state"] == "delivered")
            .map(|_| ())
    })
    .await;
    let received = calls.lock().expect("lock").clone();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(
        received[0]["payload"]["message"]["content"]["text"],
        "Hi, how can I help?"
    );
}
