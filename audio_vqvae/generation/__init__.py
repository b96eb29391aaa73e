"""Fast autoregressive generation: fused CPU kernels, the PyTorch path and its CUDA graph, behind one
:func:`generate`. The commands that use it (``reconstruct``, ``convert``, ``bench``, ...) are in
:mod:`audio_vqvae.commands`."""

from audio_vqvae.generation.engine import (
                                           FusedState,
                                           draw_uniforms,
                                           fused_available,
                                           generate,
                                           sample_inverse_cdf,
                                           seeds_from,
)

__all__ = ["generate", "FusedState", "draw_uniforms", "fused_available", "sample_inverse_cdf", "seeds_from"]
