"""A build on a given Dask scheduler (`beam.dask.address`) that fails or is interrupted stops its
tasks before it lets go of the output.

Closing the build's client releases its futures, but a task already running on a worker runs to
its end: Dask cannot stop a thread. Such a task commits what it makes (a unit, a shard), so after
Ctrl-C the workers went on writing into the output once its lock was released, even into a fresh
`--overwrite --no-tokenize` build of it, which then listed 2 token shards of the stopped build and
`verify` called them intact (hunt54e H2). Here the build's tasks are cancelled (`force`), and the
build waits, at most `SETTLE_S`, until no worker still runs one; where some still do, a warning
names them. (A local cluster needs none of this: it is closed, its workers with it, before the
lock is released.)
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)
SETTLE_S = 30.0  # a task of ours (a unit's render, a shard's write or tokenization) takes seconds
# after SIGTERM: 4 s for the tasks, 6 s with the scheduler's answers (`settle`'s bound), leaving
# time within `docker stop`'s default grace (10 s) to close the client and release the lock
TERMINATED_SETTLE_S = 4.0
POLL_S = 0.25


def settle(client: Any, futures: Sequence[Any], address: str, timeout: float = SETTLE_S) -> None:
    """Cancel the build's tasks and wait (at most `timeout` s) until no worker runs one. Never
    raises but a second Ctrl-C (a KeyboardInterrupt); a scheduler that does not answer is skipped
    with a warning: the build is failing already."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["left"] = _cancel_and_wait(client, futures, address, timeout, outcome)
        except Exception as exc:  # noqa: BLE001 - the build's own error is the one to report
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="dask-settle", daemon=True)
    worker.start()
    try:
        worker.join(timeout + min(10.0, timeout / 2))  # the scheduler's answers are bounded by the client's timeouts
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, saying what may still run
        running = outcome.get("running") or {}
        log.warning("stopped waiting for the build's tasks on the Dask workers%s: they may still write into the "
                    "output; wait for them to finish (or stop those workers) before another build on it",
                    f" {', '.join(sorted(running))}" if running else "")
        raise
    left = outcome.get("left")
    if worker.is_alive() or "error" in outcome:
        why = f" ({type(outcome['error']).__name__}: {outcome['error']})" if "error" in outcome else ""
        log.warning("could not ask the Dask scheduler at %s whether the build's tasks still run%s: some may still "
                    "write into the output; wait for the workers to finish them before another build on it",
                    address, why)
    elif left:
        log.warning("the build's %s still running on the Dask workers %s after %g s: they may still write into "
                    "the output; wait for them to finish (or stop those workers) before another build on it",
                    _tasks(left), ", ".join(sorted(left)), timeout)


def _cancel_and_wait(client: Any, futures: Sequence[Any], address: str, timeout: float,
                     seen: dict[str, Any]) -> dict[str, list[str]]:
    """The build's tasks (its futures and every task they depend on) cancelled; {worker: keys} of
    those still running after `timeout` s (empty: none). `seen["running"]`: the last such answer."""
    if client.status != "running":
        raise ConnectionError(f"the client is {client.status}")
    keys = client.run_on_scheduler(_graph_keys, client.id)
    client.cancel(list(futures), force=True)
    running = seen["running"] = _running(client, keys)
    if running:
        log.info("stopping the build: waiting up to %g s for its %s still running on the Dask workers %s (at %s) "
                 "to end, so that none writes into the output after the build lets go of it",
                 timeout, _tasks(running), ", ".join(sorted(running)), address)
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        time.sleep(POLL_S)
        running = seen["running"] = _running(client, keys)
    return running


def _tasks(running: dict[str, list[str]]) -> str:
    count = sum(len(keys) for keys in running.values())
    return f"{count} task{'' if count == 1 else 's'}"


def _running(client: Any, keys: list[str]) -> dict[str, list[str]]:
    """{worker address: the keys of `keys` (as repr) it is running}, workers running none left out."""
    answers = client.run(_executing, keys, on_error="return")
    return {worker: found for worker, found in answers.items() if isinstance(found, list) and found}


def _remote() -> tuple[Callable[..., list[str]], Callable[..., list[str]]]:
    """The functions run on the scheduler and on the workers, made here so that they travel as
    code (cloudpickle pickles a nested function by value): the scheduler need not have the project
    installed."""

    def graph_keys(client_id: str, dask_scheduler: Any = None) -> list[str]:
        """The reprs of the keys the client wants and of every task they depend on."""
        state = dask_scheduler.clients.get(client_id)
        stack = list(state.wants_what) if state is not None else []
        seen: set = set()
        while stack:
            task = stack.pop()
            if task.key not in seen:
                seen.add(task.key)
                stack.extend(task.dependencies)
        return [repr(key) for key in seen]

    def executing(keys: list[str], dask_worker: Any = None) -> list[str]:
        """Which of `keys` (reprs) occupy one of the worker's threads, cancelled ones included."""
        wanted = set(keys)
        return sorted(repr(task.key) for task in dask_worker.state.all_running_tasks if repr(task.key) in wanted)

    return graph_keys, executing


_graph_keys, _executing = _remote()
