"""Stopping a training run cleanly: SIGINT or SIGTERM asks the loop to finish its step and checkpoint.

The handler only records the request (:attr:`StopRequest.signal`); the loop looks at it after each step,
agrees with the other ranks to stop after the same one, writes a checkpoint and returns. A second Ctrl-C
aborts at once with ``KeyboardInterrupt``.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

from tqdm import tqdm


class StopRequest:
    """SIGINT/SIGTERM handlers for the length of a training loop (:meth:`install` ... :meth:`restore`).

    Args:
        announce: write a line saying what happens when a signal arrives (rank 0).
    """

    def __init__(self, announce: bool):
        self.announce = announce
        self.signal: Optional[str] = None  # the name of the signal received, e.g. "SIGINT"
        self._previous: dict = {}

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (in the main thread only: Python delivers signals there)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._request)

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _request(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once
        self.signal = name
        if self.announce:
            tqdm.write(f"{name}: finishing this step and writing a checkpoint (Ctrl-C again to abort)")
