use std::process::ExitCode;

fn main() -> ExitCode {
    eddy_service::main(eddy_source_api::COMPONENT, eddy_source_api::start)
}
