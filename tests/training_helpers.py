"""Shared by the training tests: a tiny generated corpus and a tiny model, so a step takes milliseconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# 2 x 4 WaveNet layers of 8 channels, hop 4, 16 codes: ~10 k parameters.
TINY_MODEL = [
    "encoder.strides=[2,2]", "encoder.hidden_channels=16", "quantizer.num_codes=16", "quantizer.code_dim=8",
    "quantizer.dead_code_steps=5", "decoder.stacks=1", "decoder.layers_per_stack=4", "decoder.residual_channels=8",
    "decoder.gate_channels=8", "decoder.skip_channels=8", "decoder.conditioning_channels=8", "decoder.speaker_dim=4",
]


def make_tiny_corpus(root: Path, speakers: int = 4, utterances: int = 4, seconds: float = 0.4) -> Path:
    """A ``folders`` corpus of gliding tones, one pitch range per speaker: ``root/spk<i>/utt<j>.wav``."""
    rng = np.random.default_rng(0)
    time = np.arange(int(16000 * seconds)) / 16000
    for s in range(speakers):
        for u in range(utterances):
            f0 = 120 + 40 * s + 10 * u
            wave = 0.3 * np.sin(2 * np.pi * f0 * time * (1 + 0.1 * np.sin(2 * np.pi * 3 * time)))
            wave += 0.01 * rng.standard_normal(len(time))
            folder = root / f"spk{s}"
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"utt{u}.wav", wave.astype(np.float32), 16000)
    return root


def tiny_overrides(corpus_root: Path, cache_dir: Path, **train) -> list[str]:
    """Recipe overrides for the tiny model on the tiny corpus; ``train`` entries become ``train.<key>=<value>``."""
    settings = dict(max_steps=12, log_every=2, valid_every=4, valid_batches=2, audio_every=6, audio_seconds=0.05,
                    audio_clips=2, conversion_speakers=2, checkpoint_every=4, keep_checkpoints=2, warmup_steps=2,
                    learning_rate=1e-3)
    settings.update(train)
    return [*TINY_MODEL, "data.corpus=folders", f"data.data_root={corpus_root}", f"data.cache_dir={cache_dir}",
            "data.segment_length=512", "data.batch_size=2", "data.num_workers=0", "data.valid_utterances_per_speaker=1",
            *(f"train.{key}={value}" for key, value in settings.items())]


def recipe_command(out: Path, overrides: list[str], *extra: str, recipe: str = "vctk",
                   config: str = "small") -> list[str]:
    """The recipe's command line; ``config=None`` passes no ``--config``."""
    chosen = ["--config", str(REPO / "recipes" / recipe / "conf" / f"{config}.yaml")] if config else []
    return [PYTHON, str(REPO / "recipes" / recipe / "train.py"), *chosen, "--out", str(out), "--no-progress",
            *extra, *overrides]


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # A tiny model gains nothing from two threads, and spinning OpenMP threads crawl when the other
    # core is busy (another test process, a parallel build).
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_recipe(out: Path, overrides: list[str], *extra: str, recipe: str = "vctk", config: str = "small",
               timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(recipe_command(out, overrides, *extra, recipe=recipe, config=config),
                          capture_output=True, text=True,
                          env=subprocess_env(), timeout=timeout, cwd=str(REPO))
