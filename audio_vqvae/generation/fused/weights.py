"""The decoder's weights in the fused kernels' layout (:class:`FusedWeights`)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from audio_vqvae.mulaw import mu_law_decode


def _halves(size: int) -> int:
    return (size + 1) // 2


class FusedWeights(NamedTuple):
    """The decoder's weights in the fused kernels' layout, one argument of every kernel: float32,
    C-contiguous, block-major (a named tuple, which numba passes to a kernel as its fields).

    Gate pairs are split into two blocks of ``width`` pairs (padded with a zero pair when the number of
    pairs is odd); output rows into two parts (padded likewise; a padded class has logit -inf).

    Shapes: dilated (L, C + 2R, 2, 2W) with columns [tanh W | sigmoid W] per block and rows
    [conditioning projection | input ``dilation`` steps ago | current input]; audio (2, L, 2R, 2W), the
    audio rows of ``dilated`` again, block-major for one utterance's kernels; residual (L, 2, W, R);
    skip (L, 2, W, S); out1 (S, 2, S/2); out2 (2, S/2, 2, Q/2). :meth:`gate_order` maps kernel gate
    columns to the model's channels. For a decoder that synthesises (``synthesises``: LPC split, harmonic
    part), ``prediction_embedding`` (Q, R) embeds the class of each step's prediction; otherwise it is a
    (1, R) dummy of the same type, so that one compiled kernel serves both. ``levels`` (Q,) float64 is
    the value of every μ-law class and ``log1p_mu`` μ-law's denominator log(1 + μ).
    """

    dilated: np.ndarray
    audio: np.ndarray
    residual: np.ndarray
    residual_bias: np.ndarray
    skip: np.ndarray
    skip_bias: np.ndarray
    embedding: np.ndarray
    out1: np.ndarray
    out1_bias: np.ndarray
    out2: np.ndarray
    out2_bias: np.ndarray
    dilations: np.ndarray
    offsets: np.ndarray
    prediction_embedding: np.ndarray
    levels: np.ndarray
    log1p_mu: float
    synthesises: bool

    @staticmethod
    def gate_order(gates: int) -> np.ndarray:
        """Model gate channel of each kernel column, LongTensor-ready (L-independent), -1 for padding: (4W,)."""
        pairs = gates // 2
        width = _halves(pairs)
        order = np.full((2, 2, width), -1, dtype=np.int64)
        for block in range(2):
            for h in range(width):
                pair = block * width + h
                if pair < pairs:
                    order[block, 0, h] = pair
                    order[block, 1, h] = pairs + pair
        return order.reshape(-1)

    @classmethod
    def from_decoder(cls, decoder) -> "FusedWeights":
        """Copy a :class:`~audio_vqvae.wavenet.WaveNet`'s weights into kernel layout."""
        config = decoder.config
        layers = decoder.layers
        pairs, skip_channels, classes = config.gate_channels // 2, config.skip_channels, config.quantization_channels
        width, half_hidden, half_classes = _halves(pairs), _halves(skip_channels), _halves(classes)
        order = cls.gate_order(config.gate_channels)
        synthesises = decoder.prediction_embedding is not None

        def array(tensor: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())

        def padded(matrix: np.ndarray, rows: int, fill: float = 0.0) -> np.ndarray:  # pad axis 0 to `rows`
            extra = np.full((rows - matrix.shape[0],) + matrix.shape[1:], fill, np.float32)
            return np.concatenate([matrix, extra], axis=0)

        dilated = []
        for layer in layers:
            weight = array(torch.cat([layer.conditioning.weight[:, :, 0], layer.dilated.weight[:, :, 0],
                                      layer.dilated.weight[:, :, 1]], dim=1))  # (G, C + 2R)
            columns = np.where(order[:, None] >= 0, weight[np.maximum(order, 0)], 0.0)  # (4W, C + 2R)
            dilated.append(columns.T.reshape(-1, 2, 2 * width))
        residual = [padded(array(layer.residual.weight[:, :, 0].t()), 2 * width).reshape(2, width, -1)
                    for layer in layers]
        skip = [padded(array(layer.skip.weight[:, :, 0].t()), 2 * width).reshape(2, width, -1) for layer in layers]
        out1 = padded(array(decoder.output[1].weight[:, :, 0]), 2 * half_hidden)  # (2 S/2, S): outputs first
        out2 = padded(array(decoder.output[3].weight[:, :, 0]), 2 * half_classes)  # (2 Q/2, S)
        out2 = padded(out2.T, 2 * half_hidden)  # (2 S/2, 2 Q/2): inputs first, padded inputs are zero rows
        dilations = np.array([layer.dilation for layer in layers], dtype=np.int64)
        contiguous = np.ascontiguousarray
        dilated = contiguous(np.stack(dilated), dtype=np.float32)
        return cls(
            dilated=dilated,
            audio=contiguous(dilated[:, config.conditioning_channels:].transpose(2, 0, 1, 3)),
            residual=contiguous(np.stack(residual)),
            residual_bias=array(torch.stack([layer.residual.bias for layer in layers])),
            skip=contiguous(np.stack(skip)),
            skip_bias=array(torch.stack([layer.skip.bias for layer in layers]).sum(0)),
            embedding=array(decoder.input_embedding.weight),
            out1=contiguous(out1.T.reshape(skip_channels, 2, half_hidden)),
            out1_bias=padded(array(decoder.output[1].bias), 2 * half_hidden).reshape(2, half_hidden),
            out2=contiguous(out2.reshape(2, half_hidden, 2, half_classes)),
            out2_bias=padded(array(decoder.output[3].bias), 2 * half_classes, -np.inf).reshape(2, half_classes),
            dilations=dilations,
            offsets=np.concatenate([[0], np.cumsum(dilations)[:-1]]).astype(np.int64),
            prediction_embedding=(array(decoder.prediction_embedding.weight) if synthesises
                                  else np.zeros((1, config.residual_channels), np.float32)),
            levels=np.ascontiguousarray(mu_law_decode(torch.arange(classes), classes).double().numpy()),
            log1p_mu=math.log1p(classes - 1),
            synthesises=synthesises,
        )

    @property
    def queue_slots(self) -> int:
        return int(self.dilations.sum())
