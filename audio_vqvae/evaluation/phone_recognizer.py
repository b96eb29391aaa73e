"""Intelligibility: an independent frame phone recognizer, trained on the corpus' real training audio.

An off-the-shelf recognizer does not fit our corpora (PocketSphinx's English model, which ships in its
wheel, misses about every word of the 8 kHz demo's *originals*), so the judge is trained here, on what
the corpus has: the real audio of its training split and its phone alignments (``prepare --alignments``;
the demo corpus has eSpeak's). It shares nothing with the VQ-VAE.

* Features: 40 log-mel bands of 25 ms windows every 10 ms (:data:`FRAME_SECONDS`), each band's mean
  over the utterance removed (cepstral mean normalisation: level and channel do not matter).
* Network (:class:`PhoneRecognizer`): four 1-D convolutions of width 5 over time (receptive field
  170 ms), ReLU, then a linear layer to the phones; a frame's label is the phone at its centre.
* Training: multi-condition like the speaker classifier: every utterance clean and with white noise
  at 10, 20 and 30 dB SNR, random 1 s crops, Adam, :data:`TRAIN_STEPS` steps, fixed seed. It takes a
  few CPU-minutes and is cached in the corpus' cache folder (``judges/phones-<key>.pt``; the key
  covers the corpus' processing, split and alignments, and this recipe), so it trains once per corpus.

The judge reports the frame phone accuracy of every kind of heard item against the *source* clip's
alignment (generation keeps the source's timing): the originals' figure is the ceiling on these clips,
``heldout_accuracy`` the same on every whole held-out utterance; ``*_speech_accuracy`` leaves out the
silence frames, ``majority_baseline`` is always guessing the most frequent training phone.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import librosa
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from audio_vqvae.atomic import atomic_write
from audio_vqvae.data import PreparedCorpus
from audio_vqvae.data.alignments import SILENCE
from audio_vqvae.evaluation.material import KINDS, Judgement, Material, absent, share
from audio_vqvae.evaluation.speaker_id import NOISE_SNRS_DB, add_noise

FRAME_SECONDS, WINDOW_SECONDS, MEL_BANDS = 0.01, 0.025, 40
CHANNELS, LAYERS, WIDTH = 128, 4, 5
TRAIN_STEPS, BATCH, CROP_FRAMES, LEARNING_RATE = 1500, 32, 100, 2e-3
SEED = 0
RECIPE = f"v1 {FRAME_SECONDS} {WINDOW_SECONDS} {MEL_BANDS} {CHANNELS} {LAYERS} {WIDTH} {TRAIN_STEPS} {BATCH} " \
         f"{CROP_FRAMES} {LEARNING_RATE} {NOISE_SNRS_DB} {SEED}"


class PhoneRecognizer(nn.Module):
    """Log-mel frames to phone logits: float[B x 40 x F] -> float[B x phones x F] (same frame count); ``inputs``:
    other frame features than the 40 log-mel bands (``scripts/probe_code_phones.py`` reads code vectors)."""

    def __init__(self, phones: int, inputs: int = MEL_BANDS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for layer in range(LAYERS):
            layers += [nn.Conv1d(inputs if layer == 0 else CHANNELS, CHANNELS, WIDTH, padding=WIDTH // 2),
                       nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv1d(CHANNELS, phones, 1)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(mels))


@dataclass
class TrainedRecognizer:
    """The recognizer with its phone labels; ``seconds``: its training time (0 when read from the cache)."""

    network: PhoneRecognizer
    phones: list[str]
    seconds: float
    cached: Optional[str]

    @torch.no_grad()
    def predict(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Phone id of each 10 ms frame of float[T] audio: int64[T // hop]."""
        mels = torch.from_numpy(log_mel(audio, sample_rate))[None]
        return self.network(mels)[0].argmax(dim=0).numpy()


def hop_length(sample_rate: int) -> int:
    return round(FRAME_SECONDS * sample_rate)


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32[40 x T // hop]: log-mel bands of 25 ms windows every 10 ms, each band's mean removed."""
    hop, window = hop_length(sample_rate), round(WINDOW_SECONDS * sample_rate)
    frames = len(audio) // hop
    if frames == 0:
        return np.zeros((MEL_BANDS, 0), np.float32)
    fft = 1 << (window - 1).bit_length()
    power = librosa.feature.melspectrogram(y=np.asarray(audio, np.float32), sr=sample_rate, n_fft=fft,
                                           win_length=window, hop_length=hop, n_mels=MEL_BANDS)[:, :frames]
    logs = np.log(power + 1e-8)
    return (logs - logs.mean(axis=1, keepdims=True)).astype(np.float32)


def cache_key(corpus: PreparedCorpus) -> str:
    """What the cached recognizer depends on: the corpus' processing, split and alignments, and the recipe."""
    manifest = corpus.manifest
    parts = [manifest.get("processing_hash"), manifest.get("split_hash"), json.dumps(manifest.get("alignments"),
                                                                                     sort_keys=True), RECIPE]
    return hashlib.sha256(" | ".join(map(str, parts)).encode()).hexdigest()[:12]


def train_recognizer(corpus: PreparedCorpus, *, progress: bool = False) -> TrainedRecognizer:
    """The recognizer of ``corpus``: read from its cache folder if trained before, else trained and saved there
    (where the folder cannot be written, it is trained for this process only)."""
    path = corpus.cache_dir / "judges" / f"phones-{cache_key(corpus)}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        network = PhoneRecognizer(len(saved["phones"]))
        network.load_state_dict(saved["state"])
        return TrainedRecognizer(network.eval(), list(saved["phones"]), 0.0, str(path))
    started = time.perf_counter()
    network = fit(corpus, progress)
    recognizer = TrainedRecognizer(network.eval(), list(corpus.phones), time.perf_counter() - started, None)
    buffer = io.BytesIO()
    torch.save({"state": network.state_dict(), "phones": list(corpus.phones), "recipe": RECIPE}, buffer)
    try:
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, lambda file: file.write(buffer.getvalue()))
        recognizer.cached = str(path)
    except OSError:
        pass  # a read-only cache: the recognizer is used, not kept
    return recognizer


def fit(corpus: PreparedCorpus, progress: bool) -> PhoneRecognizer:
    """Train on every aligned training utterance, clean and at :data:`NOISE_SNRS_DB` (see the module notes)."""
    rate, hop = corpus.sample_rate, hop_length(corpus.sample_rate)
    rng = np.random.default_rng(SEED)
    torch.manual_seed(SEED)
    features, labels = [], []
    for index in corpus.split("train").indices.tolist():
        if not corpus.is_aligned(index):
            continue
        audio = corpus.samples(index)
        phones = corpus.frame_phones(index, hop, len(audio) // hop)
        for version in [audio] + [add_noise(audio, snr, rng) for snr in NOISE_SNRS_DB]:
            features.append(log_mel(version, rate))
            labels.append(phones)
    return train_network(features, labels, len(corpus.phones), rng, TRAIN_STEPS, progress)


def train_network(features: Sequence[np.ndarray], labels: Sequence[np.ndarray], phones: int,
                  rng: np.random.Generator, steps: int, progress: bool = False) -> PhoneRecognizer:
    """A :class:`PhoneRecognizer` trained for ``steps`` steps of :data:`BATCH` random crops of float32[C x F]
    ``features`` and their int64[F] ``labels`` (-1: unlabelled), Adam with a cosine schedule; the network is
    drawn from torch's global generator, the crops from ``rng``."""
    network = PhoneRecognizer(phones, features[0].shape[0])
    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in tqdm(range(steps), desc="phone recognizer", unit="step", disable=not progress, leave=False,
                  file=sys.stderr):
        mels, targets = zip(*(crop(features, labels, rng) for _ in range(BATCH)))
        logits = network(torch.from_numpy(np.stack(mels)))
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(np.stack(targets)), ignore_index=-1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return network


def crop(features: Sequence[np.ndarray], labels: Sequence[np.ndarray],
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random :data:`CROP_FRAMES` crop of a random utterance (zero-padded, label -1, where shorter)."""
    k = int(rng.integers(len(features)))
    mels, phones = features[k], labels[k]
    start = int(rng.integers(max(1, mels.shape[1] - CROP_FRAMES + 1)))
    out_mels = np.zeros((mels.shape[0], CROP_FRAMES), np.float32)
    out_phones = np.full(CROP_FRAMES, -1, np.int64)
    piece = mels[:, start:start + CROP_FRAMES]
    out_mels[:, :piece.shape[1]] = piece
    out_phones[:piece.shape[1]] = phones[start:start + CROP_FRAMES]
    return out_mels, out_phones


def frame_accuracy(recognizer: TrainedRecognizer, audio: np.ndarray, sample_rate: int,
                   wanted: np.ndarray) -> tuple[int, int, int, int]:
    """(correct, labelled, correct speech, labelled speech) frames of float[T] audio against int[F] phone ids."""
    return frame_hits(recognizer.predict(audio, sample_rate), wanted, recognizer.phones)


def frame_hits(predicted: np.ndarray, wanted: np.ndarray, phones: Sequence[str]) -> tuple[int, int, int, int]:
    """(correct, labelled, correct speech, labelled speech) frames of int[F] predicted phone ids against int[F']
    wanted ones (-1: unlabelled), over the shorter of the two; speech is every phone but silence."""
    count = min(len(predicted), len(wanted))
    predicted, wanted = predicted[:count], wanted[:count]
    silence = phones.index(SILENCE) if SILENCE in phones else -2
    labelled, speech = wanted >= 0, (wanted >= 0) & (wanted != silence)
    hits = predicted == wanted
    return int(hits[labelled].sum()), int(labelled.sum()), int(hits[speech].sum()), int(speech.sum())


def phone_judge(material: Material) -> Judgement:
    """Frame phone accuracy of every kind of heard item against its source clip's alignment."""
    corpus = material.corpus
    if not corpus.has_alignments:
        return absent("the corpus has no phone alignments (prepare it with --alignments)")
    if not any(corpus.is_aligned(i) for i in corpus.split("train").indices.tolist()):
        return absent("no training utterance has a phone alignment")
    recognizer = train_recognizer(corpus, progress=material.progress)
    rate, hop = material.sample_rate, hop_length(material.sample_rate)
    section: dict = {"available": True, "phones": len(recognizer.phones),
                     "train_seconds": round(recognizer.seconds, 1), "cache": recognizer.cached}
    verdicts = {}
    for kind in KINDS:
        totals = np.zeros(4, np.int64)
        for i in material.of_kind(kind):
            item = material.heard[i]
            wanted = corpus.frame_phones(material.clips[item.clip].utterance, hop, len(item.audio) // hop)
            counts = np.array(frame_accuracy(recognizer, item.audio, rate, wanted))
            totals += counts
            if counts[1]:
                verdicts[i] = f"phones {100 * counts[0] / counts[1]:.0f} %"
        section[f"{kind}_accuracy"] = totals[0] / totals[1] if totals[1] else None
        section[f"{kind}_speech_accuracy"] = totals[2] / totals[3] if totals[3] else None
        section[f"{kind}_frames"] = int(totals[1])
    heldout = np.zeros(4, np.int64)
    for index in corpus.split("valid").indices.tolist():
        audio = corpus.samples(index)
        heldout += np.array(frame_accuracy(recognizer, audio, rate, corpus.frame_phones(index, hop,
                                                                                        len(audio) // hop)))
    section["heldout_accuracy"] = heldout[0] / heldout[1] if heldout[1] else None
    section["heldout_speech_accuracy"] = heldout[2] / heldout[3] if heldout[3] else None
    section["heldout_frames"] = int(heldout[1])
    section["majority_baseline"] = majority_share(corpus, hop)
    return Judgement(section, verdicts)


def majority_share(corpus: PreparedCorpus, hop: int) -> Optional[float]:
    """The share of held-out frames whose phone is the most frequent phone of the training frames."""
    train = np.concatenate([corpus.frame_phones(i, hop) for i in corpus.split("train").indices.tolist()])
    heldout = np.concatenate([corpus.frame_phones(i, hop) for i in corpus.split("valid").indices.tolist()])
    train, heldout = train[train >= 0], heldout[heldout >= 0]
    if not len(train) or not len(heldout):
        return None
    return share(heldout == np.bincount(train).argmax())

