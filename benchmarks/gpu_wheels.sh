#!/usr/bin/env bash
# Fetch, on the development machine, the wheels the lent GPU machines lack for the Beam build
# (their image has Python 3.12, torch, numpy, pyarrow, Pillow, OpenCV, ... but no Beam or pydantic)
# into .whl/ (git-ignored through .git/info/exclude), for `benchmarks/gpu_session.sh`, which
# installs them there with --no-deps. Carry `.whl` in the device call (about 39 MB).
# Versions: apache-beam 2.77.0 and its requirements missing there, pydantic 2.13 (its core needs
# only typing-extensions >= 4.14), zlib-ng (the default PNG level's deflate), proto-plus 1.26 (protobuf < 7), webdataset; py-spy 0.4.3 (a
# sampling profiler, for gpu_session.sh's PYSPY=1).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl .git/info
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for wheel in apache-beam==2.77.0 annotated-types==0.8.0 beartype==0.22.9 braceexpand==0.1.7 cffi==2.1.1 \
    cryptography==50.0.2 dnspython==2.9.2 fastavro==1.13.1 fasteners==0.20 httplib2==0.32.1 jsonpickle==4.1.4 \
    objsize==0.7.1 proto-plus==1.26.1 pycparser==3.12 pydantic==2.13.4 pydantic-core==2.46.4 pymongo==4.20.1 \
    pytz==2026.6 typing-inspection==0.4.2 webdataset==1.0.2 zstandard==0.25.0 zlib-ng==1.1.0 py-spy==0.4.3; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "$wheel"
done
du -sh .whl
