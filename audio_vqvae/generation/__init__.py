"""Fast autoregressive generation: fused CPU kernels, the PyTorch path and its CUDA graph, behind one
:func:`generate`; many utterances in batches with :func:`decode_rows`; the commands' jobs
(:mod:`~audio_vqvae.generation.jobs`) and codes files (:mod:`~audio_vqvae.generation.codes_file`). The
commands that use it (``reconstruct``, ``convert``, ``bench``, ...) are in :mod:`audio_vqvae.commands`."""

from audio_vqvae.generation.batched import DecodeRow, decode_rows
from audio_vqvae.generation.engine import (
                                           FusedState,
                                           draw_uniforms,
                                           fused_available,
                                           generate,
                                           sample_inverse_cdf,
                                           seeds_from,
)

__all__ = ["generate", "DecodeRow", "decode_rows", "FusedState", "draw_uniforms", "fused_available",
           "sample_inverse_cdf", "seeds_from"]
