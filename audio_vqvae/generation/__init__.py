"""Fast autoregressive generation (fused CPU kernels and the PyTorch path), the generation benchmark
and the ``reconstruct``/``convert``/``encode``/``decode``/``speakers``/``bench`` commands."""

from audio_vqvae.generation.engine import (
                                           FusedState,
                                           draw_uniforms,
                                           fused_available,
                                           generate,
                                           sample_inverse_cdf,
                                           seeds_from,
)

__all__ = ["generate", "FusedState", "draw_uniforms", "fused_available", "sample_inverse_cdf", "seeds_from"]
