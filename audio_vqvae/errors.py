"""Errors that reach users as one clear line (the CLI prints them without a traceback)."""


class AudioVQVAEError(Exception):
    """Base class for user-facing errors: bad input files, unknown speakers, missing corpora."""


class InputError(AudioVQVAEError):
    """An input file or directory is missing, unreadable or not what was expected."""


class CorpusNotFoundError(InputError):
    """A corpus is not where it was looked for. The message names the place and the expected layout; each
    entry point adds its own way out (the recipes' ``--demo``, ``prepare --corpus demo``)."""


class CheckpointError(AudioVQVAEError):
    """A checkpoint is missing, corrupt or not an audio-vqvae checkpoint."""
