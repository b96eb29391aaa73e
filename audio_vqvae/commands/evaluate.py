"""``audio-vqvae evaluate``: measure a checkpoint on the held-out split; JSON and markdown reports.
``audio-vqvae compare``: several such reports side by side, against the demo's targets."""

from __future__ import annotations

import argparse
from pathlib import Path

from audio_vqvae.data.corpora import CORPORA
from audio_vqvae.errors import CorpusNotFoundError, InputError
from audio_vqvae.options import COUNT, POSITIVE_INT, POSITIVE_SECONDS, SEED, TEMPERATURE, VOICED_NOISE, device


def cmd_evaluate(args: argparse.Namespace) -> int:
    from audio_vqvae.evaluation.evaluate import EvaluationSettings, evaluate
    from audio_vqvae.evaluation.listening import files_folder, page_path
    from audio_vqvae.evaluation.report import format_markdown, markdown_path, write_report, write_tensorboard

    out = Path(args.out)
    if out.suffix != ".json":
        raise InputError(f"{out}: --out must name a .json file (the markdown summary and the listening page go "
                         "next to it)")
    if any(path.is_dir() for path in (out, markdown_path(out), page_path(out))):
        raise InputError(f"{out}: --out, {markdown_path(out).name} and {page_path(out).name} next to it must be "
                         "files, not folders")
    if files_folder(page_path(out)).is_file():
        raise InputError(f"{files_folder(page_path(out))}: the listening page's audio folder is a file")
    from audio_vqvae.filesystem import check_writable  # every output, in one line, before minutes of work
    for path, folder in [(out, False), (markdown_path(out), False), (args.run_dir and Path(args.run_dir), True)]:
        path and check_writable(path, folder=folder)
    settings = EvaluationSettings(utterances=args.utterances, conversions=args.conversions, seconds=args.seconds,
                                  temperature=args.temperature, seed=args.seed,
                                  classifier_utterances=args.classifier_utterances,
                                  skip=tuple(name for name in (args.skip or "").split(",") if name),
                                  part=args.part, voiced_noise=args.voiced_noise)
    try:
        evaluation = evaluate(args.checkpoint, corpus=args.corpus, data_root=args.data_root, cache=args.cache,
                              settings=settings, device=args.device, progress=not args.no_progress)
    except CorpusNotFoundError as err:
        # A checkpoint is measured on its own corpus' held-out speakers; the demo corpus is no substitute.
        raise CorpusNotFoundError(f"{err}; pass --data-root with the folder of the corpus this checkpoint was "
                                  "trained on, or --cache with its prepared cache") from None
    markdown = write_report(evaluation, out)
    if args.run_dir:
        write_tensorboard(evaluation, args.run_dir)
    print(format_markdown(evaluation.report))
    print(f"wrote {out}, {markdown} and the listening page {page_path(out)}"
          + (f"; TensorBoard scalars eval/* in {args.run_dir}" if args.run_dir else ""))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from audio_vqvae.atomic import atomic_write
    from audio_vqvae.evaluation.compare import format_table, group_reports, load_reports

    if args.out is not None and (Path(args.out).suffix != ".md" or Path(args.out).is_dir()):
        raise InputError(f"{args.out}: --out must name a .md file")
    table = format_table(group_reports(load_reports(args.reports)))
    if args.out is not None:
        atomic_write(args.out, lambda file: file.write(table), text=True)
    print(table, end="")
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


def register(subparsers) -> None:
    """Add ``evaluate`` and ``compare`` to the ``audio-vqvae`` parser."""
    _register_compare(subparsers)
    parser = subparsers.add_parser(
        "evaluate", help="measure a checkpoint on the held-out split (likelihood, codes, reconstruction, conversion)",
        description="Evaluate a checkpoint on the held-out split of its corpus: teacher-forced bits per sample, "
                    "codebook use and bitrate, reconstruction distortion (MCD, LSD), speaker conversion judged by a "
                    "pretrained speaker encoder and two independent speaker classifiers next to f0-only controls, "
                    "predicted quality (DNSMOS), intelligibility (an independent phone recognizer, where the corpus "
                    "has alignments) and, on a parallel corpus, against the target speaker's own reading. Writes a "
                    "JSON report, a markdown summary and a listening page (report.html) next to it. "
                    "See docs/evaluation.md.")
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.pt) written by training")
    parser.add_argument("--out", required=True, help="report .json (the summary goes to the same name with .md, the "
                                                     "listening page to .html and its audio to <name>_files/)")
    parser.add_argument("--corpus", choices=tuple(CORPORA),
                        help="corpus to evaluate on (default: the one in the checkpoint's data config)")
    parser.add_argument("--data-root",
                        help="extracted corpus folder (default: the checkpoint's, else the standard place)")
    parser.add_argument("--cache", help="a prepared cache folder to read directly (overrides --corpus/--data-root)")
    parser.add_argument("--utterances", type=POSITIVE_INT, default=16,
                        help=f"held-out utterances used, round-robin over speakers, {POSITIVE_INT.range} (default 16)")
    parser.add_argument("--conversions", type=COUNT, default=2,
                        help=f"target speakers per utterance, {COUNT.range} (default 2)")
    parser.add_argument("--seconds", type=POSITIVE_SECONDS, default=2.0,
                        help="length of the generated clips, from the start of each utterance, "
                             f"{POSITIVE_SECONDS.range} (default 2)")
    parser.add_argument("--temperature", type=TEMPERATURE, default=1.0,
                        help=f"sampling temperature, {TEMPERATURE.range}; 0 = greedy (default 1)")
    parser.add_argument("--seed", type=SEED, default=0, help=f"random seed of the sampling, {SEED.range} (default 0)")
    parser.add_argument("--classifier-utterances", type=POSITIVE_INT, default=24,
                        help="real training utterances per speaker for the speaker classifiers, "
                             f"{POSITIVE_INT.range} (default 24)")
    parser.add_argument("--skip", metavar="JUDGE[,JUDGE]",
                        help="judges not to run (report sections, e.g. quality,speaker_encoder); every judge runs by "
                             "default")
    parser.add_argument("--part", choices=("all", "deterministic", "noise"), default="all",  # evaluate.PARTS
                        help="what generates: the whole decoder (all, the default); for a model with a harmonic "
                             "part, its deterministic part alone (the WaveNet's draws set to zero); or, for a model "
                             "with a noise envelope, its parts with white noise of the predicted level in place of "
                             "the WaveNet's draws: the last two show what the WaveNet adds")
    parser.add_argument("--voiced-noise", type=VOICED_NOISE, metavar="SCALE",
                        help="models with a noise envelope and f0: scale the drawn noise in voiced samples by this, "
                             f"{VOICED_NOISE.range} (default: the model's decoder.voiced_noise)")
    parser.add_argument("--run-dir", help="also write the figures (eval/*) and a few audio clips to TensorBoard here")
    # cpu by default, not auto: the report's figures then come from the same arithmetic on every machine.
    parser.add_argument("--device", type=device, default="cpu",
                        help="torch device of the model: cpu (the default), auto (cuda when a GPU is visible), cuda "
                             "or cuda:<index>")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=cmd_evaluate)


def _register_compare(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="evaluation reports side by side, one column per checkpoint, against the demo's targets",
        description="Print a markdown table of the reports that `audio-vqvae evaluate` wrote: one column per "
                    "checkpoint and evaluation setting, each seed's value joined with ' / ', the demo's targets and "
                    "how many of them every seed of a column meets. See docs/evaluation.md.")
    parser.add_argument("reports", nargs="+", metavar="[LABEL=]PATH",
                        help="a report (.json) or a folder of reports; LABEL= heads its column (default: the run "
                             "folder and step of the checkpoint)")
    parser.add_argument("--out", help="also write the table to this .md file")
    parser.set_defaults(func=cmd_compare)
