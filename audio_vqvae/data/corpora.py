"""The corpora the library reads, in one registry, and their scanners: VCTK 0.92 / 0.80, LibriSpeech,
"one folder per speaker" and the bundled demo corpus.

:data:`CORPORA` maps each name that ``--corpus`` and ``data.corpus`` accept to a :class:`Corpus`: its
scanner, default folder, expected layout and download hint. Config validation, ``prepare``, ``evaluate``
and the error messages all read it, so a new corpus is a scanner and an entry in this file
(docs/extending.md#adding-a-corpus).

Scanning reads directory listings, transcripts and speaker tables but never decodes audio; that is
:mod:`audio_vqvae.data.prepare`'s job. Irregularities of the real corpora are reported, not fatal:

* VCTK speakers without transcripts (p315) keep their audio with an empty text and a note;
* VCTK 0.92 utterances recorded with one microphone only fall back to the other one, with a note;
* files whose names do not follow the corpus's pattern are skipped with a reason.

Example:
    >>> scan = scan_corpus("vctk", "data/VCTK-Corpus-0.92")            # doctest: +SKIP
    >>> scan.layout, sorted(scan.speakers)[:2], scan.utterances[0].name  # doctest: +SKIP
    ('vctk-0.92', ['p225', 'p226'], 'p225_001')
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

from audio_vqvae.data.paths import default_data_dir
from audio_vqvae.errors import CorpusNotFoundError, InputError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
MICS = ("mic1", "mic2")
SCAN_OPTIONS = ("mic", "subsets")  # the prepare settings a scanner may take, by keyword

VCTK_URL = "https://datashare.ed.ac.uk/handle/10283/3443"
LIBRISPEECH_URL = "https://www.openslr.org/12"


@dataclass(frozen=True)
class SourceUtterance:
    """One audio file of a corpus, before decoding.

    Attributes:
        path: absolute path of the audio file.
        speaker: speaker name as the corpus writes it (``p225``, ``103``, a folder name).
        name: utterance id, unique in the corpus (``p225_001``, ``103-1240-0000``, ``alice/day1/take3``).
        key: the part of ``name`` that stays the same when another speaker reads the same prompt
            (``001`` in VCTK); the validation split prefers keys read by many speakers.
        text: transcript, ``""`` where the corpus has none.
        subset: LibriSpeech subset (``train-clean-100``); ``""`` for other corpora.
    """

    path: Path
    speaker: str
    name: str
    key: str
    text: str = ""
    subset: str = ""


@dataclass
class CorpusScan:
    """Everything found under a corpus root.

    Attributes:
        layout: ``"vctk-0.92"``, ``"vctk-0.80"``, ``"librispeech"`` or ``"folders"``.
        root: the corpus's base folder (the one holding ``wav48_silence_trimmed``, the subsets, ...).
        utterances: candidate files in a deterministic (sorted) order.
        speakers: speaker name -> metadata from the corpus's speaker table (gender, accent, ...).
        skipped: ``(path relative to root, reason)`` of files that will not be decoded.
        notes: ``(path relative to root, note)`` of files kept with a remark (no transcript, other mic).
    """

    layout: str
    root: Path
    utterances: list[SourceUtterance] = field(default_factory=list)
    speakers: dict[str, dict] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def relative(self, path: Path) -> str:
        """``path`` relative to the corpus root, with forward slashes (how reports name files)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


@dataclass(frozen=True)
class Corpus:
    """One entry of :data:`CORPORA`: a kind of corpus that ``prepare`` reads.

    Attributes:
        name: the value of ``--corpus`` and ``data.corpus``.
        summary: what it is, in a few words, for ``--corpus``'s help.
        folder: where it is looked for when no data root is given, relative to ``default_data_dir()``.
        layout: the tree it expects, in one line; a root that holds none gets it in the error.
        download: where to get it, in one line ("" where there is nothing to download).
        scan: ``scan(root, **options) -> CorpusScan``: finds the utterances under ``root`` (the corpus
            folder or the folder holding it) and raises :func:`corpus_not_found` where there are none.
        options: the prepare settings ``scan`` takes by keyword, of :data:`SCAN_OPTIONS`
            (``"mic"``: the VCTK 0.92 microphone, ``"subsets"``: LibriSpeech's); only these enter the
            cache's settings, so a corpus without them is not rebuilt when they change.
        build: for a corpus made here rather than downloaded: ``build(root or None, num_workers)``
            makes (or reuses) it and returns the folder to read as ``reads_as``.
        reads_as: with ``build``: the entry whose scanner, options and settings read what it makes.
    """

    name: str
    summary: str
    folder: str
    layout: str = ""
    download: str = ""
    scan: Optional[Callable[..., CorpusScan]] = None
    options: tuple[str, ...] = ()
    build: Optional[Callable[[Optional[Path], int], Path]] = None
    reads_as: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.options) - set(SCAN_OPTIONS))
        if unknown:
            raise ValueError(f"corpus {self.name!r}: unknown scan option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(SCAN_OPTIONS)}")
        if (self.scan is None) == (self.build is None) or bool(self.build) != bool(self.reads_as):
            raise ValueError(f"corpus {self.name!r}: give scan, or build with reads_as")


def scan_corpus(corpus: str, data_root: Union[str, Path], *, mic: str = "mic1",
                subsets: Sequence[str] = ()) -> CorpusScan:
    """Find the utterances of ``corpus`` under ``data_root``.

    Args:
        corpus: a name in :data:`CORPORA` (``"vctk"``: 0.92 or 0.80, told apart from the tree; ``"demo"``
            reads the built demo corpus as VCTK).
        data_root: the extracted corpus folder or the folder that contains it.
        mic: VCTK 0.92 microphone to prefer (``"mic1"`` or ``"mic2"``).
        subsets: LibriSpeech subsets to read (``"train-clean-100"``, ``"dev-clean"``, ...).

    Raises:
        InputError: unknown corpus, or ``data_root`` does not exist or holds no recognisable corpus of that kind.
    """
    entry = reader(corpus)
    if mic not in MICS:
        raise InputError(f"unknown VCTK microphone {mic!r}; expected mic1 or mic2")
    root = Path(data_root).expanduser()
    given = {"mic": mic, "subsets": tuple(subsets)}
    scan = entry.scan(root, **{option: given[option] for option in entry.options})
    if not scan.utterances:
        raise corpus_not_found(entry.name, root, "no audio files found")
    return scan


def corpus_not_found(corpus: str, root: Path, what: str) -> CorpusNotFoundError:
    """The one-line error for a missing or unrecognisable corpus root (the caller adds its own alternative)."""
    entry = get_corpus(corpus)
    download = f"; {entry.download}" if entry.download else ""
    return CorpusNotFoundError(f"{root}: {what}; expected {entry.layout}{download}")


def get_corpus(name: str) -> Corpus:
    """The registry entry of ``name``; an unknown name raises one line listing the known ones."""
    try:
        return CORPORA[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown corpus {name!r}; expected one of {', '.join(CORPORA)}") from None


def reader(name: str) -> Corpus:
    """The entry that reads corpus ``name``: its own, or for a built corpus (demo) the one it is read as."""
    entry = get_corpus(name)
    return get_corpus(entry.reads_as) if entry.build is not None else entry


def default_corpus_root(name: str) -> Path:
    """Where corpus ``name`` is looked for when no data root is given: ``default_data_dir() / folder``."""
    return default_data_dir() / get_corpus(name).folder


def locate_corpus(name: str, data_root: Optional[Union[str, Path]], *, num_workers: int = 2) -> tuple[Corpus, Path]:
    """The entry to read corpus ``name`` with and its root: ``data_root``, else the corpus's default folder.
    A built corpus (demo) is built there first, or reused, and read as the corpus it is laid out as."""
    entry = get_corpus(name)
    root = Path(data_root).expanduser() if data_root else None
    if entry.build is not None:
        return reader(name), entry.build(root, num_workers)
    return entry, root or default_corpus_root(name)


# --------------------------------------------------------------------------- VCTK

_VCTK_092_NAME = re.compile(r"^(?P<speaker>[A-Za-z0-9]+)_(?P<utt>[A-Za-z0-9]+)_(?P<mic>mic[12])$")
_VCTK_080_NAME = re.compile(r"^(?P<speaker>[A-Za-z0-9]+)_(?P<utt>[A-Za-z0-9]+)$")


def locate_vctk(root: Path) -> tuple[str, Path]:
    """Return ``(layout, base)``: ``"vctk-0.92"`` or ``"vctk-0.80"`` and the folder holding the audio folder."""
    for base in (root, root / "VCTK-Corpus-0.92", root / "VCTK-Corpus"):
        if (base / "wav48_silence_trimmed").is_dir():
            return "vctk-0.92", base
        if (base / "wav48").is_dir():
            return "vctk-0.80", base
    what = "folder does not exist" if not root.exists() else "no wav48_silence_trimmed/ (0.92) or wav48/ (0.80) folder"
    raise corpus_not_found("vctk", root, what)


def _scan_vctk(root: Path, *, mic: str) -> CorpusScan:
    layout, base = locate_vctk(root)
    scan = CorpusScan(layout=layout, root=base)
    scan.speakers = read_vctk_speaker_info(base / "speaker-info.txt")
    audio_dir = base / ("wav48_silence_trimmed" if layout == "vctk-0.92" else "wav48")
    pattern = _VCTK_092_NAME if layout == "vctk-0.92" else _VCTK_080_NAME
    expected = "<spk>_<utt>_mic1.flac" if layout == "vctk-0.92" else "<spk>_<utt>.wav"
    found_speakers = set()
    for entry in _sorted_entries(audio_dir):
        if not entry.is_dir():
            if entry.suffix.lower() in AUDIO_EXTENSIONS:
                scan.skipped.append((scan.relative(entry), "not inside a speaker folder"))
            continue  # wav48_silence_trimmed/log.txt and the like
        speaker = entry.name
        recordings: dict[str, dict[str, Path]] = {}
        for path in _sorted_entries(entry):
            if not path.is_file() or path.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            match = pattern.match(path.stem)
            if match is None or match["speaker"] != speaker:
                scan.skipped.append((scan.relative(path), f"unexpected file name (expected {expected})"))
                continue
            recordings.setdefault(match["utt"], {})[match.groupdict().get("mic") or "wav"] = path
        if recordings:
            found_speakers.add(speaker)
        for utt, by_mic in sorted(recordings.items()):
            if layout == "vctk-0.92":
                if mic in by_mic:
                    path = by_mic[mic]
                else:
                    other = next(iter(by_mic))
                    path = by_mic[other]
                    scan.notes.append((scan.relative(path), f"no {mic} recording; using {other}"))
            else:
                path = by_mic["wav"]
            name = f"{speaker}_{utt}"
            text_path = base / "txt" / speaker / f"{name}.txt"
            text = _read_text(text_path)
            if text is None:
                scan.notes.append((scan.relative(path), "no transcript"))
            scan.utterances.append(SourceUtterance(path=path, speaker=speaker, name=name, key=utt, text=text or ""))
    for speaker in sorted(set(scan.speakers) - found_speakers):
        scan.notes.append((f"speaker-info.txt:{speaker}", "speaker listed but has no recordings"))
    return scan


def read_vctk_speaker_info(path: Path) -> dict[str, dict]:
    """Parse VCTK's ``speaker-info.txt`` (``ID AGE GENDER ACCENTS REGION [COMMENTS]``, whitespace-separated).

    VCTK 0.80 writes ids without the ``p`` of the folder names (``225``); they are returned as
    folder names (``p225``). A missing file gives an empty table.
    """
    if not path.is_file():
        return {}
    speakers: dict[str, dict] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split()
        if not fields or fields[0].upper() == "ID":
            continue
        name = f"p{fields[0]}" if fields[0].isdigit() else fields[0]
        info: dict = {}
        if len(fields) > 1 and fields[1].isdigit():
            info["age"] = int(fields[1])
        if len(fields) > 2 and fields[2].upper() in ("M", "F"):
            info["gender"] = fields[2].upper()
        if len(fields) > 3:
            info["accent"] = fields[3]
        if len(fields) > 4:
            info["region"] = " ".join(fields[4:])
        speakers[name] = info
    return speakers


# --------------------------------------------------------------------------- LibriSpeech

_LIBRISPEECH_SUBSET = re.compile(r"^(train|dev|test)-(clean|other)(-\d+)?$")


def locate_librispeech(root: Path) -> Path:
    """Return the ``LibriSpeech`` folder (``root`` itself or ``root/LibriSpeech``)."""
    for base in (root / "LibriSpeech", root):
        if base.is_dir() and ((base / "SPEAKERS.TXT").is_file()
                              or any(_LIBRISPEECH_SUBSET.match(p.name) for p in base.iterdir() if p.is_dir())):
            return base
    what = ("folder does not exist" if not root.exists()
            else "no SPEAKERS.TXT or subset folders (train-clean-100, dev-clean, ...)")
    raise corpus_not_found("librispeech", root, what)


def _scan_librispeech(root: Path, *, subsets: Sequence[str]) -> CorpusScan:
    base = locate_librispeech(root)
    scan = CorpusScan(layout="librispeech", root=base)
    scan.speakers = read_librispeech_speakers(base / "SPEAKERS.TXT")
    available = sorted(p.name for p in base.iterdir() if p.is_dir() and _LIBRISPEECH_SUBSET.match(p.name))
    if not subsets:
        raise InputError(f"{base}: no LibriSpeech subsets requested; available: {', '.join(available) or 'none'}")
    for subset in dict.fromkeys(subsets):  # keeps order, drops repeats
        if not (base / subset).is_dir():
            raise InputError(f"{base}: LibriSpeech subset {subset!r} not found "
                             f"(available: {', '.join(available) or 'none'}); "
                             f"extract {subset}.tar.gz from {LIBRISPEECH_URL} there")
        for speaker_dir in _sorted_entries(base / subset):
            if not speaker_dir.is_dir():
                continue
            for chapter_dir in _sorted_entries(speaker_dir):
                if chapter_dir.is_dir():
                    _scan_librispeech_chapter(scan, chapter_dir, subset)
    return scan


def _scan_librispeech_chapter(scan: CorpusScan, chapter_dir: Path, subset: str) -> None:
    speaker, chapter = chapter_dir.parent.name, chapter_dir.name
    prefix = f"{speaker}-{chapter}"
    texts: dict[str, str] = {}
    transcript = chapter_dir / f"{prefix}.trans.txt"
    if transcript.is_file():
        for line in transcript.read_text(encoding="utf-8", errors="replace").splitlines():
            utt, _, text = line.strip().partition(" ")
            if utt:
                texts[utt] = text.strip()
    pattern = re.compile(rf"^{re.escape(prefix)}-\d+$")
    for path in _sorted_entries(chapter_dir):
        if not path.is_file() or path.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        if not pattern.match(path.stem):
            scan.skipped.append((scan.relative(path), f"unexpected file name (expected {prefix}-<utt>.flac)"))
            continue
        if path.stem not in texts:
            scan.notes.append((scan.relative(path), "no transcript"))
        scan.utterances.append(SourceUtterance(path=path, speaker=speaker, name=path.stem, key=path.stem,
                                               text=texts.get(path.stem, ""), subset=subset))


def read_librispeech_speakers(path: Path) -> dict[str, dict]:
    """Parse LibriSpeech's ``SPEAKERS.TXT`` (``ID | SEX | SUBSET | MINUTES | NAME``, ``;`` comments)."""
    if not path.is_file():
        return {}
    speakers: dict[str, dict] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [f.strip() for f in line.split("|", 4)]
        if len(fields) < 3 or not fields[0]:
            continue
        info: dict = {}
        if fields[1].upper() in ("M", "F"):
            info["gender"] = fields[1].upper()
        info["subset"] = fields[2]
        if len(fields) > 4 and fields[4]:
            info["reader"] = fields[4]
        speakers[fields[0]] = info
    return speakers


# --------------------------------------------------------------------------- one folder per speaker


def _scan_folders(root: Path) -> CorpusScan:
    if not root.is_dir():
        raise corpus_not_found("folders", root, "folder does not exist")
    scan = CorpusScan(layout="folders", root=root)
    for entry in _sorted_entries(root):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            if entry.suffix.lower() in AUDIO_EXTENSIONS:
                scan.skipped.append((scan.relative(entry), "not inside a speaker folder"))
            continue
        speaker = entry.name
        seen: dict[str, Path] = {}
        for path in sorted(entry.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            if any(part.startswith(".") for part in path.relative_to(entry).parts):
                continue
            key = path.relative_to(entry).with_suffix("").as_posix()
            if key in seen:
                duplicate = f"duplicate utterance (same name as {scan.relative(seen[key])})"
                scan.skipped.append((scan.relative(path), duplicate))
                continue
            seen[key] = path
            text = _read_text(path.with_suffix(".txt"))
            scan.utterances.append(SourceUtterance(path=path, speaker=speaker, name=f"{speaker}/{key}", key=key,
                                                   text=text or ""))
    return scan


# --------------------------------------------------------------------------- helpers


def _sorted_entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _read_text(path: Path) -> Optional[str]:
    try:
        return " ".join(path.read_text(encoding="utf-8", errors="replace").split())
    except (FileNotFoundError, IsADirectoryError):
        return None


def count_reasons(items: Iterable[tuple[str, str]]) -> Counter:
    """Count ``(path, reason)`` pairs by reason, ignoring details in parentheses."""
    return Counter(reason.split(" (")[0] for _, reason in items)


# --------------------------------------------------------------------------- the registry


def _build_demo(root: Optional[Path], num_workers: int) -> Path:
    from audio_vqvae.data.demo import make_demo_corpus  # demo.py imports this module

    return make_demo_corpus(root, num_workers=max(1, num_workers))


CORPORA: dict[str, Corpus] = {entry.name: entry for entry in (
    Corpus("vctk", summary="VCTK 0.92 or 0.80, told apart from the tree", folder="VCTK-Corpus-0.92",
           layout="VCTK 0.92: VCTK-Corpus-0.92/{wav48_silence_trimmed/<spk>/<spk>_<utt>_mic1.flac, "
                  "txt/<spk>/<spk>_<utt>.txt, speaker-info.txt} or VCTK 0.80: "
                  "VCTK-Corpus/{wav48/<spk>/<spk>_<utt>.wav, txt/, speaker-info.txt}",
           download=f"download VCTK from {VCTK_URL}", scan=_scan_vctk, options=("mic",)),
    Corpus("librispeech", summary="LibriSpeech, the subsets of --train-subsets and --valid-subsets",
           folder="LibriSpeech",
           layout="LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac with "
                  "<speaker>-<chapter>.trans.txt and LibriSpeech/SPEAKERS.TXT",
           download=f"download e.g. train-clean-100.tar.gz and dev-clean.tar.gz from {LIBRISPEECH_URL}",
           scan=_scan_librispeech, options=("subsets",)),
    Corpus("folders", summary="<root>/<speaker>/**/*.wav|flac|ogg, your own recordings", folder="speakers",
           layout="<root>/<speaker>/**/*.wav|flac|ogg, one folder per speaker (optional <utt>.txt transcript next "
                  "to each file)",
           scan=_scan_folders),
    Corpus("demo", summary="the bundled eSpeak NG corpus, built first", folder="demo", build=_build_demo,
           reads_as="vctk"),
)}
