//! The settings of `eddy-admin`: the shared ones (service, Kafka, schema registry, topic
//! catalog, HTTP API, streams application) plus the installation's secret key and the webhook
//! destination policy.

use clap::Parser;
use eddy_api::ApiArgs;
use eddy_schemas::{CatalogArgs, RegistryArgs};
use eddy_service::config::Secret;
use eddy_service::kafka::KafkaArgs;
use eddy_service::{ComponentConfig, ServiceArgs, ServiceError};
use eddy_streams::service::StreamsArgs;

use crate::destination::DestinationPolicy;
use eddy_webhooks::destination::DestinationArgs;

/// The version of the delivery log's state layout (see [`crate::delivery_log`]); a new one
/// reprocesses beside the old (its own group, stores and changelogs).
pub const DELIVERIES_APPLICATION: &str = "admin-deliveries-v1";

/// The shortest installation secret key accepted (webhook signing secrets derive from it).
pub const MIN_SECRET_KEY_CHARS: usize = 32;

/// Every setting of `eddy-admin`, each a flag with an `EDDY_*` environment twin.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "eddy-admin",
    version,
    about = "Eddy's admin API: channels, tags and webhook subscriptions"
)]
pub struct Config {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    /// The delivery log view (a streams application reading the webhook deliveries topic).
    #[command(flatten)]
    pub streams: StreamsArgs,
    /// Application id of the delivery log view (consumer group, internal-topic prefix);
    /// default `[<topic namespace>.]admin-deliveries-v1`.
    #[arg(long, env = "EDDY_APPLICATION_ID")]
    pub application_id: Option<String>,

    /// The installation's secret key (at least 32 characters): every webhook signing secret is
    /// derived from it and the reference a subscription stores, so the secret itself is never
    /// written to Kafka.
    #[arg(long, env = "EDDY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Secret,

    /// Which webhook destinations are accepted (`EDDY_WEBHOOK_ALLOW_LOOPBACK`,
    /// `EDDY_WEBHOOK_ALLOW_PRIVATE_NETWORKS`), as the sender checks them.
    #[command(flatten)]
    pub destinations: DestinationArgs,
}

impl Config {
    /// Which webhook destinations this installation accepts.
    pub fn destination_policy(&self) -> DestinationPolicy {
        self.destinations.policy()
    }
}

impl Config {
    /// The delivery log view's application id.
    pub fn application_id(&self) -> String {
        self.application_id
            .clone()
            .unwrap_or_else(|| self.catalog.application_id(DELIVERIES_APPLICATION))
    }

    /// Where other instances reach this one: `EDDY_ADVERTISED_ADDRESS`, else the API address
    /// (with 127.0.0.1 for an unspecified host: right for one machine; Kubernetes sets the pod
    /// address).
    pub fn advertised_address(&self) -> String {
        self.streams.advertised_address.clone().unwrap_or_else(|| {
            let address = self.api.http_address;
            if address.ip().is_unspecified() {
                format!("127.0.0.1:{}", address.port())
            } else {
                address.to_string()
            }
        })
    }
}

impl ComponentConfig for Config {
    fn service(&self) -> &ServiceArgs {
        &self.service
    }

    fn validate(&self) -> Result<(), ServiceError> {
        self.kafka.validate()?;
        self.api.validate()?;
        if self.secret_key.expose().chars().count() < MIN_SECRET_KEY_CHARS {
            return Err(ServiceError::Config(format!(
                "EDDY_SECRET_KEY must be at least {MIN_SECRET_KEY_CHARS} characters"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "a-system-token-of-some-length";
    const KEY: &str = "an-installation-secret-key-of-32-chars";

    #[test]
    fn defaults_refuse_loopback_and_private_destinations() {
        let config =
            Config::try_parse_from(["eddy-admin", "--system-token", TOKEN, "--secret-key", KEY])
                .expect("parses");
        config.validate().expect("valid");
        assert!(!config.destinations.webhook_allow_loopback);
        assert!(!config.destinations.webhook_allow_private_networks);
        assert!(!format!("{config:?}").contains(KEY));
        assert_eq!(config.application_id(), "admin-deliveries-v1");
    }

    #[test]
    fn the_application_id_follows_the_namespace_unless_set() {
        let config = Config::try_parse_from([
            "eddy-admin",
            "--system-token",
            TOKEN,
            "--secret-key",
            KEY,
            "--topic-namespace",
            "acme",
            "--http-address",
            "0.0.0.0:8080",
        ])
        .expect("parses");
        assert_eq!(config.application_id(), "acme.admin-deliveries-v1");
        assert_eq!(config.advertised_address(), "127.0.0.1:8080");
        let config = Config::try_parse_from([
            "eddy-admin",
            "--system-token",
            TOKEN,
            "--secret-key",
            KEY,
            "--application-id",
            "admin-deliveries-v2",
            "--advertised-address",
            "admin-0.admin:8080",
        ])
        .expect("parses");
        assert_eq!(config.application_id(), "admin-deliveries-v2");
        assert_eq!(config.advertised_address(), "admin-0.admin:8080");
    }

    #[test]
    fn a_short_secret_key_is_bad_configuration() {
        let config = Config::try_parse_from([
            "eddy-admin",
            "--system-token",
            TOKEN,
            "--secret-key",
            "short",
        ])
        .expect("parses");
        let error = config.validate().expect_err("too short").to_string();
        assert!(error.contains("EDDY_SECRET_KEY"), "{error}");
        assert!(!error.contains("short"), "{error}");
    }

    #[test]
    fn the_secret_key_is_required() {
        let error = Config::try_parse_from(["eddy-admin", "--system-token", TOKEN])
            .expect_err("missing key")
            .to_string();
        assert!(error.contains("--secret-key"), "{error}");
    }
}
