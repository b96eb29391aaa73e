"""Run a recipe as one or several training processes on this machine: what ``make demo`` calls.

    python -m audio_vqvae.training.launch --processes 2 recipes/vctk/train.py --demo

``torchrun --standalone`` does the same job for the demo, but its elastic agent answers a worker's
clean exit status 2 (bad input, already explained in one line) with a ``ChildFailedError`` traceback
and an error box, and a Ctrl-C with a ``SignalException`` traceback and a failure status, after the
run had checkpointed and stopped cleanly. On one machine the job is small: start N copies of the
script with the environment ``torch.distributed`` reads (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``), pass signals on once, and report the cause of a failure once.

Signals. Each worker runs in its own process group and the launcher forwards SIGINT, SIGTERM and
SIGHUP (as SIGTERM) to every worker exactly once per signal received, so a Ctrl-C reaches each
rank once (finish the step, checkpoint, exit 0) and a second Ctrl-C aborts, as in a plain run.
When started from a terminal, the launcher also makes its own process group the terminal's
foreground group for the run: a Ctrl-C then reaches the launcher but not ``make``, which would
otherwise report an ``Interrupt`` of a run that stopped cleanly.

Output and exit status. Rank 0 writes to the terminal; the other ranks' standard error is kept and
shown only when one of them is the first to fail (on a bad argument every rank fails with the same
line, and after rank 0 stops the others fail only because it went). The exit status is rank 0's,
or that of the first rank that failed: 0 finished or interrupted cleanly, 1 non-finite loss, 2 bad
input, 130 aborted.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

from audio_vqvae.options import Number, OneLineErrorParser

PROG = "python -m audio_vqvae.training.launch"
PROCESSES = Number(int, minimum=1, maximum=256)
FAILURE_GRACE_SECONDS = 5.0  # a rank that failed first: how long rank 0 may take to report the cause itself
POLL_SECONDS = 0.1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = OneLineErrorParser(prog=PROG, description="Run a training script as one or several local processes "
                                "(DistributedDataParallel over gloo on CPU, NCCL on GPUs).")
    parser.add_argument("--processes", type=PROCESSES, default=1,
                        help=f"training processes, {PROCESSES.range} (default 1: the script alone, no process group)")
    parser.add_argument("script", help="the training script, e.g. recipes/vctk/train.py")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the script's own arguments")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.script):
        print(f"{PROG}: error: {args.script}: training script not found", file=sys.stderr)
        return 2
    # -u: rank 0's log lines reach the terminal as they are written.
    return run_workers([sys.executable, "-u", args.script, *args.arguments], args.processes)


def run_workers(command: Sequence[str], processes: int) -> int:
    """Start ``processes`` copies of ``command``, wait for them and return the job's exit status."""
    environment = dict(os.environ)
    if processes > 1:
        environment.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(processes),
                           LOCAL_WORLD_SIZE=str(processes))
        # As torchrun: one thread per process, so that N processes share N cores instead of N x N threads.
        environment.setdefault("OMP_NUM_THREADS", "1")
    workers: list[_Worker] = []
    received: list[int] = []

    def forward(signum, frame) -> None:
        received.append(signum)
        for worker in workers:
            worker.signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    with _terminal_foreground(), _handling(forward):
        for rank in range(processes):
            rank_environment = dict(environment)
            if processes > 1:
                rank_environment.update(RANK=str(rank), LOCAL_RANK=str(rank))
            workers.append(_Worker(rank, command, rank_environment, keep_stderr=rank > 0))
        return _wait(workers, processes)


class _Worker:
    """One training process in its own process group; ranks other than 0 have their standard error kept."""

    def __init__(self, rank: int, command: Sequence[str], environment: dict, keep_stderr: bool):
        self.rank = rank
        self.stderr: list[str] = []
        # Its own process group: a terminal's Ctrl-C reaches the launcher only, which passes it on once.
        self.process = subprocess.Popen(list(command), env=environment, process_group=0,
                                        stderr=subprocess.PIPE if keep_stderr else None,
                                        text=True if keep_stderr else None)
        self.reader = None
        if keep_stderr:
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def status(self) -> Optional[int]:
        """The exit status as a shell reports it (128 + signal number when killed), None while running."""
        code = self.process.poll()
        return None if code is None else (128 - code if code < 0 else code)

    def finish(self) -> None:
        self.process.wait()
        if self.reader is not None:
            self.reader.join(timeout=5)


def _wait(workers: list[_Worker], processes: int) -> int:
    """Wait for every worker; on the first failure stop the rest and report its cause once."""
    main = workers[0]
    first_failure: Optional[_Worker] = None
    failed_at = 0.0
    while True:
        running = any(worker.status() is None for worker in workers)
        if first_failure is None:
            first_failure = next((w for w in workers if w.status() not in (None, 0)), None)
            failed_at = time.monotonic()
            if first_failure is main:
                _kill_all(workers)  # the others fail because rank 0 went, or with its very message
        elif first_failure is not main and (main.status() is not None
                                            or time.monotonic() - failed_at > FAILURE_GRACE_SECONDS):
            _kill_all(workers)
        if not running:
            break
        time.sleep(POLL_SECONDS)
    for worker in workers:
        worker.finish()
    if first_failure is None:
        return 0
    if main.status() not in (0, 128 + signal.SIGKILL) and first_failure is not main:
        first_failure = main  # rank 0 reported the cause itself within the grace time
    if first_failure is not main:
        sys.stderr.write("".join(first_failure.stderr[-20:]) or
                         f"{PROG}: error: process {first_failure.rank} of {processes} stopped with status "
                         f"{first_failure.status()}\n")
    elif main.status() > 128 and main.status() - 128 in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT):
        name = signal.Signals(main.status() - 128).name
        print(f"{PROG}: error: process 0 of {processes} was killed by {name}", file=sys.stderr)
    return first_failure.status()


def _kill_all(workers: Sequence[_Worker]) -> None:
    for worker in workers:
        worker.kill()


@contextmanager
def _handling(handler) -> Iterator[None]:
    """Route SIGINT, SIGTERM and SIGHUP to ``handler``; SIGTSTP is ignored (a stopped launcher would keep the
    terminal while its workers train on)."""
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, signal.SIG_IGN)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def _terminal_foreground() -> Iterator[None]:
    """From a terminal: make this process' own group the foreground group until the run ends.

    The terminal then sends Ctrl-C to the launcher alone: neither ``make`` above it (which would report
    an ``Interrupt`` and fail) nor the workers directly (the launcher passes it on, once).
    """
    try:
        terminal = sys.stdin.fileno()
        owned = os.isatty(terminal) and os.tcgetpgrp(terminal) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        owned = False
    if not owned:
        yield
        return
    original = os.getpgrp()
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # tcsetpgrp from a background group raises it
    try:
        os.setpgid(0, 0)
        os.tcsetpgrp(terminal, os.getpgrp())
    except OSError:
        signal.signal(signal.SIGTTOU, previous)
        yield
        return
    try:
        yield
    finally:
        try:
            os.tcsetpgrp(terminal, original)
        except OSError:
            pass
        signal.signal(signal.SIGTTOU, previous)


def free_port() -> int:
    """A TCP port free on the loopback interface now, for rank 0's rendezvous store (the tests' process groups
    use it too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
