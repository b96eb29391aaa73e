"""``audio-vqvae prepare`` and ``audio-vqvae demo-corpus``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Iterator

from audio_vqvae.data.corpora import CORPORA, default_corpus_root
from audio_vqvae.data.demo import make_demo_corpus
from audio_vqvae.data.paths import default_data_dir
from audio_vqvae.data.prepare import prepare_corpus
from audio_vqvae.errors import CorpusNotFoundError
from audio_vqvae.filesystem import disk_full_cause, disk_full_error
from audio_vqvae.options import COUNT, Number, display_command

# Telephone band to studio rates; outside it a rate is a typo (16 for 16000).
SAMPLE_RATE = Number(int, minimum=4000, maximum=192000)
TRIM_DB = Number(float, above=0.0, maximum=120.0)
LEVEL_DB = Number(float, minimum=-60.0, maximum=0.0)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data sub-commands to the ``audio-vqvae`` parser."""
    prepare = subparsers.add_parser(
        "prepare", help="decode, resample, trim and cache a corpus for training",
        description="Decode a corpus once (mono, resampled, silence-trimmed, level-normalised) into a cache "
                    "that training memory-maps. Re-running with the same settings reuses the cache; "
                    "bad files are skipped and listed in <out>/prepare.log. The options are the training config's "
                    "data settings of the same names (--trim-silence-db: data.trim_silence_db; --out: "
                    "data.cache_dir; --sample-rate: model.sample_rate).")
    prepare.add_argument("--corpus", required=True, choices=tuple(CORPORA),
                         help="; ".join(f"{entry.name}: {entry.summary}" for entry in CORPORA.values()))
    prepare.add_argument("--data-root", type=Path, default=None,
                         help=f"extracted corpus (default: {default_data_dir()}/"
                              f"{{{','.join(entry.folder for entry in CORPORA.values())}}})")
    prepare.add_argument("--out", type=Path, default=None,
                         help=f"cache folder (default: {default_data_dir()}/cache/<corpus>-<settings hash>)")
    prepare.add_argument("--sample-rate", type=SAMPLE_RATE, default=16000,
                         help=f"model sample rate in Hz, {SAMPLE_RATE.range} (default 16000)")
    trim = prepare.add_mutually_exclusive_group()
    _accept_former(trim, "--trim-db", trim.add_argument(
        "--trim-silence-db", type=TRIM_DB, default=40.0,
        help=f"trim leading/trailing audio this many dB below the loudest frame, {TRIM_DB.range} (default 40)"))
    trim.add_argument("--no-trim", action="store_true", help="keep leading and trailing silence")
    prepare.add_argument("--level-db", type=LEVEL_DB, default=-24.0,
                         help=f"speech RMS level in dBFS, {LEVEL_DB.range} (default -24)")
    _accept_former(prepare, "--valid-utterances", prepare.add_argument(
        "--valid-utterances-per-speaker", type=COUNT, default=2,
        help=f"utterances per speaker held out for validation, {COUNT.range} (default 2)"))
    prepare.add_argument("--valid-speakers", default="", help="comma-separated speakers held out entirely")
    _accept_former(prepare, "--subsets", prepare.add_argument(
        "--train-subsets", default="train-clean-100",
        help="LibriSpeech training subsets, comma-separated (default train-clean-100)"))
    prepare.add_argument("--valid-subsets", default="",
                         help="LibriSpeech validation subsets, comma-separated (e.g. dev-clean); "
                              "replace the per-speaker hold-out")
    prepare.add_argument("--mic", choices=("mic1", "mic2"), default="mic1", help="VCTK 0.92 microphone (default mic1)")
    _accept_former(prepare, "--workers", prepare.add_argument(
        "--prepare-workers", type=COUNT, default=2,
        help=f"decoding processes, {COUNT.range}; 0 or 1 decodes in this process (default 2)"))
    prepare.add_argument("--alignments", type=Path, default=None,
                         help="phone alignments to store with the cache: a folder of Praat TextGrids (as the "
                              "Montreal Forced Aligner writes them, a 'phones' tier) and/or ZeroSpeech .item files, "
                              "matched to utterances by id (default: those the cache has, else <corpus>/alignments, "
                              "which the demo corpus has)")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(func=run_prepare)

    demo = subparsers.add_parser(
        "demo-corpus", help="synthesise the bundled demo corpus (eSpeak NG, VCTK 0.92 layout)",
        description="Synthesise 8 eSpeak NG speakers reading the same Harvard sentences (about 9.4 minutes) "
                    "in the VCTK 0.92 layout. Reuses an existing, complete corpus unless --force.")
    demo.add_argument("--out", type=Path, default=None,
                      help=f"folder that will hold VCTK-Corpus-0.92 (default: {default_corpus_root('demo')})")
    demo.add_argument("--force", action="store_true", help="rebuild even if the corpus exists")
    demo.add_argument("--workers", type=COUNT, default=2,
                      help=f"synthesis processes, {COUNT.range}; 0 or 1: one process (default 2)")
    demo.set_defaults(func=run_demo_corpus)


def _accept_former(parser: argparse._ActionsContainer, spelling: str, option: argparse.Action) -> None:
    """Accept ``spelling``, the option's name before the flags took the names of the data settings, without
    listing it in the help."""
    parser.add_argument(spelling, dest=option.dest, type=option.type, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


@contextlib.contextmanager
def _log_to_stderr() -> Iterator[None]:
    """Show the data package's log lines (skipped files, summaries) for the duration of a command."""
    logger = logging.getLogger("audio_vqvae.data")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


def run_prepare(args: argparse.Namespace) -> int:
    with _log_to_stderr():
        try:
            return _prepare(args)
        except CorpusNotFoundError as err:
            raise CorpusNotFoundError(f"{err}; or, without any download: {display_command('audio-vqvae')} prepare "
                                      "--corpus demo (builds the bundled demo corpus)") from None
        except OSError as err:  # a log or index file appended to in place (the cache files are written atomically)
            if disk_full_cause(err) is None:
                raise
            raise disk_full_error(err.filename or args.out or default_data_dir()) from err


def _prepare(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    prepared = prepare_corpus(args.corpus, args.data_root, args.out, sample_rate=args.sample_rate,
                              trim_silence_db=None if args.no_trim else args.trim_silence_db, level_db=args.level_db,
                              valid_utterances_per_speaker=args.valid_utterances_per_speaker,
                              valid_speakers=_list(args.valid_speakers), train_subsets=_list(args.train_subsets),
                              valid_subsets=_list(args.valid_subsets), mic=args.mic,
                              prepare_workers=args.prepare_workers, alignments=args.alignments,
                              progress=not args.quiet)
    print(f"{prepared.cache_dir} ready in {time.perf_counter() - start:.1f} s")
    return 0


def run_demo_corpus(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    with _log_to_stderr():
        path = make_demo_corpus(args.out, force=args.force, num_workers=args.workers)
    print(f"{path} ({time.perf_counter() - start:.1f} s)")
    return 0
