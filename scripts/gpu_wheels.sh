#!/usr/bin/env bash
# Fill wheels/ (git-ignored) with what scripts/gpu_check.sh installs on a GPU machine that reaches
# no package registry, yet already has a CUDA torch 2.11 for Python 3.12, numba, scipy, tensorboard
# and PyYAML.
#
#   bash scripts/gpu_wheels.sh            # download into wheels/ (28 wheels, about 28 MB)
#   bash scripts/gpu_wheels.sh --dry-run  # list the wheels and their sizes; nothing is written
#
# Each wheel is fetched on its own (--no-deps), so the folder holds exactly this list and nothing the
# GPU machine already has (numba, scipy and numpy are 100 MB between them). The versions are the ones
# our CPU test machine runs. Left out on purpose: scikit-learn (13 MB; librosa imports it only for
# decompose/segment, which we never call) and zerospeech-libriabx2 (the optional ABX score of evaluate).
# gpu_check.sh installs the folder with `pip install --no-index --no-deps` and then imports every
# package, so a wheel missing here is one clear line there, not a failure minutes into the run.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=wheels
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=.venv/bin/python

# name==version, one per line: the runtime packages the GPU machine lacks, and pytest for the cuda tests.
packages=(
    torchaudio==2.11.0          # the log-mel images of training (its pure-Python transforms); matches torch 2.11
    soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
    soxr==1.1.0
    librosa==0.11.0 audioread==3.1.0 decorator==5.3.1 joblib==1.6.0 lazy-loader==0.6 msgpack==1.2.4
    pooch==1.9.0 platformdirs==4.14.9 packaging==26.4 requests==2.34.2 charset-normalizer==3.5.3 idna==3.20
    urllib3==2.8.0 certifi==2026.10.19.post1 typing-extensions==4.16.0
    praat-parselmouth==0.4.7 praatio==6.2.2
    espeakng-loader==0.2.4
    tqdm==4.70.1
    pytest==9.2.0 iniconfig==2.3.1 pluggy==1.7.0 pygments==2.21.0
)
# The GPU machine's interpreter and platform, not this one's.
target=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64
        --platform linux_x86_64 --platform any)

if [ "${1:-}" = "--dry-run" ]; then
    # pip's resolver with a JSON report: which file each name resolves to, and its size, without
    # downloading the wheels themselves (metadata only, where the index serves it separately).
    report=$(mktemp)
    PIP_CONSTRAINT= "$python" -m pip install --quiet --dry-run --ignore-installed --no-deps --target /tmp/gpu-wheels-none \
        "${target[@]}" --report "$report" "${packages[@]}" 2> >(grep -v "^WARNING: Location" >&2)
    "$python" - "$report" <<'EOF'
import json, sys
items = json.load(open(sys.argv[1]))["install"]
total = 0
for item in items:
    url = item["download_info"]["url"]
    size = item.get("download_info", {}).get("archive_info", {}).get("size")
    total += size or 0
    print(f"{url.rsplit('/', 1)[-1]:<90} {'' if size is None else f'{size / 2**20:6.1f} MB'}")
print(f"{len(items)} wheels" + (f", {total / 2**20:.1f} MB (sizes the index reported)" if total else ""))
EOF
    rm -f "$report"
    exit 0
fi

mkdir -p "$dest"
# Our machine's pip constraint file pins packages for its own Python; it must not apply to 3.12 wheels.
PIP_CONSTRAINT= "$python" -m pip download --quiet --no-deps "${target[@]}" -d "$dest" "${packages[@]}" \
    2> >(grep -v "^WARNING: Location" >&2)
ls "$dest"/*.whl | wc -l | xargs echo "gpu_wheels: wheels in $dest:"
du -sh "$dest" | cut -f1 | xargs echo "gpu_wheels: size"
