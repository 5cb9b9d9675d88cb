use std::process::ExitCode;

fn main() -> ExitCode {
    eddy_service::main(__LIB__::COMPONENT, __LIB__::start)
}
