"""The ``audio-vqvae`` command line: one sub-command per task, each registered by its module.

Every module in ``COMMAND_MODULES`` exposes ``register(subparsers)`` that adds its sub-commands
and sets ``func`` (called with the parsed arguments, returning an exit status or None).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from audio_vqvae.config import ConfigError
from audio_vqvae.errors import AudioVQVAEError
from audio_vqvae.options import OneLineErrorParser

COMMAND_MODULES = (
    "audio_vqvae.commands.data",        # prepare, demo-corpus
    "audio_vqvae.commands.generation",  # reconstruct, convert, encode, decode, speakers
    "audio_vqvae.commands.bench",       # bench
    "audio_vqvae.commands.evaluate",    # evaluate, compare
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(  # its sub-commands' parsers inherit the one-line errors
        prog="audio-vqvae",
        description="VQ-VAE with a WaveNet decoder: prepare corpora, encode speech to codes, "
                    "reconstruct it, convert it to other speakers' voices and evaluate a model.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except (AudioVQVAEError, ConfigError) as err:
        print(f"audio-vqvae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"audio-vqvae {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
