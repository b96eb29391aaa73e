"""Sub-commands ``reconstruct``, ``convert``, ``encode``, ``decode`` and ``speakers``.

Speaker of the input (``reconstruct`` without ``--speaker``): the file name must start with a
training speaker's name followed by ``_``, ``-`` or the end of the name (``p225_001.wav`` -> ``p225``);
the longest matching name wins. Otherwise the command asks for ``--speaker``.

Pitch, for a model whose decoder takes a source excitation (``decoder.excitation_harmonics``): the
input's f0 is tracked (:func:`audio_vqvae.pitch.track_pitch`) and, when the output speaker differs,
moved from the source's ln-f0 distribution to the target's (the source's statistics come from the
speaker table when the file name names a training speaker, otherwise from the file itself);
``--keep-pitch`` keeps the source's contour and ``--pitch-shift`` adds semitones either way.

Codes files: ``encode`` writes ``.npy`` (int64 codes, one per frame) for a model without pitch input,
and ``.npz`` for one with it: ``codes`` int64[T'], ``f0`` float32[F] in Hz per 10 ms frame (0 where
unvoiced, frame i centred on sample ``i * sample_rate / 100``), ``log_f0`` float64[2] (the source's
ln-f0 mean and spread) and ``sample_rate``. ``decode`` reads either.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from audio_vqvae.errors import InputError
from audio_vqvae.filesystem import check_writable
from audio_vqvae.options import POSITIVE_INT, SEED, TEMPERATURE, Number, device

# Four octaves either way covers any voice; beyond that the f0 leaves the range pitch tracking reports.
PITCH_SHIFT = Number(float, minimum=-48.0, maximum=48.0)

PROGRESS_MIN_SECONDS = 1.0  # progress bars only for generations longer than this much audio


# ------------------------------------------------------------------ shared helpers


def _check_method(args: argparse.Namespace) -> None:
    """``--method fused`` is CPU only, and ``--device`` defaults to the GPU where there is one: say so in one line."""
    if args.method == "fused" and torch.device(args.device).type != "cpu":
        raise InputError(f"--method fused runs on the CPU, but the model would be on {args.device}; "
                         "add --device cpu (or use --method auto)")


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


def speaker_names(model) -> list[str]:
    return [str(entry["name"]) for entry in model.speakers]


def resolve_speakers(model, names: str) -> list[tuple[str, int]]:
    """``"p226,p231"`` -> [(name, id), ...]; an unknown name raises one line listing the known ones."""
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    if not wanted:
        raise InputError("--speaker is empty")
    try:
        return [(name, model.speaker_id(name)) for name in wanted]
    except KeyError as err:  # the model's message names the known speakers
        raise InputError(err.args[0]) from None


def speaker_from_file_name(model, path: Path) -> Optional[str]:
    """The longest speaker name that the file name starts with, followed by ``_``, ``-`` or nothing."""
    stem = path.stem
    matches = [name for name in speaker_names(model)
               if stem == name or stem.startswith(name + "_") or stem.startswith(name + "-")]
    return max(matches, key=len) if matches else None


@dataclass
class Job:
    """One utterance to generate: its codes, the target speaker, where the audio goes and, for a model
    with a source excitation, the ``(phase, f0, voiced)`` rows to speak with."""

    codes: torch.Tensor  # LongTensor[T']
    speaker: int
    output: Path
    seed: int
    pitch: Optional[np.ndarray] = None  # float32[3 x T' * hop]


@dataclass
class Encoded:
    """An input file's codes and, for a model with a source excitation, its f0 track and ln-f0 statistics."""

    codes: torch.Tensor  # LongTensor[T']
    f0: Optional[np.ndarray] = None  # float32[F], Hz per 10 ms frame, 0 unvoiced
    log_f0: Optional[tuple[float, float]] = None


def job_pitch(model, encoded: Encoded, speaker: int, *, keep_pitch: bool, semitones: float,
              source_stats: Optional[tuple[float, float]] = None) -> Optional[np.ndarray]:
    """The rows a job speaks with: the input's f0, moved to ``speaker`` unless it is the source's own or
    ``keep_pitch``, shifted by ``semitones``; None for a model without a source excitation."""
    from audio_vqvae.pitch import generation_pitch, pitch_hop, speaker_log_f0

    if not model.needs_pitch:
        return None
    rate = model.config.sample_rate
    length = encoded.codes.shape[0] * model.hop_length
    stats = {}
    source = source_stats or encoded.log_f0
    if not keep_pitch and source is not None and source != _table_stats(model, speaker):
        try:
            stats = {"source": source, "target": speaker_log_f0(model.speakers[speaker])}
        except ValueError as err:
            raise InputError(f"the checkpoint's speaker table: {err}") from None
    return generation_pitch(encoded.f0, rate, length, pitch_hop(rate), semitones=semitones, **stats)


def _table_stats(model, speaker: int) -> Optional[tuple[float, float]]:
    from audio_vqvae.pitch import speaker_log_f0

    try:
        return speaker_log_f0(model.speakers[speaker])
    except ValueError:
        return None


def run_jobs(model, jobs: Sequence[Job], temperature: float, method: str, batch_size: int, progress: bool) -> None:
    """Generate every job (batched by similar length) and write each output file atomically."""
    from audio_vqvae.generation.audio_io import save_audio

    hop, rate = model.hop_length, model.config.sample_rate
    order = sorted(range(len(jobs)), key=lambda i: jobs[i].codes.shape[0])
    total = sum(job.codes.shape[0] * hop for job in jobs)
    bar = None
    if progress and total / rate > PROGRESS_MIN_SECONDS:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="sample", unit_scale=True, desc="generating", file=sys.stderr, leave=False)
    try:
        for first in range(0, len(order), batch_size):
            batch = [jobs[i] for i in order[first:first + batch_size]]
            lengths = [job.codes.shape[0] * hop for job in batch]
            steps = max(lengths)
            # Everything on the model's device: the fused engine for CPU tensors, the PyTorch path elsewhere.
            device = next(model.parameters()).device
            codes = torch.zeros(len(batch), max(job.codes.shape[0] for job in batch), dtype=torch.long)
            for row, job in enumerate(batch):
                codes[row, :job.codes.shape[0]] = job.codes
            pitch = None
            if model.needs_pitch:
                pitch = torch.zeros(len(batch), 3, steps)
                for row, job in enumerate(batch):
                    pitch[row, :, :lengths[row]] = torch.from_numpy(job.pitch)
                pitch = pitch.to(device)
            done = [0]

            def report(steps_done: int) -> None:
                if bar is not None:
                    bar.update(sum(min(steps_done, n) for n in lengths) - done[0])
                    done[0] = sum(min(steps_done, n) for n in lengths)

            # One utterance per row, each on its own codes and length (model.decode pads after each end).
            audio = model.decode(codes.to(device), torch.tensor([job.speaker for job in batch], device=device),
                                 temperature=temperature, seeds=[job.seed for job in batch], method=method,
                                 progress=report, pitch=pitch, lengths=lengths)
            for row, job in enumerate(batch):
                save_audio(job.output, audio[row, :lengths[row]], rate)
    finally:
        if bar is not None:
            bar.close()


def _encode_file(model, path: Path, level_db: Optional[float]) -> Encoded:
    """Codes (and f0) of an audio file, read as training audio was prepared: at speech level ``level_db``."""
    from audio_vqvae.generation.audio_io import load_audio
    from audio_vqvae.pitch import log_f0_stats, track_pitch

    audio = load_audio(path, model.config.sample_rate, level_db=level_db)
    if audio.shape[0] < model.hop_length:
        raise InputError(f"{path}: too short: {audio.shape[0]} samples, the model needs at least {model.hop_length}")
    codes = model.encode(audio.unsqueeze(0).to(next(model.parameters()).device))[0].cpu()
    if not model.needs_pitch:
        return Encoded(codes)
    f0 = track_pitch(audio.numpy(), model.config.sample_rate).f0
    if not (f0 > 0).any():
        raise InputError(f"{path}: no voiced frame found (the model speaks with the input's pitch; "
                         "unvoiced-only audio such as whisper or noise has none)")
    return Encoded(codes, f0, log_f0_stats(f0))


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
                             "or the fastest for the device (default: fused on CPU, graph on CUDA)")
    _add_device(parser)
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=16,
                        help=f"utterances generated at once, {POSITIVE_INT.range} (default 16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    path = Path(args.input)
    if args.speaker:
        name, speaker = resolve_speakers(model, args.speaker)[0]
    else:
        name = speaker_from_file_name(model, path)
        if name is None:
            raise InputError(f"{path.name}: cannot tell the speaker from the file name; pass --speaker "
                             f"(known speakers: {', '.join(speaker_names(model))})")
        speaker = model.speaker_id(name)
    encoded = _encode_file(model, path, level_db)
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
    jobs = []
    for path in files:
        encoded = _encode_file(model, path, level_db)  # every input is read before anything is generated
        known = speaker_from_file_name(model, path)
        source_stats = _table_stats(model, model.speaker_id(known)) if known else None
        for name, speaker in targets:
            if to_folder:
                relative = path.relative_to(source).with_suffix("") if source.is_dir() else Path(path.stem)
                destination = output / relative.parent / f"{relative.name}_to_{name}.wav"
            else:
                destination = output
            jobs.append(Job(encoded.codes, speaker, destination, args.seed + len(jobs),
                            job_pitch(model, encoded, speaker, keep_pitch=args.keep_pitch, semitones=args.pitch_shift,
                                      source_stats=source_stats)))
    run_jobs(model, jobs, args.temperature, args.method, args.batch_size, not args.no_progress)
    print(f"converted {len(files)} file(s) to {', '.join(name for name, _ in targets)}: {len(jobs)} output file(s) "
          f"in {output if to_folder else output.parent}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    import io

    from audio_vqvae.atomic import atomic_write_bytes

    output = Path(args.output)
    check_writable(output)  # before any work
    model, level_db = _load_for_encoding(args.checkpoint, args.device)
    wanted = ".npz" if model.needs_pitch else ".npy"
    if output.suffix != wanted:
        raise InputError(f"{output}: this model's codes file is {wanted} "
                         f"({'codes and f0' if model.needs_pitch else 'codes only'}); name the output *{wanted}")
    encoded = _encode_file(model, Path(args.input), level_db)
    codes = encoded.codes
    arrays = {}
    if model.needs_pitch:
        arrays = {"codes": codes.numpy().astype(np.int64), "f0": encoded.f0.astype(np.float32),
                  "log_f0": np.asarray(encoded.log_f0, np.float64),
                  "sample_rate": np.asarray(model.config.sample_rate, np.int64)}
    buffer = io.BytesIO()
    if model.needs_pitch:
        np.savez(buffer, **arrays)
    else:
        np.save(buffer, codes.numpy().astype(np.int64))
    atomic_write_bytes(output, buffer.getbuffer())
    from audio_vqvae.evaluation.metrics import code_statistics

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
    name, speaker = resolve_speakers(model, args.speaker)[0]
    path = Path(args.input)
    if not path.is_file():
        raise InputError(f"{path}: codes file not found")
    encoded = _read_codes_file(model, path)
    codes = encoded.codes.numpy()
    num_codes = model.config.quantizer.num_codes
    if codes.ndim != 1 or codes.size == 0 or not np.issubdtype(codes.dtype, np.integer):
        raise InputError(f"{path}: expected a non-empty 1-D integer array of codes, got {codes.dtype} {codes.shape}")
    if codes.min() < 0 or codes.max() >= num_codes:
        raise InputError(f"{path}: codes must lie in [0, {num_codes}), got {codes.min()}..{codes.max()}")
    job = Job(torch.from_numpy(codes.astype(np.int64)), speaker, Path(args.output), args.seed,
              job_pitch(model, encoded, speaker, keep_pitch=args.keep_pitch, semitones=args.pitch_shift))
    run_jobs(model, [job], args.temperature, args.method, args.batch_size, not args.no_progress)
    print(f"{args.output}: {codes.shape[0] * model.hop_length / model.config.sample_rate:.2f} s with speaker {name}")
    return 0


def _read_codes_file(model, path: Path) -> Encoded:
    """A codes file written by ``encode``: ``.npy`` codes, or ``.npz`` codes with f0 (see the module docstring)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path}: not a codes file written by encode ({str(err).splitlines()[0]})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        if model.needs_pitch:
            raise InputError(f"{path}: holds codes only, but this model speaks with the source's f0; "
                             "encode the audio again with this checkpoint (it writes codes and f0 to a .npz)")
        codes = loaded
        if codes.ndim != 1 or codes.size == 0 or not np.issubdtype(codes.dtype, np.integer):
            raise InputError(f"{path}: expected a non-empty 1-D integer array of codes, "
                             f"got {codes.dtype} {codes.shape}")
        return Encoded(torch.from_numpy(codes.astype(np.int64)))
    with loaded:
        missing = {"codes", "f0", "log_f0", "sample_rate"} - set(loaded.files)
        if missing:
            raise InputError(f"{path}: a codes file needs arrays codes, f0, log_f0 and sample_rate; "
                             f"missing {', '.join(sorted(missing))}")
        codes, f0, log_f0 = loaded["codes"], loaded["f0"], loaded["log_f0"]
        rate = int(loaded["sample_rate"])
    if codes.ndim != 1 or codes.size == 0 or not np.issubdtype(codes.dtype, np.integer):
        raise InputError(f"{path}: expected a non-empty 1-D integer array of codes, got {codes.dtype} {codes.shape}")
    if rate != model.config.sample_rate:
        raise InputError(f"{path}: written for a {rate} Hz model, "
                         f"this checkpoint runs at {model.config.sample_rate} Hz")
    if f0.ndim != 1 or not np.isfinite(f0).all() or (f0 < 0).any() or log_f0.shape != (2,) \
            or not np.isfinite(log_f0).all():
        raise InputError(f"{path}: f0 must be a 1-D array of finite Hz values >= 0 and log_f0 two finite numbers")
    if not model.needs_pitch:
        return Encoded(torch.from_numpy(codes.astype(np.int64)))
    stats = (float(log_f0[0]), float(log_f0[1]))
    return Encoded(torch.from_numpy(codes.astype(np.int64)), f0.astype(np.float32), stats)


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
