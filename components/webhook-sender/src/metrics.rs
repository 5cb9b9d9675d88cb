//! The sender's Prometheus metrics, `eddy_webhook_*`, labelled by subscription.

use std::time::Duration;

use eddy_schemas::{DeliveryOutcome, WebhookDelivery};
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    exponential_buckets,
};

#[derive(Debug, Clone)]
pub struct SenderMetrics {
    deliveries: IntCounterVec,
    attempts: IntCounterVec,
    latency: HistogramVec,
    end_to_end: HistogramVec,
    queue_depth: IntGaugeVec,
    oldest_pending: GaugeVec,
}

impl SenderMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = SenderMetrics {
            deliveries: IntCounterVec::new(
                Opts::new(
                    "eddy_webhook_deliveries_total",
                    "Delivery attempts by outcome: succeeded, failed (to be retried), dead_lettered, cancelled",
                ),
                &["subscription", "outcome"],
            )?,
            attempts: IntCounterVec::new(
                Opts::new("eddy_webhook_attempts_total", "Delivery attempts made"),
                &["subscription"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "eddy_webhook_delivery_latency_seconds",
                    "Time from sending a delivery to the receiver's answer (or the error)",
                )
                .buckets(exponential_buckets(0.001, 2.0, 16)?),
                &["subscription"],
            )?,
            end_to_end: HistogramVec::new(
                HistogramOpts::new(
                    "eddy_webhook_event_to_ack_seconds",
                    "Time from the change being written to Kafka to the receiver's acknowledgement",
                )
                .buckets(exponential_buckets(0.001, 2.0, 20)?),
                &["subscription"],
            )?,
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "eddy_webhook_queue_depth",
                    "Events waiting for an attempt (due now or at a retry), on this instance's partitions",
                ),
                &["subscription"],
            )?,
            oldest_pending: GaugeVec::new(
                Opts::new(
                    "eddy_webhook_oldest_pending_age_seconds",
                    "Age of the oldest event not yet delivered, on this instance's partitions",
                ),
                &["subscription"],
            )?,
        };
        registry.register(Box::new(metrics.deliveries.clone()))?;
        registry.register(Box::new(metrics.attempts.clone()))?;
        registry.register(Box::new(metrics.latency.clone()))?;
        registry.register(Box::new(metrics.end_to_end.clone()))?;
        registry.register(Box::new(metrics.queue_depth.clone()))?;
        registry.register(Box::new(metrics.oldest_pending.clone()))?;
        Ok(metrics)
    }

    pub fn count_attempt(&self, attempt: &WebhookDelivery) {
        let outcome = match attempt.outcome {
            DeliveryOutcome::Succeeded => "succeeded",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::DeadLettered => "dead_lettered",
            DeliveryOutcome::Cancelled => "cancelled",
        };
        self.deliveries
            .with_label_values(&[attempt.subscription_id.as_str(), outcome])
            .inc();
        if attempt.outcome != DeliveryOutcome::Cancelled {
            self.attempts
                .with_label_values(&[attempt.subscription_id.as_str()])
                .inc();
        }
    }

    pub fn observe_latency(&self, subscription: &str, latency: Duration) {
        self.latency
            .with_label_values(&[subscription])
            .observe(latency.as_secs_f64());
    }

    pub fn observe_end_to_end(&self, subscription: &str, millis: i64) {
        self.end_to_end
            .with_label_values(&[subscription])
            .observe(millis.max(0) as f64 / 1000.0);
    }

    pub fn set_queue(&self, subscription: &str, depth: i64, oldest_age_seconds: f64) {
        self.queue_depth
            .with_label_values(&[subscription])
            .set(depth);
        self.oldest_pending
            .with_label_values(&[subscription])
            .set(oldest_age_seconds);
    }
}
