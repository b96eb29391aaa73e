"""The command line shared by the recipe scripts (``recipes/<corpus>/train.py``).

A recipe is a folder with ``train.py`` (three lines calling :func:`main`) and ``conf/*.yaml``
(:class:`~audio_vqvae.config.ExperimentConfig` files whose ``model`` section names a preset and holds
only its differences, ``model: {preset: small, sample_rate: 8000}``; see :class:`~audio_vqvae.config.ModelConfig`)::

    python recipes/vctk/train.py                                   # conf/paper.yaml, corpus at the default path
    python recipes/vctk/train.py --config recipes/vctk/conf/small.yaml --data-root /data/VCTK-Corpus-0.92
    python recipes/vctk/train.py --demo                            # bundled demo corpus, SMALL model
    python recipes/vctk/train.py --out runs/x train.max_steps=200 quantizer.update=grad
    python recipes/vctk/train.py --out runs/x --resume             # continue from the newest checkpoint

Overrides are dotted ``key=value`` pairs, type-checked against the config dataclasses; keys that do
not start with ``model.``, ``data.`` or ``train.`` belong to the model (``quantizer.update=grad`` is
``model.quantizer.update=grad``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Optional, Sequence

from audio_vqvae.config import ConfigError, ExperimentConfig, apply_overrides
from audio_vqvae.errors import AudioVQVAEError, CheckpointError, CorpusNotFoundError
from audio_vqvae.options import OneLineErrorParser, display_command

SECTIONS = ("model", "data", "train")


def qualify_overrides(overrides: Sequence[str]) -> list[str]:
    """Prefix ``model.`` to override keys that do not name a top-level section.

    Example:
        >>> qualify_overrides(["train.max_steps=200", "quantizer.update=grad", "num_speakers=4"])
        ['train.max_steps=200', 'model.quantizer.update=grad', 'model.num_speakers=4']
    """
    qualified = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        qualified.append(item if key.strip().split(".")[0] in SECTIONS else f"model.{item.strip()}")
    return qualified


def build_parser(corpus: str, recipe_dir: Path) -> argparse.ArgumentParser:
    script = _display_path(recipe_dir / "train.py")
    python, torchrun = display_command("python"), display_command("torchrun")
    parser = OneLineErrorParser(
        prog=script,
        description=f"Train a VQ-VAE with a WaveNet decoder on {corpus} (recipe {_display_path(recipe_dir)}).",
        epilog=f"examples:\n  {python} {script} --demo\n  {python} {script} --config "
               f"{_display_path(recipe_dir / 'conf/small.yaml')} train.max_steps=2000\n"
               f"  {python} {script} --out runs/{corpus} --resume\n"
               f"  {torchrun} --nproc_per_node 4 {script} --out runs/{corpus}-ddp",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None,
                        help=f"experiment YAML (default: {_display_path(recipe_dir / 'conf/paper.yaml')}, "
                             f"or conf/demo.yaml with --demo; with --resume: the config stored in the checkpoint "
                             f"resumed from)")
    parser.add_argument("--data-root", default=None, help="corpus folder (default: data.data_root, else the standard "
                                                          "location under $AUDIO_VQVAE_DATA or ./data)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"run directory (default: runs/{corpus}, or runs/{corpus}-demo with --demo)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--demo", action="store_true",
                        help="train the SMALL model on the bundled demo corpus (built and prepared on first use)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted, type-checked overrides, e.g. train.max_steps=200 quantizer.update=grad")
    return parser


def run_directory(args: argparse.Namespace, corpus: str) -> Path:
    """The run directory the parsed arguments ask for: ``--out``, else ``runs/<corpus>[-demo]``."""
    return args.out or Path("runs") / (f"{corpus}-demo" if args.demo else corpus)


def resolve_config(args: argparse.Namespace, corpus: str, recipe_dir: Path) -> tuple[ExperimentConfig, Path]:
    """The experiment config and run directory the parsed arguments ask for.

    With ``--resume`` and no ``--config``, the config is the one stored in the checkpoint resumed from: the run
    directory's ``config.yaml`` is a copy for people to read, and a crash may have left it cut short.
    """
    from audio_vqvae.checkpoint import latest_checkpoint, load_checkpoint

    run_dir = run_directory(args, corpus)
    newest = latest_checkpoint(run_dir) if args.resume and args.config is None else None
    if newest is not None:
        stored = load_checkpoint(newest).get("experiment")
        if not isinstance(stored, dict):
            raise CheckpointError(f"{newest}: not a training checkpoint (no experiment config); cannot resume from it")
        config = ExperimentConfig.from_dict(stored, where=f"{newest}: experiment")
    else:
        config = ExperimentConfig.from_yaml(args.config or recipe_dir / "conf" / ("demo.yaml" if args.demo
                                                                                 else "paper.yaml"))
    if args.demo:
        config.data.corpus = "demo"
    if args.data_root is not None:
        config.data.data_root = str(args.data_root)
    config = apply_overrides(config, qualify_overrides(args.overrides))
    config.validate()
    return config, run_dir


def main(corpus: str, recipe_dir: Path, argv: Optional[Sequence[str]] = None) -> int:
    """Run a recipe: parse arguments, resolve the config, train. Returns the exit status.

    0: finished, or stopped by SIGINT/SIGTERM or ``train.max_minutes`` after writing a checkpoint; 1: non-finite loss;
    2: bad arguments, config, corpus or run directory (another run holds it, it cannot be written, the disk is
    full); 130: interrupted before training started.
    """
    from audio_vqvae.checkpoint import resume_checkpoint
    from audio_vqvae.training.run_dir import hold_run_directory
    from audio_vqvae.training.trainer import NonFiniteLossError, train

    recipe_dir = Path(recipe_dir)
    parser = build_parser(corpus, recipe_dir)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    try:
        if args.resume:  # a mistyped --out is named as such, before the lock creates the folder
            resume_checkpoint(run_directory(args, corpus), True)
        # Owned before its config is read from the newest checkpoint: a running run would rotate that away.
        with hold_run_directory(run_directory(args, corpus)) if rank == 0 else nullcontext():
            config, run_dir = resolve_config(args, corpus, recipe_dir)
            result = train(config, run_dir, resume=args.resume, progress=not args.no_progress and rank == 0)
    except NonFiniteLossError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    except CorpusNotFoundError as err:
        hint = "" if args.demo else (f"; or try the whole pipeline without downloading anything: "
                                     f"{display_command('python')} {parser.prog} --demo")
        print(f"{parser.prog}: error: {err}{hint}", file=sys.stderr)
        return 2
    except (AudioVQVAEError, ConfigError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training started (corpus preparation) or a second Ctrl-C
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    if rank == 0:
        summary = ", ".join(f"{k} {v:.4g}" for k, v in result.valid.items())
        print(f"{result.status} at step {result.step}; run directory {result.run_dir}"
              + (f"; last checkpoint {result.checkpoint}" if result.checkpoint else "")
              + (f"\nvalidation: {summary}" if summary else "")
              + f"\nTensorBoard: {display_command('tensorboard')} --logdir {result.run_dir}")
    return 0


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (for help texts)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
