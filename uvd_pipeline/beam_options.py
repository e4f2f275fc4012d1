"""Pipeline options whose views are made once.

Beam asks the pipeline's options for a view (`options.view_as(TypeOptions)`, `StandardOptions`,
...) on every transform it applies and again when it translates the graph, and each view builds
an argparse parser of that options class and parses the flags again (with a gettext lookup per
argument): 266 views, about a third of the main thread's time to build a dedup-on graph of
one source (cProfile, 2026-12-04). A view holds nothing of its own: its values live in the
options' shared `_all_options` dict (Beam's own design, so that a value set through one view is
seen through every other), so the same view object can be handed out each time."""

from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["ViewCachingOptions"]


class ViewCachingOptions(PipelineOptions):
    """`PipelineOptions` that keep the view of each options class they were asked for. Adds no
    options of its own."""

    def view_as(self, cls):
        # kept in __dict__ directly: PipelineOptions.__setattr__ takes only option names
        views: dict[type, PipelineOptions] = self.__dict__.setdefault("_views", {})
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_views", None)  # views are remade on demand
        return state
