use std::process::ExitCode;

fn main() -> ExitCode {
    eddy_service::main(eddy_unread_counter::COMPONENT, eddy_unread_counter::start)
}
