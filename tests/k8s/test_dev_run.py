"""Tests of scripts/dev/eddy-dev-run, the development image's restart-on-new-binary wrapper
(Tilt's live update): it starts the binary, restarts it when the file is replaced, passes
SIGTERM on, and exits with the binary's status when the binary exits on its own.

    python tests/k8s/test_dev_run.py

The binary is a bash script that records its starts and stops in a log file; every wait polls
that log (or the wrapper's exit) against a deadline.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

WRAPPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "dev",
                       "eddy-dev-run")
DEADLINE_SECONDS = 20

FAKE_BINARY = """#!/usr/bin/env bash
echo "started {version} $*" >> {log}
trap 'echo "stopped {version}" >> {log}; exit 0' TERM
{body}
"""
RUNS_UNTIL_STOPPED = "while :; do sleep 0.05; done"


def write_binary(path, log, version, body=RUNS_UNTIL_STOPPED):
    """Replaces the binary the way a sync does: a new file renamed over the old one."""
    staged = path + ".new"
    with open(staged, "w") as out:
        out.write(FAKE_BINARY.format(version=version, log=log, body=body))
    os.chmod(staged, 0o755)
    os.replace(staged, path)


def log_lines(log):
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [line.strip() for line in f if line.strip()]


def wait_for_lines(log, expected, what):
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        lines = log_lines(log)
        if lines == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: the log says {log_lines(log)!r}, expected {expected!r}")


def wait_for_exit(process, what):
    try:
        return process.wait(timeout=DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"{what}: the wrapper is still running after {DEADLINE_SECONDS} s")


def start_wrapper(binary):
    env = dict(os.environ, EDDY_DEV_RUN_POLL_SECONDS="0.1")
    return subprocess.Popen([WRAPPER, binary, "--flag"], env=env, stderr=subprocess.PIPE,
                            text=True)


def test_restarts_on_a_new_binary_and_passes_sigterm_on(work):
    binary, log = os.path.join(work, "eddy-fake"), os.path.join(work, "restart.log")
    write_binary(binary, log, "v1")
    wrapper = start_wrapper(binary)
    try:
        wait_for_lines(log, ["started v1 --flag"], "the first start")
        write_binary(binary, log, "v2")
        wait_for_lines(log, ["started v1 --flag", "stopped v1", "started v2 --flag"],
                       "a restart on the new binary")
        wrapper.send_signal(signal.SIGTERM)
        status = wait_for_exit(wrapper, "SIGTERM")
        assert status == 0, f"the wrapper exited with {status} after SIGTERM, expected 0"
        assert log_lines(log)[-1] == "stopped v2", f"SIGTERM did not reach v2: {log_lines(log)}"
        assert "changed; restarting it" in wrapper.stderr.read(), "no log line for the restart"
    finally:
        if wrapper.poll() is None:
            wrapper.kill()


def test_exits_with_the_status_of_a_binary_that_exits(work):
    binary, log = os.path.join(work, "eddy-crashing"), os.path.join(work, "crash.log")
    write_binary(binary, log, "v1", body="exit 3")
    wrapper = start_wrapper(binary)
    try:
        status = wait_for_exit(wrapper, "a binary that exits")
        assert status == 3, f"the wrapper exited with {status}, expected the binary's 3"
        assert log_lines(log) == ["started v1 --flag"], f"restarted a crashed binary: {log_lines(log)}"
    finally:
        if wrapper.poll() is None:
            wrapper.kill()


def main():
    tests = [test_restarts_on_a_new_binary_and_passes_sigterm_on,
             test_exits_with_the_status_of_a_binary_that_exits]
    failures = 0
    for test in tests:
        with tempfile.TemporaryDirectory() as work:
            try:
                test(work)
                print(f"ok   {test.__name__}")
            except AssertionError as error:
                failures += 1
                print(f"FAIL {test.__name__}: {error}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
