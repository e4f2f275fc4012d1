# Worker image for remote Beam runners (Dataflow `--sdk_container_image`, Flink/Spark
# `--environment_type=DOCKER --environment_config=IMAGE`), and for Dask workers (run it with the command
# `dask worker tcp://SCHEDULER:8786`; the image carries the dask extra). The SDK harness and Python match the
# pinned apache-beam; the project and its pinned dependencies are installed from this checkout.
# The default torch wheel for Linux is the CUDA build: right for GPU tokenize workers (Dataflow
# installs the driver through the resource hint `tokenizer.accelerator:
# "type:nvidia-tesla-t4;count:1;install-nvidia-driver"`). For CPU-only workers pass your CPU
# wheel index: `docker build --build-arg TORCH_PIP_ARGS="--index-url <cpu index>" -t uvd .`
FROM apache/beam_python3.11_sdk:2.77.0
ARG TORCH_PIP_ARGS=""

# File names read as UTF-8 whatever the locale a runner gives its workers (`uvd_pipeline.cli.in_utf8_mode`)
ENV PYTHONUTF8=1
WORKDIR /opt/uvd
COPY pyproject.toml README.md ./
COPY transforms ./transforms
COPY sources ./sources
COPY tokenizer ./tokenizer
COPY trainer ./trainer
COPY uvd_pipeline ./uvd_pipeline
COPY configs ./configs

# torch first and pinned, so the project install never picks another version.
RUN pip install --no-cache-dir torch==2.13.0 ${TORCH_PIP_ARGS} \
 && pip install --no-cache-dir '.[dask]' \
 && python -c "import uvd_pipeline, tokenizer, trainer, decord, av, cv2, pyarrow, distributed"

ENTRYPOINT ["/opt/apache/beam/boot"]
