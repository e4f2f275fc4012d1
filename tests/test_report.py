"""The data-quality report on a finished build: counts, rejects, input sizes, sentence lengths,
contact sheets that show real sentences, code statistics and reconstructions per source, stage
throughput, and the page itself loaded in headless Chromium."""

from __future__ import annotations

import bisect
import html
import html.parser as html_parser
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageOps

from tokenizer.progress import Progress
from uvd_pipeline.quality import ASPECT_EDGES, SIDE_EDGES
from uvd_pipeline.render import decode_png
from uvd_pipeline import report as report_module
from uvd_pipeline.report import write_report
from uvd_pipeline.verify import OutputUnfinished
from uvd_pipeline.report_data import RECONSTRUCTION_IMAGES, RECONSTRUCTION_PER_SENTENCE
from uvd_pipeline.report_plots import LABEL_WIDTH, THUMB
from uvd_pipeline.rendered_shards import iter_shard
from uvd_pipeline.shards import find_shards, read_token_shard, sentence_tokens


@pytest.fixture(scope="module")
def report_build(mini_build, tmp_path_factory):
    """A copy of the shared mini build for this module's reports (written into the build's folder):
    (config pointing at the copy, summary)."""
    config, summary = mini_build
    out = tmp_path_factory.mktemp("report_build") / "out"
    shutil.copytree(config.output, out)
    return config.model_copy(update={"output": str(out)}), summary


class _Said(logging.Handler):
    """Keeps the messages of the records `uvd_pipeline.report` itself logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "uvd_pipeline.report":
            self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def report_written_and_said(report_build, tmp_path_factory) -> tuple[Path, list[str]]:
    """One report of `report_build` (one sentence per group), its folder copied as written (other
    tests write reports of other sizes into the build's folder), for the tests that read its
    figures, page and pictures: each wrote the same report again, a reconstruction pass apiece;
    with what `uvd_pipeline.report` logged as it wrote it (its own write, one more pass, before)."""
    config, _ = report_build
    logger, said = logging.getLogger("uvd_pipeline.report"), _Said()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(said)
    try:
        paths = write_report(config.output, max_sentences_per_group=1)
    finally:
        logger.removeHandler(said)
        logger.setLevel(level)
    assert Path(paths["html"]).parent == Path(config.output, "report")
    copy = tmp_path_factory.mktemp("report_written") / "report"
    shutil.copytree(Path(paths["html"]).parent, copy)
    return copy, said.messages


@pytest.fixture(scope="module")
def report_written(report_written_and_said) -> Path:
    """The folder of `report_written_and_said`."""
    return report_written_and_said[0]


@pytest.fixture(scope="module")
def report_of_two(report_build, tmp_path_factory) -> tuple[Path, Progress]:
    """A report of `report_build` with two sentences per group, written over an earlier report's
    sheet of a group the build has not, with a progress line a shard on a clock the shard checks
    hold still and the pages (decoding reconstructions) move by 100 s: its folder copied as
    written, and the progress. (The counts test and the Chromium test each wrote it before.)"""
    config, _ = report_build
    earlier = Path(config.output, "report")
    earlier.mkdir(exist_ok=True)
    (earlier / "contact_pairs_depth.png").write_bytes(b"a sheet of a group this build does not have")
    now = [0.0]
    progress = Progress("report", "shards", every_s=0.0, stream=io.StringIO(), clock=lambda: now[0])
    pages = report_module._write_pages

    def slow_pages(*args):
        now[0] = 100.0
        return pages(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_module, "_write_pages", slow_pages)
        paths = write_report(config.output, max_sentences_per_group=2, progress=progress)
    assert Path(paths["html"]).parent == earlier
    copy = tmp_path_factory.mktemp("report_of_two") / "report"
    shutil.copytree(earlier, copy)
    return copy, progress


@pytest.fixture(scope="module")
def report_data(report_written) -> dict:
    """The JSON of `report_written`."""
    return json.loads((report_written / "report.json").read_text())


def test_report_counts_and_sheets(report_build, report_of_two):
    config, summary = report_build
    report_dir, progress = report_of_two
    paths = {"json": str(report_dir / "report.json"), "html": str(report_dir / "report.html")}
    shards = [*Path(config.output).glob("rendered/*/*/*.stats.json"), *Path(config.output).glob("tokens/*/*/*.stats.json")]
    assert progress.total == progress.count == len(shards) > 0
    assert progress.stream.getvalue().count("progress: report: ") == len(shards)
    progress.done()  # its rate is the shard checks' alone: it divided by the pages' time too
    assert progress.stream.getvalue().endswith(f"report: {len(shards)} shards in 0.0s\n")
    data = json.loads(Path(paths["json"]).read_text())
    assert data["totals"] == summary["totals"]
    web = summary["sources"]["web"]["sentences"]
    assert data["sentences_by_kind"] == {"category": 6, "image": web, "video": 3}
    assert data["rejects_by_reason"]["remainder_dropped"] == 7
    assert data["rejects_by_reason"]["duplicate_near"] == 6
    assert data["reject_examples"]["too_few_frames"][0]["key"].startswith("clips-short_10f")
    page = Path(paths["html"]).read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    # contact sheets: overview, image, category, video; input sizes, sentence lengths, code statistics,
    # one reconstruction sheet per source (3), throughput
    assert "contact_sheet.png" in images and len(images) == 11
    # an earlier report's picture of a group this build has not is gone: the folder is this report
    assert sorted(p.name for p in report_dir.iterdir()) == sorted([*images, "report.html", "report.json"])
    # the same output, the same report: every byte of the page, its data and its pictures (written
    # again over whatever report of the build other tests left)
    written = {p.name: p.read_bytes() for p in report_dir.iterdir()}
    again = Path(write_report(config.output, max_sentences_per_group=2)["html"]).parent
    assert {p.name: p.read_bytes() for p in again.iterdir()} == written
    for name in images:
        with Image.open(report_dir / name) as sheet:
            sheet.verify()
    assert data["sentences_by_task"] == {"category": 6, "image": web, "video": 3}
    sheet = np.asarray(Image.open(report_dir / "contact_video.png").convert("RGB"))
    assert sheet.shape[0] == 2 * (THUMB + 4)  # one row per sentence
    # the first thumbnail of the first row is the first frame of the first video sentence
    first_tar = sorted((Path(config.output) / "rendered" / "clips").rglob("*.tar"))
    sentence = next(s for tar in first_tar for s in iter_shard(str(tar)))
    frame = np.asarray(Image.fromarray(np.ascontiguousarray(decode_png(sentence.images[0]))).resize((THUMB, THUMB), Image.BILINEAR))
    thumb = sheet[2 : 2 + THUMB, LABEL_WIDTH : LABEL_WIDTH + THUMB]
    assert np.abs(thumb.astype(int) - frame).mean() < 1.0


def test_report_tokenizer_section(report_build, report_written, report_data):
    config, summary = report_build
    paths = {"html": str(report_written / "report.html")}
    data = report_data
    section = data["tokenizer"]
    assert section["tokenizer"] == "tiny-seed0" and section["codebook_size"] == 8192
    # 64 px images at f16: 16 tokens each, every rendered image tokenized
    assert section["all"]["tokens"] == summary["totals"]["images"] * 16
    assert set(section["by_source"]) == {"web", "inet", "clips"}
    assert 0 < section["all"]["usage"] <= 1 and section["all"]["perplexity"] >= 1
    assert 0 < section["sample_psnr"] < 60
    report_dir = Path(paths["html"]).parent
    page = Path(paths["html"]).read_text()
    shards = len(list(Path(config.output, "tokens").rglob("*.arrow")))
    assert [(t["precision"], t["tuned_kernels"], t["shards"]) for t in section["made_by"]] == [("fp32", False, shards)]
    assert f"token shards computed: {shards} in fp32 on 1 CPU thread in batches of 8." in page
    assert set(section["reconstruction"]) == {"web", "inet", "clips"}
    for name in (section["usage_plot"], *(r["sheet"] for r in section["reconstruction"].values())):
        with Image.open(report_dir / name) as image:
            image.verify()
        assert f'src="{name}"' in page


def _bin(value: float, edges: tuple) -> int:
    return bisect.bisect_right(edges, value) - 1


def _histogram(values, edges: tuple) -> list[int]:
    counts = Counter(_bin(v, edges) for v in values)
    return [counts[i] for i in range(len(edges))]


def test_report_input_sizes(report_build, report_data):
    config, summary = report_build
    data = report_data
    inputs = data["inputs"]["by_source"]
    # each image of an image, category or video sentence comes from one input picture
    for name, source in summary["sources"].items():
        assert inputs[name]["count"] == source["images"] > 0
        for key in ("short_side", "long_side", "aspect"):
            assert sum(inputs[name][key]) == source["images"]
    output = Path(config.output)
    paths = {s.name: Path(s.path) for s in config.sources}
    # web: the sizes of the committed images, read here from the corpus bytes (EXIF orientation applied)
    members = [s.header["members"][0] for tar in (output / "rendered" / "web").rglob("*.tar")
               for s in iter_shard(str(tar))]
    names = {f"{m['sample_key']}.{m['file_ext']}" for m in members}
    sizes = []
    with tarfile.open(paths["web"] / "00001.tar") as tar:
        for member in tar.getmembers():
            if member.name in names:
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                    sizes.append(ImageOps.exif_transpose(image).size)
    assert len(sizes) == len(members) == summary["sources"]["web"]["images"]
    web = inputs["web"]
    assert web["short_side"] == _histogram([min(w, h) for w, h in sizes], SIDE_EDGES)
    assert web["long_side"] == _histogram([max(w, h) for w, h in sizes], SIDE_EDGES)
    assert web["aspect"] == _histogram([w / h for w, h in sizes], ASPECT_EDGES)
    assert web["pixels"] == sum(w * h for w, h in sizes)
    assert web["below_canvas"] == sum(min(w, h) < 64 for w, h in sizes) > 0  # the corpus has tiny images
    assert web["mean_megapixels"] == pytest.approx(web["pixels"] / len(sizes) / 1e6, abs=1e-4)
    # videos: every frame has its clip's size, read here from the container
    clip_sizes = []
    for tar in (output / "rendered" / "clips").rglob("*.tar"):
        for sentence in iter_shard(str(tar)):
            with av.open(str(paths["clips"] / sentence.header["meta"]["file"])) as container:
                stream = container.streams.video[0]
                clip_sizes += [(stream.width, stream.height)] * sentence.header["n_images"]
    assert len(clip_sizes) == 48
    assert inputs["clips"]["short_side"] == _histogram([min(w, h) for w, h in clip_sizes], SIDE_EDGES)
    assert inputs["clips"]["aspect"] == _histogram([w / h for w, h in clip_sizes], ASPECT_EDGES)
    page = Path(data["output"], "report", "report.html").read_text()
    assert '<img src="input_sizes.png"' in page and "Input sizes" in page


def test_report_counts_lengths_and_entropy(report_build, report_data):
    config, summary = report_build
    data = report_data
    web = summary["sources"]["web"]["sentences"]
    assert data["sentence_lengths"] == {"category": {"16": 6}, "image": {"1": web}, "video": {"16": 3}}
    groups = data["counts"]["by_kind_task"]
    assert {g: (c["sentences"], c["images"]) for g, c in groups.items()} == {
        "category": (6, 96), "image": (web, web), "video": (3, 48)}
    for group in groups.values():
        assert group["tokens"] == 16 * group["images"]  # 64 px at f16: 4 x 4 codes per image
    for name, counts in data["counts"]["by_source"].items():  # counted in the token stats
        assert counts["tokens"] == 16 * summary["sources"][name]["images"]
    assert sum(g["tokens"] for g in groups.values()) == sum(c["tokens"] for c in data["counts"]["by_source"].values())
    # entropy in bits of the codes each source's token shards hold, computed here from the shards
    section = data["tokenizer"]
    values: dict[str, list[np.ndarray]] = {}
    for path in find_shards(str(Path(config.output) / "tokens")):
        table, _ = read_token_shard(path)
        for source, tokens in zip(table.column("source").to_pylist(), table.column("tokens").to_pylist()):
            values.setdefault(source, []).append(np.asarray(tokens, np.int64))
    values["all"] = [np.concatenate(v) for v in values.values()]

    def entropy(codes: np.ndarray) -> float:
        p = np.bincount(codes) / codes.size
        p = p[p > 0]
        return float(-(p * np.log2(p)).sum())

    for name, parts in values.items():
        codes = np.concatenate(parts)
        stats = section["all"] if name == "all" else section["by_source"][name]
        assert stats["tokens"] == codes.size
        assert stats["entropy_bits"] == pytest.approx(entropy(codes), abs=1e-4)
        assert stats["perplexity"] == pytest.approx(2 ** entropy(codes), abs=0.06)
        assert 0 < stats["entropy_bits"] <= np.log2(8192)


def test_report_reconstruction_per_source(report_build, report_data):
    """Per-source PSNR/SSIM equal a direct computation on the images the report samples."""
    from tokenizer.codec import Tokenizer

    config, _ = report_build
    data = report_data
    reconstruction = data["tokenizer"]["reconstruction"]
    tok = Tokenizer.from_pretrained(config.tokenizer.checkpoint, batch_size=8)
    output = Path(config.output)
    all_psnr = []
    for source in ("web", "inet", "clips"):
        shards = [Path(p) for p in find_shards(str(output / "tokens" / source))]  # train before val
        originals, codes, used = [], [], []
        for path in shards:
            if len(originals) == RECONSTRUCTION_IMAGES:
                break
            used.append(path.name)
            table, _ = read_token_shard(str(path))
            tar = output / "rendered" / source / path.parent.name / path.name.replace(".arrow", ".tar")
            for index, sentence in enumerate(iter_shard(str(tar))):
                tokens = sentence_tokens(table, index).reshape(sentence.header["n_images"], 16)
                for position in range(min(RECONSTRUCTION_PER_SENTENCE, sentence.header["n_images"])):
                    if len(originals) < RECONSTRUCTION_IMAGES:
                        originals.append(decode_png(sentence.images[position]).astype(np.float64))
                        codes.append(tokens[position])
        assert reconstruction[source]["shards"] == used
        decoded = tok.decode(np.stack(codes).astype(np.int64), grid=(4, 4)).astype(np.float64)
        mse = ((np.stack(originals) - decoded) ** 2).reshape(len(originals), -1).mean(1)
        psnr = 10 * np.log10(255.0**2 / mse)
        all_psnr += list(psnr)
        assert reconstruction[source]["images"] == len(originals)
        assert reconstruction[source]["psnr"] == pytest.approx(psnr.mean(), abs=1e-3)
        from tokenizer.metrics import ssim_per_image

        ssim = ssim_per_image(np.stack(originals).astype(np.uint8), decoded.astype(np.uint8))
        assert reconstruction[source]["ssim"] == pytest.approx(ssim.mean(), abs=1e-5) and 0 < ssim.mean() < 1
    # 2 frames of each of the 3 clips (3 shards), 2 images of each of 4 class sentences, 8 web images
    assert {s: r["images"] for s, r in reconstruction.items()} == {"clips": 6, "inet": 8, "web": 8}
    assert data["tokenizer"]["sample_psnr"] == pytest.approx(np.mean(all_psnr), abs=0.01)


def test_reconstructions_do_not_depend_on_the_thread_count(report_build):
    """The decoded sample is the same bytes whatever torch's thread count (set by the machine's
    cores, `OMP_NUM_THREADS` or `taskset`): a convolution's sums split across another number of
    threads round otherwise, which changed the report's sheets from one machine to another."""
    import torch

    from uvd_pipeline.report_data import build_tokenizer, reconstructions, token_usage

    config, _ = report_build
    _, _, shards_of = token_usage(config.output)
    before = torch.get_num_threads()
    decoded = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            tok = build_tokenizer(config.output)
            samples = reconstructions(config.output, tok, shards_of, 8)
            decoded.append({sample["source"]: sample["decoded"].tobytes() for sample in samples})
    finally:
        torch.set_num_threads(before)
    assert len(decoded[0]) == 3 and decoded[0] == decoded[1]


def test_stage_throughput(report_build, report_written, report_data):
    config, summary = report_build
    stages = summary["run"]["stages"]
    assert set(stages) == {"read", "render", "assemble", "write", "tokenize"}
    totals = summary["totals"]
    assert (stages["write"]["calls"], stages["write"]["items"]) == (totals["shards"], totals["sentences"])
    assert (stages["tokenize"]["calls"], stages["tokenize"]["items"]) == (totals["shards"], totals["images"])
    assert stages["assemble"]["items"] == 6  # the class sentences
    counters = summary["run"]["counters"]
    assert stages["render"]["items"] == sum(n for k, n in counters.items() if k.endswith(".records"))
    assert stages["read"]["items"] >= stages["render"]["items"]
    for stage in stages.values():
        assert stage["seconds"] > 0
        assert stage["items_per_s"] == pytest.approx(stage["items"] / stage["seconds"], rel=0.01)
    distributions = summary["run"]["distributions"]
    assert distributions["tokenize.batch_images"]["sum"] == totals["images"]
    assert distributions["tokenize.batch_images"]["max"] == 8  # the configured batch size
    data = report_data
    # the report shows the summary on disk
    on_disk = json.loads(Path(config.output, "summary.json").read_text())
    assert data["throughput"]["stages"] == on_disk["run"]["stages"]
    page = (report_written / "report.html").read_text()
    table = page[page.index("<h2>Throughput</h2>"):]
    shown = [stage for stage in ("read", "render", "assemble", "write", "tokenize") if stage in on_disk["run"]["stages"]]
    rows = [table.index(f"<tr><td>{stage}</td>") for stage in shown]
    assert rows == sorted(rows)  # in pipeline order
    assert '<img src="throughput.png"' in page and '<img src="sentence_lengths.png"' in page


# -- the page in a browser ---------------------------------------------------------------------
# Chromium's --dump-dom prints the DOM once the page has loaded; a copy of the report with this
# script added writes what the browser made of every <img> into the DOM. No driver, no new
# Python dependency: the same page, its images resolved by the browser from the same folder.
PROBE = """<script>window.addEventListener("load", () => {
  const found = [...document.images].map(i => ({src: i.getAttribute("src"), complete: i.complete,
                                               width: i.naturalWidth, height: i.naturalHeight}));
  const out = document.createElement("pre");
  out.id = "uvd-image-probe";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def browser_images(browser: str, page: Path, profile: Path) -> list[dict]:
    """Every <img> of `page` as headless Chromium loaded it: src, complete, naturalWidth/Height."""
    import html

    probe = page.with_name("browser-probe.html")  # next to the page: the same relative image paths
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    proc = subprocess.run([browser, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
                           f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=180)
    match = re.search(r'<pre id="uvd-image-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"the page did not finish loading in Chromium (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))


def test_report_page_renders_every_image_in_chromium(report_of_two, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("UVD_REQUIRE_BROWSER"):
            pytest.fail("UVD_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no chromium on this machine (`make test` installs it)")
    copy = tmp_path / "report"  # this test damages its copy; the module's copy stays as written
    shutil.copytree(report_of_two[0], copy)
    page = copy / "report.html"
    referenced = re.findall(r'<img src="([^"]+)"', page.read_text())
    assert len(referenced) == 11
    images = browser_images(browser, page, tmp_path / "profile")
    assert [i["src"] for i in images] == referenced
    assert [i["src"] for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)] == []
    for image in images:  # the browser's size is the file's size
        with Image.open(copy / image["src"]) as png:
            assert png.size == (image["width"], image["height"])
    # the check sees a missing image and a broken one
    (copy / referenced[1]).unlink()
    (copy / referenced[-1]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"not the rest of a PNG" * 4)
    images = browser_images(browser, page, tmp_path / "profile")
    assert sorted(i["src"] for i in images if i["width"] == 0) == sorted([referenced[1], referenced[-1]])


def test_report_does_not_decode_with_a_retrained_tokenizer(mini_build, tmp_path):
    """The build's checkpoint path now holds other weights: decoding the stored tokens with them
    would give a meaningless PSNR, so the report says why it shows none."""
    import shutil

    from tokenizer import TINY, build, save

    config, _ = mini_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    other = tmp_path / "retrained"
    save(build(TINY, seed=5), other)
    record = json.loads((out / "build.json").read_text())
    record["config"]["tokenizer"]["checkpoint"] = str(other)
    (out / "build.json").write_text(json.dumps(record))
    paths = write_report(str(out), max_sentences_per_group=1)
    section = json.loads(Path(paths["json"]).read_text())["tokenizer"]
    assert "reconstruction" not in section and "sample_psnr" not in section
    assert "the tokens were made by" in section["reconstruction_skipped"]
    assert "No reconstruction:" in Path(paths["html"]).read_text()


# -- a damaged or unfinished output: the page says so instead of showing the summary's numbers ----
STALE_PAGE = "<html><body>EARLIER REPORT: 76 sentences</body></html>"


@pytest.fixture
def report_copy(report_build, tmp_path):
    """This module's build copied, with a report page and picture left by an earlier report."""
    config, summary = report_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out, ignore=shutil.ignore_patterns("report"))
    (out / "report").mkdir()
    (out / "report" / "report.html").write_text(STALE_PAGE)
    (out / "report" / "contact_old.png").write_bytes(b"an earlier report's picture")
    return out, summary


def _damage_page(out: Path) -> str:
    page = (out / "report" / "report.html").read_text()
    assert "<h2>Sentences by source</h2>" not in page and "EARLIER REPORT" not in page  # no stale numbers
    assert sorted(p.name for p in (out / "report").iterdir()) == ["report.html", "report.json"]
    return page


def test_report_of_an_output_missing_a_tar_says_so(report_copy):
    """A tar deleted after the build, one the contact sheets do not open (the last val shard): the
    report showed the summary's counts, those sentences included, and no word of the loss."""
    from uvd_pipeline.shards import ShardDamaged

    out, summary = report_copy
    last = max(summary["shards"], key=lambda s: (s["split"] == "val", s["source"], s["shard"]))
    tar = out / "rendered" / last["source"] / last["split"] / last["tar"]
    tar.unlink()
    with pytest.raises(ShardDamaged, match=re.escape(str(tar))):
        write_report(str(out))
    page = _damage_page(out)
    assert "damaged" in page and f"<li><code>{tar}</code>: missing" in page
    data = json.loads((out / "report" / "report.json").read_text())
    assert [d["file"] for d in data["damaged"]] == [str(tar)] and "totals" not in data


def test_report_of_a_tar_altered_in_place_replaces_the_earlier_page(report_copy):
    """Same size, other bytes: only reading the tar finds it; the report stopped with the error and
    left the earlier report's page (its numbers) in place."""
    from uvd_pipeline.shards import ShardDamaged

    out, summary = report_copy
    first = min(summary["shards"], key=lambda s: (s["split"] != "train", s["source"], s["split"], s["shard"]))
    tar = out / "rendered" / first["source"] / first["split"] / first["tar"]
    data = bytearray(tar.read_bytes())
    data[len(data) // 3] ^= 0xFF
    tar.write_bytes(bytes(data))
    with pytest.raises(ShardDamaged, match="sha256 differs"):
        write_report(str(out))
    assert f"<li><code>{tar}</code>: sha256 differs" in _damage_page(out)


def test_report_of_an_unfinished_build_says_so(report_copy):
    """Committed shards summary.json does not list (a resumed build stopped before its summary),
    and a build holding the output: the summary's numbers are not this output's."""
    from uvd_pipeline.shards import ShardDamaged

    out, summary = report_copy
    written = json.loads((out / "summary.json").read_text())
    left_out = written["shards"].pop()
    (out / "summary.json").write_text(json.dumps(written))
    stats = out / "rendered" / left_out["source"] / left_out["split"] / left_out["tar"].replace(".tar", ".stats.json")
    with pytest.raises(ShardDamaged, match="summary.json does not list"):
        write_report(str(out))
    assert f"<li><code>{stats}</code>: committed, but summary.json does not list it" in _damage_page(out)
    (out / "summary.json").write_text(json.dumps(summary))
    holder = {"host": "elsewhere", "pid": 1, "started": "2026-01-01T00:00:00+00:00", "run_id": "r1"}
    (out / "_lock.json").write_text(json.dumps(holder))
    with pytest.raises(OutputUnfinished, match="UNFINISHED: a build holds this output"):
        write_report(str(out))
    assert "a build holds this output (" in _damage_page(out)


def test_report_of_a_held_or_unfinished_output_exits_as_verify_does(report_copy, capsys):
    """An intact output a build holds exited 1 calling the lock damage (`error: damaged:
    .../_lock.json`), one without summary.json 2 ("has no summary.json"), while `verify` exits
    UNFINISHED (3) for both: a script reading the two saw three answers to one state."""
    from uvd_pipeline.cli import main
    from uvd_pipeline.verify import UNFINISHED
    from uvd_pipeline.verify import main as verify_main

    out, summary = report_copy
    holder = {"host": "elsewhere", "pid": 1, "started": "2026-01-01T00:00:00+00:00", "run_id": "r1"}
    (out / "_lock.json").write_text(json.dumps(holder))
    assert main(["report", str(out)]) == UNFINISHED == verify_main(str(out), quick=True)
    said = capsys.readouterr().err
    assert "UNFINISHED: a build holds this output (" in said and "damaged" not in said
    (out / "_lock.json").unlink()
    (out / "summary.json").unlink()
    assert main(["report", str(out)]) == UNFINISHED == verify_main(str(out), quick=True)
    said = capsys.readouterr().err
    assert f"{out}: UNFINISHED: it has no summary.json" in said and "damaged" not in said
    assert main(["report", str(out / "nothing")]) == 2  # no output there: as before


# -- text from the data on the page: escaped, and shown as it is -------------------------------
HOSTILE = '"><img src=x onerror=alert(1)><script>alert(2)</script>\u2028\u202egnp.exe'


class _Tags(html_parser.HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, attrs))


def test_report_page_escapes_and_shows_text_from_the_data(report_build):
    """A reject detail, a warning, a runner class path and the summary's fields holding HTML and
    Unicode controls: no tag or attribute of theirs reaches the page, and a right-to-left override
    (which turned the rest of its table cell around: `gnp.exe` read as `exe.png`) or a line
    separator is shown as its code, not obeyed."""
    from uvd_pipeline.report_data import report_data
    from uvd_pipeline.report_page import render_html

    config, summary = report_build
    data = report_data(config.output, summary)
    data["reject_examples"]["truncated"][0]["detail"] = HOSTILE
    data["reject_examples"]["truncated"][0]["input"] = "sub/<script>alert(1)</script>.png"  # a file's name
    data["warnings"] = {"web": [HOSTILE]}
    data["throughput"]["runner"] = HOSTILE
    data["config_hash"] = data["image_size"] = HOSTILE
    page = render_html(data, {})
    tags = _Tags()
    tags.feed(page)
    assert [t for t, _ in tags.tags if t in ("script", "img")] == []
    assert not [a for _, attrs in tags.tags for a, _ in attrs if a.startswith("on")]
    assert "\u202e" not in page and "\u2028" not in page
    def shown(text: str) -> str:
        return html.escape(text).replace("\u2028", "\\u2028").replace("\u202e", "\\u202e")

    assert page.count(shown(HOSTILE)) == 4  # config hash, image size, warning, runner
    assert f"({shown(HOSTILE[:60])})" in page  # the reject example, its first 60 characters
    # named by where its input lies, as text
    source = data["reject_examples"]["truncated"][0]["source"]
    assert f"{source}: sub/{html.escape('<script>alert(1)</script>')}.png ({shown(HOSTILE[:60])})" in page


def test_report_examples_name_the_source_and_show_a_newline_in_a_name(report_build):
    """Two sources' `00000.tar:000000017.jpg` read alike in the examples cell: it names the source
    before the input. A file named `new\\nline.jpg` showed as "new line.jpg" (HTML folds a newline
    into a space): a cell shows it as its code, as it does a line separator."""
    from uvd_pipeline.report_data import report_data
    from uvd_pipeline.report_page import render_html

    config, summary = report_build
    data = report_data(config.output, summary)
    example = data["reject_examples"]["truncated"][0]
    example["input"] = "00000.tar:new\nline\t.jpg"
    page = render_html(data, {})
    assert f"{example['source']}: 00000.tar:new\\nline\\t.jpg (" in page
    assert "new\nline" not in page


def test_report_of_an_output_whose_rejects_file_lost_lines_says_so(report_copy):
    """rejects.jsonl cut short after the build: the page showed the summary's reject counts with
    examples from what was left (none for the reasons whose lines were gone)."""
    from uvd_pipeline.shards import ShardDamaged

    out, summary = report_copy
    rejects = out / "rejects.jsonl"
    merged = rejects.read_bytes()
    rejects.write_bytes(merged.split(b"\n", 1)[0] + b"\n")
    # its size, held to the shards' rejects files by the report's check (`verify --quick`)
    why = (f"{len(rejects.read_bytes())} bytes, the committed shards' rejects files hold {len(merged)} "
           f"(summary.json counts {summary['totals']['rejects']} rejects)")
    with pytest.raises(ShardDamaged, match=re.escape(f"{rejects}: {why}")):
        write_report(str(out))
    assert f"<li><code>{rejects}</code>: {html.escape(why)}" in _damage_page(out)


def test_report_of_an_output_whose_rejects_file_was_edited_in_place_says_so(report_copy):
    """rejects.jsonl edited in place, its size kept (the report's check held it to the shards'
    rejects files by size alone): a garbled first byte stopped the report with a JSONDecodeError
    traceback, an input renamed was shown as the build's. Its lines are held to the shards'."""
    from uvd_pipeline.shards import ShardDamaged

    out, _ = report_copy
    rejects = out / "rejects.jsonl"
    merged = rejects.read_bytes()
    first = merged.split(b"\n", 1)[0]
    for edited in (b"X" + merged[1:], merged.replace(first, first[:-3] + b'Z"}', 1)):  # a field's last letter
        assert len(edited) == len(merged) and edited != merged
        rejects.write_bytes(edited)
        why = "its lines differ from the committed shards' rejects files (edited)"
        with pytest.raises(ShardDamaged, match=re.escape(f"{rejects}: {why}")):
            write_report(str(out))
        assert f"<li><code>{rejects}</code>: {html.escape(why)}" in _damage_page(out)


def test_report_of_rejects_that_are_no_build_lines_says_so(report_copy):
    """A first line that is no JSON object with a reason, in rejects.jsonl and in the shard's
    rejects file alike, the shard's stats rewritten to its new sha256 (what the shards' sizes, line
    digests and hashes cannot tell): the report stopped with a JSONDecodeError traceback; it names
    the file and the line, and writes the damage page."""
    import hashlib

    from uvd_pipeline.shards import ShardDamaged

    out, _ = report_copy
    rejects = out / "rejects.jsonl"
    first = rejects.read_bytes().split(b"\n", 1)[0]
    holder = next(p for p in (out / "rendered").rglob("*.rejects.jsonl") if first in p.read_bytes().split(b"\n"))
    for path in (rejects, holder):
        path.write_bytes(path.read_bytes().replace(first, b"X" + first[1:], 1))
    stats_file = holder.with_name(holder.name.replace(".rejects.jsonl", ".stats.json"))
    stats = json.loads(stats_file.read_text())
    stats["files"][holder.name]["sha256"] = hashlib.sha256(holder.read_bytes()).hexdigest()
    stats_file.write_text(json.dumps(stats))
    why = "line 1 is no reject the build wrote (not a JSON object with a reason, key and detail)"
    with pytest.raises(ShardDamaged, match=re.escape(f"{rejects}: {why}")):
        write_report(str(out))
    assert f"<li><code>{rejects}</code>: {html.escape(why)}" in _damage_page(out)


def test_report_of_an_input_renamed_in_rejects_and_its_shard_file_says_so(report_copy):
    """An input renamed (its length kept) in rejects.jsonl and in its shard's rejects file alike:
    their lines and sizes agree, and the report showed the renamed input as the build's while a
    full verify said the shard file's sha256 differs from its stats. The report hashes each shard
    rejects file as it reads it, names it and writes the damage page."""
    from uvd_pipeline.shards import ShardDamaged

    out, _ = report_copy
    rejects = out / "rejects.jsonl"
    first = rejects.read_bytes().split(b"\n", 1)[0]
    row = json.loads(first)
    old = json.dumps(row["input"])[1:-1].encode()
    renamed = first.replace(old, b"Z" + old[1:], 1)
    assert renamed != first and len(renamed) == len(first)
    holder = next(p for p in (out / "rendered").rglob("*.rejects.jsonl") if first in p.read_bytes().split(b"\n"))
    for path in (rejects, holder):
        path.write_bytes(path.read_bytes().replace(first, renamed, 1))
    why = "sha256 differs from its stats: the bytes changed after it was committed"
    with pytest.raises(ShardDamaged, match=re.escape(f"{holder}: {why}")):
        write_report(str(out))
    page = _damage_page(out)
    assert f"<li><code>{holder}</code>: {html.escape(why)}" in page
    assert html.escape(renamed.decode()) not in page


def test_report_check_opens_no_shard_rejects_file_its_stats_say_is_empty(report_build, monkeypatch):
    """The report's check read every shard's rejects file, the empty ones too (21 opens on a
    21-shard build, none before rejects.jsonl's lines were held to them): one whose stats record
    0 bytes holds no line, and its size is checked without opening it."""
    from sources import fsio
    from uvd_pipeline.report_data import output_problems

    config, summary = report_build
    out = Path(config.output)
    sides = {p.name: p.stat().st_size for p in out.glob("rendered/*/*/*.rejects.jsonl")}
    empty = [n for n, size in sides.items() if size == 0]
    assert empty and len(empty) < len(sides)  # some shards rejected inputs, some none
    opened: list[str] = []
    real = fsio.open_file
    monkeypatch.setattr(fsio, "open_file", lambda uri, *a, **k: opened.append(uri) or real(uri, *a, **k))
    assert output_problems(config.output, summary) == []
    read = sorted(u.rsplit("/", 1)[-1] for u in opened if u.endswith(".rejects.jsonl"))
    assert read == sorted(n for n, size in sides.items() if size > 0)


def test_a_reject_line_is_read_only_as_the_build_writes_it():
    """The lines `_reject_examples` refuses rather than showing or stopping on (KeyError, TypeError)."""
    from uvd_pipeline.report_data import _reject_row

    good = {"detail": "d", "input": "x1.jpg", "key": "bad-x1", "reason": "not_an_image", "source": "bad"}
    assert _reject_row(json.dumps(good).encode()) == good
    assert _reject_row(json.dumps({k: v for k, v in good.items() if k not in ("input", "source")}).encode())
    for bad in (b"X" + json.dumps(good).encode()[1:], b"[1]", b"\xff", json.dumps({**good, "reason": 3}).encode(),
                json.dumps({k: v for k, v in good.items() if k != "detail"}).encode(),
                json.dumps({k: v for k, v in good.items() if k != "source"}).encode()):
        assert _reject_row(bad) is None, bad


def test_report_of_no_sentences_asked_for_in_a_folder_named_with_a_newline(report_build, tmp_path):
    """`report --sentences 0` of a build of sentences said "No sentences in this build." under the
    contact sheets; an output folder whose name holds a newline was written raw in the page's
    header (shown as a space: a name no folder has). The page says none were asked for, and shows
    the newline as its code, as it does in file names."""
    config, summary = report_build
    out = tmp_path / "odd\n dir"
    shutil.copytree(config.output, out, ignore=shutil.ignore_patterns("report"))
    page = Path(write_report(str(out), max_sentences_per_group=0)["html"]).read_text()
    sheets = page[page.index("<h2>Contact sheets"):page.index("<h2>Tokenizer")]
    assert summary["totals"]["sentences"] > 0 and "No sentences in this build." not in page
    assert "No contact sheets: none were asked for (--sentences 0)." in sheets and "<img" not in sheets
    assert f"<p>Output <code>{html.escape(str(tmp_path))}/odd\\n dir</code>, config" in page
    assert "odd\n dir" not in page


def test_report_of_an_output_whose_summary_is_cut_short_says_so(report_copy):
    """summary.json cut short: the report stopped with a JSONDecodeError traceback and left the
    earlier report's page in place."""
    from uvd_pipeline.shards import ShardDamaged

    out, _ = report_copy
    summary = out / "summary.json"
    summary.write_bytes(summary.read_bytes()[:100])
    with pytest.raises(ShardDamaged, match=f"{summary}: unreadable JSON"):
        write_report(str(out))
    assert f"<li><code>{summary}</code>: unreadable JSON" in _damage_page(out)


def test_report_checks_leave_the_unit_store_out(report_copy):
    """The unit store is the build's cache (a mark read per input unit, none of the report's
    numbers from it): a damaged unit is the next build's business, not the report's."""
    from uvd_pipeline.report_data import output_problems
    from uvd_pipeline.verify import STRAY

    out, summary = report_copy
    stored = sorted((out / "_units").rglob("*.results"))[0]
    stored.write_bytes(stored.read_bytes()[:-1])
    assert output_problems(str(out), summary) == []
    (out / "rendered" / "web" / "train" / "stray.tar").write_bytes(b"a tar no stats file names")
    assert [why for _, why in output_problems(str(out), summary)] == [STRAY]


def test_report_page_of_a_build_without_rejects_says_so(report_build):
    """0 rejects: the page showed the rejects table's header row over no rows."""
    from uvd_pipeline.report_data import report_data
    from uvd_pipeline.report_page import render_html

    config, summary = report_build
    data = report_data(config.output, summary)
    data["rejects_by_reason"], data["reject_examples"], data["duplicates"] = {}, {}, {}
    page = render_html(data, {})
    section = page[page.index("<h2>Rejects by reason</h2>"):page.index("<h2>Input sizes</h2>")]
    assert "<table>" not in section and "<p>No rejects: every input is part of a sentence.</p>" in section


def test_report_of_an_output_given_by_a_relative_path(report_copy, monkeypatch):
    """`make build-uvd` reports `build/sample`: an intact output named by a relative path is
    intact (the shard listing names files by absolute paths; compared as such, every committed
    shard looked unlisted and the report refused the output as damaged)."""
    from uvd_pipeline.report import write_report

    out, _ = report_copy
    monkeypatch.chdir(out.parent)
    paths = write_report(out.name, max_sentences_per_group=1)
    assert "<h2>Sentences by source</h2>" in (out / "report" / "report.html").read_text()
    assert paths["html"].endswith("report.html")


def test_the_reports_check_lists_the_shards_and_reads_the_summary_no_more_than_verify(report_build, monkeypatch):
    """The report's check of the output (`output_problems`) listed the rendered shards' stats
    files again after `verify_output` had listed them twice (for the stats files, then for the
    files no stats file names), and verify read summary.json twice (its JSON check, then its
    missing-marks check): on an object store each is another round of requests. Now each shard
    folder is listed once, and the summary read once."""
    import builtins

    from sources import fsio
    from uvd_pipeline.report_data import output_problems
    from uvd_pipeline.verify import verify_output

    config, summary = report_build
    listed: Counter[str] = Counter()
    summary_reads = Counter()
    real_list, real_open = fsio.list_files, builtins.open

    def counting_list(uri, *args, **kwargs):
        listed[str(uri)] += 1
        return real_list(uri, *args, **kwargs)

    def counting_open(file, *args, **kwargs):
        summary_reads[str(file)] += str(file).endswith("summary.json")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(fsio, "list_files", counting_list)
    monkeypatch.setattr(builtins, "open", counting_open)
    assert verify_output(config.output, quick=True, units=False).intact
    alone = Counter(listed)
    listed.clear()
    summary_reads.clear()
    assert output_problems(config.output, summary) == []
    assert listed == alone == Counter({f"{config.output}/rendered": 1, f"{config.output}/tokens": 1})
    assert sum(summary_reads.values()) == 1


def test_the_reports_counts_are_the_outputs_own(report_build):
    """Sentences, images, tokens and rejects the report shows, per source and split, kind and
    reason, and the mixture's token figures, against a count of the output itself: the tars'
    members (tarfile), the token shards' rows (pyarrow), the lines of rejects.jsonl."""
    import pyarrow as pa

    from uvd_pipeline.report_data import report_data

    config, summary = report_build
    out = Path(config.output)
    sentences, images, kinds = Counter(), Counter(), Counter()
    for path in sorted(out.glob("rendered/*/*/*.tar")):
        place = tuple(path.parts[-3:-1])
        with tarfile.open(path) as archive:
            for member in archive:
                if member.name.endswith(".json"):
                    sentences[place] += 1
                    kinds[json.load(archive.extractfile(member))["kind"]] += 1
                images[place] += member.name.endswith(".png")
    rows, tokens = Counter(), Counter()
    for path in sorted(out.glob("tokens/*/*/*.arrow")):
        table = pa.ipc.open_file(str(path)).read_all()
        rows[tuple(path.parts[-3:-1])] += table.num_rows
        tokens[path.parts[-3]] += sum(len(t) for t in table.column("tokens").to_pylist())
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines() if line]

    data = report_data(config.output, summary)
    assert rows == sentences
    assert data["totals"] == {"sentences": sum(sentences.values()), "images": sum(images.values()),
                              "rejects": len(rejects), "shards": len(list(out.glob("rendered/*/*/*.tar")))}
    assert data["sentences_by_kind"] == dict(sorted(kinds.items()))
    assert data["rejects_by_reason"] == dict(Counter(r["reason"] for r in rejects))
    for name, source in data["sources"].items():
        assert {split: (c["sentences"], c["images"]) for split, c in source["by_split"].items()} == {
            split: (n, images[(s, split)]) for (s, split), n in sentences.items() if s == name}
        assert source["rejects_by_reason"] == dict(Counter(r["reason"] for r in rejects if r["source"] == name))
        assert data["counts"]["by_source"][name]["tokens"] == tokens[name]
    per_image = sum(tokens.values()) // sum(images.values())
    for name, share in data["mixture"]["sources"].items():  # train sentences, each with BOS and EOS
        train = sentences[(name, "train")]
        assert (share["sentences"], share["tokens"]) == (train, images[(name, "train")] * per_image)
        assert share["tokens_per_sentence"] == share["tokens"] / train + 2


def test_report_of_a_build_whose_every_input_was_rejected_says_so(tmp_path):
    """A folder of a zero-byte `.jpg` (`touch`) and a text file named `.png`: the build commits
    no sentence. The page showed two tables of header rows alone and a contact-sheet heading over
    nothing; it says at the top that every input was rejected, and in each section that there
    are no sentences."""
    from conftest import build_web_source

    images = tmp_path / "images"
    images.mkdir()
    subprocess.run(["touch", str(images / "empty.jpg")], check=True)
    (images / "notes.png").write_text("not a picture\n")
    summary = build_web_source(tmp_path, "web", images)
    assert summary["totals"]["sentences"] == 0 and summary["totals"]["rejects"] == 2
    page = Path(write_report(str(tmp_path / "out"))["html"]).read_text()
    assert '<p class="nothing"><strong>No sentences: every input was rejected (2 rejects, by reason below).' in page
    for start, end in (("<h2>Sentences by kind</h2>", "<h2>Sentences, images"),
                       ("<h2>Sentences, images and tokens by kind and task</h2>", "<h2>Sentences by split"),
                       ("<h2>Contact sheets", "<h2>Tokenizer")):
        section = page[page.index(start) + len(start):page.index(end)]
        assert "<table>" not in section and "<img" not in section and "No sentences in this build." in section
    assert "<td>empty_file</td><td>1</td>" in page and "<td>not_an_image</td><td>1</td>" in page


LAYOUT_PROBE = """<script>window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "uvd-layout-probe";
  out.textContent = JSON.stringify({
    scripts: document.scripts.length, width: document.documentElement.scrollWidth, window: window.innerWidth,
    handlers: [...document.querySelectorAll("*")].flatMap(e => [...e.attributes].map(a => a.name))
                                                    .filter(n => n.startsWith("on")),
    tags: [...new Set([...document.body.querySelectorAll("*")].map(e => e.tagName.toLowerCase()))].sort(),
    images: [...document.images].map(i => i.getAttribute("src")), text: document.body.innerText});
  document.body.appendChild(out);
});</script>"""


def test_report_of_hostile_file_names_in_chromium(tmp_path):
    """A build whose output folder is named `<script>alert(1)</script>` and whose input holds a
    hidden `.x<img src=x onerror=alert(1)>.png`, a text file named `<svg onload=alert(5)>.png`
    and a 200-character name in a folder chain as deep as PATH_MAX allows below the test's own
    folder (a reject key of 200 characters), loaded
    in headless Chromium: no element, script or handler of the data's, its text shown as text;
    and the page fits a 1280-pixel window (the one-word key of the rejects table made it 1818
    pixels wide)."""
    from conftest import build_web_source

    browser = _chromium()
    if browser is None:
        if os.environ.get("UVD_REQUIRE_BROWSER"):
            pytest.fail("UVD_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no chromium on this machine (`make test` installs it)")
    images = tmp_path / "images"
    # 200-character folders down to about 4000 characters in all: under Linux's PATH_MAX (4096)
    # wherever pytest's temporary folder lies (a fixed depth overran it below a longer one)
    deep = images.joinpath(*["d" * 200] * ((4000 - len(str(images)) - 205) // 201))
    deep.mkdir(parents=True)
    Image.new("RGB", (60, 40), (200, 30, 30)).save(images / "ok.png")
    (images / ".x<img src=x onerror=alert(1)>.png").write_bytes(b"a hidden file")
    (images / "<svg onload=alert(5)>.png").write_text("<script>alert(4)</script>")
    (deep / ("y" * 200 + ".png")).write_text("not a picture")
    where = tmp_path / "<script>alert(1)<" / "script>"
    where.mkdir(parents=True)
    summary = build_web_source(where, "web", images)
    assert summary["totals"]["sentences"] == 1 and summary["totals"]["rejects"] == 3
    page = Path(write_report(str(where / "out"))["html"])
    probe = page.with_name("layout-probe.html")
    probe.write_text(page.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    proc = subprocess.run([browser, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,800",
                           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=180)
    match = re.search(r'<pre id="uvd-layout-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"the page did not finish loading in Chromium (exit {proc.returncode}): {proc.stderr[-2000:]}"
    seen = json.loads(html.unescape(match.group(1)))
    assert seen["scripts"] == 1 and seen["handlers"] == []  # the probe's own script only
    assert not {"svg", "iframe", "b", "i"} & set(seen["tags"])
    assert seen["images"] and all(re.fullmatch(r"[a-z_]+\.png", src) for src in seen["images"]), seen["images"]
    assert f"Output {where / 'out'}," in seen["text"]
    assert ".x<img src=x onerror=alert(1)>.png: hidden" in seen["text"]
    # the rejects table names each input by where it lies, as text: the deep one kept within 1024
    # characters, its start and its own name
    assert "<svg onload=alert(5)>.png (" in seen["text"]
    assert "d" * 200 + "/" + "d" * 100 in seen["text"] and "y" * 200 + ".png (" in seen["text"]
    assert seen["width"] <= seen["window"] == 1280, seen


def test_report_of_an_output_folder_whose_name_is_not_utf8_is_refused_with_the_fix(tmp_path, capsys):
    """An output folder renamed by a latin-1 system (`caf\\xe9out`): the report crashed with a
    UnicodeEncodeError traceback ('\\udce9') writing report.json. It is refused up front, as the
    config refuses such an output, naming the folder as text and the fix."""
    from uvd_pipeline.cli import main

    latin1 = os.fsdecode(bytes(tmp_path) + b"/caf\xe9out")
    os.mkdir(os.fsencode(latin1))
    assert main(["report", latin1]) == 2
    err = capsys.readouterr().err
    assert f"report OUT: {tmp_path}/caf\\xe9out holds bytes that are not UTF-8" in err and "Traceback" not in err
    assert os.listdir(os.fsencode(latin1)) == []


def test_the_report_logs_each_phase_and_each_source_it_decodes(report_build, report_written_and_said, report_data):
    """`report OUT` said nothing for minutes (over 4 on the sample build under load) until its last
    two lines: it logs each phase, and each source whose sample it decodes, as it goes."""
    config, _ = report_build
    said = report_written_and_said[1]
    assert said[0] == f"report: checking {config.output} against its summary and stats files"
    assert said[1] == "report: counts, histograms and contact sheets"
    decoded = sorted(report_data["tokenizer"]["reconstruction"])
    assert said[2].startswith("report: token statistics; decoding a sample of each source") and decoded
    for source in decoded:
        psnr = report_data["tokenizer"]["reconstruction"][source]["psnr"]
        assert f"report: decoded {source}: PSNR {psnr:.2f} dB" in said


def test_token_usage_refuses_two_codebooks_in_one_line(report_copy, tmp_path):
    """Token shards of two codebooks under `tokens/` (one imported there): the code histogram
    stopped with numpy's 'operands could not be broadcast' traceback; now a `ShardDamaged` naming
    the shard and both codebooks."""
    from uvd_pipeline.cli import main
    from uvd_pipeline.report_data import token_usage
    from uvd_pipeline.shards import ShardDamaged

    out, _ = report_copy
    first = sorted((out / "tokens").rglob("*.arrow"))[0]
    jsonl, extra = tmp_path / "t.jsonl", first.with_name("zz-extra.arrow")
    assert main(["export-jsonl", str(first), "--out", str(jsonl)]) == 0
    stats = json.loads(first.with_name(first.name.replace(".arrow", ".stats.json")).read_text())
    assert main(["import-jsonl", str(jsonl), "--out", str(extra), "--source", first.parts[-3], "--tokenizer-name",
                 "other", "--codebook-size", "16384", "--tokens-per-image", str(stats["tokens_per_image"]),
                 "--image-size", str(stats["image_size"])]) == 0
    with pytest.raises(ShardDamaged) as caught:
        token_usage(str(out))
    assert str(caught.value) == (f"{extra}: a codebook of 16384 codes (other), {first} has "
                                 f"{stats['codebook_size']} ({stats['tokenizer_name']}): token "
                                 "shards of two tokenizers in one build's tokens/; move the foreign one out")


def test_report_names_a_stray_whose_name_is_not_utf8(report_copy):
    """A stray with a latin-1 name (`bad\\xff\\xfe.tar`) beside the committed tars: the report
    ended in UnicodeEncodeError writing its page (lone surrogates in the name), exit 1 with a
    traceback, and the earlier report already deleted. The name is shown as the rejects show such
    bytes (`\\xNN`), in the page and in report.json."""
    from uvd_pipeline.shards import ShardDamaged

    out, summary = report_copy
    first = summary["shards"][0]
    folder = out / "rendered" / first["source"] / first["split"]
    stray = os.path.join(os.fsencode(folder), b"bad\xff\xfe.tar")
    open(stray, "wb").close()
    with pytest.raises(ShardDamaged, match="not a file of any committed shard"):
        write_report(str(out))
    assert f"<li><code>{folder}/bad\\xff\\xfe.tar</code>: not a file of any committed shard" in _damage_page(out)
    data = json.loads((out / "report" / "report.json").read_text(encoding="utf-8"))
    assert [d["file"] for d in data["damaged"]] == [f"{folder}/bad\\xff\\xfe.tar"]


def test_a_report_that_fails_leaves_the_earlier_one(report_copy, monkeypatch):
    """The report deleted the earlier page and pictures before it wrote anything: one that failed
    on the way (a name it could not write, a full disk) left the output with no report at all.
    The earlier files are removed only once the new page is written."""
    out, _ = report_copy

    def fails(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_module, "render_html", fails)
    with pytest.raises(OSError, match="No space left"):
        write_report(str(out))
    assert (out / "report" / "report.html").read_text() == STALE_PAGE
    assert (out / "report" / "contact_old.png").exists()
    monkeypatch.undo()
    write_report(str(out))
    assert not (out / "report" / "contact_old.png").exists()
    assert "EARLIER REPORT" not in (out / "report" / "report.html").read_text()
