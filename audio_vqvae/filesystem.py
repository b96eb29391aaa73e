"""Outputs and the filesystems that hold them: a full disk and an output that cannot be written, each named in one
line (the CLI and the recipes print an :class:`~audio_vqvae.errors.AudioVQVAEError` without a traceback).

Example:
    >>> import tempfile
    >>> check_writable(Path(tempfile.mkdtemp()) / "new" / "out.wav")   # a folder that does not exist yet is fine
    >>> format_bytes(17_612_345)
    '17.6 MB'
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional, Union

from audio_vqvae.errors import AudioVQVAEError, InputError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(AudioVQVAEError):
    """No space left (or the quota spent) on the filesystem of an output; the message says where and how much."""


def format_bytes(count: int) -> str:
    """``17612345`` -> ``'17.6 MB'`` (decimal units, as ``df -H``)."""
    value = float(count)
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def existing_ancestor(path: Union[str, Path]) -> Path:
    """``path`` itself when it exists, else its nearest existing parent."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def free_bytes(path: Union[str, Path]) -> int:
    """Bytes this process may still write on the filesystem holding ``path`` (or its nearest parent); root may
    also use the blocks the filesystem reserves for it."""
    probe = existing_ancestor(path)
    if not probe.is_dir():
        probe = probe.parent
    stats = os.statvfs(probe)
    return (stats.f_bfree if os.geteuid() == 0 else stats.f_bavail) * stats.f_frsize


def mount_point(path: Union[str, Path]) -> Path:
    """The mount point of the filesystem holding ``path``."""
    probe = existing_ancestor(path)
    while not os.path.ismount(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def disk_full_error(path: Union[str, Path], needed: Optional[int] = None, *, estimate: bool = False) -> DiskFullError:
    """The one-line error for an output that did not fit: where, how much it needed (``estimate``: about how
    much) and how much is free."""
    free = free_bytes(path)
    need = f"{'about ' if estimate else ''}{format_bytes(needed)} needed, " if needed is not None else ""
    return DiskFullError(f"disk full: cannot write {path} ({need}{format_bytes(free)} free on {mount_point(path)}); "
                         "free some space and run again")


def disk_full_cause(err: BaseException) -> Optional[OSError]:
    """The ENOSPC/EDQUOT ``OSError`` behind ``err`` (itself, or in its chain of causes), if there is one.

    PyTorch's zip writer, for one, reports a full disk as ``RuntimeError: ... unexpected pos`` with the
    ``OSError`` only in the chain.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def check_free_space(path: Union[str, Path], needed: int) -> None:
    """Raise :class:`DiskFullError` before writing ``needed`` bytes to ``path`` where they cannot fit."""
    if free_bytes(path) < needed:
        raise disk_full_error(path, needed)


def check_writable(path: Union[str, Path], *, folder: bool = False) -> None:
    """Refuse, in one line and before any work, an output that cannot be written. Creates nothing.

    Args:
        path: a file to create or replace (atomically, so its folder must be writable), or with ``folder`` a
            folder to create or write into. Missing parent folders are fine where they can be created.

    Raises:
        InputError: a parent is a file, the path is a folder where a file is expected (or the reverse), the
            filesystem is read-only, or there is no write permission.
    """
    path = Path(path)
    if not folder and path.is_dir():
        raise InputError(f"{path}: is a folder; expected the name of a file to write")
    probe = existing_ancestor(path if folder else path.parent)
    if not probe.is_dir():
        raise InputError(f"{path}: cannot write there: {probe} is a file, not a folder")
    if os.statvfs(probe).f_flag & os.ST_RDONLY:
        raise InputError(f"{path}: cannot write there: {probe} is on a read-only filesystem")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write there: no write permission on {probe}")


def output_error(err: OSError, path: Union[str, Path], needed: Optional[int] = None) -> AudioVQVAEError:
    """An ``OSError`` met while writing ``path`` as a one-line error (disk full, read-only, permission)."""
    if err.errno in DISK_FULL_ERRNOS:
        return disk_full_error(path, needed)
    return InputError(f"{path}: cannot write ({err.strerror or err})")
