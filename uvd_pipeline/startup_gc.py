"""Python's cyclic garbage collector held off while a command starts.

Importing Beam and the project's modules and making a build's graph allocate ~140,000 objects
that live to the end of the process; the collector scans them again and again as they pile up (2
full collections and ~400 young ones before a 900-image build's run, 0.14 s of its main
process's 2.4 CPU-s, measured with `gc.callbacks`). The command line pauses it first (`pause`) and
a build turns it back on where its run starts (`build.heap_frozen`, which first freezes what exists
then: the imports, the graph, and what little cyclic garbage the start made, ~4,000 objects);
other commands turn it back on before they start their work (`cli.main`), and processes forked
during the start (`early_render`) or threads that make a lot of cyclic garbage (the early GPU
tokenizer's load and compile) at once (`resume`)."""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Turn the collector off if it is on (a `resume` turns it back on)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Turn the collector back on if `pause` turned it off (someone else's `gc.disable` stays)."""
    global _paused
    if _paused:
        _paused = False
        gc.enable()
