//! Tracing set-up: one subscriber for the whole process, text for people or JSON for log
//! collectors, filtered by `EDDY_LOG` (tracing's `EnvFilter` syntax).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::ServiceError;
use crate::config::{LogFormat, ServiceArgs};

/// Installs the global tracing subscriber. Call once, first thing in `main` after parsing
/// config. Logs go to stderr so stdout stays free for a program's own output.
pub fn init_tracing(args: &ServiceArgs) -> Result<(), ServiceError> {
    let filter = EnvFilter::try_new(&args.log)
        .map_err(|error| ServiceError::Config(format!("EDDY_LOG '{}': {error}", args.log)))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a terminal; log files and collectors get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_span_events(FmtSpan::NONE);
    let result = match args.log_format {
        LogFormat::Text => builder.with_target(true).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // A subscriber already installed (tests that build several components in one process) is
    // fine: the first one wins.
    if let Err(error) = result {
        tracing::debug!(error = %error, "tracing subscriber already installed");
    }
    Ok(())
}
