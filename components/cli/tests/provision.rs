//! `eddy topics provision` as a real process against the real broker and registry: it creates
//! every topic with the declared settings and every subject with BACKWARD compatibility, a
//! second run changes nothing, a changed partition count is drift (exit 1), and `--fix`
//! corrects drifted configs while keeping configs set outside the catalog.

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Duration;

use eddy_schemas::registry::COMPATIBILITY;
use eddy_schemas::{Catalog, CatalogArgs, RegistryArgs, SchemaRegistry};
use eddy_testkit::TestNamespace;
use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};

fn eddy(namespace: &TestNamespace, partitions: i32, args: &[&str]) -> Output {
    let stack = namespace.stack();
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["topics", "provision"])
        .args(args)
        .env("EDDY_KAFKA_BOOTSTRAP_SERVERS", &stack.bootstrap_servers)
        .env("EDDY_SCHEMA_REGISTRY_URL", &stack.schema_registry_url)
        .env("EDDY_TOPIC_NAMESPACE", namespace.prefix())
        .env("EDDY_TOPIC_PARTITIONS", partitions.to_string())
        .env("EDDY_WAIT_TIMEOUT", "30s")
        .output()
        .expect("eddy runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn catalog(namespace: &TestNamespace, partitions: i32) -> Catalog {
    Catalog::new(&CatalogArgs {
        namespace: namespace.prefix().to_owned(),
        partitions,
        replication_factor: None,
    })
}

/// Partition counts of the namespace's catalog topics in the cluster (one metadata request
/// each: the metadata of every topic is slow on a broker that many tests share).
fn partition_counts(namespace: &TestNamespace) -> HashMap<String, usize> {
    let consumer: BaseConsumer = namespace
        .kafka()
        .admin_config("provision-test")
        .create()
        .expect("consumer");
    let mut counts = HashMap::new();
    for topic in &catalog(namespace, 1).topics {
        let metadata = consumer
            .fetch_metadata(Some(&topic.name), Duration::from_secs(10))
            .expect("metadata");
        for found in metadata.topics() {
            if found.name() == topic.name && found.error().is_none() {
                counts.insert(found.name().to_owned(), found.partitions().len());
            }
        }
    }
    counts
}

/// The value of every config of `topic`.
async fn topic_configs(namespace: &TestNamespace, topic: &str) -> HashMap<String, Option<String>> {
    let described = namespace
        .admin()
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("describe configs");
    let resource = described
        .into_iter()
        .next()
        .expect("one resource")
        .expect("described");
    resource
        .entries
        .into_iter()
        .map(|entry| (entry.name, entry.value))
        .collect()
}

#[tokio::test]
async fn provisioning_creates_everything_declared_and_a_second_run_changes_nothing() {
    let namespace = TestNamespace::new("provision");
    let first = eddy(&namespace, 2, &[]);
    assert!(first.status.success(), "{first:?}");
    let report = stdout(&first);
    assert!(
        report.contains("everything matches the catalog now"),
        "{report}"
    );

    let catalog = catalog(&namespace, 2);
    let counts = partition_counts(&namespace);
    let registry = SchemaRegistry::new(&RegistryArgs::new(&namespace.stack().schema_registry_url))
        .expect("registry");
    for topic in &catalog.topics {
        assert!(
            report.contains(&format!("created topic {}", topic.name)),
            "{report}"
        );
        assert_eq!(counts.get(&topic.name), Some(&2), "{}", topic.name);
        let configs = topic_configs(&namespace, &topic.name).await;
        for (key, declared) in &topic.configs {
            assert_eq!(
                configs.get(key).cloned().flatten().as_deref(),
                Some(declared.as_str()),
                "{} {key}",
                topic.name
            );
        }
        let subject = topic.value_subject();
        assert_eq!(
            registry.compatibility(&subject).await.expect("config"),
            Some(COMPATIBILITY.to_owned()),
            "{subject}"
        );
        assert!(
            registry
                .lookup(&subject, &topic.value.registry_text().expect("schema JSON"))
                .await
                .expect("lookup")
                .is_some(),
            "{subject} holds {}",
            topic.value.name
        );
    }

    let second = eddy(&namespace, 2, &[]);
    assert!(second.status.success(), "{second:?}");
    let report = stdout(&second);
    assert!(!report.contains("changed:"), "{report}");
    assert!(
        report.contains(
            "10 topics and 10 subjects checked: everything matches the catalog, nothing changed"
        ),
        "{report}"
    );
}

#[tokio::test]
async fn a_changed_partition_count_is_drift_and_fails_the_run() {
    let namespace = TestNamespace::new("provision-drift");
    let first = eddy(&namespace, 2, &[]);
    assert!(first.status.success(), "{first:?}");

    let drifted = eddy(&namespace, 3, &[]);
    assert_eq!(drifted.status.code(), Some(1), "{drifted:?}");
    let report = stdout(&drifted);
    let messages = catalog(&namespace, 3);
    let messages = messages
        .name(eddy_schemas::catalog::MESSAGES)
        .expect("messages topic");
    assert!(
        report.contains(&format!(
            "drift: topic {messages}: partitions is 2 but the catalog declares 3"
        )),
        "{report}"
    );
    // --fix does not change partition counts: still drift, still topics of 2 partitions.
    let fixed = eddy(&namespace, 3, &["--fix"]);
    assert_eq!(fixed.status.code(), Some(1), "{fixed:?}");
    assert_eq!(partition_counts(&namespace).get(messages), Some(&2));
}

#[tokio::test]
async fn drifted_configs_are_reported_and_fix_corrects_them_keeping_other_settings() {
    let namespace = TestNamespace::new("provision-fix");
    let first = eddy(&namespace, 1, &[]);
    assert!(first.status.success(), "{first:?}");
    let catalog = catalog(&namespace, 1);
    let tags = catalog
        .name(eddy_schemas::catalog::TAGS)
        .expect("tags topic")
        .to_owned();

    // Someone changed a declared config and added one of their own.
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&tags))
        .set("cleanup.policy", "compact")
        .set("min.compaction.lag.ms", "1000")
        .set("segment.bytes", "10485760")
        .set("max.message.bytes", "2000000");
    let altered = namespace
        .admin()
        .alter_configs(&[alter], &AdminOptions::new())
        .await
        .expect("alter");
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");

    let drifted = eddy(&namespace, 1, &[]);
    assert_eq!(drifted.status.code(), Some(1), "{drifted:?}");
    assert!(
        stdout(&drifted).contains(&format!(
            "drift: topic {tags}: min.compaction.lag.ms is 1000 but the catalog declares 86400000 (--fix corrects it)"
        )),
        "{}",
        stdout(&drifted)
    );

    let fixed = eddy(&namespace, 1, &["--fix"]);
    assert!(fixed.status.success(), "{fixed:?}");
    assert!(
        stdout(&fixed).contains(&format!(
            "changed: topic {tags}: set min.compaction.lag.ms=86400000 (was 1000)"
        )),
        "{}",
        stdout(&fixed)
    );
    let configs = topic_configs(&namespace, &tags).await;
    assert_eq!(
        configs
            .get("min.compaction.lag.ms")
            .cloned()
            .flatten()
            .as_deref(),
        Some("86400000")
    );
    assert_eq!(
        configs
            .get("max.message.bytes")
            .cloned()
            .flatten()
            .as_deref(),
        Some("2000000"),
        "a config set outside the catalog is kept"
    );
    let clean = eddy(&namespace, 1, &[]);
    assert!(clean.status.success(), "{clean:?}");
}

#[test]
fn unreachable_kafka_exits_2_and_bad_configuration_exits_64() {
    let unreachable = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["topics", "provision", "--wait-timeout", "2s"])
        .env("EDDY_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .output()
        .expect("eddy runs");
    assert_eq!(unreachable.status.code(), Some(2), "{unreachable:?}");
    assert!(
        String::from_utf8_lossy(&unreachable.stderr).contains("did not answer within 2 s"),
        "{unreachable:?}"
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["topics", "provision", "--topic-partitions", "0"])
        .output()
        .expect("eddy runs");
    assert_eq!(bad.status.code(), Some(64), "{bad:?}");
    let bad_namespace = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["topics", "list", "--topic-namespace", "a b"])
        .output()
        .expect("eddy runs");
    assert_eq!(bad_namespace.status.code(), Some(64), "{bad_namespace:?}");
}

#[test]
fn platform_wait_returns_once_kafka_and_the_registry_answer_and_names_the_one_that_does_not() {
    let namespace = TestNamespace::new("cli-wait");
    let stack = namespace.stack();
    let wait = |bootstrap: &str, registry: &str| {
        Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["platform", "wait", "--timeout", "2s"])
            .env("EDDY_KAFKA_BOOTSTRAP_SERVERS", bootstrap)
            .env("EDDY_SCHEMA_REGISTRY_URL", registry)
            .output()
            .expect("eddy runs")
    };
    let up = wait(&stack.bootstrap_servers, &stack.schema_registry_url);
    assert!(up.status.success(), "{up:?}");
    assert!(
        String::from_utf8_lossy(&up.stderr).contains("kafka and the schema registry answer"),
        "{up:?}"
    );

    let no_kafka = wait("127.0.0.1:1", &stack.schema_registry_url);
    assert_eq!(no_kafka.status.code(), Some(2), "{no_kafka:?}");
    assert!(
        String::from_utf8_lossy(&no_kafka.stderr)
            .contains("kafka at 127.0.0.1:1 did not answer within 2 s"),
        "{no_kafka:?}"
    );

    let no_registry = wait(
        &stack.bootstrap_servers,
        "http://127.0.0.1:1/apis/ccompat/v7",
    );
    assert_eq!(no_registry.status.code(), Some(2), "{no_registry:?}");
    assert!(
        String::from_utf8_lossy(&no_registry.stderr)
            .contains("the schema registry at http://127.0.0.1:1/apis/ccompat/v7"),
        "{no_registry:?}"
    );
}
