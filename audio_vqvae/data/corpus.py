"""Read a prepared corpus cache (see :mod:`audio_vqvae.data.prepare` for what it holds).

The audio array is memory-mapped lazily and never pickled, so a :class:`PreparedCorpus` travels
cheaply into DataLoader worker processes, each of which maps the file itself.

Example:
    >>> corpus = PreparedCorpus.open("/tmp/democache")          # doctest: +SKIP
    >>> item = corpus.split("train").utterance(0)              # doctest: +SKIP
    >>> item["audio"].dtype, item["speaker"], item["name"]      # doctest: +SKIP
    (dtype('float32'), 0, 'd01_001')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from audio_vqvae.atomic import atomic_write
from audio_vqvae.data.alignments import frame_labels
from audio_vqvae.data.cache_check import raise_if_damaged
from audio_vqvae.errors import InputError
from audio_vqvae.pitch import pitch_hop, sample_pitch

CACHE_FORMAT = 3  # 2: pitch.npy and the speakers' ln-f0 statistics; 3: trim_start, source_length, phones.npy
SPLITS = ("train", "valid")


class PreparedCorpus:
    """A finished preprocessing cache: int16 audio at one rate, an utterance index, speakers and splits.

    Attributes:
        cache_dir: the cache folder.
        manifest: settings, hashes and totals (``manifest.json``).
        sample_rate: rate of the stored audio in Hz.
        speakers: speaker table, each a JSON-able dict with ``id`` (0..N-1), ``name`` and corpus
            metadata (``gender``, ``accent``, ``region``, ``age``, ``subset``, ``reader``) where known,
            ``utterances``, ``seconds`` and ``held_out``.
        utterances: index records with ``name``, ``speaker`` (name), ``offset``, ``length``,
            ``text``, ``source`` (path relative to the corpus root).
        phones: the phone inventory of the alignments (label per phone id); empty without alignments.
    """

    def __init__(self, cache_dir: Path, manifest: dict, utterances: list[dict], speakers: list[dict],
                 splits: dict):
        self.cache_dir = cache_dir
        self.manifest = manifest
        self.sample_rate: int = int(manifest["sample_rate"])
        self.utterances = utterances
        self.speakers = speakers
        self._ids = {speaker["name"]: speaker["id"] for speaker in speakers}
        self._splits = {name: np.asarray(splits[name], dtype=np.int64) for name in SPLITS}
        self._audio: Optional[np.ndarray] = None
        self._pitch: Optional[np.ndarray] = None
        self.pitch_hop = pitch_hop(self.sample_rate)
        self._offsets = np.asarray([u["offset"] for u in utterances], dtype=np.int64)
        self._lengths = np.asarray([u["length"] for u in utterances], dtype=np.int64)
        self._speaker_ids = np.asarray([self._ids[u["speaker"]] for u in utterances], dtype=np.int64)
        self.phones: list[str] = []
        self._phone_rows: list[Optional[list[int]]] = [None] * len(utterances)
        self._phone_table: Optional[np.ndarray] = None
        if manifest.get("alignments"):
            index = read_json(cache_dir / "phones.json")
            if index.get("hash") != manifest["alignments"]["hash"] or len(index["utterances"]) != len(utterances):
                raise InputError(f"{cache_dir}: phones.json does not match manifest.json (interrupted update?); "
                                 "run `audio-vqvae prepare` again")
            self.phones = list(index["inventory"])
            self._phone_rows = index["utterances"]
            self._phone_table = np.load(cache_dir / "phones.npy")

    @classmethod
    def open(cls, cache_dir: Union[str, Path]) -> "PreparedCorpus":
        """Open a finished cache.

        Raises:
            InputError: no cache there, an unfinished one, or one whose files disagree.
        """
        cache_dir = Path(cache_dir).expanduser()
        try:
            manifest = read_json(cache_dir / "manifest.json")
        except FileNotFoundError:
            raise InputError(f"{cache_dir}: no prepared corpus (manifest.json missing); "
                             "run `audio-vqvae prepare` first") from None
        except json.JSONDecodeError:
            raise InputError(f"{cache_dir}/manifest.json: not valid JSON; run `audio-vqvae prepare` again") from None
        if manifest.get("format") != CACHE_FORMAT:
            raise InputError(f"{cache_dir}: cache format {manifest.get('format')!r}, expected {CACHE_FORMAT}; "
                             "run `audio-vqvae prepare` again")
        index = {}
        for name in ("utterances.json", "speakers.json", "splits.json"):
            try:
                index[name] = read_json(cache_dir / name)
            except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise InputError(f"{cache_dir / name}: incomplete cache ({err}); run `audio-vqvae prepare` again "
                                 "with the same settings (it rebuilds what is damaged)") from None
        utterances, speakers, splits = index["utterances.json"], index["speakers.json"], index["splits.json"]
        if splits.get("split_hash") != manifest.get("split_hash") or len(utterances) != manifest["num_utterances"]:
            raise InputError(f"{cache_dir}: index files do not match manifest.json (interrupted update?); "
                             "run `audio-vqvae prepare` again")
        raise_if_damaged(cache_dir, manifest, utterances)  # sizes, .npy headers, offsets: cheap, no checksums
        return cls(cache_dir, manifest, utterances, speakers, splits)

    @property
    def audio(self) -> np.ndarray:
        """All stored audio, int16[total_samples], memory-mapped."""
        if self._audio is None:
            self._audio = np.load(self.cache_dir / "audio.npy", mmap_mode="r")
        return self._audio

    @property
    def pitch(self) -> np.ndarray:
        """All pitch frames, float32[total_frames x 2] (f0 in Hz, measured phase), memory-mapped."""
        if self._pitch is None:
            self._pitch = np.load(self.cache_dir / "pitch.npy", mmap_mode="r")
        return self._pitch

    def f0(self, index: int) -> np.ndarray:
        """f0 of utterance ``index`` in Hz per 10 ms frame (0 where unvoiced), float32[F]."""
        record = self.utterances[index]
        return np.array(self.pitch[record["pitch_offset"]:record["pitch_offset"] + record["pitch_frames"], 0])

    def pitch_rows(self, index: int, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Sample-rate ``(phase, f0, voiced)`` rows of utterance ``index`` over ``[start, stop)``: float32[3 x T].

        The phase passes through the phases measured in the audio (training inputs aligned with its
        pulses); see :func:`audio_vqvae.pitch.sample_pitch`.
        """
        record = self.utterances[index]
        length = int(self._lengths[index])
        stop = length if stop is None else min(stop, length)
        frames = np.asarray(self.pitch[record["pitch_offset"]:record["pitch_offset"] + record["pitch_frames"]])
        return sample_pitch(frames[:, 0], self.sample_rate, max(0, stop - start), self.pitch_hop,
                            phase=frames[:, 1], start=start)

    @property
    def has_alignments(self) -> bool:
        """True when some utterance has phone alignments."""
        return any(rows is not None for rows in self._phone_rows)

    def is_aligned(self, index: int) -> bool:
        return self._phone_rows[index] is not None

    def phone_segments(self, index: int) -> np.ndarray:
        """Phones of utterance ``index``: int32[N x 3] rows ``(start, stop, phone id)`` in samples of its stored
        audio, in time order; empty where it has no alignment. ``self.phones[id]`` is the label."""
        rows = self._phone_rows[index]
        if rows is None or self._phone_table is None:
            return np.zeros((0, 3), np.int32)
        return self._phone_table[rows[0]:rows[0] + rows[1]]

    def frame_phones(self, index: int, hop_length: int, num_frames: Optional[int] = None) -> np.ndarray:
        """Phone id at the centre of each ``hop_length`` frame of utterance ``index``: int64[F], -1 where none.

        ``num_frames`` defaults to ``length // hop_length`` (the frames an encoder of that hop gives).
        """
        if num_frames is None:
            num_frames = int(self._lengths[index]) // hop_length
        return frame_labels(self.phone_segments(index), num_frames, hop_length)

    @property
    def report(self) -> dict:
        """What preprocessing kept, rejected (``rejected``: path and reason), warned about and noted."""
        return read_json(self.cache_dir / "report.json")

    @property
    def settings_hash(self) -> str:
        return self.manifest["settings_hash"]

    @property
    def num_speakers(self) -> int:
        return len(self.speakers)

    def speaker_id(self, name: str) -> int:
        """Integer id of speaker ``name``.

        Raises:
            InputError: unknown speaker (the message lists some known ones).
        """
        try:
            return self._ids[name]
        except KeyError:
            known = sorted(self._ids)
            raise InputError(f"unknown speaker {name!r}; known: {', '.join(known[:20])}"
                             f"{' ...' if len(known) > 20 else ''}") from None

    def split(self, name: str) -> "CorpusSplit":
        """The ``"train"`` or ``"valid"`` utterances."""
        if name not in self._splits:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return CorpusSplit(self, name, self._splits[name])

    def samples(self, index: int, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Audio of utterance ``index`` (over all splits), samples ``[start, stop)``, float32 in [-1, 1]."""
        offset, length = int(self._offsets[index]), int(self._lengths[index])
        stop = length if stop is None else min(stop, length)
        return self.audio[offset + start:offset + stop].astype(np.float32) / 32768.0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_audio"] = None  # a memmap would be pickled as a full copy; each process maps the file again
        state["_pitch"] = None
        return state

    def __repr__(self) -> str:
        return (f"PreparedCorpus({str(self.cache_dir)!r}, {len(self.utterances)} utterances, "
                f"{len(self.speakers)} speakers, {self.sample_rate} Hz)")


class CorpusSplit:
    """The utterances of one split. ``len()`` counts utterances; ``utterance(i)`` decodes nothing.

    Attributes:
        name: ``"train"`` or ``"valid"``.
        indices: int64[N] indices of the split's utterances in ``corpus.utterances``.
        lengths: int64[N] lengths in samples.
        speaker_ids: int64[N] speaker ids.
    """

    def __init__(self, corpus: PreparedCorpus, name: str, indices: np.ndarray):
        self.corpus = corpus
        self.name = name
        self.indices = indices
        self.lengths = corpus._lengths[indices]
        self.speaker_ids = corpus._speaker_ids[indices]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def total_samples(self) -> int:
        return int(self.lengths.sum())

    @property
    def seconds(self) -> float:
        return self.total_samples / self.corpus.sample_rate

    def utterance(self, i: int) -> dict[str, Any]:
        """Utterance ``i`` of the split.

        Returns:
            ``{"audio": float32[T] in [-1, 1], "speaker": int id, "speaker_name": str, "name": str, "text": str}``.
        """
        index = int(self.indices[i])
        record = self.corpus.utterances[index]
        return {"audio": self.corpus.samples(index), "speaker": int(self.speaker_ids[i]),
                "speaker_name": record["speaker"], "name": record["name"], "text": record["text"]}

    def samples(self, i: int, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Samples ``[start, stop)`` of utterance ``i`` of the split, float32 in [-1, 1]."""
        return self.corpus.samples(int(self.indices[i]), start, stop)

    def pitch_rows(self, i: int, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """``(phase, f0, voiced)`` rows of utterance ``i`` of the split over ``[start, stop)``: float32[3 x T]."""
        return self.corpus.pitch_rows(int(self.indices[i]), start, stop)

    def __repr__(self) -> str:
        return f"CorpusSplit({self.name!r}, {len(self)} utterances, {self.seconds / 60:.1f} min)"


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to a temporary file next to ``path``, then rename it over ``path``."""
    atomic_write(path, lambda handle: json.dump(data, handle, ensure_ascii=False, indent=1), text=True)
