"""What every judge of an evaluation hears: the held-out clips and the audio made from them.

:func:`~audio_vqvae.evaluation.evaluate.evaluate` builds one :class:`Material` and hands it to each
measurement module in turn (:data:`~audio_vqvae.evaluation.evaluate.JUDGES`). A judge returns a
:class:`Judgement`: its section of the report and a short verdict per heard item, which the listening
page prints under each player. Kinds of item, in the order the page shows them:

* ``original``: the real held-out clip (a judge's figures on these are its ceiling);
* ``reconstruction``: generated from the clip's codes with its own speaker;
* ``conversion``: generated from the clip's codes with another training speaker;
* ``control``: the real clip with only its pitch moved to a conversion's target speaker
  (:mod:`~audio_vqvae.evaluation.controls`): a judge that names these as the target hears f0, not the voice.

Example:
    >>> share([True, False, True, True])
    0.75
    >>> share([]) is None
    True
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from audio_vqvae.data import PreparedCorpus
from audio_vqvae.evaluation.metrics import track_pitch_pyin
from audio_vqvae.pitch import PitchTrack

KINDS = ("original", "reconstruction", "conversion", "control")


@dataclass
class Clip:
    """The start of one held-out utterance, as generated and measured."""

    utterance: int       # index into corpus.utterances
    name: str
    speaker: str
    speaker_id: int      # the model's id
    sentence: str        # normalised transcript ("" when unknown)
    length: int          # samples of the whole utterance
    audio: np.ndarray    # float32[L], L a multiple of the hop


@dataclass
class Heard:
    """One piece of audio a judge hears.

    Attributes:
        kind: one of :data:`KINDS`.
        clip: index into :attr:`Material.clips` (the clip it was made from).
        intended: the speaker it should sound like (the clip's own, or the conversion's target).
        audio: float32[T] at the corpus rate.
    """

    kind: str
    clip: int
    intended: str
    audio: np.ndarray


@dataclass
class Material:
    """Everything the judges need.

    Attributes:
        corpus: the prepared corpus (sample rate, training audio, alignments).
        clips: the held-out clips.
        heard: every item judged, originals first (one per clip), then reconstructions (one per clip),
            conversions and controls (one control per conversion, in the same order).
        train: the training utterances (indices into ``corpus.utterances``) of each training speaker
            the model knows, by name: the speakers a judge names.
        model: the model evaluated, for a measure that needs more than its audio (None in a judge's tests).
        sentences: the normalised transcript of every utterance of the corpus ("" when unknown).
        heldout, train_all: the held-out and training utterances of every speaker of the corpus, by name.
        seconds: the longest clip asked for.
        classifier_utterances: training utterances per speaker a trained judge may learn from.
        progress: progress bars on stderr.
    """

    corpus: PreparedCorpus
    clips: list[Clip]
    heard: list[Heard]
    train: dict[str, list[int]]
    model: Optional[Any] = None
    sentences: list[str] = field(default_factory=list)
    heldout: dict[str, list[int]] = field(default_factory=dict)
    train_all: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 2.0
    classifier_utterances: int = 24
    progress: bool = False

    @cached_property
    def pitch_tracks(self) -> list[PitchTrack]:
        """pYIN pitch track of every clip (voicing and median f0), computed once for the judges that need it."""
        return [track_pitch_pyin(clip.audio, self.sample_rate) for clip in self.clips]

    @property
    def sample_rate(self) -> int:
        return self.corpus.sample_rate

    def source(self, item: Heard) -> str:
        """The speaker of the clip an item was made from."""
        return self.clips[item.clip].speaker

    def of_kind(self, kind: str) -> list[int]:
        """Indices into :attr:`heard` of the items of one kind."""
        return [i for i, item in enumerate(self.heard) if item.kind == kind]


@dataclass
class Judgement:
    """What a judge returns: its report section and a short verdict per item (index into ``heard``)."""

    section: dict
    verdicts: dict[int, str] = field(default_factory=dict)


def absent(reason: str) -> Judgement:
    """The judgement of a judge that could not measure: ``{"available": False, "reason": ...}``."""
    return Judgement({"available": False, "reason": reason})


def share(flags: Sequence[bool]) -> Optional[float]:
    """The share of true flags; None for none."""
    return float(np.mean(flags)) if len(flags) else None


def mean(values: Sequence[float]) -> Optional[float]:
    return float(np.mean(values)) if len(values) else None


def median(values: Sequence[float]) -> Optional[float]:
    return float(np.median(values)) if len(values) else None


def json_safe(value: Any) -> Any:
    """NaN and infinities become None (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall time of the block in ``timings[name]`` (seconds, rounded to 10 ms)."""
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 2)
