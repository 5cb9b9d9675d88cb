//! The one way to configure a Kafka client. Every producer, consumer and admin client in Eddy
//! starts from [`KafkaArgs`], so bootstrap, security and the settings that keep data consistent
//! with the Java ecosystem are set in one place:
//!
//! - producers are idempotent with `acks=all` (no duplicates or reordering on retry);
//! - keys are partitioned with `murmur2_random`, the Java client's algorithm, so a key lands on
//!   the same partition whether a Rust or a Java client wrote it;
//! - consumers commit explicitly (`enable.auto.commit=false`) and read only committed
//!   transactional data (`isolation.level=read_committed`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::ServiceError;
use crate::config::Secret;

/// How to reach and authenticate to the Kafka cluster.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Comma-separated `host:port` list of Kafka brokers to bootstrap from.
    #[arg(
        long = "kafka-bootstrap-servers",
        env = "EDDY_KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:19092"
    )]
    pub bootstrap_servers: String,

    /// Security protocol for broker connections.
    #[arg(
        long = "kafka-security-protocol",
        env = "EDDY_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value = "plaintext"
    )]
    pub security_protocol: SecurityProtocol,

    /// SASL mechanism, required with the sasl-* protocols.
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "EDDY_KAFKA_SASL_MECHANISM",
        value_enum
    )]
    pub sasl_mechanism: Option<SaslMechanism>,

    /// SASL user name.
    #[arg(long = "kafka-sasl-username", env = "EDDY_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,

    /// SASL password (never logged).
    #[arg(
        long = "kafka-sasl-password",
        env = "EDDY_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<Secret>,

    /// CA certificate file (PEM) to verify the brokers with, for the ssl and sasl-ssl protocols.
    #[arg(long = "kafka-ssl-ca-location", env = "EDDY_KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<PathBuf>,

    /// Extra librdkafka properties as `key=value`, comma-separated; they override the defaults
    /// set here (for settings this struct does not name).
    #[arg(
        long = "kafka-property",
        env = "EDDY_KAFKA_PROPERTIES",
        value_delimiter = ','
    )]
    pub extra_properties: Vec<KafkaProperty>,
}

/// `security.protocol` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `sasl.mechanism` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    Plain,
    #[value(name = "scram-sha-256")]
    ScramSha256,
    #[value(name = "scram-sha-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// One `key=value` librdkafka property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaProperty {
    pub key: String,
    pub value: String,
}

impl FromStr for KafkaProperty {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok(KafkaProperty {
                key: key.trim().to_owned(),
                value: value.trim().to_owned(),
            }),
            _ => Err(format!("'{text}' is not a key=value Kafka property")),
        }
    }
}

impl KafkaArgs {
    /// Plaintext connection to `bootstrap_servers`, everything else default (tests, tools).
    pub fn plaintext(bootstrap_servers: impl Into<String>) -> Self {
        KafkaArgs {
            bootstrap_servers: bootstrap_servers.into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            extra_properties: Vec::new(),
        }
    }

    /// Checks the settings that only make sense together; call it right after parsing.
    pub fn validate(&self) -> Result<(), ServiceError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(ServiceError::Config(
                "EDDY_KAFKA_BOOTSTRAP_SERVERS is empty".to_owned(),
            ));
        }
        if self.security_protocol.uses_sasl() {
            let mut missing = Vec::new();
            if self.sasl_mechanism.is_none() {
                missing.push("EDDY_KAFKA_SASL_MECHANISM");
            }
            if self.sasl_username.is_none() {
                missing.push("EDDY_KAFKA_SASL_USERNAME");
            }
            if self.sasl_password.is_none() {
                missing.push("EDDY_KAFKA_SASL_PASSWORD");
            }
            if !missing.is_empty() {
                return Err(ServiceError::Config(format!(
                    "security protocol {} needs {}",
                    self.security_protocol.as_librdkafka(),
                    missing.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Settings every client shares: bootstrap, security and a client id for broker logs.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", client_id)
            .set("security.protocol", self.security_protocol.as_librdkafka())
            // librdkafka tries IPv6 first for "localhost"; resolve both, prefer what answers.
            .set("broker.address.family", "any");
        if let Some(mechanism) = self.sasl_mechanism {
            config.set("sasl.mechanism", mechanism.as_librdkafka());
        }
        if let Some(username) = &self.sasl_username {
            config.set("sasl.username", username);
        }
        if let Some(password) = &self.sasl_password {
            config.set("sasl.password", password.expose());
        }
        if let Some(ca_location) = &self.ssl_ca_location {
            config.set("ssl.ca.location", ca_location.to_string_lossy());
        }
        config
    }

    /// A producer: idempotent, `acks=all`, Java-compatible key partitioning.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut config = self.client_config(client_id);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("compression.type", "lz4")
            .set("linger.ms", "5");
        self.apply_extra(config)
    }

    /// A transactional producer (exactly-once pipelines); `transactional_id` must be stable
    /// across restarts of the same logical producer so Kafka can fence its zombies.
    pub fn transactional_producer_config(
        &self,
        client_id: &str,
        transactional_id: &str,
    ) -> ClientConfig {
        let mut config = self.producer_config(client_id);
        config
            .set("transactional.id", transactional_id)
            // A restarted instance takes over its predecessor's transactional id: the broker
            // aborts the dead one's open transaction and answers "concurrent transactions"
            // until it has. Retry that quickly (the default backoff grows to a second).
            .set("retry.backoff.ms", "20")
            .set("retry.backoff.max.ms", "200");
        config
    }

    /// A consumer in `group_id` that commits explicitly and reads only committed data.
    pub fn consumer_config(&self, client_id: &str, group_id: &str) -> ClientConfig {
        let mut config = self.client_config(client_id);
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false");
        self.apply_extra(config)
    }

    /// An admin client (topics, configs, groups).
    pub fn admin_config(&self, client_id: &str) -> ClientConfig {
        let config = self.client_config(client_id);
        self.apply_extra(config)
    }

    fn apply_extra(&self, mut config: ClientConfig) -> ClientConfig {
        for property in &self.extra_properties {
            config.set(&property.key, &property.value);
        }
        config
    }
}

/// Waits until the cluster answers a metadata request, retrying with backoff (1 s doubling to
/// 10 s) and logging while it waits: components start before Kafka is reachable instead of
/// crash-looping. Returns `false` if `stop` was cancelled first.
pub async fn wait_for_kafka(args: &KafkaArgs, client_id: &str, stop: &CancellationToken) -> bool {
    let mut backoff = Duration::from_secs(1);
    let mut attempt = 0_u32;
    loop {
        attempt += 1;
        let config = args.admin_config(client_id);
        let probe = tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create()?;
            // Metadata of one (absent) topic: enough to list the brokers, and cheap on a
            // cluster with thousands of topics, where the metadata of all of them is not.
            consumer
                .fetch_metadata(Some("__eddy_reachability_probe"), Duration::from_secs(5))
                .map(|metadata| metadata.brokers().len())
        });
        match probe.await {
            Ok(Ok(brokers)) if brokers > 0 => {
                tracing::info!(brokers, attempt, "kafka reachable");
                return true;
            }
            Ok(Ok(_)) => tracing::warn!(attempt, "kafka answered with no brokers; retrying"),
            Ok(Err(error)) => tracing::warn!(
                error = %error,
                bootstrap_servers = %args.bootstrap_servers,
                attempt,
                "waiting for kafka"
            ),
            Err(error) => tracing::warn!(error = %error, attempt, "kafka probe task failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct TestConfig {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    #[test]
    fn producers_are_idempotent_with_java_partitioning() {
        let config = KafkaArgs::plaintext("127.0.0.1:1").producer_config("test");
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("partitioner"), Some("murmur2_random"));
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:1"));
    }

    #[test]
    fn consumers_commit_explicitly_and_read_committed() {
        let config = KafkaArgs::plaintext("127.0.0.1:1").consumer_config("test", "group-a");
        assert_eq!(config.get("group.id"), Some("group-a"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("isolation.level"), Some("read_committed"));
    }

    #[test]
    fn sasl_settings_reach_the_client() {
        let config = TestConfig::try_parse_from([
            "test",
            "--kafka-security-protocol",
            "sasl-ssl",
            "--kafka-sasl-mechanism",
            "scram-sha-512",
            "--kafka-sasl-username",
            "eddy",
            "--kafka-sasl-password",
            "s3cret",
            "--kafka-property",
            "socket.timeout.ms=1000,acks=1",
        ])
        .unwrap();
        config.kafka.validate().unwrap();
        assert!(!format!("{:?}", config.kafka).contains("s3cret"));
        let client = config.kafka.producer_config("test");
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("sasl.password"), Some("s3cret"));
        assert_eq!(client.get("socket.timeout.ms"), Some("1000"));
        // Explicit properties win over the defaults.
        assert_eq!(client.get("acks"), Some("1"));
    }

    #[test]
    fn sasl_without_credentials_is_a_config_error() {
        let config =
            TestConfig::try_parse_from(["test", "--kafka-security-protocol", "sasl-plaintext"])
                .unwrap();
        let error = config.kafka.validate().unwrap_err().to_string();
        assert!(
            error.contains(
                "EDDY_KAFKA_SASL_MECHANISM, EDDY_KAFKA_SASL_USERNAME, EDDY_KAFKA_SASL_PASSWORD"
            ),
            "{error}"
        );
    }

    #[test]
    fn malformed_properties_are_rejected() {
        let error = TestConfig::try_parse_from(["test", "--kafka-property", "no-equals-sign"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("is not a key=value Kafka property"),
            "{error}"
        );
    }
}
