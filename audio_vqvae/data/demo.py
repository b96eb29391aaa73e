"""The bundled demo corpus: a small parallel multi-speaker corpus synthesised with eSpeak NG.

Eight synthetic speakers (four male and four female voice variants; American, English RP,
Lancashire, Scottish and Caribbean accents) read the same 24 Harvard sentences (IEEE 1969,
public domain) plus 4 sentences of their own, about 9.4 minutes in all. The corpus uses the VCTK 0.92
layout, so the VCTK code path reads it:

    demo/VCTK-Corpus-0.92/
        wav48_silence_trimmed/d01/d01_001_mic1.flac   (22,050 Hz, eSpeak's native rate)
        txt/d01/d01_001.txt
        speaker-info.txt
        alignments/d01/d01_001.TextGrid   the phonemes eSpeak NG spoke, as MFA writes them (a "phones" tier)
        sentences.tsv       utterance number -> sentence and which speakers read it
        demo.json           generator version and settings; written last (marks a complete corpus)

Utterance number ``NNN`` is sentence ``NNN`` for every speaker: ``001``-``024`` are read by all,
the others by one speaker only. eSpeak NG comes from the ``espeakng-loader`` wheel (library and voice
data), called through ctypes in a fresh process per speaker (:mod:`audio_vqvae.data.espeak_worker`),
so the caller's process never loads it and every file is reproducible. eSpeak NG's phoneme events
(the mnemonic and sample offset of every phoneme it speaks) become the TextGrids in ``alignments/``,
which ``prepare`` carries onto the cached audio (:mod:`audio_vqvae.data.alignments`).

Example:
    >>> root = make_demo_corpus()                           # doctest: +SKIP
    >>> sorted(p.name for p in (root / "txt").iterdir())[:3]  # doctest: +SKIP
    ['d01', 'd02', 'd03']
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import shutil
import subprocess
import sys
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

from audio_vqvae.data import espeak_worker
from audio_vqvae.data.alignments import espeak_segments, write_textgrid
from audio_vqvae.data.corpora import default_corpus_root
from audio_vqvae.errors import InputError

logger = logging.getLogger(__name__)

DEMO_GENERATOR_VERSION = 2  # 2: alignments/ (the audio is the same sample for sample as version 1's)
CORPUS_FOLDER = "VCTK-Corpus-0.92"
SHARED_SENTENCES = 24
OWN_SENTENCES = 4
PAD_SECONDS = 0.1  # silence added either side, like the short margins of VCTK 0.92's trimmed files


@dataclass(frozen=True)
class DemoVoice:
    """One synthetic speaker: an eSpeak NG voice+variant with its own speaking rate and pitch."""

    speaker: str
    voice: str
    gender: str
    accent: str
    region: str
    rate: int    # words per minute
    pitch: int   # 0..100, eSpeak's base pitch
    range: int   # 0..100, eSpeak's pitch range


DEMO_VOICES = (
    DemoVoice("d01", "en-us+m3", "M", "American", "General American", 165, 40, 50),
    DemoVoice("d02", "en-us+f2", "F", "American", "General American", 170, 60, 60),
    DemoVoice("d03", "en-gb-x-rp+m1", "M", "English", "Received Pronunciation", 155, 35, 45),
    DemoVoice("d04", "en-gb-x-rp+f4", "F", "English", "Received Pronunciation", 160, 65, 55),
    DemoVoice("d05", "en-gb-scotland+m4", "M", "Scottish", "Scotland", 150, 45, 40),
    DemoVoice("d06", "en-gb-scotland+f3", "F", "Scottish", "Scotland", 165, 55, 65),
    DemoVoice("d07", "en-029+m7", "M", "Caribbean", "West Indies", 145, 50, 55),
    DemoVoice("d08", "en-gb-x-gbclan+f5", "F", "English", "Lancashire", 155, 70, 50),
)

# Harvard sentences, lists 1-7 (IEEE Recommended Practice for Speech Quality Measurements, 1969; public domain).
HARVARD_SENTENCES = (
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.", "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.", "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.", "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.", "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.", "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.", "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.", "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.", "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.", "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.", "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.", "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.", "What joy there is in living.",
    "A king ruled the state in the early days.", "The ship was torn apart on the sharp reef.",
    "Sickness kept him home the third week.", "The wide road shimmered in the hot sun.",
    "The lazy cow lay in the cool grass.", "Lift the square stone over the fence.",
    "The rope will bind the seven books at once.", "Hop over the fence and plunge in.",
    "The friendly gang left the drug store.", "Mesh wire keeps chicks inside.",
    "The frosty air passed through the coat.", "The crooked maze failed to fool the mouse.",
    "Adding fast leads to wrong sums.", "The show was a flop from the very start.",
    "A saw is a tool used for making boards.", "The wagon moved on well oiled wheels.",
    "March the soldiers past the next hill.", "A cup of sugar makes sweet fudge.",
    "Place a rosebush near the porch steps.", "Both lost their lives in the raging storm.",
    "We talked of the side show in the circus.", "Use a pencil to write the first draft.",
    "He ran half way to the hardware store.", "The clock struck to mark the third period.",
    "A small creek cut across the field.", "Cars and busses stalled in snow drifts.",
    "The set of china hit the floor with a crash.", "This is a grand season for hikes on the road.",
    "The dune rose from the edge of the water.", "Those words were the cue for the actor to leave.",
)


@dataclass(frozen=True)
class DemoSentence:
    """Sentence ``number`` (the utterance number of every reading of it) and who reads it."""

    number: int
    text: str
    speakers: tuple[str, ...]

    @property
    def utterance(self) -> str:
        return f"{self.number:03d}"


def demo_sentences(*, shared_sentences: int = SHARED_SENTENCES, own_sentences: int = OWN_SENTENCES,
                   voices: tuple[DemoVoice, ...] = DEMO_VOICES) -> list[DemoSentence]:
    """The sentence plan: numbers 1..shared read by every speaker, then ``own_sentences`` per speaker."""
    needed = shared_sentences + own_sentences * len(voices)
    if shared_sentences < 1 or own_sentences < 0 or needed > len(HARVARD_SENTENCES):
        raise ValueError(f"need 1..{len(HARVARD_SENTENCES)} sentences in all, asked for {needed}")
    everyone = tuple(v.speaker for v in voices)
    plan = [DemoSentence(n + 1, HARVARD_SENTENCES[n], everyone) for n in range(shared_sentences)]
    for j, voice in enumerate(voices):
        for k in range(own_sentences):
            n = shared_sentences + j * own_sentences + k
            plan.append(DemoSentence(n + 1, HARVARD_SENTENCES[n], (voice.speaker,)))
    return plan


def make_demo_corpus(root: Optional[Union[str, Path]] = None, *, force: bool = False,
                     shared_sentences: int = SHARED_SENTENCES, own_sentences: int = OWN_SENTENCES,
                     num_workers: int = 2) -> Path:
    """Build the demo corpus under ``root`` (default ``default_data_dir() / "demo"``), or reuse it.

    A complete corpus (``demo.json`` present) made by the same generator version with the same
    sentence counts is reused unless ``force``. The corpus is built in a temporary folder and renamed
    into place, so an interrupted build never looks complete.

    Args:
        root: folder that will hold ``VCTK-Corpus-0.92`` (or that folder itself).
        force: rebuild even if a matching corpus exists.
        shared_sentences: sentences every speaker reads (fewer makes a quicker test corpus).
        own_sentences: extra sentences per speaker.
        num_workers: synthesis processes (0 or 1: one worker process, all speakers in turn).

    Returns:
        Path of the ``VCTK-Corpus-0.92`` folder.

    Raises:
        InputError: the target exists but was not made by this generator (it is never deleted).
    """
    root = Path(root).expanduser() if root is not None else default_corpus_root("demo")
    if root.name == CORPUS_FOLDER:  # given the corpus folder itself rather than the folder holding it
        root = root.parent
    target = root / CORPUS_FOLDER
    marker = {"generator_version": DEMO_GENERATOR_VERSION, "shared_sentences": shared_sentences,
              "own_sentences": own_sentences, "voices": [asdict(v) for v in DEMO_VOICES]}
    existing = _read_marker(target)
    if target.exists():
        if existing is None:
            raise InputError(f"{target}: exists but is not a complete demo corpus (no demo.json); "
                             "move it away or pass another --out")
        if existing == marker and not force:
            return target
    plan = demo_sentences(shared_sentences=shared_sentences, own_sentences=own_sentences)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{CORPUS_FOLDER}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    _write_text_files(staging, plan)
    jobs = [(voice, [(s.utterance, s.text) for s in plan if voice.speaker in s.speakers], staging)
            for voice in DEMO_VOICES]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:  # threads wait on processes
        seconds = sum(pool.map(_synthesise_speaker, *zip(*jobs)))
    marker["seconds"] = round(seconds, 2)
    (staging / "demo.json").write_text(json.dumps(marker, indent=1) + "\n")
    if target.exists():
        shutil.rmtree(target)  # an older demo corpus of ours (its demo.json was read above)
    try:
        os.replace(staging, target)
    except OSError:
        # another process (a second training rank) finished the same corpus first
        shutil.rmtree(staging, ignore_errors=True)
        if _read_marker(target) != {k: v for k, v in marker.items() if k != "seconds"}:
            raise
    logger.info("demo corpus: %d speakers, %d utterances, %.1f min in %s", len(DEMO_VOICES),
                sum(len(j[1]) for j in jobs), seconds / 60, target)
    return target


def _read_marker(target: Path) -> Optional[dict]:
    try:
        marker = json.loads((target / "demo.json").read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    marker.pop("seconds", None)
    return marker


def _write_text_files(staging: Path, plan: list[DemoSentence]) -> None:
    for voice in DEMO_VOICES:
        (staging / "wav48_silence_trimmed" / voice.speaker).mkdir(parents=True)
        (staging / "txt" / voice.speaker).mkdir(parents=True)
    for sentence in plan:
        for speaker in sentence.speakers:
            (staging / "txt" / speaker / f"{speaker}_{sentence.utterance}.txt").write_text(sentence.text + "\n")
    info = ["ID  AGE  GENDER  ACCENTS  REGION COMMENTS"]
    info += [f"{v.speaker}  --  {v.gender}  {v.accent}  {v.region} (eSpeak NG {v.voice}, {v.rate} wpm, pitch {v.pitch})"
             for v in DEMO_VOICES]
    (staging / "speaker-info.txt").write_text("\n".join(info) + "\n")
    rows = ["utterance\tspeakers\ttext"]
    rows += [f"{s.utterance}\t{'all' if len(s.speakers) > 1 else s.speakers[0]}\t{s.text}" for s in plan]
    (staging / "sentences.tsv").write_text("\n".join(rows) + "\n")
    (staging / "README.txt").write_text(
        "audio-vqvae demo corpus, synthesised with eSpeak NG (espeakng-loader) by `audio-vqvae demo-corpus`.\n"
        "Same layout as VCTK 0.92. Utterance NNN is sentence NNN of sentences.tsv for every speaker;\n"
        "001-024 are read by every speaker (a parallel corpus), later numbers by one speaker each.\n"
        "Texts: Harvard sentences (IEEE 1969), public domain.\n")


# --------------------------------------------------------------------------- eSpeak NG, one process per speaker


def _synthesise_speaker(voice: DemoVoice, utterances: list[tuple[str, str]], staging: Path) -> float:
    """Run espeak_worker.py in a fresh interpreter for one speaker; return the seconds of audio written.

    A fresh process per speaker makes every file depend only on its speaker's sentence list (eSpeak's
    hidden state carries over between utterances of one process), whatever the number of workers.
    """
    folder = staging / "wav48_silence_trimmed" / voice.speaker
    files = [(str(folder / f"{voice.speaker}_{utterance}_mic1.flac"), text,
              zlib.crc32(f"{voice.speaker}_{utterance}".encode())) for utterance, text in utterances]
    job = {"voice": voice.voice, "rate": voice.rate, "pitch": voice.pitch, "range": voice.range,
           "pad_seconds": PAD_SECONDS, "files": files}
    result = subprocess.run([sys.executable, str(Path(espeak_worker.__file__))], input=json.dumps(job),
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"eSpeak NG worker failed for demo speaker {voice.speaker} ({voice.voice}): {last}")
    output = json.loads(result.stdout)
    rate = int(output["sample_rate"])
    for path, events in output["phonemes"].items():
        name = Path(path).name.rsplit("_", 1)[0]  # d01_001_mic1.flac -> d01_001
        length = int(output["lengths"][path])
        write_textgrid(staging / "alignments" / voice.speaker / f"{name}.TextGrid",
                       espeak_segments([(int(sample), label) for sample, label in events], length=length,
                                       sample_rate=rate), length / rate)
    return float(output["seconds"])
