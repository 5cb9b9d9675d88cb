use std::process::ExitCode;

fn main() -> ExitCode {
    eddy_service::main(eddy_communication::COMPONENT, eddy_communication::start)
}
