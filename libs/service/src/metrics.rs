//! One Prometheus registry per process, holding the base metrics every component exports under
//! the same names; components register their own metrics (`eddy_<subsystem>_<name>_<unit>`)
//! in the same registry.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::ServiceError;
use crate::run::ComponentInfo;

/// The process-wide metrics registry with the base metrics:
/// `eddy_build_info{component,version}`, `eddy_ready`, `eddy_start_time_seconds`, and the
/// standard `process_*` metrics (CPU, memory, open files).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    ready: IntGauge,
}

impl Metrics {
    pub fn new(component: &ComponentInfo) -> Result<Self, ServiceError> {
        let registry = Registry::new();

        let build_info = IntGaugeVec::new(
            Opts::new(
                "eddy_build_info",
                "Always 1; labels name the component and its version",
            ),
            &["component", "version"],
        )?;
        build_info
            .with_label_values(&[component.name, component.version])
            .set(1);
        registry.register(Box::new(build_info))?;

        let ready = IntGauge::new(
            "eddy_ready",
            "1 when the component answers /ready with 200, else 0",
        )?;
        registry.register(Box::new(ready.clone()))?;

        let start_time = IntGauge::new(
            "eddy_start_time_seconds",
            "Start time of the component since the Unix epoch, in seconds",
        )?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        start_time.set(i64::try_from(now).unwrap_or(i64::MAX));
        registry.register(Box::new(start_time))?;

        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        Ok(Metrics { registry, ready })
    }

    /// The registry to register a component's own metrics in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// All metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %error, "could not encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_metrics_are_exported() {
        let metrics = Metrics::new(&ComponentInfo::new("eddy-test", "1.2.3")).unwrap();
        metrics.set_ready(true);
        let text = metrics.render();
        assert!(
            text.contains(r#"eddy_build_info{component="eddy-test",version="1.2.3"} 1"#),
            "{text}"
        );
        assert!(text.contains("eddy_ready 1"), "{text}");
        assert!(text.contains("eddy_start_time_seconds "), "{text}");
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
