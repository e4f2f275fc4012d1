"""Pairs derived from plain images: synthetic degradations, or targets from a labeler.

Any image source (img2dataset shards, image folders) feeds these: each image yields pairs of
`tasks_per_image` tasks, picked by a seed derived from its key, so the mix is stable across runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from sources.laion import LaionSource
from sources.records import ImageRecord, PairRecord, SourceItem, stable_hash
from sources.web_units import Unit


@dataclass(frozen=True)
class DerivedPairsSource:
    name: str
    images: LaionSource
    tasks: tuple[str, ...]
    tasks_per_image: int = 1
    seed: int = 0
    labeler: tuple[tuple[str, Any], ...] | None = None  # when set: every pair's target comes from it

    def units(self) -> list[Unit]:
        return self.images.units()

    def read(self, unit: Unit) -> Iterator[SourceItem]:
        for item in self.images.read(unit):
            if not isinstance(item, ImageRecord):
                yield item
                continue
            rng = np.random.default_rng(stable_hash("tasks", self.seed, item.key))
            count = min(self.tasks_per_image, len(self.tasks))
            chosen = sorted(rng.choice(len(self.tasks), size=count, replace=False).tolist())
            for index in chosen:
                task = self.tasks[index]
                annotation = {"labeler": dict(self.labeler)} if self.labeler else {"synthetic": task}
                yield PairRecord(key=f"{item.key}-{task}", source=self.name, group=item.group, task=task,
                                 image_uri=item.uri, image_data=item.data, annotation=annotation,
                                 lineage=dict(item.lineage), input=item.input)

