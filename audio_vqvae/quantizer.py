"""Vector quantisation with a straight-through estimator (van den Oord et al. 2017, "Neural Discrete
Representation Learning", Sec. 3.1 and Appendix A.1), plus time-jitter (Chorowski et al. 2019).

The model builds its quantizer with :func:`make_quantizer`, which picks the class that
``quantizer.kind`` names in :data:`QUANTIZERS`; ``@register_quantizer("name")`` adds one
(docs/extending.md, "Adding a quantizer").

Example:
    >>> import torch
    >>> vq = VectorQuantizer(num_codes=32, code_dim=8)
    >>> out = vq(torch.randn(2, 8, 50))
    >>> out.quantized.shape, out.codes.shape, vq.codebook.shape
    (torch.Size([2, 8, 50]), torch.Size([2, 50]), torch.Size([32, 8]))
    >>> type(make_quantizer(QuantizerConfig(kind="vq", num_codes=32, code_dim=8))).__name__
    'VectorQuantizer'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from audio_vqvae.config import QuantizerConfig


@dataclass
class QuantizerOutput:
    """What :class:`VectorQuantizer` returns.

    Attributes:
        quantized: Tensor[B x D x T], the nearest codes with the straight-through gradient to the input.
        codes: LongTensor[B x T], indices into the codebook.
        loss: the quantizer's contribution to the training loss (codebook + β·commitment for
            ``update="grad"``, β·commitment for ``"ema"``).
        commitment_loss: ‖z_e − sg[e]‖² (mean over elements), before the β factor.
        codebook_loss: ‖sg[z_e] − e‖² (mean over elements); zero in EMA mode.
        perplexity: exp of the entropy of code usage in this batch (all ranks in training).
        codes_used: number of distinct codes used in this batch (all ranks in training).
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    perplexity: torch.Tensor
    codes_used: torch.Tensor


QUANTIZERS: dict[str, type[nn.Module]] = {}
"""``quantizer.kind`` -> quantizer class, filled by :func:`register_quantizer`."""

Q = TypeVar("Q", bound=type[nn.Module])


def register_quantizer(kind: str) -> Callable[[Q], Q]:
    """Class decorator: ``quantizer.kind: <kind>`` builds this class with its ``from_config(QuantizerConfig)``.

    A quantizer maps Tensor[B x D x T] latents (``D = code_dim``) to codes in ``[0, num_codes)`` and provides
    ``forward(latents) -> QuantizerOutput`` (training and teacher-forced passes), ``encode(latents) ->
    LongTensor[B x T]`` (never changes a buffer) and ``lookup(codes) -> Tensor[B x D x T]`` (generation).
    """

    def register(cls: Q) -> Q:
        if kind in QUANTIZERS:
            raise ValueError(f"quantizer kind {kind!r} is already registered ({QUANTIZERS[kind].__name__})")
        QUANTIZERS[kind] = cls
        return cls

    return register


def make_quantizer(config: QuantizerConfig) -> nn.Module:
    """The quantizer ``config.kind`` names, built from ``config`` (validated first)."""
    config.validate()
    return QUANTIZERS[config.kind].from_config(config)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@register_quantizer("vq")
class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook lookup, Tensor[B x D x T] -> codes LongTensor[B x T].

    Args:
        num_codes: codebook size K.
        code_dim: size D of each code vector.
        update: ``"ema"`` (exponential moving averages, paper appendix) or ``"grad"`` (codebook loss).
        decay: EMA decay γ.
        commitment: β, weight of the commitment loss.
        epsilon: Laplace smoothing of the EMA cluster sizes.
        data_init: initialise the codebook from the first training batch's encoder outputs.
        dead_code_steps: restart a code from a recent encoder output once it has gone unused for
            this many training steps (0 disables restarts).

    Under ``torch.distributed`` the EMA statistics and usage counts are all-reduced, and
    initialisation/restart vectors are broadcast from rank 0, so replicas stay identical.
    Buffers change only in training mode.
    """

    def __init__(self, num_codes: int, code_dim: int, update: Literal["ema", "grad"] = "ema",
                 decay: float = 0.99, commitment: float = 0.25, epsilon: float = 1e-5,
                 data_init: bool = True, dead_code_steps: int = 200):
        super().__init__()
        if update not in ("ema", "grad"):
            raise ValueError(f"update must be 'ema' or 'grad', got {update!r}")
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.update = update
        self.decay = decay
        self.commitment = commitment
        self.epsilon = epsilon
        self.data_init = data_init
        self.dead_code_steps = dead_code_steps

        codebook = torch.randn(num_codes, code_dim)
        if update == "ema":
            self.register_buffer("codebook", codebook)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("initialized", torch.tensor(not data_init))
        self.register_buffer("steps_unused", torch.zeros(num_codes, dtype=torch.long))

    @classmethod
    def from_config(cls, config: QuantizerConfig) -> "VectorQuantizer":
        config.validate()
        return cls(config.num_codes, config.code_dim, update=config.update, decay=config.decay,
                   commitment=config.commitment, epsilon=config.epsilon, data_init=config.data_init,
                   dead_code_steps=config.dead_code_steps)

    def nearest(self, latents: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of Tensor[N x D] (squared Euclidean distance), in float32."""
        codebook = self.codebook.detach().float()
        latents = latents.detach().float()
        # Autocast would run the product in bf16 (8 mantissa bits), where nearby codes' distances tie.
        with torch.autocast(device_type=latents.device.type, enabled=False):
            # ‖z‖² − 2 z·e + ‖e‖²; ‖z‖² is constant per row and does not change the argmin.
            distances = codebook.pow(2).sum(1) - 2 * latents @ codebook.t()
        return distances.argmin(dim=1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors for LongTensor[B x T] codes -> Tensor[B x D x T]."""
        return F.embedding(codes, self.codebook).transpose(1, 2)

    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        """Codes for Tensor[B x D x T] latents -> LongTensor[B x T]; never changes any buffer."""
        batch, dim, frames = latents.shape
        return self.nearest(latents.transpose(1, 2).reshape(-1, dim)).view(batch, frames)

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        batch, dim, frames = latents.shape
        if dim != self.code_dim:
            raise ValueError(f"VectorQuantizer expects (B, {self.code_dim}, T), got {tuple(latents.shape)}")
        flat = latents.transpose(1, 2).reshape(-1, dim)  # (B*T, D)
        if self.training and not bool(self.initialized):
            self._initialise_from(flat.detach())

        codes = self.nearest(flat)
        vectors = F.embedding(codes, self.codebook)  # (B*T, D), float32 like the codebook
        quantized = vectors.to(flat.dtype)  # the decoder's input in the encoder's dtype (bf16 under autocast)
        # The loss terms in float32 against the float32 codes, whatever autocast made of the encoder's output.
        commitment_loss = F.mse_loss(flat.float(), vectors.detach())
        if self.update == "grad":
            codebook_loss = F.mse_loss(vectors, flat.detach().float())
            loss = codebook_loss + self.commitment * commitment_loss
        else:
            codebook_loss = torch.zeros((), device=flat.device)
            loss = self.commitment * commitment_loss

        counts = torch.bincount(codes, minlength=self.num_codes).float()
        if self.training:
            with torch.no_grad():
                counts = self._update(flat.detach().float(), codes, counts)

        probabilities = counts / counts.sum().clamp(min=1)
        perplexity = torch.exp(-(probabilities * torch.log(probabilities + 1e-10)).sum())
        straight_through = flat + (quantized - flat).detach()  # gradient copied from z_q to z_e
        return QuantizerOutput(
            quantized=straight_through.view(batch, frames, dim).transpose(1, 2),
            codes=codes.view(batch, frames),
            loss=loss,
            commitment_loss=commitment_loss,
            codebook_loss=codebook_loss,
            perplexity=perplexity,
            codes_used=(counts > 0).sum(),
        )

    # ------------------------------------------------------------------ training-time updates

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """EMA step and dead-code restarts; returns the usage counts summed over all ranks."""
        sums = torch.zeros(self.num_codes, self.code_dim, device=flat.device).index_add_(0, codes, flat)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        if self.update == "ema":
            # N_i <- γ N_i + (1 − γ) n_i ;  m_i <- γ m_i + (1 − γ) Σ_j z_e(x)_{i,j} ;  e_i = m_i / N_i
            self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.ema_count.sum()
            smoothed = (self.ema_count + self.epsilon) / (total + self.num_codes * self.epsilon) * total
            self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))
        if self.dead_code_steps > 0:
            self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
            dead = torch.nonzero(self.steps_unused >= self.dead_code_steps).squeeze(1)
            if dead.numel() > 0:
                self._set_codes(dead, self._sample_rows(flat, dead.numel()))
        return counts

    @torch.no_grad()
    def _initialise_from(self, flat: torch.Tensor) -> None:
        self._set_codes(torch.arange(self.num_codes, device=flat.device), self._sample_rows(flat, self.num_codes))
        self.initialized.fill_(True)

    def _sample_rows(self, flat: torch.Tensor, count: int) -> torch.Tensor:
        """``count`` rows of ``flat`` (with replacement when too few), identical on every rank."""
        if flat.shape[0] >= count:
            rows = flat[torch.randperm(flat.shape[0], device=flat.device)[:count]]
        else:
            rows = flat[torch.randint(flat.shape[0], (count,), device=flat.device)]
        rows = rows.float().contiguous()
        if _distributed():
            dist.broadcast(rows, src=0)
        return rows

    def _set_codes(self, indices: torch.Tensor, vectors: torch.Tensor) -> None:
        self.codebook.data[indices] = vectors.to(self.codebook.dtype)
        self.steps_unused[indices] = 0
        if self.update == "ema":
            self.ema_sum[indices] = vectors
            self.ema_count[indices] = 1.0


def time_jitter(latents: torch.Tensor, probability: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Replace each latent frame by its left or right neighbour with total probability ``probability``.

    Chorowski et al. 2019 ("Unsupervised speech representation learning using WaveNet autoencoders",
    Sec. III-C). Frames at the edges are replaced by themselves when the neighbour does not exist.

    Args:
        latents: Tensor[B x D x T].
        probability: chance that a frame is replaced (half left, half right).

    Returns:
        Tensor[B x D x T] with the same gradient routing as a gather.
    """
    if probability <= 0:
        return latents
    batch, dim, frames = latents.shape
    draw = torch.rand(batch, frames, device=latents.device, generator=generator)
    shift = torch.zeros(batch, frames, dtype=torch.long, device=latents.device)
    shift[draw < probability / 2] = -1
    shift[(draw >= probability / 2) & (draw < probability)] = 1
    index = (torch.arange(frames, device=latents.device) + shift).clamp(0, frames - 1)
    return latents.gather(2, index.unsqueeze(1).expand(batch, dim, frames))
