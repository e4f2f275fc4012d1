"""The simplest honest script that does the build's job on img2dataset webdataset tars: the
end-to-end benchmark's baseline (`bench_e2e.py`).

Every image member of the input tars goes through a `multiprocessing.Pool`: decode, centre crop,
resize to size x size, PNG; the main process writes one output tar per input tar
(`{key}.png`, in input order). Two kernels:

    pillow       Pillow with JPEG draft (DCT-scaled) decode, EXIF orientation, centre crop and a
                 box (area) resize in one call, PNG at the build's zlib level
    img2dataset  img2dataset's own `Resizer` (center_crop, png at that level): run it with the
                 img2dataset venv's python (it has no Pillow)

No dedup, no rejects file (an image that fails is counted), no stats, no resume: this is what
the build costs more than.

    python benchmarks/plain_resize.py OUT IN.tar... [--kernel pillow] [--workers 2] [--size 256] [--png-level 1]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import sys
import tarfile

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_kernel = None


def members(paths: list[str]):
    """(input index, key, image bytes) of every image member, streamed in tar order."""
    for index, path in enumerate(paths):
        with tarfile.open(path, mode="r|") as tar:
            for info in tar:
                key, _, ext = os.path.basename(info.name).partition(".")
                if info.isfile() and ext.lower() in IMAGE_EXTENSIONS:
                    yield index, key, tar.extractfile(info).read()


def pillow_kernel(size: int, level: int):
    from PIL import Image, ImageOps

    def run(data: bytes) -> bytes:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (size, size))  # JPEG: the smallest DCT scale still >= size on both sides
        image = ImageOps.exif_transpose(image).convert("RGB")
        w, h = image.size
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        out = io.BytesIO()
        image.resize((size, size), Image.Resampling.BOX, box=box).save(out, "PNG", compress_level=level)
        return out.getvalue()

    return run


def img2dataset_kernel(size: int, level: int):
    from img2dataset.resizer import Resizer

    resizer = Resizer(size, "center_crop", resize_only_if_bigger=False, encode_format="png", encode_quality=level)

    def run(data: bytes) -> bytes:
        png, *_, error = resizer(io.BytesIO(data))
        if error:
            raise ValueError(error)
        return png

    return run


KERNELS = {"pillow": pillow_kernel, "img2dataset": img2dataset_kernel}


def _init(kernel: str, size: int, level: int) -> None:
    global _kernel
    _kernel = KERNELS[kernel](size, level)


def _work(item: tuple[int, str, bytes]) -> tuple[int, str, bytes | None]:
    index, key, data = item
    try:
        return index, key, _kernel(data)
    except Exception:  # a broken image is counted, not fatal
        return index, key, None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("tars", nargs="+")
    parser.add_argument("--kernel", choices=sorted(KERNELS), default="pillow")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--png-level", type=int, default=1)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    written = failed = 0
    outputs: dict[int, tarfile.TarFile] = {}
    with multiprocessing.Pool(args.workers, _init, (args.kernel, args.size, args.png_level)) as pool:
        for index, key, png in pool.imap(_work, members(args.tars), chunksize=4):
            if index not in outputs:
                for done in outputs.values():
                    done.close()
                name = os.path.basename(args.tars[index])
                outputs = {index: tarfile.open(os.path.join(args.out, name), "w")}
            if png is None:
                failed += 1
                continue
            _add(outputs[index], f"{key}.png", png)
            written += 1
    for done in outputs.values():
        done.close()
    json.dump({"images": written, "failed": failed}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
