"""Learning-rate schedule: linear warm-up, then cosine decay to a floor.

Example:
    >>> f = warmup_cosine(warmup_steps=10, max_steps=110, min_ratio=0.1)
    >>> round(f(0), 3), round(f(10), 3), round(f(60), 3), round(f(110), 3), round(f(500), 3)
    (0.1, 1.0, 0.55, 0.1, 0.1)
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from audio_vqvae.config import TrainConfig


def warmup_cosine(warmup_steps: int, max_steps: int, min_ratio: float) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Warm-up rises linearly from ``1 / warmup_steps`` to 1 over ``warmup_steps`` steps; the rest of
    the run follows half a cosine from 1 down to ``min_ratio``, which it keeps after ``max_steps``
    (so a run extended with a larger ``train.max_steps`` keeps training at the floor).
    """

    def multiplier(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        decay_steps = max(1, max_steps - warmup_steps)
        progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A :class:`~torch.optim.lr_scheduler.LambdaLR` for ``config``; call ``step()`` after every optimizer step.

    Its ``state_dict`` is plain data (the multiplier is a closure, which LambdaLR does not store).
    """
    min_ratio = min(1.0, config.min_learning_rate / config.learning_rate) if config.learning_rate > 0 else 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup_steps, config.max_steps, min_ratio))
