"""Sub-commands ``reconstruct``, ``convert``, ``encode``, ``decode`` and ``speakers``: their arguments.

What they generate, with which speaker and pitch, is planned and run by :mod:`audio_vqvae.generation.jobs`
(the speaker of an input from its file name, the f0 it is spoken with); the codes files ``encode``
writes and ``decode`` reads are :mod:`audio_vqvae.generation.codes_file`. ``reconstruct`` without
``--speaker`` takes the speaker from the file name, or asks for ``--speaker``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from audio_vqvae.errors import InputError
from audio_vqvae.filesystem import check_writable
from audio_vqvae.generation.codes_file import check_codes_path, encode_file, read_codes_file, write_codes_file
from audio_vqvae.generation.jobs import Job, conversion_jobs, job_pitch, run_jobs, speaker_from_file_name, speaker_names
from audio_vqvae.options import POSITIVE_INT, SEED, TEMPERATURE, VOICED_NOISE, Number, device

# Four octaves either way covers any voice; beyond that the f0 leaves the range pitch tracking reports.
PITCH_SHIFT = Number(float, minimum=-48.0, maximum=48.0)


# ------------------------------------------------------------------ shared helpers


def _check_method(args: argparse.Namespace) -> None:
    """``--method fused`` is CPU only, and ``--device`` defaults to the GPU where there is one: say so in one line."""
    if args.method == "fused" and torch.device(args.device).type != "cpu":
        raise InputError(f"--method fused runs on the CPU, but the model would be on {args.device}; "
                         "add --device cpu (or use --method auto)")


def _voiced_noise(model, args: argparse.Namespace) -> None:
    """Apply ``--voiced-noise`` (the checkpoint's ``decoder.voiced_noise`` without it), or say in one line why not."""
    from audio_vqvae.config import ConfigError

    if args.voiced_noise is not None:
        try:
            model.set_voiced_noise(args.voiced_noise)
        except ConfigError as err:
            raise InputError(f"{args.checkpoint}: --voiced-noise: {err}") from None


def _load(checkpoint: str, device: str = "cpu"):
    from audio_vqvae.checkpoint import load_model

    return load_model(checkpoint, map_location=device)


def _load_for_encoding(checkpoint: str, device: str = "cpu"):
    """The model and the speech level its training audio was prepared at (``data.level_db`` of the run; -24 dBFS,
    prepare's default, for a checkpoint that does not say), at which its inputs are read."""
    from audio_vqvae.checkpoint import load_checkpoint, model_from_checkpoint
    from audio_vqvae.data.audio import DEFAULT_LEVEL_DB

    payload = load_checkpoint(checkpoint, map_location=device)
    data = (payload.get("experiment") or {}).get("data") or {}
    return model_from_checkpoint(payload, checkpoint, device), data.get("level_db", DEFAULT_LEVEL_DB)


def resolve_speakers(model, names: str) -> list[tuple[str, int]]:
    """``"p226,p231"`` -> [(name, id), ...]; an unknown name raises one line listing the known ones."""
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    if not wanted:
        raise InputError("--speaker is empty")
    try:
        return [(name, model.speaker_id(name)) for name in wanted]
    except KeyError as err:  # the model's message names the known speakers
        raise InputError(err.args[0]) from None


def _input_files(folder: Path) -> list[Path]:
    from audio_vqvae.generation.audio_io import audio_extensions

    extensions = audio_extensions()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise InputError(f"{folder}: no audio files found (looked for {', '.join(sorted(extensions))})")
    return files


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.pt) written by training")
    parser.add_argument("--temperature", type=TEMPERATURE, default=1.0,
                        help=f"sampling temperature, {TEMPERATURE.range}; 0 = greedy (default 1.0)")
    parser.add_argument("--seed", type=SEED, default=0, help=f"random seed of the sampling, {SEED.range} (default 0)")
    parser.add_argument("--method", choices=("auto", "fused", "torch", "graph"), default="auto",
                        help="generation path: fused CPU kernels, PyTorch queues, the PyTorch step in a CUDA graph, "
                             "or auto (the default): fused on CPU, graph on CUDA for a model without an LPC split or "
                             "harmonic part (the graph does not generate those yet), torch otherwise")
    _add_device(parser)
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=16,
                        help=f"utterances generated at once, {POSITIVE_INT.range} (default 16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--voiced-noise", type=VOICED_NOISE, metavar="SCALE",
                        help="models with a noise envelope and f0: scale the drawn noise in voiced samples by this, "
                             f"{VOICED_NOISE.range} (default: the model's decoder.voiced_noise)")
    parser.add_argument("--pitch-shift", type=PITCH_SHIFT, default=0.0, metavar="SEMITONES",
                        help="models with pitch input: shift the f0 spoken with by this many semitones, "
                             f"{PITCH_SHIFT.range} (default 0)")


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device, default="auto",
                        help="torch device of the model: auto (cuda when a GPU is visible, else cpu; the default), "
                             "cpu, cuda or cuda:<index>")


def _add_keep_pitch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-pitch", action="store_true",
                        help="models with pitch input: keep the source's f0 contour instead of moving it to the "
                             "target speaker's range")


# ------------------------------------------------------------------ commands


def cmd_reconstruct(args: argparse.Namespace) -> int:
    _check_method(args)
    check_writable(Path(args.output))  # before any work
    model, level_db = _load_for_encoding(args.checkpoint, args.device)
    _voiced_noise(model, args)
    path = Path(args.input)
    if args.speaker:
        name, speaker = resolve_speakers(model, args.speaker)[0]
    else:
        name = speaker_from_file_name(model, path)
        if name is None:
            raise InputError(f"{path.name}: cannot tell the speaker from the file name; pass --speaker "
                             f"(known speakers: {', '.join(speaker_names(model))})")
        speaker = model.speaker_id(name)
    encoded = encode_file(model, path, level_db)
    # Reconstruction keeps the speaker, so the file's own contour (shifted by --pitch-shift, if asked).
    job = Job(encoded.codes, speaker, Path(args.output), args.seed,
              job_pitch(model, encoded, speaker, keep_pitch=True, semitones=args.pitch_shift))
    run_jobs(model, [job], args.temperature, args.method, args.batch_size, not args.no_progress)
    print(f"{args.output}: reconstructed with speaker {name}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    _check_method(args)
    source, output = Path(args.input), Path(args.output)
    check_writable(output, folder=output.is_dir() or source.is_dir())  # before any work (and again for a folder)
    model, level_db = _load_for_encoding(args.checkpoint, args.device)
    _voiced_noise(model, args)
    targets = resolve_speakers(model, args.speaker)
    if source.is_dir():
        files = _input_files(source)
        to_folder = True
    elif source.is_file():
        files = [source]
        to_folder = len(targets) > 1 or output.is_dir()
    else:
        raise InputError(f"{source}: input not found")
    if to_folder and output.exists() and not output.is_dir():
        raise InputError(f"{output}: exists and is not a folder (several outputs need a folder)")
    check_writable(output, folder=to_folder)

    def destination(path: Path, name: str) -> Path:
        if not to_folder:
            return output
        relative = path.relative_to(source).with_suffix("") if source.is_dir() else Path(path.stem)
        return output / relative.parent / f"{relative.name}_to_{name}.wav"

    # Every input is read before anything is generated.
    jobs = conversion_jobs(model, files, targets, destination, seed=args.seed, keep_pitch=args.keep_pitch,
                           semitones=args.pitch_shift, level_db=level_db)
    run_jobs(model, jobs, args.temperature, args.method, args.batch_size, not args.no_progress)
    print(f"converted {len(files)} file(s) to {', '.join(name for name, _ in targets)}: {len(jobs)} output file(s) "
          f"in {output if to_folder else output.parent}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    output = Path(args.output)
    check_writable(output)  # before any work
    model, level_db = _load_for_encoding(args.checkpoint, args.device)
    check_codes_path(model, output)
    encoded = encode_file(model, Path(args.input), level_db)
    write_codes_file(model, output, encoded)
    from audio_vqvae.evaluation.metrics import code_statistics

    codes = encoded.codes
    num_codes = model.config.quantizer.num_codes
    # The figure evaluate and validation report: the entropy of the code use times the frame rate, next
    # to the ceiling log2 K x frame rate that full, uniform use would reach.
    usage = code_statistics(np.bincount(codes.numpy(), minlength=num_codes), model.config.frame_rate)
    print(f"{args.output}: {codes.shape[0]} frames at {model.config.frame_rate:g} frames/s, "
          f"{usage.codes_used} of {num_codes} codes used, code bitrate {usage.bitrate:,.0f} bits/s "
          f"(entropy of this file's codes; max {usage.bitrate_max:,.0f})")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    _check_method(args)
    check_writable(Path(args.output))  # before any work
    model = _load(args.checkpoint, args.device)
    _voiced_noise(model, args)
    name, speaker = resolve_speakers(model, args.speaker)[0]
    encoded = read_codes_file(model, Path(args.input))
    job = Job(encoded.codes, speaker, Path(args.output), args.seed,
              job_pitch(model, encoded, speaker, keep_pitch=args.keep_pitch, semitones=args.pitch_shift))
    run_jobs(model, [job], args.temperature, args.method, args.batch_size, not args.no_progress)
    seconds = encoded.codes.shape[0] * model.hop_length / model.config.sample_rate
    print(f"{args.output}: {seconds:.2f} s with speaker {name}")
    return 0


def cmd_speakers(args: argparse.Namespace) -> int:
    from audio_vqvae.checkpoint import load_checkpoint

    speakers = load_checkpoint(args.checkpoint)["speakers"]
    extra = sorted({key for entry in speakers for key in entry} - {"id", "name"})
    print("\t".join(["id", "name"] + extra))
    for entry in speakers:
        print("\t".join(str(entry.get(key, "")) for key in ["id", "name"] + extra))
    return 0


def register(subparsers) -> None:
    """Add the generation sub-commands to the ``audio-vqvae`` parser."""
    parser = subparsers.add_parser(
        "reconstruct", help="encode a file and regenerate it with its own speaker",
        description="Encode an audio file to codes and generate it again with its own speaker. The speaker comes "
                    "from --speaker, or from the file name: it must start with a training speaker's name followed "
                    "by _, - or the end of the name (p225_001.wav is p225).")
    _add_generation_options(parser)
    parser.add_argument("--input", required=True, help="audio file (any format soundfile reads, any rate)")
    parser.add_argument("--output", required=True, help="output .wav at the model rate")
    parser.add_argument("--speaker", help="speaker to regenerate with (default: from the file name, e.g. p225_001.wav)")
    parser.set_defaults(func=cmd_reconstruct)

    parser = subparsers.add_parser("convert", help="convert speech to other speakers' voices")
    _add_generation_options(parser)
    parser.add_argument("--input", required=True, help="audio file or folder (searched recursively)")
    parser.add_argument("--speaker", required=True, help="target speaker name(s), comma separated: p226,p231")
    parser.add_argument("--output", required=True,
                        help="output .wav for one file and one speaker; otherwise a folder of <name>_to_<speaker>.wav")
    _add_keep_pitch(parser)
    parser.set_defaults(func=cmd_convert)

    parser = subparsers.add_parser("encode", help="audio file -> codes (.npy); prints frames, codes used and bitrate")
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.pt)")
    parser.add_argument("--input", required=True, help="audio file")
    parser.add_argument("--output", required=True,
                        help="codes file: .npy (int64, one code per frame), or .npz with the f0 for a model "
                             "with pitch input")
    _add_device(parser)
    parser.set_defaults(func=cmd_encode)

    parser = subparsers.add_parser("decode", help="codes (.npy) + speaker -> audio")
    _add_generation_options(parser)
    parser.add_argument("--input", required=True, help="codes file (.npy, or .npz with f0) written by encode")
    parser.add_argument("--speaker", required=True, help="speaker name")
    parser.add_argument("--output", required=True, help="output .wav")
    _add_keep_pitch(parser)
    parser.set_defaults(func=cmd_decode)

    parser = subparsers.add_parser("speakers", help="list a checkpoint's speaker table")
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.pt)")
    parser.set_defaults(func=cmd_speakers)
