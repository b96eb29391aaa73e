"""Training: the loop shared by all recipes, its schedule, logging and multi-process helpers.

``train(config, run_dir)`` is the whole pipeline a recipe runs: prepare the corpus, build the model
with the corpus' speaker table, train with periodic validation, TensorBoard audio and images, and
atomic, resumable checkpoints.
"""

from audio_vqvae.training.trainer import NonFiniteLossError, Trainer, TrainingResult, train

__all__ = ["train", "Trainer", "TrainingResult", "NonFiniteLossError"]
