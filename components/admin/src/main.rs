//! `eddy-admin`: the admin API service (channels, tags, webhook subscriptions). Everything but
//! the table of contents lives in the library (`eddy_admin`), so tests can build it in-process.

use std::process::ExitCode;

use eddy_admin::{COMPONENT, start};

fn main() -> ExitCode {
    eddy_service::main(COMPONENT, start)
}
