"""Errors that reach users as one clear line (the CLI prints them without a traceback)."""


class AudioVQVAEError(Exception):
    """Base class for user-facing errors: bad input files, unknown speakers, missing corpora."""


class InputError(AudioVQVAEError):
    """An input file or directory is missing, unreadable or not what was expected."""


class CheckpointError(AudioVQVAEError):
    """A checkpoint is missing, corrupt or not an audio-vqvae checkpoint."""
