"""audio-vqvae: a VQ-VAE with a WaveNet decoder for discrete speech representations.

Example:
    >>> import torch, audio_vqvae
    >>> config = audio_vqvae.ModelConfig.preset("small")
    >>> model = audio_vqvae.VQVAE(config).eval()
    >>> model.encode(torch.zeros(1, 640)).shape
    torch.Size([1, 10])
"""

__version__ = "0.1.0"

from audio_vqvae.checkpoint import load_checkpoint, load_model, save_checkpoint
from audio_vqvae.config import (
                                DataConfig,
                                EncoderConfig,
                                ExperimentConfig,
                                ModelConfig,
                                QuantizerConfig,
                                TrainConfig,
                                WaveNetConfig,
                                apply_overrides,
)
from audio_vqvae.model import VQVAE, VQVAEOutput
from audio_vqvae.quantizer import QuantizerOutput, VectorQuantizer

__all__ = [
    "VQVAE", "VQVAEOutput", "VectorQuantizer", "QuantizerOutput", "ModelConfig", "EncoderConfig",
    "QuantizerConfig", "WaveNetConfig", "DataConfig", "TrainConfig", "ExperimentConfig", "apply_overrides",
    "save_checkpoint", "load_model", "load_checkpoint",
]
