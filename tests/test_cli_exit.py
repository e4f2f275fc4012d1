"""The CLI leaves without the interpreter's teardown (`uvd_pipeline.cli.leave`): its exit code,
buffered output and log lines, and `atexit` functions must survive that, and a running thread that
is not a daemon is still waited for."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_leave_keeps_code_output_logs_and_atexit():
    proc = _run("""
        import atexit, logging, sys
        from uvd_pipeline.cli import leave
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
        atexit.register(lambda: print("atexit ran", flush=True))
        sys.stdout.write("buffered, no newline")  # a pipe: block-buffered until flushed
        logging.getLogger("t").info("logged")
        leave(3)
        print("not reached")
    """)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("buffered, no newline") and "atexit ran" in proc.stdout
    assert "not reached" not in proc.stdout and "logged" in proc.stderr


def test_leave_waits_for_a_thread_that_is_not_a_daemon():
    proc = _run("""
        import threading, time
        from uvd_pipeline.cli import leave
        def late():
            time.sleep(0.5)
            print("thread finished", flush=True)
        threading.Thread(target=late).start()
        leave(4)
    """)
    assert proc.returncode == 4, proc.stderr
    assert "thread finished" in proc.stdout


def test_module_entry_point_exit_codes(tmp_path):
    """`python -m uvd_pipeline` through `leave`: a usage error is 2 with argparse's message, a
    config error 2 naming the problem."""
    usage = subprocess.run([sys.executable, "-m", "uvd_pipeline", "no-such-command"], capture_output=True,
                           text=True, timeout=120)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
    missing = subprocess.run([sys.executable, "-m", "uvd_pipeline", "build", str(tmp_path / "absent.yaml")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "absent.yaml" in missing.stderr, missing.stderr
