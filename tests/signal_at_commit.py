"""Run the `uvd` command and signal its build right after its Nth input unit commits.

Why not watch the output folder from the test and signal from there: the build races the test.
Once a commit mark is on disk the rest of a small build may take less than the test's next look
(the CI machine finished a 3.7 s build, summary and all, between the first mark and the SIGTERM,
which then found no process). Here the signal is sent by the committing process itself, through
kill(2) as an operator's would be, so it always comes while the build has work left.

    python tests/signal_at_commit.py SIGNAL N FLAG_DIR build config.yaml ...
    python tests/signal_at_commit.py SIGNAL shard:N FLAG_DIR build config.yaml ...

N counts input units committed (`UnitWriter.commit`); `shard:N` counts rendered shards committed
(`write_shard` returned: its stats, the commit mark, are on disk), so the signal comes while the
shard writers run: a bundle of the write step is in flight in a worker, in this process where
its workers are threads or the build's own thread.

SIGINT goes to the whole process group (a terminal's Ctrl-C), any other signal to the build's
own process (`docker stop`, a scheduler). FLAG_DIR counts the commits across the render
processes the build forks (they inherit the hook); `FLAG_DIR/sent` says the signal went.
With SIGNAL_AT_COMMIT_BUG=1 in the environment every commit after the signal raises
ZeroDivisionError("a bug after the signal"): a bug a worker meets while the interrupt unwinds.
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

    unit_store.UnitWriter.commit = _then_signal(unit_store.UnitWriter.commit, after, flags, send)


def signal_after_shards(after: int, flags: str, send) -> None:
    """Wrap `rendered_shards.write_shard` so that the `after`th rendered shard committed calls
    `send()` once, from inside the write step's bundle. Before the shard writer's module imports
    it (and Beam, whose import logs before the command sets its log up)."""
    from uvd_pipeline import rendered_shards

    assert "uvd_pipeline.write_steps" not in sys.modules
    rendered_shards.write_shard = _then_signal(rendered_shards.write_shard, after, flags, send)


def _then_signal(commit, after: int, flags: str, send):
    """`commit`, counting its calls across processes in `flags/commits`, then `send()` at the
    `after`th (once: `flags/sent` says it went)."""
    commits = os.path.join(flags, "commits")
    os.makedirs(commits, exist_ok=True)

    def commit_then_signal(*args, **kwargs):
        if os.environ.get("SIGNAL_AT_COMMIT_BUG") == "1" and os.path.exists(os.path.join(flags, "sent")):
            raise ZeroDivisionError("a bug after the signal")
        done = commit(*args, **kwargs)
        open(os.path.join(commits, uuid.uuid4().hex), "wb").close()
        if len(os.listdir(commits)) >= after:
            try:
                os.close(os.open(os.path.join(flags, "sent"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return done
            send()
        return done

    return commit_then_signal


def main(argv: list[str]) -> None:
    name, after, flags, *command = argv
    sig, build = signal.Signals[name], os.getpid()
    point, _, count = after.rpartition(":")

    from uvd_pipeline import cli

    def send() -> None:
        if sig == signal.SIGINT:
            os.killpg(os.getpgid(0), sig)
        else:
            os.kill(build, sig)

    (signal_after_shards if point == "shard" else signal_after_commits)(int(count), flags, send)
    sys.argv = ["uvd", *command]
    cli.run()


if __name__ == "__main__":
    main(sys.argv[1:])
