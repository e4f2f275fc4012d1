#!/usr/bin/env bash
# Every GPU benchmark in one command, sized for a short lease of one GPU (about 9 minutes):
#   tokenizer encode paths (bench_tokenizer --cuda-only, with a kernel profile of the main path),
#   trainer MFU (bench_trainer --cuda-only), the Beam build's Tokenize stage (bench_gpu_build; its
#   workers as threads of one process by default, so one model is loaded and compiled, not one per
#   worker: with 8 processes the 5,000-image part ran out of its 150 s on 2026-12-04).
# Each part has its own time limit, so one that fails or runs long leaves the others their time.
# Knobs: TOKENIZER_S / TRAINER_S / BUILD_S (each part's hard limit, s), TOKENIZER_BUDGET_S and
# TRAINER_BUDGET_S (no new variant starts after that), TOKENIZER_VARIANTS ("0,2": indices into
# bench_tokenizer.CUDA_VARIANTS), MFU_VARIANTS ("2,3": indices into bench_trainer.MFU_VARIANTS; with
# PROFILE the last one picked, unless it is the target row 0, is profiled), BUILD_IMAGES, BUILD_WORKERS, BUILD_MODE, PARTS (which to run, default
# "tokenizer trainer gpu_build"), PROFILE=0 (no kernel profiles), PYSPY=1 (py-spy samples every
# thread of the build, idle ones too, into gpu_build_pyspy.txt: where the Tokenize stage waits; the
# py-spy wheel is among gpu_wheels.sh's).
# Results (JSON, the profile, the log) go to $UVD_BENCH_OUT (default bench_out/). Wheels for the
# packages the GPU image lacks (Beam and its needs, pydantic) are taken from .whl/ when present:
# `bash benchmarks/gpu_wheels.sh` fetches them here; carry `.whl` in the device call.
set -u
OUT_DIR=${UVD_BENCH_OUT:-bench_out}
mkdir -p "$OUT_DIR"
export UVD_BENCH_OUT=$OUT_DIR PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
PY=${PYTHON:-python3}
nvidia-smi -L
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
part() {  # part NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local started=$SECONDS
  echo "=== $name (limit ${limit}s)"
  timeout -k 10 "$limit" "$@"
  echo "=== $name: exit $? after $((SECONDS - started))s"
}
PARTS=" ${PARTS:-tokenizer trainer gpu_build} "
PROFILE_ENV=(UVD_BENCH_PROFILE=)  # never empty: "${a[@]}" of an empty array fails under set -u before bash 4.4
[ "${PROFILE:-1}" != 0 ] && PROFILE_ENV=(UVD_BENCH_PROFILE=1)
sampled() {  # sampled COMMAND...: the command, with py-spy attached to it when PYSPY=1 (never in its way)
  "$@" &
  local pid=$! spy= status
  if [ "${PYSPY:-0}" = 1 ] && [ -x /tmp/site/bin/py-spy ]; then
    /tmp/site/bin/py-spy record --pid "$pid" --rate 50 --idle --threads --subprocesses --nonblocking \
      --format raw -o "$OUT_DIR/gpu_build_pyspy.txt" >/dev/null 2>&1 &
    spy=$!
  fi
  wait "$pid"
  status=$?
  [ -n "$spy" ] && wait "$spy"  # py-spy writes its file once the command has exited
  return $status
}
if [[ $PARTS == *" tokenizer "* ]]; then
  part tokenizer "${TOKENIZER_S:-240}" env UVD_BENCH_CUDA_BUDGET_S="${TOKENIZER_BUDGET_S:-140}" "${PROFILE_ENV[@]}" \
    UVD_BENCH_CUDA_VARIANTS="${TOKENIZER_VARIANTS:-}" \
    $PY benchmarks/bench_tokenizer.py --cuda-only
fi
if [[ $PARTS == *" trainer "* ]]; then
  part trainer "${TRAINER_S:-230}" env UVD_BENCH_CUDA_BUDGET_S="${TRAINER_BUDGET_S:-120}" "${PROFILE_ENV[@]}" \
    UVD_BENCH_MFU_VARIANTS="${MFU_VARIANTS:-}" $PY benchmarks/bench_trainer.py --cuda-only
fi
if [[ $PARTS == *" gpu_build "* ]]; then
  export -f sampled
  export OUT_DIR
  part gpu_build "${BUILD_S:-150}" bash -c 'sampled "$@"' _ $PY benchmarks/bench_gpu_build.py \
    --images "${BUILD_IMAGES:-5000}" --workers "${BUILD_WORKERS:-8}" --mode "${BUILD_MODE:-multi_threading}" \
    --work /tmp/gpu_build
fi
