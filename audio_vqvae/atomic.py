"""Atomic file writes: a temporary file next to the target, then a rename, so that a reader (or a
crash) never sees a half-written checkpoint, cache file or audio output.

A write that fails for want of space raises :class:`~audio_vqvae.filesystem.DiskFullError` (one line: where,
how much was needed, how much is free) and leaves the target as it was, with no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Optional, Union

from audio_vqvae.filesystem import check_free_space, disk_full_cause, disk_full_error, output_error

TEMPORARY_SUFFIX = ".tmp"  # of the temporary files: ``.<name>.<random>.tmp`` next to the target


def atomic_write(path: Union[str, Path], write: Callable[[IO], None], *, text: bool = False,
                 size: Optional[int] = None) -> None:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, then rename it to ``path``.

    The temporary file is removed if ``write`` fails or the process is interrupted; the final file
    gets the usual permissions (0666 minus the umask), not mkstemp's private 0600.

    Args:
        size: the bytes ``write`` will write, when known: named in a disk-full error.

    Raises:
        DiskFullError: the filesystem ran out of space (the target is untouched).
        InputError: the folder cannot be created or written (read-only, no permission, a parent is a file).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    except OSError as err:
        raise output_error(err, path, size) from err
    try:
        with os.fdopen(handle, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException as err:
        Path(temporary).unlink(missing_ok=True)
        if disk_full_cause(err) is not None:
            raise disk_full_error(path, size) from err
        raise


def atomic_write_bytes(path: Union[str, Path], data: Union[bytes, memoryview]) -> None:
    """Write ``data`` to ``path`` atomically, after checking that it fits (a disk-full error names its size)."""
    size = len(data) if isinstance(data, bytes) else data.nbytes
    check_free_space(path, size)
    atomic_write(path, lambda file: file.write(data), size=size)
