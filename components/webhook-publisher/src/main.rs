use std::process::ExitCode;

fn main() -> ExitCode {
    eddy_service::main(
        eddy_webhook_publisher::COMPONENT,
        eddy_webhook_publisher::start,
    )
}
