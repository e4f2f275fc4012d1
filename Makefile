# Two commands on a fresh machine: `make build-uvd` and `make test`.
# Both create .venv when it is missing and install the project into it (once: the stamp file
# is refreshed only when pyproject.toml changes).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.uvd-installed
SAMPLE_DIR ?= data/sample
CONFIG ?= configs/sample.yaml
# the output folder named in $(CONFIG)
BUILD_DIR ?= build/sample

TOKENIZER_DIR ?= tokenizer/weights/uvd-tiny
# natural-image sources of the sample build: what the embedded tokenizer is trained on
TOKENIZER_SOURCES := laion_sample imagenet_sample video_sample co3d_sample objaverse_sample
# what both training stages of `make tokenizer` share: data, MSE only, no GAN, 2 threads, seed
TOKENIZER_FIT = $(PY) -m tokenizer.fit $(foreach s,$(TOKENIZER_SOURCES),--data 'build/sample/rendered/$(s)/train/*.tar') \
  --l1-weight 0 --disc-start 1000000 --threads 2 --seed 0

# img2dataset (tests run it on a local image zoo) pins packages that clash with ours: its own venv.
I2D_VENV ?= .venv-img2dataset
I2D_STAMP := $(I2D_VENV)/.img2dataset-installed

.PHONY: build-uvd test test-deps system-tools test-fast bench sample report env clean tokenizer browser ffmpeg heif-tools archivers imagemagick webp-tools img2dataset bytecode

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first and pinned: pip then takes the CPU wheel, never a multi-GB CUDA build.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,dask]'
	@touch $@

# The project's modules compiled once: where the environment sets PYTHONDONTWRITEBYTECODE (this
# machine's does), every `python -m uvd_pipeline`, Beam worker and trainer process would compile
# them again from source (0.2 CPU-s each; the test suite starts hundreds). Python checks each .pyc
# against its source's time stamp, so an edited module is compiled afresh, never run stale.
bytecode: $(STAMP)
	@$(PY) -m compileall -q -j 0 uvd_pipeline sources transforms tokenizer trainer benchmarks

sample: bytecode
	$(PY) -m uvd_pipeline sample $(SAMPLE_DIR)

# The build, then a tiny transformer fitted on its token shards and prompted with held-out
# sentences (loss curve and generations go into the report), then the report.
build-uvd: sample
	$(PY) -m uvd_pipeline build $(CONFIG) --replace-changed
	$(PY) -m trainer.demo $(BUILD_DIR) --steps 300 --seq-len 1024 --batch-size 2
	$(PY) -m uvd_pipeline report $(BUILD_DIR)

# The report test loads report.html in headless Chromium (Debian's `chromium` package), and the
# video zoo tests write MPEG-TS/PS, edit-list and Theora clips with the ffmpeg CLI (Debian's
# `ffmpeg`), and the phone photo tests compare AVIF/HEIC decodes with libheif's `heif-convert`
# (Debian's `libheif-examples`), all installed here when missing; the img2dataset tests run
# img2dataset from its own venv. UVD_REQUIRE_* make those tests fail rather than skip without them.
# Three pytest workers (pytest-xdist), each test file on one of them: the suite is mostly one
# process waiting on another (Beam workers, ffmpeg, img2dataset, a kill's moment, a fixture another
# worker is making), so a third file at a time fills the waits of two cores; the expensive session
# fixtures are made once for all workers (`made_once_for_all_workers`).
# OpenBLAS (numpy's matmul: the corpus's ray caster, pHash) sized to one thread in each: three
# workers already fill two cores, and its pools spinning for cores the other workers hold cost the
# suite ~5% more CPU (a fixed subset of five files, -n 3: 157 -> 149 CPU-s). Builds set it for their
# own workers anyway (`build_runner.WORKER_ENVIRON`); tests of that unset it themselves.
# pytest's assertion-rewritten test modules are written once first, on both cores (tests/rewrite_cache.py):
# under PYTHONDONTWRITEBYTECODE pytest caches none, and each of the three workers rewrote all of them
# (the start of a run that collects and runs nothing: 47-49 -> 23-27 CPU-s, pyc written first included).
TEST_WORKERS ?= 3
test: test-deps bytecode
	@$(PY) tests/rewrite_cache.py
	OPENBLAS_NUM_THREADS=1 UVD_REQUIRE_ARCHIVERS=1 UVD_REQUIRE_BROWSER=1 UVD_REQUIRE_FFMPEG=1 UVD_REQUIRE_HEIF_CONVERT=1 UVD_REQUIRE_IMAGEMAGICK=1 UVD_REQUIRE_IMG2DATASET=1 UVD_REQUIRE_WEBP_TOOLS=1 $(PY) -m pytest -m "slow or not slow" -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

img2dataset: $(I2D_STAMP)

# The two environments install side by side (a sub-make with two jobs: a fresh `make test` spends
# about 90 s installing, a third of it on img2dataset's venv); apt-get runs one package at a time.
test-deps:
	@$(MAKE) --no-print-directory -j2 $(STAMP) $(I2D_STAMP) system-tools

system-tools:
	@$(MAKE) --no-print-directory browser
	@$(MAKE) --no-print-directory ffmpeg
	@$(MAKE) --no-print-directory heif-tools
	@$(MAKE) --no-print-directory archivers
	@$(MAKE) --no-print-directory imagemagick
	@$(MAKE) --no-print-directory webp-tools

$(I2D_STAMP):
	@test -x $(I2D_VENV)/bin/python || $(PYTHON) -m venv $(I2D_VENV)
	@$(I2D_VENV)/bin/python -m pip install --quiet --quiet --disable-pip-version-check img2dataset==1.47.0
	@touch $@

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

ffmpeg:
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg; }

heif-tools:
	@command -v heif-convert >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libheif-examples; }

archivers:
	@command -v tar >/dev/null 2>&1 && command -v bsdtar >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tar libarchive-tools; }

# The tests make odd files the way the world does with ImageMagick's `convert` (and read ghostscript's
# ICC profiles). A machine may carry a `convert` that is not ImageMagick (a stand-in that only shows
# PNGs), so the check asks `convert -version` what it is, not whether the name exists.
imagemagick:
	@{ convert -version 2>/dev/null | grep -q ImageMagick && test -e /usr/share/color/icc/ghostscript/a98.icc; } || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq imagemagick libgs-common; }

# libwebp's own img2webp, gif2webp and webpmux make the animated WebPs GIPHY-style sites serve (the
# tests fall back to Pillow's writer without them, which is not how the world makes those files).
webp-tools:
	@command -v img2webp >/dev/null 2>&1 && command -v gif2webp >/dev/null 2>&1 && command -v webpmux >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq webp; }

test-fast: bytecode
	@$(PY) tests/rewrite_cache.py
	$(PY) -m pytest -q

bench: sample
	$(PY) benchmarks/run_all.py

report: $(STAMP)
	$(PY) -m uvd_pipeline report $(BUILD_DIR)

# Reproduces the embedded tokenizer (about 30 minutes on 2 idle CPU cores) and its held-out figures.
# Plain autoencoder first, then the codebook is seeded from encoder outputs; no GAN phase: on two
# CPU cores a short adversarial phase trades PSNR for texture, and this model exists for tests.
tokenizer: sample
	$(PY) -m uvd_pipeline build $(CONFIG) --replace-changed --no-tokenize
	rm -rf build/tokenizer-fit
	@# 1) 64-px crops (cheap): 500 steps as a plain autoencoder, then the codebook (8192 codes, like
	@#    LVM's: 1024 left colours too coarse) seeded from encoder outputs, dead codes restarted.
	$(TOKENIZER_FIT) \
	  --out build/tokenizer-fit/crops64 --preset tiny --crop 64 --batch-size 16 --max-steps 1200 --lr 8e-4 \
	  --ae-warmup-steps 500 --restart-dead-every 100 --checkpoint-every 200 --log-every 100
	@# 2) whole 256-px images, cosine to zero, mean-colour term: GroupNorm statistics of 64-px crops do
	@#    not carry over to 256 px (stage 1 alone decodes full images 3 dB worse and much darker);
	@#    the decoder gains its level path (per-image colour past its last GroupNorm).
	$(TOKENIZER_FIT) \
	  --out build/tokenizer-fit/full256 --init build/tokenizer-fit/crops64 --crop 256 --batch-size 4 \
	  --max-steps 700 --lr 3e-4 --lr-decay cosine --colour-weight 2 --restart-dead-every 25 \
	  --checkpoint-every 100 --log-every 50 --decoder-level --balance-data --export $(TOKENIZER_DIR)
	$(PY) -m tokenizer.evaluate --checkpoint $(TOKENIZER_DIR) \
	  $(foreach s,$(TOKENIZER_SOURCES),--data 'build/sample/rendered/$(s)/val/*.tar') \
	  --out $(TOKENIZER_DIR)/eval.json --sheet build/tokenizer-fit/heldout.png

clean:
	rm -rf build bench_out .pytest_cache
