"""The source excitation as a decoder part (``decoder.excitation_harmonics``): the f0's harmonics added to the
WaveNet's conditioning.

:func:`audio_vqvae.pitch.excitation` turns ``(phase, f0, voiced)`` rows into ``v cos kφ``, ``v sin kφ``, the
voicing and the log-f0 at the sample rate; a 1x1 projection without bias adds them to the upsampled codes, so
every layer's conditioning projection sees them at no extra per-layer cost (why: ``audio_vqvae.pitch``).

Example:
    >>> import torch
    >>> from audio_vqvae.parts import PartInputs
    >>> part = SourceExcitation(harmonics=4, conditioning_channels=6)
    >>> pitch = torch.stack([torch.zeros(1, 64), torch.full((1, 64), 100.0), torch.ones(1, 64)], dim=1)
    >>> inputs = PartInputs(torch.zeros(1, 8, 1), torch.zeros(1, 4), pitch, hop=64, sample_rate=8000, length=64)
    >>> part.condition(torch.zeros(1, 6, 64), inputs).shape          # (B, C, T)
    torch.Size([1, 6, 64])
"""

from __future__ import annotations

import torch
from torch import nn

from audio_vqvae.parts import DecoderPart, PartInputs
from audio_vqvae.pitch import excitation


class SourceExcitation(DecoderPart, nn.Conv1d):
    """A conditioning part: the excitation's ``2K + 2`` channels projected onto the conditioning's C.

    Args:
        harmonics: K, the harmonics of f0 it is given.
        conditioning_channels: C.
    """

    needs_pitch = True

    def __init__(self, harmonics: int, conditioning_channels: int):
        nn.Conv1d.__init__(self, 2 * harmonics + 2, conditioning_channels, kernel_size=1, bias=False)
        self.harmonics = harmonics

    def condition(self, upsampled: torch.Tensor, inputs: PartInputs) -> torch.Tensor:
        source = excitation(inputs.pitch.to(upsampled), self.harmonics, inputs.sample_rate)  # its dtype and device
        return upsampled + self(source)
