//! Configuration: every setting is a command-line flag with an `EDDY_*` environment twin
//! (clap derive, `env = "EDDY_..."` on every field). A component flattens [`ServiceArgs`] (and
//! [`crate::kafka::KafkaArgs`] when it talks to Kafka) into its own `Config`.

use std::fmt;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser};

/// Exit code for bad configuration (`EX_USAGE` from sysexits.h): the process stops before it
/// binds a port or connects anywhere.
pub const EXIT_BAD_CONFIG: u8 = 64;

/// Settings every Eddy binary has.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Address of the admin server (`/metrics`, `/healthz`, `/ready`).
    #[arg(long, env = "EDDY_ADMIN_ADDRESS", default_value = "0.0.0.0:9090")]
    pub admin_address: SocketAddr,

    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "EDDY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info` or `info,eddy_streams=debug`.
    #[arg(long, env = "EDDY_LOG", default_value = "info")]
    pub log: String,

    /// How long to wait for in-flight work after SIGTERM or SIGINT before giving up on it.
    #[arg(long, env = "EDDY_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parses the configuration from the command line and environment. On `--help` or `--version`
/// it prints and exits 0; on bad configuration it prints what was wrong and exits with
/// [`EXIT_BAD_CONFIG`], before anything else happens.
pub fn parse_config_or_exit<C: Parser>() -> C {
    match C::try_parse() {
        Ok(config) => config,
        Err(error) => {
            let bad_config = error.use_stderr();
            // Printing to a closed stdout/stderr is not worth a panic here.
            let _ = error.print();
            std::process::exit(if bad_config {
                i32::from(EXIT_BAD_CONFIG)
            } else {
                0
            });
        }
    }
}

/// The exit code for a configuration error found after parsing (for example two settings that
/// contradict each other); `message` is the error's text (`invalid configuration: ...`).
pub fn bad_config_exit(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_BAD_CONFIG)
}

/// Parses durations written as `500ms`, `30s`, `5m`, `2h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (expected e.g. 500ms, 30s, 5m, 2h)"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit '{other}' in '{text}' (expected ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|error| format!("'{text}': {error}"))
}

/// A configuration value that must never appear in logs, errors or `Debug` output (passwords,
/// tokens, signing keys). Read it with [`Secret::expose`] where it is actually used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself: pass it straight to where it is needed, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Secret(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn bad_durations_say_what_was_wrong() {
        let error = parse_duration("10 parsecs").unwrap_err();
        assert!(error.contains("unknown duration unit 'parsecs'"), "{error}");
        let error = parse_duration("soon").unwrap_err();
        assert!(error.contains("'soon' is not a duration"), "{error}");
    }

    #[test]
    fn secrets_never_print() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret}"), "<redacted>");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }

    #[derive(Debug, Parser)]
    struct TestConfig {
        #[command(flatten)]
        service: ServiceArgs,
    }

    #[test]
    fn service_args_have_defaults_and_flags() {
        let config = TestConfig::try_parse_from(["test"]).unwrap();
        assert_eq!(config.service.admin_address.port(), 9090);
        assert_eq!(config.service.log_format, LogFormat::Text);
        assert_eq!(config.service.shutdown_grace, Duration::from_secs(30));

        let config = TestConfig::try_parse_from([
            "test",
            "--admin-address",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--shutdown-grace",
            "2s",
        ])
        .unwrap();
        assert_eq!(config.service.admin_address.port(), 0);
        assert_eq!(config.service.log_format, LogFormat::Json);
        assert_eq!(config.service.shutdown_grace, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let error = TestConfig::try_parse_from(["test", "--admin-address", "nowhere"]).unwrap_err();
        assert!(error.use_stderr());
        assert!(error.to_string().contains("--admin-address"), "{error}");
    }
}
