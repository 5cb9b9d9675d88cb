//! What every component with state or writes does first: wait for Kafka and the schema
//! registry (logging while it waits, stopping early on shutdown) instead of crash-looping.

use std::time::Duration;

use eddy_schemas::{RegistryArgs, SchemaRegistry};
use eddy_service::Runtime;
use eddy_service::kafka::{KafkaArgs, wait_for_kafka};

/// Waits for Kafka and for the registry; returns the registry client.
///
/// Making the registry's HTTP clients loads the TLS root certificates (a few hundred
/// milliseconds), so it runs on a blocking thread while Kafka is probed: restarts stay fast.
pub async fn connect(
    runtime: &Runtime,
    kafka: &KafkaArgs,
    registry: &RegistryArgs,
) -> Result<SchemaRegistry, String> {
    let stop = runtime.shutdown.token();
    let registry_args = registry.clone();
    let client = tokio::task::spawn_blocking(move || SchemaRegistry::new(&registry_args));
    if !wait_for_kafka(kafka, runtime.component.name, &stop).await {
        return Err("stopped while waiting for Kafka".to_owned());
    }
    let registry = client
        .await
        .map_err(|error| format!("making the registry client: {error}"))?
        .map_err(|error| error.to_string())?;
    loop {
        match registry.wait_until_reachable(Duration::from_secs(30)).await {
            Ok(()) => return Ok(registry),
            Err(error) if !stop.is_cancelled() => {
                tracing::warn!(error = %error, "waiting for the schema registry");
            }
            Err(error) => {
                return Err(format!(
                    "stopped while waiting for the schema registry: {error}"
                ));
            }
        }
    }
}
