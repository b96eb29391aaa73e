"""Atomic file writes: a temporary file next to the target, then a rename, so that a reader (or a
crash) never sees a half-written checkpoint, cache file or audio output."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Union


def atomic_write(path: Union[str, Path], write: Callable[[IO], None], *, text: bool = False) -> None:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, then rename it to ``path``.

    The temporary file is removed if ``write`` fails or the process is interrupted; the final file
    gets the usual permissions (0666 minus the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
