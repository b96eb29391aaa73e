"""One writer per folder: an exclusive ``flock`` on ``<folder>/.lock`` held for as long as a process writes there.

Used for run directories (a second training run stops at once) and corpus caches (a second ``prepare`` of the
same cache waits for the first, then finds it ready). The kernel releases an ``flock`` on every kind of exit,
``kill -9`` included, so a lock is never stale: the ``.lock`` file a crashed process left is simply taken over.
The file names its holder (pid, host, start time, command line) for the message a waiting or refused process
prints. On release the file is removed, and the folder too when the holder created it and left nothing else.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp()) / "run"
    >>> with hold_folder(folder, busy=lambda holder: RuntimeError(f"busy: pid {holder['pid']}")):
    ...     (folder / LOCK_NAME).exists()
    True
    >>> folder.exists()      # nothing was written into it: the folder goes with the lock
    False
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from audio_vqvae.filesystem import check_writable, output_error

LOCK_NAME = ".lock"

_held: dict[Path, int] = {}  # folders this process holds: absolute path -> nesting depth


@contextmanager
def hold_folder(folder: Union[str, Path], *, busy: Optional[Callable[[dict], Exception]] = None,
                waiting: Optional[Callable[[dict], None]] = None) -> Iterator[None]:
    """Own ``folder`` for the duration (created if needed); nested holds by the same process are free.

    Args:
        busy: when another process holds the folder, the exception to raise, made from its holder record
            (``pid``, ``host``, ``started``, ``command``). None: wait for the holder to finish instead.
        waiting: with ``busy`` None, called once with the holder record before waiting.

    Raises:
        InputError: the folder cannot be created or written (one line, before any work).
    """
    folder = Path(folder)
    key = Path(os.path.abspath(folder))
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    check_writable(folder, folder=True)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise output_error(err, folder) from err
    path = folder / LOCK_NAME
    try:
        descriptor = _lock(path, busy, waiting)
    except BaseException:
        if created:
            _remove_if_empty(folder)
        raise
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        path.unlink(missing_ok=True)  # while still locked: a process waiting on this file's inode then retries
        os.close(descriptor)
        if created:
            _remove_if_empty(folder)


def _lock(path: Path, busy: Optional[Callable[[dict], Exception]], waiting: Optional[Callable[[dict], None]]) -> int:
    """Lock ``path`` (created if needed) and write this process' holder record into it; returns the descriptor."""
    announced = False
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise output_error(err, path) from err
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(descriptor)
            if busy is not None:
                os.close(descriptor)
                raise busy(holder) from None
            if waiting is not None and not announced:
                waiting(holder)
                announced = True
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            same_file = os.fstat(descriptor).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(descriptor)  # the previous holder removed the file between our open and lock: take the new one
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)}
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(holder) + "\n").encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds without its description (the work then stops at its first real write)
    return descriptor


def read_holder(descriptor: int) -> dict:
    """The holder record in an open lock file (empty when unreadable)."""
    try:
        holder = json.loads(os.pread(descriptor, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def lock_holder(folder: Union[str, Path]) -> Optional[int]:
    """The pid of the process holding ``folder``'s lock, or None when no process holds it."""
    try:
        descriptor = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(descriptor).get("pid")
    finally:
        os.close(descriptor)
    return None


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
