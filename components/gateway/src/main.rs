use std::process::ExitCode;

fn main() -> ExitCode {
    eddy_service::main(eddy_gateway::COMPONENT, eddy_gateway::start)
}
