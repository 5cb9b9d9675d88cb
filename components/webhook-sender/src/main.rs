use std::process::ExitCode;

fn main() -> ExitCode {
    eddy_service::main(eddy_webhook_sender::COMPONENT, eddy_webhook_sender::start)
}
