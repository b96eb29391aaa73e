"""An independent speaker classifier, to tell whose voice a conversion has, and the two judges built on it.

It shares nothing with the VQ-VAE: a signal is described by the mean and standard deviation over its
frames of the mel-cepstrum ``c1..c24`` (:func:`~audio_vqvae.evaluation.metrics.mel_cepstrum`; ``c0``,
the level, is left out), the features are standardised with the training set's statistics, and a
multinomial logistic regression with a small L2 penalty is fitted by L-BFGS (float64, full batch,
deterministic). Train it on real audio cut into windows as long as the clips it will classify.

Two judges of an evaluation use it: :func:`plain_classifier`, trained on clean audio only (it names
real clips with white noise at 20 dB SNR as one or two speakers: noise-sensitive, kept so that the
history stays comparable), and :func:`multicondition_classifier`, trained on every window clean, at
10, 20 and 30 dB SNR (:data:`NOISE_SNRS_DB`) and with its pitch moved 3 semitones down and up
(:data:`PITCH_SHIFTS`; without these it names 19 % of the demo's f0-only controls as their target, above
chance). Both report :func:`speaker_section`.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> def voice(f0):  # a harmonic tone and a little noise
    ...     t = np.arange(8000) / 16000
    ...     return sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)) * 0.1 + 0.01 * rng.standard_normal(8000)
    >>> features = np.stack([signal_features(voice(f0), 16000) for f0 in (100, 105, 220, 230)])
    >>> model = SpeakerClassifier.fit(features, ["low", "low", "high", "high"])
    >>> model.predict(np.stack([signal_features(voice(f0), 16000) for f0 in (102, 225)]))
    ['low', 'high']
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Hashable, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from audio_vqvae.data import PreparedCorpus
from audio_vqvae.evaluation.controls import shift_pitch
from audio_vqvae.evaluation.material import Judgement, Material, absent, share
from audio_vqvae.evaluation.metrics import analysis_frames, mel_cepstrum


def cepstrum_statistics(cepstrum: np.ndarray) -> np.ndarray:
    """float[2 * order]: mean and standard deviation over frames of ``c1..c_order`` of float[(order + 1) x N]."""
    coefficients = cepstrum[1:]
    return np.concatenate([coefficients.mean(axis=1), coefficients.std(axis=1)])


def signal_features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Classifier features of one float[T] signal."""
    return cepstrum_statistics(mel_cepstrum(audio, sample_rate))


def window_features(audio: np.ndarray, sample_rate: int, window: int) -> np.ndarray:
    """Features of half-overlapping windows of ``window`` samples of float[T] audio -> float[N x F].

    The cepstrum is computed once for the whole signal; a signal shorter than a window gives one row.
    """
    cepstrum = mel_cepstrum(audio, sample_rate)
    frames = max(1, window // analysis_frames(sample_rate)[1])
    starts = range(0, max(1, cepstrum.shape[1] - frames + 1), max(1, frames // 2))
    return np.stack([cepstrum_statistics(cepstrum[:, start:start + frames]) for start in starts])


@dataclass
class SpeakerClassifier:
    """Standardisation and multinomial logistic regression over :func:`signal_features`.

    Attributes:
        classes: the labels, in the order of the logits.
        mean, scale: float[F] standardisation of the features.
        weight: float[F x C]; bias: float[C].
    """

    classes: list
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, labels: Sequence[Hashable], *, l2: float = 1e-3,
            max_iterations: int = 500) -> "SpeakerClassifier":
        """Fit on float[N x F] features with one label per row (at least two distinct labels)."""
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError(f"a classifier needs at least two classes, got {classes}")
        index = {label: i for i, label in enumerate(classes)}
        mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-8
        inputs = torch.from_numpy((features - mean) / scale).double()
        targets = torch.tensor([index[label] for label in labels])
        weight = torch.zeros(features.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iterations, tolerance_grad=1e-9,
                                      tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(inputs @ weight + bias, targets) + l2 * (weight ** 2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return cls(classes=classes, mean=mean, scale=scale, weight=weight.detach().numpy(), bias=bias.detach().numpy())

    def logits(self, features: np.ndarray) -> np.ndarray:
        """float[N x C] class scores of float[N x F] features."""
        return ((features - self.mean) / self.scale) @ self.weight + self.bias

    def predict(self, features: np.ndarray) -> list:
        """The most likely label of each row of float[N x F] features."""
        return [self.classes[i] for i in self.logits(features).argmax(axis=1)]


# ------------------------------------------------------------------ the judges


NOISE_SNRS_DB = (10.0, 20.0, 30.0)  # the multi-condition copies of every training utterance
PITCH_SHIFTS = (-3.0, 3.0)  # semitones: the multi-condition copies with their pitch moved (PSOLA)
NOISE_SEED = 1234  # the training noise: one judge for every evaluation seed


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """float32[T] audio plus white Gaussian noise at ``snr_db`` below its mean power."""
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    scale = math.sqrt(power / 10 ** (snr_db / 10))
    return (audio + scale * rng.standard_normal(len(audio))).astype(np.float32)


def train_classifier(corpus: PreparedCorpus, train: dict[str, list[int]], window: int, utterances: int, *,
                     snrs_db: Sequence[float] = (), semitones: Sequence[float] = (),
                     progress: bool = False) -> SpeakerClassifier:
    """The classifier trained on real training audio of ``train`` (name -> utterance indices), cut into windows
    of ``window`` samples; ``utterances`` per speaker, spread over each list. With ``snrs_db`` every utterance
    is also used with white noise at each of those SNRs (multi-condition training, the standard recipe of
    speaker recognition), so that a noise floor is not mistaken for a voice; with ``semitones``, also with its
    pitch moved by each of those (PSOLA, :func:`~audio_vqvae.evaluation.controls.shift_pitch`), so that f0
    alone does not name a speaker."""
    rng = np.random.default_rng(NOISE_SEED)
    rate = corpus.sample_rate
    features, labels = [], []
    for name in tqdm(sorted(train), desc="speaker classifier", unit="speaker", disable=not progress, leave=False,
                     file=sys.stderr):
        own = train[name]
        chosen = np.unique(np.linspace(0, len(own) - 1, min(len(own), utterances)).round()).astype(int)
        for k in chosen:
            audio = corpus.samples(own[k])
            versions = [audio] + [shift_pitch(audio, rate, 2 ** (shift / 12)) for shift in semitones]
            for version in versions + [add_noise(audio, snr, rng) for snr in snrs_db]:
                rows = window_features(version, rate, window)
                features.append(rows)
                labels += [name] * len(rows)
    return SpeakerClassifier.fit(np.concatenate(features), labels)


def classifier_judge(material: Material, *, snrs_db: Sequence[float] = (),
                     semitones: Sequence[float] = ()) -> Judgement:
    """Name the speaker of every heard item with a classifier trained on real training audio (plain, or
    multi-condition with ``snrs_db`` and ``semitones``: :func:`train_classifier`); :func:`speaker_section`."""
    if len(material.train) < 2:
        return absent(f"{len(material.train)} training speaker(s) known to the model; a speaker classifier "
                      "needs two or more")
    window = max(len(clip.audio) for clip in material.clips)
    classifier = train_classifier(material.corpus, material.train, window, material.classifier_utterances,
                                  snrs_db=snrs_db, semitones=semitones, progress=material.progress)
    rate = material.sample_rate
    named = classifier.predict(np.stack([signal_features(item.audio, rate) for item in material.heard]))
    section = speaker_section(material, dict(enumerate(named)), sorted(material.train))
    section["noise_snrs_db"], section["pitch_shifts_semitones"] = list(snrs_db), list(semitones)
    return Judgement(section, {i: verdict(material, i, name) for i, name in enumerate(named)})


def plain_classifier(material: Material) -> Judgement:
    """The classifier trained on clean audio only (noise-sensitive: kept so that the history stays comparable)."""
    return classifier_judge(material)


def multicondition_classifier(material: Material) -> Judgement:
    """The classifier trained on clean audio, on copies at :data:`NOISE_SNRS_DB` and on copies with their pitch
    moved by :data:`PITCH_SHIFTS` semitones."""
    return classifier_judge(material, snrs_db=NOISE_SNRS_DB, semitones=PITCH_SHIFTS)


def verdict(material: Material, index: int, name: str) -> str:
    """``d03 ✓`` where an item is named as intended, ``d05 (source)`` where a made item keeps its source."""
    item = material.heard[index]
    if name == item.intended:
        return f"{name} ✓"
    return f"{name} (source)" if name == material.source(item) and item.kind != "original" else name


def speaker_section(material: Material, named: dict[int, str], classes: Sequence[str]) -> dict:
    """The figures every speaker judge reports, from the name it gives each heard item (index -> name).

    Only items whose wanted speaker is one of ``classes`` count (a held-out speaker the judge has no
    class for cannot be named): ``real_heldout_accuracy`` is the judge's ceiling; ``control_*`` are the
    f0-only controls, named as the conversion's target (the judge hears f0) or as the source (it hears
    the voice); ``generated_*`` say whether generated clips (reconstructions and conversions) spread over
    the speakers or all go to one.
    """
    known = set(classes)
    heard = material.heard

    def rate(kind: str, wanted) -> tuple[Optional[float], int]:
        pairs = [(named[i], wanted(heard[i])) for i in material.of_kind(kind) if wanted(heard[i]) in known]
        return share([name == want for name, want in pairs]), len(pairs)

    real, real_clips = rate("original", lambda item: item.intended)
    reconstruction, _ = rate("reconstruction", lambda item: item.intended)
    target, conversions = rate("conversion", lambda item: item.intended)
    source, _ = rate("conversion", material.source)
    control_target, controls = rate("control", lambda item: item.intended)
    control_source, _ = rate("control", material.source)
    generated = Counter(named[i] for i in material.of_kind("reconstruction") + material.of_kind("conversion"))
    top_name, top_count = generated.most_common(1)[0] if generated else (None, 0)
    return {
        "available": True,
        "classes": len(classes),
        "chance": 1.0 / len(classes),
        "real_heldout_accuracy": real,
        "real_heldout_clips": real_clips,
        "reconstruction_accuracy": reconstruction,
        "conversion_target_accuracy": target,
        "conversion_source_confusion": source,
        "conversions": conversions,
        "control_target_accuracy": control_target,
        "control_source_accuracy": control_source,
        "controls": controls,
        "generated_top_prediction": top_name,
        "generated_top_share": top_count / sum(generated.values()) if generated else None,
        "generated_speakers_named": len(generated),
    }
