"""``audio-vqvae bench``: every generation method in one process, on the same weights, in samples/s and
× real time.

Speed does not depend on the weights' values, so the model is a randomly initialised WaveNet of the
preset's shape unless a checkpoint is given. Run with ``audio-vqvae bench`` or
``python scripts/bench_generation.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from audio_vqvae.config import ModelConfig
from audio_vqvae.generation.engine import THREAD_PROBE_STEPS, fused_available, generate
from audio_vqvae.options import POSITIVE_INT, POSITIVE_SECONDS, NumberList, device
from audio_vqvae.wavenet import WaveNet

R9Y9_SAMPLES_PER_SECOND = 234.0  # r9y9/wavenet_vocoder, SMALL shape, batch 1, 2 threads: quoted, not measured here


@dataclass
class BenchResult:
    preset: str
    method: str
    batch: int
    samples: int  # samples generated in total (all utterances)
    seconds: float
    sample_rate: int

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds

    @property
    def real_time_factor(self) -> float:
        return self.samples_per_second / self.sample_rate


def _time(function: Callable[[], object], device: torch.device = torch.device("cpu")) -> float:
    """Seconds ``function`` takes; on CUDA until its kernels have finished, not just been queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def benchmark_preset(preset: str, decoder: WaveNet, sample_rate: int, batches: Sequence[int], seconds: float,
                     reference_seconds: float, log: Callable[[str], None] = print,
                     repeats: int = 3) -> list[BenchResult]:
    """Time the PyTorch queue reference (the engine's ``method="torch"``) and the fast engine of the decoder's
    device (fused kernels on CPU, the CUDA graph on CUDA) at each batch size.

    Each measurement is the median of ``repeats`` runs (shared machines are noisy); the log line
    gives the range.
    """
    config = decoder.config
    device = next(decoder.parameters()).device
    results = []
    for batch in batches:
        speaker = torch.zeros(batch, dtype=torch.long, device=device)
        methods = [("pytorch-queue (method torch)", reference_seconds, "torch")]
        if device.type == "cuda":
            if not (config.lpc_order or config.harmonics):  # the CUDA graph does not synthesise yet
                methods.append(("cuda graph", seconds, "graph"))
        elif fused_available():
            methods.append(("fused (numba)", seconds, "fused"))
        for name, duration, method in methods:
            steps = max(int(duration * sample_rate), 16)
            conditioning = torch.randn(batch, config.conditioning_channels, steps, device=device)
            synthesis = (_random_synthesis(batch, steps, config.lpc_order, config.harmonics, device)
                         if config.lpc_order or config.harmonics else None)
            if method != "torch":
                # Compile / load the kernels: one utterance probes two threads, then one, THREAD_PROBE_STEPS each.
                warm = slice(0, 2 * THREAD_PROBE_STEPS + 64)
                generate(decoder, conditioning[:, :, warm], speaker, seeds=range(batch), method=method,
                         synthesis=None if synthesis is None else synthesis[:, warm])
            run = lambda: generate(decoder, conditioning, speaker, seeds=range(batch), method=method,  # noqa: E731
                                   synthesis=synthesis)
            times = [_time(run, device) for _ in range(max(1, repeats))]
            result = BenchResult(preset, name, batch, batch * steps, statistics.median(times), sample_rate)
            spread = f", {batch * steps / max(times):,.0f}-{batch * steps / min(times):,.0f} over {len(times)} runs"
            log(f"  {preset:6s} {name:34s} batch {batch:3d}: {result.samples_per_second:10,.0f} samples/s "
                f"({result.real_time_factor:.3f}x real time{spread if len(times) > 1 else ''})")
            results.append(result)
    return results


def _random_synthesis(batch: int, steps: int, order: int, harmonics: int, device: torch.device) -> torch.Tensor:
    """Synthesis rows (:func:`audio_vqvae.lpc.synthesis_rows`) for a decoder that synthesises: stable prediction
    coefficients, one random filter per 64 samples (with ``order``), and a 120 Hz tone as the harmonic part
    (with ``harmonics``): (B, T, 2 + M)."""
    from audio_vqvae.lpc import per_sample, prediction_coefficients, synthesis_rows

    frames = -(-steps // 64)
    reflections = torch.tanh(torch.randn(batch, frames, order, dtype=torch.float64) * 0.5)
    coefficients = per_sample(prediction_coefficients(reflections), 64, steps) if order else None
    tone = 0.1 * torch.sin(torch.arange(steps, dtype=torch.float64) * 0.1).expand(batch, steps) if harmonics else None
    return synthesis_rows(tone, coefficients).to(device)


def format_table(results: Sequence[BenchResult]) -> str:
    """Markdown table: preset, method, batch, samples/s, × real time and ratio to the reference at that batch."""
    lines = ["| preset | method | batch | samples/s | × real time | vs PyTorch queue |",
             "|---|---|---:|---:|---:|---:|"]
    for result in results:
        reference = next((r for r in results if r.preset == result.preset and r.batch == result.batch
                          and r.method.startswith("pytorch-queue")), None)
        ratio = f"{result.samples_per_second / reference.samples_per_second:,.1f}×" if reference else "–"
        lines.append(f"| {result.preset} | {result.method} | {result.batch} | {result.samples_per_second:,.0f} | "
                     f"{result.real_time_factor:.3f} | {ratio} |")
    return "\n".join(lines)


def run_benchmark(presets: Sequence[str] = ("small", "paper"), batches: Sequence[int] = (1, 16),
                  seconds: float = 1.0, reference_seconds: float = 0.1, threads: Optional[int] = None,
                  checkpoint: Optional[str] = None, log: Callable[[str], None] = print,
                  repeats: int = 3, device: str = "cpu") -> list[BenchResult]:
    """Benchmark every method on each preset (or on one checkpoint's decoder) and log the table.

    Args:
        presets: model presets to build with random weights (ignored when ``checkpoint`` is given).
        batches: batch sizes (utterances generated at once).
        seconds: seconds of audio per utterance for the fused engine.
        reference_seconds: seconds per utterance for the slow PyTorch reference.
        threads: torch and numba threads (default: all cores).
        checkpoint: benchmark this model's decoder instead of the presets.
        repeats: runs per measurement; the table holds the median.
        device: ``"cpu"`` (reference and fused kernels) or a CUDA device (reference and CUDA graph).
    """
    import os

    import numba

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    models = []
    if checkpoint is not None:
        from audio_vqvae.checkpoint import load_model

        model = load_model(checkpoint, map_location=device)
        models.append((os.path.basename(checkpoint), model.decoder, model.config.sample_rate))
    else:
        for preset in presets:
            config = ModelConfig.preset(preset)
            torch.manual_seed(0)
            decoder = WaveNet(config.decoder, 1, config.quantizer.code_dim, config.encoder.strides[::-1]).eval()
            models.append((preset, decoder.to(device), config.sample_rate))
    where = (f"{torch.cuda.get_device_name(torch.device(device))}" if torch.device(device).type == "cuda"
             else f"{threads} thread(s)")
    log(f"generation benchmark: {where}, torch {torch.__version__}, numba {numba.__version__}, "
        f"fused engine {'available' if fused_available() else 'NOT available'}, median of {max(1, repeats)} run(s)")
    results = []
    for name, decoder, sample_rate in models:
        config = decoder.config
        log(f"{name}: {config.stacks}x{config.layers_per_stack} layers, residual {config.residual_channels}, "
            f"gate {config.gate_channels}, skip {config.skip_channels}, {sample_rate} Hz")
        with torch.no_grad():
            results += benchmark_preset(name, decoder, sample_rate, batches, seconds, reference_seconds, log, repeats)
    log("")
    log(format_table(results))
    log(f"external reference, not measured here: r9y9/wavenet_vocoder, SMALL shape, batch 1, 2 threads: "
        f"~{R9Y9_SAMPLES_PER_SECOND:.0f} samples/s ({R9Y9_SAMPLES_PER_SECOND / 16000:.3f}x real time at 16 kHz)")
    return results


def cmd_bench(args: argparse.Namespace) -> int:
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    run_benchmark(presets=presets, batches=args.batches, seconds=args.seconds, reference_seconds=args.reference_seconds,
                  threads=args.threads, checkpoint=args.checkpoint, repeats=args.repeats, device=args.device)
    return 0


def register(subparsers) -> None:
    """Add ``bench`` to the ``audio-vqvae`` parser."""
    parser = subparsers.add_parser("bench", help="generation speed of every method, in samples/s and x real time")
    parser.add_argument("--presets", default="small,paper", help="model presets, comma separated (default small,paper)")
    batches = NumberList(POSITIVE_INT)
    parser.add_argument("--batches", type=batches, default=[1, 16], help=f"batch sizes, {batches.range} (default 1,16)")
    parser.add_argument("--seconds", type=POSITIVE_SECONDS, default=1.0,
                        help=f"audio per utterance for the fused engine, {POSITIVE_SECONDS.range} (default 1)")
    parser.add_argument("--reference-seconds", type=POSITIVE_SECONDS, default=0.1,
                        help=f"audio per utterance for the slow PyTorch reference, {POSITIVE_SECONDS.range} "
                             "(default 0.1)")
    parser.add_argument("--threads", type=POSITIVE_INT, help=f"threads, {POSITIVE_INT.range} (default: all cores)")
    parser.add_argument("--checkpoint", help="benchmark this checkpoint's decoder instead of the presets")
    parser.add_argument("--repeats", type=POSITIVE_INT, default=3,
                        help=f"runs per measurement, {POSITIVE_INT.range}; the table holds the median (default 3)")
    parser.add_argument("--device", type=device, default="cpu",
                        help="where to generate: cpu (the default: the PyTorch reference and the fused kernels), "
                             "cuda or cuda:<index> (the PyTorch reference and the CUDA graph), or auto")
    parser.set_defaults(func=cmd_bench)
