//! Python with pinned packages (fastavro, ...) for ecosystem checks: tests that read what Eddy
//! writes with an independent implementation. `scripts/python-tools` keeps the virtualenv in
//! the cache; see `scripts/python-requirements.txt` for what it holds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::stack::repo_dir;

static PYTHON: OnceLock<PathBuf> = OnceLock::new();

/// The interpreter of the tools virtualenv. The first call in a test process runs
/// `scripts/python-tools` (it creates the venv the first time, ~10 s with a download; then it
/// only prints the path) and panics with the script's output if the tools cannot be installed:
/// a test that needs them must fail, never skip.
pub fn python_tools() -> &'static Path {
    PYTHON.get_or_init(install_python_tools)
}

fn install_python_tools() -> PathBuf {
    let script = repo_dir().join("scripts/python-tools");
    let output = Command::new(&script)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python tools (scripts/python-requirements.txt) are required and could not be \
         installed ({} exited with {}).\nstdout:\n{stdout}\nstderr:\n{stderr}",
        script.display(),
        output.status
    );
    let python = stdout
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("python:"))
        .map(|path| PathBuf::from(path.trim()))
        .unwrap_or_else(|| {
            panic!(
                "{} did not print 'python: <path>'.\nstdout:\n{stdout}\nstderr:\n{stderr}",
                script.display()
            )
        });
    assert!(
        python.is_file(),
        "{} printed {}, which is not a file",
        script.display(),
        python.display()
    );
    python
}
