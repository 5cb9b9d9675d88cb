//! `eddy`: Eddy's operator command line. `eddy topics provision` makes a Kafka cluster and a
//! schema registry match the topic catalog; the Helm chart runs it as a pre-install Job.
//!
//! Exit codes: 0 everything matches the catalog; 1 drift or a failure remains (printed);
//! 2 Kafka or the registry could not be reached; 64 bad configuration.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use eddy_cli::EXIT_UNREACHABLE;
use eddy_schemas::{Catalog, CatalogArgs, RegistryArgs};
use eddy_service::config::parse_duration;
use eddy_service::kafka::KafkaArgs;

#[derive(Debug, Parser)]
#[command(name = "eddy", version, about = "Eddy's operator command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Eddy's topics and their schemas.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// The platform Eddy runs on: Kafka and the schema registry.
    Platform {
        #[command(subcommand)]
        command: PlatformCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PlatformCommand {
    /// Waits until Kafka and the schema registry answer (the chart's init containers run it);
    /// exits 2, saying which one did not answer, after the timeout.
    Wait {
        /// How long to wait for each.
        #[arg(long, env = "EDDY_WAIT_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per run; boxing buys nothing"
)]
enum TopicsCommand {
    /// Creates missing topics, sets BACKWARD compatibility and registers every value schema;
    /// reports topics whose settings differ from the catalog (drift) and exits 1 if any remain.
    Provision {
        /// Correct the topic configs that drifted (partition counts and replication factors are
        /// only reported).
        #[arg(long)]
        fix: bool,

        /// How long to wait for Kafka and the registry to answer.
        #[arg(long, env = "EDDY_WAIT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
        wait_timeout: Duration,

        #[command(flatten)]
        catalog: CatalogArgs,
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Prints the catalog: every topic with its settings, key and value schema.
    List {
        #[command(flatten)]
        catalog: CatalogArgs,
    },
}

fn main() -> ExitCode {
    let cli: Cli = eddy_service::parse_config_or_exit();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDDY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match cli.command {
        Command::Topics {
            command: TopicsCommand::List { catalog },
        } => {
            print!("{}", eddy_cli::describe_catalog(&Catalog::new(&catalog)));
            ExitCode::SUCCESS
        }
        Command::Topics {
            command:
                TopicsCommand::Provision {
                    fix,
                    wait_timeout,
                    catalog,
                    kafka,
                    registry,
                },
        } => {
            if let Err(error) = kafka.validate() {
                return eddy_service::config::bad_config_exit(&error.to_string());
            }
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: cannot start the async runtime: {error}");
                    return ExitCode::from(EXIT_UNREACHABLE);
                }
            };
            let catalog = Catalog::new(&catalog);
            runtime.block_on(eddy_cli::provision_topics(
                &catalog,
                &kafka,
                &registry,
                fix,
                wait_timeout,
            ))
        }
        Command::Platform {
            command:
                PlatformCommand::Wait {
                    timeout,
                    kafka,
                    registry,
                },
        } => {
            if let Err(error) = kafka.validate() {
                return eddy_service::config::bad_config_exit(&error.to_string());
            }
            match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime.block_on(eddy_cli::wait_for_platform_command(
                    &kafka, &registry, timeout,
                )),
                Err(error) => {
                    eprintln!("error: cannot start the async runtime: {error}");
                    ExitCode::from(EXIT_UNREACHABLE)
                }
            }
        }
    }
}
