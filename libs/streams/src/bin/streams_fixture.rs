//! A small streams component for tests. With `--aggregate distinct` (the default) it keeps, for
//! each key of the input topic, the set of distinct values seen and emits how many there are:
//! reprocessing a record changes nothing, so after a crash the output shows exactly whether
//! anything was lost. With `--aggregate count` it counts records per key: reprocessing shows
//! as a count too high, so it checks exactly-once.

use std::process::ExitCode;

use clap::Parser;
use eddy_service::kafka::KafkaArgs;
use eddy_service::{ComponentConfig, ComponentInfo, Runtime, ServiceArgs, ServiceError};
use eddy_streams::service::{StreamsArgs, supervise};
use eddy_streams::{
    InputRecord, InputTopic, JsonSerde, OutputTopic, Processor, ProcessorContext, ProcessorError,
    StoreDefinition, StreamsApp, StringSerde, Topology,
};

const COMPONENT: ComponentInfo =
    ComponentInfo::new("eddy-streams-fixture", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Distinct values per key: a streams component for tests"
)]
struct Config {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    streams: StreamsArgs,
    /// Application id (consumer group and internal-topic prefix).
    #[arg(long, env = "EDDY_APPLICATION_ID")]
    application_id: String,
    #[arg(long, env = "EDDY_INPUT_TOPIC")]
    input_topic: String,
    #[arg(long, env = "EDDY_OUTPUT_TOPIC")]
    output_topic: String,
    /// What to compute per key.
    #[arg(
        long,
        env = "EDDY_FIXTURE_AGGREGATE",
        value_enum,
        default_value = "distinct"
    )]
    aggregate: Aggregate,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Aggregate {
    /// How many distinct values the key has had.
    Distinct,
    /// How many records the key has had.
    Count,
}

impl ComponentConfig for Config {
    fn service(&self) -> &ServiceArgs {
        &self.service
    }

    fn validate(&self) -> Result<(), ServiceError> {
        self.kafka.validate()
    }
}

fn main() -> ExitCode {
    eddy_service::main(COMPONENT, start)
}

async fn start(config: Config, runtime: Runtime) -> Result<(), String> {
    let mut topology = Topology::new(&config.application_id);
    let input = topology.input(&config.input_topic, StringSerde, JsonSerde::<u64>::new());
    let seen = topology.store("seen", StringSerde, JsonSerde::<Vec<u64>>::new());
    let output = topology.output(&config.output_topic, StringSerde, JsonSerde::<usize>::new());
    match config.aggregate {
        Aggregate::Distinct => topology.processor(move |_partition| DistinctValues {
            input: input.clone(),
            seen: seen.clone(),
            output: output.clone(),
        }),
        Aggregate::Count => {
            let counts = topology.store("counts", StringSerde, JsonSerde::<usize>::new());
            topology.processor(move |_partition| RecordCount {
                input: input.clone(),
                counts: counts.clone(),
                output: output.clone(),
            });
        }
    }
    let streams_config = config
        .streams
        .config(config.kafka.clone())
        .for_component(&runtime);
    let app = StreamsApp::start(streams_config, topology)
        .await
        .map_err(|error| error.to_string())?;
    supervise(app, &runtime);
    Ok(())
}

struct DistinctValues {
    input: InputTopic<String, u64>,
    seen: StoreDefinition<String, Vec<u64>>,
    output: OutputTopic<String, usize>,
}

impl Processor for DistinctValues {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        let (key, value) = self.input.decode(record)?;
        let Some(value) = value else {
            return Ok(());
        };
        let mut values = context.get(&self.seen, &key)?.unwrap_or_default();
        if let Err(position) = values.binary_search(&value) {
            values.insert(position, value);
            context.put(&self.seen, &key, &values)?;
        }
        context.emit(&self.output, &key, Some(&values.len()))
    }
}

struct RecordCount {
    input: InputTopic<String, u64>,
    counts: StoreDefinition<String, usize>,
    output: OutputTopic<String, usize>,
}

impl Processor for RecordCount {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        let (key, _) = self.input.decode(record)?;
        let count = context.get(&self.counts, &key)?.unwrap_or(0) + 1;
        context.put(&self.counts, &key, &count)?;
        context.emit(&self.output, &key, Some(&count))
    }
}
