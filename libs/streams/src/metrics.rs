//! The streams runtime's Prometheus metrics, `eddy_streams_*`, labelled by application. They
//! live in the component's registry when one is given ([`crate::StreamsConfig::metrics_registry`]).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    exponential_buckets,
};

use crate::AppState;

/// Counters, gauges and histograms of one application.
#[derive(Debug, Clone)]
pub struct StreamsMetrics {
    records_processed: IntCounter,
    pub(crate) process_seconds: prometheus::Counter,
    pub(crate) commit_duration: Histogram,
    pub(crate) consumer_lag: IntGaugeVec,
    restored_records: IntCounterVec,
    pub(crate) restore_duration: HistogramVec,
    pub(crate) restore_remaining: IntGaugeVec,
    pub(crate) store_size: IntGaugeVec,
    dead_lettered: IntCounter,
    commits: IntCounter,
    state: IntGaugeVec,
    state_transitions: IntCounterVec,
}

const STATES: [(AppState, &str); 7] = [
    (AppState::Created, "created"),
    (AppState::Rebalancing, "rebalancing"),
    (AppState::Restoring, "restoring"),
    (AppState::Running, "running"),
    (AppState::PendingShutdown, "pending_shutdown"),
    (AppState::NotRunning, "not_running"),
    (AppState::Error, "error"),
];

fn state_label(state: AppState) -> &'static str {
    STATES
        .iter()
        .find(|(candidate, _)| *candidate == state)
        .map(|(_, label)| *label)
        .unwrap_or("unknown")
}

impl StreamsMetrics {
    /// Creates the metrics of `application_id`, registered in `registry` if given.
    pub fn new(
        application_id: &str,
        registry: Option<&Registry>,
    ) -> Result<Self, prometheus::Error> {
        let opts = |name: &str, help: &str| {
            Opts::new(name, help).const_label("application", application_id)
        };
        let histogram =
            |name: &str, help: &str, start: f64| -> Result<HistogramOpts, prometheus::Error> {
                Ok(HistogramOpts::new(name, help)
                    .const_label("application", application_id)
                    .buckets(exponential_buckets(start, 2.0, 16)?))
            };
        let metrics = StreamsMetrics {
            records_processed: IntCounter::with_opts(opts(
                "eddy_streams_records_processed_total",
                "Input records processed",
            ))?,
            process_seconds: prometheus::Counter::with_opts(opts(
                "eddy_streams_process_seconds_total",
                "Time spent in processors; divide by records processed for the mean latency",
            ))?,
            commit_duration: Histogram::with_opts(histogram(
                "eddy_streams_commit_duration_seconds",
                "Commit duration: producer flush, offset commit and checkpoints",
                0.0005,
            )?)?,
            consumer_lag: IntGaugeVec::new(
                opts(
                    "eddy_streams_consumer_lag_records",
                    "Records behind the end of each input partition",
                ),
                &["topic", "partition"],
            )?,
            restored_records: IntCounterVec::new(
                opts(
                    "eddy_streams_restored_records_total",
                    "Changelog records restored into stores",
                ),
                &["store"],
            )?,
            restore_duration: HistogramVec::new(
                histogram(
                    "eddy_streams_restore_duration_seconds",
                    "Duration of one store partition's restore",
                    0.001,
                )?,
                &["store"],
            )?,
            restore_remaining: IntGaugeVec::new(
                opts(
                    "eddy_streams_restore_remaining_records",
                    "Changelog records still to restore, per store partition (0 when done)",
                ),
                &["store", "partition"],
            )?,
            store_size: IntGaugeVec::new(
                opts(
                    "eddy_streams_store_size_bytes",
                    "Approximate size of each store partition",
                ),
                &["store", "partition"],
            )?,
            dead_lettered: IntCounter::with_opts(opts(
                "eddy_streams_dead_lettered_records_total",
                "Records sent to the dead-letter topic",
            ))?,
            commits: IntCounter::with_opts(opts("eddy_streams_commits_total", "Commits"))?,
            state: IntGaugeVec::new(
                opts(
                    "eddy_streams_state",
                    "1 for the application's current state",
                ),
                &["state"],
            )?,
            state_transitions: IntCounterVec::new(
                opts(
                    "eddy_streams_state_transitions_total",
                    "State changes, by the state entered",
                ),
                &["state"],
            )?,
        };
        if let Some(registry) = registry {
            registry.register(Box::new(metrics.records_processed.clone()))?;
            registry.register(Box::new(metrics.process_seconds.clone()))?;
            registry.register(Box::new(metrics.commit_duration.clone()))?;
            registry.register(Box::new(metrics.consumer_lag.clone()))?;
            registry.register(Box::new(metrics.restored_records.clone()))?;
            registry.register(Box::new(metrics.restore_duration.clone()))?;
            registry.register(Box::new(metrics.restore_remaining.clone()))?;
            registry.register(Box::new(metrics.store_size.clone()))?;
            registry.register(Box::new(metrics.dead_lettered.clone()))?;
            registry.register(Box::new(metrics.commits.clone()))?;
            registry.register(Box::new(metrics.state.clone()))?;
            registry.register(Box::new(metrics.state_transitions.clone()))?;
        }
        metrics.record_state(AppState::Created);
        Ok(metrics)
    }

    /// Input records processed so far.
    pub fn processed_records(&self) -> u64 {
        self.records_processed.get()
    }

    /// Changelog records restored so far, all stores together.
    pub fn restored_records(&self) -> u64 {
        let mut total = 0;
        for family in prometheus::core::Collector::collect(&self.restored_records) {
            for metric in family.get_metric() {
                total += metric.get_counter().get_value() as u64;
            }
        }
        total
    }

    /// Time spent restoring stores so far, all partitions together, in seconds.
    pub fn restore_seconds(&self) -> f64 {
        let mut total = 0.0;
        for family in prometheus::core::Collector::collect(&self.restore_duration) {
            for metric in family.get_metric() {
                total += metric.get_histogram().get_sample_sum();
            }
        }
        total
    }

    /// Records sent to the dead-letter topic so far.
    pub fn dead_lettered_records(&self) -> u64 {
        self.dead_lettered.get()
    }

    /// Commits so far.
    pub fn commits(&self) -> u64 {
        self.commits.get()
    }

    /// Time spent in commits so far, in seconds.
    pub fn commit_seconds(&self) -> f64 {
        self.commit_duration.get_sample_sum()
    }

    pub(crate) fn record_processed(&self) {
        self.records_processed.inc();
    }

    pub(crate) fn record_dead_letter(&self) {
        self.dead_lettered.inc();
    }

    pub(crate) fn record_commit(&self, seconds: f64) {
        self.commits.inc();
        self.commit_duration.observe(seconds);
    }

    pub(crate) fn record_restored(&self, store: &str, records: u64) {
        self.restored_records
            .with_label_values(&[store])
            .inc_by(records);
    }

    pub(crate) fn record_state(&self, state: AppState) {
        for (candidate, label) in STATES {
            self.state
                .with_label_values(&[label])
                .set(i64::from(candidate == state));
        }
        self.state_transitions
            .with_label_values(&[state_label(state)])
            .inc();
    }
}
