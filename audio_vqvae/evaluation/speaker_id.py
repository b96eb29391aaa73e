"""An independent speaker classifier, to tell whose voice a conversion has.

It shares nothing with the VQ-VAE: a signal is described by the mean and standard deviation over its
frames of the mel-cepstrum ``c1..c24`` (:func:`~audio_vqvae.evaluation.metrics.mel_cepstrum`; ``c0``,
the level, is left out), the features are standardised with the training set's statistics, and a
multinomial logistic regression with a small L2 penalty is fitted by L-BFGS (float64, full batch,
deterministic). Train it on real audio cut into windows as long as the clips it will classify.

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

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np
import torch

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
