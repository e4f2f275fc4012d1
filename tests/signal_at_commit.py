"""Run the `uvd` command and signal its build right after its Nth input unit commits.

Why not watch the output folder from the test and signal from there: the build races the test.
Once a commit mark is on disk the rest of a small build may take less than the test's next look
(the CI machine finished a 3.7 s build, summary and all, between the first mark and the SIGTERM,
which then found no process). Here the signal is sent by the committing process itself, through
kill(2) as an operator's would be, so it always comes while the build has work left.

    python tests/signal_at_commit.py SIGNAL N FLAG_DIR build config.yaml ...

SIGINT goes to the whole process group (a terminal's Ctrl-C), any other signal to the build's
own process (`docker stop`, a scheduler). FLAG_DIR counts the commits across the render
processes the build forks (they inherit the hook); `FLAG_DIR/sent` says the signal went.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid


def signal_after_commits(after: int, flags: str, send) -> None:
    """Wrap `UnitWriter.commit` so that the process committing the `after`th unit (counted across
    processes in `flags/commits`) calls `send()` once, `flags/sent` saying it went."""
    from uvd_pipeline import unit_store

    commits = os.path.join(flags, "commits")
    os.makedirs(commits, exist_ok=True)
    commit = unit_store.UnitWriter.commit

    def commit_then_signal(self, outputs, record):
        digest = commit(self, outputs, record)
        open(os.path.join(commits, uuid.uuid4().hex), "wb").close()
        if len(os.listdir(commits)) >= after:
            try:
                os.close(os.open(os.path.join(flags, "sent"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return digest
            send()
        return digest

    unit_store.UnitWriter.commit = commit_then_signal


def main(argv: list[str]) -> None:
    name, after, flags, *command = argv
    sig, after, build = signal.Signals[name], int(after), os.getpid()

    from uvd_pipeline import cli

    def send() -> None:
        if sig == signal.SIGINT:
            os.killpg(os.getpgid(0), sig)
        else:
            os.kill(build, sig)

    signal_after_commits(after, flags, send)
    sys.argv = ["uvd", *command]
    cli.run()


if __name__ == "__main__":
    main(sys.argv[1:])
