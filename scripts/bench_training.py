#!/usr/bin/env python
"""Training throughput: step time and samples/s of the SMALL and paper models (forward, backward, Adam).

    python scripts/bench_training.py                      # all shapes below, on the auto-selected device
    python scripts/bench_training.py --only small-demo --steps 5
    python scripts/bench_training.py --batch-size 2       # smaller batches (the paper shape takes minutes on a CPU);
                                                          # the step time of the config's batch is extrapolated

Each measurement is the median of ``--steps`` timed steps after ``--warmup`` untimed ones, with random
audio, 8 speakers and the same step as the trainer (bf16 autocast on CUDA, gradient clipping).
"""

from __future__ import annotations

import argparse
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


def bench(name: str, device: torch.device, steps: int, warmup: int, batch_override: int | None,
          bf16: bool) -> dict:
    config_file, batch_size, segment_length = SHAPES[name]
    config = ExperimentConfig.from_yaml(RECIPES / config_file)
    batch_size = batch_size or config.data.batch_size
    segment_length = segment_length or config.data.segment_length
    run_batch = min(batch_override, batch_size) if batch_override else batch_size
    config.model.num_speakers = 8
    torch.manual_seed(0)
    model = VQVAE(config.model).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    audio = (torch.rand(run_batch, segment_length, device=device) * 2 - 1) * 0.5
    speaker = torch.randint(0, 8, (run_batch,), device=device)
    use_bf16 = bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()
    times = []
    for index in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
            out = model(audio, speaker)
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
    return {"name": name, "batch": run_batch, "config_batch": batch_size, "segment": segment_length,
            "step_s": step, "samples_per_s": samples_per_second,
            "config_step_s": batch_size * segment_length / samples_per_second,
            "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SHAPES), action="append", help="shape(s) to measure (default: all)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per shape (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="measure with at most this batch and extrapolate the config's step time")
    parser.add_argument("--device", default="auto", help="auto (cuda, then cpu), cpu, cuda, cuda:1 ...")
    parser.add_argument("--no-bf16", action="store_true", help="float32 on CUDA too")
    args = parser.parse_args(argv)
    device = select_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}), torch {torch.__version__}")
    print(f"{'shape':<11} {'params':>7} {'batch x segment':>16} {'step':>9} {'samples/s':>11} "
          f"{'step at config batch':>21}")
    for shape in args.only or list(SHAPES):
        r = bench(shape, device, args.steps, args.warmup, args.batch_size, not args.no_bf16)
        extrapolated = "" if r["batch"] == r["config_batch"] else \
            f"{r['config_batch']} x {r['segment']}: {r['config_step_s']:.2f} s"
        print(f"{r['name']:<11} {r['parameters_m']:>6.2f}M {r['batch']:>6} x {r['segment']:<8} {r['step_s']:>8.3f}s "
              f"{r['samples_per_s']:>11,.0f} {extrapolated:>21}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
