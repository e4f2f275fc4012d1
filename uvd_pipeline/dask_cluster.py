"""The Dask side of a `runner: dask` build: the scheduler it talks to, and Beam's DaskRunner with
bounded groupings.

A local cluster is separate worker processes (no memory shared with the build's process) behind a
scheduler on 127.0.0.1, started for one build and stopped after it, so a local Dask build meets
what a real cluster does: pickled work, shuffles between processes, lost workers. An existing
scheduler (`beam.dask.address`: one deployed with dask-kubernetes, dask-jobqueue or by hand) is
used as it is and left running.

Beam's DaskRunner turns a GroupByKey into a Dask bag shuffle with as many partitions as its input,
and a Flatten into the sum of its inputs' partitions, so partitions multiply along the graph (the
mini build reached 399 partitions and 58,000 tasks for 10 shards, most of them empty). The runner
here is Beam's with one change: the input of every grouping is first cut to at most
`beam.dask.shuffle_partitions` partitions. Which elements meet in a group does not change.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from uvd_pipeline.config import DaskConfig

log = logging.getLogger(__name__)


def memory_limit(value: str) -> str | int:
    """The config's memory limit in the form LocalCluster takes ('auto', bytes text, or 0)."""
    return 0 if value == "0" else value


@contextmanager
def scheduler(settings: DaskConfig) -> Iterator[str]:
    """Yield the scheduler address; a local cluster started here is closed on exit."""
    if settings.address:
        yield settings.address
        return
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=settings.workers, threads_per_worker=settings.threads_per_worker,
                           memory_limit=memory_limit(settings.memory_limit), processes=True,
                           host="127.0.0.1", dashboard_address=None, silence_logs=logging.WARNING)
    log.info("local Dask cluster at %s: %d workers x %d threads", cluster.scheduler_address,
             settings.workers, settings.threads_per_worker)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def bounded_dask_runner(shuffle_partitions: int):
    """Beam's DaskRunner whose groupings shuffle at most `shuffle_partitions` partitions."""
    from apache_beam.runners.dask.dask_runner import DaskRunner
    from apache_beam.runners.dask.overrides import _GroupByKeyOnly
    from apache_beam.runners.dask.transform_evaluator import GroupByKey

    class BoundedDaskRunner(DaskRunner):
        @staticmethod
        def to_dask_bag_visitor(bag_kwargs=None):
            visitor = DaskRunner.to_dask_bag_visitor(bag_kwargs)
            visit = visitor.visit_transform

            def visit_transform(node) -> None:
                if not isinstance(node.transform, _GroupByKeyOnly):
                    visit(node)
                    return
                (pcoll,) = node.inputs
                bag = visitor.bags[pcoll.producer]
                if bag.npartitions > shuffle_partitions:
                    bag = bag.repartition(npartitions=shuffle_partitions)
                visitor.bags[node] = GroupByKey(node).apply(bag)

            visitor.visit_transform = visit_transform
            return visitor

    return BoundedDaskRunner()
