#!/usr/bin/env bash
# The GPU check: one prepared run of at most 8 minutes on one GPU (docs/training.md, "GPU check").
#
#   bash scripts/gpu_check.sh OUT_DIR
#
# For a GPU machine that reaches no package registry but has a CUDA build of torch 2.11 (Python 3.12),
# numba, scipy, tensorboard and PyYAML. Everything else comes from wheels/ in the checkout (fill it
# beforehand with scripts/gpu_wheels.sh; it is git-ignored, so carry it along). In order:
#   1. install wheels/ into a virtual environment over the system's packages (no network), import everything
#   2. generation speed: SMALL and paper, batch 1 and 32, the PyTorch reference and the CUDA graph
#   3. training throughput: the demo model at the GPU batch and the paper model at its recipe batch,
#      bf16 and fp32 (GPU_CHECK_COMPILE=1 adds torch.compile of the demo model)
#   4. the demo recipe trained on the GPU for what is left of the budget, at most 6 minutes
#      (train.max_minutes), then exported (weights, config, speaker table) for the CPU's evaluate;
#      beside it, the tests marked cuda (pytest -m cuda): CUDA graph = eager = fused CPU, greedy =
#      teacher forced, bf16 against fp32, torchrun with NCCL, every generation command with --device cuda
# Writes OUT_DIR/gpu_check.log (everything printed), OUT_DIR/gpu_report.json (the figures) and
# OUT_DIR/demo-gpu/ (the exported model demo-gpu.pt, train.log, metrics.jsonl, config.yaml).
# A failing step is recorded in the report and the next one still runs; the exit status is 1 if any failed.
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET_S (default 480: the whole run),
# GPU_CHECK_DEMO_MINUTES (default 6: the longest demo training), GPU_CHECK_DEMO_BATCH (default 32),
# GPU_CHECK_DEMO_LR (default 0.002), GPU_CHECK_COMPILE (default 0); GPU_CHECK_SKIP_INSTALL=1 uses $PYTHON as
# it is (a rehearsal of the flow on a machine without a GPU: the CUDA steps then fail, the report is written).
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: bash scripts/gpu_check.sh OUT_DIR" >&2
    exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
exec > >(tee "$out/gpu_check.log") 2>&1

started=$(date +%s)
budget=${GPU_CHECK_BUDGET_S:-480}
demo_minutes=${GPU_CHECK_DEMO_MINUTES:-6}
# The demo at GPU scale: 32 segments of 4,096 samples per step (16x the CPU demo's 2), so each step
# sees 16x the audio; the learning rate 2x the CPU demo's 1e-3, not the 4x a square-root rule would
# give: the demo's own probe found 2e-3 and 3e-3 no worse than 1e-3 at batch 2 (docs/experiments.md),
# and nothing above that has been tried on this WaveNet. The schedule is fitted to the time box below.
# No loader workers: an epoch of the demo corpus is 6 such batches, and workers (not persistent) would
# be started again for every epoch; cropping the memory-mapped cache costs a few ms per batch, and the
# report's data_seconds against compute_seconds shows whether the GPU ever waited for it.
demo_batch=${GPU_CHECK_DEMO_BATCH:-32}
demo_lr=${GPU_CHECK_DEMO_LR:-0.002}
venv=/tmp/audio-vqvae-gpu-venv
run_dir=/tmp/audio-vqvae-gpu-demo
steps_file="$out/steps.tsv"
: > "$steps_file"
failed=0

elapsed() { echo $(( $(date +%s) - started )); }

# step NAME TIMEOUT_S COMMAND...: run a command (not a shell function) with a time limit; record name,
# exit status and seconds.
step() {
    local name=$1 limit=$2
    shift 2
    local began=$(date +%s)
    echo
    echo "=== $name (limit ${limit} s, at $(elapsed) s of ${budget}) ==="
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - began ))" >> "$steps_file"
    [ "$rc" -eq 0 ] || { failed=1; echo "=== $name: exit status $rc ==="; }
    return "$rc"
}

echo "gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), checkout $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
     "with $(git status --porcelain 2>/dev/null | wc -l) changed file(s)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"

# ------------------------------------------------------------------ 1. install, without a network
install() {
    local base=${PYTHON:-python3}
    if ! ls wheels/*.whl >/dev/null 2>&1; then
        echo "no wheels in $repo/wheels: run scripts/gpu_wheels.sh where a registry is reachable, and carry wheels/"
        return 1
    fi
    # A venv over the system's packages, if it sees the system's torch (made from inside another venv,
    # it would see the base interpreter's packages instead); else a target folder on PYTHONPATH.
    rm -rf "$venv"
    if "$base" -m venv --system-site-packages "$venv" 2>/dev/null && "$venv/bin/python" -c "import torch" 2>/dev/null
    then
        py="$venv/bin/python"
        PIP_CONSTRAINT= "$py" -m pip install --quiet --no-index --no-deps --disable-pip-version-check wheels/*.whl \
            || return 1
    else
        py=$base
        PIP_CONSTRAINT= "$py" -m pip install --quiet --no-index --no-deps --disable-pip-version-check --target "$venv/site" \
            wheels/*.whl || return 1
        export PYTHONPATH="$venv/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    # The package from the checkout itself (no build step, so nothing to install).
    export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
    "$py" - <<'EOF'
import importlib
import torch
for name in ("torchaudio", "numpy", "scipy", "numba", "yaml", "tensorboard", "soundfile", "soxr", "librosa",
             "parselmouth", "praatio", "espeakng_loader", "tqdm", "pytest", "audio_vqvae"):
    module = importlib.import_module(name)
    print(f"  {name} {getattr(module, '__version__', '')}")
assert torch.cuda.is_available(), "this torch sees no CUDA GPU"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
EOF
}
py=${PYTHON:-python3}
echo
echo "=== install (at $(elapsed) s of ${budget}) ==="
began=$(date +%s)
if [ "${GPU_CHECK_SKIP_INSTALL:-0}" = 1 ]; then  # a rehearsal of the script's flow with $PYTHON as it is
    export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
    rc=0
else
    install  # in this shell, not under timeout: it sets $py and PYTHONPATH for the steps below
    rc=$?
fi
printf 'install\t%s\t%s\n' "$rc" "$(( $(date +%s) - began ))" >> "$steps_file"
[ "$rc" -eq 0 ] || { failed=1; echo "=== install: exit status $rc; the steps below will fail where imports do ==="; }


# ------------------------------------------------------------------ 2. generation speed
step generation-bench 120 "$py" - "$out/generation-bench.json" <<'EOF'
import json
import sys
from dataclasses import asdict

from audio_vqvae.commands.bench import run_benchmark

# 0.2 s per utterance (3,200 steps) for the graph, 0.03 s for the eager reference: enough for a steady
# rate, and the whole table in about a minute.
results = run_benchmark(presets=("small", "paper"), batches=(1, 32), seconds=0.2, reference_seconds=0.03,
                        repeats=2, device="cuda")
rows = [{**asdict(r), "samples_per_second": r.samples_per_second, "real_time_factor": r.real_time_factor}
        for r in results]
json.dump(rows, open(sys.argv[1], "w"), indent=1)
EOF

# ------------------------------------------------------------------ 3. training throughput
step training-bench 150 bash -c "
    '$py' scripts/bench_training.py --device cuda --only small-demo --batch $demo_batch --precision bf16,fp32 \
        --steps 5 --warmup 3 --json '$out/training-bench-demo.json' &&
    '$py' scripts/bench_training.py --device cuda --only paper --precision bf16,fp32 --steps 3 --warmup 2 \
        --json '$out/training-bench-paper.json'"
if [ "${GPU_CHECK_COMPILE:-0}" = 1 ]; then
    step training-bench-compile 150 "$py" scripts/bench_training.py --device cuda --only small-demo \
        --batch "$demo_batch" --precision bf16 --compile --steps 5 --warmup 3 \
        --json "$out/training-bench-compile.json"
fi

# ------------------------------------------------------------------ 4. the demo, trained on the GPU
# The demo corpus first (synthesised and prepared under data/ unless carried along and still valid), so
# that the time box below is the training's alone.
step demo-corpus 150 "$py" - <<'EOF'
from audio_vqvae.config import ExperimentConfig
from audio_vqvae.data import ensure_prepared

config = ExperimentConfig.from_yaml("recipes/vctk/conf/demo.yaml")
config.data.prepare_workers = 8
corpus = ensure_prepared(config.data, config.model.sample_rate, progress=False)
print(f"demo corpus: {corpus.cache_dir}")
EOF
# What is left of the budget, less a minute for startup, the last checkpoint, the export and the report.
minutes=$("$py" -c "print(f'{max(0.0, min($demo_minutes, ($budget - $(elapsed) - 60) / 60)):.2f}')")
# max_steps from the measured bf16 rate (80 % of it: the loader, validation and checkpoints take some),
# so that the cosine schedule has decayed when the time box closes instead of stopping at its peak.
max_steps=$("$py" - "$out/training-bench-demo.json" "$minutes" <<'EOF'
import json
import sys

try:
    rate = next(r["steps_per_s"] for r in json.load(open(sys.argv[1]))["results"] if r["precision"] == "bf16")
except (OSError, StopIteration, KeyError, ValueError):
    rate = 10.0  # no measurement: a guess; train.max_minutes still ends the run in time
print(max(500, int(0.8 * rate * 60 * float(sys.argv[2]))))
EOF
)
echo "demo training: ${minutes} min, max_steps ${max_steps}, batch ${demo_batch} x 4096, learning rate ${demo_lr}"

# ------------------------------------------------------------------ 2. the cuda tests, alongside the demo
# Tiny models, so they take little from the training on a data-centre GPU, and running them beside it
# leaves the demo most of the 8 minutes; their output goes to cuda-tests.log and into this log after.
tests_began=$(date +%s)
( timeout --kill-after=10 240 "$py" -m pytest -q -p no:cacheprovider -m cuda --continue-on-collection-errors \
      --junitxml "$out/cuda-tests.xml" tests/ > "$out/cuda-tests.log" 2>&1
  echo $? > "$out/cuda-tests.rc" ) &
tests_pid=$!
rm -rf "$run_dir"
if "$py" -c "import sys; sys.exit(0 if float('$minutes') >= min(1.0, float('$demo_minutes')) > 0 else 1)"; then
    step demo-training $(( ${minutes%.*} * 60 + 150 )) "$py" recipes/vctk/train.py --demo --out "$run_dir" \
        --no-progress data.batch_size="$demo_batch" data.loader_workers=0 train.learning_rate="$demo_lr" \
        train.warmup_steps=200 train.max_steps="$max_steps" train.max_minutes="$minutes" train.log_every=100 \
        train.valid_every=500 train.checkpoint_every=1000 train.keep_checkpoints=1 train.audio_clips=0
    # The run's small files and the model in float32 (7 MB) come back; its full checkpoints stay here.
    mkdir -p "$out/demo-gpu"
    cp "$run_dir"/{train.log,metrics.jsonl,config.yaml,speakers.json} "$out/demo-gpu/" 2>/dev/null
    step demo-export 60 "$py" - "$run_dir" "$out/demo-gpu/demo-gpu.pt" <<'EOF'
import sys

import torch

from audio_vqvae.pretrained import export_model
from audio_vqvae.training.trainer import latest_checkpoint

checkpoint = latest_checkpoint(sys.argv[1])
if checkpoint is None:
    sys.exit(f"{sys.argv[1]}: no checkpoint written")
payload = export_model(checkpoint, sys.argv[2], dtype=torch.float32)
print(f"exported {checkpoint} (step {payload['step']}) to {sys.argv[2]}")
EOF
else
    echo "demo training skipped: ${minutes} min left of the budget"
    printf 'demo-training\tskipped\t0\n' >> "$steps_file"
    failed=1
fi

wait "$tests_pid"
tests_rc=$(cat "$out/cuda-tests.rc" 2>/dev/null || echo 1)
echo
echo "=== cuda-tests (ran alongside the demo training; exit status $tests_rc) ==="
cat "$out/cuda-tests.log"
printf 'cuda-tests\t%s\t%s\n' "$tests_rc" "$(( $(date +%s) - tests_began ))" >> "$steps_file"
[ "$tests_rc" -eq 0 ] || failed=1

# ------------------------------------------------------------------ the report
"$py" - "$out" "$(elapsed)" "$demo_batch" "$demo_lr" "$minutes" "$max_steps" <<'EOF'
import json
import platform
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

out, seconds, batch, rate, minutes, max_steps = Path(sys.argv[1]), *sys.argv[2:]


def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


report = {"seconds": int(seconds), "python": platform.python_version(), "steps": []}
for line in (out / "steps.tsv").read_text().splitlines():
    name, status, took = line.split("\t")
    report["steps"].append({"name": name, "exit_status": status, "seconds": int(took)})
try:
    import torch

    report["torch"] = torch.__version__
    report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except ImportError:
    pass
try:
    suite = ElementTree.parse(out / "cuda-tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    report["cuda_tests"] = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    report["cuda_tests"]["failed"] = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                                      if case.find("failure") is not None or case.find("error") is not None]
except (OSError, ElementTree.ParseError, AttributeError):
    report["cuda_tests"] = None
report["generation"] = load("generation-bench.json")
report["training"] = [row for name in ("training-bench-demo.json", "training-bench-paper.json",
                                       "training-bench-compile.json")
                      for row in ((load(name) or {}).get("results") or [])]
demo = {"batch": int(batch), "segment": 4096, "learning_rate": float(rate), "max_minutes": float(minutes),
        "max_steps": int(max_steps)}
metrics = out / "demo-gpu" / "metrics.jsonl"
if metrics.exists():
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    trained = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    demo["steps"] = trained[-1]["step"] if trained else 0
    demo["samples_seen"] = demo["steps"] * int(batch) * 4096
    demo["data_seconds"] = sum(r.get("data_s", 0) for r in trained)  # waiting for batches
    demo["compute_seconds"] = sum(r.get("compute_s", 0) for r in trained)
    demo["last_valid"] = valid[-1] if valid else None
model = out / "demo-gpu" / "demo-gpu.pt"
demo["model"] = str(model) if model.exists() else None
demo["model_mb"] = round(model.stat().st_size / 2**20, 2) if model.exists() else None
report["demo"] = demo
(out / "gpu_report.json").write_text(json.dumps(report, indent=1) + "\n")
print(json.dumps({key: report[key] for key in ("seconds", "steps", "cuda_tests", "demo")}, indent=1))
EOF
echo "gpu_check: done in $(elapsed) s; report $out/gpu_report.json, log $out/gpu_check.log"
exec >&- 2>&-  # let tee write the last lines before the folder is collected
sleep 1
exit "$failed"
