"""What a kernel call takes besides the weights: its options (:class:`KernelOptions`) and the arrays of
the steps it runs (:class:`Chunk`). Named tuples, which numba passes to a kernel as their fields."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class KernelOptions(NamedTuple):
    """How the kernels draw and what they feed and keep.

    Attributes:
        inv_temperature: 1 / softmax temperature (0.0 when greedy).
        greedy: take the first argmax instead of drawing.
        use_teacher: feed ``Chunk.teacher`` (``Chunk.teacher_signal`` for a decoder that synthesises)
            instead of the generated samples.
        save_logits: write every step's logits to ``Chunk.logits``.
    """

    inv_temperature: float
    greedy: bool
    use_teacher: bool
    save_logits: bool


class Chunk(NamedTuple):
    """The per-utterance arrays of the steps one kernel call runs, C-contiguous, (B, T', ...) for a batch
    (the utterance axis dropped for the one-utterance kernels: :meth:`utterance`).

    Attributes:
        position: steps generated before this chunk.
        uniforms: float64 (B, T'): the uniform number each step draws with.
        teacher: int64 (B, T'): the classes fed with ``use_teacher`` (zeros otherwise, or with synthesis).
        teacher_signal: float32 (B, T'): the signal fed with ``use_teacher`` and synthesis (zeros otherwise).
        synthesis_rows: float64 (B, T', 2 + M): ``(h[t], g[t], c_1..c_M)`` per step
            (:func:`audio_vqvae.lpc.synthesis_rows`); (B, 0, 2) without synthesis.
        samples: int64 (B, T'), written: the class drawn at every step.
        logits: float32 (B, T', Q), written with ``save_logits``; (B, 0, Q) otherwise.
        signal: float32 (B, T'), written with synthesis: the synthesised sample ``p + e``; (B, 0) otherwise.
    """

    position: int
    uniforms: np.ndarray
    teacher: np.ndarray
    teacher_signal: np.ndarray
    synthesis_rows: np.ndarray
    samples: np.ndarray
    logits: np.ndarray
    signal: np.ndarray

    def utterance(self, index: int) -> "Chunk":
        """The arrays of utterance ``index`` (views, written through)."""
        return Chunk(self.position, *(array[index] for array in self[1:]))
