"""A pretrained, corpus-independent speaker encoder as a judge: Resemblyzer's GE2E d-vectors.

The weights (``pretrained.pt``, a 3-layer LSTM over 40 mel bands at 16 kHz trained with the generalised
end-to-end loss of Wan et al. 2018 on thousands of speakers) ship inside the ``resemblyzer`` wheel, so
the judge works offline. The package itself is not imported: its audio module imports ``webrtcvad``,
whose 2.0.10 release imports ``pkg_resources``, which current setuptools no longer has. The network
(:class:`VoiceEncoder`) and its front end (:func:`encoder_mels`, :func:`embed`) are written here to
Resemblyzer's definition: volume normalised to -30 dBFS (raised only), 1.6 s partial windows at 1.3
per second, the mean of their embeddings L2-normalised. Its VAD trimming is left out: a judge must
hear generated and real clips alike.

A speaker's centroid is the normalised mean embedding of :data:`CENTROID_UTTERANCES` of their real
training utterances; an item is named as the speaker of the nearest centroid (cosine), and its speaker
similarity (SECS) is the cosine to the intended speaker's centroid and to its source's.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

import librosa
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from audio_vqvae.evaluation.material import Judgement, Material, absent, mean, share
from audio_vqvae.evaluation.speaker_id import speaker_section, verdict

ENCODER_RATE = 16000
MEL_BANDS, WINDOW, HOP = 40, 400, 160    # 25 ms windows every 10 ms at 16 kHz
PARTIAL_FRAMES = 160                     # 1.6 s per partial window
PARTIALS_PER_SECOND, MIN_COVERAGE = 1.3, 0.75
TARGET_DBFS = -30.0
CENTROID_UTTERANCES = 4


class VoiceEncoder(nn.Module):
    """Resemblyzer's network: LSTM(40 -> 256, 3 layers), linear 256 -> 256, ReLU, L2 norm."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(MEL_BANDS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """float[B x frames x 40] mel power -> float[B x 256] unit-norm embeddings."""
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp(min=1e-12)


def weights_path() -> Path:
    """``pretrained.pt`` inside the installed ``resemblyzer`` package, found without importing it.

    Raises:
        FileNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the resemblyzer package is not installed (pip install resemblyzer)")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


@lru_cache(maxsize=1)
def load_encoder() -> VoiceEncoder:
    """The pretrained encoder on the CPU, in eval mode (loaded once per process)."""
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)["model_state"]
    encoder = VoiceEncoder()
    encoder.load_state_dict({key: value for key, value in state.items() if not key.startswith("similarity")})
    return encoder.eval()


def encoder_mels(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """float[T] audio at any rate -> float32[frames x 40] mel power at 16 kHz, padded to whole partial windows.

    Returns the frames of every partial window stacked: float32[P x 160 x 40].
    """
    wav = librosa.resample(np.asarray(audio, dtype=np.float32), orig_sr=sample_rate, target_sr=ENCODER_RATE) \
        if sample_rate != ENCODER_RATE else np.asarray(audio, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    if rms > 0:
        change = TARGET_DBFS - 20 * np.log10(rms)
        if change > 0:
            wav = wav * 10 ** (change / 20)
    starts, stop = partial_starts(len(wav))
    wav = np.pad(wav, (0, max(0, stop * HOP - len(wav))))
    mel = librosa.feature.melspectrogram(y=wav, sr=ENCODER_RATE, n_fft=WINDOW, hop_length=HOP,
                                         n_mels=MEL_BANDS).astype(np.float32).T
    return np.stack([mel[start:start + PARTIAL_FRAMES] for start in starts])


def partial_starts(samples: int) -> tuple[list[int], int]:
    """First frames of the partial windows of ``samples`` samples at 16 kHz and the last frame they need
    (Resemblyzer's ``compute_partial_slices``: a last window less than 75 % covered is dropped, unless alone)."""
    frames = int(np.ceil((samples + 1) / HOP))
    step = int(round(ENCODER_RATE / PARTIALS_PER_SECOND / HOP))
    starts = list(range(0, max(1, frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts = starts[:-1]
    return starts, starts[-1] + PARTIAL_FRAMES


@torch.no_grad()
def embed(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The utterance embedding of float[T] audio: float32[256], unit norm."""
    partials = load_encoder()(torch.from_numpy(encoder_mels(audio, sample_rate))).numpy()
    average = partials.mean(axis=0)
    return average / max(float(np.linalg.norm(average)), 1e-12)


def centroids(material: Material) -> dict[str, np.ndarray]:
    """Each training speaker's unit-norm mean embedding of :data:`CENTROID_UTTERANCES` real utterances."""
    out = {}
    for name in tqdm(sorted(material.train), desc="speaker encoder", unit="speaker", disable=not material.progress,
                     leave=False, file=sys.stderr):
        own = material.train[name]
        chosen = np.unique(np.linspace(0, len(own) - 1, min(len(own), CENTROID_UTTERANCES)).round()).astype(int)
        total = np.sum([embed(material.corpus.samples(own[k]), material.sample_rate) for k in chosen], axis=0)
        out[name] = total / np.linalg.norm(total)
    return out


def encoder_judge(material: Material) -> Judgement:
    """Name every heard item by its nearest speaker centroid; :func:`speaker_section` of the names, and the
    mean SECS of each kind of item to the intended speaker's centroid and to the source's, and the share of
    conversions (and controls) closer to the intended speaker's centroid than to their source's."""
    if len(material.train) < 2:
        return absent(f"{len(material.train)} training speaker(s) known to the model; naming needs two or more")
    try:
        load_encoder()
    except (FileNotFoundError, OSError, RuntimeError, KeyError) as err:
        return absent(f"the pretrained speaker encoder did not load ({err})")
    table = centroids(material)
    names = sorted(table)
    matrix = np.stack([table[name] for name in names])
    embeddings = [embed(item.audio, material.sample_rate) for item in material.heard]
    named = {i: names[int(np.argmax(matrix @ vector))] for i, vector in enumerate(embeddings)}
    section = speaker_section(material, named, names)
    for kind in ("original", "reconstruction", "conversion", "control"):
        rows = [i for i in material.of_kind(kind) if material.heard[i].intended in table]
        section[f"{kind}_secs_intended"] = mean([float(embeddings[i] @ table[material.heard[i].intended])
                                                 for i in rows])
        if kind in ("conversion", "control"):
            sourced = [i for i in rows if material.source(material.heard[i]) in table]
            to_source = {i: float(embeddings[i] @ table[material.source(material.heard[i])]) for i in sourced}
            section[f"{kind}_secs_source"] = mean(list(to_source.values()))
            # Per item, not on average: the share that sounds more like the intended speaker than like its source.
            section[f"{kind}_closer_to_intended"] = share(
                [float(embeddings[i] @ table[material.heard[i].intended]) > to_source[i] for i in sourced])
    section["centroid_utterances"] = CENTROID_UTTERANCES
    verdicts = {}
    for i, vector in enumerate(embeddings):
        similarity = table.get(material.heard[i].intended)
        secs = f", SECS {float(vector @ similarity):.2f}" if similarity is not None else ""
        verdicts[i] = verdict(material, i, named[i]) + secs
    return Judgement(section, verdicts)
