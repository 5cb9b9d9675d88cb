//! Running a streams application inside an Eddy component: settings as `EDDY_*` flags, `/ready`
//! true only while the application is RUNNING, and SIGTERM committing and closing it within the
//! grace period.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use eddy_service::Runtime;
use eddy_service::config::parse_duration;
use eddy_service::kafka::KafkaArgs;

use crate::{AppState, ErrorPolicy, GlobalTable, ProcessingGuarantee, StreamsApp, StreamsConfig};

/// Settings of a component's streams application.
#[derive(Debug, Clone, Args)]
pub struct StreamsArgs {
    /// Where local state lives; keep it on a persistent volume for fast restarts.
    #[arg(long, env = "EDDY_STATE_DIR", default_value = "state")]
    pub state_dir: PathBuf,

    /// How often processed input offsets are committed.
    /// Under exactly-once this is also how soon processed records show in queries.
    #[arg(long, env = "EDDY_COMMIT_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub commit_interval: Duration,

    /// Stable id of this instance (the pod name in a StatefulSet).
    #[arg(long, env = "EDDY_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Static group membership under EDDY_INSTANCE_ID: a restarted instance takes its
    /// partitions back at once, without a rebalance.
    #[arg(long, env = "EDDY_STATIC_MEMBERSHIP", default_value_t = false, action = clap::ArgAction::Set)]
    pub static_membership: bool,

    /// What to do with a record whose processing keeps failing: dead-letter it or stop.
    #[arg(
        long,
        env = "EDDY_PROCESSING_ERROR_POLICY",
        value_enum,
        default_value = "dead-letter"
    )]
    pub error_policy: ErrorPolicy,

    /// Retries (100 ms backoff, doubling) before the error policy applies.
    #[arg(long, env = "EDDY_PROCESSING_MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,

    /// `host:port` where this instance's query API is reachable by the other instances (the
    /// pod's address); queries for keys it owns are routed here.
    #[arg(long, env = "EDDY_ADVERTISED_ADDRESS")]
    pub advertised_address: Option<String>,

    /// at-least-once or exactly-once (Kafka transactions); unset: the component's default
    /// (exactly-once where several stores must agree after a crash).
    #[arg(long, env = "EDDY_PROCESSING_GUARANTEE", value_enum)]
    pub guarantee: Option<ProcessingGuarantee>,

    /// How long state of partitions no longer owned is kept before it is deleted.
    #[arg(long, env = "EDDY_STATE_CLEANUP_DELAY", default_value = "10m", value_parser = parse_duration)]
    pub state_cleanup_delay: Duration,
}

impl StreamsArgs {
    /// The configuration of an application whose stores must agree with each other after a
    /// crash: exactly-once unless `EDDY_PROCESSING_GUARANTEE` says otherwise. (Under
    /// at-least-once each store's changelog is written on its own, so a kill -9 can keep one
    /// store's update of a record and lose another's; the replayed record then sees
    /// half-applied state. Transactions commit every store's changelog, and the input offsets,
    /// together.)
    pub fn config_exactly_once_by_default(&self, kafka: KafkaArgs) -> StreamsConfig {
        let mut config = self.config(kafka);
        config.guarantee = self.guarantee.unwrap_or(ProcessingGuarantee::ExactlyOnce);
        config
    }

    /// The application's configuration; tie it to the component with
    /// [`StreamsConfig::for_component`] (metrics registry and envelope producer name).
    pub fn config(&self, kafka: KafkaArgs) -> StreamsConfig {
        StreamsConfig {
            kafka,
            state_dir: self.state_dir.clone(),
            commit_interval: self.commit_interval,
            instance_id: self.instance_id.clone(),
            static_membership: self.static_membership,
            error_policy: self.error_policy,
            max_retries: self.max_retries,
            metrics_registry: None,
            advertised_address: self.advertised_address.clone(),
            guarantee: self.guarantee.unwrap_or(ProcessingGuarantee::AtLeastOnce),
            state_cleanup_delay: self.state_cleanup_delay,
            component: format!("eddy-streams/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Ties `app` to the component's lifecycle: readiness condition "streams" holds exactly while it
/// is RUNNING, an ERROR state fails the component, and shutdown stops it cleanly.
pub fn supervise(app: StreamsApp, runtime: &Runtime) {
    let ready = runtime.readiness.condition("streams");
    let mut states = app.state_changes();
    let stop = runtime.shutdown.token();
    runtime.shutdown.spawn("streams", async move {
        loop {
            let state = *states.borrow_and_update();
            ready.set(state == AppState::Running);
            if state == AppState::Error {
                // Stopping joins the processing thread and returns the error that ended it.
                let cause = app.stop().await.err().map(|error| error.to_string());
                return Err(cause.unwrap_or_else(|| "the streams application failed".to_owned()));
            }
            tokio::select! {
                changed = states.changed() => if changed.is_err() { break },
                () = stop.cancelled() => break,
            }
        }
        ready.set(false);
        app.stop().await.map_err(|error| error.to_string())
    });
}

/// Registers readiness condition `name`, holding once `table` has caught up (read its topic up
/// to the end offsets found at start-up).
pub fn ready_when_caught_up<K, V>(runtime: &Runtime, name: &str, table: &GlobalTable<K, V>)
where
    K: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let condition = runtime.readiness.condition(name);
    let mut caught_up = table.caught_up_changes();
    let stop = runtime.shutdown.token();
    tokio::spawn(async move {
        tokio::select! {
            loaded = caught_up.wait_for(|loaded| *loaded) => {
                if loaded.is_ok() {
                    condition.set(true);
                }
            }
            () = stop.cancelled() => {}
        }
    });
}
