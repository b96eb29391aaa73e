"""Builders shared by the test modules (their fixtures are in conftest.py); no test module imports another.

* corpora on disk in the real VCTK / LibriSpeech / folder layouts, with generated audio and planted bad
  files: each builder returns the corpus root and the expected outcome (kept and rejected files relative
  to the corpus's base folder), so tests can assert exact sets;
* tiny WaveNets and the tiny VQ-VAE config every command runs on;
* tiny training runs: a generated corpus, the recipe's overrides and command line;
* ``run``: the ``audio-vqvae`` command line in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
import torch

from audio_vqvae.commands.main import main
from audio_vqvae.config import EncoderConfig, ModelConfig, QuantizerConfig, WaveNetConfig
from audio_vqvae.wavenet import WaveNet

# ------------------------------------------------------------------ corpora on disk


def speech_like(seconds: float, rate: int, *, seed: int, channels: int = 1, amplitude: float = 0.3,
                silence: float = 0.0) -> np.ndarray:
    """A few harmonics with a syllable-rate envelope plus a little noise: float32[T] or [T, C].

    ``silence`` seconds of near-silence (-70 dBFS noise, like a quiet room) are added either side.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110 + 40 * rng.random()
    tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.random() * 6) / k for k in range(1, 6))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    signal = amplitude * tone / 2.3 * envelope + 0.003 * rng.standard_normal(len(t))
    if silence:
        pad = 3e-4 * rng.standard_normal(int(silence * rate))
        signal = np.concatenate([pad, signal, pad])
    signal = signal.astype(np.float32)
    if channels > 1:
        signal = np.stack([signal * (1 - 0.1 * c) for c in range(channels)], axis=1)
    return signal


def write(path: Path, audio: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "FLAC" if path.suffix == ".flac" else "WAV"
    soundfile.write(str(path), audio, rate, format=fmt, subtype="PCM_16")
    return path


def plant(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def clipped(rate: int, *, fraction: float, seed: int) -> np.ndarray:
    """Speech-like audio with about ``fraction`` of its samples on the rails."""
    audio = speech_like(1.0, rate, seed=seed, amplitude=0.5)
    limit = np.quantile(np.abs(audio), 1 - fraction)
    return np.clip(audio / limit, -1.0, 1.0)


@dataclass
class Tree:
    root: Path                   # what to pass as data_root
    base: Path                   # the corpus folder reports are relative to
    kept: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)   # path -> start of the reason
    warned: set[str] = field(default_factory=set)


def vctk_092(tmp: Path) -> Tree:
    """VCTK 0.92: mic1/mic2 FLAC at 48 kHz, a speaker without transcripts, one-mic utterances, bad files."""
    base = tmp / "VCTK-Corpus-0.92"
    tree = Tree(root=tmp, base=base)
    wav = base / "wav48_silence_trimmed"
    (base / "speaker-info.txt").parent.mkdir(parents=True, exist_ok=True)
    (base / "speaker-info.txt").write_text(
        "ID  AGE  GENDER  ACCENTS  REGION COMMENTS \n"
        "p225  23  F    English    Southern  England\n"
        "p226  22  M    English    Surrey\n"
        "p315  28  M    American    Connecticut  (Text missing)\n"
        "p999  30  F    Irish    Dublin\n")
    plant(wav / "log.txt", b"trimmed with ...\n")
    seed = 0
    for utt in ("001", "002", "003", "004"):
        for mic in ("mic1", "mic2"):
            seed += 1
            write(wav / "p225" / f"p225_{utt}_{mic}.flac", speech_like(0.8, 48000, seed=seed), 48000)
        tree.kept.add(f"wav48_silence_trimmed/p225/p225_{utt}_mic1.flac")
        plant(base / "txt" / "p225" / f"p225_{utt}.txt", f"Sentence {utt} of p225.\n".encode())
    write(wav / "p225" / "p225_005_mic1.flac", clipped(48000, fraction=0.05, seed=50), 48000)
    tree.rejected["wav48_silence_trimmed/p225/p225_005_mic1.flac"] = "severely clipped"
    write(wav / "p225" / "p225_006_mic1.flac", clipped(48000, fraction=0.002, seed=51), 48000)
    tree.kept.add("wav48_silence_trimmed/p225/p225_006_mic1.flac")
    tree.warned.add("wav48_silence_trimmed/p225/p225_006_mic1.flac")
    write(wav / "p225" / "p225_extra.flac", speech_like(0.5, 48000, seed=52), 48000)
    tree.rejected["wav48_silence_trimmed/p225/p225_extra.flac"] = "unexpected file name"

    p226 = wav / "p226"
    write(p226 / "p226_001_mic1.flac", speech_like(0.8, 48000, seed=60), 48000)
    write(p226 / "p226_001_mic2.flac", speech_like(0.8, 48000, seed=61), 48000)
    tree.kept.add("wav48_silence_trimmed/p226/p226_001_mic1.flac")
    write(p226 / "p226_002_mic2.flac", speech_like(0.8, 48000, seed=62), 48000)  # mic2 only: falls back
    tree.kept.add("wav48_silence_trimmed/p226/p226_002_mic2.flac")
    write(p226 / "p226_003_mic1.flac", speech_like(0.8, 48000, seed=63, channels=2), 48000)  # stereo
    tree.kept.add("wav48_silence_trimmed/p226/p226_003_mic1.flac")
    plant(p226 / "p226_004_mic1.flac", b"")
    tree.rejected["wav48_silence_trimmed/p226/p226_004_mic1.flac"] = "empty file"
    plant(p226 / "p226_005_mic1.flac", b"this is a transcript, not audio\n")
    tree.rejected["wav48_silence_trimmed/p226/p226_005_mic1.flac"] = "cannot decode"
    write(p226 / "p226_006_mic1.flac", np.zeros(48000, np.float32), 48000)
    tree.rejected["wav48_silence_trimmed/p226/p226_006_mic1.flac"] = "silent"
    plant(p226 / "p226_007_mic1.flac", b"fLaC" + bytes(np.random.default_rng(7).integers(0, 256, 3000, np.uint8)))
    tree.rejected["wav48_silence_trimmed/p226/p226_007_mic1.flac"] = "cannot decode"
    for utt in ("001", "002", "003", "004", "005", "006", "007"):
        plant(base / "txt" / "p226" / f"p226_{utt}.txt", f"Sentence {utt} of p226.\n".encode())

    p315 = wav / "p315"  # no transcripts at all, like the real p315
    write(p315 / "p315_001_mic1.flac", speech_like(0.8, 48000, seed=70), 48000)
    write(p315 / "p315_002_mic1.flac", speech_like(0.8, 16000, seed=71), 16000)  # wrong (but usable) rate
    write(p315 / "p315_003_mic1.flac", speech_like(0.8, 8000, seed=72), 8000)    # below the target rate
    tree.kept |= {"wav48_silence_trimmed/p315/p315_001_mic1.flac", "wav48_silence_trimmed/p315/p315_002_mic1.flac"}
    tree.rejected["wav48_silence_trimmed/p315/p315_003_mic1.flac"] = "sample rate 8000 Hz is below"
    return tree


def vctk_080(tmp: Path) -> Tree:
    """VCTK 0.80: 48 kHz WAV with one second of near-silence either side of 1 s of 'speech'."""
    base = tmp / "VCTK-Corpus"
    tree = Tree(root=base, base=base)
    (base).mkdir(parents=True)
    (base / "speaker-info.txt").write_text(
        "ID  AGE  GENDER  ACCENTS  REGION\n225  23  F    English    Southern  England\n"
        "226  22  M    English    Surrey\n")
    for speaker, seed in (("p225", 100), ("p226", 200)):
        for k in range(1, 4):
            utt = f"{k:03d}"
            write(base / "wav48" / speaker / f"{speaker}_{utt}.wav",
                  speech_like(1.0, 48000, seed=seed + k, silence=1.0), 48000)
            tree.kept.add(f"wav48/{speaker}/{speaker}_{utt}.wav")
            plant(base / "txt" / speaker / f"{speaker}_{utt}.txt", f"{speaker} says {utt}.".encode())
    write(base / "wav48" / "p226" / "p226_004.wav", speech_like(0.05, 48000, seed=300), 48000)
    tree.rejected["wav48/p226/p226_004.wav"] = "too short after trimming"
    return tree


def librispeech(tmp: Path) -> Tree:
    """LibriSpeech train-clean-100 (two speakers) and dev-clean (one speaker), 16 kHz FLAC."""
    base = tmp / "LibriSpeech"
    tree = Tree(root=tmp, base=base)
    base.mkdir(parents=True)
    (base / "SPEAKERS.TXT").write_text(
        "; Some comment\n;ID  |SEX| SUBSET           |MINUTES| NAME\n"
        "19   | F | train-clean-100  | 25.19 | Kara Shallenberg\n"
        "26   | M | train-clean-100  | 25.08 | Denny Sayers\n"
        "84   | F | dev-clean        |  8.02 | Christie Nowak\n")
    layout = {("train-clean-100", "19", "198"): 4, ("train-clean-100", "26", "495"): 3,
              ("dev-clean", "84", "121123"): 2}
    seed = 400
    for (subset, speaker, chapter), count in layout.items():
        folder = base / subset / speaker / chapter
        lines = []
        for k in range(count):
            name = f"{speaker}-{chapter}-{k:04d}"
            seed += 1
            write(folder / f"{name}.flac", speech_like(0.6, 16000, seed=seed), 16000)
            tree.kept.add(f"{subset}/{speaker}/{chapter}/{name}.flac")
            if not (speaker == "26" and k == 2):  # one utterance missing from the transcript
                lines.append(f"{name} WORDS OF {name}")
        plant(folder / f"{speaker}-{chapter}.trans.txt", ("\n".join(lines) + "\n").encode())
    plant(base / "train-clean-100" / "19" / "198" / "19-198-0004.flac", bytes(range(256)) * 8)
    tree.rejected["train-clean-100/19/198/19-198-0004.flac"] = "cannot decode"
    write(base / "train-clean-100" / "19" / "198" / "19-198-extra.flac", speech_like(0.5, 16000, seed=1), 16000)
    tree.rejected["train-clean-100/19/198/19-198-extra.flac"] = "unexpected file name"
    return tree


def folders(tmp: Path, name: str = "mine") -> Tree:
    """``<root>/<speaker>/**/*.wav|flac``: mixed formats, rates and channels, stray and bad files."""
    root = tmp / name
    tree = Tree(root=root, base=root)
    write(root / "alice" / "a1.wav", speech_like(0.7, 44100, seed=500), 44100)
    write(root / "alice" / "session2" / "a2.flac", speech_like(0.7, 48000, seed=501, channels=2), 48000)
    write(root / "alice" / "a1.flac", speech_like(0.7, 48000, seed=502), 48000)  # same name as a1.wav
    tree.kept |= {"alice/a1.flac", "alice/session2/a2.flac"}
    tree.rejected["alice/a1.wav"] = "duplicate utterance"
    write(root / "bob" / "b1.wav", speech_like(0.7, 16000, seed=503), 16000)
    plant(root / "bob" / "b1.txt", b"Bob's first line.\n")
    plant(root / "bob" / "notes.md", b"not audio, ignored\n")
    tree.kept.add("bob/b1.wav")
    plant(root / "carol" / "c1.wav", b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    tree.rejected["carol/c1.wav"] = "cannot decode"
    write(root / "carol" / "c2.wav", speech_like(0.7, 22050, seed=504), 22050)
    tree.kept.add("carol/c2.wav")
    plant(root / "dave" / "empty.wav", b"")
    tree.rejected["dave/empty.wav"] = "empty file"
    write(root / "stray.wav", speech_like(0.5, 16000, seed=505), 16000)
    tree.rejected["stray.wav"] = "not inside a speaker folder"
    write(root / "erin" / "e1.wav", np.zeros((0, 1), np.float32), 16000)  # a valid header, no frames
    tree.rejected["erin/e1.wav"] = "no audio samples"
    return tree


def parallel_vctk(tmp: Path, speakers: list[str], sentences: int, *, rate: int = 16000, seconds: float = 0.6) -> Path:
    """A parallel corpus in the VCTK 0.92 layout: every speaker reads sentences 001.. with the same transcript.

    Returns the root to pass as ``data_root``.
    """
    base = tmp / "VCTK-Corpus-0.92"
    info = ["ID  AGE  GENDER  ACCENTS  REGION"] + [f"{speaker}  25  F  English  Nowhere" for speaker in speakers]
    plant(base / "speaker-info.txt", ("\n".join(info) + "\n").encode())
    for k, speaker in enumerate(speakers):
        for n in range(1, sentences + 1):
            name = f"{speaker}_{n:03d}"
            write(base / "wav48_silence_trimmed" / speaker / f"{name}_mic1.flac",
                  speech_like(seconds, rate, seed=100 * k + n), rate)
            plant(base / "txt" / speaker / f"{name}.txt", f"Sentence number {n}, read by everyone.\n".encode())
    return tmp


# ------------------------------------------------------------------ tiny models

# Odd numbers of gate pairs (5) and skip channels (9) exercise the fused kernels' padding.
TINY = WaveNetConfig(stacks=2, layers_per_stack=4, residual_channels=8, gate_channels=10, skip_channels=9,
                     conditioning_channels=6, speaker_dim=5)
EVEN = WaveNetConfig(stacks=2, layers_per_stack=5, residual_channels=16, gate_channels=24, skip_channels=16,
                     conditioning_channels=8, speaker_dim=4)


def make_net(config: WaveNetConfig = TINY, seed: int = 0, scale: float = 2.0) -> WaveNet:
    """A WaveNet for 3 speakers, code_dim 4, hop 8, with weights ``scale`` times the default init's."""
    torch.manual_seed(seed)
    net = WaveNet(config, num_speakers=3, code_dim=4, upsample_factors=(2, 4))
    with torch.no_grad():  # larger weights than the default init so that every path carries signal
        for parameter in net.parameters():
            parameter.mul_(scale)
    return net.eval()


def inputs(config: WaveNetConfig, batch: int = 3, steps: int = 300, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random conditioning Tensor[B x C x T] and speakers LongTensor[B] for a net of ``config``."""
    generator = torch.Generator().manual_seed(seed)
    conditioning = torch.randn(batch, config.conditioning_channels, steps, generator=generator)
    speaker = torch.arange(batch) % 3
    return conditioning, speaker


RATE = 8000
SPEAKERS = ["p225", "p226", "p231"]


def tiny_config(excitation_harmonics: int = 0, *, num_speakers: int = 3, **decoder) -> ModelConfig:
    """The tiny model every command runs on in the tests (8 kHz, hop 8, 16 codes of 4 dimensions, a 4-layer
    WaveNet of 8 channels), with or without a source excitation.

    Args:
        excitation_harmonics: ``decoder.excitation_harmonics`` (0: no source excitation).
        num_speakers: rows of the speaker embedding.
        decoder: other :class:`WaveNetConfig` fields that differ (``lpc_order=6``, ``layers_per_stack=3``, ...).
    """
    layout = dict(stacks=1, layers_per_stack=4, residual_channels=8, gate_channels=8, skip_channels=8,
                  conditioning_channels=4, speaker_dim=4, excitation_harmonics=excitation_harmonics)
    return ModelConfig(
        sample_rate=RATE, num_speakers=num_speakers,
        encoder=EncoderConfig(hidden_channels=8, strides=(2, 4), residual_layers=1),
        quantizer=QuantizerConfig(num_codes=16, code_dim=4, data_init=False),
        decoder=WaveNetConfig(**{**layout, **decoder}))


# ------------------------------------------------------------------ tiny training runs

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
            soundfile.write(folder / f"utt{u}.wav", wave.astype(np.float32), 16000)
    return root


def tiny_overrides(corpus_root: Path, cache_dir: Path, **train) -> list[str]:
    """Recipe overrides for the tiny model on the tiny corpus; ``train`` entries become ``train.<key>=<value>``."""
    settings = dict(max_steps=12, log_every=2, valid_every=4, valid_batches=2, audio_every=6, audio_seconds=0.05,
                    audio_clips=2, conversion_speakers=2, checkpoint_every=4, keep_checkpoints=2, warmup_steps=2,
                    learning_rate=1e-3)
    settings.update(train)
    return [*TINY_MODEL, "data.corpus=folders", f"data.data_root={corpus_root}", f"data.cache_dir={cache_dir}",
            "data.segment_length=512", "data.batch_size=2", "data.loader_workers=0", "data.prepare_workers=0",
            "data.valid_utterances_per_speaker=1",
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


# ------------------------------------------------------------------ the command line


def run(*argv) -> int:
    """``audio-vqvae ARGV...`` in this process; returns the exit status."""
    return main([str(a) for a in argv])
