"""A run directory's owner and its files.

One training run at a time: :func:`hold_run_directory` locks ``<run>/.lock`` for the life of the run
(:mod:`audio_vqvae.folder_lock`: released on every kind of exit, never stale), and a second run into the
folder stops in one line naming the holder's pid.

Under the lock, a resumed run owns what the interrupted attempt left: the temporary files of a checkpoint
being written when it died are removed, and ``metrics.jsonl`` loses the records of the steps after the
checkpoint it resumes from (they are trained again). The run's ``config.yaml`` and ``speakers.json`` are
written atomically.

Example:
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp()) / "run"
    >>> with hold_run_directory(run):
    ...     (run / ".lock").exists()
    True
    >>> run.exists()      # nothing was written into it: the folder goes with the lock
    False
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ContextManager, Optional, Union

import yaml

from audio_vqvae.atomic import TEMPORARY_SUFFIX, atomic_write
from audio_vqvae.checkpoint import CHECKPOINT_DIR
from audio_vqvae.config import ExperimentConfig
from audio_vqvae.errors import InputError
from audio_vqvae.filesystem import format_bytes
from audio_vqvae.folder_lock import hold_folder


class RunDirectoryBusyError(InputError):
    """Another process holds the run directory's lock (a training run is writing into it)."""


def hold_run_directory(run_dir: Union[str, Path]) -> ContextManager[None]:
    """Own ``run_dir`` for the duration: create it if needed and lock it; nested holds by this process are free.

    Raises:
        RunDirectoryBusyError: another process holds it (the message names its pid).
        InputError: the folder cannot be created or written.
    """
    def busy(holder: dict) -> Exception:
        return RunDirectoryBusyError(
            f"{run_dir} is in use by another training run (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')}); wait for it to end or stop it, or choose another --out")

    return hold_folder(run_dir, busy=busy)


# ---------------------------------------------------------------------- the run's files


def write_run_files(run_dir: Path, config: ExperimentConfig, speakers: list[dict], *, fresh: bool) -> None:
    """``config.yaml`` (the resolved experiment config) and ``speakers.json`` of a run directory, atomically.

    ``fresh``: a new run, whose ``metrics.jsonl`` from an earlier attempt that never checkpointed is stale.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    if fresh:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    atomic_write(run_dir / "config.yaml", lambda file: file.write(yaml.safe_dump(config.to_dict(), sort_keys=False)),
                 text=True)
    atomic_write(run_dir / "speakers.json",
                 lambda file: file.write(json.dumps(speakers, indent=1, ensure_ascii=False) + "\n"), text=True)


def remove_temporaries(run_dir: Path) -> list[str]:
    """Delete the temporary files of atomic writes an interrupted run left (``.step-*.pt.*.tmp``, ...).

    Only under the run directory's lock: then no writer of this run is alive. Returns one description per file.
    """
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINT_DIR):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(f".*{TEMPORARY_SUFFIX}")):
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append(f"{path} ({format_bytes(size)})")
    return removed


def trim_metrics(path: Path, step: int) -> tuple[int, Optional[int]]:
    """Drop the records of ``metrics.jsonl`` after ``step`` (and a line cut short by a crash).

    A run killed after its last checkpoint wrote records for steps it then lost; the resumed run trains them
    again and writes its own. Returns ``(records dropped, the last step among them)``.
    """
    if not path.is_file():
        return 0, None
    kept, dropped, last = [], 0, None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            record_step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            dropped += 1  # the torn last line of a killed write
            continue
        if record_step > step:
            dropped += 1
            last = record_step if last is None else max(last, record_step)
        else:
            kept.append(line)
    if dropped:
        atomic_write(path, lambda file: file.write("".join(line + "\n" for line in kept)), text=True)
    return dropped, last
