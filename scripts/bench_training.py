#!/usr/bin/env python
"""Training throughput: step time and samples/s of the SMALL and paper models (forward, backward, Adam).

    python scripts/bench_training.py                      # all shapes below, on the auto-selected device
    python scripts/bench_training.py --only small-demo --steps 5
    python scripts/bench_training.py --batch-size 2       # smaller batches (the paper shape takes minutes on a CPU);
                                                          # the step time of the config's batch is extrapolated
    python scripts/bench_training.py --device cuda --precision bf16,fp32 --batch 32 --json out.json
                                                          # a GPU: both precisions, 32 segments per step

Each measurement is the median of ``--steps`` timed steps after ``--warmup`` untimed ones, with random
audio, 8 speakers, f0 rows for a model with a source excitation (the demo's), and the same step as the
trainer: bf16 autocast on CUDA (``bf16``; ``fp32`` is float32 with TF32 matmuls, as the trainer sets them
on CUDA), gradient clipping, Adam; ``--compile`` compiles the decoder as ``train.compile`` does. On a CPU
the default is fp32 (the trainer's only CPU precision); ``--precision bf16`` there measures CPU bf16
autocast (oneDNN; AMX or AVX-512 BF16 where the CPU has them), as the trainer's ``train.cpu_bf16`` does.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    import audio_vqvae  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio_vqvae.config import ExperimentConfig
from audio_vqvae.model import VQVAE
from audio_vqvae.training.distributed import select_device

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "vctk" / "conf"
# name -> (recipe config, batch size, segment length); None takes the config's own value.
SHAPES = {
    "small-demo": ("demo.yaml", None, None),     # what --demo and conf/small.yaml train: 8 x 4096
    "small-16k": ("small.yaml", 8, 16384),       # the SMALL model on one-second segments
    "paper": ("paper.yaml", None, None),         # the default recipe: 16 x 16384
}


def _pitch_rows(batch: int, length: int, sample_rate: int, device: torch.device) -> torch.Tensor:
    """Tensor[B x 3 x T] ``(phase, f0, voiced)`` rows of a voiced 120-180 Hz tone (speed does not depend on them)."""
    f0 = torch.linspace(120.0, 180.0, batch).view(batch, 1).expand(batch, length)
    phase = torch.cumsum(2 * math.pi * f0 / sample_rate, dim=1)
    return torch.stack([phase, f0, torch.ones_like(f0)], dim=1).to(device)


def bench(name: str, device: torch.device, steps: int, warmup: int, batch_override: int | None,
          bf16: bool, batch: int | None = None, compile_decoder: bool = False) -> dict:
    """Median step time of one shape; ``batch`` replaces the config's batch, ``batch_override`` caps it."""
    config_file, batch_size, segment_length = SHAPES[name]
    config = ExperimentConfig.from_yaml(RECIPES / config_file)
    batch_size = batch or batch_size or config.data.batch_size
    segment_length = segment_length or config.data.segment_length
    run_batch = min(batch_override, batch_size) if batch_override else batch_size
    config.model.num_speakers = 8
    torch.manual_seed(0)
    model = VQVAE(config.model).to(device).train()
    if compile_decoder:
        model.decoder.compile()
    if device.type == "cuda":  # as the trainer: float32 matmuls in TF32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    audio = (torch.rand(run_batch, segment_length, device=device) * 2 - 1) * 0.5
    speaker = torch.randint(0, 8, (run_batch,), device=device)
    pitch = _pitch_rows(run_batch, segment_length, config.model.sample_rate, device) if model.needs_pitch else None
    use_bf16 = bf16 and (device.type == "cpu" or torch.cuda.is_bf16_supported())
    times = []
    for index in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = model(audio, speaker, pitch=pitch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        float(out.loss.detach())  # waits for the step to finish
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= warmup:
            times.append(time.perf_counter() - started)
    step = statistics.median(times)
    samples_per_second = run_batch * segment_length / step
    return {"name": name, "precision": "bf16" if use_bf16 else "fp32", "compiled": compile_decoder,
            "batch": run_batch, "config_batch": batch_size, "segment": segment_length,
            "step_s": step, "samples_per_s": samples_per_second, "steps_per_s": 1 / step,
            "config_step_s": batch_size * segment_length / samples_per_second,
            "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SHAPES), action="append", help="shape(s) to measure (default: all)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per shape (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="measure with at most this batch and extrapolate the config's step time")
    parser.add_argument("--batch", type=int, default=None,
                        help="segments per step instead of the config's (e.g. a GPU-scale batch)")
    parser.add_argument("--device", default="auto", help="auto (cuda, then cpu), cpu, cuda, cuda:1 ...")
    parser.add_argument("--no-bf16", action="store_true", help="float32 on CUDA too (= --precision fp32)")
    parser.add_argument("--precision", default=None,
                        help="comma-separated bf16 and/or fp32, each measured (default: bf16 on CUDA, fp32 on a CPU)")
    parser.add_argument("--compile", nargs="?", const="on", default="off", choices=("off", "on", "both"),
                        help="torch.compile the decoder as train.compile does (--compile); both: eager and compiled")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    device = select_device(args.device)
    default = "fp32" if args.no_bf16 or device.type != "cuda" else "bf16"
    precisions = (args.precision or default).split(",")
    if any(p not in ("bf16", "fp32") for p in precisions):
        parser.error(f"--precision: expected bf16 and/or fp32, got {args.precision!r}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}), torch {torch.__version__}")
    print(f"{'shape':<11} {'prec':>5} {'comp':>4} {'params':>7} {'batch x segment':>16} {'step':>9} {'samples/s':>11} "
          f"{'step at config batch':>21}")
    results = []
    compiled = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    for shape, precision, compile_decoder in [(s, p, c) for s in args.only or list(SHAPES) for p in precisions
                                              for c in compiled]:
        r = bench(shape, device, args.steps, args.warmup, args.batch_size, precision == "bf16", args.batch,
                  compile_decoder)
        results.append(r)
        extrapolated = "" if r["batch"] == r["config_batch"] else \
            f"{r['config_batch']} x {r['segment']}: {r['config_step_s']:.2f} s"
        print(f"{r['name']:<11} {r['precision']:>5} {'yes' if r['compiled'] else 'no':>4} "
              f"{r['parameters_m']:>6.2f}M {r['batch']:>6} x {r['segment']:<8} {r['step_s']:>8.3f}s "
              f"{r['samples_per_s']:>11,.0f} {extrapolated:>21}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "device_name": name,
                                               "torch": torch.__version__, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
