"""`UnitRenderer`: one unit store per renderer, made on first use, and a pickled renderer (as Beam
carries it to a worker) that leaves the store behind and renders the same units from it."""

from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sources.laion import LaionSource
from uvd_pipeline import unit_render
from uvd_pipeline.render import RenderSettings
from uvd_pipeline.unit_render import UnitRenderer
from uvd_pipeline.unit_store import UnitStore


def _png(path: Path, colour: str) -> bytes:
    subprocess.run(["convert", "-size", "40x30", f"xc:{colour}", f"PNG24:{path}"], check=True)
    return path.read_bytes()


def _repo(root: Path) -> None:
    """A Hugging Face repo of three parquet shards of two ImageMagick PNGs each, as `datasets` writes
    an image column (a struct of bytes and path)."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    colours = iter(["red", "green", "blue", "white", "black", "orange"])
    for shard in range(3):
        path = root / "data" / f"train-{shard:05d}-of-00003.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"bytes": _png(root / "x.png", next(colours)), "path": None} for _ in range(2)]
        pq.write_table(pa.table({"image": pa.array(rows, image), "text": ["a", "b"]}), path)
    (root / "x.png").unlink()


def _renderer(root: Path, out: Path) -> UnitRenderer:
    settings = RenderSettings(32, "center_crop", 0, 1 << 24, 1, 0, 0.0)
    return UnitRenderer(LaionSource("hf", str(root), "huggingface"), settings, web_images=True, fingerprint=False,
                        output=str(out), config_hash="h", root=str(root))


def test_a_renderer_makes_its_unit_store_once_and_a_pickled_one_leaves_it_behind(tmp_path: Path, monkeypatch):
    """`store()` made a new `UnitStore` for each unit key and each render (nine for these three units: the
    roots' forms parsed by fsspec each time); now one per renderer. A pickled renderer carries no
    store, and the copy (a Beam worker's) takes every unit from the store the first one filled."""
    _repo(tmp_path / "repo")
    made = []

    class Counted(UnitStore):
        def __init__(self, *args, **kwargs) -> None:
            made.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(unit_render, "UnitStore", Counted)
    renderer = _renderer(tmp_path / "repo", tmp_path / "out")
    units = renderer.source.units()
    assert len(units) == 3
    first = {}
    for unit in units:
        outputs, inputs = renderer.render(unit)
        assert inputs.unit == renderer.unit_key(unit) == UnitStore(str(tmp_path / "out"), "hf", "h").uid(unit)
        first[inputs.unit] = ([(tag, getattr(item, "key", None)) for tag, item in outputs], inputs.digest)
    assert len(made) == 1
    assert sum(len(keys) for keys, _ in first.values()) == 6

    carried = pickle.dumps(renderer)
    assert b"UnitStore" not in carried and b"Counted" not in carried
    copy = pickle.loads(carried)
    assert copy.store() is not renderer.store()

    def unread(source, unit):
        raise AssertionError(f"{unit} was read again: its committed rendering was not taken")

    monkeypatch.setattr(LaionSource, "read", unread)
    again = {}
    for unit in units:
        outputs, inputs = copy.render(unit)
        again[inputs.unit] = ([(tag, getattr(item, "key", None)) for tag, item in outputs], inputs.digest)
    assert again == first
    assert len(made) == 2  # the copy made its own, once
