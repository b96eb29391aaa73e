"""Phone alignments: read them (Praat TextGrids, ZeroSpeech ``.item`` files), match them to utterances, move
them onto the cached audio and store them with a cache (:func:`attach_alignments`).

Researchers' forced alignments come in two formats, both read here:

* **TextGrid** as written by the Montreal Forced Aligner: one ``<utterance>.TextGrid`` per audio file,
  in speaker folders, with a ``phones`` tier (``<speaker> - phones`` when MFA aligned several speakers
  per file). Read with ``praatio`` (which MFA itself uses to write them), long or short format;
* **ZeroSpeech / ABX ``.item``**: a header line, then ``file onset offset phone prev-phone next-phone
  speaker`` per line, times in seconds from the start of the file named by ``file``.

The demo corpus writes TextGrids of the phonemes eSpeak NG reports while it speaks
(:mod:`audio_vqvae.data.demo`), so it goes through exactly the path a real corpus does.

Labels are kept as the aligner wrote them except for two normalisations that make phone inventories
comparable: silence (an empty interval, ``sil``, ``sp``, ``<eps>``, eSpeak's pauses ``_``, ``_:``, ...)
becomes ``sil``, and ARPAbet stress digits are dropped (``AH0`` and ``AH1`` are both ``AH``), as in the
phone sets papers report on.

Example:
    >>> found = read_alignments("data/VCTK-alignments")                  # doctest: +SKIP
    >>> found.alignments[0].key, found.alignments[0].segments[0]          # doctest: +SKIP
    ('p225/p225_001', PhoneSegment(start=0.0, end=0.31, phone='sil'))
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from audio_vqvae.atomic import atomic_write
from audio_vqvae.data.cache_check import file_record
from audio_vqvae.data.settings import digest, file_size
from audio_vqvae.errors import InputError

logger = logging.getLogger(__name__)

SILENCE = "sil"
ITEM_HEADER = "#file onset offset #phone prev-phone next-phone speaker"
TIME_TOLERANCE_SECONDS = 0.02  # aligners round times to 10 ms frames; a little past the end is not an error
_SILENCE_LABELS = {"", "sil", "sp", "<eps>", "<sil>", "silence", "pau", "h#"}
_ARPABET_STRESS = re.compile(r"^([A-Z]{1,3})[012]$")


@dataclass(frozen=True)
class PhoneSegment:
    """One phone of an alignment: ``[start, end)`` in seconds from the start of the source audio file."""

    start: float
    end: float
    phone: str


@dataclass
class Alignment:
    """The phones of one audio file as an alignment file gives them.

    Attributes:
        key: the id it names: for a TextGrid its path relative to the alignments folder without the
            extension (``p225/p225_001_mic1``), for an ``.item`` file the file column.
        path: where it was read (for reports), relative to the alignments folder.
        segments: the phones in time order.
    """

    key: str
    path: str
    segments: list[PhoneSegment]


@dataclass
class AlignmentSet:
    """Everything read from an alignments folder: the alignments and a one-line problem per bad one."""

    alignments: list[Alignment] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, problem)


class AlignmentFileError(ValueError):
    """An alignment file that cannot be used (unreadable, no phone tier, inverted times)."""


def normalise_phone(label: str) -> str:
    """One spelling per phone: silences become ``sil``, ARPAbet stress digits and eSpeak stress marks go.

    Example:
        >>> [normalise_phone(p) for p in ["AH0", "", "sp", "_:", "'u:", "tS", "spn"]]
        ['AH', 'sil', 'sil', 'sil', 'u:', 'tS', 'spn']
    """
    label = label.strip()
    if label.lower() in _SILENCE_LABELS or label.startswith("_"):
        return SILENCE
    match = _ARPABET_STRESS.match(label)
    if match:
        return match.group(1)
    return label.lstrip("',") or SILENCE


def read_textgrid(path: Union[str, Path]) -> list[PhoneSegment]:
    """The ``phones`` tier of a TextGrid (empty intervals as ``sil``), in time order.

    Raises:
        AlignmentFileError: unreadable file, no phone tier, or an interval that ends before it starts.
    """
    from praatio import textgrid

    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    except Exception as err:  # praatio raises many types for malformed files; all mean "cannot read"
        raise AlignmentFileError(f"cannot read TextGrid ({type(err).__name__}: {str(err)[:80]})") from None
    names = list(grid.tierNames)
    tier_name = next((n for n in names if n.lower() == "phones"), None) or next(
        (n for n in names if n.lower().endswith(" - phones")), None)
    if tier_name is None:
        raise AlignmentFileError(f"no 'phones' tier (tiers: {', '.join(names) or 'none'})")
    tier = grid.getTier(tier_name)
    if not hasattr(tier, "intervals") and not hasattr(tier, "entries"):
        raise AlignmentFileError(f"tier {tier_name!r} is not an interval tier")
    segments = []
    for start, end, label in tier.entries:
        if end < start:
            raise AlignmentFileError(f"interval {label!r} ends ({end} s) before it starts ({start} s)")
        if end > start:
            segments.append(PhoneSegment(float(start), float(end), normalise_phone(label)))
    return _merged(segments)


def read_item_file(path: Union[str, Path], relative: str) -> AlignmentSet:
    """The phones of every file an ``.item`` file lists; a malformed line is a problem, not an error.

    Args:
        path: the ``.item`` file.
        relative: its name in reports.
    """
    found = AlignmentSet()
    by_file: dict[str, list[PhoneSegment]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        found.problems.append((relative, f"cannot read .item file ({err.__class__.__name__})"))
        return found
    for number, line in enumerate(lines[1:], start=2):  # line 1 is the header
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 7:
                raise ValueError(f"{len(fields)} columns, expected 7 ({ITEM_HEADER})")
            onset, offset = float(fields[1]), float(fields[2])
            if not offset > onset >= 0:
                raise ValueError(f"onset {fields[1]} / offset {fields[2]} are not 0 <= onset < offset")
        except ValueError as err:
            found.problems.append((f"{relative}:{number}", str(err)))
            continue
        by_file.setdefault(fields[0], []).append(PhoneSegment(onset, offset, normalise_phone(fields[3])))
    for key, segments in by_file.items():
        found.alignments.append(Alignment(key=key, path=relative, segments=sorted(segments, key=lambda s: s.start)))
    return found


def read_alignments(source: Union[str, Path]) -> AlignmentSet:
    """Read every ``*.TextGrid`` and ``*.item`` under ``source`` (a folder, or one such file).

    Raises:
        FileNotFoundError: ``source`` does not exist.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(source)
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    base = source.parent if source.is_file() else source
    found = AlignmentSet()
    for path in files:
        relative = path.relative_to(base).as_posix()
        suffix = path.suffix.lower()
        if suffix == ".textgrid":
            try:
                segments = read_textgrid(path)
            except AlignmentFileError as err:
                found.problems.append((relative, str(err)))
                continue
            found.alignments.append(Alignment(key=relative[:-len(path.suffix)], path=relative, segments=segments))
        elif suffix == ".item":
            part = read_item_file(path, relative)
            found.alignments += part.alignments
            found.problems += part.problems
    return found


def write_textgrid(path: Union[str, Path], segments: Sequence[PhoneSegment], duration: float) -> None:
    """Write ``segments`` as a long-format TextGrid with one ``phones`` tier (silence as ``sil``)."""
    from praatio import textgrid
    from praatio.data_classes.interval_tier import IntervalTier

    grid = textgrid.Textgrid()
    entries = [(round(s.start, 6), round(s.end, 6), s.phone) for s in segments if s.end > s.start]
    grid.addTier(IntervalTier("phones", entries, 0.0, round(duration, 6)))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.save(str(path), format="long_textgrid", includeBlankSpaces=True)


def match_alignments(found: AlignmentSet, utterances: Sequence[dict], sample_rate: int
                     ) -> tuple[dict[int, Alignment], list[tuple[str, str]]]:
    """Pair alignments with cached utterances by id; one problem line for each that cannot be used.

    An alignment matches an utterance when its key is the utterance's name or its source file without
    the extension (``p225/p225_001_mic1``), or when the last part of its key is the name or the source
    file's stem and only one utterance has it. It is refused when it matches nothing, when a second
    alignment names the same utterance, or when its times fall outside the audio file.

    Args:
        found: what :func:`read_alignments` read.
        utterances: ``utterances.json`` records with ``name``, ``source``, ``source_length``.
        sample_rate: the cache rate (``source_length`` is in its samples).

    Returns:
        ``(utterance index -> alignment, [(path, problem), ...])``.
    """
    exact: dict[str, int] = {}
    by_stem: dict[str, set[int]] = {}
    for index, record in enumerate(utterances):
        source = str(record.get("source") or record["name"])
        without_ext = source.rsplit(".", 1)[0] if "." in Path(source).name else source
        for key in (record["name"], without_ext):
            exact.setdefault(key, index)
        for stem in (record["name"].rsplit("/", 1)[-1], Path(source).stem):
            by_stem.setdefault(stem, set()).add(index)
    matched: dict[int, Alignment] = {}
    problems = list(found.problems)
    for alignment in found.alignments:
        index = exact.get(alignment.key)
        if index is None:
            candidates = by_stem.get(alignment.key.rsplit("/", 1)[-1], set())
            if len(candidates) > 1:
                problems.append((alignment.path, f"{alignment.key!r} names {len(candidates)} utterances; "
                                                 "give the speaker folder as MFA writes it"))
                continue
            index = next(iter(candidates), None)
        if index is None:
            problems.append((alignment.path, f"no utterance {alignment.key!r} in the corpus"))
            continue
        record = utterances[index]
        if index in matched:
            problems.append((alignment.path, f"a second alignment of {record['name']} (first: {matched[index].path})"))
            continue
        if not alignment.segments:
            problems.append((alignment.path, f"no phones for {record['name']}"))
            continue
        duration = record["source_length"] / sample_rate
        end, start = max(s.end for s in alignment.segments), min(s.start for s in alignment.segments)
        if end > duration + TIME_TOLERANCE_SECONDS or start < 0:
            problems.append((alignment.path, f"phones of {record['name']} span {start:.3f}-{end:.3f} s, outside its "
                                             f"audio (0-{duration:.3f} s); wrong file or another rate?"))
            continue
        matched[index] = alignment
    return matched, problems


def cache_segments(segments: Sequence[PhoneSegment], *, sample_rate: int, trim_start: int, length: int,
                   phone_ids: dict[str, int]) -> np.ndarray:
    """Move an alignment of a source file onto its cached audio: int32[N x 3] rows ``(start, stop, phone id)``.

    The cache stored samples ``[trim_start, trim_start + length)`` of the file resampled to
    ``sample_rate``; times in seconds become samples at that rate (resampling only rescales them),
    then shift by ``trim_start`` and are clipped to the stored audio. Phones wholly outside it vanish.
    New labels get the next id in ``phone_ids`` (updated in place).
    """
    rows = []
    for segment in segments:
        start = max(0, round(segment.start * sample_rate) - trim_start)
        stop = min(length, round(segment.end * sample_rate) - trim_start)
        if stop > start:
            rows.append((start, stop, phone_ids.setdefault(segment.phone, len(phone_ids))))
    return np.asarray(rows, dtype=np.int32).reshape(-1, 3)


def frame_labels(segments: np.ndarray, num_frames: int, hop_length: int) -> np.ndarray:
    """The phone id at the centre of each frame of ``hop_length`` samples: int64[num_frames], -1 where none.

    Args:
        segments: int[N x 3] ``(start, stop, phone id)`` rows in time order (:func:`cache_segments`).
        num_frames: frames wanted (frame t covers samples ``[t*hop, (t+1)*hop)``).
        hop_length: samples per frame.
    """
    labels = np.full(num_frames, -1, dtype=np.int64)
    if len(segments) == 0 or num_frames == 0:
        return labels
    centres = np.arange(num_frames) * hop_length + hop_length // 2
    row = np.searchsorted(segments[:, 0], centres, side="right") - 1
    inside = (row >= 0) & (centres < segments[np.maximum(row, 0), 1])
    labels[inside] = segments[row[inside], 2]
    return labels


def _merged(segments: list[PhoneSegment]) -> list[PhoneSegment]:
    """Adjacent silences as one (a pause phone next to an empty interval is one stretch of silence)."""
    out: list[PhoneSegment] = []
    for segment in segments:
        if out and segment.phone == SILENCE == out[-1].phone and abs(segment.start - out[-1].end) < 1e-9:
            out[-1] = PhoneSegment(out[-1].start, segment.end, SILENCE)
        else:
            out.append(segment)
    return out


def espeak_segments(events: Sequence[tuple[int, str]], *, length: int, sample_rate: int) -> list[PhoneSegment]:
    """Phone segments from eSpeak NG's phoneme events.

    Args:
        events: ``(sample, mnemonic)`` per phoneme event, the sample counted from the start of the
            written file; each phoneme lasts until the next event.
        length: samples in the written file.
        sample_rate: eSpeak's rate.

    Returns:
        Segments covering ``[0, length)`` in seconds: silence before the first phoneme, the last one
        (eSpeak ends every utterance on a pause) to the end of the file.
    """
    starts = [sample for sample, _ in events] + [length]
    segments = [PhoneSegment(0.0, starts[0] / sample_rate, SILENCE)] if events else []
    for (sample, label), start, stop in zip(events, starts, starts[1:]):
        segments.append(PhoneSegment(start / sample_rate, stop / sample_rate, normalise_phone(label)))
    return _merged([s for s in segments if s.end > s.start])


def phone_inventory(phone_ids: dict[str, int]) -> list[str]:
    """Labels in id order."""
    return [label for label, _ in sorted(phone_ids.items(), key=lambda item: item[1])]


# --------------------------------------------------------------------------- stored with a cache


def alignment_source(asked: Optional[Union[str, Path]], manifest: Optional[dict], root: Path) -> Optional[Path]:
    """The alignments to attach: the ones asked for, else those the cache was made with, else ``root/alignments``.

    Raises:
        InputError: ``asked`` does not exist.
    """
    if asked is not None:
        path = Path(asked).expanduser().resolve()
        if not path.exists():
            raise InputError(f"--alignments {asked}: no such folder or file")
        return path
    previous = ((manifest or {}).get("alignments") or {}).get("source")
    if previous and Path(previous).exists():
        return Path(previous)
    default = root / "alignments"
    return default.resolve() if default.is_dir() else None


def attach_alignments(cache_dir: Path, source: Optional[Path], manifest: dict, *, force: bool = False) -> dict:
    """Read the alignments under ``source``, move them onto the cached utterances and store them.

    Writes ``phones.npy`` (int32 rows ``(start, stop, phone id)``, samples of each utterance's stored
    audio) and ``phones.json`` (``inventory``, per utterance ``[first row, rows]`` or None, ``problems``),
    and returns ``manifest`` recording them (the caller writes it, last). Nothing is decoded; unchanged
    alignment files are not read again unless ``force`` (the stored ones are damaged). ``source`` None removes
    the stored alignments.
    Every alignment that matches no utterance, names one twice or whose times fall outside the audio
    is left out with one logged line (also in ``phones.json`` and ``prepare.log``).
    """
    # Here, not at the top: corpus.py imports this module (frame_labels).
    from audio_vqvae.data.corpus import read_json, write_json_atomic

    if source is None:
        for name in ("phones.npy", "phones.json"):
            (cache_dir / name).unlink(missing_ok=True)
        files = {k: v for k, v in (manifest.get("files") or {}).items() if k not in ("phones.npy", "phones.json")}
        return dict({k: v for k, v in manifest.items() if k != "alignments"}, files=files)
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*")
                                                     if p.suffix.lower() in (".textgrid", ".item"))
    alignments_hash = digest({"processing": manifest["processing_hash"], "source": str(source),
                              "files": [(str(p), file_size(p), p.stat().st_mtime_ns) for p in files]})
    if (manifest.get("alignments") or {}).get("hash") == alignments_hash and not force:
        return manifest
    utterances = read_json(cache_dir / "utterances.json")
    rate = int(manifest["sample_rate"])
    matched, problems = match_alignments(read_alignments(source), utterances, rate)
    phone_ids: dict[str, int] = {}
    rows, index_rows, row = [], [], 0
    for index, record in enumerate(utterances):
        if index not in matched:
            index_rows.append(None)
            continue
        segments = cache_segments(matched[index].segments, sample_rate=rate, trim_start=record["trim_start"],
                                  length=record["length"], phone_ids=phone_ids)
        rows.append(segments)
        index_rows.append([row, len(segments)])
        row += len(segments)
    table = np.concatenate(rows) if rows else np.zeros((0, 3), np.int32)
    atomic_write(cache_dir / "phones.npy", lambda handle: np.save(handle, table))
    for path, problem in problems:
        logger.warning("alignment %s: %s", path, problem)
    write_json_atomic(cache_dir / "phones.json", {"hash": alignments_hash, "source": str(source),
                                                  "inventory": phone_inventory(phone_ids), "utterances": index_rows,
                                                  "problems": [{"path": p, "problem": q} for p, q in problems]})
    with open(cache_dir / "prepare.log", "a", encoding="utf-8") as log:
        log.writelines(f"alignment\t{path}\t{problem}\n" for path, problem in problems)
    aligned = len(matched)
    logger.info("alignments from %s: %d of %d utterances, %d phones, %d problem(s)", source, aligned,
                len(utterances), len(phone_ids), len(problems))
    files = dict(manifest.get("files") or {}, **{name: file_record(cache_dir / name)
                                                 for name in ("phones.npy", "phones.json")})
    return dict(manifest, files=files, alignments={
        "hash": alignments_hash, "source": str(source), "aligned_utterances": aligned, "phones": len(phone_ids),
        "problems": len(problems)})
