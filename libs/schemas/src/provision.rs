//! Provisioning: makes a cluster and a registry match the [`Catalog`]. Missing topics are
//! created with their declared settings; each value subject gets compatibility BACKWARD and the
//! entity's schema. Running it again changes nothing. A topic that exists with other settings
//! is drift: it is reported, and with `fix` the topic configs are corrected. Partition counts and
//! replication factors are never changed here: more partitions would move keys to other
//! partitions (breaking per-key order and the state built per partition), and replication
//! changes need a reassignment plan.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use eddy_service::kafka::KafkaArgs;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::catalog::{Catalog, TopicDefinition};
use crate::registry::{COMPATIBILITY, SchemaRegistry};

const CLIENT_ID: &str = "eddy-topics-provision";
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A change provisioning made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreatedTopic {
        topic: String,
        partitions: i32,
    },
    ChangedConfig {
        topic: String,
        key: String,
        from: Option<String>,
        to: String,
    },
    SetCompatibility {
        subject: String,
        from: Option<String>,
    },
    RegisteredSchema {
        subject: String,
        schema: String,
        id: u32,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreatedTopic { topic, partitions } => {
                write!(formatter, "created topic {topic} ({partitions} partitions)")
            }
            Action::ChangedConfig {
                topic,
                key,
                from,
                to,
            } => write!(
                formatter,
                "topic {topic}: set {key}={to} (was {})",
                from.as_deref().unwrap_or("unset")
            ),
            Action::SetCompatibility { subject, from } => write!(
                formatter,
                "subject {subject}: compatibility set to {COMPATIBILITY} (was {})",
                from.as_deref().unwrap_or("the registry default")
            ),
            Action::RegisteredSchema {
                subject,
                schema,
                id,
            } => write!(
                formatter,
                "subject {subject}: registered {schema} (schema id {id})"
            ),
        }
    }
}

/// A difference between the catalog and the cluster that is still there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub topic: String,
    /// `partitions`, `replication factor` or a topic config key.
    pub setting: String,
    pub declared: String,
    pub actual: String,
    /// Whether `--fix` corrects it.
    pub fixable: bool,
}

impl fmt::Display for Drift {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "topic {}: {} is {} but the catalog declares {}",
            self.topic, self.setting, self.actual, self.declared
        )?;
        if self.fixable {
            formatter.write_str(" (--fix corrects it)")
        } else if self.setting == "partitions" {
            formatter.write_str(
                " (not changed by provisioning: keys would move to other partitions; migrate to a new topic)",
            )
        } else {
            formatter
                .write_str(" (not changed by provisioning: reassign replicas with Kafka's tools)")
        }
    }
}

/// What provisioning did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionReport {
    pub actions: Vec<Action>,
    pub drift: Vec<Drift>,
    /// Topics or subjects that could not be brought in line (e.g. an incompatible schema).
    pub failures: Vec<String>,
    /// Topics and subjects checked.
    pub topics: usize,
    pub subjects: usize,
}

impl ProvisionReport {
    /// Everything matches the catalog now.
    pub fn is_clean(&self) -> bool {
        self.drift.is_empty() && self.failures.is_empty()
    }
}

/// Why provisioning could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("kafka: {0}")]
    Kafka(String),
}

/// A topic as the cluster has it.
struct ExistingTopic {
    partitions: i32,
    replication_factor: i32,
}

/// Brings the cluster and registry in line with `catalog`.
pub async fn provision(
    kafka: &KafkaArgs,
    registry: &SchemaRegistry,
    catalog: &Catalog,
    fix: bool,
) -> Result<ProvisionReport, ProvisionError> {
    let admin: AdminClient<DefaultClientContext> = kafka
        .admin_config(CLIENT_ID)
        .create()
        .map_err(|error| ProvisionError::Kafka(format!("creating an admin client: {error}")))?;
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let existing = existing_topics(
        kafka,
        catalog
            .topics
            .iter()
            .map(|topic| topic.name.clone())
            .collect(),
    )
    .await?;
    let mut report = ProvisionReport {
        topics: catalog.topics.len(),
        subjects: catalog.topics.len(),
        ..ProvisionReport::default()
    };

    let (present, missing): (Vec<&TopicDefinition>, Vec<&TopicDefinition>) = catalog
        .topics
        .iter()
        .partition(|topic| existing.contains_key(&topic.name));
    create_topics(&admin, &options, &missing, &mut report).await?;
    for topic in present {
        let actual = &existing[&topic.name];
        check_topic(&admin, &options, topic, actual, fix, &mut report).await?;
    }
    for topic in &catalog.topics {
        provision_subject(registry, topic, &mut report).await;
    }
    Ok(report)
}

/// Partition count and replication factor of each of `names` that exists. One metadata
/// request per topic: the metadata of every topic is slow (or times out) on a cluster with
/// thousands of them.
async fn existing_topics(
    kafka: &KafkaArgs,
    names: Vec<String>,
) -> Result<HashMap<String, ExistingTopic>, ProvisionError> {
    let config = kafka.admin_config(CLIENT_ID);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let mut existing = HashMap::new();
        for name in names {
            let metadata = consumer.fetch_metadata(Some(&name), ADMIN_TIMEOUT)?;
            for topic in metadata.topics() {
                if topic.name() != name || topic.error().is_some() || topic.partitions().is_empty()
                {
                    continue;
                }
                let replication_factor = topic
                    .partitions()
                    .first()
                    .map_or(0, |partition| partition.replicas().len());
                existing.insert(
                    topic.name().to_owned(),
                    ExistingTopic {
                        partitions: i32::try_from(topic.partitions().len()).unwrap_or(i32::MAX),
                        replication_factor: i32::try_from(replication_factor).unwrap_or(i32::MAX),
                    },
                );
            }
        }
        Ok::<_, rdkafka::error::KafkaError>(existing)
    })
    .await
    .map_err(|error| ProvisionError::Kafka(format!("listing topics: {error}")))?
    .map_err(|error| ProvisionError::Kafka(format!("listing topics: {error}")))
}

async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    missing: &[&TopicDefinition],
    report: &mut ProvisionReport,
) -> Result<(), ProvisionError> {
    if missing.is_empty() {
        return Ok(());
    }
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|topic| {
            let replication = TopicReplication::Fixed(topic.replication_factor.unwrap_or(-1));
            topic.configs.iter().fold(
                NewTopic::new(&topic.name, topic.partitions, replication),
                |new_topic, (key, value)| new_topic.set(key, value),
            )
        })
        .collect();
    let results = admin
        .create_topics(&new_topics, options)
        .await
        .map_err(|error| ProvisionError::Kafka(format!("creating topics: {error}")))?;
    for (topic, result) in missing.iter().zip(results) {
        match result {
            Ok(_) => report.actions.push(Action::CreatedTopic {
                topic: topic.name.clone(),
                partitions: topic.partitions,
            }),
            // Created meanwhile by someone else: the next run checks its settings.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => report
                .failures
                .push(format!("topic {name}: could not be created: {code}")),
        }
    }
    Ok(())
}

async fn check_topic(
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    topic: &TopicDefinition,
    actual: &ExistingTopic,
    fix: bool,
    report: &mut ProvisionReport,
) -> Result<(), ProvisionError> {
    let drift = |setting: &str, declared: String, actual: String, fixable: bool| Drift {
        topic: topic.name.clone(),
        setting: setting.to_owned(),
        declared,
        actual,
        fixable,
    };
    if actual.partitions != topic.partitions {
        report.drift.push(drift(
            "partitions",
            topic.partitions.to_string(),
            actual.partitions.to_string(),
            false,
        ));
    }
    if let Some(declared) = topic.replication_factor
        && declared != actual.replication_factor
    {
        report.drift.push(drift(
            "replication factor",
            declared.to_string(),
            actual.replication_factor.to_string(),
            false,
        ));
    }

    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(&topic.name)], options)
        .await
        .map_err(|error| ProvisionError::Kafka(format!("describing {}: {error}", topic.name)))?;
    let resource = match described.into_iter().next() {
        Some(Ok(resource)) => resource,
        Some(Err(code)) => {
            report.failures.push(format!(
                "topic {}: could not read its configs: {code}",
                topic.name
            ));
            return Ok(());
        }
        None => return Ok(()),
    };
    let mut wrong: BTreeMap<&str, (Option<String>, &str)> = BTreeMap::new();
    for (key, declared) in &topic.configs {
        let actual = resource.get(key).and_then(|entry| entry.value.clone());
        if actual.as_deref() != Some(declared.as_str()) {
            wrong.insert(key, (actual, declared));
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    if !fix {
        for (key, (actual, declared)) in wrong {
            report.drift.push(drift(
                key,
                declared.to_owned(),
                actual.unwrap_or_else(|| "unset".to_owned()),
                true,
            ));
        }
        return Ok(());
    }
    // AlterConfigs replaces all dynamic configs of the topic: keep the ones set outside the
    // catalog and overwrite the declared ones.
    let mut configs: BTreeMap<&str, &str> = resource
        .entries
        .iter()
        .filter(|entry| entry.source == ConfigSource::DynamicTopic)
        .filter_map(|entry| Some((entry.name.as_str(), entry.value.as_deref()?)))
        .collect();
    for (key, value) in &topic.configs {
        configs.insert(key, value);
    }
    let alter = configs.iter().fold(
        AlterConfig::new(ResourceSpecifier::Topic(&topic.name)),
        |alter, (key, value)| alter.set(key, value),
    );
    let result = admin
        .alter_configs(&[alter], options)
        .await
        .map_err(|error| ProvisionError::Kafka(format!("altering {}: {error}", topic.name)))?;
    match result.into_iter().next() {
        Some(Err((_, code))) => report.failures.push(format!(
            "topic {}: could not correct its configs: {code}",
            topic.name
        )),
        _ => {
            for (key, (from, to)) in wrong {
                report.actions.push(Action::ChangedConfig {
                    topic: topic.name.clone(),
                    key: key.to_owned(),
                    from,
                    to: to.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Compatibility first, so the registry checks the schema against the versions before it.
async fn provision_subject(
    registry: &SchemaRegistry,
    topic: &TopicDefinition,
    report: &mut ProvisionReport,
) {
    if let Err(failure) = provision_subject_steps(registry, topic, &mut report.actions).await {
        report.failures.push(failure);
    }
}

async fn provision_subject_steps(
    registry: &SchemaRegistry,
    topic: &TopicDefinition,
    actions: &mut Vec<Action>,
) -> Result<(), String> {
    let subject = topic.value_subject();
    let in_subject = |error: crate::registry::RegistryError| format!("subject {subject}: {error}");
    let current = registry.compatibility(&subject).await.map_err(in_subject)?;
    if current.as_deref() != Some(COMPATIBILITY) {
        registry
            .set_compatibility(&subject, COMPATIBILITY)
            .await
            .map_err(in_subject)?;
        actions.push(Action::SetCompatibility {
            subject: subject.clone(),
            from: current,
        });
    }
    let schema = topic
        .value
        .registry_text()
        .map_err(|error| format!("subject {subject}: {error}"))?;
    if registry
        .lookup(&subject, &schema)
        .await
        .map_err(in_subject)?
        .is_none()
    {
        // The error names the subject and the schema.
        let id = registry
            .register(&subject, &schema)
            .await
            .map_err(|error| error.to_string())?;
        actions.push(Action::RegisteredSchema {
            subject,
            schema: topic.value.name.to_owned(),
            id,
        });
    }
    Ok(())
}
