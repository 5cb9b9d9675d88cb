//! The commands of `eddy`, kept out of `main.rs` so tests can call them.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use eddy_schemas::provision::{ProvisionReport, provision};
use eddy_schemas::{Catalog, RegistryArgs, SchemaRegistry};
use eddy_service::kafka::{KafkaArgs, wait_for_kafka};
use tokio_util::sync::CancellationToken;

/// Drift or a failure remains after provisioning.
pub const EXIT_DRIFT: u8 = 1;
/// Kafka or the registry could not be reached.
pub const EXIT_UNREACHABLE: u8 = 2;

/// `eddy topics list`: one block per topic.
pub fn describe_catalog(catalog: &Catalog) -> String {
    let mut text = String::new();
    for topic in &catalog.topics {
        let replication = topic
            .replication_factor
            .map_or_else(|| "broker default".to_owned(), |factor| factor.to_string());
        let configs: Vec<String> = topic
            .configs
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let _ = writeln!(text, "{}", topic.name);
        let _ = writeln!(text, "  {}", topic.description);
        let _ = writeln!(
            text,
            "  partitions {}, replication factor {replication}",
            topic.partitions
        );
        let _ = writeln!(text, "  config {}", configs.join(" "));
        let _ = writeln!(
            text,
            "  key {:?}, value {} (subject {})",
            topic.key,
            topic.value.name,
            topic.value_subject()
        );
    }
    text
}

/// Waits (each up to `wait_timeout`) until Kafka and the schema registry answer; the registry
/// client, or the exit code after saying on stderr which one did not answer.
async fn wait_for_platform(
    kafka: &KafkaArgs,
    registry: &RegistryArgs,
    client_id: &str,
    wait_timeout: Duration,
) -> Result<SchemaRegistry, ExitCode> {
    let registry_url = registry.url.clone();
    let registry = SchemaRegistry::new(registry).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_UNREACHABLE)
    })?;
    let never_cancelled = CancellationToken::new();
    let kafka_wait = tokio::time::timeout(
        wait_timeout,
        wait_for_kafka(kafka, client_id, &never_cancelled),
    );
    if kafka_wait.await.is_err() {
        eprintln!(
            "error: kafka at {} did not answer within {} s",
            kafka.bootstrap_servers,
            wait_timeout.as_secs()
        );
        return Err(ExitCode::from(EXIT_UNREACHABLE));
    }
    if let Err(error) = registry.wait_until_reachable(wait_timeout).await {
        eprintln!("error: the schema registry at {registry_url}: {error}");
        return Err(ExitCode::from(EXIT_UNREACHABLE));
    }
    Ok(registry)
}

/// `eddy platform wait`: returns once Kafka and the schema registry answer (an init container
/// runs it, so a component starts only when the platform is there), or fails after the timeout
/// saying which one did not answer.
pub async fn wait_for_platform_command(
    kafka: &KafkaArgs,
    registry: &RegistryArgs,
    wait_timeout: Duration,
) -> ExitCode {
    eprintln!(
        "waiting for kafka at {} and the schema registry at {} (up to {} s each)",
        kafka.bootstrap_servers,
        registry.url,
        wait_timeout.as_secs()
    );
    match wait_for_platform(kafka, registry, "eddy-platform-wait", wait_timeout).await {
        Ok(_) => {
            eprintln!("kafka and the schema registry answer");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `eddy topics provision`: waits for Kafka and the registry, provisions, prints the report.
pub async fn provision_topics(
    catalog: &Catalog,
    kafka: &KafkaArgs,
    registry: &RegistryArgs,
    fix: bool,
    wait_timeout: Duration,
) -> ExitCode {
    let registry =
        match wait_for_platform(kafka, registry, "eddy-topics-provision", wait_timeout).await {
            Ok(registry) => registry,
            Err(code) => return code,
        };
    match provision(kafka, &registry, catalog, fix).await {
        Ok(report) => {
            print!("{}", describe_report(&report));
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_DRIFT)
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// What provisioning did, what differs and what failed, then a one-line summary.
pub fn describe_report(report: &ProvisionReport) -> String {
    let mut text = String::new();
    for action in &report.actions {
        let _ = writeln!(text, "changed: {action}");
    }
    for drift in &report.drift {
        let _ = writeln!(text, "drift: {drift}");
    }
    for failure in &report.failures {
        let _ = writeln!(text, "failed: {failure}");
    }
    let checked = format!(
        "{} topics and {} subjects checked",
        report.topics, report.subjects
    );
    let _ = match (report.actions.len(), report.is_clean()) {
        (0, true) => writeln!(
            text,
            "{checked}: everything matches the catalog, nothing changed"
        ),
        (changes, true) => writeln!(
            text,
            "{checked}: {changes} changes made, everything matches the catalog now"
        ),
        (changes, false) => writeln!(
            text,
            "{checked}: {changes} changes made, {} drifted settings and {} failures remain",
            report.drift.len(),
            report.failures.len()
        ),
    };
    text
}
