"""Range-checked command-line values shared by ``audio-vqvae`` and the recipes.

Every numeric option is parsed by a :class:`Number` (argparse ``type=``), so that ``nan``, ``inf`` and
out-of-range values stop the command with one line and exit status 2 before any work, and the help
text states the same range the check enforces (``Number.range``).

Example:
    >>> TEMPERATURE = Number(float, minimum=0.0)
    >>> TEMPERATURE("0.7"), TEMPERATURE.range
    (0.7, 'a number >= 0')
    >>> TEMPERATURE("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a number >= 0, got 'nan'
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import NoReturn, Optional, Union

# Seeds seed torch generators and, offset per utterance or batch, other streams: 32 bits keep every
# offset seed valid everywhere.
MAX_SEED = 2**32 - 1


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``prog: error: ...``), exit status 2.

    argparse prints the whole usage block before the error; for a sub-command with a dozen options
    that buries the one line that says what was wrong. ``--help`` still shows the usage.
    Sub-parsers made by ``add_subparsers`` inherit this class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Number:
    """An argparse ``type=`` for a finite int or float within bounds.

    Args:
        kind: ``int`` or ``float``.
        minimum, maximum: inclusive bounds (None: unbounded on that side).
        above: an exclusive lower bound, for values that must be strictly positive.
    """

    kind: type
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    above: Optional[float] = None

    @property
    def range(self) -> str:
        """The accepted values in words, for help texts and errors: ``'an integer >= 1'``."""
        noun = "an integer" if self.kind is int else "a number"
        low, high, above = (_format(bound) for bound in (self.minimum, self.maximum, self.above))
        if self.maximum is not None and self.minimum is not None:
            return f"{noun} in [{low}, {high}]"
        if self.maximum is not None and self.above is not None:
            return f"{noun} in ({above}, {high}]"
        if self.minimum is not None:
            return f"{noun} >= {low}"
        if self.above is not None:
            return f"{noun} > {above}"
        if self.maximum is not None:
            return f"{noun} <= {high}"
        return f"{noun} (finite)"

    def check(self, value: Union[int, float]) -> Optional[str]:
        """None when ``value`` is acceptable, else what is wrong with it."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (self.kind is int and not isinstance(value, int)) or not math.isfinite(value):
            return f"expected {self.range}"
        if (self.minimum is not None and value < self.minimum) or (self.above is not None and value <= self.above) \
                or (self.maximum is not None and value > self.maximum):
            return f"expected {self.range}"
        return None

    def __call__(self, text: str) -> Union[int, float]:
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {self.range}, got {text!r}") from None
        problem = self.check(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text!r}")
        return value


def _format(bound: Optional[float]) -> str:
    """A bound as written in help texts: whole numbers in full (4294967295, not 4.29497e+09)."""
    if bound is None:
        return ""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


@dataclass(frozen=True)
class NumberList:
    """An argparse ``type=`` for a comma-separated list of :class:`Number` values: ``"1,16"``."""

    item: Number

    @property
    def range(self) -> str:
        return f"comma-separated, each {self.item.range}"

    def __call__(self, text: str) -> list:
        items = [part.strip() for part in text.split(",") if part.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected {self.range}, got {text!r}")
        return [self.item(part) for part in items]


SEED = Number(int, minimum=0, maximum=MAX_SEED)
TEMPERATURE = Number(float, minimum=0.0)
VOICED_NOISE = Number(float, minimum=0.0, maximum=1.0)  # --voiced-noise: decoder.voiced_noise's range
POSITIVE_INT = Number(int, minimum=1)
COUNT = Number(int, minimum=0)
POSITIVE_SECONDS = Number(float, above=0.0)


def resolve_device(text: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``; any other name unchanged.

    Example:
        >>> resolve_device("cpu")
        'cpu'
    """
    if text != "auto":
        return text
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device(text: str) -> str:
    """An argparse ``type=`` for ``--device``: ``auto`` or a torch device this machine has (``cpu``, ``cuda``,
    ``cuda:1``); returns the device to use (``auto`` resolved by :func:`resolve_device`).

    Checked before any checkpoint is read, so that a missing GPU is reported as that and not as an
    unreadable checkpoint.
    """
    import torch

    if text == "auto":
        return resolve_device(text)
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown torch device {text!r}; expected auto, cpu, cuda or cuda:<index>") \
            from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine ({why}); "
                                             "use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: Apple MPS is not available on this machine; use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; expected auto, cpu, cuda or cuda:<index>")
    return text


def display_command(program: str) -> str:
    """How to run ``program`` (``python``, ``tensorboard``, ``audio-vqvae``) from this environment, as typed.

    The tools live next to the running interpreter (``.venv/bin`` in a checkout). In a fresh shell the
    bare name is not on the PATH, so printed commands name the file, relative to the working directory
    when it is inside it: ``.venv/bin/tensorboard``.
    """
    from pathlib import Path

    # Not resolved: .venv/bin/python is usually a link to the system interpreter, whose folder holds
    # neither the venv's packages nor its scripts.
    folder = Path(sys.executable).parent
    path = folder / program if program != "python" else Path(sys.executable)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
